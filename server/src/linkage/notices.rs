//! The notices (督办/通知) addressed to a unit, for its phones.

use axum::Json;
use axum::extract::State;

use crate::app::AppState;
use crate::auth::AuthDevice;
use crate::error::AppResult;

/// `GET /api/v1/notices`: supervision notices addressed to the caller's unit or below.
pub async fn notices(State(state): State<AppState>, auth: AuthDevice) -> AppResult<Json<serde_json::Value>> {
    state
        .db
        .read(move |c| {
            let unit = auth.person.unit.as_str().to_owned();
            let sql = format!(
                "SELECT doc_id, unit, at_ms, text FROM notices WHERE {} ORDER BY seq DESC LIMIT 200",
                gridlink_core::store::within_sql("unit", "?1")
            );
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map([&unit], |r| {
                Ok(serde_json::json!({ "doc_id": r.get::<_, String>(0)?, "unit": r.get::<_, String>(1)?, "at_ms": r.get::<_, i64>(2)?, "text": r.get::<_, String>(3)? }))
            })?;
            Ok(Json(serde_json::Value::Array(rows.collect::<Result<_, _>>()?)))
        })
        .await
}
