//! Records and enums as the phone's screens need them (labels in Chinese, times in unix ms).

use gridlink_core::RecordSummary;
use gridlink_core::{Action, RecordView};

use crate::error::GridlinkError;

/// The logged-in person.
#[derive(Debug, Clone, uniffi::Record)]
pub struct PersonInfo {
    pub id: String,
    pub name: String,
    /// Machine name of the role (`grid_member`, `station_staff` …).
    pub role: String,
    pub role_label: String,
    /// The person's unit code.
    pub unit: String,
}

impl From<&gridlink_core::Person> for PersonInfo {
    fn from(p: &gridlink_core::Person) -> Self {
        Self {
            id: p.id.clone(),
            name: p.name.clone(),
            role: p.role.as_str().into(),
            role_label: p.role.label().into(),
            unit: p.unit.to_string(),
        }
    }
}

/// An incident category for the report form (大类/小类).
#[derive(Debug, Clone, uniffi::Record)]
pub struct CategoryInfo {
    pub code: String,
    pub name: String,
    pub major_code: String,
    pub major_name: String,
    pub time_limit: String,
}

/// A service item for the station's request form.
#[derive(Debug, Clone, uniffi::Record)]
pub struct ServiceItemInfo {
    pub code: String,
    pub name: String,
    /// `immediate`, `errand`, `home_visit`.
    pub modes: Vec<String>,
    pub materials: Vec<String>,
    pub promised_days: u32,
}

/// A new incident as typed in the field.
#[derive(Debug, Clone, uniffi::Record)]
pub struct IncidentInput {
    pub category: String,
    pub title: String,
    pub description: String,
    pub address: String,
    /// Defaults to the reporter's own grid.
    pub grid: Option<String>,
    /// One fix taken when the report is made (WGS-84); no continuous tracking.
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub urgent: bool,
    pub note: String,
}

/// A new service request taken at the station or on a home visit.
#[derive(Debug, Clone, uniffi::Record)]
pub struct ServiceRequestInput {
    pub item: String,
    /// `immediate`, `errand` or `home_visit`.
    pub mode: String,
    pub resident_name: String,
    pub resident_id_number: Option<String>,
    pub resident_phone: Option<String>,
    pub materials_received: Vec<String>,
    pub description: String,
}

/// A workflow action, with what it needs: its kind (an [`ActionOption::kind`]) and the inputs
/// that action asks for ([`ActionOption::params`]); the rest stay empty. One generic shape, built
/// into the core's action by the core (`Action::from_params`), so a new action needs no change
/// here.
#[derive(Debug, Clone, uniffi::Record)]
pub struct ActionInput {
    /// `accept`, `dispatch` …
    pub kind: String,
    /// A unit code (dispatch, escalate, route, hand-off); pick from `action_targets`.
    #[uniffi(default)]
    pub to_unit: Option<String>,
    /// A dispatch deadline; empty: computed from the catalog and the working-day calendar.
    #[uniffi(default)]
    pub deadline_ms: Option<i64>,
    /// Until when an extension is asked for.
    #[uniffi(default)]
    pub until_ms: Option<i64>,
    /// 1–5 (evaluate, follow-up).
    #[uniffi(default)]
    pub satisfaction: Option<u8>,
    /// Evidence photos (SHA-256 from `attach_photo`).
    #[uniffi(default)]
    pub photos: Vec<String>,
    /// Missing materials (request) or supplied ones (supply).
    #[uniffi(default)]
    pub materials: Vec<String>,
    /// A hand-off's batch number and carrier.
    #[uniffi(default)]
    pub batch_id: Option<String>,
    #[uniffi(default)]
    pub carrier: Option<String>,
}

impl ActionInput {
    /// An action that needs nothing but its kind.
    pub fn of(kind: &str) -> Self {
        Self {
            kind: kind.into(),
            to_unit: None,
            deadline_ms: None,
            until_ms: None,
            satisfaction: None,
            photos: Vec::new(),
            materials: Vec::new(),
            batch_id: None,
            carrier: None,
        }
    }

