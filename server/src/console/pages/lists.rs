//! The record lists: the inbox and service-request tabs and the deadline board, each paged in
//! the query with scope applied first ([`ListSpec`]).

use crate::storage::Storage;
use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use gridlink_core::Role;

use crate::app::AppState;
use crate::console::views::{Chrome, ListSpec, Names};
use crate::console::{PageResult, Session, html};
use crate::error::AppResult;
use crate::storage::{ListOrder, RecordFilter};

use super::service_requests::QUEUED;
use super::*;

#[derive(Template)]
#[template(path = "list.html")]
struct ListPage {
    chrome: Chrome,
    done: Option<String>,
    heading: String,
    tabs: Vec<Tab>,
    links: Vec<(String, String)>,
    town_nav: Option<TownNav>,
    sections: Vec<Section>,
    pager: Pager,
}

struct TabDef {
    key: &'static str,
    label: &'static str,
    /// Which records (the viewer's scope is always applied; see [`ListSpec`]).
    filter: RecordFilter<'static>,
}

/// What a tabbed list page shows.
struct TabbedList {
    chrome: Chrome,
    tabs: Vec<Tab>,
    town_nav: Option<TownNav>,
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
) -> impl FnOnce(&dyn Storage) -> AppResult<TabbedList> + Send + 'static {
    let (st, session) = (state.clone(), session.clone());
    let current = q.tab.clone().filter(|t| defs.iter().any(|d| d.key == t)).unwrap_or_else(|| defs[0].key.to_owned());
    let page = page_number(q.page.as_deref());
    let heading = heading.to_owned();
    let requested = q.town.clone();
    move |c| {
        let names = Names::load(c, &st.catalog)?;
        let def = defs.iter().find(|d| d.key == current).expect("checked above");
        let person = session.person();
        let (town, town_nav) = town_choice(c, person, requested.as_deref(), format!("{base}?tab={current}&"))?;
        let spec = ListSpec { filter: RecordFilter { within: town.as_deref(), ..def.filter }, order: ListOrder::Updated };
        let list = spec.page(c, &names, person, page, st.now_ms())?;
        let carry = town_param(town.as_deref());
        let tabs =
            defs.iter().map(|d| Tab { href: format!("{base}?{carry}tab={}", d.key), label: d.label, active: d.key == current }).collect();
        let title = format!("{heading}(共 {} 件)", list.total);
        let pager = Pager::new(&list, &format!("{base}?{carry}tab={current}&"));
        let chrome = chrome(&session, &names, &heading, base, true);
        Ok(TabbedList { chrome, tabs, town_nav, sections: vec![Section { title, class: "", rows: list.rows }], pager })
    }
}

const INBOX_TABS: &[TabDef] = &[
    TabDef {
        key: "todo",
        label: "待我处理",
        filter: RecordFilter { kind: Some("incident"), open: Some(true), held_by_viewer: true, ..RecordFilter::ALL },
    },
    TabDef { key: "open", label: "全部在办", filter: RecordFilter { kind: Some("incident"), open: Some(true), ..RecordFilter::ALL } },
    TabDef { key: "closed", label: "已办结", filter: RecordFilter { kind: Some("incident"), open: Some(false), ..RecordFilter::ALL } },
];

const SERVICE_REQUEST_TABS: &[TabDef] = &[
    TabDef {
        key: "todo",
        label: "待我办理",
        filter: RecordFilter { kind: Some("service_request"), open: Some(true), held_by_viewer: true, ..RecordFilter::ALL },
    },
    TabDef {
        key: "open",
        label: "全部在办",
        filter: RecordFilter { kind: Some("service_request"), open: Some(true), ..RecordFilter::ALL },
    },
    TabDef { key: "all", label: "全部台账", filter: RecordFilter { kind: Some("service_request"), ..RecordFilter::ALL } },
];

/// `GET /console/inbox`: incidents — what waits for my unit, everything open, what is closed.
pub async fn inbox(State(state): State<AppState>, session: Session, Query(q): Query<TabQuery>) -> PageResult<Response> {
    let f = tabs_page(&state, &session, &q, "/console/inbox", "事件工作台", INBOX_TABS);
    let TabbedList { chrome, tabs, town_nav, sections, pager } = state.db.read(f).await?;
    Ok(html(&ListPage { chrome, done: q.notice(), heading: "事件工作台".into(), tabs, links: Vec::new(), town_nav, sections, pager }))
}

