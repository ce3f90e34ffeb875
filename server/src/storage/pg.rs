//! The PostgreSQL backend of [`Storage`] (a county on the government's database servers,
//! issue 18). It holds the same slice as the SQLite backend, on its own schema
//! ([`MIGRATIONS`], applied by [`PgStorage::connect`]), and passes the same conformance suite.
//!
//! **Client crate:** `postgres` 0.19, the synchronous face of `tokio-postgres` from the
//! rust-postgres project (the most used and best kept PostgreSQL client in Rust; `sqlx` would
//! bring its own pool and macros for nothing we need). Synchronous on purpose: the server's
//! storage work runs as synchronous closures, on the single writer thread and on the blocking
//! pool for reads, exactly as with SQLite, so one seam serves both backends; the async client
//! underneath stays available should the writer become a task.
//!
//! **The change log across server nodes.** Log positions come from a sequence, which hands out
//! numbers in the order transactions ask, not in the order they commit: with two nodes a change
//! numbered 11 could become visible before one numbered 10, and a device whose cursor passed 11
//! would never receive 10. So every transaction that appends to the log first takes a
//! transaction-scoped advisory lock (held to its commit or rollback): numbers are then handed out
//! and committed in one order, no change can become visible below a visible one, and the log's
//! high water is its newest visible change.
//!
//! **Several nodes write in turn.** The same lock is taken first by every write transaction
//! ([`Storage::begin`]): the writer's batches, the sweeper's passes and imports of all nodes run
//! one at a time, as the one SQLite writer runs them. Besides the log's order this keeps case
//! numbers gapless, keeps one node from writing a record's snapshot over another's, and lets any
//! node sweep deadlines without supervising twice. Reads are not serialised. One lock per town is
//! the refinement once records carry their town.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};

use postgres::{Client, NoTls, Statement};

use super::{
    AuditEntry, AuditFilter, Bound, DeviceListing, ListOrder, ListedRecord, LoggedChange, NewSession, Notice, PersonListing, PersonRow,
    RecordFilter, RecordRow, Round, Session, Storage, Unit, UploadStep, escape_like, filter_conditions, like_pattern,
};
use crate::error::{AppError, AppResult};
use crate::records::ScopeEvent;

/// Key of the advisory lock that orders appends to the change log.
const LOG_LOCK: i64 = 0x0067_7269_646c_6f67; // "gridlog"

/// The schema, one step per entry; `schema_version` holds how many were applied.
const MIGRATIONS: &[&str] = &[
    // 1: the tables behind the seam so far
    "
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE people (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, unit TEXT NOT NULL,
        password_hash TEXT NOT NULL, active BOOLEAN NOT NULL DEFAULT TRUE, created_ms BIGINT NOT NULL
    );
    CREATE TABLE devices (
        id TEXT PRIMARY KEY, person_id TEXT NOT NULL REFERENCES people(id), name TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE, created_ms BIGINT NOT NULL, expires_ms BIGINT NOT NULL,
        revoked_ms BIGINT, logged_out BOOLEAN NOT NULL DEFAULT FALSE, last_seen_ms BIGINT,
        recovering BOOLEAN NOT NULL DEFAULT FALSE, data_key BYTEA, install_id TEXT
    );
    CREATE INDEX devices_person ON devices(person_id);
    CREATE TABLE units (
        code TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL, parent TEXT, department_key TEXT, boundary TEXT
    );
    CREATE TABLE docs (
        id TEXT PRIMARY KEY, kind TEXT NOT NULL, location TEXT NOT NULL, holder TEXT, owner TEXT,
        reporter TEXT, status TEXT, open BOOLEAN NOT NULL, category TEXT NOT NULL, title TEXT NOT NULL,
        case_no TEXT UNIQUE, deadline_ms BIGINT, created_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL,
        conflicts BIGINT NOT NULL, batch_id TEXT, facts TEXT NOT NULL, snapshot BYTEA NOT NULL
    );
    CREATE INDEX docs_open_deadline ON docs(open, deadline_ms);
    CREATE INDEX docs_location ON docs(location text_pattern_ops);
    CREATE INDEX docs_holder ON docs(holder text_pattern_ops);
    CREATE INDEX docs_reporter ON docs(reporter);
    CREATE TABLE attachments (
        sha256 TEXT PRIMARY KEY, total BIGINT NOT NULL, received BIGINT NOT NULL, complete BOOLEAN NOT NULL,
        uploader TEXT NOT NULL, created_ms BIGINT NOT NULL
    );
    CREATE TABLE attachment_refs (doc_id TEXT NOT NULL, sha256 TEXT NOT NULL, PRIMARY KEY (doc_id, sha256));
    CREATE INDEX attachment_refs_sha ON attachment_refs(sha256);
    CREATE TABLE api_keys (
        key_hash TEXT PRIMARY KEY, person_id TEXT NOT NULL REFERENCES people(id), name TEXT NOT NULL, created_ms BIGINT NOT NULL
    );
    CREATE INDEX docs_batch ON docs(batch_id);
    CREATE TABLE personal (doc_id TEXT PRIMARY KEY, data TEXT NOT NULL, updated_ms BIGINT NOT NULL, by_person TEXT NOT NULL);
    CREATE TABLE changes (
        seq BIGSERIAL PRIMARY KEY, doc_id TEXT NOT NULL, hash TEXT NOT NULL UNIQUE,
        bytes BYTEA NOT NULL, device_id TEXT NOT NULL, received_ms BIGINT NOT NULL
    );
    CREATE INDEX changes_doc ON changes(doc_id, seq);
    CREATE TABLE device_docs (device_id TEXT NOT NULL, doc_id TEXT NOT NULL, PRIMARY KEY (device_id, doc_id));
    CREATE TABLE rounds (
        device_id TEXT NOT NULL, round BIGINT NOT NULL, seq_high BIGINT NOT NULL,
        added TEXT NOT NULL, removed TEXT NOT NULL, applied BOOLEAN NOT NULL DEFAULT FALSE,
        PRIMARY KEY (device_id, round)
    );
    CREATE TABLE case_counters (prefix TEXT NOT NULL, year BIGINT NOT NULL, last BIGINT NOT NULL, PRIMARY KEY (prefix, year));
    CREATE TABLE notices (
        seq BIGSERIAL PRIMARY KEY, doc_id TEXT NOT NULL, unit TEXT NOT NULL, at_ms BIGINT NOT NULL, text TEXT NOT NULL
    );
    CREATE INDEX notices_unit ON notices(unit text_pattern_ops, seq);
    CREATE TABLE audit (
        seq BIGSERIAL PRIMARY KEY, at_ms BIGINT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL
    );
    ",
    // 2: failed logins per user name, counted across nodes (crate::auth)
    "CREATE TABLE login_failures (user_name TEXT PRIMARY KEY, failures BIGINT NOT NULL, since_ms BIGINT NOT NULL);",
    // 3: the due time at which the deadline sweeper last found each overdue incident supervised
    "CREATE TABLE swept (doc_id TEXT PRIMARY KEY, due_ms BIGINT NOT NULL);",
    // 4: open records by due time carrying what the deadline sweeper and the figures per village
    // read, so that both may be index-only scans (as SQLite's schema 8).
    "
    DROP INDEX docs_open_deadline;
    CREATE INDEX docs_open_deadline ON docs(open, deadline_ms) INCLUDE (kind, status, location, id);
    ",
];

/// One connection to a PostgreSQL database of the server's schema, as [`Storage`].
pub struct PgStorage {
    client: RefCell<Client>,
    /// Where it connects again after the connection was lost (outside a transaction).
    url: String,
    /// Statements prepared on this connection, by their SQL.
    prepared: RefCell<HashMap<String, Statement>>,
    /// A transaction opened by [`Storage::begin`] is running.
    in_tx: Cell<bool>,
    /// The newest part of the change log, as far as this connection has read it.
    tail: RefCell<LogTail>,
    /// The tail holds every change there is: it was read under the write lock of the running
    /// transaction, which has logged nothing since (a round's high water, then its changes), or
    /// in the snapshot of a read-only transaction ([`Storage::begin_read`]).
    tail_whole: Cell<bool>,
    /// A read-only transaction of [`Storage::begin_read`] is running.
    in_snapshot: Cell<bool>,
    /// Statements run on this connection ([`PgStorage::replan_as_tables_grow`]).
    executed: Cell<u64>,
    /// Changes logged in the running write transaction and not sent yet ([`PendingChange`]).
    pending_log: RefCell<Vec<PendingChange>>,
}

