//! Faults on the way: a sync cut at any byte, a server that is down.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use gridlink_core::sync::{SyncEngine, SyncError};
use gridlink_core::{Action, NewIncident};
use gridlink_tests::*;
use rand::{Rng, SeedableRng};

/// Where the next connection is cut: (client-to-server?, after this many bytes).
type Cut = Arc<Mutex<Option<(bool, usize)>>>;

/// A TCP proxy in front of the server. An armed cut is taken by the next bytes flowing in its
/// direction (on a new or a kept-alive connection) and drops the connection that many bytes later.
fn proxy(target: std::net::SocketAddr) -> (String, Cut) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let cut: Cut = Arc::default();
    let armed = cut.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { break };
            let Ok(server) = TcpStream::connect(target) else {
                continue;
            };
            let pipe = |mut from: TcpStream, mut to: TcpStream, upstream: bool, armed: Cut| {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    let mut sent = 0usize;
                    let mut limit: Option<usize> = None;
                    loop {
                        let n = match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if limit.is_none() {
                            let mut plan = armed.lock().unwrap();
                            if let Some((dir, at)) = *plan
                                && dir == upstream
                            {
                                limit = Some(sent + at);
                                *plan = None;
                            }
                        }
                        if let Some(l) = limit
                            && sent + n >= l
                        {
                            let _ = to.write_all(&buf[..l - sent]);
                            break;
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        sent += n;
                    }
                    let _ = from.shutdown(Shutdown::Both);
                    let _ = to.shutdown(Shutdown::Both);
                })
            };
            pipe(client.try_clone().unwrap(), server.try_clone().unwrap(), true, armed.clone());
            pipe(server, client, false, armed.clone());
        }
    });
    (format!("http://{addr}"), cut)
}

#[test]
fn sync_cut_at_random_bytes_completes_on_retry() {
    let seed = gridlink_tests::process::seed_from_env();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let server = TestServer::start();
    let (via_proxy, cut) = proxy(server.addr);
    let mut grid = server.phone("grid_a");
    grid.engine = SyncEngine::http(&via_proxy);
    let mut center = server.phone("center");
    let mut created = 0;
    let mut cuts = 0;
    for round in 0..12 {
        for i in 0..rng.random_range(1..6) {
            let id = grid
                .create_incident(NewIncident { category: "0802".into(), title: format!("路灯{round}-{i}"), ..Default::default() })
                .unwrap();
            grid.act(&id, Action::Escalate { to_unit: unit(VILLAGE) }, "请村里处理").unwrap();
            created += 1;
        }
        // Cut somewhere in the request (up to its size) or in the response.
        let up = rng.random_bool(0.5);
        // Within the smallest request and answer, so that the cut really happens.
        let at = if up { rng.random_range(1..600) } else { rng.random_range(1..150) };
        *cut.lock().unwrap() = Some((up, at));
        match grid.sync() {
            Err(SyncError::Network(_)) => cuts += 1,
            Ok(_) => {}
            Err(e) => panic!("unexpected error after a cut: {e}"),
        }
        *cut.lock().unwrap() = None;
        // The phone's own retry (a kept-alive connection the proxy dropped fails once more).
        grid.engine.sync_with_retry(&mut grid.client, |_| ()).unwrap();
        assert_eq!(grid.pending_count().unwrap(), 0, "round {round}");
    }
    assert!(cuts >= 6, "most syncs were really cut ({cuts})");
    center.sync().unwrap();
    assert_eq!(center.record_count().unwrap(), created);
    // Same end state as an uncut run: every record once, identical everywhere, numbers without gaps.
    let conn = server.state.db.reader();
    let ids = conn.record_ids().unwrap();
    let mut changes = 0;
    for id in &ids {
        conn.record_changes(id, &mut |_, _| {
            changes += 1;
            Ok(())
        })
        .unwrap();
    }
    assert_eq!(ids.len() as i64, created);
    assert_eq!(changes, 3 * created, "report + escalation + case number, each exactly once");
    let max_case = ids.iter().filter_map(|id| conn.case_no_of(id).unwrap()).max().unwrap();
    assert!(max_case.ends_with(&format!("{created:06}")), "{max_case}");
    for id in grid.record_ids().unwrap() {
        assert_eq!(grid.get(&id).unwrap().record, center.get(&id).unwrap().record);
    }
}

#[test]
fn a_server_that_is_down_shows_in_the_status_and_is_retried() {
    // A server that is down: the port stays ours (a dropped listener's port can be taken by another
    // test's server at once), and every connection is closed without an answer.
    let down = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = down.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in down.incoming() {
            drop(conn);
        }
    });
    let server = TestServer::start();
    let mut grid = server.phone("grid_a");
    grid.create_incident(NewIncident { category: "0501".into(), title: "离线上报".into(), ..Default::default() }).unwrap();
    let mut engine = SyncEngine::http(&format!("http://{closed}"));
    engine.policy.attempts = 3;
    let slept = std::cell::Cell::new(0);
    let err = engine.sync_with_retry(&mut grid.client, |_| slept.set(slept.get() + 1)).unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(slept.get(), 2, "three attempts, two waits");
    let status = SyncEngine::<gridlink_core::sync::HttpTransport>::status(&grid).unwrap();
    assert_eq!(status.pending, 1);
    assert_eq!(status.last_error.as_deref(), Some("网络不可用或服务器无响应,稍后自动重试"));
    assert!(status.last_success_ms.is_none());
    let d = engine.policy.delay(3);
    assert!(d >= std::time::Duration::from_secs(12) && d <= std::time::Duration::from_secs(20), "{d:?}");

    grid.sync().unwrap();
    let status = SyncEngine::<gridlink_core::sync::HttpTransport>::status(&grid).unwrap();
    assert_eq!((status.pending, status.last_error), (0, None));
    assert!(status.last_success_ms.is_some());
}

