//! The phone's database: SQLite in WAL mode, schema versions keyed on `PRAGMA user_version`.
//!
//! Tables: `documents` + `doc_chunks` (a compact save plus incremental saves, compacted every
//! [`COMPACT_AFTER`] chunks), `records` (index for offline queries), `records_fts` (FTS5 trigram,
//! so Chinese substrings are found), `outbox` (changes not yet acknowledged by the server),
//! `attachments` (content-addressed by SHA-256) and `meta` (device id, identity, clock, cursor).
//!
//! As in application-services: functions that write take a `&Tx` (a transaction), readers a
//! `&Connection`, and each user action is one transaction, so a crash leaves either all of it or
//! none. Transactions nest ([`Tx`]), so a sync answer is taken as a whole in one.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Result;
use crate::org::UnitCode;
use crate::workflow::{RecordKind, Status};

/// Incremental saves kept before a document is compacted into one save.
pub const COMPACT_AFTER: i64 = 16;

const MIGRATIONS: &[&str] = &[
    // 1: initial schema
    "
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE documents (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        snapshot BLOB NOT NULL,
        chunks INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE doc_chunks (
        doc_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        bytes BLOB NOT NULL,
        PRIMARY KEY (doc_id, seq)
    );
    CREATE TABLE records (
        id TEXT PRIMARY KEY REFERENCES documents(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        status TEXT,
        open INTEGER NOT NULL,
        category TEXT NOT NULL,
        location TEXT NOT NULL,
        holder TEXT,
        owner TEXT,
        reporter TEXT,
        deadline_ms INTEGER,
        -- deadline or i64::MAX: the list order, so the first page walks an index and stops
        due INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        display_no TEXT NOT NULL,
        case_no TEXT,
        title TEXT NOT NULL,
        conflicts INTEGER NOT NULL,
        supervisions INTEGER NOT NULL,
        satisfaction INTEGER
    );
    CREATE INDEX records_open_due ON records(open, due, updated_ms DESC, id);
    CREATE INDEX records_due ON records(due, updated_ms DESC, id);
    CREATE INDEX records_holder ON records(holder, open);
    CREATE INDEX records_location ON records(location);
    CREATE INDEX records_status ON records(status);
    CREATE INDEX records_category ON records(category);
    CREATE INDEX records_updated ON records(updated_ms);
    CREATE VIRTUAL TABLE records_fts USING fts5(id UNINDEXED, title, body, tokenize = 'trigram');
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        doc_id TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        bytes BLOB NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE attachments (
        sha256 TEXT PRIMARY KEY,
        mime TEXT NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        bytes BLOB NOT NULL,
        created_ms INTEGER NOT NULL,
        uploaded INTEGER NOT NULL DEFAULT 0
    );
    ",
    // 2: changes the server refused, shown to the user
    "
    CREATE TABLE sync_rejections (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        doc_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        at_ms INTEGER NOT NULL
    );
    ",
    // 3: whether the current identity can act on the record now (my tasks)
    "
    ALTER TABLE records ADD COLUMN actionable INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX records_actionable ON records(actionable, due, updated_ms DESC, id);
    ",
    // 4: photos downloaded for viewing form a bounded cache (the phone's own are never evicted)
    "
    ALTER TABLE attachments ADD COLUMN downloaded INTEGER NOT NULL DEFAULT 0;
    UPDATE attachments SET downloaded = 1 WHERE width = 0 AND height = 0 AND uploaded = 1;
    ",
    // 5: residents' personal data, sealed with the device's key (never in clear), and whether
    // the server still lacks it
    "
    CREATE TABLE personal (doc_id TEXT PRIMARY KEY, sealed BLOB NOT NULL, pending INTEGER NOT NULL);
    ",
    // 6: a record's search row shares the rowid of its `records` row, so rewriting or deleting
    // it is a lookup by rowid; by `id` (not indexed in FTS5) it scanned every record each time
    "
    CREATE VIRTUAL TABLE records_fts_by_rowid USING fts5(id UNINDEXED, title, body, tokenize = 'trigram');
    INSERT INTO records_fts_by_rowid(rowid, id, title, body)
        SELECT r.rowid, f.id, f.title, f.body FROM records_fts f JOIN records r ON r.id = f.id;
    DROP TABLE records_fts;
    ALTER TABLE records_fts_by_rowid RENAME TO records_fts;
    ",
];

/// A write transaction. Opened with none around it, it is a transaction of its own, committed
/// durably by [`Tx::commit`] and rolled back when dropped without one. Opened inside an open
/// transaction (the sync engine takes a whole answer in one, see `Client::atomically`), it joins
/// it: the outer one commits everything at once, so 2,000 records arriving together cost one
/// durable commit rather than 2,000, while each user action stays one transaction. A joined
/// transaction is not a savepoint of its own: FTS5 writes its pending search rows out at every
/// savepoint's end, which cost a quarter of a bootstrap. So a joined one dropped without a commit
/// (a step that failed) rolls back the whole outer transaction: nothing of a half-taken answer
/// is kept.
#[derive(Debug)]
pub struct Tx<'c> {
    conn: &'c Connection,
    /// Still to be committed or rolled back by this value.
    pending: bool,
    /// Part of an outer transaction.
    joined: bool,
}

/// Opens a write transaction on `conn`, or joins the one open on it.
pub fn begin(conn: &Connection) -> Result<Tx<'_>> {
    let joined = !conn.is_autocommit();
    if !joined {
        conn.prepare_cached("BEGIN")?.execute([])?;
    }
    Ok(Tx { conn, pending: true, joined })
}

