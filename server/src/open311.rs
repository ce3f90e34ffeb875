//! Open311 GeoReport v2 (open311.github.io `GeoReport/v2`, `Service_Discovery`), so civic-reporting
//! clients and dashboards can read and file reports: categories are services, states map to
//! open/closed.
//!
//! - Every resource answers in XML (the spec's default) and JSON by its extension:
//!   `discovery`, `services`, `requests` (GET list, POST) and `requests/{id}`. JSON is sent as
//!   `application/json; charset=utf-8`, XML as `text/xml; charset=utf-8`.
//! - `discovery` and `services` are public. Requests need an `api_key` (created with
//!   `gridlink-server apikey`); the key acts as an account of the town (e.g. the 12345 hotline
//!   desk) and reads are scoped to that account, as for any of its devices.
//! - Every error under `/open311/`, router-level ones included (unknown path, bad encoding, a
//!   body over the limit), is `[{"code": …, "description": …}]` (`<errors><error>` in XML), with
//!   the reason in Chinese.
//! - Parameters: an empty optional parameter counts as not given; `service_request_id` (comma
//!   list) overrides every other filter; `service_code` and `status` take comma lists. Parameter
//!   bytes must be UTF-8 after percent-decoding.
//! - POST needs a location: `lat`+`long`, `address_string` or `address_id`. A point is placed in
//!   the grid whose boundary (the console map's) contains it, and its village and group follow
//!   from the grid's code; a point inside no grid of the town is refused. Only when the town has
//!   drawn no boundaries, or a report gives an address alone, does it land at the key account's
//!   unit (or the `address_id` unit). Text limits: `description` 5,000 characters,
//!   `address_string` 200, `first_name`/`last_name` 30 each, `email` 100, `device_id` and
//!   `account_id` 100, `media_url` 1,000 (an `http(s)` link, stored and shown, never fetched).
//! - Output masks what looks like an ID number or a mobile number in free text; resident phone
//!   numbers never leave the server.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::DateTime;
use gridlink_core::calendar::local_time;
use gridlink_core::org::access;
use gridlink_core::pii::mask_in_text;
use gridlink_core::record::{IncidentFields, RecordDoc};
use gridlink_core::sync::validate::scope_of;
use gridlink_core::workflow::TimelineEntry;
use gridlink_core::{Access, Action, GeoPoint, Hlc, Person, Record, RecordBody, Status, UnitCode};
use serde_json::{Value, json};

use crate::app::AppState;
use crate::auth::{load_person, token_hash};
use crate::error::AppResult;
use crate::records::{ingest, keep_personal, load_doc};
use crate::storage::{ListOrder, RecordFilter, Storage};

/// Longest accepted text of each POST field, in characters.
pub const LIMITS: &[(&str, usize)] = &[
    ("description", 5000),
    ("address_string", 200),
    ("first_name", 30),
    ("last_name", 30),
    ("email", 100),
    ("device_id", 100),
    ("account_id", 100),
    ("media_url", 1000),
    ("service_code", 20),
    ("address_id", 40),
];

/// The routes under `/open311`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/{file}", get(get_file).post(post_file))
        .route("/v2/requests/{file}", get(one))
        .fallback(|req: Request| async move {
            Open311Error::new(StatusCode::NOT_FOUND, "没有这个 Open311 接口", Format::of_path(req.uri().path()))
        })
        .layer(axum::middleware::from_fn(spec_errors))
}

/// XML (the spec's default) or JSON, from a resource's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Xml,
}

impl Format {
    /// The format a path asks for: `.xml` → XML, anything else JSON.
    fn of_path(path: &str) -> Self {
        if path.ends_with(".xml") { Format::Xml } else { Format::Json }
    }

    /// Splits `name.json` / `name.xml`.
    fn split(file: &str) -> Option<(&str, Self)> {
        if let Some(n) = file.strip_suffix(".json") { Some((n, Format::Json)) } else { file.strip_suffix(".xml").map(|n| (n, Format::Xml)) }
    }
}

