//! The device side of sync: one bounded round at a time, usable from any thread without an async
//! runtime (Android WorkManager / iOS BGTaskScheduler call [`SyncEngine::sync_once`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::protocol::{self, CONTENT_TYPE, DocChanges, DocId, PROTOCOL_VERSION, PersonalData, ProtocolError, SyncRequest, SyncResponse};
use crate::client::Client;
use crate::error::CoreError;
use crate::org::Person;

/// Bytes of outbox changes pushed in one round at most.
pub const PUSH_BYTES: usize = 8 << 20;
/// Size of one photo upload chunk (a 2G link moves it in a few seconds).
pub const CHUNK_BYTES: usize = 128 * 1024;
/// Rounds one `sync_once` runs at most while the server says `more`.
pub const MAX_ROUNDS: usize = 50;

/// Why a sync did not complete. Messages are in Chinese for the phone's status line.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("网络不可用或服务器无响应,稍后自动重试")]
    Network(String),
    #[error("服务器暂时无法处理(状态 {0}),稍后自动重试")]
    Server(u16),
    #[error("登录已失效,请重新登录")]
    Unauthorized,
    #[error("用户名或密码错误")]
    BadCredentials,
    #[error("登录尝试过于频繁,请稍后再试")]
    TooManyAttempts,
    #[error("本设备已被管理员停用,本地数据已清除")]
    Wiped,
    #[error("尚未登录")]
    NotLoggedIn,
    #[error("服务器拒绝了请求: {0}")]
    Refused(String),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl SyncError {
    /// Worth trying again later without the user doing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SyncError::Network(_) | SyncError::Server(_))
    }
}

/// A request to the server.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: &'static str,
    pub path: String,
    pub token: Option<String>,
    pub content_type: Option<&'static str>,
    pub body: Vec<u8>,
}

/// The server's answer.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// How the engine reaches the server.
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// Performs one request. Transport failures are [`SyncError::Network`].
    fn call(&self, req: HttpRequest) -> Result<HttpResponse, SyncError>;
}

/// Network time limits of one request, chosen for a rural 2G link by default: a link that
/// connects but never answers fails after `connect` + `response` (45 s), not after the whole
/// request's limit; a slow but working link still moves a full page of records (≈ 400 KB at
/// 40 kbit/s ≈ 80 s) within `transfer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncTimeouts {
    /// Establishing the connection (TCP and TLS). Default 15 s.
    pub connect: Duration,
    /// From the request sent until the answer begins. Default 30 s.
    pub response: Duration,
    /// Sending the request body, and separately receiving the answer's body. Default 120 s.
    pub transfer: Duration,
    /// The whole request, whatever its parts took. Default 240 s.
    pub round: Duration,
}

impl Default for SyncTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(15),
            response: Duration::from_secs(30),
            transfer: Duration::from_secs(120),
            round: Duration::from_secs(240),
        }
    }
}

/// HTTP(S) with a blocking client.
#[derive(Debug, Clone)]
pub struct HttpTransport {
    base: String,
    agent: ureq::Agent,
    timeouts: SyncTimeouts,
}

impl HttpTransport {
    /// A transport to the server at `base` (e.g. `http://127.0.0.1:8080`), default time limits.
    pub fn new(base: &str) -> Self {
        Self::with_timeouts(base, SyncTimeouts::default())
    }

    /// A transport with the given time limits.
    pub fn with_timeouts(base: &str, t: SyncTimeouts) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(t.connect))
            .timeout_send_body(Some(t.transfer))
            .timeout_recv_response(Some(t.response))
            .timeout_recv_body(Some(t.transfer))
            .timeout_global(Some(t.round))
            .http_status_as_error(false)
            .build()
            .into();
        Self { base: base.trim_end_matches('/').to_owned(), agent, timeouts: t }
    }

    /// The server's address.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The time limits in force.
    pub fn timeouts(&self) -> SyncTimeouts {
        self.timeouts
    }
}

