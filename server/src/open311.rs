//! Open311 GeoReport v2, so existing civic-reporting clients and dashboards can read and file
//! reports: categories are services, states map to open/closed.
//!
//! `services.json` is public. Requests need an `api_key` (created with `gridlink-server apikey`);
//! the key acts as an account of the town (e.g. the 12345 hotline desk), with that account's scope.
//! Resident phone numbers never leave the server.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::DateTime;
use gridlink_core::calendar::local_time;
use gridlink_core::org::access;
use gridlink_core::record::IncidentFields;
use gridlink_core::record::RecordDoc;
use gridlink_core::sync::validate::scope_of;
use gridlink_core::workflow::TimelineEntry;
use gridlink_core::{Access, Action, GeoPoint, Hlc, Person, Record, RecordBody, Status, UnitCode};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::{load_person, token_hash};
use crate::docs::{ingest, load_doc};

/// An error in Open311's own shape: `[{"code": 400, "description": "…"}]`.
#[derive(Debug)]
pub struct Open311Error(StatusCode, String);

impl IntoResponse for Open311Error {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!([{ "code": self.0.as_u16(), "description": self.1 }]))).into_response()
    }
}

impl From<crate::error::AppError> for Open311Error {
    fn from(e: crate::error::AppError) -> Self {
        let status = e.clone_status();
        Open311Error(status, e.to_string())
    }
}

type R<T> = Result<T, Open311Error>;

fn bad(msg: &str) -> Open311Error {
    Open311Error(StatusCode::BAD_REQUEST, msg.to_owned())
}

/// `GET /open311/v2/services.json`: every minor category as a service.
pub async fn services(State(state): State<AppState>) -> Json<serde_json::Value> {
    let c = &state.catalog;
    let list: Vec<_> = c
        .categories
        .iter()
        .flat_map(|major| {
            major.minors.iter().map(move |m| {
                serde_json::json!({
                    "service_code": m.code,
                    "service_name": m.name,
                    "description": format!("{}·{},处置时限{},结案条件:{}", major.name, m.name, m.time_limit.label(), m.closing_condition),
                    "metadata": false,
                    "type": "realtime",
                    "keywords": major.name,
                    "group": major.name,
                })
            })
        })
        .collect();
    Json(serde_json::Value::Array(list))
}

/// Creates an API key for a person; returns the key (shown once).
pub fn create_api_key(conn: &Connection, person_id: &str, name: &str, now_ms: i64) -> Result<String, String> {
    let exists: bool =
        conn.query_row("SELECT count(*) FROM people WHERE id = ?1", [person_id], |r| r.get::<_, i64>(0)).map_err(|e| e.to_string())? > 0;
    if !exists {
        return Err(format!("账号 {person_id} 不存在"));
    }
    let key = crate::auth::new_token();
    conn.execute(
        "INSERT INTO api_keys(key_hash, person_id, name, created_ms) VALUES (?1, ?2, ?3, ?4)",
        params![token_hash(&key), person_id, name, now_ms],
    )
    .map_err(|e| e.to_string())?;
    Ok(key)
}

fn key_person(conn: &Connection, key: Option<&str>) -> R<Person> {
    let key =
        key.filter(|k| !k.is_empty() && k.len() < 200).ok_or_else(|| Open311Error(StatusCode::FORBIDDEN, "需要有效的 api_key".into()))?;
    let pid: Option<String> = conn
        .query_row("SELECT person_id FROM api_keys WHERE key_hash = ?1", [token_hash(key)], |r| r.get(0))
        .optional()
        .map_err(crate::error::AppError::from)?;
    let pid = pid.ok_or_else(|| Open311Error(StatusCode::FORBIDDEN, "api_key 无效".into()))?;
    match load_person(conn, &pid)? {
        Some((p, _, true)) => Ok(p),
        _ => Err(Open311Error(StatusCode::FORBIDDEN, "api_key 对应的账号已停用".into())),
    }
}

