//! The deadline sweeper (督办): supervision notices for every running clock past its due time.

use gridlink_core::Action;
use gridlink_core::calendar::local_time;
use gridlink_core::clocks::current_clock;

use crate::app::AppState;
use crate::error::AppResult;
use crate::records::{load_doc, system_act};

/// Raises a supervision notice (督办) on every incident whose running clock passed its due time and
/// that has not been supervised for that due time yet, addressed to the unit the clock runs
/// against — the department for its handling, the center for its verification or closing — and
/// that unit's parent. Returns how many. Any node may run it, as often as it likes: a pass
/// supervises only what no earlier pass did.
pub fn sweep(state: &AppState) -> AppResult<usize> {
    let now = state.now_ms();
    let conn = state.db.writer();
    // What is due is read inside the transaction: on PostgreSQL it holds the town's write lock,
    // so with several nodes sweeping, each pass sees the supervisions of the one before and no
    // incident is supervised twice for one due time.
    let tx = crate::storage::Tx::begin(&*conn)?;
    let due = tx.overdue_incidents(now)?;
    let routing = state.routing();
    let mut events = Vec::new();
    let mut raised = 0;
    {
        let mut ctx = state.ingest_ctx(&routing, now, &mut events);
        // Each overdue incident is read once per due time: once found supervised (or supervised
        // here) it is marked, and later passes skip it without loading its document.
        for (id, index_due) in due {
            let Some(doc) = load_doc(&*tx, &id, &state.server_actor)? else {
                continue;
            };
            let record = doc.read()?;
            let folded = record.fold();
            let Some(clock) = current_clock(record.kind(), &folded.state, &state.catalog.center_limits, &state.calendar) else {
                continue;
            };
            if !clock.overdue(now) {
                continue;
            }
            let (deadline, holder) = (clock.due_ms, clock.unit);
            let already = folded.entries.iter().any(|e| {
                e.conflict.is_none() && matches!(e.entry.action, Action::Supervise { overdue: true, .. }) && e.entry.at.wall_ms >= deadline
            });
            if already {
                tx.mark_swept(&id, index_due)?;
                continue;
            }
            let mut to_units = vec![holder.clone()];
            to_units.extend(holder.parent());
            // What the county sent back down to a town: the county that answers for it is told too.
            if let Some(owner) = folded.state.owner.as_ref().filter(|o| o.is_county_level() && !to_units.contains(o)) {
                to_units.push(owner.clone());
            }
            let text = format!(
                "{}「{}」已超过{}期限({}),请尽快办理",
                record.display_no(),
                record.title(),
                clock.stage.label(),
                local_time(deadline - 1).format("%Y-%m-%d %H:%M")
            );
            system_act(&*tx, &mut ctx, &id, Action::Supervise { overdue: true, to_units: to_units.clone() }, &text)?;
            for u in &to_units {
                tx.add_notice(&id, u.as_str(), now, &text)?;
            }
            tx.mark_swept(&id, index_due)?;
            raised += 1;
        }
    }
    tx.commit()?;
    drop(conn);
    state.notify(events);
    Ok(raised)
}
