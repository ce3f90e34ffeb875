//! Live events across server nodes of one PostgreSQL database (issue 18), by PostgreSQL's own
//! LISTEN/NOTIFY: a phone or a console page connected to one node hears of a change another
//! node committed.
//!
//! Each node publishes the events of its committed writes on the channel `gridlink_events`
//! (one notification per event, tagged with the node) from a thread of its own, and a second
//! thread listens on the channel and hands other nodes' events to the node's local broadcast,
//! which `/api/v1/events` and the console's live pages already read. Live events are hints to
//! sync, not data: one lost while a connection is down costs a phone only the wait until its next
//! scheduled sync, so both threads connect again after a failure and go on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::pg::open;
use crate::records::ScopeEvent;

/// The channel the nodes of one database share.
const CHANNEL: &str = "gridlink_events";

/// An event as it travels between nodes.
#[derive(Debug, Serialize, Deserialize)]
struct Wire {
    /// The node that committed it (its own events it has delivered already).
    node: u64,
    doc: String,
    location: String,
    holder: Option<String>,
    reporter: Option<String>,
}

/// One node's link to the others: publishes its events, delivers theirs. Both threads stop when
/// it is dropped.
#[derive(Debug)]
pub struct EventBus {
    node: u64,
    out: mpsc::Sender<String>,
    stop: Arc<AtomicBool>,
}

impl EventBus {
    /// Starts publishing to and listening on the database at `url`; other nodes' events go to `local`.
    pub fn start(url: &str, local: broadcast::Sender<ScopeEvent>) -> std::io::Result<Self> {
        let node: u64 = rand::random();
        let stop = Arc::new(AtomicBool::new(false));
        let (out, queue) = mpsc::channel::<String>();
        let publish_url = url.to_owned();
        std::thread::Builder::new().name("events-out".into()).spawn(move || publish(&publish_url, queue))?;
        let (listen_url, listen_stop) = (url.to_owned(), stop.clone());
        std::thread::Builder::new().name("events-in".into()).spawn(move || listen(&listen_url, node, &local, &listen_stop))?;
        Ok(Self { node, out, stop })
    }

    /// Tells the other nodes of an event this node committed.
    pub fn publish(&self, e: &ScopeEvent) {
        let wire = Wire {
            node: self.node,
            doc: e.doc_id.clone(),
            location: e.location.clone(),
            holder: e.holder.clone(),
            reporter: e.reporter.clone(),
        };
        let _ = self.out.send(serde_json::to_string(&wire).expect("plain strings"));
    }
}

impl Drop for EventBus {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// At most this many events go in one statement (each is under 1 KiB; PostgreSQL takes 8 KB a
/// notification and queues 8 GB).
const BATCH_MAX: usize = 256;

/// The publishing thread: sends the queued events until the bus is dropped, all that wait at
/// once in one statement (one transaction), so that a busy node's events cost PostgreSQL a
/// transaction a batch, not one each.
fn publish(url: &str, queue: mpsc::Receiver<String>) {
    let mut client = None;
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter().take(BATCH_MAX - 1));
        // One attempt on the open connection, one on a new one; then the batch is let go.
        for _ in 0..2 {
            let c = match client.as_mut() {
                Some(c) => c,
                None => match open(url) {
                    Ok(c) => client.insert(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "live events: cannot reach PostgreSQL");
                        break;
                    }
                },
            };
            match c.execute("SELECT pg_notify($1, p) FROM unnest($2::TEXT[]) WITH ORDINALITY AS e(p, n) ORDER BY n", &[&CHANNEL, &batch]) {
                Ok(_) => break,
                Err(_) => client = None,
            }
        }
    }
}

/// The listening thread: delivers the other nodes' events until `stop`.
fn listen(url: &str, node: u64, local: &broadcast::Sender<ScopeEvent>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let mut client = match open(url) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "live events: cannot reach PostgreSQL");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        if client.batch_execute(&format!("LISTEN {CHANNEL}")).is_err() {
            continue;
        }
        while !stop.load(Ordering::Relaxed) {
            let next = client.notifications().timeout_iter(Duration::from_millis(500)).next();
            match next {
                Ok(Some(note)) => {
                    if let Ok(w) = serde_json::from_str::<Wire>(note.payload())
                        && w.node != node
                    {
                        let _ = local.send(ScopeEvent { doc_id: w.doc, location: w.location, holder: w.holder, reporter: w.reporter });
                    }
                }
                Ok(None) if client.is_closed() => break,
                Ok(None) => {}
                Err(_) => break,
            }
        }
    }
}
