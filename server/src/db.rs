//! The server's database: one writer connection, a few readers. On SQLite (the embedded
//! default): WAL and numbered migrations here. On PostgreSQL (a county, several server nodes):
//! the same writer and readers over [`PgStorage`], whose schema lives with it. Either way the
//! work is handed [`Storage`], so handlers and pages do not know which database they are on.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError, Weak, mpsc};

use tokio::sync::{Semaphore, oneshot};

use rusqlite::Connection;

use crate::storage::{PgStorage, Storage};

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
    // 3: the console's lists (kind, open or closed, newest first) with the scope columns, so a
    // list's count and its first page are read from the index alone.
    "CREATE INDEX docs_list ON docs(kind, open, updated_ms, location, holder, reporter);",
    // 4: residents' personal data, kept beside the documents and never inside them
    // (gridlink_core::pii), and each device's key for the personal data it keeps.
    "
    CREATE TABLE personal (doc_id TEXT PRIMARY KEY, data TEXT NOT NULL, updated_ms INTEGER NOT NULL, by_person TEXT NOT NULL);
    ALTER TABLE devices ADD COLUMN data_key BLOB;
    ALTER TABLE devices ADD COLUMN install_id TEXT;
    ",
    // 5: the file says it is a Gridlink town database (backups are checked against it), and a
    // device that presented the epoch of a database this one replaced is recovering (crate::backup).
    "
    PRAGMA application_id = 1196575819;
    ALTER TABLE devices ADD COLUMN recovering INTEGER NOT NULL DEFAULT 0;
    ",
    // 6: failed logins per user name, kept in the database so that every server node counts
    // the same attempts (crate::auth).
    "CREATE TABLE login_failures (user_name TEXT PRIMARY KEY, failures INTEGER NOT NULL, since_ms INTEGER NOT NULL);",
    // 7: the due time at which the deadline sweeper last found each overdue incident supervised,
    // so a pass reads only what it has not settled (crate::linkage::sweep).
    "CREATE TABLE swept (doc_id TEXT PRIMARY KEY, due_ms INTEGER NOT NULL);",
    // 8: open records by due time with every column the deadline sweeper and the figures per
    // village ask of them, so both are read from the index alone. Without it, the sweeper's
    // first pass after a start read a table page for each open overdue incident, scattered over
    // the whole file: 1.6 s on a cold 100,000-record town, with every login waiting behind it.
    "
    DROP INDEX docs_open_deadline;
    CREATE INDEX docs_open_deadline ON docs(open, deadline_ms, kind, status, location, id);
    ",
    // 9: the scope columns' indexes carry the record's id, so a device's scope, asked at every
    // sync round, is read from them alone. Without it each record in scope cost a read of its
    // table row, which holds its whole snapshot: 8 % of the writer's time under load.
    "
    DROP INDEX docs_location;
    CREATE INDEX docs_location ON docs(location, id);
    DROP INDEX docs_holder;
    CREATE INDEX docs_holder ON docs(holder, id);
    DROP INDEX docs_reporter;
    CREATE INDEX docs_reporter ON docs(reporter, id);
    ",
];

/// `PRAGMA application_id` of a Gridlink town database ("GRLK").
pub const APPLICATION_ID: i64 = 0x4752_4C4B;

/// The schema version this build writes; a database of a newer one is refused.
pub fn schema_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Connections to the server database.
#[derive(Debug, Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

/// A piece of work for the writer thread. It runs inside the batch's transaction and returns
/// whether it succeeded (if not, what it wrote is rolled back) and its reply, which is sent only
/// once the batch has ended: its own result if the batch was committed, else why it was not.
type WriteJob = Box<dyn FnOnce(&dyn Storage) -> (Result<(), BatchFailed>, Reply) + Send>;

/// Hands a write's result to its caller once its batch has ended.
type Reply = Box<dyn FnOnce(Result<(), BatchFailed>) + Send>;

/// Why a write, or a whole batch, failed.
#[derive(Debug, Clone, Copy)]
enum BatchFailed {
    /// The disk is full: retry later, nothing was kept.
    StorageFull,
    /// Anything else.
    Other,
}

impl BatchFailed {
    /// The failure a write's error stands for.
    fn of(e: &AppError) -> Self {
        match e {
            AppError::StorageFull => BatchFailed::StorageFull,
            _ => BatchFailed::Other,
        }
    }
}