/// A change logged inside a write transaction, sent to PostgreSQL later in the same
/// transaction: with the row of its record ([`Storage::put_record`], which follows the changes
/// of every push and system action) in one statement, or before any other statement, savepoint
/// or commit. A statement that reads the log therefore always sees it, and a round that logs a
/// device's change and the server's own change (a new report's case number) and writes the
/// record sends all three in one round trip instead of three. Only statements known not to
/// touch the log run with changes still pending ([`PgStorage::query_one_beside_log`]). Under
/// the log's lock the changes' positions are taken in the order they were logged, as before;
/// a failure when they are sent fails the statement that carried them, which fails the job.
struct PendingChange {
    doc_id: String,
    hash: String,
    bytes: Vec<u8>,
    device_id: String,
    received_ms: i64,
}

/// The columns of pending changes, as the arrays the statements below take.
struct PendingColumns {
    doc_ids: Vec<String>,
    hashes: Vec<String>,
    bytes: Vec<Vec<u8>>,
    device_ids: Vec<String>,
    received_ms: Vec<i64>,
}

impl PendingColumns {
    fn of(pending: Vec<PendingChange>) -> Self {
        let mut c = Self { doc_ids: vec![], hashes: vec![], bytes: vec![], device_ids: vec![], received_ms: vec![] };
        for p in pending {
            c.doc_ids.push(p.doc_id);
            c.hashes.push(p.hash);
            c.bytes.push(p.bytes);
            c.device_ids.push(p.device_id);
            c.received_ms.push(p.received_ms);
        }
        c
    }

    fn params(&self) -> [&(dyn postgres::types::ToSql + Sync); 5] {
        [&self.doc_ids, &self.hashes, &self.bytes, &self.device_ids, &self.received_ms]
    }
}

/// A record's row, inserted or replaced whole ($1 … $18).
macro_rules! upsert_record {
    () => {
        "INSERT INTO docs(id, kind, location, holder, owner, reporter, status, open, category, title, case_no,
            deadline_ms, created_ms, updated_ms, conflicts, batch_id, facts, snapshot)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
         ON CONFLICT(id) DO UPDATE SET kind = excluded.kind, location = excluded.location, holder = excluded.holder,
            owner = excluded.owner, reporter = excluded.reporter, status = excluded.status, open = excluded.open,
            category = excluded.category, title = excluded.title, case_no = excluded.case_no,
            deadline_ms = excluded.deadline_ms, created_ms = excluded.created_ms, updated_ms = excluded.updated_ms,
            conflicts = excluded.conflicts, batch_id = excluded.batch_id, facts = excluded.facts, snapshot = excluded.snapshot"
    };
}

/// Pending changes appended to the log in the order they were logged, from the five arrays
/// ([`PendingColumns::params`]) that are the statement's parameters numbered as given.
macro_rules! log_pending {
    ($d:literal, $h:literal, $b:literal, $v:literal, $r:literal) => {
        concat!(
            "INSERT INTO changes(doc_id, hash, bytes, device_id, received_ms)
             SELECT d, h, b, v, r FROM unnest($",
            $d,
            "::TEXT[], $",
            $h,
            "::TEXT[], $",
            $b,
            "::BYTEA[], $",
            $v,
            "::TEXT[], $",
            $r,
            "::BIGINT[])
             WITH ORDINALITY AS c(d, h, b, v, r, n) ORDER BY n"
        )
    };
}

/// The pending changes alone.
const LOG_PENDING: &str = log_pending!(1, 2, 3, 4, 5);

/// A record's row with the pending changes of the log ($19 … $23), in one statement.
const UPSERT_RECORD_WITH_LOG: &str = concat!("WITH logged AS (", log_pending!(19, 20, 21, 22, 23), ") ", upsert_record!());

/// After how many statements a connection first makes its plans again; then after each power
/// of two up to [`REPLAN_EVERY_MAX`], and every multiple of it.
const REPLAN_FIRST: u64 = 1 << 10;
/// The longest run of statements between two new plannings (minutes of a busy writer); a power
/// of two, so that its multiples include every power of two above it.
const REPLAN_EVERY_MAX: u64 = 1 << 20;

/// Whether a connection makes its plans again before its `executed`-th statement
/// ([`PgStorage::replan_as_tables_grow`]).
fn replans_at(executed: u64) -> bool {
    executed >= REPLAN_FIRST && (executed.is_power_of_two() || executed.is_multiple_of(REPLAN_EVERY_MAX))
}

/// Most changes [`LogTail`] keeps (about 100 bytes each).
const LOG_TAIL_MAX: usize = 65_536;

/// How many changes a round reads in one statement.
const CHANGES_AT_ONCE: usize = 128;

/// The newest part of the change log without the changes' bytes: which record each change is
/// of and which device made it. A round looks up in it, in memory, the changes the device's
/// records received after its cursor, and reads only those. Joining the log since the cursor
/// with the device's records in the database instead read every change other devices made in
/// between: under 1,000 devices syncing back to back that join was two thirds of PostgreSQL's
/// time (pg_stat_statements, docs/benchmarks.md).
///
/// It reads each change once, after the last one it holds. Under the log's lock (module doc) no
/// change can become visible below a visible one, so the tail holds every change after `start`
/// there is. A change of a transaction that was undone may stay in it: the sequence never hands
/// its number out again, and reading it finds nothing. A backup is restored into an empty
/// database before the nodes start (README), so no node holds the tail of a log that went back.
#[derive(Default)]
struct LogTail {
    /// Whether the tail was started (on the first round of the connection).
    started: bool,
    /// The tail holds the changes after this position.
    start: i64,
    entries: VecDeque<TailEntry>,
}

struct TailEntry {
    seq: i64,
    doc_id: Box<str>,
    device_id: Box<str>,
}

impl std::fmt::Debug for PgStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgStorage")
    }
}

/// Most statements kept prepared on one connection (lists' SQL varies with their filters).
const PREPARED_MAX: usize = 256;

