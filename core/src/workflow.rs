//! The workflow of incidents (事件) and service requests (便民服务/代办) as data and pure functions.
//!
//! A record's history is its timeline: entries appended by devices, each an [`Action`] with actor,
//! role, unit, [`Hlc`] timestamp and note. The current state is [`fold`]ed from the timeline in
//! (HLC, entry id) order. Devices act offline, so two of them may act concurrently on the same
//! state; after merging, the later entry in that order may no longer be valid. It is kept and marked
//! as a conflict with the reason, never dropped, so everybody sees what happened.
//!
//! Who may do what, from which state, at which level is the one table [`RULES`]; [`check`] applies
//! it, so a phone refusing an action and the fold marking a conflict use the same rule.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::hlc::Hlc;
use crate::org::{Role, UnitCode};

/// The two kinds of records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// Incident 事件, reported from the field.
    Incident,
    /// Service request 便民服务事项, taken at a village station.
    ServiceRequest,
}

impl RecordKind {
    /// Name stored in documents and the index.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Incident => "incident",
            RecordKind::ServiceRequest => "service_request",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "incident" => Some(RecordKind::Incident),
            "service_request" => Some(RecordKind::ServiceRequest),
            _ => None,
        }
    }
}

macro_rules! labelled_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal, $l:literal;)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $v,)* }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];

            /// Machine name, as stored.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s,)* }
            }

            /// Chinese name shown to users.
            pub fn label(self) -> &'static str {
                match self { $($name::$v => $l,)* }
            }

            /// Parses the machine name.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some($name::$v),)* _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.label())
            }
        }
    };
}

labelled_enum! {
    /// The state of a record. Incidents and service requests use disjoint subsets.
    Status {
        /// 已上报: reported, waiting for a unit to accept it.
        Reported = "reported", "已上报";
        /// 已受理.
        Accepted = "accepted", "已受理";
        /// 已派遣: sent to a department or down a level, waiting for sign-off.
        Dispatched = "dispatched", "已派遣";
        /// 处置中.
        InProgress = "in_progress", "处置中";
        /// 已处置: result reported, waiting for field verification.
        Handled = "handled", "待核查";
        /// 已核查.
        Verified = "verified", "已核查";
        /// 已结案.
        Closed = "closed", "已结案";
        /// 挂账: long-running, on hold.
        Suspended = "suspended", "挂账";
        /// 已受理 (service request at the station).
        Received = "received", "已受理";
        /// 待补正: materials missing.
        MaterialsMissing = "materials_missing", "待补正";
        /// 待代办: queued for the next run to the town.
        Queued = "queued", "待代办";
        /// 已移交: handed off to the town in a batch.
        HandedOff = "handed_off", "已移交";
        /// 办理中: the town signed for the errand and is working on it.
        Processing = "processing", "办理中";
        /// 已办结.
        Completed = "completed", "已办结";
        /// 已送达.
        Delivered = "delivered", "已送达";
        /// 已归档.
        Archived = "archived", "已归档";
        /// 不予受理/退件.
        Rejected = "rejected", "已退件";
        /// 已撤回.
        Withdrawn = "withdrawn", "已撤回";
    }
}

impl Status {
    /// True while somebody still has to act (the record counts as open work).
    pub fn is_open(self) -> bool {
        !matches!(self, Status::Closed | Status::Delivered | Status::Archived | Status::Rejected | Status::Withdrawn)
    }
}

