//! The storage seam (issue 18): what the server keeps, as operations on an open database
//! connection or transaction, with the SQL in one backend module per database. The SQLite
//! backend ([`sqlite`]) is the embedded default; the PostgreSQL backend ([`PgStorage`]) holds the
//! same slice for a county, and the conformance suite (`server/tests/storage.rs`) runs every
//! behaviour the server relies on against both. The writer and the readers (`crate::db`) hold
//! connections of either backend, so the whole server runs on either (`serve --db
//! postgres://…`), and on PostgreSQL as several nodes of one database (docs/storage.md).
//!
//! Behind the seam: settings and the epoch, devices' sync state (rounds, what each device holds),
//! the change log, records' index rows and snapshots with the scope rule over them, personal
//! data, which records show a photo, accounts and device sessions, photo uploads' progress, the
//! deadline sweeper's query, the operational gauges, the console's record lists, the figures'
//! and exports' record selection, Open311 (API keys, lookups), units and grids' boundaries, the
//! admin console's editing and imports, case numbers, notices and the audit log. Lists, figures
//! and Open311 select records with [`RecordFilter`]: typed, so neither pages nor handlers write
//! SQL for them. Transactions are part of the seam ([`Storage::begin`], savepoints, the [`Tx`]
//! guard). Outside it: only the backup (SQLite's own file copy).
//!
//! The trait is object safe (visitors are `&mut dyn FnMut`): the server holds its connections as
//! `dyn Storage`.

mod bus;
mod migrate;
mod pg;
mod sqlite;

pub use bus::EventBus;
pub use migrate::{Migrated, migrate_town};
pub use pg::PgStorage;
pub(crate) use pg::redact;

use std::collections::{HashMap, HashSet};

use crate::error::AppResult;
use crate::records::ScopeEvent;

/// One accepted change in the change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedChange {
    /// Position in the log: later changes have higher numbers.
    pub seq: i64,
    pub doc_id: String,
    /// Automerge change bytes.
    pub bytes: Vec<u8>,
    /// Device that sent it (`server` for the server's own changes).
    pub device_id: String,
}

/// A sync round as the server answered it. What it adds to and removes from the device's
/// holdings takes effect when the device presents the round as its cursor ([`Storage::device_seen_taking_round`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    pub round: i64,
    /// Every change up to this log position was sent, or was not the device's to receive.
    pub seq_high: i64,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Its additions and removals were made already.
    pub applied: bool,
}

/// A record's row in the index (what scope, lists, deadlines and figures read), with its saved
/// document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRow {
    pub id: String,
    pub kind: String,
    /// Unit code of where it happened.
    pub location: String,
    /// Unit whose turn it is.
    pub holder: Option<String>,
    /// Unit answering for it (a department, the center).
    pub owner: Option<String>,
    /// Person who reported it.
    pub reporter: Option<String>,
    pub status: Option<String>,
    pub open: bool,
    pub category: String,
    pub title: String,
    pub case_no: Option<String>,
    /// Due time of the clock running now.
    pub deadline_ms: Option<i64>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub conflicts: i64,
    pub batch_id: Option<String>,
    /// The figures' facts, as JSON.
    pub facts: String,
    /// The saved document (all its changes).
    pub snapshot: Vec<u8>,
}

/// Which records a list holds, besides the viewer's scope (always applied, inside the query,
/// before any limit). Every condition set must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordFilter<'a> {
    /// `incident` or `service_request`.
    pub kind: Option<&'a str>,
    pub open: Option<bool>,
    pub status: Option<&'a str>,
    /// Held by the viewer's own unit (their turn).
    pub held_by_viewer: bool,
    /// Has a running clock.
    pub has_deadline: bool,
    /// Its clock is due at or after this time.
    pub due_from: Option<i64>,
    /// Its clock is due before this time.
    pub due_before: Option<i64>,
    /// Happened at exactly this unit.
    pub location: Option<&'a str>,
    /// Happened within this unit: a county's drill-down into one of its towns.
    pub within: Option<&'a str>,
    /// Made at or after this time.
    pub created_from: Option<i64>,
    /// Made before this time.
    pub created_before: Option<i64>,
    /// Carried in this batch (代办批次).
    pub batch_id: Option<&'a str>,
    /// Of one of these categories.
    pub categories: Option<&'a [String]>,
}

