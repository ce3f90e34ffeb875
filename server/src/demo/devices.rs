//! Simulated phones of the demo: each person's own core `Client`, whose changes enter the server
//! through the same validated ingest a sync uses.

use std::collections::HashMap;
use std::sync::Arc;

use gridlink_core::{Client, ClientOptions, Clock, ManualClock, Person};

use crate::app::AppState;
use crate::error::{AppError, AppResult};
use crate::import::PersonRow;
use crate::records::{ingest, keep_personal};

pub(super) struct Devices<'a> {
    pub(super) state: &'a AppState,
    pub(super) dir: tempfile::TempDir,
    pub(super) clock: Arc<ManualClock>,
    pub(super) devices: HashMap<String, Client>,
    pub(super) people: HashMap<String, Person>,
}

impl<'a> Devices<'a> {
    /// A phone for each of `people` when first used, their clocks at `now_ms`.
    pub(super) fn new(state: &'a AppState, people: &[PersonRow], now_ms: i64) -> AppResult<Self> {
        Ok(Self {
            state,
            dir: tempfile::tempdir().map_err(|e| AppError::Internal(e.to_string()))?,
            clock: Arc::new(ManualClock::new(now_ms)),
            devices: HashMap::new(),
            people: people.iter().map(|p| (p.id.clone(), super::town::person_of(p))).collect(),
        })
    }

    pub(super) fn client(&mut self, pid: &str) -> AppResult<&mut Client> {
        if !self.devices.contains_key(pid) {
            let opts = ClientOptions { clock: self.clock.clone(), ..Default::default() };
            let mut c = Client::open_with(self.dir.path().join(format!("{pid}.db")), opts)?;
            c.set_identity(self.people[pid].clone())?;
            c.set_data_key(Some(gridlink_core::pii::DataKey::generate()));
            self.devices.insert(pid.to_owned(), c);
        }
        Ok(self.devices.get_mut(pid).expect("just inserted"))
    }

    /// Gives the device the server's copy of a record (what its sync would do).
    pub(super) fn bring(&mut self, pid: &str, doc: &str) -> AppResult<()> {
        let doc_id = doc.to_owned();
        let changes: Vec<Vec<u8>> = {
            let mut changes = Vec::new();
            self.state.db.reader().record_changes(&doc_id, &mut |bytes, _| {
                changes.push(bytes);
                Ok(())
            })?;
            changes
        };
        let now = self.clock.now_ms();
        if !changes.is_empty() {
            self.client(pid)?.apply_from_server(doc, &changes, now)?;
        }
        Ok(())
    }

    /// Sends the device's queued changes of a record through the server's ingest.
    pub(super) fn push(&mut self, pid: &str, doc: &str) -> AppResult<()> {
        let person = self.people[pid].clone();
        let now = self.clock.now_ms();
        let client = self.client(pid)?;
        let queued: Vec<_> = client.outbox(1000)?.into_iter().filter(|e| e.doc_id == doc).collect();
        let changes: Vec<Vec<u8>> = queued.iter().map(|e| e.bytes.clone()).collect();
        let hashes: Vec<String> = queued.iter().map(|e| e.hash.clone()).collect();
        let conn = self.state.db.writer();
        let tx = crate::storage::Tx::begin(&*conn)?;
        let mut events = Vec::new();
        let routing = self.state.routing();
        let mut ctx = self.state.ingest_ctx(&routing, now, &mut events);
        if let Err((_, reason)) = ingest(&*tx, &mut ctx, &format!("demo-{pid}"), &person, doc, &changes)? {
            return Err(AppError::Internal(format!("demo change refused: {reason}")));
        }
        let personal: Vec<_> = self.devices[pid].personal_pending()?.into_iter().filter(|(id, _)| id == doc).collect();
        for (id, data) in &personal {
            keep_personal(&*tx, self.state, &person, id, data, now)?;
        }
        tx.commit()?;
        drop(conn);
        let client = self.client(pid)?;
        client.acknowledge(&hashes)?;
        client.personal_delivered(&personal.into_iter().map(|(id, _)| id).collect::<Vec<_>>())?;
        Ok(())
    }
}
