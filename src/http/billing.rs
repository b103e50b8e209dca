//! Statements, closing months, payment status, and the test clock.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{Body, Ids, Key, NoQuery, Q, account_id};
use super::{AppState, ListParams, executed};
use crate::domain::command::Command;
use crate::domain::period::Month;
use crate::domain::statement::{Statement, StatementStatus};
use crate::domain::view::StatementView;
use crate::ledger::Store;

/// This module's routes, each served and documented from its handler's
/// `#[utoipa::path]` (one `routes!` per path); the test clock's are apart
/// in [`test_clock_routes`].
pub fn routes<S: Store>() -> OpenApiRouter<AppState<S>> {
    OpenApiRouter::default()
        .routes(utoipa_axum::routes!(account_statements))
        .routes(utoipa_axum::routes!(show_statement))
        .routes(utoipa_axum::routes!(month_statements))
        .routes(utoipa_axum::routes!(set_status))
        .routes(utoipa_axum::routes!(close))
}

/// `GET` and `PUT /v1/test-clock`: mounted only with `--test-clock`, always
/// documented.
pub fn test_clock_routes<S: Store>() -> OpenApiRouter<AppState<S>> {
    OpenApiRouter::default().routes(utoipa_axum::routes!(get_clock, set_clock))
}

fn month_param(m: &Option<String>) -> Result<Option<Month>, ApiError> {
    m.as_deref().map(Month::parse).transpose().map_err(|e| ApiError::bad_request(e.to_string()))
}

/// List an account's statements.
///
/// Statements, newest first; `month` keeps one; `format=csv` exports every line.
#[utoipa::path(get, path = "/v1/accounts/{id}/statements", operation_id = "listStatements", tag = "billing", params(("id" = String, Path, description = "Account id"), ListParams), responses((status = 200, description = "Statements, newest first", content((super::openapi::StatementPage = "application/json"), (String = "text/csv"))), super::openapi::ReadErrors))]
pub async fn account_statements<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    Ids(id): Ids<String>,
    Q(q): Q<ListParams>,
) -> Result<Response, ApiError> {
    let id = account_id(&id)?;
    caller.may_access(&id)?;
    let month = month_param(&q.month)?;
    if q.format == Some(super::ListFormat::Csv) {
        let (ledger, account) = (st.ledger.clone(), id.clone());
        let fetch = move |req| {
            let (ledger, account) = (ledger.clone(), account.clone());
            async move { ledger.statements(Some(&account), month, req).await }
        };
        return super::csv_export(&format!("statements-{id}"), q.cursor, q.limit, fetch).await;
    }
    Ok(Json(st.ledger.statements(Some(&id), month, q.page()?).await.map_err(super::list_error)?)
        .into_response())
}

/// Get a statement.
///
/// One statement with its lines.
#[utoipa::path(get, path = "/v1/accounts/{id}/statements/{sid}", operation_id = "getStatement", tag = "billing", params(("id" = String, Path, description = "Account id"), ("sid" = String, Path, description = "Statement id")), responses((status = 200, description = "The statement", body = StatementView), super::openapi::ReadErrors))]
pub async fn show_statement<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
    Ids((id, statement_id)): Ids<(String, String)>,
) -> Result<Response, ApiError> {
    let id = account_id(&id)?;
    caller.may_access(&id)?;
    Ok(Json(st.ledger.statement(&id, &statement_id, st.clock.now()).await?).into_response())
}

/// List every statement of a month.
///
/// Every account's statement for `month` (required), by account id.
#[utoipa::path(get, path = "/v1/statements", operation_id = "listMonthStatements", tag = "billing", params(MonthListParams), responses((status = 200, description = "Every statement of a month", content((super::openapi::StatementPage = "application/json"), (String = "text/csv"))), super::openapi::ReadErrors))]
pub async fn month_statements<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    Q(q): Q<MonthListParams>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let month = Month::parse(&q.month).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if q.format == Some(super::ListFormat::Csv) {
        let ledger = st.ledger.clone();
        let fetch = move |req| {
            let ledger = ledger.clone();
            async move { ledger.statements(None, Some(month), req).await }
        };
        return super::csv_export(&format!("statements-{month}"), q.cursor, q.limit, fetch).await;
    }
    let page = super::page_of(&q.cursor, q.limit)?;
    Ok(Json(st.ledger.statements(None, Some(month), page).await.map_err(super::list_error)?).into_response())
}

