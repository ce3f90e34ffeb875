//! What the console's pages show, computed from the records: list rows, a record's fields and
//! timeline in words, and the action forms open to the viewer.

use std::collections::HashMap;

use gridlink_core::action_params::{Param, allowed_targets};
use gridlink_core::calendar::{WorkCalendar, local_time};
use gridlink_core::clocks::current_clock;
use gridlink_core::pii::{mask_name, mask_phone};
use gridlink_core::workflow::{ActionKind, Folded, allowed_actions, rule};
use gridlink_core::{Access, Action, Catalog, Person, Record, RecordBody, RecordKind, Role, Status, UnitCode, UnitKind};

use crate::error::AppResult;
use crate::storage::{ListOrder, ListedRecord, RecordFilter, Storage};

/// Display names of units and catalog codes.
#[derive(Debug)]
pub struct Names<'a> {
    pub units: HashMap<String, (String, String, Option<String>)>,
    pub catalog: &'a Catalog,
}

impl<'a> Names<'a> {
    /// Loads the unit names (code → name, kind, parent).
    pub fn load(conn: &dyn Storage, catalog: &'a Catalog) -> AppResult<Self> {
        let units = conn.units()?.into_iter().map(|u| (u.code, (u.name, u.kind, u.parent))).collect();
        Ok(Self { units, catalog })
    }

    /// A unit's name, or its code when unknown.
    pub fn unit(&self, code: &str) -> String {
        self.units.get(code).map_or_else(|| code.to_owned(), |u| u.0.clone())
    }

    /// A unit's name with its kind, `综合行政执法中队(部门)`, for pickers.
    pub fn labelled(&self, code: &str) -> String {
        match self.units.get(code) {
            Some((name, kind, _)) => {
                let kind = crate::import::parse_kind(kind).map(UnitKind::label).unwrap_or_default();
                format!("{name}({kind})")
            }
            None => code.to_owned(),
        }
    }

    /// Departments of the town, in code order.
    pub fn departments(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> =
            self.units.iter().filter(|(_, u)| u.1 == "department").map(|(c, u)| (c.clone(), u.0.clone())).collect();
        out.sort();
        out
    }

    /// Name of an incident category or a service item.
    pub fn category(&self, code: &str) -> String {
        if let Ok(c) = self.catalog.category(code) {
            return format!("{} / {}", self.catalog.major_of(code).map(|m| m.name.as_str()).unwrap_or_default(), c.name);
        }
        self.catalog.service_item(code).map_or_else(|_| code.to_owned(), |i| i.name.clone())
    }
}

/// Time as officials read it.
pub fn when(ms: i64) -> String {
    local_time(ms).format("%Y-%m-%d %H:%M").to_string()
}

/// One line of a record list.
#[derive(Debug, Clone)]
pub struct RowView {
    pub id: String,
    pub no: String,
    pub title: String,
    pub category: String,
    pub location: String,
    pub status: String,
    pub holder: String,
    pub deadline: String,
    pub deadline_ms: Option<i64>,
    pub overdue: bool,
    pub updated: String,
    pub created: String,
    pub conflicts: i64,
}

/// Rows per page of every console list.
pub const PAGE_SIZE: usize = 50;

/// One page of a list, and how long the whole list is.
#[derive(Debug, Clone)]
pub struct RowsPage {
    pub rows: Vec<RowView>,
    /// Records in the whole list.
    pub total: usize,
    /// This page, from 1.
    pub page: usize,
    /// Pages in the whole list (at least 1).
    pub pages: usize,
}

/// A list of records: which ones (besides the viewer's scope, which the storage applies inside
/// the query, before any limit) and in what order.
#[derive(Debug, Clone, Copy)]
pub struct ListSpec<'a> {
    pub filter: RecordFilter<'a>,
    pub order: ListOrder,
}

impl ListSpec<'_> {
    /// How many records in `person`'s scope the list holds.
    pub fn count(&self, conn: &dyn Storage, person: &Person) -> AppResult<usize> {
        Ok(usize::try_from(conn.count_records(&self.filter, person.unit.as_str(), &person.id)?).unwrap_or(usize::MAX))
    }

    /// Page `page` (from 1; past the end means the last page) of the records in `person`'s scope,
    /// with the total.
    pub fn page(&self, conn: &dyn Storage, names: &Names<'_>, person: &Person, page: usize, now_ms: i64) -> AppResult<RowsPage> {
        let total = self.count(conn, person)?;
        let pages = total.div_ceil(PAGE_SIZE).max(1);
        let page = page.clamp(1, pages);
        let offset = (page - 1) * PAGE_SIZE;
        let rows = conn.list_records(&self.filter, self.order, person.unit.as_str(), &person.id, PAGE_SIZE as i64, offset as i64)?;
        Ok(RowsPage { rows: rows.into_iter().map(|r| row_view(r, names, now_ms)).collect(), total, page, pages })
    }
}

