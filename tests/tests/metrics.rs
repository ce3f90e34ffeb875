//! `/metrics` as Prometheus reads it: parsed with a Prometheus text-format parser, every metric
//! an operator alerts on is there from the first scrape with its type and labels, and moves
//! when the thing it counts happens. Every answer names its request id.

use gridlink_core::NewIncident;
use gridlink_tests::{TestServer, VILLAGE, http};
use prometheus_parse::{Scrape, Value};

fn scrape(server: &TestServer) -> Scrape {
    let resp = http().get(format!("{}/metrics", server.base)).call().unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.into_body().read_to_string().unwrap();
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// The value of the one sample of `name` whose labels include `labels`, with its type.
fn sample<'a>(s: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> &'a Value {
    &s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
        .value
}

fn counter(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    match sample(s, name, labels) {
        Value::Counter(v) => *v,
        other => panic!("{name} is not a counter: {other:?}"),
    }
}

fn gauge(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    match sample(s, name, labels) {
        Value::Gauge(v) => *v,
        other => panic!("{name} is not a gauge: {other:?}"),
    }
}

#[test]
fn metrics_are_there_from_the_first_scrape_and_count_what_happens() {
    let server = TestServer::start();
    let first = scrape(&server);
    for name in [
        "gridlink_sync_rounds_total",
        "gridlink_sync_received_bytes_total",
        "gridlink_sync_sent_bytes_total",
        "gridlink_changes_accepted_total",
        "gridlink_login_failures_total",
    ] {
        assert_eq!(counter(&first, name, &[]), 0.0, "{name}");
    }
    for reason in gridlink_server::telemetry::REFUSAL_KINDS {
        assert_eq!(counter(&first, "gridlink_changes_rejected_total", &[("reason", reason)]), 0.0);
    }
    assert!(gauge(&first, "gridlink_db_size_bytes", &[]) > 0.0);
    assert_eq!(gauge(&first, "gridlink_db_write_queue_depth", &[]), 0.0);
    assert_eq!(gauge(&first, "gridlink_live_connections", &[]), 0.0);
    assert_eq!(gauge(&first, "gridlink_open_items", &[("village", VILLAGE)]), 0.0);
    assert_eq!(gauge(&first, "gridlink_overdue_items", &[("village", VILLAGE)]), 0.0);
    assert!(gauge(&first, "process_resident_memory_bytes", &[]) > 1e6);
    assert!(gauge(&first, "process_open_fds", &[]) > 0.0);
    assert!(gauge(&first, "process_start_time_seconds", &[]) > 1.7e9);
    assert!(counter(&first, "process_cpu_seconds_total", &[]) >= 0.0, "whole seconds: a young process reads 0");

    // Things happen: a wrong password, a phone that reports and syncs, a live connection.
    let bad = http()
        .post(format!("{}/api/v1/login", server.base))
        .header("Content-Type", "application/json")
        .send(r#"{"username": "grid_a", "password": "wrong"}"#)
        .unwrap();
    assert_eq!(bad.status(), 401);
    let mut phone = server.phone("grid_a");
    let id = phone.create_incident(NewIncident { category: "0501".into(), title: "路灯不亮".into(), ..Default::default() }).unwrap();
    phone.sync().unwrap();
    let record = http()
        .get(format!("{}/api/v1/records/{id}", server.base))
        .header("Authorization", format!("Bearer {}", gridlink_tests::token(&phone)))
        .call()
        .unwrap();
    assert_eq!(record.status(), 200);
    let request_id = record.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert_eq!(request_id.len(), 36, "every answer names its request: {request_id:?}");
    let live = std::net::TcpStream::connect(server.base.trim_start_matches("http://")).unwrap();
    {
        use std::io::Write;
        let mut live = &live;
        write!(live, "GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n", gridlink_tests::token(&phone)).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(300));

    let then = scrape(&server);
    assert_eq!(counter(&then, "gridlink_login_failures_total", &[]), 1.0);
    assert!(counter(&then, "gridlink_sync_rounds_total", &[]) >= 1.0);
    assert_eq!(counter(&then, "gridlink_changes_accepted_total", &[]), 1.0);
    assert!(counter(&then, "gridlink_sync_received_bytes_total", &[]) > 0.0);
    assert!(counter(&then, "gridlink_sync_sent_bytes_total", &[]) > 0.0);
    assert_eq!(gauge(&then, "gridlink_open_items", &[("village", VILLAGE)]), 1.0);
    assert_eq!(gauge(&then, "gridlink_live_connections", &[]), 1.0);
    // Requests by route pattern (never the raw path with its id) and status, with latencies.
    assert!(counter(&then, "gridlink_http_requests_total", &[("method", "POST"), ("route", "/api/v1/sync"), ("status", "200")]) >= 1.0);
    assert_eq!(counter(&then, "gridlink_http_requests_total", &[("route", "/api/v1/records/:id"), ("status", "200")]), 1.0);
    assert_eq!(counter(&then, "gridlink_http_requests_total", &[("route", "/api/v1/login"), ("status", "401")]), 1.0);
    assert!(!then.samples.iter().any(|s| s.labels.get("route").is_some_and(|r| r.contains(&id))), "no record id in a label");
    match sample(&then, "gridlink_http_request_duration_seconds", &[("route", "/api/v1/sync")]) {
        Value::Histogram(buckets) => assert!(buckets.iter().any(|b| b.count >= 1.0), "{buckets:?}"),
        other => panic!("not a histogram: {other:?}"),
    }
    match sample(&then, "gridlink_db_write_batch_size", &[]) {
        Value::Histogram(buckets) => assert!(buckets.last().is_some_and(|b| b.count >= 1.0)),
        other => panic!("not a histogram: {other:?}"),
    }
    drop(live);
}
