//! Records on the server: ingesting pushed changes (validated with the core's rules), case
//! numbers, the index used for scope, and reading a record.

use std::collections::HashSet;

use automerge::{ActorId, Change};
use gridlink_core::calendar::local_time;
use gridlink_core::figures::RecordFacts;
use gridlink_core::org::access;
use gridlink_core::pii::{Personal, needs_personal};
use gridlink_core::record::RecordDoc;
use gridlink_core::routing::RoutingRules;
use gridlink_core::sync::validate::scope_of;
use gridlink_core::sync::validate::{check_invariants, check_shape, validate_update as validate_update_fn};
use gridlink_core::workflow::{Action, ActionKind, RecordKind, TimelineEntry, check};
use gridlink_core::{Access, Catalog, Hlc, Person, Record, RecordBody, RecordState, Role, Status, UnitCode, WorkCalendar, complete_action};
use sha2::Digest;

use crate::error::{AppError, AppResult};
use crate::storage::{RecordRow, Storage};

/// Device id recorded for changes the server makes itself (case numbers, supervision).
pub const SERVER_DEVICE: &str = "server";

/// What a stored change touched, for live notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeEvent {
    pub doc_id: String,
    pub location: String,
    pub holder: Option<String>,
    pub reporter: Option<String>,
}

impl ScopeEvent {
    /// True when `person` may see the record this event is about.
    pub fn visible_to(&self, person: &Person) -> bool {
        self.access_of(person) != Access::None
    }

    /// What `person` may do with the record this event is about (the core's rule over the index).
    pub fn access_of(&self, person: &Person) -> Access {
        let Ok(location) = gridlink_core::UnitCode::parse(&self.location) else {
            return Access::None;
        };
        let holder = self.holder.as_deref().and_then(|h| gridlink_core::UnitCode::parse(h).ok());
        let scope = gridlink_core::org::RecordScope {
            location: &location,
            holder: holder.as_ref(),
            assignee: None,
            reporter: self.reporter.as_deref(),
        };
        access(person, &scope)
    }
}

/// Everything ingesting needs besides the transaction.
#[derive(Debug)]
pub struct IngestCtx<'a> {
    pub server_actor: &'a ActorId,
    pub catalog: &'a Catalog,
    pub calendar: &'a WorkCalendar,
    pub routing: &'a RoutingRules,
    pub case_prefix: &'a str,
    pub now_ms: i64,
    pub events: &'a mut Vec<ScopeEvent>,
    /// The pushing device is recovering changes this server acknowledged before it was restored
    /// from a backup ([`crate::backup`]): a change the pushing person could not have made is
    /// taken when its history is whole and every entry names a person of the town.
    pub recovery: bool,
}

/// Loads the server's copy of a record.
pub fn load_doc(conn: &dyn Storage, id: &str, actor: &ActorId) -> AppResult<Option<RecordDoc>> {
    conn.snapshot(id)?.map(|s| RecordDoc::load(id, &[&s], actor).map_err(AppError::from)).transpose()
}

/// Ingests one device's changes to one record, in order. Changes are stored until the first one
/// that is refused; returns how many were accepted, or the refused index and the reason.
pub fn ingest(
    tx: &dyn Storage,
    ctx: &mut IngestCtx<'_>,
    device_id: &str,
    person: &Person,
    doc_id: &str,
    changes: &[Vec<u8>],
) -> AppResult<Result<usize, (usize, String)>> {
    ingest_prepared(tx, ctx, device_id, person, doc_id, changes, None)
}

