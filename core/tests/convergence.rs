//! Property: replicas that act offline and exchange changes in any order, duplicated or partial,
//! end with identical documents, identical folded state and identical conflict marks, and lose no
//! entry.
//!
//! Replay a failing case with `GRIDLINK_SEED=<seed> cargo test --test convergence replay`, or the
//! whole run with `PROPTEST_RNG_SEED=<n>`. `PROPTEST_CASES` sets the number of cases (default 16).

mod common;

use std::collections::BTreeSet;

use common::*;
use gridlink_core::{Action, ActionKind, CoreError, IncidentEdit, NewIncident, NewServiceRequest, RecordBody, ServiceMode};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};

fn people() -> Vec<gridlink_core::Person> {
    vec![grid_member(), station_staff(), center(), dept_a(), dept_b()]
}

/// A valid payload for an action the rules allow, or `None` when this actor has no valid target.
fn payload(kind: ActionKind, dev: &Device, view: &gridlink_core::RecordView, rng: &mut StdRng) -> Option<Action> {
    let me = dev.identity().unwrap();
    let mine = me.unit.as_str();
    let s = &view.folded.state;
    Some(match kind {
        ActionKind::SelfResolve => Action::SelfResolve { photos: vec![] },
        ActionKind::Accept => Action::Accept,
        ActionKind::Route => Action::Route { to_unit: unit(if rng.random_bool(0.5) { VILLAGE } else { TOWN }) },
        ActionKind::AcceptHandOff => Action::AcceptHandOff,
        ActionKind::Escalate => Action::Escalate { to_unit: unit(if mine.len() > 12 { &mine[..12] } else { &mine[..9] }) },
        ActionKind::Dispatch => {
            let targets: Vec<_> = [DEPT_A, DEPT_B, VILLAGE, GRID].into_iter().filter(|t| me.unit.strictly_contains(&unit(t))).collect();
            Action::Dispatch { to_unit: unit(targets.choose(rng)?), deadline_ms: None }
        }
        ActionKind::Sign => Action::Sign,
        ActionKind::Return => Action::Return,
        ActionKind::RequestExtension => {
            Action::RequestExtension { until_ms: s.deadline_ms.unwrap_or(dev.now_ms()) + rng.random_range(1..5) * 86_400_000 }
        }
        ActionKind::ApproveExtension => Action::ApproveExtension,
        ActionKind::DenyExtension => Action::DenyExtension,
        ActionKind::Handle => Action::Handle { photos: vec![] },
        ActionKind::Verify => Action::Verify,
        ActionKind::FailVerification => Action::FailVerification,
        ActionKind::Close => Action::Close,
        ActionKind::Evaluate => Action::Evaluate { satisfaction: rng.random_range(1..=5) },
        ActionKind::Suspend => Action::Suspend,
        ActionKind::Resume => Action::Resume,
        ActionKind::Supervise => Action::Supervise { overdue: false, to_units: vec![] },
        ActionKind::RequestMaterials => match &view.record.body {
            RecordBody::ServiceRequest(f) => Action::RequestMaterials { missing: vec![f.materials.keys().next()?.clone()] },
            RecordBody::Incident(_) => return None,
        },
        ActionKind::SupplyMaterials => Action::SupplyMaterials { supplied: s.missing_materials.clone() },
        ActionKind::Queue => Action::Queue,
        ActionKind::HandOff => Action::HandOff { to_unit: unit(DEPT_A), batch_id: "B-01".into(), carrier: "李军".into() },
        ActionKind::Complete => Action::Complete,
        ActionKind::Deliver => Action::Deliver,
        ActionKind::Archive => Action::Archive,
        ActionKind::FollowUp => Action::FollowUp { satisfaction: rng.random_range(1..=5) },
        ActionKind::Reject => Action::Reject,
        ActionKind::Withdraw => Action::Withdraw,
        ActionKind::Report | ActionKind::Receive => return None,
    })
}

/// Sends a random part of `from`'s changes of a random record to `to`, shuffled and duplicated.
fn gossip(devs: &mut [Device], a: usize, b: usize, rng: &mut StdRng, partial: bool) {
    let ids = devs[a].record_ids().unwrap();
    for id in ids {
        let mut changes = devs[a].changes(&id).unwrap();
        if partial && rng.random_bool(0.5) {
            let keep = rng.random_range(0..=changes.len());
            changes.shuffle(rng);
            changes.truncate(keep);
        }
        let dups: Vec<_> = changes.iter().filter(|_| rng.random_bool(0.3)).cloned().collect();
        changes.extend(dups);
        changes.shuffle(rng);
        let (src, dst) = if a < b {
            let (l, r) = devs.split_at_mut(b);
            (&l[a], &mut r[0])
        } else {
            let (l, r) = devs.split_at_mut(a);
            (&r[0], &mut l[b])
        };
        let _ = src;
        let before = dst.heads(&id).unwrap();
        match dst.apply_remote(&id, &changes) {
            Ok(()) => {}
            // A partial delivery may lack earlier changes: refused whole, nothing changed.
            Err(CoreError::MissingDependencies) => assert_eq!(dst.heads(&id).unwrap(), before),
            Err(CoreError::MalformedRecord { .. }) if before.is_none() => {} // only part of a new record arrived
            Err(e) => panic!("gossip failed: {e}"),
        }
    }
}

