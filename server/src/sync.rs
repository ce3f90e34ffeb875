//! The sync endpoint: one request per round, both directions, idempotent and resumable.
//!
//! The cursor a device sends names the last round whose answer it applied. The server keeps, per
//! device, which records it has (`device_docs`) as of that round; a round's additions and
//! removals take effect only when the device presents the round's cursor. An answer lost on the
//! way is therefore recomputed, never assumed delivered.

use std::collections::{BTreeMap, HashSet};

use gridlink_core::sync::protocol::{
    DEFAULT_PAGE_BYTES, DocChanges, DocId, PROTOCOL_VERSION, PersonalData, Rejection, SyncRequest, SyncResponse,
};
use serde_bytes::ByteBuf;

use crate::app::AppState;
use crate::auth::AuthDevice;
use crate::error::AppResult;
use crate::records::{Prepared, ScopeEvent, ingest_prepared, personal_for, prepare_new, store_personal};
use crate::storage::Storage;

/// Largest page a device may ask for.
pub const MAX_PAGE_BYTES: u32 = 16 << 20;

/// How many new records' saved documents a round reads in one statement.
const SNAPSHOTS_AT_ONCE: usize = 32;

/// Serves one sync round for an authenticated device and gives the answer to send.
///
/// On SQLite the whole round is one write job ([`round`]). On PostgreSQL only its writing half
/// ([`push`]) is: the answer ([`answer`]) is read on a reader, in a snapshot taken once the push
/// is committed, and its round recorded there ([`Storage::add_round`]). The writer, which every
/// node takes turns on, then runs a few statements a round instead of some fifteen, and the
/// answers of many rounds are read at once (docs/benchmarks.md, "Rounds answered on readers").
/// The answer is the same: the snapshot sees the push and everything committed before it, and the
/// log in it has no hole a later commit could fill.
///
/// With the answer that ends a sync (`more` false) come the unit's notices newer than the
/// device's, read on a reader too. A notice's number is taken under the writer's lock and visible
/// in that order, so a device that moves past one has every one below it.
pub async fn serve(state: &AppState, auth: AuthDevice, req: SyncRequest) -> AppResult<SyncResponse> {
    let notices_after = req.notices_after;
    let notices = move |c: &dyn Storage, auth: &AuthDevice, resp: &mut SyncResponse| -> AppResult<()> {
        if let (Some(after), false) = (notices_after, resp.more) {
            let found = c.notices(auth.person.unit.as_str(), after.max(0), i64::MAX, crate::linkage::NOTICES_PAGE)?;
            resp.notices = Some(found.into_iter().map(Into::into).collect());
        }
        Ok(())
    };
    // In the request's own task: a few hundred microseconds for a report. Handing it to Tokio's
    // blocking pool instead cost the server more CPU (9.3 s against 8.3 s for 8,000 rounds of
    // 1,000 devices, docs/benchmarks.md) for no more rounds/s.
    let prepared = prepare(state, &auth, &req);
    let st = state.clone();
    if !state.db.answers_on_readers() {
        let who = auth.clone();
        let (mut resp, events) = state.db.write(move |c| round(c, &st, &who, req, prepared)).await?;
        state.notify(events);
        if notices_after.is_some() && !resp.more {
            resp = state.db.read(move |c| notices(c, &auth, &mut resp).map(|()| resp)).await?;
        }
        return Ok(resp);
    }
    let asked = Asked::of(&req);
    let who = auth.clone();
    let mut pushed = state.db.write(move |c| push(c, &st, &who, req, prepared)).await?;
    state.notify(std::mem::take(&mut pushed.events));
    let st = state.clone();
    state
        .db
        .read(move |c| {
            c.begin_read()?;
            let answered = answer(c, &st, &auth, &asked, pushed);
            // A failed read-only transaction ends alike: nothing was written in it.
            let ended = c.end_read();
            let (mut resp, next) = answered?;
            ended?;
            resp.cursor = c.add_round(&auth.device_id, next.seq_high, &next.added, &next.removed)? as u64;
            notices(c, &auth, &mut resp)?;
            Ok(resp)
        })
        .await
}

