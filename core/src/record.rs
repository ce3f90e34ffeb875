//! Records as Automerge documents: one document per incident or service request.
//!
//! Layout of a document's root map:
//! - `kind`, `schema`, `id`, `provisional_no`, `case_no` (set by the server), `created_at_ms`;
//! - the record's fields; free text (`title`, `description`, `address`, `notes`) is an Automerge
//!   text object, so concurrent edits merge character by character;
//! - `timeline`: a map from entry id to entry, so concurrent appends never collide.
//!
//! Reading goes through a JSON view of the document (the one [`automerge::AutoSerde`] gives,
//! built in one pass over each object) into typed structs, so a document that does not
//! have this shape is reported as [`CoreError::MalformedRecord`] rather than half-read. What a
//! writer other than Gridlink must produce is in [`crate::schema`].

use std::collections::BTreeMap;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, AutoCommit, Change, ObjId, ObjType, ROOT, ReadDoc, ScalarValue, ScalarValueRef, ValueRef, hydrate};
use serde::{Deserialize, Serialize};

use crate::catalog::ServiceMode;
use crate::error::{CoreError, Result};
use crate::hlc::Hlc;
use crate::org::{Role, UnitCode};
use crate::schema::{field_label, is_text_field, normalise_numbers, typed};
use crate::workflow::{Action, FoldContext, Folded, RecordKind, TimelineEntry, fold};

/// Version of the document layout.
pub const SCHEMA: u64 = 1;

/// How urgent an incident is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Urgency {
    /// 一般.
    #[default]
    Normal,
    /// 紧急.
    Urgent,
    /// 特急.
    Critical,
}

impl Urgency {
    /// Chinese name.
    pub fn label(self) -> &'static str {
        match self {
            Urgency::Normal => "一般",
            Urgency::Urgent => "紧急",
            Urgency::Critical => "特急",
        }
    }
}

/// A GPS fix (WGS-84), taken once when the report is made.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GeoPoint {
    pub lat: f64,
    pub lon: f64,
}

impl GeoPoint {
    /// Validates the coordinate ranges.
    pub fn new(lat: f64, lon: f64) -> Result<Self> {
        if !(lat.is_finite() && lon.is_finite() && (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)) {
            return Err(CoreError::InvalidInput("经纬度超出范围".into()));
        }
        Ok(Self { lat, lon })
    }
}

/// A party to a dispute (矛盾纠纷当事人).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    pub name: String,
    /// E.g. 申请人 / 被申请人.
    pub role: String,
    #[serde(default)]
    pub phone: Option<String>,
}

/// The fields of an incident (事件).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentFields {
    /// Minor category code from the catalog.
    pub category: String,
    pub title: String,
    pub description: String,
    /// The grid where it happened.
    pub grid: UnitCode,
    pub address: String,
    #[serde(default)]
    pub location: Option<GeoPoint>,
    #[serde(default)]
    pub urgency: Urgency,
    #[serde(default)]
    pub parties: Vec<Party>,
    /// Photos by SHA-256.
    #[serde(default)]
    pub photos: Vec<String>,
    /// Working notes, editable by everyone in scope.
    #[serde(default)]
    pub notes: String,
    /// A link to a photo kept elsewhere (Open311 `media_url`): stored as given, never fetched.
    #[serde(default)]
    pub media_url: Option<String>,
}

/// The resident a service request is for. Personal data: masked in lists and exports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resident {
    pub name: String,
    /// The masked ID number (`5323**********1234`); the full one is [`crate::pii::Personal`]
    /// data, never in the document.
    #[serde(default)]
    pub id_number: Option<String>,
    /// The masked phone (`138****5678`), likewise.
    #[serde(default)]
    pub phone: Option<String>,
}

/// The fields of a service request (便民服务事项/代办).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRequestFields {
    /// Service item code from the catalog.
    pub item: String,
    pub mode: ServiceMode,
    /// The village whose station took the request.
    pub station: UnitCode,
    pub resident: Resident,
    /// Materials checklist: material name ► received.
    pub materials: BTreeMap<String, bool>,
    pub description: String,
    #[serde(default)]
    pub notes: String,
}

/// The kind-specific part of a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RecordBody {
    Incident(IncidentFields),
    ServiceRequest(ServiceRequestFields),
}

/// A record as read from its document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    /// Shown until the server assigns the case number.
    pub provisional_no: String,
    /// Case number 案卷编号, assigned by the town server on first receipt.
    pub case_no: Option<String>,
    pub created_at_ms: i64,
    pub body: RecordBody,
    /// Entries in no particular order; [`Record::fold`] orders them.
    pub timeline: Vec<TimelineEntry>,
}

