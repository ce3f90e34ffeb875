//! Admin import of org units, people and catalogs. Every row is checked first; one bad row means
//! nothing is imported, and every bad row is reported with its line number, in Chinese.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use gridlink_core::workflow::role_fits_unit;
use gridlink_core::{Catalog, OrgTree, OrgUnit, Role, UnitCode, UnitKind};

use crate::auth::hash_password;
use crate::config::ImportWhat;
use crate::db::Db;
use crate::storage::{self, Storage, Unit};

/// A person to import.
#[derive(Debug, Clone)]
pub struct PersonRow {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub unit: UnitCode,
    pub password: String,
}

/// Runs an import command against a database file or a PostgreSQL URL.
pub fn run(db_path: &Path, what: &ImportWhat) -> Result<String, String> {
    let location = crate::db::Location::parse(&db_path.to_string_lossy());
    let db = Db::at(&location, 1).map_err(|e| e.for_operator())?;
    let conn = db.writer();
    let now = chrono::Utc::now().timestamp_millis();
    match what {
        ImportWhat::Units { file } => {
            let units = parse_units(&read(file)?)?;
            let n = insert_units(&*conn, &units)?;
            conn.audit(now, "admin-cli", "import_units", &format!("{n}")).map_err(|e| e.to_string())?;
            Ok(format!("已导入 {n} 个单位"))
        }
        ImportWhat::People { file } => {
            let people = parse_people(&read(file)?)?;
            let n = insert_people(&*conn, &people, now)?;
            conn.audit(now, "admin-cli", "import_people", &format!("{n}")).map_err(|e| e.to_string())?;
            Ok(format!("已导入 {n} 名人员"))
        }
        ImportWhat::Catalog { categories, items } => {
            let (c, i) = (read(categories)?, read(items)?);
            let catalog = Catalog::from_json(&c, &i).map_err(|e| e.to_string())?;
            conn.meta_set("catalog.categories", &c).map_err(|e| e.to_string())?;
            conn.meta_set("catalog.items", &i).map_err(|e| e.to_string())?;
            // The index's clocks depend on the catalog's time limits: rebuilt at the next start.
            conn.meta_clear("index_version").map_err(|e| e.to_string())?;
            conn.audit(now, "admin-cli", "import_catalog", "").map_err(|e| e.to_string())?;
            Ok(format!("已导入事件分类 {} 个小类、服务事项 {} 项", catalog.minors().count(), catalog.service_items.len()))
        }
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("无法读取 {}: {e}", path.display()))
}

/// Parses a unit kind written in English or Chinese.
pub fn parse_kind(s: &str) -> Option<UnitKind> {
    Some(match s.trim() {
        "county" | "县" | "县(市、区)" | "区" | "县级市" => UnitKind::County,
        "town" | "镇" | "乡镇" | "街道" => UnitKind::Town,
        "village" | "村" | "社区" | "村(社区)" | "村（社区）" => UnitKind::Village,
        "group" | "组" | "村民小组" => UnitKind::Group,
        "grid" | "网格" => UnitKind::Grid,
        "department" | "部门" => UnitKind::Department,
        _ => return None,
    })
}

/// Parses a role written in English or Chinese.
pub fn parse_role_text(s: &str) -> Option<Role> {
    let s = s.trim();
    crate::auth::parse_role(s).or_else(|| Role::ALL.into_iter().find(|r| r.label() == s))
}

fn csv_rows(text: &str, columns: usize) -> Result<Vec<(usize, Vec<String>)>, Vec<String>> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(text.as_bytes());
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let line = i + 2;
        match rec {
            Ok(r) if r.len() >= columns => rows.push((line, r.iter().map(|f| f.trim().to_owned()).collect())),
            Ok(r) => errors.push(format!("第{line}行:应有{columns}列,实际{}列", r.len())),
            Err(e) => errors.push(format!("第{line}行:无法解析({e})")),
        }
    }
    if errors.is_empty() { Ok(rows) } else { Err(errors) }
}

fn fail(errors: Vec<String>) -> String {
    format!("导入失败,未导入任何数据:\n{}", errors.join("\n"))
}

