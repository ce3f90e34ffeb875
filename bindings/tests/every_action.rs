//! Every action a record offers can be taken through the bindings' action input: a record walks
//! its life; at each step, for each role, every action in `allowed` is performed (on a copy of
//! that person's phone) and must succeed.

use std::sync::Arc;

use gridlink_core::{Client, ClientOptions, Clock, ManualClock, NewIncident, Person};
use gridlink_ffi::ActionInput;
use gridlink_tests::{DEPT_A, TOWN, org, person};

fn people() -> Vec<Person> {
    ["grid_a", "village", "center", "dept_a"].into_iter().map(person).collect()
}

fn phone(dir: &std::path::Path, name: &str, who: &Person, clock: &Arc<ManualClock>) -> Client {
    let opts = ClientOptions { clock: clock.clone(), ..Default::default() };
    let mut c = Client::open_with(dir.join(format!("{name}.db")), opts).unwrap();
    c.set_identity(who.clone()).unwrap();
    c.set_org_units(&org()).unwrap();
    c
}

/// An input for `kind` filled from what the action asks for, with values that fit the record now:
/// the generic form an app builds from `ActionOption::params`.
fn input(c: &Client, id: &str, kind: gridlink_core::ActionKind, now: i64) -> ActionInput {
    let mut input = ActionInput::of(kind.as_str());
    for p in kind.params() {
        match p.as_str() {
            "to_unit" => {
                let targets = c.action_targets(id, kind).unwrap();
                input.to_unit = Some(targets.first().unwrap_or_else(|| panic!("{kind} offered without a target")).code.to_string());
            }
            "until_ms" => input.until_ms = Some(now + 30 * 86_400_000),
            "satisfaction" => input.satisfaction = Some(5),
            "materials" => input.materials = vec!["居民身份证".into()],
            "batch_id" => input.batch_id = Some("B1".into()),
            "carrier" => input.carrier = Some("李军".into()),
            _ => {}
        }
    }
    input
}

fn to(kind: &str, unit: &str) -> ActionInput {
    ActionInput { to_unit: Some(unit.into()), ..ActionInput::of(kind) }
}

#[test]
fn every_allowed_action_can_be_taken_at_every_step_by_every_role() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_795_395_600_000)); // 2026-11-23 09:00 +08:00
    let people = people();
    let mut phones: Vec<Client> = people.iter().map(|p| phone(dir.path(), &p.id, p, &clock)).collect();
    let id = phones[0].create_incident(NewIncident { category: "0503".into(), title: "建筑垃圾".into(), ..Default::default() }).unwrap();
    // The path the record takes, by (phone, action).
    let path: Vec<(usize, ActionInput)> = vec![
        (1, to("escalate", TOWN)),
        (2, ActionInput::of("accept")),
        (2, to("dispatch", DEPT_A)),
        (3, ActionInput::of("sign")),
        (3, ActionInput { until_ms: Some(1_795_395_600_000 + 20 * 86_400_000), ..ActionInput::of("request_extension") }),
        (2, ActionInput::of("approve_extension")),
        (2, ActionInput::of("suspend")),
        (2, ActionInput::of("resume")),
        (3, ActionInput::of("handle")),
        (2, ActionInput::of("verify")),
        (2, ActionInput::of("close")),
    ];
    let mut performed = 0;
    let mut copies = 0;
    for step in 0..=path.len() {
        // Everyone holds the same record.
        let changes = phones.iter().map(|p| p.changes(&id).unwrap_or_default()).max_by_key(Vec::len).unwrap();
        for p in &mut phones {
            p.apply_remote(&id, &changes).unwrap();
        }
        for (who, p) in people.iter().zip(&phones) {
            for kind in p.get(&id).unwrap().allowed {
                clock.advance(60_000);
                copies += 1;
                let mut copy = phone(dir.path(), &format!("copy{copies}"), who, &clock);
                copy.apply_remote(&id, &p.changes(&id).unwrap()).unwrap();
                let action = input(&copy, &id, kind, clock.now_ms()).into_action().unwrap();
                copy.act(&id, action, "说明").unwrap_or_else(|e| panic!("step {step}, {}: {kind} offered but refused: {e}", who.id));
                performed += 1;
            }
        }
        if let Some((who, action)) = path.get(step) {
            clock.advance(60_000);
            let kind = action.clone().into_action().unwrap().kind();
            phones[*who].act(&id, action.clone().into_action().unwrap(), "说明").unwrap_or_else(|e| panic!("path {kind}: {e}"));
        }
    }
    assert!(performed >= 30, "{performed} actions performed");
}