impl Record {
    /// The kind of the record.
    pub fn kind(&self) -> RecordKind {
        match self.body {
            RecordBody::Incident(_) => RecordKind::Incident,
            RecordBody::ServiceRequest(_) => RecordKind::ServiceRequest,
        }
    }

    /// Where the record belongs: the grid of an incident, the station's village of a request.
    pub fn location(&self) -> &UnitCode {
        match &self.body {
            RecordBody::Incident(f) => &f.grid,
            RecordBody::ServiceRequest(f) => &f.station,
        }
    }

    /// The context the workflow fold needs.
    pub fn fold_context(&self) -> FoldContext<'_> {
        FoldContext { kind: self.kind(), location: self.location() }
    }

    /// The current state and the ordered, annotated timeline.
    pub fn fold(&self) -> Folded {
        fold(self.fold_context(), self.timeline.clone())
    }

    /// The number shown to users: the case number once assigned, the provisional one before.
    pub fn display_no(&self) -> &str {
        self.case_no.as_deref().unwrap_or(&self.provisional_no)
    }

    /// Title of an incident, service item code of a request.
    pub fn title(&self) -> &str {
        match &self.body {
            RecordBody::Incident(f) => &f.title,
            RecordBody::ServiceRequest(f) => &f.item,
        }
    }
}

/// The JSON view of an object of the document: what [`automerge::AutoSerde`] yields (maps as
/// objects, lists as arrays, text as a string, the winning value of a conflict), built by walking
/// each object once. `AutoSerde` looks every key up again after listing the keys, and every list
/// element by index; that was a third of a phone's bootstrap.
fn json_view(doc: &AutoCommit, obj: &ObjId, kind: ObjType) -> std::result::Result<serde_json::Value, String> {
    Ok(match kind {
        ObjType::Map | ObjType::Table => {
            let mut map = serde_json::Map::new();
            for item in doc.map_range(obj, ..) {
                let value = json_item(doc, item.value.clone(), || item.id())?;
                map.insert(item.key.into_owned(), value);
            }
            serde_json::Value::Object(map)
        }
        ObjType::List => {
            let items = doc.list_range(obj, ..).map(|item| json_item(doc, item.value.clone(), || item.id()));
            serde_json::Value::Array(items.collect::<std::result::Result<_, _>>()?)
        }
        ObjType::Text => serde_json::Value::String(doc.text(obj).map_err(|e| e.to_string())?),
    })
}

fn json_item(doc: &AutoCommit, value: ValueRef<'_>, id: impl FnOnce() -> ObjId) -> std::result::Result<serde_json::Value, String> {
    match value {
        ValueRef::Object(kind) => json_view(doc, &id(), kind),
        ValueRef::Scalar(scalar) => match automerge::Value::from(ValueRef::Scalar(scalar)) {
            automerge::Value::Scalar(s) => match s.as_ref() {
                ScalarValue::Str(text) => Ok(serde_json::Value::String(text.to_string())),
                ScalarValue::Int(n) => Ok((*n).into()),
                other => serde_json::to_value(other).map_err(|e| e.to_string()),
            },
            automerge::Value::Object(kind) => json_view(doc, &id(), kind),
        },
    }
}

// ---- stored shape (what AutoSerde yields) ----

#[derive(Deserialize)]
struct StoredEntry {
    at_ms: i64,
    at_c: u32,
    actor: String,
    actor_name: String,
    role: Role,
    unit: UnitCode,
    action: Action,
    note: String,
}

#[derive(Deserialize)]
struct StoredHeader {
    kind: String,
    schema: u64,
    id: String,
    provisional_no: String,
    #[serde(default)]
    case_no: Option<String>,
    created_at_ms: i64,
}

#[derive(Deserialize)]
struct StoredIncident {
    category: String,
    title: String,
    description: String,
    grid: UnitCode,
    address: String,
    #[serde(default)]
    lat: Option<f64>,
    #[serde(default)]
    lon: Option<f64>,
    #[serde(default)]
    urgency: Urgency,
    #[serde(default)]
    parties: Vec<Party>,
    #[serde(default)]
    photos: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    notes: String,
    #[serde(default)]
    media_url: Option<String>,
}

/// A record's Automerge document.
#[derive(Debug, Clone)]
pub struct RecordDoc {
    doc: AutoCommit,
}

/// Changes a caller wants to make to an incident's fields. `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IncidentEdit {
    pub category: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub address: Option<String>,
    pub notes: Option<String>,
    pub urgency: Option<Urgency>,
    pub location: Option<GeoPoint>,
    pub parties: Option<Vec<Party>>,
}

