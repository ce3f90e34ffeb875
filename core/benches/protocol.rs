//! What a sync body costs to pack and unpack: CBOR and deflate, on each side of every round
//! (docs/benchmarks.md, "Sync bodies packed with reused compressors"). A grid member's request
//! with one new report, the answer that brings back 20 records, and the server's reading of the
//! request.
//!
//! `cargo bench -p gridlink-core --bench protocol`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use gridlink_core::sync::protocol::{self, DocChanges, DocId, PROTOCOL_VERSION, SyncRequest, SyncResponse};
use serde_bytes::ByteBuf;

mod common;

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut client = common::grid_member_phone(&dir.path().join("phone.db"));
    let mut reports = Vec::new();
    for n in 0..20 {
        let id = client.create_incident(common::report(&format!("村口桥头垃圾堆积({n})"))).unwrap();
        let changes = client.outbox(100).unwrap().into_iter().filter(|o| o.doc_id == id).map(|o| ByteBuf::from(o.bytes)).collect();
        reports.push(DocChanges { doc: DocId::parse(&id).unwrap(), changes });
    }
    let request =
        SyncRequest { v: PROTOCOL_VERSION, cursor: Some(123_456), push: vec![reports[0].clone()], whole_docs: true, ..Default::default() };
    let answer = SyncResponse {
        v: PROTOCOL_VERSION,
        rejected: vec![],
        docs: reports,
        whole: vec![],
        removed: vec![],
        cursor: 123_476,
        more: false,
        server_time_ms: 1_796_000_000_000,
        personal: vec![],
        personal_stored: vec![],
        personal_refused: vec![],
        epoch: None,
        notices: None,
    };
    let sent = protocol::encode(&request);
    let answered = protocol::encode(&answer);
    c.bench_function(&format!("request_encoded ({} B)", sent.len()), |b| b.iter(|| black_box(protocol::encode(black_box(&request)))));
    c.bench_function(&format!("request_decoded ({} B)", sent.len()), |b| {
        b.iter(|| black_box(protocol::decode_request(black_box(&sent)).unwrap()))
    });
    c.bench_function(&format!("answer_encoded ({} B)", answered.len()), |b| b.iter(|| black_box(protocol::encode(black_box(&answer)))));
    c.bench_function(&format!("answer_decoded ({} B)", answered.len()), |b| {
        b.iter(|| black_box(protocol::decode::<SyncResponse>(black_box(&answered)).unwrap()))
    });
}

criterion_group!(protocol_bench, benches);
criterion_main!(protocol_bench);
