//! Routing (分流): which unit's inbox a new incident goes to. Village-level categories stay in
//! the village of the place it happened ("小事不出村"); the rest go to the town center. Rules are
//! data per town; the catalog's handling level is the default.

use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, HandlingLevel};
use crate::error::{CoreError, Result};
use crate::org::UnitCode;

/// One routing rule: incidents whose category starts with `category` (and that happen in
/// `village`, when given) go to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRule {
    /// A minor category code or a major code (prefix).
    pub category: String,
    #[serde(default)]
    pub village: Option<UnitCode>,
    pub to: HandlingLevel,
}

/// A town's routing rules; the first that matches wins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingRules {
    pub rules: Vec<RouteRule>,
}

impl RoutingRules {
    /// Checks every rule against the catalog.
    pub fn validate(&self, catalog: &Catalog) -> Result<()> {
        for (i, r) in self.rules.iter().enumerate() {
            let n = i + 1;
            if r.category.is_empty() || !catalog.minors().any(|m| m.code.starts_with(&r.category)) {
                return Err(CoreError::InvalidInput(format!("第{n}条规则:分类代码“{}”不在目录中", r.category)));
            }
            if r.village.as_ref().is_some_and(|v| v.as_str().len() != 12) {
                return Err(CoreError::InvalidInput(format!("第{n}条规则:须填写村(社区)的12位代码")));
            }
        }
        Ok(())
    }

    /// The unit whose inbox a new incident of `category` at `location` goes to.
    pub fn target(&self, catalog: &Catalog, category: &str, location: &UnitCode) -> Result<UnitCode> {
        let village = village_of(location);
        let level = match self
            .rules
            .iter()
            .find(|r| category.starts_with(&r.category) && r.village.as_ref().is_none_or(|v| village.as_ref() == Some(v)))
        {
            Some(r) => r.to,
            None => catalog.category(category)?.level,
        };
        Ok(match (level, village) {
            (HandlingLevel::Village, Some(v)) => v,
            _ => UnitCode::parse(location.town_or_county())?,
        })
    }
}

/// The village a unit belongs to (itself for a village), if it is at or below a village.
pub fn village_of(unit: &UnitCode) -> Option<UnitCode> {
    let head = unit.as_str().split('-').next().unwrap_or_default();
    (head.len() == 12).then(|| UnitCode::parse(head).expect("a 12-digit head is a village code"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_from_catalog_and_rules_override() {
        let cat = Catalog::bundled();
        let grid = UnitCode::parse("532331101201-01-02").unwrap();
        let none = RoutingRules::default();
        assert_eq!(none.target(&cat, "0501", &grid).unwrap().as_str(), "532331101201", "暴露垃圾 stays in the village");
        assert_eq!(none.target(&cat, "0602", &grid).unwrap().as_str(), "532331101", "违章搭建 goes to the town");
        let rules = RoutingRules {
            rules: vec![
                RouteRule { category: "05".into(), village: Some(UnitCode::parse("532331101201").unwrap()), to: HandlingLevel::Town },
                RouteRule { category: "0602".into(), village: None, to: HandlingLevel::Village },
            ],
        };
        rules.validate(&cat).unwrap();
        assert_eq!(rules.target(&cat, "0501", &grid).unwrap().as_str(), "532331101");
        let other = UnitCode::parse("532331101202-01-01").unwrap();
        assert_eq!(rules.target(&cat, "0501", &other).unwrap().as_str(), "532331101202");
        assert_eq!(rules.target(&cat, "0602", &grid).unwrap().as_str(), "532331101201");
        let town = UnitCode::parse("532331101").unwrap();
        assert_eq!(none.target(&cat, "0501", &town).unwrap().as_str(), "532331101", "no village: the town");
        let bad = RoutingRules { rules: vec![RouteRule { category: "99".into(), village: None, to: HandlingLevel::Town }] };
        assert!(bad.validate(&cat).unwrap_err().to_string().contains("第1条规则"));
    }
}
