//! Hardening, against a real server: the authorization matrix (every role × the endpoints ×
//! records of its own unit, a sibling, the parent and elsewhere), a matrix of hostile input, a
//! full disk, device clocks three days off, and a device back after a month offline.

use std::collections::BTreeMap;
use std::sync::Arc;

use gridlink_core::sync::SyncError;
use gridlink_core::{Action, ManualClock, NewIncident, NewServiceRequest, RecordQuery, ServiceMode, Status};
use gridlink_server::storage::RecordFilter;
use gridlink_tests::*;

/// Row counts of every table that holds state.
fn snapshot(server: &TestServer) -> BTreeMap<&'static str, i64> {
    server.state.db.reader().row_counts().unwrap().into_iter().collect()
}

fn incident(category: &str, title: &str) -> NewIncident {
    NewIncident { category: category.into(), title: title.into(), description: "测试".into(), ..Default::default() }
}

fn errand(resident: &str) -> NewServiceRequest {
    NewServiceRequest {
        item: "FW004".into(),
        mode: ServiceMode::Errand,
        station: None,
        resident_name: resident.into(),
        resident_id_number: None,
        resident_phone: None,
        materials_received: vec!["居民身份证".into()],
        description: String::new(),
    }
}

#[test]
fn authorization_matrix_has_no_leaks() {
    let server = TestServer::start();
    let users = ["grid_a", "grid_b", "grid_c", "village", "village2", "center", "dept_a", "dept_b", "dept_svc", "admin"];
    let mut phones: BTreeMap<&str, Phone> = users.iter().map(|u| (*u, server.phone(u))).collect();

    // R1: village-level report in grid A (routed to its village); R2: town-level report in grid A
    // with a photo, dispatched by the center to department A; R3: a report in the other village;
    // S1: an errand at village 1's station.
    let p = phones.get_mut("grid_a").unwrap();
    let r1 = p.create_incident(incident("0501", "垃圾堆积")).unwrap();
    let r2 = p.create_incident(incident("0602", "违章搭建")).unwrap();
    let photo = p.attach_photo(&r2, include_bytes!("../../bindings/tests/fixtures/street.jpg")).unwrap();
    p.sync().unwrap();
    let p = phones.get_mut("grid_c").unwrap();
    let r3 = p.create_incident(incident("0501", "他村垃圾")).unwrap();
    p.sync().unwrap();
    let p = phones.get_mut("village").unwrap();
    let s1 = p.create_service_request(errand("王小明")).unwrap();
    p.sync().unwrap();
    let c = phones.get_mut("center").unwrap();
    c.sync().unwrap();
    c.act(&r2, Action::Accept, "").unwrap();
    c.act(&r2, Action::Dispatch { to_unit: unit(DEPT_A), deadline_ms: None }, "").unwrap();
    c.sync().unwrap();

    let records = [("R1 本网格·村级", &r1), ("R2 本网格·派部门A", &r2), ("R3 他村", &r3), ("S1 本村代办", &s1)];
    // Who may see what, written down from the domain rules (not computed by the code under test):
    // a unit sees what lies within it and what it holds; a reporter keeps reading its report.
    #[rustfmt::skip]
    let expected: [(&str, [bool; 4]); 10] = [
        ("grid_a",   [true,  true,  false, false]), // own grid; not the station's errands
        ("grid_b",   [false, false, false, false]), // sibling grid
        ("grid_c",   [false, false, true,  false]), // other village
        ("village",  [true,  true,  false, true ]), // parent of grid A
        ("village2", [false, false, true,  false]), // sibling village
        ("center",   [true,  true,  true,  true ]), // the town
        ("dept_a",   [false, true,  false, false]), // holds R2 only
        ("dept_b",   [false, false, false, false]),
        ("dept_svc", [false, false, false, false]), // errand not handed off yet
        ("admin",    [true,  true,  true,  true ]), // town-level account
    ];
    let (_, rules) = api_get(&server, "/api/v1/admin/routing", &token(&phones["admin"]));
    let routing = rules.to_string();
    let mut checked = 0;
    for (user, row) in expected {
        let phone = phones.get_mut(user).unwrap();
        phone.sync().unwrap();
        let tok = token(phone);
        let (_, inbox) = console_get(&server, "/console/inbox", &tok);
        let csrf = csrf_of(&inbox);
        for ((label, id), visible) in records.iter().zip(row) {
            let want = if visible { 200 } else { 404 };
            let (api, _) = api_get(&server, &format!("/api/v1/records/{id}"), &tok);
            let (page, _) = console_get(&server, &format!("/console/records/{id}"), &tok);
            let synced = phone.get(id).is_ok();
            assert_eq!((api, page, synced), (want, want, visible), "{user} × {label}: API, console, synced to the phone");
            // Supervising (督办) is for leaders of the holder or above, on incidents: only the
            // center may, everywhere; others get 404 where they cannot see, 409 where they can.
            let is_incident = !label.starts_with('S');
            let want_act = match (user, visible, is_incident) {
                ("center", _, true) => 303,
                (_, false, _) => 404,
                _ => 409,
            };
            let acted = console_act(&server, id, &tok, &[("_csrf", &csrf), ("kind", "supervise"), ("note", "请加快办理")]);
            assert_eq!(acted, want_act, "{user} × {label}: supervise from the console");
            checked += 4;
        }
        let (s, _) = api_get(&server, &format!("/api/v1/attachments/{photo}"), &tok);
        assert_eq!(s == 200, row[1] || user == "grid_a", "{user}: the photo of R2");
        let (s, figures) = api_get(&server, "/api/v1/figures", &tok);
        assert_eq!(s, 200);
        let visible_incidents = row[..3].iter().filter(|v| **v).count() as u64;
        assert_eq!(figures["totals"]["received"].as_u64(), Some(visible_incidents), "{user}: figures count only what they may see");
        for path in ["/api/v1/admin/devices", "/api/v1/admin/routing"] {
            let (s, _) = api_get(&server, path, &tok);
            assert_eq!(s, if user == "admin" { 200 } else { 403 }, "{user}: GET {path}");
        }
        let resp = http()
            .post(format!("{}/api/v1/admin/devices/no-such-device/revoke", server.base))
            .header("Authorization", bearer(&tok))
            .send_empty()
            .unwrap();
        assert_eq!(resp.status().as_u16(), if user == "admin" { 404 } else { 403 }, "{user}: revoke a device");
        let resp = http()
            .put(format!("{}/api/v1/admin/routing", server.base))
            .header("Authorization", bearer(&tok))
            .header("Content-Type", "application/json")
            .send(routing.as_bytes())
            .unwrap();
        assert_eq!(resp.status().as_u16(), if user == "admin" { 200 } else { 403 }, "{user}: change the routing rules");
        checked += 7;
        // The admin console: every page and form is the administrator's alone.
        for page in ["people", "devices", "units", "routing", "catalog", "import", "audit"] {
            let (s, _) = console_get(&server, &format!("/console/admin/{page}"), &tok);
            assert_eq!(s, if user == "admin" { 200 } else { 403 }, "{user}: the admin page {page}");
            checked += 1;
        }
        if user != "admin" {
            let (_, page) = console_get(&server, "/console/inbox", &tok);
            let form = format!("_csrf={}&op=deactivate", csrf_of(&page));
            let resp = http()
                .post(format!("{}/console/admin/people/admin", server.base))
                .header("Cookie", format!("gl_session={tok}"))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .send(form.as_bytes())
                .unwrap();
            assert_eq!(resp.status().as_u16(), 403, "{user}: deactivate the administrator");
            checked += 1;
        }
    }
    // A station reads only its own ledger.
    let tok = token(&phones["village2"]);
    assert_eq!(api_get(&server, &format!("/api/v1/ledger?station={VILLAGE}"), &tok).0, 403);
    assert_eq!(api_get(&server, &format!("/api/v1/ledger?station={VILLAGE2}"), &tok).0, 200);
    // Exactly the center's three supervisions were stored; every refusal changed nothing.
    let tok = token(&phones["center"]);
    let mut supervisions = 0;
    for (_, id) in &records {
        let (_, body) = api_get(&server, &format!("/api/v1/records/{id}"), &tok);
        supervisions += body["timeline"].as_array().unwrap().iter().filter(|e| e["entry"]["action"]["type"] == "supervise").count();
    }
    assert_eq!(supervisions, 3);
    println!("authorization matrix: {checked} checks over {} accounts and {} records, no leaks", users.len(), records.len());
}

