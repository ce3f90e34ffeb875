//! Two server nodes on one PostgreSQL database behind a round-robin proxy (the test's own load
//! balancer), devices syncing through it, and one node killed with SIGKILL and started again,
//! over and over (20 times by default, `GRIDLINK_NODE_KILLS=n` for more), while both nodes sweep
//! deadlines every 50 ms: every change a device saw acknowledged is kept, no deadline is
//! supervised twice, and case numbers have no gaps.
//!
//! Runs when `GRIDLINK_TEST_PG_URL` names a PostgreSQL server (as `cargo xtask test` does).

use std::collections::HashSet;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gridlink_core::sync::SyncEngine;
use gridlink_core::{Client, NewIncident};
use gridlink_server::storage::{PgStorage, Storage};
use gridlink_tests::process::{self, Serve};
use rand::{Rng, SeedableRng};

const BIN: &str = env!("CARGO_BIN_EXE_gridlink-server");

/// A server node on `db`, its photos in `data`, sweeping every 50 ms; returns its host:port.
fn node(db: &str, data: &Path) -> (Child, String) {
    let how = Serve { args: vec!["--data-dir".as_ref(), data.as_os_str()], env: vec![("GRIDLINK_SWEEP_INTERVAL_MS", "50")], stderr: false };
    let (child, base, _) = process::serve(BIN.as_ref(), Path::new(db), how);
    (child, base.trim_start_matches("http://").to_owned())
}

/// The load balancer: each new connection goes to the next node in turn, or to the other one
/// when that node does not answer. Returns its address.
fn round_robin(nodes: Arc<Mutex<Vec<String>>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let turn = AtomicUsize::new(0);
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let list = nodes.lock().unwrap().clone();
            let first = turn.fetch_add(1, Ordering::Relaxed);
            let upstream = (0..list.len()).find_map(|k| TcpStream::connect(&list[(first + k) % list.len()]).ok());
            let Some(upstream) = upstream else { continue };
            for (mut from, mut to) in [(client.try_clone().unwrap(), upstream.try_clone().unwrap()), (upstream, client)] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    format!("http://{addr}")
}

/// Pushes what the phone has, as long as the town answers; returns the changes acknowledged.
fn push(c: &mut Client, e: &SyncEngine) -> Option<HashSet<String>> {
    let before: HashSet<String> = c.outbox(100_000).unwrap().into_iter().map(|e| e.hash).collect();
    e.sync_once(c).ok()?;
    let after: HashSet<String> = c.outbox(100_000).unwrap().into_iter().map(|e| e.hash).collect();
    Some(before.difference(&after).cloned().collect())
}