impl Transport for HttpTransport {
    fn call(&self, req: HttpRequest) -> Result<HttpResponse, SyncError> {
        let url = format!("{}{}", self.base, req.path);
        let net = |e: ureq::Error| SyncError::Network(e.to_string());
        let mut builder = match req.method {
            "GET" => {
                let mut b = self.agent.get(&url);
                if let Some(t) = &req.token {
                    b = b.header("Authorization", format!("Bearer {t}"));
                }
                let resp = b.call().map_err(net)?;
                return read_response(resp);
            }
            "PUT" => self.agent.put(&url),
            _ => self.agent.post(&url),
        };
        if let Some(t) = &req.token {
            builder = builder.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(ct) = req.content_type {
            builder = builder.header("Content-Type", ct);
        }
        let resp = builder.send(&req.body[..]).map_err(net)?;
        read_response(resp)
    }
}

fn read_response(resp: ureq::http::Response<ureq::Body>) -> Result<HttpResponse, SyncError> {
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .with_config()
        .limit(protocol::MAX_BODY_BYTES as u64)
        .read_to_vec()
        .map_err(|e| SyncError::Network(e.to_string()))?;
    Ok(HttpResponse { status, body })
}

/// How often a phone asks whether the town's org units changed: daily.
pub const UNITS_CHECK_MS: i64 = 24 * 3600 * 1000;

/// Retry schedule: exponential backoff with a cap.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { attempts: 5, first_delay: Duration::from_secs(2), max_delay: Duration::from_secs(300) }
    }
}

impl RetryPolicy {
    /// Delay before retry number `n` (0-based), doubling up to the cap, with ±25% jitter so that
    /// a village of phones coming back online does not hit the server in step.
    pub fn delay(&self, n: u32) -> Duration {
        let base = self.first_delay.saturating_mul(1u32 << n.min(16)).min(self.max_delay);
        let jitter = 0.75 + rand::random::<f64>() * 0.5;
        base.mul_f64(jitter)
    }
}

/// What a completed sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    pub rounds: usize,
    pub pushed: usize,
    /// (record id, reason) of refused changes; the records were reloaded from the server.
    pub rejected: Vec<(String, String)>,
    pub received_docs: usize,
    pub removed_docs: usize,
    pub photos_uploaded: usize,
    pub bytes_up: usize,
    pub bytes_down: usize,
    /// Ids of the records that arrived or changed (screens showing them refresh).
    #[serde(default)]
    pub changed_ids: Vec<String>,
    /// Ids of the records that left the device (out of scope, or refused and reloaded).
    #[serde(default)]
    pub removed_ids: Vec<String>,
    /// Changes queued again because the server was restored from an older backup.
    #[serde(default)]
    pub requeued: usize,
    /// Notices (督办/通知) for the person's unit that this sync brought.
    #[serde(default)]
    pub new_notices: usize,
}

impl SyncReport {
    /// A record the answer brought: changed, and not gone (a refused record that came back).
    fn received(&mut self, id: String) {
        self.removed_ids.retain(|r| *r != id);
        if !self.changed_ids.contains(&id) {
            self.changed_ids.push(id);
        }
    }
}

/// What a UI shows about sync.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatus {
    /// Local changes not yet acknowledged by the server.
    pub pending: i64,
    /// Photos not yet uploaded.
    pub pending_photos: i64,
    pub last_success_ms: Option<i64>,
    pub last_attempt_ms: Option<i64>,
    /// The last failure, in Chinese, cleared by the next success.
    pub last_error: Option<String>,
    pub logged_in: bool,
}

/// Result of a login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginResult {
    pub token: String,
    pub device_id: String,
    pub person: Person,
    pub expires_ms: i64,
    /// This device's key for the personal data it keeps (hex), see [`crate::pii::DataKey`].
    #[serde(default)]
    pub data_key: Option<String>,
    /// The server's identity, kept across backups and restores: a login to another server does
    /// not make this device push its records there as if that server had lost them.
    #[serde(default)]
    pub server_id: Option<String>,
}

/// A data key from its hex form, if it is one.
fn data_key_of(hex_key: Option<&str>) -> Option<crate::pii::DataKey> {
    crate::pii::DataKey::from_bytes(&hex::decode(hex_key?).ok()?).ok()
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}
#[derive(Deserialize)]
struct ErrorDetail {
    message: String,
}

