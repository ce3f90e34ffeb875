//! [`Client`]: the one entry point to a device's data. Open a store, set who is acting, create and
//! edit records, take workflow actions, list and search offline, attach photos, export history.
//! The sync engine (and only it) uses the outbox and remote-change methods at the end.
//!
//! The client is split by concern: [`clock`] (wall clocks), [`queries`] (the offline index, lists
//! and search), [`personal`] (sealed personal data) and [`sync_store`] (what the sync engine uses).

mod clock;
mod personal;
mod queries;
mod sync_store;

pub use clock::{Clock, ManualClock, SystemClock};
pub use queries::{ListPage, RecordQuery, RecordSummary};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use automerge::{ActorId, Change};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::calendar::WorkCalendar;
use crate::catalog::{Catalog, ServiceMode};
use crate::clocks::current_clock;
use crate::error::{CoreError, Result};
use crate::hlc::HlcClock;
use crate::org::{Access, Identity, OrgUnit, RecordScope, UnitCode, access};
use crate::photo;
use crate::pii::{DataKey, IdNumber, Personal, mask_phone, validate_phone};
use crate::record::{
    ChangeInfo, GeoPoint, IncidentEdit, IncidentFields, Party, Record, RecordBody, RecordDoc, Resident, ServiceRequestEdit,
    ServiceRequestFields, Urgency,
};
use crate::store::{self, DocWrite};
use crate::sync::validate::check_follows_seen;
use crate::workflow::{Action, ActionKind, Folded, RecordKind, Status, TimelineEntry, allowed_actions, check};

/// Longest title accepted.
pub const MAX_TITLE_CHARS: usize = 100;
/// Longest free text accepted.
pub const MAX_TEXT_CHARS: usize = 5000;

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

/// Most notices a phone keeps (the newest).
pub const NOTICES_KEPT: usize = 200;

/// The position of the newest of `notices`, 0 for none (or a list kept before positions).
fn newest_notice(notices: &[Notice]) -> i64 {
    notices.iter().map(|n| n.seq).max().unwrap_or(0)
}

