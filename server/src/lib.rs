//! # gridlink-server
//!
//! The town server: sync endpoint, accounts and devices, scope and authorization, attachments,
//! case numbers, live notifications, import and a seeded demo town. Embedded SQLite by default.
//!
//! [`launch`] runs the real server on a given listener until `shutdown` resolves, finishing
//! in-flight requests; tests start it on `127.0.0.1:0` and drive real devices against it.

pub mod app;
pub mod attachments;
pub mod auth;
pub mod config;
pub mod db;
pub mod demo;
pub mod docs;
pub mod error;
pub mod import;
pub mod sync;

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use automerge::ActorId;
use gridlink_core::Clock;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub use app::{AppState, Settings, app};
pub use error::{AppError, AppResult};

fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (several servers in one test process).
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Opens the database and builds the shared state.
pub fn build_state(
    settings: Settings,
    db_path: &Path,
    clock: Arc<dyn Clock>,
) -> AppResult<AppState> {
    let db = db::Db::open(db_path, 4)?;
    let server_actor = {
        let conn = db.writer();
        match db::meta_get(&conn, "server_actor")? {
            Some(hex) => {
                ActorId::from(hex::decode(hex).map_err(|e| AppError::Internal(e.to_string()))?)
            }
            None => {
                let bytes: [u8; 16] = rand::random();
                db::meta_set(&conn, "server_actor", &hex::encode(bytes))?;
                ActorId::from(bytes.to_vec())
            }
        }
    };
    std::fs::create_dir_all(settings.data_dir.join("attachments"))
        .map_err(|e| AppError::Internal(format!("data dir: {e}")))?;
    let (events, _) = tokio::sync::broadcast::channel(1024);
    Ok(AppState {
        db,
        settings: Arc::new(settings),
        clock,
        server_actor,
        events,
        limiter: Arc::new(auth::LoginLimiter::default()),
        metrics: metrics_handle(),
    })
}

/// Serves until `shutdown` resolves; requests in flight finish first.
pub async fn launch(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "serving");
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}
