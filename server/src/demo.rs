//! The demo town 广通镇: villages, groups, grids, departments, staff, and three weeks of incidents
//! and errands in every state. Records are made by real devices (the core `Client`) and enter the
//! server through the same validated ingest path a sync uses.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use gridlink_core::{
    Action, Catalog, Client, ClientOptions, Clock, ManualClock, NewIncident, NewServiceRequest, OrgUnit, Person, Role, ServiceMode,
    UnitCode, UnitKind,
};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use crate::app::AppState;
use crate::docs::ingest;
use crate::error::{AppError, AppResult};
use crate::import::{PersonRow, insert_people, insert_units};

/// Password of every demo account.
pub const DEMO_PASSWORD: &str = "gridlink2026";
const TOWN: &str = "532331101";
const VILLAGES: [(&str, &str); 6] =
    [("201", "广通社区"), ("202", "妥安村"), ("203", "大旧庄村"), ("204", "小铺子村"), ("205", "罗川村"), ("206", "沙龙村")];
const SURNAMES: [&str; 20] =
    ["王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴", "徐", "孙", "马", "朱", "胡", "郭", "何", "高", "罗", "郑"];
const GIVEN: [&str; 20] =
    ["芳", "军", "敏", "强", "洋", "丽", "伟", "静", "磊", "娟", "勇", "艳", "杰", "霞", "涛", "婷", "明", "华", "平", "红"];

/// The demo accounts, for the start-up banner.
#[derive(Debug, Clone)]
pub struct DemoLogins {
    /// (role, user name, name, unit name)
    pub rows: Vec<(String, String, String, String)>,
    pub incidents: usize,
    pub errands: usize,
}

impl DemoLogins {
    /// What `gridlink-server demo` prints.
    pub fn banner(&self, addr: std::net::SocketAddr) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "网格通演示镇「广通镇」已就绪:{} 件事件,{} 件便民服务", self.incidents, self.errands);
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

/// Where a grid lies on the demo map: villages in three columns and two rows, each with its
/// three groups side by side and two grids per group, on a lattice of about 1.5 km.
fn grid_cell(code: &UnitCode) -> (usize, usize) {
    let c = code.as_str();
    let village: usize = c[9..12].parse::<usize>().unwrap_or(201).saturating_sub(201);
    let group: usize = c[13..15].parse::<usize>().unwrap_or(1).saturating_sub(1);
    let grid: usize = c[16..18].parse::<usize>().unwrap_or(1).saturating_sub(1);
    ((village % 3) * 3 + group, (village / 3) * 2 + grid)
}

/// A lattice point, nudged a little so the map does not look like graph paper; neighbours share
/// their corners, so the grids tile the town without gaps.
fn lattice(i: usize, j: usize) -> [f64; 2] {
    let h = (i * 7919 + j * 104_729) % 1000;
    let (dx, dy) = ((h % 31) as f64 / 31.0 - 0.5, (h % 17) as f64 / 17.0 - 0.5);
    [101.80 + i as f64 * 0.015 + dx * 0.006, 25.16 - j as f64 * 0.013 + dy * 0.005]
}

fn grid_corners(code: &UnitCode) -> Vec<[f64; 2]> {
    let (i, j) = grid_cell(code);
    vec![lattice(i, j), lattice(i + 1, j), lattice(i + 1, j + 1), lattice(i, j + 1)]
}

fn point_in_grid(code: &UnitCode, n: usize) -> gridlink_core::GeoPoint {
    let c = grid_corners(code);
    let (u, v) = (0.25 + 0.5 * ((n * 37) % 100) as f64 / 100.0, 0.25 + 0.5 * ((n * 61) % 100) as f64 / 100.0);
    let lon = (c[0][0] * (1.0 - u) + c[1][0] * u) * (1.0 - v) + (c[3][0] * (1.0 - u) + c[2][0] * u) * v;
    let lat = (c[0][1] * (1.0 - u) + c[1][1] * u) * (1.0 - v) + (c[3][1] * (1.0 - u) + c[2][1] * u) * v;
    gridlink_core::GeoPoint { lat, lon }
}

fn name_of(i: usize) -> String {
    format!("{}{}", SURNAMES[i % SURNAMES.len()], GIVEN[(i * 7 + 3) % GIVEN.len()])
}

fn code(s: &str) -> UnitCode {
    UnitCode::parse(s).expect("demo codes are valid")
}