/// Why the server did not answer a request with what was asked: the session is over (401), the
/// server failed (5xx), or it refused, saying why.
fn failure(resp: &HttpResponse) -> SyncError {
    match resp.status {
        401 => SyncError::Unauthorized,
        s if s >= 500 => SyncError::Server(s),
        _ => SyncError::Refused(server_message(&resp.body)),
    }
}

/// A JSON answer of the server.
fn json_of<R: serde::de::DeserializeOwned>(body: &[u8]) -> Result<R, SyncError> {
    serde_json::from_slice(body).map_err(|e| SyncError::Protocol(ProtocolError::Format(e.to_string())))
}

fn server_message(body: &[u8]) -> String {
    serde_json::from_slice::<ErrorBody>(body).map(|b| b.error.message).unwrap_or_else(|_| "未知错误".into())
}

/// The device's sync engine.
#[derive(Debug, Clone)]
pub struct SyncEngine<T: Transport = HttpTransport> {
    transport: T,
    pub policy: RetryPolicy,
}

impl SyncEngine<HttpTransport> {
    /// An engine talking HTTP to the server at `base`.
    pub fn http(base: &str) -> Self {
        Self::new(HttpTransport::new(base))
    }

    /// The network time limits in force.
    pub fn timeouts(&self) -> SyncTimeouts {
        self.transport.timeouts()
    }

    /// Changes the network time limits (the retry policy stays).
    pub fn set_timeouts(&mut self, timeouts: SyncTimeouts) {
        self.transport = HttpTransport::with_timeouts(self.transport.base(), timeouts);
    }
}

impl<T: Transport> SyncEngine<T> {
    /// An engine over the given transport.
    pub fn new(transport: T) -> Self {
        Self { transport, policy: RetryPolicy::default() }
    }

    /// The transport it talks through.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// Logs in and binds this device to the account. A different person than before starts from
    /// an empty store (the previous person's records may be outside the new one's scope).
    pub fn login(&self, client: &mut Client, username: &str, password: &str, device_name: &str) -> Result<LoginResult, SyncError> {
        let body = serde_json::json!({
            "username": username, "password": password, "device_name": device_name, "install_id": client.device_id(),
        });
        let resp = self.transport.call(HttpRequest {
            method: "POST",
            path: "/api/v1/login".into(),
            token: None,
            content_type: Some("application/json"),
            body: body.to_string().into_bytes(),
        })?;
        match resp.status {
            200 => {}
            401 => return Err(SyncError::BadCredentials),
            429 => return Err(SyncError::TooManyAttempts),
            s if s >= 500 => return Err(SyncError::Server(s)),
            _ => return Err(SyncError::Refused(server_message(&resp.body))),
        }
        let login: LoginResult =
            serde_json::from_slice(&resp.body).map_err(|e| SyncError::Protocol(ProtocolError::Format(e.to_string())))?;
        if client.identity().is_some_and(|me| me.id != login.person.id) {
            client.wipe()?;
        }
        client.set_identity(login.person.clone())?;
        client.set_sync_meta("token", &login.token)?;
        client.set_data_key(data_key_of(login.data_key.as_deref()));
        client.clear_sync_meta("cursor")?;
        if let Some(server) = &login.server_id {
            // Another server: its epoch is not one this device's records were acknowledged in.
            if client.sync_meta("server_id")?.is_some_and(|known| known != *server) {
                client.clear_sync_meta("epoch")?;
                client.clear_sync_meta("recovering")?;
            }
            client.set_sync_meta("server_id", server)?;
        }
        // The pickers' units, fetched afresh; a sync fetches them again if this fails.
        client.clear_sync_meta("units_checked_ms")?;
        let _ = self.refresh_units(&Exclusive::new(client), &login.token);
        Ok(login)
    }

    /// Logs out: the server forgets the token; local records stay for the next login.
    pub fn logout(&self, client: &mut Client) -> Result<(), SyncError> {
        if let Some(token) = client.sync_meta("token")? {
            // Best effort: an offline logout still forgets the token locally.
            let _ = self.transport.call(HttpRequest {
                method: "POST",
                path: "/api/v1/logout".into(),
                token: Some(token),
                content_type: None,
                body: Vec::new(),
            });
        }
        client.clear_sync_meta("token")?;
        client.clear_identity()?;
        Ok(())
    }

