//! Loading a record document from stored bytes, then reading and folding it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        // RecordDoc::load turns a panic inside Automerge's decoder into an error; keep such a
        // caught panic quiet. A panic that escapes still aborts (libfuzzer-sys catches it).
        std::panic::set_hook(Box::new(|_| {}));
    },
    |data: &[u8]| {
    let actor = automerge::ActorId::from(vec![1u8; 16]);
    if let Ok(doc) = gridlink_core::record::RecordDoc::load("fuzz", &[data], &actor)
        && let Ok(record) = doc.read()
    {
        let _ = record.fold();
    }
    }
);
