//! The four-level linkage end to end: routing, escalation, dispatch, deadlines and supervision
//! with an injected clock, errand batches, figures and exports, Open311.

use std::sync::Arc;

use chrono::TimeZone;
use gridlink_core::calendar::china_tz;
use gridlink_core::{Action, ManualClock, NewIncident, NewServiceRequest, ServiceMode, Status};
use gridlink_tests::*;

fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> i64 {
    china_tz().with_ymd_and_hms(y, m, d, h, min, 0).unwrap().timestamp_millis()
}

fn get(server: &TestServer, phone: &Phone, path: &str) -> serde_json::Value {
    let (s, body) =
        json(http().get(format!("{}{path}", server.base)).header("Authorization", format!("Bearer {}", token(phone))).call().unwrap());
    assert_eq!(s, 200, "{path}: {body}");
    body
}

fn figures(server: &TestServer, center: &Phone) -> serde_json::Value {
    get(server, center, "/api/v1/figures?from=2026-09-01&to=2026-12-31")
}

/// (received, closed, overdue now, on time, with deadline, settled in village, evaluations)
fn totals(f: &serde_json::Value) -> (u64, u64, u64, u64, u64, u64, u64) {
    let t = &f["totals"];
    let n = |k: &str| t[k].as_u64().unwrap();
    (n("received"), n("closed"), n("overdue_now"), n("on_time"), n("with_deadline"), n("settled_in_village"), n("evaluations"))
}

fn dept_row(f: &serde_json::Value, code: &str) -> (u64, u64, u64) {
    f["by_department"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["key"] == code)
        .map_or((0, 0, 0), |d| (d["handled"].as_u64().unwrap(), d["handled_on_time"].as_u64().unwrap(), d["holding_now"].as_u64().unwrap()))
}