/// A list row as a page shows it.
fn row_view(r: ListedRecord, names: &Names<'_>, now_ms: i64) -> RowView {
    let incident = r.kind == "incident";
    RowView {
        no: r.case_no.unwrap_or_else(|| "待编号".into()),
        // A service request's title is its item: show the item's name.
        title: if incident { r.title } else { names.category(&r.title) },
        category: if incident { names.category(&r.category) } else { "便民服务".into() },
        location: names.unit(&r.location),
        status: r.status.as_deref().and_then(Status::parse).map(Status::label).unwrap_or_default().to_owned(),
        holder: r.holder.map(|h| names.unit(&h)).unwrap_or_default(),
        deadline: r.deadline_ms.map(|d| when(d - 1)).unwrap_or_default(),
        deadline_ms: r.deadline_ms,
        overdue: r.open && r.deadline_ms.is_some_and(|d| d < now_ms),
        updated: when(r.updated_ms),
        created: when(r.created_ms),
        conflicts: r.conflicts,
        id: r.id,
    }
}

/// One entry of a record's timeline, in words.
#[derive(Debug, Clone)]
pub struct TimelineRow {
    pub at: String,
    pub who: String,
    pub role: String,
    pub unit: String,
    pub action: String,
    pub detail: String,
    pub note: String,
    pub conflict: Option<String>,
}

/// A label and a value.
#[derive(Debug, Clone)]
pub struct Field {
    pub label: &'static str,
    pub value: String,
}

/// A record as the console shows it.
#[derive(Debug, Clone)]
pub struct RecordDetail {
    pub id: String,
    pub no: String,
    pub title: String,
    pub kind: String,
    pub status: String,
    pub holder: String,
    pub deadline: String,
    pub overdue: bool,
    pub fields: Vec<Field>,
    pub photos: Vec<String>,
    pub timeline: Vec<TimelineRow>,
    pub batch_id: Option<String>,
    pub read_only: bool,
    /// The record's automerge URL, for automerge-repo peers (crate::automerge_repo).
    pub automerge_url: String,
}

fn action_detail(action: &Action, names: &Names<'_>) -> String {
    let units = |us: &[UnitCode]| us.iter().map(|u| names.unit(u.as_str())).collect::<Vec<_>>().join("、");
    match action {
        Action::Route { to_unit } | Action::Escalate { to_unit } => format!("至 {}", names.unit(to_unit.as_str())),
        Action::Dispatch { to_unit, deadline_ms } => {
            let by = deadline_ms.map(|d| format!(",期限 {}", when(d - 1))).unwrap_or_default();
            format!("至 {}{by}", names.unit(to_unit.as_str()))
        }
        Action::RequestExtension { until_ms } => format!("申请延期至 {}", when(until_ms - 1)),
        Action::Evaluate { satisfaction } | Action::FollowUp { satisfaction } => format!("满意度 {}", satisfaction_label(*satisfaction)),
        Action::Supervise { to_units, .. } if !to_units.is_empty() => format!("督办 {}", units(to_units)),
        Action::Receive { deadline_ms: Some(d) } => format!("承诺办结 {}", when(d - 1)),
        Action::RequestMaterials { missing } => format!("缺:{}", missing.join("、")),
        Action::SupplyMaterials { supplied } => format!("补交:{}", supplied.join("、")),
        Action::HandOff { to_unit, batch_id, carrier } => {
            format!("批次 {batch_id},由{carrier}送至 {}", names.unit(to_unit.as_str()))
        }
        Action::Handle { photos } | Action::SelfResolve { photos } if !photos.is_empty() => format!("附照片 {} 张", photos.len()),
        _ => String::new(),
    }
}

/// Words for a satisfaction score.
pub fn satisfaction_label(s: u8) -> &'static str {
    match s {
        1 => "很不满意",
        2 => "不满意",
        3 => "基本满意",
        4 => "满意",
        _ => "很满意",
    }
}

