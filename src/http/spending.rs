//! Per-account money and credit routes: purchases, debits, holds, grants,
//! refunds, the ledger and usage reports.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{Body, Ids, Key, NoQuery, Q, account_id};
use super::{AppState, KeyRule, ListFormat, ListParams, PageParams, mutate};
use crate::domain::command::Command;
use crate::domain::credits::Credits;
use crate::domain::hold::HoldStatus;
use crate::domain::period::Month;
use crate::domain::view::{
    DebitRefundView, DebitView, GrantView, HoldView, PurchaseRefundView, PurchaseView,
};
use crate::ledger::Store;

/// This module's routes, each served and documented from its handler's
/// `#[utoipa::path]` (one `routes!` per path).
pub fn routes<S: Store>() -> OpenApiRouter<AppState<S>> {
    OpenApiRouter::default()
        .routes(utoipa_axum::routes!(purchase, purchases))
        .routes(utoipa_axum::routes!(show_purchase))
        .routes(utoipa_axum::routes!(refund_purchase))
        .routes(utoipa_axum::routes!(debit, debits))
        .routes(utoipa_axum::routes!(show_debit))
        .routes(utoipa_axum::routes!(refund_debit))
        .routes(utoipa_axum::routes!(hold, holds))
        .routes(utoipa_axum::routes!(show_hold))
        .routes(utoipa_axum::routes!(capture))
        .routes(utoipa_axum::routes!(release))
        .routes(utoipa_axum::routes!(grant))
        .routes(utoipa_axum::routes!(ledger))
        .routes(utoipa_axum::routes!(usage))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurchaseBody {
    pub credits: Credits,
}

/// Buy credits.
///
/// Credits at the account's unit price, usable at once, never expiring, billed on the 1st of the next month.
#[utoipa::path(post, path = "/v1/accounts/{id}/purchases", operation_id = "createPurchase", tag = "purchases", request_body(content = PurchaseBody, content_type = "application/json"), params(("id" = String, Path, description = "Account id"), ("Idempotency-Key" = crate::ledger::IdempotencyKey, Header, description = "Required: 1-255 printable ASCII; a retry with the same key and body answers the first response")), responses((status = 201, description = "Purchased", body = PurchaseView, headers(("Location" = String, description = "The path of the new object (for a refund, what it refunded; for a grant, the ledger)"), ("Idempotent-Replayed" = String, description = "`true` when this answers again an earlier request with the same key"))), super::openapi::Errors))]
pub async fn purchase<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
    Ids(id): Ids<String>,
    key: Key,
    Body(body): Body<PurchaseBody>,
) -> Result<Response, ApiError> {
    let command = Command::Purchase { credits: body.credits };
    mutate(&st, &caller, &id, key, KeyRule::Required, command, StatusCode::CREATED).await
}