labelled_enum! {
    /// The kind of an [`Action`], without its payload.
    ActionKind {
        Report = "report", "上报";
        Route = "route", "分流";
        SelfResolve = "self_resolve", "自行处置";
        Accept = "accept", "受理";
        Escalate = "escalate", "逐级上报";
        Dispatch = "dispatch", "派遣";
        Sign = "sign", "签收";
        Return = "return", "退回";
        RequestExtension = "request_extension", "申请延期";
        ApproveExtension = "approve_extension", "批准延期";
        DenyExtension = "deny_extension", "驳回延期";
        Handle = "handle", "处置反馈";
        Verify = "verify", "核查通过";
        FailVerification = "fail_verification", "核查不通过";
        Close = "close", "结案";
        Evaluate = "evaluate", "满意度评价";
        Suspend = "suspend", "挂账";
        Resume = "resume", "恢复办理";
        Supervise = "supervise", "督办";
        Receive = "receive", "受理申请";
        RequestMaterials = "request_materials", "要求补正材料";
        SupplyMaterials = "supply_materials", "材料补齐";
        Queue = "queue", "列入代办";
        HandOff = "hand_off", "移交代办";
        AcceptHandOff = "accept_hand_off", "接收代办件";
        Complete = "complete", "办结";
        Deliver = "deliver", "送达";
        Archive = "archive", "归档";
        FollowUp = "follow_up", "回访";
        Reject = "reject", "退件";
        Withdraw = "withdraw", "撤回";
    }
}

/// One workflow action with its payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    Report,
    /// Routed by the town's rules to the unit that should handle it (分流).
    Route {
        to_unit: UnitCode,
    },
    /// Fixed on the spot by the people of the grid; evidence photos by SHA-256.
    SelfResolve {
        #[serde(default)]
        photos: Vec<String>,
    },
    Accept,
    /// Pass upwards (grid ► village ► town ► county).
    Escalate {
        to_unit: UnitCode,
    },
    /// Send to a department or down a level (the county to a county department or back to a
    /// town); the deadline is fixed when dispatched.
    Dispatch {
        to_unit: UnitCode,
        deadline_ms: Option<i64>,
    },
    Sign,
    /// Not ours: back to the unit that dispatched it.
    Return,
    RequestExtension {
        until_ms: i64,
    },
    ApproveExtension,
    DenyExtension,
    Handle {
        #[serde(default)]
        photos: Vec<String>,
    },
    Verify,
    FailVerification,
    Close,
    Evaluate {
        satisfaction: u8,
    },
    Suspend,
    Resume,
    /// Supervision notice 督办/催办; `overdue` when raised because the deadline passed.
    Supervise {
        #[serde(default)]
        overdue: bool,
        /// Units the notice is addressed to (the holder and its parent for overdue items).
        #[serde(default)]
        to_units: Vec<UnitCode>,
    },
    /// Intake at the station; the promised date comes from the service-item catalog.
    Receive {
        deadline_ms: Option<i64>,
    },
    RequestMaterials {
        missing: Vec<String>,
    },
    SupplyMaterials {
        supplied: Vec<String>,
    },
    Queue,
    /// Carried to the town in a batch (定时代办).
    HandOff {
        to_unit: UnitCode,
        batch_id: String,
        carrier: String,
    },
    /// The town signs for an errand of a batch.
    AcceptHandOff,
    Complete,
    Deliver,
    Archive,
    FollowUp {
        satisfaction: u8,
    },
    Reject,
    Withdraw,
}

impl Action {
    /// The kind of this action.
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Report => ActionKind::Report,
            Action::Route { .. } => ActionKind::Route,
            Action::SelfResolve { .. } => ActionKind::SelfResolve,
            Action::Accept => ActionKind::Accept,
            Action::Escalate { .. } => ActionKind::Escalate,
            Action::Dispatch { .. } => ActionKind::Dispatch,
            Action::Sign => ActionKind::Sign,
            Action::Return => ActionKind::Return,
            Action::RequestExtension { .. } => ActionKind::RequestExtension,
            Action::ApproveExtension => ActionKind::ApproveExtension,
            Action::DenyExtension => ActionKind::DenyExtension,
            Action::Handle { .. } => ActionKind::Handle,
            Action::Verify => ActionKind::Verify,
            Action::FailVerification => ActionKind::FailVerification,
            Action::Close => ActionKind::Close,
            Action::Evaluate { .. } => ActionKind::Evaluate,
            Action::Suspend => ActionKind::Suspend,
            Action::Resume => ActionKind::Resume,
            Action::Supervise { .. } => ActionKind::Supervise,
            Action::Receive { .. } => ActionKind::Receive,
            Action::RequestMaterials { .. } => ActionKind::RequestMaterials,
            Action::SupplyMaterials { .. } => ActionKind::SupplyMaterials,
            Action::Queue => ActionKind::Queue,
            Action::HandOff { .. } => ActionKind::HandOff,
            Action::AcceptHandOff => ActionKind::AcceptHandOff,
            Action::Complete => ActionKind::Complete,
            Action::Deliver => ActionKind::Deliver,
            Action::Archive => ActionKind::Archive,
            Action::FollowUp { .. } => ActionKind::FollowUp,
            Action::Reject => ActionKind::Reject,
            Action::Withdraw => ActionKind::Withdraw,
        }
    }
}

