//! The incident and service-request workflows end to end on real stores, several devices.

mod common;

use common::*;
use gridlink_core::{Action, ActionKind, CoreError, IncidentEdit, NewIncident, NewServiceRequest, RecordQuery, Role, ServiceMode, Status};

fn new_garbage_report() -> NewIncident {
    NewIncident {
        category: "0501".into(),
        title: "村口垃圾堆积".into(),
        description: "村口桥头有大量生活垃圾,已有异味".into(),
        address: "一组村口桥头".into(),
        note: "巡查发现".into(),
        ..Default::default()
    }
}

#[test]
fn incident_walks_through_every_level() {
    let t0 = at(2026, 11, 20, 9); // a Friday
    let mut grid = Device::new(grid_member(), t0);
    let mut village = Device::new(station_staff(), t0);
    let mut center = Device::new(center(), t0);
    let mut dept_a = Device::new(dept_a(), t0);
    let mut dept_b = Device::new(dept_b(), t0);

    let id = grid.create_incident(new_garbage_report()).unwrap();
    assert!(grid.get(&id).unwrap().record.display_no().starts_with("临-"));
    let step = |dev: &mut Device, action: Action, note: &str| {
        dev.clock.advance(60_000);
        dev.act(&id, action, note).unwrap()
    };

    grid.clock.advance(1000);
    let v = step(&mut grid, Action::Escalate { to_unit: unit(VILLAGE) }, "需村里协调清运车辆");
    assert_eq!(v.folded.state.holder, Some(unit(VILLAGE)));
    push(&grid, &mut village, &id);
    let v = step(&mut village, Action::Escalate { to_unit: unit(TOWN) }, "村里无清运能力");
    assert_eq!(v.folded.state.status, Some(Status::Reported));
    // The reporter keeps read access after escalation but has nothing to do.
    push(&village, &mut grid, &id);
    let allowed = grid.get(&id).unwrap().allowed;
    assert!(allowed.is_empty(), "{allowed:?}");

    push(&village, &mut center, &id);
    step(&mut center, Action::Accept, "");
    let v = step(&mut center, Action::Dispatch { to_unit: unit(DEPT_A), deadline_ms: None }, "请尽快清运");
    // 暴露垃圾: 1 working day; dispatched on a Friday, due at the end of Monday.
    assert_eq!(v.folded.state.deadline_ms, Some(at(2026, 11, 24, 0)));

    push(&center, &mut dept_a, &id);
    assert!(dept_a.get(&id).unwrap().allowed.contains(&ActionKind::Sign));
    step(&mut dept_a, Action::Return, "不属于本单位职责");
    push(&dept_a, &mut center, &id);
    let v = center.get(&id).unwrap();
    assert_eq!((v.folded.state.status, v.folded.state.returns), (Some(Status::Accepted), 1));
    step(&mut center, Action::Dispatch { to_unit: unit(DEPT_B), deadline_ms: None }, "改派环卫所");

    push(&center, &mut dept_b, &id);
    step(&mut dept_b, Action::Sign, "");
    let until = at(2026, 11, 26, 0);
    step(&mut dept_b, Action::RequestExtension { until_ms: until }, "清运车辆检修");
    push(&dept_b, &mut center, &id);
    step(&mut center, Action::ApproveExtension, "");
    push(&center, &mut dept_b, &id);
    assert_eq!(dept_b.get(&id).unwrap().folded.state.deadline_ms, Some(until));
    step(&mut dept_b, Action::Handle { photos: vec![] }, "已清运");

    push(&dept_b, &mut grid, &id);
    step(&mut grid, Action::FailVerification, "桥下仍有垃圾");
    push(&grid, &mut dept_b, &id);
    step(&mut dept_b, Action::Handle { photos: vec![] }, "桥下垃圾已清理");
    push(&dept_b, &mut grid, &id);
    step(&mut grid, Action::Verify, "现场已整洁");
    push(&grid, &mut center, &id);
    step(&mut center, Action::Close, "");
    push(&center, &mut grid, &id);
    let v = step(&mut grid, Action::Evaluate { satisfaction: 5 }, "群众满意");

    let s = &v.folded.state;
    assert_eq!(s.status, Some(Status::Closed));
    assert_eq!((s.satisfaction, s.escalations, s.returns), (Some(5), 2, 1));
    assert_eq!(v.folded.entries.len(), 16);
    assert_eq!(v.folded.conflicts(), 0);
    assert!(s.finished_at_ms.is_some());

    let history = grid.export_history(&id).unwrap();
    assert_eq!(history.timeline.len(), 16);
    let actors: std::collections::BTreeSet<_> = history.timeline.iter().map(|e| e.entry.actor.as_str()).collect();
    assert_eq!(actors.len(), 5, "every actor is on record");
    assert!(history.changes.len() >= 16, "every change is kept with its device and time");
    assert_eq!(grid.search("桥下垃圾", 10).unwrap().len(), 1, "notes are searchable");
}

