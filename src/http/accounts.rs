//! `/v1/accounts`: create, list, show, configure, tokens, balance, quote.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{Body, Ids, Key, NoQuery, Q, account_id};
use super::{AppState, KeyRule, mutate};
use crate::domain::account::{AccountPatch, NewAccount};
use crate::domain::command::Command;
use crate::domain::credits::Credits;
use crate::domain::view::{AccountView, BalanceView, QuoteView};
use crate::ledger::{CreatedToken, Store, TokenInfo};

/// This module's routes, each served and documented from its handler's
/// `#[utoipa::path]` (one `routes!` per path).
pub fn routes<S: Store>() -> OpenApiRouter<AppState<S>> {
    OpenApiRouter::default()
        .routes(utoipa_axum::routes!(create, list))
        .routes(utoipa_axum::routes!(show, update))
        .routes(utoipa_axum::routes!(create_token, list_tokens))
        .routes(utoipa_axum::routes!(revoke_token))
        .routes(utoipa_axum::routes!(balance))
        .routes(utoipa_axum::routes!(quote))
}

/// Create an account.
///
/// Creates a merchant account. The same id with the same settings again answers 200 with the account; with other settings 409. Zone, currency and unit price default to the server's.
#[utoipa::path(post, path = "/v1/accounts", operation_id = "createAccount", tag = "accounts", request_body(content = NewAccount, content_type = "application/json"), responses((status = 201, description = "Created", body = AccountView, headers(("Location" = String, description = "The path of the new object (for a refund, what it refunded; for a grant, the ledger)"))), (status = 200, description = "Exists with the same settings", body = AccountView), super::openapi::Errors))]
pub async fn create<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
    Body(new): Body<NewAccount>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let (view, created) = st.ledger.create_account(new, st.clock.now()).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    let mut response = (status, Json(&view)).into_response();
    if created {
        super::created_at(&mut response, &format!("/v1/accounts/{}", view.id));
    }
    Ok(response)
}

/// `cursor`, `limit` and `q` of the accounts list.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AccountListParams {
    /// The `next_cursor` of the previous page.
    #[param(min_length = 1)]
    pub cursor: Option<String>,
    /// Items per page, 1-500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Only accounts whose id or name starts with this, ignoring case.
    #[param(min_length = 1, max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$")]
    pub q: Option<String>,
}

/// List accounts.
///
/// Accounts, newest first; `q` keeps those whose id or name starts with it (any case).
#[utoipa::path(get, path = "/v1/accounts", operation_id = "listAccounts", tag = "accounts", params(AccountListParams), responses((status = 200, description = "Accounts, newest first", body = super::openapi::AccountPage), super::openapi::ReadErrors))]
pub async fn list<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    Q(q): Q<AccountListParams>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let page = super::page_of(&q.cursor, q.limit)?;
    Ok(Json(st.ledger.accounts(page, q.q.as_deref()).await.map_err(super::list_error)?).into_response())
}

/// Get an account.
///
/// The account's settings, status and balance now.
#[utoipa::path(get, path = "/v1/accounts/{id}", operation_id = "getAccount", tag = "accounts", params(("id" = String, Path, description = "Account id")), responses((status = 200, description = "The account with its balance", body = AccountView), super::openapi::ReadErrors))]
pub async fn show<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
    Ids(id): Ids<String>,
) -> Result<Response, ApiError> {
    let id = account_id(&id)?;
    caller.may_access(&id)?;
    Ok(Json(st.ledger.account(&id, st.clock.now()).await?).into_response())
}

/// Change an account's settings.
///
/// Changes name, zone, allowance, unit price, limits and status (`closed` stops purchases, debits and holds; `active` reopens).
#[utoipa::path(patch, path = "/v1/accounts/{id}", operation_id = "updateAccount", tag = "accounts", request_body(content = AccountPatch, content_type = "application/json"), params(("id" = String, Path, description = "Account id"), ("Idempotency-Key" = Option<crate::ledger::IdempotencyKey>, Header, nullable = false, description = "Optional: 1-255 printable ASCII; a retry with the same key and body answers the first response")), responses((status = 200, description = "Updated settings", body = AccountView), super::openapi::Errors))]
pub async fn update<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
    Ids(id): Ids<String>,
    key: Key,
    Body(patch): Body<AccountPatch>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    mutate(&st, &caller, &id, key, KeyRule::Optional, Command::UpdateAccount { patch }, StatusCode::OK).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    #[schema(min_length = 1, max_length = 500, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$")]
    pub label: String,
}

