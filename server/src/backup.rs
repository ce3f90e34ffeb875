//! Backup and restore of a town's database, losing nothing a phone still holds.
//!
//! `gridlink-server backup` copies the database while the server runs: `VACUUM INTO` reads one
//! consistent snapshot (a read transaction; writers go on) into a new, compact file, which is
//! checked, synced and only then given its name. (SQLite's backup API, run in steps, starts
//! over whenever another connection writes, which under a busy writer may never end; run in one
//! step it holds one read transaction just as `VACUUM INTO` does, which also leaves out free pages
//! and needs no extra crate feature.) `gridlink-server restore` puts such a copy in
//! place of the database while the server is stopped (it holds [`ServeLock`]).
//!
//! A restore from an older backup loses what the server acknowledged after the backup was taken,
//! yet phones still hold it. So every restore gives the database a new **epoch**
//! ([`crate::db::epoch`]). Devices present the epoch their cursor belongs to; a device with
//! another one starts its scope over and pushes again the whole history of every record it holds
//! (`SyncRequest::recovery`). The server skips the changes it has and takes back the others:
//! the device's own ones under the usual rules; those of other people, or the server's own case
//! numbers and routing, when the record's history is whole and every entry names a person of the
//! town ([`crate::records`]). Each such change is written to the audit log with the device that
//! brought it. A case number given again since the restore is replaced on the recovered record.
//!
//! Photos are files under the data directory, named by their hash and never changed: back them
//! up with a file copy (`cp -rn`, `rsync`) beside the database backup.
//!
//! PostgreSQL is backed up its own way (`pg_dump -Fc` while running, `pg_restore` into an empty
//! database), and no command of ours runs the restore to give the new epoch. So the server tells
//! at start ([`epoch_at_start`]): the database keeps where it lived when the epoch was given
//! (`home` in `meta`: the cluster, the database and the WAL timeline, [`Storage::home`]); a
//! dump restored into another database or cluster, a point-in-time recovery and a promoted
//! standby all live somewhere else, and get a new epoch. A promoted standby that had every commit
//! costs the phones one needless push of their records; one that missed some gets them back.

use std::fs::File;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::db::{APPLICATION_ID, migrate, schema_version};
use crate::storage::Storage;

/// Why a backup or a restore did not happen. Nothing was changed when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("找不到数据库文件 {0}")]
    Missing(PathBuf),
    #[error("{0} 已损坏或不是数据库文件({1})")]
    Damaged(PathBuf, String),
    #[error("{0} 不是网格通(Gridlink)镇级服务器的数据库")]
    Foreign(PathBuf),
    #[error("{0} 来自更新版本的 gridlink-server(结构版本 {1}),本程序只认识到 {2}")]
    Newer(PathBuf, i64, i64),
    #[error("{0} 已存在,不会覆盖;请换一个文件名")]
    Exists(PathBuf),
    #[error("服务正在使用数据库 {0},请先停止服务(systemctl stop gridlink)再恢复")]
    InUse(PathBuf),
    #[error("{0}: {1}")]
    Io(PathBuf, String),
}

/// What a backup or a restore holds, for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub records: i64,
    pub changes: i64,
    pub people: i64,
    pub devices: i64,
    pub epoch: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} 件记录、{} 个变更、{} 个账号、{} 台设备(纪元 {})", self.records, self.changes, self.people, self.devices, self.epoch)
    }
}