#[test]
fn an_incident_through_every_level_with_the_figures_at_each_step() {
    let clock = Arc::new(ManualClock::new(at(2026, 11, 16, 9, 0))); // a Monday
    let server = TestServer::start_with_clock(clock.clone());
    let phone = |u: &str| Phone::login_with_clock(&server.base, u, clock.clone());
    let (mut grid, mut village, mut center, mut dept_a, mut dept_b) =
        (phone("grid_a"), phone("village"), phone("center"), phone("dept_a"), phone("dept_b"));
    let tick = |min: i64| clock.advance(min * 60_000);

    // The grid member reports offline; nothing reaches the town until the phone syncs.
    let id =
        grid.create_incident(NewIncident { category: "0503".into(), title: "河堤路倾倒建筑垃圾".into(), ..Default::default() }).unwrap();
    assert_eq!(totals(&figures(&server, &center)).0, 0);
    tick(30);
    grid.sync().unwrap();
    assert_eq!(totals(&figures(&server, &center)), (1, 0, 0, 0, 0, 0, 0));

    // 0503 is a town-level category: routed straight to the town center's inbox.
    center.sync().unwrap();
    let v = center.get(&id).unwrap();
    assert_eq!(v.folded.state.holder, Some(unit(TOWN)));
    assert!(v.folded.entries.iter().any(|e| e.entry.actor == "system" && e.entry.action.kind() == gridlink_core::ActionKind::Route));

    // Village-level report of the same grid, escalated by the village.
    let small = grid.create_incident(NewIncident { category: "0501".into(), title: "暴露垃圾".into(), ..Default::default() }).unwrap();
    tick(10);
    grid.sync().unwrap();
    village.sync().unwrap();
    assert_eq!(village.get(&small).unwrap().folded.state.holder, Some(unit(VILLAGE)), "小事: stays in the village");
    assert!(village.my_tasks(50).unwrap().iter().any(|t| t.id == small));
    tick(10);
    village.act(&small, Action::Escalate { to_unit: unit(TOWN) }, "村里无清运车辆").unwrap();
    village.sync().unwrap();
    assert_eq!(totals(&figures(&server, &center)).0, 2);

    // The center accepts and dispatches the first to a department with the catalog's deadline.
    center.sync().unwrap();
    tick(30);
    center.act(&id, Action::Accept, "").unwrap();
    let v = center.act(&id, Action::Dispatch { to_unit: unit(DEPT_A), deadline_ms: None }, "请清运并查处").unwrap();
    // 3 working days from Monday 2026-11-16: the end of Thursday.
    assert_eq!(v.folded.state.deadline_ms, Some(at(2026, 11, 20, 0, 0)));
    center.sync().unwrap();
    assert_eq!(dept_row(&figures(&server, &center), DEPT_A), (0, 0, 1));

    // Not theirs: returned, and re-dispatched (改派).
    dept_a.sync().unwrap();
    tick(20);
    dept_a.act(&id, Action::Return, "应由环卫所处理").unwrap();
    dept_a.sync().unwrap();
    assert_eq!(dept_a.record_count().unwrap(), 0);
    assert_eq!(dept_row(&figures(&server, &center), DEPT_A), (0, 0, 0));
    center.sync().unwrap();
    tick(20);
    center.act(&id, Action::Dispatch { to_unit: unit(DEPT_B), deadline_ms: None }, "改派环卫所").unwrap();
    center.sync().unwrap();
    dept_b.sync().unwrap();
    dept_b.act(&id, Action::Sign, "").unwrap();
    dept_b.sync().unwrap();
    assert_eq!(dept_row(&figures(&server, &center), DEPT_B), (0, 0, 1));

    // Friday morning: past the deadline; the sweeper supervises.
    clock.set(at(2026, 11, 20, 9, 0));
    assert_eq!(totals(&figures(&server, &center)).2, 1, "overdue now");
    assert_eq!(gridlink_server::linkage::sweep(&server.state).unwrap(), 1);
    dept_b.sync().unwrap();
    let v = dept_b.get(&id).unwrap();
    assert_eq!(v.folded.state.supervisions, 1);
    assert!(v.overdue);
    // Extension asked and approved: no longer overdue.
    dept_b.act(&id, Action::RequestExtension { until_ms: at(2026, 11, 25, 0, 0) }, "需调派机械").unwrap();
    dept_b.sync().unwrap();
    center.sync().unwrap();
    tick(30);
    center.act(&id, Action::ApproveExtension, "").unwrap();
    center.sync().unwrap();
    assert_eq!(totals(&figures(&server, &center)).2, 0);

    // Handled, the field check fails, handled again, verified.
    dept_b.sync().unwrap();
    tick(60 * 24 * 3); // Monday
    dept_b.act(&id, Action::Handle { photos: vec![] }, "已清运").unwrap();
    dept_b.sync().unwrap();
    grid.sync().unwrap();
    tick(60);
    grid.act(&id, Action::FailVerification, "河堤下仍有垃圾").unwrap();
    grid.sync().unwrap();
    dept_b.sync().unwrap();
    tick(120);
    dept_b.act(&id, Action::Handle { photos: vec![] }, "已全部清运").unwrap();
    dept_b.sync().unwrap();
    assert_eq!(dept_row(&figures(&server, &center), DEPT_B), (1, 1, 1));
    grid.sync().unwrap();
    tick(60);
    grid.act(&id, Action::Verify, "现场已整洁").unwrap();
    grid.sync().unwrap();
    assert_eq!(totals(&figures(&server, &center)).1, 0, "not closed before the center closes it");

    center.sync().unwrap();
    tick(30);
    center.act(&id, Action::Close, "").unwrap();
    center.sync().unwrap();
    let f = figures(&server, &center);
    assert_eq!(totals(&f), (2, 1, 0, 1, 1, 0, 0), "closed on time (within the extension), not settled in the village");
    assert_eq!(f["totals"]["settled_in_village"], 0);
    assert_eq!(dept_row(&f, DEPT_B), (1, 1, 0));

    grid.sync().unwrap();
    grid.act(&id, Action::Evaluate { satisfaction: 5 }, "群众满意").unwrap();
    grid.sync().unwrap();
    let f = figures(&server, &center);
    assert_eq!(totals(&f).6, 1);
    assert_eq!(f["totals"]["satisfaction_total"], 5);

    // Everyone's copy agrees with the server; the whole path is on record.
    center.sync().unwrap();
    let history = center.export_history(&id).unwrap();
    let kinds: Vec<&str> = history.timeline.iter().map(|e| e.entry.action.kind().as_str()).collect();
    assert_eq!(
        kinds,
        [
            "report",
            "route",
            "accept",
            "dispatch",
            "return",
            "dispatch",
            "sign",
            "supervise",
            "request_extension",
            "approve_extension",
            "handle",
            "fail_verification",
            "handle",
            "verify",
            "close",
            "evaluate"
        ]
    );
    assert_eq!(history.timeline.iter().filter(|e| e.conflict.is_some()).count(), 0);
    // Exports are real files.
    let resp = http()
        .get(format!("{}/api/v1/figures?from=2026-11-01&to=2026-11-30&format=xlsx", server.base))
        .header("Authorization", format!("Bearer {}", token(&center)))
        .call()
        .unwrap();
    assert!(resp.headers().get("content-disposition").unwrap().to_str().unwrap().contains(".xlsx"));
    let bytes = resp.into_body().read_to_vec().unwrap();
    assert_eq!(&bytes[..2], b"PK", "an XLSX is a zip archive");
    let csv = http()
        .get(format!("{}/api/v1/figures?format=csv&from=2026-11-01&to=2026-11-30", server.base))
        .header("Authorization", format!("Bearer {}", token(&center)))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    assert!(
        csv.contains("各村(社区)事件办理") && csv.contains("按时处置率") && csv.contains("核查按时率") && csv.contains("100.0%"),
        "{csv}"
    );
    assert!(csv.contains("当前超期(按责任单位)"), "{csv}");
}