/// Units and people of the demo town.
fn org(catalog: &Catalog) -> (Vec<OrgUnit>, Vec<PersonRow>) {
    let mut units = vec![OrgUnit { code: code(TOWN), name: "广通镇".into(), kind: UnitKind::Town, parent: None, department_key: None }];
    let mut people = Vec::new();
    let mut n = 0;
    let mut person = |id: String, role: Role, unit: &str, people: &mut Vec<PersonRow>| {
        n += 1;
        people.push(PersonRow { id, name: name_of(n), role, unit: code(unit), password: DEMO_PASSWORD.into() });
    };
    person("admin".into(), Role::Admin, TOWN, &mut people);
    person("zongzhi".into(), Role::CenterOperator, TOWN, &mut people);
    person("zongzhi2".into(), Role::CenterOperator, TOWN, &mut people);
    person("zhenzhang".into(), Role::TownLeader, TOWN, &mut people);
    // The comprehensive-governance center is the town itself, not a stationed department.
    for (i, d) in catalog.departments.iter().enumerate().filter(|(_, d)| d.key != "zongzhi") {
        let c = format!("{TOWN}-D{:02}", i + 1);
        units.push(OrgUnit {
            code: code(&c),
            name: d.name.clone(),
            kind: UnitKind::Department,
            parent: Some(code(TOWN)),
            department_key: Some(d.key.clone()),
        });
        person(d.key.clone(), Role::DepartmentHandler, &c, &mut people);
    }
    for (v, vname) in VILLAGES {
        let vc = format!("{TOWN}{v}");
        units.push(OrgUnit {
            code: code(&vc),
            name: vname.into(),
            kind: UnitKind::Village,
            parent: Some(code(TOWN)),
            department_key: None,
        });
        person(format!("gt{v}-zhan"), Role::StationStaff, &vc, &mut people);
        person(format!("gt{v}-shuji"), Role::VillageHead, &vc, &mut people);
        for g in 1..=3 {
            let gc = format!("{vc}-{g:02}");
            units.push(OrgUnit {
                code: code(&gc),
                name: format!("{vname}第{g}村民小组"),
                kind: UnitKind::Group,
                parent: Some(code(&vc)),
                department_key: None,
            });
            person(format!("gt{v}-zu{g:02}"), Role::GroupLeader, &gc, &mut people);
            for k in 1..=2 {
                let kc = format!("{gc}-{k:02}");
                units.push(OrgUnit {
                    code: code(&kc),
                    name: format!("{vname}{g}组{k}号网格"),
                    kind: UnitKind::Grid,
                    parent: Some(code(&gc)),
                    department_key: None,
                });
                person(format!("gt{v}-{g:02}{k:02}"), Role::GridMember, &kc, &mut people);
            }
        }
    }
    (units, people)
}

const REPORTS: [(&str, &str, &str); 16] = [
    ("0501", "村口垃圾堆积", "村口桥头有大量生活垃圾堆积,已有异味,影响群众出行。"),
    ("0502", "垃圾桶满溢", "集市旁两个垃圾桶已满,垃圾散落地面。"),
    ("0503", "河边倾倒建筑垃圾", "河堤路东段新增约3车建筑垃圾,占用半幅路面。"),
    ("0505", "田间焚烧秸秆", "二组农田有人焚烧秸秆,烟雾较大。"),
    ("0802", "路灯不亮", "村委会至小学路段三盏路灯夜间不亮,学生晚自习回家不安全。"),
    ("0801", "道路坑洼", "通村公路K3处路面塌陷,形成约1米见方的坑。"),
    ("0803", "井盖缺失", "老街菜市场门口井盖缺失,已用树枝临时标示。"),
    ("0101", "宅基地边界纠纷", "两户村民因宅基地边界围墙发生争执,情绪激动。"),
    ("0102", "家庭矛盾", "一对夫妻因赡养老人问题多次争吵,需调解。"),
    ("0104", "工地拖欠工资", "建筑工地十余名工人反映被拖欠两个月工资。"),
    ("0401", "消防通道被占", "商住楼后消防通道被杂物和车辆占用。"),
    ("0403", "楼道电动车充电", "居民楼一楼楼道内有电动车飞线充电。"),
    ("0602", "违章搭建彩钢棚", "临街商铺在屋顶违规搭建彩钢棚约40平方米。"),
    ("0701", "占道经营", "早市摊贩占用主干道经营,造成交通拥堵。"),
    ("0905", "危房住人", "一户独居老人仍居住在C级危房内。"),
    ("1201", "独居老人需探访", "八十五岁独居老人近期身体不适,子女在外务工。"),
];

/// Which stage an incident is left in.
#[derive(Debug, Clone, Copy)]
enum Path {
    New,
    SelfResolved,
    VillageClosed,
    Escalated,
    AcceptedTown,
    Dispatched,
    Returned,
    InProgress,
    Extension,
    Handled,
    FailedVerification,
    Verified,
    Closed,
    Evaluated,
    Suspended,
}

