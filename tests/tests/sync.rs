//! The sync protocol end to end: a real server on 127.0.0.1, devices with their own stores.

use std::collections::BTreeSet;
use std::io::Read;

use gridlink_core::sync::SyncError;
use gridlink_core::sync::protocol::{self, CONTENT_TYPE, DocChanges, DocId, SyncRequest};
use gridlink_core::{Action, IncidentEdit, NewIncident, RecordQuery, Status};
use gridlink_tests::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

fn report(title: &str) -> NewIncident {
    NewIncident { category: "0501".into(), title: title.into(), description: "巡查发现".into(), ..Default::default() }
}

#[test]
fn three_devices_work_offline_and_converge() {
    let server = TestServer::start();
    let mut rng = rand::rngs::StdRng::seed_from_u64(gridlink_tests::process::seed_from_env());
    let mut grid = server.phone("grid_a");
    let mut village = server.phone("village");
    let mut center = server.phone("center");

    let ids: Vec<String> = (0..4).map(|i| grid.create_incident(report(&format!("事件{i}"))).unwrap()).collect();
    grid.sync().unwrap();
    village.sync().unwrap();
    center.sync().unwrap();
    assert_eq!(center.record_count().unwrap(), 4);
    let case_no = center.get(&ids[0]).unwrap().record.case_no.clone().unwrap();
    assert!(case_no.starts_with("GT-2026-") || case_no.starts_with("GT-20"), "{case_no}");

    // Offline, concurrently. The reports were routed to the village: the village and the center
    // act on them at the same time; the grid member meanwhile reports new things, one fixed on the
    // spot and one escalated before any sync.
    for (i, id) in ids.iter().enumerate() {
        village.edit_incident(id, IncidentEdit { notes: Some("村里已知悉".into()), ..Default::default() }).unwrap();
        // The first always gets two concurrent accepts, so there is a conflict to see.
        match if i == 0 { 0 } else { rng.random_range(0..3) } {
            0 => {
                village.act(id, Action::Accept, "").unwrap();
                center.act(id, Action::Accept, "").unwrap();
            }
            1 => {
                village.act(id, Action::Escalate { to_unit: unit(TOWN) }, "请镇里处理").unwrap();
                center.act(id, Action::Accept, "").unwrap();
            }
            _ => {
                center.act(id, Action::Supervise { overdue: false, to_units: vec![] }, "请尽快受理").unwrap();
                village.act(id, Action::Accept, "").unwrap();
            }
        }
    }
    let fixed = grid.create_incident(report("现场已处理的事件")).unwrap();
    grid.act(&fixed, Action::SelfResolve { photos: vec![] }, "已现场处理").unwrap();
    let up = grid.create_incident(report("需上报的事件")).unwrap();
    grid.edit_incident(&up, IncidentEdit { description: Some("巡查发现(补充:影响通行)".into()), ..Default::default() }).unwrap();
    grid.act(&up, Action::Escalate { to_unit: unit(VILLAGE) }, "请村里协调").unwrap();
    let ids: Vec<String> = ids.into_iter().chain([fixed, up]).collect();
    let mut phones = [grid, village, center];
    for _ in 0..3 {
        let mut order: Vec<usize> = (0..3).collect();
        order.shuffle(&mut rng);
        for i in order {
            phones[i].sync().unwrap();
        }
    }
    let mut conflicts = 0;
    for id in &ids {
        let views: Vec<_> = phones.iter().map(|p| p.get(id).unwrap()).collect();
        assert_eq!(views[0].record, views[1].record, "grid and village agree on {id}");
        assert_eq!(views[1].record, views[2].record, "village and center agree on {id}");
        assert_eq!(views[0].folded, views[2].folded);
        conflicts += views[0].folded.conflicts();
        // Nothing lost: the report and at least one offline action on every record.
        assert!(views[0].folded.entries.len() >= 2);
        // The server holds the same record.
        let (status, body) = json(
            http()
                .get(format!("{}/api/v1/records/{id}", server.base))
                .header("Authorization", format!("Bearer {}", token(&phones[2])))
                .call()
                .unwrap(),
        );
        assert_eq!(status, 200);
        assert_eq!(body["timeline"].as_array().unwrap().len(), views[0].folded.entries.len());
    }
    assert!(conflicts >= 1, "concurrent accepts leave visible conflicts");
    for p in &phones {
        assert_eq!(p.pending_count().unwrap(), 0);
        assert!(p.verify_integrity().unwrap().is_empty());
    }
}

#[test]
fn a_days_work_goes_up_in_one_round_and_idle_rounds_are_tiny() {
    let server = TestServer::start();
    let mut grid = server.phone("grid_a");
    let mut village = server.phone("village");
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(grid.create_incident(report(&format!("第{i}件"))).unwrap());
    }
    // Reports wait in Automerge's plain encoding, though Automerge would deflate them one by one:
    // the sync body is deflated as a whole, and then also finds what the reports share.
    for e in grid.outbox(100).unwrap() {
        let mut change = automerge::Change::from_bytes(e.bytes.clone()).unwrap();
        assert_eq!(change.raw_bytes(), e.bytes.as_slice());
        assert!(change.bytes().len() < e.bytes.len(), "a report is big enough for Automerge to deflate it");
    }
    grid.sync().unwrap();
    village.sync().unwrap();
    // 200 actions offline at the village: accept, dispatch to the grid, and back.
    for id in &ids {
        village.act(id, Action::Accept, "").unwrap();
        village.act(id, Action::Dispatch { to_unit: unit(GRID_A), deadline_ms: None }, "").unwrap();
        village.edit_incident(id, IncidentEdit { notes: Some("已派网格员".into()), ..Default::default() }).unwrap();
        village.act(id, Action::Supervise { overdue: false, to_units: vec![] }, "请尽快").unwrap_err(); // station staff may not supervise
        village.edit_incident(id, IncidentEdit { notes: Some("已派网格员,请今日处理".into()), ..Default::default() }).unwrap();
    }
    let raw: usize = village.outbox(10_000).unwrap().iter().map(|e| e.bytes.len()).sum();
    assert_eq!(village.pending_count().unwrap(), 200);
    let r = village.sync().unwrap();
    assert_eq!(r.rounds, 1, "one round trip: {r:?}");
    assert_eq!(r.pushed, 200);
    assert!((r.bytes_up as f64) <= 1.3 * raw as f64, "wire {} vs change bytes {raw}", r.bytes_up);
    eprintln!("day's work: {} bytes of changes, {} bytes on the wire up", raw, r.bytes_up);

    // Nothing new: tiny both ways.
    let idle = village.sync().unwrap();
    assert!(idle.bytes_up < 1024 && idle.bytes_down < 1024, "{idle:?}");
    assert_eq!(idle.received_docs, 0);

    // Case numbers: in order, without gaps.
    let conn = server.state.db.reader();
    let mut nos: Vec<String> = conn.record_ids().unwrap().iter().filter_map(|id| conn.case_no_of(id).unwrap()).collect();
    nos.sort();
    let seq: Vec<u32> = nos.iter().map(|n| n.rsplit('-').next().unwrap().parse().unwrap()).collect();
    assert_eq!(seq, (1..=50).collect::<Vec<_>>());
    let shown: BTreeSet<String> = ids.iter().map(|id| grid.get(id).unwrap().record.display_no().to_owned()).collect();
    assert_eq!(shown.len(), 50);
    assert!(shown.iter().all(|n| n.starts_with("GT-")), "phones show the case numbers after sync");
}

