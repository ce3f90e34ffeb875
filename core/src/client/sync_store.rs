//! The store as the sync engine uses it: the outbox, changes from the server, photos to upload,
//! sync metadata, wiping.

use rusqlite::{OptionalExtension, params};

use crate::error::{CoreError, Result};
use crate::hlc::Hlc;
use crate::photo;
use crate::record::RecordDoc;
use crate::store::{self, DocWrite, OutboxEntry};

use super::*;

impl Client {
    // ---- for the sync engine ----

    /// Runs `f` as one transaction: every write it makes through the client is kept together
    /// with one durable commit, or none is kept when `f` fails. The sync engine takes a server's
    /// answer this way (acknowledgements, records, cursor), so a crash half-way through an
    /// answer leaves the phone as it was before it, and a bootstrap of thousands of records
    /// costs one commit rather than one per record. A step inside `f` that fails once it has
    /// begun writing undoes the whole transaction at once (see [`store::Tx`]); should `f` go on
    /// regardless, what it writes after that is committed step by step, and `atomically` still
    /// reports the failure. Inside another `atomically`, it is part of that one.
    pub fn atomically<T, E: From<CoreError>>(
        &mut self,
        f: impl FnOnce(&mut Self) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let storage = |e: rusqlite::Error| E::from(CoreError::from(e));
        if !self.conn.is_autocommit() {
            return f(self); // inside another: part of it
        }
        self.conn.prepare_cached("BEGIN").and_then(|mut s| s.execute([])).map_err(storage)?;
        let hlc = self.hlc;
        let result = f(self);
        let finished = match (&result, self.conn.is_autocommit()) {
            (Ok(_), false) => self.conn.execute_batch("COMMIT").map_err(storage),
            (Ok(_), true) => Err(E::from(CoreError::InvalidInput("有一步写入失败,本次同步的数据未全部保存,请重新同步".into()))),
            (Err(_), false) => self.conn.execute_batch("ROLLBACK").map_err(storage),
            (Err(_), true) => Ok(()),
        };
        if result.is_err() || finished.is_err() {
            self.hlc = hlc;
        }
        if let Err(e) = finished {
            if !self.conn.is_autocommit() {
                // A commit that failed: SQLite keeps the transaction open; end it, undone.
                let _ = self.conn.execute_batch("ROLLBACK");
            }
            return Err(e);
        }
        result
    }

