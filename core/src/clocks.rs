//! A clock per holder (分段计时): who a record is waiting for now, and by when.
//!
//! Outcome-based appraisal charges each unit only for the time a record was in its hands:
//! - **处置时限 (handling)** runs against the unit a record was dispatched to, from the dispatch
//!   until it hands the record back — with its result (处置反馈) or by returning it (退回). An
//!   approved extension moves the deadline. When the center's verification fails and the record
//!   goes back to the department, the department gets back the time it had left when it handed
//!   back: the center's wait is never charged to it.
//! - **核查时限 (verification)** runs against the unit that answers for the record (the one that
//!   accepted it, usually the town center) from the handling result until it verifies or fails
//!   the verification; its length is the catalog's `center_limits.verify`.
//! - **结案时限 (closing)** runs against the same unit from the verification until it closes the
//!   record; its length is `center_limits.close`.
//! - **承诺时限 (promise)**: a service request's promised date, against its holder while open.
//!
//! A suspended (挂账), reported or accepted incident has no clock running. Overdue lists, the
//! deadline sweeper's supervision notices (督办) and the figures all read [`current_clock`].

use serde::{Deserialize, Serialize};

use crate::calendar::{TimeLimit, WorkCalendar};
use crate::org::UnitCode;
use crate::workflow::{RecordKind, RecordState, Status};

/// Time limits of the town center's own steps, from the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CenterLimits {
    /// From the handling result to the verification (核查).
    pub verify: TimeLimit,
    /// From the verification to closing (结案).
    pub close: TimeLimit,
}

impl Default for CenterLimits {
    fn default() -> Self {
        Self { verify: TimeLimit::WorkingDays(2), close: TimeLimit::WorkingDays(1) }
    }
}

/// Which step a clock times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockStage {
    Handling,
    Verification,
    Closing,
    Promise,
}

impl ClockStage {
    /// Chinese name.
    pub fn label(self) -> &'static str {
        match self {
            ClockStage::Handling => "处置",
            ClockStage::Verification => "核查",
            ClockStage::Closing => "结案",
            ClockStage::Promise => "承诺办结",
        }
    }
}

/// The clock running on a record now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderClock {
    pub stage: ClockStage,
    /// The unit the record is waiting for.
    pub unit: UnitCode,
    /// Unix ms; overdue once now is past it.
    pub due_ms: i64,
}

impl HolderClock {
    /// True once the due time has passed.
    pub fn overdue(&self, now_ms: i64) -> bool {
        self.due_ms < now_ms
    }
}

/// The clock running on a record in `state`, if any.
pub fn current_clock(kind: RecordKind, state: &RecordState, limits: &CenterLimits, calendar: &WorkCalendar) -> Option<HolderClock> {
    let status = state.status?;
    let answerable = || state.owner.clone().or_else(|| state.holder.clone());
    let (stage, unit, due_ms) = match (kind, status) {
        (RecordKind::Incident, Status::Dispatched | Status::InProgress) => {
            (ClockStage::Handling, state.holder.clone()?, state.deadline_ms?)
        }
        (RecordKind::Incident, Status::Handled) => {
            (ClockStage::Verification, answerable()?, calendar.deadline(state.handled_at_ms?, limits.verify))
        }
        (RecordKind::Incident, Status::Verified) => {
            (ClockStage::Closing, answerable()?, calendar.deadline(state.verified_at_ms?, limits.close))
        }
        (RecordKind::ServiceRequest, s) if s.is_open() => (ClockStage::Promise, state.holder.clone()?, state.deadline_ms?),
        _ => return None,
    };
    Some(HolderClock { stage, unit, due_ms })
}

/// The last verification round (passed or failed): when it was due and when it was done.
pub fn last_verification(state: &RecordState, limits: &CenterLimits, calendar: &WorkCalendar) -> Option<(i64, i64)> {
    Some((calendar.deadline(state.checked_result_at_ms?, limits.verify), state.checked_at_ms?))
}
