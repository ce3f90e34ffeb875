//! Catalogs as data: incident categories (事件分类, 大类/小类) and service items (事项清单).
//!
//! The repository ships a default catalog in `core/catalog/`; a town can load its own files at run
//! time. Loading validates the whole file, so a bad file is refused before anything uses it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::calendar::TimeLimit;
use crate::clocks::CenterLimits;
use crate::error::{CoreError, Result};

/// The level that normally handles a category or service item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandlingLevel {
    /// Settled in the village (小事不出村).
    Village,
    /// Handled by the town.
    Town,
    /// Goes on to the county.
    County,
}

impl HandlingLevel {
    /// Chinese name.
    pub fn label(self) -> &'static str {
        match self {
            HandlingLevel::Village => "村级",
            HandlingLevel::Town => "镇级",
            HandlingLevel::County => "县级",
        }
    }
}

/// A department named by catalog entries (mapped to org units by `department_key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Department {
    pub key: String,
    pub name: String,
}

/// A minor incident category (小类) with its handling rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Category {
    /// Four digits: major code + sequence.
    pub code: String,
    pub name: String,
    pub level: HandlingLevel,
    /// Key of the responsible department.
    pub department: String,
    pub time_limit: TimeLimit,
    /// What must be true to close (结案条件).
    pub closing_condition: String,
}

/// A major incident category (大类).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MajorCategory {
    pub code: String,
    pub name: String,
    pub minors: Vec<Category>,
}

/// How a service is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceMode {
    /// 即办: done at the station while the resident waits.
    Immediate,
    /// 代办: the station carries the materials to the town on a scheduled run.
    Errand,
    /// 上门: for the elderly and disabled.
    HomeVisit,
}

impl ServiceMode {
    /// Chinese name.
    pub fn label(self) -> &'static str {
        match self {
            ServiceMode::Immediate => "即办",
            ServiceMode::Errand => "代办",
            ServiceMode::HomeVisit => "上门办",
        }
    }

    /// Machine name.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceMode::Immediate => "immediate",
            ServiceMode::Errand => "errand",
            ServiceMode::HomeVisit => "home_visit",
        }
    }

    /// Parses the machine name.
    pub fn parse(s: &str) -> Option<Self> {
        [ServiceMode::Immediate, ServiceMode::Errand, ServiceMode::HomeVisit].into_iter().find(|m| m.as_str() == s)
    }
}

impl fmt::Display for ServiceMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One public service in the item catalog (事项清单).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceItem {
    pub code: String,
    pub name: String,
    pub department: String,
    pub level: HandlingLevel,
    pub modes: Vec<ServiceMode>,
    /// Required materials (所需材料), the station's checklist.
    pub materials: Vec<String>,
    /// Promised time limit in working days (承诺时限).
    pub promised_days: u32,
    /// Legal time limit in working days (法定时限).
    pub legal_days: Option<u32>,
    pub fee: String,
}

#[derive(Deserialize)]
struct CategoryFile {
    departments: Vec<Department>,
    categories: Vec<MajorCategory>,
    /// Time limits of the center's own steps (verification, closing); defaults when absent.
    #[serde(default)]
    center_limits: CenterLimits,
}

#[derive(Deserialize)]
struct ServiceItemFile {
    service_items: Vec<ServiceItem>,
}

/// The catalogs of one town, validated and indexed.
#[derive(Debug, Clone, Serialize)]
pub struct Catalog {
    pub departments: Vec<Department>,
    pub categories: Vec<MajorCategory>,
    pub service_items: Vec<ServiceItem>,
    /// How long the town center may take to verify a result and to close (see [`crate::clocks`]).
    pub center_limits: CenterLimits,
    #[serde(skip)]
    minor_index: BTreeMap<String, (usize, usize)>,
    #[serde(skip)]
    item_index: BTreeMap<String, usize>,
}

impl Catalog {
    /// The catalog shipped in the repository.
    pub fn bundled() -> Self {
        Self::from_json(include_str!("../catalog/incident_categories.json"), include_str!("../catalog/service_items.json"))
            .expect("bundled catalog is valid")
    }

    /// Loads both catalog files from their JSON text and validates them.
    pub fn from_json(categories: &str, service_items: &str) -> Result<Self> {
        let c: CategoryFile = serde_json::from_str(categories).map_err(|e| CoreError::Catalog(format!("事件分类文件: {e}")))?;
        let s: ServiceItemFile = serde_json::from_str(service_items).map_err(|e| CoreError::Catalog(format!("服务事项文件: {e}")))?;
        let mut catalog = Self::new(c.departments, c.categories, s.service_items)?;
        if matches!(c.center_limits.verify, TimeLimit::Hours(0)) || matches!(c.center_limits.close, TimeLimit::Hours(0)) {
            return Err(CoreError::Catalog("核查、结案时限不能为0小时".into()));
        }
        catalog.center_limits = c.center_limits;
        Ok(catalog)
    }

