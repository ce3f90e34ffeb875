//! The console's pages and forms.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Multipart, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::Form;
use gridlink_core::calendar::{TimeLimit, local_time};
use gridlink_core::figures::Table;
use gridlink_core::org::access;
use gridlink_core::sync::validate::scope_of;
use gridlink_core::workflow::ActionKind;
use gridlink_core::{Access, Action, NewServiceRequest, Role, ServiceMode, Status, UnitCode, service_request_body};
use rusqlite::Connection;
use serde::Deserialize;

use super::charts::{self, Area, Pin};
use super::views::{self, ActionForm, Chrome, ListSpec, Names, NavLink, RecordDetail, RowView, RowsPage};
use super::{CsrfForm, PageResult, Session, html};
use crate::app::AppState;
use crate::error::{AppError, AppResult};
use crate::linkage::{ReportQuery, figures_for, period, records_where};
use crate::records::{IngestCtx, act_as, create_as, keep_personal, load_doc, read_for};

/// Runs `f` in one write transaction with an ingest context, then tells live clients.
async fn write_as<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&Connection, &mut IngestCtx<'_>, &AppState) -> AppResult<T> + Send + 'static,
) -> AppResult<T> {
    let st = state.clone();
    let (out, events) = state
        .db
        .write(move |c| {
            let tx = c.savepoint()?;
            let routing = st.routing();
            let mut events = Vec::new();
            let out = {
                let mut ctx = st.ingest_ctx(&routing, st.now_ms(), &mut events);
                f(&tx, &mut ctx, &st)?
            };
            tx.commit()?;
            Ok((out, events))
        })
        .await?;
    state.notify(events);
    Ok(out)
}

fn chrome(session: &Session, names: &Names<'_>, title: &str, active: &str, live: bool) -> Chrome {
    let p = session.person();
    Chrome {
        title: title.to_owned(),
        person_name: p.name.clone(),
        role: p.role.label().to_owned(),
        unit: names.unit(p.unit.as_str()),
        csrf: session.csrf.clone(),
        nav: views::nav_for(p.role).into_iter().map(|(href, label)| NavLink { href, label, active: href == active }).collect(),
        live,
    }
}

/// A tab above a list.
#[derive(Debug, Clone)]
pub struct Tab {
    pub href: String,
    pub label: &'static str,
    pub active: bool,
}

/// A titled group of rows.
#[derive(Debug, Clone)]
pub struct Section {
    pub title: String,
    pub class: &'static str,
    pub rows: Vec<RowView>,
}

/// Where a paged list stands, and the links to its neighbours.
#[derive(Debug, Clone)]
pub struct Pager {
    pub page: usize,
    pub pages: usize,
    pub total: usize,
    pub prev: Option<String>,
    pub next: Option<String>,
}

impl Pager {
    /// The pager of `p`; `base` is the list's URL, ending in `?` or `&`.
    fn new(p: &RowsPage, base: &str) -> Self {
        let link = |n: usize| format!("{base}page={n}");
        Pager {
            page: p.page,
            pages: p.pages,
            total: p.total,
            prev: (p.page > 1).then(|| link(p.page - 1)),
            next: (p.page < p.pages).then(|| link(p.page + 1)),
        }
    }
}

#[derive(Template)]
#[template(path = "list.html")]
struct ListPage {
    chrome: Chrome,
    done: Option<String>,
    heading: String,
    tabs: Vec<Tab>,
    links: Vec<(String, String)>,
    sections: Vec<Section>,
    pager: Pager,
}

#[derive(Debug, Deserialize)]
pub struct TabQuery {
    tab: Option<String>,
    /// An action just taken that moved a record out of my scope, and the record's number.
    done: Option<String>,
    no: Option<String>,
    page: Option<String>,
}

impl TabQuery {
    fn notice(&self) -> Option<String> {
        let kind = ActionKind::parse(self.done.as_deref()?)?;
        let no: String = self.no.as_deref().unwrap_or_default().chars().filter(|c| c.is_alphanumeric() || *c == '-').take(40).collect();
        Some(format!("已办理:{}({no}),该记录已转出本单位。", kind.label()))
    }
}

/// The page asked for (from 1); anything unreadable means the first.
fn page_number(page: Option<&str>) -> usize {
    page.and_then(|p| p.trim().parse().ok()).unwrap_or(1)
}

struct TabDef {
    key: &'static str,
    label: &'static str,
    /// Which records, over the `docs` index; `?1` is the viewer's unit (see [`ListSpec`]).
    filter: &'static str,
}

/// What a tabbed list page shows.
struct TabbedList {
    chrome: Chrome,
    tabs: Vec<Tab>,
    sections: Vec<Section>,
    pager: Pager,
}

