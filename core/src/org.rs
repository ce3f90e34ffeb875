//! The organisation hierarchy of the four-level linkage (四级联动: 镇 ► 村 ► 组 ► 网格), with the
//! county (县) above the towns where a county runs one platform, and the scope rule that decides
//! who sees which record.
//!
//! Unit codes extend the national 12-digit statistical area code: 6 digits are the county,
//! 9 the town (6 county + 3 town), 12 the village; groups, grids and departments (stationed in a
//! town or the county's own 县直部门) append `-` segments (`532331101201-03-02` is grid 02 of
//! group 03, `532331-GA` a county department). Ancestry is therefore a property of the
//! codes alone, so the workflow fold, which must give the same answer on every replica, never needs
//! a possibly stale copy of the org tree.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};

/// A validated organisation unit code.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UnitCode(String);

impl UnitCode {
    /// Parses and validates a unit code.
    pub fn parse(code: &str) -> Result<Self> {
        let bad = || CoreError::InvalidUnitCode(code.chars().take(40).collect());
        let (head, rest) = match code.find('-') {
            Some(i) => (&code[..i], &code[i..]),
            None => (code, ""),
        };
        if !matches!(head.len(), 6 | 9 | 12) || !head.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        if !rest.is_empty() {
            for seg in rest[1..].split('-') {
                let ok = (1..=4).contains(&seg.len()) && seg.bytes().all(|b| b.is_ascii_alphanumeric());
                if !ok {
                    return Err(bad());
                }
            }
        }
        Ok(Self(code.to_owned()))
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 9-digit town part of the code; `None` for the county and its departments.
    pub fn town(&self) -> Option<&str> {
        let head = self.head();
        (head.len() >= 9).then(|| &head[..9])
    }

    /// The town of the code, or for the county and its departments the county: the area a
    /// unit works for.
    pub fn town_or_county(&self) -> &str {
        self.town().unwrap_or(self.county())
    }

    /// The 6-digit county part of the code.
    pub fn county(&self) -> &str {
        &self.0[..6]
    }

    /// The statistical-area part before any `-` segment: the county, town or village itself.
    pub fn head(&self) -> &str {
        self.0.split('-').next().unwrap_or_default()
    }

    /// True for the county itself and the county's departments.
    pub fn is_county_level(&self) -> bool {
        self.head().len() == 6
    }

    /// True when `self` is `other` or one of its ancestors.
    pub fn contains(&self, other: &UnitCode) -> bool {
        let (a, d) = (self.0.as_str(), other.0.as_str());
        if a == d {
            return true;
        }
        if !d.starts_with(a) {
            return false;
        }
        let next = d.as_bytes()[a.len()];
        next == b'-' || (matches!(a.len(), 6 | 9) && next.is_ascii_digit())
    }

    /// True when `self` is a strict ancestor of `other`.
    pub fn strictly_contains(&self, other: &UnitCode) -> bool {
        self != other && self.contains(other)
    }

    /// The parent code implied by the code's shape (a village for a group or a grid that sits
    /// directly under it, the town for a village or a department, the county for a county
    /// department), or `None` for a town or a county. A town's county is [`UnitCode::county`]:
    /// a town need not run under a county on its server.
    pub fn parent(&self) -> Option<UnitCode> {
        if let Some(i) = self.0.rfind('-') {
            return Some(UnitCode(self.0[..i].to_owned()));
        }
        (self.0.len() == 12).then(|| UnitCode(self.0[..9].to_owned()))
    }
}

impl TryFrom<String> for UnitCode {
    type Error = CoreError;
    fn try_from(s: String) -> Result<Self> {
        UnitCode::parse(&s)
    }
}

impl From<UnitCode> for String {
    fn from(c: UnitCode) -> String {
        c.0
    }
}

impl fmt::Display for UnitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The kind of an organisation unit. Departments are stationed in the town (驻镇机构).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitKind {
    /// County 县, with its social-governance center above the towns.
    County,
    /// Town 镇.
    Town,
    /// Village or community 村(社区).
    Village,
    /// Villagers' group 村民小组.
    Group,
    /// Grid 网格.
    Grid,
    /// A department in the town (综合行政执法, 派出所, 司法所 …) or of the county (县直部门).
    Department,
}

impl UnitKind {
    /// Chinese name of the kind.
    pub fn label(self) -> &'static str {
        match self {
            UnitKind::County => "县",
            UnitKind::Town => "镇",
            UnitKind::Village => "村(社区)",
            UnitKind::Group => "村民小组",
            UnitKind::Grid => "网格",
            UnitKind::Department => "部门",
        }
    }
}