const PATHS: [(Path, usize); 15] = [
    (Path::New, 5),
    (Path::SelfResolved, 3),
    (Path::VillageClosed, 3),
    (Path::Escalated, 4),
    (Path::AcceptedTown, 2),
    (Path::Dispatched, 4),
    (Path::Returned, 1),
    (Path::InProgress, 3),
    (Path::Extension, 1),
    (Path::Handled, 3),
    (Path::FailedVerification, 1),
    (Path::Verified, 2),
    (Path::Closed, 3),
    (Path::Evaluated, 5),
    (Path::Suspended, 1),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Grid,
    Village,
    Center,
    Dept,
}

fn incident_steps(path: Path) -> Vec<(Who, Action, &'static str)> {
    use Who::*;
    let up = [
        (Grid, Action::Escalate { to_unit: code(TOWN) }, ""), // fixed below: to the village
        (Village, Action::Escalate { to_unit: code(TOWN) }, "需镇里协调相关部门处置"),
        (Center, Action::Accept, ""),
    ];
    let dispatch = (Center, Action::Dispatch { to_unit: code(TOWN), deadline_ms: None }, "请按时限处置并反馈"); // target fixed below
    let mut s: Vec<(Who, Action, &'static str)> = Vec::new();
    let town = |s: &mut Vec<_>, n: usize| s.extend(up.iter().take(n).cloned());
    match path {
        Path::New => {}
        Path::SelfResolved => {
            // Fixed on the spot: the self-resolution is made on the phone with the report.
            s.push((Village, Action::Verify, ""));
            s.push((Village, Action::Close, ""));
            s.push((Grid, Action::Evaluate { satisfaction: 5 }, "群众满意"));
        }
        Path::VillageClosed => {
            s.push((Village, Action::Accept, ""));
            s.push((Village, Action::Dispatch { to_unit: code(TOWN), deadline_ms: None }, "请网格员协调处理")); // to the grid
            s.push((Grid, Action::Sign, ""));
            s.push((Grid, Action::Handle { photos: vec![] }, "已协调处理完毕"));
            s.push((Village, Action::Verify, ""));
            s.push((Village, Action::Close, ""));
            s.push((Grid, Action::Evaluate { satisfaction: 4 }, ""));
        }
        Path::Escalated => town(&mut s, 2),
        Path::AcceptedTown => town(&mut s, 3),
        Path::Suspended => {
            town(&mut s, 3);
            s.push((Center, Action::Suspend, "涉及历史遗留问题,需县级部门会商,暂挂账"));
        }
        _ => {
            town(&mut s, 3);
            s.push(dispatch.clone());
            let rest: &[(Who, Action, &'static str)] = &[
                (Dept, Action::Sign, ""),
                (Dept, Action::Handle { photos: vec![] }, "已按要求处置完毕"),
                (Grid, Action::Verify, "现场核查属实"),
                (Center, Action::Close, ""),
                (Grid, Action::Evaluate { satisfaction: 5 }, "群众满意"),
            ];
            let n = match path {
                Path::Dispatched => 0,
                Path::Returned => {
                    s.push((Dept, Action::Return, "不属于本单位职责,请改派"));
                    0
                }
                Path::InProgress => 1,
                Path::Extension => {
                    s.push(rest[0].clone());
                    s.push((Dept, Action::RequestExtension { until_ms: 0 }, "需协调机械设备,申请延期"));
                    0
                }
                Path::Handled => 2,
                Path::FailedVerification => {
                    s.extend(rest[..2].iter().cloned());
                    s.push((Grid, Action::FailVerification, "现场仍有遗留,未处置到位"));
                    0
                }
                Path::Verified => 3,
                Path::Closed => 4,
                _ => 5,
            };
            s.extend(rest[..n].iter().cloned());
        }
    }
    s
}

struct Devices<'a> {
    state: &'a AppState,
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    devices: HashMap<String, Client>,
    people: HashMap<String, Person>,
}

impl Devices<'_> {
    fn client(&mut self, pid: &str) -> AppResult<&mut Client> {
        if !self.devices.contains_key(pid) {
            let opts = ClientOptions { clock: self.clock.clone(), ..Default::default() };
            let mut c = Client::open_with(self.dir.path().join(format!("{pid}.db")), opts)?;
            c.set_identity(self.people[pid].clone())?;
            self.devices.insert(pid.to_owned(), c);
        }
        Ok(self.devices.get_mut(pid).expect("just inserted"))
    }

    /// Gives the device the server's copy of a record (what its sync would do).
    fn bring(&mut self, pid: &str, doc: &str) -> AppResult<()> {
        let doc_id = doc.to_owned();
        let changes: Vec<Vec<u8>> = {
            let conn = self.state.db.reader();
            let mut stmt = conn.prepare("SELECT bytes FROM changes WHERE doc_id = ?1 ORDER BY seq")?;
            let rows = stmt.query_map([&doc_id], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let now = self.clock.now_ms();
        if !changes.is_empty() {
            self.client(pid)?.apply_from_server(doc, &changes, now)?;
        }
        Ok(())
    }

    /// Sends the device's queued changes of a record through the server's ingest.
    fn push(&mut self, pid: &str, doc: &str) -> AppResult<()> {
        let person = self.people[pid].clone();
        let now = self.clock.now_ms();
        let client = self.client(pid)?;
        let queued: Vec<_> = client.outbox(1000)?.into_iter().filter(|e| e.doc_id == doc).collect();
        let changes: Vec<Vec<u8>> = queued.iter().map(|e| e.bytes.clone()).collect();
        let hashes: Vec<String> = queued.iter().map(|e| e.hash.clone()).collect();
        let mut conn = self.state.db.writer();
        let tx = conn.transaction()?;
        let mut events = Vec::new();
        let routing = self.state.routing();
        let mut ctx = self.state.ingest_ctx(&routing, now, &mut events);
        if let Err((_, reason)) = ingest(&tx, &mut ctx, &format!("demo-{pid}"), &person, doc, &changes)? {
            return Err(AppError::Internal(format!("demo change refused: {reason}")));
        }
        tx.commit()?;
        drop(conn);
        self.client(pid)?.acknowledge(&hashes)?;
        Ok(())
    }
}

fn id_number(rng: &mut StdRng) -> String {
    const W: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let body = format!(
        "532331{}{:02}{:02}{:03}",
        rng.random_range(1935..1995),
        rng.random_range(1..=12),
        rng.random_range(1..=28),
        rng.random_range(0..1000)
    );
    let sum: u32 = body.bytes().zip(W).map(|(b, w)| u32::from(b - b'0') * w).sum();
    format!("{body}{}", b"10X98765432"[(sum % 11) as usize] as char)
}

/// Seeds the demo town into an empty database (an already seeded one is left as it is).
pub fn seed(state: &AppState) -> AppResult<DemoLogins> {
    let catalog = Catalog::bundled();
    let (units, people) = org(&catalog);
    let seeded: i64 = state.db.reader().query_row("SELECT count(*) FROM people", [], |r| r.get(0))?;
    let now = state.now_ms();
    if seeded == 0 {
        let mut conn = state.db.writer();
        insert_units(&mut conn, &units).map_err(AppError::Internal)?;
        insert_people(&mut conn, &people, now).map_err(AppError::Internal)?;
        for g in units.iter().filter(|u| u.kind == UnitKind::Grid) {
            let corners = grid_corners(&g.code);
            let text = serde_json::to_string(&corners).expect("serialisable");
            conn.execute("UPDATE units SET boundary = ?1 WHERE code = ?2", [&text, g.code.as_str()])?;
        }
    }
    let unit_name = |c: &UnitCode| units.iter().find(|u| &u.code == c).map(|u| u.name.clone()).unwrap_or_default();
    let pick = |id: &str| people.iter().find(|p| p.id == id).expect("demo person");
    let mut rows = Vec::new();
    for id in ["zongzhi", "zhenzhang", "zhifa", "huanwei", "bianmin", "gt201-zhan", "gt201-shuji", "gt201-0101", "gt202-0101", "admin"] {
        let p = pick(id);
        rows.push((p.role.label().to_owned(), p.id.clone(), p.name.clone(), unit_name(&p.unit)));
    }
    let count = |kind: &str| -> AppResult<usize> {
        Ok(state.db.reader().query_row("SELECT count(*) FROM docs WHERE kind = ?1", [kind], |r| r.get::<_, i64>(0))? as usize)
    };
    if seeded > 0 {
        return Ok(DemoLogins { rows, incidents: count("incident")?, errands: count("service_request")? });
    }

    let mut rng = StdRng::seed_from_u64(20261123);
    let person_of = |p: &PersonRow| Person { id: p.id.clone(), name: p.name.clone(), role: p.role, unit: p.unit.clone() };
    let mut dev = Devices {
        state,
        dir: tempfile::tempdir().map_err(|e| AppError::Internal(e.to_string()))?,
        clock: Arc::new(ManualClock::new(now)),
        devices: HashMap::new(),
        people: people.iter().map(|p| (p.id.clone(), person_of(p))).collect(),
    };
    let grids: Vec<&OrgUnit> = units.iter().filter(|u| u.kind == UnitKind::Grid).collect();
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
    Ok(DemoLogins { rows, incidents: count("incident")?, errands: count("service_request")? })
}
