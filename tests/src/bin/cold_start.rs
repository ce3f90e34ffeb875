//! A cold server start on a town of 100,000 records (issue 20): the release server binary started
//! on the database, timed until `/healthz` answers and until a grid member's new phone has logged
//! in and taken its first sync. Prints figures; fails only if something breaks, never on speed.
//!
//! `cargo build --release -p gridlink-server -p gridlink-tests --bin gridlink-server --bin cold_start
//! && target/release/cold_start [records] [warm]`. The town is made once (the demo town through the
//! console's ingest path, `demo::bulk`, several minutes) and kept in `target/bench-towns/`. Run as
//! root, the kernel's page cache is dropped first, so the database comes from the disk.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use gridlink_core::Client;
use gridlink_core::sync::SyncEngine;
use gridlink_tests::process::{self, Serve};

fn main() {
    let records: usize = std::env::args().filter_map(|a| a.parse().ok()).next().unwrap_or(100_000);
    let warm = std::env::args().any(|a| a == "warm");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-towns");
    let db = dir.join(format!("town-{records}.db"));
    let t = Instant::now();
    let (state, made) = gridlink_server::demo::bench_town(&dir, records).unwrap();
    drop(state);
    if made {
        println!("Made a town of {records} records in {:.0} s.", t.elapsed().as_secs_f64());
    }
    let bytes: u64 = ["", "-wal"].iter().filter_map(|s| std::fs::metadata(format!("{}{s}", db.display())).ok()).map(|m| m.len()).sum();
    let server = std::env::current_exe().unwrap().parent().unwrap().join("gridlink-server");
    assert!(server.exists(), "build the server first: cargo build --release -p gridlink-server");
    let phones = tempfile::tempdir().unwrap();

    println!(
        "\n| run | page cache | `/healthz` answers | login answered | first sync served (login + a grid member's bootstrap) | records sent |\n|---|---|---|---|---|---|"
    );
    for run in 1..=3 {
        // Cold: nothing of the database in memory (root only; otherwise say so). `warm` keeps
        // the page cache, to tell the disk's share from the server's.
        let dropped = !warm && std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok();
        let t = Instant::now();
        let data = dir.join("data");
        let how = Serve { args: vec!["--data-dir".as_ref(), data.as_os_str()], ..Default::default() };
        let (mut child, base, _) = process::serve(&server, &db, how);
        let healthy = loop {
            if ureq::get(&format!("{base}/healthz")).call().is_ok_and(|r| r.status() == 200) {
                break t.elapsed();
            }
            assert!(t.elapsed() < Duration::from_secs(120), "the server never answered /healthz");
            std::thread::sleep(Duration::from_millis(5));
        };
        let mut phone = Client::open(phones.path().join(format!("grid-{run}.db"))).unwrap();
        let engine = SyncEngine::http(&base);
        engine.login(&mut phone, "gt201-0101", gridlink_server::demo::DEMO_PASSWORD, "冷启动").unwrap();
        let logged = t.elapsed();
        engine.sync_once(&mut phone).unwrap();
        let synced = t.elapsed();
        println!(
            "| {run} | {} | {:.0} ms | {:.0} ms | {:.0} ms | {} |",
            if dropped { "dropped" } else { "warm" },
            healthy.as_secs_f64() * 1e3,
            logged.as_secs_f64() * 1e3,
            synced.as_secs_f64() * 1e3,
            phone.record_count().unwrap()
        );
        let _ = child.kill();
        let _ = child.wait();
    }
    println!("\nDatabase: {records} records, {:.0} MiB.", bytes as f64 / 1048576.0);
}