/// Runs one sync round for an authenticated device, as a write job ([`crate::db::Db::write`]).
/// Everything is one savepoint of the writer's batch (the job's own), and the answer is sent only
/// once the batch is committed: what it acknowledges is durable.
pub fn round(
    conn: &dyn Storage,
    state: &AppState,
    auth: &AuthDevice,
    req: SyncRequest,
    prepared: Vec<Option<Prepared>>,
) -> AppResult<(SyncResponse, Vec<ScopeEvent>)> {
    let tx = crate::storage::Tx::of_write_job(conn)?;
    let asked = Asked::of(&req);
    let mut pushed = push(&*tx, state, auth, req, prepared)?;
    let events = std::mem::take(&mut pushed.events);
    let (mut resp, next) = answer(&*tx, state, auth, &asked, pushed)?;
    resp.cursor = tx.add_round(&auth.device_id, next.seq_high, &next.added, &next.removed)? as u64;
    tx.commit()?;
    Ok((resp, events))
}

/// What a request asks of the answer, apart from what it pushes.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    page_bytes: Option<u32>,
    whole_docs: bool,
    ids_in_docs: bool,
    epoch: Option<u64>,
}

impl Asked {
    pub fn of(req: &SyncRequest) -> Self {
        Self { page_bytes: req.page_bytes, whole_docs: req.whole_docs, ids_in_docs: req.ids_in_docs, epoch: req.epoch }
    }
}

/// What the writing half of a round ([`push`]) settled, for the half that answers ([`answer`]).
#[derive(Debug)]
pub struct Pushed {
    now: i64,
    /// The log position the device's presented round had reached (0 when it starts over).
    base_seq: i64,
    rejected: Vec<Rejection>,
    /// Records whose pushed changes were refused: the device gets them whole again.
    reset: HashSet<String>,
    pushed_to: HashSet<String>,
    personal_stored: Vec<DocId>,
    personal_refused: Vec<Rejection>,
    /// What changed place, for live clients.
    pub events: Vec<ScopeEvent>,
}

