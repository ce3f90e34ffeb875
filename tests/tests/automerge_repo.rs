//! automerge-repo peers: the real `@automerge/automerge-repo` 2.5 client in Node
//! (`tests/automerge-repo/peer.test.mjs`) against the real server, with phones syncing over HTTP.
//! The script asks this test for phone steps on its stdin/stdout (`@@{json}` lines).

use std::path::PathBuf;

use gridlink_core::{Action, NewIncident};
use gridlink_server::automerge_repo;
use gridlink_tests::process;
use gridlink_tests::{DEPT_A, DEPT_B, GRID_A, GRID_C, Phone, TestServer, VILLAGE, http, json, token, unit};
use serde_json::{Value, json};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

struct Town {
    server: TestServer,
    grid_a: Phone,
    /// The station's phone; the JavaScript peer acts as the station through a device of its own.
    station_phone: Phone,
    peer_device: Phone,
    record: String,
    /// The center's phone, and a department's phone and peer device (for a record that leaves
    /// the department's scope).
    center: Phone,
    dept_phone: Phone,
    dept_peer: Phone,
    dept_record: String,
}

/// A phone brings the record up to date, acts on it and syncs the action, which the server takes.
fn act_and_sync(phone: &mut Phone, record: &str, action: Action, note: &str) {
    phone.sync().unwrap();
    phone.act(record, action, note).unwrap();
    let r = phone.sync().unwrap();
    assert!(r.rejected.is_empty(), "{:?}", r.rejected);
}

fn ticket(server: &TestServer, device: &Phone) -> Value {
    let resp = http()
        .post(format!("{}/api/v1/automerge-repo/ticket", server.base))
        .header("Authorization", format!("Bearer {}", token(device)))
        .send_empty()
        .unwrap();
    let (status, body) = json(resp);
    assert_eq!(status, 200, "{body}");
    json!({ "url": format!("{}{}", server.base.replacen("http://", "ws://", 1), body["path"].as_str().unwrap()) })
}