/// List purchases.
///
/// Purchase history, newest first; `month` keeps one local month; `format=csv` exports every purchase.
#[utoipa::path(get, path = "/v1/accounts/{id}/purchases", operation_id = "listPurchases", tag = "purchases", params(("id" = String, Path, description = "Account id"), ListParams), responses((status = 200, description = "Purchase history, newest first", content((super::openapi::PurchasePage = "application/json"), (String = "text/csv"))), super::openapi::ReadErrors))]
pub async fn purchases<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    Ids(id): Ids<String>,
    Q(q): Q<ListParams>,
) -> Result<Response, ApiError> {
    let id = account_id(&id)?;
    caller.may_access(&id)?;
    let month =
        q.month.as_deref().map(Month::parse).transpose().map_err(|e| ApiError::bad_request(e.to_string()))?;
    if q.format == Some(ListFormat::Csv) {
        let (ledger, account) = (st.ledger.clone(), id.clone());
        let fetch = move |req| {
            let (ledger, account) = (ledger.clone(), account.clone());
            async move { ledger.purchases(&account, month, req).await }
        };
        return super::csv_export(&format!("purchases-{id}"), q.cursor, q.limit, fetch).await;
    }
    Ok(Json(st.ledger.purchases(&id, month, q.page()?).await.map_err(super::list_error)?).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundPurchaseBody {
    #[serde(default)]
    pub credits: Option<Credits>,
}

/// Refund unused purchased credits.
///
/// Takes back unused credits of a purchase (default: all unused); before billing its line shrinks, after billing a negative line goes on the next statement.
#[utoipa::path(post, path = "/v1/accounts/{id}/purchases/{pid}/refund", operation_id = "refundPurchase", tag = "purchases", request_body(content = RefundPurchaseBody, content_type = "application/json"), params(("id" = String, Path, description = "Account id"), ("pid" = String, Path, description = "Purchase id"), ("Idempotency-Key" = crate::ledger::IdempotencyKey, Header, description = "Required: 1-255 printable ASCII; a retry with the same key and body answers the first response")), responses((status = 201, description = "Refunded unused credits", body = PurchaseRefundView, headers(("Location" = String, description = "The path of the new object (for a refund, what it refunded; for a grant, the ledger)"), ("Idempotent-Replayed" = String, description = "`true` when this answers again an earlier request with the same key"))), super::openapi::Errors))]
pub async fn refund_purchase<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
    Ids((id, purchase_id)): Ids<(String, String)>,
    key: Key,
    Body(body): Body<RefundPurchaseBody>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let command = Command::RefundPurchase { purchase_id, credits: body.credits };
    mutate(&st, &caller, &id, key, KeyRule::Required, command, StatusCode::CREATED).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DebitBody {
    pub credits: Credits,
    #[serde(default)]
    #[schema(pattern = r"^[!-~]{1,128}$")]
    pub reference: Option<String>,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 500, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$")]
    pub description: Option<String>,
}

/// Spend credits.
///
/// One credit per text sent, free credits first, then grants, then purchased credits; all or nothing (402 when short).
#[utoipa::path(post, path = "/v1/accounts/{id}/debits", operation_id = "createDebit", tag = "spending", request_body(content = DebitBody, content_type = "application/json"), params(("id" = String, Path, description = "Account id"), ("Idempotency-Key" = crate::ledger::IdempotencyKey, Header, description = "Required: 1-255 printable ASCII; a retry with the same key and body answers the first response")), responses((status = 201, description = "Debited", body = DebitView, headers(("Location" = String, description = "The path of the new object (for a refund, what it refunded; for a grant, the ledger)"), ("Idempotent-Replayed" = String, description = "`true` when this answers again an earlier request with the same key"))), super::openapi::Errors, super::openapi::Spending))]
pub async fn debit<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
    Ids(id): Ids<String>,
    key: Key,
    Body(body): Body<DebitBody>,
) -> Result<Response, ApiError> {
    let command =
        Command::Debit { credits: body.credits, reference: body.reference, description: body.description };
    mutate(&st, &caller, &id, key, KeyRule::Required, command, StatusCode::CREATED).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditsBody {
    pub credits: Credits,
}

/// Refund undelivered messages.
///
/// Gives back credits of a debit (or a capture) for messages that were not delivered.
#[utoipa::path(post, path = "/v1/accounts/{id}/debits/{did}/refund", operation_id = "refundDebit", tag = "spending", request_body(content = CreditsBody, content_type = "application/json"), params(("id" = String, Path, description = "Account id"), ("did" = String, Path, description = "Debit id"), ("Idempotency-Key" = crate::ledger::IdempotencyKey, Header, description = "Required: 1-255 printable ASCII; a retry with the same key and body answers the first response")), responses((status = 201, description = "Credits of undelivered messages given back", body = DebitRefundView, headers(("Location" = String, description = "The path of the new object (for a refund, what it refunded; for a grant, the ledger)"), ("Idempotent-Replayed" = String, description = "`true` when this answers again an earlier request with the same key"))), super::openapi::Errors))]
pub async fn refund_debit<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
    Ids((id, debit_id)): Ids<(String, String)>,
    key: Key,
    Body(body): Body<CreditsBody>,
) -> Result<Response, ApiError> {
    let command = Command::RefundDebit { debit_id, credits: body.credits };
    mutate(&st, &caller, &id, key, KeyRule::Required, command, StatusCode::CREATED).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldBody {
    pub credits: Credits,
    #[serde(default)]
    #[schema(pattern = r"^[!-~]{1,128}$")]
    pub reference: Option<String>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 2_592_000)]
    pub ttl_seconds: Option<i64>,
}

