//! A day in the field, offline, on real store files: a grid member reports, the village
//! escalates, the center dispatches, a department handles, the grid member verifies.
//!
//! `cargo run -p gridlink-core --example field_day [-- DIR]` (stores are kept in DIR when given).

use gridlink_core::calendar::local_time;
use gridlink_core::{Action, Client, NewIncident, Person, Role, UnitCode};

fn person(id: &str, name: &str, role: Role, unit: &str) -> Person {
    Person { id: id.into(), name: name.into(), role, unit: UnitCode::parse(unit).expect("valid code") }
}

fn device(dir: &std::path::Path, who: Person) -> Client {
    let mut c = Client::open(dir.join(format!("{}.db", who.id))).expect("open store");
    c.set_identity(who).expect("identity");
    c
}

/// Hands a record from one device to another (what a sync round does through the town server).
fn carry(from: &Client, to: &mut Client, id: &str) {
    to.apply_remote(id, &from.changes(id).expect("changes")).expect("apply");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keep = std::env::args().nth(1).map(std::path::PathBuf::from);
    let tmp = tempfile::tempdir()?;
    let dir = keep.unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;

    let mut grid = device(&dir, person("wangfang", "王芳", Role::GridMember, "532331101201-01-01"));
    let mut village = device(&dir, person("lijun", "李军", Role::StationStaff, "532331101201"));
    let mut center = device(&dir, person("zhaomin", "赵敏", Role::CenterOperator, "532331101"));
    let mut dept = device(&dir, person("chenqiang", "陈强", Role::DepartmentHandler, "532331101-D01"));

    let id = grid.create_incident(NewIncident {
        category: "0503".into(),
        title: "河堤路有人倾倒建筑垃圾".into(),
        description: "河堤路东段新增约3车建筑垃圾,占用半幅路面".into(),
        address: "河堤路东段".into(),
        note: "巡查发现,已拍照".into(),
        ..Default::default()
    })?;
    grid.act(&id, Action::Escalate { to_unit: UnitCode::parse("532331101201")? }, "需村里协调")?;
    carry(&grid, &mut village, &id);
    village.act(&id, Action::Escalate { to_unit: UnitCode::parse("532331101")? }, "涉及执法,请镇里处理")?;
    carry(&village, &mut center, &id);
    center.act(&id, Action::Accept, "")?;
    center.act(&id, Action::Dispatch { to_unit: UnitCode::parse("532331101-D01")?, deadline_ms: None }, "请3个工作日内清运并查处")?;
    carry(&center, &mut dept, &id);
    dept.act(&id, Action::Sign, "")?;
    dept.act(&id, Action::Handle { photos: vec![] }, "已清运,责任人已立案处罚")?;
    carry(&dept, &mut grid, &id);
    let view = grid.act(&id, Action::Verify, "现场已恢复")?;

    println!("事件 {} ·「{}」", view.record.display_no(), view.record.title());
    println!("当前状态:{}", view.folded.state.status.map(|s| s.label()).unwrap_or("-"));
    if let Some(d) = view.folded.state.deadline_ms {
        // Deadlines are the end of a day: show its last minute rather than the next midnight.
        println!("处置期限:{}", local_time(d - 1).format("%Y-%m-%d %H:%M"));
    }
    println!("全程留痕:");
    for e in &view.folded.entries {
        let t = local_time(e.entry.at.wall_ms).format("%m-%d %H:%M:%S");
        let mark = e.conflict.as_deref().map(|c| format!("  [{c}]")).unwrap_or_default();
        println!("  {t}  {}({})  {}  {}{mark}", e.entry.actor_name, e.entry.role, e.entry.action.kind(), e.entry.note);
    }
    println!("待上传变更:网格员手机 {} 条", grid.pending_count()?);
    println!("搜索“建筑垃圾”:{} 条", grid.search("建筑垃圾", 10)?.len());
    Ok(())
}
