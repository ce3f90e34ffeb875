//! # gridlink-ffi
//!
//! The API a phone app needs, for Kotlin and Swift callers: one [`GridlinkClient`] per app install,
//! holding the offline store and the sync engine. Calls are thread-safe; those that touch the
//! network are `async` (Kotlin `suspend`, Swift `async`) and run on a worker thread, so no Rust
//! runtime is needed on either side. Errors are one small [`GridlinkError`] with Chinese messages;
//! a panic becomes an error, never a crash across the boundary.

mod client;
mod error;
mod types;

pub use client::{GridlinkClient, SyncObserver, SyncSubscription};
pub use error::GridlinkError;
pub use types::*;

uniffi::setup_scaffolding!();