impl Tx<'_> {
    /// Keeps the writes: durable at once when this is not a joined transaction.
    pub fn commit(mut self) -> Result<()> {
        if !self.joined {
            self.conn.prepare_cached("COMMIT")?.execute([])?;
        }
        self.pending = false;
        Ok(())
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.pending && !self.conn.is_autocommit() {
            // Undo the writes (an outer transaction's too, when joined). Should this fail,
            // SQLite rolls back on close what was never committed.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

/// Opens (creating if needed) a store and brings its schema up to date.
pub fn open(path: &Path) -> Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit that returned is on disk even if the phone loses power right after.
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Statement journals (a statement inside a larger transaction, such as a record inside a
    // sync answer, keeps the pages it changes so it can be undone alone) in memory, not in a
    // temporary file written page by page.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    keep_plans(&conn)?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Keeps cached statements compiled across uses. Without the query planner stability guarantee
/// SQLite marks a statement whose plan might depend on a bound value (such as a join with a range
/// on one) for re-preparing when that value changes, and rusqlite's statement cache clears the
/// bindings of every statement it takes back, which counts as a change: such statements were
/// parsed and planned again on every use. The plans do not depend on the values here (no ANALYZE statistics, no partial indexes,
/// no bound LIKE prefix the planner could use).
pub fn keep_plans(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}

/// Applies the migrations the database has not seen yet, each in its own transaction.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))?.try_into().unwrap_or(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// SQL condition: `column` holds `param`'s unit code or a unit below it (codes nest by prefix;
/// a 6-digit county code also covers its towns, a 9-digit town code its 12-digit villages).
/// `param` is a placeholder such as `?1`.
///
/// Written as ranges rather than `LIKE`, so that an index on `column` serves it: codes are
/// digits and `-`, so "starts with `P-`" is `P-` ≤ code < `P.` and "starts with `P`" is
/// `P` ≤ code < `P~`.
pub fn within_sql(column: &str, param: &str) -> String {
    format!(
        "({column} = {param} OR ({column} >= {param} || '-' AND {column} < {param} || '.') \
         OR (length({param}) IN (6, 9) AND {column} >= {param} AND {column} < {param} || '~'))"
    )
}

/// Reads a meta value.
pub fn meta_get(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
}

/// Writes a meta value.
pub fn meta_set(tx: &Tx<'_>, key: &str, value: &str) -> Result<()> {
    tx.prepare_cached("INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value")?
        .execute([key, value])?;
    Ok(())
}

/// Reads a meta value stored as JSON; an unreadable value counts as absent.
pub fn meta_get_json<T: serde::de::DeserializeOwned>(conn: &Connection, key: &str) -> Result<Option<T>> {
    Ok(meta_get(conn, key)?.and_then(|s| serde_json::from_str(&s).ok()))
}

/// Writes a meta value as JSON.
pub fn meta_set_json<T: serde::Serialize + ?Sized>(tx: &Tx<'_>, key: &str, value: &T) -> Result<()> {
    meta_set(tx, key, &serde_json::to_string(value).expect("serialisable"))
}

/// Deletes a meta value.
pub fn meta_delete(tx: &Tx<'_>, key: &str) -> Result<()> {
    tx.execute("DELETE FROM meta WHERE key = ?1", [key])?;
    Ok(())
}

/// The saved bytes of a document: its snapshot followed by incremental chunks.
pub fn doc_chunks(conn: &Connection, id: &str) -> Result<Option<Vec<Vec<u8>>>> {
    let Some(snapshot) =
        conn.prepare_cached("SELECT snapshot FROM documents WHERE id = ?1")?.query_row([id], |r| r.get::<_, Vec<u8>>(0)).optional()?
    else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached("SELECT bytes FROM doc_chunks WHERE doc_id = ?1 ORDER BY seq")?;
    let mut out = vec![snapshot];
    for b in stmt.query_map([id], |r| r.get::<_, Vec<u8>>(0))? {
        out.push(b?);
    }
    Ok(Some(out))
}

/// What to write for a document after a change.
#[derive(Debug)]
pub enum DocWrite {
    /// A new document's first save.
    Create(Vec<u8>),
    /// An incremental save appended to the existing ones.
    Append(Vec<u8>),
    /// A compact save replacing snapshot and chunks.
    Replace(Vec<u8>),
}

/// Writes a document's bytes. Returns the number of incremental chunks now stored.
pub fn write_doc(tx: &Tx<'_>, id: &str, kind: RecordKind, write: DocWrite) -> Result<i64> {
    match write {
        DocWrite::Create(bytes) | DocWrite::Replace(bytes) => {
            tx.prepare_cached(
                "INSERT INTO documents(id, kind, snapshot, chunks) VALUES (?1, ?2, ?3, 0)
                 ON CONFLICT(id) DO UPDATE SET snapshot = excluded.snapshot, chunks = 0",
            )?
            .execute(params![id, kind.as_str(), bytes])?;
            tx.prepare_cached("DELETE FROM doc_chunks WHERE doc_id = ?1")?.execute([id])?;
            Ok(0)
        }
        DocWrite::Append(bytes) => {
            let n: i64 = tx
                .prepare_cached("UPDATE documents SET chunks = chunks + 1 WHERE id = ?1 RETURNING chunks")?
                .query_row([id], |r| r.get(0))?;
            tx.prepare_cached("INSERT INTO doc_chunks(doc_id, seq, bytes) VALUES (?1, ?2, ?3)")?.execute(params![id, n, bytes])?;
            Ok(n)
        }
    }
}

/// Removes a document and everything indexed from it (it left the device's scope).
pub fn delete_doc(tx: &Tx<'_>, id: &str) -> Result<()> {
    tx.prepare_cached("DELETE FROM records_fts WHERE rowid = (SELECT rowid FROM records WHERE id = ?1)")?.execute([id])?;
    tx.prepare_cached("DELETE FROM records WHERE id = ?1")?.execute([id])?;
    tx.execute("DELETE FROM documents WHERE id = ?1", [id])?;
    tx.execute("DELETE FROM personal WHERE doc_id = ?1", [id])?;
    Ok(())
}

/// Keeps a record's sealed personal data; `pending` until the server has it.
pub fn personal_put(tx: &Tx<'_>, id: &str, sealed: &[u8], pending: bool) -> Result<()> {
    tx.execute(
        "INSERT INTO personal(doc_id, sealed, pending) VALUES (?1, ?2, ?3)
         ON CONFLICT(doc_id) DO UPDATE SET sealed = excluded.sealed, pending = max(pending, excluded.pending)",
        params![id, sealed, pending],
    )?;
    Ok(())
}

/// A record's sealed personal data and whether it is pending.
pub fn personal_get(conn: &Connection, id: &str) -> Result<Option<(Vec<u8>, bool)>> {
    Ok(conn.query_row("SELECT sealed, pending FROM personal WHERE doc_id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?))).optional()?)
}

/// Sealed personal data the server does not have yet.
pub fn personal_pending(conn: &Connection) -> Result<Vec<(String, Vec<u8>)>> {
    let mut stmt = conn.prepare("SELECT doc_id, sealed FROM personal WHERE pending = 1 ORDER BY doc_id LIMIT 1000")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Whether the store holds the record.
pub fn has_doc(conn: &Connection, id: &str) -> Result<bool> {
    Ok(conn.query_row("SELECT 1 FROM documents WHERE id = ?1", [id], |_| Ok(())).optional()?.is_some())
}

/// One row of the offline index.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexRow {
    pub id: String,
    pub kind: RecordKind,
    pub status: Option<Status>,
    pub category: String,
    pub location: UnitCode,
    pub holder: Option<UnitCode>,
    pub owner: Option<UnitCode>,
    pub reporter: Option<String>,
    pub deadline_ms: Option<i64>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub display_no: String,
    pub case_no: Option<String>,
    pub title: String,
    pub conflicts: i64,
    pub supervisions: i64,
    pub satisfaction: Option<i64>,
    /// The current identity can take an action on the record now.
    pub actionable: bool,
}

/// Replaces a record's index row and its full-text entry.
pub fn write_index(tx: &Tx<'_>, row: &IndexRow, fts_body: &str) -> Result<()> {
    // An upsert keeps the row's rowid, which its search row shares.
    let rowid: i64 = tx
        .prepare_cached(
            "INSERT INTO records(id, kind, status, open, category, location, holder, owner, reporter,
            deadline_ms, due, created_ms, updated_ms, display_no, case_no, title, conflicts, supervisions, satisfaction, actionable)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)
         ON CONFLICT(id) DO UPDATE SET kind = excluded.kind, status = excluded.status, open = excluded.open,
            category = excluded.category, location = excluded.location, holder = excluded.holder, owner = excluded.owner,
            reporter = excluded.reporter, deadline_ms = excluded.deadline_ms, due = excluded.due,
            created_ms = excluded.created_ms, updated_ms = excluded.updated_ms, display_no = excluded.display_no,
            case_no = excluded.case_no, title = excluded.title, conflicts = excluded.conflicts,
            supervisions = excluded.supervisions, satisfaction = excluded.satisfaction, actionable = excluded.actionable
         RETURNING rowid",
        )?
        .query_row(
            params![
                row.id,
                row.kind.as_str(),
                row.status.map(Status::as_str),
                row.status.is_none_or(Status::is_open),
                row.category,
                row.location.as_str(),
                row.holder.as_ref().map(UnitCode::as_str),
                row.owner.as_ref().map(UnitCode::as_str),
                row.reporter,
                row.deadline_ms,
                row.deadline_ms.unwrap_or(i64::MAX),
                row.created_ms,
                row.updated_ms,
                row.display_no,
                row.case_no,
                row.title,
                row.conflicts,
                row.supervisions,
                row.satisfaction,
                row.actionable,
            ],
            |r| r.get(0),
        )?;
    tx.prepare_cached("DELETE FROM records_fts WHERE rowid = ?1")?.execute([rowid])?;
    tx.prepare_cached("INSERT INTO records_fts(rowid, id, title, body) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![rowid, row.id, row.title, fts_body])?;
    Ok(())
}

/// A change waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub seq: i64,
    pub doc_id: String,
    /// Automerge change hash (hex).
    pub hash: String,
    /// Automerge change bytes.
    pub bytes: Vec<u8>,
}

/// Queues a change for upload; a change already queued is ignored.
pub fn outbox_push(tx: &Tx<'_>, doc_id: &str, hash: &str, bytes: &[u8], now_ms: i64) -> Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO outbox(doc_id, hash, bytes, created_ms) VALUES (?1, ?2, ?3, ?4)",
        params![doc_id, hash, bytes, now_ms],
    )?;
    Ok(())
}

/// The oldest queued changes, in the order they were made.
pub fn outbox_list(conn: &Connection, limit: usize) -> Result<Vec<OutboxEntry>> {
    let mut stmt = conn.prepare_cached("SELECT seq, doc_id, hash, bytes FROM outbox ORDER BY seq LIMIT ?1")?;
    let rows =
        stmt.query_map([limit as i64], |r| Ok(OutboxEntry { seq: r.get(0)?, doc_id: r.get(1)?, hash: r.get(2)?, bytes: r.get(3)? }))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Number of queued changes.
pub fn outbox_len(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))?)
}