#[test]
fn authorization_scope_and_forged_changes() {
    let server = TestServer::start();
    let mut a = server.phone("grid_a");
    let mut b = server.phone("grid_b");
    let mut c = server.phone("grid_c");
    let mine = a.create_incident(report("A网格的事件")).unwrap();
    let jpeg = {
        let img = image_bytes();
        a.attach_photo(&mine, &img).unwrap()
    };
    a.sync().unwrap();
    let theirs = b.create_incident(report("B网格的事件")).unwrap();
    b.sync().unwrap();
    a.sync().unwrap();
    c.sync().unwrap();
    assert_eq!(a.record_ids().unwrap(), vec![mine.clone()], "a grid member receives only his grid's records");
    assert_eq!(c.record_count().unwrap(), 0, "another village's grid sees nothing");

    // Through every endpoint: records, photos.
    let tok = token(&b);
    let (s, _) =
        json(http().get(format!("{}/api/v1/records/{mine}", server.base)).header("Authorization", format!("Bearer {tok}")).call().unwrap());
    assert_eq!(s, 404);
    let (s, _) = json(
        http().get(format!("{}/api/v1/attachments/{jpeg}", server.base)).header("Authorization", format!("Bearer {tok}")).call().unwrap(),
    );
    assert_eq!(s, 404);
    let (s, _) = json(http().get(format!("{}/api/v1/records/{mine}", server.base)).call().unwrap());
    assert_eq!(s, 401);

    // A forged change on his own record: a grid member closing it (valid Automerge, forbidden action).
    let forged_close = forge_entry(&a, &mine, "close", "grid_a", "grid_member", GRID_A);
    // A forged identity: acting as the center.
    let forged_actor = forge_entry(&a, &mine, "accept", "center", "center_operator", TOWN);
    // Writing into another grid's record, and creating one in another grid.
    let into_theirs = forge_entry(&b, &theirs, "escalate_as_a", "grid_a", "grid_member", GRID_A);
    for (doc, change, expect) in
        [(&mine, forged_close, "无权执行"), (&mine, forged_actor, "操作人与登录账号不符"), (&theirs, into_theirs, "不在本人的办理范围")]
    {
        let body = protocol::encode(&SyncRequest {
            v: protocol::PROTOCOL_VERSION,
            cursor: None,
            push: vec![DocChanges { doc: DocId::parse(doc).unwrap(), changes: vec![serde_bytes_buf(change)] }],
            page_bytes: None,
            whole_docs: false,
            personal: vec![],
            ..Default::default()
        });
        let (_, answer) = raw_round(&server, &token(&a), &body);
        assert_eq!(answer.rejected.len(), 1, "{answer:?}");
        assert!(answer.rejected[0].reason.contains(expect), "{}", answer.rejected[0].reason);
    }
    // Absent afterwards: the server's copies hold only the report and the system's routing.
    for (doc, t) in [(&mine, token(&a)), (&theirs, tok.clone())] {
        let (_, body) = json(
            http().get(format!("{}/api/v1/records/{doc}", server.base)).header("Authorization", format!("Bearer {t}")).call().unwrap(),
        );
        let kinds: Vec<&str> =
            body["timeline"].as_array().unwrap().iter().map(|e| e["entry"]["action"]["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["report", "route"]);
        assert!(!body.to_string().contains("伪造"));
    }
}

/// A change that appends a timeline entry written by hand (not through the client's checks).
fn forge_entry(holder: &Phone, id: &str, what: &str, actor: &str, role: &str, unit_code: &str) -> Vec<u8> {
    forge_on(&holder.changes(id).unwrap(), what, (actor, role, unit_code), chrono_now(), |_, _| {})
}

/// A timeline entry written by hand on top of `changes` (what its author had seen), stamped
/// `at_ms`; `tweak` may then rewrite the entry's fields, as a client of another make might.
fn forge_on(
    changes: &[Vec<u8>],
    what: &str,
    (actor, role, unit_code): (&str, &str, &str),
    at_ms: i64,
    tweak: impl FnOnce(&mut automerge::AutoCommit, &automerge::ObjId),
) -> Vec<u8> {
    use automerge::transaction::Transactable;
    use automerge::{ObjType, ROOT, ReadDoc};
    let mut doc = automerge::AutoCommit::new();
    for c in changes {
        doc.apply_changes(vec![automerge::Change::from_bytes(c.clone()).unwrap()]).unwrap();
    }
    let (_, timeline) = doc.get(ROOT, "timeline").unwrap().unwrap();
    let entry = doc.put_object(&timeline, uuid_like(&format!("{what}{at_ms}")), ObjType::Map).unwrap();
    doc.put(&entry, "at_ms", at_ms).unwrap();
    doc.put(&entry, "at_c", 0u64).unwrap();
    doc.put(&entry, "actor", actor).unwrap();
    doc.put(&entry, "actor_name", "伪造").unwrap();
    doc.put(&entry, "role", role).unwrap();
    doc.put(&entry, "unit", unit_code).unwrap();
    let action = doc.put_object(&entry, "action", ObjType::Map).unwrap();
    match what {
        "escalate_as_a" => {
            doc.put(&action, "type", "escalate").unwrap();
            doc.put(&action, "to_unit", VILLAGE).unwrap();
        }
        other => doc.put(&action, "type", other).unwrap(),
    }
    let note = doc.put_object(&entry, "note", ObjType::Text).unwrap();
    doc.splice_text(&note, 0, 0, "伪造的操作").unwrap();
    tweak(&mut doc, &entry);
    doc.commit();
    doc.get_last_local_change().unwrap().raw_bytes().to_vec()
}

/// A sync request that pushes one change to a record.
fn push_body(doc: &str, change: Vec<u8>) -> Vec<u8> {
    protocol::encode(&SyncRequest {
        v: protocol::PROTOCOL_VERSION,
        cursor: None,
        push: vec![DocChanges { doc: DocId::parse(doc).unwrap(), changes: vec![serde_bytes_buf(change)] }],
        page_bytes: None,
        whole_docs: false,
        personal: vec![],
        ..Default::default()
    })
}

/// Pushes one change to a record as `phone`'s device; returns the refusal's reason, if any.
fn push_change(server: &TestServer, phone: &Phone, doc: &str, change: Vec<u8>) -> Option<String> {
    let body = push_body(doc, change);
    let (_, answer) = raw_round(server, &token(phone), &body);
    assert!(answer.rejected.len() <= 1, "{answer:?}");
    answer.rejected.first().map(|r| r.reason.clone())
}

#[test]
fn a_backdated_entry_is_refused_and_concurrent_work_still_folds() {
    use automerge::transaction::Transactable;
    use automerge::{ObjType, ScalarValue};
    let server = TestServer::start();
    let mut grid = server.phone("grid_a");
    let mut center = server.phone("center");
    let mut dept = server.phone("dept_a");
    let id = grid.create_incident(NewIncident { category: "0602".into(), ..report("违章搭建") }).unwrap();
    grid.sync().unwrap();
    center.sync().unwrap();
    center.act(&id, Action::Accept, "").unwrap();
    center.act(&id, Action::Dispatch { to_unit: unit(DEPT_A), deadline_ms: None }, "").unwrap();
    center.sync().unwrap();
    let at_of = |p: &Phone, kind: &str| {
        let r = p.get(&id).unwrap().record;
        r.timeline.iter().find(|e| e.action.kind().as_str() == kind).unwrap().at
    };
    let (accepted, dispatched) = (at_of(&center, "accept"), at_of(&center, "dispatch"));
    // What the center holds before the department signs: a suspension written on it is
    // genuinely concurrent with the signing.
    let before_sign = center.changes(&id).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    dept.sync().unwrap();
    dept.act(&id, Action::Sign, "").unwrap();
    dept.sync().unwrap();
    center.sync().unwrap();
    let seen = center.changes(&id).unwrap();
    let case_no = center.get(&id).unwrap().record.case_no.unwrap();
    let me = ("center", "center_operator", TOWN);
    let now = chrono_now();

    // Backdating: built on the dispatch and the signing, dated just after the acceptance.
    let backdated = forge_on(&seen, "suspend", me, accepted.wall_ms + 1, |_, _| {});
    if std::env::var_os("GRIDLINK_WRITE_SEEDS").is_some() {
        // `GRIDLINK_WRITE_SEEDS=1 cargo test -p gridlink-tests --test sync backdated` renews the
        // fuzz seed with this request.
        let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/sync_request/backdated_suspend.bin");
        std::fs::write(seed, push_body(&id, backdated.clone())).unwrap();
    }
    let reason = push_change(&server, &center, &id, backdated).expect("a backdated entry is refused");
    assert!(reason.contains("时间倒填") && reason.contains(&case_no), "{reason}");
    // Equal to the latest seen entry is not later either.
    let sign_at = at_of(&center, "sign");
    let tie = forge_on(&seen, "suspend", me, sign_at.wall_ms, |d, e| d.put(e, "at_c", u64::from(sign_at.counter)).unwrap());
    assert!(push_change(&server, &center, &id, tie).is_some_and(|r| r.contains("时间倒填")));

    // Shapes a client of another make may write.
    let text_actor = forge_on(&seen, "supervise", me, now, |d, e| {
        let t = d.put_object(e, "actor", ObjType::Text).unwrap();
        d.splice_text(&t, 0, 0, "center").unwrap();
    });
    let reason = push_change(&server, &center, &id, text_actor).expect("a code written as text is refused");
    assert!(reason.contains(&case_no) && reason.contains("操作人") && reason.contains("应为普通字符串"), "{reason}");
    let plain_note = forge_on(&seen, "supervise", me, now, |d, e| d.put(e, "note", "督办").unwrap());
    let reason = push_change(&server, &center, &id, plain_note).expect("free text written as a string is refused");
    assert!(reason.contains("说明") && reason.contains("应为文本对象"), "{reason}");
    let map_counter = forge_on(&seen, "supervise", me, now, |d, e| {
        d.put_object(e, "at_c", ObjType::Map).unwrap();
    });
    let reason = push_change(&server, &center, &id, map_counter).expect("a map where a number belongs is refused");
    assert!(reason.starts_with(&format!("记录 {case_no} 的结构不符合要求")), "{reason}");
    assert!(reason.contains("时间序号") && reason.contains("应为整数") && !reason.contains("invalid"), "{reason}");
    let unknown = forge_on(&seen, "teleport", me, now, |_, _| {});
    let reason = push_change(&server, &center, &id, unknown).expect("an unknown action is refused");
    assert!(reason.contains("未知的操作类型“teleport”") && !reason.contains("variant"), "{reason}");

    // Nothing refused reached the server or the department: it still holds the record it signed.
    dept.sync().unwrap();
    let view = dept.get(&id).unwrap();
    assert_eq!(view.folded.state.status, Some(Status::InProgress));
    assert_eq!(view.folded.conflicts(), 0);
    assert_eq!(view.record.timeline.len(), 5, "report, route, accept, dispatch, sign");

    // A whole-number float where an integer is meant (as Automerge's JavaScript library writes
    // a nested 0) is read as the integer.
    let float_counter = forge_on(&seen, "supervise", me, now, |d, e| d.put(e, "at_c", ScalarValue::F64(0.0)).unwrap());
    assert_eq!(push_change(&server, &center, &id, float_counter), None);
    dept.sync().unwrap();
    let view = dept.get(&id).unwrap();
    let supervise = view.record.timeline.iter().find(|e| e.action.kind().as_str() == "supervise").expect("the supervision arrived");
    assert_eq!((supervise.at.wall_ms, supervise.at.counter), (now, 0));

    // Genuinely concurrent offline work stays allowed and is folded as before: a suspension made
    // without knowledge of the signing, dated between the dispatch and the signing.
    let concurrent = forge_on(&before_sign, "suspend", me, dispatched.wall_ms + 1, |_, _| {});
    assert_eq!(push_change(&server, &center, &id, concurrent), None);
    dept.sync().unwrap();
    let view = dept.get(&id).unwrap();
    assert_eq!(view.folded.state.status, Some(Status::Suspended));
    let sign = view.folded.entries.iter().find(|e| e.entry.action.kind().as_str() == "sign").unwrap();
    assert!(sign.conflict.is_some(), "the signing after a concurrent suspension is marked, not lost");
}

fn uuid_like(seed: &str) -> String {
    format!("01900000-0000-7000-8000-{:012x}", seed.len() as u64 * 7919)
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn serde_bytes_buf(b: Vec<u8>) -> serde_bytes::ByteBuf {
    serde_bytes::ByteBuf::from(b)
}

/// A 2000×1200 JPEG, as a phone camera would produce.
pub fn image_bytes() -> Vec<u8> {
    let img = image::RgbImage::from_fn(2000, 1200, |x, y| image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x + y) % 233) as u8]));
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&img).unwrap();
    out
}

