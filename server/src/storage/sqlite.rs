//! The SQLite backend of [`Storage`]: any open connection (the writer's batch savepoint, a
//! reader) is the storage. One writer thread serialises every write (crate::db), so the change
//! log's numbers become visible in order and the log's high water is simply its newest change.

use std::collections::HashSet;

use gridlink_core::store::within_sql;
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    AuditEntry, AuditFilter, Bound, DeviceListing, ListOrder, ListedRecord, LoggedChange, NewSession, Notice, PersonListing, PersonRow,
    RecordFilter, RecordRow, Round, Session, Storage, Unit, UploadStep, escape_like, filter_conditions, like_pattern,
};
use crate::error::AppResult;
use crate::records::ScopeEvent;

/// A list's `WHERE` clause: the filter and the viewer's scope (`?1` unit, `?2` person), with the
/// filter's values numbered from `?3`; returns the clause and those values.
/// The scope rule as an SQL condition over the `docs` index, with the person's unit bound to `?1`
/// and their id to `?2`: a record is in scope when its location or its holder lies within the
/// person's unit, or the person reported it. This is the core's `access` rule, `!= None`,
/// written over the index columns (the index keeps no assignee, and neither does sync's scope),
/// so every list filters scope inside the query, before any `LIMIT`. The test
/// `every_list_is_complete_for_every_role` checks it against `ScopeEvent::visible_to`.
fn scope() -> String {
    format!("({})", scope_parts().join(" OR "))
}

/// The conditions of [`scope`], one per index column.
fn scope_parts() -> [String; 3] {
    [within_sql("location", "?1"), within_sql("holder", "?1"), "reporter = ?2".into()]
}

/// The ids of [`scope`], one part per column, each read from that column's index alone (schema 9;
/// `a_scope_is_read_from_indexes_alone`). A record may come up in more than one part.
fn scope_ids() -> String {
    scope_parts().map(|part| format!("SELECT id FROM docs WHERE {part}")).join(" UNION ALL ")
}

/// The deadline sweeper's question: open incidents past their due time not yet settled for it.
/// Read from the index `docs_open_deadline` alone (schema 8; `the_sweeper_and_the_figures_read_indexes_alone`).
const OVERDUE_INCIDENTS: &str = "SELECT d.id, d.deadline_ms FROM docs d LEFT JOIN swept s ON s.doc_id = d.id
     WHERE d.kind = 'incident' AND d.open = 1 AND d.status != 'suspended' AND d.deadline_ms < ?1
       AND (s.due_ms IS NULL OR s.due_ms != d.deadline_ms)
     ORDER BY d.deadline_ms, d.id";

/// Open and overdue records per village and at town level, from the same index alone.
const OPEN_BY_VILLAGE: &str = "SELECT u.code, coalesce(d.open, 0), coalesce(d.overdue, 0) FROM units u LEFT JOIN (
         SELECT substr(location, 1, 12) AS village, count(*) AS open,
                sum(deadline_ms IS NOT NULL AND deadline_ms < ?1) AS overdue
         FROM docs WHERE open = 1 GROUP BY village
     ) d ON d.village = u.code WHERE length(u.code) = 12
     UNION ALL
     SELECT 'town', count(*), coalesce(sum(deadline_ms IS NOT NULL AND deadline_ms < ?1), 0)
     FROM docs WHERE open = 1 AND length(location) < 12";

fn list_condition(f: &RecordFilter<'_>) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut clause = vec![scope()];
    let mut values = Vec::new();
    for (sql, bound) in filter_conditions(f) {
        let sql = sql.replace("?viewer", "?1");
        let mark = match bound {
            None => String::new(),
            // A set as a JSON array, unpacked by `json_each` (SQLite has no array values).
            Some(Bound::Texts(set)) => {
                values.push(Value::Text(serde_json::to_string(&set).expect("a list of strings")));
                format!("(SELECT value FROM json_each(?{}))", values.len() + 2)
            }
            Some(b) => {
                values.push(match b {
                    Bound::Text(t) => Value::Text(t),
                    Bound::Int(n) => Value::Integer(n),
                    Bound::Bool(o) => Value::Integer(o.into()),
                    Bound::Texts(_) => unreachable!("handled above"),
                });
                format!("?{}", values.len() + 2)
            }
        };
        clause.push(sql.replace('#', &mark));
    }
    (clause.join(" AND "), values)
}

fn list_order(o: ListOrder) -> &'static str {
    match o {
        ListOrder::Updated => "updated_ms DESC, id",
        ListOrder::Deadline => "deadline_ms ASC, id",
        ListOrder::Created => "created_ms ASC, id",
        ListOrder::CreatedDesc => "created_ms DESC, id",
    }
}

/// A unit from the columns `code, name, kind, parent, department_key, boundary`.
fn unit_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<Unit> {
    Ok(Unit { code: r.get(0)?, name: r.get(1)?, kind: r.get(2)?, parent: r.get(3)?, department_key: r.get(4)?, boundary: r.get(5)? })
}

