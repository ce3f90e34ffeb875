//! Sync and server-load figures (issue 7, Gridlink's side): the real server binary as a child
//! process on 127.0.0.1, real phones (core `Client` + `SyncEngine`) in this process. Prints
//! figures; fails only if something breaks, never on speed.
//!
//! `cargo xtask bench` builds in release and runs it; alone:
//! `cargo build --release -p gridlink-server -p gridlink-tests && target/release/sync_bench [quick]`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use gridlink_core::sync::SyncEngine;
use gridlink_core::{Client, NewIncident};

const PASSWORD: &str = "bench-password-1";
const TOWN: &str = "532331101";
const VILLAGE: &str = "532331101201";

fn server_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().join("gridlink-server");
    assert!(bin.exists(), "build the server first: cargo build --release -p gridlink-server");
    bin
}

/// The town for the bench: one village with `grids` grids, a grid member per grid, a station.
fn make_town(dir: &Path, grids: usize) -> PathBuf {
    let db = dir.join("town.db");
    let mut units = format!(
        "code,name,kind,parent,department_key\n{TOWN},广通镇,镇,,\n{VILLAGE},广通社区,村,{TOWN},\n{VILLAGE}-01,一组,组,{VILLAGE},\n"
    );
    let mut people = format!(
        "id,name,role,unit,password\nstation,站长,便民服务站代办员,{VILLAGE},{PASSWORD}\ncenter,坐席,综治中心工作人员,{TOWN},{PASSWORD}\n"
    );
    for g in 1..=grids {
        units.push_str(&format!("{VILLAGE}-01-{g:02},{g}号网格,网格,{VILLAGE}-01,\n"));
        people.push_str(&format!("g{g},网格员{g},网格员,{VILLAGE}-01-{g:02},{PASSWORD}\n"));
    }
    for (what, text) in [("units", units), ("people", people)] {
        let file = dir.join(format!("{what}.csv"));
        std::fs::write(&file, text).unwrap();
        let out = Command::new(server_bin()).args(["import", "--db"]).arg(&db).arg(what).arg(&file).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    db
}

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(db: &Path) -> Self {
        let mut child = Command::new(server_bin())
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
        Server { child, base }
    }

    /// CPU seconds the server process used so far (user + system).
    fn cpu_s(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / 100.0
    }

    /// Resident memory now and at its peak, in MiB.
    fn memory_mib(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib = |key: &str| -> f64 {
            status.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)).unwrap().parse::<f64>().unwrap()
        };
        (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn phone(dir: &Path, name: &str, base: &str, user: &str) -> (Client, SyncEngine) {
    let mut c = Client::open(dir.join(format!("{name}.db"))).unwrap();
    let e = SyncEngine::http(base);
    e.login(&mut c, user, PASSWORD, "压测").unwrap();
    (c, e)
}

fn report(n: usize) -> NewIncident {
    NewIncident {
        category: "0501".into(),
        title: format!("巡查发现垃圾堆积{n}"),
        description: "村口桥头有生活垃圾堆积,已有异味,影响群众出行。".into(),
        address: "广通社区村口".into(),
        note: "巡查发现".into(),
        ..Default::default()
    }
}

/// Deflated size of bytes: the floor for sending them.
fn deflated(bytes: &[u8]) -> usize {
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(bytes).unwrap();
    z.finish().unwrap().len()
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A TCP proxy in front of the server that imitates a rural link: a fixed delay each way, a
/// bandwidth cap, and stalls standing for lost packets being resent.
fn rural_proxy(target: &str, one_way: Duration, bytes_per_s: f64, stall_every: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let target = target.trim_start_matches("http://").to_owned();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let server = TcpStream::connect(&target).unwrap();
            for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)] {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1460];
                    let mut segments = 0usize;
                    let mut first = true;
                    loop {
                        let n = match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if first {
                            std::thread::sleep(one_way);
                            first = false;
                        }
                        segments += 1;
                        let mut wait = Duration::from_secs_f64(n as f64 / bytes_per_s);
                        if stall_every > 0 && segments.is_multiple_of(stall_every) {
                            wait += 2 * one_way; // a lost segment costs a round trip to resend
                        }
                        std::thread::sleep(wait);
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    format!("http://{addr}")
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let scale = |full: usize, small: usize| if quick { small } else { full };
    let dir = tempfile::tempdir().unwrap();
    let db = make_town(dir.path(), 100);
    let server = Server::start(&db);
    println!("## Gridlink sync figures (server: release binary on 127.0.0.1; phones: core Client + SyncEngine)\n");
    println!("| workload | wall | rounds | bytes up | bytes down | server CPU | floor (deflated changes) |\n|---|---|---|---|---|---|---|");

    // Grid members' phones fill the town: 2,000 records first.
    let mut seeders: Vec<(Client, SyncEngine)> =
        (1..=10).map(|g| phone(dir.path(), &format!("seed{g}"), &server.base, &format!("g{g}"))).collect();
    let mut seed = |from: usize, to: usize| {
        for n in from..to {
            let (c, _) = &mut seeders[n % 10];
            c.create_incident(report(n)).unwrap();
        }
        for (c, e) in seeders.iter_mut() {
            e.sync_once(c).unwrap();
        }
    };
    let (first, all) = (scale(2000, 200), scale(5000, 500));
    seed(0, first);

    // (a) A fresh station device bootstraps: the village's records (all of them here).
    let cpu0 = server.cpu_s();
    let t = Instant::now();
    let (mut station, engine) = phone(dir.path(), "station-a", &server.base, "station");
    let r = engine.sync_once(&mut station).unwrap();
    let wall = t.elapsed();
    let docs = station.record_count().unwrap();
    let floor: usize = {
        let mut bytes = Vec::new();
        for id in station.list(&gridlink_core::RecordQuery { limit: 100_000, ..Default::default() }).unwrap().iter().map(|s| s.id.clone()) {
            for ch in station.changes(&id).unwrap() {
                bytes.extend(ch);
            }
        }
        deflated(&bytes)
    };
    println!(
        "| (a) fresh device, {docs} records | {:.2} s | {} | {} | {} | {:.2} s | {floor} B, 1 round trip |",
        wall.as_secs_f64(),
        r.rounds,
        r.bytes_up,
        r.bytes_down,
        server.cpu_s() - cpu0
    );

    // (b) The town grows to 5,000 records; the device catches up, then syncs with nothing new.
    seed(first, all);
    engine.sync_once(&mut station).unwrap();
    let docs = station.record_count().unwrap();
    let cpu0 = server.cpu_s();
    let t = Instant::now();
    let r = engine.sync_once(&mut station).unwrap();
    println!(
        "| (b) {docs} records, nothing new | {:.1} ms | {} | {} | {} | {:.3} s | 0 B, 1 round trip |",
        t.elapsed().as_secs_f64() * 1e3,
        r.rounds,
        r.bytes_up,
        r.bytes_down,
        server.cpu_s() - cpu0
    );

    // (c) A day's work of one grid member: 50 new records and 200 actions, offline, then one sync.
    let (mut grid, ge) = phone(dir.path(), "grid-day", &server.base, "g1");
    ge.sync_once(&mut grid).unwrap();
    let mut ids = Vec::new();
    for n in 0..50 {
        ids.push(grid.create_incident(report(100_000 + n)).unwrap());
    }
    for k in 0..200 {
        let id = &ids[k % 50];
        let edit =
            gridlink_core::IncidentEdit { notes: Some(format!("第{k}次补充:现场复查情况记录。")), ..Default::default() };
        grid.edit_incident(id, edit).unwrap();
    }
    let pending: Vec<u8> = grid.outbox(100_000).unwrap().into_iter().flat_map(|o| o.bytes).collect();
    let cpu0 = server.cpu_s();
    let t = Instant::now();
    let r = ge.sync_once(&mut grid).unwrap();
    println!(
        "| (c) a day's work: 50 records + 200 changes | {:.2} s | {} | {} | {} | {:.2} s | {} B, 1 round trip |",
        t.elapsed().as_secs_f64(),
        r.rounds,
        r.bytes_up,
        r.bytes_down,
        server.cpu_s() - cpu0,
        deflated(&pending)
    );

    // (d) 100 devices after a morning offline (3 new records and 6 changes each), all at once.
    let devices = scale(100, 20);
    let mut fleet: Vec<(Client, SyncEngine)> =
        (0..devices).map(|i| phone(dir.path(), &format!("morning{i}"), &server.base, &format!("g{}", i % 100 + 1))).collect();
    for (c, e) in fleet.iter_mut() {
        e.sync_once(c).unwrap();
    }
    for (i, (c, _)) in fleet.iter_mut().enumerate() {
        for n in 0..3 {
            let id = c.create_incident(report(200_000 + i * 10 + n)).unwrap();
            for k in 0..2 {
                c.edit_incident(&id, gridlink_core::IncidentEdit { notes: Some(format!("补充{k}")), ..Default::default() }).unwrap();
            }
        }
    }
    let cpu0 = server.cpu_s();
    let barrier = Arc::new(Barrier::new(devices));
    let t = Instant::now();
    let handles: Vec<_> = fleet
        .into_iter()
        .map(|(mut c, e)| {
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                let t = Instant::now();
                let r = e.sync_once(&mut c).unwrap();
                (t.elapsed().as_secs_f64(), r)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let wall = t.elapsed().as_secs_f64();
    let mut lat: Vec<f64> = results.iter().map(|r| r.0).collect();
    lat.sort_by(f64::total_cmp);
    let (up, down, rounds): (usize, usize, usize) =
        results.iter().fold((0, 0, 0), |a, (_, r)| (a.0 + r.bytes_up, a.1 + r.bytes_down, a.2 + r.rounds));
    println!(
        "| (d) {devices} devices at once after a morning offline | {wall:.2} s (p50 {:.2} s, p99 {:.2} s per device) | {rounds} | {up} | {down} | {:.2} s | |",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        server.cpu_s() - cpu0
    );

    // Memory and disk per stored record.
    let (rss, peak) = server.memory_mib();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    drop(conn);
    let db_bytes: u64 = ["", "-wal"].iter().filter_map(|s| std::fs::metadata(format!("{}{s}", db.display())).ok()).map(|m| m.len()).sum();
    let stored: i64 = rusqlite::Connection::open(&db).unwrap().query_row("SELECT count(*) FROM docs", [], |r| r.get(0)).unwrap();
    println!(
        "\nServer after the workloads: {stored} records, RSS {rss:.1} MiB (peak {peak:.1} MiB), database {:.1} MiB → {:.1} MiB of disk per 10,000 records.",
        db_bytes as f64 / 1048576.0,
        db_bytes as f64 / 1048576.0 / stored as f64 * 10_000.0
    );

    // Rural link: 300 ms round trip, 200 kbit/s, a stall every 50 segments (≈2% loss).
    let slow = rural_proxy(&server.base, Duration::from_millis(150), 25_000.0, 50);
    SyncEngine::http(&server.base).sync_once(&mut station).unwrap(); // catch up on the fast link first
    let engine = SyncEngine::http(&slow);
    let t = Instant::now();
    let r = engine.sync_once(&mut station).unwrap();
    println!("\n| rural link (300 ms RTT, 200 kbit/s, ≈2% loss) | wall | bytes up | bytes down |\n|---|---|---|---|");
    println!("| (b) nothing new, {docs} records | {:.2} s | {} | {} |", t.elapsed().as_secs_f64(), r.bytes_up, r.bytes_down);
    let mut grid = grid;
    let slow_engine = SyncEngine::http(&slow);
    for n in 0..50 {
        let id = grid.create_incident(report(300_000 + n)).unwrap();
        for k in 0..4 {
            grid.edit_incident(&id, gridlink_core::IncidentEdit { notes: Some(format!("补充{k}")), ..Default::default() }).unwrap();
        }
    }
    let t = Instant::now();
    let r = slow_engine.sync_once(&mut grid).unwrap();
    println!("| (c) a day's work, 50 records + 200 changes | {:.2} s | {} | {} |", t.elapsed().as_secs_f64(), r.bytes_up, r.bytes_down);

    // Load: N devices syncing in a loop for a bounded time, one new change per round.
    println!(
        "\n| devices in a loop (one new report per round) | rounds | changes ingested/s | p50 round | p99 round | server CPU |\n|---|---|---|---|---|---|"
    );
    for n in if quick { vec![50] } else { vec![100, 300, 1000] } {
        let seconds = if quick { 5.0 } else { 20.0 };
        let fleet: Vec<(Client, SyncEngine)> = (0..n)
            .map(|i| {
                // Grids 11–100 hold none of the seeded records: devices start light.
                let (mut c, e) = phone(dir.path(), &format!("load{n}-{i}"), &server.base, &format!("g{}", 11 + i % 90));
                c.create_incident(report(400_000 + i)).unwrap();
                e.sync_once(&mut c).unwrap();
                (c, e)
            })
            .collect();
        let lat = Arc::new(Mutex::new(Vec::new()));
        let stop = Instant::now() + Duration::from_secs_f64(seconds);
        let barrier = Arc::new(Barrier::new(n));
        let cpu0 = server.cpu_s();
        let t = Instant::now();
        let handles: Vec<_> = fleet
            .into_iter()
            .map(|(mut c, e)| {
                let (lat, b) = (lat.clone(), barrier.clone());
                std::thread::spawn(move || {
                    b.wait();
                    let mut k = 0;
                    while Instant::now() < stop {
                        // A new report each round: after routing, a grid member may only read its reports.
                        c.create_incident(report(1_000_000 + k)).unwrap();
                        let t = Instant::now();
                        e.sync_once(&mut c).unwrap();
                        lat.lock().unwrap().push(t.elapsed().as_secs_f64());
                        k += 1;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let wall = t.elapsed().as_secs_f64();
        let mut lat = lat.lock().unwrap().clone();
        lat.sort_by(f64::total_cmp);
        println!(
            "| {n} | {} | {:.0} | {:.0} ms | {:.0} ms | {:.1} s of {wall:.1} s |",
            lat.len(),
            lat.len() as f64 / wall,
            pct(&lat, 0.5) * 1e3,
            pct(&lat, 0.99) * 1e3,
            server.cpu_s() - cpu0
        );
    }
}
