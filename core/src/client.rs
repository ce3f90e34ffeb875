//! [`Client`]: the one entry point to a device's data. Open a store, set who is acting, create and
//! edit records, take workflow actions, list and search offline, attach photos, export history.
//! The sync engine (and only it) uses the outbox and remote-change methods at the end.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use automerge::{ActorId, Change};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::calendar::WorkCalendar;
use crate::catalog::{Catalog, ServiceMode};
use crate::clocks::current_clock;
use crate::error::{CoreError, Result};
use crate::hlc::{Hlc, HlcClock};
use crate::org::{Access, Identity, OrgUnit, RecordScope, UnitCode, access};
use crate::photo;
use crate::pii::{DataKey, IdNumber, Personal, mask_name, mask_phone, validate_phone};
use crate::record::{
    ChangeInfo, GeoPoint, IncidentEdit, IncidentFields, Party, Record, RecordBody, RecordDoc, Resident, ServiceRequestEdit,
    ServiceRequestFields, Urgency,
};
use crate::store::{self, DocWrite, IndexRow, OutboxEntry};
use crate::sync::validate::check_follows_seen;
use crate::workflow::{Action, ActionKind, Folded, RecordKind, Status, TimelineEntry, allowed_actions, check};

/// Longest title accepted.
pub const MAX_TITLE_CHARS: usize = 100;
/// Longest free text accepted.
pub const MAX_TEXT_CHARS: usize = 5000;

/// A source of wall-clock time; tests inject a [`ManualClock`].
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Unix milliseconds.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock standing at `ms`.
    pub fn new(ms: i64) -> Self {
        Self(AtomicI64::new(ms))
    }
    /// Sets the time.
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
    /// Moves the time forward.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// What a client is configured with besides its database file.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub catalog: Arc<Catalog>,
    pub calendar: Arc<WorkCalendar>,
    pub clock: Arc<dyn Clock>,
    /// Bytes the photos downloaded for viewing may take on the phone; the oldest go first.
    /// Default 64 MiB.
    pub photo_cache_bytes: u64,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            catalog: Arc::new(Catalog::bundled()),
            calendar: Arc::new(WorkCalendar::bundled()),
            clock: Arc::new(SystemClock),
            photo_cache_bytes: 64 << 20,
        }
    }
}

/// A new incident as entered in the field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewIncident {
    pub category: String,
    pub title: String,
    pub description: String,
    /// Grid where it happened; defaults to the reporter's own unit.
    pub grid: Option<UnitCode>,
    pub address: String,
    pub location: Option<GeoPoint>,
    pub urgency: Urgency,
    pub parties: Vec<Party>,
    /// Note on the report entry.
    pub note: String,
}

/// A new service request as taken at a station or on a home visit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewServiceRequest {
    pub item: String,
    pub mode: ServiceMode,
    /// The village station; defaults to the village of the acting person's unit.
    pub station: Option<UnitCode>,
    pub resident_name: String,
    /// Checked against GB 11643.
    pub resident_id_number: Option<String>,
    pub resident_phone: Option<String>,
    /// Materials already handed in (names from the item's checklist).
    pub materials_received: Vec<String>,
    pub description: String,
}

/// A record with everything a screen needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordView {
    pub record: Record,
    pub folded: Folded,
    /// What the current identity may do now.
    pub allowed: Vec<ActionKind>,
    pub overdue: bool,
}

/// One line in a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordSummary {
    pub id: String,
    pub kind: RecordKind,
    pub display_no: String,
    pub title: String,
    pub status: Option<Status>,
    pub category: String,
    pub location: String,
    pub holder: Option<String>,
    pub deadline_ms: Option<i64>,
    pub overdue: bool,
    pub conflicts: i64,
    pub updated_ms: i64,
}

/// A list query over the offline index. Empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordQuery {
    pub kind: Option<RecordKind>,
    pub statuses: Vec<Status>,
    pub open_only: bool,
    /// Category code or its prefix (a major category).
    pub category_prefix: Option<String>,
    /// Records located in this unit or below (a grid, a village).
    pub within: Option<UnitCode>,
    /// Only records whose deadline passed before this instant.
    pub overdue_at: Option<i64>,
    /// Only the acting person's tasks: the records on which they can take an action now (the
    /// record screen's actions, from the one permission table).
    pub my_tasks: bool,
    /// Only finished records (closed, delivered, rejected, withdrawn …).
    #[serde(default)]
    pub closed_only: bool,
    /// Only records held by this unit now.
    #[serde(default)]
    pub holder: Option<UnitCode>,
    /// Only records created in `[created_from_ms, created_to_ms)`.
    #[serde(default)]
    pub created_from_ms: Option<i64>,
    #[serde(default)]
    pub created_to_ms: Option<i64>,
    pub limit: usize,
    pub offset: usize,
}

/// A notice for a unit: a supervision (督办), or work voided by concurrent actions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub doc_id: String,
    pub unit: String,
    pub at_ms: i64,
    pub text: String,
}

/// One page of a list or of search results, with the number of all matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListPage {
    pub items: Vec<RecordSummary>,
    pub total: u64,
}

/// A record's complete history, for audit and export (personal data masked).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryExport {
    /// The record's fields as JSON, ID numbers and phones masked.
    pub record: serde_json::Value,
    pub state: crate::workflow::RecordState,
    pub timeline: Vec<crate::workflow::FoldedEntry>,
    pub changes: Vec<ChangeInfo>,
}

/// The device's handle on its local data.
#[derive(Debug)]
pub struct Client {
    conn: Connection,
    path: PathBuf,
    device_id: String,
    actor: ActorId,
    identity: Option<Identity>,
    hlc: HlcClock,
    opts: ClientOptions,
    /// The key this device's personal data is sealed with: from the server at login, kept in
    /// memory only (see [`crate::pii`]).
    data_key: Option<DataKey>,
}

/// What the index of a store derives from each record; a store indexed by an older version is
/// re-indexed once when it is opened.
const INDEX_VERSION: &str = "3";

/// Joins the fields of a record's search text: a control character, which [`Client::search`]
/// removes from every query, so that no match can run from one field into the next.
const SEARCH_FIELD_SEP: &str = "\u{1f}";