    /// The core action.
    pub fn into_action(self) -> Result<Action, GridlinkError> {
        let kind = gridlink_core::ActionKind::parse(&self.kind).ok_or_else(|| GridlinkError::Invalid {
            message: format!("未知的操作“{}”", self.kind.chars().take(40).collect::<String>()),
        })?;
        let params = gridlink_core::ActionParams {
            to_unit: self.to_unit,
            deadline_ms: self.deadline_ms,
            until_ms: self.until_ms,
            satisfaction: self.satisfaction,
            photos: self.photos,
            materials: self.materials,
            batch_id: self.batch_id,
            carrier: self.carrier,
        };
        Ok(Action::from_params(kind, params)?)
    }
}

/// An action the current person may take now (a button on the record screen).
#[derive(Debug, Clone, uniffi::Record)]
pub struct ActionOption {
    /// Machine name (`accept`, `dispatch` …).
    pub kind: String,
    pub label: String,
    /// The button must ask for a reason or result.
    pub note_required: bool,
    /// The inputs the action asks for ([`ActionInput`] field names: `to_unit`, `deadline_ms`,
    /// `until_ms`, `satisfaction`, `photos`, `materials`, `batch_id`, `carrier`), required ones
    /// listed in `required_params`.
    pub params: Vec<String>,
    pub required_params: Vec<String>,
}

/// One line of a list screen.
#[derive(Debug, Clone, uniffi::Record)]
pub struct RecordSummaryView {
    pub id: String,
    /// `incident` or `service_request`.
    pub kind: String,
    /// Case number, or the provisional number until the server assigned one.
    pub number: String,
    pub title: String,
    pub status: String,
    pub status_label: String,
    pub deadline_ms: Option<i64>,
    pub overdue: bool,
    pub conflicts: u32,
    pub updated_ms: i64,
}

impl From<RecordSummary> for RecordSummaryView {
    fn from(s: RecordSummary) -> Self {
        Self {
            id: s.id,
            kind: s.kind.as_str().into(),
            number: s.display_no,
            title: s.title,
            status: s.status.map(|x| x.as_str()).unwrap_or_default().into(),
            status_label: s.status.map(|x| x.label()).unwrap_or_default().into(),
            deadline_ms: s.deadline_ms,
            overdue: s.overdue,
            conflicts: s.conflicts.max(0) as u32,
            updated_ms: s.updated_ms,
        }
    }
}

/// One entry of a record's history (全程留痕).
#[derive(Debug, Clone, uniffi::Record)]
pub struct TimelineItem {
    pub id: String,
    pub time_ms: i64,
    pub actor_name: String,
    pub role_label: String,
    pub unit: String,
    pub action: String,
    pub action_label: String,
    pub note: String,
    /// Set when the entry could not take effect (two devices acted at once offline).
    pub conflict: Option<String>,
}

/// A record with everything its screen shows.
#[derive(Debug, Clone, uniffi::Record)]
pub struct RecordDetail {
    pub id: String,
    pub kind: String,
    pub number: String,
    pub case_number: Option<String>,
    pub title: String,
    pub description: String,
    pub address: String,
    pub notes: String,
    pub category: String,
    pub status: String,
    pub status_label: String,
    pub holder: Option<String>,
    pub deadline_ms: Option<i64>,
    pub overdue: bool,
    pub photos: Vec<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub timeline: Vec<TimelineItem>,
    pub allowed: Vec<ActionOption>,
    /// The service request's own fields (`None` for an incident).
    pub service: Option<ServiceRequestDetail>,
}

/// One material of a service request's checklist.
#[derive(Debug, Clone, uniffi::Record)]
pub struct MaterialItem {
    pub name: String,
    pub received: bool,
}

