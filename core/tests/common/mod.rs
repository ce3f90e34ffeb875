//! Helpers shared by the core's integration tests: people of a demo town and devices with their
//! own SQLite files and injectable clocks.
#![allow(dead_code)]

use std::sync::Arc;

use chrono::TimeZone;
use gridlink_core::calendar::china_tz;
use gridlink_core::{Client, ClientOptions, ManualClock, Person, Role, UnitCode};

pub const TOWN: &str = "532331101";
pub const VILLAGE: &str = "532331101201";
pub const OTHER_VILLAGE: &str = "532331101202";
pub const GRID: &str = "532331101201-01-01";
pub const OTHER_GRID: &str = "532331101201-01-02";
pub const DEPT_A: &str = "532331101-D01";
pub const DEPT_B: &str = "532331101-D02";

pub fn unit(code: &str) -> UnitCode {
    UnitCode::parse(code).unwrap()
}

pub fn person(id: &str, name: &str, role: Role, code: &str) -> Person {
    Person { id: id.into(), name: name.into(), role, unit: unit(code) }
}

pub fn grid_member() -> Person {
    person("wangfang", "王芳", Role::GridMember, GRID)
}
pub fn station_staff() -> Person {
    person("lijun", "李军", Role::StationStaff, VILLAGE)
}
pub fn center() -> Person {
    person("zhaomin", "赵敏", Role::CenterOperator, TOWN)
}
pub fn dept_a() -> Person {
    person("chenqiang", "陈强", Role::DepartmentHandler, DEPT_A)
}
pub fn dept_b() -> Person {
    person("liuyang", "刘洋", Role::DepartmentHandler, DEPT_B)
}

/// Local time in China as unix ms.
pub fn at(y: i32, m: u32, d: u32, h: u32) -> i64 {
    china_tz().with_ymd_and_hms(y, m, d, h, 0, 0).unwrap().timestamp_millis()
}

/// A device: its own database file, its own clock.
pub struct Device {
    pub client: Client,
    pub clock: Arc<ManualClock>,
    pub dir: tempfile::TempDir,
}

impl Device {
    pub fn new(who: Person, now_ms: i64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(now_ms));
        let opts = ClientOptions { clock: clock.clone(), ..Default::default() };
        let mut client = Client::open_with(dir.path().join("device.db"), opts).unwrap();
        client.set_identity(who).unwrap();
        // As after a login: the key personal data is sealed with.
        client.set_data_key(Some(gridlink_core::pii::DataKey::generate()));
        Self { client, clock, dir }
    }
}

impl std::ops::Deref for Device {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for Device {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// Copies every change of record `id` from `from` to `to` (as a sync round would).
pub fn push(from: &Client, to: &mut Client, id: &str) {
    let changes = from.changes(id).unwrap();
    to.apply_remote(id, &changes).unwrap();
}

/// Brings both devices to the same state of record `id`.
pub fn exchange(a: &mut Client, b: &mut Client, id: &str) {
    if a.heads(id).unwrap().is_some() {
        push(a, b, id);
    }
    if b.heads(id).unwrap().is_some() {
        push(b, a, id);
    }
}
