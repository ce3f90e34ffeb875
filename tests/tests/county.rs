//! A county (县) on one server: the county social-governance center above two towns, against a
//! real server with real phones. A town passes what it cannot settle up to the county, the county
//! sends it to a county department (县直部门) with a deadline and closes it; each town numbers its
//! own cases; a town's phones never receive the other town's records; the county compares its
//! towns side by side.

use std::sync::Arc;

use gridlink_core::{Action, NewIncident, OrgUnit, RecordQuery, Status, SystemClock, UnitKind};
use gridlink_server::AppState;
use gridlink_server::import::{PersonRow, insert_people, insert_units};
use gridlink_tests::*;

const COUNTY: &str = "532331";
const COUNTY_DEPT: &str = "532331-ZR";
const TOWN_B: &str = "532331102";
const VILLAGE_B: &str = "532331102201";
const GRID_B1: &str = "532331102201-01";

/// The test town under a county, a second town beside it, and the county's own people.
fn seed_county(state: &AppState) {
    let u = |code: &str, name: &str, kind, parent: Option<&str>| OrgUnit {
        code: unit(code),
        name: name.into(),
        kind,
        parent: parent.map(unit),
        department_key: None,
    };
    let mut units = vec![u(COUNTY, "南华县", UnitKind::County, None), u(COUNTY_DEPT, "县自然资源局", UnitKind::Department, Some(COUNTY))];
    units.extend(org().into_iter().map(|t| if t.code.as_str() == TOWN { OrgUnit { parent: Some(unit(COUNTY)), ..t } } else { t }));
    units.extend([
        u(TOWN_B, "罗川镇", UnitKind::Town, Some(COUNTY)),
        u(VILLAGE_B, "罗川村", UnitKind::Village, Some(TOWN_B)),
        u(GRID_B1, "罗川村1号网格", UnitKind::Grid, Some(VILLAGE_B)),
    ]);
    let conn = state.db.writer();
    insert_units(&*conn, &units).unwrap();
    seed_people(&*conn);
    let extra = [
        ("xian", "county_operator", COUNTY),
        ("xian_leader", "county_leader", COUNTY),
        ("zr", "department_handler", COUNTY_DEPT),
        ("center_b", "center_operator", TOWN_B),
        ("grid_b1", "grid_member", GRID_B1),
    ];
    let people: Vec<PersonRow> = extra
        .iter()
        .map(|(id, role, u)| PersonRow {
            id: (*id).into(),
            name: format!("测试{id}"),
            role: gridlink_server::import::parse_role_text(role).unwrap(),
            unit: unit(u),
            password: PASSWORD.into(),
        })
        .collect();
    insert_people(&*conn, &people, 0).unwrap();
}

fn report(title: &str) -> NewIncident {
    NewIncident { category: "0503".into(), title: title.into(), description: "测试".into(), ..Default::default() }
}

fn ids(phone: &Phone) -> Vec<String> {
    phone.list(&RecordQuery { limit: 100, ..Default::default() }).unwrap().into_iter().map(|r| r.id).collect()
}

