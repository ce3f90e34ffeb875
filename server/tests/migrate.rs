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

/// A town of its own SQLite file: its units under no county, a grid member `{tag}_grid` and a
/// center operator `{tag}_center` (town `code`, e.g. `532331102`).
fn small_town(file: &std::path::Path, code: &str, name: &str, tag: &str) {
    let village = format!("{code}201");
    let units = format!(
        "code,name,kind,parent,department_key\n{code},{name},镇,,\n{village},{name}社区,村,{code},\n\
         {village}-01,一组,组,{village},\n{village}-01-01,1号网格,网格,{village}-01,\n"
    );
    let people = format!(
        "id,name,role,unit,password\n{tag}_grid,{tag}网格员,网格员,{village}-01-01,{pw}\n{tag}_center,{tag}坐席,综治中心工作人员,{code},{pw}\n",
        pw = gridlink_tests::PASSWORD
    );
    process::import_csv(BIN.as_ref(), file, "units", &units);
    process::import_csv(BIN.as_ref(), file, "people", &people);
}

/// `gridlink-server import` into a PostgreSQL database (CSV text in `dir`).
fn import_into(dir: &std::path::Path, db: &str, what: &str, csv: &str) {
    let file = dir.join(format!("county-{what}.csv"));
    std::fs::write(&file, csv).unwrap();
    let out = Command::new(BIN).args(["import", "--db", db, what]).arg(&file).output().unwrap();
    assert!(out.status.success(), "import {what}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn towns_join_a_county_database_one_after_another_and_their_phones_sync_on() {
    let Some(admin) = gridlink_tests::postgres_for_tests() else { return };
    let dir = tempfile::tempdir().unwrap();
    let phone = |base: &str, name: &str, user: &str| {
        let mut c = Client::open(dir.path().join(format!("{name}.db"))).unwrap();
        SyncEngine::http(base).login(&mut c, user, gridlink_tests::PASSWORD, name).unwrap();
        c
    };
    // Two towns, each on its own SQLite file with its own case-number prefix, each with records
    // synced and one made offline while the towns move.
    let mut towns = Vec::new();
    for (code, name, tag, prefix) in [("532331101", "广通镇", "a", "GT"), ("532331102", "勤丰镇", "b", "QF")] {
        let file = dir.path().join(format!("{tag}.db"));
        small_town(&file, code, name, tag);
        let env = vec![("GRIDLINK_CASE_PREFIX", prefix)];
        let (mut server, base, _) = process::serve(BIN.as_ref(), &file, Serve { env, ..Default::default() });
        let mut grid = phone(&base, &format!("{tag}-grid"), &format!("{tag}_grid"));
        let mut center = phone(&base, &format!("{tag}-center"), &format!("{tag}_center"));
        for i in 0..3 {
            report(&mut grid, &format!("{name}迁移前的事 {i}"));
        }
        SyncEngine::http(&base).sync_once(&mut grid).unwrap();
        SyncEngine::http(&base).sync_once(&mut center).unwrap();
        assert_eq!(center.record_count().unwrap(), 3);
        server.kill().unwrap();
        server.wait().unwrap();
        let offline = report(&mut grid, &format!("{name}迁移期间离线上报"));
        towns.push((file, grid, center, offline, tag));
    }

    // The county database holds the county's own unit and operator first.
    let to = PgStorage::create_database(&admin, &format!("gl_county_{:012x}", rand::random::<u64>() >> 16)).unwrap();
    import_into(dir.path(), &to, "units", "code,name,kind,parent,department_key\n532331,禄丰市,县,,\n");
    let people = format!("id,name,role,unit,password\nxian,县坐席,县社会治理中心坐席,532331,{}\n", gridlink_tests::PASSWORD);
    import_into(dir.path(), &to, "people", &people);
    for (file, ..) in &towns {
        let (ok, said) = migrate(file, &to);
        assert!(ok && said.contains("已迁移") && said.contains("3 件记录") && said.contains("核对一致"), "{said}");
    }
    for (file, ..) in &towns {
        let (ok, said) = migrate(file, &to);
        assert!(ok && said.contains("已有该镇的全部数据,核对一致"), "run again: {said}");
    }

    // A third town numbered its cases `GT-…` as 广通镇 did: refused, the database untouched.
    let third = dir.path().join("c.db");
    small_town(&third, "532331103", "金山镇", "c");
    let (mut server, base, _) = process::serve(BIN.as_ref(), &third, Serve::default());
    let mut c_grid = phone(&base, "c-grid", "c_grid");
    report(&mut c_grid, "金山镇的事");
    SyncEngine::http(&base).sync_once(&mut c_grid).unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    let before = PgStorage::connect(&to).unwrap().row_counts().unwrap();
    let (ok, said) = migrate(&third, &to);
    assert!(!ok && said.contains("已有同样的案卷编号") && said.contains("case_prefix"), "{said}");
    // The same town a second time, under another file: its unit code is taken.
    let again = dir.path().join("a-again.db");
    small_town(&again, "532331101", "广通镇", "a2");
    let (ok, said) = migrate(&again, &to);
    assert!(!ok && said.contains("已有同样的单位编码:532331101"), "{said}");
    assert_eq!(PgStorage::connect(&to).unwrap().row_counts().unwrap(), before, "left as it was");

    // The county serves both towns; the phones sync on without a new login, what they did
    // offline goes up, and each town sees its own records only.
    let (mut server, base, _) = process::serve(BIN.as_ref(), std::path::Path::new(&to), Serve::default());
    let year = chrono::Datelike::year(&chrono::Local::now());
    for (_, grid, center, offline, tag) in &mut towns {
        SyncEngine::http(&base).sync_once(grid).unwrap();
        assert_eq!(grid.pending_count().unwrap(), 0, "town {tag}: what was done offline went up");
        SyncEngine::http(&base).sync_once(center).unwrap();
        assert_eq!(center.record_count().unwrap(), 4, "town {tag} sees its own four records");
        let no = center.get(offline).unwrap().record.case_no.unwrap_or_default();
        // The county's prefix (its server's) and the town's number.
        let town_no = if *tag == "a" { "101" } else { "102" };
        assert_eq!(no, format!("GT{town_no}-{year}-000001"), "town {tag}: numbered as a town of the county");
    }
    let county = phone(&base, "county", "xian");
    let mut county = county;
    SyncEngine::http(&base).sync_once(&mut county).unwrap();
    assert_eq!(county.record_count().unwrap(), 8, "the county sees both towns");
    server.kill().unwrap();
    server.wait().unwrap();
}
