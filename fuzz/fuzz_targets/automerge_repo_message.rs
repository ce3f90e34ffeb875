//! A frame from an automerge-repo peer: the message decoder, then the Automerge sync message it
//! carries, received by a record document (nothing is applied; the changes only come out).
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn record() -> &'static [u8] {
    static DOC: OnceLock<Vec<u8>> = OnceLock::new();
    DOC.get_or_init(|| include_bytes!("../seeds/doc_load/incident.automerge").to_vec())
}

fuzz_target!(
    init: {
        // receive_sync_message turns a panic inside Automerge into an error; keep it quiet.
        std::panic::set_hook(Box::new(|_| {}));
    },
    |data: &[u8]| {
    let Ok(message) = gridlink_server::automerge_repo::decode(data) else { return };
    if let Some(sync) = message.data {
        let actor = automerge::ActorId::from(vec![1u8; 16]);
        if let Ok(mut doc) = gridlink_core::record::RecordDoc::load("fuzz", &[record()], &actor) {
            let mut state = automerge::sync::State::new();
            let _ = doc.receive_sync_message(&mut state, &sync);
            let _ = doc.sync_message(&mut state);
        }
    }
    }
);