/// What a service-request screen shows.
#[derive(Debug, Clone, uniffi::Record)]
pub struct ServiceRequestDetail {
    pub item_code: String,
    /// The item in words (事项名称).
    pub item_name: String,
    /// `immediate`, `errand` or `home_visit`, and in Chinese.
    pub mode: String,
    pub mode_label: String,
    /// The village whose station took it.
    pub station: String,
    pub materials: Vec<MaterialItem>,
    /// Materials the station is waiting for (补正).
    pub missing_materials: Vec<String>,
    /// The hand-off batch it travelled in.
    pub batch_id: Option<String>,
    /// In full for those who handle the errand, masked for everyone else.
    pub resident_name: String,
    pub resident_id_number: Option<String>,
    pub resident_phone: Option<String>,
    pub personal_data_masked: bool,
}

impl From<RecordView> for RecordDetail {
    fn from(v: RecordView) -> Self {
        use gridlink_core::RecordBody as B;
        let r = &v.record;
        let (title, description, address, notes, category, photos, loc) = match &r.body {
            B::Incident(f) => (
                f.title.clone(),
                f.description.clone(),
                f.address.clone(),
                f.notes.clone(),
                f.category.clone(),
                f.photos.clone(),
                f.location,
            ),
            B::ServiceRequest(f) => (f.item.clone(), f.description.clone(), String::new(), f.notes.clone(), f.item.clone(), vec![], None),
        };
        let s = &v.folded.state;
        Self {
            id: r.id.clone(),
            kind: r.kind().as_str().into(),
            number: r.display_no().into(),
            case_number: r.case_no.clone(),
            title,
            description,
            address,
            notes,
            category,
            status: s.status.map(|x| x.as_str()).unwrap_or_default().into(),
            status_label: s.status.map(|x| x.label()).unwrap_or_default().into(),
            holder: s.holder.as_ref().map(ToString::to_string),
            deadline_ms: s.deadline_ms,
            overdue: v.overdue,
            photos,
            latitude: loc.map(|p| p.lat),
            longitude: loc.map(|p| p.lon),
            timeline: v
                .folded
                .entries
                .iter()
                .map(|e| TimelineItem {
                    id: e.entry.id.clone(),
                    time_ms: e.entry.at.wall_ms,
                    actor_name: e.entry.actor_name.clone(),
                    role_label: e.entry.role.label().into(),
                    unit: e.entry.unit.to_string(),
                    action: e.entry.action.kind().as_str().into(),
                    action_label: e.entry.action.kind().label().into(),
                    note: e.entry.note.clone(),
                    conflict: e.conflict.clone(),
                })
                .collect(),
            allowed: v
                .allowed
                .iter()
                .map(|k| ActionOption {
                    kind: k.as_str().into(),
                    label: k.label().into(),
                    note_required: gridlink_core::workflow::rule(*k).note_required,
                    params: k.params().iter().map(|p| p.as_str().to_owned()).collect(),
                    required_params: k.params().iter().filter(|p| p.required()).map(|p| p.as_str().to_owned()).collect(),
                })
                .collect(),
            service: None,
        }
    }
}

/// Network time limits of sync, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct SyncTimeoutsView {
    /// Establishing the connection.
    pub connect_s: u32,
    /// From the request sent until the answer begins: a dead link fails after this.
    pub response_s: u32,
    /// Sending the request body, and receiving the answer's body.
    pub transfer_s: u32,
    /// The whole request.
    pub round_s: u32,
}

impl From<gridlink_core::sync::SyncTimeouts> for SyncTimeoutsView {
    fn from(t: gridlink_core::sync::SyncTimeouts) -> Self {
        let s = |d: std::time::Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        Self { connect_s: s(t.connect), response_s: s(t.response), transfer_s: s(t.transfer), round_s: s(t.round) }
    }
}

