//! # gridlink-server
//!
//! The town server: sync endpoint, accounts and devices, scope and authorization, attachments,
//! case numbers, live notifications, the web console, import and a seeded demo town. Embedded
//! SQLite by default.
//!
//! [`launch`] runs the real server on a given listener until `shutdown` resolves, finishing
//! in-flight requests; tests start it on `127.0.0.1:0` and drive real devices against it.

pub mod app;
pub mod attachments;
pub mod auth;
pub mod automerge_repo;
pub mod backup;
pub mod config;
pub mod console;
pub mod db;
pub mod demo;
pub mod error;
pub mod import;
pub mod linkage;
pub mod open311;
pub mod records;
pub mod storage;
pub mod sync;
pub mod telemetry;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use automerge::ActorId;
use gridlink_core::routing::RoutingRules;
use gridlink_core::{Catalog, Clock, WorkCalendar};

pub use app::{AppState, Settings, app};
pub use error::{AppError, AppResult};

/// Opens the SQLite database at `db_path` and builds the shared state.
pub fn build_state(settings: Settings, db_path: &Path, clock: Arc<dyn Clock>) -> AppResult<AppState> {
    build_state_at(settings, &db::Location::Sqlite(db_path.to_owned()), clock)
}

/// Opens the database wherever it is (a SQLite file, a PostgreSQL URL) and builds the shared state.
pub fn build_state_at(settings: Settings, location: &db::Location, clock: Arc<dyn Clock>) -> AppResult<AppState> {
    let db = db::Db::at(location, 4)?;
    let (server_actor, epoch) = {
        let conn = db.writer();
        // One transaction: nodes of one database starting together agree on its epoch.
        let conn = storage::Tx::begin(&*conn)?;
        let epoch = backup::epoch_at_start(&*conn, clock.now_ms())?;
        let actor = match conn.meta_get("server_actor")? {
            Some(hex) => ActorId::from(hex::decode(hex).map_err(|e| AppError::Internal(e.to_string()))?),
            None => {
                let bytes: [u8; 16] = rand::random();
                conn.meta_set("server_actor", &hex::encode(bytes))?;
                ActorId::from(bytes.to_vec())
            }
        };
        conn.commit()?;
        (actor, epoch)
    };
    std::fs::create_dir_all(settings.data_dir.join("attachments")).map_err(|e| AppError::Internal(format!("data dir: {e}")))?;
    let (events, _) = tokio::sync::broadcast::channel(1024);
    let (catalog, routing) = {
        let conn = db.reader();
        let catalog = match (conn.meta_get("catalog.categories")?, conn.meta_get("catalog.items")?) {
            (Some(c), Some(i)) => Catalog::from_json(&c, &i)?,
            _ => Catalog::bundled(),
        };
        let routing: RoutingRules = match conn.meta_get("routing")? {
            Some(r) => serde_json::from_str(&r).map_err(|e| AppError::Internal(format!("routing rules: {e}")))?,
            None => RoutingRules::default(),
        };
        (catalog, routing)
    };
    let bus = match location {
        db::Location::Postgres(url) => {
            Some(Arc::new(storage::EventBus::start(url, events.clone()).map_err(|e| AppError::Internal(format!("live events: {e}")))?))
        }
        db::Location::Sqlite(_) => None,
    };
    let state = AppState {
        bus,
        db,
        settings: Arc::new(settings),
        clock,
        server_actor,
        epoch,
        events,
        metrics: telemetry::handle(),
        catalog: Arc::new(catalog),
        calendar: Arc::new(WorkCalendar::bundled()),
        routing: Arc::new(std::sync::RwLock::new(routing)),
        amrepo_tickets: Arc::default(),
        round_turns: Arc::new(tokio::sync::Semaphore::new(app::ROUNDS_IN_FLIGHT)),
    };
    records::reindex_if_stale(&state)?;
    Ok(state)
}

/// How many connections may wait to be accepted. A town's phones come back together — after a
/// network outage, at the start of a shift — and the standard library's `bind` listens with room
/// for 128: the kernel drops the connections beyond, and each one's phone waits a whole second
/// to try again (docs/benchmarks.md, "Connections waiting to be accepted"). The kernel caps it
/// at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listening socket at `at` with room for [`LISTEN_BACKLOG`] waiting connections,
/// address reuse on, non-blocking. Called inside the Tokio runtime.
pub fn bind(at: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if at.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(at)?;
    socket.listen(LISTEN_BACKLOG)?.into_std()
}