#[test]
fn concurrent_offline_actions_are_kept_and_marked_identically() {
    let t0 = at(2026, 11, 23, 9);
    let mut grid = Device::new(grid_member(), t0);
    let mut village = Device::new(station_staff(), t0);
    let mut center = Device::new(center(), t0);
    let id = grid.create_incident(new_garbage_report()).unwrap();
    push(&grid, &mut village, &id);
    push(&grid, &mut center, &id);

    // Both accept while offline; the center's clock is a little later.
    village.clock.advance(1_000);
    center.clock.advance(2_000);
    village.act(&id, Action::Accept, "").unwrap();
    center.act(&id, Action::Accept, "").unwrap();
    // Meanwhile the grid member fixes it on the spot.
    grid.clock.advance(3_000);
    grid.act(&id, Action::SelfResolve { photos: vec![] }, "已现场清理").unwrap();

    for _ in 0..2 {
        exchange(&mut village, &mut center, &id);
        exchange(&mut center, &mut grid, &id);
        exchange(&mut grid, &mut village, &id);
    }
    let views: Vec<_> = [&grid, &village, &center].iter().map(|d| d.get(&id).unwrap()).collect();
    assert_eq!(views[0].folded, views[1].folded);
    assert_eq!(views[1].folded, views[2].folded);
    let f = &views[0].folded;
    assert_eq!(f.entries.len(), 4, "no entry is lost");
    assert_eq!(f.conflicts(), 2, "the later accept and the self-resolution are conflicts");
    assert_eq!(f.state.status, Some(Status::Accepted));
    assert_eq!(f.state.owner, Some(unit(VILLAGE)), "the earlier accept wins");
    let marked: Vec<_> = f.entries.iter().filter(|e| e.conflict.is_some()).map(|e| e.entry.actor.as_str()).collect();
    assert_eq!(marked, ["zhaomin", "wangfang"]);
    assert!(f.entries[2].conflict.as_ref().unwrap().contains("冲突"));
    let listed = center.list(&RecordQuery::default()).unwrap();
    assert_eq!(listed[0].conflicts, 2, "lists show the conflict too");
}

#[test]
fn text_edits_merge_character_by_character() {
    let t0 = at(2026, 11, 23, 9);
    let mut grid = Device::new(grid_member(), t0);
    let mut village = Device::new(station_staff(), t0);
    let id = grid.create_incident(new_garbage_report()).unwrap();
    push(&grid, &mut village, &id);
    let edit = |text: &str| IncidentEdit { description: Some(text.into()), ..Default::default() };
    grid.edit_incident(&id, edit("今早村口桥头有大量生活垃圾,已有异味")).unwrap();
    village.edit_incident(&id, edit("村口桥头有大量生活垃圾,已有异味,影响通行")).unwrap();
    exchange(&mut grid, &mut village, &id);
    let a = grid.get(&id).unwrap().record;
    assert_eq!(a, village.get(&id).unwrap().record);
    match a.body {
        gridlink_core::RecordBody::Incident(f) => assert_eq!(f.description, "今早村口桥头有大量生活垃圾,已有异味,影响通行"),
        _ => unreachable!(),
    }
}