#[test]
fn hostile_input_gets_a_clear_4xx_and_changes_nothing() {
    let server = TestServer::start();
    let mut grid = server.phone("grid_a");
    let id = grid.create_incident(incident("0501", "正常记录")).unwrap();
    grid.sync().unwrap();
    let tok = token(&grid);
    let admin = token(&server.phone("admin"));
    let before = snapshot(&server);
    let nested = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let huge = "网".repeat(300_000);
    let invalid_utf8: &[u8] = b"{\"username\": \"\xff\xfe\", \"password\": \"x\"}";
    // (method, path, token, content type, body)
    let cases: Vec<(&str, String, &str, &str, Vec<u8>)> = vec![
        ("POST", "/api/v1/login".into(), "", "application/json", b"not json".to_vec()),
        ("POST", "/api/v1/login".into(), "", "application/json", b"{\"username\": [1], \"password\": {}}".to_vec()),
        ("POST", "/api/v1/login".into(), "", "application/json", nested.clone().into_bytes()),
        ("POST", "/api/v1/login".into(), "", "application/json", invalid_utf8.to_vec()),
        ("POST", "/api/v1/login".into(), "", "application/json", format!("{{\"username\":\"{huge}\",\"password\":\"x\"}}").into_bytes()),
        ("POST", "/api/v1/sync".into(), &tok, "application/json", b"{}".to_vec()),
        ("POST", "/api/v1/sync".into(), &tok, gridlink_core::sync::protocol::CONTENT_TYPE, vec![0x78, 0x9c, 0xff, 0x00, 0x13]),
        ("GET", format!("/api/v1/records/{}", "'%20OR%201=1--"), &tok, "", vec![]),
        ("GET", "/api/v1/records/..%2F..%2F..%2Fetc%2Fpasswd".into(), &tok, "", vec![]),
        ("GET", format!("/api/v1/records/{}", "a".repeat(5000)), &tok, "", vec![]),
        ("GET", "/api/v1/attachments/..%2F..%2Fserver.db".into(), &tok, "", vec![]),
        ("PUT", "/api/v1/attachments/..%2F..%2Fserver.db?offset=0&total=3".into(), &tok, "image/jpeg", b"abc".to_vec()),
        ("PUT", format!("/api/v1/attachments/{}?offset=0&total=0", "a".repeat(64)), &tok, "image/jpeg", b"abc".to_vec()),
        ("PUT", format!("/api/v1/attachments/{}?offset=9&total=3", "b".repeat(64)), &tok, "image/jpeg", b"abc".to_vec()),
        ("PUT", format!("/api/v1/attachments/{}?offset=0&total=999999999999", "c".repeat(64)), &tok, "image/jpeg", b"abc".to_vec()),
        ("PUT", format!("/api/v1/attachments/{}?offset=x&total=y", "d".repeat(64)), &tok, "image/jpeg", b"abc".to_vec()),
        ("GET", "/api/v1/figures?from=2026-13-45".into(), &tok, "", vec![]),
        ("GET", "/api/v1/figures?from=2026-01-01%27%20OR%201=1".into(), &tok, "", vec![]),
        ("GET", "/api/v1/figures?format=pdf".into(), &tok, "", vec![]),
        ("GET", "/api/v1/ledger?station=%27%3B%20DROP%20TABLE%20docs%3B--".into(), &tok, "", vec![]),
        ("GET", "/api/v1/batches/%27%20OR%201=1?format=xml".into(), &tok, "", vec![]),
        ("PUT", "/api/v1/admin/routing".into(), &admin, "application/json", b"{\"village_level\": \"all\"}".to_vec()),
        ("PUT", "/api/v1/admin/routing".into(), &admin, "application/json", nested.into_bytes()),
        (
            "POST",
            "/open311/v2/requests.json".into(),
            "",
            "application/x-www-form-urlencoded",
            b"service_code=0501&description=x&lat=91".to_vec(),
        ),
        (
            "POST",
            "/open311/v2/requests.json".into(),
            "",
            "application/x-www-form-urlencoded",
            b"api_key=%27%20OR%201=1--&service_code=0501&description=x".to_vec(),
        ),
        ("POST", "/open311/v2/requests.json".into(), "", "application/x-www-form-urlencoded", vec![0xff, 0xfe, b'=', 0x80]),
        ("GET", "/open311/v2/requests.json?start_date=yesterday".into(), "", "", vec![]),
        (
            "POST",
            "/console/login".into(),
            "",
            "application/x-www-form-urlencoded",
            format!("username={}&password=x", "a".repeat(100_000)).into_bytes(),
        ),
        (
            "POST",
            format!("/console/records/{id}/act"),
            &tok,
            "multipart/form-data; boundary=x",
            b"--x\r\nContent-Disposition: form-data; name=\"kind\"\r\n\r\naccept\r\n--x--\r\n".to_vec(),
        ),
        ("POST", "/console/service-requests/batch".into(), &tok, "application/x-www-form-urlencoded", b"_csrf=0&ids=1".to_vec()),
    ];
    for (method, path, tok, ct, body) in &cases {
        let url = format!("{}{path}", server.base);
        let mut req = ureq::http::Request::builder().method(*method).uri(&url);
        if !tok.is_empty() {
            req = req.header("Authorization", bearer(tok)).header("Cookie", format!("gl_session={tok}"));
        }
        if !ct.is_empty() {
            req = req.header("Content-Type", *ct);
        }
        let resp = http().run(req.body(body.clone()).unwrap()).unwrap();
        let status = resp.status().as_u16();
        let text = resp.into_body().read_to_string().unwrap_or_default();
        assert!((400..500).contains(&status), "{method} {path}: answered {status}");
        // Every refusal says why, in Chinese (JSON for the API, a page for the console).
        assert!(
            text.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)) || text.is_empty() && status == 405,
            "{method} {path}: {status} without a reason: {text:.200}"
        );
        assert!(!text.contains("etc/passwd") && !text.contains("server.db"), "{method} {path}: echoes the hostile path");
    }
    assert_eq!(snapshot(&server), before, "hostile input changed the server's state");
    assert_eq!(api_get(&server, &format!("/api/v1/records/{id}"), &tok).0, 200, "the server still serves");
    println!("hostile input: {} cases, all 4xx with a reason, no state changed", cases.len());
}

