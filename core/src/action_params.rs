//! Every action's input in one generic form, declared once here next to [`Action`]: what an action
//! asks for ([`ActionKind::params`]) and how its input becomes the action
//! ([`Action::from_params`]). The phone API and the console's action form use this and nothing
//! else, so a new action touches the workflow (its variant, rule and effect) and the two functions
//! below, not every client.

use crate::error::{CoreError, Result};
use crate::hlc::Hlc;
use crate::org::{Person, UnitCode};
use crate::workflow::{Action, ActionKind, FoldContext, RecordState, TimelineEntry, check};

/// One input an action asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// A unit to send the record to (派遣/上报/移交的单位).
    ToUnit,
    /// A deadline for the receiving unit; empty means the catalog's time limit.
    Deadline,
    /// The date an extension runs until.
    Until,
    /// A satisfaction score, 1–5.
    Satisfaction,
    /// Evidence photos (their SHA-256), uploaded with the sync.
    Photos,
    /// Materials: missing ones (补正) or supplied ones (补齐).
    Materials,
    /// The hand-off batch's number.
    Batch,
    /// Who carries the batch.
    Carrier,
}

impl Param {
    /// The field's name in the phone API and the console form.
    pub fn as_str(self) -> &'static str {
        match self {
            Param::ToUnit => "to_unit",
            Param::Deadline => "deadline_ms",
            Param::Until => "until_ms",
            Param::Satisfaction => "satisfaction",
            Param::Photos => "photos",
            Param::Materials => "materials",
            Param::Batch => "batch_id",
            Param::Carrier => "carrier",
        }
    }

    /// The field's name for people.
    pub fn label(self) -> &'static str {
        match self {
            Param::ToUnit => "单位",
            Param::Deadline => "办理期限",
            Param::Until => "延期至",
            Param::Satisfaction => "满意度",
            Param::Photos => "照片",
            Param::Materials => "材料",
            Param::Batch => "批次号",
            Param::Carrier => "送件人",
        }
    }

    /// Whether the action cannot be taken without it.
    pub fn required(self) -> bool {
        matches!(self, Param::ToUnit | Param::Until | Param::Satisfaction | Param::Materials | Param::Batch | Param::Carrier)
    }
}

/// The input of any action besides its kind. Fields an action does not ask for are ignored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActionParams {
    pub to_unit: Option<String>,
    pub deadline_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub satisfaction: Option<u8>,
    pub photos: Vec<String>,
    pub materials: Vec<String>,
    pub batch_id: Option<String>,
    pub carrier: Option<String>,
}

impl ActionKind {
    /// What the action asks for besides a note. `Report` and `Receive` make a record and are not
    /// taken on one; the server's own supervision fills its addressees itself.
    pub fn params(self) -> &'static [Param] {
        use ActionKind as K;
        match self {
            K::Route | K::Escalate => &[Param::ToUnit],
            K::Dispatch => &[Param::ToUnit, Param::Deadline],
            K::RequestExtension => &[Param::Until],
            K::Handle | K::SelfResolve => &[Param::Photos],
            K::Evaluate | K::FollowUp => &[Param::Satisfaction],
            K::RequestMaterials | K::SupplyMaterials => &[Param::Materials],
            K::HandOff => &[Param::ToUnit, Param::Batch, Param::Carrier],
            K::Report
            | K::Receive
            | K::Accept
            | K::Sign
            | K::Return
            | K::ApproveExtension
            | K::DenyExtension
            | K::Verify
            | K::FailVerification
            | K::Close
            | K::Suspend
            | K::Resume
            | K::Supervise
            | K::Queue
            | K::AcceptHandOff
            | K::Complete
            | K::Deliver
            | K::Archive
            | K::Reject
            | K::Withdraw => &[],
        }
    }

    /// Whether people take this action on an existing record (not `Report` or `Receive`, which
    /// make one).
    pub fn taken_on_records(self) -> bool {
        !matches!(self, ActionKind::Report | ActionKind::Receive)
    }
}