/// A record's index values a [`RecordFilter`] looks at (for [`RecordFilter::matches`]).
#[derive(Debug, Clone, Copy)]
pub struct Indexed<'a> {
    pub kind: &'a str,
    pub open: bool,
    pub status: Option<&'a str>,
    pub holder: Option<&'a str>,
    pub deadline_ms: Option<i64>,
    pub location: &'a str,
    pub created_ms: i64,
    pub batch_id: Option<&'a str>,
    pub category: &'a str,
}

impl RecordFilter<'_> {
    /// Every record in scope; the base to set conditions on (`..RecordFilter::ALL`, also in
    /// constants).
    pub const ALL: RecordFilter<'static> = RecordFilter {
        kind: None,
        open: None,
        status: None,
        held_by_viewer: false,
        has_deadline: false,
        due_from: None,
        due_before: None,
        location: None,
        within: None,
        created_from: None,
        created_before: None,
        batch_id: None,
        categories: None,
    };

    /// Whether a record is in the list (ignoring scope): the rule the backends' queries
    /// follow, for tests to check them against.
    pub fn matches(&self, r: &Indexed<'_>, viewer_unit: &str) -> bool {
        self.kind.is_none_or(|k| k == r.kind)
            && self.open.is_none_or(|o| o == r.open)
            && self.status.is_none_or(|s| Some(s) == r.status)
            && (!self.held_by_viewer || r.holder == Some(viewer_unit))
            && (!(self.has_deadline || self.due_from.is_some() || self.due_before.is_some()) || r.deadline_ms.is_some())
            && self.due_from.is_none_or(|f| r.deadline_ms.is_some_and(|d| d >= f))
            && self.due_before.is_none_or(|b| r.deadline_ms.is_some_and(|d| d < b))
            && self.location.is_none_or(|l| l == r.location)
            && self.within.is_none_or(|w| r.location.starts_with(w))
            && self.created_from.is_none_or(|f| r.created_ms >= f)
            && self.created_before.is_none_or(|b| r.created_ms < b)
            && self.batch_id.is_none_or(|b| Some(b) == r.batch_id)
            && self.categories.is_none_or(|cs| cs.iter().any(|c| c == r.category))
    }
}

/// A value a [`RecordFilter`] condition compares with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bound {
    Text(String),
    Int(i64),
    Bool(bool),
    /// A set of texts (the column is one of them).
    Texts(Vec<String>),
}

/// A filter's conditions besides scope, for a backend to write in its SQL: each is a fragment
/// in which `#` stands for its value (at most one value, which `#` may name twice). Both backends take them from here, so they
/// cannot drift apart; how a placeholder is written (`?3`, `$3`) and a set is compared is theirs.
pub(crate) fn filter_conditions(f: &RecordFilter<'_>) -> Vec<(&'static str, Option<Bound>)> {
    let text = |s: &str| Some(Bound::Text(s.to_owned()));
    let mut out = Vec::new();
    let mut add = |sql: &'static str, value: Option<Option<Bound>>| {
        if let Some(v) = value {
            out.push((sql, v));
        }
    };
    add("kind = #", f.kind.map(text));
    add("open = #", f.open.map(|o| Some(Bound::Bool(o))));
    add("status = #", f.status.map(text));
    add("holder = ?viewer", f.held_by_viewer.then_some(None));
    add("deadline_ms IS NOT NULL", f.has_deadline.then_some(None));
    add("deadline_ms >= #", f.due_from.map(|v| Some(Bound::Int(v))));
    add("deadline_ms < #", f.due_before.map(|v| Some(Bound::Int(v))));
    add("location = #", f.location.map(text));
    // A prefix, written the same on both backends; the scope condition before it has already
    // narrowed the rows by index.
    add("substr(location, 1, length(CAST(# AS TEXT))) = #", f.within.map(text));
    add("created_ms >= #", f.created_from.map(|v| Some(Bound::Int(v))));
    add("created_ms < #", f.created_before.map(|v| Some(Bound::Int(v))));
    add("batch_id = #", f.batch_id.map(text));
    add("category IN #", f.categories.map(|cs| Some(Bound::Texts(cs.to_vec()))));
    out
}

/// The order of a list (ties broken by record id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListOrder {
    /// Most recently changed first.
    Updated,
    /// Soonest due first.
    Deadline,
    /// Oldest first.
    Created,
    /// Newest first.
    CreatedDesc,
}

