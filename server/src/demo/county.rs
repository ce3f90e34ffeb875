//! The demo county (`gridlink-server demo --county`): the county social-governance center of
//! 禄丰市 above 广通镇 and a second town, 勤丰镇, with two county departments (县直部门) and a
//! few weeks of records that went up to the county: dispatched to a county department, sent back
//! to a town, closed by the county, one overdue.

use gridlink_core::{Action, NewIncident, OrgUnit, Role, UnitKind};

use super::DEMO_PASSWORD;
use super::devices::Devices;
use super::town::{TOWN, code, grid_corners, lattice, name_of, point_in};
use crate::app::AppState;
use crate::error::{AppError, AppResult};
use crate::import::PersonRow;

pub(super) const COUNTY: &str = "532331";
const TOWN_B: &str = "532331102";
const COUNTY_DEPTS: [(&str, &str, &str); 2] = [("ZR", "县自然资源局", "xian-ziran"), ("JT", "县交通运输局", "xian-jiaotong")];
const VILLAGES_B: [(&str, &str); 3] = [("201", "勤丰社区"), ("202", "白土村"), ("203", "金山村")];

/// The county's own units and people, and the second town's; 广通镇 hangs under the county.
pub(super) fn org() -> (Vec<OrgUnit>, Vec<PersonRow>) {
    let unit = |c: &str, name: &str, kind, parent: Option<&str>| OrgUnit {
        code: code(c),
        name: name.into(),
        kind,
        parent: parent.map(code),
        department_key: None,
    };
    let mut units = vec![unit(COUNTY, "禄丰市", UnitKind::County, None), unit(TOWN_B, "勤丰镇", UnitKind::Town, Some(COUNTY))];
    let mut people = Vec::new();
    let mut person = |id: &str, role: Role, unit: &str| {
        let n = 300 + people.len();
        people.push(PersonRow { id: id.into(), name: name_of(n), role, unit: code(unit), password: DEMO_PASSWORD.into() });
    };
    person("xian-zhongxin", Role::CountyOperator, COUNTY);
    person("xian-lingdao", Role::CountyLeader, COUNTY);
    for (key, name, id) in COUNTY_DEPTS {
        let c = format!("{COUNTY}-{key}");
        units.push(unit(&c, name, UnitKind::Department, Some(COUNTY)));
        person(id, Role::DepartmentHandler, &c);
    }
    person("qf-zongzhi", Role::CenterOperator, TOWN_B);
    let dept = format!("{TOWN_B}-D01");
    units.push(unit(&dept, "勤丰镇综合行政执法中队", UnitKind::Department, Some(TOWN_B)));
    person("qf-zhifa", Role::DepartmentHandler, &dept);
    for (v, name) in VILLAGES_B {
        let vc = format!("{TOWN_B}{v}");
        units.push(unit(&vc, name, UnitKind::Village, Some(TOWN_B)));
        let gc = format!("{vc}-01");
        units.push(unit(&gc, &format!("{name}第1村民小组"), UnitKind::Group, Some(&vc)));
        let kc = format!("{gc}-01");
        units.push(unit(&kc, &format!("{name}1组1号网格"), UnitKind::Grid, Some(&gc)));
        person(&format!("qf{v}-0101"), Role::GridMember, &kc);
    }
    (units, people)
}

/// The map of the second town's grids: east of 广通镇's, on the same lattice.
pub(super) fn corners(code: &gridlink_core::UnitCode) -> Vec<[f64; 2]> {
    if code.town() == Some(TOWN) {
        return grid_corners(code);
    }
    let i = 10 + code.as_str()[9..12].parse::<usize>().unwrap_or(201).saturating_sub(201);
    vec![lattice(i, 0), lattice(i + 1, 0), lattice(i + 1, 1), lattice(i, 1)]
}

/// The county's demo accounts the banner shows.
pub(super) const LOGINS: [&str; 5] = ["xian-zhongxin", "xian-lingdao", "xian-ziran", "qf-zongzhi", "qf201-0101"];

/// How far a record that went up to the county is taken.
#[derive(Clone, Copy, PartialEq)]
enum Fate {
    /// Settled in its own town, never reaching the county.
    InTown,
    /// Closed by the county after its department handled it.
    ClosedByCounty,
    /// With a county department, past its deadline.
    OverdueAtCountyDept,
    /// Sent back down to the town, which is working on it.
    BackToTown,
    /// Waiting in the county center's inbox.
    AtCounty,
}