impl Action {
    /// Builds the action of `kind` from its input. A required input that is missing or invalid
    /// is an error naming it in Chinese.
    pub fn from_params(kind: ActionKind, p: ActionParams) -> Result<Action> {
        use ActionKind as K;
        let missing = |param: Param| CoreError::InvalidInput(format!("“{}”需要填写{}", kind.label(), param.label()));
        let unit = |p: &ActionParams| -> Result<UnitCode> {
            let code = p.to_unit.as_deref().filter(|c| !c.trim().is_empty()).ok_or_else(|| missing(Param::ToUnit))?;
            UnitCode::parse(code.trim())
        };
        let text = |v: &Option<String>, param: Param| -> Result<String> {
            v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).ok_or_else(|| missing(param))
        };
        let satisfaction = |p: &ActionParams| -> Result<u8> {
            p.satisfaction.filter(|s| (1..=5).contains(s)).ok_or_else(|| CoreError::InvalidInput("满意度应为 1–5".into()))
        };
        let materials = |p: &ActionParams| -> Result<Vec<String>> {
            if p.materials.is_empty() { Err(missing(Param::Materials)) } else { Ok(p.materials.clone()) }
        };
        Ok(match kind {
            K::Route => Action::Route { to_unit: unit(&p)? },
            K::Escalate => Action::Escalate { to_unit: unit(&p)? },
            K::Dispatch => Action::Dispatch { to_unit: unit(&p)?, deadline_ms: p.deadline_ms },
            K::RequestExtension => Action::RequestExtension { until_ms: p.until_ms.ok_or_else(|| missing(Param::Until))? },
            K::Handle => Action::Handle { photos: p.photos },
            K::SelfResolve => Action::SelfResolve { photos: p.photos },
            K::Evaluate => Action::Evaluate { satisfaction: satisfaction(&p)? },
            K::FollowUp => Action::FollowUp { satisfaction: satisfaction(&p)? },
            K::RequestMaterials => Action::RequestMaterials { missing: materials(&p)? },
            K::SupplyMaterials => Action::SupplyMaterials { supplied: materials(&p)? },
            K::HandOff => Action::HandOff {
                to_unit: unit(&p)?,
                batch_id: text(&p.batch_id, Param::Batch)?,
                carrier: text(&p.carrier, Param::Carrier)?,
            },
            K::Accept => Action::Accept,
            K::Sign => Action::Sign,
            K::Return => Action::Return,
            K::ApproveExtension => Action::ApproveExtension,
            K::DenyExtension => Action::DenyExtension,
            K::Verify => Action::Verify,
            K::FailVerification => Action::FailVerification,
            K::Close => Action::Close,
            K::Suspend => Action::Suspend,
            K::Resume => Action::Resume,
            K::Supervise => Action::Supervise { overdue: false, to_units: Vec::new() },
            K::Queue => Action::Queue,
            K::AcceptHandOff => Action::AcceptHandOff,
            K::Complete => Action::Complete,
            K::Deliver => Action::Deliver,
            K::Archive => Action::Archive,
            K::Reject => Action::Reject,
            K::Withdraw => Action::Withdraw,
            K::Report | K::Receive => return Err(CoreError::InvalidInput(format!("“{}”用于新建记录,不能在已有记录上办理", kind.label()))),
        })
    }

    /// The input this action was built from (the inverse of [`Action::from_params`]).
    pub fn params(&self) -> ActionParams {
        let mut p = ActionParams::default();
        match self {
            Action::Route { to_unit } | Action::Escalate { to_unit } => p.to_unit = Some(to_unit.to_string()),
            Action::Dispatch { to_unit, deadline_ms } => {
                p.to_unit = Some(to_unit.to_string());
                p.deadline_ms = *deadline_ms;
            }
            Action::RequestExtension { until_ms } => p.until_ms = Some(*until_ms),
            Action::Handle { photos } | Action::SelfResolve { photos } => p.photos.clone_from(photos),
            Action::Evaluate { satisfaction } | Action::FollowUp { satisfaction } => p.satisfaction = Some(*satisfaction),
            Action::RequestMaterials { missing: m } | Action::SupplyMaterials { supplied: m } => p.materials.clone_from(m),
            Action::HandOff { to_unit, batch_id, carrier } => {
                p.to_unit = Some(to_unit.to_string());
                p.batch_id = Some(batch_id.clone());
                p.carrier = Some(carrier.clone());
            }
            _ => {}
        }
        p
    }
}

/// The units among `candidates` that `person` may send a record to with an action of `kind`,
/// by the permission table itself (a dispatch goes down, an escalation up, a hand-off to the
/// town): what a picker offers. Empty for an action that takes no unit.
pub fn allowed_targets<'u>(
    state: &RecordState,
    ctx: FoldContext<'_>,
    person: &Person,
    kind: ActionKind,
    candidates: impl IntoIterator<Item = &'u UnitCode>,
    now_ms: i64,
) -> Vec<UnitCode> {
    if !kind.params().contains(&Param::ToUnit) {
        return Vec::new();
    }
    let mut out: Vec<UnitCode> = candidates
        .into_iter()
        .filter(|unit| {
            let p = ActionParams {
                to_unit: Some(unit.to_string()),
                batch_id: Some("-".into()),
                carrier: Some("-".into()),
                ..Default::default()
            };
            let Ok(action) = Action::from_params(kind, p) else { return false };
            let entry = TimelineEntry {
                id: String::new(),
                at: Hlc { wall_ms: now_ms, counter: 0 },
                actor: person.id.clone(),
                actor_name: person.name.clone(),
                role: person.role,
                unit: person.unit.clone(),
                action,
                note: "-".into(),
            };
            check(state, ctx, &entry).is_ok()
        })
        .cloned()
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every action taken on records round-trips through its generic input, and asks for what it
    /// carries.
    #[test]
    fn every_action_round_trips_through_its_params() {
        let samples = [
            Action::Route { to_unit: UnitCode::parse("532331101201").unwrap() },
            Action::Dispatch { to_unit: UnitCode::parse("532331101-D01").unwrap(), deadline_ms: Some(5) },
            Action::RequestExtension { until_ms: 9 },
            Action::Handle { photos: vec!["ab".into()] },
            Action::Evaluate { satisfaction: 4 },
            Action::SupplyMaterials { supplied: vec!["户口簿".into()] },
            Action::HandOff { to_unit: UnitCode::parse("532331101-D03").unwrap(), batch_id: "B1".into(), carrier: "李军".into() },
            Action::Withdraw,
        ];
        for a in samples {
            assert_eq!(Action::from_params(a.kind(), a.params()).unwrap(), a);
        }
        for kind in ActionKind::ALL.iter().copied().filter(|k| k.taken_on_records()) {
            let p = ActionParams {
                to_unit: Some("532331101201".into()),
                until_ms: Some(1),
                satisfaction: Some(5),
                materials: vec!["户口簿".into()],
                batch_id: Some("B".into()),
                carrier: Some("C".into()),
                ..Default::default()
            };
            assert_eq!(Action::from_params(kind, p).unwrap().kind(), kind);
            if kind.params().iter().any(|p| p.required()) {
                let err = Action::from_params(kind, ActionParams::default()).unwrap_err().to_string();
                assert!(err.contains(kind.label()) || err.contains("满意度"), "{err}");
            }
        }
    }
}