#[test]
fn a_full_disk_refuses_writes_cleanly_and_loses_nothing() {
    if servers_on_postgres() {
        // The disk is filled through SQLite's page limit; PostgreSQL's full disk (SQLSTATE
        // 53100) maps to the same refusal (`AppError::from(postgres::Error)`).
        eprintln!("skipped: the full disk is made by SQLite's max_page_count");
        return;
    }
    let server = TestServer::start();
    let mut grid = server.phone("grid_a");
    grid.sync().unwrap();
    for i in 0..20 {
        let mut new = incident("0501", &format!("第{i}件"));
        new.description = "现场情况说明。".repeat(200);
        grid.create_incident(new).unwrap();
    }
    let pending = grid.pending_count().unwrap();
    // The database may not grow by a single page: as good as a full disk for SQLite.
    {
        let held = server.state.db.writer();
        let w = held.sqlite();
        let pages: i64 = w.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
        w.pragma_update(None, "max_page_count", pages).unwrap();
    }
    let before = snapshot(&server);
    match grid.sync() {
        Err(e @ SyncError::Server(507)) => assert!(e.is_retryable()),
        other => panic!("a full disk should answer 507, got {other:?}"),
    }
    assert_eq!(grid.pending_count().unwrap(), pending, "the phone keeps everything that was not acknowledged");
    assert_eq!(snapshot(&server), before, "nothing half-written");
    let tok = token(&grid);
    assert_eq!(api_get(&server, "/api/v1/me", &tok).0, 200, "reads go on while the disk is full");
    assert_eq!(http().get(format!("{}/healthz", server.base)).call().unwrap().status().as_u16(), 200);
    // Space is freed: the same phone syncs everything.
    server.state.db.writer().sqlite().pragma_update(None, "max_page_count", 1_073_741_823i64).unwrap();
    grid.sync().unwrap();
    assert_eq!(grid.pending_count().unwrap(), 0);
    let held = server.state.db.reader();
    let conn = held.sqlite();
    assert_eq!(conn.query_row("SELECT count(*) FROM docs", [], |r| r.get::<_, i64>(0)).unwrap(), 20);
    assert_eq!(conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)).unwrap(), "ok");
}

