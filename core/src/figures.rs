//! Figures the town wants to see, computed from the records themselves (never typed in), and the
//! station ledger (台账). Appraisal rests on outcomes only — on time, resolved, verified,
//! satisfied — never on check-ins, online time or click counts.
//!
//! Definitions (a record belongs to a period when it was reported or received in it). Each unit is
//! charged only for the time a record was in its hands: a clock per holder ([`crate::clocks`]).
//! - *received*: incidents reported in the period; *closed*: those of them closed by now;
//! - *on-time rate* (department, 按时处置率): among closed incidents that had a handling deadline,
//!   the share whose result was reported (处置反馈) by the deadline in force — approved extensions
//!   move it, and after a failed verification the department gets back the time it had left when
//!   it handed back, so the center's wait is never counted against it;
//! - *verification on-time rate* (center, 核查按时率): among incidents of the period whose result
//!   was judged (verified or failed), the share whose last judgement came within
//!   `center_limits.verify` of the result it judged;
//! - *overdue now*: the clock running now (handling, verification or closing) is past its due
//!   time — whenever reported; suspended, reported and accepted incidents have no clock. Per
//!   holder ([`HolderRow`]): which unit the overdue records are waiting for, by clock;
//! - *settled in the village* (小事不出村): closed incidents never held by the town or a department,
//!   as a share of closed ones; *settled in the town* (大事不出镇): received incidents closed inside
//!   the town, never passed up to the county, as a share of received ones;
//! - per town (各镇, what the county compares): the same outcome figures, by the town of the
//!   record's location;
//! - errands: *on-time delivery* is the share of delivered requests delivered by the promised date.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::calendar::WorkCalendar;
use crate::catalog::Catalog;
use crate::clocks::{CenterLimits, ClockStage, HolderClock, current_clock, last_verification};
use crate::pii::mask_name;
use crate::record::{Record, RecordBody};
use crate::routing::village_of;
use crate::workflow::{Folded, RecordKind, Status};

/// What the figures need of one record, derived from its document and timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordFacts {
    pub id: String,
    pub kind: RecordKind,
    pub display_no: String,
    /// Minor category code (incidents) or service item code.
    pub category: String,
    pub location: String,
    pub village: Option<String>,
    pub status: Option<Status>,
    pub holder: Option<String>,
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
    pub deadline_ms: Option<i64>,
    pub handled_by: Option<String>,
    pub handled_ms: Option<i64>,
    pub reached_town: bool,
    /// The record was passed up to the county at some point.
    #[serde(default)]
    pub reached_county: bool,
    pub satisfaction: Option<u8>,
    pub completed_ms: Option<i64>,
    pub delivered_ms: Option<i64>,
    pub batch_id: Option<String>,
    pub supervisions: u32,
    /// The clock running now: whom the record waits for, by when.
    #[serde(default)]
    pub clock: Option<HolderClock>,
    /// The last verification round (passed or failed): when it was due, and when it was done.
    #[serde(default)]
    pub verify_due_ms: Option<i64>,
    #[serde(default)]
    pub verified_ms: Option<i64>,
}

impl RecordFacts {
    /// The facts of a record; `limits` and `calendar` time the center's own steps.
    pub fn of(record: &Record, folded: &Folded, limits: &CenterLimits, calendar: &WorkCalendar) -> Self {
        let s = &folded.state;
        let verification = last_verification(s, limits, calendar);
        let category = match &record.body {
            RecordBody::Incident(f) => f.category.clone(),
            RecordBody::ServiceRequest(f) => f.item.clone(),
        };
        Self {
            id: record.id.clone(),
            kind: record.kind(),
            display_no: record.display_no().to_owned(),
            category,
            location: record.location().to_string(),
            village: village_of(record.location()).map(|v| v.to_string()),
            status: s.status,
            holder: s.holder.as_ref().map(ToString::to_string),
            created_ms: record.created_at_ms,
            finished_ms: s.finished_at_ms,
            deadline_ms: s.deadline_ms,
            handled_by: s.handled_by.as_ref().map(ToString::to_string),
            handled_ms: s.handled_at_ms,
            reached_town: s.reached_town,
            reached_county: s.reached_county,
            satisfaction: s.satisfaction,
            completed_ms: s.completed_at_ms,
            delivered_ms: s.delivered_at_ms,
            batch_id: s.batch_id.clone(),
            supervisions: s.supervisions,
            clock: current_clock(record.kind(), s, limits, calendar),
            verify_due_ms: verification.map(|v| v.0),
            verified_ms: verification.map(|v| v.1),
        }
    }