/// Marks a response already in the spec's shape, so [`spec_errors`] leaves it alone.
#[derive(Debug, Clone, Copy)]
struct Shaped;

/// An error in Open311's own shape: `[{"code": 400, "description": "…"}]`.
#[derive(Debug)]
pub struct Open311Error {
    status: StatusCode,
    description: String,
    format: Format,
}

impl Open311Error {
    fn new(status: StatusCode, description: &str, format: Format) -> Self {
        Self { status, description: description.to_owned(), format }
    }
}

impl IntoResponse for Open311Error {
    fn into_response(self) -> Response {
        let body = json!([{ "code": self.status.as_u16(), "description": self.description }]);
        reply(self.format, self.status, &body, "errors", "error")
    }
}

type R<T> = Result<T, Open311Error>;

/// Any other error answered under `/open311/` (axum's own rejections, a body over the limit, a
/// method not allowed) in the spec's shape.
async fn spec_errors(req: Request, next: Next) -> Response {
    let format = Format::of_path(req.uri().path());
    let resp = next.run(req).await;
    let status = resp.status();
    if resp.extensions().get::<Shaped>().is_some() || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let description = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "请求体过大",
        StatusCode::NOT_FOUND => "没有这个 Open311 接口",
        StatusCode::METHOD_NOT_ALLOWED => "该接口不支持这种请求方法",
        s if s.is_server_error() => "服务器内部错误,请稍后重试",
        _ => "请求格式不正确",
    };
    Open311Error::new(status, description, format).into_response()
}

/// A body in the asked format: JSON as is; XML with `root` around the items of an array (each
/// `item`) or the fields of an object.
fn reply(format: Format, status: StatusCode, body: &Value, root: &str, item: &str) -> Response {
    let mut resp = match format {
        Format::Json => (status, [(header::CONTENT_TYPE, "application/json; charset=utf-8")], body.to_string()).into_response(),
        Format::Xml => {
            let mut out = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>");
            match body {
                Value::Array(items) => {
                    out.push_str(&format!("<{root}>"));
                    for v in items {
                        xml(&mut out, item, v);
                    }
                    out.push_str(&format!("</{root}>"));
                }
                other => xml(&mut out, root, other),
            }
            (status, [(header::CONTENT_TYPE, "text/xml; charset=utf-8")], out).into_response()
        }
    };
    resp.extensions_mut().insert(Shaped);
    resp
}

/// One element: objects become nested elements, arrays repeat the singular of their name
/// (`endpoints` → `endpoint`), null an empty element.
fn xml(out: &mut String, name: &str, value: &Value) {
    match value {
        Value::Null => out.push_str(&format!("<{name}/>")),
        Value::Object(map) => {
            out.push_str(&format!("<{name}>"));
            for (k, v) in map {
                xml(out, k, v);
            }
            out.push_str(&format!("</{name}>"));
        }
        Value::Array(items) => {
            out.push_str(&format!("<{name}>"));
            let one = name.strip_suffix('s').unwrap_or(name);
            for v in items {
                xml(out, one, v);
            }
            out.push_str(&format!("</{name}>"));
        }
        Value::String(s) => out.push_str(&format!("<{name}>{}</{name}>", quick_xml::escape::escape(s.as_str()))),
        other => out.push_str(&format!("<{name}>{other}</{name}>")),
    }
}