/// Where, relative to the record, the actor's unit must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorScope {
    /// The actor's unit holds the record.
    Holder,
    /// The actor's unit holds the record or is above the holder.
    HolderOrAbove,
    /// The actor's unit is or is above the unit that accepted the record (or its holder before that).
    OwnerOrAbove,
    /// The actor's unit is or is above the record's location (its grid or station).
    LocationOrAbove,
    /// The actor works at or above or below the record's location, or above its holder
    /// (a grid member taking an errand for his village's station).
    Related,
}

/// One row of the permission table.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub action: ActionKind,
    pub kind: RecordKind,
    pub roles: &'static [Role],
    /// States the action may start from; empty means it creates the record.
    pub from: &'static [Status],
    pub scope: ActorScope,
    /// The note (reason, result) must not be empty.
    pub note_required: bool,
}

use ActorScope as S;
use RecordKind::{Incident as Inc, ServiceRequest as Svc};
use Role::*;
use Status::*;

/// Who may pass an incident up a level: the field, the village, and the town center to the county.
const ESCALATORS: &[Role] = &[GridMember, GroupLeader, StationStaff, VillageHead, CenterOperator];
const FIELD_AND_VILLAGE: &[Role] = &[GridMember, GroupLeader, StationStaff, VillageHead];
/// Who works on what was dispatched to their unit: a town center works on what the county sent
/// back to its town (a town center cannot dispatch to its own town, so nothing else reaches it so).
const WORKERS: &[Role] = &[GridMember, GroupLeader, StationStaff, VillageHead, DepartmentHandler, CenterOperator];
const TRIAGE: &[Role] = &[StationStaff, VillageHead, CenterOperator, CountyOperator];
const VERIFIERS: &[Role] = &[GridMember, GroupLeader, StationStaff, VillageHead, CenterOperator, CountyOperator];
const APPROVERS: &[Role] = &[StationStaff, VillageHead, CenterOperator, TownLeader, CountyOperator, CountyLeader];
const STATION: &[Role] = &[StationStaff, VillageHead];
const STATION_AND_FIELD: &[Role] = &[StationStaff, VillageHead, GridMember];
const STATION_AND_TOWN: &[Role] = &[StationStaff, VillageHead, DepartmentHandler, CenterOperator];
const TOWN_SERVICE: &[Role] = &[DepartmentHandler, CenterOperator];
const LEADERS: &[Role] = &[VillageHead, CenterOperator, TownLeader, CountyOperator, CountyLeader];
const SUPERVISORS: &[Role] = &[VillageHead, CenterOperator, TownLeader, CountyOperator, CountyLeader, System];
const INCIDENT_OPEN: &[Status] = &[Reported, Accepted, Dispatched, InProgress, Handled, Verified, Suspended];