/// Posts one encoded sync request as the device holding `token`; the round must succeed. Returns
/// the answer's size in bytes and the answer.
fn raw_round(server: &TestServer, token: &str, body: &[u8]) -> (usize, protocol::SyncResponse) {
    let resp = http()
        .post(format!("{}/api/v1/sync", server.base))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", CONTENT_TYPE)
        .send(body)
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut bytes = Vec::new();
    resp.into_body().into_reader().read_to_end(&mut bytes).unwrap();
    (bytes.len(), protocol::decode(&bytes).unwrap())
}

/// One raw sync round from a fresh device of `phone`'s account, asking or not for whole documents.
fn fresh_round(server: &TestServer, phone: &Phone, whole_docs: bool) -> (usize, protocol::SyncResponse) {
    let body = protocol::encode(&SyncRequest {
        v: protocol::PROTOCOL_VERSION,
        cursor: None,
        push: vec![],
        page_bytes: None,
        whole_docs,
        personal: vec![],
        ..Default::default()
    });
    raw_round(server, &token(phone), &body)
}

#[test]
fn new_records_come_as_whole_documents_to_devices_that_take_them() {
    let server = TestServer::start();
    let mut grid = server.phone("grid_a");
    let mut village = server.phone("village");
    let ids: Vec<String> = (0..20).map(|i| grid.create_incident(report(&format!("事件{i}"))).unwrap()).collect();
    for id in &ids {
        grid.edit_incident(id, IncidentEdit { notes: Some("现场复查,情况属实。".into()), ..Default::default() }).unwrap();
    }
    grid.sync().unwrap();
    village.sync().unwrap();
    for id in &ids[..5] {
        village.act(id, Action::Accept, "").unwrap();
    }
    village.sync().unwrap();

    // Asked for: one saved document per record, holding every change the server has.
    let (whole_size, whole) = fresh_round(&server, &village, true);
    let (changes_size, changes) = fresh_round(&server, &village, false);
    assert_eq!(whole.docs.len(), ids.len());
    assert_eq!(changes.docs.len(), ids.len());
    for (w, c) in whole.docs.iter().zip(&changes.docs) {
        assert_eq!(w.doc, c.doc);
        assert_eq!(w.changes.len(), 1, "one document per record");
        assert!(automerge::Change::from_bytes(w.changes[0].to_vec()).is_err(), "a saved document, not a change");
        assert!(c.changes.len() >= 3, "report, case number, routing and the edit come as changes");
        let mut from_doc = automerge::AutoCommit::load(&w.changes[0]).unwrap();
        let mut from_changes = automerge::AutoCommit::new();
        from_changes.load_incremental(&c.changes.iter().flat_map(|b| b.to_vec()).collect::<Vec<u8>>()).unwrap();
        assert_eq!(from_doc.get_heads(), from_changes.get_heads(), "the same history either way");
    }
    assert!(whole_size < changes_size, "whole documents are the smaller answer: {whole_size} vs {changes_size} bytes");
    // The documents come without Automerge's per-column deflate, so that the body's compression
    // finds what the records share: smaller than the same answer with compactly saved documents.
    let compact = protocol::encode(&protocol::SyncResponse {
        docs: whole
            .docs
            .iter()
            .map(|d| protocol::DocChanges { doc: d.doc, changes: vec![automerge::AutoCommit::load(&d.changes[0]).unwrap().save().into()] })
            .collect(),
        ..whole.clone()
    });
    assert!(whole_size < compact.len(), "{whole_size} bytes vs {} with compactly saved documents", compact.len());
    // A device that reads each record's id from its document gets the same documents without
    // the 16-byte ids beside them, which no compression shrinks.
    let body = protocol::encode(&SyncRequest { v: protocol::PROTOCOL_VERSION, ids_in_docs: true, ..Default::default() });
    let (bare_size, bare) = raw_round(&server, &token(&village), &body);
    assert!(bare.docs.is_empty(), "{:?}", bare.docs);
    let named: std::collections::BTreeSet<String> = bare
        .whole
        .iter()
        .map(|d| {
            let doc = automerge::AutoCommit::load(d).unwrap();
            let (id, _) = automerge::ReadDoc::get(&doc, automerge::ROOT, "id").unwrap().unwrap();
            id.as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(named, ids.iter().cloned().collect(), "each document names its record");
    assert!(bare_size + 16 * ids.len() / 2 < whole_size, "{bare_size} bytes without ids vs {whole_size} with them");
    eprintln!(
        "20 records to a fresh device: {whole_size} bytes as documents ({bare_size} without ids beside them), {changes_size} bytes as changes"
    );

    // A real phone bootstraps from documents and then keeps receiving changes as usual.
    let mut fresh = server.phone("village");
    fresh.sync().unwrap();
    assert_eq!(fresh.record_count().unwrap(), ids.len() as i64);
    assert_eq!(fresh.get(&ids[0]).unwrap().record, village.get(&ids[0]).unwrap().record, "accepted, with its case number");
    village.edit_incident(&ids[2], IncidentEdit { notes: Some("补充说明".into()), ..Default::default() }).unwrap();
    village.sync().unwrap();
    fresh.sync().unwrap();
    assert_eq!(fresh.get(&ids[2]).unwrap().record, village.get(&ids[2]).unwrap().record);
}

#[test]
fn revocation_wipes_and_relogin_restores() {
    let server = TestServer::start();
    let mut grid = server.phone("grid_a");
    let id = grid.create_incident(report("丢失手机上的事件")).unwrap();
    grid.sync().unwrap();
    let device_id = grid.device_id.clone();
    let admin = server.phone("admin");
    let resp = http()
        .post(format!("{}/api/v1/admin/devices/{device_id}/revoke", server.base))
        .header("Authorization", format!("Bearer {}", token(&admin)))
        .send_empty()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    // A non-admin cannot revoke.
    let (s, _) = json(
        http()
            .post(format!("{}/api/v1/admin/devices/{device_id}/revoke", server.base))
            .header("Authorization", format!("Bearer {}", token(&grid)))
            .send_empty()
            .unwrap(),
    );
    assert!(s == 410 || s == 403);

    let err = grid.sync().unwrap_err();
    assert!(matches!(err, SyncError::Wiped), "{err}");
    assert_eq!(grid.record_count().unwrap(), 0, "local records wiped");
    assert!(grid.identity().is_none());
    assert!(gridlink_core::sync::SyncEngine::<gridlink_core::sync::HttpTransport>::status(&grid).map(|s| !s.logged_in).unwrap());

    grid.engine.login(&mut grid.client, "grid_a", PASSWORD, "新手机").unwrap();
    grid.sync().unwrap();
    assert_eq!(grid.record_ids().unwrap(), vec![id]);
}

#[test]
fn bad_requests_get_clear_4xx_and_the_server_keeps_serving() {
    let server = TestServer::start();
    let mut grid = server.phone("grid_a");
    let tok = token(&grid);
    let url = format!("{}/api/v1/sync", server.base);
    let post = |ct: &str, body: Vec<u8>, t: &str| {
        json(http().post(&url).header("Authorization", format!("Bearer {t}")).header("Content-Type", ct).send(&body[..]).unwrap())
    };
    let (s, b) = post(CONTENT_TYPE, b"not deflate".to_vec(), &tok);
    assert_eq!(s, 400);
    assert!(b["error"]["message"].as_str().unwrap().contains("无法解压"));
    let (s, _) = post("application/json", b"{}".to_vec(), &tok);
    assert_eq!(s, 400);
    let wrong_version = protocol::encode(&SyncRequest {
        v: 9,
        cursor: None,
        push: vec![],
        page_bytes: None,
        whole_docs: false,
        personal: vec![],
        ..Default::default()
    });
    let (s, b) = post(CONTENT_TYPE, wrong_version, &tok);
    assert_eq!(s, 422);
    assert!(b["error"]["message"].as_str().unwrap().contains("版本"));
    let truncated = protocol::encode(&SyncRequest {
        v: 1,
        cursor: Some(3),
        push: vec![],
        page_bytes: None,
        whole_docs: false,
        personal: vec![],
        ..Default::default()
    });
    let (s, _) = post(CONTENT_TYPE, truncated[..truncated.len() / 2].to_vec(), &tok);
    assert_eq!(s, 400);
    let empty_doc = protocol::encode(&SyncRequest {
        v: 1,
        cursor: None,
        push: vec![DocChanges { doc: DocId([1; 16]), changes: vec![] }],
        page_bytes: None,
        whole_docs: false,
        personal: vec![],
        ..Default::default()
    });
    let (s, _) = post(CONTENT_TYPE, empty_doc, &tok);
    assert_eq!(s, 400);
    // A bad change is refused inside a valid round (200, listed as rejected).
    let push_one = |change: Vec<u8>| -> protocol::SyncResponse {
        let req = protocol::encode(&SyncRequest {
            v: 1,
            cursor: None,
            push: vec![DocChanges { doc: DocId([1; 16]), changes: vec![serde_bytes_buf(change)] }],
            page_bytes: None,
            whole_docs: false,
            personal: vec![],
            ..Default::default()
        });
        raw_round(&server, &tok, &req).1
    };
    let answer = push_one(vec![0x85, 0x6f, 0x4a, 0x83, 1, 2, 3]);
    assert_eq!(answer.rejected[0].reason, "变更数据无效");
    // A 638-byte "bundle" chunk on which Automerge's decoder asks for tens of GiB: refused like
    // any bad change, and the server goes on answering.
    let answer = push_one(include_bytes!("../../core/tests/fixtures/fuzz-doc_load-bundle-oom.bin").to_vec());
    assert_eq!(answer.rejected[0].reason, "变更数据无效");
    // Oversized: refused from its length before it is read. The server may close the connection
    // while the client is still sending; any answer that arrives is 413.
    let big = vec![7u8; 33 << 20];
    match http().post(&url).header("Authorization", format!("Bearer {tok}")).header("Content-Type", CONTENT_TYPE).send(&big[..]) {
        Ok(resp) => assert_eq!(resp.status().as_u16(), 413),
        Err(ureq::Error::Io(e)) => assert!(matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset), "{e}"),
        Err(e) => panic!("{e}"),
    }
    let (s, b) = post(CONTENT_TYPE, b"x".to_vec(), "not-a-token");
    assert_eq!(s, 401);
    assert_eq!(b["error"]["message"], "未登录或登录已失效");
    let (s, _) = json(
        http()
            .post(format!("{}/api/v1/login", server.base))
            .header("Content-Type", "application/json")
            .send(&b"{\"username\": 5}"[..])
            .unwrap(),
    );
    assert!((400..500).contains(&s));
    // Still serving: a normal sync works.
    grid.create_incident(report("正常上报")).unwrap();
    let r = grid.sync().unwrap();
    assert_eq!(r.pushed, 1);
    let metrics = http().get(format!("{}/metrics", server.base)).call().unwrap().into_body().read_to_string().unwrap();
    assert!(metrics.contains("gridlink_sync_rounds_total") && metrics.contains("gridlink_changes_accepted_total"), "{metrics}");
}

#[test]
fn photos_upload_resumably_and_download_with_ranges() {
    let server = TestServer::start();
    let mut grid = server.phone("grid_a");
    let mut village = server.phone("village");
    let id = grid.create_incident(report("带照片的事件")).unwrap();
    let sha = grid.attach_photo(&id, &image_bytes()).unwrap();
    let photo = grid.photo(&sha).unwrap().unwrap();
    // Half an upload, as if the link dropped.
    let tok = token(&grid);
    let half = photo.len() / 2;
    let resp = http()
        .put(format!("{}/api/v1/attachments/{sha}?offset=0&total={}", server.base, photo.len()))
        .header("Authorization", format!("Bearer {tok}"))
        .send(&photo[..half])
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // A chunk at the wrong offset is told where to resume.
    let (s, b) = json(
        http()
            .put(format!("{}/api/v1/attachments/{sha}?offset=10&total={}", server.base, photo.len()))
            .header("Authorization", format!("Bearer {tok}"))
            .send(&photo[10..20])
            .unwrap(),
    );
    assert_eq!((s, b["received"].as_u64()), (409, Some(half as u64)));
    let r = grid.sync().unwrap();
    assert_eq!(r.photos_uploaded, 1);
    assert!(r.bytes_up < photo.len() + 20_000, "the upload resumed instead of restarting: {r:?}");
    assert_eq!(grid.pending_photo_count().unwrap(), 0);

    village.sync().unwrap();
    assert!(village.photo(&sha).unwrap().is_none(), "photos are fetched on demand");
    let got = village.engine.fetch_photo(&mut village.client, &sha).unwrap();
    assert_eq!(got, photo);
    let resp = http()
        .get(format!("{}/api/v1/attachments/{sha}", server.base))
        .header("Authorization", format!("Bearer {}", token(&village)))
        .header("Range", "bytes=100-199")
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 206);
    assert_eq!(resp.into_body().read_to_vec().unwrap(), photo[100..200]);
    // A corrupt upload is refused on arrival.
    let fake = "0".repeat(64);
    let (s, _) = json(
        http()
            .put(format!("{}/api/v1/attachments/{fake}?offset=0&total=5", server.base))
            .header("Authorization", format!("Bearer {tok}"))
            .send(&b"hello"[..])
            .unwrap(),
    );
    assert_eq!(s, 422);
    let (s, _) = json(
        http()
            .put(format!("{}/api/v1/attachments/..%2F..%2Fetc?offset=0&total=5", server.base))
            .header("Authorization", format!("Bearer {tok}"))
            .send(&b"hello"[..])
            .unwrap(),
    );
    assert_eq!(s, 400);
    let (s, _) = json(
        http()
            .put(format!("{}/api/v1/attachments/{fake}?offset=0&total={}", server.base, 11 << 20))
            .header("Authorization", format!("Bearer {tok}"))
            .send(&b"x"[..])
            .unwrap(),
    );
    assert_eq!(s, 413);
}

