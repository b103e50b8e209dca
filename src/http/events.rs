//! The events routes: an account's events for platforms that poll (the
//! outbox, oldest first).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::extract::{Ids, Q, account_id};
use crate::ledger::Store;

/// The events routes, each with its OpenAPI operation.
pub fn routes<S: Store>() -> OpenApiRouter<AppState<S>> {
    OpenApiRouter::default().routes(utoipa_axum::routes!(list))
}

/// `after` and `limit` of the events list.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    /// Only events with a greater `sequence` (the last one seen, or the
    /// page's `next_cursor`); 0 or absent: from the first.
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// Items per page, 1-500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// List an account's events.
///
/// The account's events in ascending `sequence` order (the one list that is oldest first); `after` is exclusive. A platform that polls passes the last sequence it has seen. The same events are sent to webhook endpoints.
#[utoipa::path(get, path = "/v1/accounts/{id}/events", operation_id = "listEvents", tag = "events", params(("id" = String, Path, description = "Account id"), EventParams), responses((status = 200, description = "Events, oldest first", body = super::openapi::EventPage), super::openapi::ReadErrors))]
pub async fn list<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    Ids(id): Ids<String>,
    Q(q): Q<EventParams>,
) -> Result<Response, ApiError> {
    let id = account_id(&id)?;
    caller.may_access(&id)?;
    if q.after.is_some_and(|a| a < 0) {
        return Err(ApiError::bad_request("after must be a sequence number, 0 or more"));
    }
    let page = super::page_of(&None, q.limit)?;
    Ok(Json(st.ledger.events(&id, q.after.unwrap_or(0), page).await.map_err(super::list_error)?)
        .into_response())
}