/// Hold credits for a campaign.
///
/// Reserves credits until captured, released or expired (ttl_seconds).
#[utoipa::path(post, path = "/v1/accounts/{id}/holds", operation_id = "createHold", tag = "spending", request_body(content = HoldBody, content_type = "application/json"), params(("id" = String, Path, description = "Account id"), ("Idempotency-Key" = crate::ledger::IdempotencyKey, Header, description = "Required: 1-255 printable ASCII; a retry with the same key and body answers the first response")), responses((status = 201, description = "Held", body = HoldView, headers(("Location" = String, description = "The path of the new object (for a refund, what it refunded; for a grant, the ledger)"), ("Idempotent-Replayed" = String, description = "`true` when this answers again an earlier request with the same key"))), super::openapi::Errors, super::openapi::Spending))]
pub async fn hold<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
    Ids(id): Ids<String>,
    key: Key,
    Body(body): Body<HoldBody>,
) -> Result<Response, ApiError> {
    let command =
        Command::Hold { credits: body.credits, reference: body.reference, ttl_seconds: body.ttl_seconds };
    mutate(&st, &caller, &id, key, KeyRule::Required, command, StatusCode::CREATED).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureBody {
    /// Credits actually sent: 0 up to the credits held.
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub credits: i64,
}

/// Capture a hold.
///
/// Spends the credits actually sent (at most those held) as a debit; the rest is released.
#[utoipa::path(post, path = "/v1/accounts/{id}/holds/{hid}/capture", operation_id = "captureHold", tag = "spending", request_body(content = CaptureBody, content_type = "application/json"), params(("id" = String, Path, description = "Account id"), ("hid" = String, Path, description = "Hold id"), ("Idempotency-Key" = Option<crate::ledger::IdempotencyKey>, Header, nullable = false, description = "Optional: 1-255 printable ASCII; a retry with the same key and body answers the first response")), responses((status = 200, description = "Captured; the rest released", body = HoldView), super::openapi::Errors))]
pub async fn capture<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
    Ids((id, hold_id)): Ids<(String, String)>,
    key: Key,
    Body(body): Body<CaptureBody>,
) -> Result<Response, ApiError> {
    let command = Command::Capture { hold_id, credits: body.credits };
    mutate(&st, &caller, &id, key, KeyRule::Optional, command, StatusCode::OK).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// Release a hold.
///
/// Gives every held credit back.
#[utoipa::path(post, path = "/v1/accounts/{id}/holds/{hid}/release", operation_id = "releaseHold", tag = "spending", params(("id" = String, Path, description = "Account id"), ("hid" = String, Path, description = "Hold id"), ("Idempotency-Key" = Option<crate::ledger::IdempotencyKey>, Header, nullable = false, description = "Optional: 1-255 printable ASCII; a retry with the same key and body answers the first response")), responses((status = 200, description = "Released", body = HoldView), super::openapi::Errors))]
pub async fn release<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
    Ids((id, hold_id)): Ids<(String, String)>,
    key: Key,
    Body(Empty {}): Body<Empty>,
) -> Result<Response, ApiError> {
    mutate(&st, &caller, &id, key, KeyRule::Optional, Command::Release { hold_id }, StatusCode::OK).await
}

