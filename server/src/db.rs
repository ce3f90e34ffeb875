//! The server's SQLite database: one writer connection, a few readers, WAL, numbered migrations.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension};

use crate::error::{AppError, AppResult};

const MIGRATIONS: &[&str] = &[
    // 1: accounts, documents, change log, per-device sync state, attachments, audit
    "
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE units (
        code TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL, parent TEXT, department_key TEXT
    );
    CREATE TABLE people (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, unit TEXT NOT NULL,
        password_hash TEXT NOT NULL, active INTEGER NOT NULL DEFAULT 1, created_ms INTEGER NOT NULL
    );
    CREATE TABLE devices (
        id TEXT PRIMARY KEY, person_id TEXT NOT NULL REFERENCES people(id), name TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE, created_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL,
        revoked_ms INTEGER, logged_out INTEGER NOT NULL DEFAULT 0, last_seen_ms INTEGER
    );
    CREATE INDEX devices_person ON devices(person_id);
    CREATE TABLE docs (
        id TEXT PRIMARY KEY, kind TEXT NOT NULL, location TEXT NOT NULL, holder TEXT, owner TEXT,
        reporter TEXT, status TEXT, open INTEGER NOT NULL, category TEXT NOT NULL, title TEXT NOT NULL,
        case_no TEXT UNIQUE, deadline_ms INTEGER, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
        conflicts INTEGER NOT NULL, batch_id TEXT, facts TEXT NOT NULL, snapshot BLOB NOT NULL
    );
    CREATE INDEX docs_open_deadline ON docs(open, deadline_ms);
    CREATE INDEX docs_batch ON docs(batch_id);
    CREATE INDEX docs_location ON docs(location);
    CREATE INDEX docs_holder ON docs(holder);
    CREATE INDEX docs_reporter ON docs(reporter);
    CREATE TABLE changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, doc_id TEXT NOT NULL, hash TEXT NOT NULL UNIQUE,
        bytes BLOB NOT NULL, device_id TEXT NOT NULL, received_ms INTEGER NOT NULL
    );
    CREATE INDEX changes_doc ON changes(doc_id, seq);
    CREATE TABLE device_docs (device_id TEXT NOT NULL, doc_id TEXT NOT NULL, PRIMARY KEY (device_id, doc_id)) WITHOUT ROWID;
    CREATE TABLE rounds (
        device_id TEXT NOT NULL, round INTEGER NOT NULL, seq_high INTEGER NOT NULL,
        added TEXT NOT NULL, removed TEXT NOT NULL, applied INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (device_id, round)
    );
    CREATE TABLE case_counters (prefix TEXT NOT NULL, year INTEGER NOT NULL, last INTEGER NOT NULL, PRIMARY KEY (prefix, year));
    CREATE TABLE attachments (
        sha256 TEXT PRIMARY KEY, total INTEGER NOT NULL, received INTEGER NOT NULL, complete INTEGER NOT NULL,
        uploader TEXT NOT NULL, created_ms INTEGER NOT NULL
    );
    CREATE TABLE attachment_refs (doc_id TEXT NOT NULL, sha256 TEXT NOT NULL, PRIMARY KEY (doc_id, sha256)) WITHOUT ROWID;
    CREATE INDEX attachment_refs_sha ON attachment_refs(sha256);
    CREATE TABLE notices (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, doc_id TEXT NOT NULL, unit TEXT NOT NULL,
        at_ms INTEGER NOT NULL, text TEXT NOT NULL
    );
    CREATE INDEX notices_unit ON notices(unit, at_ms);
    CREATE TABLE api_keys (
        key_hash TEXT PRIMARY KEY, person_id TEXT NOT NULL REFERENCES people(id), name TEXT NOT NULL, created_ms INTEGER NOT NULL
    );
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL, actor TEXT NOT NULL,
        action TEXT NOT NULL, detail TEXT NOT NULL
    );
    ",
    // 2: grid boundaries for the console's map: a JSON array of [longitude, latitude] points.
    "ALTER TABLE units ADD COLUMN boundary TEXT;",
];

/// Connections to the server database.
#[derive(Debug, Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

fn open_conn(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Pages are read through a memory map rather than copied in by pread, and each connection
    // keeps 16 MiB of them: sync rounds read the index and change tables over and over.
    conn.pragma_update(None, "mmap_size", 256i64 << 20)?;
    conn.pragma_update(None, "cache_size", -16_000i64)?;
    Ok(conn)
}

impl Db {
    /// Opens (creating) the database and applies migrations.
    pub fn open(path: &Path, readers: usize) -> AppResult<Self> {
        let mut writer = open_conn(path)?;
        let version: i64 = writer.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            let tx = writer.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        let readers = (0..readers.max(1)).map(|_| open_conn(path).map(Mutex::new)).collect::<Result<_, _>>()?;
        Ok(Self { inner: Arc::new(Inner { writer: Mutex::new(writer), readers, next: AtomicUsize::new(0) }) })
    }

    /// The single writer (callers run on a blocking thread).
    pub fn writer(&self) -> MutexGuard<'_, Connection> {
        self.inner.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A reader connection.
    pub fn reader(&self) -> MutexGuard<'_, Connection> {
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed) % self.inner.readers.len();
        self.inner.readers[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` with a reader on the blocking pool.
    pub async fn read<T: Send + 'static>(&self, f: impl FnOnce(&Connection) -> AppResult<T> + Send + 'static) -> AppResult<T> {
        let db = self.clone();
        tokio::task::spawn_blocking(move || f(&db.reader())).await?
    }

    /// Runs `f` with the writer on the blocking pool.
    pub async fn write<T: Send + 'static>(&self, f: impl FnOnce(&mut Connection) -> AppResult<T> + Send + 'static) -> AppResult<T> {
        let db = self.clone();
        tokio::task::spawn_blocking(move || f(&mut db.writer())).await?
    }
}

/// Reads a meta value.
pub fn meta_get(conn: &Connection, key: &str) -> AppResult<Option<String>> {
    Ok(conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
}

/// Writes a meta value.
pub fn meta_set(conn: &Connection, key: &str, value: &str) -> AppResult<()> {
    conn.execute("INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value", [key, value])?;
    Ok(())
}

/// Appends to the audit log (admin actions, logins, revocations).
pub fn audit(conn: &Connection, at_ms: i64, actor: &str, action: &str, detail: &str) -> AppResult<()> {
    conn.execute(
        "INSERT INTO audit(at_ms, actor, action, detail) VALUES (?1, ?2, ?3, ?4)",
        rusqlite::params![at_ms, actor, action, detail],
    )?;
    Ok(())
}

/// Maps "not found" to [`AppError::NotFound`].
pub fn found<T>(v: Option<T>) -> AppResult<T> {
    v.ok_or(AppError::NotFound)
}
