//! The town server as an automerge-repo sync server (`GET /api/v1/automerge-repo`, WebSocket), so
//! web pages and JavaScript peers using the Automerge ecosystem's own library (automerge-repo 2.x)
//! sync records under the same rules as the phones.
//!
//! **Protocol** (automerge-repo's network protocol, version "1"): every frame is one binary CBOR
//! map with a `type`. The peer sends `join` (its peer id, the protocol versions it speaks); the
//! server answers `peer` with the version it chose. Then, per document, `request` (a peer that
//! does not have the document yet) and `sync` carry an Automerge sync message in `data`; the
//! server answers `sync`, or `doc-unavailable` for a document the peer may not see or that does not
//! exist — the same answer for both, so ids cannot be probed. `ephemeral` and the remote-heads
//! messages are accepted and ignored (the server relays nothing between peers); `leave` ends the
//! connection. Anything else — a text frame, bytes that are not CBOR, an unknown type, a frame
//! over 8 MiB, more than 10,000 messages in 10 s (a peer opening 2,000 records sends about 5,000) — closes the connection with a reason and changes
//! nothing.
//!
//! **Documents** are the records: a record's automerge URL is `automerge:` followed by the base58check
//! of its 16-byte id ([`url`]); the console's record page and the record API show it.
//!
//! **Authentication.** A browser cannot set headers on a WebSocket, and a token in a URL ends up in
//! proxies' logs. So a device first asks `POST /api/v1/automerge-repo/ticket` with its token in the
//! `Authorization` header, and connects with `?ticket=…`. A ticket is random, opens only this
//! endpoint, stands for that one device (revoking the device voids it) and expires after five
//! minutes; within them it may be used again, because automerge-repo's adapter reconnects to the
//! same URL after a dropped link. A URL that ends up in a log is therefore worth at most five
//! minutes of reading and writing what that device may anyway. A console page may instead connect
//! with its session cookie when the `Origin` is the server's own. Tickets are rate-limited per
//! device like logins.
//! The connection is that device: revoking it (or logging it out, deactivating the person)
//! disconnects the peer within two seconds.
//!
//! **Writes** go through the same ingest as a phone's push ([`crate::records::ingest`]): the
//! changes a sync message carries are validated as the device's person's, all together; when one
//! is refused, none is kept, no other device ever sees them, and the peer gets an `error` message
//! with the Chinese reason, then `doc-unavailable` for that record. The peer's own copy still holds
//! the refused change, and the server no longer syncs that copy; to recover, the app waits for that
//! `doc-unavailable` (one that arrives later marks a new copy unavailable), deletes its copy
//! (`repo.delete(url)`) and finds the record again (a fresh `request`), which brings the server's
//! state and live updates again.
//!
//! **Live.** Changes made on phones or in the console reach connected peers as they are
//! committed (the server's change events, no polling). A record that comes into the peer's scope
//! (or changes while in it) is announced by an unsolicited `sync`, which automerge-repo takes as a
//! new document; a record that leaves the peer's scope is answered `doc-unavailable` and no longer
//! synced.

use crate::storage::Storage;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use automerge::sync::State as SyncState;
use axum::Json;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use ciborium::Value;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::auth::{AuthDevice, device_for_token, session_token};
use crate::error::{AppError, AppResult};
use crate::records::{ScopeEvent, ingest, load_doc, read_for};

/// Where peers connect.
pub const PATH: &str = "/api/v1/automerge-repo";
/// The protocol version spoken.
const PROTOCOL: &str = "1";
/// Largest frame accepted: a larger one closes the connection with code 1009 and a reason.
pub const MAX_FRAME: usize = 8 << 20;
/// Beyond this the WebSocket layer drops the connection without reading on (no reason given).
const HARD_FRAME: usize = 16 << 20;
/// Messages a peer may send in [`FLOOD_WINDOW`].
const FLOOD_LIMIT: u32 = 10_000;
const FLOOD_WINDOW: Duration = Duration::from_secs(10);
/// How long a ticket is valid (for the first connection and reconnects).
const TICKET_MS: i64 = 5 * 60_000;
/// How often a connection checks that its device is still allowed.
const RECHECK: Duration = Duration::from_secs(2);

/// The automerge-repo document id of a record: the base58check of its 16-byte id.
pub fn document_id(record_id: &str) -> Option<String> {
    let id = uuid::Uuid::parse_str(record_id).ok()?;
    Some(bs58::encode(id.as_bytes()).with_check().into_string())
}

