//! The notices (督办/通知) addressed to a unit, for its phones.

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::AuthDevice;
use crate::error::AppResult;

/// Notices per page at most (the phone keeps the first page, the newest).
const PAGE: i64 = 200;

#[derive(Debug, Deserialize)]
pub struct NoticeQuery {
    /// Only notices older than this one (its `seq`): the next page.
    before: Option<i64>,
    /// Notices wanted (1–200, default 200).
    limit: Option<i64>,
}

/// `GET /api/v1/notices[?before=seq&limit=n]`: notices addressed to the caller's unit or below,
/// newest first, paged by `seq` (scope in the query, before the limit).
pub async fn notices(State(state): State<AppState>, auth: AuthDevice, Query(q): Query<NoticeQuery>) -> AppResult<Json<serde_json::Value>> {
    state
        .db
        .read(move |c| {
            let unit = auth.person.unit.as_str().to_owned();
            let sql = format!(
                "SELECT seq, doc_id, unit, at_ms, text FROM notices WHERE {} AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
                gridlink_core::store::within_sql("unit", "?1")
            );
            let mut stmt = c.prepare(&sql)?;
            let (before, limit) = (q.before.unwrap_or(i64::MAX), q.limit.unwrap_or(PAGE).clamp(1, PAGE));
            let rows = stmt.query_map(rusqlite::params![unit, before, limit], |r| {
                Ok(serde_json::json!({
                    "seq": r.get::<_, i64>(0)?, "doc_id": r.get::<_, String>(1)?, "unit": r.get::<_, String>(2)?,
                    "at_ms": r.get::<_, i64>(3)?, "text": r.get::<_, String>(4)?,
                }))
            })?;
            Ok(Json(serde_json::Value::Array(rows.collect::<Result<_, _>>()?)))
        })
        .await
}