    fn open(&self) -> bool {
        self.status.is_none_or(Status::is_open)
    }

    fn closed(&self) -> bool {
        self.status == Some(Status::Closed)
    }

    /// The clock running now is past its due time.
    pub fn overdue(&self, now_ms: i64) -> bool {
        self.clock.as_ref().is_some_and(|c| c.overdue(now_ms))
    }

    /// Whether the department reported its result by the handling deadline in force.
    fn on_time(&self) -> Option<bool> {
        let deadline = self.deadline_ms?;
        Some(self.handled_ms.or(self.finished_ms)? <= deadline)
    }

    /// Whether the center verified the last result within its time limit.
    fn verified_on_time(&self) -> Option<bool> {
        Some(self.verified_ms? <= self.verify_due_ms?)
    }
}

/// Outcome figures of a group of incidents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub key: String,
    pub name: String,
    pub received: u32,
    pub closed: u32,
    pub with_deadline: u32,
    pub on_time: u32,
    pub overdue_now: u32,
    pub settled_in_village: u32,
    /// Closed without the county's help (大事不出镇).
    #[serde(default)]
    pub settled_in_town: u32,
    pub close_hours_total: f64,
    pub satisfaction_total: u32,
    pub evaluations: u32,
    /// Results verified, and of them verified within the center's time limit.
    #[serde(default)]
    pub verified: u32,
    #[serde(default)]
    pub verified_on_time: u32,
}

impl Row {
    fn add(&mut self, f: &RecordFacts, in_period: bool, now_ms: i64) {
        if f.overdue(now_ms) {
            self.overdue_now += 1;
        }
        if !in_period {
            return;
        }
        self.received += 1;
        if f.closed() {
            self.closed += 1;
            if !f.reached_town {
                self.settled_in_village += 1;
            }
            if !f.reached_county {
                self.settled_in_town += 1;
            }
            if let Some(end) = f.finished_ms {
                self.close_hours_total += (end - f.created_ms) as f64 / 3_600_000.0;
            }
            if let Some(ok) = f.on_time() {
                self.with_deadline += 1;
                self.on_time += u32::from(ok);
            }
        }
        if let Some(s) = f.satisfaction {
            self.satisfaction_total += u32::from(s);
            self.evaluations += 1;
        }
        if let Some(ok) = f.verified_on_time() {
            self.verified += 1;
            self.verified_on_time += u32::from(ok);
        }
    }

    /// 核查按时率: share of verified results verified within the center's time limit.
    pub fn verify_on_time_rate(&self) -> Option<f64> {
        (self.verified > 0).then(|| f64::from(self.verified_on_time) / f64::from(self.verified))
    }

    /// Share of closed incidents with a deadline that were handled in time.
    pub fn on_time_rate(&self) -> Option<f64> {
        (self.with_deadline > 0).then(|| f64::from(self.on_time) / f64::from(self.with_deadline))
    }
    /// Average hours from report to closing.
    pub fn avg_close_hours(&self) -> Option<f64> {
        (self.closed > 0).then(|| self.close_hours_total / f64::from(self.closed))
    }
    /// Average satisfaction (1–5).
    pub fn satisfaction(&self) -> Option<f64> {
        (self.evaluations > 0).then(|| f64::from(self.satisfaction_total) / f64::from(self.evaluations))
    }
    /// 小事不出村: share of closed incidents settled without the town.
    pub fn village_share(&self) -> Option<f64> {
        (self.closed > 0).then(|| f64::from(self.settled_in_village) / f64::from(self.closed))
    }
    /// 大事不出镇: share of received incidents closed inside the town.
    pub fn town_share(&self) -> Option<f64> {
        (self.received > 0).then(|| f64::from(self.settled_in_town) / f64::from(self.received))
    }
}