/// Builds the record view: fields (personal data masked), photos, timeline.
pub fn detail(record: &Record, folded: &Folded, names: &Names<'_>, calendar: &WorkCalendar, access: Access, now_ms: i64) -> RecordDetail {
    let s = &folded.state;
    let clock = current_clock(record.kind(), s, &names.catalog.center_limits, calendar);
    let mut fields = Vec::new();
    let mut photos = Vec::new();
    let f = |label, value: String| Field { label, value };
    match &record.body {
        RecordBody::Incident(i) => {
            fields.push(f("类别", names.category(&i.category)));
            fields.push(f("网格", names.unit(i.grid.as_str())));
            fields.push(f("地址", i.address.clone()));
            fields.push(f("紧急程度", i.urgency.label().into()));
            fields.push(f("描述", i.description.clone()));
            if !i.parties.is_empty() {
                let parties = i.parties.iter().map(|p| {
                    let phone = p.phone.as_deref().map(|ph| format!(" {}", mask_phone(ph))).unwrap_or_default();
                    format!("{}({}){phone}", mask_name(&p.name), p.role)
                });
                fields.push(f("当事人", parties.collect::<Vec<_>>().join(";")));
            }
            if !i.notes.is_empty() {
                fields.push(f("备注", i.notes.clone()));
            }
            if let Some(url) = &i.media_url {
                // A link given by an outside reporter (Open311 media_url), shown as text: never
                // fetched by the server, never turned into a link a click would follow unseen.
                fields.push(f("照片链接(外部)", url.clone()));
            }
            photos = i.photos.clone();
        }
        RecordBody::ServiceRequest(r) => {
            fields.push(f("事项", names.category(&r.item)));
            fields.push(f("办理方式", r.mode.label().into()));
            fields.push(f("服务站", names.unit(r.station.as_str())));
            fields.push(f("申请人", mask_name(&r.resident.name)));
            if let Some(id) = &r.resident.id_number {
                fields.push(f("身份证号", gridlink_core::pii::mask_id_number(id)));
            }
            if let Some(p) = &r.resident.phone {
                fields.push(f("联系电话", mask_phone(p)));
            }
            let materials = r.materials.iter().map(|(m, ok)| format!("{}{m}", if *ok { "☑" } else { "☐" }));
            fields.push(f("材料", materials.collect::<Vec<_>>().join(" ")));
            if !r.description.is_empty() {
                fields.push(f("说明", r.description.clone()));
            }
        }
    }
    let timeline = folded
        .entries
        .iter()
        .map(|e| {
            let en = &e.entry;
            TimelineRow {
                at: when(en.at.wall_ms),
                who: en.actor_name.clone(),
                role: en.role.label().into(),
                unit: names.unit(en.unit.as_str()),
                action: en.action.kind().label().into(),
                detail: action_detail(&en.action, names),
                note: en.note.clone(),
                conflict: e.conflict.clone(),
            }
        })
        .collect();
    RecordDetail {
        id: record.id.clone(),
        no: record.display_no().to_owned(),
        title: match &record.body {
            RecordBody::ServiceRequest(r) => names.category(&r.item),
            RecordBody::Incident(_) => record.title().to_owned(),
        },
        kind: if record.kind() == RecordKind::Incident { "事件".into() } else { "便民代办".into() },
        status: s.status.map(Status::label).unwrap_or_default().into(),
        holder: s.holder.as_ref().map(|h| names.unit(h.as_str())).unwrap_or_default(),
        // The clock running now: whose turn it is and by when (处置/核查/结案期限).
        deadline: clock.as_ref().map(|c| format!("{}({}期限)", when(c.due_ms - 1), c.stage.label())).unwrap_or_default(),
        overdue: clock.as_ref().is_some_and(|c| c.overdue(now_ms)),
        fields,
        photos,
        timeline,
        batch_id: s.batch_id.clone(),
        automerge_url: crate::automerge_repo::url(&record.id).unwrap_or_default(),
        read_only: access != Access::Full,
    }
}

/// A form for one action open to the viewer.
#[derive(Debug, Clone)]
pub struct ActionForm {
    pub kind: String,
    pub label: String,
    pub note_required: bool,
    /// Units to choose from (dispatch); one fixed unit for an escalation.
    pub targets: Vec<(String, String)>,
    pub deadline_days: bool,
    pub satisfaction: bool,
    pub until: bool,
    pub photo: bool,
    /// Materials to tick (request / supply).
    pub materials: Vec<String>,
    /// A primary, frequently used action.
    pub primary: bool,
}

/// Whether the console offers an action on a record page: reporting and intake make records,
/// routing is the server's, and hand-offs go through the batch builder.
pub fn console_offers(kind: ActionKind) -> bool {
    kind.taken_on_records() && !matches!(kind, ActionKind::Route | ActionKind::HandOff)
}