/// The record id of an automerge-repo document id (with or without the `automerge:` prefix).
pub fn record_id(document_id: &str) -> Option<String> {
    let bytes = bs58::decode(document_id.trim_start_matches("automerge:")).with_check(None).into_vec().ok()?;
    let bytes: [u8; 16] = bytes.try_into().ok()?;
    Some(uuid::Uuid::from_bytes(bytes).to_string())
}

/// A record's automerge URL (`automerge:…`).
pub fn url(record_id: &str) -> Option<String> {
    document_id(record_id).map(|d| format!("automerge:{d}"))
}

/// Tickets for the WebSocket: sha256 of the ticket → (the device's token, expiry).
#[derive(Debug, Default)]
pub struct Tickets(Mutex<HashMap<String, (String, i64)>>);

impl Tickets {
    fn issue(&self, token: &str, now: i64) -> String {
        let ticket = crate::auth::new_token();
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (_, expires)| *expires > now);
        map.insert(hash(&ticket), (token.to_owned(), now + TICKET_MS));
        ticket
    }

    /// The token a ticket stands for, while it is valid.
    fn redeem(&self, ticket: &str, now: i64) -> Option<String> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&hash(ticket)).filter(|(_, expires)| *expires > now).map(|(token, _)| token.clone())
    }
}

fn hash(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// `POST /api/v1/automerge-repo/ticket`: a ticket to connect with, for the device of the token.
pub async fn ticket(State(state): State<AppState>, headers: HeaderMap, auth: AuthDevice) -> AppResult<Json<serde_json::Value>> {
    let now = state.now_ms();
    let key = format!("automerge-repo ticket {}", auth.device_id);
    if !crate::auth::login_allowed(&state, &key, now).await? {
        return Err(AppError::TooManyRequests);
    }
    // Each ticket counts against the device's allowance, as a failed login does.
    crate::auth::login_failed(&state, &key, now).await?;
    let token = crate::auth::bearer_token(&headers).ok_or(AppError::Unauthorized)?;
    let ticket = state.amrepo_tickets.issue(&token, now);
    Ok(Json(serde_json::json!({ "ticket": ticket, "expires_ms": now + TICKET_MS, "path": format!("{PATH}?ticket={ticket}") })))
}

#[derive(Debug, Deserialize)]
pub struct ConnectQuery {
    ticket: Option<String>,
}

/// `GET /api/v1/automerge-repo`: the WebSocket.
pub async fn connect(State(state): State<AppState>, headers: HeaderMap, Query(q): Query<ConnectQuery>, ws: WebSocketUpgrade) -> Response {
    let token = match q.ticket {
        Some(t) => state.amrepo_tickets.redeem(&t, state.now_ms()),
        // A console page: its session cookie, from the server's own origin only.
        None if same_origin(&headers) => session_token(&headers),
        None => None,
    };
    let Some(token) = token else {
        return AppError::Unauthorized.into_response();
    };
    let auth = match device_for_token(&state, token.clone()).await {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    ws.max_message_size(HARD_FRAME).max_frame_size(HARD_FRAME).on_upgrade(move |socket| async move {
        let device = auth.device_id.clone();
        tracing::info!(device = %device, "automerge-repo peer connected");
        let mut peer = Peer::new(state, auth, token);
        let reason = peer.run(socket).await;
        tracing::info!(device = %device, %reason, "automerge-repo peer disconnected");
    })
}

fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get("host").and_then(|v| v.to_str().ok());
    let origin = headers.get("origin").and_then(|v| v.to_str().ok());
    match (host, origin) {
        (Some(host), Some(origin)) => origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) == Some(host),
        _ => false,
    }
}

/// A message from the peer, as far as the server reads it.
#[derive(Debug, Default, PartialEq)]
pub struct Incoming {
    pub kind: String,
    pub sender: Option<String>,
    pub document: Option<String>,
    pub data: Option<Vec<u8>>,
    pub versions: Vec<String>,
}

/// Why a frame was not a message the server takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadFrame {
    #[error("消息不是有效的 CBOR")]
    NotCbor,
    #[error("消息不是带 type 的 CBOR 映射")]
    NoType,
    #[error("消息字段类型不对")]
    BadField,
}