impl Client {
    /// Opens the store at `path` with the bundled catalogs and the system clock.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, ClientOptions::default())
    }

    /// Opens the store at `path`.
    pub fn open_with(path: impl AsRef<Path>, opts: ClientOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut conn = store::open(&path)?;
        let device_id = match store::meta_get(&conn, "device_id")? {
            Some(id) => id,
            None => {
                let id = uuid::Uuid::now_v7().simple().to_string();
                let tx = conn.transaction()?;
                store::meta_set(&tx, "device_id", &id)?;
                tx.commit()?;
                id
            }
        };
        let actor = ActorId::from(hex::decode(&device_id).map_err(|_| CoreError::CorruptDocument { id: "device_id".into() })?);
        let identity = store::meta_get_json(&conn, "identity")?;
        let hlc = HlcClock::from_last(store::meta_get_json(&conn, "hlc")?.flatten());
        let client = Self { conn, path, device_id, actor, identity, hlc, opts, data_key: None };
        client.reindex_if_stale()?;
        Ok(client)
    }

    /// Re-derives every record's index row and search text, once, when the index was written by
    /// an older version (clocks per holder, search fields kept apart), in one transaction. A
    /// record whose stored bytes are damaged is left for [`Client::verify_integrity`] to report.
    fn reindex_if_stale(&self) -> Result<()> {
        if store::meta_get(&self.conn, "index_version")?.as_deref() == Some(INDEX_VERSION) {
            return Ok(());
        }
        self.reindex()
    }

    /// Re-derives every record's index row (also when the identity changes: what a person can
    /// act on is part of the row).
    fn reindex(&self) -> Result<()> {
        let ids: Vec<String> = self.conn.prepare("SELECT id FROM documents")?.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        let tx = self.conn.unchecked_transaction()?;
        for id in &ids {
            if let Ok(record) = self.load_doc(id).and_then(|d| d.read()) {
                let folded = record.fold();
                self.index(&tx, &record, &folded)?;
            }
        }
        store::meta_set(&tx, "index_version", INDEX_VERSION)?;
        tx.commit()?;
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This device's id (also its Automerge actor).
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// The catalogs in use.
    pub fn catalog(&self) -> &Catalog {
        &self.opts.catalog
    }

    /// The working-day calendar in use.
    pub fn calendar(&self) -> &WorkCalendar {
        &self.opts.calendar
    }

    /// Current time from the configured clock.
    pub fn now_ms(&self) -> i64 {
        self.opts.clock.now_ms()
    }

    /// Sets who is acting on this device (after login). Kept across restarts.
    pub fn set_identity(&mut self, identity: Identity) -> Result<()> {
        if !crate::workflow::role_fits_unit(identity.role, &identity.unit) {
            return Err(CoreError::InvalidInput(format!("{}不能隶属于单位 {}", identity.role, identity.unit)));
        }
        let tx = self.conn.unchecked_transaction()?;
        store::meta_set_json(&tx, "identity", &identity)?;
        tx.commit()?;
        let changed = self.identity.as_ref() != Some(&identity);
        self.identity = Some(identity);
        if changed {
            self.reindex()?;
        }
        Ok(())
    }

    /// Forgets the identity (logout). Local records stay until the server says otherwise.
    pub fn clear_identity(&mut self) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        store::meta_delete(&tx, "identity")?;
        tx.commit()?;
        if self.identity.take().is_some() {
            self.reindex()?;
        }
        Ok(())
    }

    /// Keeps the unit's notices as the server last sent them.
    pub fn set_notices(&mut self, notices: &[Notice]) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        store::meta_set_json(&tx, "notices", notices)?;
        tx.commit()?;
        Ok(())
    }

    /// The notices for the person's unit (督办, work voided by concurrent actions), newest first,
    /// as of the last sync.
    pub fn notices(&self) -> Result<Vec<Notice>> {
        Ok(store::meta_get_json(&self.conn, "notices")?.unwrap_or_default())
    }

    /// Keeps the town's org units (from the server) for pickers and names.
    pub fn set_org_units(&mut self, units: &[OrgUnit]) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        store::meta_set_json(&tx, "org_units", units)?;
        tx.commit()?;
        Ok(())
    }

    /// The town's org units the phone knows (empty before the first login or sync).
    pub fn org_units(&self) -> Result<Vec<OrgUnit>> {
        Ok(store::meta_get_json(&self.conn, "org_units")?.unwrap_or_default())
    }

    /// The units the current person may name as the target of `kind` (dispatch, escalate, route,
    /// hand off) on record `id` now: every known unit that the same rules as the action itself
    /// accept, in code order.
    pub fn action_targets(&self, id: &str, kind: ActionKind) -> Result<Vec<OrgUnit>> {
        let me = self.me()?.clone();
        let record = self.load_doc(id)?.read()?;
        let folded = record.fold();
        if self.access(&me, &record, &folded) == Access::None {
            return Err(CoreError::NotFound(id.chars().take(40).collect()));
        }
        let action = |to_unit: UnitCode| match kind {
            ActionKind::Dispatch => Ok(Action::Dispatch { to_unit, deadline_ms: None }),
            ActionKind::Escalate => Ok(Action::Escalate { to_unit }),
            ActionKind::Route => Ok(Action::Route { to_unit }),
            ActionKind::HandOff => Ok(Action::HandOff { to_unit, batch_id: "-".into(), carrier: "-".into() }),
            other => Err(CoreError::InvalidInput(format!("“{other}”不需要选择单位"))),
        };
        let mut out = Vec::new();
        for unit in self.org_units()? {
            let entry = TimelineEntry {
                id: String::new(),
                at: Hlc { wall_ms: self.now_ms(), counter: 0 },
                actor: me.id.clone(),
                actor_name: me.name.clone(),
                role: me.role,
                unit: me.unit.clone(),
                action: action(unit.code.clone())?,
                note: "-".into(),
            };
            if check(&folded.state, record.fold_context(), &entry).is_ok() {
                out.push(unit);
            }
        }
        out.sort_by(|a, b| a.code.cmp(&b.code));
        Ok(out)
    }

    /// The department responsible for an incident category, as the catalog names it, among the
    /// org units the phone knows.
    pub fn responsible_department(&self, category: &str) -> Result<Option<OrgUnit>> {
        let key = &self.opts.catalog.category(category)?.department;
        Ok(self.org_units()?.into_iter().find(|u| u.department_key.as_deref() == Some(key)))
    }

    /// Who is acting, if anybody.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    fn me(&self) -> Result<&Identity> {
        self.identity.as_ref().ok_or(CoreError::NoIdentity)
    }

    fn new_entry(&mut self, action: Action, note: &str) -> Result<TimelineEntry> {
        let me = self.me()?.clone();
        let now = self.now_ms();
        let at = self.hlc.tick(now);
        at.check_sane(now)?;
        Ok(TimelineEntry {
            id: uuid::Uuid::now_v7().to_string(),
            at,
            actor: me.id,
            actor_name: me.name,
            role: me.role,
            unit: me.unit,
            action,
            note: note.trim().to_owned(),
        })
    }

    fn next_provisional_no(&self, tx: &rusqlite::Transaction<'_>) -> Result<String> {
        let n: i64 = store::meta_get(tx, "provisional_seq")?.and_then(|s| s.parse().ok()).unwrap_or(0) + 1;
        store::meta_set(tx, "provisional_seq", &n.to_string())?;
        Ok(format!("临-{}-{n:04}", self.device_id[self.device_id.len() - 4..].to_uppercase()))
    }

    /// Reports a new incident (上报). Returns its id.
    pub fn create_incident(&mut self, new: NewIncident) -> Result<String> {
        let me = self.me()?.clone();
        self.opts.catalog.category(&new.category)?;
        check_text("标题", &new.title, MAX_TITLE_CHARS, true)?;
        check_text("描述", &new.description, MAX_TEXT_CHARS, false)?;
        check_text("地址", &new.address, MAX_TITLE_CHARS * 2, false)?;
        for p in &new.parties {
            if let Some(phone) = &p.phone {
                validate_phone(phone)?;
            }
        }
        let grid = new.grid.clone().unwrap_or_else(|| me.unit.clone());
        let entry = self.new_entry(Action::Report, &new.note)?;
        let mut body = RecordBody::Incident(IncidentFields {
            media_url: None,
            category: new.category,
            title: new.title.trim().to_owned(),
            description: new.description,
            grid,
            address: new.address,
            location: new.location,
            urgency: new.urgency,
            parties: new.parties,
            photos: Vec::new(),
            notes: String::new(),
        });
        let personal = Personal::split(&mut body);
        self.create_record(body, entry, &personal)
    }

    /// Takes a new service request at the station (受理). Returns its id.
    pub fn create_service_request(&mut self, new: NewServiceRequest) -> Result<String> {
        let me = self.me()?.clone();
        let (body, action, personal) = service_request_body(&self.opts.catalog, &self.opts.calendar, &me.unit, new, self.now_ms())?;
        let entry = self.new_entry(action, "")?;
        self.create_record(body, entry, &personal)
    }

    fn create_record(&mut self, body: RecordBody, entry: TimelineEntry, personal: &Personal) -> Result<String> {
        let key = self.key_for(personal)?;
        let now = self.now_ms();
        let id = uuid::Uuid::now_v7().to_string();
        let tx = self.conn.unchecked_transaction()?;
        let provisional_no = self.next_provisional_no(&tx)?;
        let record = Record { id: id.clone(), provisional_no, case_no: None, created_at_ms: now, body, timeline: vec![entry] };
        // The first entry must take effect: refuse rather than store a record born in conflict.
        check(&Default::default(), record.fold_context(), &record.timeline[0])?;
        let folded = record.fold();
        let mut doc = RecordDoc::create(&self.actor, &record, now)?;
        let change =
            doc.last_local_change().ok_or_else(|| CoreError::MalformedRecord { id: id.clone(), reason: "没有生成变更".into() })?;
        store::write_doc(&tx, &id, record.kind(), DocWrite::Create(doc.save()))?;
        self.index(&tx, &record, &folded)?;
        queue_change(&tx, &id, change, now)?;
        if let Some(key) = key {
            store::personal_put(&tx, &id, &key.seal(&id, personal), true)?;
        }
        store::meta_set_json(&tx, "hlc", &self.hlc.last())?;
        tx.commit()?;
        Ok(id)
    }

    /// The key to seal `personal` with: none needed when there is nothing to keep; an error when
    /// there is and this device has no key (it never logged in, or it was wiped), because
    /// personal data is never kept in clear.
    fn key_for(&self, personal: &Personal) -> Result<Option<DataKey>> {
        if personal.is_empty() {
            return Ok(None);
        }
        self.data_key
            .clone()
            .map(Some)
            .ok_or_else(|| CoreError::InvalidInput("本机尚未取得个人信息密钥,请联网登录后再录入身份证号或电话".into()))
    }

    /// Sets the key personal data is sealed with on this device (from the server at login, or
    /// from the platform's key store after a restart); `None` forgets it.
    pub fn set_data_key(&mut self, key: Option<DataKey>) {
        self.data_key = key;
    }

    /// The personal-data key's bytes, for the platform's key store.
    pub fn data_key_bytes(&self) -> Option<Vec<u8>> {
        self.data_key.as_ref().map(|k| k.as_bytes().to_vec())
    }

    /// Whether this device holds its personal-data key now.
    pub fn has_data_key(&self) -> bool {
        self.data_key.is_some()
    }

    /// The full personal data of a record, when this device holds it and its key.
    pub fn personal(&self, id: &str) -> Result<Option<Personal>> {
        let (Some(key), Some((sealed, _))) = (&self.data_key, store::personal_get(&self.conn, id)?) else {
            return Ok(None);
        };
        key.open(id, &sealed).map(Some)
    }

    /// Personal data the server does not have yet, opened for the upload (none without the key).
    pub fn personal_pending(&self) -> Result<Vec<(String, Personal)>> {
        let Some(key) = &self.data_key else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for (id, sealed) in store::personal_pending(&self.conn)? {
            if let Ok(p) = key.open(&id, &sealed) {
                out.push((id, p));
            }
        }
        Ok(out)
    }

    /// The server has (or has refused) these records' personal data: stop sending it.
    pub fn personal_delivered(&mut self, ids: &[String]) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        for id in ids {
            tx.execute("UPDATE personal SET pending = 0 WHERE doc_id = ?1", [id])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Keeps personal data the server sent for a record this device holds, sealed; without the
    /// key, or for a record it does not hold, nothing is kept.
    pub fn receive_personal(&mut self, id: &str, data: &Personal) -> Result<()> {
        let Some(key) = self.data_key.clone() else { return Ok(()) };
        let tx = self.conn.unchecked_transaction()?;
        if store::has_doc(&tx, id)? {
            store::personal_put(&tx, id, &key.seal(id, data), false)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Updates a record's kept personal data with `f` (an edit of a phone number), to be sent.
    fn update_personal(&mut self, id: &str, f: impl FnOnce(&mut Personal)) -> Result<()> {
        let mut p = self.personal(id)?.unwrap_or_default();
        f(&mut p);
        let key = self.key_for(&p)?;
        if let Some(key) = key {
            let tx = self.conn.unchecked_transaction()?;
            store::personal_put(&tx, id, &key.seal(id, &p), true)?;
            tx.commit()?;
        }
        Ok(())
    }

    fn load_doc(&self, id: &str) -> Result<RecordDoc> {
        let chunks = store::doc_chunks(&self.conn, id)?.ok_or_else(|| CoreError::NotFound(id.chars().take(40).collect()))?;
        let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        RecordDoc::load(id, &refs, &self.actor)
    }

    /// Reads a record with its folded state and the actions open to the current identity.
    pub fn get(&self, id: &str) -> Result<RecordView> {
        let record = self.load_doc(id)?.read()?;
        Ok(self.view(record))
    }

    /// What the current identity may do on a record now: the record screen's actions, and
    /// whether the record is on the person's task list.
    fn actions_now(&self, record: &Record, folded: &Folded) -> Vec<ActionKind> {
        match &self.identity {
            Some(me) if self.access(me, record, folded) != Access::None => {
                allowed_actions(&folded.state, record.fold_context(), me.role, &me.unit)
            }
            _ => Vec::new(),
        }
    }

    fn view(&self, record: Record) -> RecordView {
        let folded = record.fold();
        let allowed = self.actions_now(&record, &folded);
        let overdue = current_clock(record.kind(), &folded.state, &self.opts.catalog.center_limits, &self.opts.calendar)
            .is_some_and(|c| c.overdue(self.now_ms()));
        RecordView { record, folded, allowed, overdue }
    }

    fn access(&self, me: &Identity, record: &Record, folded: &Folded) -> Access {
        let s = &folded.state;
        access(me, &RecordScope { location: record.location(), holder: s.holder.as_ref(), assignee: None, reporter: s.reporter.as_deref() })
    }

    /// Takes a workflow action on a record. The action is checked against the same rules every
    /// replica and the server apply; on success it is one durable change.
    pub fn act(&mut self, id: &str, action: Action, note: &str) -> Result<RecordView> {
        let mut doc = self.load_doc(id)?;
        let record = doc.read()?;
        let folded = record.fold();
        let me = self.me()?.clone();
        if self.access(&me, &record, &folded) == Access::None {
            return Err(CoreError::NotAllowed {
                action: action.kind(), role: me.role, reason: "记录不在本人的办理范围内".into()
            });
        }
        let action = complete_action(&self.opts.catalog, &self.opts.calendar, self.now_ms(), &record, action)?;
        check_text("说明", note, MAX_TEXT_CHARS, false)?;
        // The clock has seen every entry the device received; observing the record's own keeps
        // that true even for a clock restored from an older state.
        if let Some(latest) = record.timeline.iter().map(|e| e.at).max() {
            self.hlc.observe(latest);
        }
        let entry = self.new_entry(action, note)?;
        check_follows_seen(&record, &entry).map_err(CoreError::InvalidInput)?;
        check(&folded.state, record.fold_context(), &entry)?;
        self.write(id, &mut doc, |d| d.append(&entry))?;
        self.get(id)
    }

    /// Signs for every errand of a hand-off batch that the current person's unit holds (the town
    /// receiving a scheduled run in one go). Returns the ids signed for; items already sent back
    /// or signed are left alone.
    pub fn receive_batch(&mut self, batch_id: &str) -> Result<Vec<String>> {
        let unit = self.me()?.unit.clone();
        let mut received = Vec::new();
        for id in self.record_ids()? {
            let view = self.get(&id)?;
            let s = &view.folded.state;
            if s.batch_id.as_deref() == Some(batch_id) && s.status == Some(Status::HandedOff) && s.holder.as_ref() == Some(&unit) {
                self.act(&id, Action::AcceptHandOff, "")?;
                received.push(id);
            }
        }
        Ok(received)
    }

    /// Edits an incident's fields (text merges character by character with concurrent edits).
    pub fn edit_incident(&mut self, id: &str, edit: IncidentEdit) -> Result<RecordView> {
        if let Some(c) = &edit.category {
            self.opts.catalog.category(c)?;
        }
        if let Some(t) = &edit.title {
            check_text("标题", t, MAX_TITLE_CHARS, true)?;
        }
        for t in [&edit.description, &edit.notes, &edit.address].into_iter().flatten() {
            check_text("文本", t, MAX_TEXT_CHARS, false)?;
        }
        for p in edit.parties.iter().flatten() {
            if let Some(phone) = &p.phone {
                validate_phone(phone)?;
            }
        }
        let mut edit = edit;
        let mut doc = self.editable(id, RecordKind::Incident)?;
        // The parties' phones are personal data: the document gets their masked forms.
        if let Some(parties) = &mut edit.parties {
            let phones: Vec<Option<String>> = parties.iter().map(|p| p.phone.clone()).collect();
            self.update_personal(id, |p| p.party_phones = if phones.iter().all(Option::is_none) { Vec::new() } else { phones })?;
            for p in parties.iter_mut() {
                p.phone = p.phone.as_deref().map(mask_phone);
            }
        }
        let now = self.now_ms();
        self.write(id, &mut doc, |d| d.edit_incident(&edit, now))?;
        self.get(id)
    }

    /// Edits a service request's fields.
    pub fn edit_service_request(&mut self, id: &str, edit: ServiceRequestEdit) -> Result<RecordView> {
        for t in [&edit.description, &edit.notes].into_iter().flatten() {
            check_text("文本", t, MAX_TEXT_CHARS, false)?;
        }
        if let Some(p) = &edit.resident_phone {
            validate_phone(p)?;
        }
        let mut edit = edit;
        let mut doc = self.editable(id, RecordKind::ServiceRequest)?;
        // The resident's phone is personal data: the document gets its masked form.
        if let Some(phone) = edit.resident_phone.take() {
            edit.resident_phone = Some(mask_phone(&phone));
            self.update_personal(id, |p| p.phone = Some(phone))?;
        }
        if let (Some(m), RecordBody::ServiceRequest(f)) = (&edit.materials, &doc.read()?.body)
            && let Some(unknown) = m.keys().find(|k| !f.materials.contains_key(*k))
        {
            return Err(CoreError::InvalidInput(format!("材料“{unknown}”不在该事项的材料清单中")));
        }
        let now = self.now_ms();
        self.write(id, &mut doc, |d| d.edit_service_request(&edit, now))?;
        self.get(id)
    }

    fn editable(&self, id: &str, kind: RecordKind) -> Result<RecordDoc> {
        let doc = self.load_doc(id)?;
        let record = doc.read()?;
        let me = self.me()?;
        if record.kind() != kind {
            return Err(CoreError::InvalidInput("记录类型不符".into()));
        }
        match self.access(me, &record, &record.fold()) {
            Access::Full => {}
            Access::Read => return Err(CoreError::EditNotAllowed { role: me.role, reason: "只能查看,不能修改".into() }),
            Access::None => return Err(CoreError::EditNotAllowed { role: me.role, reason: "记录不在本人的办理范围内".into() }),
        }
        Ok(doc)
    }

    /// Prepares a photo (downscaled, metadata stripped), stores it and links it to the incident.
    /// Returns the photo's SHA-256.
    pub fn attach_photo(&mut self, id: &str, bytes: &[u8]) -> Result<String> {
        let mut doc = self.editable(id, RecordKind::Incident)?;
        let p = photo::prepare(bytes)?;
        let now = self.now_ms();
        let sha = p.sha256.clone();
        self.write_with(
            id,
            &mut doc,
            |d| d.add_photo(&sha, now),
            |tx| store::put_attachment(tx, &p.sha256, p.width, p.height, &p.jpeg, now),
        )?;
        Ok(sha)
    }

    /// Reads a stored photo.
    pub fn photo(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        store::get_attachment(&self.conn, sha256)
    }

    /// Applies one local change to a document and stores everything in one transaction.
    fn write(&mut self, id: &str, doc: &mut RecordDoc, edit: impl FnOnce(&mut RecordDoc) -> Result<()>) -> Result<()> {
        self.write_with(id, doc, edit, |_| Ok(()))
    }

    fn write_with(
        &mut self,
        id: &str,
        doc: &mut RecordDoc,
        edit: impl FnOnce(&mut RecordDoc) -> Result<()>,
        extra: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<()>,
    ) -> Result<()> {
        let heads = doc.heads();
        let mut next = doc.clone();
        edit(&mut next)?;
        let Some(change) = next.last_local_change().filter(|c| !heads.contains(&c.hash())) else {
            return Ok(()); // nothing changed
        };
        let record = next.read()?;
        let folded = record.fold();
        let now = self.now_ms();
        let tx = self.conn.unchecked_transaction()?;
        extra(&tx)?;
        save_doc(&tx, id, record.kind(), &mut next, &heads)?;
        self.index(&tx, &record, &folded)?;
        queue_change(&tx, id, change, now)?;
        store::meta_set_json(&tx, "hlc", &self.hlc.last())?;
        tx.commit()?;
        *doc = next;
        Ok(())
    }

    fn index(&self, tx: &rusqlite::Transaction<'_>, record: &Record, folded: &Folded) -> Result<()> {
        let s = &folded.state;
        let cat = self.opts.catalog.as_ref();
        let (category, title, body) = match &record.body {
            RecordBody::Incident(f) => {
                let cname = cat.category(&f.category).map(|c| c.name.as_str()).unwrap_or_default();
                (f.category.clone(), f.title.clone(), [f.description.as_str(), &f.address, &f.notes, cname].join(SEARCH_FIELD_SEP))
            }
            RecordBody::ServiceRequest(f) => {
                let iname = cat.service_item(&f.item).map(|i| i.name.as_str()).unwrap_or(&f.item);
                let title = format!("{iname}({})", mask_name(&f.resident.name));
                (f.item.clone(), title, [f.description.as_str(), &f.notes, &f.resident.name].join(SEARCH_FIELD_SEP))
            }
        };
        let mut body = vec![body];
        body.extend(folded.entries.iter().map(|e| e.entry.note.clone()).filter(|n| !n.is_empty()));
        body.push(record.display_no().to_owned());
        let row = IndexRow {
            id: record.id.clone(),
            kind: record.kind(),
            status: s.status,
            category,
            location: record.location().clone(),
            holder: s.holder.clone(),
            owner: s.owner.clone(),
            reporter: s.reporter.clone(),
            // The due time of the clock running now, so that overdue lists follow the holder.
            deadline_ms: current_clock(record.kind(), s, &self.opts.catalog.center_limits, &self.opts.calendar).map(|c| c.due_ms),
            created_ms: record.created_at_ms,
            updated_ms: s.last_at.map_or(record.created_at_ms, |h| h.wall_ms),
            display_no: record.display_no().to_owned(),
            case_no: record.case_no.clone(),
            title,
            conflicts: folded.conflicts() as i64,
            supervisions: i64::from(s.supervisions),
            satisfaction: s.satisfaction.map(i64::from),
            // The same permission table as the record screen's actions: a task is a record
            // the person can act on now, and nothing else.
            actionable: !self.actions_now(record, folded).is_empty(),
        };
        store::write_index(tx, &row, &body.join(SEARCH_FIELD_SEP))
    }

    /// Lists records from the offline index.
    pub fn list(&self, q: &RecordQuery) -> Result<Vec<RecordSummary>> {
        Ok(self.list_page(q)?.items)
    }

    /// [`Client::list`] with the number of all records matching the filters (for "1–50 of 312").
    pub fn list_page(&self, q: &RecordQuery) -> Result<ListPage> {
        use rusqlite::types::Value;
        let mut sql = String::from(" FROM records WHERE 1=1");
        let mut args: Vec<Value> = Vec::new();
        if let Some(k) = q.kind {
            sql.push_str(" AND kind = ?");
            args.push(k.as_str().to_owned().into());
        }
        if !q.statuses.is_empty() {
            sql.push_str(&format!(" AND status IN ({})", vec!["?"; q.statuses.len()].join(",")));
            args.extend(q.statuses.iter().map(|s| Value::from(s.as_str().to_owned())));
        }
        if q.open_only {
            sql.push_str(" AND open = 1");
        }
        if q.closed_only {
            sql.push_str(" AND open = 0");
        }
        if let Some(c) = &q.category_prefix {
            sql.push_str(" AND category LIKE ? || '%'");
            args.push(c.replace(['%', '_'], "").into());
        }
        if let Some(u) = &q.within {
            let within = store::within_sql("location", "?");
            args.extend(std::iter::repeat_n(Value::from(u.as_str().to_owned()), within.matches('?').count()));
            sql.push_str(&format!(" AND {within}"));
        }
        if let Some(h) = &q.holder {
            sql.push_str(" AND holder = ?");
            args.push(h.as_str().to_owned().into());
        }
        if let Some(from) = q.created_from_ms {
            sql.push_str(" AND created_ms >= ?");
            args.push(from.into());
        }
        if let Some(to) = q.created_to_ms {
            sql.push_str(" AND created_ms < ?");
            args.push(to.into());
        }
        if let Some(t) = q.overdue_at {
            sql.push_str(" AND open = 1 AND status != 'suspended' AND deadline_ms < ?");
            args.push(t.into());
        }
        if q.my_tasks {
            self.me()?;
            sql.push_str(" AND actionable = 1");
        }
        let total: i64 =
            self.conn.prepare_cached(&format!("SELECT count(*){sql}"))?.query_row(rusqlite::params_from_iter(args.iter()), |r| r.get(0))?;
        let mut page =
            format!("SELECT id, kind, display_no, title, status, category, location, holder, deadline_ms, conflicts, updated_ms{sql}");
        page.push_str(" ORDER BY due, updated_ms DESC, id LIMIT ? OFFSET ?");
        args.push(i64::try_from(if q.limit == 0 { 50 } else { q.limit.min(1000) }).unwrap_or(50).into());
        args.push(i64::try_from(q.offset).unwrap_or(0).into());
        let items = self.summaries(&page, rusqlite::params_from_iter(args))?;
        Ok(ListPage { items, total: total.max(0) as u64 })
    }

    /// The current identity's open tasks, soonest deadline first.
    pub fn my_tasks(&self, limit: usize) -> Result<Vec<RecordSummary>> {
        self.list(&RecordQuery { my_tasks: true, limit, ..Default::default() })
    }

    /// Full-text search: the records where one field (title, description, address, notes, an
    /// entry's note, the category or item name, the number) contains the query as a substring,
    /// ASCII letters matched without regard to case (Chinese substrings work: 3+ characters use
    /// the trigram index, shorter terms scan the indexed text). Control characters are removed
    /// from the query and surrounding whitespace is ignored; every other character — quotes,
    /// `*`, `OR`, `NEAR`, `^`, `-`, `:` — is matched as itself, so no query is a syntax error.
    pub fn search(&self, text: &str, limit: usize) -> Result<Vec<RecordSummary>> {
        Ok(self.search_page(text, limit, 0)?.items)
    }

    /// [`Client::search`] a page at a time (at most 200 a page), with the number of matches.
    pub fn search_page(&self, text: &str, limit: usize, offset: usize) -> Result<ListPage> {
        let cleaned: String = text.chars().filter(|c| !c.is_control()).collect();
        let text = cleaned.trim();
        if text.is_empty() {
            return Ok(ListPage { items: Vec::new(), total: 0 });
        }
        let limit = limit.clamp(1, 200) as i64;
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let cols =
            "r.id, r.kind, r.display_no, r.title, r.status, r.category, r.location, r.holder, r.deadline_ms, r.conflicts, r.updated_ms";
        let (filter, term) = if text.chars().count() >= 3 {
            ("records_fts MATCH ?1", format!("\"{}\"", text.replace('"', "\"\"")))
        } else {
            (
                "(f.title LIKE ?1 ESCAPE '\\' OR f.body LIKE ?1 ESCAPE '\\')",
                format!("%{}%", text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")),
            )
        };
        let total: i64 =
            self.conn.prepare_cached(&format!("SELECT count(*) FROM records_fts f WHERE {filter}"))?.query_row([&term], |r| r.get(0))?;
        let sql = format!(
            "SELECT {cols} FROM records_fts f JOIN records r ON r.id = f.id WHERE {filter} ORDER BY r.updated_ms DESC, r.id LIMIT ?2 OFFSET ?3"
        );
        let items = self.summaries(&sql, params![term, limit, offset])?;
        Ok(ListPage { items, total: total.max(0) as u64 })
    }

    fn summaries(&self, sql: &str, params: impl rusqlite::Params) -> Result<Vec<RecordSummary>> {
        let now = self.now_ms();
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params, |r| {
            let status: Option<String> = r.get(4)?;
            let status = status.as_deref().and_then(Status::parse);
            let deadline_ms: Option<i64> = r.get(8)?;
            let kind: String = r.get(1)?;
            Ok(RecordSummary {
                id: r.get(0)?,
                kind: RecordKind::parse(&kind).unwrap_or(RecordKind::Incident),
                display_no: r.get(2)?,
                title: r.get(3)?,
                status,
                category: r.get(5)?,
                location: r.get(6)?,
                holder: r.get(7)?,
                deadline_ms,
                overdue: status.is_some_and(|s| s.is_open() && s != Status::Suspended) && deadline_ms.is_some_and(|d| d < now),
                conflicts: r.get(9)?,
                updated_ms: r.get(10)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Number of records stored.
    pub fn record_count(&self) -> Result<i64> {
        Ok(self.conn.query_row("SELECT count(*) FROM records", [], |r| r.get(0))?)
    }

    /// A record's full history: fields (personal data masked), folded state, every timeline entry
    /// with conflicts marked, and every stored change with its device and time.
    pub fn export_history(&self, id: &str) -> Result<HistoryExport> {
        let mut doc = self.load_doc(id)?;
        let record = doc.read()?;
        let folded = record.fold();
        Ok(HistoryExport { state: folded.state, timeline: folded.entries, changes: doc.history(), record: masked_json(&record) })
    }

    // ---- for the sync engine ----

    /// Changes not yet acknowledged by the server, oldest first.
    pub fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        store::outbox_list(&self.conn, limit)
    }

    /// Number of changes waiting for upload.
    pub fn pending_count(&self) -> Result<i64> {
        store::outbox_len(&self.conn)
    }

    /// Drops acknowledged changes from the outbox.
    pub fn acknowledge(&mut self, hashes: &[String]) -> Result<usize> {
        let tx = self.conn.unchecked_transaction()?;
        let n = store::outbox_ack(&tx, hashes)?;
        tx.commit()?;
        Ok(n)
    }

    /// Heads of a stored document (hex), or `None` when the device does not hold it.
    pub fn heads(&self, id: &str) -> Result<Option<Vec<String>>> {
        match self.load_doc(id) {
            Ok(mut d) => Ok(Some(d.heads().iter().map(|h| h.to_string()).collect())),
            Err(CoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// All changes of a stored document (for a full upload or a peer).
    pub fn changes(&self, id: &str) -> Result<Vec<Vec<u8>>> {
        let mut doc = self.load_doc(id)?;
        Ok(doc.changes_since(&[]).into_iter().map(|mut c| c.bytes().into_owned()).collect())
    }

    /// Applies changes received from the server (or another replica) to a document, creating it
    /// if new. Refused as a whole, changing nothing, when a change is corrupt, the result is not a
    /// valid record, or a new entry carries an absurd clock.
    pub fn apply_remote(&mut self, id: &str, changes: &[Vec<u8>]) -> Result<()> {
        self.apply_changes_checked(id, changes, self.now_ms())
    }

    /// Applies changes sent by the town server. Their timestamps are checked against the server's
    /// clock, which already validated them, so a device whose own clock is wrong still syncs.
    pub fn apply_from_server(&mut self, id: &str, changes: &[Vec<u8>], server_now_ms: i64) -> Result<()> {
        self.apply_changes_checked(id, changes, server_now_ms.max(self.now_ms()))
    }

    fn apply_changes_checked(&mut self, id: &str, changes: &[Vec<u8>], now: i64) -> Result<()> {
        let mut decoded = Vec::with_capacity(changes.len());
        // The server sends a record new to this device as one saved document.
        let mut wholes = Vec::new();
        for bytes in changes {
            match crate::chunk::decode_change(bytes) {
                Some(change) => decoded.push(change),
                None => match RecordDoc::load(id, &[bytes], &self.actor) {
                    Ok(whole) => wholes.push((whole, bytes)),
                    Err(_) => return Err(CoreError::CorruptChange),
                },
            }
        }
        let existing = match self.load_doc(id) {
            Ok(d) => Some(d),
            Err(CoreError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        // A record this device has none of, come as one saved document: that document is taken as
        // it is and stored as it came, rather than replayed change by change and saved again.
        let (adopted, adopted_bytes) = match (&existing, decoded.is_empty(), wholes.pop()) {
            (None, true, Some((whole, bytes))) if wholes.is_empty() => (Some(whole), Some(bytes)),
            (_, _, popped) => {
                wholes.extend(popped);
                (None, None)
            }
        };
        for (mut whole, _) in wholes {
            decoded.extend(whole.changes_since(&[]));
        }
        let (mut doc, before) = match (&existing, adopted) {
            (Some(d), _) => (d.clone(), Some(d.read()?)),
            (None, Some(whole)) => (whole, None),
            (None, None) => (RecordDoc::empty(&self.actor), None),
        };
        let heads = if adopted_bytes.is_some() { Vec::new() } else { doc.heads() };
        doc.apply_changes(decoded)?;
        if !doc.missing_deps(&[]).is_empty() {
            return Err(CoreError::MissingDependencies);
        }
        if doc.heads() == heads {
            return Ok(()); // all known already
        }
        let record = doc.read().map_err(|e| match e {
            CoreError::MalformedRecord { reason, .. } => CoreError::MalformedRecord { id: id.chars().take(40).collect(), reason },
            other => other,
        })?;
        if record.id != id {
            return Err(CoreError::MalformedRecord { id: id.chars().take(40).collect(), reason: "记录编号与文档不符".into() });
        }
        let known: std::collections::HashSet<&str> =
            before.as_ref().map(|b| b.timeline.iter().map(|e| e.id.as_str()).collect()).unwrap_or_default();
        let mut hlc = self.hlc;
        for e in record.timeline.iter().filter(|e| !known.contains(e.id.as_str())) {
            e.at.check_sane(now)?;
            hlc.observe(e.at);
        }
        let folded = record.fold();
        let tx = self.conn.unchecked_transaction()?;
        if existing.is_some() {
            save_doc(&tx, id, record.kind(), &mut doc, &heads)?;
        } else {
            let saved = match adopted_bytes {
                Some(bytes) => bytes.clone(),
                None => doc.save(),
            };
            store::write_doc(&tx, id, record.kind(), DocWrite::Create(saved))?;
        }
        self.index(&tx, &record, &folded)?;
        store::meta_set_json(&tx, "hlc", &hlc.last())?;
        tx.commit()?;
        self.hlc = hlc;
        Ok(())
    }

    /// Removes a record that left the device's scope (its queued changes stay until acknowledged).
    pub fn forget(&mut self, id: &str) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        store::delete_doc(&tx, id)?;
        tx.commit()?;
        Ok(())
    }

    /// Removes a sync-engine value.
    pub fn clear_sync_meta(&mut self, key: &str) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        store::meta_delete(&tx, &format!("sync.{key}"))?;
        tx.commit()?;
        Ok(())
    }

    /// Deletes all records, queued changes, photos, the identity and the sync state (a revoked,
    /// lost phone). The device id stays, so provisional numbers never repeat.
    pub fn wipe(&mut self) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        store::wipe(&tx)?;
        tx.commit()?;
        self.identity = None;
        self.data_key = None;
        // Give the freed pages back to the file system.
        self.conn.execute_batch("VACUUM")?;
        Ok(())
    }

    /// Drops a record's queued changes (the server refused one of them).
    pub fn drop_queued(&mut self, id: &str) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        store::outbox_drop_doc(&tx, id)?;
        tx.commit()?;
        Ok(())
    }

    /// Notes that the server refused a change, so the user can see why.
    pub fn record_rejection(&mut self, id: &str, reason: &str) -> Result<()> {
        self.conn.execute("INSERT INTO sync_rejections(doc_id, reason, at_ms) VALUES (?1, ?2, ?3)", params![id, reason, self.now_ms()])?;
        Ok(())
    }

    /// Changes the server refused: (record id, reason, when), newest first.
    pub fn rejections(&self) -> Result<Vec<(String, String, i64)>> {
        let mut stmt = self.conn.prepare("SELECT doc_id, reason, at_ms FROM sync_rejections ORDER BY seq DESC LIMIT 100")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Photos waiting for upload.
    pub fn pending_photos(&self) -> Result<Vec<String>> {
        store::pending_attachments(&self.conn)
    }

    /// Number of photos waiting for upload.
    pub fn pending_photo_count(&self) -> Result<i64> {
        Ok(self.conn.query_row("SELECT count(*) FROM attachments WHERE uploaded = 0", [], |r| r.get(0))?)
    }

    /// Marks a photo as stored on the server.
    pub fn mark_photo_uploaded(&mut self, sha256: &str) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        store::mark_uploaded(&tx, sha256)?;
        tx.commit()?;
        Ok(())
    }

    /// Keeps a photo downloaded from the server, after checking it is the one asked for.
    pub fn store_downloaded_photo(&mut self, sha256: &str, jpeg: &[u8]) -> Result<()> {
        if photo::sha256_hex(jpeg) != sha256 {
            return Err(CoreError::Photo("下载的照片校验失败".into()));
        }
        let tx = self.conn.unchecked_transaction()?;
        store::put_attachment(&tx, sha256, 0, 0, jpeg, self.now_ms())?;
        store::mark_uploaded(&tx, sha256)?;
        tx.execute("UPDATE attachments SET downloaded = 1 WHERE sha256 = ?1 AND width = 0 AND height = 0", [sha256])?;
        store::trim_downloaded_photos(&tx, self.opts.photo_cache_bytes)?;
        tx.commit()?;
        Ok(())
    }

    /// Reads a sync-engine value (cursor, status) kept beside the data.
    pub fn sync_meta(&self, key: &str) -> Result<Option<String>> {
        store::meta_get(&self.conn, &format!("sync.{key}"))
    }

    /// Stores a sync-engine value.
    pub fn set_sync_meta(&mut self, key: &str, value: &str) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        store::meta_set(&tx, &format!("sync.{key}"), value)?;
        tx.commit()?;
        Ok(())
    }

    /// Ids of all stored records.
    pub fn record_ids(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare("SELECT id FROM documents ORDER BY id")?;
        let ids = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
        Ok(ids)
    }

    /// Checks the store's integrity: SQLite's own check, every document loads, and the index
    /// agrees with the documents. Returns the problems found (empty when sound).
    pub fn verify_integrity(&self) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let ok: String = self.conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if ok != "ok" {
            problems.push(format!("integrity_check: {ok}"));
        }
        for id in self.record_ids()? {
            match self.load_doc(&id).and_then(|d| d.read()) {
                Ok(record) => {
                    let folded = record.fold();
                    let indexed: Option<(Option<String>, String)> = self
                        .conn
                        .query_row("SELECT status, display_no FROM records WHERE id = ?1", [&id], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()?;
                    let expected = (folded.state.status.map(|s| s.as_str().to_owned()), record.display_no().to_owned());
                    if indexed.as_ref() != Some(&expected) {
                        problems.push(format!("{id}: 索引与文档不一致"));
                    }
                }
                Err(e) => problems.push(format!("{id}: {e}")),
            }
        }
        let orphans: i64 =
            self.conn.query_row("SELECT count(*) FROM records WHERE id NOT IN (SELECT id FROM documents)", [], |r| r.get(0))?;
        if orphans > 0 {
            problems.push(format!("{orphans} 条索引没有对应文档"));
        }
        Ok(problems)
    }

    /// The last HLC timestamp issued or observed.
    pub fn clock(&self) -> Option<Hlc> {
        self.hlc.last()
    }
}

/// Saves a document's new changes since `heads` as an incremental chunk, compacting when due.
fn save_doc(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    kind: RecordKind,
    doc: &mut RecordDoc,
    heads: &[automerge::ChangeHash],
) -> Result<()> {
    let chunks = store::write_doc(tx, id, kind, DocWrite::Append(doc.save_after(heads)))?;
    if chunks >= store::COMPACT_AFTER {
        store::write_doc(tx, id, kind, DocWrite::Replace(doc.save()))?;
    }
    Ok(())
}

/// Checks a new service request against the catalog and builds its body (personal data masked),
/// its intake action (受理, with the promised date) and the full personal data to keep beside
/// it. Shared by the phones and the web console.
pub fn service_request_body(
    catalog: &Catalog,
    calendar: &WorkCalendar,
    unit: &UnitCode,
    new: NewServiceRequest,
    now_ms: i64,
) -> Result<(RecordBody, Action, Personal)> {
    let item = catalog.service_item(&new.item)?.clone();
    if !item.modes.contains(&new.mode) {
        return Err(CoreError::InvalidInput(format!("事项“{}”不支持{}", item.name, new.mode)));
    }
    check_text("申请人姓名", &new.resident_name, 50, true)?;
    check_text("说明", &new.description, MAX_TEXT_CHARS, false)?;
    let id_number = new.resident_id_number.as_deref().map(IdNumber::parse).transpose()?.map(|n| n.reveal().to_owned());
    if let Some(p) = &new.resident_phone {
        validate_phone(p)?;
    }
    if let Some(unknown) = new.materials_received.iter().find(|m| !item.materials.contains(m)) {
        return Err(CoreError::InvalidInput(format!("材料“{unknown}”不在该事项的材料清单中")));
    }
    let station = match new.station {
        Some(s) => s,
        None => crate::routing::village_of(unit).ok_or_else(|| CoreError::InvalidInput("请指定服务站所在村(社区)".into()))?,
    };
    let deadline = calendar.deadline(now_ms, crate::calendar::TimeLimit::WorkingDays(item.promised_days));
    let materials = item.materials.iter().map(|m| (m.clone(), new.materials_received.contains(m))).collect();
    let mut body = RecordBody::ServiceRequest(ServiceRequestFields {
        item: item.code,
        mode: new.mode,
        station,
        resident: Resident { name: new.resident_name.trim().to_owned(), id_number, phone: new.resident_phone },
        materials,
        description: new.description,
        notes: String::new(),
    });
    let personal = Personal::split(&mut body);
    Ok((body, Action::Receive { deadline_ms: Some(deadline) }, personal))
}

/// Fills in what the acting side computes: a dispatch deadline from the catalog and calendar,
/// and checks requested materials against the item's list. Shared by the phones and the console.
pub fn complete_action(catalog: &Catalog, calendar: &WorkCalendar, now_ms: i64, record: &Record, action: Action) -> Result<Action> {
    Ok(match (action, &record.body) {
        (Action::Dispatch { to_unit, deadline_ms: None }, RecordBody::Incident(f)) => {
            let limit = catalog.category(&f.category)?.time_limit;
            Action::Dispatch { to_unit, deadline_ms: Some(calendar.deadline(now_ms, limit)) }
        }
        (Action::RequestMaterials { missing }, RecordBody::ServiceRequest(f)) => {
            if let Some(m) = missing.iter().find(|m| !f.materials.contains_key(*m)) {
                return Err(CoreError::InvalidInput(format!("材料“{m}”不在该事项的材料清单中")));
            }
            Action::RequestMaterials { missing }
        }
        (a, _) => a,
    })
}

/// Queues a change for the server in Automerge's plain encoding, not deflated on its own: the
/// sync body is deflated as a whole and then also finds what the changes share.
fn queue_change(tx: &rusqlite::Transaction<'_>, id: &str, change: Change, now: i64) -> Result<()> {
    let hash = change.hash().to_string();
    store::outbox_push(tx, id, &hash, change.raw_bytes(), now)
}

fn check_text(what: &str, text: &str, max: usize, required: bool) -> Result<()> {
    if required && text.trim().is_empty() {
        return Err(CoreError::InvalidInput(format!("{what}不能为空")));
    }
    if text.chars().count() > max {
        return Err(CoreError::InvalidInput(format!("{what}超过{max}字")));
    }
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') {
        return Err(CoreError::InvalidInput(format!("{what}含有不可见的控制字符")));
    }
    Ok(())
}

/// A record as JSON with personal data masked (for exports and lists that leave the device).
pub fn masked_json(record: &Record) -> serde_json::Value {
    // Documents hold masked forms; masking again (idempotent) covers records written before
    // personal data left the documents.
    let mut record = record.clone();
    let _ = Personal::split(&mut record.body);
    serde_json::to_value(&record).expect("serialisable")
}