impl PgStorage {
    /// Connects to `url` (`postgres://user@host:port/db`) and brings the schema up to date, each
    /// step in its own transaction (a failed step leaves the database at the one before).
    pub fn connect(url: &str) -> AppResult<Self> {
        let mut client = open(url)?;
        let mut tx = client.transaction()?;
        let read_only: String = tx.query_one("SELECT current_setting('transaction_read_only')", &[])?.get(0);
        if read_only == "on" {
            return Err(AppError::Internal(format!(
                "PostgreSQL 数据库 {} 只读(只读副本,或设置了 default_transaction_read_only),服务器需要可写的主库",
                redact(url)
            )));
        }
        // Nodes starting together migrate one after the other.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&(LOG_LOCK + 1)])?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
        let version: i64 = tx.query_opt("SELECT version::BIGINT FROM schema_version", &[])?.map_or(0, |r| r.get(0));
        if version as usize > MIGRATIONS.len() {
            return Err(AppError::Internal(format!(
                "数据库结构版本 {version} 高于本程序支持的 {},请升级 gridlink-server",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.batch_execute(sql)?;
            tx.execute("DELETE FROM schema_version", &[])?;
            tx.execute("INSERT INTO schema_version(version) VALUES ($1)", &[&(i as i32 + 1)])?;
        }
        tx.commit()?;
        Ok(Self::wrap(client, url))
    }

    /// Creates an empty database named `name` on the server that `admin_url` reaches and
    /// returns its URL (for tests and demos, which each want a database of their own).
    pub fn create_database(admin_url: &str, name: &str) -> AppResult<String> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            return Err(AppError::BadRequest(format!("数据库名“{name}”只能由小写字母、数字和下划线组成")));
        }
        open(admin_url)?.batch_execute(&format!("CREATE DATABASE {name}"))?;
        let (base, _) = admin_url.rsplit_once('/').filter(|(b, _)| b.contains("://")).unwrap_or((admin_url, ""));
        Ok(format!("{base}/{name}"))
    }

    /// Another connection to a database [`PgStorage::connect`] brought up to date (a reader).
    pub fn connect_more(url: &str) -> AppResult<Self> {
        Ok(Self::wrap(open(url)?, url))
    }

    fn wrap(client: Client, url: &str) -> Self {
        Self {
            client: RefCell::new(client),
            url: url.to_owned(),
            prepared: RefCell::default(),
            in_tx: Cell::new(false),
            tail: RefCell::default(),
            tail_whole: Cell::new(false),
            in_snapshot: Cell::new(false),
            executed: Cell::new(0),
            pending_log: RefCell::default(),
        }
    }

    /// Runs `f` on the connection itself (the migration's generic copy), inside whatever
    /// transaction is open.
    pub(crate) fn with_client<T>(&self, f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>) -> AppResult<T> {
        self.tail_whole.set(false);
        self.send_pending_log()?;
        self.usable()?;
        Ok(f(&mut self.client.borrow_mut())?)
    }

    /// Runs SQL that is not part of the seam (fixtures, schema checks).
    pub fn batch_execute(&self, sql: &str) -> AppResult<()> {
        self.tail_whole.set(false);
        self.send_pending_log()?;
        self.usable()?;
        Ok(self.client.borrow_mut().batch_execute(sql)?)
    }

    /// Connects again if the connection was lost between transactions (the database restarted,
    /// a proxy dropped it); a transaction that was running is lost with its connection.
    fn usable(&self) -> AppResult<()> {
        if !self.client.borrow().is_closed() {
            return Ok(());
        }
        // A transaction that was running is gone with the connection: what follows must not run
        // outside it (a snapshot's reads would no longer agree).
        self.pending_log.borrow_mut().clear();
        if self.in_tx.replace(false) | self.in_snapshot.replace(false) {
            return Err(AppError::Internal("PostgreSQL connection lost during a transaction".into()));
        }
        tracing::warn!("PostgreSQL connection lost: connecting again");
        *self.client.borrow_mut() = open(&self.url)?;
        self.prepared.borrow_mut().clear();
        Ok(())
    }

    /// Drops the plans PostgreSQL keeps for this connection's prepared statements, after 1,024
    /// statements, 2,048, 4,096 … then every [`REPLAN_EVERY_MAX`].
    ///
    /// After five runs a prepared statement keeps one generic plan, made for the tables as they
    /// were then, until their statistics are next analysed. A database that starts empty and
    /// fills (a new county, the first minutes of a server) kept plans made for empty tables:
    /// a device's round, a device's records, its last round were all read by scanning the whole
    /// table, and under 1,000 devices syncing back to back the writer's first statement of each
    /// round took 0.39 ms instead of 0.04 (pg_stat_statements and auto_explain,
    /// docs/benchmarks.md). Plans made again are made for the tables' present size: the planner
    /// counts a table's pages when it plans. `DISCARD PLANS` keeps the statements prepared and
    /// may run inside a transaction.
    fn replan_as_tables_grow(&self) -> AppResult<()> {
        let executed = self.executed.get() + 1;
        self.executed.set(executed);
        if !replans_at(executed) {
            return Ok(());
        }
        Ok(self.client.borrow_mut().batch_execute("DISCARD PLANS")?)
    }

    /// Sends the changes logged and still pending ([`PendingChange`]).
    fn send_pending_log(&self) -> AppResult<()> {
        let pending = self.pending_log.take();
        if pending.is_empty() {
            return Ok(());
        }
        let columns = PendingColumns::of(pending);
        self.execute(LOG_PENDING, &columns.params())?;
        Ok(())
    }

    /// Ends the write transaction with `sql` (a COMMIT). Pending changes that cannot be sent
    /// leave it unended: it is rolled back, so that the connection's next transaction starts clean.
    fn end_transaction(&self, sql: &str) -> AppResult<()> {
        let done = self.batch_execute(sql);
        if done.is_err() && !self.client.borrow().is_closed() {
            let _ = self.client.borrow_mut().batch_execute("ROLLBACK");
        }
        self.drop_pending_log();
        self.in_tx.set(false);
        done
    }

    /// Forgets the pending changes of a transaction or savepoint being undone.
    fn drop_pending_log(&self) {
        self.pending_log.borrow_mut().clear();
    }

    /// A statement, prepared once, after the pending changes of the log are sent.
    fn statement(&self, sql: &str) -> AppResult<Statement> {
        self.send_pending_log()?;
        self.prepared_statement(sql)
    }

    /// A statement, prepared once, that may run with changes of the log still pending.
    fn prepared_statement(&self, sql: &str) -> AppResult<Statement> {
        self.usable()?;
        self.replan_as_tables_grow()?;
        if let Some(s) = self.prepared.borrow().get(sql) {
            return Ok(s.clone());
        }
        let stmt = self.client.borrow_mut().prepare(sql)?;
        let mut prepared = self.prepared.borrow_mut();
        if prepared.len() >= PREPARED_MAX {
            prepared.clear();
        }
        prepared.insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }

    fn execute(&self, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> AppResult<u64> {
        let stmt = self.statement(sql)?;
        Ok(self.client.borrow_mut().execute(&stmt, params)?)
    }

    fn query(&self, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> AppResult<Vec<postgres::Row>> {
        let stmt = self.statement(sql)?;
        Ok(self.client.borrow_mut().query(&stmt, params)?)
    }

    fn query_opt(&self, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> AppResult<Option<postgres::Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// A statement that always answers one row (a SELECT without FROM, or an upsert's RETURNING).
    fn query_one(&self, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> AppResult<postgres::Row> {
        self.query_opt(sql, params)?.ok_or_else(|| AppError::Internal("a statement of one row answered none".into()))
    }

    /// [`PgStorage::query_one`] for a statement that neither reads nor writes the change log:
    /// changes logged before it may stay pending ([`PendingChange`]).
    fn query_one_beside_log(&self, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> AppResult<postgres::Row> {
        let stmt = self.prepared_statement(sql)?;
        let row = self.client.borrow_mut().query_opt(&stmt, params)?;
        row.ok_or_else(|| AppError::Internal("a statement of one row answered none".into()))
    }

    /// Begins a write transaction and sends `then` (more SQL) in the same round trip.
    fn begin_then(&self, then: &str) -> AppResult<()> {
        // The town's write lock (see the module doc), held to the commit or rollback; sent with
        // the BEGIN, one round trip for both.
        if let Err(e) = self.batch_execute(&format!("BEGIN; SELECT pg_advisory_xact_lock({LOG_LOCK}){then}")) {
            // Not left half begun: the next batch starts clean.
            let _ = self.client.borrow_mut().batch_execute("ROLLBACK");
            return Err(e);
        }
        self.in_tx.set(true);
        Ok(())
    }

    /// Reads into the log's tail the changes after the last one it holds; the first time, the
    /// newest [`LOG_TAIL_MAX`] changes.
    fn follow_log(&self) -> AppResult<()> {
        if self.tail_whole.get() {
            return Ok(());
        }
        let mut tail = self.tail.borrow_mut();
        if !tail.started {
            let high: i64 = self.query_opt("SELECT coalesce(max(seq), 0) FROM changes", &[])?.map_or(0, |r| r.get(0));
            tail.start = (high - LOG_TAIL_MAX as i64).max(0);
            tail.started = true;
        }
        let last = tail.entries.back().map_or(tail.start, |e| e.seq);
        for r in self.query("SELECT seq, doc_id, device_id FROM changes WHERE seq > $1 ORDER BY seq", &[&last])? {
            let (doc_id, device_id): (&str, &str) = (r.get(1), r.get(2));
            tail.entries.push_back(TailEntry { seq: r.get(0), doc_id: doc_id.into(), device_id: device_id.into() });
        }
        while tail.entries.len() > LOG_TAIL_MAX {
            let oldest = tail.entries.pop_front().expect("a tail longer than its bound");
            tail.start = oldest.seq;
        }
        // Under the lock nothing else can be logged until this transaction ends; in a snapshot
        // nothing logged since is seen.
        self.tail_whole.set(self.in_tx.get() || self.in_snapshot.get());
        Ok(())
    }
}

/// A change of the log, from a row of `seq, doc_id, bytes, device_id`.
fn logged(r: &postgres::Row) -> LoggedChange {
    LoggedChange { seq: r.get(0), doc_id: r.get(1), bytes: r.get(2), device_id: r.get(3) }
}

/// Opens a connection, with an error that names the database but not its password.
pub(super) fn open(url: &str) -> AppResult<Client> {
    Client::connect(url, NoTls).map_err(|e| AppError::Internal(format!("无法连接 PostgreSQL 数据库({}): {}", redact(url), reason(&e))))
}

/// A connection URL without its password.
pub(crate) fn redact(url: &str) -> String {
    match url.split_once("://").and_then(|(scheme, rest)| rest.split_once('@').map(|(who, host)| (scheme, who, host))) {
        Some((scheme, who, host)) => format!("{scheme}://{}@{host}", who.split(':').next().unwrap_or_default()),
        None => url.to_owned(),
    }
}

/// Why a connection failed, without anything the server sent back.
fn reason(e: &postgres::Error) -> String {
    match e.code() {
        Some(c) => format!("错误代码 {}", c.code()),
        None => e.to_string().chars().take(200).collect(),
    }
}

impl Storage for PgStorage {
    fn begin(&self) -> AppResult<()> {
        self.begin_then("")
    }

    fn begin_jobs(&self) -> AppResult<()> {
        self.begin_then("; SAVEPOINT write_job")
    }

    fn next_job(&self, keep: bool) -> AppResult<()> {
        if !keep {
            self.drop_pending_log();
        }
        self.batch_execute(if keep {
            "RELEASE SAVEPOINT write_job; SAVEPOINT write_job"
        } else {
            "ROLLBACK TO SAVEPOINT write_job; RELEASE SAVEPOINT write_job; SAVEPOINT write_job"
        })
    }

    fn commit_jobs(&self, keep_last: bool) -> AppResult<()> {
        // COMMIT releases the savepoint with the transaction.
        if !keep_last {
            self.drop_pending_log();
        }
        self.end_transaction(if keep_last { "COMMIT" } else { "ROLLBACK TO SAVEPOINT write_job; COMMIT" })
    }

    fn commit(&self) -> AppResult<()> {
        self.end_transaction("COMMIT")
    }

    fn rollback(&self) -> AppResult<()> {
        self.drop_pending_log();
        let done = self.batch_execute("ROLLBACK");
        self.in_tx.set(false);
        done
    }

    fn savepoint(&self) -> AppResult<()> {
        self.batch_execute("SAVEPOINT write_job")
    }

    fn end_savepoint(&self, keep: bool) -> AppResult<()> {
        if !keep {
            self.drop_pending_log();
        }
        self.batch_execute(if keep {
            "RELEASE SAVEPOINT write_job"
        } else {
            "ROLLBACK TO SAVEPOINT write_job; RELEASE SAVEPOINT write_job"
        })
    }

    fn in_transaction(&self) -> bool {
        self.in_tx.get() && !self.client.borrow().is_closed()
    }

    fn begin_read(&self) -> AppResult<()> {
        // One snapshot for the whole transaction, without the write lock. Changes are appended
        // and committed in log order (module doc), so the log it sees has no hole that a later
        // commit could fill: its tail is whole until the transaction ends.
        self.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
        self.in_snapshot.set(true);
        Ok(())
    }

    fn end_read(&self) -> AppResult<()> {
        self.in_snapshot.set(false);
        self.batch_execute("COMMIT")
    }

    fn meta_get(&self, key: &str) -> AppResult<Option<String>> {
        Ok(self.query_opt("SELECT value FROM meta WHERE key = $1", &[&key])?.map(|r| r.get(0)))
    }

    fn meta_set(&self, key: &str, value: &str) -> AppResult<()> {
        self.execute(
            "INSERT INTO meta(key, value) VALUES ($1, $2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            &[&key, &value],
        )?;
        Ok(())
    }

    fn meta_clear(&self, key: &str) -> AppResult<()> {
        self.execute("DELETE FROM meta WHERE key = $1", &[&key])?;
        Ok(())
    }

    fn device_seen(&self, device: &str, now_ms: i64) -> AppResult<bool> {
        let row = self.query_opt("UPDATE devices SET last_seen_ms = $1 WHERE id = $2 RETURNING recovering", &[&now_ms, &device])?;
        Ok(row.is_some_and(|r| r.get(0)))
    }

    fn home(&self) -> AppResult<Option<String>> {
        // The cluster (a new one after a disaster), the database (`pg_restore` into a new one)
        // and the WAL timeline (a point-in-time recovery or a promoted standby, from the moment
        // it is promoted). A PostgreSQL-derived engine without these functions: None, and the
        // transaction goes on.
        const HOME: &str = "SELECT (SELECT system_identifier FROM pg_control_system())::TEXT
             || '/' || (SELECT oid FROM pg_database WHERE datname = current_database())::TEXT
             || '/' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)";
        let guarded = self.in_transaction();
        if guarded {
            self.batch_execute("SAVEPOINT home")?;
        }
        self.usable()?;
        let found = self.client.borrow_mut().query_opt(HOME, &[]);
        if guarded {
            self.batch_execute(if found.is_ok() {
                "RELEASE SAVEPOINT home"
            } else {
                "ROLLBACK TO SAVEPOINT home; RELEASE SAVEPOINT home"
            })?;
        }
        match found {
            Ok(row) => Ok(row.and_then(|r| r.get(0))),
            Err(e) => {
                tracing::warn!(reason = %reason(&e), "cannot tell where the database lives: a restore will not be noticed at start");
                Ok(None)
            }
        }
    }

    fn device_seen_taking_round(&self, device: &str, now_ms: i64, cursor: Option<i64>) -> AppResult<(bool, Option<i64>)> {
        // The presented round's additions and removals, older rounds forgotten, or with no kept
        // round presented (`round = NULL` finds none) the holdings forgotten, with the last-seen
        // time: one statement. Its parts see the tables as they were before it: the round is read
        // once, and the two deletions of holdings never both run.
        let row = self.query_one(
            "WITH seen AS (
                 UPDATE devices SET last_seen_ms = $1 WHERE id = $2 RETURNING recovering
             ), presented AS (
                 SELECT seq_high, added, removed, applied FROM rounds WHERE device_id = $2 AND round = $3
             ), added AS (
                 INSERT INTO device_docs(device_id, doc_id)
                 SELECT $2, a FROM presented p, json_array_elements_text(p.added::json) a WHERE NOT p.applied
                 ON CONFLICT DO NOTHING
             ), removed AS (
                 DELETE FROM device_docs WHERE device_id = $2
                 AND doc_id = ANY(ARRAY(SELECT json_array_elements_text(p.removed::json) FROM presented p WHERE NOT p.applied))
             ), forgotten AS (
                 DELETE FROM device_docs WHERE device_id = $2 AND NOT EXISTS (SELECT 1 FROM presented)
             ), older AS (
                 DELETE FROM rounds WHERE device_id = $2 AND round < $3 AND EXISTS (SELECT 1 FROM presented)
             ), taken AS (
                 UPDATE rounds SET applied = TRUE WHERE device_id = $2 AND round = $3 AND NOT applied
             )
             SELECT coalesce((SELECT recovering FROM seen), FALSE), (SELECT seq_high FROM presented)",
            &[&now_ms, &device, &cursor],
        )?;
        Ok((row.get(0), row.get(1)))
    }

    fn device_recovering(&self, device: &str) -> AppResult<bool> {
        Ok(self.query_opt("SELECT recovering FROM devices WHERE id = $1", &[&device])?.is_some_and(|r| r.get(0)))
    }

    fn set_device_recovering(&self, device: &str, recovering: bool) -> AppResult<()> {
        self.execute("UPDATE devices SET recovering = $2 WHERE id = $1", &[&device, &recovering])?;
        Ok(())
    }

    fn round(&self, device: &str, round: i64) -> AppResult<Option<Round>> {
        let row = self.query_opt(
            "SELECT round, seq_high, added, removed, applied FROM rounds WHERE device_id = $1 AND round = $2",
            &[&device, &round],
        )?;
        Ok(row.map(|r| Round {
            round: r.get(0),
            seq_high: r.get(1),
            added: serde_json::from_str(r.get(2)).unwrap_or_default(),
            removed: serde_json::from_str(r.get(3)).unwrap_or_default(),
            applied: r.get(4),
        }))
    }

    fn add_round(&self, device: &str, seq_high: i64, added: &[String], removed: &[String]) -> AppResult<i64> {
        let (added, removed) =
            (serde_json::to_string(added).expect("a list of strings"), serde_json::to_string(removed).expect("a list of strings"));
        // Rounds of one device recorded at once (a retried request answered on two readers or
        // nodes) may both find the same last round: the one that comes second finds its number
        // taken, inserts nothing, and tries the next. Each attempt is a statement of its own,
        // which under READ COMMITTED sees the other's round once it is committed.
        for _ in 0..8 {
            let row = self.query_opt(
                "INSERT INTO rounds(device_id, round, seq_high, added, removed)
                 SELECT $1, coalesce(max(round), 0) + 1, $2, $3, $4 FROM rounds WHERE device_id = $1
                 ON CONFLICT (device_id, round) DO NOTHING RETURNING round",
                &[&device, &seq_high, &added, &removed],
            )?;
            if let Some(r) = row {
                return Ok(r.get(0));
            }
        }
        Err(AppError::Internal("round not recorded: its number was taken again and again".into()))
    }

    fn holdings(&self, device: &str) -> AppResult<HashSet<String>> {
        Ok(self.query("SELECT doc_id FROM device_docs WHERE device_id = $1", &[&device])?.into_iter().map(|r| r.get(0)).collect())
    }

    fn change_known(&self, hash: &str) -> AppResult<bool> {
        Ok(self.query_opt("SELECT 1 FROM changes WHERE hash = $1", &[&hash])?.is_some())
    }

    fn log_change(&self, doc_id: &str, hash: &str, bytes: &[u8], device_id: &str, now_ms: i64) -> AppResult<()> {
        // Held to the end of the caller's transaction (see the module doc); a transaction of
        // `begin` holds it already.
        self.tail_whole.set(false);
        if self.in_tx.get() {
            // Sent with the record's row, or before the next statement ([`PendingChange`]).
            self.pending_log.borrow_mut().push(PendingChange {
                doc_id: doc_id.to_owned(),
                hash: hash.to_owned(),
                bytes: bytes.to_vec(),
                device_id: device_id.to_owned(),
                received_ms: now_ms,
            });
            return Ok(());
        }
        self.execute("SELECT pg_advisory_xact_lock($1)", &[&LOG_LOCK])?;
        self.execute(
            "INSERT INTO changes(doc_id, hash, bytes, device_id, received_ms) VALUES ($1, $2, $3, $4, $5)",
            &[&doc_id, &hash, &bytes, &device_id, &now_ms],
        )?;
        Ok(())
    }

    fn record_changes(&self, doc_id: &str, visit: &mut dyn FnMut(Vec<u8>, String) -> AppResult<()>) -> AppResult<()> {
        for r in self.query("SELECT bytes, device_id FROM changes WHERE doc_id = $1 ORDER BY seq", &[&doc_id])? {
            visit(r.get(0), r.get(1))?;
        }
        Ok(())
    }

    fn changes_after(
        &self,
        device: &str,
        after: i64,
        holdings: &HashSet<String>,
        visit: &mut dyn FnMut(LoggedChange) -> AppResult<bool>,
    ) -> AppResult<()> {
        if holdings.is_empty() {
            return Ok(());
        }
        self.follow_log()?;
        let wanted: Option<Vec<i64>> = {
            let tail = self.tail.borrow();
            (after >= tail.start).then(|| {
                let from = tail.entries.partition_point(|e| e.seq <= after);
                tail.entries.range(from..).filter(|e| &*e.device_id != device && holdings.contains(&*e.doc_id)).map(|e| e.seq).collect()
            })
        };
        let Some(wanted) = wanted else {
            // A cursor older than the tail: the log since it, joined with the device's records.
            let rows = self.query(
                "SELECT c.seq, c.doc_id, c.bytes, c.device_id FROM changes c
                 JOIN device_docs d ON d.doc_id = c.doc_id AND d.device_id = $1
                 WHERE c.seq > $2 AND c.device_id <> $1 ORDER BY c.seq",
                &[&device, &after],
            )?;
            for r in rows {
                if !visit(logged(&r))? {
                    break;
                }
            }
            return Ok(());
        };
        for seqs in wanted.chunks(CHANGES_AT_ONCE) {
            let seqs = seqs.to_vec();
            for r in self.query("SELECT seq, doc_id, bytes, device_id FROM changes WHERE seq = ANY($1) ORDER BY seq", &[&seqs])? {
                if !visit(logged(&r))? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn log_high_water(&self) -> AppResult<i64> {
        // The newest change there is, read with those before it into the tail, where the
        // round's changes_after then finds them without asking again.
        self.follow_log()?;
        let tail = self.tail.borrow();
        Ok(tail.entries.back().map_or(tail.start, |e| e.seq))
    }

    fn snapshot(&self, doc_id: &str) -> AppResult<Option<Vec<u8>>> {
        Ok(self.query_opt("SELECT snapshot FROM docs WHERE id = $1", &[&doc_id])?.map(|r| r.get(0)))
    }

    fn snapshot_and_known(&self, doc_id: &str, hash: Option<&str>) -> AppResult<(Option<Vec<u8>>, bool)> {
        let row = self.query_one(
            "SELECT (SELECT snapshot FROM docs WHERE id = $1), EXISTS (SELECT 1 FROM changes WHERE hash = $2)",
            &[&doc_id, &hash],
        )?;
        Ok((row.get(0), row.get(1)))
    }

    fn snapshots(&self, ids: &[&str]) -> AppResult<HashMap<String, Vec<u8>>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = self.query("SELECT id, snapshot FROM docs WHERE id = ANY($1)", &[&ids])?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn put_record(&self, r: &RecordRow) -> AppResult<()> {
        let record: [&(dyn postgres::types::ToSql + Sync); 18] = [
            &r.id,
            &r.kind,
            &r.location,
            &r.holder,
            &r.owner,
            &r.reporter,
            &r.status,
            &r.open,
            &r.category,
            &r.title,
            &r.case_no,
            &r.deadline_ms,
            &r.created_ms,
            &r.updated_ms,
            &r.conflicts,
            &r.batch_id,
            &r.facts,
            &r.snapshot,
        ];
        // The changes logged before it go with it ([`PendingChange`]).
        let pending = self.pending_log.take();
        if pending.is_empty() {
            self.execute(upsert_record!(), &record)?;
        } else {
            let columns = PendingColumns::of(pending);
            let params: Vec<&(dyn postgres::types::ToSql + Sync)> = record.into_iter().chain(columns.params()).collect();
            self.execute(UPSERT_RECORD_WITH_LOG, &params)?;
        }
        Ok(())
    }

    fn record_ids(&self) -> AppResult<Vec<String>> {
        Ok(self.query("SELECT id FROM docs ORDER BY id", &[])?.into_iter().map(|r| r.get(0)).collect())
    }

    fn record_with_case_no(&self, case_no: &str, except: &str) -> AppResult<Option<String>> {
        Ok(self.query_opt("SELECT id FROM docs WHERE case_no = $1 AND id <> $2", &[&case_no, &except])?.map(|r| r.get(0)))
    }

    fn records_in_scope(&self, unit: &str, person_id: &str) -> AppResult<HashSet<String>> {
        let sql = format!("SELECT id FROM docs WHERE {}", scope());
        Ok(self.query(&sql, &[&unit, &person_id])?.into_iter().map(|r| r.get(0)).collect())
    }

    fn scope_and_holdings(&self, unit: &str, person_id: &str, device: &str) -> AppResult<(HashSet<String>, HashSet<String>)> {
        let sql = format!(
            "SELECT s.id, h.doc_id FROM (SELECT id FROM docs WHERE {}) s
             FULL JOIN (SELECT doc_id FROM device_docs WHERE device_id = $3) h ON h.doc_id = s.id",
            scope()
        );
        let (mut scope, mut have) = (HashSet::new(), HashSet::new());
        for r in self.query(&sql, &[&unit, &person_id, &device])? {
            let (in_scope, held): (Option<String>, Option<String>) = (r.get(0), r.get(1));
            scope.extend(in_scope);
            have.extend(held);
        }
        Ok((scope, have))
    }

    fn count_records(&self, f: &RecordFilter<'_>, unit: &str, person_id: &str) -> AppResult<u64> {
        let (cond, values) = list_condition(f);
        let mut args: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&unit, &person_id];
        args.extend(values.iter().map(|v| v.as_ref()));
        let n: i64 = self.query_opt(&format!("SELECT count(*) FROM docs WHERE {cond}"), &args)?.map_or(0, |r| r.get(0));
        Ok(n.max(0) as u64)
    }

    fn list_records(
        &self,
        f: &RecordFilter<'_>,
        order: ListOrder,
        unit: &str,
        person_id: &str,
        limit: i64,
        offset: i64,
    ) -> AppResult<Vec<ListedRecord>> {
        let (cond, values) = list_condition(f);
        let n = values.len();
        let mut args: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&unit, &person_id];
        args.extend(values.iter().map(|v| v.as_ref()));
        args.extend([&limit as &(dyn postgres::types::ToSql + Sync), &offset]);
        let sql = format!(
            "SELECT id, kind, location, holder, status, category, title, case_no, deadline_ms, updated_ms, open, conflicts, created_ms
             FROM docs WHERE {cond} ORDER BY {} LIMIT ${} OFFSET ${}",
            list_order(order),
            n + 3,
            n + 4
        );
        Ok(self
            .query(&sql, &args)?
            .into_iter()
            .map(|r| ListedRecord {
                id: r.get(0),
                kind: r.get(1),
                location: r.get(2),
                holder: r.get(3),
                status: r.get(4),
                category: r.get(5),
                title: r.get(6),
                case_no: r.get(7),
                deadline_ms: r.get(8),
                updated_ms: r.get(9),
                open: r.get(10),
                conflicts: r.get(11),
                created_ms: r.get(12),
            })
            .collect())
    }

    fn record_facts(&self, f: &RecordFilter<'_>, unit: &str, person_id: &str) -> AppResult<Vec<(String, String)>> {
        let (cond, values) = list_condition(f);
        let mut args: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&unit, &person_id];
        args.extend(values.iter().map(|v| v.as_ref()));
        let rows = self.query(&format!("SELECT id, facts FROM docs WHERE {cond} ORDER BY created_ms, id"), &args)?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn incident_by_number(&self, number: &str) -> AppResult<Option<String>> {
        Ok(self.query_opt("SELECT id FROM docs WHERE kind = 'incident' AND (case_no = $1 OR id = $1)", &[&number])?.map(|r| r.get(0)))
    }

    fn case_no_of(&self, id: &str) -> AppResult<Option<String>> {
        Ok(self.query_opt("SELECT case_no FROM docs WHERE id = $1", &[&id])?.and_then(|r| r.get(0)))
    }

    fn add_photo_ref(&self, doc_id: &str, sha256: &str) -> AppResult<()> {
        self.execute("INSERT INTO attachment_refs(doc_id, sha256) VALUES ($1, $2) ON CONFLICT DO NOTHING", &[&doc_id, &sha256])?;
        Ok(())
    }

    fn records_with_photo(&self, sha256: &str) -> AppResult<Vec<ScopeEvent>> {
        let rows = self.query(
            "SELECT d.id, d.location, d.holder, d.reporter FROM attachment_refs r JOIN docs d ON d.id = r.doc_id WHERE r.sha256 = $1 ORDER BY d.id",
            &[&sha256],
        )?;
        Ok(rows.into_iter().map(|r| ScopeEvent { doc_id: r.get(0), location: r.get(1), holder: r.get(2), reporter: r.get(3) }).collect())
    }

    fn put_personal(&self, doc_id: &str, data: &str, now_ms: i64, by_person: &str) -> AppResult<()> {
        self.execute(
            "INSERT INTO personal(doc_id, data, updated_ms, by_person) VALUES ($1, $2, $3, $4)
             ON CONFLICT(doc_id) DO UPDATE SET data = excluded.data, updated_ms = excluded.updated_ms, by_person = excluded.by_person",
            &[&doc_id, &data, &now_ms, &by_person],
        )?;
        Ok(())
    }

    fn personal(&self, doc_id: &str) -> AppResult<Option<(String, String, ScopeEvent)>> {
        let row = self.query_opt(
            "SELECT p.data, d.kind, d.location, d.holder, d.reporter FROM personal p JOIN docs d ON d.id = p.doc_id WHERE p.doc_id = $1",
            &[&doc_id],
        )?;
        Ok(row.map(|r| {
            (r.get(0), r.get(1), ScopeEvent { doc_id: doc_id.to_owned(), location: r.get(2), holder: r.get(3), reporter: r.get(4) })
        }))
    }

    fn personals(&self, ids: &[&str]) -> AppResult<Vec<(String, String, ScopeEvent)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.query(
            "SELECT p.data, d.kind, d.id, d.location, d.holder, d.reporter FROM personal p JOIN docs d ON d.id = p.doc_id
             WHERE p.doc_id = ANY($1)",
            &[&ids],
        )?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get(1), ScopeEvent { doc_id: r.get(2), location: r.get(3), holder: r.get(4), reporter: r.get(5) }))
            .collect())
    }

    fn ping(&self) -> AppResult<()> {
        self.query("SELECT 1", &[])?;
        Ok(())
    }

    fn person(&self, id: &str) -> AppResult<Option<PersonRow>> {
        let row = self.query_opt("SELECT id, name, role, unit, password_hash, active FROM people WHERE id = $1", &[&id])?;
        Ok(row.map(|r| PersonRow {
            id: r.get(0),
            name: r.get(1),
            role: r.get(2),
            unit: r.get(3),
            password_hash: r.get(4),
            active: r.get(5),
        }))
    }

    fn session_by_token(&self, token_hash: &str) -> AppResult<Option<Session>> {
        let row =
            self.query_opt("SELECT id, person_id, expires_ms, revoked_ms, logged_out FROM devices WHERE token_hash = $1", &[&token_hash])?;
        Ok(row.map(|r| Session {
            device_id: r.get(0),
            person_id: r.get(1),
            expires_ms: r.get(2),
            revoked_ms: r.get(3),
            logged_out: r.get(4),
        }))
    }

    fn open_session(&self, n: &NewSession, fresh: &[u8], valid: fn(&[u8]) -> bool) -> AppResult<Vec<u8>> {
        let kept: Option<Vec<u8>> = match &n.install_id {
            Some(install) => self
                .query_opt(
                    "SELECT data_key FROM devices WHERE person_id = $1 AND install_id = $2 AND data_key IS NOT NULL AND revoked_ms IS NULL
                     ORDER BY created_ms DESC LIMIT 1",
                    &[&n.person_id, install],
                )?
                .map(|r| r.get(0)),
            None => None,
        };
        let key = kept.filter(|k| valid(k)).unwrap_or_else(|| fresh.to_vec());
        if let Some(install) = &n.install_id {
            self.execute("UPDATE devices SET data_key = NULL WHERE person_id = $1 AND install_id = $2", &[&n.person_id, install])?;
        }
        self.execute(
            "INSERT INTO devices(id, person_id, name, token_hash, created_ms, expires_ms, data_key, install_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[&n.device_id, &n.person_id, &n.name, &n.token_hash, &n.created_ms, &n.expires_ms, &key, &n.install_id],
        )?;
        Ok(key)
    }

    fn sign_out(&self, device_id: &str) -> AppResult<()> {
        self.execute("UPDATE devices SET logged_out = TRUE WHERE id = $1", &[&device_id])?;
        Ok(())
    }

    fn revoke_device(&self, device_id: &str, now_ms: i64) -> AppResult<bool> {
        let n = self
            .execute("UPDATE devices SET revoked_ms = $1, data_key = NULL WHERE id = $2 AND revoked_ms IS NULL", &[&now_ms, &device_id])?;
        Ok(n > 0)
    }

    fn device_keeps_key(&self, device_id: &str) -> AppResult<bool> {
        let row = self.query_opt("SELECT data_key FROM devices WHERE id = $1", &[&device_id])?;
        Ok(row.is_some_and(|r| r.get::<_, Option<Vec<u8>>>(0).is_some()))
    }

    fn devices_count(&self, person_id: &str) -> AppResult<u64> {
        let n: i64 =
            self.query_opt("SELECT count(*) FROM devices WHERE ($1 = '' OR person_id = $1)", &[&person_id])?.map_or(0, |r| r.get(0));
        Ok(n.max(0) as u64)
    }

    fn devices_page(&self, person_id: &str, limit: i64, offset: i64) -> AppResult<Vec<DeviceListing>> {
        let rows = self.query(
            "SELECT d.id, d.person_id, p.name, d.name, d.created_ms, d.last_seen_ms, d.revoked_ms, d.logged_out, d.expires_ms
             FROM devices d JOIN people p ON p.id = d.person_id WHERE ($1 = '' OR d.person_id = $1)
             ORDER BY coalesce(d.last_seen_ms, d.created_ms) DESC, d.id LIMIT $2 OFFSET $3",
            &[&person_id, &limit, &offset],
        )?;
        Ok(rows
            .into_iter()
            .map(|r| DeviceListing {
                id: r.get(0),
                person_id: r.get(1),
                person_name: r.get(2),
                name: r.get(3),
                created_ms: r.get(4),
                last_seen_ms: r.get(5),
                revoked_ms: r.get(6),
                logged_out: r.get(7),
                expires_ms: r.get(8),
            })
            .collect())
    }

    fn end_sessions(&self, person_id: &str) -> AppResult<()> {
        self.execute("UPDATE devices SET logged_out = TRUE WHERE person_id = $1 AND revoked_ms IS NULL", &[&person_id])?;
        Ok(())
    }

    fn people_count(&self, search: &str) -> AppResult<u64> {
        let n: i64 = self
            .query_opt(&format!("SELECT count(*) FROM people WHERE {PG_PEOPLE_SEARCH}"), &[&search, &like_pattern(search)])?
            .map_or(0, |r| r.get(0));
        Ok(n.max(0) as u64)
    }

    fn people_page(&self, search: &str, limit: i64, offset: i64) -> AppResult<Vec<PersonListing>> {
        let rows = self.query(
            &format!(
                "SELECT id, name, role, unit, active,
                        (SELECT count(*) FROM devices d WHERE d.person_id = people.id AND d.revoked_ms IS NULL AND NOT d.logged_out)
                 FROM people WHERE {PG_PEOPLE_SEARCH} ORDER BY unit, id LIMIT $3 OFFSET $4"
            ),
            &[&search, &like_pattern(search), &limit, &offset],
        )?;
        Ok(rows
            .into_iter()
            .map(|r| PersonListing { id: r.get(0), name: r.get(1), role: r.get(2), unit: r.get(3), active: r.get(4), devices: r.get(5) })
            .collect())
    }

    fn set_person_role_unit(&self, id: &str, role: &str, unit: &str) -> AppResult<()> {
        self.execute("UPDATE people SET role = $1, unit = $2 WHERE id = $3", &[&role, &unit, &id])?;
        Ok(())
    }

    fn set_person_active(&self, id: &str, active: bool) -> AppResult<()> {
        self.execute("UPDATE people SET active = $1 WHERE id = $2", &[&active, &id])?;
        Ok(())
    }

    fn set_password(&self, id: &str, password_hash: &str) -> AppResult<()> {
        self.execute("UPDATE people SET password_hash = $1 WHERE id = $2", &[&password_hash, &id])?;
        Ok(())
    }

    fn unit(&self, code: &str) -> AppResult<Option<Unit>> {
        Ok(self
            .query_opt("SELECT code, name, kind, parent, department_key, boundary FROM units WHERE code = $1", &[&code])?
            .map(|r| unit_of(&r)))
    }

    fn units_count(&self, prefix: &str) -> AppResult<u64> {
        let n: i64 = self
            .query_opt("SELECT count(*) FROM units WHERE code LIKE $1 ESCAPE '\\'", &[&format!("{}%", escape_like(prefix))])?
            .map_or(0, |r| r.get(0));
        Ok(n.max(0) as u64)
    }

    fn units_page(&self, prefix: &str, limit: i64, offset: i64) -> AppResult<Vec<Unit>> {
        let rows = self.query(
            "SELECT code, name, kind, parent, department_key, boundary FROM units WHERE code LIKE $1 ESCAPE '\\'
             ORDER BY code LIMIT $2 OFFSET $3",
            &[&format!("{}%", escape_like(prefix)), &limit, &offset],
        )?;
        Ok(rows.iter().map(unit_of).collect())
    }

    fn set_boundary(&self, code: &str, boundary: Option<&str>) -> AppResult<()> {
        self.execute("UPDATE units SET boundary = $1 WHERE code = $2", &[&boundary, &code])?;
        Ok(())
    }

    fn upload(&self, sha256: &str) -> AppResult<Option<(u64, u64, bool, String)>> {
        let row = self.query_opt("SELECT total, received, complete, uploader FROM attachments WHERE sha256 = $1", &[&sha256])?;
        Ok(row.map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64, r.get(2), r.get(3))))
    }

    fn upload_moved(&self, u: &UploadStep<'_>) -> AppResult<bool> {
        let (total, received, from) = (u.total as i64, u.received as i64, i64::try_from(u.from).unwrap_or(i64::MAX));
        let n = self.execute(
            "INSERT INTO attachments(sha256, total, received, complete, uploader, created_ms) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT(sha256) DO UPDATE SET received = excluded.received, complete = excluded.complete
             WHERE attachments.received = $7 AND NOT attachments.complete",
            &[&u.sha256, &total, &received, &u.complete, &u.uploader, &u.now_ms, &from],
        )?;
        Ok(n > 0)
    }

    fn upload_restart(&self, sha256: &str) -> AppResult<()> {
        self.execute("UPDATE attachments SET received = 0 WHERE sha256 = $1", &[&sha256])?;
        Ok(())
    }

    fn upload_complete(&self, sha256: &str, len: u64, uploader: &str, now_ms: i64) -> AppResult<()> {
        self.execute(
            "INSERT INTO attachments(sha256, total, received, complete, uploader, created_ms) VALUES ($1, $2, $2, TRUE, $3, $4)
             ON CONFLICT(sha256) DO UPDATE SET total = excluded.total, received = excluded.total, complete = TRUE",
            &[&sha256, &(len as i64), &uploader, &now_ms],
        )?;
        Ok(())
    }

    fn overdue_incidents(&self, now_ms: i64) -> AppResult<Vec<(String, i64)>> {
        let rows = self.query(
            "SELECT d.id, d.deadline_ms FROM docs d LEFT JOIN swept s ON s.doc_id = d.id
             WHERE d.kind = 'incident' AND d.open AND d.status <> 'suspended' AND d.deadline_ms < $1
               AND (s.due_ms IS NULL OR s.due_ms <> d.deadline_ms)
             ORDER BY d.deadline_ms, d.id",
            &[&now_ms],
        )?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn mark_swept(&self, doc_id: &str, due_ms: i64) -> AppResult<()> {
        self.execute(
            "INSERT INTO swept(doc_id, due_ms) VALUES ($1, $2) ON CONFLICT(doc_id) DO UPDATE SET due_ms = excluded.due_ms",
            &[&doc_id, &due_ms],
        )?;
        Ok(())
    }

    fn open_by_village(&self, now_ms: i64) -> AppResult<Vec<(String, i64, i64)>> {
        let rows = self.query(
            "SELECT u.code, coalesce(d.open, 0), coalesce(d.overdue, 0) FROM units u LEFT JOIN (
                 SELECT substr(location, 1, 12) AS village, count(*) AS open,
                        count(*) FILTER (WHERE deadline_ms < $1) AS overdue
                 FROM docs WHERE open GROUP BY village
             ) d ON d.village = u.code WHERE length(u.code) = 12
             UNION ALL
             SELECT 'town', count(*), count(*) FILTER (WHERE deadline_ms < $1)
             FROM docs WHERE open AND length(location) < 12",
            &[&now_ms],
        )?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    fn database_bytes(&self) -> AppResult<i64> {
        Ok(self.query_opt("SELECT pg_database_size(current_database())", &[])?.map_or(0, |r| r.get(0)))
    }

    fn row_counts(&self) -> AppResult<Vec<(&'static str, i64)>> {
        super::STATE_TABLES
            .iter()
            .map(|t| Ok((*t, self.query_opt(&format!("SELECT count(*) FROM {t}"), &[])?.map_or(0, |r| r.get(0)))))
            .collect()
    }

    fn api_key_person(&self, key_hash: &str) -> AppResult<Option<String>> {
        Ok(self.query_opt("SELECT person_id FROM api_keys WHERE key_hash = $1", &[&key_hash])?.map(|r| r.get(0)))
    }

    fn add_api_key(&self, key_hash: &str, person_id: &str, name: &str, now_ms: i64) -> AppResult<()> {
        self.execute(
            "INSERT INTO api_keys(key_hash, person_id, name, created_ms) VALUES ($1, $2, $3, $4)",
            &[&key_hash, &person_id, &name, &now_ms],
        )?;
        Ok(())
    }

    fn unit_name(&self, code: &str) -> AppResult<Option<String>> {
        Ok(self.query_opt("SELECT name FROM units WHERE code = $1", &[&code])?.map(|r| r.get(0)))
    }

    fn units(&self) -> AppResult<Vec<Unit>> {
        let rows = self.query("SELECT code, name, kind, parent, department_key, boundary FROM units ORDER BY code", &[])?;
        Ok(rows.iter().map(unit_of).collect())
    }

    fn put_unit(&self, u: &Unit) -> AppResult<()> {
        self.execute(
            "INSERT INTO units(code, name, kind, parent, department_key) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT(code) DO UPDATE SET name = excluded.name, kind = excluded.kind, parent = excluded.parent,
                department_key = excluded.department_key",
            &[&u.code, &u.name, &u.kind, &u.parent, &u.department_key],
        )?;
        Ok(())
    }

    fn put_person(&self, p: &PersonRow, now_ms: i64) -> AppResult<()> {
        self.execute(
            "INSERT INTO people(id, name, role, unit, password_hash, active, created_ms) VALUES ($1, $2, $3, $4, $5, TRUE, $6)
             ON CONFLICT(id) DO UPDATE SET name = excluded.name, role = excluded.role, unit = excluded.unit,
                password_hash = excluded.password_hash, active = TRUE",
            &[&p.id, &p.name, &p.role, &p.unit, &p.password_hash, &now_ms],
        )?;
        Ok(())
    }

    fn person_exists(&self, id: &str) -> AppResult<bool> {
        Ok(self.query_opt("SELECT 1 FROM people WHERE id = $1", &[&id])?.is_some())
    }

    fn next_case_number(&self, prefix: &str, year: i64) -> AppResult<i64> {
        let rows = self.query(
            "INSERT INTO case_counters(prefix, year, last) VALUES ($1, $2, 1)
             ON CONFLICT(prefix, year) DO UPDATE SET last = case_counters.last + 1 RETURNING last",
            &[&prefix, &year],
        )?;
        rows.first().map(|r| r.get(0)).ok_or_else(|| AppError::Internal("case counter not moved".into()))
    }

    fn next_town_case_number(&self, town: &str, alone: &str, in_county: &str, year: i64) -> AppResult<(String, i64)> {
        let row = self.query_one_beside_log(
            "INSERT INTO case_counters(prefix, year, last)
             SELECT CASE WHEN EXISTS (SELECT 1 FROM units WHERE code = $1 AND parent IS NOT NULL) THEN $3 ELSE $2 END, $4, 1
             ON CONFLICT(prefix, year) DO UPDATE SET last = case_counters.last + 1 RETURNING prefix, last",
            &[&town, &alone, &in_county, &year],
        )?;
        Ok((row.get(0), row.get(1)))
    }

    fn case_number_taken(&self, prefix: &str, year: i64, number: i64) -> AppResult<()> {
        self.execute(
            "INSERT INTO case_counters(prefix, year, last) VALUES ($1, $2, $3)
             ON CONFLICT(prefix, year) DO UPDATE SET last = greatest(case_counters.last, excluded.last)",
            &[&prefix, &year, &number],
        )?;
        Ok(())
    }

    fn add_notice(&self, doc_id: &str, unit: &str, at_ms: i64, text: &str) -> AppResult<()> {
        self.execute("INSERT INTO notices(doc_id, unit, at_ms, text) VALUES ($1, $2, $3, $4)", &[&doc_id, &unit, &at_ms, &text])?;
        Ok(())
    }

    fn notices(&self, unit: &str, after: i64, before: i64, limit: i64) -> AppResult<Vec<Notice>> {
        let rows = self.query(
            &format!(
                "SELECT seq, doc_id, unit, at_ms, text FROM notices WHERE {} AND seq > $2 AND seq < $3 ORDER BY seq DESC LIMIT $4",
                within("unit", "$1")
            ),
            &[&unit, &after, &before, &limit],
        )?;
        Ok(rows.into_iter().map(|r| Notice { seq: r.get(0), doc_id: r.get(1), unit: r.get(2), at_ms: r.get(3), text: r.get(4) }).collect())
    }

    fn audit(&self, at_ms: i64, actor: &str, action: &str, detail: &str) -> AppResult<()> {
        self.execute("INSERT INTO audit(at_ms, actor, action, detail) VALUES ($1, $2, $3, $4)", &[&at_ms, &actor, &action, &detail])?;
        Ok(())
    }

    fn audit_count(&self, f: &AuditFilter) -> AppResult<u64> {
        let n: i64 = self
            .query_opt(&format!("SELECT count(*) FROM audit {PG_AUDIT_FILTER}"), &[&f.actor, &f.action, &f.from_ms, &f.to_ms])?
            .map_or(0, |r| r.get(0));
        Ok(n.max(0) as u64)
    }

    fn audit_page(&self, f: &AuditFilter, limit: i64, offset: i64) -> AppResult<Vec<AuditEntry>> {
        let rows = self.query(
            &format!("SELECT at_ms, actor, action, detail FROM audit {PG_AUDIT_FILTER} ORDER BY seq DESC LIMIT $5 OFFSET $6"),
            &[&f.actor, &f.action, &f.from_ms, &f.to_ms, &limit, &offset],
        )?;
        Ok(rows.into_iter().map(|r| AuditEntry { at_ms: r.get(0), actor: r.get(1), action: r.get(2), detail: r.get(3) }).collect())
    }

    fn audit_actions(&self) -> AppResult<Vec<String>> {
        Ok(self.query("SELECT DISTINCT action FROM audit ORDER BY action", &[])?.into_iter().map(|r| r.get(0)).collect())
    }

    fn login_failures(&self, user: &str) -> AppResult<Option<(i64, i64)>> {
        Ok(self.query_opt("SELECT failures, since_ms FROM login_failures WHERE user_name = $1", &[&user])?.map(|r| (r.get(0), r.get(1))))
    }

    fn note_login_failure(&self, user: &str, now_ms: i64, window_ms: i64) -> AppResult<()> {
        let stale = now_ms - window_ms;
        self.execute("DELETE FROM login_failures WHERE since_ms < $1 AND user_name <> $2", &[&stale, &user])?;
        self.execute(
            "INSERT INTO login_failures(user_name, failures, since_ms) VALUES ($1, 1, $2)
             ON CONFLICT(user_name) DO UPDATE SET
               failures = CASE WHEN login_failures.since_ms < $3 THEN 1 ELSE login_failures.failures + 1 END,
               since_ms = CASE WHEN login_failures.since_ms < $3 THEN $2 ELSE login_failures.since_ms END",
            &[&user, &now_ms, &stale],
        )?;
        Ok(())
    }

    fn clear_login_failures(&self, user: &str) -> AppResult<()> {
        self.execute("DELETE FROM login_failures WHERE user_name = $1", &[&user])?;
        Ok(())
    }
}