/// Removes acknowledged changes.
pub fn outbox_ack(tx: &Tx<'_>, hashes: &[String]) -> Result<usize> {
    let mut stmt = tx.prepare_cached("DELETE FROM outbox WHERE hash = ?1")?;
    let mut n = 0;
    for h in hashes {
        n += stmt.execute([h])?;
    }
    Ok(n)
}

/// Stores a prepared photo (content-addressed; storing it twice is a no-op).
pub fn put_attachment(tx: &Tx<'_>, sha256: &str, width: u32, height: u32, jpeg: &[u8], now_ms: i64) -> Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO attachments(sha256, mime, width, height, bytes, created_ms) VALUES (?1, 'image/jpeg', ?2, ?3, ?4, ?5)",
        params![sha256, width, height, jpeg, now_ms],
    )?;
    Ok(())
}

/// Keeps the photos downloaded for viewing within `max_bytes`, dropping the oldest first. Photos
/// taken on this phone are never dropped; a dropped one is downloaded again when it is viewed.
pub fn trim_downloaded_photos(tx: &Tx<'_>, max_bytes: u64) -> Result<usize> {
    let max = i64::try_from(max_bytes).unwrap_or(i64::MAX);
    Ok(tx.execute(
        "DELETE FROM attachments WHERE sha256 IN (
            SELECT sha256 FROM (
                SELECT sha256, sum(length(bytes)) OVER (ORDER BY created_ms DESC, sha256) AS kept
                FROM attachments WHERE downloaded = 1
            ) WHERE kept > ?1
         )",
        [max],
    )?)
}

