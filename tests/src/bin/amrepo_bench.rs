//! A JavaScript peer opening records through the automerge-repo endpoint, side by side with a
//! Gridlink phone taking the same records through Gridlink's own sync (issue 21).
//!
//! `cargo run --release -p gridlink-tests --bin amrepo_bench [records]` (500 by default; `cargo
//! xtask bench` runs it). Needs Node and `npm install --prefix tests/automerge-repo`. Bytes are
//! payload bytes (the sync bodies; the WebSocket messages), without HTTP or WebSocket framing.

use std::process::Command;
use std::time::Instant;

use gridlink_core::{NewIncident, UnitCode};
use gridlink_tests::{GRID_A, TestServer, http, json, token};

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(500);
    let server = TestServer::start();
    let mut grid = server.phone("grid_a");
    let mut urls = String::new();
    for i in 0..n {
        let id = grid
            .create_incident(NewIncident {
                category: "0501".into(),
                title: format!("第{i}件:路边垃圾堆积"),
                description: "巡查发现路边垃圾堆积,需清运。".into(),
                grid: Some(UnitCode::parse(GRID_A).unwrap()),
                ..Default::default()
            })
            .unwrap();
        urls.push_str(&gridlink_server::automerge_repo::url(&id).unwrap());
        urls.push('\n');
    }
    grid.sync().unwrap();

    // Gridlink's own protocol: the station's fresh phone takes them.
    let mut station = server.phone("village");
    let started = Instant::now();
    let r = station.sync().unwrap();
    let own_ms = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(station.record_count().unwrap() as usize, n);

    // automerge-repo: a fresh JavaScript peer of the same station finds every record by URL.
    let peer = server.phone("village");
    let (status, body) = json(
        http()
            .post(format!("{}/api/v1/automerge-repo/ticket", server.base))
            .header("Authorization", format!("Bearer {}", token(&peer)))
            .send_empty()
            .unwrap(),
    );
    assert_eq!(status, 200, "{body}");
    let ws = format!("{}{}", server.base.replacen("http://", "ws://", 1), body["path"].as_str().unwrap());
    let list = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(list.path(), &urls).unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("automerge-repo");
    let out = Command::new("node").arg("open.mjs").arg(&ws).arg(list.path()).current_dir(&dir).output().expect("node is installed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8_lossy(&out.stdout).lines().find_map(|l| l.strip_prefix("@@").map(str::to_owned)).expect("figures");
    let js: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(js["records"].as_u64(), Some(n as u64), "the peer opened every record");

    println!("| {n} records to a fresh device of the station | bytes down | bytes up | time |");
    println!("|---|---|---|---|");
    println!("| Gridlink sync (`/api/v1/sync`, {} rounds) | {} | {} | {own_ms:.0} ms |", r.rounds, r.bytes_down, r.bytes_up);
    println!(
        "| automerge-repo peer (`{}`) | {} | {} | {:.0} ms |",
        gridlink_server::automerge_repo::PATH,
        js["bytes_down"],
        js["bytes_up"],
        js["ms"].as_f64().unwrap_or_default()
    );
}