/// Create an account token.
///
/// A bearer token for one account, shown once in this answer (only its hash is kept).
#[utoipa::path(post, path = "/v1/accounts/{id}/tokens", operation_id = "createAccountToken", tag = "accounts", request_body(content = TokenBody, content_type = "application/json"), params(("id" = String, Path, description = "Account id")), responses((status = 201, description = "The token, shown once (only its hash is kept)", body = CreatedToken, headers(("Location" = String, description = "The path of the new object (for a refund, what it refunded; for a grant, the ledger)"))), super::openapi::Errors))]
pub async fn create_token<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
    Ids(id): Ids<String>,
    key: Key,
    Body(body): Body<TokenBody>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    if key.0.is_some() {
        // The answer holds a secret that is stored only as a hash, so it
        // could not be replayed: refuse the key rather than ignore it.
        return Err(ApiError::bad_request(
            "token creation cannot be replayed (the token is shown once): send it without Idempotency-Key",
        ));
    }
    let id = account_id(&id)?;
    let created = st.ledger.create_token(&id, body.label, st.clock.now()).await?;
    let mut response = (StatusCode::CREATED, Json(&created)).into_response();
    super::created_at(&mut response, &format!("/v1/accounts/{id}/tokens/{}", created.id));
    Ok(response)
}

/// An account's tokens.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct TokenList {
    pub data: Vec<TokenInfo>,
    /// Always null: an account holds at most 100 tokens, all on one page.
    pub next_cursor: Option<String>,
}

/// List account tokens.
///
/// The account's tokens with their labels and last use; never their secrets.
#[utoipa::path(get, path = "/v1/accounts/{id}/tokens", operation_id = "listAccountTokens", tag = "accounts", params(("id" = String, Path, description = "Account id")), responses((status = 200, description = "The account's tokens, newest first; never their secrets", body = TokenList), super::openapi::ReadErrors))]
pub async fn list_tokens<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
    Ids(id): Ids<String>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let id = account_id(&id)?;
    let data = st.ledger.store().tokens(id).await?;
    Ok(Json(TokenList { data, next_cursor: None }).into_response())
}

/// Revoke an account token.
///
/// The token answers 401 from the next request on, on every replica.
#[utoipa::path(delete, path = "/v1/accounts/{id}/tokens/{tid}", operation_id = "revokeAccountToken", tag = "accounts", params(("id" = String, Path, description = "Account id"), ("tid" = String, Path, description = "Token id")), responses((status = 204, description = "Revoked: the token answers 401 from the next request on, on every replica"), super::openapi::ReadErrors))]
pub async fn revoke_token<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
    Ids((id, token_id)): Ids<(String, String)>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let id = account_id(&id)?;
    if st.ledger.store().revoke_token(id.clone(), token_id.clone()).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(format!("account {id} has no token {token_id}")))
    }
}

/// Get the balance.
///
/// Free, paid and granted credits, held, available, and what the next statement charges so far.
#[utoipa::path(get, path = "/v1/accounts/{id}/balance", operation_id = "getBalance", tag = "accounts", params(("id" = String, Path, description = "Account id")), responses((status = 200, description = "Balance now: free, paid and granted credits, held, available and what is unbilled", body = BalanceView), super::openapi::ReadErrors))]
pub async fn balance<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
    Ids(id): Ids<String>,
) -> Result<Response, ApiError> {
    let id = account_id(&id)?;
    caller.may_access(&id)?;
    Ok(Json(st.ledger.balance(&id, st.clock.now()).await?).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuoteBody {
    pub credits: Credits,
}

/// Quote a campaign.
///
/// Can this many texts go out now, from which credits, and what would the shortfall cost? Changes nothing.
#[utoipa::path(post, path = "/v1/accounts/{id}/quote", operation_id = "quoteCampaign", tag = "spending", request_body(content = QuoteBody, content_type = "application/json"), params(("id" = String, Path, description = "Account id")), responses((status = 200, description = "Whether the campaign is covered; changes nothing", body = QuoteView), super::openapi::Errors))]
pub async fn quote<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
    Ids(id): Ids<String>,
    Body(body): Body<QuoteBody>,
) -> Result<Response, ApiError> {
    let id = account_id(&id)?;
    caller.may_access(&id)?;
    Ok(Json(st.ledger.quote(&id, body.credits, st.clock.now()).await?).into_response())
}