#[test]
fn a_node_killed_again_and_again_loses_nothing() {
    let Some(admin) = gridlink_tests::postgres_for_tests() else { return };
    let seed = process::seed_from_env();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("photos");
    let db = PgStorage::create_database(&admin, &format!("gl_kill_{:012x}", rand::random::<u64>() >> 16)).unwrap();
    process::import_csv(
        BIN.as_ref(),
        Path::new(&db),
        "units",
        "code,name,kind,parent,department_key\n532331101,广通镇,镇,,\n532331101201,广通社区,村,532331101,\n532331101201-01,一组,组,532331101201,\n532331101201-01-01,1号网格,网格,532331101201-01,\n532331101201-01-02,2号网格,网格,532331101201-01,\n",
    );
    process::import_csv(
        BIN.as_ref(),
        Path::new(&db),
        "people",
        "id,name,role,unit,password\ng1,王一,网格员,532331101201-01-01,password-1\ng2,王二,网格员,532331101201-01-02,password-2\nv1,李站,便民服务站代办员,532331101201,password-4\n",
    );
    let mut nodes: Vec<(Child, String)> = vec![node(&db, &data), node(&db, &data)];
    let upstreams = Arc::new(Mutex::new(nodes.iter().map(|(_, a)| a.clone()).collect::<Vec<_>>()));
    let base = round_robin(upstreams.clone());
    let login = |name: &str, user: &str, password: &str| {
        let mut c = Client::open(dir.path().join(format!("{name}.db"))).unwrap();
        SyncEngine::http(&base).login(&mut c, user, password, name).unwrap();
        c
    };
    let mut phones = vec![login("phone1", "g1", "password-1"), login("phone2", "g2", "password-2")];
    let mut station = login("station", "v1", "password-4");
    let kills: usize = std::env::var("GRIDLINK_NODE_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let check = PgStorage::connect(&db).unwrap();
    let mut acked: HashSet<String> = HashSet::new();
    let mut failed_rounds = 0;
    for kill in 0..kills {
        let until = Instant::now() + Duration::from_millis(rng.random_range(300..1200));
        let workers: Vec<_> = phones
            .drain(..)
            .enumerate()
            .map(|(i, mut c)| {
                let base = base.clone();
                std::thread::spawn(move || {
                    let e = SyncEngine::http(&base);
                    let (mut mine, mut failed) = (HashSet::new(), 0);
                    let mut n = 0;
                    while Instant::now() < until {
                        for k in 0..3 {
                            let title = format!("第{kill}轮{i}-{n}-{k}");
                            c.create_incident(NewIncident { category: "0501".into(), title, ..Default::default() }).unwrap();
                        }
                        n += 1;
                        match push(&mut c, &e) {
                            Some(done) => mine.extend(done),
                            None => failed += 1, // cut by the kill: the next round goes to a live node
                        }
                    }
                    (c, mine, failed)
                })
            })
            .collect();
        let station_worker = {
            let base = base.clone();
            let mut c = station;
            std::thread::spawn(move || {
                let e = SyncEngine::http(&base);
                let mut mine = HashSet::new();
                while Instant::now() < until {
                    if let Some(done) = push(&mut c, &e) {
                        mine.extend(done);
                    }
                    gridlink_tests::dispatch_with_short_deadlines(&mut c, "532331101201-01-01");
                }
                (c, mine)
            })
        };
        // Half-way through, one node dies (SIGKILL) and comes back on a new port.
        std::thread::sleep((until - Instant::now()) / 2);
        let victim = kill % 2;
        nodes[victim].0.kill().unwrap();
        nodes[victim].0.wait().unwrap();
        nodes[victim] = node(&db, &data);
        upstreams.lock().unwrap()[victim] = nodes[victim].1.clone();
        for w in workers {
            let (c, mine, failed) = w.join().unwrap();
            phones.push(c);
            acked.extend(mine);
            failed_rounds += failed;
        }
        let (c, mine) = station_worker.join().unwrap();
        station = c;
        acked.extend(mine);
        let lost = acked.iter().filter(|h| !check.change_known(h).unwrap()).count();
        assert_eq!(lost, 0, "kill {kill}: {lost} acknowledged changes lost");
    }
    // Everything still pending goes up, through either node.
    for c in phones.iter_mut().chain([&mut station]) {
        let e = SyncEngine::http(&base);
        e.sync_once(c).unwrap();
        assert_eq!(c.pending_count().unwrap(), 0);
    }
    // Every record once, numbered without gaps; each deadline supervised once, with its notices.
    let ids = check.record_ids().unwrap();
    let mut numbers: Vec<u32> =
        ids.iter().filter_map(|id| check.case_no_of(id).unwrap()).map(|n| n.rsplit('-').next().unwrap().parse().unwrap()).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=ids.len() as u32).collect::<Vec<_>>(), "case numbers without gaps or repeats");
    let notices = check.notices("532331101", 0, i64::MAX, 1_000_000).unwrap();
    let distinct: HashSet<_> = notices.iter().map(|n| (n.doc_id.clone(), n.unit.clone(), n.text.clone())).collect();
    assert_eq!(distinct.len(), notices.len(), "a deadline was supervised twice");
    assert!(!notices.is_empty(), "the sweepers supervised overdue work during the run");
    println!(
        "{kills} node kills: {} acknowledged changes all kept, {} records numbered without gaps, {} supervision notices once each, {failed_rounds} rounds cut",
        acked.len(),
        ids.len(),
        notices.len()
    );
    assert!(acked.len() > 100, "the devices kept working through the kills ({})", acked.len());
    for (mut child, _) in nodes {
        let _ = child.kill();
        let _ = child.wait();
    }
}
