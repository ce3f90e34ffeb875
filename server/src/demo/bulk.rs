//! A large town for scale tests and benchmarks: thousands of incidents and errands in the demo
//! town, spread over its grids, stations and departments and over every stage of their lives.
//!
//! Unlike [`super::seed`]'s three weeks made by simulated phones, these records are made the way
//! the console makes them ([`create_as`], [`act_as`]): through the same validated ingest, but many
//! records to a transaction, so that 20,000 of them take seconds, not hours.

use gridlink_core::record::IncidentFields;
use gridlink_core::{Action, NewServiceRequest, Person, RecordBody, ServiceMode, UnitKind, service_request_body};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use super::histories::{PATHS, Path, REPORTS, Who, incident_steps};
use super::town::{TOWN, code, id_number, name_of, org, person_of};
use crate::app::AppState;
use crate::error::{AppError, AppResult};
use crate::records::{act_as, create_as, keep_personal};

/// Records made per write transaction.
const PER_TRANSACTION: usize = 250;

/// The demo town with `records` records for benchmarks, in `dir` (`town-<records>.db`, photos in
/// `dir/data`): made with [`bulk`] on the first call (seed 17, minutes for large towns) and
/// opened as it is after. Returns the server state and whether it was made now.
pub fn bench_town(dir: &std::path::Path, records: usize) -> AppResult<(AppState, bool)> {
    std::fs::create_dir_all(dir).map_err(|e| AppError::Internal(format!("{}: {e}", dir.display())))?;
    let db = dir.join(format!("town-{records}.db"));
    let fresh = !db.exists();
    let settings = crate::Settings {
        case_prefix: "GT".into(),
        token_days: 90,
        max_attachment_bytes: 10 << 20,
        data_dir: dir.join("data"),
        secure_cookies: false,
        sweep_interval_ms: 60_000,
    };
    let state = crate::build_state(settings, &db, std::sync::Arc::new(gridlink_core::SystemClock))?;
    if fresh {
        bulk(&state, records, 17)?;
    }
    Ok((state, fresh))
}

/// Adds `records` records to the demo town (seeded first if the database is empty), about three
/// in four of them incidents, their times spread over the last 60 days before now. The same
/// `seed` gives the same town. Returns the number of records made.
pub fn bulk(state: &AppState, records: usize, seed: u64) -> AppResult<usize> {
    super::seed(state)?;
    let catalog = state.catalog.clone();
    let (units, people) = org(&catalog);
    let person = |id: &str| -> AppResult<Person> {
        people.iter().find(|p| p.id == id).map(person_of).ok_or_else(|| AppError::Internal(format!("no demo person {id}")))
    };
    let grids: Vec<_> = units.iter().filter(|u| u.kind == UnitKind::Grid).collect();
    let dept_of = |key: &str| units.iter().find(|u| u.department_key.as_deref() == Some(key)).map(|u| u.code.clone());
    // Every path as often as the demo has it.
    let paths: Vec<Path> = PATHS.iter().flat_map(|(p, n)| std::iter::repeat_n(*p, *n)).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let now = state.now_ms();
    let start = now - 60 * 86_400_000;
    let step_ms = (60 * 86_400_000 / records.max(1) as i64).max(1);
    let routing = state.routing();
    let mut made = 0;
    while made < records {
        let conn = state.db.writer();
        let tx = crate::storage::Tx::begin(&*conn)?;
        let mut events = Vec::new();
        for _ in 0..PER_TRANSACTION.min(records - made) {
            let at = start + made as i64 * step_ms;
            let mut ctx = state.ingest_ctx(&routing, at, &mut events);
            let grid = grids.choose(&mut rng).expect("the demo has grids");
            let village = &grid.code.as_str()[..12];
            let vnum = &village[9..];
            let station = person(&format!("gt{vnum}-zhan"))?;
            if rng.random_bool(0.25) {
                // An errand at the village station: taken, or queued for the next batch, or done on the spot.
                let immediate = rng.random_bool(0.3);
                let item = if immediate { "FW003" } else { ["FW004", "FW006", "FW007", "FW009"][made % 4] };
                let materials = catalog.service_item(item).map_err(AppError::from)?.materials.clone();
                let new = NewServiceRequest {
                    item: item.into(),
                    mode: if immediate { ServiceMode::Immediate } else { ServiceMode::Errand },
                    station: Some(code(village)),
                    resident_name: name_of(made),
                    resident_id_number: Some(id_number(&mut rng)),
                    resident_phone: Some(format!("13{:09}", rng.random_range(0..1_000_000_000u32))),
                    materials_received: materials,
                    description: String::new(),
                };
                let (body, action, personal) =
                    service_request_body(&catalog, &state.calendar, &station.unit, new, at).map_err(AppError::from)?;
                let id = create_as(&*tx, &mut ctx, "bulk-station", &station, body, action)?;
                keep_personal(&*tx, state, &station, &id, &personal, at)?;
                let steps: &[Action] = match (immediate, rng.random_range(0..3)) {
                    (true, _) => &[Action::Complete, Action::Deliver],
                    (false, 0) => &[Action::Queue],
                    _ => &[],
                };
                for a in steps {
                    act_as(&*tx, &mut ctx, &state.calendar, "bulk-station", &station, &id, a.clone(), "", &[])?;
                }
            } else {
                let path = *paths.choose(&mut rng).expect("paths");
                let (cat, title, desc) = REPORTS[made % REPORTS.len()];
                let member = person(&format!("gt{vnum}-{}{}", &grid.code.as_str()[13..15], &grid.code.as_str()[16..18]))?;
                let dept_key = catalog.category(cat).map(|c| c.department.clone()).unwrap_or_default();
                let body = RecordBody::Incident(IncidentFields {
                    media_url: None,
                    category: cat.into(),
                    title: title.into(),
                    description: desc.into(),
                    grid: grid.code.clone(),
                    address: String::new(),
                    location: None,
                    urgency: Default::default(),
                    parties: Vec::new(),
                    photos: Vec::new(),
                    notes: String::new(),
                });
                let id = create_as(&*tx, &mut ctx, "bulk-grid", &member, body, Action::Report)?;
                let mut first_escalation = true;
                for (who, action, note) in incident_steps(path) {
                    let actor = match who {
                        Who::Grid => member.clone(),
                        Who::Village => station.clone(),
                        Who::Center => person("zongzhi")?,
                        Who::Dept => person(&dept_key)?,
                    };
                    let action = match action {
                        Action::Escalate { .. } if first_escalation && who == Who::Grid => {
                            first_escalation = false;
                            Action::Escalate { to_unit: code(village) }
                        }
                        Action::Dispatch { .. } if who == Who::Village => {
                            Action::Dispatch { to_unit: grid.code.clone(), deadline_ms: None }
                        }
                        Action::Dispatch { .. } => {
                            Action::Dispatch { to_unit: dept_of(&dept_key).unwrap_or_else(|| code(TOWN)), deadline_ms: None }
                        }
                        Action::RequestExtension { .. } => Action::RequestExtension { until_ms: at + 20 * 86_400_000 },
                        a => a,
                    };
                    let note = if note.is_empty() && matches!(action, Action::Escalate { .. }) { "需协调处理" } else { note };
                    // After routing some steps are no longer this person's to take: skipped, as the app would.
                    match act_as(&*tx, &mut ctx, &state.calendar, "bulk-person", &actor, &id, action, note, &[]) {
                        Ok(_) | Err(AppError::Conflict(_) | AppError::NotFound) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            made += 1;
        }
        tx.commit()?;
    }
    Ok(made)
}