/// A department's work on dispatched incidents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DepartmentRow {
    pub key: String,
    pub name: String,
    /// Results reported in the period.
    pub handled: u32,
    pub handled_on_time: u32,
    pub holding_now: u32,
    pub overdue_now: u32,
}

/// What one unit is holding up now: the records whose running clock is against it, by clock.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HolderRow {
    pub key: String,
    pub name: String,
    /// Records whose clock runs against this unit now.
    pub running: u32,
    /// Of them overdue, by clock: handling (处置), verification (核查), closing (结案).
    pub handling_overdue: u32,
    pub verification_overdue: u32,
    pub closing_overdue: u32,
}

impl HolderRow {
    /// All overdue records this unit holds up.
    pub fn overdue(&self) -> u32 {
        self.handling_overdue + self.verification_overdue + self.closing_overdue
    }
}

/// A station's service requests (便民服务事项).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StationServiceRow {
    pub key: String,
    pub name: String,
    pub received: u32,
    pub completed: u32,
    pub delivered: u32,
    pub delivered_on_time: u32,
    pub rejected_or_withdrawn: u32,
    pub open: u32,
    pub satisfaction_total: u32,
    pub evaluations: u32,
}

/// All figures for a period.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub from_ms: i64,
    pub to_ms: i64,
    pub totals: Row,
    /// One row per town (the county's view; a single town has one).
    #[serde(default)]
    pub by_town: Vec<Row>,
    pub by_village: Vec<Row>,
    pub by_category: Vec<Row>,
    pub by_department: Vec<DepartmentRow>,
    /// Incidents whose clock runs now, by the unit they wait for (whenever reported).
    #[serde(default)]
    pub by_holder: Vec<HolderRow>,
    pub service_requests_by_station: Vec<StationServiceRow>,
}