/// One unit of the hierarchy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrgUnit {
    pub code: UnitCode,
    pub name: String,
    pub kind: UnitKind,
    /// Parent unit; `None` only for the root (the county, or a town that runs alone).
    pub parent: Option<UnitCode>,
    /// For departments: the key that catalog entries use to name their responsible department.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department_key: Option<String>,
}

/// The org tree of one town, or of a county with its towns, checked for shape on construction.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OrgTree {
    units: BTreeMap<UnitCode, OrgUnit>,
}

impl OrgTree {
    /// Builds a tree; every unit but the root needs a parent that exists and fits its kind.
    pub fn new(units: impl IntoIterator<Item = OrgUnit>) -> Result<Self> {
        let units: BTreeMap<_, _> = units.into_iter().map(|u| (u.code.clone(), u)).collect();
        for u in units.values() {
            let parent_kind = u.parent.as_ref().map(|p| {
                units.get(p).map(|p| p.kind).ok_or_else(|| CoreError::InvalidInput(format!("单位 {} 的上级 {} 不存在", u.name, p)))
            });
            let parent_kind = parent_kind.transpose()?;
            let fits = matches!(
                (u.kind, parent_kind),
                (UnitKind::County, None)
                    | (UnitKind::Town, None | Some(UnitKind::County))
                    | (UnitKind::Department, Some(UnitKind::Town | UnitKind::County))
                    | (UnitKind::Village, Some(UnitKind::Town))
                    | (UnitKind::Group, Some(UnitKind::Village))
                    | (UnitKind::Grid, Some(UnitKind::Village | UnitKind::Group))
            );
            let under = u.parent.as_ref().is_none_or(|p| p.strictly_contains(&u.code));
            if !fits || !under {
                return Err(CoreError::InvalidInput(format!("单位 {}({})的层级或代码与上级不符", u.name, u.code)));
            }
        }
        Ok(Self { units })
    }

    /// Looks a unit up by code.
    pub fn get(&self, code: &UnitCode) -> Option<&OrgUnit> {
        self.units.get(code)
    }

    /// All units, ordered by code.
    pub fn units(&self) -> impl Iterator<Item = &OrgUnit> {
        self.units.values()
    }

    /// The department unit that carries a catalog department key.
    pub fn department(&self, key: &str) -> Option<&OrgUnit> {
        self.units.values().find(|u| u.department_key.as_deref() == Some(key))
    }

    /// The nearest ancestor (or the unit itself) of the given kind.
    pub fn ancestor_of_kind(&self, code: &UnitCode, kind: UnitKind) -> Option<&OrgUnit> {
        let mut cur = self.units.get(code);
        while let Some(u) = cur {
            if u.kind == kind {
                return Some(u);
            }
            cur = u.parent.as_ref().and_then(|p| self.units.get(p));
        }
        None
    }
}

/// Roles people hold. Which role may take which action is decided in [`crate::workflow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Grid member 网格员.
    GridMember,
    /// Group leader 村民小组长.
    GroupLeader,
    /// Village service station staff 便民服务站代办员.
    StationStaff,
    /// Village secretary or head 村书记/村主任.
    VillageHead,
    /// Town comprehensive-governance center operator 综治中心坐席.
    CenterOperator,
    /// Handler in a town department 部门经办人.
    DepartmentHandler,
    /// Town leader 镇领导.
    TownLeader,
    /// Operator of the county social-governance center 县社会治理中心坐席.
    CountyOperator,
    /// County leader 县领导.
    CountyLeader,
    /// System administrator 系统管理员.
    Admin,
    /// The town server's automation (deadline sweeper) 系统.
    System,
}

impl Role {
    /// Every role, for tables and tests.
    pub const ALL: [Role; 11] = [
        Role::GridMember,
        Role::GroupLeader,
        Role::StationStaff,
        Role::VillageHead,
        Role::CenterOperator,
        Role::DepartmentHandler,
        Role::TownLeader,
        Role::CountyOperator,
        Role::CountyLeader,
        Role::Admin,
        Role::System,
    ];

