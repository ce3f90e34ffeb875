//! The server killed with SIGKILL during a heavy sync burst, then restarted on the same database:
//! every change a device saw acknowledged is there.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gridlink_core::sync::SyncEngine;
use gridlink_core::{Client, NewIncident};
use rand::{Rng, SeedableRng};

const BIN: &str = env!("CARGO_BIN_EXE_gridlink-server");

fn import(db: &std::path::Path, what: &str, file: &std::path::Path) {
    let out = Command::new(BIN).args(["import", "--db"]).arg(db).arg(what).arg(file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Starts the server and returns it with its address (it prints the address it bound).
fn serve(db: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .env("GRIDLINK_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{line}");
    (child, base)
}

#[test]
fn acknowledged_changes_survive_sigkill() {
    let seed: u64 = std::env::var("GRIDLINK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("seed {seed} (replay with GRIDLINK_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("town.db");
    let units = dir.path().join("units.csv");
    std::fs::write(
        &units,
        "code,name,kind,parent,department_key\n532331101,广通镇,镇,,\n532331101201,广通社区,村,532331101,\n532331101201-01,一组,组,532331101201,\n532331101201-01-01,1号网格,网格,532331101201-01,\n532331101201-01-02,2号网格,网格,532331101201-01,\n532331101201-01-03,3号网格,网格,532331101201-01,\n",
    )
    .unwrap();
    let people = dir.path().join("people.csv");
    std::fs::write(
        &people,
        "id,name,role,unit,password\ng1,王一,网格员,532331101201-01-01,password-1\ng2,王二,网格员,532331101201-01-02,password-2\ng3,王三,网格员,532331101201-01-03,password-3\n",
    )
    .unwrap();
    import(&db, "units", &units);
    import(&db, "people", &people);

    let (mut server, mut base) = serve(&db);
    let mut phones: Vec<(Client, SyncEngine)> = (1..=3)
        .map(|i| {
            let mut c = Client::open(dir.path().join(format!("phone{i}.db"))).unwrap();
            let e = SyncEngine::http(&base);
            e.login(&mut c, &format!("g{i}"), &format!("password-{i}"), "手机").unwrap();
            (c, e)
        })
        .collect();
    let mut acked: HashSet<String> = HashSet::new();
    for kill in 0..4 {
        let deadline = Instant::now() + Duration::from_millis(rng.random_range(300..1500));
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
    }
    assert!(acked.len() > 20, "the burst acknowledged changes ({})", acked.len());
    // After the last restart everything pending goes up and case numbers have no gaps.
    for (c, e) in phones.iter_mut() {
        e.sync_once(c).unwrap();
        assert_eq!(c.pending_count().unwrap(), 0);
    }
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (n, max): (i64, String) = conn.query_row("SELECT count(*), max(case_no) FROM docs", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert!(max.ends_with(&format!("{n:06}")), "{n} records, last number {max}");
    server.kill().unwrap();
    let _ = server.wait();
}