/// Decodes one frame (the fuzz target `automerge_repo_message` runs this).
pub fn decode(frame: &[u8]) -> Result<Incoming, BadFrame> {
    let value: Value = ciborium::from_reader(frame).map_err(|_| BadFrame::NotCbor)?;
    let Value::Map(entries) = value else { return Err(BadFrame::NoType) };
    let mut m = Incoming::default();
    for (k, v) in entries {
        let Value::Text(k) = k else { continue };
        match k.as_str() {
            "type" => m.kind = text(v)?,
            "senderId" => m.sender = Some(text(v)?),
            "documentId" => m.document = Some(text(v)?),
            "data" => m.data = Some(bytes(v)?),
            "supportedProtocolVersions" => {
                let Value::Array(vs) = v else { return Err(BadFrame::BadField) };
                m.versions = vs.into_iter().map(text).collect::<Result<_, _>>()?;
            }
            _ => {}
        }
    }
    if m.kind.is_empty() { Err(BadFrame::NoType) } else { Ok(m) }
}

fn text(v: Value) -> Result<String, BadFrame> {
    match v {
        Value::Text(t) if t.len() <= 200 => Ok(t),
        _ => Err(BadFrame::BadField),
    }
}

fn bytes(v: Value) -> Result<Vec<u8>, BadFrame> {
    match v {
        Value::Bytes(b) => Ok(b),
        // A typed array as cbor-x may tag it (tag 64: uint8 array).
        Value::Tag(64, inner) => match *inner {
            Value::Bytes(b) => Ok(b),
            _ => Err(BadFrame::BadField),
        },
        _ => Err(BadFrame::BadField),
    }
}

fn encode(fields: Vec<(&str, Value)>) -> Vec<u8> {
    let map = Value::Map(fields.into_iter().map(|(k, v)| (Value::Text(k.to_owned()), v)).collect());
    let mut out = Vec::new();
    ciborium::into_writer(&map, &mut out).expect("writing to a Vec cannot fail");
    out
}

/// What a step on one document came to.
enum Step {
    /// The message to send, if the peer is not up to date.
    Reply(Option<Vec<u8>>),
    /// The peer may not see it, or it does not exist.
    Unavailable,
    /// The peer's changes were refused, with the reason.
    Refused(String),
    /// The sync message did not decode.
    Corrupt,
}

/// One document synced with the peer.
struct Doc {
    document_id: String,
    sync: SyncState,
    refused: bool,
}

/// One connected peer.
struct Peer {
    state: AppState,
    auth: AuthDevice,
    token: String,
    server_id: String,
    peer_id: Option<String>,
    docs: HashMap<String, Doc>,
    window: (Instant, u32),
}

impl Peer {
    fn new(state: AppState, auth: AuthDevice, token: String) -> Self {
        let server_id = format!("gridlink-{:016x}", state.epoch);
        Self { state, auth, token, server_id, peer_id: None, docs: HashMap::new(), window: (Instant::now(), 0) }
    }

    /// Serves the connection until it ends; returns why it ended.
    async fn run(&mut self, mut socket: WebSocket) -> String {
        let mut events = self.state.events.subscribe();
        let mut recheck = tokio::time::interval(RECHECK);
        let _live = crate::telemetry::LiveConnection::open();
        loop {
            tokio::select! {
                frame = socket.recv() => {
                    let frame = match frame {
                        None => return "对方关闭".into(),
                        Some(Err(e)) => {
                            let _ = close(&mut socket, 1009, "消息过大或连接出错").await;
                            return format!("socket error: {e}");
                        }
                        Some(Ok(f)) => f,
                    };
                    match self.on_frame(&mut socket, frame).await {
                        Ok(()) => {}
                        Err((code, reason)) => {
                            let _ = close(&mut socket, code, &reason).await;
                            return reason;
                        }
                    }
                }
                event = events.recv() => {
                    // A record the peer has open changed (or left its scope: answered unavailable),
                    // or one it may see changed or came into its scope: announced by syncing it.
                    let ids: Vec<String> = match event {
                        Ok(e) if self.docs.get(&e.doc_id).is_some_and(|d| d.refused) => Vec::new(),
                        Ok(e) if self.docs.contains_key(&e.doc_id) => vec![e.doc_id],
                        Ok(e) if self.peer_id.is_some() && e.visible_to(&self.auth.person) => match document_id(&e.doc_id) {
                            Some(document_id) => {
                                self.docs.insert(e.doc_id.clone(), Doc { document_id, sync: SyncState::new(), refused: false });
                                vec![e.doc_id]
                            }
                            None => Vec::new(),
                        },
                        Ok(_) => Vec::new(),
                        // Fell behind: bring every open document up to date.
                        Err(_) => self.docs.keys().cloned().collect(),
                    };
                    for id in ids {
                        if let Err((code, reason)) = self.step(&mut socket, &id, None).await {
                            let _ = close(&mut socket, code, &reason).await;
                            return reason;
                        }
                    }
                }
                _ = recheck.tick() => {
                    if device_for_token(&self.state, self.token.clone()).await.is_err() {
                        let _ = self.send_error(&mut socket, "本设备已被停用或登录已失效,连接已断开").await;
                        let _ = close(&mut socket, 1008, "设备已停用").await;
                        return "device no longer valid".into();
                    }
                }
            }
        }
    }