#[test]
fn clocks_three_days_off_keep_the_order_of_what_happened() {
    let server = TestServer::start();
    let now = gridlink_core::Clock::now_ms(&gridlink_core::SystemClock);
    let day = 86_400_000;
    let ahead = Arc::new(ManualClock::new(now + 3 * day));
    let behind = Arc::new(ManualClock::new(now - 3 * day));
    let mut grid = Phone::login_with_clock(&server.base, "grid_a", ahead);
    let mut center = server.phone("center");
    let mut dept = Phone::login_with_clock(&server.base, "dept_a", behind);
    // Reported by a phone three days fast, triaged on time, handled by a phone three days slow.
    let id = grid.create_incident(incident("0602", "钟快的手机上报")).unwrap();
    grid.sync().unwrap();
    center.sync().unwrap();
    center.act(&id, Action::Accept, "").unwrap();
    center.act(&id, Action::Dispatch { to_unit: unit(DEPT_A), deadline_ms: None }, "").unwrap();
    center.sync().unwrap();
    dept.sync().unwrap();
    dept.act(&id, Action::Sign, "").unwrap();
    dept.act(&id, Action::Handle { photos: vec![] }, "已处置").unwrap();
    dept.sync().unwrap();
    grid.sync().unwrap();
    center.sync().unwrap();
    let kinds =
        |p: &Phone| -> Vec<&'static str> { p.get(&id).unwrap().folded.entries.iter().map(|e| e.entry.action.kind().as_str()).collect() };
    let want = vec!["report", "route", "accept", "dispatch", "sign", "handle"];
    for p in [&grid, &center, &dept] {
        let view = p.get(&id).unwrap();
        assert_eq!(kinds(p), want, "causal order on every device");
        assert_eq!(view.folded.conflicts(), 0, "no entry was judged out of order");
        assert_eq!(view.folded.state.status, Some(Status::Handled));
        let times: Vec<_> = view.folded.entries.iter().map(|e| e.entry.at).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "hybrid clocks only move forward: {times:?}");
    }
}