fn step(t: &mut Town, cmd: &str, _arg: &Value) -> Value {
    match cmd {
        "setup" => {
            let view = t.grid_a.get(&t.record).unwrap();
            let mut grid_c = t.server.phone("grid_c");
            let other = grid_c
                .create_incident(NewIncident {
                    category: "0501".into(),
                    title: "另一个村的事".into(),
                    grid: Some(unit(GRID_C)),
                    ..Default::default()
                })
                .unwrap();
            grid_c.sync().unwrap();
            json!({
                "record_url": automerge_repo::url(&t.record),
                "record_id": t.record,
                "title": view.record.title(),
                "case_no": view.record.case_no,
                "village": VILLAGE,
                "other_url": automerge_repo::url(&other),
                "missing_url": automerge_repo::url(&uuid::Uuid::now_v7().to_string()),
            })
        }
        "ticket" => ticket(&t.server, &t.peer_device),
        "dept_ticket" => ticket(&t.server, &t.dept_peer),
        "center_dispatch_to_dept" => {
            let title = "占道经营";
            t.dept_record = t
                .center
                .create_incident(NewIncident {
                    category: "0501".into(),
                    title: title.into(),
                    grid: Some(unit(GRID_A)),
                    ..Default::default()
                })
                .unwrap();
            t.center.act(&t.dept_record, Action::Accept, "").unwrap();
            t.center.act(&t.dept_record, Action::Dispatch { to_unit: unit(DEPT_A), deadline_ms: None }, "请执法中队处置").unwrap();
            assert!(t.center.sync().unwrap().rejected.is_empty());
            json!({ "document_id": automerge_repo::document_id(&t.dept_record), "title": title })
        }
        "dept_return" => {
            act_and_sync(&mut t.dept_phone, &t.dept_record, Action::Return, "不属于本中队职责");
            json!({ "ok": true })
        }
        "center_dispatch_to_dept_b" => {
            act_and_sync(&mut t.center, &t.dept_record, Action::Dispatch { to_unit: unit(DEPT_B), deadline_ms: None }, "改派环卫所");
            json!({ "ok": true })
        }
        "session" => json!({
            "token": token(&t.station_phone),
            "ws": format!("{}{}", t.server.base.replacen("http://", "ws://", 1), automerge_repo::PATH),
            "origin": t.server.base,
        }),
        "phone_entries" => {
            t.grid_a.sync().unwrap();
            let view = t.grid_a.get(&t.record).unwrap();
            let notes: Vec<String> = view.record.timeline.iter().map(|e| e.note.clone()).collect();
            json!({ "notes": notes, "status": view.folded.state.status.map(|s| s.as_str()) })
        }
        "phone_dispatch" => {
            act_and_sync(&mut t.station_phone, &t.record, Action::Dispatch { to_unit: unit(GRID_A), deadline_ms: None }, "请网格员处置");
            json!({ "ok": true })
        }
        "phone_new_record" => {
            let title = "新上报:井盖缺失";
            let id = t
                .grid_a
                .create_incident(NewIncident {
                    category: "0501".into(),
                    title: title.into(),
                    grid: Some(unit(GRID_A)),
                    ..Default::default()
                })
                .unwrap();
            t.grid_a.sync().unwrap();
            json!({ "document_id": automerge_repo::document_id(&id), "title": title })
        }
        "phone_sign" => {
            act_and_sync(&mut t.grid_a, &t.record, Action::Sign, "已签收");
            json!({ "ok": true })
        }
        "phone_case_no" => {
            t.grid_a.sync().unwrap();
            t.station_phone.sync().unwrap();
            let mine = t.station_phone.get(&t.record).unwrap().record.case_no;
            assert_eq!(mine, t.grid_a.get(&t.record).unwrap().record.case_no);
            json!({ "case_no": t.grid_a.get(&t.record).unwrap().record.case_no })
        }
        "revoke" => {
            let admin = t.server.phone("admin");
            let resp = http()
                .post(format!("{}/api/v1/admin/devices/{}/revoke", t.server.base, t.peer_device.device_id))
                .header("Authorization", format!("Bearer {}", token(&admin)))
                .send_empty()
                .unwrap();
            assert_eq!(resp.status(), 204);
            json!({ "ok": true })
        }
        other => panic!("unknown step {other}"),
    }
}

#[test]
fn a_javascript_automerge_repo_peer_syncs_records_under_the_phones_rules() {
    let dir = workspace().join("tests/automerge-repo");
    assert!(
        dir.join("node_modules/@automerge/automerge-repo").exists(),
        "automerge-repo is missing: run `npm install --prefix tests/automerge-repo` (xtask/setup.sh does)"
    );
    let server = TestServer::start();
    let mut grid_a = server.phone("grid_a");
    let record = grid_a
        .create_incident(NewIncident {
            category: "0501".into(),
            title: "路边垃圾堆积".into(),
            grid: Some(unit(GRID_A)),
            ..Default::default()
        })
        .unwrap();
    grid_a.sync().unwrap();
    // The record API names the record's automerge URL.
    let (status, body) = json(
        http()
            .get(format!("{}/api/v1/records/{record}", server.base))
            .header("Authorization", format!("Bearer {}", token(&grid_a)))
            .call()
            .unwrap(),
    );
    assert_eq!(status, 200);
    assert_eq!(body["automerge_url"].as_str(), automerge_repo::url(&record).as_deref());
    let station_phone = server.phone("village");
    let peer_device = server.phone("village");
    let center = server.phone("center");
    let dept_phone = server.phone("dept_a");
    let dept_peer = server.phone("dept_a");
    let mut town = Town { server, grid_a, station_phone, peer_device, record, center, dept_phone, dept_peer, dept_record: String::new() };

    let passed = process::run_node_script(&dir, "peer.test.mjs", &[], "the automerge-repo peer test", |cmd, arg| step(&mut town, cmd, arg));
    assert_eq!(passed, 9, "the peer script reported {passed} of 9 checks");
    // The refused change is nowhere on the server.
    let forged = town.server.state.db.reader().record_with_case_no("GT-2099-999999", "").unwrap().map_or(0, |_| 1);
    assert_eq!(forged, 0);
}
