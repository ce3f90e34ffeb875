//! Loading a record document from stored bytes, then reading and folding it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let actor = automerge::ActorId::from(vec![1u8; 16]);
    if let Ok(doc) = gridlink_core::record::RecordDoc::load("fuzz", &[data], &actor)
        && let Ok(record) = doc.read()
    {
        let _ = record.fold();
    }
});