/// A notice for a unit: a supervision (督办), or work voided by concurrent actions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// Its position among the town's notices (0 in a list kept before notices had one).
    #[serde(default)]
    pub seq: i64,
    pub doc_id: String,
    pub unit: String,
    pub at_ms: i64,
    pub text: String,
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
        let conn = store::open(&path)?;
        let device_id = match store::meta_get(&conn, "device_id")? {
            Some(id) => id,
            None => {
                let id = uuid::Uuid::now_v7().simple().to_string();
                let tx = store::begin(&conn)?;
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
        let tx = store::begin(&self.conn)?;
        for id in &ids {
            if let Ok(record) = self.load_record(id).map(|(_, r)| r) {
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
        let tx = store::begin(&self.conn)?;
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
        let tx = store::begin(&self.conn)?;
        store::meta_delete(&tx, "identity")?;
        tx.commit()?;
        if self.identity.take().is_some() {
            self.reindex()?;
        }
        Ok(())
    }

    /// Keeps the unit's notices as the server last sent them.
    pub fn set_notices(&mut self, notices: &[Notice]) -> Result<()> {
        let tx = store::begin(&self.conn)?;
        store::meta_set_json(&tx, "notices", notices)?;
        tx.commit()?;
        Ok(())
    }

    /// The notices for the person's unit (督办, work voided by concurrent actions), newest first,
    /// as of the last sync.
    pub fn notices(&self) -> Result<Vec<Notice>> {
        Ok(store::meta_get_json(&self.conn, "notices")?.unwrap_or_default())
    }

    /// The newest notice held (its `seq`), 0 when none is or the list predates positions: what
    /// a sync round asks the notices after.
    pub fn notices_after(&self) -> Result<i64> {
        Ok(newest_notice(&self.notices()?))
    }

    /// Takes the notices newer than [`Client::notices_after`] that a sync answer brought (newest
    /// first): with those held, the newest [`NOTICES_KEPT`]. An answer to a device that held
    /// none (or a list without positions) is the whole list. Returns how many are new.
    pub fn add_notices(&mut self, newer: &[Notice]) -> Result<usize> {
        let held = self.notices()?;
        let after = newest_notice(&held);
        let mut all: Vec<Notice> = newer.iter().filter(|n| n.seq > after).cloned().collect();
        let added = all.len();
        if after > 0 {
            all.extend(held);
        }
        all.sort_by_key(|n| std::cmp::Reverse(n.seq));
        all.dedup_by_key(|n| n.seq);
        all.truncate(NOTICES_KEPT);
        self.set_notices(&all)?;
        Ok(added)
    }

    /// Keeps the town's org units (from the server) for pickers and names.
    pub fn set_org_units(&mut self, units: &[OrgUnit]) -> Result<()> {
        let tx = store::begin(&self.conn)?;
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
        let (_, record) = self.load_record(id)?;
        let folded = record.fold();
        if self.access(&me, &record, &folded) == Access::None {
            return Err(CoreError::NotFound(id.chars().take(40).collect()));
        }
        if !kind.params().contains(&crate::action_params::Param::ToUnit) {
            return Err(CoreError::InvalidInput(format!("“{kind}”不需要选择单位")));
        }
        let units = self.org_units()?;
        let allowed = crate::action_params::allowed_targets(
            &folded.state,
            record.fold_context(),
            &me,
            kind,
            units.iter().map(|u| &u.code),
            self.now_ms(),
        );
        let mut out: Vec<OrgUnit> = units.into_iter().filter(|u| allowed.contains(&u.code)).collect();
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

    fn next_provisional_no(&self, tx: &store::Tx<'_>) -> Result<String> {
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
        let tx = store::begin(&self.conn)?;
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

    fn load_doc(&self, id: &str) -> Result<RecordDoc> {
        self.load_record(id).map(|(doc, _)| doc)
    }

    /// A stored document with the record it holds (read once, while loading).
    fn load_record(&self, id: &str) -> Result<(RecordDoc, Record)> {
        let chunks = store::doc_chunks(&self.conn, id)?.ok_or_else(|| CoreError::NotFound(id.chars().take(40).collect()))?;
        let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        RecordDoc::load_read(id, &refs, &self.actor)
    }

    /// Reads a record with its folded state and the actions open to the current identity.
    pub fn get(&self, id: &str) -> Result<RecordView> {
        let (_, record) = self.load_record(id)?;
        Ok(self.view(record))
    }

    /// What the current identity may do on a record now: the record screen's actions, and
    /// whether the record is on the person's task list.
    fn actions_now(&self, record: &Record, folded: &Folded) -> Vec<ActionKind> {
        match &self.identity {
            Some(me) if self.access(me, record, folded) != Access::None => {
                let mut kinds = allowed_actions(&folded.state, record.fold_context(), me.role, &me.unit);
                // A town center may pass a record up only where its county is on the server: a
                // town that runs alone has nobody above it.
                if me.role == crate::org::Role::CenterOperator && kinds.contains(&ActionKind::Escalate) {
                    let has_county = self.org_units().is_ok_and(|units| units.iter().any(|u| u.code.strictly_contains(&me.unit)));
                    if !has_county {
                        kinds.retain(|k| *k != ActionKind::Escalate);
                    }
                }
                kinds
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
        let (mut doc, record) = self.load_record(id)?;
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
        let (doc, record) = self.load_record(id)?;
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
        extra: impl FnOnce(&store::Tx<'_>) -> Result<()>,
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
        let tx = store::begin(&self.conn)?;
        extra(&tx)?;
        save_doc(&tx, id, record.kind(), &mut next, &heads)?;
        self.index(&tx, &record, &folded)?;
        queue_change(&tx, id, change, now)?;
        store::meta_set_json(&tx, "hlc", &self.hlc.last())?;
        tx.commit()?;
        *doc = next;
        Ok(())
    }

    /// A record's full history: fields (personal data masked), folded state, every timeline entry
    /// with conflicts marked, and every stored change with its device and time.
    pub fn export_history(&self, id: &str) -> Result<HistoryExport> {
        let (mut doc, record) = self.load_record(id)?;
        let folded = record.fold();
        Ok(HistoryExport { state: folded.state, timeline: folded.entries, changes: doc.history(), record: masked_json(&record) })
    }
}

/// Saves a document's new changes since `heads` as an incremental chunk, compacting when due.
fn save_doc(tx: &store::Tx<'_>, id: &str, kind: RecordKind, doc: &mut RecordDoc, heads: &[automerge::ChangeHash]) -> Result<()> {
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
fn queue_change(tx: &store::Tx<'_>, id: &str, change: Change, now: i64) -> Result<()> {
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