    /// The status to show.
    pub fn status(client: &Client) -> Result<SyncStatus, CoreError> {
        let ms = |k: &str| -> Result<Option<i64>, CoreError> { Ok(client.sync_meta(k)?.and_then(|v| v.parse().ok())) };
        Ok(SyncStatus {
            pending: client.pending_count()?,
            pending_photos: client.pending_photo_count()?,
            last_success_ms: ms("last_success_ms")?,
            last_attempt_ms: ms("last_attempt_ms")?,
            last_error: client.sync_meta("last_error")?,
            logged_in: client.sync_meta("token")?.is_some(),
        })
    }

    /// Syncs until nothing more is waiting (bounded), recording the outcome in the status.
    pub fn sync_once(&self, client: &mut Client) -> Result<SyncReport, SyncError> {
        self.sync_shared(&Exclusive::new(client))
    }

    /// [`Self::sync_once`] on a store shared with the app: the store is taken only for local
    /// work — reading the outbox, applying the answer — and never while a request is on the
    /// network, so the app's reads and writes do not wait for a slow link. A change the app
    /// makes meanwhile is pushed in the next round.
    pub fn sync_shared<A: ClientAccess>(&self, access: &A) -> Result<SyncReport, SyncError> {
        access.with(|c| c.set_sync_meta("last_attempt_ms", &c.now_ms().to_string()))?;
        let result = self.sync_inner(access);
        access.with(|client| -> Result<(), SyncError> {
            match &result {
                Ok(_) => {
                    client.set_sync_meta("last_success_ms", &client.now_ms().to_string())?;
                    client.clear_sync_meta("last_error")?;
                }
                Err(SyncError::Wiped) => {}
                Err(e) => client.set_sync_meta("last_error", &e.to_string())?,
            }
            Ok(())
        })?;
        result
    }

    /// [`Self::sync_once`] with retries on network and server errors, sleeping with `sleep`.
    pub fn sync_with_retry(&self, client: &mut Client, sleep: impl Fn(Duration)) -> Result<SyncReport, SyncError> {
        let mut n = 0;
        loop {
            match self.sync_once(client) {
                Err(e) if e.is_retryable() && n + 1 < self.policy.attempts => {
                    sleep(self.policy.delay(n));
                    n += 1;
                }
                other => return other,
            }
        }
    }

    /// The notices addressed to the person's unit or below, newest first (at most 200).
    fn fetch_notices(&self, token: &str) -> Result<Vec<crate::client::Notice>, SyncError> {
        self.get_json(token, "/api/v1/notices")
    }

    /// Keeps the town's org units (for pickers and names) up to date: fetched when the phone has
    /// none, else asked about once every [`UNITS_CHECK_MS`] — a department added or grids redrawn
    /// reach a phone that stays logged in — with the version it holds, so that unchanged units
    /// cost an empty 304.
    fn refresh_units<A: ClientAccess>(&self, access: &A, token: &str) -> Result<(), SyncError> {
        let (empty, known, checked, now) = access.with(|c| -> Result<_, SyncError> {
            let checked = c.sync_meta("units_checked_ms")?.and_then(|v| v.parse::<i64>().ok());
            Ok((c.org_units()?.is_empty(), c.sync_meta("units_version")?, checked, c.now_ms()))
        })?;
        // A clock set back counts as due.
        if !empty && checked.is_some_and(|t| (t..t + UNITS_CHECK_MS).contains(&now)) {
            return Ok(());
        }
        let path = match known.filter(|_| !empty) {
            Some(v) => format!("/api/v1/units?unless={v}"),
            None => "/api/v1/units".into(),
        };
        let resp = self.transport.call(HttpRequest {
            method: "GET",
            path,
            token: Some(token.to_owned()),
            content_type: None,
            body: Vec::new(),
        })?;
        let units: Option<Vec<crate::org::OrgUnit>> = match resp.status {
            304 => None,
            200 => Some(json_of(&resp.body)?),
            _ => return Err(failure(&resp)),
        };
        access.with(|c| -> Result<(), SyncError> {
            c.atomically(|c| -> Result<(), SyncError> {
                if let Some(units) = &units {
                    c.set_org_units(units)?;
                    c.set_sync_meta("units_version", &crate::org::units_version(&resp.body))?;
                }
                c.set_sync_meta("units_checked_ms", &now.to_string())?;
                Ok(())
            })
        })
    }