/// One line of a record list, from the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRecord {
    pub id: String,
    pub kind: String,
    pub location: String,
    pub holder: Option<String>,
    pub status: Option<String>,
    pub category: String,
    pub title: String,
    pub case_no: Option<String>,
    pub deadline_ms: Option<i64>,
    pub updated_ms: i64,
    pub open: bool,
    pub conflicts: i64,
    pub created_ms: i64,
}

/// An org unit as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Unit {
    pub code: String,
    pub name: String,
    /// `town`, `village`, `group`, `grid`, `department` …
    pub kind: String,
    pub parent: Option<String>,
    /// Which department a unit is (`bianmin` for the town's service center), for routing.
    pub department_key: Option<String>,
    /// A grid's drawn boundary, JSON `[[lon, lat], …]`.
    pub boundary: Option<String>,
}

/// A person's account as sign-in reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonRow {
    pub id: String,
    pub name: String,
    /// Role name as stored (`grid_member`, `center_agent` …).
    pub role: String,
    pub unit: String,
    /// Argon2 hash of the password.
    pub password_hash: String,
    pub active: bool,
}

/// A device session as a request's token finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub device_id: String,
    pub person_id: String,
    pub expires_ms: i64,
    pub revoked_ms: Option<i64>,
    pub logged_out: bool,
}

/// A new device session (a sign-in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    pub device_id: String,
    pub person_id: String,
    pub name: String,
    /// SHA-256 of the token (the token itself is never stored).
    pub token_hash: String,
    pub created_ms: i64,
    pub expires_ms: i64,
    /// The app installation signing in, when it says (its personal-data key follows it).
    pub install_id: Option<String>,
}

/// A chunk of a photo landed: the upload moves on to `received` bytes (complete or not), only
/// if it stood at `from` bytes and was not complete (or did not exist yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadStep<'a> {
    pub sha256: &'a str,
    pub total: u64,
    pub from: u64,
    pub received: u64,
    pub complete: bool,
    pub uploader: &'a str,
    pub now_ms: i64,
}

/// A device as the admin's list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceListing {
    pub id: String,
    pub person_id: String,
    pub person_name: String,
    pub name: String,
    pub created_ms: i64,
    pub last_seen_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
    pub logged_out: bool,
    pub expires_ms: i64,
}

/// A person as the admin's list shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonListing {
    pub id: String,
    pub name: String,
    pub role: String,
    pub unit: String,
    pub active: bool,
    /// Sessions signed in now (not revoked, not signed out).
    pub devices: i64,
}

/// A notice (督办 or 通知) addressed to a unit, for its phones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub seq: i64,
    pub doc_id: String,
    pub unit: String,
    pub at_ms: i64,
    pub text: String,
}

impl From<Notice> for gridlink_core::Notice {
    fn from(n: Notice) -> Self {
        Self { seq: n.seq, doc_id: n.doc_id, unit: n.unit, at_ms: n.at_ms, text: n.text }
    }
}

/// One line of the audit log (全程留痕: who did what, when).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

/// Which audit lines to list: an empty actor or action matches any; times are `[from, to)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFilter {
    pub actor: String,
    pub action: String,
    pub from_ms: i64,
    pub to_ms: i64,
}

impl Default for AuditFilter {
    fn default() -> Self {
        Self { actor: String::new(), action: String::new(), from_ms: i64::MIN, to_ms: i64::MAX }
    }
}

/// `text` with `LIKE`'s wildcards and the escape character escaped (by `\`).
pub(crate) fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

/// A `LIKE` pattern for "contains `text`".
pub(crate) fn like_pattern(text: &str) -> String {
    format!("%{}%", escape_like(text))
}

/// Every table that holds the server's state, parents before the rows that refer to them.
pub const STATE_TABLES: &[&str] = &[
    "meta",
    "units",
    "people",
    "devices",
    "api_keys",
    "docs",
    "changes",
    "device_docs",
    "rounds",
    "case_counters",
    "attachments",
    "attachment_refs",
    "notices",
    "audit",
    "personal",
    "login_failures",
    "swept",
];

/// What the server keeps, on one open connection or transaction of a backend. Writes made
/// through it belong to the transaction of the caller (the writer's batch): they are kept or
/// undone with it.
pub trait Storage {
    // ---- transactions ----

