//! What the server tells Prometheus (`GET /metrics`) and how a request is found in the logs.
//!
//! Every metric is described and, where it has no labels, present with zero from the first
//! scrape. Counters and histograms are fed where things happen (requests, sync rounds, the
//! writer); gauges that describe state — database size, writes waiting, open and overdue items
//! per village, live connections, the process (resident memory, CPU seconds, open files, start
//! time, from `metrics-process`) — are read when scraped.
//!
//! Request ids: tower-http gives every request an `x-request-id` (or keeps the caller's), sends
//! it back, and the request's tracing span carries it, so every log line of a request names it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::app::AppState;
use crate::error::AppResult;

/// Why a pushed change was refused, as a metric label (the reason itself is Chinese prose).
pub const REFUSAL_KINDS: &[&str] = &["corrupt", "missing_deps", "schema", "personal_data", "author", "history", "rules"];

/// Seconds buckets for request and round latencies.
const SECONDS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The process's recorder; installed once (several servers may run in one test process).
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full("gridlink_db_write_batch_size".into()), &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0])
                })
                .expect("buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_ok() {
                describe();
            }
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!("gridlink_http_requests_total", "HTTP requests answered, by method, route and status");
    describe_histogram!(
        "gridlink_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time to answer an HTTP request, by method and route"
    );
    describe_counter!("gridlink_sync_rounds_total", "Sync rounds served");
    describe_histogram!("gridlink_sync_seconds", metrics::Unit::Seconds, "Time of a sync round, from the request to the answer");
    describe_counter!("gridlink_sync_received_bytes_total", metrics::Unit::Bytes, "Bytes of sync requests received");
    describe_counter!("gridlink_sync_sent_bytes_total", metrics::Unit::Bytes, "Bytes of sync answers sent");
    describe_counter!("gridlink_changes_accepted_total", "Pushed changes accepted");
    describe_counter!("gridlink_changes_rejected_total", "Pushed changes refused, by reason");
    describe_counter!("gridlink_login_failures_total", "Failed logins (wrong password, unknown user, too many attempts)");
    describe_gauge!("gridlink_db_write_queue_depth", "Writes waiting for the database writer");
    describe_histogram!("gridlink_db_write_batch_size", "Writes committed together in one transaction");
    describe_gauge!("gridlink_db_size_bytes", metrics::Unit::Bytes, "Size of the database (pages in use)");
    describe_gauge!("gridlink_live_connections", "Devices and consoles connected for live events");
    describe_gauge!("gridlink_open_items", "Open incidents and service requests, by village (the town's own as \"town\")");
    describe_gauge!("gridlink_overdue_items", "Open items past their deadline, by village");
    describe_gauge!("gridlink_start_time_seconds", metrics::Unit::Seconds, "When the server started (unix time)");
    for c in [
        "gridlink_sync_rounds_total",
        "gridlink_sync_received_bytes_total",
        "gridlink_sync_sent_bytes_total",
        "gridlink_changes_accepted_total",
        "gridlink_login_failures_total",
    ] {
        metrics::counter!(c).absolute(0);
    }
    for kind in REFUSAL_KINDS {
        metrics::counter!("gridlink_changes_rejected_total", "reason" => *kind).absolute(0);
    }
    gauge!("gridlink_live_connections").set(0.0);
    let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    gauge!("gridlink_start_time_seconds").set(start);
    process_collector().describe();
}

fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// The label of a refusal reason (see [`REFUSAL_KINDS`]), from the words of the reason.
pub fn refusal_kind(reason: &str) -> &'static str {
    const KINDS: &[(&str, &str)] = &[
        ("变更数据无效", "corrupt"),
        ("缺少前置变更", "missing_deps"),
        ("结构不符合要求", "schema"),
        ("未遮蔽", "personal_data"),
        ("操作人与登录账号不符", "author"),
        ("不允许修改", "history"),
        ("案卷编号只能由服务器分配", "history"),
    ];
    KINDS.iter().find(|(words, _)| reason.contains(words)).map_or("rules", |(_, kind)| kind)
}

/// Middleware: counts and times every request by its route pattern (never its raw path, which
/// carries ids).
pub async fn track(req: Request, next: Next) -> Response {
    let started = Instant::now();
    // `/api/v1/records/{id}` is labelled `/api/v1/records/:id`: braces inside a label value
    // trip up some text-format parsers.
    let route =
        req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().replace('{', ":").replace('}', ""));
    let method = req.method().as_str().to_owned();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("gridlink_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("gridlink_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    resp
}

/// Counts a live connection while it is held.
#[derive(Debug)]
pub struct LiveConnection(());

static LIVE: AtomicI64 = AtomicI64::new(0);

impl LiveConnection {
    pub fn open() -> Self {
        gauge!("gridlink_live_connections").set(LIVE.fetch_add(1, Ordering::Relaxed) as f64 + 1.0);
        Self(())
    }
}

impl Drop for LiveConnection {
    fn drop(&mut self) {
        gauge!("gridlink_live_connections").set(LIVE.fetch_sub(1, Ordering::Relaxed) as f64 - 1.0);
    }
}

/// Reads the gauges of the moment and renders every metric in Prometheus' text format.
pub async fn scrape(state: &AppState) -> AppResult<String> {
    gauge!("gridlink_db_write_queue_depth").set(state.db.write_queue_depth() as f64);
    let now = state.now_ms();
    let (size, villages) = state
        .db
        .read(move |c| {
            // Every village, so one whose last open item closed reads 0 rather than its old count.
            let rows = c.open_by_village(now)?;
            Ok((c.database_bytes()?, rows))
        })
        .await?;
    gauge!("gridlink_db_size_bytes").set(size as f64);
    for (village, open, overdue) in villages {
        gauge!("gridlink_open_items", "village" => village.clone()).set(open as f64);
        gauge!("gridlink_overdue_items", "village" => village).set(overdue as f64);
    }
    process_collector().collect();
    Ok(state.metrics.render())
}
