//! A town server for fuzz targets that go through the HTTP router: built once per process on a
//! temporary database with the test town, a logged-in device and an Open311 key.

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::Request;
use gridlink_server::{AppState, Settings, build_state};
use tower::ServiceExt;

/// The server every input is sent to.
pub struct Town {
    pub runtime: tokio::runtime::Runtime,
    pub state: AppState,
    /// Bearer token of a grid member's device.
    pub token: String,
    /// Open311 key of the center.
    pub api_key: String,
    _dir: tempfile::TempDir,
}

/// The shared town (created on first use).
pub fn town() -> &'static Town {
    static TOWN: OnceLock<Town> = OnceLock::new();
    TOWN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            case_prefix: "FZ".into(),
            token_days: 90,
            max_attachment_bytes: 64 << 10,
            data_dir: dir.path().join("data"),
            secure_cookies: false,
            sweep_interval_ms: 60_000,
        };
        let state = build_state(settings, &dir.path().join("fuzz.db"), std::sync::Arc::new(gridlink_core::SystemClock)).unwrap();
        gridlink_tests::seed(&state);
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let token = runtime
            .block_on(gridlink_server::app::sign_in(&state, "grid_a", gridlink_tests::PASSWORD.into(), "fuzz", 86_400_000))
            .unwrap()
            .token;
        let api_key = gridlink_server::open311::create_api_key(&*state.db.writer(), "center", "fuzz", 0).unwrap();
        Town { runtime, state, token, api_key, _dir: dir }
    })
}

impl Town {
    /// Sends one request through the real router; returns the status code.
    pub fn call(&self, req: Request<Body>) -> u16 {
        let app = gridlink_server::app(self.state.clone());
        self.runtime.block_on(async move { app.oneshot(req).await.unwrap().status().as_u16() })
    }
}