/// Parses units CSV (`code,name,kind,parent,department_key`).
pub fn parse_units(text: &str) -> Result<Vec<OrgUnit>, String> {
    let rows = csv_rows(text, 4).map_err(fail)?;
    let mut units = Vec::new();
    let mut errors = Vec::new();
    let mut seen = BTreeSet::new();
    for (line, f) in rows {
        let code = match UnitCode::parse(&f[0]) {
            Ok(c) => c,
            Err(_) => {
                errors.push(format!("第{line}行:单位代码“{}”格式不正确", f[0]));
                continue;
            }
        };
        if !seen.insert(code.clone()) {
            errors.push(format!("第{line}行:单位代码 {code} 重复"));
        }
        if f[1].is_empty() {
            errors.push(format!("第{line}行:单位名称不能为空"));
        }
        let Some(kind) = parse_kind(&f[2]) else {
            errors.push(format!("第{line}行:单位类型“{}”无效(应为 县/镇/村/组/网格/部门)", f[2]));
            continue;
        };
        let parent = if f[3].is_empty() {
            None
        } else {
            match UnitCode::parse(&f[3]) {
                Ok(p) => Some(p),
                Err(_) => {
                    errors.push(format!("第{line}行:上级单位代码“{}”格式不正确", f[3]));
                    continue;
                }
            }
        };
        let department_key = f.get(4).filter(|k| !k.is_empty()).cloned();
        units.push(OrgUnit { code, name: f[1].clone(), kind, parent, department_key });
    }
    if errors.is_empty() { Ok(units) } else { Err(fail(errors)) }
}