#[test]
fn errand_round_trip_with_missing_materials() {
    let t0 = at(2026, 11, 23, 9);
    let mut station = Device::new(station_staff(), t0);
    let mut town = Device::new(person("sunli", "孙丽", gridlink_core::Role::DepartmentHandler, "532331101-D06"), t0);
    let id = station
        .create_service_request(NewServiceRequest {
            item: "FW004".into(), // 高龄津贴申请
            mode: ServiceMode::Errand,
            station: None,
            resident_name: "张桂兰".into(),
            resident_id_number: Some("11010519491231002X".into()),
            resident_phone: Some("13812345678".into()),
            materials_received: vec!["居民身份证".into(), "户口簿".into()],
            description: "老人行动不便,由代办员代办".into(),
        })
        .unwrap();
    let v = station.get(&id).unwrap();
    assert_eq!(v.folded.state.status, Some(Status::Received));
    // 15 promised working days from Monday 2026-11-23.
    assert_eq!(v.folded.state.deadline_ms, Some(at(2026, 12, 15, 0)));
    let listed = station.list(&RecordQuery::default()).unwrap();
    assert_eq!(listed[0].title, "高龄津贴申请(张*兰)");

    let err = station.act(&id, Action::RequestMaterials { missing: vec!["结婚证".into()] }, "").unwrap_err();
    assert!(matches!(err, CoreError::InvalidInput(_)), "only materials of the checklist");
    station.act(&id, Action::RequestMaterials { missing: vec!["本人银行卡(折)复印件".into()] }, "").unwrap();
    station.act(&id, Action::SupplyMaterials { supplied: vec!["本人银行卡(折)复印件".into()] }, "").unwrap();
    station.act(&id, Action::Queue, "").unwrap();
    let hand_off = Action::HandOff { to_unit: unit("532331101-D06"), batch_id: "2026-11-23-上午".into(), carrier: "李军".into() };
    station.act(&id, hand_off, "").unwrap();
    push(&station, &mut town, &id);
    town.act(&id, Action::Complete, "已审批,次月发放").unwrap();
    push(&town, &mut station, &id);
    station.act(&id, Action::Deliver, "").unwrap();
    station.act(&id, Action::FollowUp { satisfaction: 4 }, "电话回访").unwrap();
    let v = station.act(&id, Action::Archive, "").unwrap();
    assert_eq!(v.folded.state.status, Some(Status::Archived));
    assert_eq!(v.folded.state.batch_id.as_deref(), Some("2026-11-23-上午"));

    let export = serde_json::to_string(&station.export_history(&id).unwrap()).unwrap();
    assert!(!export.contains("11010519491231002X") && export.contains("1101**********002X"));
    assert!(!export.contains("13812345678") && export.contains("138****5678"));
}

#[test]
fn immediate_service_completes_at_the_station() {
    let mut station = Device::new(station_staff(), at(2026, 11, 23, 9));
    let id = station
        .create_service_request(NewServiceRequest {
            item: "FW003".into(),
            mode: ServiceMode::Immediate,
            station: None,
            resident_name: "王德明".into(),
            resident_id_number: None,
            resident_phone: None,
            materials_received: vec!["居民身份证".into()],
            description: String::new(),
        })
        .unwrap();
    let v = station.act(&id, Action::Complete, "认证通过").unwrap();
    assert_eq!(v.folded.state.status, Some(Status::Completed));
    let err = station
        .create_service_request(NewServiceRequest {
            item: "FW002".into(),
            mode: ServiceMode::Immediate, // 新生儿户口登记 is errand only
            station: None,
            resident_name: "王德明".into(),
            resident_id_number: None,
            resident_phone: None,
            materials_received: vec![],
            description: String::new(),
        })
        .unwrap_err();
    assert!(err.to_string().contains("不支持即办"), "{err}");
}