/// Who may do what: the one permission table of Gridlink.
#[rustfmt::skip]
pub const RULES: &[Rule] = &[
    //   action                            kind roles                        from states                                        actor scope            note required
    rule_row(ActionKind::Report,            Inc, &[GridMember, GroupLeader, StationStaff, VillageHead, CenterOperator], &[], S::LocationOrAbove, false),
    rule_row(ActionKind::Route,             Inc, &[System, CenterOperator], &[Reported],                          S::HolderOrAbove,   false),
    rule_row(ActionKind::SelfResolve,       Inc, FIELD_AND_VILLAGE, &[Reported],                                      S::HolderOrAbove,   true),
    rule_row(ActionKind::Accept,            Inc, TRIAGE,            &[Reported],                                      S::HolderOrAbove,   false),
    rule_row(ActionKind::Escalate,          Inc, ESCALATORS,        &[Reported, Accepted],                            S::HolderOrAbove,   true),
    rule_row(ActionKind::Dispatch,          Inc, TRIAGE,            &[Accepted],                                      S::OwnerOrAbove,    false),
    rule_row(ActionKind::Sign,              Inc, WORKERS,           &[Dispatched],                                    S::Holder,          false),
    rule_row(ActionKind::Return,            Inc, WORKERS,           &[Dispatched, InProgress],                        S::Holder,          true),
    rule_row(ActionKind::RequestExtension,  Inc, WORKERS,           &[Dispatched, InProgress],                        S::Holder,          true),
    rule_row(ActionKind::ApproveExtension,  Inc, APPROVERS,         &[Dispatched, InProgress],                        S::OwnerOrAbove,    false),
    rule_row(ActionKind::DenyExtension,     Inc, APPROVERS,         &[Dispatched, InProgress],                        S::OwnerOrAbove,    true),
    rule_row(ActionKind::Handle,            Inc, WORKERS,           &[InProgress],                                    S::Holder,          true),
    rule_row(ActionKind::Verify,            Inc, VERIFIERS,         &[Handled],                                       S::LocationOrAbove, false),
    rule_row(ActionKind::FailVerification,  Inc, VERIFIERS,         &[Handled],                                       S::LocationOrAbove, true),
    rule_row(ActionKind::Close,             Inc, TRIAGE,            &[Verified],                                      S::OwnerOrAbove,    false),
    rule_row(ActionKind::Evaluate,          Inc, VERIFIERS,         &[Closed],                                        S::LocationOrAbove, false),
    rule_row(ActionKind::Suspend,           Inc, LEADERS,           &[Accepted, Dispatched, InProgress],              S::OwnerOrAbove,    true),
    rule_row(ActionKind::Resume,            Inc, LEADERS,           &[Suspended],                                     S::OwnerOrAbove,    false),
    rule_row(ActionKind::Supervise,         Inc, SUPERVISORS,       INCIDENT_OPEN,                                    S::HolderOrAbove,   false),
    rule_row(ActionKind::Receive,           Svc, STATION_AND_FIELD, &[],                                              S::Related,         false),
    rule_row(ActionKind::RequestMaterials,  Svc, STATION_AND_TOWN,  &[Received, Queued, HandedOff, Processing],       S::HolderOrAbove,   false),
    rule_row(ActionKind::SupplyMaterials,   Svc, STATION_AND_FIELD, &[MaterialsMissing],                              S::Related,         false),
    rule_row(ActionKind::Queue,             Svc, STATION,           &[Received],                                      S::HolderOrAbove,   false),
    rule_row(ActionKind::HandOff,           Svc, STATION,           &[Queued],                                        S::HolderOrAbove,   false),
    rule_row(ActionKind::AcceptHandOff,     Svc, TOWN_SERVICE,      &[HandedOff],                                     S::Holder,          false),
    rule_row(ActionKind::Complete,          Svc, STATION_AND_TOWN,  &[Received, HandedOff, Processing],               S::HolderOrAbove,   false),
    rule_row(ActionKind::Deliver,           Svc, STATION_AND_FIELD, &[Completed],                                     S::Related,         false),
    rule_row(ActionKind::Archive,           Svc, STATION,           &[Delivered],                                     S::Related,         false),
    rule_row(ActionKind::FollowUp,          Svc, STATION_AND_FIELD, &[Delivered, Archived],                           S::Related,         false),
    rule_row(ActionKind::Reject,            Svc, STATION_AND_TOWN,  &[Received, MaterialsMissing, Queued, HandedOff, Processing], S::HolderOrAbove, true),
    rule_row(ActionKind::Withdraw,          Svc, STATION_AND_FIELD, &[Received, MaterialsMissing, Queued],            S::Related,         true),
];

