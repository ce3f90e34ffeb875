//! The demo town's organisation: 广通镇 with its villages, groups, grids, departments and
//! staff, the map lattice its grids lie on, and residents' names and ID numbers.

use gridlink_core::{Catalog, OrgUnit, Person, Role, UnitCode, UnitKind};
use rand::Rng;
use rand::rngs::StdRng;

use super::DEMO_PASSWORD;
use crate::import::PersonRow;

pub(super) const TOWN: &str = "532331101";
pub(super) const VILLAGES: [(&str, &str); 6] =
    [("201", "广通社区"), ("202", "妥安村"), ("203", "大旧庄村"), ("204", "小铺子村"), ("205", "罗川村"), ("206", "沙龙村")];
pub(super) const SURNAMES: [&str; 20] =
    ["王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴", "徐", "孙", "马", "朱", "胡", "郭", "何", "高", "罗", "郑"];
pub(super) const GIVEN: [&str; 20] =
    ["芳", "军", "敏", "强", "洋", "丽", "伟", "静", "磊", "娟", "勇", "艳", "杰", "霞", "涛", "婷", "明", "华", "平", "红"];

/// Where a grid lies on the demo map: villages in three columns and two rows, each with its
/// three groups side by side and two grids per group, on a lattice of about 1.5 km.
pub(super) fn grid_cell(code: &UnitCode) -> (usize, usize) {
    let c = code.as_str();
    let village: usize = c[9..12].parse::<usize>().unwrap_or(201).saturating_sub(201);
    let group: usize = c[13..15].parse::<usize>().unwrap_or(1).saturating_sub(1);
    let grid: usize = c[16..18].parse::<usize>().unwrap_or(1).saturating_sub(1);
    ((village % 3) * 3 + group, (village / 3) * 2 + grid)
}

/// A lattice point, nudged a little so the map does not look like graph paper; neighbours share
/// their corners, so the grids tile the town without gaps.
pub(super) fn lattice(i: usize, j: usize) -> [f64; 2] {
    let h = (i * 7919 + j * 104_729) % 1000;
    let (dx, dy) = ((h % 31) as f64 / 31.0 - 0.5, (h % 17) as f64 / 17.0 - 0.5);
    [101.80 + i as f64 * 0.015 + dx * 0.006, 25.16 - j as f64 * 0.013 + dy * 0.005]
}

pub(super) fn grid_corners(code: &UnitCode) -> Vec<[f64; 2]> {
    let (i, j) = grid_cell(code);
    vec![lattice(i, j), lattice(i + 1, j), lattice(i + 1, j + 1), lattice(i, j + 1)]
}

pub(super) fn point_in_grid(code: &UnitCode, n: usize) -> gridlink_core::GeoPoint {
    point_in(&grid_corners(code), n)
}

/// A point inside the quadrilateral `c`, spread by `n`.
pub(super) fn point_in(c: &[[f64; 2]], n: usize) -> gridlink_core::GeoPoint {
    let (u, v) = (0.25 + 0.5 * ((n * 37) % 100) as f64 / 100.0, 0.25 + 0.5 * ((n * 61) % 100) as f64 / 100.0);
    let lon = (c[0][0] * (1.0 - u) + c[1][0] * u) * (1.0 - v) + (c[3][0] * (1.0 - u) + c[2][0] * u) * v;
    let lat = (c[0][1] * (1.0 - u) + c[1][1] * u) * (1.0 - v) + (c[3][1] * (1.0 - u) + c[2][1] * u) * v;
    gridlink_core::GeoPoint { lat, lon }
}

pub(super) fn name_of(i: usize) -> String {
    format!("{}{}", SURNAMES[i % SURNAMES.len()], GIVEN[(i * 7 + 3) % GIVEN.len()])
}

pub(super) fn code(s: &str) -> UnitCode {
    UnitCode::parse(s).expect("demo codes are valid")
}

/// Units and people of the demo town.
pub(super) fn org(catalog: &Catalog) -> (Vec<OrgUnit>, Vec<PersonRow>) {
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

pub(super) fn id_number(rng: &mut StdRng) -> String {
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

/// A demo account as the person who acts.
pub(super) fn person_of(p: &PersonRow) -> Person {
    Person { id: p.id.clone(), name: p.name.clone(), role: p.role, unit: p.unit.clone() }
}