    /// Machine name, as stored and sent (`grid_member`, `station_staff` …).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::GridMember => "grid_member",
            Role::GroupLeader => "group_leader",
            Role::StationStaff => "station_staff",
            Role::VillageHead => "village_head",
            Role::CenterOperator => "center_operator",
            Role::DepartmentHandler => "department_handler",
            Role::TownLeader => "town_leader",
            Role::CountyOperator => "county_operator",
            Role::CountyLeader => "county_leader",
            Role::Admin => "admin",
            Role::System => "system",
        }
    }

    /// Chinese name of the role.
    pub fn label(self) -> &'static str {
        match self {
            Role::GridMember => "网格员",
            Role::GroupLeader => "村民小组长",
            Role::StationStaff => "便民服务站代办员",
            Role::VillageHead => "村(社区)负责人",
            Role::CenterOperator => "综治中心工作人员",
            Role::DepartmentHandler => "部门经办人",
            Role::TownLeader => "镇领导",
            Role::CountyOperator => "县社会治理中心坐席",
            Role::CountyLeader => "县领导",
            Role::Admin => "系统管理员",
            Role::System => "系统",
        }
    }

    /// The unit kind a holder of this role belongs to.
    pub fn unit_kind(self) -> UnitKind {
        match self {
            Role::GridMember => UnitKind::Grid,
            Role::GroupLeader => UnitKind::Group,
            Role::StationStaff | Role::VillageHead => UnitKind::Village,
            Role::CenterOperator | Role::TownLeader | Role::Admin | Role::System => UnitKind::Town,
            Role::CountyOperator | Role::CountyLeader => UnitKind::County,
            Role::DepartmentHandler => UnitKind::Department,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A person who uses Gridlink, with one role in one unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// Stable identifier (login name or staff number).
    pub id: String,
    pub name: String,
    pub role: Role,
    pub unit: UnitCode,
}

/// Who is acting on this device. Kept in the local store after login.
pub type Identity = Person;

/// What the scope rule needs to know about a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordScope<'a> {
    /// Where the record belongs: the grid of an incident, the station of a service request.
    pub location: &'a UnitCode,
    /// The unit that currently holds the record (after escalation or dispatch).
    pub holder: Option<&'a UnitCode>,
    /// The person the record is currently assigned to, if any.
    pub assignee: Option<&'a str>,
    /// The person who reported or received it.
    pub reporter: Option<&'a str>,
}

/// How a person may see a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Not visible at all.
    None,
    /// Visible but not theirs to work on (e.g. a reporter after escalation).
    Read,
    /// Within their unit's scope or assigned to them.
    Full,
}

/// The version of a town's units as `GET /api/v1/units` sends them: the first 8 bytes of the
/// body's SHA-256, in hex. A phone that holds that version asks `?unless=` it, and the server
/// answers 304 with no body while the units are unchanged.
pub fn units_version(body: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(body)[..8])
}

