//! The demo town 广通镇: villages, groups, grids, departments, staff, and three weeks of incidents
//! and errands in every state. Records are made by real devices (the core `Client`) and enter the
//! server through the same validated ingest path a sync uses.

mod bulk;
mod county;
mod devices;
mod histories;
mod town;

use std::fmt::Write as _;

use gridlink_core::{Action, Catalog, NewIncident, NewServiceRequest, OrgUnit, ServiceMode, UnitCode, UnitKind};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

pub use bulk::{bench_town, bulk};
use devices::Devices;
use histories::{PATHS, Path, REPORTS, Who, incident_steps};
use town::{TOWN, VILLAGES, code, id_number, name_of, org, point_in_grid};

use crate::app::AppState;
use crate::error::{AppError, AppResult};
use crate::import::{insert_people, insert_units};
use crate::storage::RecordFilter;

/// Password of every demo account.
pub const DEMO_PASSWORD: &str = "gridlink2026";

/// The demo accounts, for the start-up banner.
#[derive(Debug, Clone)]
pub struct DemoLogins {
    /// (role, user name, name, unit name)
    pub rows: Vec<(String, String, String, String)>,
    pub incidents: usize,
    pub service_requests: usize,
    /// The demo county (禄丰市 with two towns) rather than the town alone.
    pub county: bool,
}

impl DemoLogins {
    /// What `gridlink-server demo` prints.
    pub fn banner(&self, addr: std::net::SocketAddr) -> String {
        let mut s = String::new();
        let place = if self.county { "县「禄丰市」(广通镇、勤丰镇)" } else { "镇「广通镇」" };
        let _ = writeln!(s, "网格通演示{place}已就绪:{} 件事件,{} 件便民服务", self.incidents, self.service_requests);
        let _ = writeln!(s, "网页控制台:http://{addr}/console/   (用下列账号登录)");
        let _ = writeln!(s, "服务器地址:http://{addr}/   健康检查:http://{addr}/healthz   同步接口:http://{addr}/api/v1/");
        let _ = writeln!(s, "演示账号(密码均为 {DEMO_PASSWORD}):");
        for (role, user, name, unit) in &self.rows {
            let _ = writeln!(s, "  {role:<10}  {user:<14}  {name:<4}  {unit}");
        }
        s.push_str("按 Ctrl+C 停止。");
        s
    }
}

/// Seeds the demo town into an empty database (an already seeded one is left as it is).
pub fn seed(state: &AppState) -> AppResult<DemoLogins> {
    seed_with(state, false)
}

/// Seeds the demo county: the county center of 禄丰市 above 广通镇 (seeded as [`seed`] does) and
/// a second town, 勤丰镇, with records that went up to the county.
pub fn seed_county(state: &AppState) -> AppResult<DemoLogins> {
    seed_with(state, true)
}