fn tabs_page(
    state: &AppState,
    session: &Session,
    q: &TabQuery,
    base: &'static str,
    heading: &str,
    defs: &'static [TabDef],
) -> impl FnOnce(&rusqlite::Connection) -> AppResult<TabbedList> + Send + 'static {
    let (st, session) = (state.clone(), session.clone());
    let current = q.tab.clone().filter(|t| defs.iter().any(|d| d.key == t)).unwrap_or_else(|| defs[0].key.to_owned());
    let page = page_number(q.page.as_deref());
    let heading = heading.to_owned();
    move |c| {
        let names = Names::load(c, &st.catalog)?;
        let def = defs.iter().find(|d| d.key == current).expect("checked above");
        let spec = ListSpec { filter: def.filter, order: "updated_ms DESC" };
        let list = spec.page(c, &names, session.person(), page, st.now_ms())?;
        let tabs = defs.iter().map(|d| Tab { href: format!("{base}?tab={}", d.key), label: d.label, active: d.key == current }).collect();
        let title = format!("{heading}(共 {} 件)", list.total);
        let pager = Pager::new(&list, &format!("{base}?tab={current}&"));
        let chrome = chrome(&session, &names, &heading, base, true);
        Ok(TabbedList { chrome, tabs, sections: vec![Section { title, class: "", rows: list.rows }], pager })
    }
}

const INBOX_TABS: &[TabDef] = &[
    TabDef { key: "todo", label: "待我处理", filter: "kind = 'incident' AND open = 1 AND holder = ?1" },
    TabDef { key: "open", label: "全部在办", filter: "kind = 'incident' AND open = 1" },
    TabDef { key: "closed", label: "已办结", filter: "kind = 'incident' AND open = 0" },
];

const ERRAND_TABS: &[TabDef] = &[
    TabDef { key: "todo", label: "待我办理", filter: "kind = 'service_request' AND open = 1 AND holder = ?1" },
    TabDef { key: "open", label: "全部在办", filter: "kind = 'service_request' AND open = 1" },
    TabDef { key: "all", label: "全部台账", filter: "kind = 'service_request'" },
];

/// `GET /console/inbox`: incidents — what waits for my unit, everything open, what is closed.
pub async fn inbox(State(state): State<AppState>, session: Session, Query(q): Query<TabQuery>) -> PageResult<Response> {
    let f = tabs_page(&state, &session, &q, "/console/inbox", "事件工作台", INBOX_TABS);
    let TabbedList { chrome, tabs, sections, pager } = state.db.read(f).await?;
    Ok(html(&ListPage { chrome, done: q.notice(), heading: "事件工作台".into(), tabs, links: Vec::new(), sections, pager }))
}

/// `GET /console/errands`: the errand ledger (代办台账) of a station, or the town's errands.
pub async fn errands(State(state): State<AppState>, session: Session, Query(q): Query<TabQuery>) -> PageResult<Response> {
    let f = tabs_page(&state, &session, &q, "/console/errands", "便民代办", ERRAND_TABS);
    let TabbedList { chrome, tabs, sections, pager } = state.db.read(f).await?;
    let mut links = Vec::new();
    if matches!(session.person().role, Role::StationStaff | Role::VillageHead) {
        links.push(("/console/errands/new".to_owned(), "新建代办".to_owned()));
        links.push(("/console/errands/batch".to_owned(), "批次移交".to_owned()));
        links.push(("/api/v1/ledger?format=xlsx".to_owned(), "导出台账(Excel)".to_owned()));
        links.push(("/api/v1/ledger?format=csv".to_owned(), "导出台账(CSV)".to_owned()));
    }
    Ok(html(&ListPage { chrome, done: q.notice(), heading: "便民代办".into(), tabs, links, sections, pager }))
}

/// Every record list of the console by name, as its pages query it: the tabs of the inbox and of
/// the errands, the deadline board and the batch builder's queue.
pub fn all_lists() -> Vec<(String, ListSpec<'static>)> {
    let tabs = |page: &str, defs: &'static [TabDef]| {
        defs.iter()
            .map(move |d| (format!("{page}?tab={}", d.key), ListSpec { filter: d.filter, order: "updated_ms DESC" }))
            .collect::<Vec<_>>()
    };
    let mut out = tabs("/console/inbox", INBOX_TABS);
    out.extend(tabs("/console/errands", ERRAND_TABS));
    out.push(("/console/board".into(), BOARD));
    out.push(("/console/errands/batch".into(), QUEUED));
    out
}

/// The deadline board's list: open items with a deadline, the nearest first.
pub const BOARD: ListSpec<'static> = ListSpec { filter: "open = 1 AND deadline_ms IS NOT NULL", order: "deadline_ms ASC" };