    /// Changes not yet acknowledged by the server, oldest first.
    pub fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        store::outbox_list(&self.conn, limit)
    }

    /// Number of changes waiting for upload.
    pub fn pending_count(&self) -> Result<i64> {
        store::outbox_len(&self.conn)
    }

    /// Drops acknowledged changes from the outbox.
    pub fn acknowledge(&mut self, hashes: &[String]) -> Result<usize> {
        let tx = store::begin(&self.conn)?;
        let n = store::outbox_ack(&tx, hashes)?;
        tx.commit()?;
        Ok(n)
    }

    /// Heads of a stored document (hex), or `None` when the device does not hold it.
    pub fn heads(&self, id: &str) -> Result<Option<Vec<String>>> {
        match self.load_doc(id) {
            Ok(mut d) => Ok(Some(d.heads().iter().map(|h| h.to_string()).collect())),
            Err(CoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// All changes of a stored document (for a full upload or a peer).
    pub fn changes(&self, id: &str) -> Result<Vec<Vec<u8>>> {
        let mut doc = self.load_doc(id)?;
        Ok(doc.changes_since(&[]).into_iter().map(|mut c| c.bytes().into_owned()).collect())
    }

    /// Applies changes received from the server (or another replica) to a document, creating it
    /// if new. Refused as a whole, changing nothing, when a change is corrupt, the result is not a
    /// valid record, or a new entry carries an absurd clock.
    pub fn apply_remote(&mut self, id: &str, changes: &[Vec<u8>]) -> Result<()> {
        self.apply_changes_checked(id, changes, self.now_ms())
    }

    /// Applies changes sent by the town server. Their timestamps are checked against the server's
    /// clock, which already validated them, so a device whose own clock is wrong still syncs.
    pub fn apply_from_server(&mut self, id: &str, changes: &[Vec<u8>], server_now_ms: i64) -> Result<()> {
        self.apply_changes_checked(id, changes, server_now_ms.max(self.now_ms()))
    }

    /// Applies a record the server sent as one saved document that names it
    /// ([`crate::sync::protocol::SyncResponse::whole`]); returns the record's id. The document is
    /// loaded once, to find its id and to be the record.
    pub fn apply_whole_from_server(&mut self, bytes: &[u8], server_now_ms: i64) -> Result<String> {
        let (whole, record) = RecordDoc::load_read("", &[bytes], &self.actor).map_err(|_| CoreError::CorruptChange)?;
        let id = record.id.clone();
        if crate::sync::protocol::DocId::parse(&id).is_none() {
            return Err(CoreError::MalformedRecord { id: id.chars().take(40).collect(), reason: "记录编号无效".into() });
        }
        self.apply_checked(&id, &[], vec![(whole, record, bytes)], server_now_ms.max(self.now_ms()))?;
        Ok(id)
    }

    fn apply_changes_checked(&mut self, id: &str, changes: &[Vec<u8>], now: i64) -> Result<()> {
        self.apply_checked(id, changes, Vec::new(), now)
    }

    /// Applies `changes` and the already loaded saved documents `wholes` (each with the record
    /// read while loading it, and its bytes) to the record `id`.
    fn apply_checked<'a>(
        &mut self,
        id: &str,
        changes: &'a [Vec<u8>],
        mut wholes: Vec<(RecordDoc, Record, &'a [u8])>,
        now: i64,
    ) -> Result<()> {
        let mut decoded = Vec::with_capacity(changes.len());
        // The server sends a record new to this device as one saved document.
        for bytes in changes {
            match crate::chunk::decode_change(bytes) {
                Some(change) => decoded.push(change),
                None => match RecordDoc::load_read(id, &[bytes], &self.actor) {
                    Ok((whole, record)) => wholes.push((whole, record, bytes.as_slice())),
                    Err(_) => return Err(CoreError::CorruptChange),
                },
            }
        }
        let existing = match self.load_record(id) {
            Ok(d) => Some(d),
            Err(CoreError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        // A record this device has none of, come as one saved document: that document is taken as
        // it is and stored as it came, rather than replayed change by change and saved again; the
        // record read while loading it is the record.
        let (adopted, adopted_bytes) = match (&existing, decoded.is_empty(), wholes.pop()) {
            (None, true, Some((whole, record, bytes))) if wholes.is_empty() => (Some((whole, record)), Some(bytes)),
            (_, _, popped) => {
                wholes.extend(popped);
                (None, None)
            }
        };
        for (mut whole, _, _) in wholes {
            decoded.extend(whole.changes_since(&[]));
        }
        let (mut doc, before, adopted_record) = match (existing, adopted) {
            (Some((d, r)), _) => (d, Some(r), None),
            (None, Some((whole, record))) => (whole, None, Some(record)),
            (None, None) => (RecordDoc::empty(&self.actor), None, None),
        };
        let heads = if adopted_bytes.is_some() { Vec::new() } else { doc.heads() };
        doc.apply_changes(decoded)?;
        if !doc.missing_deps(&[]).is_empty() {
            return Err(CoreError::MissingDependencies);
        }
        if doc.heads() == heads {
            return Ok(()); // all known already
        }
        let record = match adopted_record {
            Some(record) => record,
            None => doc.read().map_err(|e| match e {
                CoreError::MalformedRecord { reason, .. } => CoreError::MalformedRecord { id: id.chars().take(40).collect(), reason },
                other => other,
            })?,
        };
        if record.id != id {
            return Err(CoreError::MalformedRecord { id: id.chars().take(40).collect(), reason: "记录编号与文档不符".into() });
        }
        let known: std::collections::HashSet<&str> =
            before.as_ref().map(|b| b.timeline.iter().map(|e| e.id.as_str()).collect()).unwrap_or_default();
        let mut hlc = self.hlc;
        for e in record.timeline.iter().filter(|e| !known.contains(e.id.as_str())) {
            e.at.check_sane(now)?;
            hlc.observe(e.at);
        }
        let folded = record.fold();
        let tx = store::begin(&self.conn)?;
        if before.is_some() {
            save_doc(&tx, id, record.kind(), &mut doc, &heads)?;
        } else {
            let saved = match adopted_bytes {
                Some(bytes) => bytes.to_vec(),
                None => doc.save(),
            };
            store::write_doc(&tx, id, record.kind(), DocWrite::Create(saved))?;
        }
        self.index(&tx, &record, &folded)?;
        store::meta_set_json(&tx, "hlc", &hlc.last())?;
        tx.commit()?;
        self.hlc = hlc;
        Ok(())
    }

    /// Removes a record that left the device's scope (its queued changes stay until acknowledged).
    pub fn forget(&mut self, id: &str) -> Result<()> {
        let tx = store::begin(&self.conn)?;
        store::delete_doc(&tx, id)?;
        tx.commit()?;
        Ok(())
    }

    /// Removes a sync-engine value.
    pub fn clear_sync_meta(&mut self, key: &str) -> Result<()> {
        let tx = store::begin(&self.conn)?;
        store::meta_delete(&tx, &format!("sync.{key}"))?;
        tx.commit()?;
        Ok(())
    }

    /// Deletes all records, queued changes, photos, the identity and the sync state (a revoked,
    /// lost phone). The device id stays, so provisional numbers never repeat.
    pub fn wipe(&mut self) -> Result<()> {
        let tx = store::begin(&self.conn)?;
        store::wipe(&tx)?;
        tx.commit()?;
        self.identity = None;
        self.data_key = None;
        // Give the freed pages back to the file system.
        self.conn.execute_batch("VACUUM")?;
        Ok(())
    }

    /// Drops a record's queued changes (the server refused one of them).
    pub fn drop_queued(&mut self, id: &str) -> Result<()> {
        let tx = store::begin(&self.conn)?;
        store::outbox_drop_doc(&tx, id)?;
        tx.commit()?;
        Ok(())
    }

    /// Notes that the server refused a change, so the user can see why.
    pub fn record_rejection(&mut self, id: &str, reason: &str) -> Result<()> {
        self.conn.execute("INSERT INTO sync_rejections(doc_id, reason, at_ms) VALUES (?1, ?2, ?3)", params![id, reason, self.now_ms()])?;
        Ok(())
    }

    /// Changes the server refused: (record id, reason, when), newest first.
    pub fn rejections(&self) -> Result<Vec<(String, String, i64)>> {
        let mut stmt = self.conn.prepare("SELECT doc_id, reason, at_ms FROM sync_rejections ORDER BY seq DESC LIMIT 100")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Photos waiting for upload.
    pub fn pending_photos(&self) -> Result<Vec<String>> {
        store::pending_attachments(&self.conn)
    }

    /// Number of photos waiting for upload.
    pub fn pending_photo_count(&self) -> Result<i64> {
        Ok(self.conn.query_row("SELECT count(*) FROM attachments WHERE uploaded = 0", [], |r| r.get(0))?)
    }

    /// Marks a photo as stored on the server.
    pub fn mark_photo_uploaded(&mut self, sha256: &str) -> Result<()> {
        let tx = store::begin(&self.conn)?;
        store::mark_uploaded(&tx, sha256)?;
        tx.commit()?;
        Ok(())
    }

    /// Keeps a photo downloaded from the server, after checking it is the one asked for.
    pub fn store_downloaded_photo(&mut self, sha256: &str, jpeg: &[u8]) -> Result<()> {
        if photo::sha256_hex(jpeg) != sha256 {
            return Err(CoreError::Photo("下载的照片校验失败".into()));
        }
        let tx = store::begin(&self.conn)?;
        store::put_attachment(&tx, sha256, 0, 0, jpeg, self.now_ms())?;
        store::mark_uploaded(&tx, sha256)?;
        tx.execute("UPDATE attachments SET downloaded = 1 WHERE sha256 = ?1 AND width = 0 AND height = 0", [sha256])?;
        store::trim_downloaded_photos(&tx, self.opts.photo_cache_bytes)?;
        tx.commit()?;
        Ok(())
    }

    /// Reads a sync-engine value (cursor, status) kept beside the data.
    pub fn sync_meta(&self, key: &str) -> Result<Option<String>> {
        store::meta_get(&self.conn, &format!("sync.{key}"))
    }

    /// Stores a sync-engine value.
    pub fn set_sync_meta(&mut self, key: &str, value: &str) -> Result<()> {
        let tx = store::begin(&self.conn)?;
        store::meta_set(&tx, &format!("sync.{key}"), value)?;
        tx.commit()?;
        Ok(())
    }

    /// The server went back to an older backup (its epoch changed): queue once more the whole
    /// history of every record this device holds, and all its personal data, so what the server
    /// had acknowledged and lost comes back from here. The server skips what it still has.
    /// Queued changes of a record keep their order (its history is queued afresh, in causal
    /// order); those of records no longer held stay as they are. Returns the changes queued.
    pub fn requeue_for_recovery(&mut self) -> Result<usize> {
        let now = self.now_ms();
        let ids = self.record_ids()?;
        let tx = store::begin(&self.conn)?;
        let mut queued = 0;
        for id in &ids {
            let mut doc = self.load_doc(id)?;
            store::outbox_drop_doc(&tx, id)?;
            for change in doc.changes_since(&[]) {
                super::queue_change(&tx, id, change, now)?;
                queued += 1;
            }
        }
        tx.execute("UPDATE personal SET pending = 1", [])?;
        store::meta_set(&tx, "sync.recovering", "1")?;
        tx.commit()?;
        Ok(queued)
    }

    /// Ids of all stored records.
    pub fn record_ids(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare("SELECT id FROM documents ORDER BY id")?;
        let ids = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
        Ok(ids)
    }

    /// Checks the store's integrity: SQLite's own check, every document loads, and the index
    /// agrees with the documents. Returns the problems found (empty when sound).
    pub fn verify_integrity(&self) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let ok: String = self.conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if ok != "ok" {
            problems.push(format!("integrity_check: {ok}"));
        }
        for id in self.record_ids()? {
            match self.load_record(&id).map(|(_, r)| r) {
                Ok(record) => {
                    let folded = record.fold();
                    let indexed: Option<(Option<String>, String)> = self
                        .conn
                        .query_row("SELECT status, display_no FROM records WHERE id = ?1", [&id], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()?;
                    let expected = (folded.state.status.map(|s| s.as_str().to_owned()), record.display_no().to_owned());
                    if indexed.as_ref() != Some(&expected) {
                        problems.push(format!("{id}: 索引与文档不一致"));
                    }
                }
                Err(e) => problems.push(format!("{id}: {e}")),
            }
        }
        let orphans: i64 =
            self.conn.query_row("SELECT count(*) FROM records WHERE id NOT IN (SELECT id FROM documents)", [], |r| r.get(0))?;
        if orphans > 0 {
            problems.push(format!("{orphans} 条索引没有对应文档"));
        }
        Ok(problems)
    }

    /// The last HLC timestamp issued or observed.
    pub fn clock(&self) -> Option<Hlc> {
        self.hlc.last()
    }
}
