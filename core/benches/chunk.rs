//! What the server spends on a pushed change before the writer sees it: telling whether it starts
//! a record. Decoding it in full (what `prepare_new` did for every push before d3b2031) against
//! reading the dependency count from its framing (`chunk::depends_on_nothing`), for a grid
//! member's report and for an edit of it (docs/benchmarks.md, "What each thread costs a round").
//!
//! `cargo bench -p gridlink-core --bench chunk`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use gridlink_core::IncidentEdit;
use gridlink_core::chunk::{decode_change, depends_on_nothing};

mod common;

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut client = common::grid_member_phone(&dir.path().join("phone.db"));
    let id = client.create_incident(common::report("村口桥头垃圾堆积")).unwrap();
    client.edit_incident(&id, IncidentEdit { notes: Some("补充:已通知保洁员".into()), ..Default::default() }).unwrap();
    let changes: Vec<Vec<u8>> = client.outbox(100).unwrap().into_iter().filter(|o| o.doc_id == id).map(|o| o.bytes).collect();
    let [first, edit] = &changes[..] else { panic!("a report and its edit: {} changes", changes.len()) };
    assert_eq!(depends_on_nothing(first), Some(true));
    assert_eq!(depends_on_nothing(edit), Some(false));

    for (name, bytes) in [("report", first), ("edit", edit)] {
        c.bench_function(&format!("{name}_decoded ({} B)", bytes.len()), |b| b.iter(|| black_box(decode_change(black_box(bytes)))));
        c.bench_function(&format!("{name}_framing_read ({} B)", bytes.len()), |b| {
            b.iter(|| black_box(depends_on_nothing(black_box(bytes))))
        });
    }
}

criterion_group!(chunk, benches);
criterion_main!(chunk);
