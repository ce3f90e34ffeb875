//! Accounts and devices: argon2id password hashes, one random token per device (stored hashed,
//! expiring, revocable), and the extractor that authenticates a request.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine;
use gridlink_core::{Person, Role, UnitCode};
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::error::{AppError, AppResult};
use crate::storage::{PersonRow, Session, Storage};

/// Hashes a password with argon2id (PHC string).
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).expect("16 bytes make a valid salt");
    Argon2::default().hash_password(password.as_bytes(), &salt).expect("argon2 with default parameters").to_string()
}

/// Checks a password against its stored hash (constant-time comparison inside argon2).
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// A new device token: 32 random bytes, URL-safe base64.
pub fn new_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// How a token is stored: its SHA-256. Tokens are random, so a fast hash suffices, and a lookup by
/// hash does not compare secrets byte by byte.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Parses a stored role name.
pub fn parse_role(s: &str) -> Option<Role> {
    Role::ALL.into_iter().find(|r| r.as_str() == s)
}

/// Loads a person by id.
pub fn load_person(conn: &dyn Storage, id: &str) -> AppResult<Option<(Person, String, bool)>> {
    let Some(PersonRow { id, name, role, unit, password_hash: hash, active }) = conn.person(id)? else {
        return Ok(None);
    };
    let role = parse_role(&role).ok_or_else(|| AppError::Internal(format!("bad role for {id}")))?;
    let unit = UnitCode::parse(&unit).map_err(|_| AppError::Internal(format!("bad unit for {id}")))?;
    Ok(Some((Person { id, name, role, unit }, hash, active)))
}

/// An authenticated device and the person using it.
#[derive(Debug, Clone)]
pub struct AuthDevice {
    pub device_id: String,
    pub person: Person,
}

/// Name of the web console's session cookie (it holds a device token of its own).
pub const SESSION_COOKIE: &str = "gl_session";

/// The session token in a request's cookies, if any.
pub fn session_token(headers: &axum::http::HeaderMap) -> Option<String> {
    axum_extra::extract::CookieJar::from_headers(headers).get(SESSION_COOKIE).map(|c| c.value().to_owned())
}

/// The device token of an `Authorization: Bearer …` header, if any.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<String> {
    let header = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    header.and_then(|h| h.strip_prefix("Bearer ")).map(str::to_owned)
}

impl FromRequestParts<AppState> for AuthDevice {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // Only the header or, for reading (exports, live events), the console's session cookie:
        // a token in a URL would end up in access logs, and a cookie must never authorise a change
        // on the API (no cross-site requests riding on it).
        let token = match bearer_token(&parts.headers) {
            Some(t) => t,
            None if parts.method.is_safe() => session_token(&parts.headers).ok_or(AppError::Unauthorized)?,
            None => return Err(AppError::Unauthorized),
        };
        device_for_token(state, token).await
    }
}

/// The device (and its person) a token belongs to, if it is valid now.
pub async fn device_for_token(state: &AppState, token: String) -> AppResult<AuthDevice> {
    if token.len() > 200 {
        return Err(AppError::Unauthorized);
    }
    let hash = token_hash(&token);
    let now = state.now_ms();
    state
        .db
        .read(move |conn| {
            let Some(Session { device_id, person_id, expires_ms: expires, revoked_ms: revoked, logged_out }) =
                conn.session_by_token(&hash)?
            else {
                return Err(AppError::Unauthorized);
            };
            if revoked.is_some() {
                return Err(AppError::Wipe);
            }
            if logged_out || expires < now {
                return Err(AppError::Unauthorized);
            }
            match load_person(conn, &person_id)? {
                Some((person, _, true)) => Ok(AuthDevice { device_id, person }),
                _ => Err(AppError::Unauthorized),
            }
        })
        .await
}

/// Failed logins per user name, to slow down guessing: after [`LIMIT`] failures within
/// [`WINDOW_MS`], further attempts are refused until the window passes. The count is kept in the
/// database, so every server node of a county refuses alike.
const LIMIT: i64 = 10;
const WINDOW_MS: i64 = 5 * 60_000;

/// The key a user name is counted under (bounded, as the name came from outside).
fn limit_key(user: &str) -> String {
    user.chars().take(64).collect()
}

/// Whether this user name may try now.
pub async fn login_allowed(state: &AppState, user: &str, now: i64) -> AppResult<bool> {
    let key = limit_key(user);
    state.db.read(move |c| Ok(c.login_failures(&key)?.is_none_or(|(n, since)| n < LIMIT || now - since > WINDOW_MS))).await
}

/// Counts a failure.
pub async fn login_failed(state: &AppState, user: &str, now: i64) -> AppResult<()> {
    let key = limit_key(user);
    state.db.write(move |c| c.note_login_failure(&key, now, WINDOW_MS)).await
}

/// Clears a user name's failures after a successful login.
pub async fn login_succeeded(state: &AppState, user: &str) -> AppResult<()> {
    let key = limit_key(user);
    state.db.write(move |c| c.clear_login_failures(&key)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_tokens() {
        let h = hash_password("正确的密码");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "正确的密码"));
        assert!(!verify_password(&h, "错误"));
        assert!(!verify_password("garbage", "x"));
        let t = new_token();
        assert_eq!(t.len(), 43);
        assert_ne!(t, new_token());
        assert_eq!(token_hash(&t).len(), 64);
        assert_eq!(parse_role("grid_member"), Some(Role::GridMember));
    }
}