impl From<BatchFailed> for AppError {
    fn from(f: BatchFailed) -> Self {
        match f {
            BatchFailed::StorageFull => AppError::StorageFull,
            BatchFailed::Other => AppError::Internal("the write batch was not committed".into()),
        }
    }
}

/// Most writes committed together. A batch takes the writes that queued while the last one ran.
pub const MAX_BATCH: usize = 64;

/// One connection of either backend.
type Conn = Box<dyn Storage + Send>;

struct Inner {
    writer: Mutex<Conn>,
    readers: Vec<Mutex<Conn>>,
    next: AtomicUsize,
    /// Async callers' writes go to one writer thread through this queue and run in arrival order,
    /// back to back. (Blocking threads parked on the writer's mutex let late comers barge in: under
    /// load some requests waited many times longer than the rest.)
    jobs: mpsc::Sender<WriteJob>,
    /// Sync rounds are answered on readers, off the writer ([`crate::sync::serve`]): on
    /// PostgreSQL, where a reader may record the round itself.
    answers_on_readers: bool,
    /// Writes queued and not yet begun (a metric).
    queued: std::sync::atomic::AtomicI64,
    /// Async readers queue here for a reader connection, in arrival order (tokio's semaphore is fair).
    read_turns: Arc<Semaphore>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("readers", &self.readers.len()).finish_non_exhaustive()
    }
}

/// The writer thread: runs queued writes in arrival order until the database is dropped.
///
/// Group commit: the writes that queued up while the last batch ran go into one transaction, each
/// in its own savepoint, and one commit (one fsync) makes them all durable; only then does any of
/// them get its answer. A write that fails or panics is rolled back to its savepoint alone.
fn run_writes(db: Weak<Inner>, jobs: mpsc::Receiver<WriteJob>) {
    while let Ok(first) = jobs.recv() {
        let Some(inner) = db.upgrade() else { return };
        let guard = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        let conn: &dyn Storage = &**guard;
        if let Err(e) = conn.begin_jobs() {
            // Without a transaction nothing is run; the job is dropped and its caller told so.
            tracing::error!(error = %e, "cannot begin a write batch");
            drop(first);
            continue;
        }
        let mut replies = Vec::new();
        let mut lost = None;
        inner.queued.fetch_sub(1, Ordering::Relaxed);
        let mut job = first;
        let mut size = 0;
        // Whether the running job succeeded: its savepoint is kept, else rolled back.
        let mut keep = false;
        for n in 1.. {
            size = n;
            let (ran, reply) = run_one(conn, job);
            replies.extend(reply);
            keep = ran.is_ok();
            // SQLite rolls back the whole transaction on some errors (disk full, I/O): what the
            // batch had done so far is gone, so it ends here, failed for the same reason.
            if !conn.in_transaction() {
                lost = Some(ran.err().unwrap_or(BatchFailed::Other));
                break;
            }
            if n == MAX_BATCH {
                break;
            }
            let Ok(queued) = jobs.try_recv() else { break };
            inner.queued.fetch_sub(1, Ordering::Relaxed);
            if let Err(e) = conn.next_job(keep) {
                // Where the batch stands is unknown: none of it is kept, and the queued job's
                // caller is told that it failed.
                tracing::error!(error = %e, "cannot start a write");
                drop(queued);
                lost = Some(BatchFailed::of(&e));
                break;
            }
            job = queued;
        }
        let outcome = match lost {
            Some(why) => {
                if conn.in_transaction() {
                    let _ = conn.rollback();
                }
                Err(why)
            }
            None => conn.commit_jobs(keep).map_err(|e| {
                tracing::error!(error = %e, "cannot commit a write batch");
                if conn.in_transaction() {
                    let _ = conn.rollback();
                }
                BatchFailed::of(&e)
            }),
        };
        drop(guard);
        metrics::histogram!("gridlink_db_write_batch_size").record(size as f64);
        for reply in replies {
            reply(outcome);
        }
    }
}

/// Runs one write in the savepoint the writer opened for it. Returns whether it succeeded and
/// its reply, which is None if it panicked (its caller then learns that the write failed).
fn run_one(conn: &dyn Storage, job: WriteJob) -> (Result<(), BatchFailed>, Option<Reply>) {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(conn))) {
        Ok((ran, reply)) => (ran, Some(reply)),
        Err(_) => (Err(BatchFailed::Other), None),
    }
}

