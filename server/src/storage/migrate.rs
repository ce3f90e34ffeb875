//! Moving a town from its SQLite file into a PostgreSQL database (`gridlink-server migrate
//! --from town.db --to postgres://…`, issue 18).
//!
//! Everything is copied as it is, in one PostgreSQL transaction: the change log keeps its
//! numbers, devices their sessions, cursors and rounds, the database its epoch and the server
//! its actor, so the town's phones go on syncing against the new database without noticing
//! (nothing to re-install, no scope to start over, nothing in their outboxes lost). Before the
//! commit the copy is checked: the same rows in every table, and the same digest over every
//! record's snapshot and over the change log. Any difference, or any error, rolls everything back.
//!
//! Run again on a database that already holds this town (same epoch), it copies nothing and
//! checks again; a database holding anything else is refused.

use std::path::Path;

use postgres::types::ToSql;
use rusqlite::OpenFlags;
use rusqlite::types::ValueRef;
use sha2::{Digest, Sha256};

use super::pg::PgStorage;
use super::{STATE_TABLES, Storage, Tx};
use crate::error::{AppError, AppResult};

/// Tables whose numbers come from a sequence on PostgreSQL (`BIGSERIAL seq`).
const NUMBERED: &[&str] = &["changes", "notices", "audit"];

/// What a migration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// Rows copied per table (none when the town was there already).
    pub copied: Vec<(&'static str, i64)>,
    /// The town was in the target already, and found equal.
    pub already: bool,
    /// The digest both sides agree on (records' snapshots and the change log).
    pub digest: String,
}

impl std::fmt::Display for Migrated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = |t: &str| self.copied.iter().find(|(n, _)| *n == t).map_or(0, |(_, c)| *c);
        if self.already {
            write!(f, "目标数据库中已有该镇的全部数据,核对一致")?;
        } else {
            write!(
                f,
                "已迁移 {} 个单位、{} 名人员、{} 台设备、{} 件记录、{} 条变更,核对一致",
                count("units"),
                count("people"),
                count("devices"),
                count("docs"),
                count("changes")
            )?;
        }
        write!(f, "(校验值 {})", &self.digest[..16])
    }
}

/// Copies the town in the SQLite file `from` into the PostgreSQL database at `to`.
pub fn migrate_town(from: &Path, to: &str) -> AppResult<Migrated> {
    let source = open_source(from)?;
    let target = PgStorage::connect(to)?;
    let tx = Tx::begin(&target)?;
    let epoch = source.meta_get("epoch")?;
    let holds_anything = target.row_counts()?.iter().any(|(_, n)| *n > 0);
    let already = holds_anything && target.meta_get("epoch")? == epoch && epoch.is_some();
    if holds_anything && !already {
        return Err(AppError::Unprocessable("目标 PostgreSQL 数据库已有其他数据,只能迁移到空数据库".into()));
    }
    let mut copied = Vec::new();
    if !already {
        for table in STATE_TABLES {
            copied.push((*table, copy_table(&source, &target, table)?));
        }
        for table in NUMBERED {
            target.with_client(|c| {
                c.execute(
                    &format!("SELECT setval(pg_get_serial_sequence('{table}', 'seq'), GREATEST((SELECT max(seq) FROM {table}), 1))"),
                    &[],
                )
            })?;
        }
    }
    // The check, inside the transaction: nothing is kept unless both sides agree.
    let (theirs, ours) = (source.row_counts()?, target.row_counts()?);
    if theirs != ours {
        let differ: Vec<String> =
            theirs.iter().zip(&ours).filter(|(a, b)| a != b).map(|((t, a), (_, b))| format!("{t}: {a} ≠ {b}")).collect();
        return Err(AppError::Internal(format!("迁移核对不一致,已全部撤销:{}", differ.join(", "))));
    }
    let agreed = digest(&source)?;
    if agreed != digest(&target)? {
        return Err(AppError::Internal("迁移核对不一致(记录或变更的内容不同),已全部撤销".into()));
    }
    tx.commit()?;
    Ok(Migrated { copied, already, digest: agreed })
}