fn iso(ms: i64) -> String {
    local_time(ms).to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// One record in GeoReport v2 form.
fn request_json(state: &AppState, conn: &Connection, record: &Record) -> Option<serde_json::Value> {
    let RecordBody::Incident(f) = &record.body else {
        return None;
    };
    let folded = record.fold();
    let s = &folded.state;
    let open = s.status.is_none_or(Status::is_open);
    let holder_name: Option<String> = s
        .holder
        .as_ref()
        .and_then(|h| conn.query_row("SELECT name FROM units WHERE code = ?1", [h.as_str()], |r| r.get(0)).optional().ok().flatten());
    let cat = state.catalog.category(&f.category).ok();
    Some(serde_json::json!({
        "service_request_id": record.display_no(),
        "status": if open { "open" } else { "closed" },
        "status_notes": s.status.map(|x| x.label()).unwrap_or_default(),
        "service_name": cat.map(|c| c.name.clone()).unwrap_or_default(),
        "service_code": f.category,
        "description": f.description,
        "agency_responsible": holder_name.unwrap_or_default(),
        "service_notice": cat.map(|c| format!("处置时限{}", c.time_limit.label())).unwrap_or_default(),
        "requested_datetime": iso(record.created_at_ms),
        "updated_datetime": iso(s.last_at.map_or(record.created_at_ms, |h| h.wall_ms)),
        "expected_datetime": s.deadline_ms.map(iso),
        "address": f.address,
        "address_id": f.grid.as_str(),
        "zipcode": "",
        "lat": f.location.map(|p| p.lat),
        "long": f.location.map(|p| p.lon),
        "media_url": f.photos.first().map(|sha| format!("/api/v1/attachments/{sha}")).unwrap_or_default(),
    }))
}

/// Query of `requests.json`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    pub api_key: Option<String>,
    pub service_request_id: Option<String>,
    pub service_code: Option<String>,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub status: Option<String>,
}

fn parse_date(s: &str) -> R<i64> {
    DateTime::parse_from_rfc3339(s).map(|d| d.timestamp_millis()).map_err(|_| bad("日期须为 ISO 8601 格式,例如 2026-11-23T00:00:00+08:00"))
}