/// Changes to a service request's fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceRequestEdit {
    pub description: Option<String>,
    pub notes: Option<String>,
    /// Material name ► now received.
    pub materials: Option<BTreeMap<String, bool>>,
    pub resident_phone: Option<String>,
}

fn am(e: automerge::AutomergeError) -> CoreError {
    CoreError::MalformedRecord { id: String::new(), reason: e.to_string() }
}

impl RecordDoc {
    /// Creates the document of a new record, with its first timeline entry, as one change.
    pub fn create(actor: &ActorId, record: &Record, time_ms: i64) -> Result<Self> {
        let mut doc = AutoCommit::new().with_actor(actor.clone());
        doc.put(ROOT, "kind", record.kind().as_str()).map_err(am)?;
        doc.put(ROOT, "schema", SCHEMA).map_err(am)?;
        doc.put(ROOT, "id", record.id.as_str()).map_err(am)?;
        doc.put(ROOT, "provisional_no", record.provisional_no.as_str()).map_err(am)?;
        doc.put(ROOT, "created_at_ms", record.created_at_ms).map_err(am)?;
        match &record.body {
            RecordBody::Incident(f) => {
                doc.put(ROOT, "category", f.category.as_str()).map_err(am)?;
                doc.put(ROOT, "grid", f.grid.as_str()).map_err(am)?;
                doc.put(ROOT, "urgency", json_str(&f.urgency)).map_err(am)?;
                for (key, text) in [("title", &f.title), ("description", &f.description), ("address", &f.address), ("notes", &f.notes)] {
                    let t = doc.put_object(ROOT, key, ObjType::Text).map_err(am)?;
                    doc.splice_text(&t, 0, 0, text).map_err(am)?;
                }
                if let Some(p) = f.location {
                    doc.put(ROOT, "lat", p.lat).map_err(am)?;
                    doc.put(ROOT, "lon", p.lon).map_err(am)?;
                }
                if let Some(url) = &f.media_url {
                    doc.put(ROOT, "media_url", url.as_str()).map_err(am)?;
                }
                put_json(&mut doc, &ROOT, "parties", &serde_json::to_value(&f.parties).expect("serialisable"))?;
                let photos = doc.put_object(ROOT, "photos", ObjType::Map).map_err(am)?;
                for p in &f.photos {
                    doc.put(&photos, p.as_str(), time_ms).map_err(am)?;
                }
            }
            RecordBody::ServiceRequest(f) => {
                doc.put(ROOT, "item", f.item.as_str()).map_err(am)?;
                doc.put(ROOT, "mode", f.mode.as_str()).map_err(am)?;
                doc.put(ROOT, "station", f.station.as_str()).map_err(am)?;
                put_json(&mut doc, &ROOT, "resident", &serde_json::to_value(&f.resident).expect("serialisable"))?;
                put_json(&mut doc, &ROOT, "materials", &serde_json::to_value(&f.materials).expect("serialisable"))?;
                for (key, text) in [("description", &f.description), ("notes", &f.notes)] {
                    let t = doc.put_object(ROOT, key, ObjType::Text).map_err(am)?;
                    doc.splice_text(&t, 0, 0, text).map_err(am)?;
                }
            }
        }
        doc.put_object(ROOT, "timeline", ObjType::Map).map_err(am)?;
        let mut rd = Self { doc };
        for e in &record.timeline {
            rd.put_entry(e)?;
        }
        rd.commit("创建记录", time_ms);
        Ok(rd)
    }

    /// An empty document, to receive a record's changes from elsewhere.
    pub fn empty(actor: &ActorId) -> Self {
        Self { doc: AutoCommit::new().with_actor(actor.clone()) }
    }

    /// Loads a document from saved bytes (a full save followed by any incremental saves).
    pub fn load(id: &str, chunks: &[&[u8]], actor: &ActorId) -> Result<Self> {
        Self::load_read(id, chunks, actor).map(|(doc, _)| doc)
    }

    /// [`Self::load`], also giving the record it holds: loading reads the record to check it,
    /// and reading is a good part of a load's cost, so callers that need it take it from here.
    pub fn load_read(id: &str, chunks: &[&[u8]], actor: &ActorId) -> Result<(Self, Record)> {
        let corrupt = || CoreError::CorruptDocument { id: id.to_owned() };
        let (first, rest) = chunks.split_first().ok_or_else(corrupt)?;
        if chunks.iter().any(|c| crate::chunk::kinds(c).is_none()) {
            return Err(corrupt());
        }
        // Automerge's column decoder can panic on some malformed bytes (found by the `doc_load`
        // fuzz target): a corrupt stored document must be an error, never a crashed app.
        let loaded = std::panic::catch_unwind(|| -> std::result::Result<AutoCommit, ()> {
            let mut doc = AutoCommit::load(first).map_err(|_| ())?;
            for c in rest {
                doc.load_incremental(c).map_err(|_| ())?;
            }
            Ok(doc)
        });
        let mut doc = loaded.map_err(|_| corrupt())?.map_err(|_| corrupt())?;
        doc.set_actor(actor.clone());
        let rd = Self { doc };
        let record = rd.read().map_err(|_| corrupt())?;
        Ok((rd, record))
    }

