//! The server killed with SIGKILL at random moments — during a heavy sync burst from three grid
//! members, a station dispatching with short deadlines, and the deadline sweeper supervising
//! what became overdue every 50 ms — then restarted on the same database, many times (50 by
//! default, `GRIDLINK_KILLS=n` for more): every change a device saw acknowledged is there, the
//! database is intact, and every supervision has exactly its notices, once.

use std::collections::HashSet;
use std::process::Child;
use std::time::{Duration, Instant};

use gridlink_core::sync::SyncEngine;
use gridlink_core::{Client, NewIncident};
use gridlink_tests::process::{self, Serve};
use rand::{Rng, SeedableRng};

const BIN: &str = env!("CARGO_BIN_EXE_gridlink-server");

/// Starts the server with a fast deadline sweeper; returns it with its address.
fn serve(db: &std::path::Path) -> (Child, String) {
    let how = Serve { env: vec![("GRIDLINK_SWEEP_INTERVAL_MS", "50")], ..Default::default() };
    let (child, base, _) = process::serve(BIN.as_ref(), db, how);
    (child, base)
}

#[test]
fn acknowledged_changes_survive_sigkill() {
    let seed = process::seed_from_env();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("town.db");
    process::import_csv(
        BIN.as_ref(),
        &db,
        "units",
        "code,name,kind,parent,department_key\n532331101,广通镇,镇,,\n532331101201,广通社区,村,532331101,\n532331101201-01,一组,组,532331101201,\n532331101201-01-01,1号网格,网格,532331101201-01,\n532331101201-01-02,2号网格,网格,532331101201-01,\n532331101201-01-03,3号网格,网格,532331101201-01,\n",
    );
    process::import_csv(
        BIN.as_ref(),
        &db,
        "people",
        "id,name,role,unit,password\ng1,王一,网格员,532331101201-01-01,password-1\ng2,王二,网格员,532331101201-01-02,password-2\ng3,王三,网格员,532331101201-01-03,password-3\nv1,李站,便民服务站代办员,532331101201,password-4\n",
    );

    let (mut server, mut base) = serve(&db);
    let mut phones: Vec<(Client, SyncEngine)> = (1..=3)
        .map(|i| {
            let mut c = Client::open(dir.path().join(format!("phone{i}.db"))).unwrap();
            let e = SyncEngine::http(&base);
            e.login(&mut c, &format!("g{i}"), &format!("password-{i}"), "手机").unwrap();
            (c, e)
        })
        .collect();
    let mut station = Client::open(dir.path().join("station.db")).unwrap();
    SyncEngine::http(&base).login(&mut station, "v1", "password-4", "服务站电脑").unwrap();
    let mut supervisions = 0;
    let kills: usize = std::env::var("GRIDLINK_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(50);
    let mut acked: HashSet<String> = HashSet::new();
    for kill in 0..kills {
        let deadline = Instant::now() + Duration::from_millis(rng.random_range(150..900));
        let station_worker = {
            let base = base.clone();
            let mut c = station;
            std::thread::spawn(move || {
                let e = SyncEngine::http(&base);
                let mut mine = HashSet::new();
                loop {
                    let before: HashSet<String> = c.outbox(100_000).unwrap().into_iter().map(|e| e.hash).collect();
                    if e.sync_once(&mut c).is_err() {
                        break;
                    }
                    let after: HashSet<String> = c.outbox(100_000).unwrap().into_iter().map(|e| e.hash).collect();
                    mine.extend(before.difference(&after).cloned());
                    gridlink_tests::dispatch_with_short_deadlines(&mut c, "532331101201-01-01");
                }
                (c, mine)
            })
        };
        let (tx, rx) = std::sync::mpsc::channel::<HashSet<String>>();
        let workers: Vec<_> = phones
            .drain(..)
            .enumerate()
            .map(|(i, (mut c, _))| {
                let tx = tx.clone();
                let base = base.clone();
                std::thread::spawn(move || {
                    let e = SyncEngine::http(&base);
                    let mut mine = HashSet::new();
                    for n in 0.. {
                        for k in 0..5 {
                            c.create_incident(NewIncident {
                                category: "0501".into(),
                                title: format!("第{kill}轮{i}-{n}-{k}"),
                                ..Default::default()
                            })
                            .unwrap();
                        }
                        let before: HashSet<String> = c.outbox(100_000).unwrap().into_iter().map(|e| e.hash).collect();
                        if e.sync_once(&mut c).is_err() {
                            break; // the server died under us
                        }
                        let after: HashSet<String> = c.outbox(100_000).unwrap().into_iter().map(|e| e.hash).collect();
                        mine.extend(before.difference(&after).cloned());
                    }
                    tx.send(mine).unwrap();
                    (c, e)
                })
            })
            .collect();
        drop(tx);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        server.kill().unwrap(); // SIGKILL
        server.wait().unwrap();
        for w in workers {
            phones.push(w.join().unwrap());
        }
        let (c, mine) = station_worker.join().unwrap();
        station = c;
        acked.extend(mine);
        for set in rx {
            acked.extend(set);
        }
        (server, base) = serve(&db);
        for (_, e) in phones.iter_mut() {
            *e = SyncEngine::http(&base);
        }
        let conn = rusqlite::Connection::open(&db).unwrap();
        let mut stmt = conn.prepare("SELECT hash FROM changes").unwrap();
        let stored: HashSet<String> = stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        let lost: Vec<_> = acked.difference(&stored).collect();
        assert!(lost.is_empty(), "kill {kill}: {} acknowledged changes lost", lost.len());
        let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(ok, "ok");
        // A supervision and its two notices (holder and its parent) commit together, once per deadline.
        let twice: i64 = conn
            .query_row("SELECT count(*) FROM (SELECT 1 FROM notices GROUP BY doc_id, unit, text HAVING count(*) > 1)", [], |r| r.get(0))
            .unwrap();
        assert_eq!(twice, 0, "kill {kill}: a deadline was supervised twice");
        let (supervised, notices): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT coalesce(sum(json_extract(facts, '$.supervisions')), 0) FROM docs), (SELECT count(*) FROM notices)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(notices, 2 * supervised, "kill {kill}: supervisions and notices disagree");
        supervisions = supervised;
    }
    assert!(supervisions > 0, "the sweeper supervised overdue items during the run");
    println!("{kills} kills: {} acknowledged changes all kept, {supervisions} supervisions each with its notices", acked.len());
    assert!(acked.len() > 20, "the burst acknowledged changes ({})", acked.len());
    // After the last restart everything pending goes up and case numbers have no gaps.
    for (c, e) in phones.iter_mut() {
        e.sync_once(c).unwrap();
        assert_eq!(c.pending_count().unwrap(), 0);
    }
    SyncEngine::http(&base).sync_once(&mut station).unwrap();
    assert_eq!(station.pending_count().unwrap(), 0);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (n, max): (i64, String) = conn.query_row("SELECT count(*), max(case_no) FROM docs", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert!(max.ends_with(&format!("{n:06}")), "{n} records, last number {max}");
    server.kill().unwrap();
    let _ = server.wait();
}