/// Where the answer leaves the device: the round it records ([`Storage::add_round`]).
#[derive(Debug)]
pub struct NextRound {
    pub seq_high: i64,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

/// New records among a request's pushes judged and routed before the round reaches the writer, one entry
/// per pushed record ([`crate::records::prepare_new`]). It runs in the request's task, beside the
/// writer, so that the single writer is left storing them: Automerge's work on a new report is
/// most of what a round costs the writer.
pub fn prepare(state: &AppState, auth: &AuthDevice, req: &SyncRequest) -> Vec<Option<Prepared>> {
    let now = state.now_ms();
    let routing = state.routing.read().unwrap_or_else(|p| p.into_inner());
    req.push
        .iter()
        .map(|dc| prepare_new(&state.server_actor, now, &routing, &state.catalog, &auth.person, &dc.doc.to_id(), &dc.changes))
        .collect()
}

/// The writing half of a round, inside the writer's transaction: the device's presented round
/// taken, its changes and personal data kept. `prepared` is [`prepare`]'s answer for the request.
pub fn push(tx: &dyn Storage, state: &AppState, auth: &AuthDevice, req: SyncRequest, prepared: Vec<Option<Prepared>>) -> AppResult<Pushed> {
    let now = state.now_ms();
    let device = auth.device_id.as_str();
    // 0. A device whose cursor belongs to another epoch synced with this database before it was
    // restored from a backup: its cursor means nothing here, and it holds changes the server
    // acknowledged and lost. It starts over and may push those back (crate::backup).
    let went_back = req.epoch.is_some_and(|e| e != state.epoch);
    let cursor = if went_back { None } else { req.cursor.and_then(|c| i64::try_from(c).ok()) };
    // 1. What the device has, as of the cursor it presents: that round taken, with the device's
    // last-seen time, in one statement where that counts. A fresh device, or a cursor the server
    // does not know, starts over (its holdings forgotten).
    let (flagged, taken) = tx.device_seen_taking_round(device, now, cursor)?;
    let base_seq = taken.unwrap_or(0);
    let recovering = if went_back {
        tx.set_device_recovering(device, true)?;
        tracing::info!(device, "device synced with the database before its restore: recovering");
        true
    } else {
        if flagged && !req.recovery && req.epoch.is_some() {
            tx.set_device_recovering(device, false)?;
        }
        flagged && req.recovery
    };

    // 2. Pushed changes.
    let mut events = Vec::new();
    let mut rejected = Vec::new();
    let mut reset: HashSet<String> = HashSet::new();
    let mut pushed_to: HashSet<String> = HashSet::new();
    {
        let routing = state.routing();
        let mut ctx = state.ingest_ctx(&routing, now, &mut events);
        ctx.recovery = recovering;
        let mut prepared = prepared.into_iter();
        for dc in &req.push {
            let id = dc.doc.to_id();
            let changes: Vec<Vec<u8>> = dc.changes.iter().map(|c| c.to_vec()).collect();
            match ingest_prepared(tx, &mut ctx, device, &auth.person, &id, &changes, prepared.next().flatten())? {
                Ok(n) => {
                    metrics::counter!("gridlink_changes_accepted_total").increment(n as u64);
                    pushed_to.insert(id);
                }
                Err((index, reason)) => {
                    metrics::counter!("gridlink_changes_accepted_total").increment(index as u64);
                    metrics::counter!("gridlink_changes_rejected_total", "reason" => crate::telemetry::refusal_kind(&reason)).increment(1);
                    tracing::info!(device, doc = %id, index, %reason, "change rejected");
                    rejected.push(Rejection { doc: dc.doc, index: index as u32, reason });
                    reset.insert(id);
                }
            }
        }
    }

    // 2b. Personal data of records the device made or edited: kept beside the documents.
    let mut personal_stored = Vec::new();
    let mut personal_refused = Vec::new();
    for p in &req.personal {
        match store_personal(tx, &state.server_actor, &auth.person, &p.doc.to_id(), &p.data, now)? {
            None => {} // the record's changes come in a later round; so will this again
            Some(Ok(())) => personal_stored.push(p.doc),
            // Recovering, a device pushes again the personal data it received as well; what it
            // may not write was never its to restore.
            Some(Err(_)) if recovering => personal_stored.push(p.doc),
            Some(Err(reason)) => {
                tracing::info!(device, doc = %p.doc.to_id(), %reason, "personal data refused");
                personal_refused.push(Rejection { doc: p.doc, index: 0, reason });
            }
        }
    }

    Ok(Pushed { now, base_seq, rejected, reset, pushed_to, personal_stored, personal_refused, events })
}

/// The answering half of a round: what the device lacks, as of one view of the database (the
/// writer's transaction, or a reader's snapshot taken after the push was committed), and the
/// round to record. The answer's cursor is that round's number, set by the caller.
pub fn answer(
    tx: &dyn Storage,
    state: &AppState,
    auth: &AuthDevice,
    asked: &Asked,
    pushed: Pushed,
) -> AppResult<(SyncResponse, NextRound)> {
    let Pushed { now, base_seq, rejected, reset, pushed_to, personal_stored, personal_refused, events: _ } = pushed;
    let device = auth.device_id.as_str();
    // 3. Scope now versus what the device has.
    let (scope, have) = tx.scope_and_holdings(auth.person.unit.as_str(), &auth.person.id, device)?;
    let mut removed: Vec<String> = have.difference(&scope).cloned().collect();
    removed.sort();
    let mut new_docs: Vec<String> = scope.iter().filter(|id| !have.contains(*id) || reset.contains(*id)).cloned().collect();
    new_docs.sort();

    // 4. Changes to send, bounded by the page size.
    let limit = asked.page_bytes.unwrap_or(DEFAULT_PAGE_BYTES).clamp(64 * 1024, MAX_PAGE_BYTES) as usize;
    let mut out: BTreeMap<String, Vec<ByteBuf>> = BTreeMap::new();
    let mut size = 0usize;
    let mut more = false;
    let mut added = Vec::new();
    let mut wholes: Vec<(String, ByteBuf)> = Vec::new();
    // The saved documents are read a few records at a time: one statement each, and no more
    // read than the page takes.
    'page: for chunk in new_docs.chunks(SNAPSHOTS_AT_ONCE) {
        // A record the device itself just pushed to: it has its own changes already.
        let skip_own = |id: &String| pushed_to.contains(id) && !reset.contains(id);
        // A record the device has none of: as one saved document, if it takes those. The
        // snapshot is written in the same transaction as every change, so it holds them all.
        let wanted: Vec<&str> = if asked.whole_docs || asked.ids_in_docs {
            chunk.iter().filter(|id| !skip_own(id) && !reset.contains(*id)).map(String::as_str).collect()
        } else {
            Vec::new()
        };
        let mut snapshots = tx.snapshots(&wanted)?;
        for id in chunk {
            let mut changes = Vec::new();
            let saved = snapshots.remove(id);
            let whole = saved.is_some();
            if let Some(doc) = saved {
                changes.push(ByteBuf::from(doc));
            } else {
                let skip_own = skip_own(id);
                tx.record_changes(id, &mut |bytes, from| {
                    if !(skip_own && from == device) {
                        changes.push(ByteBuf::from(bytes));
                    }
                    Ok(())
                })?;
            }
            let doc_size: usize = changes.iter().map(|c| c.len()).sum();
            if size > 0 && size + doc_size > limit {
                more = true;
                break 'page;
            }
            size += doc_size;
            added.push(id.clone());
            if whole && asked.ids_in_docs {
                // The document names its record: no id beside it.
                wholes.push((id.clone(), changes.pop().expect("the saved document")));
            } else if !changes.is_empty() || reset.contains(id) {
                out.insert(id.clone(), changes);
            }
        }
    }
    let mut seq_high = base_seq;
    if !more {
        // The high water first: every change up to it is visible now and none can appear below it
        // later, so a cursor may pass over changes up to it and no further.
        let high_water = tx.log_high_water()?;
        let removed_set: HashSet<&String> = removed.iter().collect();
        tx.changes_after(device, base_seq, &have, &mut |c| {
            if c.seq > high_water {
                return Ok(false);
            }
            if !removed_set.contains(&c.doc_id) && !reset.contains(&c.doc_id) {
                if size > 0 && size + c.bytes.len() > limit {
                    more = true;
                    return Ok(false);
                }
                size += c.bytes.len();
                out.entry(c.doc_id).or_default().push(ByteBuf::from(c.bytes));
            }
            seq_high = c.seq;
            Ok(true)
        })?;
        if !more {
            // Nothing left for this device up to the high water of the log.
            seq_high = seq_high.max(high_water);
        }
    }