    async fn on_frame(&mut self, socket: &mut WebSocket, frame: Message) -> Result<(), (u16, String)> {
        let bytes = match frame {
            Message::Binary(b) => b,
            Message::Close(_) => return Err((1000, "对方关闭".into())),
            Message::Ping(_) | Message::Pong(_) => return Ok(()),
            Message::Text(_) => return Err((1003, "只接受 CBOR 二进制消息".into())),
        };
        if bytes.len() > MAX_FRAME {
            return Err((1009, "消息过大".into()));
        }
        let (start, count) = &mut self.window;
        if start.elapsed() > FLOOD_WINDOW {
            *start = Instant::now();
            *count = 0;
        }
        *count += 1;
        if *count > FLOOD_LIMIT {
            return Err((1008, "消息过于频繁".into()));
        }
        let m = decode(&bytes).map_err(|e| (1007, e.to_string()))?;
        match (m.kind.as_str(), &self.peer_id) {
            ("join", _) => {
                if !m.versions.iter().any(|v| v == PROTOCOL) {
                    let _ = self.send_error(socket, "不支持的协议版本").await;
                    return Err((1002, "不支持的协议版本".into()));
                }
                let peer = m.sender.ok_or((1007, "join 缺少 senderId".to_owned()))?;
                let reply = encode(vec![
                    ("type", Value::Text("peer".into())),
                    ("senderId", Value::Text(self.server_id.clone())),
                    ("targetId", Value::Text(peer.clone())),
                    ("peerMetadata", Value::Map(vec![(Value::Text("isEphemeral".into()), Value::Bool(false))])),
                    ("selectedProtocolVersion", Value::Text(PROTOCOL.into())),
                ]);
                self.peer_id = Some(peer);
                send(socket, reply).await
            }
            (_, None) => Err((1008, "请先发送 join".into())),
            ("request" | "sync", Some(_)) => {
                let document = m.document.ok_or((1007, "缺少 documentId".to_owned()))?;
                let data = m.data.ok_or((1007, "缺少 data".to_owned()))?;
                let Some(id) = record_id(&document) else {
                    return self.unavailable(socket, &document).await;
                };
                match self.docs.get_mut(&id) {
                    // A refused record is out of sync until the peer asks for it afresh (a
                    // `request`: it deleted its copy and finds the record again).
                    Some(d) if d.refused && m.kind == "sync" => return Ok(()),
                    Some(d) if d.refused => {
                        d.refused = false;
                        d.sync = SyncState::new();
                    }
                    Some(_) => {}
                    None => {
                        self.docs.insert(id.clone(), Doc { document_id: document, sync: SyncState::new(), refused: false });
                    }
                }
                self.step(socket, &id, Some(data)).await
            }
            ("leave", Some(_)) => Err((1000, "对方离开".into())),
            ("ephemeral" | "doc-unavailable" | "remote-subscription-change" | "remote-heads-changed", Some(_)) => Ok(()),
            _ => Err((1008, "未知的消息类型".into())),
        }
    }

