//! The notices (督办/通知) addressed to a unit, for its phones.

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::AuthDevice;
use crate::error::AppResult;

/// Notices per page at most (the phone keeps the first page, the newest).
pub const PAGE: i64 = 200;

#[derive(Debug, Deserialize)]
pub struct NoticeQuery {
    /// Only notices newer than this one (its `seq`): what a client that holds them up to it lacks.
    after: Option<i64>,
    /// Only notices older than this one (its `seq`): the next page.
    before: Option<i64>,
    /// Notices wanted (1–200, default 200).
    limit: Option<i64>,
}

/// `GET /api/v1/notices[?after=seq&before=seq&limit=n]`: notices addressed to the caller's unit or
/// below, newest first, paged by `seq` (scope in the query, before the limit). Phones get theirs
/// in the sync answer instead ([`crate::sync`]); this is for other clients and older phones.
pub async fn notices(
    State(state): State<AppState>,
    auth: AuthDevice,
    Query(q): Query<NoticeQuery>,
) -> AppResult<Json<Vec<gridlink_core::Notice>>> {
    state
        .db
        .read(move |c| {
            let (before, limit) = (q.before.unwrap_or(i64::MAX), q.limit.unwrap_or(PAGE).clamp(1, PAGE));
            let rows = c.notices(auth.person.unit.as_str(), q.after.unwrap_or(0), before, limit)?;
            Ok(Json(rows.into_iter().map(Into::into).collect()))
        })
        .await
}