/// Computes the figures of `[from_ms, to_ms)` as of `now_ms`. `name` gives display names of units.
pub fn compute(facts: &[RecordFacts], catalog: &Catalog, from_ms: i64, to_ms: i64, now_ms: i64, name: &dyn Fn(&str) -> String) -> Figures {
    let mut totals = Row { key: "all".into(), name: "全镇".into(), ..Default::default() };
    let mut towns: BTreeMap<String, Row> = BTreeMap::new();
    let mut villages: BTreeMap<String, Row> = BTreeMap::new();
    let mut categories: BTreeMap<String, Row> = BTreeMap::new();
    let mut depts: BTreeMap<String, DepartmentRow> = BTreeMap::new();
    let mut stations: BTreeMap<String, StationServiceRow> = BTreeMap::new();
    let mut holders: BTreeMap<String, HolderRow> = BTreeMap::new();
    // A town's or the county's department (a village's groups and grids have 12-digit heads).
    let is_dept = |u: &str| u.split('-').next().is_some_and(|h| matches!(h.len(), 6 | 9)) && u.contains('-');
    for f in facts {
        let in_period = (from_ms..to_ms).contains(&f.created_ms);
        match f.kind {
            RecordKind::Incident => {
                totals.add(f, in_period, now_ms);
                let town = f.location.get(..9).unwrap_or_default().to_owned();
                towns
                    .entry(town.clone())
                    .or_insert_with(|| Row { name: name(&town), key: town, ..Default::default() })
                    .add(f, in_period, now_ms);
                let village = f.village.clone().unwrap_or_else(|| f.location.clone());
                villages
                    .entry(village.clone())
                    .or_insert_with(|| Row { name: name(&village), key: village, ..Default::default() })
                    .add(f, in_period, now_ms);
                let major = f.category.get(..2).unwrap_or_default().to_owned();
                let major_name = catalog.categories.iter().find(|m| m.code == major).map(|m| m.name.clone()).unwrap_or_default();
                categories
                    .entry(major.clone())
                    .or_insert_with(|| Row { key: major, name: major_name, ..Default::default() })
                    .add(f, in_period, now_ms);
                if let Some(h) = f.handled_by.as_deref().filter(|h| is_dept(h))
                    && f.handled_ms.is_some_and(|t| (from_ms..to_ms).contains(&t))
                {
                    let d = depts.entry(h.to_owned()).or_insert_with(|| DepartmentRow {
                        key: h.to_owned(),
                        name: name(h),
                        ..Default::default()
                    });
                    d.handled += 1;
                    d.handled_on_time += u32::from(f.on_time() == Some(true));
                }
                if let Some(h) = f.holder.as_deref().filter(|h| is_dept(h) && f.open()) {
                    let d = depts.entry(h.to_owned()).or_insert_with(|| DepartmentRow {
                        key: h.to_owned(),
                        name: name(h),
                        ..Default::default()
                    });
                    d.holding_now += 1;
                    // Only its own clock: a result waiting for the center is not its delay.
                    d.overdue_now += u32::from(f.clock.as_ref().is_some_and(|c| c.unit.as_str() == h && c.overdue(now_ms)));
                }
                if let Some(c) = &f.clock {
                    let key = c.unit.to_string();
                    let row = holders.entry(key.clone()).or_insert_with(|| HolderRow { name: name(&key), key, ..Default::default() });
                    row.running += 1;
                    if c.overdue(now_ms) {
                        match c.stage {
                            ClockStage::Handling | ClockStage::Promise => row.handling_overdue += 1,
                            ClockStage::Verification => row.verification_overdue += 1,
                            ClockStage::Closing => row.closing_overdue += 1,
                        }
                    }
                }
            }
            RecordKind::ServiceRequest => {
                if !in_period {
                    continue;
                }
                let key = f.location.clone();
                let row = stations.entry(key.clone()).or_insert_with(|| StationServiceRow { name: name(&key), key, ..Default::default() });
                row.received += 1;
                row.completed += u32::from(f.completed_ms.is_some());
                if let Some(d) = f.delivered_ms {
                    row.delivered += 1;
                    row.delivered_on_time += u32::from(f.deadline_ms.is_none_or(|dl| d <= dl));
                }
                row.rejected_or_withdrawn += u32::from(matches!(f.status, Some(Status::Rejected | Status::Withdrawn)));
                row.open += u32::from(f.open());
                if let Some(s) = f.satisfaction {
                    row.satisfaction_total += u32::from(s);
                    row.evaluations += 1;
                }
            }
        }
    }
    Figures {
        from_ms,
        to_ms,
        totals,
        by_town: towns.into_values().collect(),
        by_village: villages.into_values().collect(),
        by_category: categories.into_values().collect(),
        by_department: depts.into_values().collect(),
        by_holder: holders.into_values().collect(),
        service_requests_by_station: stations.into_values().collect(),
    }
}

/// A titled table of text cells, written out as CSV or XLSX by the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub title: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

/// A cell: text or a number (so spreadsheets can sum it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Cell {
    Number(f64),
    Text(String),
}

impl Cell {
    /// Text form for CSV.
    pub fn text(&self) -> String {
        match self {
            Cell::Number(n) if n.fract() == 0.0 => format!("{n:.0}"),
            Cell::Number(n) => format!("{n:.3}"),
            Cell::Text(t) => t.clone(),
        }
    }
}

fn pct(v: Option<f64>) -> Cell {
    v.map_or(Cell::Text("—".into()), |x| Cell::Text(format!("{:.1}%", x * 100.0)))
}
fn num(v: Option<f64>) -> Cell {
    v.map_or(Cell::Text("—".into()), |x| Cell::Number((x * 10.0).round() / 10.0))
}
fn n(v: u32) -> Cell {
    Cell::Number(f64::from(v))
}

