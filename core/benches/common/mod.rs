//! What the benches that start from one grid member's phone share: the phone, signed in as
//! 王芳 of grid 532331101201-01-01, and the report she files on patrol.

use gridlink_core::{Client, NewIncident, Person, Role, UnitCode};

/// A real phone store at `path`, signed in as a grid member (网格员).
pub fn grid_member_phone(path: &std::path::Path) -> Client {
    let mut client = Client::open(path).unwrap();
    client
        .set_identity(Person {
            id: "wangfang".into(),
            name: "王芳".into(),
            role: Role::GridMember,
            unit: UnitCode::parse("532331101201-01-01").unwrap(),
        })
        .unwrap();
    client
}

/// A sanitation report as a grid member files it, titled `title`.
pub fn report(title: &str) -> NewIncident {
    NewIncident {
        category: "0501".into(),
        title: title.into(),
        description: "村口桥头生活垃圾堆积,已有异味,影响群众出行。巡查时间9时14分。".into(),
        address: "村口桥头附近20米".into(),
        note: "巡查发现".into(),
        ..Default::default()
    }
}