#[test]
fn offline_queries_tasks_overdue_and_search() {
    let t0 = at(2026, 11, 23, 9);
    let mut village = Device::new(station_staff(), t0);
    let mut ids = Vec::new();
    for (i, (cat, title)) in
        [("0501", "暴露垃圾清理"), ("0802", "路灯不亮"), ("0101", "宅基地边界纠纷"), ("0401", "消防通道被占")].iter().enumerate()
    {
        let grid = if i % 2 == 0 { GRID } else { OTHER_GRID };
        let id = village
            .create_incident(NewIncident { category: (*cat).into(), title: (*title).into(), grid: Some(unit(grid)), ..Default::default() })
            .unwrap();
        ids.push(id);
    }
    // Accept and dispatch the first two to groups/grids below (village level work).
    for id in &ids[..2] {
        village.act(id, Action::Accept, "").unwrap();
    }
    village.act(&ids[0], Action::Dispatch { to_unit: unit(GRID), deadline_ms: None }, "").unwrap();

    assert_eq!(village.list(&RecordQuery { within: Some(unit(GRID)), ..Default::default() }).unwrap().len(), 2);
    assert_eq!(village.list(&RecordQuery { within: Some(unit(TOWN)), ..Default::default() }).unwrap().len(), 4);
    assert_eq!(village.list(&RecordQuery { category_prefix: Some("05".into()), ..Default::default() }).unwrap().len(), 1);
    assert_eq!(village.list(&RecordQuery { statuses: vec![Status::Accepted], ..Default::default() }).unwrap().len(), 1);
    let tasks = village.my_tasks(50).unwrap();
    let mut titles: Vec<_> = tasks.iter().map(|t| t.title.as_str()).collect();
    titles.sort();
    assert_eq!(titles, ["宅基地边界纠纷", "消防通道被占", "路灯不亮"], "the one dispatched to the grid is the grid's task");
    let mut grid = Device::new(grid_member(), t0);
    push(&village, &mut grid, &ids[0]);
    assert_eq!(grid.my_tasks(50).unwrap().len(), 1, "dispatched to the grid member's grid");

    village.clock.advance(3 * 86_400_000);
    let overdue = village.list(&RecordQuery { overdue_at: Some(village.now_ms()), ..Default::default() }).unwrap();
    assert_eq!(overdue.len(), 1);
    assert!(overdue[0].overdue && overdue[0].id == ids[0]);

    assert_eq!(village.search("路灯", 10).unwrap().len(), 1, "two characters");
    assert_eq!(village.search("边界纠纷", 10).unwrap().len(), 1, "trigram");
    assert_eq!(village.search("100%", 10).unwrap().len(), 0);
    assert_eq!(village.search("\"", 10).unwrap().len(), 0);
}

#[test]
fn many_edits_compact_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.db");
    let id = {
        let mut c = gridlink_core::Client::open(&path).unwrap();
        c.set_identity(grid_member()).unwrap();
        let id = c.create_incident(new_garbage_report()).unwrap();
        for i in 0..40 {
            c.edit_incident(&id, IncidentEdit { notes: Some(format!("第{i}次走访记录")), ..Default::default() }).unwrap();
        }
        id
    };
    let c = gridlink_core::Client::open(&path).unwrap();
    assert_eq!(c.identity().unwrap().id, "wangfang", "identity survives a restart");
    match c.get(&id).unwrap().record.body {
        gridlink_core::RecordBody::Incident(f) => assert_eq!(f.notes, "第39次走访记录"),
        _ => unreachable!(),
    }
    assert_eq!(c.pending_count().unwrap(), 41);
    assert!(c.verify_integrity().unwrap().is_empty());
}