impl SyncTimeoutsView {
    /// The core's limits; every limit must be at least 1 second.
    pub fn to_core(self) -> Result<gridlink_core::sync::SyncTimeouts, GridlinkError> {
        if [self.connect_s, self.response_s, self.transfer_s, self.round_s].contains(&0) {
            return Err(GridlinkError::Invalid { message: "同步超时时间必须至少为1秒".into() });
        }
        let d = |s: u32| std::time::Duration::from_secs(u64::from(s));
        Ok(gridlink_core::sync::SyncTimeouts {
            connect: d(self.connect_s),
            response: d(self.response_s),
            transfer: d(self.transfer_s),
            round: d(self.round_s),
        })
    }
}

/// What a list screen shows; empty fields do not filter.
#[derive(Debug, Clone, Default, uniffi::Record)]
pub struct ListFilter {
    /// `incident` or `service_request`.
    pub kind: Option<String>,
    /// Status names (`dispatched`, `handled` …); any of them.
    pub statuses: Vec<String>,
    pub open_only: bool,
    pub closed_only: bool,
    /// Only the records the person can act on now (my tasks).
    pub mine: bool,
    /// Only the records held by the person's unit now.
    pub my_unit: bool,
    /// Only the records held by this unit now.
    pub holder: Option<String>,
    /// Only the records located in this unit or below (a village, a grid).
    pub within: Option<String>,
    /// A category code or its major prefix (`05`), or a service item code.
    pub category: Option<String>,
    /// Only the records whose running clock is past its due time.
    pub overdue: bool,
    /// Created in `[created_from_ms, created_to_ms)`.
    pub created_from_ms: Option<i64>,
    pub created_to_ms: Option<i64>,
}