#[test]
fn deadlines_skip_weekends_and_holidays_and_supervision_is_raised_once() {
    // Thursday before the Mid-Autumn holiday (Fri 25 – Sun 27 September 2026).
    let clock = Arc::new(ManualClock::new(at(2026, 9, 24, 10, 0)));
    let server = TestServer::start_with_clock(clock.clone());
    let mut center = Phone::login_with_clock(&server.base, "center", clock.clone());
    let mut dept = Phone::login_with_clock(&server.base, "dept_a", clock.clone());
    let new = |c: &str, t: &str| NewIncident { category: c.into(), title: t.into(), grid: Some(unit(GRID_A)), ..Default::default() };
    let first = center.create_incident(new("0501", "暴露垃圾")).unwrap(); // 1 working day
    center.act(&first, Action::Accept, "").unwrap();
    let v = center.act(&first, Action::Dispatch { to_unit: unit(DEPT_A), deadline_ms: None }, "").unwrap();
    assert_eq!(v.folded.state.deadline_ms, Some(at(2026, 9, 29, 0, 0)), "holiday Friday and the weekend skipped: end of Monday 28th");
    center.sync().unwrap();

    for (when, expect) in
        [(at(2026, 9, 26, 12, 0), 0), (at(2026, 9, 28, 23, 59), 0), (at(2026, 9, 29, 0, 30), 1), (at(2026, 9, 29, 9, 0), 0)]
    {
        clock.set(when);
        assert_eq!(gridlink_server::linkage::sweep(&server.state).unwrap(), expect, "at {when}");
    }
    // Three working days across the National Day week: Wed 30th, Thu 8th, Fri 9th October.
    clock.set(at(2026, 9, 29, 10, 0));
    center.sync().unwrap();
    let second = center.create_incident(new("0503", "建筑垃圾")).unwrap();
    center.act(&second, Action::Accept, "").unwrap();
    let v = center.act(&second, Action::Dispatch { to_unit: unit(DEPT_A), deadline_ms: None }, "").unwrap();
    assert_eq!(v.folded.state.deadline_ms, Some(at(2026, 10, 10, 0, 0)));
    center.sync().unwrap();
    clock.set(at(2026, 10, 9, 20, 0));
    assert_eq!(gridlink_server::linkage::sweep(&server.state).unwrap(), 0, "the first is supervised already, the second not due");
    clock.set(at(2026, 10, 10, 9, 0)); // a make-up Saturday
    assert_eq!(gridlink_server::linkage::sweep(&server.state).unwrap(), 1);

    // The notices went to the holding department and its parent, the town, and are on the timeline.
    dept.sync().unwrap();
    let v = dept.get(&first).unwrap();
    let sup: Vec<_> = v.folded.entries.iter().filter(|e| e.entry.action.kind() == gridlink_core::ActionKind::Supervise).collect();
    assert_eq!(sup.len(), 1);
    assert_eq!(sup[0].entry.actor_name, "系统");
    match &sup[0].entry.action {
        Action::Supervise { overdue, to_units } => {
            assert!(*overdue && to_units == &vec![unit(DEPT_A), unit(TOWN)])
        }
        other => panic!("{other:?}"),
    }
    assert!(sup[0].entry.note.contains("已超过处置期限(2026-09-28 23:59)"), "{}", sup[0].entry.note);
    let notices = get(&server, &dept, "/api/v1/notices");
    assert_eq!(notices.as_array().unwrap().len(), 2, "one per overdue incident for the department");
    let town_notices = get(&server, &center, "/api/v1/notices");
    assert_eq!(town_notices.as_array().unwrap().len(), 4, "the town sees its own and its departments' notices");
    // Paged by seq, newest first: two pages of two hold the same four, none twice.
    let first_page = get(&server, &center, "/api/v1/notices?limit=2");
    let last_seq = first_page[1]["seq"].as_i64().unwrap();
    let second_page = get(&server, &center, &format!("/api/v1/notices?limit=2&before={last_seq}"));
    let paged: Vec<&serde_json::Value> = first_page.as_array().unwrap().iter().chain(second_page.as_array().unwrap()).collect();
    assert_eq!(paged, town_notices.as_array().unwrap().iter().collect::<Vec<_>>());
    let f = figures(&server, &center);
    assert_eq!(f["totals"]["overdue_now"], 2);
    // Suspended (挂账) items do not count as overdue.
    center.sync().unwrap();
    let v = center.act(&second, Action::Suspend, "等待县级会商").unwrap();
    assert_eq!(v.folded.state.status, Some(Status::Suspended));
    center.sync().unwrap();
    assert_eq!(figures(&server, &center)["totals"]["overdue_now"], 1);
}