#[test]
fn scope_follows_dispatch_and_return() {
    let server = TestServer::start();
    let mut grid = server.phone("grid_a");
    let mut center = server.phone("center");
    let mut dept_a = server.phone("dept_a");
    let mut dept_b = server.phone("dept_b");
    let id = grid.create_incident(report("需派遣的事件")).unwrap();
    grid.sync().unwrap();
    center.sync().unwrap();
    center.act(&id, Action::Accept, "").unwrap();
    center.act(&id, Action::Dispatch { to_unit: unit(DEPT_A), deadline_ms: None }, "").unwrap();
    center.sync().unwrap();
    let r = dept_a.sync().unwrap();
    assert_eq!((r.changed_ids.clone(), r.removed_ids.clone()), (vec![id.clone()], vec![]), "the app learns what to refresh");
    dept_b.sync().unwrap();
    assert_eq!(dept_a.record_ids().unwrap(), vec![id.clone()], "dispatched: in the department's scope");
    assert_eq!(dept_b.record_count().unwrap(), 0);
    let r = dept_a.sync().unwrap();
    assert!(r.changed_ids.is_empty() && r.removed_ids.is_empty(), "nothing new: {r:?}");
    dept_a.act(&id, Action::Return, "不属于本单位").unwrap();
    let r = dept_a.sync().unwrap();
    assert_eq!(r.removed_docs, 1, "returned: it leaves the department's device");
    assert_eq!((r.changed_ids, r.removed_ids), (vec![], vec![id.clone()]));
    assert_eq!(dept_a.record_count().unwrap(), 0);
    center.sync().unwrap();
    center.act(&id, Action::Dispatch { to_unit: unit(DEPT_B), deadline_ms: None }, "改派").unwrap();
    center.sync().unwrap();
    dept_b.sync().unwrap();
    assert_eq!(dept_b.get(&id).unwrap().folded.state.status, Some(Status::Dispatched));
    let open = dept_b.list(&RecordQuery { open_only: true, ..Default::default() }).unwrap();
    assert_eq!(open.len(), 1);
}

