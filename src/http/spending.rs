//! Per-account money and credit routes: purchases, debits, holds, grants,
//! refunds, the ledger and usage reports.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::Deserialize;

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{Body, Key, Q, account_id};
use super::{AppState, ListParams, executed};
use crate::domain::command::Command;
use crate::domain::credits::Credits;
use crate::domain::period::{Month, Zone};
use crate::ledger::Store;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurchaseBody {
    pub credits: Credits,
}

pub async fn purchase<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    Path(id): Path<String>,
    key: Key,
    Body(body): Body<PurchaseBody>,
) -> Result<Response, ApiError> {
    let id = account_id(&id)?;
    caller.may_access(&id)?;
    let key = key.required()?;
    let done = st
        .ledger
        .execute(
            &id,
            Command::Purchase {
                credits: body.credits,
            },
            Some(key),
            st.clock.now(),
        )
        .await?;
    Ok(executed(&st, done, StatusCode::CREATED))
}

pub async fn purchases<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    Path(id): Path<String>,
    Q(q): Q<ListParams>,
) -> Result<Response, ApiError> {
    let id = account_id(&id)?;
    caller.may_access(&id)?;
    let month = q
        .month
        .as_deref()
        .map(Month::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(Json(st.ledger.purchases(&id, month, q.page()?).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundPurchaseBody {
    #[serde(default)]
    pub credits: Option<Credits>,
}

pub async fn refund_purchase<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    Path((id, purchase_id)): Path<(String, String)>,
    key: Key,
    Body(body): Body<RefundPurchaseBody>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let id = account_id(&id)?;
    let command = Command::RefundPurchase {
        purchase_id,
        credits: body.credits,
    };
    let done = st
        .ledger
        .execute(&id, command, key.0, st.clock.now())
        .await?;
    Ok(executed(&st, done, StatusCode::CREATED))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebitBody {
    pub credits: Credits,
    #[serde(default)]
    pub reference: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

pub async fn debit<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    Path(id): Path<String>,
    key: Key,
    Body(body): Body<DebitBody>,
) -> Result<Response, ApiError> {
    let id = account_id(&id)?;
    caller.may_access(&id)?;
    let key = key.required()?;
    let command = Command::Debit {
        credits: body.credits,
        reference: body.reference,
        description: body.description,
    };
    let done = st
        .ledger
        .execute(&id, command, Some(key), st.clock.now())
        .await?;
    Ok(executed(&st, done, StatusCode::CREATED))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditsBody {
    pub credits: Credits,
}

pub async fn refund_debit<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    Path((id, debit_id)): Path<(String, String)>,
    key: Key,
    Body(body): Body<CreditsBody>,
) -> Result<Response, ApiError> {
    let id = account_id(&id)?;
    caller.may_access(&id)?;
    let command = Command::RefundDebit {
        debit_id,
        credits: body.credits,
    };
    let done = st
        .ledger
        .execute(&id, command, key.0, st.clock.now())
        .await?;
    Ok(executed(&st, done, StatusCode::CREATED))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldBody {
    pub credits: Credits,
    #[serde(default)]
    pub reference: Option<String>,
    #[serde(default)]
    pub ttl_seconds: Option<i64>,
}

pub async fn hold<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    Path(id): Path<String>,
    key: Key,
    Body(body): Body<HoldBody>,
) -> Result<Response, ApiError> {
    let id = account_id(&id)?;
    caller.may_access(&id)?;
    let key = key.required()?;
    let command = Command::Hold {
        credits: body.credits,
        reference: body.reference,
        ttl_seconds: body.ttl_seconds,
    };
    let done = st
        .ledger
        .execute(&id, command, Some(key), st.clock.now())
        .await?;
    Ok(executed(&st, done, StatusCode::CREATED))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureBody {
    pub credits: i64,
}

pub async fn capture<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    Path((id, hold_id)): Path<(String, String)>,
    key: Key,
    Body(body): Body<CaptureBody>,
) -> Result<Response, ApiError> {
    let id = account_id(&id)?;
    caller.may_access(&id)?;
    let command = Command::Capture {
        hold_id,
        credits: body.credits,
    };
    let done = st
        .ledger
        .execute(&id, command, key.0, st.clock.now())
        .await?;
    Ok(executed(&st, done, StatusCode::OK))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

pub async fn release<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    Path((id, hold_id)): Path<(String, String)>,
    key: Key,
    Body(Empty {}): Body<Empty>,
) -> Result<Response, ApiError> {
    let id = account_id(&id)?;
    caller.may_access(&id)?;
    let done = st
        .ledger
        .execute(&id, Command::Release { hold_id }, key.0, st.clock.now())
        .await?;
    Ok(executed(&st, done, StatusCode::OK))
}

pub async fn show_hold<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    Path((id, hold_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = account_id(&id)?;
    caller.may_access(&id)?;
    Ok(Json(st.ledger.hold(&id, &hold_id, st.clock.now()).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    pub credits: Credits,
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    pub reason: String,
}

pub async fn grant<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    Path(id): Path<String>,
    key: Key,
    Body(body): Body<GrantBody>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let id = account_id(&id)?;
    let command = Command::Grant {
        credits: body.credits,
        expires_at: body.expires_at,
        reason: body.reason,
    };
    let done = st
        .ledger
        .execute(&id, command, key.0, st.clock.now())
        .await?;
    Ok(executed(&st, done, StatusCode::CREATED))
}

pub async fn ledger<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    Path(id): Path<String>,
    Q(q): Q<ListParams>,
) -> Result<Response, ApiError> {
    let id = account_id(&id)?;
    caller.may_access(&id)?;
    Ok(Json(st.ledger.entries(&id, q.page()?).await?).into_response())
}

#[derive(Deserialize)]
pub struct UsageParams {
    pub from: Option<String>,
    pub to: Option<String>,
}

pub async fn usage<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    Path(id): Path<String>,
    Q(q): Q<UsageParams>,
) -> Result<Response, ApiError> {
    let id = account_id(&id)?;
    caller.may_access(&id)?;
    let now = st.clock.now();
    let account = st.ledger.account(&id, now).await?;
    let zone = Zone::parse(&account.time_zone)?;
    let current = Month::of(now, &zone);
    let parse = |m: &Option<String>| {
        m.as_deref()
            .map(Month::parse)
            .transpose()
            .map_err(|e| ApiError::bad_request(e.to_string()))
    };
    let from = parse(&q.from)?.unwrap_or(current);
    let to = parse(&q.to)?.unwrap_or(current.max(from));
    let rows = st.ledger.usage(&id, from, to, now).await?;
    Ok(Json(serde_json::json!({"data": rows, "next_cursor": null})).into_response())
}