fn run(seed: u64, replicas: usize, steps: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let t0 = at(2026, 11, 23, 9);
    let mut devs: Vec<Device> = people().into_iter().take(replicas).map(|p| Device::new(p, t0)).collect();
    let mut created_entries = BTreeSet::new();

    // Records to work on: two reports from the grid, one errand at the station.
    for title in ["暴露垃圾", "路灯损坏"] {
        devs[0].create_incident(NewIncident { category: "0501".into(), title: title.into(), ..Default::default() }).unwrap();
    }
    devs[1]
        .create_service_request(NewServiceRequest {
            item: "FW004".into(),
            mode: ServiceMode::Errand,
            station: None,
            resident_name: "张桂兰".into(),
            resident_id_number: None,
            resident_phone: None,
            materials_received: vec![],
            description: "代办".into(),
        })
        .unwrap();
    full_sync(&mut devs, &mut rng);

    for _ in 0..steps {
        let d = rng.random_range(0..devs.len());
        devs[d].clock.advance(rng.random_range(1..600_000));
        match rng.random_range(0..10) {
            0..=5 => {
                let ids = devs[d].record_ids().unwrap();
                let Some(id) = ids.choose(&mut rng).cloned() else {
                    continue;
                };
                let view = devs[d].get(&id).unwrap();
                let Some(&kind) = view.allowed.choose(&mut rng) else {
                    continue;
                };
                let Some(action) = payload(kind, &devs[d], &view, &mut rng) else {
                    continue;
                };
                let after = devs[d].act(&id, action, "随机操作").unwrap_or_else(|e| panic!("allowed {kind:?} refused: {e}"));
                assert_eq!(after.folded.entries.len(), view.folded.entries.len() + 1);
                for e in &after.folded.entries {
                    created_entries.insert(e.entry.id.clone());
                }
            }
            6 => {
                let ids = devs[d].record_ids().unwrap();
                let Some(id) = ids.choose(&mut rng).cloned() else {
                    continue;
                };
                let view = devs[d].get(&id).unwrap();
                if let RecordBody::Incident(f) = &view.record.body {
                    let mut chars: Vec<char> = f.description.chars().collect();
                    let at = rng.random_range(0..=chars.len());
                    chars.insert(at, ['甲', '乙', '丙', '丁'][d % 4]);
                    let edit = IncidentEdit { description: Some(chars.into_iter().collect()), ..Default::default() };
                    // Only holders may edit; others are refused, which is fine here.
                    let _ = devs[d].edit_incident(&id, edit);
                }
            }
            _ => {
                let b = (d + rng.random_range(1..devs.len())) % devs.len();
                gossip(&mut devs, d, b, &mut rng, true);
            }
        }
    }
    full_sync(&mut devs, &mut rng);

    let ids = devs[0].record_ids().unwrap();
    let now = devs.iter().map(|d| d.now_ms()).max().unwrap();
    for d in &devs {
        d.clock.set(now);
        assert_eq!(d.record_ids().unwrap(), ids, "every replica holds every record");
        assert!(d.verify_integrity().unwrap().is_empty());
    }
    for id in &ids {
        let first = devs[0].get(id).unwrap();
        let heads = devs[0].heads(id).unwrap();
        for d in &devs[1..] {
            let v = d.get(id).unwrap();
            assert_eq!(d.heads(id).unwrap(), heads, "identical documents");
            assert_eq!(v.record, first.record, "identical records");
            assert_eq!(v.folded, first.folded, "identical state and conflict marks");
        }
        for e in &first.folded.entries {
            created_entries.remove(&e.entry.id);
        }
    }
    assert!(created_entries.is_empty(), "entries lost: {created_entries:?}");
    let lists: Vec<_> = devs.iter().map(|d| d.list(&Default::default()).unwrap()).collect();
    assert!(lists.windows(2).all(|w| w[0] == w[1]), "indexes agree");
}

fn full_sync(devs: &mut [Device], rng: &mut StdRng) {
    for _ in 0..2 {
        for a in 0..devs.len() {
            for b in 0..devs.len() {
                if a != b {
                    gossip(devs, a, b, rng, false);
                }
            }
        }
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(16)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn replicas_converge(seed in any::<u64>(), replicas in 3usize..=5, steps in 10usize..60) {
        run(seed, replicas, steps);
    }
}

/// Replays one simulation: `GRIDLINK_SEED=<seed> [GRIDLINK_REPLICAS=n] [GRIDLINK_STEPS=n]`.
/// Without the variables it runs a fixed seed, so it is also a plain regression test.
#[test]
fn replay() {
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    run(env("GRIDLINK_SEED", 20261123), env("GRIDLINK_REPLICAS", 5) as usize, env("GRIDLINK_STEPS", 120) as usize);
}

/// Found by `replicas_converge`: lists ordered only by time differed between replicas on ties.
#[test]
fn regression_list_order_is_identical_on_ties() {
    run(7613354257166156120, 3, 54);
}