impl Figures {
    /// The figures as tables (for CSV and XLSX export), headers in Chinese.
    pub fn tables(&self) -> Vec<Table> {
        let incident_headers = [
            "单位/分类",
            "受理数",
            "办结数",
            "按时处置率",
            "核查按时率",
            "当前超期",
            "平均办结时长(小时)",
            "小事不出村",
            "大事不出镇",
            "满意度",
            "评价数",
        ];
        let incident_row = |r: &Row| {
            vec![
                Cell::Text(r.name.clone()),
                n(r.received),
                n(r.closed),
                pct(r.on_time_rate()),
                pct(r.verify_on_time_rate()),
                n(r.overdue_now),
                num(r.avg_close_hours()),
                pct(r.village_share()),
                pct(r.town_share()),
                num(r.satisfaction()),
                n(r.evaluations),
            ]
        };
        let headers = |h: &[&str]| h.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let mut totals = vec![incident_row(&self.totals)];
        totals.extend(self.by_village.iter().map(incident_row));
        let mut tables = vec![
            Table { title: "各村(社区)事件办理".into(), headers: headers(&incident_headers), rows: totals },
            Table {
                title: "各类事件办理".into(),
                headers: headers(&incident_headers),
                rows: self.by_category.iter().map(incident_row).collect(),
            },
            Table {
                title: "部门处置".into(),
                headers: headers(&["部门", "处置反馈数", "按时处置数", "按时率", "在办数", "当前超期"]),
                rows: self
                    .by_department
                    .iter()
                    .map(|d| {
                        let rate = (d.handled > 0).then(|| f64::from(d.handled_on_time) / f64::from(d.handled));
                        vec![Cell::Text(d.name.clone()), n(d.handled), n(d.handled_on_time), pct(rate), n(d.holding_now), n(d.overdue_now)]
                    })
                    .collect(),
            },
            Table {
                title: "当前超期(按责任单位)".into(),
                headers: headers(&["责任单位", "计时中", "处置超期", "核查超期", "结案超期", "超期合计"]),
                rows: self
                    .by_holder
                    .iter()
                    .map(|h| {
                        vec![
                            Cell::Text(h.name.clone()),
                            n(h.running),
                            n(h.handling_overdue),
                            n(h.verification_overdue),
                            n(h.closing_overdue),
                            n(h.overdue()),
                        ]
                    })
                    .collect(),
            },
            Table {
                title: "便民服务站代办".into(),
                headers: headers(&["服务站", "受理数", "办结数", "送达数", "按时送达率", "退件/撤回", "在办数", "满意度"]),
                rows: self
                    .service_requests_by_station
                    .iter()
                    .map(|e| {
                        let rate = (e.delivered > 0).then(|| f64::from(e.delivered_on_time) / f64::from(e.delivered));
                        let sat = (e.evaluations > 0).then(|| f64::from(e.satisfaction_total) / f64::from(e.evaluations));
                        vec![
                            Cell::Text(e.name.clone()),
                            n(e.received),
                            n(e.completed),
                            n(e.delivered),
                            pct(rate),
                            n(e.rejected_or_withdrawn),
                            n(e.open),
                            num(sat),
                        ]
                    })
                    .collect(),
            },
        ];
        // The county compares its towns side by side; a single town has no such table.
        if self.by_town.len() > 1 {
            let mut rows = vec![incident_row(&self.totals)];
            rows.extend(self.by_town.iter().map(incident_row));
            tables.insert(0, Table { title: "各镇事件办理".into(), headers: headers(&incident_headers), rows });
        }
        tables
    }
}

