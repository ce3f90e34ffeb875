//! The one error type of the server. It tells the client only what it may know (in Chinese), and
//! logs the details of server-side failures.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("未登录或登录已失效")]
    Unauthorized,
    #[error("用户名或密码错误")]
    BadCredentials,
    #[error("无权访问")]
    Forbidden,
    #[error("找不到请求的内容")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    /// The device was revoked: it must delete its local data.
    #[error("本设备已被停用,请清除本地数据")]
    Wipe,
    #[error("请求数据过大(上限 {0} 字节)")]
    TooLarge(usize),
    #[error("{0}")]
    Unprocessable(String),
    #[error("尝试过于频繁,请稍后再试")]
    TooManyRequests,
    /// The disk (or the database's size limit) is full: nothing was stored, try again later.
    #[error("服务器存储空间不足,本次提交未保存,请稍后重试")]
    StorageFull,
    #[error("服务器内部错误")]
    Internal(String),
}

impl AppError {
    /// The message for the operator at the command line: an internal error's own text, which
    /// HTTP answers never show (it names files and databases; never personal data).
    pub fn for_operator(&self) -> String {
        match self {
            AppError::Internal(detail) => detail.clone(),
            other => other.to_string(),
        }
    }

    /// A failed file operation (attachments): a full disk is told apart.
    pub fn file(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::StorageFull {
            AppError::StorageFull
        } else {
            AppError::Internal(format!("attachment file: {e}"))
        }
    }

    /// The HTTP status this error answers with.
    pub fn clone_status(&self) -> StatusCode {
        self.status()
    }

    fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized | AppError::BadCredentials => StatusCode::UNAUTHORIZED,
            AppError::Forbidden => StatusCode::FORBIDDEN,
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::Wipe => StatusCode::GONE,
            AppError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            AppError::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            AppError::BadRequest(_) => "bad_request",
            AppError::Unauthorized => "unauthorized",
            AppError::BadCredentials => "bad_credentials",
            AppError::Forbidden => "forbidden",
            AppError::NotFound => "not_found",
            AppError::Conflict(_) => "conflict",
            AppError::Wipe => "wipe",
            AppError::TooLarge(_) => "too_large",
            AppError::Unprocessable(_) => "unprocessable",
            AppError::TooManyRequests => "too_many_requests",
            AppError::StorageFull => "storage_full",
            AppError::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match &self {
            AppError::Internal(detail) => tracing::error!(%detail, "request failed"),
            AppError::StorageFull => tracing::error!("storage full: a write was refused"),
            _ => {}
        }
        let body =
            serde_json::json!({ "error": { "code": self.code(), "message": self.to_string(), "wipe": matches!(self, AppError::Wipe) } });
        (self.status(), Json(body)).into_response()
    }
}

impl From<rusqlite::Error> for AppError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => AppError::StorageFull,
            _ => AppError::Internal(format!("database: {e}")),
        }
    }
}

impl From<postgres::Error> for AppError {
    /// PostgreSQL's own message may quote the values of a row (a key that already exists), so
    /// only its error code and class are kept.
    fn from(e: postgres::Error) -> Self {
        match e.code() {
            Some(c) if *c == postgres::error::SqlState::DISK_FULL => AppError::StorageFull,
            Some(c) => AppError::Internal(format!("PostgreSQL error {}", c.code())),
            None if e.is_closed() => AppError::Internal("PostgreSQL connection closed".into()),
            None => AppError::Internal("PostgreSQL client error".into()),
        }
    }
}

impl From<gridlink_core::CoreError> for AppError {
    fn from(e: gridlink_core::CoreError) -> Self {
        use gridlink_core::CoreError as C;
        match e {
            C::Storage(e) => AppError::from(e),
            C::NotFound(_) => AppError::NotFound,
            other => AppError::BadRequest(other.to_string()),
        }
    }
}

impl From<tokio::task::JoinError> for AppError {
    fn from(e: tokio::task::JoinError) -> Self {
        AppError::Internal(format!("task: {e}"))
    }
}

/// Handler result.
pub type AppResult<T> = Result<T, AppError>;
