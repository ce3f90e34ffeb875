//! The one public error of the bindings, mapped from the core's errors in exactly one place.
//! Messages are Chinese and never carry personal data.

use gridlink_core::CoreError;
use gridlink_core::sync::SyncError;

/// What can go wrong, as the app needs to tell it apart. The foreign side sees the variant and
/// its Chinese message (`e.message` in Kotlin and Swift, `str(e)` in Python).
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum GridlinkError {
    /// Bad input (empty title, invalid ID number, unknown category …): show the message.
    #[error("{message}")]
    Invalid { message: String },
    /// The current role may not do this here.
    #[error("{message}")]
    NotAllowed { message: String },
    #[error("{message}")]
    NotFound { message: String },
    /// No network or the server is unreachable: retry later.
    #[error("{message}")]
    Network { message: String },
    /// Wrong password, expired login: ask the user to log in.
    #[error("{message}")]
    Auth { message: String },
    /// The administrator revoked this device; local data was deleted.
    #[error("{message}")]
    Wiped { message: String },
    /// The phone's storage failed (full, corrupt).
    #[error("{message}")]
    Storage { message: String },
    /// Anything else, including a bug (a panic inside the library).
    #[error("{message}")]
    Internal { message: String },
}

impl From<CoreError> for GridlinkError {
    fn from(e: CoreError) -> Self {
        let message = e.to_string();
        match e {
            CoreError::NotAllowed { .. }
            | CoreError::EditNotAllowed { .. }
            | CoreError::InvalidTransition { .. }
            | CoreError::NoIdentity => GridlinkError::NotAllowed { message },
            CoreError::NotFound(_) => GridlinkError::NotFound { message },
            CoreError::Storage(_) | CoreError::CorruptDocument { .. } => GridlinkError::Storage { message },
            _ => GridlinkError::Invalid { message },
        }
    }
}

impl From<SyncError> for GridlinkError {
    fn from(e: SyncError) -> Self {
        let message = e.to_string();
        match e {
            SyncError::Network(_) | SyncError::Server(_) => GridlinkError::Network { message },
            SyncError::Unauthorized | SyncError::BadCredentials | SyncError::TooManyAttempts | SyncError::NotLoggedIn => {
                GridlinkError::Auth { message }
            }
            SyncError::Wiped => GridlinkError::Wiped { message },
            SyncError::Core(c) => c.into(),
            SyncError::Refused(_) | SyncError::Protocol(_) => GridlinkError::Invalid { message },
        }
    }
}

impl From<uniffi::UnexpectedUniFFICallbackError> for GridlinkError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        GridlinkError::Internal { message: format!("回调出错: {}", e.reason) }
    }
}
