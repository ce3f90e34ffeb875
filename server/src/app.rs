//! Shared state, the router and the HTTP handlers.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use automerge::ActorId;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gridlink_core::sync::protocol::{self, CONTENT_TYPE, ProtocolError};
use gridlink_core::{Clock, Role, masked_json};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::attachments;
use crate::auth::{self, AuthDevice};
use crate::db::Db;
use crate::error::{AppError, AppResult};
use crate::records::{self, IngestCtx, ScopeEvent};
use crate::storage::NewSession;
use gridlink_core::routing::RoutingRules;
use gridlink_core::{Catalog, WorkCalendar};
use std::sync::RwLock;

/// Server settings (from flags, environment and the TOML file).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Prefix of case numbers (`GT` gives `GT-2026-000123`).
    pub case_prefix: String,
    /// Days a device token stays valid.
    pub token_days: u32,
    /// Largest photo accepted, in bytes.
    pub max_attachment_bytes: u64,
    /// Where attachments are kept.
    pub data_dir: PathBuf,
    /// The console's session cookie is sent only over HTTPS.
    pub secure_cookies: bool,
    /// How often the deadline sweeper runs.
    pub sweep_interval_ms: u64,
}

/// State shared by all handlers.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub settings: Arc<Settings>,
    pub clock: Arc<dyn Clock>,
    pub server_actor: ActorId,
    /// The database's epoch ([`crate::db::epoch`]); fixed while the server runs.
    pub epoch: u64,
    pub events: broadcast::Sender<ScopeEvent>,
    /// On PostgreSQL: the other nodes of the database hear of this node's events, and this
    /// node's clients of theirs.
    pub bus: Option<Arc<crate::storage::EventBus>>,
    pub metrics: PrometheusHandle,
    pub catalog: Arc<Catalog>,
    pub calendar: Arc<WorkCalendar>,
    pub routing: Arc<RwLock<RoutingRules>>,
    /// Tickets for automerge-repo peers' WebSockets.
    pub amrepo_tickets: Arc<crate::automerge_repo::Tickets>,
    /// Turns for sync rounds in flight ([`AppState::round_turn`]).
    pub round_turns: Arc<tokio::sync::Semaphore>,
}

/// How many sync rounds a server works on at once, from their request's decoding to their
/// answer's encoding: two of the writer's batches, one being written while the next gathers.
/// A round holds its pushed records judged in memory (Automerge documents) and then its answer;
/// when a whole town's phones sync at once, the others wait for a turn holding only their
/// compressed request, which keeps the server's memory bounded by this, not by the number of
/// phones (docs/benchmarks.md, "Rounds in flight").
pub const ROUNDS_IN_FLIGHT: usize = 2 * crate::db::MAX_BATCH;

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl AppState {
    /// Now, from the injectable clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Waits for one of the [`ROUNDS_IN_FLIGHT`] turns of a sync round; the turn ends when the
    /// permit is dropped. Turns are given in the order they were asked for.
    pub async fn round_turn(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.round_turns.acquire().await.expect("the semaphore is never closed")
    }

    /// The routing rules in force.
    pub fn routing(&self) -> RoutingRules {
        self.routing.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// What ingesting and system actions need.
    pub fn ingest_ctx<'a>(&'a self, routing: &'a RoutingRules, now_ms: i64, events: &'a mut Vec<ScopeEvent>) -> IngestCtx<'a> {
        IngestCtx {
            server_actor: &self.server_actor,
            catalog: &self.catalog,
            calendar: &self.calendar,
            routing,
            case_prefix: &self.settings.case_prefix,
            now_ms,
            events,
            recovery: false,
        }
    }

    /// Tells live clients about changed records (after the transaction committed).
    pub fn notify(&self, events: Vec<ScopeEvent>) {
        for e in events {
            if let Some(bus) = &self.bus {
                bus.publish(&e);
            }
            let _ = self.events.send(e);
        }
    }
}

/// Largest sync request body accepted (compressed).
pub const MAX_SYNC_BODY: usize = 32 << 20;