    /// Loads both catalog files from disk.
    pub fn load(categories: &std::path::Path, service_items: &std::path::Path) -> Result<Self> {
        let read = |p: &std::path::Path| std::fs::read_to_string(p).map_err(|e| CoreError::Catalog(format!("{}: {e}", p.display())));
        Self::from_json(&read(categories)?, &read(service_items)?)
    }

    /// Builds and validates a catalog.
    pub fn new(departments: Vec<Department>, categories: Vec<MajorCategory>, service_items: Vec<ServiceItem>) -> Result<Self> {
        let bad = |m: String| Err(CoreError::Catalog(m));
        let dept_keys: BTreeSet<&str> = departments.iter().map(|d| d.key.as_str()).collect();
        if dept_keys.len() != departments.len() {
            return bad("部门代码重复".into());
        }
        let mut minor_index = BTreeMap::new();
        let mut majors = BTreeSet::new();
        for (i, major) in categories.iter().enumerate() {
            if major.name.trim().is_empty() || !majors.insert(major.code.as_str()) {
                return bad(format!("大类 {} 名称为空或代码重复", major.code));
            }
            for (j, minor) in major.minors.iter().enumerate() {
                if !minor.code.starts_with(&major.code) || minor.name.trim().is_empty() {
                    return bad(format!("小类 {} 的代码须以大类代码 {} 开头且名称不能为空", minor.code, major.code));
                }
                if !dept_keys.contains(minor.department.as_str()) {
                    return bad(format!("小类 {} 的责任部门 {} 不存在", minor.code, minor.department));
                }
                if matches!(minor.time_limit, TimeLimit::Hours(0)) {
                    return bad(format!("小类 {} 的时限不能为0小时", minor.code));
                }
                if minor_index.insert(minor.code.clone(), (i, j)).is_some() {
                    return bad(format!("小类代码 {} 重复", minor.code));
                }
            }
        }
        let mut item_index = BTreeMap::new();
        for (i, item) in service_items.iter().enumerate() {
            if !dept_keys.contains(item.department.as_str()) {
                return bad(format!("事项 {} 的主管部门 {} 不存在", item.code, item.department));
            }
            if item.modes.is_empty() || item.materials.is_empty() {
                return bad(format!("事项 {} 须至少有一种办理方式和一项所需材料", item.code));
            }
            if item.legal_days.is_some_and(|l| l < item.promised_days) {
                return bad(format!("事项 {} 的承诺时限长于法定时限", item.code));
            }
            if item_index.insert(item.code.clone(), i).is_some() {
                return bad(format!("事项代码 {} 重复", item.code));
            }
        }
        Ok(Self { departments, categories, service_items, center_limits: CenterLimits::default(), minor_index, item_index })
    }

    /// A minor category by code.
    pub fn category(&self, code: &str) -> Result<&Category> {
        self.minor_index
            .get(code)
            .map(|&(i, j)| &self.categories[i].minors[j])
            .ok_or_else(|| CoreError::UnknownCategory(code.chars().take(20).collect()))
    }

    /// The major category a minor code belongs to.
    pub fn major_of(&self, code: &str) -> Result<&MajorCategory> {
        self.minor_index
            .get(code)
            .map(|&(i, _)| &self.categories[i])
            .ok_or_else(|| CoreError::UnknownCategory(code.chars().take(20).collect()))
    }

    /// A service item by code.
    pub fn service_item(&self, code: &str) -> Result<&ServiceItem> {
        self.item_index
            .get(code)
            .map(|&i| &self.service_items[i])
            .ok_or_else(|| CoreError::UnknownServiceItem(code.chars().take(20).collect()))
    }

    /// Department name by key.
    pub fn department_name(&self, key: &str) -> Option<&str> {
        self.departments.iter().find(|d| d.key == key).map(|d| d.name.as_str())
    }

    /// All minor categories.
    pub fn minors(&self) -> impl Iterator<Item = &Category> {
        self.categories.iter().flat_map(|m| m.minors.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_catalog_is_rich_enough() {
        let c = Catalog::bundled();
        assert!(c.categories.len() >= 10);
        assert!(c.minors().count() >= 40);
        assert!(c.service_items.len() >= 20);
        let garbage = c.category("0501").unwrap();
        assert_eq!(garbage.name, "暴露垃圾");
        assert_eq!(garbage.time_limit, TimeLimit::WorkingDays(1));
        assert_eq!(c.major_of("0501").unwrap().name, "环境卫生");
        assert!(matches!(c.category("9999"), Err(CoreError::UnknownCategory(_))));
        assert!(c.service_item("FW001").unwrap().materials.contains(&"居民身份证".to_owned()));
    }

    #[test]
    fn invalid_catalog_is_refused_whole() {
        let cats =
            include_str!("../catalog/incident_categories.json").replacen("\"department\": \"sifasuo\"", "\"department\": \"nope\"", 1);
        let err = Catalog::from_json(&cats, include_str!("../catalog/service_items.json")).unwrap_err();
        assert!(err.to_string().contains("责任部门"), "{err}");
        assert!(Catalog::from_json("{", "{}").is_err());
    }
}