/// `month` (required), `cursor`, `limit` and `format` of every account's
/// statements of a month.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MonthListParams {
    /// The month, YYYY-MM.
    #[param(value_type = Month)]
    pub month: String,
    /// The `next_cursor` of the previous page.
    #[param(min_length = 1)]
    pub cursor: Option<String>,
    /// Items per page, 1-500 (default 50); not with `format=csv`, which answers every item.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `csv`: every statement (from `cursor` when given), streamed.
    #[param(inline)]
    pub format: Option<super::ListFormat>,
}

/// What a close did: how many statements it issued, and them.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct CloseView {
    pub closed: usize,
    pub statements: Vec<StatementView>,
    /// Accounts that could not close, with why (logged too); each account
    /// closes on its own, so these never block or half-close the others.
    pub failed: Vec<crate::ledger::CloseFailure>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseBody {
    #[serde(default)]
    pub month: Option<Month>,
}

/// Close ended months.
///
/// Issues the statements of every account's ended months (each account on its own; failures are listed, the others close).
#[utoipa::path(post, path = "/v1/billing/close", operation_id = "closeBilling", tag = "billing", request_body(content = CloseBody, content_type = "application/json"), responses((status = 200, description = "Statements issued", body = CloseView), super::openapi::Errors))]
pub async fn close<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
    Body(body): Body<CloseBody>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let report = st.ledger.close_all(body.month, st.clock.now()).await?;
    for f in &report.failed {
        tracing::warn!(account = %f.account_id, detail = %f.detail, "an account could not close its months");
    }
    let view =
        CloseView { closed: report.statements.len(), statements: report.statements, failed: report.failed };
    Ok(Json(view).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusBody {
    #[schema(pattern = "^(paid|failed)$", example = "paid")]
    pub status: String,
}

/// Record a statement's payment.
///
/// `paid` or `failed`; a failed statement suspends the account's purchases until it is paid.
#[utoipa::path(post, path = "/v1/statements/{sid}/status", operation_id = "setStatementStatus", tag = "billing", request_body(content = StatusBody, content_type = "application/json"), params(("sid" = String, Path, description = "Statement id"), ("Idempotency-Key" = Option<crate::ledger::IdempotencyKey>, Header, nullable = false, description = "Optional: 1-255 printable ASCII; a retry with the same key and body answers the first response")), responses((status = 200, description = "The statement", body = StatementView), super::openapi::Errors))]
pub async fn set_status<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
    Ids(statement_id): Ids<String>,
    key: Key,
    Body(body): Body<StatusBody>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let status = StatementStatus::parse_payment(&body.status)?;
    let (account, _) = Statement::parse_id(&statement_id)?;
    let command = Command::SetStatementStatus { statement_id, status };
    let done = st.ledger.execute(&account, command, key.0, st.clock.now()).await?;
    Ok(executed(&st, done, StatusCode::OK))
}

fn test_clock_only<S>(st: &AppState<S>) -> Result<(), ApiError> {
    if st.clock.is_test() {
        Ok(())
    } else {
        Err(ApiError::not_found("no test clock: start the server with --test-clock"))
    }
}

/// Read the test clock.
///
/// Only when the server runs with --test-clock.
#[utoipa::path(get, path = "/v1/test-clock", operation_id = "getTestClock", tag = "test clock", responses((status = 200, description = "The test clock (only with --test-clock; else 404)", body = ClockBody), super::openapi::ReadErrors))]
pub async fn get_clock<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
) -> Result<Response, ApiError> {
    test_clock_only(&st)?;
    caller.require_admin()?;
    Ok(Json(json!({"now": st.clock.now()})).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClockBody {
    #[schema(value_type = String, format = DateTime)]
    pub now: Timestamp,
}

/// Move the test clock.
///
/// Forward only, up to year 9000; only with --test-clock.
#[utoipa::path(put, path = "/v1/test-clock", operation_id = "setTestClock", tag = "test clock", request_body(content = ClockBody, content_type = "application/json"), responses((status = 200, description = "Moved (forward only)", body = ClockBody), super::openapi::Errors))]
pub async fn set_clock<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
    Body(body): Body<ClockBody>,
) -> Result<Response, ApiError> {
    test_clock_only(&st)?;
    caller.require_admin()?;
    let to = crate::domain::period::accepted_instant(body.now, "the test clock's now")?;
    let now = st.clock.set(to).map_err(ApiError::invalid)?;
    Ok(Json(json!({"now": now})).into_response())
}
