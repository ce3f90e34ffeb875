//! Backup while serving, more work on several phones, then a restore of the older backup: after
//! one sync of each phone the server holds every record and every entry the phones held — their
//! own work, what they received from others and the server's case numbers — and a case number
//! the town gave again after the restore is replaced, never duplicated. Damaged, foreign and
//! in-use cases are refused and change nothing.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::process::Command;

use gridlink_core::sync::SyncEngine;
use gridlink_core::{Action, NewIncident, Status};
use gridlink_tests::Phone;
use gridlink_tests::process::{self, Serve};

const BIN: &str = env!("CARGO_BIN_EXE_gridlink-server");

fn run(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = Command::new(BIN).args(args).env("GRIDLINK_LOG", "warn").output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn report(phone: &mut Phone, title: &str) -> String {
    phone.create_incident(NewIncident { category: "0501".into(), title: title.into(), ..Default::default() }).unwrap()
}

/// Every record a phone holds: id → (case number, entry ids).
fn holdings(phone: &Phone) -> BTreeMap<String, (Option<String>, BTreeSet<String>)> {
    phone
        .record_ids()
        .unwrap()
        .into_iter()
        .map(|id| {
            let v = phone.get(&id).unwrap();
            (id, (v.record.case_no.clone(), v.record.timeline.iter().map(|e| e.id.clone()).collect()))
        })
        .collect()
}

fn file_bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn a_restored_server_gets_back_from_the_phones_what_it_had_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("town.db");
    let backup = dir.path().join("town-backup.db");
    process::import_town(BIN.as_ref(), &db);
    let (mut server, base, _) = process::serve(BIN.as_ref(), &db, Serve::default());

    let mut grid_a = Phone::login(&base, "grid_a");
    let mut grid_b = Phone::login(&base, "grid_b");
    let mut station = Phone::login(&base, "village");
    for i in 0..3 {
        report(&mut grid_a, &format!("备份前 A{i}"));
        report(&mut grid_b, &format!("备份前 B{i}"));
    }
    grid_a.sync().unwrap();
    grid_b.sync().unwrap();
    station.sync().unwrap();

    // A backup while the server runs.
    let (ok, out) = run(&["backup".as_ref(), "--db".as_ref(), db.as_os_str(), "--out".as_ref(), backup.as_os_str()]);
    assert!(ok, "{out}");
    assert!(out.contains("6 件记录"), "{out}");
    let (ok, out) = run(&["backup".as_ref(), "--db".as_ref(), db.as_os_str(), "--out".as_ref(), backup.as_os_str()]);
    assert!(!ok && out.contains("不会覆盖"), "an existing backup is never overwritten: {out}");

    // Work after the backup: new reports, the station's intake of them (changes by another
    // person that grid_a receives), and one report never synced.
    for i in 0..2 {
        report(&mut grid_a, &format!("备份后 A{i}"));
    }
    grid_a.sync().unwrap();
    report(&mut grid_b, "备份后 B0");
    grid_b.sync().unwrap();
    station.sync().unwrap();
    let mut accepted = 0;
    for t in station.my_tasks(50).unwrap().into_iter().filter(|t| t.status == Some(Status::Reported)) {
        station.act(&t.id, Action::Accept, "已受理").unwrap();
        accepted += 1;
    }
    assert!(accepted >= 2, "the station has the new reports to accept: {accepted}");
    assert!(station.sync().unwrap().rejected.is_empty());
    grid_a.sync().unwrap();
    grid_b.sync().unwrap();
    report(&mut grid_b, "从未同步 B1");
    let held: Vec<_> = [&grid_a, &grid_b, &station].iter().map(|p| holdings(p)).collect();
    let acked_after_backup: usize = held[0].values().filter(|(no, _)| no.is_some()).count();
    assert!(acked_after_backup >= 5);

    // A restore while the server runs is refused.
    let (ok, out) = run(&["restore".as_ref(), "--from".as_ref(), backup.as_os_str(), "--db".as_ref(), db.as_os_str()]);
    assert!(!ok && out.contains("请先停止服务"), "{out}");
    server.kill().unwrap();
    server.wait().unwrap();

    // Damaged and foreign files are refused and the database stays as it was.
    let before = file_bytes(&db);
    let truncated = dir.path().join("truncated.db");
    std::fs::write(&truncated, &file_bytes(&backup)[..file_bytes(&backup).len() / 2]).unwrap();
    let text = dir.path().join("notes.db");
    std::fs::write(&text, "这不是数据库").unwrap();
    let foreign = dir.path().join("foreign.db");
    rusqlite::Connection::open(&foreign).unwrap().execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);").unwrap();
    for (bad, says) in [(&truncated, "已损坏"), (&text, "已损坏"), (&foreign, "不是网格通")] {
        let (ok, out) = run(&["restore".as_ref(), "--from".as_ref(), bad.as_os_str(), "--db".as_ref(), db.as_os_str()]);
        assert!(!ok && out.contains(says), "{}: {out}", bad.display());
        assert_eq!(file_bytes(&db), before, "a refused restore changes nothing");
    }

    let (ok, out) = run(&["restore".as_ref(), "--from".as_ref(), backup.as_os_str(), "--db".as_ref(), db.as_os_str()]);
    assert!(ok, "{out}");
    assert!(out.contains("原数据库已保留为"), "{out}");
    let (mut server, base, _) = process::serve(BIN.as_ref(), &db, Serve::default());
    for p in [&mut grid_a, &mut grid_b, &mut station] {
        p.engine = SyncEngine::http(&base);
    }

    // Before any phone is back, a grid member new to the server reports: the town gives the next
    // number of the backup, which a record acknowledged after the backup already carries.
    let mut grid_c = Phone::login(&base, "grid_c");
    let fresh = report(&mut grid_c, "恢复后 C0");
    grid_c.sync().unwrap();
    let fresh_no = grid_c.get(&fresh).unwrap().record.case_no.unwrap();
    let lost_numbers: HashSet<String> = held.iter().flat_map(|h| h.values().filter_map(|(no, _)| no.clone())).collect();
    assert!(lost_numbers.contains(&fresh_no), "the collision this test means to make: {fresh_no}");

    let changes =
        || -> i64 { rusqlite::Connection::open(&db).unwrap().query_row("SELECT count(*) FROM changes", [], |r| r.get(0)).unwrap() };
    let restored_changes = changes();
    // One sync of each phone.
    for p in [&mut grid_a, &mut grid_b, &mut station] {
        let r = p.sync().unwrap();
        assert!(r.requeued > 0, "the phone noticed the restore: {r:?}");
        assert!(r.rejected.is_empty(), "nothing refused: {:?}", r.rejected);
        assert_eq!(p.pending_count().unwrap(), 0);
    }

    // The town center sees everything the phones held, with every entry.
    let mut center = Phone::login(&base, "center");
    center.sync().unwrap();
    let town = holdings(&center);
    let mut recovered = 0;
    for (phone, h) in held.iter().enumerate() {
        for (id, (_, entries)) in h {
            let (_, server_entries) = town.get(id).unwrap_or_else(|| panic!("phone {phone}'s record {id} is lost"));
            assert!(entries.is_subset(server_entries), "phone {phone}'s record {id} lost entries");
            recovered += entries.len();
        }
    }
    let numbers: Vec<&String> = town.values().filter_map(|(no, _)| no.as_ref()).collect();
    assert_eq!(numbers.len(), town.len(), "every record has a case number");
    assert_eq!(numbers.iter().collect::<HashSet<_>>().len(), numbers.len(), "no case number twice: {numbers:?}");
    assert_eq!(town.get(&fresh).unwrap().0.as_ref(), Some(&fresh_no), "the record made after the restore keeps its number");
    let recovered_changes = changes() - restored_changes;
    assert!(recovered_changes > 0);
    eprintln!("records {}, entries held by the phones {recovered}, changes recovered {recovered_changes}, phones 3", town.len());

    // A second sync ends the recovery; the server no longer takes others' changes from them.
    for p in [&mut grid_a, &mut grid_b, &mut station] {
        p.sync().unwrap();
    }
    let conn = rusqlite::Connection::open(&db).unwrap();
    let recovering: i64 = conn.query_row("SELECT count(*) FROM devices WHERE recovering = 1", [], |r| r.get(0)).unwrap();
    assert_eq!(recovering, 0);
    let audited: i64 = conn.query_row("SELECT count(*) FROM audit WHERE action = 'restore'", [], |r| r.get(0)).unwrap();
    assert_eq!(audited, 1);
    server.kill().unwrap();
    server.wait().unwrap();
}