/// The actions `person` may take on the record now (the phones' rule), as forms whose fields are
/// what each action asks for (`ActionKind::params`); a unit to choose comes from the permission
/// table itself (`allowed_targets`).
pub fn action_forms(record: &Record, folded: &Folded, person: &Person, access: Access, names: &Names<'_>, now_ms: i64) -> Vec<ActionForm> {
    if access == Access::None {
        return Vec::new();
    }
    let kinds = allowed_actions(&folded.state, record.fold_context(), person.role, &person.unit);
    let materials = match &record.body {
        RecordBody::ServiceRequest(r) => r.materials.clone(),
        RecordBody::Incident(_) => Default::default(),
    };
    let units: Vec<UnitCode> = names.units.keys().filter_map(|c| UnitCode::parse(c).ok()).collect();
    kinds
        .into_iter()
        .filter(|k| console_offers(*k))
        .map(|k| {
            let params = k.params();
            let mut form = ActionForm {
                kind: k.as_str().into(),
                label: k.label().into(),
                note_required: rule(k).note_required,
                targets: Vec::new(),
                deadline_days: params.contains(&Param::Deadline),
                satisfaction: params.contains(&Param::Satisfaction),
                until: params.contains(&Param::Until),
                photo: params.contains(&Param::Photos),
                materials: Vec::new(),
                primary: matches!(
                    k,
                    ActionKind::Accept
                        | ActionKind::Dispatch
                        | ActionKind::Sign
                        | ActionKind::Handle
                        | ActionKind::Close
                        | ActionKind::AcceptHandOff
                        | ActionKind::Queue
                        | ActionKind::Complete
                        | ActionKind::Deliver
                ),
            };
            if params.contains(&Param::ToUnit) {
                form.targets = allowed_targets(&folded.state, record.fold_context(), person, k, &units, now_ms)
                    .into_iter()
                    .map(|u| (u.to_string(), names.labelled(u.as_str())))
                    .collect();
            }
            if params.contains(&Param::Materials) {
                // What may be asked for, or what is still missing and may now be supplied.
                let supply = k == ActionKind::SupplyMaterials;
                form.materials = materials.iter().filter(|(_, ok)| !supply || !**ok).map(|(m, _)| m.clone()).collect();
            }
            form
        })
        // An action that needs a unit and has none to offer (a town center's 逐级上报 where no
        // county is on the server) is not offered.
        .filter(|form| !form.targets.is_empty() || !ActionKind::parse(&form.kind).is_some_and(|k| k.params().contains(&Param::ToUnit)))
        .collect()
}

/// A link of the console's navigation.
#[derive(Debug, Clone)]
pub struct NavLink {
    pub href: &'static str,
    pub label: &'static str,
    pub active: bool,
}

/// What every page shows around its content.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub title: String,
    pub person_name: String,
    pub role: String,
    pub unit: String,
    pub csrf: String,
    pub nav: Vec<NavLink>,
    /// The page refreshes its live regions when records change.
    pub live: bool,
}

/// The pages a role works with.
pub fn nav_for(role: Role) -> Vec<(&'static str, &'static str)> {
    match role {
        Role::Admin => vec![
            ("/console/admin", "系统管理"),
            ("/console/inbox", "工作台"),
            ("/console/board", "期限看板"),
            ("/console/map", "事件地图"),
            ("/console/stats", "统计分析"),
        ],
        Role::CountyOperator | Role::CountyLeader => vec![
            ("/console/inbox", "工作台"),
            ("/console/board", "期限看板"),
            ("/console/map", "各镇事件地图"),
            ("/console/stats", "各镇统计"),
        ],
        Role::CenterOperator | Role::TownLeader => vec![
            ("/console/inbox", "工作台"),
            ("/console/board", "期限看板"),
            ("/console/map", "事件地图"),
            ("/console/stats", "统计分析"),
            ("/console/service-requests", "便民代办"),
        ],
        Role::DepartmentHandler => {
            vec![
                ("/console/inbox", "我的事件"),
                ("/console/service-requests", "代办事项"),
                ("/console/board", "期限看板"),
                ("/console/stats", "统计分析"),
            ]
        }
        Role::StationStaff | Role::VillageHead => vec![
            ("/console/service-requests", "代办台账"),
            ("/console/service-requests/new", "新建代办"),
            ("/console/service-requests/batch", "批次移交"),
            ("/console/inbox", "事件"),
            ("/console/board", "期限看板"),
            ("/console/map", "事件地图"),
            ("/console/stats", "统计分析"),
        ],
        _ => vec![("/console/inbox", "事件"), ("/console/map", "事件地图")],
    }
}