/// [`ingest`], taking a new record's changes as [`prepare_new`] judged them outside the writer
/// when the record is still new here: the writer then only stores them and adds its own part.
/// Otherwise (the record arrived meanwhile, a change is stored already, the device is
/// recovering) the changes are judged here as for any record.
pub fn ingest_prepared(
    tx: &dyn Storage,
    ctx: &mut IngestCtx<'_>,
    device_id: &str,
    person: &Person,
    doc_id: &str,
    changes: &[Vec<u8>],
    prepared: Option<Prepared>,
) -> AppResult<Result<usize, (usize, String)>> {
    let prepared = prepared.filter(|p| !ctx.recovery && p.doc_id == doc_id && p.count == changes.len());
    let decode = || -> Vec<Option<Change>> { changes.iter().map(|b| gridlink_core::chunk::decode_change(b)).collect() };
    // Decoded here only when nothing was prepared; a prepared push knows its first hash.
    let decoded = prepared.is_none().then(decode);
    let first_hash = match &prepared {
        Some(p) => Some(p.first_hash.clone()),
        None => decoded.as_ref().and_then(|d| d.first()).and_then(|c| c.as_ref()).map(|c| c.hash().to_string()),
    };
    // The server's copy and whether the first change is stored already, read together.
    let (saved, first_known) = tx.snapshot_and_known(doc_id, first_hash.as_deref())?;
    let still_new = saved.is_none() && !first_known;
    let taken = match prepared {
        Some(p) if still_new && p.later_unknown(tx)? => Some(p),
        _ => None,
    };
    // The server's routing entry, when it was decided (and staged in `doc`) beside the writer.
    let (mut doc, before, first, is_new, stored, outcome, decided) = match taken {
        Some(p) => {
            for (i, hash) in &p.accepted {
                insert_change(tx, doc_id, hash, &changes[*i], device_id, ctx.now_ms)?;
            }
            let stored = !p.accepted.is_empty();
            (p.doc, p.record, None, true, stored, p.outcome, Some(p.route))
        }
        None => {
            let mut decoded = decoded.unwrap_or_else(decode);
            let existing = saved.map(|s| RecordDoc::load(doc_id, &[&s], ctx.server_actor)).transpose()?;
            let is_new = existing.is_none();
            let mut before: Option<Record> = existing.as_ref().map(|d| d.read()).transpose()?;
            let first = before.clone();
            let mut doc = existing.unwrap_or_else(|| RecordDoc::empty(ctx.server_actor));
            let mut stored = false;
            let mut outcome = Ok(changes.len());
            for (i, bytes) in changes.iter().enumerate() {
                let change = Decoded { change: decoded[i].take(), bytes, known: (i == 0).then_some(first_known) };
                match ingest_one(tx, ctx, device_id, person, doc_id, &mut doc, before.as_ref(), change)? {
                    Ok(Some(record)) => {
                        before = Some(record);
                        stored = true;
                    }
                    Ok(None) => {} // already stored (a repeated request)
                    Err(reason) => {
                        outcome = Err((i, reason));
                        break;
                    }
                }
            }
            (doc, before, first, is_new, stored, outcome, None)
        }
    };
    if stored {
        // The server's part, as one change after the device's: a new record's case number, and
        // routing for a fresh report.
        let mut record = before.expect("a stored change leaves a record");
        let route = match decided {
            Some(route) => route,
            None => stage_route(&mut doc, &mut record, ctx.routing, ctx.catalog, ctx.now_ms)?,
        };
        let case_no = match &record.case_no {
            // A case number that came back with a recovered record: kept, unless the town gave
            // it to another record since the restore.
            Some(no) if first.as_ref().and_then(|f| f.case_no.as_ref()) != Some(no) => reclaim_case_no(tx, doc_id, no, ctx)?,
            Some(_) => None,
            None if is_new => Some(new_case_no(tx, ctx.case_prefix, &record, ctx.now_ms)?),
            None => None,
        };
        if case_no.is_some() || route.is_some() {
            doc.server_update(&mut record, case_no.as_deref(), route.as_ref(), ctx.now_ms)?;
            store_server_change(tx, doc_id, &mut doc, ctx.now_ms)?;
        }
        if let Some(first) = &first {
            notify_voided(tx, first, &record, ctx)?;
        }
        write_index(tx, &record, &mut doc, ctx)?;
    }
    Ok(outcome)
}

/// A new record's pushed changes, judged by the workflow's rules outside the writer
/// ([`prepare_new`]), for [`ingest_prepared`] to store while the record is still new.
#[derive(Debug)]
pub struct Prepared {
    doc_id: String,
    /// How many changes were pushed, accepted or not.
    count: usize,
    first_hash: String,
    /// The accepted changes: index in the push, and hash.
    accepted: Vec<(usize, String)>,
    /// The server's copy with the accepted changes, and the record it reads as.
    doc: RecordDoc,
    record: Option<Record>,
    outcome: Result<usize, (usize, String)>,
    /// The routing entry, staged in `doc` and `record` (none: the report is not routed).
    route: Option<TimelineEntry>,
}