    /// Reads the typed record.
    ///
    /// A document that does not have the record's shape is [`CoreError::MalformedRecord`], naming
    /// the record (its id when the document has one) and the field, in Chinese. Whole-number
    /// floats are read where an integer is meant (see [`normalise_numbers`]).
    pub fn read(&self) -> Result<Record> {
        // Automerge's JSON view could panic on a document whose keys and values disagree (found
        // by the `sync_request` fuzz target: `autoserde.rs:57`); such a document is malformed,
        // and reading it must never take down the thread (on the server, the single writer).
        let view = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| json_view(&self.doc, &ROOT, ObjType::Map)))
            .map_err(|_| CoreError::MalformedRecord { id: String::new(), reason: "文档内部不一致,无法读取".into() })?;
        let mut value = view.map_err(|e| CoreError::MalformedRecord { id: String::new(), reason: e.to_string() })?;
        normalise_numbers(&mut value);
        let id: String = value.get("id").and_then(|v| v.as_str()).map(|s| s.chars().take(40).collect()).unwrap_or_default();
        let malformed = |reason: String| CoreError::MalformedRecord { id: id.clone(), reason };
        let s: StoredHeader = typed(&value, "").map_err(&malformed)?;
        if s.schema > SCHEMA {
            return Err(malformed(format!("数据版本 {} 高于本程序支持的版本,请升级应用", s.schema)));
        }
        let body = match RecordKind::parse(&s.kind) {
            Some(RecordKind::Incident) => {
                let f: StoredIncident = typed(&value, "").map_err(&malformed)?;
                let location = match (f.lat, f.lon) {
                    (Some(lat), Some(lon)) => Some(GeoPoint { lat, lon }),
                    _ => None,
                };
                RecordBody::Incident(IncidentFields {
                    category: f.category,
                    title: f.title,
                    description: f.description,
                    grid: f.grid,
                    address: f.address,
                    location,
                    urgency: f.urgency,
                    parties: f.parties,
                    photos: f.photos.into_keys().collect(),
                    notes: f.notes,
                    media_url: f.media_url,
                })
            }
            Some(RecordKind::ServiceRequest) => RecordBody::ServiceRequest(typed(&value, "").map_err(&malformed)?),
            None => return Err(malformed(format!("未知的记录类型“{}”", s.kind.chars().take(40).collect::<String>()))),
        };
        let timeline: BTreeMap<String, StoredEntry> = match value.get("timeline") {
            Some(t) => typed(t, "timeline").map_err(&malformed)?,
            None => BTreeMap::new(),
        };
        let timeline = timeline
            .into_iter()
            .map(|(id, e)| TimelineEntry {
                id,
                at: Hlc { wall_ms: e.at_ms, counter: e.at_c },
                actor: e.actor,
                actor_name: e.actor_name,
                role: e.role,
                unit: e.unit,
                action: e.action,
                note: e.note,
            })
            .collect();
        Ok(Record { id: s.id, provisional_no: s.provisional_no, case_no: s.case_no, created_at_ms: s.created_at_ms, body, timeline })
    }

    /// Where the document's strings have the wrong Automerge type: free text (标题、描述、地址、
    /// 备注、办理说明) must be a text object, so that concurrent edits merge; every other string
    /// (codes, names, roles, action types) a plain string. Each problem is a Chinese phrase naming
    /// the field. A writer other than Gridlink (e.g. Automerge's JavaScript library, whose strings
    /// are text objects unless written as `ImmutableString`) must follow the same layout.
    pub fn shape_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        // Like `read`, a document whose keys and values disagree must not take the thread down.
        let walked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.walk_strings(&ROOT, ObjType::Map, &mut Vec::new(), &mut problems)
        }));
        if walked.is_err() {
            return vec!["文档内部不一致,无法读取".into()];
        }
        problems
    }

    /// Walks each object once, as [`json_view`] does: the values come with their keys, where
    /// looking each key up again cost a seek per field (5.5 % of the server's writer under load).
    fn walk_strings(&self, obj: &ObjId, kind: ObjType, path: &mut Vec<String>, problems: &mut Vec<String>) {
        let mut visit = |key: String, value: &ValueRef<'_>, child: &dyn Fn() -> ObjId| {
            path.push(key);
            let text_field = is_text_field(path);
            match value {
                ValueRef::Object(ObjType::Text) if !text_field => {
                    problems.push(format!("{}应为普通字符串,不能是文本对象", field_label(path)));
                }
                ValueRef::Scalar(ScalarValueRef::Str(_)) if text_field => {
                    problems.push(format!("{}应为文本对象(Automerge Text),不能是普通字符串", field_label(path)));
                }
                ValueRef::Object(kind @ (ObjType::Map | ObjType::Table | ObjType::List)) => {
                    self.walk_strings(&child(), *kind, path, problems)
                }
                _ => {}
            }
            path.pop();
        };
        match kind {
            ObjType::Map | ObjType::Table => {
                for item in self.doc.map_range(obj, ..) {
                    visit(item.key.to_string(), &item.value, &|| item.id());
                }
            }
            ObjType::List => {
                for item in self.doc.list_range(obj, ..) {
                    visit(item.index.to_string(), &item.value, &|| item.id());
                }
            }
            ObjType::Text => {}
        }
    }

    fn put_entry(&mut self, e: &TimelineEntry) -> Result<()> {
        let timeline = match self.doc.get(ROOT, "timeline").map_err(am)? {
            Some((_, id)) => id,
            None => {
                return Err(CoreError::MalformedRecord { id: String::new(), reason: "缺少 timeline".into() });
            }
        };
        // The entry goes in as one batch: Automerge then splices its operation columns twice
        // instead of once per field and per character of the note. The operations are the same
        // as field-by-field puts, so every reader sees the same entry.
        let fields: Vec<(&str, hydrate::Value)> = vec![
            ("at_ms", e.at.wall_ms.into()),
            ("at_c", u64::from(e.at.counter).into()),
            ("actor", e.actor.as_str().into()),
            ("actor_name", e.actor_name.as_str().into()),
            ("role", json_str(&e.role).as_str().into()),
            ("unit", e.unit.as_str().into()),
            ("action", hydrate_json(&serde_json::to_value(&e.action).expect("serialisable"))),
            ("note", hydrate::Value::text(self.doc.text_encoding(), &e.note)),
        ];
        let entry = hydrate::Value::from(fields.into_iter().collect::<std::collections::HashMap<_, _>>());
        self.doc.batch_create_object(&timeline, e.id.as_str(), &entry, false).map_err(am)?;
        Ok(())
    }

    /// Appends a timeline entry and commits it as one change.
    pub fn append(&mut self, e: &TimelineEntry) -> Result<()> {
        self.put_entry(e)?;
        self.commit(e.action.kind().label(), e.at.wall_ms);
        Ok(())
    }

    /// Applies an edit of an incident's fields as one change.
    pub fn edit_incident(&mut self, edit: &IncidentEdit, time_ms: i64) -> Result<()> {
        if let Some(c) = &edit.category {
            self.doc.put(ROOT, "category", c.as_str()).map_err(am)?;
        }
        for (key, text) in [("title", &edit.title), ("description", &edit.description), ("address", &edit.address), ("notes", &edit.notes)]
        {
            if let Some(t) = text {
                self.update_text(&ROOT, key, t)?;
            }
        }
        if let Some(u) = edit.urgency {
            self.doc.put(ROOT, "urgency", json_str(&u)).map_err(am)?;
        }
        if let Some(p) = edit.location {
            self.doc.put(ROOT, "lat", p.lat).map_err(am)?;
            self.doc.put(ROOT, "lon", p.lon).map_err(am)?;
        }
        if let Some(parties) = &edit.parties {
            put_json(&mut self.doc, &ROOT, "parties", &serde_json::to_value(parties).expect("serialisable"))?;
        }
        self.commit("编辑事件", time_ms);
        Ok(())
    }

    /// Applies an edit of a service request's fields as one change.
    pub fn edit_service_request(&mut self, edit: &ServiceRequestEdit, time_ms: i64) -> Result<()> {
        for (key, text) in [("description", &edit.description), ("notes", &edit.notes)] {
            if let Some(t) = text {
                self.update_text(&ROOT, key, t)?;
            }
        }
        if let Some(m) = &edit.materials {
            let obj = match self.doc.get(ROOT, "materials").map_err(am)? {
                Some((_, id)) => id,
                None => self.doc.put_object(ROOT, "materials", ObjType::Map).map_err(am)?,
            };
            for (name, got) in m {
                self.doc.put(&obj, name.as_str(), *got).map_err(am)?;
            }
        }
        if let Some(phone) = &edit.resident_phone
            && let Some((_, obj)) = self.doc.get(ROOT, "resident").map_err(am)?
        {
            self.doc.put(&obj, "phone", phone.as_str()).map_err(am)?;
        }
        self.commit("编辑服务事项", time_ms);
        Ok(())
    }

    /// Adds a photo reference (SHA-256) to an incident as one change.
    pub fn add_photo(&mut self, sha256: &str, time_ms: i64) -> Result<()> {
        let photos = match self.doc.get(ROOT, "photos").map_err(am)? {
            Some((_, id)) => id,
            None => self.doc.put_object(ROOT, "photos", ObjType::Map).map_err(am)?,
        };
        self.doc.put(&photos, sha256, time_ms).map_err(am)?;
        self.commit("添加照片", time_ms);
        Ok(())
    }

    /// Puts an entry of the town server's own (routing) into the document and into `record`,
    /// without committing it: [`RecordDoc::server_update`] commits it with the case number. The
    /// server may stage it beside its single writer, which then only numbers the record.
    pub fn stage_server_entry(&mut self, record: &mut Record, entry: &TimelineEntry) -> Result<()> {
        self.put_entry(entry)?;
        // The timeline reads in entry-id order (a map keyed by id).
        let at = record.timeline.partition_point(|x| x.id < entry.id);
        match record.timeline.get_mut(at) {
            Some(x) if x.id == entry.id => *x = entry.clone(),
            _ => record.timeline.insert(at, entry.clone()),
        }
        Ok(())
    }

    /// The town server's own bookkeeping on a record it has just received, as one change: the
    /// case number for a new record, and an entry of its own (routing) staged before with
    /// [`RecordDoc::stage_server_entry`]. One change rather than two is one less to store, to
    /// send to every phone and to apply there. `record` is what the document read as before and
    /// is kept in step with it, so that the server need not read the whole document back out
    /// after every report.
    pub fn server_update(
        &mut self,
        record: &mut Record,
        case_no: Option<&str>,
        staged: Option<&TimelineEntry>,
        time_ms: i64,
    ) -> Result<()> {
        let mut message = Vec::new();
        if let Some(no) = case_no {
            self.doc.put(ROOT, "case_no", no).map_err(am)?;
            record.case_no = Some(no.to_owned());
            message.push("分配案卷编号");
        }
        if let Some(e) = staged {
            message.push(e.action.kind().label());
        }
        if !message.is_empty() {
            self.commit(&message.join("、"), time_ms);
        }
        debug_assert_eq!(self.read().ok().as_ref(), Some(&*record), "the server's record drifted from its document");
        Ok(())
    }

    fn update_text(&mut self, parent: &ObjId, key: &str, text: &str) -> Result<()> {
        let obj = match self.doc.get(parent, key).map_err(am)? {
            Some((automerge::Value::Object(ObjType::Text), id)) => id,
            _ => self.doc.put_object(parent, key, ObjType::Text).map_err(am)?,
        };
        self.doc.update_text(&obj, text).map_err(am)
    }

    fn commit(&mut self, message: &str, time_ms: i64) {
        self.doc.commit_with(CommitOptions::default().with_message(message.to_owned()).with_time(time_ms / 1000));
    }

    /// The most recent change made on this device, to queue in the outbox.
    pub fn last_local_change(&mut self) -> Option<Change> {
        self.doc.get_last_local_change()
    }

    /// Changes since the given heads (all changes for an empty slice).
    pub fn changes_since(&mut self, heads: &[automerge::ChangeHash]) -> Vec<Change> {
        self.doc.get_changes(heads)
    }

    /// Applies changes received from elsewhere.
    ///
    /// Automerge can panic on some malformed changes instead of returning an error (found by the
    /// `sync_request` fuzz target: an operation naming an actor the change does not carry). Such
    /// a change is [`CoreError::CorruptChange`]; the document may be half-changed then, so callers
    /// apply to a copy they drop on error (the server's ingest and the phone's receive both do).
    pub fn apply_changes(&mut self, changes: Vec<Change>) -> Result<()> {
        let doc = &mut self.doc;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| doc.apply_changes(changes))) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(CoreError::CorruptChange),
        }
    }

    /// The document as it was at `heads` (what the author of a change built on saw).
    pub fn fork_at(&mut self, heads: &[automerge::ChangeHash]) -> Result<Self> {
        Ok(Self { doc: self.doc.fork_at(heads).map_err(|_| CoreError::MissingDependencies)? })
    }

    /// Automerge's own sync protocol (for automerge-repo peers): the next message for a peer whose
    /// sync state is `state`, encoded, or `None` when the peer is up to date.
    ///
    /// What a peer said it has lives in `state`; a malformed Bloom filter there (zero bits, found
    /// by the `automerge_repo_message` fuzz target) makes Automerge divide by zero. Then the state
    /// is forgotten and the message built as for a peer that has said nothing yet, which the peer
    /// answers with what it really has.
    pub fn sync_message(&mut self, state: &mut automerge::sync::State) -> Option<Vec<u8>> {
        use automerge::sync::SyncDoc;
        let doc = &mut self.doc;
        let generate = |doc: &mut AutoCommit, state: &mut automerge::sync::State| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| doc.sync().generate_sync_message(state).map(|m| m.encode())))
        };
        generate(doc, state).unwrap_or_else(|_| {
            *state = automerge::sync::State::new();
            generate(doc, state).ok().flatten()
        })
    }

    /// A peer's sync message: updates what `state` knows of the peer and returns the changes the
    /// message carries that this document lacks, in causal order, without applying them (the
    /// caller validates them first). A message that does not decode, or whose changes are corrupt,
    /// is [`CoreError::CorruptChange`].
    pub fn receive_sync_message(&mut self, state: &mut automerge::sync::State, message: &[u8]) -> Result<Vec<Change>> {
        use automerge::sync::SyncDoc;
        // Automerge can panic on malformed changes, while decoding the message (the changes it
        // carries are parsed there; found by the `automerge_repo_message` fuzz target) and while
        // applying them (see `apply_changes`).
        let message = std::panic::catch_unwind(|| automerge::sync::Message::decode(message))
            .map_err(|_| CoreError::CorruptChange)?
            .map_err(|_| CoreError::CorruptChange)?;
        let heads = self.doc.get_heads();
        let mut scratch = self.doc.fork();
        let received = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scratch.sync().receive_sync_message(state, message)));
        match received {
            Ok(Ok(())) => Ok(scratch.get_changes(&heads)),
            Ok(Err(_)) | Err(_) => Err(CoreError::CorruptChange),
        }
    }

    /// Current heads of the document.
    pub fn heads(&mut self) -> Vec<automerge::ChangeHash> {
        self.doc.get_heads()
    }

    /// Changes this document does not have yet to apply the given heads.
    pub fn missing_deps(&mut self, heads: &[automerge::ChangeHash]) -> Vec<automerge::ChangeHash> {
        self.doc.get_missing_deps(heads)
    }

    /// Incremental save: everything since the last save.
    pub fn save_incremental(&mut self) -> Vec<u8> {
        self.doc.save_incremental()
    }

    /// The changes made since `heads`, in save format.
    pub fn save_after(&mut self, heads: &[automerge::ChangeHash]) -> Vec<u8> {
        self.doc.save_after(heads)
    }

    /// Compact full save.
    pub fn save(&mut self) -> Vec<u8> {
        self.doc.save()
    }

    /// Full save without Automerge's own per-column deflate, for bytes that travel inside a
    /// compressed sync body: that compression then finds what records share (keys, actors, change
    /// messages, texts), which a column deflated record by record hides from it. A fresh device's
    /// 2,000 records come down in less than a third of the bytes (docs/benchmarks.md).
    pub fn save_uncompressed(&mut self) -> Vec<u8> {
        self.doc.save_nocompress()
    }

    /// The document's change history: (hash, actor, time, message) for export.
    pub fn history(&mut self) -> Vec<ChangeInfo> {
        self.doc
            .get_changes(&[])
            .into_iter()
            .map(|c| ChangeInfo {
                hash: c.hash().to_string(),
                actor: c.actor_id().to_hex_string(),
                seq: c.seq(),
                time_s: c.timestamp(),
                message: c.message().unwrap_or_default().to_owned(),
            })
            .collect()
    }
}

