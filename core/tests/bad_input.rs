//! Bad input gets a typed error and changes nothing: not the record, not the outbox, not the index.

mod common;

use automerge::transaction::Transactable;
use common::*;
use gridlink_core::{Action, CoreError, IncidentEdit, NewIncident, NewServiceRequest, RecordQuery, ServiceMode};

/// Everything observable about a device's data, to compare before and after a refused call.
fn snapshot(c: &gridlink_core::Client) -> (Vec<String>, i64, Vec<gridlink_core::RecordSummary>, Vec<Vec<String>>) {
    let ids = c.record_ids().unwrap();
    let heads = ids.iter().map(|id| c.heads(id).unwrap().unwrap()).collect();
    (ids, c.pending_count().unwrap(), c.list(&RecordQuery { limit: 1000, ..Default::default() }).unwrap(), heads)
}

fn report() -> NewIncident {
    NewIncident { category: "0501".into(), title: "暴露垃圾".into(), ..Default::default() }
}

#[test]
fn unknown_catalog_codes() {
    let mut d = Device::new(grid_member(), at(2026, 11, 23, 9));
    let id = d.create_incident(report()).unwrap();
    let before = snapshot(&d);
    let err = d.create_incident(NewIncident { category: "9999".into(), ..report() }).unwrap_err();
    assert!(matches!(err, CoreError::UnknownCategory(ref c) if c == "9999"), "{err}");
    let err = d.edit_incident(&id, IncidentEdit { category: Some("05".into()), ..Default::default() }).unwrap_err();
    assert!(matches!(err, CoreError::UnknownCategory(_)));
    let mut station = Device::new(station_staff(), at(2026, 11, 23, 9));
    let err = station
        .create_service_request(NewServiceRequest {
            item: "FW999".into(),
            mode: ServiceMode::Errand,
            station: None,
            resident_name: "张三".into(),
            resident_id_number: None,
            resident_phone: None,
            materials_received: vec![],
            description: String::new(),
        })
        .unwrap_err();
    assert!(matches!(err, CoreError::UnknownServiceItem(_)));
    assert_eq!(snapshot(&d), before);
    assert_eq!(station.record_count().unwrap(), 0);
}

#[test]
fn actions_by_roles_not_allowed() {
    let t0 = at(2026, 11, 23, 9);
    let mut grid = Device::new(grid_member(), t0);
    let mut dept = Device::new(dept_a(), t0);
    let mut other_village = Device::new(person("x", "外村", gridlink_core::Role::StationStaff, OTHER_VILLAGE), t0);
    let id = grid.create_incident(report()).unwrap();
    push(&grid, &mut dept, &id);
    push(&grid, &mut other_village, &id);
    let before = snapshot(&grid);

    let e = grid.act(&id, Action::Dispatch { to_unit: unit(DEPT_A), deadline_ms: None }, "").unwrap_err();
    assert!(matches!(e, CoreError::NotAllowed { .. }), "grid member cannot dispatch: {e}");
    let e = grid.act(&id, Action::Close, "").unwrap_err();
    assert!(matches!(e, CoreError::NotAllowed { .. } | CoreError::InvalidTransition { .. }), "{e}");
    let e = grid.act(&id, Action::Sign, "").unwrap_err();
    assert!(matches!(e, CoreError::InvalidTransition { .. }), "{e}");
    let e = grid.act(&id, Action::Escalate { to_unit: unit(OTHER_VILLAGE) }, "去外村").unwrap_err();
    assert!(e.to_string().contains("逐级上报"), "escalation goes to one's own parent: {e}");
    let e = grid.act(&id, Action::Escalate { to_unit: unit(VILLAGE) }, "   ").unwrap_err();
    assert!(matches!(e, CoreError::NoteRequired { .. }), "{e}");
    let e = grid.act(&id, Action::Receive { deadline_ms: None }, "").unwrap_err();
    assert!(e.to_string().contains("不适用"), "service actions do not apply to incidents: {e}");
    assert_eq!(snapshot(&grid), before);

    let e = dept.act(&id, Action::Accept, "").unwrap_err();
    assert!(matches!(e, CoreError::NotAllowed { .. }), "a department cannot accept what was not dispatched to it: {e}");
    let e = other_village.act(&id, Action::Accept, "").unwrap_err();
    assert!(matches!(e, CoreError::NotAllowed { .. }), "a sibling village cannot act: {e}");
    let e = other_village.edit_incident(&id, IncidentEdit { description: Some("改掉".into()), ..Default::default() }).unwrap_err();
    assert!(matches!(e, CoreError::EditNotAllowed { .. }) && e.to_string().contains("范围"), "{e}");
    assert_eq!(other_village.pending_count().unwrap(), 0);
    assert_eq!(dept.pending_count().unwrap(), 0);
}