/// Get a purchase.
#[utoipa::path(get, path = "/v1/accounts/{id}/purchases/{pid}", operation_id = "getPurchase", tag = "purchases", params(("id" = String, Path, description = "Account id"), ("pid" = String, Path, description = "Purchase id")), responses((status = 200, description = "The purchase", body = PurchaseView), super::openapi::ReadErrors))]
pub async fn show_purchase<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
    Ids((id, purchase_id)): Ids<(String, String)>,
) -> Result<Response, ApiError> {
    let id = account_id(&id)?;
    caller.may_access(&id)?;
    Ok(Json(st.ledger.purchase(&id, &purchase_id, st.clock.now()).await?).into_response())
}

/// Get a debit.
///
/// A debit, or the capture of a hold (with `hold_id`).
#[utoipa::path(get, path = "/v1/accounts/{id}/debits/{did}", operation_id = "getDebit", tag = "spending", params(("id" = String, Path, description = "Account id"), ("did" = String, Path, description = "Debit id")), responses((status = 200, description = "The debit", body = DebitView), super::openapi::ReadErrors))]
pub async fn show_debit<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
    Ids((id, debit_id)): Ids<(String, String)>,
) -> Result<Response, ApiError> {
    let id = account_id(&id)?;
    caller.may_access(&id)?;
    Ok(Json(st.ledger.debit(&id, &debit_id, st.clock.now()).await?).into_response())
}

/// `cursor`, `limit` and `reference` of the debits list.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DebitListParams {
    /// The `next_cursor` of the previous page.
    #[param(min_length = 1)]
    pub cursor: Option<String>,
    /// Items per page, 1-500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Only debits with this reference (1-128 printable ASCII).
    #[param(pattern = r"^[!-~]{1,128}$")]
    pub reference: Option<String>,
}

/// List debits.
///
/// Debits, newest first, captures of holds included; `reference` keeps those that carry it.
#[utoipa::path(get, path = "/v1/accounts/{id}/debits", operation_id = "listDebits", tag = "spending", params(("id" = String, Path, description = "Account id"), DebitListParams), responses((status = 200, description = "Debits, newest first, captures of holds included", body = super::openapi::DebitPage), super::openapi::ReadErrors))]
pub async fn debits<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    Ids(id): Ids<String>,
    Q(q): Q<DebitListParams>,
) -> Result<Response, ApiError> {
    let id = account_id(&id)?;
    caller.may_access(&id)?;
    let page = super::page_of(&q.cursor, q.limit)?;
    let list = st.ledger.debits(&id, q.reference.as_deref(), page).await.map_err(super::list_error)?;
    Ok(Json(list).into_response())
}

/// `cursor`, `limit` and `status` of the holds list.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HoldListParams {
    /// The `next_cursor` of the previous page.
    #[param(min_length = 1)]
    pub cursor: Option<String>,
    /// Items per page, 1-500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Only holds in this status.
    #[param(inline)]
    pub status: Option<HoldStatus>,
}

/// List holds.
///
/// Holds, newest first; `status` keeps one status.
#[utoipa::path(get, path = "/v1/accounts/{id}/holds", operation_id = "listHolds", tag = "spending", params(("id" = String, Path, description = "Account id"), HoldListParams), responses((status = 200, description = "Holds, newest first", body = super::openapi::HoldPage), super::openapi::ReadErrors))]
pub async fn holds<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    Ids(id): Ids<String>,
    Q(q): Q<HoldListParams>,
) -> Result<Response, ApiError> {
    let id = account_id(&id)?;
    caller.may_access(&id)?;
    let page = super::page_of(&q.cursor, q.limit)?;
    Ok(Json(st.ledger.holds(&id, q.status, page, st.clock.now()).await.map_err(super::list_error)?)
        .into_response())
}