/// The same on PostgreSQL, restored its own way: a dump taken while the server runs, more work
/// acknowledged, then the dump restored into a new database, which a node is pointed at. No
/// command of ours runs that restore, so the server tells at start that the database does not
/// live where its epoch was given, and the phones push back what the dump lacks.
#[test]
fn a_postgres_dump_restored_elsewhere_gets_back_from_the_phones_what_it_had_acknowledged() {
    let Some(admin) = gridlink_tests::postgres_for_tests() else { return };
    let dir = tempfile::tempdir().unwrap();
    let name = |what: &str| format!("gl_{what}_{:012x}", rand::random::<u64>() >> 16);
    let db = gridlink_server::storage::PgStorage::create_database(&admin, &name("dumped")).unwrap();
    process::import_town(BIN.as_ref(), Path::new(&db));
    let data = dir.path().join("data");
    let serve = |db: &str| {
        process::serve(BIN.as_ref(), Path::new(db), Serve { args: vec!["--data-dir".as_ref(), data.as_os_str()], ..Default::default() })
    };
    let (mut server, base, _) = serve(&db);
    let mut grid_a = Phone::login(&base, "grid_a");
    let before: Vec<String> = (0..2).map(|i| report(&mut grid_a, &format!("备份前 {i}"))).collect();
    grid_a.sync().unwrap();

    let dump = dir.path().join("town.dump");
    let out = Command::new("pg_dump").args(["-Fc", "-d", &db, "-f"]).arg(&dump).output().unwrap();
    assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
    let after: Vec<String> = (0..2).map(|i| report(&mut grid_a, &format!("备份后 {i}"))).collect();
    grid_a.sync().unwrap();
    assert_eq!(grid_a.pending_count().unwrap(), 0, "the server acknowledged the work after the dump");
    server.kill().unwrap();
    server.wait().unwrap();

    let restored = gridlink_server::storage::PgStorage::create_database(&admin, &name("restored")).unwrap();
    let out = Command::new("pg_restore").args(["--no-owner", "-d", &restored]).arg(&dump).output().unwrap();
    assert!(out.status.success(), "pg_restore: {}", String::from_utf8_lossy(&out.stderr));
    let (mut server, base, _) = serve(&restored);
    grid_a.engine = SyncEngine::http(&base);
    let r = grid_a.sync().unwrap();
    assert!(r.requeued > 0, "the phone noticed the restore: {r:?}");
    assert!(r.rejected.is_empty(), "nothing refused: {:?}", r.rejected);
    let mut center = Phone::login(&base, "center");
    center.sync().unwrap();
    let town = holdings(&center);
    for id in before.iter().chain(&after) {
        assert!(town.get(id).is_some_and(|(no, _)| no.is_some()), "record {id} is on the server with its case number");
    }
    server.kill().unwrap();
    server.wait().unwrap();

    // The next start on the same database is no restore: the phone's cursor holds.
    let (mut server, base, _) = serve(&restored);
    grid_a.engine = SyncEngine::http(&base);
    let r = grid_a.sync().unwrap();
    assert_eq!(r.requeued, 0, "a plain restart is not taken for a restore: {r:?}");
    server.kill().unwrap();
    server.wait().unwrap();
    let mut conn = ::postgres::Client::connect(&restored, ::postgres::NoTls).unwrap();
    let audited: i64 = conn.query_one("SELECT count(*) FROM audit WHERE action = 'new_epoch'", &[]).unwrap().get(0);
    assert_eq!(audited, 1, "the restore is in the audit log, once");
}