/// The scope rule of the domain guide as a pure function: a person sees records of their own unit
/// and everything below it, plus records assigned to their unit or to them; a reporter keeps read
/// access to what they reported. Nobody sees a sibling's records unless assigned.
///
/// Working on a record (editing it) needs [`Access::Full`]: the person's unit holds the record or
/// is above its holder, or it is assigned to them. Seeing it through its location only (a record
/// of one's grid that was escalated to the town) or as its reporter gives [`Access::Read`]; the
/// permission table may still allow specific actions then, such as the grid member's field check.
pub fn access(person: &Person, record: &RecordScope<'_>) -> Access {
    let holder = record.holder.unwrap_or(record.location);
    if person.unit.contains(holder) || record.assignee == Some(person.id.as_str()) {
        Access::Full
    } else if person.unit.contains(record.location) || record.reporter == Some(person.id.as_str()) {
        Access::Read
    } else {
        Access::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> UnitCode {
        UnitCode::parse(s).unwrap()
    }

    #[test]
    fn codes_validate_and_nest() {
        assert!(UnitCode::parse("53233110120").is_err());
        assert!(UnitCode::parse("532331101201-").is_err());
        assert!(UnitCode::parse("532331101201-03/../x").is_err());
        let town = c("532331101");
        let village = c("532331101201");
        let grid = c("532331101201-03-02");
        let dept = c("532331101-D01");
        assert!(town.contains(&village) && town.contains(&grid) && town.contains(&dept));
        assert!(village.contains(&grid) && !village.contains(&dept));
        assert!(!c("532331101201-03").contains(&c("532331101201-030")));
        assert!(!c("532331101202").contains(&grid));
        assert_eq!(grid.parent(), Some(c("532331101201-03")));
        assert_eq!(village.parent(), Some(town.clone()));
        assert_eq!(town.parent(), None);
    }

    #[test]
    fn the_county_is_above_its_towns_only() {
        let county = c("532331");
        let county_dept = c("532331-GA");
        assert!(UnitCode::parse("53233").is_err() && UnitCode::parse("5323311").is_err());
        for below in ["532331101", "532331102201", "532331101201-03-02", "532331101-D01", "532331-GA"] {
            assert!(county.strictly_contains(&c(below)), "{below}");
        }
        assert!(!county.contains(&c("532332101")), "a neighbouring county's town");
        assert!(!county_dept.contains(&c("532331101")) && !c("532331101").contains(&county_dept));
        assert_eq!(county_dept.parent(), Some(county.clone()));
        assert_eq!(county.parent(), None);
        assert_eq!(c("532331101201-03").town(), Some("532331101"));
        assert_eq!((county.town(), county_dept.town()), (None, None));
        assert!(county_dept.is_county_level() && !c("532331101").is_county_level());
        let unit = |code: &str, kind, parent: Option<&str>| OrgUnit {
            code: c(code),
            name: code.into(),
            kind,
            parent: parent.map(c),
            department_key: None,
        };
        let tree = OrgTree::new([
            unit("532331", UnitKind::County, None),
            unit("532331-GA", UnitKind::Department, Some("532331")),
            unit("532331101", UnitKind::Town, Some("532331")),
            unit("532331102", UnitKind::Town, Some("532331")),
            unit("532331102201", UnitKind::Village, Some("532331102")),
        ])
        .unwrap();
        assert_eq!(tree.ancestor_of_kind(&c("532331102201"), UnitKind::County).map(|u| u.name.as_str()), Some("532331"));
        let village_under_county =
            OrgTree::new([unit("532331", UnitKind::County, None), unit("532331201", UnitKind::Village, Some("532331"))]);
        assert!(village_under_county.is_err(), "a village hangs under a town, not the county");
    }

    #[test]
    fn role_names_match_serde() {
        for r in Role::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }

    #[test]
    fn scope_rule() {
        let grid_a = c("532331101201-01-01");
        let grid_b = c("532331101201-01-02");
        let member = Person { id: "wang".into(), name: "王".into(), role: Role::GridMember, unit: grid_a.clone() };
        let dept = Person { id: "li".into(), name: "李".into(), role: Role::DepartmentHandler, unit: c("532331101-D01") };
        let own = RecordScope { location: &grid_a, holder: None, assignee: None, reporter: None };
        let sibling = RecordScope { location: &grid_b, holder: None, assignee: None, reporter: None };
        assert_eq!(access(&member, &own), Access::Full);
        assert_eq!(access(&member, &sibling), Access::None);
        assert_eq!(access(&dept, &own), Access::None);
        let town = c("532331101");
        let dispatched = RecordScope { location: &grid_b, holder: Some(&dept.unit), assignee: None, reporter: None };
        assert_eq!(access(&dept, &dispatched), Access::Full);
        let escalated = RecordScope { location: &grid_b, holder: Some(&town), assignee: None, reporter: Some("wang") };
        assert_eq!(access(&member, &escalated), Access::Read);
        // The county sees every town; a town loses working access once it passed a record up.
        let county = Person { id: "xian".into(), name: "县".into(), role: Role::CountyOperator, unit: c("532331") };
        assert_eq!(access(&county, &own), Access::Full);
        let at_county = RecordScope { location: &grid_b, holder: Some(&county.unit), assignee: None, reporter: None };
        let center = Person { id: "zz".into(), name: "综治".into(), role: Role::CenterOperator, unit: town.clone() };
        assert_eq!(access(&center, &at_county), Access::Read);
        let other_town = Person { id: "qt".into(), name: "他镇".into(), role: Role::CenterOperator, unit: c("532331102") };
        assert_eq!(access(&other_town, &at_county), Access::None);
    }
}