#[test]
fn shutdown_finishes_the_sync_in_flight() {
    let mut server = TestServer::start();
    let mut grid = server.phone("grid_a");
    for i in 0..3000 {
        grid.create_incident(NewIncident { category: "0501".into(), title: format!("第{i}件"), ..Default::default() }).unwrap();
    }
    let sync = std::thread::spawn(move || {
        let r = grid.sync();
        (r, grid)
    });
    // The upload is instant on loopback; ingesting 3,000 records takes the server seconds.
    std::thread::sleep(std::time::Duration::from_millis(500));
    server.begin_shutdown();
    let (result, grid) = sync.join().unwrap();
    let report = result.expect("the sync in flight completes");
    assert_eq!(report.pushed, 3000);
    assert_eq!(grid.pending_count().unwrap(), 0);
    let n = server.state.db.reader().record_ids().unwrap().len();
    assert_eq!(n, 3000, "everything acknowledged is stored");
}

/// A link that accepts the connection and then never answers (a 2G cell that lost the uplink):
/// the request fails after the answer's time limit, not after the whole request's.
#[test]
fn a_link_that_never_answers_fails_after_the_answer_time_limit() {
    use gridlink_core::sync::engine::{HttpRequest, Transport};
    use gridlink_core::sync::{HttpTransport, SyncTimeouts};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    // Accept, read what comes, answer nothing; keep the sockets open until the test ends.
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            keep.lock().unwrap().push(s);
        }
    });
    let d = SyncTimeouts::default();
    assert_eq!((d.connect + d.response).as_secs(), 45, "the documented default for a dead link");
    let limits = SyncTimeouts {
        connect: std::time::Duration::from_secs(2),
        response: std::time::Duration::from_secs(2),
        transfer: std::time::Duration::from_secs(60),
        round: std::time::Duration::from_secs(120),
    };
    let transport = HttpTransport::with_timeouts(&base, limits);
    let started = std::time::Instant::now();
    let req = HttpRequest { method: "POST", path: "/api/v1/sync".into(), token: Some("t".into()), content_type: None, body: b"x".to_vec() };
    let err = transport.call(req).unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, SyncError::Network(_)) && err.is_retryable(), "{err:?}");
    // Far below the whole request's 120 s even on a busy machine; the answer limit is 2 s.
    assert!(took >= std::time::Duration::from_secs(2) && took < std::time::Duration::from_secs(60), "{took:?}");
    assert!(!held.lock().unwrap().is_empty(), "the connection was accepted");
}

/// A photo whose file cannot be written (a hung disk, here a FIFO no one reads in place of the
/// part file) holds up no one else: while its upload hangs, other devices' sync rounds go on. The
/// photo is recorded only once its bytes are on disk.
#[test]
fn a_stuck_photo_write_does_not_hold_up_sync_rounds() {
    let server = TestServer::start();
    let uploader = server.phone("grid_a");
    let tok = token(&uploader);
    let photo: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let sha = gridlink_core::photo::sha256_hex(&photo);
    let dir = server.state.settings.data_dir.join("attachments").join(&sha[..2]);
    std::fs::create_dir_all(&dir).unwrap();
    let part = dir.join(format!("{sha}.part"));
    assert!(std::process::Command::new("mkfifo").arg(&part).status().unwrap().success());

    let url = format!("{}/api/v1/attachments/{sha}?offset=0&total={}", server.base, photo.len());
    let put = {
        let (url, tok, body) = (url.clone(), tok.clone(), photo.clone());
        move || {
            let resp = http().put(&url).header("Authorization", format!("Bearer {tok}")).send(&body[..]).unwrap();
            resp.status().as_u16()
        }
    };
    let stuck = std::thread::spawn(put.clone());
    // The upload now waits on the FIFO. Other devices report and sync as usual.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!stuck.is_finished(), "the upload should be hanging on its file");
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let base = server.base.clone();
    std::thread::spawn(move || {
        let mut grid = Phone::login(&base, "grid_b");
        let mut center = Phone::login(&base, "center");
        grid.create_incident(NewIncident { category: "0501".into(), title: "照片卡住时上报".into(), ..Default::default() }).unwrap();
        grid.sync().unwrap();
        center.sync().unwrap();
        done_tx.send(center.record_count().unwrap()).unwrap();
    });
    let seen = done_rx.recv_timeout(std::time::Duration::from_secs(120)).expect("sync rounds went on while a photo write hung");
    assert_eq!(seen, 1);
    assert!(!stuck.is_finished(), "the upload is still hanging");
    // Nothing about the photo is recorded while its bytes are not on disk.
    let status =
        http().get(format!("{}/api/v1/attachments/{sha}/status", server.base)).header("Authorization", format!("Bearer {tok}")).call();
    assert_eq!(status.unwrap().status(), 404);

    // The disk comes back (the FIFO is read, then removed): the hung upload fails and changes
    // nothing; uploaded again, the photo is stored whole.
    let drain = std::fs::File::open(&part).and_then(|mut f| std::io::copy(&mut f, &mut std::io::sink()));
    assert!(drain.is_ok());
    let first = stuck.join().unwrap();
    assert!(first >= 400, "the upload that hit the broken file answered {first}");
    let _ = std::fs::remove_file(&part);
    assert_eq!(put(), 200);
    let (code, body) = json(
        http()
            .get(format!("{}/api/v1/attachments/{sha}/status", server.base))
            .header("Authorization", format!("Bearer {tok}"))
            .call()
            .unwrap(),
    );
    assert_eq!(code, 200);
    assert_eq!(body["complete"], true);
    assert_eq!(std::fs::read(dir.join(&sha)).unwrap(), photo);
}