#[test]
fn live_events_tell_online_clients_to_sync() {
    let server = TestServer::start();
    let mut grid = server.phone("grid_a");
    let village = server.phone("village");
    let other = server.phone("village2");
    let listen = |t: String| {
        let url = format!("{}/api/v1/events", server.base);
        std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(std::time::Duration::from_secs(4))).build().into();
            let mut body = String::new();
            if let Ok(resp) = agent.get(&url).header("Authorization", format!("Bearer {t}")).call() {
                let mut reader = resp.into_body().into_reader();
                let mut buf = [0u8; 512];
                while let Ok(n) = reader.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    body.push_str(&String::from_utf8_lossy(&buf[..n]));
                    if body.contains("event: sync") {
                        break;
                    }
                }
            }
            body
        })
    };
    let in_scope = listen(token(&village));
    let out_of_scope = listen(token(&other));
    std::thread::sleep(std::time::Duration::from_millis(500));
    grid.create_incident(report("实时推送")).unwrap();
    grid.sync().unwrap();
    assert!(in_scope.join().unwrap().contains("event: sync"), "the village station is told to sync");
    assert!(!out_of_scope.join().unwrap().contains("event: sync"), "another village is not");
}

/// Found by `three_devices_work_offline_and_converge`: an edit made offline by the unit that held
/// the record was refused because, meanwhile, the center had taken the record over. A change is
/// judged by what its author saw.
#[test]
fn offline_work_is_judged_by_what_its_author_saw() {
    let server = TestServer::start();
    let mut grid = server.phone("grid_a");
    let mut village = server.phone("village");
    let mut center = server.phone("center");
    let id = grid.create_incident(report("暴露垃圾")).unwrap();
    grid.sync().unwrap();
    village.sync().unwrap();
    center.sync().unwrap();
    village.edit_incident(&id, IncidentEdit { notes: Some("已派人查看".into()), ..Default::default() }).unwrap();
    center.act(&id, Action::Accept, "").unwrap();
    center.sync().unwrap();
    let r = village.sync().unwrap();
    assert!(r.rejected.is_empty(), "{:?}", r.rejected);
    center.sync().unwrap();
    match center.get(&id).unwrap().record.body {
        gridlink_core::RecordBody::Incident(f) => assert_eq!(f.notes, "已派人查看"),
        _ => unreachable!(),
    }
    // After the takeover the village's view is read-only: a new edit is refused locally.
    assert!(village.edit_incident(&id, IncidentEdit { notes: Some("再改".into()), ..Default::default() }).is_err());
}

