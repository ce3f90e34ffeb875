//! Several server nodes on one PostgreSQL database (issue 18): any device may reach any node, and
//! the town behaves as on one server: every change reaches every device that should have it,
//! case numbers stay in order without gaps, and the deadline sweeper supervises once however
//! many nodes run it at the same moment.
//!
//! The nodes are real servers (each its own database connections, writer thread and HTTP
//! listener) in this process; the PostgreSQL server is named by `GRIDLINK_TEST_PG_URL` (or
//! `GRIDLINK_TEST_SERVER_PG`), as `cargo xtask test` sets it. Without one the tests are skipped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gridlink_core::sync::SyncEngine;
use gridlink_core::{Action, Clock, ManualClock, NewIncident, SystemClock};
use gridlink_server::AppState;
use gridlink_server::db::Location;
use gridlink_server::storage::PgStorage;
use gridlink_tests::{DEPT_A, GRID_A, Phone, TestServer, http, seed, token, unit};

/// Two nodes of the test town on a new database of their own, sharing the photo directory.
fn two_nodes(admin: &str, clock: Arc<dyn Clock>) -> (TestServer, TestServer) {
    let name = format!("gl_nodes_{:012x}", rand::random::<u64>() >> 16);
    let db = Location::Postgres(PgStorage::create_database(admin, &name).unwrap());
    let first = tempfile::tempdir().unwrap();
    let data = first.path().join("data");
    let a = TestServer::start_node(first, &db, data.clone(), clock.clone(), seed);
    let b = TestServer::start_node(tempfile::tempdir().unwrap(), &db, data, clock, |_: &AppState| {});
    (a, b)
}

/// Case numbers of every record the town holds, sorted.
fn case_numbers(server: &TestServer) -> Vec<u32> {
    let conn = server.state.db.reader();
    let mut nos: Vec<u32> = conn
        .record_ids()
        .unwrap()
        .iter()
        .filter_map(|id| conn.case_no_of(id).unwrap())
        .map(|n| n.rsplit('-').next().unwrap().parse().unwrap())
        .collect();
    nos.sort_unstable();
    nos
}

#[test]
fn devices_on_two_nodes_see_one_town() {
    let Some(admin) = gridlink_tests::postgres_for_tests() else { return };
    let (a, b) = two_nodes(&admin, Arc::new(SystemClock));
    const ROUNDS: usize = 12;
    const PER_ROUND: usize = 2;
    // Two grid members push at the same time, one to each node.
    let writer = |base: String, user: &'static str| {
        std::thread::spawn(move || {
            let mut phone = Phone::login(&base, user);
            let mut ids = Vec::new();
            for round in 0..ROUNDS {
                for k in 0..PER_ROUND {
                    let title = format!("{user} 第{round}轮第{k}件");
                    ids.push(phone.create_incident(NewIncident { category: "0503".into(), title, ..Default::default() }).unwrap());
                }
                phone.sync().unwrap();
            }
            (phone, ids)
        })
    };
    let one = writer(a.base.clone(), "grid_a");
    let two = writer(b.base.clone(), "grid_b");
    // The center's one device syncs in between, with every round on the other node: its cursor
    // moves across nodes while both of them commit.
    let mut center = a.phone("center");
    let mut rounds = 0;
    while !(one.is_finished() && two.is_finished()) {
        let next = if rounds % 2 == 0 { &b.base } else { &a.base };
        center.engine = SyncEngine::http(next);
        center.sync().unwrap();
        rounds += 1;
    }
    let (grid_a, mine_a) = one.join().unwrap();
    let (grid_b, mine_b) = two.join().unwrap();
    center.engine = SyncEngine::http(&b.base);
    center.sync().unwrap();
    center.engine = SyncEngine::http(&a.base);
    let last = center.sync().unwrap();
    assert_eq!(last.received_docs, 0, "nothing was still on its way");
    assert!(rounds >= 4, "the center synced while both pushed ({rounds} rounds)");

    let total = 2 * ROUNDS * PER_ROUND;
    assert_eq!(center.record_count().unwrap(), total as i64, "every report reached the center's device once");
    for (phone, ids) in [(&grid_a, &mine_a), (&grid_b, &mine_b)] {
        for id in ids {
            let theirs = phone.get(id).unwrap();
            assert_eq!(center.get(id).unwrap().record, theirs.record, "the center's copy is the author's");
            assert!(theirs.record.case_no.is_some(), "the case number came back to the author");
        }
    }
    // One counter for the town across both nodes: 1..=total, each once.
    assert_eq!(case_numbers(&a), (1..=total as u32).collect::<Vec<_>>());
    assert_eq!(case_numbers(&b), case_numbers(&a), "both nodes read the same database");
}