/// A lock on a database file, held by a serving process for as long as it runs, so that no
/// restore replaces the file under it.
#[derive(Debug)]
pub struct ServeLock(#[allow(dead_code)] File);

impl ServeLock {
    /// Takes the lock of `db` (the file `<db>.lock` beside it), or says who holds it.
    pub fn take(db: &Path) -> Result<Self, BackupError> {
        let path = lock_path(db);
        let file = File::options().create(true).truncate(false).write(true).open(&path).map_err(|e| io(&path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(Self(file)),
            Err(std::fs::TryLockError::WouldBlock) => Err(BackupError::InUse(db.to_owned())),
            Err(std::fs::TryLockError::Error(e)) => Err(io(&path, e)),
        }
    }
}

fn lock_path(db: &Path) -> PathBuf {
    sibling(db, ".lock")
}

/// `<file><suffix>` in the same directory.
fn sibling(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_owned();
    name.push(suffix);
    file.with_file_name(name)
}

fn io(path: &Path, e: impl std::fmt::Display) -> BackupError {
    BackupError::Io(path.to_owned(), e.to_string())
}

/// Opens a database read-only and checks that it is a sound Gridlink town database this build
/// can read.
fn open_checked(path: &Path) -> Result<Connection, BackupError> {
    if !path.is_file() {
        return Err(BackupError::Missing(path.to_owned()));
    }
    let damaged = |e: rusqlite::Error| BackupError::Damaged(path.to_owned(), e.to_string());
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(damaged)?;
    let app_id: i64 = conn.pragma_query_value(None, "application_id", |r| r.get(0)).map_err(damaged)?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(damaged)?;
    // Databases made before the application id was set are known by their own tables.
    let ours = app_id == APPLICATION_ID
        || (app_id == 0
            && version >= 1
            && conn
                .query_row("SELECT value FROM meta WHERE key = 'server_actor'", [], |r| r.get::<_, String>(0))
                .optional()
                .ok()
                .flatten()
                .is_some());
    if !ours {
        return Err(BackupError::Foreign(path.to_owned()));
    }
    if version > schema_version() {
        return Err(BackupError::Newer(path.to_owned(), version, schema_version()));
    }
    let check: Vec<String> =
        conn.prepare("PRAGMA integrity_check").and_then(|mut s| s.query_map([], |r| r.get(0))?.collect()).map_err(damaged)?;
    if check != ["ok"] {
        let first = check.into_iter().next().unwrap_or_default();
        return Err(BackupError::Damaged(path.to_owned(), first));
    }
    Ok(conn)
}

fn summary(conn: &Connection) -> rusqlite::Result<Summary> {
    let count = |table: &str| conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get::<_, i64>(0));
    let epoch = conn.meta_get("epoch").ok().flatten().and_then(|e| e.parse().ok()).unwrap_or(0);
    Ok(Summary { records: count("docs")?, changes: count("changes")?, people: count("people")?, devices: count("devices")?, epoch })
}

/// Copies the database into a fresh file at `out`, safely while the server runs.
pub fn backup(db: &Path, out: &Path) -> Result<Summary, BackupError> {
    if out.exists() {
        return Err(BackupError::Exists(out.to_owned()));
    }
    let source = open_checked(db)?;
    let partial = sibling(out, ".partial");
    let _ = std::fs::remove_file(&partial);
    let fail = |e: rusqlite::Error| {
        let _ = std::fs::remove_file(&partial);
        io(out, e)
    };
    source.execute("VACUUM INTO ?1", [partial.to_string_lossy()]).map_err(fail)?;
    drop(source);
    let copy = open_checked(&partial).inspect_err(|_| {
        let _ = std::fs::remove_file(&partial);
    })?;
    let summary = summary(&copy).map_err(fail)?;
    drop(copy);
    durable_rename(&partial, out)?;
    Ok(summary)
}

/// Puts the backup `from` in place of the database `db`, with a new epoch. The server must be
/// stopped. The database it replaces is kept beside it as `<db>.before-restore-<time>` (with its
/// write-ahead log), and a restore that stops half-way leaves `db` as it was or, at worst,
/// absent with that copy beside it: running it again finishes it.
pub fn restore(from: &Path, db: &Path, now_ms: i64) -> Result<(Summary, Option<PathBuf>), BackupError> {
    let _lock = ServeLock::take(db)?;
    let source = open_checked(from)?;
    let backup_epoch = epoch_of(&source);
    // The database being replaced, when it can still be read: its epoch is the one its phones hold.
    let replaced_epoch = if db.is_file() { open_checked(db).ok().and_then(|c| epoch_of(&c)) } else { None };

    let staged = sibling(db, ".restoring");
    let _ = std::fs::remove_file(&staged);
    let fail = |e: &dyn std::fmt::Display| {
        let _ = std::fs::remove_file(&staged);
        io(db, e)
    };
    source.execute("VACUUM INTO ?1", [staged.to_string_lossy()]).map_err(|e| fail(&e))?;
    drop(source);
    let summary = {
        let mut conn = Connection::open(&staged).map_err(|e| fail(&e))?;
        migrate(&mut conn, &staged).map_err(|e| fail(&e))?;
        let tx = conn.transaction().map_err(|e| fail(&e))?;
        // Every device's cursor now belongs to another epoch.
        let fresh = tx.new_epoch().map_err(|e| fail(&e))?;
        tx.execute("UPDATE devices SET recovering = 0", []).map_err(|e| fail(&e))?;
        let detail = format!(
            "从备份 {} 恢复;备份纪元 {},被替换的数据库纪元 {},新纪元 {fresh}",
            from.file_name().unwrap_or_default().to_string_lossy(),
            backup_epoch.map_or("无".into(), |e| e.to_string()),
            replaced_epoch.map_or("无".into(), |e| e.to_string()),
        );
        tx.audit(now_ms, "system", "restore", &detail).map_err(|e| fail(&e))?;
        tx.commit().map_err(|e| fail(&e))?;
        debug_assert_eq!(conn.epoch().ok(), Some(fresh));
        summary(&conn).map_err(|e| fail(&e))?
    };
    open_checked(&staged).inspect_err(|_| {
        let _ = std::fs::remove_file(&staged);
    })?;

    // The replaced database goes aside with its log, never deleted.
    let aside = if db.exists() {
        let stamp = chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default().format("%Y%m%d-%H%M%S");
        let aside = sibling(db, &format!(".before-restore-{stamp}"));
        for suffix in ["-wal", "-shm"] {
            let (old, new) = (sibling(db, suffix), sibling(&aside, suffix));
            if old.exists() {
                std::fs::rename(&old, &new).map_err(|e| io(&old, e))?;
            }
        }
        std::fs::rename(db, &aside).map_err(|e| io(db, e))?;
        Some(aside)
    } else {
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(sibling(db, suffix));
        }
        None
    };
    durable_rename(&staged, db)?;
    Ok((summary, aside))
}

