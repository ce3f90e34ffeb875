//! The web console in a real browser: Debian Chromium driven by playwright-core
//! (`tests/console/console.test.mjs`) against a real server with the demo town, while phones with
//! their own stores sync over HTTP. The browser script asks this test for phone steps on its
//! stdin/stdout (`@@{json}` lines), so a change synced by a phone can be watched arriving in an
//! open console page.

use std::collections::HashMap;
use std::path::PathBuf;

use gridlink_core::sync::{SyncEngine, SyncError};
use gridlink_core::{Action, Client, NewIncident, Status};
use gridlink_server::storage::{ListOrder, RecordFilter};
use gridlink_tests::process;
use gridlink_tests::{DEMO_PASSWORD, Phone, TestServer, unit};
use serde_json::{Value, json};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Runs a phone step the browser script asked for.
fn phone_step(server: &TestServer, grid_phone: &mut Phone, others: &mut HashMap<String, Phone>, cmd: &str, arg: &Value) -> Value {
    match cmd {
        // A grid member reports an illegal building in the field and syncs.
        "report" => {
            let id = grid_phone
                .create_incident(NewIncident {
                    category: "0602".into(),
                    title: arg["title"].as_str().unwrap().into(),
                    description: "新建彩钢棚约30平方米,未见审批手续。".into(),
                    grid: Some(unit("532331101201-01-01")),
                    address: "广通社区老街12号".into(),
                    note: "巡查发现".into(),
                    ..Default::default()
                })
                .unwrap();
            grid_phone.sync().unwrap();
            let view = grid_phone.get(&id).unwrap();
            json!({ "id": id, "case_no": view.record.case_no })
        }
        // The grid member checks the result on the spot (核查) and syncs.
        "verify" => {
            let id = arg["id"].as_str().unwrap();
            grid_phone.sync().unwrap();
            let view = grid_phone.get(id).unwrap();
            assert_eq!(view.folded.state.status, Some(Status::Handled), "the phone sees the department's result");
            grid_phone.act(id, Action::Verify, "现场核实,违建已拆除").unwrap();
            grid_phone.sync().unwrap();
            json!({ "ok": true })
        }
        // The phone sees what the console did.
        "status" => {
            grid_phone.sync().unwrap();
            let view = grid_phone.get(arg["id"].as_str().unwrap()).unwrap();
            json!({ "status": view.folded.state.status.map(|s| s.as_str()), "entries": view.record.timeline.len() })
        }
        // A record of another village, for the access test.
        "other_village_record" => {
            let village = "532331101202";
            let listed = server.state.db.reader().list_records(&RecordFilter::ALL, ListOrder::Created, village, "", 10_000, 0).unwrap();
            let id = listed.into_iter().filter(|r| r.location.starts_with(village)).map(|r| r.id).min().expect("a record of that village");
            json!({ "id": id })
        }
        // A phone of an account the administrator made logs in (or fails to).
        "login" => {
            let (user, password) = (arg["user"].as_str().unwrap(), arg["password"].as_str().unwrap());
            let dir = tempfile::tempdir().unwrap();
            let mut client = Client::open(dir.path().join("phone.db")).unwrap();
            let engine = SyncEngine::http(&server.base);
            match engine.login(&mut client, user, password, "新手机") {
                Ok(login) => {
                    let device_id = login.device_id.clone();
                    others.insert(user.to_owned(), Phone { client, engine, dir, base: server.base.clone(), device_id: login.device_id });
                    json!({ "ok": true, "device_id": device_id })
                }
                Err(e) => json!({ "ok": false, "error": e.to_string() }),
            }
        }
        // That phone syncs: what happens to it.
        "sync" => {
            let phone = others.get_mut(arg["user"].as_str().unwrap()).unwrap();
            match phone.sync() {
                Ok(_) => json!({ "result": "ok" }),
                Err(SyncError::Wiped) => json!({ "result": "wiped", "records": phone.record_count().unwrap() }),
                Err(SyncError::Unauthorized) => json!({ "result": "unauthorized" }),
                Err(e) => json!({ "result": e.to_string() }),
            }
        }
        // The grid member reports an incident of a category: which unit holds it after routing.
        "route" => {
            let id = grid_phone
                .create_incident(NewIncident {
                    category: arg["category"].as_str().unwrap().into(),
                    title: "分流试验".into(),
                    grid: Some(unit("532331101201-01-01")),
                    ..Default::default()
                })
                .unwrap();
            grid_phone.sync().unwrap();
            let holder = grid_phone.get(&id).unwrap().folded.state.holder.map(|u| u.to_string());
            json!({ "holder": holder })
        }
        other => panic!("unknown phone step {other}"),
    }
}

#[test]
fn console_in_a_real_browser() {
    let dir = workspace().join("tests/console");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is missing: run `npm ci --prefix tests/console` (bash .ci/run does)"
    );
    let shots = workspace().join("target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let server = TestServer::start_demo();
    let mut grid_phone = Phone::login_with_password(&server.base, "gt201-0101", DEMO_PASSWORD);
    let photo = workspace().join("bindings/tests/fixtures/street.jpg");
    let env: [(&str, &std::ffi::OsStr); 4] = [
        ("GRIDLINK_URL", server.base.as_ref()),
        ("GRIDLINK_PASSWORD", DEMO_PASSWORD.as_ref()),
        ("SCREENSHOT_DIR", shots.as_os_str()),
        ("FIXTURE_PHOTO", photo.as_os_str()),
    ];
    let mut others = HashMap::new();
    let what = format!("the browser test (screenshots in {})", shots.display());
    let passed = process::run_node_script(&dir, "console.test.mjs", &env, &what, |cmd, arg| {
        phone_step(&server, &mut grid_phone, &mut others, cmd, arg)
    });
    assert!(passed >= 10, "the browser script reported only {passed} passed checks");
}