#[test]
fn supervision_follows_the_clock_of_whoever_holds_the_record_now() {
    let clock = Arc::new(ManualClock::new(at(2026, 11, 16, 9, 0))); // a Monday
    let server = TestServer::start_with_clock(clock.clone());
    let mut center = Phone::login_with_clock(&server.base, "center", clock.clone());
    let mut dept = Phone::login_with_clock(&server.base, "dept_a", clock.clone());
    let id = center
        .create_incident(NewIncident {
            category: "0501".into(), title: "暴露垃圾".into(), grid: Some(unit(GRID_A)), ..Default::default()
        })
        .unwrap();
    center.act(&id, Action::Accept, "").unwrap();
    // 0501: 1 working day, to the end of Tuesday 17th.
    let v = center.act(&id, Action::Dispatch { to_unit: unit(DEPT_A), deadline_ms: None }, "").unwrap();
    assert_eq!(v.folded.state.deadline_ms, Some(at(2026, 11, 18, 0, 0)));
    center.sync().unwrap();
    dept.sync().unwrap();
    dept.act(&id, Action::Sign, "").unwrap();
    clock.set(at(2026, 11, 17, 15, 0));
    dept.act(&id, Action::Handle { photos: vec![] }, "已清运").unwrap();
    dept.sync().unwrap();

    // Wednesday: the department's deadline has passed, but it handed back in time; the record
    // waits for the center, whose verification is due by the end of Thursday 19th.
    clock.set(at(2026, 11, 18, 10, 0));
    assert_eq!(gridlink_server::linkage::sweep(&server.state).unwrap(), 0, "the department is not supervised for the center's wait");
    let f = figures(&server, &center);
    assert_eq!(f["totals"]["overdue_now"], 0);
    assert_eq!(dept_row(&f, DEPT_A), (1, 1, 1));
    // Friday: the center's verification is overdue; the notice goes to the town, not the department.
    clock.set(at(2026, 11, 20, 9, 0));
    assert_eq!(gridlink_server::linkage::sweep(&server.state).unwrap(), 1);
    assert_eq!(gridlink_server::linkage::sweep(&server.state).unwrap(), 0, "once per due time");
    center.sync().unwrap();
    let v = center.get(&id).unwrap();
    let sup = v.folded.entries.iter().find(|e| e.entry.action.kind() == gridlink_core::ActionKind::Supervise).expect("supervised");
    match &sup.entry.action {
        Action::Supervise { overdue, to_units } => assert!(*overdue && to_units == &vec![unit(TOWN)], "{to_units:?}"),
        other => panic!("{other:?}"),
    }
    assert!(sup.entry.note.contains("已超过核查期限(2026-11-19 23:59)"), "{}", sup.entry.note);
    assert!(v.overdue, "the record page shows the center's clock as overdue");
    assert!(get(&server, &dept, "/api/v1/notices").as_array().unwrap().is_empty(), "no notice for the department");
    let f = figures(&server, &center);
    let town = f["by_holder"].as_array().unwrap().iter().find(|h| h["key"] == TOWN).unwrap().clone();
    assert_eq!((town["verification_overdue"].as_u64(), town["handling_overdue"].as_u64()), (Some(1), Some(0)));
    // Verified late, then the closing clock runs.
    center.act(&id, Action::Verify, "").unwrap();
    center.sync().unwrap();
    let f = figures(&server, &center);
    assert_eq!((f["totals"]["verified"].as_u64(), f["totals"]["verified_on_time"].as_u64()), (Some(1), Some(0)));
    assert_eq!(f["totals"]["overdue_now"], 0, "closing is due by the end of Monday 23rd");
}

