//! A clock per holder: the figures charge each unit only for the time a record was in its hands.
//! Every expectation below is computed by hand from the bundled calendar (2026-11-16 is a Monday;
//! 21–22 November is a weekend) and the bundled center limits (verify within 2 working days,
//! close within 1).

mod common;

use common::*;
use gridlink_core::clocks::{ClockStage, current_clock};
use gridlink_core::figures::{RecordFacts, compute};
use gridlink_core::record::IncidentFields;
use gridlink_core::{Action, Catalog, Hlc, Person, Record, RecordBody, TimelineEntry, WorkCalendar};

/// A record built from a script of (time, who, action).
fn record(id: &str, script: &[(i64, &Person, Action)]) -> Record {
    let timeline = script
        .iter()
        .enumerate()
        .map(|(i, (t, who, action))| TimelineEntry {
            id: format!("{id}-{i:02}"),
            at: Hlc { wall_ms: *t, counter: 0 },
            actor: who.id.clone(),
            actor_name: who.name.clone(),
            role: who.role,
            unit: who.unit.clone(),
            action: action.clone(),
            note: "说明".into(),
        })
        .collect();
    Record {
        id: id.into(),
        provisional_no: format!("临-{id}"),
        case_no: Some(format!("GT-2026-{id}")),
        created_at_ms: script[0].0,
        body: RecordBody::Incident(IncidentFields {
            category: "0503".into(),
            title: "建筑垃圾".into(),
            description: String::new(),
            grid: unit(GRID),
            address: String::new(),
            location: None,
            urgency: Default::default(),
            parties: vec![],
            photos: vec![],
            notes: String::new(),
            media_url: None,
        }),
        timeline,
    }
}

/// Reported, accepted and dispatched to department A on Monday 16th with the deadline at the
/// end of Thursday 19th, signed the same morning.
fn dispatched() -> Vec<(i64, Person, Action)> {
    vec![
        (at(2026, 11, 16, 8), grid_member(), Action::Report),
        (at(2026, 11, 16, 9), center(), Action::Accept),
        (at(2026, 11, 16, 10), center(), Action::Dispatch { to_unit: unit(DEPT_A), deadline_ms: Some(at(2026, 11, 20, 0)) }),
        (at(2026, 11, 16, 11), dept_a(), Action::Sign),
    ]
}

fn with(mut base: Vec<(i64, Person, Action)>, more: Vec<(i64, Person, Action)>) -> Record {
    base.extend(more);
    let id = format!("{:06}", base.len() * 1000 + base.last().map_or(0, |s| (s.0 / 3_600_000 % 1000) as usize));
    let script: Vec<(i64, &Person, Action)> = base.iter().map(|(t, p, a)| (*t, p, a.clone())).collect();
    record(&id, &script)
}

fn facts(r: &Record, catalog: &Catalog, cal: &WorkCalendar) -> RecordFacts {
    let folded = r.fold();
    assert_eq!(folded.conflicts(), 0, "the script is valid: {:?}", folded.entries);
    RecordFacts::of(r, &folded, &catalog.center_limits, cal)
}