    /// A JSON resource of the server, as the signed-in device.
    fn get_json<R: serde::de::DeserializeOwned>(&self, token: &str, path: &str) -> Result<R, SyncError> {
        let resp = self.transport.call(HttpRequest {
            method: "GET",
            path: path.into(),
            token: Some(token.to_owned()),
            content_type: None,
            body: Vec::new(),
        })?;
        match resp.status {
            200 => json_of(&resp.body),
            _ => Err(failure(&resp)),
        }
    }

    fn sync_inner<A: ClientAccess>(&self, access: &A) -> Result<SyncReport, SyncError> {
        let token = access.with(|c| c.sync_meta("token"))?.ok_or(SyncError::NotLoggedIn)?;
        // Reference data for pickers, and the unit's notices after the rounds: best effort, a
        // sync whose rounds went through has succeeded even if these do not come.
        let _ = self.refresh_units(access, &token);
        let mut report = SyncReport::default();
        report.photos_uploaded = self.upload_photos(access, &token, &mut report)?;
        let mut notices_came = false;
        for _ in 0..MAX_ROUNDS {
            let (more, notices) = self.round(access, &token, &mut report)?;
            report.rounds += 1;
            notices_came |= notices;
            if !more && access.with(|c| c.pending_count())? == 0 {
                break;
            }
        }
        // The unit's notices (supervision, work voided by concurrent actions) reach the person
        // even when the record itself has left the phone. They come in the sync's last answer;
        // a server that predates that is asked for them (best effort, as the units above).
        if !notices_came && let Ok(notices) = self.fetch_notices(&token) {
            access.with(|c| c.set_notices(&notices))?;
        }
        Ok(report)
    }

    /// One request: push the outbox, apply the answer. Returns whether more is waiting, and
    /// whether the answer brought the unit's notices.
    fn round<A: ClientAccess>(&self, access: &A, token: &str, report: &mut SyncReport) -> Result<(bool, bool), SyncError> {
        let (outbox, cursor, epoch, recovery, notices_after) = access.with(|c| -> Result<_, SyncError> {
            let meta = |key| -> Result<Option<u64>, SyncError> { Ok(c.sync_meta(key)?.and_then(|v| v.parse::<u64>().ok())) };
            Ok((c.outbox(10_000)?, meta("cursor")?, meta("epoch")?, meta("recovering")?.is_some(), c.notices_after()?))
        })?;
        let mut push: Vec<DocChanges> = Vec::new();
        let mut hashes: BTreeMap<DocId, Vec<String>> = BTreeMap::new();
        let mut size = 0;
        for e in outbox {
            if size > 0 && size + e.bytes.len() > PUSH_BYTES {
                break;
            }
            size += e.bytes.len();
            let Some(doc) = DocId::parse(&e.doc_id) else {
                continue;
            };
            match push.iter_mut().find(|d| d.doc == doc) {
                Some(d) => d.changes.push(serde_bytes::ByteBuf::from(e.bytes)),
                None => push.push(DocChanges { doc, changes: vec![serde_bytes::ByteBuf::from(e.bytes)] }),
            }
            hashes.entry(doc).or_default().push(e.hash);
        }
        let personal: Vec<PersonalData> = access
            .with(|c| c.personal_pending())?
            .into_iter()
            .filter_map(|(id, data)| Some(PersonalData { doc: DocId::parse(&id)?, data }))
            .collect();
        let body = protocol::encode(&SyncRequest {
            v: PROTOCOL_VERSION,
            cursor,
            push,
            page_bytes: None,
            whole_docs: false,
            ids_in_docs: true,
            personal,
            epoch,
            recovery,
            notices_after: Some(notices_after),
        });
        report.bytes_up += body.len();
        // On the network: the store is free for the app.
        let resp = self.transport.call(HttpRequest {
            method: "POST",
            path: "/api/v1/sync".into(),
            token: Some(token.to_owned()),
            content_type: Some(CONTENT_TYPE),
            body,
        })?;
        report.bytes_down += resp.body.len();
        match resp.status {
            200 => {}
            401 => return Err(SyncError::Unauthorized),
            410 => {
                access.with(|c| c.wipe())?;
                return Err(SyncError::Wiped);
            }
            s if s >= 500 => return Err(SyncError::Server(s)),
            _ => return Err(SyncError::Refused(server_message(&resp.body))),
        }
        let answer: SyncResponse = protocol::decode(&resp.body)?;
        if answer.v != PROTOCOL_VERSION {
            return Err(ProtocolError::Version(answer.v).into());
        }
        access.with(|client| client.atomically(|c| Self::apply_answer(c, &answer, &hashes, report)))?;
        Ok((answer.more, answer.notices.is_some()))
    }

