//! # gridlink-core
//!
//! The rulebook and the phone's brain of Gridlink, the offline-first system for township grid
//! governance (四级联动: 镇 ► 村 ► 组 ► 网格员).
//!
//! - [`org`]: the four-level hierarchy, roles and the scope rule.
//! - [`catalog`] and [`calendar`]: incident categories, service items, working days, deadlines.
//! - [`workflow`]: actions, the permission table and the deterministic fold of a record's timeline.
//! - [`record`]: each incident or service request is one Automerge document.
//! - [`Client`]: the local SQLite store and the one API a phone (or a test) uses.
//!
//! ```
//! use gridlink_core::{Client, NewIncident, Person, Role, UnitCode};
//! let dir = tempfile::tempdir().unwrap();
//! let mut client = Client::open(dir.path().join("phone.db")).unwrap();
//! client.set_identity(Person {
//!     id: "wangfang".into(),
//!     name: "王芳".into(),
//!     role: Role::GridMember,
//!     unit: UnitCode::parse("532331101201-01-01").unwrap(),
//! }).unwrap();
//! let id = client.create_incident(NewIncident {
//!     category: "0501".into(),
//!     title: "村口垃圾堆积".into(),
//!     ..Default::default()
//! }).unwrap();
//! let view = client.get(&id).unwrap();
//! assert_eq!(view.folded.state.status.unwrap().label(), "已上报");
//! assert_eq!(client.search("垃圾", 10).unwrap().len(), 1);
//! ```

pub mod action_params;
pub mod calendar;
pub mod catalog;
pub mod chunk;
mod client;
pub mod clocks;
pub mod error;
pub mod figures;
pub mod hlc;
pub mod org;
pub mod photo;
pub mod pii;
pub mod record;
pub mod routing;
pub mod schema;
pub mod store;
pub mod sync;
pub mod workflow;

pub use action_params::{ActionParams, Param};
pub use calendar::{TimeLimit, WorkCalendar};
pub use catalog::{Catalog, HandlingLevel, ServiceMode};
pub use client::{
    Client, ClientOptions, Clock, HistoryExport, ListPage, ManualClock, NewIncident, NewServiceRequest, Notice, RecordQuery, RecordSummary,
    RecordView, SystemClock, complete_action, masked_json, service_request_body,
};
pub use error::{CoreError, Result};
pub use hlc::Hlc;
pub use org::{Access, Identity, OrgTree, OrgUnit, Person, Role, UnitCode, UnitKind};
pub use record::{GeoPoint, IncidentEdit, Party, Record, RecordBody, ServiceRequestEdit, Urgency};
pub use workflow::{Action, ActionKind, Folded, RecordKind, RecordState, Status, TimelineEntry};