/// How long a kept-alive connection may wait for its next request before the server closes it.
/// Phones sync once a minute or so and their HTTP client (ureq) stops reusing a connection idle
/// for 15 s, but keeps it open: without this, every phone's last connection stayed open with
/// its buffers (10,000 phones, docs/benchmarks.md "A paced fleet"). Above ureq's 15 s, so a
/// phone never sends on a connection the server is closing. It bounds a request's headers too.
pub const IDLE_CONNECTION: std::time::Duration = std::time::Duration::from_secs(20);

/// How long requests in flight get to finish once `shutdown` resolves.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves HTTP until `shutdown` resolves; requests in flight get 30 s to finish.
pub async fn launch(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "serving");
    spawn_sweeper(&state);
    configured(axum_server::from_tcp(listener.into_std()?)?, shutdown).serve(make_service(state)).await
}

/// Serves HTTPS (rustls) until `shutdown` resolves; requests in flight get 30 s to finish.
pub async fn launch_tls(
    state: AppState,
    listener: std::net::TcpListener,
    tls: axum_server::tls_rustls::RustlsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "serving TLS");
    spawn_sweeper(&state);
    configured(axum_server::from_tcp_rustls(listener, tls)?, shutdown).serve(make_service(state)).await
}

/// The application for every connection. Through `into_make_service` the router is made ready
/// for its state once and the connections share it; axum's own `serve` given a bare `Router`
/// rebuilds the route table for each accepted connection (~60 KiB each, docs/benchmarks.md).
fn make_service(state: AppState) -> axum::routing::IntoMakeService<axum::Router> {
    app(state).into_make_service()
}

/// What plain and TLS serving share: idle kept-alive connections closed after
/// [`IDLE_CONNECTION`], and a graceful stop once `shutdown` resolves.
fn configured<A: axum_server::Address + Send + Sync + 'static, Acc>(
    mut server: axum_server::Server<A, Acc>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> axum_server::Server<A, Acc> {
    server.http_builder().http1().header_read_timeout(IDLE_CONNECTION);
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(SHUTDOWN_GRACE));
    });
    server.handle(handle)
}

/// Reads a PEM certificate chain and key for [`launch_tls`], with a Chinese error for the operator.
pub async fn tls_config(cert: &Path, key: &Path) -> Result<axum_server::tls_rustls::RustlsConfig, String> {
    // One crypto provider for the process (ring, as the phones' HTTP client uses).
    let _ = rustls::crypto::ring::default_provider().install_default();
    axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
        .await
        .map_err(|e| format!("无法读取 TLS 证书 {} 或私钥 {}: {e}", cert.display(), key.display()))
}

/// The deadline sweeper: at every interval, supervise what became overdue.
fn spawn_sweeper(state: &AppState) {
    let sweeper = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(sweeper.settings.sweep_interval_ms));
        loop {
            tick.tick().await;
            let s = sweeper.clone();
            match tokio::task::spawn_blocking(move || linkage::sweep(&s)).await {
                Ok(Ok(n)) if n > 0 => tracing::info!(supervised = n, "deadline sweep"),
                Ok(Err(e)) => tracing::warn!(error = %e, "deadline sweep failed"),
                _ => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    /// Phones coming back together all get in while the server is still busy accepting: the
    /// socket holds more waiting connections than the standard library's 128. Nothing accepts
    /// here; with std's `bind` the 130th connection is never answered (the kernel drops it).
    #[tokio::test]
    async fn the_listening_socket_has_room_for_a_town_coming_back_at_once() {
        let listener = super::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let at = listener.local_addr().unwrap();
        let waiting: Vec<std::net::TcpStream> = (0..300)
            .map(|i| {
                std::net::TcpStream::connect_timeout(&at, std::time::Duration::from_secs(20))
                    .unwrap_or_else(|e| panic!("connection {i} was not let in: {e}"))
            })
            .collect();
        assert_eq!(waiting.len(), 300);
    }
}