#[test]
fn corrupt_changes_and_documents() {
    let t0 = at(2026, 11, 23, 9);
    let mut grid = Device::new(grid_member(), t0);
    let mut village = Device::new(station_staff(), t0);
    let id = grid.create_incident(report()).unwrap();
    push(&grid, &mut village, &id);
    grid.act(&id, Action::Escalate { to_unit: unit(VILLAGE) }, "请村里处理").unwrap();
    let before = snapshot(&village);

    // Garbage bytes, a truncated change, a change with a flipped byte.
    let good = grid.changes(&id).unwrap().pop().unwrap();
    // A flip in the role's name, which Automerge cannot notice (a flip inside an entry id would
    // even make another valid record, so the place of the flip is chosen, not the middle).
    let plain = automerge::Change::from_bytes(good.clone()).unwrap().raw_bytes().to_vec();
    let role_at = plain.windows(11).position(|w| w == b"grid_member").expect("the role is stored as written");
    let mut flipped = plain;
    flipped[role_at + 4] ^= 0x01;
    // The same change relabelled as a chunk kind Gridlink never writes (a bundle, an unknown kind).
    let relabelled = |kind: u8| {
        let mut c = good.clone();
        c[8] = kind;
        c
    };
    let bundle_bomb = include_bytes!("fixtures/fuzz-doc_load-bundle-oom.bin").to_vec();
    for bad in [b"not automerge".to_vec(), good[..good.len() / 2].to_vec(), relabelled(3), relabelled(9), bundle_bomb] {
        let e = village.apply_remote(&id, &[bad]).unwrap_err();
        assert!(matches!(e, CoreError::CorruptChange), "{e}");
    }
    // Automerge does not notice a flipped byte in a value; the record's own schema check then
    // refuses the result, naming the record and the field. Either way: an error, nothing kept.
    let e = village.apply_remote(&id, &[flipped]).unwrap_err();
    assert!(matches!(e, CoreError::MalformedRecord { .. }), "{e}");
    assert!(e.to_string().contains(&id[..8]) && e.to_string().contains("角色"), "{e}");
    assert_eq!(snapshot(&village), before);
    // A change that depends on one we never sent.
    let e = village.apply_remote(&id, std::slice::from_ref(&good)).map(|_| ()).err();
    assert!(e.is_none(), "its dependency is present, so it applies");
    let before_after_good = snapshot(&village);
    assert_ne!(before_after_good, before);

    // A valid Automerge change that does not make a record.
    let mut doc = automerge::AutoCommit::new();
    doc.put(automerge::ROOT, "foo", 1).unwrap();
    let stranger = doc.get_last_local_change().unwrap().raw_bytes().to_vec();
    let e = village.apply_remote("0199aaaa-0000-7000-8000-000000000000", &[stranger]).unwrap_err();
    assert!(matches!(e, CoreError::MalformedRecord { .. }), "{e}");
    assert_eq!(snapshot(&village), before_after_good);

    // Stored document bytes corrupted on disk: a typed error for that record, others unaffected.
    let other = village.create_incident(NewIncident { grid: Some(unit(GRID)), ..report() }).unwrap();
    let path = village.path().to_path_buf();
    let Device { client, dir: _keep, .. } = village;
    drop(client);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("UPDATE documents SET snapshot = x'00112233' WHERE id = ?1", [&id]).unwrap();
    conn.execute("DELETE FROM doc_chunks WHERE doc_id = ?1", [&id]).unwrap();
    drop(conn);
    let village = gridlink_core::Client::open(&path).unwrap();
    let e = village.get(&id).unwrap_err();
    assert!(matches!(e, CoreError::CorruptDocument { .. }), "{e}");
    assert!(village.get(&other).is_ok());
    let problems = village.verify_integrity().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
}

