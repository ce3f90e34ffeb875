//! A fresh device takes a village's 2,000 records (issue 20, workload (a) of `sync_bench` without
//! the network): each record arrives as one saved document that names its record, as the town
//! server sends a record new to a device, and goes through the phone's store the way the sync engine applies an answer
//! (one transaction for the answer).
//! The figure is the wall time of the whole bootstrap on one thread (the durable commits' waits
//! included), which bounds the phone's CPU for it; target ≤ 0.5 s on the 2-core machine.
//!
//! `cargo bench -p gridlink-core --bench bootstrap` (or `cargo xtask bench`).

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use gridlink_core::{Action, Client, NewIncident, Person, Role, UnitCode};

const RECORDS: usize = 2000;

fn village_staff() -> Person {
    Person { id: "lijun".into(), name: "李军".into(), role: Role::StationStaff, unit: UnitCode::parse("532331101201").unwrap() }
}

fn incident(i: usize) -> NewIncident {
    NewIncident {
        category: ["0501", "0802", "0101", "0701"][i % 4].into(),
        title: format!("第{i}号巡查发现的问题"),
        description: format!("第{i}号巡查:村口桥头发现生活垃圾堆积,群众反映已持续{}天,请尽快处理。", i % 9 + 1),
        grid: Some(UnitCode::parse(&format!("532331101201-0{}-0{}", i % 3 + 1, i % 4 + 1)).unwrap()),
        address: format!("村口桥头{}号", i % 97),
        ..Default::default()
    }
}

/// The records as saved documents, as the server sends them to a device that has none.
fn village(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut c = Client::open(dir.join("source.db")).unwrap();
    c.set_identity(village_staff()).unwrap();
    (0..RECORDS)
        .map(|i| {
            let id = c.create_incident(incident(i)).unwrap();
            if i % 3 == 0 {
                c.act(&id, Action::Accept, "已受理").unwrap();
            }
            let mut doc = automerge::AutoCommit::new();
            let changes: Vec<automerge::Change> =
                c.changes(&id).unwrap().into_iter().map(|b| automerge::Change::from_bytes(b).unwrap()).collect();
            doc.apply_changes(changes).unwrap();
            (id, doc.save())
        })
        .collect()
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let records = village(dir.path());
    let now = gridlink_core::Clock::now_ms(&gridlink_core::SystemClock);
    let mut n = 0;
    c.bench_function("fresh_device_takes_2000_records", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let mut phone = Client::open(dir.path().join(format!("fresh{n}.db"))).unwrap();
                phone.set_identity(village_staff()).unwrap();
                let t = Instant::now();
                // As the sync engine takes an answer: all of it in one transaction (2,000
                // records of about 1 KB fit one 4 MiB page).
                phone
                    .atomically(|p| {
                        records.iter().try_for_each(|(id, saved)| {
                            // Each document names its record (`SyncResponse::whole`).
                            assert_eq!(&p.apply_whole_from_server(saved, now)?, id);
                            Ok::<(), gridlink_core::CoreError>(())
                        })
                    })
                    .unwrap();
                spent += t.elapsed();
            }
            spent
        })
    });
}

criterion_group! {
    name = bootstrap;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(20));
    targets = benches
}
criterion_main!(bootstrap);