fn seed_with(state: &AppState, in_county: bool) -> AppResult<DemoLogins> {
    let catalog = Catalog::bundled();
    let (mut units, mut people) = org(&catalog);
    if in_county {
        let (county_units, county_people) = county::org();
        for u in units.iter_mut().filter(|u| u.kind == UnitKind::Town) {
            u.parent = Some(code(county::COUNTY));
        }
        units.splice(0..0, county_units);
        people.extend(county_people);
    }
    let seeded = state.db.reader().people_count("")?;
    let now = state.now_ms();
    if seeded == 0 {
        let conn = state.db.writer();
        insert_units(&*conn, &units).map_err(AppError::Internal)?;
        insert_people(&*conn, &people, now).map_err(AppError::Internal)?;
        for g in units.iter().filter(|u| u.kind == UnitKind::Grid) {
            let corners = county::corners(&g.code);
            let text = serde_json::to_string(&corners).expect("serialisable");
            conn.set_boundary(g.code.as_str(), Some(&text))?;
        }
    }
    let unit_name = |c: &UnitCode| units.iter().find(|u| &u.code == c).map(|u| u.name.clone()).unwrap_or_default();
    let pick = |id: &str| people.iter().find(|p| p.id == id).expect("demo person");
    let mut rows = Vec::new();
    let town_logins =
        ["zongzhi", "zhenzhang", "zhifa", "huanwei", "bianmin", "gt201-zhan", "gt201-shuji", "gt201-0101", "gt202-0101", "admin"];
    let county_logins: &[&str] = if in_county { &county::LOGINS } else { &[] };
    for id in town_logins.iter().chain(county_logins) {
        let p = pick(id);
        rows.push((p.role.label().to_owned(), p.id.clone(), p.name.clone(), unit_name(&p.unit)));
    }
    let scope = if in_county { county::COUNTY } else { TOWN };
    let count = |kind: &str| -> AppResult<usize> {
        let filter = RecordFilter { kind: Some(kind), ..RecordFilter::ALL };
        // Everything of the town: counted in the scope of the town itself.
        Ok(state.db.reader().count_records(&filter, scope, "")? as usize)
    };
    if seeded > 0 {
        return Ok(DemoLogins { rows, incidents: count("incident")?, service_requests: count("service_request")?, county: in_county });
    }

    let mut rng = StdRng::seed_from_u64(20261123);
    let mut dev = Devices::new(state, &people, now)?;
    // 广通镇's grids (the county's second town has its own records, made by `county::records`).
    let grids: Vec<&OrgUnit> = units.iter().filter(|u| u.kind == UnitKind::Grid && u.code.town() == Some(TOWN)).collect();
    let dept_unit = |key: &str| units.iter().find(|u| u.department_key.as_deref() == Some(key)).map(|u| u.code.clone());

    // Every step of every record, then run in time order so each device's clock only moves forward.
    enum Step {
        Report(usize, bool, NewIncident),
        Receive(usize, NewServiceRequest),
        Act(usize, Action, String),
    }
    let mut steps: Vec<(i64, String, Step)> = Vec::new();
    let start = now - 21 * 86_400_000;
    let mut n = 0;
    for (path, times) in PATHS {
        for _ in 0..times {
            let grid = grids.choose(&mut rng).expect("grids");
            // What the village settles itself must be a village-level category.
            let village_only = matches!(path, Path::VillageClosed | Path::SelfResolved);
            let fits = |c: &str| !village_only || catalog.category(c).is_ok_and(|c| c.level == gridlink_core::HandlingLevel::Village);
            let (cat, title, desc) =
                REPORTS.iter().cycle().skip(n).find(|(c, _, _)| fits(c)).copied().expect("village-level reports exist");
            let village = &grid.code.as_str()[..12];
            let vnum = &village[9..];
            let member = format!("gt{vnum}-{}{}", &grid.code.as_str()[13..15], &grid.code.as_str()[16..18]);
            let station = format!("gt{vnum}-zhan");
            let dept_key = catalog.category(cat).map(|c| c.department.clone()).unwrap_or_default();
            let dept = dept_key.clone();
            let created = start + (n as i64) * (19 * 86_400_000) / 50 + rng.random_range(0..6 * 3_600_000);
            let plan = incident_steps(path);
            let gap = ((now - 1_800_000 - created) / (plan.len() as i64 + 1)).min(18 * 3_600_000);
            steps.push((
                created,
                member.clone(),
                Step::Report(
                    n,
                    matches!(path, Path::SelfResolved),
                    NewIncident {
                        category: cat.into(),
                        title: title.into(),
                        description: desc.into(),
                        grid: Some(grid.code.clone()),
                        location: Some(point_in_grid(&grid.code, n)),
                        address: format!("{}{}", unit_name(&code(village)), ["村口", "老街", "小学旁", "集市", "河堤路"][n % 5]),
                        note: "巡查发现".into(),
                        ..Default::default()
                    },
                ),
            ));
            let mut first_escalation = true;
            for (k, (who, action, note)) in plan.into_iter().enumerate() {
                let at = created + gap * (k as i64 + 1) + rng.random_range(0..gap.max(2) / 2);
                let actor = match who {
                    Who::Grid => member.clone(),
                    Who::Village => station.clone(),
                    Who::Center => "zongzhi".to_owned(),
                    Who::Dept => dept.clone(),
                };
                let action = match action {
                    Action::Escalate { .. } if first_escalation && who == Who::Grid => {
                        first_escalation = false;
                        Action::Escalate { to_unit: code(village) }
                    }
                    Action::Dispatch { .. } if who == Who::Village => Action::Dispatch { to_unit: grid.code.clone(), deadline_ms: None },
                    Action::Dispatch { .. } => {
                        Action::Dispatch { to_unit: dept_unit(&dept_key).unwrap_or_else(|| code(TOWN)), deadline_ms: None }
                    }
                    a => a,
                };
                let note = if note.is_empty() && matches!(action, Action::Escalate { .. }) { "需村里协调处理" } else { note };
                steps.push((at, actor, Step::Act(n, action, note.to_owned())));
            }
            n += 1;
        }
    }
    let incidents = n;

    // Errands at the village stations.
    let errand_paths: [(&[&str], usize); 10] = [
        (&[], 3),
        (&["missing"], 2),
        (&["queue"], 2),
        (&["queue", "handoff"], 2),
        (&["queue", "handoff", "complete"], 2),
        (&["queue", "handoff", "complete", "deliver"], 2),
        (&["queue", "handoff", "complete", "deliver", "followup", "archive"], 2),
        (&["reject"], 1),
        (&["withdraw"], 1),
        (&["complete_here", "deliver", "followup"], 2),
    ];
    let bianmin = dept_unit("bianmin").unwrap_or_else(|| code(TOWN));
    let mut e = 0;
    for (path, times) in errand_paths {
        for _ in 0..times {
            let (v, _) = VILLAGES[e % VILLAGES.len()];
            let station = format!("gt{v}-zhan");
            let immediate = path.first() == Some(&"complete_here");
            let item = if immediate { "FW003" } else { ["FW004", "FW006", "FW007", "FW009", "FW016", "FW019"][e % 6] };
            let it = catalog.service_item(item).map_err(AppError::from)?;
            let created = start + (e as i64) * (19 * 86_400_000) / 22 + rng.random_range(0..4 * 3_600_000);
            let gap = ((now - 1_800_000 - created) / (path.len() as i64 + 1)).min(30 * 3_600_000);
            let have: Vec<String> = it
                .materials
                .iter()
                .take(it.materials.len().saturating_sub(usize::from(path.first() == Some(&"missing"))))
                .cloned()
                .collect();
            steps.push((
                created,
                station.clone(),
                Step::Receive(
                    incidents + e,
                    NewServiceRequest {
                        item: item.into(),
                        mode: if immediate { ServiceMode::Immediate } else { ServiceMode::Errand },
                        station: Some(code(&format!("{TOWN}{v}"))),
                        resident_name: name_of(100 + e * 3),
                        resident_id_number: Some(id_number(&mut rng)),
                        resident_phone: Some(format!("13{:09}", rng.random_range(0..1_000_000_000u32))),
                        materials_received: have,
                        description: "居民到便民服务站申请,由代办员代办".into(),
                    },
                ),
            ));
            for (k, stage) in path.iter().enumerate() {
                let at = created + gap * (k as i64 + 1);
                let (actor, action, note) = match *stage {
                    "missing" => (
                        station.clone(),
                        Action::RequestMaterials { missing: vec![it.materials.last().cloned().unwrap_or_default()] },
                        "请补交材料",
                    ),
                    "queue" => (station.clone(), Action::Queue, ""),
                    "handoff" => (
                        station.clone(),
                        Action::HandOff { to_unit: bianmin.clone(), batch_id: format!("GT{v}-{}", k + 1), carrier: "代办员".into() },
                        "",
                    ),
                    "complete" => ("bianmin".to_owned(), Action::Complete, "已审批通过"),
                    "complete_here" => (station.clone(), Action::Complete, "现场办结"),
                    "deliver" => (station.clone(), Action::Deliver, "已送达申请人"),
                    "followup" => (station.clone(), Action::FollowUp { satisfaction: 5 }, "电话回访,群众满意"),
                    "archive" => (station.clone(), Action::Archive, ""),
                    "reject" => (station.clone(), Action::Reject, "不符合申请条件"),
                    _ => (station.clone(), Action::Withdraw, "申请人主动撤回"),
                };
                steps.push((at, actor, Step::Act(incidents + e, action, note.to_owned())));
            }
            e += 1;
        }
    }
    steps.sort_by_key(|(t, _, _)| *t);
    let mut ids: Vec<Option<String>> = vec![None; incidents + e];
    for (at, actor, step) in steps {
        dev.clock.set(at);
        let id = match step {
            Step::Report(i, self_resolved, new) => {
                let client = dev.client(&actor)?;
                let id = client.create_incident(new)?;
                if self_resolved {
                    client.act(&id, Action::SelfResolve { photos: vec![] }, "已现场劝导并处理完毕")?;
                }
                ids[i] = Some(id.clone());
                id
            }
            Step::Receive(i, new) => {
                let id = dev.client(&actor)?.create_service_request(new)?;
                ids[i] = Some(id.clone());
                id
            }
            Step::Act(i, action, note) => {
                let id = ids[i].clone().ok_or_else(|| AppError::Internal("demo step before its record".into()))?;
                dev.bring(&actor, &id)?;
                let client = dev.client(&actor)?;
                let action = match action {
                    Action::RequestExtension { .. } => {
                        let deadline = client.get(&id)?.folded.state.deadline_ms.unwrap_or(at);
                        Action::RequestExtension { until_ms: deadline + 5 * 86_400_000 }
                    }
                    a => a,
                };
                // After routing, some steps are no longer this person's to take: skip them, as the app would.
                if !client.get(&id)?.allowed.contains(&action.kind()) {
                    continue;
                }
                client.act(&id, action, &note)?;
                id
            }
        };
        dev.push(&actor, &id)?;
    }
    drop(dev);
    if in_county {
        county::records(state, &people)?;
    }
    Ok(DemoLogins { rows, incidents: count("incident")?, service_requests: count("service_request")?, county: in_county })
}