/// The router; tests call it without a socket.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(crate::console::routes())
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/login", post(login))
        .route("/api/v1/logout", post(logout))
        .route("/api/v1/me", get(me))
        .route("/api/v1/units", get(units))
        .route("/api/v1/sync", post(sync).layer(DefaultBodyLimit::max(MAX_SYNC_BODY)))
        .route("/api/v1/events", get(events))
        .route(crate::automerge_repo::PATH, get(crate::automerge_repo::connect))
        .route("/api/v1/automerge-repo/ticket", post(crate::automerge_repo::ticket))
        .route("/api/v1/records/{id}", get(record))
        .route("/api/v1/attachments/{sha}", get(attachments::download).put(attachments::upload))
        .route("/api/v1/attachments/{sha}/status", get(attachments::status))
        .route("/api/v1/admin/devices", get(list_devices))
        .route("/api/v1/admin/routing", get(crate::linkage::get_routing).put(crate::linkage::put_routing))
        .route("/api/v1/figures", get(crate::linkage::figures))
        .route("/api/v1/ledger", get(crate::linkage::ledger))
        .route("/api/v1/batches/{id}", get(crate::linkage::batch))
        .route("/api/v1/notices", get(crate::linkage::notices))
        .nest("/open311", crate::open311::routes())
        .route("/api/v1/admin/devices/{id}/revoke", post(revoke_device))
        .fallback(|| async { AppError::NotFound })
        .layer(DefaultBodyLimit::max(2 << 20))
        .layer(axum::middleware::map_response(explain_rejections))
        .layer(SetResponseHeaderLayer::if_not_present(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(axum::middleware::from_fn(crate::telemetry::track))
        .layer(
            tower::ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                    let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
                    // The path, never the query string (it may carry a search for a name).
                    tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path())
                }))
                .layer(PropagateRequestIdLayer::x_request_id()),
        )
        .with_state(state)
}

/// Requests axum's extractors refuse (malformed JSON, a bad query string, a body of the wrong
/// type) are answered like every other error: JSON, with the reason in Chinese first.
async fn explain_rejections(resp: Response) -> Response {
    let plain = resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/plain"));
    if !resp.status().is_client_error() || !plain {
        return resp;
    }
    let status = resp.status();
    let detail = axum::body::to_bytes(resp.into_body(), 16 << 10).await.unwrap_or_default();
    let detail: String = String::from_utf8_lossy(&detail).chars().take(300).collect();
    let message = format!("请求格式不正确({detail})");
    (status, Json(serde_json::json!({ "error": { "code": "bad_request", "message": message, "wipe": false } }))).into_response()
}

async fn healthz(State(state): State<AppState>) -> AppResult<&'static str> {
    state.db.read(|c| c.ping()).await?;
    Ok("ok")
}

async fn metrics(State(state): State<AppState>) -> AppResult<impl IntoResponse> {
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::telemetry::scrape(&state).await?))
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    device_name: String,
    /// The phone's own id for its store: a login again on the same phone keeps its
    /// personal-data key, so what it sealed before stays readable.
    #[serde(default)]
    install_id: Option<String>,
}