/// `GET /open311/v2/requests.json`.
pub async fn list(State(state): State<AppState>, Query(q): Query<ListQuery>) -> R<Json<serde_json::Value>> {
    let now = state.now_ms();
    let start = q.start_date.as_deref().map(parse_date).transpose()?.unwrap_or(now - 90 * 86_400_000);
    let end = q.end_date.as_deref().map(parse_date).transpose()?.unwrap_or(now + 86_400_000);
    if let Some(s) = q.status.as_deref().filter(|s| !matches!(*s, "open" | "closed")) {
        return Err(bad(&format!("status 只能是 open 或 closed,收到“{}”", s.chars().take(20).collect::<String>())));
    }
    let st = state.clone();
    let out = state
        .db
        .read(move |c| {
            let person = key_person(c, q.api_key.as_deref()).map_err(|e| crate::error::AppError::BadRequest(e.1))?;
            let ids: Vec<String> = match &q.service_request_id {
                Some(list) => {
                    let mut v = Vec::new();
                    for want in list.split(',').take(200) {
                        if let Some(id) = find_id(c, want.trim())? {
                            v.push(id);
                        }
                    }
                    v
                }
                None => {
                    let mut stmt = c.prepare(
                        "SELECT id FROM docs WHERE kind = 'incident' AND created_ms >= ?1 AND created_ms < ?2
                         AND (?3 IS NULL OR category = ?3) ORDER BY created_ms DESC LIMIT 1000",
                    )?;
                    stmt.query_map(params![start, end, q.service_code], |r| r.get(0))?.collect::<Result<_, _>>()?
                }
            };
            let mut out = Vec::new();
            for id in ids {
                let Some(doc) = load_doc(c, &id, &st.server_actor)? else { continue };
                let record = doc.read()?;
                let state_now = record.fold().state;
                if access(&person, &scope_of(&record, &state_now)) == Access::None {
                    continue;
                }
                if let Some(j) = request_json(&st, c, &record)
                    && q.status.as_deref().is_none_or(|s| j["status"] == s)
                {
                    out.push(j);
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| match e {
            crate::error::AppError::BadRequest(m) => Open311Error(StatusCode::FORBIDDEN, m),
            other => other.into(),
        })?;
    Ok(Json(serde_json::Value::Array(out)))
}

fn find_id(c: &Connection, want: &str) -> crate::error::AppResult<Option<String>> {
    Ok(c.query_row("SELECT id FROM docs WHERE case_no = ?1 OR id = ?1", [want], |r| r.get(0)).optional()?)
}

/// `GET /open311/v2/requests/{id}.json`.
pub async fn one(State(state): State<AppState>, Path(id): Path<String>, Query(q): Query<ListQuery>) -> R<Json<serde_json::Value>> {
    let id = id.strip_suffix(".json").unwrap_or(&id).to_owned();
    let q = ListQuery { service_request_id: Some(id), ..q };
    let Json(v) = list(State(state), Query(q)).await?;
    if v.as_array().is_some_and(|a| a.is_empty()) {
        return Err(Open311Error(StatusCode::NOT_FOUND, "找不到该服务请求".into()));
    }
    Ok(Json(v))
}

/// Form of `POST /open311/v2/requests.json`.
#[derive(Debug, Deserialize)]
pub struct NewRequest {
    pub api_key: Option<String>,
    pub service_code: Option<String>,
    pub lat: Option<f64>,
    pub long: Option<f64>,
    pub address_string: Option<String>,
    pub address_id: Option<String>,
    pub description: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub phone: Option<String>,
}

/// `POST /open311/v2/requests.json` (form-encoded): files a report as the key's account. It goes
/// through the same validation, numbering and routing as a report from a phone.
pub async fn create(State(state): State<AppState>, body: axum::body::Bytes) -> R<Response> {
    let form: NewRequest = serde_urlencoded::from_bytes(&body).map_err(|e| bad(&format!("表单格式错误: {e}")))?;
    let code = form.service_code.clone().ok_or_else(|| bad("缺少 service_code"))?;
    let category = state.catalog.category(&code).map_err(|e| bad(&e.to_string()))?.clone();
    let description = form.description.clone().unwrap_or_default();
    if description.trim().is_empty() || description.chars().count() > 5000 {
        return Err(bad("description 不能为空且不超过5000字"));
    }
    let location = match (form.lat, form.long) {
        (Some(lat), Some(lon)) => Some(GeoPoint::new(lat, lon).map_err(|e| bad(&e.to_string()))?),
        (None, None) => None,
        _ => return Err(bad("lat 与 long 须同时提供")),
    };
    if let Some(p) = &form.phone {
        gridlink_core::pii::validate_phone(p).map_err(|e| bad(&e.to_string()))?;
    }
    let now = state.now_ms();
    let st = state.clone();
    let result = state
        .db
        .write(move |c| {
            let person = match key_person(c, form.api_key.as_deref()) {
                Ok(p) => p,
                Err(e) => return Ok(Err(e)),
            };
            let grid = match form.address_id.as_deref().filter(|a| !a.is_empty()) {
                Some(a) => match UnitCode::parse(a) {
                    Ok(u) if person.unit.contains(&u) => u,
                    _ => return Ok(Err(bad("address_id 须为本账号辖区内的网格或村(社区)代码"))),
                },
                None => person.unit.clone(),
            };
            let name = [form.last_name.as_deref(), form.first_name.as_deref()].into_iter().flatten().collect::<String>();
            let parties = if name.is_empty() && form.phone.is_none() {
                vec![]
            } else {
                vec![gridlink_core::Party { name, role: "报告人".into(), phone: form.phone.clone() }]
            };
            let title: String = description.chars().take(30).collect();
            let record = Record {
                id: uuid::Uuid::now_v7().to_string(),
                provisional_no: "Open311".into(),
                case_no: None,
                created_at_ms: now,
                body: RecordBody::Incident(IncidentFields {
                    category: category.code.clone(),
                    title,
                    description: description.clone(),
                    grid,
                    address: form.address_string.clone().unwrap_or_default(),
                    location,
                    urgency: Default::default(),
                    parties,
                    photos: vec![],
                    notes: String::new(),
                }),
                timeline: vec![TimelineEntry {
                    id: uuid::Uuid::now_v7().to_string(),
                    at: Hlc { wall_ms: now, counter: 0 },
                    actor: person.id.clone(),
                    actor_name: person.name.clone(),
                    role: person.role,
                    unit: person.unit.clone(),
                    action: Action::Report,
                    note: "通过 Open311 接口上报".into(),
                }],
            };
            let mut doc = RecordDoc::create(&automerge::ActorId::random(), &record, now)?;
            let change = doc
                .last_local_change()
                .map(|ch| ch.raw_bytes().to_vec())
                .ok_or_else(|| crate::error::AppError::Internal("no change".into()))?;
            let tx = c.savepoint()?;
            let routing = st.routing();
            let mut events = Vec::new();
            let mut ctx = st.ingest_ctx(&routing, now, &mut events);
            if let Err((_, reason)) = ingest(&tx, &mut ctx, "open311", &person, &record.id, &[change])? {
                return Ok(Err(bad(&reason)));
            }
            let case_no: String = tx.query_row("SELECT case_no FROM docs WHERE id = ?1", [&record.id], |r| r.get(0))?;
            tx.commit()?;
            Ok(Ok((case_no, events)))
        })
        .await?;
    let (case_no, events) = result?;
    state.notify(events);
    Ok((StatusCode::CREATED, Json(serde_json::json!([{ "service_request_id": case_no, "service_notice": "", "account_id": null }])))
        .into_response())
}
