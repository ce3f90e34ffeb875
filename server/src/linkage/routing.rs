//! The routing rules (分流规则) an administrator reads and edits.

use axum::Json;
use axum::extract::State;
use gridlink_core::routing::RoutingRules;

use crate::app::{AppState, require_admin};
use crate::auth::AuthDevice;
use crate::error::AppResult;

/// `GET /api/v1/admin/routing`.
pub async fn get_routing(State(state): State<AppState>, auth: AuthDevice) -> AppResult<Json<RoutingRules>> {
    require_admin(&auth)?;
    Ok(Json(state.routing()))
}

/// `PUT /api/v1/admin/routing`: replaces the routing rules (validated against the catalog).
pub async fn put_routing(
    State(state): State<AppState>,
    auth: AuthDevice,
    Json(rules): Json<RoutingRules>,
) -> AppResult<Json<RoutingRules>> {
    require_admin(&auth)?;
    set_routing(&state, &auth.person.id, rules.clone()).await?;
    Ok(Json(rules))
}

/// Replaces the routing rules after checking them against the catalog; the next report is routed
/// by them. Audited as done by `who`.
pub async fn set_routing(state: &AppState, who: &str, rules: RoutingRules) -> AppResult<()> {
    rules.validate(&state.catalog)?;
    let text = serde_json::to_string(&rules).expect("serialisable");
    let now = state.now_ms();
    let who = who.to_owned();
    state
        .db
        .write(move |c| {
            c.meta_set("routing", &text)?;
            c.audit(now, &who, "set_routing", &text)
        })
        .await?;
    *state.routing.write().unwrap_or_else(|p| p.into_inner()) = rules;
    Ok(())
}