async fn login(State(state): State<AppState>, Json(form): Json<LoginForm>) -> AppResult<Json<serde_json::Value>> {
    let lifetime_ms = i64::from(state.settings.token_days) * 86_400_000;
    let install = form
        .install_id
        .as_deref()
        .map(str::trim)
        .filter(|i| !i.is_empty() && i.len() <= 64 && i.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    let s = sign_in_device(&state, &form.username, form.password, &form.device_name, install, lifetime_ms).await?;
    Ok(Json(serde_json::json!({
        "token": s.token, "device_id": s.device_id, "person": s.person, "expires_ms": s.expires_ms,
        "data_key": hex::encode(s.data_key.as_bytes()),
        "server_id": hex::encode(state.server_actor.to_bytes()),
    })))
}

/// A new device session after a successful login.
#[derive(Debug)]
pub struct SignedIn {
    pub token: String,
    pub device_id: String,
    pub person: gridlink_core::Person,
    pub expires_ms: i64,
    /// The device's key for the personal data it keeps (see `gridlink_core::pii`).
    pub data_key: gridlink_core::pii::DataKey,
}

/// Checks a user name and password (rate-limited, constant cost for unknown users) and opens a
/// device session valid for `lifetime_ms`: a phone, or a browser of the web console.
pub async fn sign_in(state: &AppState, username: &str, password: String, device_name: &str, lifetime_ms: i64) -> AppResult<SignedIn> {
    sign_in_device(state, username, password, device_name, None, lifetime_ms).await
}

/// [`sign_in`] for a phone that names its install: the personal-data key of its last session
/// (same person, same install, not revoked) carries over to the new one.
async fn sign_in_device(
    state: &AppState,
    username: &str,
    password: String,
    device_name: &str,
    install: Option<&str>,
    lifetime_ms: i64,
) -> AppResult<SignedIn> {
    let now = state.now_ms();
    let user = username.trim().to_owned();
    if user.is_empty() || user.len() > 64 || password.len() > 256 {
        return Err(AppError::BadCredentials);
    }
    if !auth::login_allowed(state, &user, now).await? {
        metrics::counter!("gridlink_login_failures_total").increment(1);
        return Err(AppError::TooManyRequests);
    }
    let lookup = user.clone();
    let found = state.db.read(move |c| auth::load_person(c, &lookup)).await?;
    // argon2 is deliberately slow: keep it off the async threads. An unknown user costs the same.
    let ok = tokio::task::spawn_blocking(move || match found {
        Some((person, hash, true)) => auth::verify_password(&hash, &password).then_some(person),
        _ => {
            auth::verify_password(
                "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$J7e1GSqyoTCd1qGgcORQ4s0n4Nl0n2ZNzqQCz1cHl4M",
                &password,
            );
            None
        }
    })
    .await?;
    let Some(person) = ok else {
        auth::login_failed(state, &user, now).await?;
        metrics::counter!("gridlink_login_failures_total").increment(1);
        tracing::info!(user = %user, "login failed");
        return Err(AppError::BadCredentials);
    };
    auth::login_succeeded(state, &user).await?;
    let token = auth::new_token();
    let device_id = uuid::Uuid::now_v7().to_string();
    let expires = now + lifetime_ms;
    let name: String = device_name.chars().take(64).collect();
    let (hash, pid, did) = (auth::token_hash(&token), person.id.clone(), device_id.clone());
    let install = install.map(str::to_owned);
    let data_key = state
        .db
        .write(move |c| {
            let fresh = gridlink_core::pii::DataKey::generate();
            let session = NewSession {
                device_id: did.clone(),
                person_id: pid.clone(),
                name,
                token_hash: hash,
                created_ms: now,
                expires_ms: expires,
                install_id: install,
            };
            // The key moves to the new session: only the newest session of an install holds it,
            // so revoking that session forgets it for good.
            let key = c.open_session(&session, fresh.as_bytes(), |k| gridlink_core::pii::DataKey::from_bytes(k).is_ok())?;
            let data_key = gridlink_core::pii::DataKey::from_bytes(&key).unwrap_or(fresh);
            c.audit(now, &pid, "login", &format!("device {did}"))?;
            Ok(data_key)
        })
        .await?;
    tracing::info!(user = %person.id, device = %device_id, "login");
    Ok(SignedIn { token, device_id, person, expires_ms: expires, data_key })
}

/// Ends a device session.
pub async fn sign_out(state: &AppState, device_id: String) -> AppResult<()> {
    state.db.write(move |c| c.sign_out(&device_id)).await
}

async fn logout(State(state): State<AppState>, auth: AuthDevice) -> AppResult<StatusCode> {
    sign_out(&state, auth.device_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct UnitsQuery {
    /// The version of the units the caller holds ([`gridlink_core::org::units_version`]).
    unless: Option<String>,
}

/// `GET /api/v1/units[?unless=version]`: the town's org units (code, name, kind, parent,
/// department key) for the phones' pickers; 304 with no body when they are still the version
/// the caller holds (phones ask daily). Reference data, no personal data; any signed-in device
/// may read it.
async fn units(State(state): State<AppState>, auth: AuthDevice, Query(q): Query<UnitsQuery>) -> AppResult<Response> {
    let mut units = state.db.read(|c| crate::import::load_units(c).map_err(AppError::Internal)).await?;
    // A town's people get their own town's units and the county's (the county and its
    // departments, which the town's records may be escalated to), never a neighbouring town's;
    // the county's people get every town's.
    if let Some(town) = auth.person.unit.town() {
        units.retain(|u| u.code.town().is_none_or(|t| t == town));
    }
    let body = serde_json::to_vec(&units).map_err(|e| AppError::Internal(e.to_string()))?;
    if q.unless.is_some_and(|v| v == gridlink_core::org::units_version(&body)) {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response())
}

async fn me(auth: AuthDevice) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "person": auth.person, "device_id": auth.device_id }))
}