/// One change in a document's history (for export and audit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeInfo {
    pub hash: String,
    /// Automerge actor: the device that made the change.
    pub actor: String,
    pub seq: u64,
    /// Unix seconds.
    pub time_s: i64,
    pub message: String,
}

/// A serde unit enum's string form.
fn json_str<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// Writes a JSON value as nested Automerge maps, lists and scalars.
fn put_json(doc: &mut AutoCommit, parent: &ObjId, key: &str, value: &serde_json::Value) -> Result<()> {
    use serde_json::Value as J;
    match value {
        J::Object(map) => {
            let obj = doc.put_object(parent, key, ObjType::Map).map_err(am)?;
            for (k, v) in map {
                put_json(doc, &obj, k, v)?;
            }
        }
        J::Array(items) => {
            let obj = doc.put_object(parent, key, ObjType::List).map_err(am)?;
            for (i, v) in items.iter().enumerate() {
                insert_json(doc, &obj, i, v)?;
            }
        }
        scalar => {
            doc.put(parent, key, json_scalar(scalar)).map_err(am)?;
        }
    }
    Ok(())
}

/// A JSON value as the nested Automerge maps, lists and scalars `put_json` would write.
fn hydrate_json(value: &serde_json::Value) -> hydrate::Value {
    use serde_json::Value as J;
    match value {
        J::Object(map) => {
            hydrate::Map::from(map.iter().map(|(k, v)| (k.clone(), hydrate_json(v))).collect::<std::collections::HashMap<_, _>>()).into()
        }
        J::Array(items) => hydrate::Value::from(items.iter().map(hydrate_json).collect::<Vec<_>>()),
        scalar => hydrate::Value::Scalar(json_scalar(scalar)),
    }
}