impl ListFilter {
    /// The core's query; a bad code or status is refused with a clear message.
    pub fn to_query(&self, now_ms: i64) -> Result<gridlink_core::RecordQuery, GridlinkError> {
        let invalid = |m: String| GridlinkError::Invalid { message: m };
        if self.open_only && self.closed_only {
            return Err(invalid("不能同时只看在办和只看已办结".into()));
        }
        let kind = match self.kind.as_deref() {
            None | Some("") => None,
            Some(k) => Some(
                gridlink_core::RecordKind::parse(k)
                    .ok_or_else(|| invalid(format!("未知的记录类型“{}”", k.chars().take(20).collect::<String>())))?,
            ),
        };
        let statuses = self
            .statuses
            .iter()
            .map(|s| {
                gridlink_core::Status::parse(s).ok_or_else(|| invalid(format!("未知的状态“{}”", s.chars().take(20).collect::<String>())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let unit = |c: &str| gridlink_core::UnitCode::parse(c).map_err(|e| GridlinkError::Invalid { message: e.to_string() });
        let code = |c: &Option<String>| c.as_deref().filter(|c| !c.is_empty()).map(unit).transpose();
        Ok(gridlink_core::RecordQuery {
            kind,
            statuses,
            open_only: self.open_only,
            closed_only: self.closed_only,
            category_prefix: self.category.clone().filter(|c| !c.is_empty()),
            within: code(&self.within)?,
            holder: code(&self.holder)?,
            overdue_at: self.overdue.then_some(now_ms),
            my_tasks: self.mine,
            created_from_ms: self.created_from_ms,
            created_to_ms: self.created_to_ms,
            limit: 50,
            offset: 0,
        })
    }
}

/// One page of a list or of search results, and the number of all matches.
#[derive(Debug, Clone, uniffi::Record)]
pub struct RecordPageView {
    pub items: Vec<RecordSummaryView>,
    pub total: u64,
}

/// An org unit in a picker.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct UnitOption {
    pub code: String,
    pub name: String,
    /// `county`, `town`, `village`, `group`, `grid` or `department`.
    pub kind: String,
    /// Its kind in Chinese (镇, 村(社区) …).
    pub kind_label: String,
}

impl From<&gridlink_core::OrgUnit> for UnitOption {
    fn from(u: &gridlink_core::OrgUnit) -> Self {
        use gridlink_core::UnitKind as K;
        let kind = match u.kind {
            K::County => "county",
            K::Town => "town",
            K::Village => "village",
            K::Group => "group",
            K::Grid => "grid",
            K::Department => "department",
        };
        Self { code: u.code.to_string(), name: u.name.clone(), kind: kind.to_owned(), kind_label: u.kind.label().to_owned() }
    }
}

/// A notice for the person's unit.
#[derive(Debug, Clone, uniffi::Record)]
pub struct NoticeView {
    pub record_id: String,
    pub time_ms: i64,
    pub text: String,
}

/// What a sync did.
#[derive(Debug, Clone, uniffi::Record)]
pub struct SyncReportView {
    pub rounds: u32,
    pub pushed: u32,
    /// Reasons of refused changes (the records were reloaded from the server).
    pub rejected: Vec<String>,
    pub received: u32,
    pub removed: u32,
    pub photos_uploaded: u32,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Records that arrived or changed: screens showing them refresh, nothing else reloads.
    pub changed_ids: Vec<String>,
    /// Records that left the phone (out of scope, or refused and not sent back).
    pub removed_ids: Vec<String>,
    /// Notices (督办/通知) for the person's unit that this sync brought: the notices screen's badge.
    pub new_notices: u32,
}

impl From<gridlink_core::sync::SyncReport> for SyncReportView {
    fn from(r: gridlink_core::sync::SyncReport) -> Self {
        Self {
            rounds: r.rounds as u32,
            pushed: r.pushed as u32,
            rejected: r.rejected.into_iter().map(|(_, reason)| reason).collect(),
            received: r.received_docs as u32,
            removed: r.removed_docs as u32,
            photos_uploaded: r.photos_uploaded as u32,
            bytes_up: r.bytes_up as u64,
            bytes_down: r.bytes_down as u64,
            changed_ids: r.changed_ids,
            removed_ids: r.removed_ids,
            new_notices: r.new_notices as u32,
        }
    }
}

/// The sync status line of the app.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncStatusView {
    pub pending: i64,
    pub pending_photos: i64,
    pub last_success_ms: Option<i64>,
    pub last_attempt_ms: Option<i64>,
    /// The last failure in Chinese, cleared by the next success.
    pub last_error: Option<String>,
    pub logged_in: bool,
}

impl From<gridlink_core::sync::SyncStatus> for SyncStatusView {
    fn from(s: gridlink_core::sync::SyncStatus) -> Self {
        Self {
            pending: s.pending,
            pending_photos: s.pending_photos,
            last_success_ms: s.last_success_ms,
            last_attempt_ms: s.last_attempt_ms,
            last_error: s.last_error,
            logged_in: s.logged_in,
        }
    }
}

#[cfg(test)]
mod tests {
    use gridlink_core::ActionKind;
    use gridlink_core::workflow::RULES;

    use super::*;

    /// An input for an action of `kind`, from what its option says it asks for.
    fn sample(kind: ActionKind) -> ActionInput {
        let mut input = ActionInput::of(kind.as_str());
        for p in kind.params() {
            match p.as_str() {
                "to_unit" => input.to_unit = Some("532331101".into()),
                "until_ms" => input.until_ms = Some(0),
                "satisfaction" => input.satisfaction = Some(5),
                "materials" => input.materials = vec!["x".into()],
                "batch_id" => input.batch_id = Some("b".into()),
                "carrier" => input.carrier = Some("c".into()),
                _ => {}
            }
        }
        input
    }

    #[test]
    fn every_action_the_rules_can_offer_is_expressible() {
        for rule in RULES.iter().filter(|r| !r.from.is_empty()) {
            assert!(rule.action.taken_on_records(), "{} is offered on existing records", rule.action);
            assert_eq!(sample(rule.action).into_action().unwrap().kind(), rule.action);
        }
    }
}
