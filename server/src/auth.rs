//! Accounts and devices: argon2id password hashes, one random token per device (stored hashed,
//! expiring, revocable), and the extractor that authenticates a request.

use std::sync::{Condvar, Mutex, OnceLock};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine;
use gridlink_core::{Person, Role, UnitCode};
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::error::{AppError, AppResult};
use crate::storage::{PersonRow, Session, Storage};

/// Argon2's working memory (19 MiB per hash with the default parameters), kept for the next hash
/// instead of freed. Freed after every login, glibc's allocator raises its mmap threshold to that
/// size and from then on keeps such buffers in its per-thread arenas: 400 logins one after another
/// left the server at 585 MiB resident, eight at a time at 2 GiB (docs/benchmarks.md, issue 20).
/// Here at most one buffer per core is ever made, and as many hashes run at once; more wait.
struct Scratch {
    free: Mutex<(Vec<Vec<Block>>, usize)>,
    turn: Condvar,
    most: usize,
}

fn scratch() -> &'static Scratch {
    static SCRATCH: OnceLock<Scratch> = OnceLock::new();
    SCRATCH.get_or_init(|| Scratch {
        free: Mutex::new((Vec::new(), 0)),
        turn: Condvar::new(),
        most: std::thread::available_parallelism().map_or(2, |n| n.get()),
    })
}

/// Runs `f` with at least `blocks` blocks of argon2 memory, waiting while every core hashes.
fn with_memory<T>(blocks: usize, f: impl FnOnce(&mut [Block]) -> T) -> T {
    let s = scratch();
    let mut lease = {
        let mut free = s.free.lock().unwrap_or_else(|e| e.into_inner());
        while free.0.is_empty() && free.1 >= s.most {
            free = s.turn.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        let memory = match free.0.pop() {
            Some(m) => m,
            None => {
                free.1 += 1;
                Vec::new()
            }
        };
        Lease { scratch: s, memory }
    };
    if lease.memory.len() < blocks {
        lease.memory.resize(blocks, Block::default());
    }
    f(&mut lease.memory[..blocks])
}

/// A buffer taken from [`Scratch`]; it goes back when dropped, also when the hash panicked, so
/// the next login never waits for a buffer that is gone.
struct Lease {
    scratch: &'static Scratch,
    memory: Vec<Block>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let memory = std::mem::take(&mut self.memory);
        self.scratch.free.lock().unwrap_or_else(|e| e.into_inner()).0.push(memory);
        self.scratch.turn.notify_one();
    }
}

/// Hashes a password with argon2id (PHC string).
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).expect("16 bytes make a valid salt");
    let params = Params::default();
    let mut raw_salt = [0u8; 64];
    let raw_salt = salt.decode_b64(&mut raw_salt).expect("a salt just encoded");
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    with_memory(params.block_count(), |m| Argon2::default().hash_password_into_with_memory(password.as_bytes(), raw_salt, &mut out, m))
        .expect("argon2 with default parameters");
    PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).expect("default parameters"),
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).expect("32 bytes")),
    }
    .to_string()
}

/// Checks a password against its stored hash, with the parameters the hash names (constant-time
/// comparison of the outputs).
pub fn verify_password(hash: &str, password: &str) -> bool {
    let check = || -> Option<bool> {
        let h = PasswordHash::new(hash).ok()?;
        let (salt, expected) = (h.salt?, h.hash?);
        let argon = Argon2::new(
            Algorithm::try_from(h.algorithm).ok()?,
            h.version.map_or(Ok(Version::default()), Version::try_from).ok()?,
            Params::try_from(&h).ok()?,
        );
        let mut raw_salt = [0u8; 64];
        let raw_salt = salt.decode_b64(&mut raw_salt).ok()?;
        let mut out = vec![0u8; expected.len()];
        let blocks = argon.params().block_count();
        with_memory(blocks, |m| argon.hash_password_into_with_memory(password.as_bytes(), raw_salt, &mut out, m)).ok()?;
        Some(Output::new(&out).ok()? == expected)
    };
    check().unwrap_or(false)
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
        // Hashes the argon2 crate made on its own, as every database holds them, with the
        // default parameters and with others: the same answers.
        use argon2::password_hash::PasswordHasher;
        let salt = SaltString::encode_b64(b"sixteen byte slt").unwrap();
        for params in [Params::default(), Params::new(4096, 3, 1, None).unwrap()] {
            let theirs = Argon2::from(params).hash_password("老密码".as_bytes(), &salt).unwrap().to_string();
            assert!(verify_password(&theirs, "老密码"), "{theirs}");
            assert!(!verify_password(&theirs, "老密码 "), "{theirs}");
        }
        // Ours verifies with theirs, and each hash has its own salt.
        let ours = PasswordHash::new(&h).unwrap();
        assert!(argon2::password_hash::PasswordVerifier::verify_password(&Argon2::default(), "正确的密码".as_bytes(), &ours).is_ok());
        assert_ne!(hash_password("正确的密码"), h);
        // More hashes at once than cores: each waits its turn, none fails.
        let many: Vec<bool> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..6).map(|_| s.spawn(|| verify_password(&h, "正确的密码"))).collect();
            hs.into_iter().map(|j| j.join().unwrap()).collect()
        });
        assert_eq!(many, [true; 6]);
        let t = new_token();
        assert_eq!(t.len(), 43);
        assert_ne!(t, new_token());
        assert_eq!(token_hash(&t).len(), 64);
        assert_eq!(parse_role("grid_member"), Some(Role::GridMember));
    }

    #[test]
    fn a_hash_that_panicked_gives_its_memory_back() {
        // More panics than there are buffers: had one been lost each time, the login after
        // them would wait forever.
        for _ in 0..scratch().most + 2 {
            let panicked = std::panic::catch_unwind(|| with_memory(8, |_| panic!("argon2 failed")));
            assert!(panicked.is_err());
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(verify_password(&hash_password("密码"), "密码")).unwrap());
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(120)), Ok(true), "a login waited for lost memory");
    }
}