/// A device that never heard the answer sends the same request again: the new report is stored
/// once, with one case number and one server change, and case numbers stay without gaps.
#[test]
fn a_new_report_pushed_twice_is_stored_once() {
    let server = TestServer::start();
    let mut grid = server.phone("grid_a");
    let id = grid.create_incident(NewIncident { category: "0501".into(), title: "垃圾堆放".into(), ..Default::default() }).unwrap();
    let changes = grid.changes(&id).unwrap();
    assert_eq!(changes.len(), 1);
    let req = protocol::encode(&SyncRequest {
        v: protocol::PROTOCOL_VERSION,
        cursor: None,
        push: vec![DocChanges { doc: DocId::parse(&id).unwrap(), changes: changes.into_iter().map(serde_bytes_buf).collect() }],
        page_bytes: None,
        whole_docs: false,
        personal: vec![],
        ..Default::default()
    });
    for _ in 0..2 {
        let (_, answer) = raw_round(&server, &token(&grid), &req);
        assert!(answer.rejected.is_empty(), "{:?}", answer.rejected);
    }
    let mut center = server.phone("center");
    center.sync().unwrap();
    let history = center.export_history(&id).unwrap();
    assert_eq!(history.changes.len(), 2, "the report and the server's one change: {:?}", history.changes);
    // Case numbers run without gaps: the repeated request drew none.
    let next = grid.create_incident(NewIncident { category: "0501".into(), title: "占道经营".into(), ..Default::default() }).unwrap();
    grid.sync().unwrap();
    let no = |id: &str| grid.get(id).unwrap().record.case_no.unwrap();
    assert!(no(&id).ends_with("-000001"), "{}", no(&id));
    assert!(no(&next).ends_with("-000002"), "{}", no(&next));
}