const fn rule_row(
    action: ActionKind,
    kind: RecordKind,
    roles: &'static [Role],
    from: &'static [Status],
    scope: ActorScope,
    note_required: bool,
) -> Rule {
    Rule { action, kind, roles, from, scope, note_required }
}

/// The rule for an action.
pub fn rule(action: ActionKind) -> &'static Rule {
    RULES.iter().find(|r| r.action == action).expect("every action kind has a rule")
}

/// One entry of a record's timeline (全程留痕: who, in which role and unit, when, what, why).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// UUID v7, generated on the device.
    pub id: String,
    pub at: Hlc,
    /// Person id of the actor.
    pub actor: String,
    /// Display name of the actor at the time.
    pub actor_name: String,
    pub role: Role,
    pub unit: UnitCode,
    pub action: Action,
    pub note: String,
}

impl TimelineEntry {
    /// The total order of the timeline.
    pub fn order_key(&self) -> (Hlc, &str) {
        (self.at, self.id.as_str())
    }
}

/// The state folded from a record's timeline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordState {
    /// `None` before the first valid entry.
    pub status: Option<Status>,
    /// The unit currently working on the record.
    pub holder: Option<UnitCode>,
    /// The unit that accepted it and answers for it (dispatches, approves, closes).
    pub owner: Option<UnitCode>,
    pub deadline_ms: Option<i64>,
    pub pending_extension_ms: Option<i64>,
    /// Resident satisfaction, 1–5.
    pub satisfaction: Option<u8>,
    pub supervisions: u32,
    pub escalations: u32,
    pub returns: u32,
    /// The status to go back to when a suspended record resumes.
    pub suspended_from: Option<Status>,
    /// Person id of the reporter (incident) or receiver (service request).
    pub reporter: Option<String>,
    pub opened_at_ms: Option<i64>,
    /// When it left the open states (closed, delivered, rejected, withdrawn).
    pub finished_at_ms: Option<i64>,
    /// Materials the station is waiting for.
    pub missing_materials: Vec<String>,
    /// Hand-off batch the request travelled in.
    pub batch_id: Option<String>,
    pub last_at: Option<Hlc>,
    /// Unit that reported the result (处置反馈) last, and when.
    pub handled_by: Option<UnitCode>,
    pub handled_at_ms: Option<i64>,
    /// When the holder last handed the record back with a result; the handling clock is paused
    /// from then until a failed verification gives it back (see [`crate::clocks`]).
    #[serde(default)]
    pub handed_back_at_ms: Option<i64>,
    /// When the result was last verified (核查通过).
    #[serde(default)]
    pub verified_at_ms: Option<i64>,
    /// The last verification act (passed or failed): when the result it judged was handed back,
    /// and when it was judged — the center's verification clock of that round.
    #[serde(default)]
    pub checked_result_at_ms: Option<i64>,
    #[serde(default)]
    pub checked_at_ms: Option<i64>,
    /// Unit that closed the incident.
    pub closed_by: Option<UnitCode>,
    /// The record was held by the town or a department at some point (it did not stay in the village).
    pub reached_town: bool,
    /// The record was held by the county or a county department at some point (it left the town).
    #[serde(default)]
    pub reached_county: bool,
    /// Service requests: when completed (办结) and delivered (送达).
    pub completed_at_ms: Option<i64>,
    pub delivered_at_ms: Option<i64>,
}

/// What the fold needs besides the timeline.
#[derive(Debug, Clone, Copy)]
pub struct FoldContext<'a> {
    pub kind: RecordKind,
    /// The grid of an incident or the village (station) of a service request.
    pub location: &'a UnitCode,
}

/// A timeline entry as seen after the fold: applied, or kept and marked as a conflict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoldedEntry {
    pub entry: TimelineEntry,
    /// Why the entry could not take effect at its place in the order (Chinese, for users).
    pub conflict: Option<String>,
}