/// `GET /console/service-requests`: the errand ledger (代办台账) of a station, or the town's errands.
pub async fn service_requests(State(state): State<AppState>, session: Session, Query(q): Query<TabQuery>) -> PageResult<Response> {
    let f = tabs_page(&state, &session, &q, "/console/service-requests", "便民代办", SERVICE_REQUEST_TABS);
    let TabbedList { chrome, tabs, town_nav, sections, pager } = state.db.read(f).await?;
    let mut links = Vec::new();
    if matches!(session.person().role, Role::StationStaff | Role::VillageHead) {
        links.push(("/console/service-requests/new".to_owned(), "新建代办".to_owned()));
        links.push(("/console/service-requests/batch".to_owned(), "批次移交".to_owned()));
        links.push(("/api/v1/ledger?format=xlsx".to_owned(), "导出台账(Excel)".to_owned()));
        links.push(("/api/v1/ledger?format=csv".to_owned(), "导出台账(CSV)".to_owned()));
    }
    Ok(html(&ListPage { chrome, done: q.notice(), heading: "便民代办".into(), tabs, links, town_nav, sections, pager }))
}

/// Every record list of the console by name, as its pages query it: the tabs of the inbox and of
/// the errands, the deadline board and the batch builder's queue.
pub fn all_lists() -> Vec<(String, ListSpec<'static>)> {
    let tabs = |page: &str, defs: &'static [TabDef]| {
        defs.iter()
            .map(move |d| (format!("{page}?tab={}", d.key), ListSpec { filter: d.filter, order: ListOrder::Updated }))
            .collect::<Vec<_>>()
    };
    let mut out = tabs("/console/inbox", INBOX_TABS);
    out.extend(tabs("/console/service-requests", SERVICE_REQUEST_TABS));
    out.push(("/console/board".into(), BOARD));
    out.push(("/console/service-requests/batch".into(), QUEUED));
    out
}

/// The deadline board's list: open items with a deadline, the nearest first.
pub const BOARD: ListSpec<'static> =
    ListSpec { filter: RecordFilter { open: Some(true), has_deadline: true, ..RecordFilter::ALL }, order: ListOrder::Deadline };

/// `GET /console/board`: open items by deadline; overdue first, in red. Each section's title
/// counts the whole section; the rows are paged in deadline order across the sections.
pub async fn board(State(state): State<AppState>, session: Session, Query(q): Query<TabQuery>) -> PageResult<Response> {
    let page = page_number(q.page.as_deref());
    let requested = q.town.clone();
    let (chrome, town_nav, sections, pager) = read_page(&state, &session, move |c, names, st, s| {
        let now = st.now_ms();
        let soon = now + 3 * 86_400_000;
        let (town, town_nav) = town_choice(c, s.person(), requested.as_deref(), "/console/board?".into())?;
        let board = ListSpec { filter: RecordFilter { within: town.as_deref(), ..BOARD.filter }, order: BOARD.order };
        let list = board.page(c, names, s.person(), page, now)?;
        let pager = Pager::new(&list, &format!("/console/board?{}", town_param(town.as_deref())));
        // The same bounds as a row's `overdue` flag: due before now is overdue.
        let bounds = [
            ("已超期", "overdue", RecordFilter { due_before: Some(now), ..board.filter }),
            ("三日内到期", "soon", RecordFilter { due_from: Some(now), due_before: Some(soon + 1), ..board.filter }),
            ("其后到期", "", RecordFilter { due_from: Some(soon + 1), ..board.filter }),
        ];
        let mut sections = Vec::new();
        for (title, class, filter) in bounds {
            let n = ListSpec { filter, order: BOARD.order }.count(c, s.person())?;
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
        Ok((chrome(s, names, "期限看板", "/console/board", true), town_nav, sections, pager))
    })
    .await?;
    Ok(html(&ListPage {
        chrome, done: None, heading: "期限看板".into(), tabs: Vec::new(), links: Vec::new(), town_nav, sections, pager
    }))
}