/// SQL condition: `column` holds `param`'s unit code or a unit below it. Codes nest by prefix: a
/// unit covers its `-group-grid` codes, and a 6-digit county or 9-digit town code the codes
/// that start with it. Written as one range of codes that start with `param` (the byte-wise
/// `~>=~`/`~<~` of the `text_pattern_ops` indexes, whatever the database's collation; codes are
/// ASCII below `~`, as the core's `within_sql` has it), narrowed by what a code below `param`
/// looks like. The range is what lets a prepared statement's generic plan use the index: with
/// `LIKE param || '%'` PostgreSQL could only plan a scan of every record once it stopped
/// planning the statement for each call's values, and the scope of every sync round became 40
/// times slower (pg_stat_statements, docs/benchmarks.md).
fn within(column: &str, param: &str) -> String {
    format!(
        "({column} ~>=~ {param} AND {column} ~<~ ({param} || '~') \
         AND ({column} = {param} OR {column} LIKE {param} || '-%' OR length({param}) IN (6, 9)))"
    )
}

/// A list's `WHERE` clause: the filter and the viewer's scope (`$1` unit, `$2` person), with the
/// filter's values numbered from `$3`.
/// The scope rule over the `docs` index (the person's unit `$1`, their id `$2`), as in the
/// SQLite backend: located or held within the unit, or reported by the person.
fn scope() -> String {
    format!("({} OR {} OR reporter = $2)", within("location", "$1"), within("holder", "$1"))
}