#[test]
fn the_county_settles_what_a_town_passes_up_and_compares_its_towns() {
    let server = TestServer::start_seeded(Arc::new(SystemClock), seed_county);
    let mut grid_a = server.phone("grid_a");
    let mut grid_b = server.phone("grid_b1");
    let mut center_a = server.phone("center");
    let mut center_b = server.phone("center_b");
    let mut county = server.phone("xian");
    let mut county_dept = server.phone("zr");

    // Each town numbers its own cases from 1: the counters do not run into each other.
    let a1 = grid_a.create_incident(report("两镇交界处非法采砂")).unwrap();
    let a2 = grid_a.create_incident(report("河堤路倾倒建筑垃圾")).unwrap();
    let b1 = grid_b.create_incident(report("罗川村道路塌方")).unwrap();
    grid_a.sync().unwrap();
    grid_b.sync().unwrap();
    let year = chrono::Datelike::year(&chrono::Local::now());
    let case = |p: &Phone, id: &str| p.get(id).unwrap().record.case_no.clone().unwrap_or_default();
    assert_eq!(case(&grid_a, &a1), format!("GT101-{year}-000001"));
    assert_eq!(case(&grid_a, &a2), format!("GT101-{year}-000002"));
    assert_eq!(case(&grid_b, &b1), format!("GT102-{year}-000001"));

    // The town center accepts and passes the first one up to the county.
    center_a.sync().unwrap();
    center_a.act(&a1, Action::Accept, "").unwrap();
    let targets = center_a.action_targets(&a1, gridlink_core::ActionKind::Escalate).unwrap();
    assert_eq!(targets.iter().map(|u| u.code.as_str()).collect::<Vec<_>>(), [COUNTY], "a town center passes up to its county only");
    center_a.act(&a1, Action::Escalate { to_unit: unit(COUNTY) }, "涉及两镇,需县里协调").unwrap();
    center_a.sync().unwrap();

    // The county sees every town; it accepts, dispatches to a county department with a deadline.
    county.sync().unwrap();
    let seen = ids(&county);
    assert!([&a1, &a2, &b1].iter().all(|id| seen.contains(id)), "the county sees both towns: {seen:?}");
    county.act(&a1, Action::Accept, "").unwrap();
    let due = chrono::Utc::now().timestamp_millis() + 5 * 86_400_000;
    county.act(&a1, Action::Dispatch { to_unit: unit(COUNTY_DEPT), deadline_ms: Some(due) }, "请县自然资源局核查处理").unwrap();
    county.sync().unwrap();

    county_dept.sync().unwrap();
    assert_eq!(ids(&county_dept), [a1.as_str()], "a county department gets what was sent to it, nothing else");
    county_dept.act(&a1, Action::Sign, "").unwrap();
    county_dept.act(&a1, Action::Handle { photos: vec![] }, "已责令停止采砂并恢复河道").unwrap();
    county_dept.sync().unwrap();
    grid_a.sync().unwrap();
    grid_a.act(&a1, Action::Verify, "现场已恢复").unwrap();
    grid_a.sync().unwrap();
    county.sync().unwrap();
    // The town that passed it up may no longer close it; the county that owns it does.
    center_a.sync().unwrap();
    assert!(center_a.get(&a1).unwrap().allowed.is_empty());
    let closed = county.act(&a1, Action::Close, "").unwrap();
    assert_eq!((closed.folded.state.status, closed.folded.conflicts()), (Some(Status::Closed), 0));
    county.sync().unwrap();

    // The server folded the same history: closed by the county, every step attributed.
    let (status, record) = api_get(&server, &format!("/api/v1/records/{a1}"), &token(&county));
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["state"]["status"], "closed", "{record}");
    assert_eq!(record["state"]["closed_by"], COUNTY);

    // The second one the county sends back down to the town with a deadline; when it passes,
    // the deadline sweeper supervises the town once, and the town center works on it.
    center_a.act(&a2, Action::Accept, "").unwrap();
    center_a.act(&a2, Action::Escalate { to_unit: unit(COUNTY) }, "需县里研判").unwrap();
    center_a.sync().unwrap();
    county.sync().unwrap();
    county.act(&a2, Action::Accept, "").unwrap();
    let passed = chrono::Utc::now().timestamp_millis() - 60_000;
    county.act(&a2, Action::Dispatch { to_unit: unit(TOWN), deadline_ms: Some(passed) }, "请广通镇属地处置").unwrap();
    county.sync().unwrap();
    assert_eq!(gridlink_server::linkage::sweep(&server.state).unwrap(), 1);
    assert_eq!(gridlink_server::linkage::sweep(&server.state).unwrap(), 0, "once per due time");
    center_a.sync().unwrap();
    let v = center_a.get(&a2).unwrap();
    assert_eq!(v.folded.state.supervisions, 1);
    let notice = &v.folded.entries.last().unwrap().entry.action;
    assert!(
        matches!(notice, Action::Supervise { overdue: true, to_units } if to_units == &[unit(TOWN), unit(COUNTY)]),
        "the town and the county that sent it down are told: {notice:?}"
    );
    assert!(v.allowed.contains(&gridlink_core::ActionKind::Sign), "{:?}", v.allowed);
    center_a.act(&a2, Action::Sign, "").unwrap();
    // Overdue at a county department: the system supervises for the county, the department and
    // the county are told.
    center_b.sync().unwrap();
    center_b.act(&b1, Action::Accept, "").unwrap();
    center_b.act(&b1, Action::Escalate { to_unit: unit(COUNTY) }, "塌方涉及县道").unwrap();
    center_b.sync().unwrap();
    county.sync().unwrap();
    county.act(&b1, Action::Accept, "").unwrap();
    county.act(&b1, Action::Dispatch { to_unit: unit(COUNTY_DEPT), deadline_ms: Some(passed) }, "请核查").unwrap();
    county.sync().unwrap();
    assert_eq!(gridlink_server::linkage::sweep(&server.state).unwrap(), 1);
    county_dept.sync().unwrap();
    let supervised = county_dept.get(&b1).unwrap().folded;
    let last = &supervised.entries.last().unwrap().entry;
    assert_eq!((last.unit.as_str(), supervised.conflicts()), (COUNTY, 0), "the system acted for the county");
    assert!(matches!(&last.action, Action::Supervise { overdue: true, to_units } if to_units == &[unit(COUNTY_DEPT), unit(COUNTY)]));
    let v = center_a.act(&a2, Action::Handle { photos: vec![] }, "已组织清运").unwrap();
    assert_eq!((v.folded.state.status, v.folded.conflicts()), (Some(Status::Handled), 0));
    center_a.sync().unwrap();

    // Phones of one town never receive the other town's records.
    center_b.sync().unwrap();
    grid_b.sync().unwrap();
    for phone in [&center_b, &grid_b] {
        assert_eq!(ids(phone), [b1.as_str()], "town B's phones hold town B's record only");
    }
    center_a.sync().unwrap();
    assert!(!ids(&center_a).contains(&b1), "town A's center never receives town B's record");
    let (status, _) = api_get(&server, &format!("/api/v1/records/{b1}"), &token(&center_a));
    assert_eq!(status, 404, "nor can it fetch it");

    // The units a phone knows: its own town's and the county's, never a neighbour's; the county
    // knows every town's.
    let codes = |who: &Phone| {
        let (status, units) = api_get(&server, "/api/v1/units", &token(who));
        assert_eq!(status, 200);
        units.as_array().unwrap().iter().map(|u| u["code"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    let of_b = codes(&center_b);
    assert!(of_b.iter().any(|c| c == GRID_B1) && of_b.iter().any(|c| c == COUNTY) && of_b.iter().any(|c| c == COUNTY_DEPT));
    assert!(!of_b.iter().any(|c| c.starts_with(TOWN)), "town B's phones never learn town A's units: {of_b:?}");
    let all = codes(&county);
    assert!(all.iter().any(|c| c == GRID_B1) && all.iter().any(|c| c.starts_with(TOWN)), "the county knows both towns");

    // County figures: the towns side by side, outcome figures only.
    let (status, figures) = api_get(&server, "/api/v1/figures", &token(&county));
    assert_eq!(status, 200);
    assert_eq!(figures["totals"]["name"], "全县");
    assert_eq!(figures["totals"]["received"], 3);
    let towns = figures["by_town"].as_array().unwrap();
    let row = |code: &str| towns.iter().find(|t| t["key"] == code).unwrap_or_else(|| panic!("no row for {code}: {towns:?}"));
    assert_eq!(
        (row(TOWN)["name"].as_str(), row(TOWN)["received"].as_u64(), row(TOWN)["closed"].as_u64()),
        (Some("广通镇"), Some(2), Some(1))
    );
    assert_eq!(row(TOWN)["settled_in_town"], 0, "a1 needed the county: not settled in the town");
    assert_eq!((row(TOWN_B)["name"].as_str(), row(TOWN_B)["received"].as_u64()), (Some("罗川镇"), Some(1)));
    // A town's figures cover its own records only.
    let (_, town_b) = api_get(&server, "/api/v1/figures", &token(&center_b));
    assert_eq!(town_b["totals"]["received"], 1);

    // The county console: the towns side by side on the statistics page.
    let (status, page) = console_get(&server, "/console/stats", &token(&county));
    assert_eq!(status, 200);
    for text in ["各镇事件办理", "各镇受理事件数", "广通镇", "罗川镇", "全县", "大事不出镇"] {
        assert!(page.contains(text), "the county's statistics page shows {text}");
    }
    // Drilling down into one town: its figures only; a town cannot look into another.
    let (_, one) = api_get(&server, &format!("/api/v1/figures?town={TOWN_B}"), &token(&county));
    assert_eq!((one["totals"]["received"].as_u64(), one["by_town"].as_array().map(Vec::len)), (Some(1), Some(1)));
    let (status, _) = api_get(&server, &format!("/api/v1/figures?town={TOWN}"), &token(&center_b));
    assert_eq!(status, 400, "a town cannot drill into its neighbour");
    let (_, page) = console_get(&server, &format!("/console/stats?town={TOWN_B}"), &token(&county));
    assert!(page.contains("统计分析 · 罗川镇") && !page.contains("各镇事件办理"), "the county's drill-down into one town");
    assert!(page.contains(&format!("data-town=\"{TOWN}\"")), "with the way to the other towns");
    let (_, page) = console_get(&server, "/console/stats", &token(&center_b));
    assert!(!page.contains("各镇事件办理") && !page.contains("广通镇"), "a town's page shows its own town only");

    // The county's lists and map drill into one town too: a2 (广通镇, handled, to be verified
    // within days) and b1 (罗川镇, past its deadline at the county department) are open.
    let rows = |page: &str, id: &str| page.contains(&format!("data-id=\"{id}\""));
    let (status, page) = console_get(&server, "/console/inbox?tab=open", &token(&county));
    assert_eq!(status, 200);
    assert!(rows(&page, &a2) && rows(&page, &b1) && page.contains("(共 2 件)"), "the whole county's open records");
    // Links as a browser follows them (the page escapes `&`).
    let links = |page: &str| page.replace("&#38;", "&");
    assert!(links(&page).contains(&format!("href=\"/console/inbox?tab=open&town={TOWN_B}\"")), "the way into each town");
    let (_, page) = console_get(&server, &format!("/console/inbox?tab=open&town={TOWN_B}"), &token(&county));
    assert!(rows(&page, &b1) && !rows(&page, &a2) && page.contains("(共 1 件)"), "罗川镇's only");
    assert!(links(&page).contains(&format!("href=\"/console/inbox?town={TOWN_B}&tab=closed\"")), "the tabs stay in the town");
    let (_, page) = console_get(&server, &format!("/console/inbox?tab=closed&town={TOWN_B}"), &token(&county));
    assert!(!rows(&page, &a1) && page.contains("(共 0 件)"), "广通镇's closed record is not 罗川镇's");
    let (_, page) = console_get(&server, &format!("/console/board?town={TOWN}"), &token(&county));
    assert!(rows(&page, &a2) && !rows(&page, &b1) && page.contains("已超期(共 0 件)"), "the board of 广通镇");
    let (_, page) = console_get(&server, "/console/board", &token(&county));
    assert!(rows(&page, &a2) && rows(&page, &b1) && page.contains("已超期(共 1 件)"), "the board of the county");
    let (_, page) = console_get(&server, &format!("/console/map?town={TOWN_B}"), &token(&county));
    assert!(page.contains("共 1 件在办,其中超期 1 件"), "the map of 罗川镇");
    let (_, page) = console_get(&server, "/console/map", &token(&county));
    assert!(page.contains("共 2 件在办,其中超期 1 件"), "the map of the county");
    let (status, _) = console_get(&server, &format!("/console/inbox?town={TOWN}"), &token(&center_b));
    assert_eq!(status, 400, "a town cannot list its neighbour's records");
    let (_, page) = console_get(&server, "/console/board", &token(&center_b));
    assert!(!page.contains("aria-label=\"各镇\""), "a town's board has no row of towns");
}

/// The town center escalates from the console, as an operator would, and the county's inbox
/// shows it; a neighbouring town's center gets 404 for it.
#[test]
fn a_town_escalates_to_the_county_from_the_console() {
    let server = TestServer::start_seeded(Arc::new(SystemClock), seed_county);
    let mut grid_a = server.phone("grid_a");
    let id = grid_a.create_incident(report("跨镇山林权属纠纷")).unwrap();
    grid_a.sync().unwrap();
    let center = token(&server.phone("center"));
    let (_, page) = console_get(&server, &format!("/console/records/{id}"), &center);
    let csrf = csrf_of(&page);
    assert_eq!(console_act(&server, &id, &center, &[("_csrf", &csrf), ("kind", "accept")]), 303);
    let (_, page) = console_get(&server, &format!("/console/records/{id}"), &center);
    assert!(page.contains("南华县"), "the escalation form offers the county");
    let escalate = [("_csrf", csrf.as_str()), ("kind", "escalate"), ("to_unit", COUNTY), ("note", "涉及两镇,需县里协调")];
    assert_eq!(console_act(&server, &id, &center, &escalate), 303);

    let county = token(&server.phone("xian"));
    let (status, inbox) = console_get(&server, "/console/inbox", &county);
    assert_eq!(status, 200);
    assert!(inbox.contains("跨镇山林权属纠纷"), "the county's inbox holds the escalated incident");
    let (_, page) = console_get(&server, &format!("/console/records/{id}"), &county);
    assert!(page.contains("逐级上报") && page.contains("至 南华县"), "the timeline says it was passed up to the county");
    let other = token(&server.phone("center_b"));
    let (status, _) = console_get(&server, &format!("/console/records/{id}"), &other);
    assert_eq!(status, 404, "a neighbouring town cannot open it");
}

/// `gridlink-server demo --county`: the county center sees both towns' records, among them the
/// ones that went up to the county, in every state the demo promises; each town sees its own.
#[test]
fn the_demo_county_shows_the_county_at_work() {
    let server = TestServer::start_seeded(Arc::new(SystemClock), |s| {
        let logins = gridlink_server::demo::seed_county(s).unwrap();
        assert!(logins.county && logins.rows.iter().any(|r| r.1 == "xian-zhongxin"));
    });
    let mut county = Phone::login_with_password(&server.base, "xian-zhongxin", DEMO_PASSWORD);
    county.sync().unwrap();
    let all = county.list(&RecordQuery { limit: 500, ..Default::default() }).unwrap();
    let of_town = |town: &str| all.iter().filter(|r| r.display_no.starts_with(&format!("GT{}-", &town[6..]))).count();
    assert!(of_town(TOWN) > 40 && of_town(TOWN_B) == 5, "both towns, numbered per town: {} and {}", of_town(TOWN), of_town(TOWN_B));
    let held_by_county = county.list(&RecordQuery { holder: Some(unit(COUNTY)), limit: 50, ..Default::default() }).unwrap();
    assert_eq!(held_by_county.len(), 1, "one waits in the county's inbox");
    let closed_by_county =
        all.iter().filter(|r| county.get(&r.id).unwrap().folded.state.closed_by.as_ref().is_some_and(|u| u.as_str() == COUNTY)).count();
    assert_eq!(closed_by_county, 2);
    let overdue_at_county_depts = all
        .iter()
        .map(|r| county.get(&r.id).unwrap())
        .filter(|v| v.overdue && v.folded.state.holder.as_ref().is_some_and(|h| h.as_str().starts_with("532331-")))
        .count();
    assert_eq!(overdue_at_county_depts, 2, "two are overdue at county departments");

    let mut town_b = Phone::login_with_password(&server.base, "qf-zongzhi", DEMO_PASSWORD);
    town_b.sync().unwrap();
    assert_eq!(town_b.list(&RecordQuery { limit: 500, ..Default::default() }).unwrap().len(), 5, "勤丰镇 sees its own five");
    let (_, figures) = api_get(&server, "/api/v1/figures", &token(&county));
    let towns: Vec<&str> = figures["by_town"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(towns, ["广通镇", "勤丰镇"]);
}