#[test]
fn absurd_clocks() {
    let now = at(2026, 11, 23, 9);
    // A phone whose clock says 1970 cannot create entries.
    let mut broken = Device::new(grid_member(), 0);
    let e = broken.create_incident(report()).unwrap_err();
    assert!(matches!(e, CoreError::AbsurdClock));
    assert_eq!(broken.record_count().unwrap(), 0);
    assert_eq!(broken.pending_count().unwrap(), 0);

    // Entries from a phone whose clock is years ahead are refused on receipt.
    let mut future = Device::new(grid_member(), at(2031, 1, 1, 9));
    let mut village = Device::new(station_staff(), now);
    let id = future.create_incident(report()).unwrap();
    let e = village.apply_remote(&id, &future.changes(&id).unwrap()).unwrap_err();
    assert!(matches!(e, CoreError::AbsurdClock), "{e}");
    assert_eq!(village.record_count().unwrap(), 0);

    // Three days of skew is tolerated, and the receiver's clock moves past it.
    let mut skewed = Device::new(grid_member(), now + 3 * 86_400_000);
    let id = skewed.create_incident(report()).unwrap();
    village.apply_remote(&id, &skewed.changes(&id).unwrap()).unwrap();
    let v = village.act(&id, Action::Accept, "").unwrap();
    assert_eq!(v.folded.conflicts(), 0, "the accept is ordered after the skewed report");
    assert!(v.folded.entries[1].entry.at > v.folded.entries[0].entry.at);
}

#[test]
fn personal_data_is_validated_and_never_echoed() {
    let mut station = Device::new(station_staff(), at(2026, 11, 23, 9));
    let mut new = NewServiceRequest {
        item: "FW006".into(),
        mode: ServiceMode::Errand,
        station: None,
        resident_name: "张三".into(),
        resident_id_number: Some("110105194912310021".into()),
        resident_phone: None,
        materials_received: vec![],
        description: String::new(),
    };
    let e = station.create_service_request(new.clone()).unwrap_err();
    assert!(matches!(e, CoreError::InvalidIdNumber));
    assert!(!e.to_string().contains("110105") && !format!("{e:?}").contains("110105"));
    new.resident_id_number = None;
    new.resident_phone = Some("1381234567x".into());
    let e = station.create_service_request(new.clone()).unwrap_err();
    assert!(matches!(e, CoreError::InvalidPhone) && !e.to_string().contains("1381234567"));
    new.resident_phone = None;
    new.materials_received = vec!["不存在的材料".into()];
    assert!(matches!(station.create_service_request(new).unwrap_err(), CoreError::InvalidInput(_)));
    assert_eq!(station.record_count().unwrap(), 0);
}

#[test]
fn text_limits_and_identity() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = gridlink_core::Client::open(dir.path().join("x.db")).unwrap();
    assert!(matches!(c.create_incident(report()).unwrap_err(), CoreError::NoIdentity));
    let wrong = person("a", "甲", gridlink_core::Role::CenterOperator, GRID);
    assert!(c.set_identity(wrong).is_err(), "a center operator does not sit in a grid");
    c.set_identity(grid_member()).unwrap();
    let e = c.create_incident(NewIncident { title: "长".repeat(101), ..report() }).unwrap_err();
    assert!(e.to_string().contains("标题超过100字"), "{e}");
    let e = c.create_incident(NewIncident { title: "  ".into(), ..report() }).unwrap_err();
    assert!(e.to_string().contains("标题不能为空"), "{e}");
    let e = c.create_incident(NewIncident { description: "a\u{0}b".into(), ..report() }).unwrap_err();
    assert!(matches!(e, CoreError::InvalidInput(_)));
    assert!(matches!(c.get("nope").unwrap_err(), CoreError::NotFound(_)));
    assert_eq!(c.record_count().unwrap(), 0);
}