#[test]
fn the_sweeper_on_every_node_supervises_once() {
    let Some(admin) = gridlink_tests::postgres_for_tests() else { return };
    let clock = Arc::new(ManualClock::new(1_795_000_000_000)); // 2026-11-18, a Wednesday
    let (a, b) = two_nodes(&admin, clock.clone());
    let mut center = Phone::login_with_clock(&a.base, "center", clock.clone());
    let mut ids = Vec::new();
    for i in 0..8 {
        let new =
            NewIncident { category: "0501".into(), title: format!("暴露垃圾 {i}"), grid: Some(unit(GRID_A)), ..Default::default() };
        let id = center.create_incident(new).unwrap();
        center.act(&id, Action::Accept, "").unwrap();
        center.act(&id, Action::Dispatch { to_unit: unit(DEPT_A), deadline_ms: None }, "").unwrap();
        ids.push(id);
    }
    center.sync().unwrap();
    // A month later the department has done nothing: every one is overdue.
    clock.advance(30 * 86_400_000);
    let sweeps: Vec<_> = [&a, &b, &a, &b]
        .into_iter()
        .map(|node| {
            let state = node.state.clone();
            std::thread::spawn(move || gridlink_server::linkage::sweep(&state).unwrap())
        })
        .collect();
    let raised: usize = sweeps.into_iter().map(|s| s.join().unwrap()).sum();
    assert_eq!(raised, ids.len(), "four sweeps at once on two nodes supervised each overdue incident once");
    assert_eq!(gridlink_server::linkage::sweep(&b.state).unwrap(), 0);
    center.engine = SyncEngine::http(&b.base);
    center.sync().unwrap();
    for id in &ids {
        assert_eq!(center.get(id).unwrap().folded.state.supervisions, 1, "{id}");
    }
}

/// The events a receiver got for `doc` within `wait`.
fn events_for(rx: &mut tokio::sync::broadcast::Receiver<gridlink_server::records::ScopeEvent>, doc: &str, wait: Duration) -> usize {
    let until = Instant::now() + wait;
    let mut n = 0;
    while Instant::now() < until {
        match rx.try_recv() {
            Ok(e) if e.doc_id == doc => n += 1,
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    n
}

#[test]
fn a_change_on_one_node_is_a_live_event_on_the_other() {
    let Some(admin) = gridlink_tests::postgres_for_tests() else { return };
    let (a, b) = two_nodes(&admin, Arc::new(SystemClock));
    let (mut on_a, mut on_b) = (a.state.events.subscribe(), b.state.events.subscribe());
    let mut grid = a.phone("grid_a");
    let id =
        grid.create_incident(NewIncident { category: "0503".into(), title: "河堤路倾倒建筑垃圾".into(), ..Default::default() }).unwrap();
    grid.sync().unwrap();
    // Clients of node b (its `/api/v1/events`, the console's live pages) read this broadcast.
    assert!(events_for(&mut on_b, &id, Duration::from_secs(5)) >= 1, "node b heard of the report that node a stored");
    // Node a told its own clients once, and did not hear its own event back.
    let own = events_for(&mut on_a, &id, Duration::from_secs(1));
    assert!(own >= 1, "node a told its own clients");
    // No echo of its own event comes back from the database later.
    assert_eq!(events_for(&mut on_a, &id, Duration::from_millis(500)), 0, "node a heard its own event back");
    let mut again = b.state.events.subscribe();
    let mut center = b.phone("center");
    center.sync().unwrap();
    center.act(&id, gridlink_core::Action::Accept, "").unwrap();
    center.sync().unwrap();
    assert!(events_for(&mut on_a, &id, Duration::from_secs(5)) >= 1, "and back: node a heard of node b's write");
    assert!(events_for(&mut again, &id, Duration::from_millis(500)) >= 1);
}

#[test]
fn a_photo_upload_cut_on_one_node_resumes_on_the_other() {
    let Some(admin) = gridlink_tests::postgres_for_tests() else { return };
    let (a, b) = two_nodes(&admin, Arc::new(SystemClock));
    let mut grid = a.phone("grid_a");
    let id = grid.create_incident(NewIncident { category: "0503".into(), title: "带照片的事件".into(), ..Default::default() }).unwrap();
    let img = image::RgbImage::from_fn(1600, 1000, |x, y| image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x + y) % 233) as u8]));
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90).encode_image(&img).unwrap();
    let sha = grid.attach_photo(&id, &jpeg).unwrap();
    let photo = grid.photo(&sha).unwrap().unwrap();
    // Half of it reaches node a before the link drops.
    let half = photo.len() / 2;
    let resp = http()
        .put(format!("{}/api/v1/attachments/{sha}?offset=0&total={}", a.base, photo.len()))
        .header("Authorization", format!("Bearer {}", token(&grid)))
        .send(&photo[..half])
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // The phone's next sync lands on node b, which takes the upload up where node a left it.
    grid.engine = SyncEngine::http(&b.base);
    let r = grid.sync().unwrap();
    assert_eq!(r.photos_uploaded, 1);
    assert!(r.bytes_up < photo.len() + 20_000, "the upload resumed instead of restarting: {r:?}");
    // And node a serves the whole photo.
    let mut village = a.phone("village");
    village.sync().unwrap();
    assert_eq!(village.engine.fetch_photo(&mut village.client, &sha).unwrap(), photo);
}

#[test]
fn password_guesses_are_limited_across_nodes() {
    let Some(admin) = gridlink_tests::postgres_for_tests() else { return };
    let (a, b) = two_nodes(&admin, Arc::new(SystemClock));
    let login = |base: &str, password: &str| {
        let body = serde_json::json!({ "username": "center", "password": password, "device_name": "猜密码" });
        http()
            .post(format!("{base}/api/v1/login"))
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes())
            .unwrap()
            .status()
            .as_u16()
    };
    // Ten wrong guesses, half on each node.
    for i in 0..10 {
        let node = if i % 2 == 0 { &a.base } else { &b.base };
        assert_eq!(login(node, "wrong-password"), 401, "guess {i}");
    }
    // The eleventh is refused on either node, even with the right password.
    assert_eq!(login(&a.base, "wrong-password"), 429);
    assert_eq!(login(&b.base, gridlink_tests::PASSWORD), 429, "node b counted node a's failures too");
}