/// The fuzz findings as a real client would send them: changes that made Automerge panic while
/// the server applied them or read the result. The server refuses them in the round's answer and
/// keeps serving.
#[test]
fn a_change_that_panicked_automerge_is_refused_and_the_server_keeps_serving() {
    let server = TestServer::start();
    let mut grid = server.phone("grid_a");
    for body in [
        &include_bytes!("../../core/tests/fixtures/fuzz-sync_request-apply-panic.bin")[..],
        &include_bytes!("../../core/tests/fixtures/fuzz-sync_request-read-panic.bin")[..],
    ] {
        let (_, answer) = raw_round(&server, &token(&grid), body);
        assert!(!answer.rejected.is_empty(), "{answer:?}");
        assert!(answer.rejected.iter().all(|r| r.reason.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))), "{answer:?}");
    }
    let id = grid.create_incident(report("之后的正常上报")).unwrap();
    grid.sync().unwrap();
    assert!(grid.get(&id).unwrap().record.case_no.is_some(), "the writer is alive");
}

/// A department signed and handled a record; an earlier offline dispatch to another department
/// then arrived and voided that work. The department is told, on its phone, even though the
/// record has left it; the center is told too; the console's timeline marks the voided entries.
#[test]
fn voided_work_reaches_the_person_whose_work_it_was() {
    let server = TestServer::start();
    let mut grid = server.phone("grid_a");
    let mut center_online = server.phone("center");
    let mut center_offline = server.phone("center");
    let mut dept_a = server.phone("dept_a");
    let id = grid.create_incident(NewIncident { category: "0602".into(), ..report("违章搭建") }).unwrap();
    grid.sync().unwrap();
    center_online.sync().unwrap();
    center_online.act(&id, Action::Accept, "").unwrap();
    center_online.sync().unwrap();
    center_offline.sync().unwrap();
    // On the road without signal, the second center device dispatches to department B first.
    center_offline.act(&id, Action::Dispatch { to_unit: unit(DEPT_B), deadline_ms: None }, "").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    center_online.act(&id, Action::Dispatch { to_unit: unit(DEPT_A), deadline_ms: None }, "").unwrap();
    center_online.sync().unwrap();
    dept_a.sync().unwrap();
    dept_a.act(&id, Action::Sign, "").unwrap();
    dept_a.act(&id, Action::Handle { photos: vec![] }, "已拆除").unwrap();
    dept_a.sync().unwrap();
    assert!(dept_a.notices().unwrap().is_empty());

    // The offline dispatch arrives: it is earlier, so department A's work no longer counts.
    center_offline.sync().unwrap();
    let r = dept_a.sync().unwrap();
    assert!(r.removed_ids.contains(&id), "the record leaves department A's phone: {r:?}");
    assert!(dept_a.rejections().unwrap().is_empty(), "nothing was refused — it was voided");
    let notices = dept_a.notices().unwrap();
    assert_eq!(notices.len(), 1, "{notices:?}");
    let text = &notices[0].text;
    assert!(
        text.contains("“签收”") && text.contains("“处置反馈”") && text.contains("未生效") && text.contains("已转环境卫生管理所"),
        "{text}"
    );
    assert_eq!(notices[0].doc_id, id);
    // The center sees it as well.
    center_online.sync().unwrap();
    let for_center = center_online.notices().unwrap();
    assert!(for_center.iter().any(|n| n.doc_id == id && n.text.contains("签收")), "{for_center:?}");
    // The console's timeline marks the voided entries.
    let page = http()
        .get(format!("{}/console/records/{id}", server.base))
        .header("Cookie", format!("gl_session={}", token(&center_online)))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    assert!(page.matches("未生效").count() >= 2, "sign and handle are shown as voided");
}

/// A phone that logs in to another town server does not push its records there as a recovery:
/// only a server that went back to its own backup (same identity, new epoch) gets them back.
#[test]
fn a_login_to_another_server_is_no_restore() {
    let (a, b) = (TestServer::start(), TestServer::start());
    let mut phone = a.phone("grid_a");
    phone.create_incident(NewIncident { category: "0501".into(), title: "甲镇的事".into(), ..Default::default() }).unwrap();
    phone.sync().unwrap();
    assert!(phone.sync_meta("epoch").unwrap().is_some());
    phone.engine = gridlink_core::sync::SyncEngine::http(&b.base);
    phone.engine.login(&mut phone.client, "grid_a", gridlink_tests::PASSWORD, "测试手机").unwrap();
    let r = phone.sync().unwrap();
    assert_eq!(r.requeued, 0, "{r:?}");
    let on_b = b.state.db.reader().record_ids().unwrap();
    assert!(on_b.is_empty(), "the other town got nothing of this one");
}

/// A transport that notes every request's path, and can play a server that predates notices
/// in the sync answer (it takes them out).
#[derive(Debug)]
struct Noting {
    inner: gridlink_core::sync::HttpTransport,
    paths: std::sync::Mutex<Vec<String>>,
    /// Each request's path and the answer's status.
    answers: std::sync::Mutex<Vec<(String, u16)>>,
    old_server: bool,
}

impl gridlink_core::sync::Transport for Noting {
    fn call(&self, req: gridlink_core::sync::engine::HttpRequest) -> Result<gridlink_core::sync::engine::HttpResponse, SyncError> {
        let path = req.path.clone();
        self.paths.lock().unwrap().push(path.clone());
        let mut resp = self.inner.call(req)?;
        self.answers.lock().unwrap().push((path.clone(), resp.status));
        if self.old_server && path == "/api/v1/sync" && resp.status == 200 {
            let mut answer: protocol::SyncResponse = protocol::decode(&resp.body).unwrap();
            answer.notices = None;
            resp.body = protocol::encode(&answer);
        }
        Ok(resp)
    }
}