/// 四级联动 with the county above: the town center passes a dispute it cannot settle up to the
/// county center, which sends it to a county department (县直部门) with a deadline; the county
/// closes it. Then the county sends a second one back down to the town, which handles it itself.
#[test]
fn the_county_takes_what_the_town_cannot_settle() {
    const COUNTY: &str = "532331";
    const COUNTY_DEPT: &str = "532331-ZR";
    let t0 = at(2026, 11, 20, 9);
    let mut grid = Device::new(grid_member(), t0);
    let mut town = Device::new(center(), t0);
    let mut county = Device::new(person("xian", "县中心坐席", Role::CountyOperator, COUNTY), t0);
    let mut county_dept = Device::new(person("zr", "县自然资源局", Role::DepartmentHandler, COUNTY_DEPT), t0);
    let mut other_town = Device::new(person("qt", "邻镇综治中心", Role::CenterOperator, "532331102"), t0);

    for (second, title) in [(false, "跨镇土地纠纷"), (true, "镇内占道经营")] {
        let id = grid.create_incident(NewIncident { title: title.into(), ..new_garbage_report() }).unwrap();
        let step = |dev: &mut Device, action: Action, note: &str| {
            dev.clock.advance(60_000);
            dev.act(&id, action, note).unwrap()
        };
        step(&mut grid, Action::Escalate { to_unit: unit(TOWN) }, "需镇里协调");
        push(&grid, &mut town, &id);
        step(&mut town, Action::Accept, "");
        // A town cannot escalate to a county that is not its own, nor skip past the county.
        town.clock.advance(60_000);
        let wrong = town.act(&id, Action::Escalate { to_unit: unit("532332") }, "上报");
        assert!(matches!(wrong, Err(CoreError::NotAllowed { .. })), "{wrong:?}");
        let v = step(&mut town, Action::Escalate { to_unit: unit(COUNTY) }, "涉及两镇,镇级无法协调");
        assert_eq!((v.folded.state.status, v.folded.state.holder.clone()), (Some(Status::Reported), Some(unit(COUNTY))));
        // Once it is the county's, the town has nothing left to do on it.
        assert!(town.get(&id).unwrap().allowed.is_empty(), "{:?}", town.get(&id).unwrap().allowed);

        push(&town, &mut county, &id);
        assert!(county.get(&id).unwrap().allowed.contains(&ActionKind::Accept));
        // A neighbouring town's center sees it only by being told, and still may not act on it.
        push(&town, &mut other_town, &id);
        assert!(other_town.get(&id).unwrap().allowed.is_empty());
        step(&mut county, Action::Accept, "");
        let (worker, to) = if second { (&mut town, TOWN) } else { (&mut county_dept, COUNTY_DEPT) };
        let v = step(&mut county, Action::Dispatch { to_unit: unit(to), deadline_ms: Some(at(2026, 11, 27, 0)) }, "请核实处理");
        assert_eq!(v.folded.state.deadline_ms, Some(at(2026, 11, 27, 0)));
        push(&county, worker, &id);
        step(worker, Action::Sign, "");
        step(worker, Action::Handle { photos: vec![] }, "已调处完毕");
        push(worker, &mut grid, &id);
        step(&mut grid, Action::Verify, "现场核实");
        push(&grid, &mut county, &id);
        // The county that owns it closes it, not the town.
        assert!(!town.get(&id).unwrap().allowed.contains(&ActionKind::Close));
        let v = step(&mut county, Action::Close, "");
        let s = &v.folded.state;
        assert_eq!((s.status, s.escalations, v.folded.conflicts()), (Some(Status::Closed), 2, 0));
        assert!(s.reached_town && s.reached_county);
        assert_eq!(s.closed_by, Some(unit(COUNTY)));
    }
}