/// Reads an attachment's bytes.
pub fn get_attachment(conn: &Connection, sha256: &str) -> Result<Option<Vec<u8>>> {
    Ok(conn.query_row("SELECT bytes FROM attachments WHERE sha256 = ?1", [sha256], |r| r.get(0)).optional()?)
}

/// Photos not yet uploaded, oldest first.
pub fn pending_attachments(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT sha256 FROM attachments WHERE uploaded = 0 ORDER BY created_ms, sha256")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Marks a photo as stored on the server.
pub fn mark_uploaded(tx: &Tx<'_>, sha256: &str) -> Result<()> {
    tx.execute("UPDATE attachments SET uploaded = 1 WHERE sha256 = ?1", [sha256])?;
    Ok(())
}

/// Removes all queued changes of a document.
pub fn outbox_drop_doc(tx: &Tx<'_>, doc_id: &str) -> Result<()> {
    tx.execute("DELETE FROM outbox WHERE doc_id = ?1", [doc_id])?;
    Ok(())
}

/// Deletes every record, queued change, photo and sync state: what a lost phone must not keep.
pub fn wipe(tx: &Tx<'_>) -> Result<()> {
    tx.execute_batch(
        "DELETE FROM records_fts; DELETE FROM records; DELETE FROM doc_chunks; DELETE FROM documents;
         DELETE FROM outbox; DELETE FROM attachments; DELETE FROM sync_rejections; DELETE FROM personal;
         DELETE FROM meta WHERE key = 'identity' OR key LIKE 'sync.%';",
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::StatementStatus;

    use super::*;

    #[test]
    fn cached_statements_are_not_prepared_again_for_new_values() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("phone.db")).unwrap();
        // A join with a range on a bound value: a shape whose plan SQLite would otherwise redo for
        // every new value.
        let sql = "SELECT c.seq FROM doc_chunks c JOIN records r ON r.id = c.doc_id AND r.holder = ?1 WHERE c.seq > ?2";
        for (holder, since) in [("360681101", 0i64), ("360681102", 1), ("360681101", 5)] {
            conn.prepare_cached(sql).unwrap().query_map(params![holder, since], |r| r.get::<_, i64>(0)).unwrap().for_each(drop);
        }
        let stmt = conn.prepare_cached(sql).unwrap();
        assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0, "the statement was compiled again for new values");
    }
}