/// The ledger (台账) of a station: every service request received in a period, personal data
/// masked.
pub fn ledger(records: &[(Record, Folded)], catalog: &Catalog, title: &str) -> Table {
    let fmt = |ms: Option<i64>| ms.map_or(String::new(), |m| crate::calendar::local_time(m).format("%Y-%m-%d %H:%M").to_string());
    let mut rows: Vec<&(Record, Folded)> = records.iter().filter(|(r, _)| r.kind() == RecordKind::ServiceRequest).collect();
    rows.sort_by_key(|(r, _)| r.created_at_ms);
    Table {
        title: title.to_owned(),
        headers: [
            "编号",
            "事项",
            "申请人",
            "身份证号",
            "办理方式",
            "受理时间",
            "承诺期限",
            "状态",
            "办结时间",
            "送达时间",
            "按时送达",
            "批次",
            "满意度",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect(),
        rows: rows
            .into_iter()
            .filter_map(|(r, f)| {
                let RecordBody::ServiceRequest(b) = &r.body else {
                    return None;
                };
                let s = &f.state;
                let on_time = match (s.delivered_at_ms, s.deadline_ms) {
                    (Some(d), Some(dl)) => {
                        if d <= dl {
                            "是"
                        } else {
                            "否"
                        }
                    }
                    _ => "",
                };
                Some(vec![
                    Cell::Text(r.display_no().to_owned()),
                    Cell::Text(catalog.service_item(&b.item).map(|i| i.name.clone()).unwrap_or_else(|_| b.item.clone())),
                    Cell::Text(mask_name(&b.resident.name)),
                    Cell::Text(b.resident.id_number.as_deref().map(crate::pii::mask_id_number).unwrap_or_default()),
                    Cell::Text(b.mode.label().to_owned()),
                    Cell::Text(fmt(Some(r.created_at_ms))),
                    Cell::Text(fmt(s.deadline_ms.map(|d| d - 1))),
                    Cell::Text(s.status.map(|x| x.label()).unwrap_or_default().to_owned()),
                    Cell::Text(fmt(s.completed_at_ms)),
                    Cell::Text(fmt(s.delivered_at_ms)),
                    Cell::Text(on_time.to_owned()),
                    Cell::Text(s.batch_id.clone().unwrap_or_default()),
                    s.satisfaction.map_or(Cell::Text(String::new()), |v| Cell::Number(f64::from(v))),
                ])
            })
            .collect(),
    }
}

/// The manifest of a hand-off batch (交接清单): which requests, which materials, who carried them.
pub fn manifest(batch_id: &str, records: &[(Record, Folded)], catalog: &Catalog) -> Table {
    let mut carrier = String::new();
    let mut when = None;
    let mut rows = Vec::new();
    for (r, f) in records {
        let RecordBody::ServiceRequest(b) = &r.body else {
            continue;
        };
        if f.state.batch_id.as_deref() != Some(batch_id) {
            continue;
        }
        for e in &f.entries {
            if let crate::workflow::Action::HandOff { batch_id: id, carrier: c, .. } = &e.entry.action
                && id == batch_id
                && e.conflict.is_none()
            {
                carrier = c.clone();
                when = Some(e.entry.at.wall_ms);
            }
        }
        let received: Vec<&str> = b.materials.iter().filter(|(_, got)| **got).map(|(m, _)| m.as_str()).collect();
        rows.push(vec![
            Cell::Text(r.display_no().to_owned()),
            Cell::Text(catalog.service_item(&b.item).map(|i| i.name.clone()).unwrap_or_else(|_| b.item.clone())),
            Cell::Text(mask_name(&b.resident.name)),
            Cell::Text(received.join("、")),
            Cell::Text(f.state.status.map(|s| s.label()).unwrap_or_default().to_owned()),
        ]);
    }
    let when = when.map(|m| crate::calendar::local_time(m).format("%Y-%m-%d %H:%M").to_string()).unwrap_or_default();
    Table {
        title: format!("代办交接清单 批次 {batch_id} 携带人 {carrier} 移交时间 {when}"),
        headers: ["编号", "事项", "申请人", "所附材料", "状态"].iter().map(|s| (*s).to_owned()).collect(),
        rows,
    }
}
