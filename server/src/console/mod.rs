//! The web console (网页控制台) for the town center, the departments and the village stations:
//! server-rendered pages (askama templates, zh-CN) with a small script for live updates.
//!
//! A console login is a device session like a phone's: its token sits in an `HttpOnly`,
//! `SameSite=Strict` cookie, every form carries a CSRF token derived from the session, and every
//! action goes through the same validated ingest path as a phone's sync.

mod charts;
pub mod pages;
pub mod views;

use askama::Template;
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::Form;
use axum_extra::extract::cookie::{Cookie, SameSite};
use gridlink_core::{Person, Role};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::app::{AppState, sign_in, sign_out};
use crate::auth::{AuthDevice, SESSION_COOKIE, device_for_token, session_token};
use crate::error::AppError;
use pages::admin;

/// How long a console login lasts: a working day, not the 90 days of a phone.
const CONSOLE_SESSION_MS: i64 = 12 * 3_600_000;

/// Largest console form accepted (an action form may carry a photo).
const MAX_FORM_BYTES: usize = 12 << 20;

const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; \
                   frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'";

/// The console's routes, with its security headers.
/// One name for service requests (便民服务事项, 代办 being one way of handling them): their pages
/// moved from `/console/errands…` to `/console/service-requests…`; the old addresses redirect.
async fn moved(uri: axum::http::Uri) -> Redirect {
    let path = uri.path().replacen("/console/errands", "/console/service-requests", 1);
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    Redirect::permanent(&format!("{path}{query}"))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(home))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/assets/{file}", get(asset))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/console/inbox", get(pages::inbox))
        .route("/console/board", get(pages::board))
        .route("/console/map", get(pages::map))
        .route("/console/stats", get(pages::stats))
        .route("/console/records/{id}", get(pages::record))
        .route("/console/records/{id}/act", post(pages::act).layer(DefaultBodyLimit::max(MAX_FORM_BYTES)))
        .route("/console/service-requests", get(pages::service_requests))
        .route("/console/service-requests/new", get(pages::new_service_request_form).post(pages::new_service_request))
        .route("/console/service-requests/batch", get(pages::batch_form).post(pages::batch_create))
        // The service-request pages' old addresses (代办, bookmarks of earlier versions).
        .route("/console/errands", get(moved))
        .route("/console/errands/{page}", get(moved))
        .route("/console/batches/{id}", get(pages::batch))
        .route("/console/batches/{id}/receive", post(pages::batch_receive))
        // System administration (系统管理): the administrator only.
        .route("/console/admin", get(admin::index))
        .route("/console/admin/people", get(admin::people).post(admin::create_person))
        .route("/console/admin/people/{id}", post(admin::change_person))
        .route("/console/admin/devices", get(admin::devices))
        .route("/console/admin/devices/{id}/revoke", post(admin::revoke))
        .route("/console/admin/units", get(admin::units).post(admin::save_unit))
        .route("/console/admin/units/{code}/boundary", post(admin::save_boundary))
        .route("/console/admin/routing", get(admin::routing).post(admin::save_routing))
        .route("/console/admin/catalog", get(admin::catalog).post(admin::import_catalog).layer(DefaultBodyLimit::max(MAX_FORM_BYTES)))
        .route("/console/admin/import", get(admin::import_form).post(admin::import_upload).layer(DefaultBodyLimit::max(MAX_FORM_BYTES)))
        .route("/console/admin/audit", get(admin::audit))
        .layer(SetResponseHeaderLayer::overriding(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)))
        .layer(SetResponseHeaderLayer::overriding(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .layer(SetResponseHeaderLayer::overriding(header::REFERRER_POLICY, HeaderValue::from_static("same-origin")))
        .layer(SetResponseHeaderLayer::if_not_present(header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
}

/// A logged-in console user. Without a valid session, pages redirect to the login page.
#[derive(Debug, Clone)]
pub struct Session {
    pub auth: AuthDevice,
    /// The CSRF token every form of this session must carry.
    pub csrf: String,
}

impl Session {
    pub fn person(&self) -> &Person {
        &self.auth.person
    }

    /// Refuses a form that does not carry this session's CSRF token.
    pub fn check_csrf(&self, sent: &str) -> Result<(), AppError> {
        // Both sides are hashes of a secret: compare without an early exit anyway.
        let same = sent.len() == self.csrf.len() && sent.bytes().zip(self.csrf.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        if same { Ok(()) } else { Err(AppError::Forbidden) }
    }
}

fn csrf_for(token: &str) -> String {
    hex::encode(&Sha256::digest(format!("gridlink-csrf\0{token}").as_bytes())[..16])
}

/// Where an unauthenticated console request goes.
#[derive(Debug)]
pub struct ToLogin;

impl IntoResponse for ToLogin {
    fn into_response(self) -> Response {
        Redirect::to("/console/login").into_response()
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = ToLogin;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = session_token(&parts.headers).ok_or(ToLogin)?;
        let csrf = csrf_for(&token);
        let auth = device_for_token(state, token).await.map_err(|_| ToLogin)?;
        Ok(Session { auth, csrf })
    }
}

/// An error page in the console's look.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    message: String,
}

/// Errors on console pages are answered as pages, not JSON.
#[derive(Debug)]
pub struct PageError(pub AppError);

impl From<AppError> for PageError {
    fn from(e: AppError) -> Self {
        PageError(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.clone_status();
        if let AppError::Internal(detail) = &self.0 {
            tracing::error!(%detail, "console request failed");
        }
        let page = ErrorPage { status: status.as_u16(), message: self.0.to_string() };
        (status, html(&page)).into_response()
    }
}

/// Result of a console handler.
pub type PageResult<T> = Result<T, PageError>;

/// Renders a template as an HTML response.
pub fn html(t: &impl Template) -> Response {
    match t.render() {
        Ok(body) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "页面生成失败").into_response()
        }
    }
}

/// The first page for a role.
pub fn landing(role: Role) -> &'static str {
    match role {
        Role::StationStaff => "/console/service-requests",
        Role::Admin => "/console/admin/people",
        _ => "/console/inbox",
    }
}

async fn home(session: Session) -> Redirect {
    Redirect::to(landing(session.person().role))
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    error: Option<String>,
    username: String,
}

async fn login_page() -> Response {
    html(&LoginPage { error: None, username: String::new() })
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
}

async fn login(State(state): State<AppState>, Form(form): Form<LoginForm>) -> Response {
    match sign_in(&state, &form.username, form.password, "网页控制台", CONSOLE_SESSION_MS).await {
        Ok(s) => {
            let cookie = Cookie::build((SESSION_COOKIE, s.token))
                .path("/")
                .http_only(true)
                .same_site(SameSite::Strict)
                .secure(state.settings.secure_cookies)
                .build();
            let mut resp = Redirect::to(landing(s.person.role)).into_response();
            resp.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie.to_string()).expect("cookie is ASCII"));
            resp
        }
        Err(e) => {
            let status = e.clone_status();
            (status, html(&LoginPage { error: Some(e.to_string()), username: form.username.chars().take(64).collect() })).into_response()
        }
    }
}

/// A form that carries nothing but its CSRF token.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(rename = "_csrf")]
    pub csrf: String,
}

async fn logout(State(state): State<AppState>, session: Session, Form(form): Form<CsrfForm>) -> PageResult<Response> {
    session.check_csrf(&form.csrf)?;
    sign_out(&state, session.auth.device_id).await?;
    let mut gone = Cookie::build((SESSION_COOKIE, "")).path("/").build();
    gone.make_removal();
    let mut resp = Redirect::to("/console/login").into_response();
    resp.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&gone.to_string()).expect("cookie is ASCII"));
    Ok(resp)
}

/// The console's own stylesheet and script, compiled into the server (no CDN at run time).
async fn asset(Path(file): Path<String>) -> Response {
    let (body, ty): (&'static str, &str) = match file.as_str() {
        "console.css" => (include_str!("../../assets/console.css"), "text/css; charset=utf-8"),
        "console.js" => (include_str!("../../assets/console.js"), "text/javascript; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    ([(header::CONTENT_TYPE, ty), (header::CACHE_CONTROL, "public, max-age=300")], body).into_response()
}
