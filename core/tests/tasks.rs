//! "My tasks" shows exactly the records on which the person can act now — the record screen's
//! actions, from the one permission table — for every role at every step of a record's life.

mod common;

use common::*;
use gridlink_core::{Action, NewIncident, RecordQuery, Status};

/// Every device's view of the record agrees with its task list.
fn check_all(devices: &mut [(&str, Device)], id: &str) -> Vec<String> {
    let mut with_task = Vec::new();
    for (name, d) in devices.iter() {
        let allowed = d.get(id).map(|v| v.allowed).unwrap_or_default();
        let tasks = d.my_tasks(100).unwrap();
        let listed = tasks.iter().any(|t| t.id == id);
        assert_eq!(listed, !allowed.is_empty(), "{name}: in my tasks = {listed}, actions {allowed:?}");
        let paged = d.list(&RecordQuery { my_tasks: true, limit: 1, offset: 0, ..Default::default() }).unwrap();
        assert_eq!(paged.len(), usize::from(listed), "{name}: paged in the query");
        if listed {
            with_task.push((*name).to_owned());
        }
    }
    with_task
}

fn sync_all(devices: &mut [(&str, Device)], from: usize, id: &str) {
    for i in 0..devices.len() {
        if i != from {
            let (a, b) = if i < from {
                let (l, r) = devices.split_at_mut(from);
                (&mut r[0].1, &mut l[i].1)
            } else {
                let (l, r) = devices.split_at_mut(i);
                (&mut l[from].1, &mut r[0].1)
            };
            push(a, b, id);
        }
    }
}

#[test]
fn my_tasks_point_at_whoever_can_act_now() {
    let t0 = at(2026, 11, 16, 9);
    let mut devices = vec![
        ("grid", Device::new(grid_member(), t0)),
        ("village", Device::new(station_staff(), t0)),
        ("center", Device::new(center(), t0)),
        ("dept_a", Device::new(dept_a(), t0)),
    ];
    let id = devices[0]
        .1
        .create_incident(NewIncident {
            category: "0503".into(), title: "建筑垃圾".into(), note: "巡查发现".into(), ..Default::default()
        })
        .unwrap();
    // The devices that do not hold the record yet have nothing to do with it.
    assert_eq!(check_all(&mut devices[..1], &id), ["grid"]);
    sync_all(&mut devices, 0, &id);

    // (who acts, action, note, who has the task afterwards — written from the domain rules)
    let script: Vec<(usize, Action, &str, &[&str])> = vec![
        (1, Action::Escalate { to_unit: unit(TOWN) }, "村里无力处置", &["center"]),
        (2, Action::Accept, "", &["center"]),
        (2, Action::Dispatch { to_unit: unit(DEPT_A), deadline_ms: None }, "", &["center", "dept_a"]),
        (3, Action::Sign, "", &["center", "dept_a"]),
        // Handed back: the department has nothing left to do; verifying is for the center and
        // for the grid and village where it happened.
        (3, Action::Handle { photos: vec![] }, "已清运", &["grid", "village", "center"]),
        // Verified: only the center can close it.
        (2, Action::Verify, "", &["center"]),
        // Closed: the evaluation is left, for those where it happened and the center.
        (2, Action::Close, "", &["grid", "village", "center"]),
        (0, Action::Evaluate { satisfaction: 5 }, "群众满意", &[]),
    ];
    for (who, action, note, expected) in script {
        let kind = action.kind();
        let d = &mut devices[who].1;
        d.clock.advance(60_000);
        d.act(&id, action, note).unwrap_or_else(|e| panic!("{kind}: {e}"));
        sync_all(&mut devices, who, &id);
        let with_task = check_all(&mut devices, &id);
        assert_eq!(with_task, expected, "after {kind}");
    }
    assert_eq!(devices[2].1.get(&id).unwrap().folded.state.status, Some(Status::Closed));
}

#[test]
fn tasks_follow_the_identity_on_the_device() {
    let mut phone = Device::new(center(), at(2026, 11, 16, 9));
    let id = phone
        .create_incident(NewIncident {
            category: "0503".into(), title: "建筑垃圾".into(), grid: Some(unit(GRID)), ..Default::default()
        })
        .unwrap();
    assert_eq!(phone.my_tasks(10).unwrap().len(), 1, "the center can accept its own report");
    // Another person logs in on the same phone: their tasks, not the previous person's.
    phone.set_identity(dept_a()).unwrap();
    assert!(phone.my_tasks(10).unwrap().is_empty());
    phone.set_identity(center()).unwrap();
    assert_eq!(phone.my_tasks(10).unwrap()[0].id, id);
    phone.clear_identity().unwrap();
    phone.set_identity(center()).unwrap();
    assert_eq!(phone.my_tasks(10).unwrap().len(), 1);
}

#[test]
fn a_refused_edit_is_called_an_edit() {
    let t0 = at(2026, 11, 16, 9);
    let mut grid = Device::new(grid_member(), t0);
    let mut village = Device::new(station_staff(), t0);
    let id = grid.create_incident(NewIncident { category: "0501".into(), title: "垃圾".into(), ..Default::default() }).unwrap();
    push(&grid, &mut village, &id);
    village.act(&id, Action::Escalate { to_unit: unit(TOWN) }, "上交镇里").unwrap();
    push(&village, &mut grid, &id);
    // The reporter keeps reading the record but may no longer change it.
    let e = grid.edit_incident(&id, gridlink_core::IncidentEdit { notes: Some("补充".into()), ..Default::default() }).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("无权编辑") && !text.contains("上报"), "{text}");
}

#[test]
fn photos_downloaded_for_viewing_stay_within_their_bound() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(gridlink_core::ManualClock::new(at(2026, 11, 16, 9)));
    let opts = gridlink_core::ClientOptions { clock: clock.clone(), photo_cache_bytes: 2_500, ..Default::default() };
    let mut phone = gridlink_core::Client::open_with(dir.path().join("p.db"), opts).unwrap();
    phone.set_identity(grid_member()).unwrap();
    // A photo taken on this phone is never evicted.
    let id = phone.create_incident(NewIncident { category: "0501".into(), title: "垃圾".into(), ..Default::default() }).unwrap();
    let img = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8, y as u8, 7]));
    let mut jpeg = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).unwrap();
    let own = phone.attach_photo(&id, &jpeg).unwrap();
    // Five downloads of 1,000 bytes into a 2,500-byte cache: the two newest stay.
    let mut shas = Vec::new();
    for i in 0..5u8 {
        clock.advance(1000);
        let bytes = vec![i; 1000];
        let sha = gridlink_core::photo::sha256_hex(&bytes);
        phone.store_downloaded_photo(&sha, &bytes).unwrap();
        shas.push(sha);
    }
    let kept: Vec<bool> = shas.iter().map(|s| phone.photo(s).unwrap().is_some()).collect();
    assert_eq!(kept, [false, false, false, true, true]);
    assert!(phone.photo(&own).unwrap().is_some(), "the phone's own photo stays");
}