    /// Begins a write transaction (the writer's batch, the sweeper's pass, an import). On
    /// PostgreSQL it first takes the town's write lock, held to its end, so the writes of
    /// several server nodes run one transaction at a time, as the one SQLite writer runs them:
    /// log numbers commit in order, case numbers stay without gaps, and no node writes a
    /// record's snapshot over another's (see `pg.rs`).
    fn begin(&self) -> AppResult<()>;
    /// Commits the transaction [`Storage::begin`] opened.
    fn commit(&self) -> AppResult<()>;
    /// Undoes the transaction [`Storage::begin`] opened.
    fn rollback(&self) -> AppResult<()>;
    /// Opens a savepoint inside the transaction (one write of a batch).
    fn savepoint(&self) -> AppResult<()>;
    /// Ends the innermost savepoint, keeping what was written since it or undoing it.
    fn end_savepoint(&self, keep: bool) -> AppResult<()>;
    /// Begins the writer's batch ([`Storage::begin`]) and the savepoint of its first job.
    /// PostgreSQL sends both at once: the writer all nodes take turns on counts round trips.
    fn begin_jobs(&self) -> AppResult<()> {
        self.begin()?;
        if let Err(e) = self.savepoint() {
            let _ = self.rollback();
            return Err(e);
        }
        Ok(())
    }
    /// Ends the running job's savepoint, keeping or undoing what it wrote, and opens the next
    /// job's.
    fn next_job(&self, keep: bool) -> AppResult<()> {
        self.end_savepoint(keep)?;
        self.savepoint()
    }
    /// Ends the last job's savepoint as [`Storage::end_savepoint`] does and commits the batch.
    fn commit_jobs(&self, keep_last: bool) -> AppResult<()> {
        self.end_savepoint(keep_last)?;
        self.commit()
    }
    /// Whether a transaction is open (SQLite ends one by itself on some errors: disk full, I/O).
    fn in_transaction(&self) -> bool;
    /// Begins a read-only transaction: every read until [`Storage::end_read`] sees the database
    /// as of one moment (a round answered on a reader: its scope, the saved documents of new
    /// records and the change log read alike). Writes of other connections committed meanwhile
    /// stay out of it.
    fn begin_read(&self) -> AppResult<()>;
    /// Ends the transaction [`Storage::begin_read`] began.
    fn end_read(&self) -> AppResult<()>;
    /// The SQLite connection underneath, for what only SQLite has (its backup, tests' fixtures).
    fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        None
    }

    // ---- settings ----

    /// A setting, if set.
    fn meta_get(&self, key: &str) -> AppResult<Option<String>>;
    /// Sets a setting.
    fn meta_set(&self, key: &str, value: &str) -> AppResult<()>;
    /// Removes a setting.
    fn meta_clear(&self, key: &str) -> AppResult<()>;

    /// The database's epoch: a random number made when the database was created and made anew
    /// by every restore from a backup, so devices can tell that the server went back in time.
    fn epoch(&self) -> AppResult<u64> {
        match self.meta_get("epoch")?.and_then(|v| v.parse().ok()) {
            Some(e) => Ok(e),
            None => self.new_epoch(),
        }
    }

    /// Where the database lives, in a form that a restore or a fail-over changes, so that the
    /// server can tell at start that it went back in time (crate::backup::epoch_at_start). None
    /// where the backend cannot tell; SQLite's own `restore` gives the epoch itself.
    fn home(&self) -> AppResult<Option<String>> {
        Ok(None)
    }

    /// Gives the database a fresh epoch.
    fn new_epoch(&self) -> AppResult<u64> {
        let e: u64 = rand::random();
        self.meta_set("epoch", &e.to_string())?;
        Ok(e)
    }

    // ---- devices' sync state ----

    /// Notes that a device was heard from; returns whether it is pushing back what a restore
    /// lost (one statement where a round trip counts).
    fn device_seen(&self, device: &str, now_ms: i64) -> AppResult<bool>;
    /// Whether a device is pushing back what a restore lost.
    fn device_recovering(&self, device: &str) -> AppResult<bool>;
    /// Marks or clears a device's recovery.
    fn set_device_recovering(&self, device: &str, recovering: bool) -> AppResult<()>;
    /// A round answered to a device, if the server still keeps it.
    fn round(&self, device: &str, round: i64) -> AppResult<Option<Round>>;
    /// The start of a sync round's writing half: [`Storage::device_seen`], then the round the
    /// device presents as its cursor taken — its additions and removals take effect (once,
    /// however often it is presented), and older rounds are forgotten — or, when it presents none
    /// the server keeps, its holdings forgotten (it starts over). Returns whether the device is
    /// recovering and the log position of the round taken (None: it starts over). Where a round
    /// trip counts, one statement.
    fn device_seen_taking_round(&self, device: &str, now_ms: i64, cursor: Option<i64>) -> AppResult<(bool, Option<i64>)>;
    /// Records a new round for a device; returns its number, one more than the device's last.
    /// On PostgreSQL it may also run outside any transaction, beside another node or reader
    /// recording a round of the same device: each gets a number of its own.
    fn add_round(&self, device: &str, seq_high: i64, added: &[String], removed: &[String]) -> AppResult<i64>;
    /// The records a device holds, as of the last round it presented.
    fn holdings(&self, device: &str) -> AppResult<HashSet<String>>;

    // ---- the change log ----

    /// Whether a change (by its hash) is in the log.
    fn change_known(&self, hash: &str) -> AppResult<bool>;
    /// Appends an accepted change to the log.
    fn log_change(&self, doc_id: &str, hash: &str, bytes: &[u8], device_id: &str, now_ms: i64) -> AppResult<()>;
    /// Every change of a record, in log order: `visit(bytes, device_id)`.
    fn record_changes(&self, doc_id: &str, visit: &mut dyn FnMut(Vec<u8>, String) -> AppResult<()>) -> AppResult<()>;
    /// The changes after log position `after` of the records `device` holds that other devices
    /// (or the server) made, in log order, until `visit` returns `false`. `holdings` are those
    /// records, as [`Storage::holdings`] gave them in this transaction: a backend may use them
    /// or its own table.
    fn changes_after(
        &self,
        device: &str,
        after: i64,
        holdings: &HashSet<String>,
        visit: &mut dyn FnMut(LoggedChange) -> AppResult<bool>,
    ) -> AppResult<()>;
    /// The log position up to which every change is visible and no change can still appear: a
    /// device whose cursor reaches it has missed nothing. With one writer (SQLite) that is the
    /// newest change; with several writers a change may commit after a later-numbered one, and
    /// the backend must give a position below every change still in flight.
    fn log_high_water(&self) -> AppResult<i64>;
    /// A record's saved document (all its changes), if the server has the record.
    fn snapshot(&self, doc_id: &str) -> AppResult<Option<Vec<u8>>>;
    /// [`Storage::snapshot`] and, for the first change pushed to it, [`Storage::change_known`]
    /// (false for none): where a round trip counts, one statement.
    fn snapshot_and_known(&self, doc_id: &str, hash: Option<&str>) -> AppResult<(Option<Vec<u8>>, bool)> {
        Ok((self.snapshot(doc_id)?, hash.map(|h| self.change_known(h)).transpose()?.unwrap_or(false)))
    }
    /// The saved documents of those of `ids` the server has (a round's new records: one
    /// statement where a round trip counts).
    fn snapshots(&self, ids: &[&str]) -> AppResult<HashMap<String, Vec<u8>>> {
        let mut out = HashMap::new();
        for id in ids {
            if let Some(doc) = self.snapshot(id)? {
                out.insert((*id).to_owned(), doc);
            }
        }
        Ok(out)
    }

    // ---- records ----

    /// Writes a record's index row and saved document (replacing the ones it had).
    fn put_record(&self, row: &RecordRow) -> AppResult<()>;
    /// Every record's id.
    fn record_ids(&self) -> AppResult<Vec<String>>;
    /// The record other than `except` that has case number `case_no`, if any.
    fn record_with_case_no(&self, case_no: &str, except: &str) -> AppResult<Option<String>>;
    /// The records a person of `unit` (id `person_id`) may see: located or held within the unit
    /// (unit codes nest by prefix: a village's `-group-grid` codes, a 9-digit town's villages),
    /// or reported by the person. The core's access rule over the index columns.
    fn records_in_scope(&self, unit: &str, person_id: &str) -> AppResult<HashSet<String>>;
    /// [`Storage::records_in_scope`] and [`Storage::holdings`] of `device` together (a sync
    /// round compares them: one statement where a round trip counts).
    fn scope_and_holdings(&self, unit: &str, person_id: &str, device: &str) -> AppResult<(HashSet<String>, HashSet<String>)> {
        Ok((self.records_in_scope(unit, person_id)?, self.holdings(device)?))
    }
    /// How many records in the scope of a person of `unit` (id `person_id`) a list holds.
    fn count_records(&self, filter: &RecordFilter<'_>, unit: &str, person_id: &str) -> AppResult<u64>;
    /// One page of a list: the records in that person's scope the filter holds, in `order`.
    fn list_records(
        &self,
        filter: &RecordFilter<'_>,
        order: ListOrder,
        unit: &str,
        person_id: &str,
        limit: i64,
        offset: i64,
    ) -> AppResult<Vec<ListedRecord>>;
    /// The figures' facts (JSON) of the records in that person's scope the filter holds: (id, facts).
    fn record_facts(&self, filter: &RecordFilter<'_>, unit: &str, person_id: &str) -> AppResult<Vec<(String, String)>>;
    /// The incident with this case number or id (an Open311 `service_request_id`).
    fn incident_by_number(&self, number: &str) -> AppResult<Option<String>>;
    /// A record's case number.
    fn case_no_of(&self, id: &str) -> AppResult<Option<String>>;
    /// Notes that a record shows a photo.
    fn add_photo_ref(&self, doc_id: &str, sha256: &str) -> AppResult<()>;
    /// Where the records showing a photo are (to decide who may fetch it).
    fn records_with_photo(&self, sha256: &str) -> AppResult<Vec<ScopeEvent>>;
    /// Keeps a record's personal data (JSON), sent by `by_person`.
    fn put_personal(&self, doc_id: &str, data: &str, now_ms: i64, by_person: &str) -> AppResult<()>;
    /// A record's personal data (JSON) with its kind and place, if the server has both.
    fn personal(&self, doc_id: &str) -> AppResult<Option<(String, String, ScopeEvent)>>;
    /// [`Storage::personal`] of each of `ids` that has personal data (the records a round
    /// sends: one statement where a round trip counts).
    fn personals(&self, ids: &[&str]) -> AppResult<Vec<(String, String, ScopeEvent)>> {
        let mut out = Vec::new();
        for id in ids {
            out.extend(self.personal(id)?);
        }
        Ok(out)
    }

    // ---- accounts and device sessions ----

    /// Answers when the database does (the health check).
    fn ping(&self) -> AppResult<()>;
    /// A person's account.
    fn person(&self, id: &str) -> AppResult<Option<PersonRow>>;
    /// The session a token (by its hash) opened.
    fn session_by_token(&self, token_hash: &str) -> AppResult<Option<Session>>;
    /// Opens a session. The personal-data key of the install (the newest unrevoked session of
    /// the same person and install that has one, if `valid`) moves to the new session; with
    /// none, `fresh` is kept. Returns the key the session holds.
    fn open_session(&self, session: &NewSession, fresh: &[u8], valid: fn(&[u8]) -> bool) -> AppResult<Vec<u8>>;
    /// Ends a session (its token stops working; the device keeps its data).
    fn sign_out(&self, device_id: &str) -> AppResult<()>;
    /// Revokes a device: its next request is told to wipe, and its personal-data key is
    /// forgotten. `false` when there is no such unrevoked device.
    fn revoke_device(&self, device_id: &str, now_ms: i64) -> AppResult<bool>;
    /// Whether the server keeps a key for the personal data on a device (revocation forgets it).
    fn device_keeps_key(&self, device_id: &str) -> AppResult<bool>;
    /// How many devices a person has (`""`: everyone's).
    fn devices_count(&self, person_id: &str) -> AppResult<u64>;
    /// One page of a person's devices (`""`: everyone's), the most recently seen first.
    fn devices_page(&self, person_id: &str, limit: i64, offset: i64) -> AppResult<Vec<DeviceListing>>;
    /// Ends a person's sessions (they sign in again; revoked ones stay revoked).
    fn end_sessions(&self, person_id: &str) -> AppResult<()>;

    // ---- the admin console ----

    /// How many accounts have `search` in their id or name (`""`: all).
    fn people_count(&self, search: &str) -> AppResult<u64>;
    /// One page of those accounts, by unit and id.
    fn people_page(&self, search: &str, limit: i64, offset: i64) -> AppResult<Vec<PersonListing>>;
    /// Changes a person's role and unit.
    fn set_person_role_unit(&self, id: &str, role: &str, unit: &str) -> AppResult<()>;
    /// Activates or deactivates an account.
    fn set_person_active(&self, id: &str, active: bool) -> AppResult<()>;
    /// Sets a password (its hash).
    fn set_password(&self, id: &str, password_hash: &str) -> AppResult<()>;
    /// A unit.
    fn unit(&self, code: &str) -> AppResult<Option<Unit>>;
    /// How many units' codes start with `prefix`.
    fn units_count(&self, prefix: &str) -> AppResult<u64>;
    /// One page of those units, by code.
    fn units_page(&self, prefix: &str, limit: i64, offset: i64) -> AppResult<Vec<Unit>>;
    /// Sets a grid's boundary (JSON `[[lon, lat], …]`), or clears it.
    fn set_boundary(&self, code: &str, boundary: Option<&str>) -> AppResult<()>;

    // ---- photos ----

    /// A photo upload's progress: (total bytes, bytes received, complete, uploader).
    fn upload(&self, sha256: &str) -> AppResult<Option<(u64, u64, bool, String)>>;
    /// Moves an upload on (see [`UploadStep`]): `false` when another upload of the same photo
    /// moved it first, or it is complete.
    fn upload_moved(&self, step: &UploadStep<'_>) -> AppResult<bool>;
    /// Starts an upload over (what was received was not the photo).
    fn upload_restart(&self, sha256: &str) -> AppResult<()>;
    /// Records a photo stored whole.
    fn upload_complete(&self, sha256: &str, len: u64, uploader: &str, now_ms: i64) -> AppResult<()>;

    // ---- deadlines and gauges ----

    /// Open incidents (not suspended) whose running clock was due before `now_ms`, the most
    /// overdue first, with that due time; leaving out those marked [`Storage::mark_swept`] at
    /// their current due time.
    fn overdue_incidents(&self, now_ms: i64) -> AppResult<Vec<(String, i64)>>;
    /// The deadline sweeper found the incident supervised for its clock due at `due_ms`: later
    /// passes skip it until its clock has another due time.
    fn mark_swept(&self, doc_id: &str, due_ms: i64) -> AppResult<()>;
    /// Open and overdue records per village (every village, with zeros), and those located at
    /// the town itself as `town`.
    fn open_by_village(&self, now_ms: i64) -> AppResult<Vec<(String, i64, i64)>>;
    /// Bytes the database takes.
    fn database_bytes(&self) -> AppResult<i64>;
    /// How many rows each table that holds state has, by table ([`STATE_TABLES`]): a request
    /// that was refused must leave every one of them as it was.
    fn row_counts(&self) -> AppResult<Vec<(&'static str, i64)>>;

    // ---- people and units (read) ----

    /// The account an Open311 API key (by its hash) acts as.
    fn api_key_person(&self, key_hash: &str) -> AppResult<Option<String>>;
    /// Keeps a new API key (its hash) for a person.
    fn add_api_key(&self, key_hash: &str, person_id: &str, name: &str, now_ms: i64) -> AppResult<()>;
    /// A unit's name.
    fn unit_name(&self, code: &str) -> AppResult<Option<String>>;
    /// Every unit, by code.
    fn units(&self) -> AppResult<Vec<Unit>>;
    /// Adds a unit or changes its name, kind, parent and department key (its boundary stays).
    fn put_unit(&self, unit: &Unit) -> AppResult<()>;
    /// Adds an active account or changes one (and activates it): name, role, unit, password.
    fn put_person(&self, person: &PersonRow, now_ms: i64) -> AppResult<()>;
    /// Whether a person (active or not) has an account.
    fn person_exists(&self, id: &str) -> AppResult<bool>;

    // ---- case numbers ----

    /// The next number of a prefix's year (1, 2, 3 … in order and without gaps), counted in the
    /// caller's transaction.
    fn next_case_number(&self, prefix: &str, year: i64) -> AppResult<i64>;
    /// [`Storage::next_case_number`] for a new record of `town`: under `in_county` when the
    /// town's unit hangs under another (a county's town counts on its own), else under `alone`.
    /// Returns the prefix counted and the number; where a round trip counts, one statement.
    fn next_town_case_number(&self, town: &str, alone: &str, in_county: &str, year: i64) -> AppResult<(String, i64)> {
        let prefix = if self.unit(town)?.is_some_and(|u| u.parent.is_some()) { in_county } else { alone };
        Ok((prefix.to_owned(), self.next_case_number(prefix, year)?))
    }
    /// A number given out before (a record recovered after a restore): the counter moves past it.
    fn case_number_taken(&self, prefix: &str, year: i64, number: i64) -> AppResult<()>;

    // ---- notices ----

    /// Adds a notice for a unit's phones.
    fn add_notice(&self, doc_id: &str, unit: &str, at_ms: i64, text: &str) -> AppResult<()>;
    /// Notices addressed to `unit` or a unit below it, newer than `after` and older than
    /// `before` (a notice's `seq`), newest first, at most `limit`.
    fn notices(&self, unit: &str, after: i64, before: i64, limit: i64) -> AppResult<Vec<Notice>>;

    // ---- audit ----

    /// Appends to the audit log.
    fn audit(&self, at_ms: i64, actor: &str, action: &str, detail: &str) -> AppResult<()>;
    /// The number of matching lines.
    fn audit_count(&self, filter: &AuditFilter) -> AppResult<u64>;
    /// One page of the matching lines, newest first.
    fn audit_page(&self, filter: &AuditFilter, limit: i64, offset: i64) -> AppResult<Vec<AuditEntry>>;
    /// The actions the audit log holds, in order.
    fn audit_actions(&self) -> AppResult<Vec<String>>;

    // ---- login limits ----

    /// A user name's failed logins in the current window: (how many, since when).
    fn login_failures(&self, user: &str) -> AppResult<Option<(i64, i64)>>;
    /// Counts a failed login; a window older than `window_ms` starts over, and other names'
    /// stale windows are forgotten.
    fn note_login_failure(&self, user: &str, now_ms: i64, window_ms: i64) -> AppResult<()>;
    /// Forgets a user name's failures (after a successful login).
    fn clear_login_failures(&self, user: &str) -> AppResult<()>;
}

/// A write transaction ([`Tx::begin`]) or a savepoint inside one ([`Tx::savepoint`]): what is
/// written through it is kept by [`Tx::commit`] and undone if it is dropped uncommitted (an
/// error returned early, a panic).
pub struct Tx<'a> {
    storage: &'a dyn Storage,
    nested: bool,
    done: bool,
    /// The write job's own savepoint ([`Tx::of_write_job`]): nothing to end here.
    job: bool,
}

impl std::fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx").field("nested", &self.nested).finish_non_exhaustive()
    }
}