#[test]
fn errand_batch_round_trip_with_one_item_sent_back_for_materials() {
    let clock = Arc::new(ManualClock::new(at(2026, 11, 23, 9, 0)));
    let server = TestServer::start_with_clock(clock.clone());
    let mut station = Phone::login_with_clock(&server.base, "village", clock.clone());
    let mut town = Phone::login_with_clock(&server.base, "dept_svc", clock.clone());
    let mut ids = Vec::new();
    for (i, (item, name, idn)) in
        [("FW004", "张桂兰", "11010519491231002X"), ("FW007", "李德明", "532331196204151237"), ("FW019", "王秀英", "532331195507230044")]
            .iter()
            .enumerate()
    {
        let full = gridlink_core::Catalog::bundled().service_item(item).unwrap().materials.clone();
        let id = station
            .create_service_request(NewServiceRequest {
                item: (*item).into(),
                mode: ServiceMode::Errand,
                station: None,
                resident_name: (*name).into(),
                resident_id_number: gridlink_core::pii::IdNumber::parse(idn).ok().map(|n| n.reveal().to_owned()),
                resident_phone: Some(format!("1381234567{i}")),
                materials_received: full,
                description: "代办".into(),
            })
            .unwrap();
        station.act(&id, Action::Queue, "").unwrap();
        station
            .act(&id, Action::HandOff { to_unit: unit(SERVICE_CENTER), batch_id: "2026-11-23-上午".into(), carrier: "李军".into() }, "")
            .unwrap();
        ids.push(id);
    }
    station.sync().unwrap();

    // The printable manifest of the batch.
    let m = get(&server, &station, "/api/v1/batches/2026-11-23-上午");
    assert!(m["title"].as_str().unwrap().contains("携带人 李军"));
    assert_eq!(m["rows"].as_array().unwrap().len(), 3);

    // The town receives the batch: two items signed for, one sent back for a missing material.
    clock.advance(3 * 3_600_000);
    town.sync().unwrap();
    assert_eq!(town.record_count().unwrap(), 3);
    town.act(&ids[2], Action::RequestMaterials { missing: vec!["残疾人证".into()] }, "残疾人证为复印件,需原件").unwrap();
    let mut received = town.receive_batch("2026-11-23-上午").unwrap();
    received.sort();
    let mut expected = ids[..2].to_vec();
    expected.sort();
    assert_eq!(received, expected, "the rest of the batch is signed for in one go");
    assert!(town.receive_batch("2026-11-23-上午").unwrap().is_empty(), "receiving twice does nothing");
    clock.advance(86_400_000);
    town.act(&ids[0], Action::Complete, "已审批,次月发放").unwrap();
    town.act(&ids[1], Action::Complete, "已发放临时救助金").unwrap();
    town.sync().unwrap();
    assert_eq!(town.record_count().unwrap(), 0, "completed items and the one sent back went back to the station");

    station.sync().unwrap();
    let back = station.get(&ids[2]).unwrap();
    assert_eq!(back.folded.state.status, Some(Status::MaterialsMissing));
    assert_eq!(back.folded.state.missing_materials, ["残疾人证"]);
    for id in &ids[..2] {
        station.act(id, Action::Deliver, "已送达").unwrap();
        station.act(id, Action::FollowUp { satisfaction: 5 }, "电话回访").unwrap();
    }
    station.sync().unwrap();

    // The ledger, masked, as CSV and XLSX.
    let ledger = get(&server, &station, "/api/v1/ledger?from=2026-11-01&to=2026-11-30");
    assert_eq!(ledger["count"], 3);
    let csv = http()
        .get(format!("{}/api/v1/ledger?from=2026-11-01&to=2026-11-30&format=csv", server.base))
        .header("Authorization", format!("Bearer {}", token(&station)))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    assert!(csv.contains("高龄津贴申请") && csv.contains("张*兰") && csv.contains("1101**********002X"), "{csv}");
    assert!(!csv.contains("11010519491231002X") && !csv.contains("13812345670"), "personal data masked");
    let xlsx = http()
        .get(format!("{}/api/v1/ledger?format=xlsx&from=2026-11-01&to=2026-11-30", server.base))
        .header("Authorization", format!("Bearer {}", token(&station)))
        .call()
        .unwrap()
        .into_body()
        .read_to_vec()
        .unwrap();
    assert_eq!(&xlsx[..2], b"PK");
    // Another village's station may not read this ledger.
    let other = Phone::login_with_clock(&server.base, "village2", clock.clone());
    let (s, _) = json(
        http()
            .get(format!("{}/api/v1/ledger?station={VILLAGE}", server.base))
            .header("Authorization", format!("Bearer {}", token(&other)))
            .call()
            .unwrap(),
    );
    assert_eq!(s, 403);

    let f = get(&server, &station, "/api/v1/figures?from=2026-11-01&to=2026-11-30");
    let row = &f["service_requests_by_station"][0];
    assert_eq!(
        (row["received"].as_u64(), row["completed"].as_u64(), row["delivered"].as_u64(), row["delivered_on_time"].as_u64()),
        (Some(3), Some(2), Some(2), Some(2))
    );
}