/// Loads `bytes` as a stored record document and expects it refused as corrupt.
fn assert_corrupt_document(bytes: &[u8]) {
    let actor = automerge::ActorId::from(vec![1u8; 16]);
    let Err(err) = gridlink_core::record::RecordDoc::load("fuzz", &[bytes], &actor) else { panic!("a corrupt document was loaded") };
    assert!(matches!(err, CoreError::CorruptDocument { .. }), "{err}");
}

/// Regression from the `doc_load` fuzz target: bytes on which Automerge's decoder panics. A
/// corrupt stored document is reported as such, and the process goes on.
#[test]
fn a_document_that_panics_the_decoder_is_an_error() {
    assert_corrupt_document(include_bytes!("fixtures/fuzz-doc_load-panics-in-decoder.bin"));
}

/// Regression from the `doc_load` fuzz target: a stored document whose type byte says "bundle"
/// made Automerge's decoder ask for tens of GiB before it looked at the checksum. It is refused
/// as corrupt before Automerge decodes it, and so is the same chunk received as a change.
#[test]
fn a_bundle_chunk_is_refused_before_it_is_decoded() {
    let bytes = include_bytes!("fixtures/fuzz-doc_load-bundle-oom.bin");
    assert_corrupt_document(bytes);
    assert!(gridlink_core::chunk::decode_change(bytes).is_none());
}

/// Regression from the `sync_request` fuzz target: a pushed change that Automerge decodes but
/// then panics on while applying it (an actor its operations name is missing). Applying it is an
/// error, on the server and on a phone alike, never a crashed writer thread.
#[test]
fn a_change_that_panics_automerge_on_apply_is_an_error() {
    let body = include_bytes!("fixtures/fuzz-sync_request-apply-panic.bin");
    let req = gridlink_core::sync::protocol::decode_request(body).unwrap();
    let actor = automerge::ActorId::from(vec![1u8; 16]);
    let mut tried = 0;
    for doc in &req.push {
        let changes: Vec<_> = doc.changes.iter().filter_map(|c| gridlink_core::chunk::decode_change(c)).collect();
        tried += changes.len();
        let mut record = gridlink_core::record::RecordDoc::empty(&actor);
        let e = record.apply_changes(changes).unwrap_err();
        assert!(matches!(e, CoreError::CorruptChange), "{e}");
    }
    assert!(tried > 0, "the fixture carries a change");
    // The phone's path for changes from elsewhere refuses it the same way.
    let mut phone = Device::new(grid_member(), at(2026, 11, 23, 9));
    for doc in &req.push {
        let raw: Vec<Vec<u8>> = doc.changes.iter().map(|c| c.to_vec()).collect();
        assert!(phone.apply_remote(&doc.doc.to_id(), &raw).is_err());
    }
    assert_eq!(phone.record_count().unwrap(), 0);
}

/// Regression from the `sync_request` fuzz target: a change that applies, but leaves a document
/// whose keys and values disagree, on which Automerge's JSON view panicked when the record was
/// read (`autoserde.rs:57`) — on the server, in its single writer thread. Reading it is an error.
#[test]
fn a_document_that_panics_automerge_on_read_is_an_error() {
    let body = include_bytes!("fixtures/fuzz-sync_request-read-panic.bin");
    let req = gridlink_core::sync::protocol::decode_request(body).unwrap();
    let actor = automerge::ActorId::from(vec![1u8; 16]);
    let mut read = 0;
    for doc in &req.push {
        let changes: Vec<_> = doc.changes.iter().filter_map(|c| gridlink_core::chunk::decode_change(c)).collect();
        let mut record = gridlink_core::record::RecordDoc::empty(&actor);
        if record.apply_changes(changes).is_ok() {
            let e = record.read().unwrap_err();
            assert!(matches!(e, CoreError::MalformedRecord { .. }), "{e}");
            read += 1;
        }
    }
    assert!(read > 0, "the fixture's change applies and is then read");
    let mut phone = Device::new(grid_member(), at(2026, 11, 23, 9));
    for doc in &req.push {
        let raw: Vec<Vec<u8>> = doc.changes.iter().map(|c| c.to_vec()).collect();
        assert!(phone.apply_remote(&doc.doc.to_id(), &raw).is_err());
    }
}