/// Parameters of a query string or a form body: percent-decoded, which must give UTF-8; `+` is
/// a space. An empty value counts as not given.
#[derive(Debug, Default)]
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(raw: &[u8], format: Format) -> R<Self> {
        let mut pairs = Vec::new();
        for part in raw.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
            let (k, v) = match part.iter().position(|b| *b == b'=') {
                Some(i) => (&part[..i], &part[i + 1..]),
                None => (part, &[][..]),
            };
            let decode = |b: &[u8]| -> R<String> {
                let spaced: Vec<u8> = b.iter().map(|c| if *c == b'+' { b' ' } else { *c }).collect();
                percent_encoding::percent_decode(&spaced)
                    .decode_utf8()
                    .map(|s| s.into_owned())
                    .map_err(|_| Open311Error::new(StatusCode::BAD_REQUEST, "参数不是有效的 UTF-8 文本", format))
            };
            pairs.push((decode(k)?, decode(v)?));
        }
        Ok(Self(pairs))
    }

    /// The value of `key`, if given and not empty.
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, v)| k == key && !v.trim().is_empty()).map(|(_, v)| v.as_str())
    }

    /// A text parameter within its limit ([`LIMITS`]) and without control characters.
    fn text(&self, key: &str, format: Format) -> R<Option<String>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let max = LIMITS.iter().find(|(k, _)| *k == key).map_or(200, |(_, m)| *m);
        if v.chars().count() > max {
            return Err(Open311Error::new(StatusCode::BAD_REQUEST, &format!("{key} 不能超过 {max} 个字符"), format));
        }
        if v.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
            return Err(Open311Error::new(StatusCode::BAD_REQUEST, &format!("{key} 含有不可见的控制字符"), format));
        }
        Ok(Some(v.trim().to_owned()))
    }

    /// A comma list (`a,b`), without empty items.
    fn list(&self, key: &str) -> Vec<String> {
        self.get(key).map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()).unwrap_or_default()
    }
}