/// `GET /console/board`: open items by deadline; overdue first, in red. Each section's title
/// counts the whole section; the rows are paged in deadline order across the sections.
pub async fn board(State(state): State<AppState>, session: Session, Query(q): Query<TabQuery>) -> PageResult<Response> {
    let st = state.clone();
    let s = session.clone();
    let page = page_number(q.page.as_deref());
    let (chrome, sections, pager) = state
        .db
        .read(move |c| {
            let names = Names::load(c, &st.catalog)?;
            let now = st.now_ms();
            let soon = now + 3 * 86_400_000;
            let list = BOARD.page(c, &names, s.person(), page, now)?;
            let pager = Pager::new(&list, "/console/board?");
            // The same bounds as a row's `overdue` flag: due before now is overdue.
            let bounds = [
                ("已超期", "overdue", format!("deadline_ms < {now}")),
                ("三日内到期", "soon", format!("deadline_ms >= {now} AND deadline_ms <= {soon}")),
                ("其后到期", "", format!("deadline_ms > {soon}")),
            ];
            let mut sections = Vec::new();
            for (title, class, bound) in bounds {
                let filter = format!("{} AND {bound}", BOARD.filter);
                let n = ListSpec { filter: &filter, order: BOARD.order }.count(c, s.person())?;
                sections.push(Section { title: format!("{title}(共 {n} 件)"), class, rows: Vec::new() });
            }
            for r in list.rows {
                let d = r.deadline_ms.unwrap_or(i64::MAX);
                let i = if r.overdue {
                    0
                } else if d <= soon {
                    1
                } else {
                    2
                };
                sections[i].rows.push(r);
            }
            Ok((chrome(&s, &names, "期限看板", "/console/board", true), sections, pager))
        })
        .await?;
    Ok(html(&ListPage { chrome, done: None, heading: "期限看板".into(), tabs: Vec::new(), links: Vec::new(), sections, pager }))
}

#[derive(Template)]
#[template(path = "record.html")]
struct RecordPage {
    chrome: Chrome,
    r: RecordDetail,
    actions: Vec<ActionForm>,
    done: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RecordQuery {
    done: Option<String>,
}

fn record_page(
    state: &AppState,
    session: &Session,
    id: String,
    done: Option<String>,
    error: Option<String>,
) -> impl FnOnce(&rusqlite::Connection) -> AppResult<RecordPage> + Send + 'static {
    let (st, s) = (state.clone(), session.clone());
    move |c| {
        let (record, _, access) = read_for(c, &st.server_actor, &id, s.person())?;
        let names = Names::load(c, &st.catalog)?;
        let folded = record.fold();
        let r = views::detail(&record, &folded, &names, &st.calendar, access, st.now_ms());
        let actions = views::action_forms(&record, &folded, s.person(), access, &names);
        let done = done.and_then(|k| ActionKind::parse(&k)).map(|k| format!("已办理:{}", k.label()));
        Ok(RecordPage { chrome: chrome(&s, &names, &format!("{} {}", r.no, r.title), "", true), r, actions, done, error })
    }
}

/// `GET /console/records/{id}`: a record with its full timeline and the actions open to me.
/// Another unit's record answers 404, as if it did not exist.
pub async fn record(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<RecordQuery>,
) -> PageResult<Response> {
    let page = state.db.read(record_page(&state, &session, id, q.done, None)).await?;
    Ok(html(&page))
}

struct ActForm {
    fields: HashMap<String, String>,
    materials: Vec<String>,
    photo: Option<Vec<u8>>,
}

async fn read_act_form(mut mp: Multipart) -> AppResult<ActForm> {
    let bad = |e: axum::extract::multipart::MultipartError| AppError::BadRequest(format!("表单数据无效:{}", e.body_text()));
    let mut form = ActForm { fields: HashMap::new(), materials: Vec::new(), photo: None };
    while let Some(field) = mp.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "photo" {
            let data = field.bytes().await.map_err(bad)?;
            if !data.is_empty() {
                form.photo = Some(data.to_vec());
            }
            continue;
        }
        let text = field.text().await.map_err(bad)?;
        if name == "materials" {
            form.materials.push(text);
        } else if form.fields.len() < 20 {
            form.fields.insert(name, text);
        }
    }
    Ok(form)
}

fn field<'a>(form: &'a ActForm, name: &str) -> &'a str {
    form.fields.get(name).map_or("", |s| s.trim())
}

fn unit_field(form: &ActForm, name: &str) -> AppResult<UnitCode> {
    UnitCode::parse(field(form, name)).map_err(|_| AppError::BadRequest("请选择单位".into()))
}