/// Inserts units after checking the whole tree (existing plus new); all or nothing.
pub fn insert_units(conn: &dyn Storage, units: &[OrgUnit]) -> Result<usize, String> {
    let mut all: BTreeMap<UnitCode, OrgUnit> = load_units(conn)?.into_iter().map(|u| (u.code.clone(), u)).collect();
    for u in units {
        all.insert(u.code.clone(), u.clone());
    }
    OrgTree::new(all.into_values()).map_err(|e| fail(vec![e.to_string()]))?;
    // A savepoint: a transaction of its own from the command line, nested in the writer's batch from the console.
    let tx = storage::Tx::within(conn).map_err(|e| e.to_string())?;
    for u in units {
        let kind = serde_json::to_value(u.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let row = Unit {
            code: u.code.to_string(),
            name: u.name.clone(),
            kind,
            parent: u.parent.as_ref().map(ToString::to_string),
            department_key: u.department_key.clone(),
            boundary: None,
        };
        tx.put_unit(&row).map_err(|e| e.to_string())?;
    }
    tx.commit().map_err(|e| e.to_string())?;
    Ok(units.len())
}

/// All units in the database.
pub fn load_units(conn: &dyn Storage) -> Result<Vec<OrgUnit>, String> {
    let rows = conn.units().map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for Unit { code, name, kind, parent, department_key, .. } in rows {
        out.push(OrgUnit {
            code: UnitCode::parse(&code).map_err(|e| e.to_string())?,
            name,
            kind: parse_kind(&kind).ok_or("bad unit kind in database")?,
            parent: parent.map(|p| UnitCode::parse(&p)).transpose().map_err(|e| e.to_string())?,
            department_key,
        });
    }
    Ok(out)
}

/// Parses people CSV (`id,name,role,unit,password`).
pub fn parse_people(text: &str) -> Result<Vec<PersonRow>, String> {
    let rows = csv_rows(text, 5).map_err(fail)?;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut seen = BTreeSet::new();
    for (line, f) in rows {
        let valid_id = !f[0].is_empty() && f[0].len() <= 64 && f[0].chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid_id {
            errors.push(format!("第{line}行:账号“{}”只能包含字母、数字和 - _ .", f[0]));
        } else if !seen.insert(f[0].clone()) {
            errors.push(format!("第{line}行:账号 {} 重复", f[0]));
        }
        if f[1].is_empty() {
            errors.push(format!("第{line}行:姓名不能为空"));
        }
        let role = parse_role_text(&f[2]);
        if role.is_none() {
            errors.push(format!("第{line}行:角色“{}”无效", f[2]));
        }
        let unit = UnitCode::parse(&f[3]).ok();
        if unit.is_none() {
            errors.push(format!("第{line}行:单位代码“{}”格式不正确", f[3]));
        }
        if f[4].chars().count() < 8 {
            errors.push(format!("第{line}行:初始密码至少8位"));
        }
        if let (Some(role), Some(unit)) = (role, unit) {
            if !role_fits_unit(role, &unit) {
                errors.push(format!("第{line}行:{}不能隶属于单位 {unit}", role.label()));
            }
            out.push(PersonRow { id: f[0].clone(), name: f[1].clone(), role, unit, password: f[4].clone() });
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(fail(errors)) }
}

/// Inserts people whose units exist; all or nothing.
pub fn insert_people(conn: &dyn Storage, people: &[PersonRow], now: i64) -> Result<usize, String> {
    let known: BTreeSet<String> = load_units(conn)?.into_iter().map(|u| u.code.to_string()).collect();
    let missing: Vec<String> = people
        .iter()
        .filter(|p| !known.contains(p.unit.as_str()))
        .map(|p| format!("账号 {}:单位 {} 不存在,请先导入单位", p.id, p.unit))
        .collect();
    if !missing.is_empty() {
        return Err(fail(missing));
    }
    let hashed: Vec<String> = people.iter().map(|p| hash_password(&p.password)).collect();
    // A savepoint: a transaction of its own from the command line, nested in the writer's batch from the console.
    let tx = storage::Tx::within(conn).map_err(|e| e.to_string())?;
    for (p, hash) in people.iter().zip(hashed) {
        let row = storage::PersonRow {
            id: p.id.clone(),
            name: p.name.clone(),
            role: p.role.as_str().to_owned(),
            unit: p.unit.to_string(),
            password_hash: hash,
            active: true,
        };
        tx.put_person(&row, now).map_err(|e| e.to_string())?;
    }
    tx.commit().map_err(|e| e.to_string())?;
    Ok(people.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_row_is_reported_and_nothing_imported() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("s.db"), 1).unwrap();
        let conn = db.writer();
        let good = "code,name,kind,parent,department_key\n532331101,广通镇,镇,,\n532331101201,广通社区,村,532331101,\n";
        assert_eq!(insert_units(&*conn, &parse_units(good).unwrap()).unwrap(), 2);
        let bad = "code,name,kind,parent,department_key\n532331101202,妥安村,村,532331101,\n53233110120X,错,村,532331101,\n532331101203,,城堡,532331101,\n";
        let err = parse_units(bad).unwrap_err();
        assert!(err.contains("第3行") && err.contains("第4行") && !err.contains("第2行"), "{err}");
        assert!(err.contains("未导入任何数据"));
        // A tree that does not fit (a grid straight under the town) is refused whole.
        let orphan = "code,name,kind,parent,department_key\n532331101204,小铺子村,村,532331101,\n532331101-09,网格,网格,532331101,\n";
        assert!(insert_units(&*conn, &parse_units(orphan).unwrap()).is_err());
        assert_eq!(load_units(&*conn).unwrap().len(), 2);

        let people = "id,name,role,unit,password\nwangfang,王芳,网格员,532331101201,12345678\nzm,赵敏,center_operator,532331101,short\n";
        let err = parse_people(people).unwrap_err();
        assert!(err.contains("第2行:网格员不能隶属于单位") && err.contains("第3行:初始密码至少8位"), "{err}");
        let ok = "id,name,role,unit,password\nzm,赵敏,综治中心工作人员,532331101,gridlink2026\nx,某,便民服务站代办员,532331101209,gridlink2026\n";
        let err = insert_people(&*conn, &parse_people(ok).unwrap(), 0).unwrap_err();
        assert!(err.contains("532331101209 不存在"), "{err}");
        let n: i64 = conn.sqlite().query_row("SELECT count(*) FROM people", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 0);
    }
}