#[test]
fn a_month_offline_with_a_thousand_actions_syncs_in_one_go() {
    let server = TestServer::start();
    let now = gridlink_core::Clock::now_ms(&gridlink_core::SystemClock);
    let clock = Arc::new(ManualClock::new(now - 30 * 86_400_000));
    let mut station = Phone::login_with_clock(&server.base, "village", clock.clone());
    let mut actions = 0;
    // Thirty working days at a station with no network: intake, completion on the spot,
    // delivery, archive and the follow-up call — 1,000 timeline entries.
    for n in 0..200 {
        clock.set(now - 30 * 86_400_000 + n * 3 * 3_600_000);
        let id = station.create_service_request(errand(&format!("居民{n}"))).unwrap();
        station.act(&id, Action::Complete, "当场办结").unwrap();
        station.act(&id, Action::Deliver, "").unwrap();
        station.act(&id, Action::FollowUp { satisfaction: 5 }, "").unwrap();
        station.act(&id, Action::Archive, "").unwrap();
        actions += 5;
    }
    assert_eq!(actions, 1000);
    assert_eq!(station.pending_count().unwrap(), 1000);
    clock.set(now);
    let report = station.sync().unwrap();
    println!("a month offline: 1,000 actions on 200 records synced in {report:?}");
    assert_eq!(station.pending_count().unwrap(), 0, "everything acknowledged in one sync");
    assert!(station.rejections().unwrap().is_empty(), "nothing refused");
    let conn = server.state.db.reader();
    let requests = RecordFilter { kind: Some("service_request"), ..RecordFilter::ALL };
    let docs = conn.count_records(&requests, TOWN, "").unwrap();
    let archived = conn.count_records(&RecordFilter { status: Some("archived"), ..requests }, TOWN, "").unwrap();
    assert_eq!((docs, archived), (200, 200));
    // Another device of the station sees all of it, in order.
    let mut other = server.phone("village");
    other.sync().unwrap();
    let all = other.list(&RecordQuery { limit: 1000, ..Default::default() }).unwrap();
    assert_eq!(all.len(), 200);
    assert!(all.iter().all(|r| r.status == Some(Status::Archived) && r.conflicts == 0));
}

/// Reads one HTTP/1.1 response with a `content-length` from `conn`; returns its status line.
fn read_response(conn: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(conn.read(&mut byte).unwrap(), 1, "the connection closed inside a response");
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .expect("a content-length");
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).unwrap();
    head.lines().next().unwrap().to_owned()
}

#[test]
fn an_idle_kept_alive_connection_is_closed_and_a_busy_one_kept() {
    use std::io::{Read, Write};
    let server = TestServer::start();
    let mut conn = std::net::TcpStream::connect(server.addr).unwrap();
    // Two requests on one connection: it is kept alive between them.
    for _ in 0..2 {
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: gridlink\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut conn), "HTTP/1.1 200 OK");
    }
    // Then nothing: the server closes it once it sat idle for IDLE_CONNECTION, not before.
    let idle = std::time::Instant::now();
    conn.set_read_timeout(Some(gridlink_server::IDLE_CONNECTION * 4)).unwrap();
    let mut byte = [0u8; 1];
    let read = conn.read(&mut byte);
    assert!(matches!(read, Ok(0)), "an idle connection was not closed: {read:?}");
    assert!(idle.elapsed() >= gridlink_server::IDLE_CONNECTION - std::time::Duration::from_secs(1), "closed after {:?}", idle.elapsed());
}