#[test]
fn open311_georeport_v2() {
    let server = TestServer::start();
    let key = gridlink_server::open311::create_api_key(&*server.state.db.writer(), "center", "12345热线", 0).unwrap();
    let services: serde_json::Value = http()
        .get(format!("{}/open311/v2/services.json", server.base))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .map(|s| serde_json::from_str::<serde_json::Value>(&s).unwrap())
        .unwrap();
    let services = services.as_array().unwrap();
    assert!(services.len() >= 40);
    for s in services {
        for field in ["service_code", "service_name", "description", "metadata", "type", "keywords", "group"] {
            assert!(s.get(field).is_some(), "service lacks {field}: {s}");
        }
        assert_eq!(s["type"], "realtime");
    }
    // File a report as a civic client would (form-encoded).
    let form = format!(
        "api_key={key}&service_code=0802&lat=25.13&long=102.05&address_id={GRID_A}&address_string=%E8%80%81%E8%A1%97&description=%E8%B7%AF%E7%81%AF%E4%B8%8D%E4%BA%AE&first_name=%E6%98%8E&last_name=%E7%8E%8B&phone=13900001111"
    );
    let resp = http()
        .post(format!("{}/open311/v2/requests.json", server.base))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send(form.as_bytes())
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let created: serde_json::Value =
        resp.into_body().read_to_string().map(|s| serde_json::from_str::<serde_json::Value>(&s).unwrap()).unwrap();
    let id = created[0]["service_request_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("GT-"), "{created}");
    for field in ["service_request_id", "service_notice", "account_id"] {
        assert!(created[0].get(field).is_some());
    }
    let list: serde_json::Value = http()
        .get(format!("{}/open311/v2/requests.json?api_key={key}&status=open", server.base))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .map(|s| serde_json::from_str::<serde_json::Value>(&s).unwrap())
        .unwrap();
    let one = &list[0];
    for field in [
        "service_request_id",
        "status",
        "status_notes",
        "service_name",
        "service_code",
        "description",
        "agency_responsible",
        "service_notice",
        "requested_datetime",
        "updated_datetime",
        "expected_datetime",
        "address",
        "address_id",
        "zipcode",
        "lat",
        "long",
        "media_url",
    ] {
        assert!(one.get(field).is_some(), "request lacks {field}: {one}");
    }
    assert_eq!((one["status"].as_str(), one["service_code"].as_str(), one["lat"].as_f64()), (Some("open"), Some("0802"), Some(25.13)));
    assert!(chrono::DateTime::parse_from_rfc3339(one["requested_datetime"].as_str().unwrap()).is_ok());
    assert!(!list.to_string().contains("13900001111"), "the reporter's phone is not published");
    let single: serde_json::Value = http()
        .get(format!("{}/open311/v2/requests/{id}.json?api_key={key}", server.base))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .map(|s| serde_json::from_str::<serde_json::Value>(&s).unwrap())
        .unwrap();
    assert_eq!(single[0]["service_request_id"], id.as_str());
    let closed: serde_json::Value = http()
        .get(format!("{}/open311/v2/requests.json?api_key={key}&status=closed", server.base))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .map(|s| serde_json::from_str::<serde_json::Value>(&s).unwrap())
        .unwrap();
    assert_eq!(closed.as_array().unwrap().len(), 0);
    // The village phone sees the report in its inbox (0802 路灯损坏 is village-level).
    let mut village = server.phone("village");
    village.sync().unwrap();
    assert_eq!(village.record_count().unwrap(), 1);

    // Errors in GeoReport's shape.
    for (url, status) in [
        ("/open311/v2/requests.json?api_key=wrong".to_string(), 403),
        (format!("/open311/v2/requests.json?api_key={key}&status=pending"), 400),
        (format!("/open311/v2/requests/GT-1999-000001.json?api_key={key}"), 404),
    ] {
        let (s, body) = json(http().get(format!("{}{url}", server.base)).call().unwrap());
        assert_eq!(s, status, "{url}: {body}");
        assert!(body[0]["code"].is_number() && body[0]["description"].is_string(), "{body}");
    }
    let (s, body) = json(
        http()
            .post(format!("{}/open311/v2/requests.json", server.base))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .send(format!("api_key={key}&service_code=9999&description=x&address_string=x").as_bytes())
            .unwrap(),
    );
    assert_eq!(s, 404, "an unknown service_code is 404 in the spec");
    assert!(body[0]["description"].as_str().unwrap().contains("9999"));
}

#[test]
fn routing_rules_are_data_an_admin_edits() {
    let server = TestServer::start();
    let admin = server.phone("admin");
    let mut grid = server.phone("grid_a");
    let put = |who: &Phone, body: &str| {
        json(
            http()
                .put(format!("{}/api/v1/admin/routing", server.base))
                .header("Authorization", format!("Bearer {}", token(who)))
                .header("Content-Type", "application/json")
                .send(body.as_bytes())
                .unwrap(),
        )
    };
    let (s, b) = put(&admin, r#"{"rules":[{"category":"99","to":"town"}]}"#);
    assert_eq!(s, 400);
    assert!(b["error"]["message"].as_str().unwrap().contains("第1条规则"));
    let (s, _) = put(&grid, r#"{"rules":[]}"#);
    assert_eq!(s, 403);
    let (s, _) = put(&admin, r#"{"rules":[{"category":"05","village":"532331101201","to":"town"}]}"#);
    assert_eq!(s, 200);
    let id = grid.create_incident(NewIncident { category: "0501".into(), title: "垃圾".into(), ..Default::default() }).unwrap();
    grid.sync().unwrap();
    assert_eq!(
        grid.get(&id).unwrap().folded.state.holder,
        Some(unit(TOWN)),
        "the rule sends this village's sanitation reports to the town"
    );
    // The server's part (case number and routing) is one change of its own after the report.
    let record = grid.get(&id).unwrap().record;
    assert!(record.case_no.as_deref().is_some_and(|no| no.starts_with("GT-")), "{:?}", record.case_no);
    let changes = grid.export_history(&id).unwrap().changes;
    let messages: Vec<&str> = changes.iter().map(|c| c.message.as_str()).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[1], "分配案卷编号、分流", "{messages:?}");
    assert_ne!(changes[0].actor, changes[1].actor);
}
