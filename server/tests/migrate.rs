//! Moving a town from SQLite into PostgreSQL with `gridlink-server migrate` (issue 18): its
//! phones go on syncing against the new database with what they did offline in between, the
//! command can be run again, and a database holding something else is refused untouched.
//!
//! Runs when `GRIDLINK_TEST_PG_URL` names a PostgreSQL server (as `cargo xtask test` does).

use std::process::Command;

use gridlink_core::sync::SyncEngine;
use gridlink_core::{Client, NewIncident};
use gridlink_server::storage::{PgStorage, Storage};
use gridlink_tests::process::{self, Serve};

const BIN: &str = env!("CARGO_BIN_EXE_gridlink-server");

fn migrate(from: &std::path::Path, to: &str) -> (bool, String) {
    let out = Command::new(BIN).args(["migrate", "--from"]).arg(from).args(["--to", to]).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn report(c: &mut Client, title: &str) -> String {
    c.create_incident(NewIncident { category: "0503".into(), title: title.into(), ..Default::default() }).unwrap()
}

#[test]
fn a_town_moves_to_postgres_and_its_phones_sync_on() {
    let Some(admin) = gridlink_tests::postgres_for_tests() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("town.db");
    process::import_town(BIN.as_ref(), &file);
    let (mut server, base, _) = process::serve(BIN.as_ref(), &file, Serve::default());
    let phone = |name: &str, user: &str| {
        let mut c = Client::open(dir.path().join(format!("{name}.db"))).unwrap();
        SyncEngine::http(&base).login(&mut c, user, gridlink_tests::PASSWORD, name).unwrap();
        c
    };
    let (mut grid, mut center) = (phone("grid", "grid_a"), phone("center", "center"));
    for i in 0..5 {
        report(&mut grid, &format!("迁移前的事 {i}"));
    }
    SyncEngine::http(&base).sync_once(&mut grid).unwrap();
    SyncEngine::http(&base).sync_once(&mut center).unwrap();
    assert_eq!(center.record_count().unwrap(), 5);
    server.kill().unwrap();
    server.wait().unwrap();
    // Offline while the town moves.
    let offline = report(&mut grid, "迁移期间离线上报");

    let to = PgStorage::create_database(&admin, &format!("gl_move_{:012x}", rand::random::<u64>() >> 16)).unwrap();
    let (ok, said) = migrate(&file, &to);
    assert!(ok, "{said}");
    assert!(said.contains("已迁移") && said.contains("5 件记录") && said.contains("核对一致"), "{said}");
    let (ok, said) = migrate(&file, &to);
    assert!(ok && said.contains("已有该镇的全部数据,核对一致"), "run again: {said}");

    // The same phones, the new database, no new login.
    let (mut server, base, _) = process::serve(BIN.as_ref(), std::path::Path::new(&to), Serve::default());
    let idle = SyncEngine::http(&base).sync_once(&mut center).unwrap();
    assert_eq!(idle.received_docs, 0, "the center's cursor still holds: nothing sent again");
    SyncEngine::http(&base).sync_once(&mut grid).unwrap();
    assert_eq!(grid.pending_count().unwrap(), 0, "what the grid member did offline went up");
    SyncEngine::http(&base).sync_once(&mut center).unwrap();
    assert_eq!(center.record_count().unwrap(), 6);
    let moved = center.get(&offline).unwrap();
    assert_eq!(moved.record.case_no.as_deref().map(|n| n.ends_with("000006")), Some(true), "numbering went on: {:?}", moved.record.case_no);
    server.kill().unwrap();
    server.wait().unwrap();

    // Another town's database is not overwritten.
    let other = tempfile::tempdir().unwrap();
    let other_file = other.path().join("other.db");
    process::import_town(BIN.as_ref(), &other_file);
    let before = PgStorage::connect(&to).unwrap().row_counts().unwrap();
    let (ok, said) = migrate(&other_file, &to);
    assert!(!ok && said.contains("已有其他数据"), "{said}");
    assert_eq!(PgStorage::connect(&to).unwrap().row_counts().unwrap(), before, "left as it was");
}