/// Accounts whose id or name contains `?1` (its `LIKE` pattern in `?2`), or all when it is empty.
const PEOPLE_SEARCH: &str = "(?1 = '' OR id LIKE ?2 ESCAPE '\\' OR name LIKE ?2 ESCAPE '\\')";

/// The audit lines an [`AuditFilter`] matches (`?1`–`?4`).
const AUDIT_FILTER: &str = "WHERE (?1 = '' OR actor = ?1) AND (?2 = '' OR action = ?2) AND at_ms >= ?3 AND at_ms < ?4";

impl Storage for Connection {
    fn begin(&self) -> AppResult<()> {
        Ok(self.execute_batch("BEGIN IMMEDIATE")?)
    }

    fn commit(&self) -> AppResult<()> {
        Ok(self.execute_batch("COMMIT")?)
    }

    fn rollback(&self) -> AppResult<()> {
        Ok(self.execute_batch("ROLLBACK")?)
    }

    fn savepoint(&self) -> AppResult<()> {
        Ok(self.execute_batch("SAVEPOINT write_job")?)
    }

    fn end_savepoint(&self, keep: bool) -> AppResult<()> {
        Ok(self.execute_batch(if keep { "RELEASE write_job" } else { "ROLLBACK TO write_job; RELEASE write_job" })?)
    }

    fn in_transaction(&self) -> bool {
        !self.is_autocommit()
    }

    fn begin_read(&self) -> AppResult<()> {
        // A deferred transaction: its first read fixes the snapshot of the WAL it reads.
        Ok(self.execute_batch("BEGIN DEFERRED")?)
    }

    fn end_read(&self) -> AppResult<()> {
        Ok(self.execute_batch("COMMIT")?)
    }

    fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        Some(self)
    }

    fn meta_get(&self, key: &str) -> AppResult<Option<String>> {
        Ok(self.prepare_cached("SELECT value FROM meta WHERE key = ?1")?.query_row([key], |r| r.get(0)).optional()?)
    }

    fn meta_set(&self, key: &str, value: &str) -> AppResult<()> {
        self.prepare_cached("INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value")?
            .execute([key, value])?;
        Ok(())
    }

    fn meta_clear(&self, key: &str) -> AppResult<()> {
        self.prepare_cached("DELETE FROM meta WHERE key = ?1")?.execute([key])?;
        Ok(())
    }

    fn device_seen(&self, device: &str, now_ms: i64) -> AppResult<bool> {
        Ok(self
            .prepare_cached("UPDATE devices SET last_seen_ms = ?1 WHERE id = ?2 RETURNING recovering")?
            .query_row(params![now_ms, device], |r| r.get(0))
            .optional()?
            .unwrap_or(false))
    }

    fn device_recovering(&self, device: &str) -> AppResult<bool> {
        Ok(self
            .prepare_cached("SELECT recovering FROM devices WHERE id = ?1")?
            .query_row([device], |r| r.get(0))
            .optional()?
            .unwrap_or(false))
    }

    fn set_device_recovering(&self, device: &str, recovering: bool) -> AppResult<()> {
        self.prepare_cached("UPDATE devices SET recovering = ?2 WHERE id = ?1")?.execute(params![device, recovering])?;
        Ok(())
    }

    fn round(&self, device: &str, round: i64) -> AppResult<Option<Round>> {
        let row: Option<(i64, i64, String, String, bool)> = self
            .prepare_cached("SELECT round, seq_high, added, removed, applied FROM rounds WHERE device_id = ?1 AND round = ?2")?
            .query_row(params![device, round], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .optional()?;
        Ok(row.map(|(round, seq_high, added, removed, applied)| Round {
            round,
            seq_high,
            added: serde_json::from_str(&added).unwrap_or_default(),
            removed: serde_json::from_str(&removed).unwrap_or_default(),
            applied,
        }))
    }

    fn device_seen_taking_round(&self, device: &str, now_ms: i64, cursor: Option<i64>) -> AppResult<(bool, Option<i64>)> {
        let recovering = self.device_seen(device, now_ms)?;
        let Some(round) = cursor.map(|c| self.round(device, c)).transpose()?.flatten() else {
            self.prepare_cached("DELETE FROM device_docs WHERE device_id = ?1")?.execute([device])?;
            return Ok((recovering, None));
        };
        if !round.applied {
            for id in &round.added {
                self.prepare_cached("INSERT OR IGNORE INTO device_docs(device_id, doc_id) VALUES (?1, ?2)")?.execute([device, id])?;
            }
            for id in &round.removed {
                self.prepare_cached("DELETE FROM device_docs WHERE device_id = ?1 AND doc_id = ?2")?.execute([device, id])?;
            }
            self.prepare_cached("UPDATE rounds SET applied = 1 WHERE device_id = ?1 AND round = ?2")?
                .execute(params![device, round.round])?;
        }
        self.prepare_cached("DELETE FROM rounds WHERE device_id = ?1 AND round < ?2")?.execute(params![device, round.round])?;
        Ok((recovering, Some(round.seq_high)))
    }

    fn add_round(&self, device: &str, seq_high: i64, added: &[String], removed: &[String]) -> AppResult<i64> {
        let round: i64 = self
            .prepare_cached("SELECT coalesce(max(round), 0) + 1 FROM rounds WHERE device_id = ?1")?
            .query_row([device], |r| r.get(0))?;
        self.prepare_cached("INSERT INTO rounds(device_id, round, seq_high, added, removed) VALUES (?1, ?2, ?3, ?4, ?5)")?.execute(
            params![
                device,
                round,
                seq_high,
                serde_json::to_string(added).expect("a list of strings"),
                serde_json::to_string(removed).expect("a list of strings")
            ],
        )?;
        Ok(round)
    }

    fn holdings(&self, device: &str) -> AppResult<HashSet<String>> {
        let mut stmt = self.prepare_cached("SELECT doc_id FROM device_docs WHERE device_id = ?1")?;
        let rows = stmt.query_map([device], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn change_known(&self, hash: &str) -> AppResult<bool> {
        Ok(self.prepare_cached("SELECT count(*) FROM changes WHERE hash = ?1")?.query_row([hash], |r| r.get::<_, i64>(0))? > 0)
    }

    fn log_change(&self, doc_id: &str, hash: &str, bytes: &[u8], device_id: &str, now_ms: i64) -> AppResult<()> {
        self.prepare_cached("INSERT INTO changes(doc_id, hash, bytes, device_id, received_ms) VALUES (?1, ?2, ?3, ?4, ?5)")?
            .execute(params![doc_id, hash, bytes, device_id, now_ms])?;
        Ok(())
    }

    fn record_changes(&self, doc_id: &str, visit: &mut dyn FnMut(Vec<u8>, String) -> AppResult<()>) -> AppResult<()> {
        let mut stmt = self.prepare_cached("SELECT bytes, device_id FROM changes WHERE doc_id = ?1 ORDER BY seq")?;
        let mut rows = stmt.query([doc_id])?;
        while let Some(r) = rows.next()? {
            visit(r.get(0)?, r.get(1)?)?;
        }
        Ok(())
    }

    fn changes_after(
        &self,
        device: &str,
        after: i64,
        _holdings: &HashSet<String>,
        visit: &mut dyn FnMut(LoggedChange) -> AppResult<bool>,
    ) -> AppResult<()> {
        // The device's records from its table: in-process, the join costs less than a round trip.
        let mut stmt = self.prepare_cached(
            "SELECT c.seq, c.doc_id, c.bytes, c.device_id FROM changes c
             JOIN device_docs d ON d.doc_id = c.doc_id AND d.device_id = ?1
             WHERE c.seq > ?2 AND c.device_id <> ?1 ORDER BY c.seq",
        )?;
        let mut rows = stmt.query(params![device, after])?;
        while let Some(r) = rows.next()? {
            let change = LoggedChange { seq: r.get(0)?, doc_id: r.get(1)?, bytes: r.get(2)?, device_id: r.get(3)? };
            if !visit(change)? {
                break;
            }
        }
        Ok(())
    }

    fn log_high_water(&self) -> AppResult<i64> {
        let max: Option<i64> = self.prepare_cached("SELECT max(seq) FROM changes")?.query_row([], |r| r.get(0))?;
        Ok(max.unwrap_or(0))
    }

    fn snapshot(&self, doc_id: &str) -> AppResult<Option<Vec<u8>>> {
        Ok(self.prepare_cached("SELECT snapshot FROM docs WHERE id = ?1")?.query_row([doc_id], |r| r.get(0)).optional()?)
    }

    fn put_record(&self, r: &RecordRow) -> AppResult<()> {
        self.prepare_cached(
            "INSERT OR REPLACE INTO docs(id, kind, location, holder, owner, reporter, status, open, category, title, case_no,
                deadline_ms, created_ms, updated_ms, conflicts, batch_id, facts, snapshot)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
        )?
        .execute(params![
            r.id,
            r.kind,
            r.location,
            r.holder,
            r.owner,
            r.reporter,
            r.status,
            r.open,
            r.category,
            r.title,
            r.case_no,
            r.deadline_ms,
            r.created_ms,
            r.updated_ms,
            r.conflicts,
            r.batch_id,
            r.facts,
            r.snapshot
        ])?;
        Ok(())
    }

    fn record_ids(&self) -> AppResult<Vec<String>> {
        let mut stmt = self.prepare_cached("SELECT id FROM docs ORDER BY id")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn record_with_case_no(&self, case_no: &str, except: &str) -> AppResult<Option<String>> {
        Ok(self
            .prepare_cached("SELECT id FROM docs WHERE case_no = ?1 AND id <> ?2")?
            .query_row(params![case_no, except], |r| r.get(0))
            .optional()?)
    }

    fn records_in_scope(&self, unit: &str, person_id: &str) -> AppResult<HashSet<String>> {
        let mut stmt = self.prepare_cached(&scope_ids())?;
        let ids = stmt.query_map(params![unit, person_id], |r| r.get(0))?;
        Ok(ids.collect::<Result<_, _>>()?)
    }

    fn count_records(&self, f: &RecordFilter<'_>, unit: &str, person_id: &str) -> AppResult<u64> {
        let (cond, values) = list_condition(f);
        let mut args: Vec<rusqlite::types::Value> = vec![unit.to_owned().into(), person_id.to_owned().into()];
        args.extend(values);
        let n: i64 = self
            .prepare_cached(&format!("SELECT count(*) FROM docs WHERE {cond}"))?
            .query_row(rusqlite::params_from_iter(args), |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    fn list_records(
        &self,
        f: &RecordFilter<'_>,
        order: ListOrder,
        unit: &str,
        person_id: &str,
        limit: i64,
        offset: i64,
    ) -> AppResult<Vec<ListedRecord>> {
        let (cond, values) = list_condition(f);
        let n = values.len();
        let mut args: Vec<rusqlite::types::Value> = vec![unit.to_owned().into(), person_id.to_owned().into()];
        args.extend(values);
        args.extend([limit.into(), offset.into()]);
        let sql = format!(
            "SELECT id, kind, location, holder, status, category, title, case_no, deadline_ms, updated_ms, open, conflicts, created_ms
             FROM docs WHERE {cond} ORDER BY {} LIMIT ?{} OFFSET ?{}",
            list_order(order),
            n + 3,
            n + 4
        );
        let mut stmt = self.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
            Ok(ListedRecord {
                id: r.get(0)?,
                kind: r.get(1)?,
                location: r.get(2)?,
                holder: r.get(3)?,
                status: r.get(4)?,
                category: r.get(5)?,
                title: r.get(6)?,
                case_no: r.get(7)?,
                deadline_ms: r.get(8)?,
                updated_ms: r.get(9)?,
                open: r.get(10)?,
                conflicts: r.get(11)?,
                created_ms: r.get(12)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn record_facts(&self, f: &RecordFilter<'_>, unit: &str, person_id: &str) -> AppResult<Vec<(String, String)>> {
        let (cond, values) = list_condition(f);
        let mut args: Vec<rusqlite::types::Value> = vec![unit.to_owned().into(), person_id.to_owned().into()];
        args.extend(values);
        let mut stmt = self.prepare_cached(&format!("SELECT id, facts FROM docs WHERE {cond} ORDER BY created_ms, id"))?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn incident_by_number(&self, number: &str) -> AppResult<Option<String>> {
        Ok(self
            .prepare_cached("SELECT id FROM docs WHERE kind = 'incident' AND (case_no = ?1 OR id = ?1)")?
            .query_row([number], |r| r.get(0))
            .optional()?)
    }

    fn case_no_of(&self, id: &str) -> AppResult<Option<String>> {
        Ok(self.prepare_cached("SELECT case_no FROM docs WHERE id = ?1")?.query_row([id], |r| r.get(0)).optional()?.flatten())
    }

    fn add_photo_ref(&self, doc_id: &str, sha256: &str) -> AppResult<()> {
        self.prepare_cached("INSERT OR IGNORE INTO attachment_refs(doc_id, sha256) VALUES (?1, ?2)")?.execute([doc_id, sha256])?;
        Ok(())
    }

    fn records_with_photo(&self, sha256: &str) -> AppResult<Vec<ScopeEvent>> {
        let mut stmt = self.prepare_cached(
            "SELECT d.id, d.location, d.holder, d.reporter FROM attachment_refs r JOIN docs d ON d.id = r.doc_id WHERE r.sha256 = ?1",
        )?;
        let rows = stmt
            .query_map([sha256], |r| Ok(ScopeEvent { doc_id: r.get(0)?, location: r.get(1)?, holder: r.get(2)?, reporter: r.get(3)? }))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn put_personal(&self, doc_id: &str, data: &str, now_ms: i64, by_person: &str) -> AppResult<()> {
        self.prepare_cached(
            "INSERT INTO personal(doc_id, data, updated_ms, by_person) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(doc_id) DO UPDATE SET data = excluded.data, updated_ms = excluded.updated_ms, by_person = excluded.by_person",
        )?
        .execute(params![doc_id, data, now_ms, by_person])?;
        Ok(())
    }

    fn personal(&self, doc_id: &str) -> AppResult<Option<(String, String, ScopeEvent)>> {
        Ok(self
            .prepare_cached(
                "SELECT p.data, d.kind, d.location, d.holder, d.reporter FROM personal p JOIN docs d ON d.id = p.doc_id WHERE p.doc_id = ?1",
            )?
            .query_row([doc_id], |r| {
                let place = ScopeEvent { doc_id: doc_id.to_owned(), location: r.get(2)?, holder: r.get(3)?, reporter: r.get(4)? };
                Ok((r.get(0)?, r.get(1)?, place))
            })
            .optional()?)
    }

    fn ping(&self) -> AppResult<()> {
        self.prepare_cached("SELECT 1")?.query_row([], |r| r.get::<_, i64>(0))?;
        Ok(())
    }

    fn person(&self, id: &str) -> AppResult<Option<PersonRow>> {
        Ok(self
            .prepare_cached("SELECT id, name, role, unit, password_hash, active FROM people WHERE id = ?1")?
            .query_row([id], |r| {
                Ok(PersonRow {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    role: r.get(2)?,
                    unit: r.get(3)?,
                    password_hash: r.get(4)?,
                    active: r.get(5)?,
                })
            })
            .optional()?)
    }

    fn session_by_token(&self, token_hash: &str) -> AppResult<Option<Session>> {
        Ok(self
            .prepare_cached("SELECT id, person_id, expires_ms, revoked_ms, logged_out FROM devices WHERE token_hash = ?1")?
            .query_row([token_hash], |r| {
                Ok(Session {
                    device_id: r.get(0)?,
                    person_id: r.get(1)?,
                    expires_ms: r.get(2)?,
                    revoked_ms: r.get(3)?,
                    logged_out: r.get(4)?,
                })
            })
            .optional()?)
    }

    fn open_session(&self, n: &NewSession, fresh: &[u8], valid: fn(&[u8]) -> bool) -> AppResult<Vec<u8>> {
        let kept: Option<Vec<u8>> = match &n.install_id {
            Some(install) => self
                .prepare_cached(
                    "SELECT data_key FROM devices WHERE person_id = ?1 AND install_id = ?2 AND data_key IS NOT NULL AND revoked_ms IS NULL
                     ORDER BY created_ms DESC LIMIT 1",
                )?
                .query_row(params![n.person_id, install], |r| r.get(0))
                .optional()?,
            None => None,
        };
        let key = kept.filter(|k| valid(k)).unwrap_or_else(|| fresh.to_vec());
        if let Some(install) = &n.install_id {
            self.prepare_cached("UPDATE devices SET data_key = NULL WHERE person_id = ?1 AND install_id = ?2")?
                .execute(params![n.person_id, install])?;
        }
        self.prepare_cached(
            "INSERT INTO devices(id, person_id, name, token_hash, created_ms, expires_ms, data_key, install_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![n.device_id, n.person_id, n.name, n.token_hash, n.created_ms, n.expires_ms, key, n.install_id])?;
        Ok(key)
    }

    fn sign_out(&self, device_id: &str) -> AppResult<()> {
        self.prepare_cached("UPDATE devices SET logged_out = 1 WHERE id = ?1")?.execute([device_id])?;
        Ok(())
    }

    fn revoke_device(&self, device_id: &str, now_ms: i64) -> AppResult<bool> {
        let n = self
            .prepare_cached("UPDATE devices SET revoked_ms = ?1, data_key = NULL WHERE id = ?2 AND revoked_ms IS NULL")?
            .execute(params![now_ms, device_id])?;
        Ok(n > 0)
    }

    fn device_keeps_key(&self, device_id: &str) -> AppResult<bool> {
        let key: Option<Option<Vec<u8>>> =
            self.prepare_cached("SELECT data_key FROM devices WHERE id = ?1")?.query_row([device_id], |r| r.get(0)).optional()?;
        Ok(key.flatten().is_some())
    }

    fn devices_count(&self, person_id: &str) -> AppResult<u64> {
        let n: i64 =
            self.prepare_cached("SELECT count(*) FROM devices WHERE (?1 = '' OR person_id = ?1)")?.query_row([person_id], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    fn devices_page(&self, person_id: &str, limit: i64, offset: i64) -> AppResult<Vec<DeviceListing>> {
        let mut stmt = self.prepare_cached(
            "SELECT d.id, d.person_id, p.name, d.name, d.created_ms, d.last_seen_ms, d.revoked_ms, d.logged_out, d.expires_ms
             FROM devices d JOIN people p ON p.id = d.person_id WHERE (?1 = '' OR d.person_id = ?1)
             ORDER BY coalesce(d.last_seen_ms, d.created_ms) DESC, d.id LIMIT ?2 OFFSET ?3",
        )?;
        let rows = stmt.query_map(params![person_id, limit, offset], |r| {
            Ok(DeviceListing {
                id: r.get(0)?,
                person_id: r.get(1)?,
                person_name: r.get(2)?,
                name: r.get(3)?,
                created_ms: r.get(4)?,
                last_seen_ms: r.get(5)?,
                revoked_ms: r.get(6)?,
                logged_out: r.get(7)?,
                expires_ms: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn end_sessions(&self, person_id: &str) -> AppResult<()> {
        self.prepare_cached("UPDATE devices SET logged_out = 1 WHERE person_id = ?1 AND revoked_ms IS NULL")?.execute([person_id])?;
        Ok(())
    }

    fn people_count(&self, search: &str) -> AppResult<u64> {
        let n: i64 = self
            .prepare_cached(&format!("SELECT count(*) FROM people WHERE {PEOPLE_SEARCH}"))?
            .query_row(params![search, like_pattern(search)], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    fn people_page(&self, search: &str, limit: i64, offset: i64) -> AppResult<Vec<PersonListing>> {
        let mut stmt = self.prepare_cached(&format!(
            "SELECT id, name, role, unit, active,
                    (SELECT count(*) FROM devices d WHERE d.person_id = people.id AND d.revoked_ms IS NULL AND d.logged_out = 0)
             FROM people WHERE {PEOPLE_SEARCH} ORDER BY unit, id LIMIT ?3 OFFSET ?4"
        ))?;
        let rows = stmt.query_map(params![search, like_pattern(search), limit, offset], |r| {
            Ok(PersonListing { id: r.get(0)?, name: r.get(1)?, role: r.get(2)?, unit: r.get(3)?, active: r.get(4)?, devices: r.get(5)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn set_person_role_unit(&self, id: &str, role: &str, unit: &str) -> AppResult<()> {
        self.prepare_cached("UPDATE people SET role = ?1, unit = ?2 WHERE id = ?3")?.execute(params![role, unit, id])?;
        Ok(())
    }

    fn set_person_active(&self, id: &str, active: bool) -> AppResult<()> {
        self.prepare_cached("UPDATE people SET active = ?1 WHERE id = ?2")?.execute(params![active, id])?;
        Ok(())
    }

    fn set_password(&self, id: &str, password_hash: &str) -> AppResult<()> {
        self.prepare_cached("UPDATE people SET password_hash = ?1 WHERE id = ?2")?.execute(params![password_hash, id])?;
        Ok(())
    }

    fn unit(&self, code: &str) -> AppResult<Option<Unit>> {
        Ok(self
            .prepare_cached("SELECT code, name, kind, parent, department_key, boundary FROM units WHERE code = ?1")?
            .query_row([code], unit_of)
            .optional()?)
    }

    fn units_count(&self, prefix: &str) -> AppResult<u64> {
        let n: i64 = self
            .prepare_cached("SELECT count(*) FROM units WHERE code LIKE ?1 ESCAPE '\\'")?
            .query_row([format!("{}%", escape_like(prefix))], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    fn units_page(&self, prefix: &str, limit: i64, offset: i64) -> AppResult<Vec<Unit>> {
        let mut stmt = self.prepare_cached(
            "SELECT code, name, kind, parent, department_key, boundary FROM units WHERE code LIKE ?1 ESCAPE '\\'
             ORDER BY code LIMIT ?2 OFFSET ?3",
        )?;
        let rows = stmt.query_map(params![format!("{}%", escape_like(prefix)), limit, offset], unit_of)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn set_boundary(&self, code: &str, boundary: Option<&str>) -> AppResult<()> {
        self.prepare_cached("UPDATE units SET boundary = ?1 WHERE code = ?2")?.execute(params![boundary, code])?;
        Ok(())
    }

    fn upload(&self, sha256: &str) -> AppResult<Option<(u64, u64, bool, String)>> {
        Ok(self
            .prepare_cached("SELECT total, received, complete, uploader FROM attachments WHERE sha256 = ?1")?
            .query_row([sha256], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get(2)?, r.get(3)?)))
            .optional()?)
    }

    fn upload_moved(&self, u: &UploadStep<'_>) -> AppResult<bool> {
        let n = self
            .prepare_cached(
                "INSERT INTO attachments(sha256, total, received, complete, uploader, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(sha256) DO UPDATE SET received = excluded.received, complete = excluded.complete
                 WHERE attachments.received = ?7 AND attachments.complete = 0",
            )?
            .execute(params![
                u.sha256,
                u.total as i64,
                u.received as i64,
                u.complete,
                u.uploader,
                u.now_ms,
                i64::try_from(u.from).unwrap_or(i64::MAX)
            ])?;
        Ok(n > 0)
    }

    fn upload_restart(&self, sha256: &str) -> AppResult<()> {
        self.prepare_cached("UPDATE attachments SET received = 0 WHERE sha256 = ?1")?.execute([sha256])?;
        Ok(())
    }

    fn upload_complete(&self, sha256: &str, len: u64, uploader: &str, now_ms: i64) -> AppResult<()> {
        self.prepare_cached(
            "INSERT INTO attachments(sha256, total, received, complete, uploader, created_ms) VALUES (?1, ?2, ?2, 1, ?3, ?4)
             ON CONFLICT(sha256) DO UPDATE SET total = excluded.total, received = excluded.total, complete = 1",
        )?
        .execute(params![sha256, len as i64, uploader, now_ms])?;
        Ok(())
    }

    fn overdue_incidents(&self, now_ms: i64) -> AppResult<Vec<(String, i64)>> {
        let mut stmt = self.prepare_cached(OVERDUE_INCIDENTS)?;
        let rows = stmt.query_map([now_ms], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn mark_swept(&self, doc_id: &str, due_ms: i64) -> AppResult<()> {
        self.prepare_cached(
            "INSERT INTO swept(doc_id, due_ms) VALUES (?1, ?2) ON CONFLICT(doc_id) DO UPDATE SET due_ms = excluded.due_ms",
        )?
        .execute(rusqlite::params![doc_id, due_ms])?;
        Ok(())
    }

    fn open_by_village(&self, now_ms: i64) -> AppResult<Vec<(String, i64, i64)>> {
        let mut stmt = self.prepare_cached(OPEN_BY_VILLAGE)?;
        let rows = stmt.query_map([now_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn database_bytes(&self) -> AppResult<i64> {
        Ok(self
            .prepare_cached("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()")?
            .query_row([], |r| r.get(0))?)
    }

    fn row_counts(&self) -> AppResult<Vec<(&'static str, i64)>> {
        super::STATE_TABLES
            .iter()
            .map(|t| Ok((*t, self.prepare_cached(&format!("SELECT count(*) FROM {t}"))?.query_row([], |r| r.get(0))?)))
            .collect()
    }

    fn api_key_person(&self, key_hash: &str) -> AppResult<Option<String>> {
        Ok(self.prepare_cached("SELECT person_id FROM api_keys WHERE key_hash = ?1")?.query_row([key_hash], |r| r.get(0)).optional()?)
    }

    fn add_api_key(&self, key_hash: &str, person_id: &str, name: &str, now_ms: i64) -> AppResult<()> {
        self.prepare_cached("INSERT INTO api_keys(key_hash, person_id, name, created_ms) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![key_hash, person_id, name, now_ms])?;
        Ok(())
    }

    fn unit_name(&self, code: &str) -> AppResult<Option<String>> {
        Ok(self.prepare_cached("SELECT name FROM units WHERE code = ?1")?.query_row([code], |r| r.get(0)).optional()?)
    }

    fn units(&self) -> AppResult<Vec<Unit>> {
        let mut stmt = self.prepare_cached("SELECT code, name, kind, parent, department_key, boundary FROM units ORDER BY code")?;
        let rows = stmt.query_map([], unit_of)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn put_unit(&self, u: &Unit) -> AppResult<()> {
        self.prepare_cached(
            "INSERT INTO units(code, name, kind, parent, department_key) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(code) DO UPDATE SET name = excluded.name, kind = excluded.kind, parent = excluded.parent,
                department_key = excluded.department_key",
        )?
        .execute(params![u.code, u.name, u.kind, u.parent, u.department_key])?;
        Ok(())
    }

    fn put_person(&self, p: &PersonRow, now_ms: i64) -> AppResult<()> {
        self.prepare_cached(
            "INSERT INTO people(id, name, role, unit, password_hash, active, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6)
             ON CONFLICT(id) DO UPDATE SET name = excluded.name, role = excluded.role, unit = excluded.unit,
                password_hash = excluded.password_hash, active = 1",
        )?
        .execute(params![p.id, p.name, p.role, p.unit, p.password_hash, now_ms])?;
        Ok(())
    }

    fn person_exists(&self, id: &str) -> AppResult<bool> {
        Ok(self.prepare_cached("SELECT count(*) FROM people WHERE id = ?1")?.query_row([id], |r| r.get::<_, i64>(0))? > 0)
    }

    fn next_case_number(&self, prefix: &str, year: i64) -> AppResult<i64> {
        Ok(self
            .prepare_cached(
                "INSERT INTO case_counters(prefix, year, last) VALUES (?1, ?2, 1)
                 ON CONFLICT(prefix, year) DO UPDATE SET last = last + 1 RETURNING last",
            )?
            .query_row(params![prefix, year], |r| r.get(0))?)
    }

    fn case_number_taken(&self, prefix: &str, year: i64, number: i64) -> AppResult<()> {
        self.prepare_cached(
            "INSERT INTO case_counters(prefix, year, last) VALUES (?1, ?2, ?3)
             ON CONFLICT(prefix, year) DO UPDATE SET last = max(last, excluded.last)",
        )?
        .execute(params![prefix, year, number])?;
        Ok(())
    }

    fn add_notice(&self, doc_id: &str, unit: &str, at_ms: i64, text: &str) -> AppResult<()> {
        self.prepare_cached("INSERT INTO notices(doc_id, unit, at_ms, text) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![doc_id, unit, at_ms, text])?;
        Ok(())
    }

    fn notices(&self, unit: &str, after: i64, before: i64, limit: i64) -> AppResult<Vec<Notice>> {
        let sql = format!(
            "SELECT seq, doc_id, unit, at_ms, text FROM notices WHERE {} AND seq > ?2 AND seq < ?3 ORDER BY seq DESC LIMIT ?4",
            within_sql("unit", "?1")
        );
        let mut stmt = self.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![unit, after, before, limit], |r| {
            Ok(Notice { seq: r.get(0)?, doc_id: r.get(1)?, unit: r.get(2)?, at_ms: r.get(3)?, text: r.get(4)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn audit(&self, at_ms: i64, actor: &str, action: &str, detail: &str) -> AppResult<()> {
        self.prepare_cached("INSERT INTO audit(at_ms, actor, action, detail) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![at_ms, actor, action, detail])?;
        Ok(())
    }

    fn audit_count(&self, f: &AuditFilter) -> AppResult<u64> {
        let total: i64 = self
            .prepare_cached(&format!("SELECT count(*) FROM audit {AUDIT_FILTER}"))?
            .query_row(params![f.actor, f.action, f.from_ms, f.to_ms], |r| r.get(0))?;
        Ok(total.max(0) as u64)
    }

    fn audit_page(&self, f: &AuditFilter, limit: i64, offset: i64) -> AppResult<Vec<AuditEntry>> {
        let mut stmt = self.prepare_cached(&format!(
            "SELECT at_ms, actor, action, detail FROM audit {AUDIT_FILTER} ORDER BY seq DESC LIMIT ?5 OFFSET ?6"
        ))?;
        let rows = stmt.query_map(params![f.actor, f.action, f.from_ms, f.to_ms, limit, offset], |r| {
            Ok(AuditEntry { at_ms: r.get(0)?, actor: r.get(1)?, action: r.get(2)?, detail: r.get(3)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn audit_actions(&self) -> AppResult<Vec<String>> {
        let mut stmt = self.prepare_cached("SELECT DISTINCT action FROM audit ORDER BY action")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn login_failures(&self, user: &str) -> AppResult<Option<(i64, i64)>> {
        Ok(self
            .prepare_cached("SELECT failures, since_ms FROM login_failures WHERE user_name = ?1")?
            .query_row([user], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    fn note_login_failure(&self, user: &str, now_ms: i64, window_ms: i64) -> AppResult<()> {
        let stale = now_ms - window_ms;
        self.prepare_cached("DELETE FROM login_failures WHERE since_ms < ?1 AND user_name <> ?2")?.execute(params![stale, user])?;
        self.prepare_cached(
            "INSERT INTO login_failures(user_name, failures, since_ms) VALUES (?1, 1, ?2)
             ON CONFLICT(user_name) DO UPDATE SET
               failures = CASE WHEN since_ms < ?3 THEN 1 ELSE failures + 1 END,
               since_ms = CASE WHEN since_ms < ?3 THEN ?2 ELSE since_ms END",
        )?
        .execute(params![user, now_ms, stale])?;
        Ok(())
    }

    fn clear_login_failures(&self, user: &str) -> AppResult<()> {
        self.prepare_cached("DELETE FROM login_failures WHERE user_name = ?1")?.execute([user])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The steps of `sql`'s query plan on a database of this build's schema.
    fn query_plan(sql: &str, values: impl rusqlite::Params) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("town.db");
        let mut conn = Connection::open(&path).unwrap();
        crate::db::migrate(&mut conn, &path).unwrap();
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        stmt.query_map(values, |r| r.get(3)).unwrap().collect::<Result<_, _>>().unwrap()
    }

    /// The sweeper runs at every start, on the writer, before any login is served: on a large
    /// town with a cold page cache, one table page per overdue incident was 1.6 s of reads.
    #[test]
    fn the_sweeper_and_the_figures_read_indexes_alone() {
        for sql in [OVERDUE_INCIDENTS, OPEN_BY_VILLAGE] {
            let plan = query_plan(sql, [0i64]);
            // Every step that reads `docs` (by name, or as `d` in the sweeper's join) reads the
            // index alone; `d` of the figures is their own grouped subquery.
            let reads_docs = |step: &&String| step.contains("docs") || step.starts_with("SEARCH d ") || step.as_str() == "SCAN d";
            let docs: Vec<&String> = plan.iter().filter(reads_docs).collect();
            assert!(!docs.is_empty(), "{plan:?}");
            assert!(docs.iter().all(|step| step.contains("COVERING INDEX docs_open_deadline")), "{plan:?}");
        }
    }

    /// A device's scope is asked at every sync round; a record's table row holds its snapshot.
    #[test]
    fn a_scope_is_read_from_indexes_alone() {
        let plan = query_plan(&scope_ids(), params!["320581101", "p1"]);
        let reads: Vec<&String> = plan.iter().filter(|step| step.contains("docs")).collect();
        // Seven index searches (three ranges per column, one for the reporter), no table row.
        assert_eq!(reads.len(), 7, "{plan:?}");
        assert!(reads.iter().all(|step| step.contains("USING COVERING INDEX docs_")), "{plan:?}");
    }
}