impl Noting {
    fn engine(base: &str, old_server: bool) -> gridlink_core::sync::SyncEngine<Noting> {
        gridlink_core::sync::SyncEngine::new(Noting {
            inner: gridlink_core::sync::HttpTransport::new(base),
            paths: Default::default(),
            answers: Default::default(),
            old_server,
        })
    }
}

/// A unit's notices (督办/通知) come in the answer that ends a phone's sync, and only those it
/// does not hold yet: a sync is one request per round, on a rural link as on any other. Notices
/// of another unit never come. A server that predates this is asked for them as before.
#[test]
fn notices_come_with_the_sync_answer_and_only_the_new_ones() {
    let server = TestServer::start();
    let mut phone = server.phone("grid_a");
    let notice = |doc: &str, unit: &str, text: &str| {
        server.state.db.writer().add_notice(doc, unit, 1_000, text).unwrap();
    };
    notice("r1", GRID_A, "第一条督办");
    notice("r2", GRID_B, "另一个网格的督办");
    notice("r3", VILLAGE, "村里的通知");

    let engine = Noting::engine(&server.base, false);
    let r = engine.sync_once(&mut phone.client).unwrap();
    assert_eq!(*engine.transport().paths.lock().unwrap(), ["/api/v1/sync"], "one request, no second one for the notices");
    let texts = |p: &Phone| -> Vec<String> { p.notices().unwrap().into_iter().map(|n| n.text).collect() };
    assert_eq!(texts(&phone), ["第一条督办"], "a grid's own notices only");
    assert_eq!(r.new_notices, 1);

    // Nothing new: the answer brings none, and the list stays.
    engine.transport().paths.lock().unwrap().clear();
    let r = engine.sync_once(&mut phone.client).unwrap();
    assert_eq!(r.new_notices, 0);
    assert_eq!(texts(&phone), ["第一条督办"]);
    assert_eq!(*engine.transport().paths.lock().unwrap(), ["/api/v1/sync"]);

    // A new one comes alone and goes on top.
    notice("r4", GRID_A, "第二条督办");
    let r = engine.sync_once(&mut phone.client).unwrap();
    assert_eq!(r.new_notices, 1);
    assert_eq!(texts(&phone), ["第二条督办", "第一条督办"], "newest first");

    // The village's phone sees its grids' notices and its own.
    let mut village = server.phone("village");
    village.sync().unwrap();
    assert_eq!(texts(&village), ["第二条督办", "村里的通知", "另一个网格的督办", "第一条督办"]);

    // Against a server that predates notices in the answer, the phone asks for them.
    let old = Noting::engine(&server.base, true);
    notice("r5", GRID_A, "第三条督办");
    old.sync_once(&mut phone.client).unwrap();
    assert_eq!(*old.transport().paths.lock().unwrap(), ["/api/v1/sync", "/api/v1/notices"]);
    assert_eq!(texts(&phone), ["第三条督办", "第二条督办", "第一条督办"]);
}

/// A department added after a phone logged in reaches its pickers: the phone asks daily whether
/// the town's units changed, and unchanged units cost an empty answer.
#[test]
fn a_phone_learns_of_units_added_after_it_logged_in() {
    let server = TestServer::start();
    let clock = std::sync::Arc::new(gridlink_core::ManualClock::new(gridlink_core::Clock::now_ms(&gridlink_core::SystemClock)));
    let mut center = Phone::login_with_clock(&server.base, "center", clock.clone());
    let has = |p: &Phone, code: &str| p.org_units().unwrap().iter().any(|u| u.code.as_str() == code);
    assert!(has(&center, DEPT_A), "units come with the login");
    const NEW_DEPT: &str = "532331101-D09";
    let dept = gridlink_core::OrgUnit {
        code: unit(NEW_DEPT),
        name: "水务站".into(),
        kind: gridlink_core::UnitKind::Department,
        parent: Some(unit(TOWN)),
        department_key: Some("shuiwu".into()),
    };
    gridlink_server::import::insert_units(&*server.state.db.writer(), &[dept]).unwrap();

    // The same day: no request for the units.
    let engine = Noting::engine(&server.base, false);
    engine.sync_once(&mut center.client).unwrap();
    assert_eq!(*engine.transport().paths.lock().unwrap(), ["/api/v1/sync"]);
    assert!(!has(&center, NEW_DEPT));

    // A day later the phone asks, and gets the new department.
    clock.advance(gridlink_core::sync::engine::UNITS_CHECK_MS + 1);
    engine.sync_once(&mut center.client).unwrap();
    assert!(has(&center, NEW_DEPT), "the department added on the server reaches the phone");
    let units_asked = |e: &gridlink_core::sync::SyncEngine<Noting>| -> Vec<u16> {
        e.transport().answers.lock().unwrap().iter().filter(|(p, _)| p.starts_with("/api/v1/units?unless=")).map(|(_, s)| *s).collect()
    };
    assert_eq!(units_asked(&engine), [200]);

    // Another day, nothing changed: an empty 304, and the units stay.
    clock.advance(gridlink_core::sync::engine::UNITS_CHECK_MS + 1);
    engine.sync_once(&mut center.client).unwrap();
    assert_eq!(units_asked(&engine), [200, 304]);
    assert!(has(&center, NEW_DEPT) && has(&center, DEPT_A));
}

/// When a whole town syncs at once, a round beyond the turns in flight waits for one, holding
/// only its request, and is served in full once a turn is free.
#[test]
fn a_sync_round_beyond_the_turns_in_flight_waits_for_one_then_is_served() {
    let server = TestServer::start_demo();
    let mut phone = Phone::login_with_password(&server.base, "gt201-0101", DEMO_PASSWORD);
    let id = phone.create_incident(report("路灯损坏")).unwrap();
    // Every turn is taken, as by as many rounds in flight.
    let all = gridlink_server::app::ROUNDS_IN_FLIGHT;
    let turns = server.state.round_turns.try_acquire_many(all as u32).expect("every turn is free");
    let round = std::thread::spawn(move || {
        let report = phone.sync();
        (phone, report)
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(!round.is_finished(), "a round was served with every turn taken");
    drop(turns);
    let (phone, report) = round.join().unwrap();
    report.expect("the waiting round is served once a turn is free");
    assert!(phone.get(&id).unwrap().record.case_no.is_some(), "the report was not taken by the town: it has no case number");
    assert_eq!(server.state.round_turns.available_permits(), all, "a round kept its turn");
}