#[test]
fn an_answer_refused_half_way_keeps_none_of_it() {
    let t0 = at(2026, 11, 23, 9);
    let mut grid = Device::new(grid_member(), t0);
    let mut village = Device::new(station_staff(), t0);
    let first = grid.create_incident(report()).unwrap();
    let second = grid.create_incident(NewIncident { title: "河道漂浮物".into(), ..report() }).unwrap();
    let before = snapshot(&village);
    // As the sync engine takes an answer: the first record applies, the second is corrupt, so
    // the answer fails and the phone is left as it was (its cursor, kept in the same
    // transaction, does not move either, and the next round asks again).
    let (a, b) = (grid.changes(&first).unwrap(), grid.changes(&second).unwrap());
    let e = village
        .atomically(|c| {
            c.apply_remote(&first, &a)?;
            c.set_sync_meta("cursor", "42")?;
            c.apply_remote(&second, &[b[0][..b[0].len() / 2].to_vec()])
        })
        .unwrap_err();
    assert!(matches!(e, CoreError::CorruptChange), "{e}");
    assert_eq!(snapshot(&village), before);
    assert_eq!(village.sync_meta("cursor").unwrap(), None);
    assert!(village.search("暴露垃圾", 10).unwrap().is_empty(), "nothing of the first record is indexed");
    // The same answer, whole, is kept whole; and a user action afterwards is its own transaction.
    village
        .atomically(|c| {
            c.apply_remote(&first, &a)?;
            c.set_sync_meta("cursor", "42")?;
            c.apply_remote(&second, &b)
        })
        .unwrap();
    assert_eq!(village.record_ids().unwrap().len(), 2);
    assert_eq!(village.sync_meta("cursor").unwrap().as_deref(), Some("42"));
    village.act(&first, Action::Accept, "已受理").unwrap();
    drop(village.client);
    let reopened = gridlink_core::Client::open(village.dir.path().join("device.db")).unwrap();
    assert_eq!(reopened.record_ids().unwrap().len(), 2, "committed to the file");
    assert_eq!(reopened.search("河道漂浮", 10).unwrap().len(), 1);
}

#[test]
fn a_whole_document_from_the_server_names_its_record_or_is_refused() {
    let t0 = at(2026, 11, 23, 9);
    let mut grid = Device::new(grid_member(), t0);
    let mut village = Device::new(station_staff(), t0);
    let id = grid.create_incident(report()).unwrap();
    let saved = |id_inside: Option<&str>| {
        let mut doc = automerge::AutoCommit::new();
        doc.load_incremental(&grid.changes(&id).unwrap().concat()).unwrap();
        if let Some(other) = id_inside {
            doc.put(automerge::ROOT, "id", other).unwrap();
        }
        doc.save_nocompress()
    };
    let before = snapshot(&village);
    let now = village.now_ms();
    // Not a document; a document whose id is no record id: refused, nothing kept.
    let e = village.apply_whole_from_server(b"not a document", now).unwrap_err();
    assert!(matches!(e, CoreError::CorruptChange), "{e}");
    let e = village.apply_whole_from_server(&saved(Some("../../etc")), now).unwrap_err();
    assert!(matches!(e, CoreError::MalformedRecord { .. }), "{e}");
    assert_eq!(snapshot(&village), before);
    // The record, named by the id inside it.
    assert_eq!(village.apply_whole_from_server(&saved(None), now).unwrap(), id);
    assert_eq!(village.get(&id).unwrap().record, grid.get(&id).unwrap().record);
}