    // 6. Personal data of the records sent, to a person whose work needs it.
    let sent: Vec<&str> = out.keys().chain(wholes.iter().map(|(id, _)| id)).map(String::as_str).collect();
    let personal = personal_for(tx, &auth.person, &sent)?
        .into_iter()
        .filter_map(|(id, data)| DocId::parse(&id).map(|doc| PersonalData { doc, data }))
        .collect();
    metrics::counter!("gridlink_sync_rounds_total").increment(1);

    let docs = out.into_iter().filter_map(|(id, changes)| DocId::parse(&id).map(|doc| DocChanges { doc, changes })).collect();
    let resp = SyncResponse {
        v: PROTOCOL_VERSION,
        rejected,
        docs,
        whole: wholes.into_iter().map(|(_, doc)| doc).collect(),
        removed: removed.iter().filter_map(|id| DocId::parse(id)).collect(),
        // The round the caller records (step 5): it takes effect when the device presents it.
        cursor: 0,
        more,
        server_time_ms: now,
        personal,
        personal_stored,
        personal_refused,
        epoch: (asked.epoch != Some(state.epoch)).then_some(state.epoch),
        // Read after the round, on a reader ([`serve`]).
        notices: None,
    };
    Ok((resp, NextRound { seq_high, added, removed }))
}