/// The result of folding a timeline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Folded {
    pub state: RecordState,
    /// All entries in timeline order.
    pub entries: Vec<FoldedEntry>,
}

impl Folded {
    /// Number of entries marked as conflicting.
    pub fn conflicts(&self) -> usize {
        self.entries.iter().filter(|e| e.conflict.is_some()).count()
    }
}

/// True when a unit code has the shape that a holder of `role` works in.
pub fn role_fits_unit(role: Role, unit: &UnitCode) -> bool {
    let segments = unit.as_str().matches('-').count();
    let head = unit.head().len();
    match role {
        CenterOperator | TownLeader => head == 9 && segments == 0,
        CountyOperator | CountyLeader => head == 6 && segments == 0,
        // The administrator and the server's automation work for a town or a county.
        Admin | System => matches!(head, 6 | 9) && segments == 0,
        DepartmentHandler => matches!(head, 6 | 9) && segments == 1,
        StationStaff | VillageHead => head == 12 && segments == 0,
        GroupLeader | GridMember => head == 12 && (1..=2).contains(&segments),
    }
}

/// True when `unit` stands where `scope` requires relative to the record.
fn in_scope(scope: ActorScope, state: &RecordState, ctx: FoldContext<'_>, unit: &UnitCode) -> bool {
    let holder = state.holder.as_ref().unwrap_or(ctx.location);
    match scope {
        S::Holder => unit == holder,
        S::HolderOrAbove => unit.contains(holder),
        S::OwnerOrAbove => unit.contains(state.owner.as_ref().unwrap_or(holder)),
        S::LocationOrAbove => unit.contains(ctx.location),
        S::Related => unit.contains(ctx.location) || ctx.location.contains(unit) || unit.contains(holder),
    }
}

/// Checks whether `entry` may be applied to `state`: the permission table plus the rules that
/// depend on the payload. Used by devices before appending and by [`fold`] for every entry.
pub fn check(state: &RecordState, ctx: FoldContext<'_>, entry: &TimelineEntry) -> Result<()> {
    let kind = entry.action.kind();
    let r = rule(kind);
    let not_allowed = |reason: &str| CoreError::NotAllowed { action: kind, role: entry.role, reason: reason.to_owned() };
    if r.kind != ctx.kind {
        return Err(not_allowed("该操作不适用于此类记录"));
    }
    if !r.roles.contains(&entry.role) {
        return Err(not_allowed("角色不在该操作的许可范围内"));
    }
    if !role_fits_unit(entry.role, &entry.unit) {
        return Err(not_allowed("角色与所在单位层级不符"));
    }
    match (state.status, r.from.is_empty()) {
        (None, true) => {}
        (Some(s), false) if r.from.contains(&s) => {}
        (Some(s), _) => {
            return Err(CoreError::InvalidTransition { action: kind, status: s });
        }
        (None, false) => {
            return Err(CoreError::InvalidTransition { action: kind, status: Reported });
        }
    }
    let unit = &entry.unit;
    let holder = state.holder.as_ref().unwrap_or(ctx.location);
    if !in_scope(r.scope, state, ctx, unit) {
        return Err(not_allowed("记录不在本单位的办理范围内"));
    }
    if r.note_required && entry.note.trim().is_empty() {
        return Err(CoreError::NoteRequired { action: kind });
    }
    match &entry.action {
        Action::Route { to_unit } if !to_unit.contains(ctx.location) || to_unit.as_str().contains('-') => {
            Err(not_allowed("只能分流到事发地所在的村(社区)或镇"))
        }
        Action::Escalate { to_unit } if !(to_unit.strictly_contains(holder) && to_unit.strictly_contains(unit)) => {
            Err(not_allowed("只能向上级单位逐级上报"))
        }
        Action::Dispatch { to_unit, .. } if !unit.strictly_contains(to_unit) => Err(not_allowed("只能派遣给本单位下属的单位或部门")),
        Action::RequestExtension { until_ms } => {
            if state.pending_extension_ms.is_some() {
                Err(not_allowed("已有待审批的延期申请"))
            } else if state.deadline_ms.is_some_and(|d| *until_ms <= d) {
                Err(CoreError::InvalidInput("延期后的期限必须晚于原期限".into()))
            } else {
                Ok(())
            }
        }
        Action::ApproveExtension | Action::DenyExtension if state.pending_extension_ms.is_none() => {
            Err(not_allowed("没有待审批的延期申请"))
        }
        Action::Evaluate { satisfaction } | Action::FollowUp { satisfaction } => {
            if !(1..=5).contains(satisfaction) {
                Err(CoreError::InvalidInput("满意度须为1至5".into()))
            } else if state.satisfaction.is_some() {
                Err(not_allowed("已评价过,不能重复评价"))
            } else {
                Ok(())
            }
        }
        Action::RequestMaterials { missing } if missing.is_empty() => Err(CoreError::InvalidInput("请列出需要补正的材料".into())),
        Action::HandOff { batch_id, carrier, .. } if batch_id.trim().is_empty() || carrier.trim().is_empty() => {
            Err(CoreError::InvalidInput("移交须填写批次和携带人".into()))
        }
        _ => Ok(()),
    }
}