fn open_conn(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Pages are read through a memory map rather than copied in by pread, and each connection
    // keeps 16 MiB of them: sync rounds read the index and change tables over and over. The map
    // covers the first 64 MiB of the file: its pages count as the server's resident memory, and
    // 256 MiB kept ~150 MiB of them resident after the full `sync_bench` for no measurable
    // speed (docs/benchmarks.md, "Server memory").
    conn.pragma_update(None, "mmap_size", 64i64 << 20)?;
    conn.pragma_update(None, "cache_size", -16_000i64)?;
    // A sync round alone runs some twenty statements; each is parsed once per connection.
    conn.set_prepared_statement_cache_capacity(64);
    gridlink_core::store::keep_plans(&conn)?;
    Ok(conn)
}

/// Brings a database to this build's schema, one transaction per step; refuses a newer one.
pub fn migrate(conn: &mut Connection, path: &Path) -> AppResult<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > schema_version() {
        return Err(AppError::Unprocessable(format!(
            "数据库 {} 的结构版本({version})比本程序({})新,请使用新版本的 gridlink-server",
            path.display(),
            schema_version()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// Where the server keeps its data: a SQLite file, or a PostgreSQL database given by URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl Location {
    /// A `postgres://` or `postgresql://` URL, else the path of a SQLite file.
    pub fn parse(text: &str) -> Self {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Location::Postgres(text.to_owned())
        } else {
            Location::Sqlite(text.into())
        }
    }

    /// The directory that holds the data directory by default: the SQLite file's, or the
    /// current one for PostgreSQL.
    pub fn home(&self) -> std::path::PathBuf {
        match self {
            Location::Sqlite(p) => p.parent().map(Path::to_path_buf).unwrap_or_default(),
            Location::Postgres(_) => std::path::PathBuf::from("."),
        }
    }

    /// The SQLite file, if that is where the data is.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Location::Sqlite(p) => Some(p),
            Location::Postgres(_) => None,
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "{}", p.display()),
            Location::Postgres(url) => f.write_str(&crate::storage::redact(url)),
        }
    }
}

impl Db {
    /// Opens (creating) the SQLite file at `path` and applies migrations.
    pub fn open(path: &Path, readers: usize) -> AppResult<Self> {
        let mut writer = open_conn(path)?;
        // Every write job is a savepoint inside its batch's transaction, so SQLite keeps the first
        // image of each page a job changes (its sub-journal) to undo that job alone. In a
        // temporary file that cost a write system call per page, about a fifth of the writer's
        // time under load (docs/benchmarks.md, "Savepoints' journals in memory"); in memory it is
        // a copy, at most a job's few dozen pages, freed when the job ends.
        writer.pragma_update(None, "temp_store", "MEMORY")?;
        migrate(&mut writer, path)?;
        let readers = (0..readers.max(1)).map(|_| open_conn(path).map(|c| Box::new(c) as Conn)).collect::<Result<_, _>>()?;
        Self::start(Box::new(writer), readers, false)
    }

    /// Connects to the PostgreSQL database at `url`, bringing it to this build's schema.
    pub fn connect(url: &str, readers: usize) -> AppResult<Self> {
        let writer = PgStorage::connect(url)?;
        let readers = (0..readers.max(1)).map(|_| PgStorage::connect_more(url).map(|c| Box::new(c) as Conn)).collect::<Result<_, _>>()?;
        Self::start(Box::new(writer), readers, true)
    }

    /// Opens the database wherever it is.
    pub fn at(location: &Location, readers: usize) -> AppResult<Self> {
        match location {
            Location::Sqlite(path) => Self::open(path, readers),
            Location::Postgres(url) => Self::connect(url, readers),
        }
    }