    /// Applies a round's answer to the store.
    fn apply_answer(
        client: &mut Client,
        answer: &SyncResponse,
        hashes: &BTreeMap<DocId, Vec<String>>,
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        let recovering = client.sync_meta("recovering")?.is_some();
        // Refused changes: drop that record's queued changes and its local copy; the server sent
        // its own copy (when the record is in scope) to take its place. A change made on the
        // phone while the request was on its way builds on the refused one and goes with it.
        let mut acked = Vec::new();
        for (doc, hs) in hashes {
            if let Some(r) = answer.rejected.iter().find(|r| r.doc == *doc) {
                let id = doc.to_id();
                acked.extend(hs.iter().take(r.index as usize).cloned());
                client.drop_queued(&id)?;
                client.record_rejection(&id, &r.reason)?;
                client.forget(&id)?;
                report.removed_ids.push(id.clone());
                report.rejected.push((id, r.reason.clone()));
            } else {
                acked.extend(hs.iter().cloned());
            }
        }
        report.pushed += acked.len();
        client.acknowledge(&acked)?;
        for doc in &answer.removed {
            client.forget(&doc.to_id())?;
            report.changed_ids.retain(|c| *c != doc.to_id());
            report.removed_ids.push(doc.to_id());
        }
        report.removed_docs += answer.removed.len();
        for d in &answer.docs {
            let changes: Vec<Vec<u8>> = d.changes.iter().map(|c| c.to_vec()).collect();
            let id = d.doc.to_id();
            client.apply_from_server(&id, &changes, answer.server_time_ms)?;
            report.received(id);
        }
        for bytes in &answer.whole {
            report.received(client.apply_whole_from_server(bytes, answer.server_time_ms)?);
        }
        report.received_docs += answer.docs.len() + answer.whole.len();
        for p in &answer.personal {
            client.receive_personal(&p.doc.to_id(), &p.data)?;
        }
        let mut delivered: Vec<String> = answer.personal_stored.iter().map(|d| d.to_id()).collect();
        for r in &answer.personal_refused {
            client.record_rejection(&r.doc.to_id(), &r.reason)?;
            delivered.push(r.doc.to_id());
        }
        client.personal_delivered(&delivered)?;
        if let Some(notices) = &answer.notices {
            report.new_notices += client.add_notices(notices)?;
        }
        client.set_sync_meta("cursor", &answer.cursor.to_string())?;
        if let Some(epoch) = answer.epoch {
            // A server that went back to a backup: push everything held here once more. A
            // device's first answer only names the epoch.
            let before = client.sync_meta("epoch")?;
            if before.is_some_and(|b| b != epoch.to_string()) {
                report.requeued += client.requeue_for_recovery()?;
            }
            client.set_sync_meta("epoch", &epoch.to_string())?;
        } else if recovering && client.pending_count()? == 0 {
            // Everything pushed again has been acknowledged: the next round says so.
            client.clear_sync_meta("recovering")?;
        }
        Ok(())
    }