impl Prepared {
    /// Whether none of the accepted changes after the first is stored already (the first was
    /// checked with the record). Such a change could only be a record's root change pushed again.
    fn later_unknown(&self, tx: &dyn Storage) -> AppResult<bool> {
        for (_, hash) in self.accepted.iter().filter(|(i, _)| *i > 0) {
            if tx.change_known(hash)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Judges the changes of a record that looks new — its first change depends on nothing — as
/// [`ingest`] would if the server had no copy of it, without the database, and stages its
/// routing entry by `routing`: the part of a round that costs the most runs beside the writer,
/// in the request's own task. `None` when the first change is no new record's or judging needs
/// the database (the writer then does it all).
pub fn prepare_new(
    server_actor: &ActorId,
    now_ms: i64,
    routing: &RoutingRules,
    catalog: &Catalog,
    person: &Person,
    doc_id: &str,
    changes: &[impl AsRef<[u8]>],
) -> Option<Prepared> {
    // Most pushes change a record the server has: told from the first change's framing, they
    // are left to the writer without being decoded here as well.
    if gridlink_core::chunk::depends_on_nothing(changes.first()?.as_ref()) != Some(true) {
        return None;
    }
    let mut decoded = changes.iter().map(|b| gridlink_core::chunk::decode_change(b.as_ref()));
    let first = decoded.next()??;
    if !first.deps().is_empty() {
        return None;
    }
    let first_hash = first.hash().to_string();
    let mut doc = RecordDoc::empty(server_actor);
    let mut record: Option<Record> = None;
    let mut accepted: Vec<(usize, String)> = Vec::new();
    let mut outcome = Ok(changes.len());
    for (i, change) in std::iter::once(Some(first)).chain(decoded).enumerate() {
        let Some(change) = change else {
            outcome = Err((i, INVALID_CHANGE.to_owned()));
            break;
        };
        let hash = change.hash().to_string();
        if accepted.iter().any(|(_, h)| *h == hash) {
            continue; // pushed twice: stored once
        }
        match judge(server_actor, now_ms, false, person, doc_id, &mut doc, record.as_ref(), change, &mut |_, _| Ok(false)).ok()? {
            Ok((next, after)) => {
                doc = next;
                record = Some(after);
                accepted.push((i, hash));
            }
            Err(reason) => {
                outcome = Err((i, reason));
                break;
            }
        }
    }
    let route = match record.as_mut() {
        Some(record) => stage_route(&mut doc, record, routing, catalog, now_ms).ok()?,
        None => None,
    };
    Some(Prepared { doc_id: doc_id.to_owned(), count: changes.len(), first_hash, accepted, doc, record, outcome, route })
}

/// Work that counted before this push and no longer does — a department signed and handled a
/// record, then an earlier offline dispatch elsewhere arrived and the fold marked its entries as
/// conflicts — is not left to vanish: a notice (督办/通知 list) goes to the unit whose work was
/// voided and to the unit that answers for the record, saying what was voided and who holds it now.
fn notify_voided(tx: &dyn Storage, before: &Record, after: &Record, ctx: &IngestCtx<'_>) -> AppResult<()> {
    // Most pushes void nothing: fold the earlier state only when the new one has conflicts.
    let now = after.fold();
    if now.conflicts() == 0 {
        return Ok(());
    }
    let was = before.fold();
    let counted: HashSet<&str> = was.entries.iter().filter(|e| e.conflict.is_none()).map(|e| e.entry.id.as_str()).collect();
    let voided: Vec<&TimelineEntry> = now
        .entries
        .iter()
        .filter(|e| e.conflict.is_some() && counted.contains(e.entry.id.as_str()) && e.entry.role != Role::System)
        .map(|e| &e.entry)
        .collect();
    if voided.is_empty() {
        return Ok(());
    }
    let unit_name = |u: &UnitCode| -> AppResult<String> { Ok(tx.unit_name(u.as_str())?.unwrap_or_else(|| u.to_string())) };
    let holder = now.state.holder.as_ref().map(&unit_name).transpose()?.unwrap_or_default();
    // One notice per unit whose work was voided, to it and to the unit answering for the record.
    let mut by_unit: Vec<(&UnitCode, Vec<&TimelineEntry>)> = Vec::new();
    for e in voided {
        match by_unit.iter_mut().find(|(u, _)| *u == &e.unit) {
            Some((_, list)) => list.push(e),
            None => by_unit.push((&e.unit, vec![e])),
        }
    }
    for (unit, entries) in by_unit {
        let what: Vec<String> = entries.iter().map(|e| format!("{}的“{}”", e.actor_name, e.action.kind())).collect();
        let text = format!(
            "{}「{}」:{}({})因并发派遣或操作未生效,案件已转{}",
            after.display_no(),
            after.title(),
            what.join("、"),
            unit_name(unit)?,
            holder
        );
        let mut to: Vec<&UnitCode> = vec![unit];
        to.extend(now.state.owner.as_ref().filter(|o| *o != unit));
        for u in to {
            tx.add_notice(&after.id, u.as_str(), ctx.now_ms, &text)?;
        }
    }
    Ok(())
}

/// One pushed change: its bytes, decoded (None: not a change), and whether the log has it
/// already when that was read beforehand.
struct Decoded<'a> {
    change: Option<Change>,
    bytes: &'a [u8],
    known: Option<bool>,
}

#[allow(clippy::too_many_arguments)]
fn ingest_one(
    tx: &dyn Storage,
    ctx: &mut IngestCtx<'_>,
    device_id: &str,
    person: &Person,
    doc_id: &str,
    doc: &mut RecordDoc,
    before: Option<&Record>,
    pushed: Decoded<'_>,
) -> AppResult<Result<Option<Record>, String>> {
    let Decoded { change, bytes, known } = pushed;
    let Some(change) = change else {
        return Ok(Err(INVALID_CHANGE.into()));
    };
    let hash = change.hash().to_string();
    let known = match known {
        Some(known) => known,
        None => tx.change_known(&hash)?,
    };
    if known {
        return Ok(Ok(None));
    }
    let recovery = ctx.recovery;
    let name = before.map_or(doc_id, Record::display_no);
    let mut despite_rules = |seen: Option<&Record>, made: &Record| -> AppResult<bool> {
        if !(recovery && is_recoverable(tx, seen, made)?) {
            return Ok(false);
        }
        tx.audit(ctx.now_ms, &person.id, "recover_change", &format!("{name} {hash} 由设备 {device_id} 在恢复后带回"))?;
        Ok(true)
    };
    let (next, after) = match judge(ctx.server_actor, ctx.now_ms, recovery, person, doc_id, doc, before, change, &mut despite_rules)? {
        Ok(judged) => judged,
        Err(reason) => return Ok(Err(reason)),
    };
    insert_change(tx, doc_id, &hash, bytes, device_id, ctx.now_ms)?;
    *doc = next;
    Ok(Ok(Some(after)))
}

/// Why a pushed change that is not an Automerge change is refused.
const INVALID_CHANGE: &str = "变更数据无效";

/// Judges one change by the workflow's rules against the server's copy `doc` (whose record is
/// `before`, `None` for a new record): the copy with the change merged and the record it reads
/// as, or why the change is refused. A change against the rules is still taken when
/// `despite_rules` says so (a recovering device, [`is_recoverable`]).
#[allow(clippy::too_many_arguments)]
fn judge(
    server_actor: &ActorId,
    now_ms: i64,
    recovery: bool,
    person: &Person,
    doc_id: &str,
    doc: &mut RecordDoc,
    before: Option<&Record>,
    change: Change,
    despite_rules: &mut dyn FnMut(Option<&Record>, &Record) -> AppResult<bool>,
) -> AppResult<Result<(RecordDoc, Record), String>> {
    // Judge the change by what its author saw: the record at the change's dependencies.
    let author_before = match before {
        Some(_) => match doc.fork_at(change.deps()) {
            Ok(view) => Some(view),
            Err(_) => return Ok(Err("缺少前置变更,请重新同步".into())),
        },
        None => None,
    };
    let mut author_after = author_before.clone().unwrap_or_else(|| RecordDoc::empty(server_actor));
    if author_after.apply_changes(vec![change.clone()]).is_err() || !author_after.missing_deps(&[]).is_empty() {
        return Ok(Err("缺少前置变更,请重新同步".into()));
    }
    // Reasons name the record by its case number once it has one, else by its id.
    let name = before.map_or(doc_id, Record::display_no);
    let seen = author_before.as_ref().map(|d| d.read()).transpose();
    let (seen, made) = match (seen, author_after.read()) {
        (Ok(seen), Ok(made)) => (seen, made),
        (Err(gridlink_core::CoreError::MalformedRecord { reason, .. }), _)
        | (_, Err(gridlink_core::CoreError::MalformedRecord { reason, .. })) => {
            return Ok(Err(gridlink_core::CoreError::MalformedRecord { id: name.to_owned(), reason }.to_string()));
        }
        (Err(e), _) | (_, Err(e)) => return Ok(Err(e.to_string())),
    };
    if made.id != doc_id {
        return Ok(Err("记录编号与文档不符".into()));
    }
    if let Err(reason) = check_shape(author_before.as_ref(), &author_after, name) {
        return Ok(Err(reason));
    }
    if let Err(field) = gridlink_core::pii::check_masked(seen.as_ref().map(|r| &r.body), &made.body) {
        return Ok(Err(format!("记录 {name} 的{field}未遮蔽:身份证号和电话不得写入记录文档,须另行加密传送,请升级应用后重试")));
    }
    if let Err(reason) = validate_update_fn(seen.as_ref(), &made, person, now_ms)
        && !despite_rules(seen.as_ref(), &made)?
    {
        return Ok(Err(reason));
    }
    // Then merge it into the server's copy, which must keep its identity and history. A new
    // record's copy is the empty document the author's view started from: that view is it.
    let (next, after) = if before.is_none() {
        (author_after, made)
    } else {
        let mut next = doc.clone();
        if next.apply_changes(vec![change]).is_err() {
            return Ok(Err(INVALID_CHANGE.into()));
        }
        match next.read() {
            Ok(r) => (next, r),
            Err(e) => return Ok(Err(e.to_string())),
        }
    };
    if let Some(b) = before
        && let Err(reason) = check_invariants(b, &after)
        // The server's own change giving a case number, brought back from a device.
        && !(recovery && b.case_no.is_none() && check_invariants(b, &Record { case_no: None, ..after.clone() }).is_ok())
    {
        return Ok(Err(reason));
    }
    Ok(Ok((next, after)))
}

/// Whether a change some other device or the server made may come back from a recovering device:
/// a new record starts with a report or an intake, and every entry it adds names a person of
/// the town (or the server's automation). The rules of the workflow were checked when the
/// server first took it; what it may not do to a stored record is checked as for every change.
fn is_recoverable(tx: &dyn Storage, seen: Option<&Record>, made: &Record) -> AppResult<bool> {
    if seen.is_none() && !made.timeline.first().is_some_and(|e| matches!(e.action.kind(), ActionKind::Report | ActionKind::Receive)) {
        return Ok(false);
    }
    let known: HashSet<&str> = seen.map(|r| r.timeline.iter().map(|e| e.id.as_str()).collect()).unwrap_or_default();
    // The person, in whatever role or unit they hold now: the entry keeps the ones of its day.
    for e in made.timeline.iter().filter(|e| !known.contains(e.id.as_str())) {
        let ok = match e.role {
            Role::System => e.actor == "system",
            _ => tx.person_exists(&e.actor)?,
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A recovered record's case number: the town's counter moves past it, so no later record gets
/// it again; if a record made since the restore already has it, the recovered one gets a new
/// number (returned) and both units are told.
fn reclaim_case_no(tx: &dyn Storage, doc_id: &str, no: &str, ctx: &IngestCtx<'_>) -> AppResult<Option<String>> {
    let mut parts = no.rsplitn(3, '-');
    if let (Some(n), Some(year), Some(prefix)) = (parts.next(), parts.next(), parts.next())
        && let (Ok(n), Ok(year)) = (n.parse::<i64>(), year.parse::<i64>())
    {
        tx.case_number_taken(prefix, year, n)?;
    }
    let taken = tx.record_with_case_no(no, doc_id)?;
    if taken.is_none() {
        return Ok(None);
    }
    let prefix = prefix_of_case_no(no).unwrap_or(ctx.case_prefix);
    let fresh = next_case_no(tx, prefix, ctx.now_ms)?;
    tracing::warn!(doc = doc_id, old = no, new = %fresh, "recovered record's case number was given again after the restore: renumbered");
    tx.audit(ctx.now_ms, "system", "renumber_case", &format!("{no} → {fresh}(恢复后编号重复)"))?;
    Ok(Some(fresh))
}

/// Where a fresh report should go: only while it is still a report nobody has acted on, held
/// below the unit the routing rules name.
fn route_target(record: &Record, routing: &RoutingRules, catalog: &Catalog) -> Option<UnitCode> {
    let RecordBody::Incident(f) = &record.body else {
        return None;
    };
    let folded = record.fold();
    let s = &folded.state;
    let untouched = folded.entries.iter().filter(|e| e.conflict.is_none()).all(|e| e.entry.action.kind() == ActionKind::Report);
    if s.status != Some(Status::Reported) || !untouched {
        return None;
    }
    let target = routing.target(catalog, &f.category, record.location()).ok()?;
    s.holder.as_ref().is_some_and(|h| target.strictly_contains(h)).then_some(target)
}

/// Routing for a fresh report, by the rules in force: the server's entry, staged in `doc` and
/// `record` for [`RecordDoc::server_update`] to commit with the case number.
fn stage_route(
    doc: &mut RecordDoc,
    record: &mut Record,
    routing: &RoutingRules,
    catalog: &Catalog,
    now_ms: i64,
) -> AppResult<Option<TimelineEntry>> {
    let Some(target) = route_target(record, routing, catalog) else {
        return Ok(None);
    };
    let note = format!("按分流规则转至{}", if target.as_str().len() == 12 { "村(社区)" } else { "镇综治中心" });
    let entry = system_entry(record, Action::Route { to_unit: target }, &note, now_ms)?;
    doc.stage_server_entry(record, &entry)?;
    Ok(Some(entry))
}

/// A timeline entry of the server's automation (系统), ordered after every entry it knows.
/// It acts for the record's town, or for the county while the county holds the record.
pub fn system_entry(record: &Record, action: Action, note: &str, now_ms: i64) -> AppResult<TimelineEntry> {
    let state = record.fold().state;
    let location = record.location();
    let unit = match &state.holder {
        Some(h) if h.is_county_level() => h.county(),
        _ => location.town_or_county(),
    };
    let entry = TimelineEntry {
        id: uuid::Uuid::now_v7().to_string(),
        at: next_at(record, now_ms),
        actor: "system".into(),
        actor_name: "系统".into(),
        role: Role::System,
        unit: UnitCode::parse(unit)?,
        action,
        note: note.to_owned(),
    };
    check(&state, record.fold_context(), &entry).map_err(|e| AppError::Conflict(e.to_string()))?;
    Ok(entry)
}

/// The time of a new entry made on the server: now, but after every entry the record has.
fn next_at(record: &Record, now_ms: i64) -> Hlc {
    match record.timeline.iter().map(|e| e.at).max() {
        Some(l) if l.wall_ms >= now_ms => Hlc { wall_ms: l.wall_ms, counter: l.counter + 1 },
        _ => Hlc { wall_ms: now_ms, counter: 0 },
    }
}

/// The Automerge actor of a web console session: derived from its device id, so every change
/// names the browser session it came from, as a phone's changes name the phone.
pub fn device_actor(device_id: &str) -> ActorId {
    match uuid::Uuid::parse_str(device_id) {
        Ok(u) => ActorId::from(u.as_bytes().to_vec()),
        Err(_) => ActorId::from(sha2::Sha256::digest(device_id.as_bytes())[..16].to_vec()),
    }
}

fn person_entry(person: &Person, action: Action, note: &str, at: Hlc) -> TimelineEntry {
    TimelineEntry {
        id: uuid::Uuid::now_v7().to_string(),
        at,
        actor: person.id.clone(),
        actor_name: person.name.clone(),
        role: person.role,
        unit: person.unit.clone(),
        action,
        note: note.trim().to_owned(),
    }
}

fn ingested(outcome: Result<usize, (usize, String)>) -> AppResult<()> {
    outcome.map(|_| ()).map_err(|(_, reason)| AppError::Conflict(reason))
}

/// Takes a workflow action as `person` from the web console (with evidence photos already
/// stored). The change is made the way that person's phone would make it and then goes through
/// [`ingest`], the same validation, case numbering and routing as a phone's push.
#[allow(clippy::too_many_arguments)]
pub fn act_as(
    tx: &dyn Storage,
    ctx: &mut IngestCtx<'_>,
    calendar: &WorkCalendar,
    device_id: &str,
    person: &Person,
    doc_id: &str,
    action: Action,
    note: &str,
    photos: &[String],
) -> AppResult<Record> {
    let actor = device_actor(device_id);
    let mut doc = load_doc(tx, doc_id, &actor)?.ok_or(AppError::NotFound)?;
    let record = doc.read()?;
    let folded = record.fold();
    if access(person, &scope_of(&record, &folded.state)) == Access::None {
        return Err(AppError::NotFound);
    }
    let action = complete_action(ctx.catalog, calendar, ctx.now_ms, &record, action)?;
    let entry = person_entry(person, action, note, next_at(&record, ctx.now_ms));
    check(&folded.state, record.fold_context(), &entry).map_err(|e| AppError::Conflict(e.to_string()))?;
    let mut changes = Vec::new();
    for sha in photos {
        doc.add_photo(sha, ctx.now_ms)?;
        changes.extend(doc.last_local_change().map(|c| c.raw_bytes().to_vec()));
    }
    doc.append(&entry)?;
    changes.extend(doc.last_local_change().map(|c| c.raw_bytes().to_vec()));
    ingested(ingest(tx, ctx, device_id, person, doc_id, &changes)?)?;
    load_doc(tx, doc_id, ctx.server_actor)?.ok_or(AppError::NotFound)?.read().map_err(AppError::from)
}

/// Creates a record as `person` from the web console (a station taking a service request),
/// through the same [`ingest`] path as a phone's new record. Returns its id.
pub fn create_as(
    tx: &dyn Storage,
    ctx: &mut IngestCtx<'_>,
    device_id: &str,
    person: &Person,
    body: RecordBody,
    action: Action,
) -> AppResult<String> {
    let now = ctx.now_ms;
    let id = uuid::Uuid::now_v7().to_string();
    let entry = person_entry(person, action, "", Hlc { wall_ms: now, counter: 0 });
    let provisional_no = format!("网页-{}", &id[id.len() - 6..]);
    let record = Record { id: id.clone(), provisional_no, case_no: None, created_at_ms: now, body, timeline: vec![entry] };
    check(&Default::default(), record.fold_context(), &record.timeline[0]).map_err(|e| AppError::Conflict(e.to_string()))?;
    let mut doc = RecordDoc::create(&device_actor(device_id), &record, now)?;
    let change = doc.last_local_change().ok_or_else(|| AppError::Internal("new record without a change".into()))?;
    ingested(ingest(tx, ctx, device_id, person, &id, &[change.raw_bytes().to_vec()])?)?;
    Ok(id)
}

/// Takes an action as the system on a stored record (deadline supervision, routing).
pub fn system_act(tx: &dyn Storage, ctx: &mut IngestCtx<'_>, doc_id: &str, action: Action, note: &str) -> AppResult<Record> {
    let mut doc = load_doc(tx, doc_id, ctx.server_actor)?.ok_or(AppError::NotFound)?;
    let record = doc.read()?;
    let entry = system_entry(&record, action, note, ctx.now_ms)?;
    doc.append(&entry)?;
    store_server_change(tx, doc_id, &mut doc, ctx.now_ms)?;
    let record = doc.read()?;
    write_index(tx, &record, &mut doc, ctx)?;
    Ok(record)
}

/// Stores the change the server itself just made to `doc`, in Automerge's plain encoding (it
/// travels inside a deflated sync body, like the phones' changes).
pub fn store_server_change(tx: &dyn Storage, doc_id: &str, doc: &mut RecordDoc, now_ms: i64) -> AppResult<()> {
    let change = doc.last_local_change().ok_or_else(|| AppError::Internal("server change missing".into()))?;
    insert_change(tx, doc_id, &change.hash().to_string(), change.raw_bytes(), SERVER_DEVICE, now_ms)
}

/// Stores one accepted change of a record, as received from `device_id`.
fn insert_change(tx: &dyn Storage, doc_id: &str, hash: &str, bytes: &[u8], device_id: &str, now_ms: i64) -> AppResult<()> {
    tx.log_change(doc_id, hash, bytes, device_id, now_ms)
}

/// A new record's case number (`GT-2026-000123`), from its town's counter: the server's prefix
/// for a town that runs alone; in a county (the town's unit hangs under the county) every town
/// counts on its own, under the prefix followed by the town's three digits
/// (`GT101-2026-000001`), so that case numbers stay per town, in order and without gaps. The
/// counter moves in the same transaction that stores the record.
fn new_case_no(tx: &dyn Storage, prefix: &str, record: &Record, now_ms: i64) -> AppResult<String> {
    let Some(town) = record.location().town() else {
        return next_case_no(tx, prefix, now_ms);
    };
    let year = chrono::Datelike::year(&local_time(now_ms));
    let (counted, n) = tx.next_town_case_number(town, prefix, &format!("{prefix}{}", &town[6..]), i64::from(year))?;
    Ok(format!("{counted}-{year}-{n:06}"))
}

/// The counter part of a case number (`GT101` of `GT101-2026-000001`).
fn prefix_of_case_no(no: &str) -> Option<&str> {
    no.rsplitn(3, '-').nth(2)
}

/// The next case number of a prefix's counter, per year, in order and without gaps.
pub fn next_case_no(tx: &dyn Storage, prefix: &str, now_ms: i64) -> AppResult<String> {
    let year = chrono::Datelike::year(&local_time(now_ms));
    let n = tx.next_case_number(prefix, i64::from(year))?;
    Ok(format!("{prefix}-{year}-{n:06}"))
}

/// Version of what [`write_index`] derives from a record (the clocks, the figures' facts). A
/// database indexed by an older version, or whose catalog was imported since, is re-indexed once
/// at start-up, in one transaction.
const INDEX_VERSION: &str = "2";

/// Re-derives every record's index row when the index is older than [`INDEX_VERSION`].
pub fn reindex_if_stale(state: &crate::AppState) -> AppResult<()> {
    let conn = state.db.writer();
    if conn.meta_get("index_version")?.as_deref() == Some(INDEX_VERSION) {
        return Ok(());
    }
    let tx = crate::storage::Tx::begin(&*conn)?;
    let ids = tx.record_ids()?;
    let routing = state.routing();
    let mut events = Vec::new();
    let mut ctx = state.ingest_ctx(&routing, state.now_ms(), &mut events);
    for id in &ids {
        if let Some(mut doc) = load_doc(&*tx, id, &state.server_actor)? {
            let record = doc.read()?;
            write_index(&*tx, &record, &mut doc, &mut ctx)?;
        }
    }
    tx.meta_set("index_version", INDEX_VERSION)?;
    tx.commit()?;
    if !ids.is_empty() {
        tracing::info!(records = ids.len(), "index rebuilt (clock per holder)");
    }
    Ok(())
}

/// Writes the record's index row and snapshot, and notes the event.
pub fn write_index(tx: &dyn Storage, record: &Record, doc: &mut RecordDoc, ctx: &mut IngestCtx<'_>) -> AppResult<()> {
    let folded = record.fold();
    let s = &folded.state;
    let (category, title, photos) = match &record.body {
        RecordBody::Incident(f) => (f.category.clone(), f.title.clone(), f.photos.clone()),
        RecordBody::ServiceRequest(f) => (f.item.clone(), f.item.clone(), Vec::new()),
    };
    let facts = RecordFacts::of(record, &folded, &ctx.catalog.center_limits, ctx.calendar);
    // The index's deadline is the due time of the clock running now (处置/核查/结案), so the
    // sweeper and the overdue lists follow whose turn it is.
    let due_ms = facts.clock.as_ref().map(|c| c.due_ms);
    let facts = serde_json::to_string(&facts).expect("serialisable");
    tx.put_record(&RecordRow {
        id: record.id.clone(),
        kind: record.kind().as_str().to_owned(),
        location: record.location().to_string(),
        holder: s.holder.as_ref().map(ToString::to_string),
        owner: s.owner.as_ref().map(ToString::to_string),
        reporter: s.reporter.clone(),
        status: s.status.map(|st| st.as_str().to_owned()),
        open: s.status.is_none_or(Status::is_open),
        category,
        title,
        case_no: record.case_no.clone(),
        deadline_ms: due_ms,
        created_ms: record.created_at_ms,
        updated_ms: s.last_at.map_or(record.created_at_ms, |h| h.wall_ms),
        conflicts: folded.conflicts() as i64,
        batch_id: s.batch_id.clone(),
        facts,
        // Sent as is to devices that take whole documents, inside the deflated sync body.
        snapshot: doc.save_uncompressed(),
    })?;
    for sha in photos {
        tx.add_photo_ref(&record.id, &sha)?;
    }
    ctx.events.push(ScopeEvent {
        doc_id: record.id.clone(),
        location: record.location().to_string(),
        holder: s.holder.as_ref().map(ToString::to_string),
        reporter: s.reporter.clone(),
    });
    Ok(())
}

/// Ids of the records `person` may see.
pub fn scope_ids(conn: &dyn Storage, person: &Person) -> AppResult<HashSet<String>> {
    conn.records_in_scope(person.unit.as_str(), &person.id)
}

/// Keeps a record's personal data sent by `person` (beside the document, never inside it). The
/// record must exist; `person` must have made it or need its personal data for their work
/// ([`gridlink_core::pii::needs_personal`]); the values must be valid and match the masked forms
/// the document shows. Returns why not, in Chinese, without the values; `Ok(None)` when the
/// record is not on the server yet (its changes come in a later round).
pub fn store_personal(
    tx: &dyn Storage,
    server_actor: &ActorId,
    person: &Person,
    doc_id: &str,
    data: &Personal,
    now_ms: i64,
) -> AppResult<Option<Result<(), String>>> {
    let Some(doc) = load_doc(tx, doc_id, server_actor)? else { return Ok(None) };
    let record = doc.read()?;
    let folded = record.fold();
    let made_it = record.timeline.first().is_some_and(|e| e.actor == person.id);
    let who = access(person, &scope_of(&record, &folded.state));
    if !made_it && !needs_personal(record.kind(), person.role, who) {
        return Ok(Some(Err(format!("无权提交记录 {} 的个人信息", record.display_no()))));
    }
    if let Err(e) = data.check_against(&record.body) {
        return Ok(Some(Err(format!("记录 {} 的个人信息无效:{e}", record.display_no()))));
    }
    let text = serde_json::to_string(data).expect("serialisable");
    tx.put_personal(doc_id, &text, now_ms, &person.id)?;
    Ok(Some(Ok(())))
}

/// Keeps the personal data of a record the server itself just made for `person` (the console, the
/// demo); nothing to keep is fine, a refusal is an error.
pub fn keep_personal(
    tx: &dyn Storage,
    state: &crate::app::AppState,
    person: &Person,
    doc_id: &str,
    data: &Personal,
    now_ms: i64,
) -> AppResult<()> {
    if data.is_empty() {
        return Ok(());
    }
    match store_personal(tx, &state.server_actor, person, doc_id, data, now_ms)? {
        Some(Ok(())) => Ok(()),
        Some(Err(reason)) => Err(AppError::BadRequest(reason)),
        None => Err(AppError::NotFound),
    }
}

/// The personal data of those of `ids` a person needs for their work (their access read from
/// the index, in the same query), by record; records the person does not need it for, or the
/// server has none of, are left out.
pub fn personal_for(tx: &dyn Storage, person: &Person, ids: &[&str]) -> AppResult<Vec<(String, Personal)>> {
    let mut out = Vec::new();
    for (data, kind, event) in tx.personals(ids)? {
        let kind = if kind == "incident" { RecordKind::Incident } else { RecordKind::ServiceRequest };
        if !needs_personal(kind, person.role, event.access_of(person)) {
            continue;
        }
        if let Ok(p) = serde_json::from_str(&data) {
            out.push((event.doc_id, p));
        }
    }
    Ok(out)
}

/// A record for an API reader, if `person` may see it.
pub fn read_for(conn: &dyn Storage, actor: &ActorId, id: &str, person: &Person) -> AppResult<(Record, RecordState, Access)> {
    let doc = load_doc(conn, id, actor)?.ok_or(AppError::NotFound)?;
    let record = doc.read()?;
    let state = record.fold().state;
    let who = access(person, &scope_of(&record, &state));
    if who == Access::None {
        // Same answer as for a record that does not exist: no probing of other units' ids.
        return Err(AppError::NotFound);
    }
    Ok((record, state, who))
}

#[cfg(test)]
mod tests {
    use gridlink_core::{Client, ClientOptions, IncidentEdit, NewIncident, Person};

    use super::*;

    /// The demo town, seeded, in its own directory.
    fn town(dir: &std::path::Path) -> crate::AppState {
        crate::demo::bench_town(dir, 0).unwrap().0
    }

    fn person(state: &crate::AppState, id: &str) -> Person {
        crate::auth::load_person(&*state.db.reader(), id).unwrap().expect("a demo person").0
    }

    /// One round's ingest, in the writer's transaction.
    fn ingest_in(
        state: &crate::AppState,
        person: &Person,
        doc: &str,
        changes: &[Vec<u8>],
        prepared: Option<Prepared>,
    ) -> Result<usize, (usize, String)> {
        let conn = state.db.writer();
        let tx = crate::storage::Tx::begin(&*conn).unwrap();
        let routing = state.routing();
        let mut events = Vec::new();
        let mut ctx = state.ingest_ctx(&routing, state.now_ms(), &mut events);
        let outcome = ingest_prepared(&*tx, &mut ctx, "phone", person, doc, changes, prepared).unwrap();
        tx.commit().unwrap();
        outcome
    }

    /// What the server keeps of a record: its stored changes by who sent them, and its case number.
    fn kept(state: &crate::AppState, doc: &str) -> (Vec<String>, Option<String>) {
        let conn = state.db.reader();
        let mut from = Vec::new();
        conn.record_changes(doc, &mut |_, device| {
            from.push(device);
            Ok(())
        })
        .unwrap();
        (from, conn.case_no_of(doc).unwrap())
    }

    /// A new record's changes judged beside the writer ([`prepare_new`]) are taken as the writer
    /// would judge them itself: the same outcome, the same changes kept, the same case number —
    /// for a report and its edit, for a report its pusher may not make, and for a push repeated
    /// after the record was stored (the prepared judgement is then set aside).
    #[test]
    fn a_new_record_judged_beside_the_writer_is_taken_as_the_writer_would() {
        let (plain_dir, prepared_dir, phone_dir) =
            (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (plain, prepared) = (town(plain_dir.path()), town(prepared_dir.path()));
        let grid = person(&plain, "gt201-0101");
        let other = person(&plain, "gt202-0101");
        let mut phone = Client::open_with(phone_dir.path().join("phone.db"), ClientOptions::default()).unwrap();
        phone.set_identity(grid.clone()).unwrap();
        let id = phone.create_incident(NewIncident { category: "0501".into(), title: "垃圾堆放".into(), ..Default::default() }).unwrap();
        phone.edit_incident(&id, IncidentEdit { notes: Some("已拍照".into()), ..Default::default() }).unwrap();
        let changes: Vec<Vec<u8>> = phone.outbox(10).unwrap().into_iter().map(|e| e.bytes).collect();
        assert_eq!(changes.len(), 2);

        // Another grid's member may not report it: refused alike, nothing kept.
        let refused = ingest_in(&plain, &other, &id, &changes, None);
        assert!(refused.is_err(), "{refused:?}");
        let judged = prepare_new(&prepared.server_actor, prepared.now_ms(), &prepared.routing(), &prepared.catalog, &other, &id, &changes);
        assert_eq!(ingest_in(&prepared, &other, &id, &changes, judged), refused);
        assert_eq!(kept(&prepared, &id), (vec![], None));

        // Its reporter's push, twice over (the answer was lost): the second judgement was made
        // while the record was new, and is set aside.
        let first = prepare_new(&prepared.server_actor, prepared.now_ms(), &prepared.routing(), &prepared.catalog, &grid, &id, &changes);
        let again = prepare_new(&prepared.server_actor, prepared.now_ms(), &prepared.routing(), &prepared.catalog, &grid, &id, &changes);
        assert_eq!(ingest_in(&plain, &grid, &id, &changes, None), Ok(2));
        assert_eq!(ingest_in(&prepared, &grid, &id, &changes, first), Ok(2));
        assert_eq!(ingest_in(&prepared, &grid, &id, &changes, again), Ok(2));
        let kept_plain = kept(&plain, &id);
        assert_eq!(kept_plain.0, ["phone", "phone", SERVER_DEVICE]);
        assert!(kept_plain.1.is_some(), "{kept_plain:?}");
        assert_eq!(kept(&prepared, &id), kept_plain);
        let read = |s: &crate::AppState| load_doc(&*s.db.reader(), &id, &s.server_actor).unwrap().unwrap().read().unwrap();
        let (a, b) = (read(&plain), read(&prepared));
        assert_eq!((a.case_no, a.timeline.len(), a.body), (b.case_no, b.timeline.len(), b.body));

        // The next report gets the next number in both towns: the repeated push drew none.
        let next = phone.create_incident(NewIncident { category: "0501".into(), title: "占道经营".into(), ..Default::default() }).unwrap();
        let next_changes: Vec<Vec<u8>> = phone.outbox(10).unwrap().into_iter().filter(|e| e.doc_id == next).map(|e| e.bytes).collect();
        assert_eq!(ingest_in(&plain, &grid, &next, &next_changes, None), Ok(1));
        assert_eq!(ingest_in(&prepared, &grid, &next, &next_changes, None), Ok(1));
        assert_eq!(kept(&prepared, &next).1, kept(&plain, &next).1);

        // A change of a stored record is not judged beside the writer.
        let edit = phone.edit_incident(&id, IncidentEdit { title: Some("垃圾堆放点".into()), ..Default::default() });
        edit.unwrap();
        let last = phone.outbox(10).unwrap().pop().unwrap().bytes;
        assert!(
            prepare_new(&prepared.server_actor, prepared.now_ms(), &prepared.routing(), &prepared.catalog, &grid, &id, &[last]).is_none()
        );
    }
}