fn insert_json(doc: &mut AutoCommit, list: &ObjId, index: usize, value: &serde_json::Value) -> Result<()> {
    use serde_json::Value as J;
    match value {
        J::Object(map) => {
            let obj = doc.insert_object(list, index, ObjType::Map).map_err(am)?;
            for (k, v) in map {
                put_json(doc, &obj, k, v)?;
            }
        }
        J::Array(items) => {
            let obj = doc.insert_object(list, index, ObjType::List).map_err(am)?;
            for (i, v) in items.iter().enumerate() {
                insert_json(doc, &obj, i, v)?;
            }
        }
        scalar => doc.insert(list, index, json_scalar(scalar)).map_err(am)?,
    }
    Ok(())
}

fn json_scalar(v: &serde_json::Value) -> ScalarValue {
    use serde_json::Value as J;
    match v {
        J::Null => ScalarValue::Null,
        J::Bool(b) => ScalarValue::Boolean(*b),
        J::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => ScalarValue::Int(i),
            (None, Some(u)) => ScalarValue::Uint(u),
            _ => ScalarValue::F64(n.as_f64().unwrap_or_default()),
        },
        J::String(s) => ScalarValue::Str(s.as_str().into()),
        J::Array(_) | J::Object(_) => unreachable!("handled by put_json"),
    }
}