async fn get_file(State(state): State<AppState>, Path(file): Path<String>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let Some((name, format)) = Format::split(&file) else {
        return Open311Error::new(StatusCode::NOT_FOUND, "没有这个 Open311 接口(资源名须以 .xml 或 .json 结尾)", Format::of_path(&file))
            .into_response();
    };
    let params = match Params::parse(q.unwrap_or_default().as_bytes(), format) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let result = match name {
        "discovery" => Ok(discovery(&state, &headers, format)),
        "services" => Ok(services(&state, format)),
        "requests" => list(&state, params, format).await,
        _ => Err(Open311Error::new(StatusCode::NOT_FOUND, "没有这个 Open311 接口", format)),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn post_file(State(state): State<AppState>, Path(file): Path<String>, body: Bytes) -> Response {
    match Format::split(&file) {
        Some(("requests", format)) => create(&state, &body, format).await.unwrap_or_else(IntoResponse::into_response),
        _ => Open311Error::new(StatusCode::NOT_FOUND, "没有这个 Open311 接口", Format::of_path(&file)).into_response(),
    }
}

/// `discovery.{xml,json}`: where the endpoint is, what it speaks, and how to get a key.
fn discovery(state: &AppState, headers: &HeaderMap, format: Format) -> Response {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).filter(|h| h.len() < 200).unwrap_or("127.0.0.1");
    // Behind a TLS proxy (or serving HTTPS with secure cookies) the public URL is https.
    let forwarded = headers.get("x-forwarded-proto").is_some_and(|v| v.as_bytes() == b"https");
    let scheme = if forwarded || state.settings.secure_cookies { "https" } else { "http" };
    let changeset = "2026-12-04T00:00:00+08:00";
    let body = json!({
        "changeset": changeset,
        "contact": "镇综治中心(网格通 Gridlink 服务器管理员)",
        "key_service": "API 密钥由镇综治中心的管理员发放:gridlink-server apikey --db <数据库> --person <账号>。提交(POST)和读取服务请求都需要 api_key;读取只返回该密钥所属账号辖区内的请求。services 与 discovery 无需密钥。",
        "endpoints": [{
            "specification": "http://wiki.open311.org/GeoReport_v2",
            "url": format!("{scheme}://{host}/open311/v2"),
            "changeset": changeset,
            "type": "production",
            "formats": ["text/xml", "application/json"],
        }],
    });
    reply(format, StatusCode::OK, &body, "discovery", "endpoint")
}

/// `services.{xml,json}`: every minor category as a service.
fn services(state: &AppState, format: Format) -> Response {
    let c = &state.catalog;
    let list: Vec<Value> = c
        .categories
        .iter()
        .flat_map(|major| {
            major.minors.iter().map(move |m| {
                json!({
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
    reply(format, StatusCode::OK, &Value::Array(list), "services", "service")
}

/// Creates an API key for a person; returns the key (shown once).
pub fn create_api_key(conn: &dyn Storage, person_id: &str, name: &str, now_ms: i64) -> Result<String, String> {
    if !conn.person_exists(person_id).map_err(|e| e.to_string())? {
        return Err(format!("账号 {person_id} 不存在"));
    }
    let key = crate::auth::new_token();
    conn.add_api_key(&token_hash(&key), person_id, name, now_ms).map_err(|e| e.to_string())?;
    Ok(key)
}

/// The account an API key acts as; `Err` is the refusal (403) in words.
fn key_person(conn: &dyn Storage, key: Option<&str>) -> AppResult<Result<Person, String>> {
    let Some(key) = key.filter(|k| k.len() < 200) else {
        return Ok(Err("需要有效的 api_key(向镇综治中心申请)".into()));
    };
    let pid = conn.api_key_person(&token_hash(key))?;
    let Some(pid) = pid else {
        return Ok(Err("api_key 无效".into()));
    };
    Ok(match load_person(conn, &pid)? {
        Some((p, _, true)) => Ok(p),
        _ => Err("api_key 对应的账号已停用".into()),
    })
}

fn iso(ms: i64) -> String {
    local_time(ms).to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// One record in GeoReport v2 form; free text masked.
fn request_json(state: &AppState, conn: &dyn Storage, record: &Record) -> Option<Value> {
    let RecordBody::Incident(f) = &record.body else {
        return None;
    };
    let folded = record.fold();
    let s = &folded.state;
    let open = s.status.is_none_or(Status::is_open);
    let holder_name: Option<String> = s.holder.as_ref().and_then(|h| conn.unit_name(h.as_str()).ok().flatten());
    let cat = state.catalog.category(&f.category).ok();
    let media_url = f.media_url.clone().or_else(|| f.photos.first().map(|sha| format!("/api/v1/attachments/{sha}")));
    Some(json!({
        "service_request_id": record.display_no(),
        "status": if open { "open" } else { "closed" },
        "status_notes": s.status.map(|x| x.label()).unwrap_or_default(),
        "service_name": cat.map(|c| c.name.clone()).unwrap_or_default(),
        "service_code": f.category,
        "description": mask_in_text(&f.description),
        "agency_responsible": holder_name.unwrap_or_default(),
        "service_notice": cat.map(|c| format!("处置时限{}", c.time_limit.label())).unwrap_or_default(),
        "requested_datetime": iso(record.created_at_ms),
        "updated_datetime": iso(s.last_at.map_or(record.created_at_ms, |h| h.wall_ms)),
        "expected_datetime": s.deadline_ms.map(iso),
        "address": mask_in_text(&f.address),
        "address_id": f.grid.as_str(),
        "zipcode": "",
        "lat": f.location.map(|p| p.lat),
        "long": f.location.map(|p| p.lon),
        "media_url": media_url.unwrap_or_default(),
    }))
}

fn parse_date(s: &str, format: Format) -> R<i64> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.timestamp_millis())
        .map_err(|_| Open311Error::new(StatusCode::BAD_REQUEST, "日期须为 ISO 8601 格式,例如 2026-11-23T00:00:00+08:00", format))
}

/// `requests.{xml,json}` (GET).
async fn list(state: &AppState, params: Params, format: Format) -> R<Response> {
    let found = requests(state, params, format).await?;
    Ok(reply(format, StatusCode::OK, &Value::Array(found), "service_requests", "request"))
}

/// The requests the key's account may see, newest first, at most 1,000, by default those of the
/// last 90 days. Scope and filters are in the query, before the limit.
async fn requests(state: &AppState, params: Params, format: Format) -> R<Vec<Value>> {
    let now = state.now_ms();
    let wanted = params.list("service_request_id");
    let (start, end, codes, statuses) = if wanted.is_empty() {
        let end = params.get("end_date").map(|d| parse_date(d, format)).transpose()?.unwrap_or(now + 86_400_000);
        let start = params.get("start_date").map(|d| parse_date(d, format)).transpose()?.unwrap_or(end - 90 * 86_400_000);
        let statuses = params.list("status");
        if let Some(s) = statuses.iter().find(|s| !matches!(s.as_str(), "open" | "closed")) {
            let s: String = s.chars().take(20).collect();
            return Err(Open311Error::new(StatusCode::BAD_REQUEST, &format!("status 只能是 open 或 closed,收到“{s}”"), format));
        }
        (start, end, params.list("service_code"), statuses)
    } else {
        // `service_request_id` overrides every other filter.
        (i64::MIN, i64::MAX, Vec::new(), Vec::new())
    };
    let key = params.get("api_key").map(str::to_owned);
    let st = state.clone();
    let out = state
        .db
        .read(move |c| {
            let person = match key_person(c, key.as_deref())? {
                Ok(p) => p,
                Err(why) => return Ok(Err(why)),
            };
            let ids = if wanted.is_empty() { filtered_ids(c, &person, start, end, &codes, &statuses)? } else { ids_by_number(c, &wanted)? };
            let mut out = Vec::new();
            for id in ids {
                let Some(doc) = load_doc(c, &id, &st.server_actor)? else { continue };
                let record = doc.read()?;
                let state_now = record.fold().state;
                if access(&person, &scope_of(&record, &state_now)) == Access::None {
                    continue;
                }
                out.extend(request_json(&st, c, &record));
            }
            Ok(Ok(out))
        })
        .await
        .map_err(|e| Open311Error::new(e.clone_status(), &e.to_string(), format))?
        .map_err(|why| Open311Error::new(StatusCode::FORBIDDEN, &why, format))?;
    Ok(out)
}

/// Ids of the requests asked for by number (case number or record id), at most 200.
fn ids_by_number(c: &dyn Storage, wanted: &[String]) -> AppResult<Vec<String>> {
    let mut ids = Vec::new();
    for want in wanted.iter().take(200) {
        ids.extend(c.incident_by_number(want)?);
    }
    Ok(ids)
}

/// Ids of the incidents of a period within the account's scope (the same prefilter as sync),
/// with the service and status filters, newest first, at most 1,000.
fn filtered_ids(c: &dyn Storage, person: &Person, start: i64, end: i64, codes: &[String], statuses: &[String]) -> AppResult<Vec<String>> {
    let codes = &codes[..codes.len().min(100)];
    let (open, closed) = (statuses.iter().any(|s| s == "open"), statuses.iter().any(|s| s == "closed"));
    let filter = RecordFilter {
        kind: Some("incident"),
        created_from: Some(start),
        created_before: Some(end),
        categories: (!codes.is_empty()).then_some(codes),
        open: (open != closed).then_some(open),
        ..RecordFilter::ALL
    };
    let rows = c.list_records(&filter, ListOrder::CreatedDesc, person.unit.as_str(), &person.id, 1000, 0)?;
    Ok(rows.into_iter().map(|r| r.id).collect())
}

/// `requests/{id}.{xml,json}`: one request, or 404 when it does not exist or lies outside the
/// key's scope (the same answer, so ids cannot be probed).
async fn one(State(state): State<AppState>, Path(file): Path<String>, RawQuery(q): RawQuery) -> Response {
    let Some((id, format)) = Format::split(&file) else {
        return Open311Error::new(StatusCode::NOT_FOUND, "没有这个 Open311 接口(资源名须以 .xml 或 .json 结尾)", Format::of_path(&file))
            .into_response();
    };
    let found = async {
        let mut params = Params::parse(q.unwrap_or_default().as_bytes(), format)?;
        params.0.retain(|(k, _)| k != "service_request_id");
        params.0.push(("service_request_id".into(), id.chars().take(100).collect()));
        requests(&state, params, format).await
    };
    match found.await {
        Ok(v) if v.is_empty() => Open311Error::new(StatusCode::NOT_FOUND, "找不到该服务请求", format).into_response(),
        Ok(v) => reply(format, StatusCode::OK, &Value::Array(v), "service_requests", "request"),
        Err(e) => e.into_response(),
    }
}

/// Where a point lies among the town's grids.
enum Placed {
    Grid(UnitCode),
    /// The town has boundaries, and none contains the point.
    Outside,
    /// The town has drawn no boundaries.
    Unknown,
}

/// The grid whose boundary (`units.boundary`, `[[lon, lat], …]`) contains or touches `point`;
/// the first by code when boundaries touch.
fn grid_at(c: &dyn Storage, point: GeoPoint) -> AppResult<Placed> {
    use geo::Intersects;
    let rows = c.units()?.into_iter().filter(|u| u.kind == "grid").filter_map(|u| Some((u.code, u.boundary?)));
    let here = geo::Point::new(point.lon, point.lat);
    let mut any = false;
    for (code, boundary) in rows {
        let Ok(corners) = serde_json::from_str::<Vec<[f64; 2]>>(&boundary) else { continue };
        if corners.len() < 3 {
            continue;
        }
        any = true;
        let polygon = geo::Polygon::new(geo::LineString::from(corners.iter().map(|p| (p[0], p[1])).collect::<Vec<_>>()), vec![]);
        if polygon.intersects(&here) {
            return Ok(UnitCode::parse(&code).map_or(Placed::Outside, Placed::Grid));
        }
    }
    Ok(if any { Placed::Outside } else { Placed::Unknown })
}

/// `requests.{xml,json}` (POST, form-encoded): files a report as the key's account. It goes
/// through the same validation, numbering and routing as a report from a phone.
async fn create(state: &AppState, body: &[u8], format: Format) -> R<Response> {
    let bad = |m: &str| Open311Error::new(StatusCode::BAD_REQUEST, m, format);
    let form = Params::parse(body, format)?;
    let code = form.text("service_code", format)?.ok_or_else(|| bad("缺少 service_code"))?;
    let category = state
        .catalog
        .category(&code)
        .map_err(|_| {
            Open311Error::new(StatusCode::NOT_FOUND, &format!("service_code {} 不存在", code.chars().take(20).collect::<String>()), format)
        })?
        .clone();
    let description = form.text("description", format)?.ok_or_else(|| bad("description 不能为空"))?;
    let number = |key: &str| -> R<Option<f64>> {
        form.get(key).map(|v| v.trim().parse::<f64>().map_err(|_| bad(&format!("{key} 须为数字(WGS-84 十进制度)")))).transpose()
    };
    let location = match (number("lat")?, number("long")?) {
        (Some(lat), Some(lon)) => Some(GeoPoint::new(lat, lon).map_err(|e| bad(&e.to_string()))?),
        (None, None) => None,
        _ => return Err(bad("lat 与 long 须同时提供")),
    };
    let address = form.text("address_string", format)?;
    let address_id = form.text("address_id", format)?;
    if location.is_none() && address.is_none() && address_id.is_none() {
        return Err(bad("须提供位置:lat 与 long,或 address_string,或 address_id"));
    }
    let phone = form.get("phone").map(str::trim).map(str::to_owned);
    if let Some(p) = &phone {
        gridlink_core::pii::validate_phone(p).map_err(|e| bad(&e.to_string()))?;
    }
    let media_url = form.text("media_url", format)?;
    if media_url.as_deref().is_some_and(|u| !(u.starts_with("http://") || u.starts_with("https://")) || u.contains(char::is_whitespace)) {
        return Err(bad("media_url 须为 http:// 或 https:// 开头的链接"));
    }
    let name = [form.text("last_name", format)?, form.text("first_name", format)?].into_iter().flatten().collect::<String>();
    for key in ["email", "device_id", "account_id"] {
        form.text(key, format)?;
    }
    let key = form.get("api_key").map(str::to_owned);
    let now = state.now_ms();
    let st = state.clone();
    let result = state
        .db
        .write(move |c| {
            let person = match key_person(c, key.as_deref())? {
                Ok(p) => p,
                Err(why) => return Ok(Err((StatusCode::FORBIDDEN, why))),
            };
            let by_address = || -> Result<UnitCode, String> {
                match address_id.as_deref() {
                    Some(a) => match UnitCode::parse(a) {
                        Ok(u) if person.unit.contains(&u) => Ok(u),
                        _ => Err("address_id 须为本账号辖区内的网格或村(社区)代码".into()),
                    },
                    None => Ok(person.unit.clone()),
                }
            };
            let grid = match location.map(|p| grid_at(c, p)).transpose()? {
                Some(Placed::Grid(g)) => Ok(g),
                Some(Placed::Outside) => Err(format!(
                    "位置({:.5}, {:.5})不在本镇任何网格内,请核对经纬度",
                    location.map_or(0.0, |p| p.lat),
                    location.map_or(0.0, |p| p.lon)
                )),
                Some(Placed::Unknown) | None => by_address(),
            };
            let grid = match grid {
                Ok(g) => g,
                Err(why) => return Ok(Err((StatusCode::BAD_REQUEST, why))),
            };
            let parties = if name.is_empty() && phone.is_none() {
                vec![]
            } else {
                vec![gridlink_core::Party { name: name.clone(), role: "报告人".into(), phone: phone.clone() }]
            };
            let mut record = Record {
                id: uuid::Uuid::now_v7().to_string(),
                provisional_no: "Open311".into(),
                case_no: None,
                created_at_ms: now,
                body: RecordBody::Incident(IncidentFields {
                    category: category.code.clone(),
                    title: description.chars().take(30).collect(),
                    description: description.clone(),
                    grid,
                    address: address.clone().unwrap_or_default(),
                    location,
                    urgency: Default::default(),
                    parties,
                    photos: vec![],
                    notes: String::new(),
                    media_url: media_url.clone(),
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
            // The reporter's phone is personal data: masked in the record, kept beside it.
            let personal = gridlink_core::pii::Personal::split(&mut record.body);
            let mut doc = RecordDoc::create(&automerge::ActorId::random(), &record, now)?;
            let change = doc
                .last_local_change()
                .map(|ch| ch.raw_bytes().to_vec())
                .ok_or_else(|| crate::error::AppError::Internal("no change".into()))?;
            let tx = crate::storage::Tx::savepoint(c)?;
            let routing = st.routing();
            let mut events = Vec::new();
            let mut ctx = st.ingest_ctx(&routing, now, &mut events);
            if let Err((_, reason)) = ingest(&*tx, &mut ctx, "open311", &person, &record.id, &[change])? {
                return Ok(Err((StatusCode::BAD_REQUEST, reason)));
            }
            keep_personal(&*tx, &st, &person, &record.id, &personal, now)?;
            let case_no = tx.case_no_of(&record.id)?.ok_or_else(|| crate::AppError::Internal("a new report got no case number".into()))?;
            tx.commit()?;
            Ok(Ok((case_no, events)))
        })
        .await
        .map_err(|e| Open311Error::new(e.clone_status(), &e.to_string(), format))?;
    let (case_no, events) = result.map_err(|(status, why)| Open311Error::new(status, &why, format))?;
    state.notify(events);
    let body = json!([{ "service_request_id": case_no, "service_notice": format!("处置时限{}", category.time_limit.label()), "account_id": null }]);
    Ok(reply(format, StatusCode::CREATED, &body, "service_requests", "request"))
}
