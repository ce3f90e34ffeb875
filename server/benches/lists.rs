//! The first page of the console's lists in a town of 20,000 records, for one person of each
//! level (town center, department, village, grid). Target on a 2-core machine: < 20 ms each.
//!
//! `cargo bench -p gridlink-server --bench lists` (or `cargo xtask bench`). The town is made once
//! (through the console's ingest path, about a minute) and kept in `target/bench-towns/`.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use gridlink_server::AppState;
use gridlink_server::console::pages::all_lists;
use gridlink_server::console::views::Names;

const RECORDS: usize = 20_000;
const VIEWERS: [&str; 4] = ["zongzhi", "zhifa", "gt201-shuji", "gt201-0101"];

/// The town's server state, made on the first run and reused after.
fn town() -> AppState {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-towns");
    let started = std::time::Instant::now();
    let (state, made) = gridlink_server::demo::bench_town(&dir, RECORDS).unwrap();
    if made {
        eprintln!("made a town of {RECORDS} records in {:.0?}", started.elapsed());
    }
    state
}

fn first_pages(c: &mut Criterion) {
    let state = town();
    let conn = state.db.reader();
    let names = Names::load(&*conn, &state.catalog).unwrap();
    let now = state.now_ms();
    let mut group = c.benchmark_group("first_page");
    group.sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    for viewer in VIEWERS {
        let person = gridlink_server::auth::load_person(&*conn, viewer).unwrap().unwrap().0;
        for (name, spec) in all_lists() {
            let total = spec.count(&*conn, &person).unwrap();
            group.bench_function(format!("{viewer} {name} ({total})"), |b| {
                b.iter(|| black_box(spec.page(&*conn, &names, &person, 1, now).unwrap()));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, first_pages);
criterion_main!(benches);
