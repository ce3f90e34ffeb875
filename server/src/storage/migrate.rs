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
//! checks again. A database that holds the town's county (and maybe other towns) takes the town
//! as one more town of the county ([`join_county`]); any other database is refused.

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
        // A county database: the town joins the others under its county.
        return join_county(&source, &target, tx);
    }
    let mut copied = Vec::new();
    if !already {
        for table in STATE_TABLES {
            copied.push((*table, copy_table(&source, &target, table, Copy::AsIs)?));
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
    let ids = source.record_ids()?;
    let agreed = digest(&source, &ids)?;
    if agreed != digest(&target, &target.record_ids()?)? {
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

/// How a table's rows go into the target.
#[derive(Clone, Copy, PartialEq)]
enum Copy {
    /// Every column as it is (into an empty database).
    AsIs,
    /// Without the `seq` column, in its order: the target's sequence numbers them anew after its
    /// own rows (the change log, notices and audit of a town joining a county).
    Renumbered,
    /// As it is, adding `ON CONFLICT …` (rows both towns may have).
    OnConflict(&'static str),
}

/// Copies one table's rows, column by column as the PostgreSQL schema types them.
fn copy_table(source: &rusqlite::Connection, target: &PgStorage, table: &str, how: Copy) -> AppResult<i64> {
    let columns: Vec<(String, String)> = target.with_client(|c| {
        c.query(
            "SELECT column_name::TEXT, data_type::TEXT FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
            &[&table],
        )
        .map(|rows| rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    })?;
    let columns: Vec<(String, String)> = columns.into_iter().filter(|(n, _)| how != Copy::Renumbered || n != "seq").collect();
    let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
    let insert = format!(
        "INSERT INTO {table}({}) VALUES ({}) {}",
        names.join(", "),
        (1..=names.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", "),
        if let Copy::OnConflict(then) = how { then } else { "" }
    );
    let statement = target.with_client(|c| c.prepare(&insert))?;
    let order = if how == Copy::Renumbered { " ORDER BY seq" } else { "" };
    let mut select = source.prepare(&format!("SELECT {} FROM {table}{order}", names.join(", ")))?;
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

/// One digest over the snapshots of the records `ids` and their changes in log order, the same
/// on either backend when they hold the same town.
fn digest(s: &dyn Storage, ids: &[String]) -> AppResult<String> {
    let mut hash = Sha256::new();
    let mut ids = ids.to_vec();
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

/// What a town joining a county brings; the rest of its file (settings, cursors and per-device
/// rounds, login counters) stays behind. Its phones see a database of another epoch, start their
/// scope over and push again what they hold, so nothing in their outboxes is lost.
const JOINING: &[(&str, Copy)] = &[
    ("units", Copy::AsIs),
    ("people", Copy::AsIs),
    ("devices", Copy::AsIs),
    ("api_keys", Copy::AsIs),
    ("docs", Copy::AsIs),
    ("changes", Copy::Renumbered),
    // Counters of the town's old numbering (without the county's town suffix): a counter both
    // towns used keeps the higher number.
    ("case_counters", Copy::OnConflict("ON CONFLICT (prefix, year) DO UPDATE SET last = GREATEST(case_counters.last, excluded.last)")),
    // The same photo taken in both towns is one file.
    ("attachments", Copy::OnConflict("ON CONFLICT (sha256) DO NOTHING")),
    ("attachment_refs", Copy::AsIs),
    ("notices", Copy::Renumbered),
    ("audit", Copy::Renumbered),
    ("personal", Copy::AsIs),
];

/// What may not be in the county database already, as (table, column, what it is called). Token
/// and key hashes are secrets: only how many collide is said, never which.
const UNIQUE: &[(&str, &str, &str)] = &[
    ("units", "code", "单位编码"),
    ("people", "id", "人员账号"),
    ("devices", "id", "设备"),
    ("devices", "token_hash", "设备令牌"),
    ("api_keys", "key_hash", "接口密钥"),
    ("docs", "id", "记录"),
    ("docs", "case_no", "案卷编号"),
    ("changes", "hash", "变更"),
];

/// Moves the town in `source` into a county database that holds its county already (and maybe
/// other towns), in the transaction `tx`: the town's unit hangs under the county, the change
/// log, notices and audit are numbered after the county's own, and nothing may collide. The check
/// is the one of a whole copy, over the town's part: rows added per table and one digest over the
/// town's records. Run again, it finds the town's mark and checks again.
fn join_county(source: &rusqlite::Connection, target: &PgStorage, tx: Tx<'_>) -> AppResult<Migrated> {
    let towns: Vec<String> = source
        .prepare("SELECT code FROM units WHERE kind = 'town' AND parent IS NULL")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let [town] = towns.as_slice() else {
        return Err(AppError::Unprocessable("目标 PostgreSQL 数据库已有其他数据;源数据库不是单独一个镇,无法并入".into()));
    };
    let county = &town[..town.len().min(6)];
    if target.unit(county)?.is_none_or(|u| u.kind != "county") {
        return Err(AppError::Unprocessable(format!(
            "目标 PostgreSQL 数据库已有其他数据,且其中没有本镇({town})所属的县({county}):\
             只能迁移到空数据库,或并入已导入该县单位的县级数据库"
        )));
    }
    let ids = source.record_ids()?;
    // The mark of a town that joined: the epoch of the file it came from and the digest agreed.
    let mark = format!("joined:{town}");
    let epoch = source.meta_get("epoch")?.unwrap_or_default();
    let marked = target.meta_get(&mark)?;
    if let Some((_, agreed)) = marked.as_deref().and_then(|m| m.split_once(' ')).filter(|(e, _)| *e == epoch) {
        if digest(target, &ids)? != agreed || digest(source, &ids)? != agreed {
            return Err(AppError::Unprocessable(format!(
                "本镇({town})已并入目标数据库,但此后两边的记录已有不同,未做任何改动:请确认源文件是否为迁移时的那一份"
            )));
        }
        return Ok(Migrated { copied: Vec::new(), already: true, digest: agreed.to_owned() });
    }
    for (table, column, what) in UNIQUE {
        let ours: Vec<String> = source
            .prepare(&format!("SELECT {column} FROM {table} WHERE {column} IS NOT NULL"))?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let sql = format!("SELECT {column} FROM {table} WHERE {column} = ANY($1) ORDER BY 1");
        let taken: Vec<String> = target.with_client(|c| c.query(&sql, &[&ours]))?.into_iter().map(|r| r.get(0)).collect();
        if !taken.is_empty() {
            let which = if column.ends_with("_hash") {
                format!("{} 个", taken.len())
            } else {
                let first: Vec<&str> = taken.iter().take(5).map(String::as_str).collect();
                format!("{}{}", first.join("、"), if taken.len() > 5 { format!(" 等 {} 个", taken.len()) } else { String::new() })
            };
            return Err(AppError::Unprocessable(format!(
                "目标数据库中已有同样的{what}:{which}。两镇的{what}不能重复,未做任何改动{}",
                if *column == "case_no" { "(请为各镇设置不同的案卷编号前缀 case_prefix)" } else { "" }
            )));
        }
    }
    let before = target.row_counts()?;
    let mut copied = Vec::new();
    for (table, how) in JOINING {
        copied.push((*table, copy_table(source, target, table, *how)?));
    }
    target.with_client(|c| c.execute("UPDATE units SET parent = $1 WHERE code = $2", &[&county, town]))?;
    // The check, inside the transaction: every row the town brought is there, and its records
    // are the same on both sides.
    let after = target.row_counts()?;
    for (table, n) in &copied {
        let grew = |counts: &[(&str, i64)]| counts.iter().find(|(t, _)| t == table).map_or(0, |(_, c)| *c);
        let added = grew(&after) - grew(&before);
        let shared = matches!(JOINING.iter().find(|(t, _)| t == table), Some((_, Copy::OnConflict(_))));
        if added != *n && !(shared && added <= *n) {
            return Err(AppError::Internal(format!("迁移核对不一致,已全部撤销:{table}: {n} ≠ {added}")));
        }
    }
    let agreed = digest(source, &ids)?;
    if agreed != digest(target, &ids)? {
        return Err(AppError::Internal("迁移核对不一致(记录或变更的内容不同),已全部撤销".into()));
    }
    target.meta_set(&mark, &format!("{epoch} {agreed}"))?;
    tx.commit()?;
    Ok(Migrated { copied, already: false, digest: agreed })
}