fn list_condition(f: &RecordFilter<'_>) -> (String, Vec<Box<dyn postgres::types::ToSql + Sync>>) {
    let mut clause = vec![scope()];
    let mut values: Vec<Box<dyn postgres::types::ToSql + Sync>> = Vec::new();
    for (sql, bound) in filter_conditions(f) {
        let sql = sql.replace("?viewer", "$1");
        let mark = match bound {
            None => String::new(),
            Some(b) => {
                let set = matches!(b, Bound::Texts(_));
                values.push(match b {
                    Bound::Text(t) => Box::new(t),
                    Bound::Int(n) => Box::new(n),
                    Bound::Bool(o) => Box::new(o),
                    Bound::Texts(ts) => Box::new(ts),
                });
                if set { format!("(SELECT unnest(${}::TEXT[]))", values.len() + 2) } else { format!("${}", values.len() + 2) }
            }
        };
        clause.push(sql.replace('#', &mark));
    }
    (clause.join(" AND "), values)
}

fn list_order(o: ListOrder) -> &'static str {
    match o {
        ListOrder::Updated => "updated_ms DESC, id",
        ListOrder::Deadline => "deadline_ms ASC, id",
        ListOrder::Created => "created_ms ASC, id",
        ListOrder::CreatedDesc => "created_ms DESC, id",
    }
}