    /// Uploads photos not yet on the server, resuming each where the server's copy ends.
    fn upload_photos<A: ClientAccess>(&self, access: &A, token: &str, report: &mut SyncReport) -> Result<usize, SyncError> {
        let mut done = 0;
        for sha in access.with(|c| c.pending_photos())? {
            let Some(bytes) = access.with(|c| c.photo(&sha))? else {
                continue;
            };
            let status = self.transport.call(HttpRequest {
                method: "GET",
                path: format!("/api/v1/attachments/{sha}/status"),
                token: Some(token.to_owned()),
                content_type: None,
                body: Vec::new(),
            })?;
            let mut offset = match status.status {
                200 => upload_state(&status.body)?.0,
                404 => 0,
                401 => return Err(SyncError::Unauthorized),
                s if s >= 500 => return Err(SyncError::Server(s)),
                _ => return Err(SyncError::Refused(server_message(&status.body))),
            };
            let mut complete = offset == bytes.len() as u64;
            while !complete {
                let start = offset as usize;
                let end = (start + CHUNK_BYTES).min(bytes.len());
                let resp = self.transport.call(HttpRequest {
                    method: "PUT",
                    path: format!("/api/v1/attachments/{sha}?offset={start}&total={}", bytes.len()),
                    token: Some(token.to_owned()),
                    content_type: Some("application/octet-stream"),
                    body: bytes[start..end].to_vec(),
                })?;
                report.bytes_up += end - start;
                match resp.status {
                    200 | 409 => (offset, complete) = upload_state(&resp.body)?,
                    401 => return Err(SyncError::Unauthorized),
                    s if s >= 500 => return Err(SyncError::Server(s)),
                    _ => return Err(SyncError::Refused(server_message(&resp.body))),
                }
            }
            access.with(|c| c.mark_photo_uploaded(&sha))?;
            done += 1;
        }
        Ok(done)
    }

    /// Downloads a photo the device does not hold (photos are fetched on demand).
    pub fn fetch_photo(&self, client: &mut Client, sha256: &str) -> Result<Vec<u8>, SyncError> {
        self.fetch_photo_shared(&Exclusive::new(client), sha256)
    }

    /// [`Self::fetch_photo`] on a store shared with the app (not held during the download).
    pub fn fetch_photo_shared<A: ClientAccess>(&self, access: &A, sha256: &str) -> Result<Vec<u8>, SyncError> {
        if let Some(b) = access.with(|c| c.photo(sha256))? {
            return Ok(b);
        }
        let token = access.with(|c| c.sync_meta("token"))?.ok_or(SyncError::NotLoggedIn)?;
        let resp = self.transport.call(HttpRequest {
            method: "GET",
            path: format!("/api/v1/attachments/{sha256}"),
            token: Some(token),
            content_type: None,
            body: Vec::new(),
        })?;
        match resp.status {
            200 => {
                access.with(|c| c.store_downloaded_photo(sha256, &resp.body))?;
                Ok(resp.body)
            }
            401 => Err(SyncError::Unauthorized),
            s if s >= 500 => Err(SyncError::Server(s)),
            _ => Err(SyncError::Refused(server_message(&resp.body))),
        }
    }
}

/// How the sync engine reaches the device's store: for each piece of local work it takes the
/// store, does the work and gives it back. Network requests happen outside [`ClientAccess::with`].
pub trait ClientAccess {
    /// Runs `f` with the store.
    fn with<T>(&self, f: impl FnOnce(&mut Client) -> T) -> T;
}

/// A store shared with the app's threads.
impl ClientAccess for std::sync::Mutex<Client> {
    fn with<T>(&self, f: impl FnOnce(&mut Client) -> T) -> T {
        // A panic while holding the lock leaves the store consistent (every write is a transaction).
        f(&mut self.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A store the caller holds exclusively for the whole sync.
#[derive(Debug)]
pub struct Exclusive<'a>(std::cell::RefCell<&'a mut Client>);

impl<'a> Exclusive<'a> {
    /// Wraps a store held by the caller.
    pub fn new(client: &'a mut Client) -> Self {
        Self(std::cell::RefCell::new(client))
    }
}

impl ClientAccess for Exclusive<'_> {
    fn with<T>(&self, f: impl FnOnce(&mut Client) -> T) -> T {
        f(&mut self.0.borrow_mut())
    }
}

fn upload_state(body: &[u8]) -> Result<(u64, bool), SyncError> {
    #[derive(Deserialize)]
    struct State {
        received: u64,
        complete: bool,
    }
    let s: State = serde_json::from_slice(body).map_err(|e| SyncError::Protocol(ProtocolError::Format(e.to_string())))?;
    Ok((s.received, s.complete))
}
