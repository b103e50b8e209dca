//! Operational routes: health, metrics, the OpenAPI document, and the answers for unknown routes and methods.

use super::error::ErrorCode;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;

use super::AppState;
use super::error::ApiError;
use crate::ledger::{PageRequest, Store};

/// Health, metrics and this document, served and documented from their
/// handlers' `#[utoipa::path]`. The fallbacks below are not routes.
pub fn routes<S: Store>() -> OpenApiRouter<AppState<S>> {
    OpenApiRouter::default()
        .routes(utoipa_axum::routes!(healthz))
        .routes(utoipa_axum::routes!(metrics))
        .routes(utoipa_axum::routes!(openapi))
}

/// Health check.
///
/// 200 when the database answers.
#[utoipa::path(get, path = "/healthz", operation_id = "getHealth", tag = "operations", responses((status = 200, description = "The database answers", body = Object), (status = 503, description = "The database cannot be reached", body = super::openapi::Problem, content_type = "application/problem+json")), security(()))]
pub async fn healthz<S: Store>(State(st): State<AppState<S>>) -> Response {
    match st.ledger.accounts(PageRequest::first(1), None).await {
        Ok(_) => (StatusCode::OK, axum::Json(serde_json::json!({"status": "ok"}))).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Metrics.
///
/// OpenMetrics text: requests and latency per route, credits moved.
#[utoipa::path(get, path = "/metrics", operation_id = "getMetrics", tag = "operations", responses((status = 200, description = "OpenMetrics text format", body = String, content_type = "application/openmetrics-text")), security(()))]
pub async fn metrics<S: Store>(State(st): State<AppState<S>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        st.metrics.render(),
    )
        .into_response()
}

/// This OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", operation_id = "getOpenApi", tag = "operations", responses((status = 200, description = "This document", body = Object)), security(()))]
pub async fn openapi<S: Store>(_state: State<AppState<S>>) -> Response {
    // The state names the store type, so the document is built from the
    // routers of the server that answers.
    ([(header::CONTENT_TYPE, "application/json")], super::openapi::document_json::<S>()).into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see /openapi.json")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::InvalidRequest,
        "this route does not take that method",
    )
}