/// The town's SQLite file, read only, at this build's schema.
fn open_source(from: &Path) -> AppResult<rusqlite::Connection> {
    if !from.is_file() {
        return Err(AppError::Unprocessable(format!("找不到数据库文件 {}", from.display())));
    }
    let conn = rusqlite::Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let app: i64 = conn.pragma_query_value(None, "application_id", |r| r.get(0)).unwrap_or(0);
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap_or(0);
    if app != crate::db::APPLICATION_ID {
        return Err(AppError::Unprocessable(format!("{} 不是网格通的镇数据库", from.display())));
    }
    if version != crate::db::schema_version() {
        return Err(AppError::Unprocessable(format!(
            "{} 的结构版本({version})与本程序({})不同:请先用本版本的 gridlink-server 启动一次,再迁移",
            from.display(),
            crate::db::schema_version()
        )));
    }
    Ok(conn)
}

/// Copies one table's rows, column by column as the PostgreSQL schema types them.
fn copy_table(source: &rusqlite::Connection, target: &PgStorage, table: &str) -> AppResult<i64> {
    let columns: Vec<(String, String)> = target.with_client(|c| {
        c.query(
            "SELECT column_name::TEXT, data_type::TEXT FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
            &[&table],
        )
        .map(|rows| rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    })?;
    let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
    let insert = format!(
        "INSERT INTO {table}({}) VALUES ({})",
        names.join(", "),
        (1..=names.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
    );
    let statement = target.with_client(|c| c.prepare(&insert))?;
    let mut select = source.prepare(&format!("SELECT {} FROM {table}", names.join(", ")))?;
    let mut rows = select.query([])?;
    let mut n = 0;
    while let Some(row) = rows.next()? {
        let mut values: Vec<Box<dyn ToSql + Sync>> = Vec::with_capacity(columns.len());
        for (i, (name, kind)) in columns.iter().enumerate() {
            values.push(
                convert(row.get_ref(i)?, kind)
                    .ok_or_else(|| AppError::Internal(format!("{table}.{name}: 源数据库中的值与目标类型 {kind} 不符")))?,
            );
        }
        let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
        target.with_client(|c| c.execute(&statement, &params))?;
        n += 1;
    }
    Ok(n)
}

/// A SQLite value as the PostgreSQL column type `kind` takes it (None: it does not fit).
fn convert(v: ValueRef<'_>, kind: &str) -> Option<Box<dyn ToSql + Sync>> {
    Some(match (kind, v) {
        ("boolean", ValueRef::Null) => Box::new(None::<bool>),
        ("boolean", ValueRef::Integer(i)) => Box::new(i != 0),
        ("bigint", ValueRef::Null) => Box::new(None::<i64>),
        ("bigint", ValueRef::Integer(i)) => Box::new(i),
        ("integer", ValueRef::Null) => Box::new(None::<i32>),
        ("integer", ValueRef::Integer(i)) => Box::new(i32::try_from(i).ok()?),
        ("text", ValueRef::Null) => Box::new(None::<String>),
        ("text", ValueRef::Text(t)) => Box::new(std::str::from_utf8(t).ok()?.to_owned()),
        ("bytea", ValueRef::Null) => Box::new(None::<Vec<u8>>),
        ("bytea", ValueRef::Blob(b)) => Box::new(b.to_vec()),
        _ => return None,
    })
}

/// One digest over every record's snapshot (by id) and the change log (by number), the same on
/// either backend when they hold the same town.
fn digest(s: &dyn Storage) -> AppResult<String> {
    let mut hash = Sha256::new();
    let mut ids = s.record_ids()?;
    ids.sort();
    for id in &ids {
        hash.update(id.as_bytes());
        hash.update(Sha256::digest(s.snapshot(id)?.unwrap_or_default()));
        s.record_changes(id, &mut |bytes, device| {
            hash.update(Sha256::digest(&bytes));
            hash.update(device.as_bytes());
            Ok(())
        })?;
    }
    Ok(hex::encode(hash.finalize()))
}