    fn start(writer: Conn, readers: Vec<Conn>, answers_on_readers: bool) -> AppResult<Self> {
        let readers: Vec<_> = readers.into_iter().map(Mutex::new).collect();
        let read_turns = Arc::new(Semaphore::new(readers.len()));
        let (jobs, queue) = mpsc::channel();
        let inner = Arc::new(Inner {
            writer: Mutex::new(writer),
            readers,
            next: AtomicUsize::new(0),
            jobs,
            answers_on_readers,
            queued: Default::default(),
            read_turns,
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || run_writes(weak, queue))
            .map_err(|e| AppError::Internal(format!("writer thread: {e}")))?;
        Ok(Self { inner })
    }

    /// Whether sync rounds are answered on readers ([`crate::sync::serve`]).
    pub fn answers_on_readers(&self) -> bool {
        self.inner.answers_on_readers
    }

    /// Writes waiting for the writer thread.
    pub fn write_queue_depth(&self) -> i64 {
        self.inner.queued.load(Ordering::Relaxed).max(0)
    }

    /// The writer's connection, outside the write queue (start-up, the sweeper, tools).
    pub fn writer(&self) -> Held<'_> {
        Held(self.inner.writer.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A reader's connection.
    pub fn reader(&self) -> Held<'_> {
        Held(self.pick_reader())
    }

    fn pick_reader(&self) -> MutexGuard<'_, Conn> {
        let readers = &self.inner.readers;
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..readers.len() {
            match readers[(start + k) % readers.len()].try_lock() {
                Ok(conn) => return conn,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        readers[start % readers.len()].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` with a reader on the blocking pool.
    pub async fn read<T: Send + 'static>(&self, f: impl FnOnce(&dyn Storage) -> AppResult<T> + Send + 'static) -> AppResult<T> {
        // The turn moves into the blocking task: it is given back when the work ends, even if the
        // request that asked for it has gone away meanwhile.
        let turn = self.inner.read_turns.clone().acquire_owned().await.expect("the semaphore is never closed");
        let db = self.clone();
        // Log lines of the work carry the request's span (its request id).
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let _span = span.enter();
            f(&*db.reader())
        })
        .await?
    }

    /// Runs `f` with the writer on the writer thread. The write is queued when this is called
    /// and runs after every write queued before it; the future gives its result.
    pub fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Storage) -> AppResult<T> + Send + 'static,
    ) -> impl std::future::Future<Output = AppResult<T>> + Send + 'static {
        let (reply, result) = oneshot::channel();
        let span = tracing::Span::current();
        let job: WriteJob = Box::new(move |conn| {
            let out = span.in_scope(|| f(conn));
            let ran = out.as_ref().map(|_| ()).map_err(BatchFailed::of);
            let deliver: Reply = Box::new(move |batch| {
                // A write that failed says why; one that succeeded is only as good as its batch.
                let _ = reply.send(out.and_then(|v| batch.map(|()| v).map_err(AppError::from)));
            });
            (ran, deliver)
        });
        self.inner.queued.fetch_add(1, Ordering::Relaxed);
        let queued = self.inner.jobs.send(job);
        async move {
            queued.map_err(|_| AppError::Internal("the database writer has stopped".into()))?;
            result.await.map_err(|_| AppError::Internal("a database write failed unexpectedly".into()))?
        }
    }
}

/// A connection held for the caller: the storage, whichever backend it is.
pub struct Held<'a>(MutexGuard<'a, Conn>);

impl std::ops::Deref for Held<'_> {
    type Target = dyn Storage;

    fn deref(&self) -> &(dyn Storage + 'static) {
        &**self.0
    }
}

impl std::fmt::Debug for Held<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Held")
    }
}

impl Held<'_> {
    /// The SQLite connection (tests' own queries, the backup); panics on PostgreSQL.
    pub fn sqlite(&self) -> &Connection {
        self.as_sqlite().expect("a SQLite database")
    }
}

/// Maps "not found" to [`AppError::NotFound`].
pub fn found<T>(v: Option<T>) -> AppResult<T> {
    v.ok_or(AppError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SQLite connection under a test's storage.
    fn sql(c: &dyn Storage) -> &Connection {
        c.as_sqlite().expect("SQLite")
    }

    fn temp_db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("town.db"), 2).unwrap();
        (dir, db)
    }

    #[test]
    fn the_sync_statements_stay_compiled_between_rounds() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("town.db"), 1).unwrap();
        drop(db);
        let conn = open_conn(&dir.path().join("town.db")).unwrap();
        // The shapes of a round's hot statements: equality, range and join on bound values.
        let sql = "SELECT c.seq FROM changes c JOIN device_docs d ON d.doc_id = c.doc_id AND d.device_id = ?1
                   WHERE c.seq > ?2 ORDER BY c.seq";
        for (device, seq) in [("d1", 0i64), ("d2", 1), ("d1", 5), ("d3", 0)] {
            conn.prepare_cached(sql).unwrap().query_map(rusqlite::params![device, seq], |r| r.get::<_, i64>(0)).unwrap().for_each(drop);
        }
        let stmt = conn.prepare_cached(sql).unwrap();
        assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0, "the statement was compiled again for new values");
    }

    #[tokio::test]
    async fn writes_run_in_the_order_they_were_asked_for() {
        let (_dir, db) = temp_db();
        db.write(|c| Ok(sql(c).execute_batch("CREATE TABLE seen(n INTEGER)")?)).await.unwrap();
        // Each write records its number. All are queued first, then awaited last to first: they
        // still run in the order they were asked for.
        let writes: Vec<_> = (0..200).map(|n| db.write(move |c| Ok(sql(c).execute("INSERT INTO seen(n) VALUES (?1)", [n])?))).collect();
        for w in writes.into_iter().rev() {
            w.await.unwrap();
        }
        let seen: Vec<i64> = db
            .read(|c| Ok(sql(c).prepare("SELECT n FROM seen ORDER BY rowid")?.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?))
            .await
            .unwrap();
        assert_eq!(seen.len(), 200);
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "writes ran out of order: {seen:?}");
    }

    /// Queues a write that holds the writer until `release` is dropped or sent to, so that the
    /// writes queued after it run together in the next batch.
    fn hold_writer(db: &Db) -> (std::sync::mpsc::Sender<()>, impl std::future::Future<Output = AppResult<()>>) {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let held = db.write(move |_| {
            let _ = wait.recv();
            Ok(())
        });
        (release, held)
    }

    /// A database with the table `t(x, pad)` that the batch tests write to.
    async fn db_with_table() -> (tempfile::TempDir, Db) {
        let (dir, db) = temp_db();
        db.write(|c| Ok(sql(c).execute_batch("CREATE TABLE t(x INTEGER, pad BLOB)")?)).await.unwrap();
        (dir, db)
    }

    /// Queues a write of row `x` padded with `pad` bytes.
    fn insert(db: &Db, x: i64, pad: usize) -> impl std::future::Future<Output = AppResult<()>> {
        db.write(move |c| Ok(sql(c).execute("INSERT INTO t(x, pad) VALUES (?1, ?2)", rusqlite::params![x, vec![0u8; pad]]).map(|_| ())?))
    }

    fn rows(c: &dyn Storage) -> AppResult<Vec<i64>> {
        Ok(sql(c).prepare("SELECT x FROM t ORDER BY x")?.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?)
    }

    /// Runs `failing`, which must end in a conflict, in one batch between the writes of rows
    /// `before` and `after`, and checks that those two are acknowledged and it is refused.
    async fn fail_between_two_writes(
        db: &Db,
        before: i64,
        failing: impl FnOnce(&dyn Storage) -> AppResult<()> + Send + 'static,
        after: i64,
    ) {
        let (release, held) = hold_writer(db);
        let kept_before = insert(db, before, 0);
        let failed = db.write(failing);
        let kept_after = insert(db, after, 0);
        drop(release);
        held.await.unwrap();
        kept_before.await.unwrap();
        assert!(matches!(failed.await, Err(AppError::Conflict(_))));
        kept_after.await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_write_in_a_batch_is_rolled_back_alone() {
        let (_dir, db) = db_with_table().await;
        fail_between_two_writes(
            &db,
            1,
            |c| {
                sql(c).execute("INSERT INTO t(x) VALUES (2)", [])?;
                Err(AppError::Conflict("refused after writing".into()))
            },
            3,
        )
        .await;
        assert_eq!(db.read(rows).await.unwrap(), [1, 3]);
    }

    #[tokio::test]
    async fn a_failed_write_that_changed_many_pages_is_undone_alone_from_memory() {
        let (_dir, db) = db_with_table().await;
        // The pages a write job changes are kept for its undo in memory, not in a temporary file.
        let temp_store: i64 = db.write(|c| Ok(sql(c).query_row("PRAGMA temp_store", [], |r| r.get(0))?)).await.unwrap();
        assert_eq!(temp_store, 2, "the writer's savepoint journals are not kept in memory");
        // 400 rows of 1 KiB: about a hundred pages, far more than SQLite keeps in memory for a
        // savepoint's journal when it is a temporary file.
        for x in 0..400 {
            insert(&db, x, 1024).await.unwrap();
        }
        fail_between_two_writes(
            &db,
            1000,
            |c| {
                sql(c).execute("UPDATE t SET pad = zeroblob(2000), x = x + 1", [])?;
                sql(c).execute("DELETE FROM t WHERE x % 3 = 0", [])?;
                Err(AppError::Conflict("refused after changing every page".into()))
            },
            1001,
        )
        .await;
        let expected: Vec<i64> = (0..400).chain([1000, 1001]).collect();
        assert_eq!(db.read(rows).await.unwrap(), expected);
        let pads: Vec<i64> = db
            .read(|c| {
                Ok(sql(c).prepare("SELECT length(pad) FROM t WHERE x < 400")?.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?)
            })
            .await
            .unwrap();
        assert!(pads.iter().all(|&n| n == 1024), "a row kept the failed write's padding");
    }

    #[tokio::test]
    async fn in_a_batch_that_fills_the_disk_what_is_acknowledged_is_kept() {
        let (_dir, db) = db_with_table().await;
        // The database may not grow: any write that needs a new page fails as on a full disk.
        db.write(|c| {
            let pages: i64 = sql(c).query_row("PRAGMA page_count", [], |r| r.get(0))?;
            Ok(sql(c).pragma_update(None, "max_page_count", pages + 1)?)
        })
        .await
        .unwrap();
        let (release, held) = hold_writer(&db);
        let small = insert(&db, 1, 10);
        let huge = insert(&db, 2, 1 << 20);
        let after = insert(&db, 3, 10);
        drop(release);
        // The holding write wrote nothing; it may share the failed batch's answer.
        let _ = held.await;
        let answers = [(1, small.await), (2, huge.await), (3, after.await)];
        assert!(matches!(answers[1].1, Err(AppError::StorageFull)), "{:?}", answers[1].1);
        let kept = db.read(rows).await.unwrap();
        for (x, answer) in &answers {
            assert_eq!(answer.is_ok(), kept.contains(x), "write {x} answered {answer:?}, kept {kept:?}");
        }
        // Space again: writes go through.
        db.write(|c| Ok(sql(c).pragma_update(None, "max_page_count", 1_073_741_823i64)?)).await.unwrap();
        insert(&db, 4, 1 << 20).await.unwrap();
        assert!(db.read(rows).await.unwrap().contains(&4));
    }

    #[tokio::test]
    async fn a_write_is_answered_only_once_its_batch_is_committed() {
        let (_dir, db) = db_with_table().await;
        let (release, held) = hold_writer(&db);
        let first = insert(&db, 1, 0);
        // The next write in the same batch is still running: the first is done but not durable.
        let (finish, slow) = hold_writer(&db);
        drop(release);
        let mut first = Box::pin(first);
        let early = tokio::time::timeout(std::time::Duration::from_millis(300), &mut first).await;
        assert!(early.is_err(), "answered before its batch was committed");
        assert_eq!(db.read(rows).await.unwrap(), Vec::<i64>::new(), "readers see nothing uncommitted");
        drop(finish);
        held.await.unwrap();
        slow.await.unwrap();
        first.await.unwrap();
        assert_eq!(db.read(rows).await.unwrap(), [1]);
    }

    #[tokio::test]
    async fn a_write_that_panics_fails_alone_and_the_writer_goes_on() {
        let (_dir, db) = db_with_table().await;
        // In the middle of a batch, between two good writes.
        let (release, held) = hold_writer(&db);
        let before = insert(&db, 1, 0);
        let failed = db.write(|c| -> AppResult<()> {
            sql(c).execute("INSERT INTO t(x) VALUES (2)", [])?;
            panic!("a bug in a handler");
        });
        let after = insert(&db, 3, 0);
        drop(release);
        held.await.unwrap();
        before.await.unwrap();
        let failed = failed.await;
        assert!(matches!(failed, Err(AppError::Internal(_))), "{failed:?}");
        after.await.unwrap();
        // The half-done write was rolled back and the next one goes through.
        insert(&db, 4, 0).await.unwrap();
        assert_eq!(db.read(rows).await.unwrap(), [1, 3, 4]);
    }
}