/// Get a hold.
#[utoipa::path(get, path = "/v1/accounts/{id}/holds/{hid}", operation_id = "getHold", tag = "spending", params(("id" = String, Path, description = "Account id"), ("hid" = String, Path, description = "Hold id")), responses((status = 200, description = "The hold", body = HoldView), super::openapi::ReadErrors))]
pub async fn show_hold<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
    Ids((id, hold_id)): Ids<(String, String)>,
) -> Result<Response, ApiError> {
    let id = account_id(&id)?;
    caller.may_access(&id)?;
    Ok(Json(st.ledger.hold(&id, &hold_id, st.clock.now()).await?).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    pub credits: Credits,
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
    #[schema(min_length = 1, max_length = 500, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$")]
    pub reason: String,
}

/// Grant credits.
///
/// Promotional credits, optionally expiring; spent after the free credits and before purchased ones.
#[utoipa::path(post, path = "/v1/accounts/{id}/grants", operation_id = "createGrant", tag = "spending", request_body(content = GrantBody, content_type = "application/json"), params(("id" = String, Path, description = "Account id"), ("Idempotency-Key" = crate::ledger::IdempotencyKey, Header, description = "Required: 1-255 printable ASCII; a retry with the same key and body answers the first response")), responses((status = 201, description = "Granted", body = GrantView, headers(("Location" = String, description = "The path of the new object (for a refund, what it refunded; for a grant, the ledger)"), ("Idempotent-Replayed" = String, description = "`true` when this answers again an earlier request with the same key"))), super::openapi::Errors))]
pub async fn grant<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
    Ids(id): Ids<String>,
    key: Key,
    Body(body): Body<GrantBody>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let command = Command::Grant { credits: body.credits, expires_at: body.expires_at, reason: body.reason };
    mutate(&st, &caller, &id, key, KeyRule::Required, command, StatusCode::CREATED).await
}

/// List ledger entries.
///
/// The append-only ledger, newest first, each entry with the balance after it; `format=csv` exports every entry.
#[utoipa::path(get, path = "/v1/accounts/{id}/ledger", operation_id = "listLedgerEntries", tag = "spending", params(("id" = String, Path, description = "Account id"), PageParams), responses((status = 200, description = "Ledger entries, newest first", content((super::openapi::EntryPage = "application/json"), (String = "text/csv"))), super::openapi::ReadErrors))]
pub async fn ledger<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    Ids(id): Ids<String>,
    Q(q): Q<PageParams>,
) -> Result<Response, ApiError> {
    let id = account_id(&id)?;
    caller.may_access(&id)?;
    if q.format == Some(ListFormat::Csv) {
        let (ledger, account) = (st.ledger.clone(), id.clone());
        let fetch = move |req| {
            let (ledger, account) = (ledger.clone(), account.clone());
            async move { ledger.entries(&account, req).await }
        };
        return super::csv_export(&format!("ledger-{id}"), q.cursor, q.limit, fetch).await;
    }
    let page = super::page_of(&q.cursor, q.limit)?;
    Ok(Json(st.ledger.entries(&id, page).await.map_err(super::list_error)?).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    /// First month, YYYY-MM (default: this month).
    #[param(value_type = Option<Month>)]
    pub from: Option<String>,
    /// Last month, YYYY-MM (default: this month, or `from` if later); at most 120 months from `from`.
    #[param(value_type = Option<Month>)]
    pub to: Option<String>,
}

/// Usage per month.
///
/// Free, purchased, granted, used, expired and refunded credits per local month of `from`..`to`.
#[utoipa::path(get, path = "/v1/accounts/{id}/usage", operation_id = "getUsage", tag = "spending", params(("id" = String, Path, description = "Account id"), UsageParams), responses((status = 200, description = "Usage per month", body = super::openapi::UsagePage), super::openapi::ReadErrors))]
pub async fn usage<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    Ids(id): Ids<String>,
    Q(q): Q<UsageParams>,
) -> Result<Response, ApiError> {
    let id = account_id(&id)?;
    caller.may_access(&id)?;
    let parse = |m: &Option<String>| {
        m.as_deref().map(Month::parse).transpose().map_err(|e| ApiError::bad_request(e.to_string()))
    };
    let (from, to) = (parse(&q.from)?, parse(&q.to)?);
    let rows = st.ledger.usage(&id, from, to, st.clock.now()).await?;
    Ok(Json(serde_json::json!({"data": rows, "next_cursor": null})).into_response())
}
