//! Synchronisation between devices and the town server.
//!
//! - [`protocol`]: the wire format of one sync round (CBOR, deflate-compressed, versioned).
//! - [`validate`]: what the server checks before a pushed change may enter its state — the same
//!   rules the phone applied, so a forged change is refused with a reason.
//! - [`engine`]: the device side: uploads photos, pushes the outbox, applies what the server sends,
//!   retries with backoff, and keeps a status a UI can show. Blocking I/O: no async runtime needed.

pub mod engine;
pub mod protocol;
pub mod validate;

pub use engine::{
    ClientAccess, Exclusive, HttpTransport, LoginResult, RetryPolicy, SyncEngine, SyncError, SyncReport, SyncStatus, SyncTimeouts,
    Transport,
};
pub use protocol::{PROTOCOL_VERSION, SyncRequest, SyncResponse};
pub use validate::validate_update;