/// Applies an entry that [`check`] accepted.
fn apply(state: &mut RecordState, ctx: FoldContext<'_>, entry: &TimelineEntry) {
    let now = entry.at.wall_ms;
    let next = match &entry.action {
        Action::Report | Action::Receive { .. } => {
            state.reporter = Some(entry.actor.clone());
            state.opened_at_ms = Some(now);
            state.holder = Some(if ctx.kind == RecordKind::Incident { entry.unit.clone() } else { ctx.location.clone() });
            if let Action::Receive { deadline_ms } = entry.action {
                state.deadline_ms = deadline_ms;
            }
            if ctx.kind == RecordKind::Incident { Reported } else { Received }
        }
        Action::Route { to_unit } => {
            state.holder = Some(to_unit.clone());
            Reported
        }
        Action::SelfResolve { .. } => {
            state.handled_by = Some(entry.unit.clone());
            state.handled_at_ms = Some(now);
            Handled
        }
        Action::Accept => {
            state.owner = Some(entry.unit.clone());
            state.holder = Some(entry.unit.clone());
            Accepted
        }
        Action::Escalate { to_unit } => {
            state.escalations += 1;
            state.owner = None;
            state.holder = Some(to_unit.clone());
            Reported
        }
        Action::Dispatch { to_unit, deadline_ms } => {
            state.holder = Some(to_unit.clone());
            state.deadline_ms = *deadline_ms;
            state.pending_extension_ms = None;
            state.handed_back_at_ms = None;
            Dispatched
        }
        Action::Sign => InProgress,
        Action::Return => {
            state.returns += 1;
            state.holder = state.owner.clone();
            state.pending_extension_ms = None;
            Accepted
        }
        Action::RequestExtension { until_ms } => {
            state.pending_extension_ms = Some(*until_ms);
            state.status.unwrap_or(InProgress)
        }
        Action::ApproveExtension => {
            state.deadline_ms = state.pending_extension_ms.take();
            state.status.unwrap_or(InProgress)
        }
        Action::DenyExtension => {
            state.pending_extension_ms = None;
            state.status.unwrap_or(InProgress)
        }
        Action::Handle { .. } => {
            state.handled_by = Some(entry.unit.clone());
            state.handled_at_ms = Some(now);
            state.handed_back_at_ms = Some(now);
            Handled
        }
        Action::Verify => {
            state.verified_at_ms = Some(now);
            state.checked_result_at_ms = state.handled_at_ms;
            state.checked_at_ms = Some(now);
            Verified
        }
        Action::FailVerification => {
            state.checked_result_at_ms = state.handled_at_ms;
            state.checked_at_ms = Some(now);
            // Back to the holder with the time it had left when it handed back: the wait for
            // the verification is not its time.
            if let (Some(deadline), Some(back)) = (state.deadline_ms, state.handed_back_at_ms.take()) {
                state.deadline_ms = Some(deadline + (now - back).max(0));
            }
            InProgress
        }
        Action::Close => {
            state.closed_by = Some(entry.unit.clone());
            Closed
        }
        Action::Evaluate { satisfaction } | Action::FollowUp { satisfaction } => {
            state.satisfaction = Some(*satisfaction);
            state.status.unwrap_or(Closed)
        }
        Action::Suspend => {
            state.suspended_from = state.status;
            Suspended
        }
        Action::Resume => state.suspended_from.take().unwrap_or(Accepted),
        Action::Supervise { .. } => {
            state.supervisions += 1;
            state.status.unwrap_or(Reported)
        }
        Action::RequestMaterials { missing } => {
            state.missing_materials = missing.clone();
            state.holder = Some(ctx.location.clone());
            MaterialsMissing
        }
        Action::SupplyMaterials { supplied } => {
            state.missing_materials.retain(|m| !supplied.contains(m));
            Received
        }
        Action::Queue => Queued,
        Action::AcceptHandOff => Processing,
        Action::HandOff { to_unit, batch_id, .. } => {
            state.holder = Some(to_unit.clone());
            state.batch_id = Some(batch_id.clone());
            HandedOff
        }
        Action::Complete => {
            state.holder = Some(ctx.location.clone());
            Completed
        }
        Action::Deliver => {
            state.delivered_at_ms = Some(now);
            Delivered
        }
        Action::Archive => Archived,
        Action::Reject => Rejected,
        Action::Withdraw => Withdrawn,
    };
    if state.status.is_some_and(Status::is_open) && !next.is_open() {
        state.finished_at_ms = Some(now);
    }
    if next == Completed {
        state.completed_at_ms = Some(now);
    }
    // Held by the town, the county or one of their departments: the record left the village.
    if state.holder.as_ref().is_some_and(|h| matches!(h.head().len(), 6 | 9)) {
        state.reached_town = true;
    }
    if state.holder.as_ref().is_some_and(UnitCode::is_county_level) {
        state.reached_county = true;
    }
    state.status = Some(next);
    state.last_at = Some(entry.at);
}

