//! A device holding 5,000 records with nothing new: an idle round stays under 1 KiB each way.

use gridlink_core::NewIncident;
use gridlink_tests::*;

#[test]
fn idle_round_with_5000_records_is_under_1_kib() {
    let server = TestServer::start();
    let mut grid = server.phone("grid_a");
    let mut center = server.phone("center");
    for i in 0..5000 {
        grid.create_incident(NewIncident { category: "0501".into(), title: format!("第{i}件"), ..Default::default() }).unwrap();
    }
    let up = grid.sync().unwrap();
    assert_eq!(up.pushed, 5000);
    let down = center.sync().unwrap();
    assert_eq!(center.record_count().unwrap(), 5000);
    assert!(down.rounds >= 1);
    for phone in [&mut grid, &mut center] {
        let idle = phone.sync().unwrap();
        eprintln!("idle round with 5,000 records: {} bytes up, {} bytes down", idle.bytes_up, idle.bytes_down);
        assert_eq!(idle.rounds, 1);
        assert!(idle.bytes_up < 1024 && idle.bytes_down < 1024, "{idle:?}");
    }
}
