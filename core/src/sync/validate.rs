//! What the server checks before a pushed change may enter its state.
//!
//! The phone already refused anything the rules forbid; this catches what a modified app or a
//! forged request could send. Concurrency is not a reason to refuse: an entry that is valid for
//! its author but conflicts with what others did meanwhile is accepted and marked by the fold.

use crate::hlc::Hlc;
use crate::org::{Access, Person, RecordScope, access};
use crate::record::{Record, RecordBody, RecordDoc};
use crate::workflow::{ActionKind, RecordState, TimelineEntry, check, role_fits_unit, rule};

/// Checks the document after a change (`after`) against the document before it (`before`, `None`
/// for a new record), for the authenticated `person`. Returns the reason (Chinese) on refusal.
///
/// Pass the document as the change's author saw it (the state at the change's dependencies), so
/// that work done offline is judged by what its author could know; [`check_invariants`] guards the
/// server's own copy.
pub fn validate_update(before: Option<&Record>, after: &Record, person: &Person, now_ms: i64) -> Result<(), String> {
    let Some(before) = before else {
        return validate_new(after, person, now_ms);
    };
    check_invariants(before, after)?;
    let state = before.fold().state;
    let who = access(person, &scope_of(before, &state));
    if who == Access::None {
        return Err("记录不在本人的办理范围内".into());
    }
    if fields_changed(before, after) && who != Access::Full {
        return Err("只读记录不能修改".into());
    }
    for e in after.timeline.iter().filter(|e| !before.timeline.iter().any(|o| o.id == e.id)) {
        check_author(e, person, now_ms)?;
        check_follows_seen(before, e)?;
        let r = rule(e.action.kind());
        if r.from.is_empty() {
            return Err(format!("“{}”只能在新建记录时使用", e.action.kind()));
        }
        if r.kind != after.kind() || !r.roles.contains(&e.role) {
            return Err(format!("{}无权执行“{}”", e.role, e.action.kind()));
        }
        if r.note_required && e.note.trim().is_empty() {
            return Err(format!("“{}”必须填写说明", e.action.kind()));
        }
    }
    Ok(())
}

/// A new entry must come after every entry its author had seen (`seen`: the record at the
/// change's dependencies): the hybrid clock of an honest device is past all of them, since it
/// observes every entry it receives. An entry dated before one of them would be folded before
/// work its author already knew of and void it (backdating). Entries made concurrently offline
/// are not in `seen` and stay allowed; the fold orders them. The phone checks its own entries
/// with this same function before it writes them.
pub fn check_follows_seen(seen: &Record, entry: &TimelineEntry) -> Result<(), String> {
    match seen.timeline.iter().max_by_key(|e| e.at) {
        Some(latest) if entry.at <= latest.at => Err(format!(
            "记录 {} 的新办理记录“{}”的时间不晚于作者已看到的“{}”(时间倒填),不予接受;请校准设备时间后重新同步",
            seen.display_no(),
            entry.action.kind(),
            latest.action.kind()
        )),
        _ => Ok(()),
    }
}

/// Refuses a change that writes a string field in the wrong Automerge form (free text as a plain
/// string, or a code as a text object; see [`crate::schema`]). Only problems the change brings
/// count: `before` is the document as the change's author saw it, `None` for a new record.
/// `name` is how the record is named in the reason (its case number or id).
pub fn check_shape(before: Option<&RecordDoc>, after: &RecordDoc, name: &str) -> Result<(), String> {
    let new = after.shape_problems();
    if new.is_empty() {
        return Ok(());
    }
    let old = before.map(RecordDoc::shape_problems).unwrap_or_default();
    match new.into_iter().find(|p| !old.contains(p)) {
        Some(problem) => Err(format!("记录 {name} 的结构不符合要求:{problem}")),
        None => Ok(()),
    }
}

/// What no change may do to a stored record: change its identity, place or case number, or alter
/// or remove an entry of its history.
pub fn check_invariants(before: &Record, after: &Record) -> Result<(), String> {
    if after.id != before.id
        || after.kind() != before.kind()
        || after.location() != before.location()
        || after.provisional_no != before.provisional_no
        || after.created_at_ms != before.created_at_ms
    {
        return Err("不允许修改记录的编号、类型或所属单位".into());
    }
    if after.case_no != before.case_no {
        return Err("案卷编号只能由服务器分配".into());
    }
    for old in &before.timeline {
        if after.timeline.iter().find(|e| e.id == old.id) != Some(old) {
            return Err("不允许修改或删除已有的办理记录".into());
        }
    }
    Ok(())
}

fn validate_new(after: &Record, person: &Person, now_ms: i64) -> Result<(), String> {
    if after.case_no.is_some() {
        return Err("案卷编号只能由服务器分配".into());
    }
    let [first] = after.timeline.as_slice() else {
        return Err("新记录必须且只能包含一条上报或受理记录".into());
    };
    check_author(first, person, now_ms)?;
    if !matches!(first.action.kind(), ActionKind::Report | ActionKind::Receive) {
        return Err("新记录的第一条必须是上报或受理".into());
    }
    check(&RecordState::default(), after.fold_context(), first).map_err(|e| e.to_string())
}

fn check_author(e: &TimelineEntry, person: &Person, now_ms: i64) -> Result<(), String> {
    if e.actor != person.id || e.role != person.role || e.unit != person.unit {
        return Err("办理记录的操作人与登录账号不符".into());
    }
    if !role_fits_unit(e.role, &e.unit) {
        return Err("角色与所在单位层级不符".into());
    }
    Hlc::check_sane(&e.at, now_ms).map_err(|e| e.to_string())
}

/// The scope facts of a record in a given state.
pub fn scope_of<'a>(record: &'a Record, state: &'a RecordState) -> RecordScope<'a> {
    RecordScope { location: record.location(), holder: state.holder.as_ref(), assignee: None, reporter: state.reporter.as_deref() }
}

fn fields_changed(a: &Record, b: &Record) -> bool {
    match (&a.body, &b.body) {
        (RecordBody::Incident(x), RecordBody::Incident(y)) => {
            // Photos may be added by anyone who may act (evidence with a field check).
            let (mut x, mut y) = (x.clone(), y.clone());
            x.photos.clear();
            y.photos.clear();
            x != y
        }
        (x, y) => x != y,
    }
}