#[cfg(test)]
mod tests {
    use automerge::transaction::Transactable;
    use automerge::{AutoCommit, AutoSerde, ObjType, ROOT, ScalarValue};

    use super::json_view;

    /// The one-pass view gives exactly what `AutoSerde` gives, for every kind of value, nested
    /// objects and concurrent writes (where both show the winner).
    #[test]
    fn the_json_view_is_the_autoserde_view() {
        let mut a = AutoCommit::new().with_actor(automerge::ActorId::from(vec![1u8; 16]));
        a.put(ROOT, "id", "0199aaaa").unwrap();
        a.put(ROOT, "n", 7i64).unwrap();
        a.put(ROOT, "u", ScalarValue::Uint(9)).unwrap();
        a.put(ROOT, "f", 2.5f64).unwrap();
        a.put(ROOT, "whole", 3.0f64).unwrap();
        a.put(ROOT, "yes", true).unwrap();
        a.put(ROOT, "none", ScalarValue::Null).unwrap();
        a.put(ROOT, "at", ScalarValue::Timestamp(1_764_000_000_000)).unwrap();
        a.put(ROOT, "count", ScalarValue::counter(3)).unwrap();
        a.put(ROOT, "raw", ScalarValue::Bytes(vec![0, 1, 255])).unwrap();
        let title = a.put_object(ROOT, "title", ObjType::Text).unwrap();
        a.splice_text(&title, 0, 0, "村口垃圾").unwrap();
        let timeline = a.put_object(ROOT, "timeline", ObjType::Map).unwrap();
        let entry = a.put_object(&timeline, "e1", ObjType::Map).unwrap();
        a.put(&entry, "note", "已受理").unwrap();
        let list = a.put_object(&entry, "photos", ObjType::List).unwrap();
        for (i, v) in ["p1", "p2", "p3"].into_iter().enumerate() {
            a.insert(&list, i, v).unwrap();
        }
        let nested = a.insert_object(&list, 1, ObjType::Map).unwrap();
        a.put(&nested, "k", -4i64).unwrap();
        let mut b = a.fork().with_actor(automerge::ActorId::from(vec![2u8; 16]));
        a.put(ROOT, "n", 8i64).unwrap();
        b.put(ROOT, "n", 9i64).unwrap();
        b.splice_text(&title, 2, 0, "桥头").unwrap();
        a.delete(&list, 0).unwrap();
        a.merge(&mut b).unwrap();
        for doc in [&a, &b, &AutoCommit::new()] {
            let expected = serde_json::to_value(AutoSerde::from(doc)).unwrap();
            assert_eq!(json_view(doc, &ROOT, ObjType::Map).unwrap(), expected);
        }
    }
}