#[test]
fn each_holder_is_charged_only_for_its_own_time() {
    let (catalog, cal) = (Catalog::bundled(), WorkCalendar::bundled());
    let limits = &catalog.center_limits;
    let names = |code: &str| code.to_owned();
    let period = (at(2026, 11, 1, 0), at(2026, 12, 1, 0));

    // A: the department hands back on Wednesday, well before its deadline; the center then
    // takes its time to verify.
    let handled = with(dispatched(), vec![(at(2026, 11, 18, 10), dept_a(), Action::Handle { photos: vec![] })]);
    let clock = current_clock(handled.kind(), &handled.fold().state, limits, &cal).unwrap();
    // Verification: 2 working days after Wednesday 18th = the end of Friday 20th, against the town.
    assert_eq!((clock.stage, clock.unit.as_str(), clock.due_ms), (ClockStage::Verification, TOWN, at(2026, 11, 21, 0)));
    // Friday 9:00: past the department's deadline, but the record waits for the center, in time.
    let f = compute(&[facts(&handled, &catalog, &cal)], &catalog, period.0, period.1, at(2026, 11, 20, 9), &names);
    assert_eq!(f.totals.overdue_now, 0);
    let dept = f.by_department.iter().find(|d| d.key == DEPT_A).unwrap();
    assert_eq!((dept.handled, dept.handled_on_time, dept.holding_now, dept.overdue_now), (1, 1, 1, 0));
    // Monday 23rd: the center's verification is overdue — charged to the town, not the department.
    let f = compute(&[facts(&handled, &catalog, &cal)], &catalog, period.0, period.1, at(2026, 11, 23, 9), &names);
    assert_eq!(f.totals.overdue_now, 1);
    assert_eq!(f.by_department.iter().find(|d| d.key == DEPT_A).unwrap().overdue_now, 0);
    let town = f.by_holder.iter().find(|h| h.key == TOWN).unwrap();
    assert_eq!((town.running, town.handling_overdue, town.verification_overdue, town.closing_overdue), (1, 0, 1, 0));
    assert!(f.by_holder.iter().all(|h| h.key == TOWN), "nothing runs against the department: {:?}", f.by_holder);

    // Verified late on Monday 23rd 10:00; the closing clock runs to the end of Tuesday 24th;
    // closed on Tuesday. Department on time (1/1), center verification late (0/1).
    let closed = with(
        dispatched(),
        vec![(at(2026, 11, 18, 10), dept_a(), Action::Handle { photos: vec![] }), (at(2026, 11, 23, 10), center(), Action::Verify)],
    );
    let clock = current_clock(closed.kind(), &closed.fold().state, limits, &cal).unwrap();
    assert_eq!((clock.stage, clock.unit.as_str(), clock.due_ms), (ClockStage::Closing, TOWN, at(2026, 11, 25, 0)));
    let f = compute(&[facts(&closed, &catalog, &cal)], &catalog, period.0, period.1, at(2026, 11, 25, 9), &names);
    assert_eq!(f.by_holder[0].closing_overdue, 1, "not closed by the end of Tuesday");
    let closed = with(
        dispatched(),
        vec![
            (at(2026, 11, 18, 10), dept_a(), Action::Handle { photos: vec![] }),
            (at(2026, 11, 23, 10), center(), Action::Verify),
            (at(2026, 11, 24, 9), center(), Action::Close),
        ],
    );
    let f = compute(&[facts(&closed, &catalog, &cal)], &catalog, period.0, period.1, at(2026, 11, 30, 9), &names);
    assert_eq!((f.totals.closed, f.totals.with_deadline, f.totals.on_time), (1, 1, 1));
    assert_eq!((f.totals.verified, f.totals.verified_on_time), (1, 0));
    assert_eq!(f.totals.overdue_now, 0);
    assert!(f.by_holder.is_empty());

    // B: handed back, then sent back by a failed verification. Handled Tuesday 17th 10:00 with
    // 2 days 14 hours left; the center fails it on Friday 20th 10:00 (three days later), so the
    // deadline moves by those three days to the end of Sunday 22nd.
    let returned = with(
        dispatched(),
        vec![
            (at(2026, 11, 17, 10), dept_a(), Action::Handle { photos: vec![] }),
            (at(2026, 11, 20, 10), center(), Action::FailVerification),
        ],
    );
    let clock = current_clock(returned.kind(), &returned.fold().state, limits, &cal).unwrap();
    assert_eq!((clock.stage, clock.unit.as_str(), clock.due_ms), (ClockStage::Handling, DEPT_A, at(2026, 11, 23, 0)));
    // Friday noon: under the old single clock the department was overdue since midnight.
    let f = compute(&[facts(&returned, &catalog, &cal)], &catalog, period.0, period.1, at(2026, 11, 20, 12), &names);
    assert_eq!(f.totals.overdue_now, 0);
    // The center's judgement came after its own due time (end of Thursday 19th): late.
    assert_eq!((f.totals.verified, f.totals.verified_on_time), (1, 0));
    // Monday 23rd 9:00 without a new result: now the department is overdue.
    let f = compute(&[facts(&returned, &catalog, &cal)], &catalog, period.0, period.1, at(2026, 11, 23, 9), &names);
    assert_eq!(f.by_department.iter().find(|d| d.key == DEPT_A).unwrap().overdue_now, 1);
    assert_eq!(f.by_holder.iter().find(|h| h.key == DEPT_A).unwrap().handling_overdue, 1);
    // Handled again on Saturday 21st, verified on Monday 23rd (due: end of Tuesday 24th), closed.
    let done = with(
        dispatched(),
        vec![
            (at(2026, 11, 17, 10), dept_a(), Action::Handle { photos: vec![] }),
            (at(2026, 11, 20, 10), center(), Action::FailVerification),
            (at(2026, 11, 21, 10), dept_a(), Action::Handle { photos: vec![] }),
            (at(2026, 11, 23, 9), center(), Action::Verify),
            (at(2026, 11, 23, 15), center(), Action::Close),
        ],
    );
    let f = compute(&[facts(&done, &catalog, &cal)], &catalog, period.0, period.1, at(2026, 11, 30, 9), &names);
    assert_eq!((f.totals.with_deadline, f.totals.on_time), (1, 1), "the second result came within the restored time");
    assert_eq!((f.totals.verified, f.totals.verified_on_time), (1, 1), "the last verification was in time");

    // C: returned (退回) on Wednesday: the department's clock stops; nothing runs while the
    // center decides what to do, and Friday finds nobody overdue.
    let back = with(dispatched(), vec![(at(2026, 11, 18, 10), dept_a(), Action::Return)]);
    assert_eq!(current_clock(back.kind(), &back.fold().state, limits, &cal), None);
    let f = compute(&[facts(&back, &catalog, &cal)], &catalog, period.0, period.1, at(2026, 11, 20, 9), &names);
    assert_eq!(f.totals.overdue_now, 0);
    assert!(f.by_department.iter().all(|d| d.holding_now == 0 && d.overdue_now == 0));

    // D: an extension granted moves the handling deadline; suspended records have no clock.
    let extended = with(
        dispatched(),
        vec![
            (at(2026, 11, 19, 10), dept_a(), Action::RequestExtension { until_ms: at(2026, 11, 25, 0) }),
            (at(2026, 11, 19, 11), center(), Action::ApproveExtension),
        ],
    );
    let clock = current_clock(extended.kind(), &extended.fold().state, limits, &cal).unwrap();
    assert_eq!((clock.stage, clock.due_ms), (ClockStage::Handling, at(2026, 11, 25, 0)));
    let suspended = with(dispatched(), vec![(at(2026, 11, 17, 9), center(), Action::Suspend)]);
    assert_eq!(current_clock(suspended.kind(), &suspended.fold().state, limits, &cal), None);

    // All together on Monday 23rd 9:00: A waits for the town (overdue), B for the department
    // (overdue), C and the suspended one for nobody, the extended one runs in time.
    let all: Vec<RecordFacts> = [&handled, &returned, &back, &extended, &suspended].iter().map(|r| facts(r, &catalog, &cal)).collect();
    let f = compute(&all, &catalog, period.0, period.1, at(2026, 11, 23, 9), &names);
    assert_eq!(f.totals.overdue_now, 2);
    let row = |k: &str| f.by_holder.iter().find(|h| h.key == k).map(|h| (h.running, h.overdue())).unwrap();
    assert_eq!(row(TOWN), (1, 1));
    assert_eq!(row(DEPT_A), (2, 1));
    let table = f.tables().into_iter().find(|t| t.title.contains("按责任单位")).expect("the per-holder table is exported");
    assert_eq!(table.headers, ["责任单位", "计时中", "处置超期", "核查超期", "结案超期", "超期合计"]);
    assert_eq!(table.rows.len(), 2);
}