fn satisfaction(form: &ActForm) -> AppResult<u8> {
    field(form, "satisfaction")
        .parse::<u8>()
        .ok()
        .filter(|s| (1..=5).contains(s))
        .ok_or_else(|| AppError::BadRequest("请选择满意度(1–5)".into()))
}

/// The action a submitted form asks for.
fn action_of(state: &AppState, form: &ActForm) -> AppResult<Action> {
    let kind = ActionKind::parse(field(form, "kind")).ok_or_else(|| AppError::BadRequest("未知的操作".into()))?;
    let now = state.now_ms();
    Ok(match kind {
        ActionKind::Accept => Action::Accept,
        ActionKind::Sign => Action::Sign,
        ActionKind::Return => Action::Return,
        ActionKind::ApproveExtension => Action::ApproveExtension,
        ActionKind::DenyExtension => Action::DenyExtension,
        ActionKind::Verify => Action::Verify,
        ActionKind::FailVerification => Action::FailVerification,
        ActionKind::Close => Action::Close,
        ActionKind::Suspend => Action::Suspend,
        ActionKind::Resume => Action::Resume,
        ActionKind::Queue => Action::Queue,
        ActionKind::AcceptHandOff => Action::AcceptHandOff,
        ActionKind::Complete => Action::Complete,
        ActionKind::Deliver => Action::Deliver,
        ActionKind::Archive => Action::Archive,
        ActionKind::Reject => Action::Reject,
        ActionKind::Withdraw => Action::Withdraw,
        ActionKind::Supervise => Action::Supervise { overdue: false, to_units: Vec::new() },
        ActionKind::Escalate => Action::Escalate { to_unit: unit_field(form, "to_unit")? },
        ActionKind::Dispatch => {
            let days = match field(form, "days") {
                "" => None,
                d => Some(
                    d.parse::<u32>()
                        .ok()
                        .filter(|d| (1..=365).contains(d))
                        .ok_or_else(|| AppError::BadRequest("办理期限应为 1–365 个工作日".into()))?,
                ),
            };
            let deadline_ms = days.map(|d| state.calendar.deadline(now, TimeLimit::WorkingDays(d)));
            Action::Dispatch { to_unit: unit_field(form, "to_unit")?, deadline_ms }
        }
        ActionKind::Evaluate => Action::Evaluate { satisfaction: satisfaction(form)? },
        ActionKind::FollowUp => Action::FollowUp { satisfaction: satisfaction(form)? },
        ActionKind::RequestExtension => {
            let day = chrono::NaiveDate::parse_from_str(field(form, "until"), "%Y-%m-%d")
                .map_err(|_| AppError::BadRequest("请填写延期至的日期".into()))?;
            let next = day.succ_opt().ok_or_else(|| AppError::BadRequest("日期无效".into()))?;
            let until_ms = gridlink_core::calendar::china_tz()
                .from_local_datetime(&next.and_hms_opt(0, 0, 0).expect("midnight"))
                .single()
                .expect("fixed offset")
                .timestamp_millis();
            Action::RequestExtension { until_ms }
        }
        ActionKind::Handle => Action::Handle { photos: Vec::new() },
        ActionKind::SelfResolve => Action::SelfResolve { photos: Vec::new() },
        ActionKind::RequestMaterials => Action::RequestMaterials { missing: form.materials.clone() },
        ActionKind::SupplyMaterials => Action::SupplyMaterials { supplied: form.materials.clone() },
        ActionKind::Report | ActionKind::Route | ActionKind::Receive | ActionKind::HandOff => {
            return Err(AppError::BadRequest("此操作不能在此处办理".into()));
        }
    })
}

use chrono::TimeZone as _;

