//! Device costs of the offline store. Targets on a 2-core machine (median):
//! create an incident with a durable commit < 5 ms; open a store of 10,000 records and list the
//! first 50 open tasks < 20 ms; Chinese full-text search over 10,000 records < 30 ms.
//!
//! `cargo bench -p gridlink-core --bench store` (or `cargo xtask bench`).

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use gridlink_core::{Action, Client, NewIncident, Person, RecordQuery, Role, UnitCode};

const PLACES: [&str; 8] = ["村口桥头", "小学门口", "农贸市场", "卫生院旁", "一组晒场", "河堤路", "老街", "村委会后"];
const PROBLEMS: [(&str, &str); 8] = [
    ("0501", "生活垃圾堆积"),
    ("0802", "路灯不亮"),
    ("0101", "宅基地边界纠纷"),
    ("0401", "消防通道被占"),
    ("0701", "占道经营"),
    ("0801", "路面坑洼"),
    ("0602", "违章搭建彩钢棚"),
    ("1201", "独居老人需要探访"),
];

fn village_staff() -> Person {
    Person { id: "lijun".into(), name: "李军".into(), role: Role::StationStaff, unit: UnitCode::parse("532331101201").unwrap() }
}

fn incident(i: usize) -> NewIncident {
    let (cat, what) = PROBLEMS[i % PROBLEMS.len()];
    let place = PLACES[(i / 8) % PLACES.len()];
    NewIncident {
        category: cat.into(),
        title: format!("{place}{what}"),
        description: format!("第{i}号巡查:{place}发现{what},群众反映已持续{}天,请尽快处理。", i % 9 + 1),
        grid: Some(UnitCode::parse(&format!("532331101201-0{}-0{}", i % 3 + 1, i % 4 + 1)).unwrap()),
        address: format!("{place}{}号", i % 97),
        ..Default::default()
    }
}

/// A store with `n` records, a third of them accepted by the village (its open tasks).
fn populate(path: &Path, n: usize) {
    let mut c = Client::open(path).unwrap();
    c.set_identity(village_staff()).unwrap();
    for i in 0..n {
        let id = c.create_incident(incident(i)).unwrap();
        if i % 3 == 0 {
            c.act(&id, Action::Accept, "").unwrap();
        }
    }
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();

    let mut client = Client::open(dir.path().join("create.db")).unwrap();
    client.set_identity(village_staff()).unwrap();
    let mut i = 0;
    c.bench_function("create_incident_durable", |b| {
        b.iter(|| {
            i += 1;
            black_box(client.create_incident(incident(i)).unwrap())
        })
    });

    let big = dir.path().join("big.db");
    eprintln!("populating 10,000 records …");
    populate(&big, 10_000);

    c.bench_function("open_10k_and_list_50_open_tasks", |b| {
        b.iter(|| {
            let c = Client::open(&big).unwrap();
            let tasks = c.list(&RecordQuery { open_only: true, limit: 50, ..Default::default() }).unwrap();
            assert_eq!(tasks.len(), 50);
            black_box(tasks)
        })
    });

    let c10k = Client::open(&big).unwrap();
    c.bench_function("my_tasks_50_of_10k", |b| {
        let mut c10k = Client::open(&big).unwrap();
        c10k.set_identity(village_staff()).unwrap();
        b.iter(|| black_box(c10k.my_tasks(50).unwrap()))
    });
    c.bench_function("search_trigram_10k", |b| {
        b.iter(|| {
            let hits = c10k.search("宅基地边界", 50).unwrap();
            assert!(!hits.is_empty());
            black_box(hits)
        })
    });
    c.bench_function("search_two_chars_10k", |b| {
        b.iter(|| {
            let hits = c10k.search("路灯", 50).unwrap();
            assert!(!hits.is_empty());
            black_box(hits)
        })
    });
}

criterion_group! {
    name = store;
    config = Criterion::default().sample_size(30).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    targets = benches
}
criterion_main!(store);
