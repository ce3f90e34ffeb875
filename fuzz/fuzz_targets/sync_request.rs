//! The sync request decoder (CBOR inside deflate, with size limits) on arbitrary bytes, and what
//! the server does next with each pushed change before it judges it: see from its framing whether
//! it starts a record, decode it, apply it to an
//! empty record document, read the record and check its shape (the seeds include a backdated
//! entry, `seeds/sync_request/backdated_suspend.bin`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        // RecordDoc::apply_changes turns a panic inside Automerge into an error (a finding of
        // this target); keep such a caught panic quiet. A panic that escapes still aborts.
        std::panic::set_hook(Box::new(|_| {}));
    },
    |data: &[u8]| {
    if let Ok(req) = gridlink_core::sync::protocol::decode_request(data) {
        // What decodes must encode again.
        let _ = gridlink_core::sync::protocol::encode(&req);
        let actor = automerge::ActorId::from(vec![1u8; 16]);
        for doc in &req.push {
            for c in &doc.changes {
                let _ = gridlink_core::chunk::depends_on_nothing(c);
            }
            let mut record = gridlink_core::record::RecordDoc::empty(&actor);
            let changes: Vec<_> = doc.changes.iter().filter_map(|c| gridlink_core::chunk::decode_change(c)).collect();
            if record.apply_changes(changes).is_ok() {
                let _ = record.shape_problems();
                if let Ok(r) = record.read() {
                    let _ = r.fold();
                }
            }
        }
    }
    }
);