/// `POST /console/records/{id}/act`: one workflow action, with an optional evidence photo.
pub async fn act(State(state): State<AppState>, session: Session, Path(id): Path<String>, mp: Multipart) -> PageResult<Response> {
    let result = async {
        let form = read_act_form(mp).await?;
        session.check_csrf(field(&form, "_csrf"))?;
        let mut action = action_of(&state, &form)?;
        let note: String = field(&form, "note").to_owned();
        if note.chars().count() > 2000 {
            return Err(AppError::BadRequest("说明不能超过 2000 字".into()));
        }
        let photo = match &form.photo {
            Some(bytes) => Some(gridlink_core::photo::prepare(bytes).map_err(|e| AppError::BadRequest(e.to_string()))?),
            None => None,
        };
        let shas: Vec<String> = photo.iter().map(|p| p.sha256.clone()).collect();
        if let Action::Handle { photos } | Action::SelfResolve { photos } = &mut action {
            photos.clone_from(&shas);
        }
        // The photo goes to disk (and is synced) before the write: the writer only records it.
        let landed = match photo {
            Some(p) => {
                let (st, len) = (state.clone(), p.jpeg.len());
                let write = move || crate::attachments::land_whole(&st, &p.sha256, &p.jpeg).map(|()| (p.sha256, len));
                Some(tokio::task::spawn_blocking(write).await.map_err(|e| AppError::Internal(format!("photo write: {e}")))??)
            }
            None => None,
        };
        let (doc_id, s) = (id.clone(), session.clone());
        let kind = action.kind();
        let visible_after = write_as(&state, move |tx, ctx, st| {
            if let Some((sha, len)) = &landed {
                crate::attachments::record_complete(tx, sha, *len, &s.person().id, ctx.now_ms)?;
            }
            let action = match action {
                Action::Supervise { overdue, .. } => {
                    let record = load_doc(tx, &doc_id, &st.server_actor)?.ok_or(AppError::NotFound)?.read()?;
                    let holder = record.fold().state.holder;
                    Action::Supervise { overdue, to_units: holder.into_iter().collect() }
                }
                a => a,
            };
            let record = act_as(tx, ctx, &st.calendar, &s.auth.device_id, s.person(), &doc_id, action, &note, &shas)?;
            let visible = access(s.person(), &scope_of(&record, &record.fold().state)) != Access::None;
            let list = if record.kind() == gridlink_core::RecordKind::Incident { "/console/inbox" } else { "/console/errands" };
            Ok((visible, record.display_no().to_owned(), list))
        })
        .await?;
        Ok((kind, visible_after.0, visible_after.1, visible_after.2))
    }
    .await;
    match result {
        Ok((kind, true, _, _)) => Ok(Redirect::to(&format!("/console/records/{id}?done={}", kind.as_str())).into_response()),
        // Handed on out of my scope (a department finishing an errand): back to my list.
        Ok((kind, false, no, list)) => {
            let query = serde_urlencoded::to_string([("done", kind.as_str()), ("no", no.as_str())]).expect("plain pairs");
            Ok(Redirect::to(&format!("{list}?{query}")).into_response())
        }
        Err(e @ (AppError::NotFound | AppError::Internal(_))) => Err(e.into()),
        Err(e) => {
            // Show the record again with the reason; nothing was changed.
            let status = e.clone_status();
            let page = state.db.read(record_page(&state, &session, id, None, Some(e.to_string()))).await?;
            Ok((status, html(&page)).into_response())
        }
    }
}

#[derive(Template)]
#[template(path = "map.html")]
struct MapPage {
    chrome: Chrome,
    svg: String,
    missing: Vec<String>,
    /// Pins shown, open incidents in scope, overdue among them.
    counts: (usize, usize, usize),
}

/// Most pins a map draws.
const MAP_PINS: usize = 2000;