    /// Receives the peer's sync message for a record (if any) and sends what the peer lacks.
    async fn step(&mut self, socket: &mut WebSocket, id: &str, incoming: Option<Vec<u8>>) -> Result<(), (u16, String)> {
        let Some(doc) = self.docs.get_mut(id) else { return Ok(()) };
        let mut sync = std::mem::replace(&mut doc.sync, SyncState::new());
        let (st, auth, rid) = (self.state.clone(), self.auth.clone(), id.to_owned());
        let done = self
            .state
            .db
            .write(move |c| {
                let out = step(c, &st, &auth, &rid, incoming.as_deref(), &mut sync);
                Ok((out, sync))
            })
            .await;
        let (outcome, sync) = match done {
            Ok((Ok((step, events)), sync)) => {
                self.state.notify(events);
                (step, sync)
            }
            Ok((Err(e), _)) | Err(e) => {
                tracing::warn!(error = %e, "automerge-repo step failed");
                return Err((1011, "服务器内部错误".into()));
            }
        };
        let document = {
            let doc = self.docs.get_mut(id).expect("still open");
            doc.sync = sync;
            doc.document_id.clone()
        };
        match outcome {
            Step::Reply(None) => Ok(()),
            Step::Reply(Some(data)) => {
                let msg = encode(vec![
                    ("type", Value::Text("sync".into())),
                    ("senderId", Value::Text(self.server_id.clone())),
                    ("targetId", Value::Text(self.peer_id.clone().unwrap_or_default())),
                    ("documentId", Value::Text(document)),
                    ("data", Value::Bytes(data)),
                ]);
                send(socket, msg).await
            }
            Step::Unavailable => {
                self.docs.remove(id);
                self.unavailable(socket, &document).await
            }
            Step::Refused(reason) => {
                tracing::info!(device = %self.auth.device_id, doc = id, %reason, "automerge-repo change refused");
                if let Some(d) = self.docs.get_mut(id) {
                    d.refused = true;
                    d.sync = SyncState::new();
                }
                // Told why, then that the record is not synced with this copy any more.
                self.send_error(socket, &format!("修改未被接受:{reason}")).await?;
                self.unavailable(socket, &document).await
            }
            Step::Corrupt => Err((1007, "同步消息无法解析".into())),
        }
    }

    async fn unavailable(&self, socket: &mut WebSocket, document: &str) -> Result<(), (u16, String)> {
        let msg = encode(vec![
            ("type", Value::Text("doc-unavailable".into())),
            ("senderId", Value::Text(self.server_id.clone())),
            ("targetId", Value::Text(self.peer_id.clone().unwrap_or_default())),
            ("documentId", Value::Text(document.to_owned())),
        ]);
        send(socket, msg).await
    }

    async fn send_error(&self, socket: &mut WebSocket, message: &str) -> Result<(), (u16, String)> {
        let msg = encode(vec![
            ("type", Value::Text("error".into())),
            ("senderId", Value::Text(self.server_id.clone())),
            ("targetId", Value::Text(self.peer_id.clone().unwrap_or_default())),
            ("message", Value::Text(message.to_owned())),
        ]);
        send(socket, msg).await
    }
}

async fn send(socket: &mut WebSocket, bytes: Vec<u8>) -> Result<(), (u16, String)> {
    socket.send(Message::Binary(bytes.into())).await.map_err(|_| (1000, "连接已断开".to_owned()))
}