/// A unit from the columns `code, name, kind, parent, department_key, boundary`.
fn unit_of(r: &postgres::Row) -> Unit {
    Unit { code: r.get(0), name: r.get(1), kind: r.get(2), parent: r.get(3), department_key: r.get(4), boundary: r.get(5) }
}

/// Accounts whose id or name contains `$1` (its `LIKE` pattern in `$2`), or all when it is empty.
const PG_PEOPLE_SEARCH: &str = "($1 = '' OR id LIKE $2 ESCAPE '\\' OR name LIKE $2 ESCAPE '\\')";

/// The audit lines an [`AuditFilter`] matches (`$1`–`$4`).
const PG_AUDIT_FILTER: &str = "WHERE ($1 = '' OR actor = $1) AND ($2 = '' OR action = $2) AND at_ms >= $3 AND at_ms < $4";

#[cfg(test)]
mod tests {
    use super::*;

    /// Plans are made again as a table may have doubled since: often while the server is young,
    /// then at a steady pace, and never in between (each new planning costs every statement a
    /// parse on its next run).
    #[test]
    fn plans_are_made_again_as_the_statements_double() {
        let at: Vec<u64> = (1..=3 * REPLAN_EVERY_MAX).filter(|&n| replans_at(n)).collect();
        let doubling: Vec<u64> = (10..=20).map(|k| 1u64 << k).collect();
        assert_eq!(at[..doubling.len()], doubling[..], "from the 1,024th statement, at each power of two");
        assert_eq!(at[doubling.len()..], [2 * REPLAN_EVERY_MAX, 3 * REPLAN_EVERY_MAX], "then every 2^20 statements");
        assert!(!replans_at(1) && !replans_at(REPLAN_FIRST - 1) && !replans_at(REPLAN_FIRST + 1));
    }
}