/// Records of both towns that show the county at work, made by the people's own devices.
pub(super) fn records(state: &AppState, everyone: &[PersonRow]) -> AppResult<()> {
    let now = state.now_ms();
    let mut dev = Devices::new(state, everyone, now)?;
    let day = 86_400_000;
    let plan: [(&str, &str, &str, &str, Fate); 8] = [
        ("qf201-0101", "0801", "通村公路塌方", "勤丰社区通村公路K2处边坡塌方,半幅路面被埋。", Fate::ClosedByCounty),
        ("qf202-0101", "0101", "两镇交界林地权属纠纷", "白土村与广通镇妥安村村民因交界处林地权属发生争执。", Fate::OverdueAtCountyDept),
        ("qf203-0101", "0503", "河道倾倒建筑垃圾", "金山村河道旁新增约5车建筑垃圾。", Fate::InTown),
        ("qf201-0101", "0701", "集市占道经营", "勤丰集市摊贩占道经营,影响通行。", Fate::BackToTown),
        ("qf202-0101", "0905", "危房住人", "一户独居老人仍居住在C级危房内。", Fate::AtCounty),
        ("gt202-0101", "0101", "交界林地权属纠纷(广通侧)", "妥安村村民反映与勤丰镇白土村交界林地被占。", Fate::ClosedByCounty),
        ("gt201-0101", "0801", "县道边坡落石", "广通社区县道K15处边坡落石,影响通行。", Fate::OverdueAtCountyDept),
        ("gt203-0101", "0602", "违章搭建彩钢棚", "临街商铺违规搭建彩钢棚。", Fate::InTown),
    ];
    for (n, (reporter, category, title, description, fate)) in plan.into_iter().enumerate() {
        let grid = dev.people[reporter].unit.clone();
        let center = if grid.town() == Some(TOWN) { "zongzhi" } else { "qf-zongzhi" };
        let town_dept = if grid.town() == Some(TOWN) { "zhifa" } else { "qf-zhifa" };
        let mut at = now - (14 - n as i64) * day;
        dev.clock.set(at);
        let new = NewIncident {
            category: category.into(),
            title: title.into(),
            description: description.into(),
            grid: Some(grid.clone()),
            location: Some(point_in(&corners(&grid), n)),
            address: title.into(),
            note: "巡查发现".into(),
            ..Default::default()
        };
        let id = dev.client(reporter)?.create_incident(new)?;
        dev.push(reporter, &id)?;
        let mut steps: Vec<(&str, Action, &str)> = vec![(center, Action::Accept, "")];
        let county_dept = |k: usize| code(&format!("{COUNTY}-{}", COUNTY_DEPTS[k].0));
        let deadline = |days: i64| Some(at + days * day);
        match fate {
            Fate::InTown => {
                steps.push((
                    center,
                    Action::Dispatch { to_unit: dev.people[town_dept].unit.clone(), deadline_ms: deadline(3) },
                    "请按时限处置",
                ));
                steps.push((town_dept, Action::Sign, ""));
                steps.push((town_dept, Action::Handle { photos: vec![] }, "已责令清理,现场已恢复"));
                steps.push((reporter, Action::Verify, "现场核实已处置"));
                steps.push((center, Action::Close, ""));
            }
            _ => {
                steps.push((center, Action::Escalate { to_unit: code(COUNTY) }, "涉及跨镇或县管事项,镇级无法协调,请县社会治理中心处理"));
                if fate != Fate::AtCounty {
                    steps.push(("xian-zhongxin", Action::Accept, ""));
                }
                match fate {
                    Fate::ClosedByCounty => {
                        steps.push((
                            "xian-zhongxin",
                            Action::Dispatch { to_unit: county_dept(n % 2), deadline_ms: deadline(5) },
                            "请牵头核查处理",
                        ));
                        let d = COUNTY_DEPTS[n % 2].2;
                        steps.push((d, Action::Sign, ""));
                        steps.push((d, Action::Handle { photos: vec![] }, "已会同两镇现场核查并处理完毕"));
                        steps.push((reporter, Action::Verify, "现场核实已处置"));
                        steps.push(("xian-zhongxin", Action::Close, ""));
                    }
                    Fate::OverdueAtCountyDept => {
                        steps.push((
                            "xian-zhongxin",
                            Action::Dispatch { to_unit: county_dept(n % 2), deadline_ms: deadline(3) },
                            "请牵头核查处理",
                        ));
                        steps.push((COUNTY_DEPTS[n % 2].2, Action::Sign, ""));
                    }
                    Fate::BackToTown => {
                        let town = grid.town().map(code).ok_or_else(|| AppError::Internal("a grid lies in a town".into()))?;
                        steps.push((
                            "xian-zhongxin",
                            Action::Dispatch { to_unit: town, deadline_ms: deadline(7) },
                            "属镇级职责,请属地处置",
                        ));
                        steps.push((center, Action::Sign, ""));
                    }
                    Fate::InTown | Fate::AtCounty => {}
                }
            }
        }
        for (actor, action, note) in steps {
            at += 9 * 3_600_000;
            dev.clock.set(at.min(now));
            dev.bring(actor, &id)?;
            dev.client(actor)?.act(&id, action, note)?;
            dev.push(actor, &id)?;
        }
    }
    Ok(())
}