/// The database's epoch as a server starts on it, in the start's transaction: a fresh one for a
/// new database, and for one that no longer lives where its epoch was given
/// ([`Storage::home`]) — restored or failed over behind the server's back — so that phones push
/// again what it lacks, as after `restore`. Written to the audit log.
pub fn epoch_at_start(conn: &dyn Storage, now_ms: i64) -> crate::error::AppResult<u64> {
    let epoch = conn.epoch()?;
    let Some(here) = conn.home()? else {
        return Ok(epoch);
    };
    let was = conn.meta_get("home")?;
    if was.as_deref() == Some(here.as_str()) {
        return Ok(epoch);
    }
    conn.meta_set("home", &here)?;
    // A database that never said where it lived (a new one, or one of an older build) is taken
    // as living here all along.
    let Some(was) = was else {
        return Ok(epoch);
    };
    let fresh = conn.new_epoch()?;
    tracing::warn!(was = %was, now = %here, epoch = fresh, "the database was restored or failed over: a new epoch, phones push again what it lacks");
    conn.audit(
        now_ms,
        "system",
        "new_epoch",
        &format!("数据库已从备份恢复或主备切换(原 {was},现 {here}),新纪元 {fresh}:各手机下次同步时重新上传其记录"),
    )?;
    Ok(fresh)
}

fn epoch_of(conn: &Connection) -> Option<u64> {
    conn.meta_get("epoch").ok().flatten().and_then(|e| e.parse().ok())
}

/// Syncs a finished file, gives it its name and syncs the directory, so the name survives a crash.
fn durable_rename(from: &Path, to: &Path) -> Result<(), BackupError> {
    File::open(from).and_then(|f| f.sync_all()).map_err(|e| io(from, e))?;
    std::fs::rename(from, to).map_err(|e| io(to, e))?;
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))?;
    }
    Ok(())
}