async fn sync(State(state): State<AppState>, auth: AuthDevice, headers: HeaderMap, body: Bytes) -> AppResult<Response> {
    let started = std::time::Instant::now();
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !ct.starts_with(CONTENT_TYPE) {
        return Err(AppError::BadRequest(format!("同步请求的内容类型应为 {CONTENT_TYPE}")));
    }
    let _turn = state.round_turn().await;
    let req = protocol::decode_request(&body).map_err(|e| match e {
        ProtocolError::TooLarge(n) => AppError::TooLarge(n),
        ProtocolError::Version(_) => AppError::Unprocessable(e.to_string()),
        other => AppError::BadRequest(other.to_string()),
    })?;
    if req.push.iter().any(|d| d.changes.is_empty()) || req.push.len() > 100_000 || req.personal.len() > 10_000 {
        return Err(AppError::BadRequest("同步请求中的变更列表无效".into()));
    }
    let resp = crate::sync::serve(&state, auth, req).await?;
    let answer = protocol::encode(&resp);
    metrics::counter!("gridlink_sync_received_bytes_total").increment(body.len() as u64);
    metrics::counter!("gridlink_sync_sent_bytes_total").increment(answer.len() as u64);
    metrics::histogram!("gridlink_sync_seconds").record(started.elapsed().as_secs_f64());
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))], answer).into_response())
}

async fn events(State(state): State<AppState>, auth: AuthDevice) -> Sse<impl tokio_stream::Stream<Item = Result<Event, Infallible>>> {
    let person = auth.person;
    let live = crate::telemetry::LiveConnection::open();
    let stream = BroadcastStream::new(state.events.subscribe()).filter_map(move |e| {
        // Held by the stream: counted until the client goes.
        let _connected = &live;
        match e {
            Ok(e) if e.visible_to(&person) => Some(Ok(Event::default().event("sync").data(e.doc_id))),
            Ok(_) => None,
            // The client fell behind: tell it to sync anyway.
            Err(_) => Some(Ok(Event::default().event("sync").data(""))),
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(20)))
}

async fn record(State(state): State<AppState>, auth: AuthDevice, Path(id): Path<String>) -> AppResult<Json<serde_json::Value>> {
    let actor = state.server_actor.clone();
    state
        .db
        .read(move |c| {
            let (record, state, access) = records::read_for(c, &actor, &id, &auth.person)?;
            let folded = record.fold();
            Ok(Json(serde_json::json!({
                "record": masked_json(&record),
                "state": state,
                "timeline": folded.entries,
                "read_only": access != gridlink_core::Access::Full,
                "automerge_url": crate::automerge_repo::url(&record.id),
            })))
        })
        .await
}

pub(crate) fn require_admin(auth: &AuthDevice) -> AppResult<()> {
    if auth.person.role == Role::Admin { Ok(()) } else { Err(AppError::Forbidden) }
}

async fn list_devices(State(state): State<AppState>, auth: AuthDevice) -> AppResult<Json<serde_json::Value>> {
    require_admin(&auth)?;
    state
        .db
        .read(|c| {
            let rows = c.devices_page("", 500, 0)?.into_iter().map(|d| {
                serde_json::json!({
                    "id": d.id, "person_id": d.person_id, "person_name": d.person_name, "name": d.name,
                    "created_ms": d.created_ms, "last_seen_ms": d.last_seen_ms, "revoked_ms": d.revoked_ms,
                })
            });
            Ok(Json(serde_json::Value::Array(rows.collect())))
        })
        .await
}

async fn revoke_device(State(state): State<AppState>, auth: AuthDevice, Path(id): Path<String>) -> AppResult<StatusCode> {
    require_admin(&auth)?;
    revoke(&state, &auth.person.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes a device (remote wipe: its next request is told to delete its local data), audited
/// as done by `who`. The device's personal-data key is forgotten with it: the phone cannot get
/// it back.
pub async fn revoke(state: &AppState, who: &str, id: String) -> AppResult<()> {
    let now = state.now_ms();
    let who = who.to_owned();
    state
        .db
        .write(move |c| {
            if !c.revoke_device(&id, now)? {
                return Err(AppError::NotFound);
            }
            c.audit(now, &who, "revoke_device", &id)
        })
        .await
}