impl<'a> Tx<'a> {
    /// Begins a transaction (on PostgreSQL, with the town's write lock).
    pub fn begin(storage: &'a dyn Storage) -> AppResult<Self> {
        storage.begin()?;
        Ok(Self { storage, nested: false, done: false, job: false })
    }

    /// Opens a savepoint in the running transaction.
    pub fn savepoint(storage: &'a dyn Storage) -> AppResult<Self> {
        storage.savepoint()?;
        Ok(Self { storage, nested: true, done: false, job: false })
    }

    /// The savepoint the writer thread opened for the running write job ([`crate::db::Db::write`]):
    /// a job that fails is rolled back to it whole, so a job written as one unit needs no
    /// savepoint of its own — on PostgreSQL that saves two round trips on the one writer all
    /// nodes take turns on. Refused outside a transaction.
    pub fn of_write_job(storage: &'a dyn Storage) -> AppResult<Self> {
        if !storage.in_transaction() {
            return Err(crate::error::AppError::Internal("a write job runs inside the writer's transaction".into()));
        }
        Ok(Self { storage, nested: true, done: false, job: true })
    }

    /// A savepoint in the running transaction, or a transaction of its own if none is running.
    pub fn within(storage: &'a dyn Storage) -> AppResult<Self> {
        if storage.in_transaction() { Self::savepoint(storage) } else { Self::begin(storage) }
    }

    /// Keeps what was written.
    pub fn commit(mut self) -> AppResult<()> {
        self.done = true;
        if self.job {
            Ok(())
        } else if self.nested {
            self.storage.end_savepoint(true)
        } else {
            self.storage.commit()
        }
    }
}

impl<'a> std::ops::Deref for Tx<'a> {
    type Target = dyn Storage + 'a;

    fn deref(&self) -> &(dyn Storage + 'a) {
        self.storage
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        // A write job's failure is undone by the writer, to the job's savepoint.
        if self.done || self.job || !self.storage.in_transaction() {
            return;
        }
        let undone = if self.nested { self.storage.end_savepoint(false) } else { self.storage.rollback() };
        if let Err(e) = undone {
            tracing::error!(error = %e, "cannot undo an unfinished write");
        }
    }
}