/// Folds a timeline (in any order) into the current state. Deterministic: the same set of entries
/// gives the same result on every replica.
pub fn fold(ctx: FoldContext<'_>, mut entries: Vec<TimelineEntry>) -> Folded {
    entries.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    entries.dedup_by(|a, b| a.id == b.id);
    let mut state = RecordState::default();
    let entries = entries
        .into_iter()
        .map(|entry| {
            let conflict = match check(&state, ctx, &entry) {
                Ok(()) => {
                    apply(&mut state, ctx, &entry);
                    None
                }
                Err(e) => Some(format!("与并发操作冲突,未生效:{e}")),
            };
            FoldedEntry { entry, conflict }
        })
        .collect();
    Folded { state, entries }
}

/// The actions a person could take on a record now (for the phone's action buttons).
pub fn allowed_actions(state: &RecordState, ctx: FoldContext<'_>, role: Role, unit: &UnitCode) -> Vec<ActionKind> {
    RULES
        .iter()
        .filter(|r| r.kind == ctx.kind && r.roles.contains(&role) && role_fits_unit(role, unit))
        .filter(|r| match state.status {
            None => r.from.is_empty(),
            Some(s) => r.from.contains(&s),
        })
        .filter(|r| in_scope(r.scope, state, ctx, unit))
        .filter(|r| match r.action {
            ActionKind::ApproveExtension | ActionKind::DenyExtension => state.pending_extension_ms.is_some(),
            ActionKind::RequestExtension => state.pending_extension_ms.is_none(),
            ActionKind::Evaluate | ActionKind::FollowUp => state.satisfaction.is_none(),
            _ => true,
        })
        .map(|r| r.action)
        .collect()
}