/// Closes with a code and a reason, then reads (and drops) what the peer still sends until it
/// answers the close, so the peer sees the reason rather than a reset connection.
async fn close(socket: &mut WebSocket, code: u16, reason: &str) -> Result<(), axum::Error> {
    socket.send(Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from(reason) }))).await?;
    let drain = async {
        while let Some(Ok(frame)) = socket.recv().await {
            if matches!(frame, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    Ok(())
}

/// One document step on the writer: scope, the peer's changes through the phones' ingest (all
/// or none), and the next sync message from the stored copy.
fn step(
    c: &dyn Storage,
    st: &AppState,
    auth: &AuthDevice,
    id: &str,
    incoming: Option<&[u8]>,
    sync: &mut SyncState,
) -> AppResult<(Step, Vec<ScopeEvent>)> {
    let tx = crate::storage::Tx::savepoint(c)?;
    match read_for(&*tx, &st.server_actor, id, &auth.person) {
        Ok(_) => {}
        Err(AppError::NotFound) => return Ok((Step::Unavailable, Vec::new())),
        Err(e) => return Err(e),
    }
    let mut doc = load_doc(&*tx, id, &st.server_actor)?.ok_or(AppError::NotFound)?;
    let mut events = Vec::new();
    if let Some(data) = incoming {
        let changes = match doc.receive_sync_message(sync, data) {
            Ok(c) => c,
            Err(_) => return Ok((Step::Corrupt, events)),
        };
        if !changes.is_empty() {
            let bytes: Vec<Vec<u8>> = changes.iter().map(|ch| ch.raw_bytes().to_vec()).collect();
            let routing = st.routing();
            let mut ctx = st.ingest_ctx(&routing, st.now_ms(), &mut events);
            if let Err((_, reason)) = ingest(&*tx, &mut ctx, &auth.device_id, &auth.person, id, &bytes)? {
                // Nothing of the message is kept: the savepoint is rolled back.
                return Ok((Step::Refused(reason), Vec::new()));
            }
            doc = load_doc(&*tx, id, &st.server_actor)?.ok_or(AppError::NotFound)?;
        }
    }
    let reply = doc.sync_message(sync);
    tx.commit()?;
    Ok((Step::Reply(reply), events))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_ids_round_trip_and_bad_ones_are_refused() {
        let id = "0190ab12-3456-7890-abcd-ef0123456789";
        let doc = document_id(id).unwrap();
        assert_eq!(record_id(&doc).as_deref(), Some(id));
        assert_eq!(record_id(&format!("automerge:{doc}")).as_deref(), Some(id));
        let mut broken = doc.clone();
        broken.replace_range(0..1, if doc.starts_with('2') { "3" } else { "2" });
        assert_eq!(record_id(&broken), None, "the checksum catches a changed character");
        assert_eq!(record_id("0OIl"), None);
    }

    #[test]
    fn a_ticket_expires() {
        let t = Tickets::default();
        let ticket = t.issue("token-1", 1_000);
        assert_eq!(t.redeem(&ticket, 2_000).as_deref(), Some("token-1"));
        assert_eq!(t.redeem(&ticket, 2_000).as_deref(), Some("token-1"), "a reconnect within the window");
        assert_eq!(t.redeem(&ticket, 1_000 + TICKET_MS), None);
        assert_eq!(t.redeem("made-up", 2_000), None);
    }

    #[test]
    fn frames_decode_or_say_why_not() {
        let join = encode(vec![
            ("type", Value::Text("join".into())),
            ("senderId", Value::Text("peer-1".into())),
            ("supportedProtocolVersions", Value::Array(vec![Value::Text("1".into())])),
        ]);
        let m = decode(&join).unwrap();
        assert_eq!((m.kind.as_str(), m.sender.as_deref(), m.versions.as_slice()), ("join", Some("peer-1"), &["1".to_owned()][..]));
        let tagged = encode(vec![("type", Value::Text("sync".into())), ("data", Value::Tag(64, Box::new(Value::Bytes(vec![1, 2]))))]);
        assert_eq!(decode(&tagged).unwrap().data, Some(vec![1, 2]));
        assert_eq!(decode(b"\xff\x00garbage"), Err(BadFrame::NotCbor));
        assert_eq!(decode(&encode(vec![("senderId", Value::Text("x".into()))])), Err(BadFrame::NoType));
        assert_eq!(decode(&encode(vec![("type", Value::Integer(3.into()))])), Err(BadFrame::BadField));
    }

    #[test]
    fn a_sync_message_on_which_automerge_panicked_still_gets_an_answer() {
        // Found by the `automerge_repo_message` fuzz target: answering this sync message made
        // Automerge divide by zero.
        let frame = decode(include_bytes!("../../fuzz/seeds/automerge_repo_message/sync_zero_bit_bloom.cbor")).unwrap();
        assert_eq!(frame.kind, "sync");
        let actor = automerge::ActorId::from(vec![1u8; 16]);
        let saved = include_bytes!("../../fuzz/seeds/doc_load/incident.automerge");
        let mut doc = gridlink_core::record::RecordDoc::load("fuzz", &[&saved[..]], &actor).unwrap();
        let before = doc.heads();
        let mut state = automerge::sync::State::new();
        // It carries no change; what it says the peer has is a Bloom filter of zero bits.
        assert_eq!(doc.receive_sync_message(&mut state, &frame.data.unwrap()).unwrap(), vec![]);
        let reply = doc.sync_message(&mut state).expect("the peer still gets an answer");
        let reply = automerge::sync::Message::decode(&reply).unwrap();
        assert_eq!(reply.heads, before, "an answer as to a peer that has said nothing yet");
        assert_eq!(doc.heads(), before);
    }
}