/// `GET /console/map`: open incidents over the grid areas of the town.
pub async fn map(State(state): State<AppState>, session: Session) -> PageResult<Response> {
    let st = state.clone();
    let s = session.clone();
    let page = state
        .db
        .read(move |c| {
            let names = Names::load(c, &st.catalog)?;
            let town = s.person().unit.town().to_owned();
            let mut areas = Vec::new();
            let mut stmt = c.prepare("SELECT code, name, boundary FROM units WHERE kind = 'grid' AND code LIKE ?1 || '%' ORDER BY code")?;
            let mut rows = stmt.query([&town])?;
            let mut missing = Vec::new();
            while let Some(r) = rows.next()? {
                let code: String = r.get(0)?;
                let polygon: Option<Vec<[f64; 2]>> = r.get::<_, Option<String>>(2)?.and_then(|b| serde_json::from_str(&b).ok());
                match polygon {
                    Some(p) if p.len() >= 3 => areas.push(Area { village: code[..12].to_owned(), code, name: r.get(1)?, polygon: p }),
                    _ => missing.push(r.get(1)?),
                }
            }
            let now = st.now_ms();
            let mut pins = Vec::new();
            // Open incidents in my scope (scope in the query), the latest first; a map shows at
            // most MAP_PINS of them and says how many there are.
            let sql = format!(
                "SELECT id, deadline_ms FROM docs WHERE kind = 'incident' AND open = 1 AND {} ORDER BY updated_ms DESC, id LIMIT ?3",
                crate::records::scope_sql()
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let args = rusqlite::params![s.person().unit.as_str(), s.person().id, MAP_PINS as i64];
            let open: Vec<(String, Option<i64>)> = stmt.query_map(args, |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
            let open_total = ListSpec { filter: "kind = 'incident' AND open = 1", order: "" }.count(c, s.person())?;
            let overdue_filter = format!("kind = 'incident' AND open = 1 AND deadline_ms < {now}");
            let overdue_total = ListSpec { filter: &overdue_filter, order: "" }.count(c, s.person())?;
            for (id, deadline) in open {
                let Some(doc) = load_doc(c, &id, &st.server_actor)? else { continue };
                let record = doc.read()?;
                let gridlink_core::RecordBody::Incident(f) = &record.body else { continue };
                let point = match (f.location, areas.iter().find(|a| a.code == f.grid.as_str())) {
                    (Some(g), _) => [g.lon, g.lat],
                    (None, Some(a)) => charts::point_in(a, &id),
                    (None, None) => continue,
                };
                let state = if deadline.is_some_and(|d| d < now) { "overdue" } else { "open" };
                pins.push(Pin { label: format!("{} {}", record.display_no(), record.title()), id, point, state });
            }
            let counts = (pins.len(), open_total, overdue_total);
            let svg = charts::map(&areas, &pins, 1000.0, 620.0);
            Ok(MapPage { chrome: chrome(&s, &names, "事件地图", "/console/map", true), svg, missing, counts })
        })
        .await?;
    Ok(html(&page))
}

#[derive(Template)]
#[template(path = "stats.html")]
struct StatsPage {
    chrome: Chrome,
    from: String,
    to: String,
    cards: Vec<(&'static str, String)>,
    charts: Vec<String>,
    tables: Vec<Table>,
    export_query: String,
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), |v| format!("{:.1}%", v * 100.0))
}

/// `GET /console/stats?from&to`: the figures of the period with charts and export buttons.
pub async fn stats(State(state): State<AppState>, session: Session, Query(q): Query<ReportQuery>) -> PageResult<Response> {
    let (from, to) = period(&q, state.now_ms())?;
    let st = state.clone();
    let s = session.clone();
    let page = state
        .db
        .read(move |c| {
            let names = Names::load(c, &st.catalog)?;
            let f = figures_for(c, &st, s.person(), from, to)?;
            let t = &f.totals;
            let cards = vec![
                ("受理事件", t.received.to_string()),
                ("已结案", t.closed.to_string()),
                ("按时处置率(部门)", pct(t.on_time_rate())),
                ("核查按时率(中心)", pct(t.verify_on_time_rate())),
                ("当前超期", t.overdue_now.to_string()),
                ("小事不出村", pct(t.village_share())),
                ("平均满意度", t.satisfaction().map_or_else(|| "—".into(), |v| format!("{v:.2} 分"))),
            ];
            let rate = |r: &gridlink_core::figures::Row| r.on_time_rate().map_or(0.0, |v| v * 100.0);
            let charts = vec![
                charts::bars(
                    "各村(社区)受理事件数",
                    "件",
                    &f.by_village.iter().map(|r| (r.name.clone(), f64::from(r.received))).collect::<Vec<_>>(),
                    None,
                ),
                charts::bars(
                    "各村(社区)按时处置率",
                    "%",
                    &f.by_village.iter().map(|r| (r.name.clone(), rate(r))).collect::<Vec<_>>(),
                    Some(100.0),
                ),
                charts::bars(
                    "各类事件数量",
                    "件",
                    &f.by_category.iter().map(|r| (r.name.clone(), f64::from(r.received))).collect::<Vec<_>>(),
                    None,
                ),
                charts::bars(
                    "各部门在办与超期",
                    "件",
                    &f.by_department.iter().map(|r| (r.name.clone(), f64::from(r.holding_now))).collect::<Vec<_>>(),
                    None,
                ),
                charts::bars(
                    "当前超期(按责任单位,处置/核查/结案合计)",
                    "件",
                    &f.by_holder.iter().map(|r| (r.name.clone(), f64::from(r.overdue()))).collect::<Vec<_>>(),
                    None,
                ),
            ];
            let from_s = local_time(from).format("%Y-%m-%d").to_string();
            let to_s = local_time(to - 1).format("%Y-%m-%d").to_string();
            Ok(StatsPage {
                chrome: chrome(&s, &names, "统计分析", "/console/stats", true),
                export_query: format!("from={from_s}&to={to_s}"),
                from: from_s,
                to: to_s,
                cards,
                charts,
                tables: f.tables(),
            })
        })
        .await?;
    Ok(html(&page))
}

#[derive(Template)]
#[template(path = "errand_new.html")]
struct NewErrandPage {
    chrome: Chrome,
    items: Vec<(String, String)>,
    item: Option<ItemView>,
    error: Option<String>,
}

#[derive(Debug, Clone)]
struct ItemView {
    code: String,
    name: String,
    modes: Vec<(&'static str, &'static str)>,
    materials: Vec<String>,
    promised_days: u32,
    fee: String,
}

#[derive(Debug, Deserialize)]
pub struct ItemQuery {
    item: Option<String>,
}

fn new_errand_page(state: &AppState, session: &Session, item: Option<&str>, error: Option<String>) -> AppResult<NewErrandPage> {
    let conn = state.db.reader();
    let names = Names::load(&conn, &state.catalog)?;
    let items = state.catalog.service_items.iter().map(|i| (i.code.clone(), format!("{} {}", i.code, i.name))).collect();
    let item = item.and_then(|c| state.catalog.service_item(c).ok()).map(|i| ItemView {
        code: i.code.clone(),
        name: i.name.clone(),
        modes: i.modes.iter().map(|m| (m.as_str(), m.label())).collect(),
        materials: i.materials.clone(),
        promised_days: i.promised_days,
        fee: i.fee.clone(),
    });
    Ok(NewErrandPage { chrome: chrome(session, &names, "新建代办", "/console/errands/new", false), items, item, error })
}

/// `GET /console/errands/new?item=`: the intake form, its checklist from the service-item catalog.
pub async fn new_errand_form(State(state): State<AppState>, session: Session, Query(q): Query<ItemQuery>) -> PageResult<Response> {
    Ok(html(&new_errand_page(&state, &session, q.item.as_deref(), None)?))
}

#[derive(Debug, Deserialize)]
pub struct NewErrandForm {
    #[serde(rename = "_csrf")]
    csrf: String,
    item: String,
    mode: String,
    resident_name: String,
    #[serde(default)]
    resident_id_number: String,
    #[serde(default)]
    resident_phone: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    materials: Vec<String>,
}

/// `POST /console/errands/new`: takes the request (受理) as the station would on its phone.
pub async fn new_errand(State(state): State<AppState>, session: Session, Form(f): Form<NewErrandForm>) -> PageResult<Response> {
    session.check_csrf(&f.csrf)?;
    let opt = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let result = async {
        let mode = ServiceMode::parse(&f.mode).ok_or_else(|| AppError::BadRequest("请选择办理方式".into()))?;
        let new = NewServiceRequest {
            item: f.item.clone(),
            mode,
            station: None,
            resident_name: f.resident_name.clone(),
            resident_id_number: opt(&f.resident_id_number),
            resident_phone: opt(&f.resident_phone),
            materials_received: f.materials.clone(),
            description: f.description.clone(),
        };
        let (body, action, personal) = service_request_body(&state.catalog, &state.calendar, &session.person().unit, new, state.now_ms())?;
        let s = session.clone();
        write_as(&state, move |tx, ctx, st| {
            let id = create_as(tx, ctx, &s.auth.device_id, s.person(), body, action)?;
            keep_personal(tx, st, s.person(), &id, &personal, ctx.now_ms)?;
            Ok(id)
        })
        .await
    }
    .await;
    match result {
        Ok(id) => Ok(Redirect::to(&format!("/console/records/{id}?done=receive")).into_response()),
        Err(e) => {
            let status = e.clone_status();
            Ok((status, html(&new_errand_page(&state, &session, Some(&f.item), Some(e.to_string()))?)).into_response())
        }
    }
}

#[derive(Template)]
#[template(path = "batch_new.html")]
struct BatchPage {
    chrome: Chrome,
    rows: Vec<RowView>,
    pager: Pager,
    targets: Vec<(String, String)>,
    carrier: String,
    error: Option<String>,
}

/// The station's queued errands, oldest first: what the next batch carries.
const QUEUED: ListSpec<'static> =
    ListSpec { filter: "kind = 'service_request' AND status = 'queued' AND holder = ?1", order: "created_ms ASC" };

fn batch_page(state: &AppState, session: &Session, page: usize, error: Option<String>) -> AppResult<BatchPage> {
    let conn = state.db.reader();
    let names = Names::load(&conn, &state.catalog)?;
    let list = QUEUED.page(&conn, &names, session.person(), page, state.now_ms())?;
    let pager = Pager::new(&list, "/console/errands/batch?");
    // The town's service center first: it is where errands usually go.
    let mut targets = names.departments();
    let key_of = |code: &str| conn.query_row("SELECT department_key FROM units WHERE code = ?1", [code], |r| r.get::<_, Option<String>>(0));
    targets.sort_by_key(|(code, _)| key_of(code).ok().flatten().as_deref() != Some("bianmin"));
    Ok(BatchPage {
        chrome: chrome(session, &names, "批次移交", "/console/errands/batch", true),
        rows: list.rows,
        pager,
        targets,
        carrier: session.person().name.clone(),
        error,
    })
}

/// `GET /console/errands/batch`: the hand-off builder — queued errands to carry to the town.
pub async fn batch_form(State(state): State<AppState>, session: Session, Query(q): Query<TabQuery>) -> PageResult<Response> {
    Ok(html(&batch_page(&state, &session, page_number(q.page.as_deref()), None)?))
}

#[derive(Debug, Deserialize)]
pub struct BatchForm {
    #[serde(rename = "_csrf")]
    csrf: String,
    #[serde(default)]
    ids: Vec<String>,
    to_unit: String,
    carrier: String,
}

/// `POST /console/errands/batch`: hands the chosen errands off in one batch, all or none.
pub async fn batch_create(State(state): State<AppState>, session: Session, Form(f): Form<BatchForm>) -> PageResult<Response> {
    session.check_csrf(&f.csrf)?;
    let result = async {
        if f.ids.is_empty() || f.ids.len() > 500 {
            return Err(AppError::BadRequest("请至少选择一件待代办事项".into()));
        }
        let carrier = f.carrier.trim().chars().take(50).collect::<String>();
        if carrier.is_empty() {
            return Err(AppError::BadRequest("请填写送件人".into()));
        }
        let to_unit = UnitCode::parse(&f.to_unit).map_err(|_| AppError::BadRequest("请选择接收单位".into()))?;
        let now = local_time(state.now_ms());
        let village = session.person().unit.as_str().get(9..12).unwrap_or("000").to_owned();
        let batch_id = format!("PC{}-{village}-{:04X}", now.format("%Y%m%d"), rand::random::<u16>());
        let (s, ids, bid) = (session.clone(), f.ids.clone(), batch_id.clone());
        write_as(&state, move |tx, ctx, st| {
            for id in &ids {
                let action = Action::HandOff { to_unit: to_unit.clone(), batch_id: bid.clone(), carrier: carrier.clone() };
                act_as(tx, ctx, &st.calendar, &s.auth.device_id, s.person(), id, action, "", &[])?;
            }
            Ok(())
        })
        .await?;
        Ok(batch_id)
    }
    .await;
    match result {
        Ok(id) => Ok(Redirect::to(&format!("/console/batches/{id}")).into_response()),
        Err(AppError::Internal(d)) => Err(AppError::Internal(d).into()),
        Err(e) => Ok((e.clone_status(), html(&batch_page(&state, &session, 1, Some(e.to_string()))?)).into_response()),
    }
}

#[derive(Template)]
#[template(path = "manifest.html")]
struct ManifestPage {
    chrome: Chrome,
    batch_id: String,
    table: Table,
    to_receive: usize,
    done: Option<String>,
}

/// `GET /console/batches/{id}`: the printable manifest (交接清单) of a hand-off batch.
pub async fn batch(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<RecordQuery>,
) -> PageResult<Response> {
    let st = state.clone();
    let s = session.clone();
    let page = state
        .db
        .read(move |c| {
            let names = Names::load(c, &st.catalog)?;
            let records = records_where(c, &st, s.person(), "batch_id = ?3", &[&id])?;
            if records.is_empty() {
                return Err(AppError::NotFound);
            }
            let to_receive = records
                .iter()
                .filter(|(_, f)| f.state.status == Some(Status::HandedOff) && f.state.holder.as_ref() == Some(&s.person().unit))
                .count();
            let table = gridlink_core::figures::manifest(&id, &records, &st.catalog);
            let done = q.done.map(|n| format!("已整批签收 {n} 件"));
            Ok(ManifestPage { chrome: chrome(&s, &names, "交接清单", "", true), batch_id: id, table, to_receive, done })
        })
        .await?;
    Ok(html(&page))
}

/// `POST /console/batches/{id}/receive`: the town signs for every errand of the batch it holds.
pub async fn batch_receive(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> PageResult<Response> {
    session.check_csrf(&f.csrf)?;
    let (s, bid) = (session.clone(), id.clone());
    let n = write_as(&state, move |tx, ctx, st| {
        // Held by my unit, so in my scope.
        let mut stmt = tx.prepare("SELECT id FROM docs WHERE batch_id = ?1 AND status = 'handed_off' AND holder = ?2")?;
        let ids: Vec<String> = stmt.query_map([&bid, &s.person().unit.as_str().to_owned()], |r| r.get(0))?.collect::<Result<_, _>>()?;
        drop(stmt);
        let mut n = 0;
        for doc_id in &ids {
            act_as(tx, ctx, &st.calendar, &s.auth.device_id, s.person(), doc_id, Action::AcceptHandOff, "整批签收", &[])?;
            n += 1;
        }
        Ok(n)
    })
    .await?;
    Ok(Redirect::to(&format!("/console/batches/{id}?done={n}")).into_response())
}
