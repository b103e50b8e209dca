//! The HTTP API v1 (API.md) over the ledger: axum routes, auth, errors as
//! problem+json, idempotency headers, the test clock, metrics, health and
//! the OpenAPI document.
//!
//! Architecture invariant: only this module knows axum and HTTP. Handlers
//! parse, authorize, call one ledger method and shape the answer; they
//! decide no rule. Each route module exports `routes()`, its handlers with
//! their OpenAPI operations; [`app`] merges them into the whole router so
//! tests can serve it, and the document is built from the same routers.

mod accounts;
mod auth;
mod batch;
mod billing;
mod clock;
pub mod cors;
mod error;
mod events;
mod extract;
mod listen;
mod metrics;
mod openapi;
mod ops;
mod serve;
mod spending;
mod webhooks;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa_axum::router::OpenApiRouter;

pub use auth::{Auth, Caller};
pub use batch::MAX_BATCH_OPERATIONS;
pub use clock::{Clock, system_now};
pub use error::{ApiError, ErrorCode};
pub use extract::MAX_BODY_BYTES;
pub use listen::{DEFAULT_MAX_CONNECTIONS, MAX_MAX_CONNECTIONS};
pub use metrics::Metrics;
pub use serve::{LogFormat, ServeConfig, init_logging, serve};

use crate::ledger::{Executed, Ledger, PageRequest, Store};

/// Longest a request may take before it answers 503 (the client retries
/// with the same idempotency key; an operation already queued still
/// commits once).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything a handler needs; cheap to clone.
pub struct AppState<S> {
    pub ledger: Ledger<S>,
    pub auth: Arc<Auth>,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
}

impl<S: Clone> Clone for AppState<S> {
    fn clone(&self) -> Self {
        AppState {
            ledger: self.ledger.clone(),
            auth: self.auth.clone(),
            clock: self.clock.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// `cursor`, `limit` and `month` of the purchase and statement lists.
/// Every query string names only the parameters its route documents: an
/// unknown one is a 400, as an unknown body field is.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// The `next_cursor` of the previous page.
    #[param(min_length = 1)]
    pub cursor: Option<String>,
    /// Items per page, 1-500 (default 50); not with `format=csv`, which answers every item.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Only this month, YYYY-MM.
    #[param(value_type = Option<crate::domain::period::Month>)]
    pub month: Option<String>,
    /// `csv`: every item (from `cursor` when given), streamed.
    #[param(inline)]
    pub format: Option<ListFormat>,
}

impl ListParams {
    fn page(&self) -> Result<PageRequest, ApiError> {
        page_of(&self.cursor, self.limit)
    }
}

/// `json` (a page, the default) or `csv` (a header row, RFC 4180 quoting,
/// every item, streamed a page at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ListFormat {
    Json,
    Csv,
}

/// The answer of a list asked for as CSV: every item `fetch` pages
/// through, streamed, as `{name}.csv`. `limit` does not apply (it is
/// refused rather than ignored).
async fn csv_export<T, F, Fut>(
    name: &str,
    cursor: Option<String>,
    limit: Option<i64>,
    fetch: F,
) -> Result<Response, ApiError>
where
    T: crate::ledger::export::CsvRows + Send + 'static,
    F: FnMut(PageRequest) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<crate::domain::view::Page<T>, crate::ledger::LedgerError>>
        + Send
        + 'static,
{
    use futures_util::TryStreamExt as _;
    if limit.is_some() {
        return Err(ApiError::bad_request("format=csv answers every item: leave out limit"));
    }
    let stream = crate::ledger::export::stream(crate::ledger::export::Format::Csv, cursor, fetch)
        .await
        .map_err(list_error)?
        .map_err(|e| {
            tracing::error!(error = %e, "an export failed part way; the transfer is cut short");
            std::io::Error::other(e.to_string())
        });
    let headers = [
        (axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
        (axum::http::header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}.csv\"")),
    ];
    Ok((headers, axum::body::Body::from_stream(stream)).into_response())
}

/// `cursor`, `limit` and `format` (the ledger).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    /// The `next_cursor` of the previous page.
    #[param(min_length = 1)]
    pub cursor: Option<String>,
    /// Items per page, 1-500 (default 50); not with `format=csv`, which answers every item.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `csv`: every entry (from `cursor` when given), streamed.
    #[param(inline)]
    pub format: Option<ListFormat>,
}

/// A bad `limit` is a bad query string: 400, as every other bad query
/// value (an unusable cursor, found by the store, is a 400 too: see
/// [`list_error`]).
fn page_of(cursor: &Option<String>, limit: Option<i64>) -> Result<PageRequest, ApiError> {
    PageRequest::new(cursor.clone(), limit).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Errors of list reads: anything invalid came from the query string, so
/// it is a 400 like every other bad query value.
fn list_error(e: crate::ledger::LedgerError) -> ApiError {
    match e {
        crate::ledger::LedgerError::Domain(crate::domain::DomainError::Invalid(why)) => {
            ApiError::bad_request(why)
        }
        other => other.into(),
    }
}

/// How a mutation route treats `Idempotency-Key`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyRule {
    /// Purchases, debits, holds, refunds, grants: refused without one (API.md).
    Required,
    Optional,
}

/// An account's mutation, as every such route runs it: the account from
/// the path, the caller's access to it, the key, one ledger call, the
/// answer (`status` when first applied).
async fn mutate<S: Store>(
    st: &AppState<S>,
    caller: &auth::Caller,
    account: &str,
    key: extract::Key,
    rule: KeyRule,
    command: crate::domain::command::Command,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let id = extract::account_id(account)?;
    caller.may_access(&id)?;
    let key = if rule == KeyRule::Required { Some(key.required()?) } else { key.0 };
    let done = st.ledger.execute(&id, command, key, st.clock.now()).await?;
    Ok(executed(st, done, status))
}

/// The answer of a mutation: its body, the status of a first answer (a
/// 201 with `Location`), and `Idempotent-Replayed: true` on a replay.
fn executed<S>(st: &AppState<S>, done: Executed, status: StatusCode) -> Response {
    st.metrics.record_tally(&done.tally);
    let mut response = (status, axum::Json(done.outcome.body())).into_response();
    if status == StatusCode::CREATED
        && let Some(path) = location(&done.outcome)
    {
        created_at(&mut response, &path);
    }
    if done.replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// Where a created object is read: its own path, or for the objects that
/// have none (refunds, grants) the path of what they changed.
fn location(outcome: &crate::domain::command::Outcome) -> Option<String> {
    use crate::domain::command::Outcome;
    let acct = |a: &str| format!("/v1/accounts/{a}");
    Some(match outcome {
        Outcome::Account(a) => acct(&a.id),
        Outcome::Purchase(p) => format!("{}/purchases/{}", acct(&p.account_id), p.id),
        Outcome::PurchaseRefund(r) => format!("{}/purchases/{}", acct(&r.account_id), r.purchase_id),
        Outcome::Debit(d) => format!("{}/debits/{}", acct(&d.account_id), d.id),
        Outcome::DebitRefund(r) => format!("{}/debits/{}", acct(&r.account_id), r.debit_id),
        Outcome::Hold(h) => format!("{}/holds/{}", acct(&h.account_id), h.id),
        Outcome::Grant(g) => format!("{}/ledger", acct(&g.account_id)),
        Outcome::Statement(s) => format!("{}/statements/{}", acct(&s.account_id), s.id),
        Outcome::Closed(_) => return None,
    })
}

/// Sets `Location` (ids are `[A-Za-z0-9_.-]`, so a path needs no escaping).
fn created_at(response: &mut Response, path: &str) {
    if let Ok(value) = HeaderValue::from_str(path) {
        response.headers_mut().insert(axum::http::header::LOCATION, value);
    }
}

/// Every documented route (API.md's, and health, metrics and the
/// document itself), each registered with its OpenAPI operation by its
/// module's `routes()`: a route is served and documented from one line,
/// never listed twice. The test clock's routes only with `test_clock`
/// ([`openapi::document`] always asks for them: they answer 404 without
/// `--test-clock`, as documented).
fn api<S: Store>(test_clock: bool) -> OpenApiRouter<AppState<S>> {
    let api = OpenApiRouter::default()
        .merge(accounts::routes())
        .merge(spending::routes())
        .merge(batch::routes())
        .merge(billing::routes())
        .merge(events::routes())
        .merge(webhooks::routes())
        .merge(ops::routes());
    if test_clock { api.merge(billing::test_clock_routes()) } else { api }
}

/// The whole application: every route of [`api`], the dashboard, the
/// fallbacks, metrics, and the request timeout.
pub fn app<S: Store>(state: AppState<S>) -> Router {
    let (api, _) = api::<S>(state.clock.is_test()).split_for_parts();
    api.merge(crate::web::router(state.clone()))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(CatchPanicLayer::custom(panicked as fn(_) -> Response))
        .layer(middleware::from_fn_with_state(state.clone(), observe::<S>))
        .with_state(state)
}

/// A handler that panicked answers 500 `internal` (never a dropped
/// connection); the panic is logged inside the request's span, so with its
/// request id.
fn panicked(payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    tracing::error!(panic = %what, "a request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Internal,
        "internal error; it has been logged",
    )
    .into_response()
}

/// Times out slow requests and records each request's route, status and
/// latency.
async fn observe<S: Store>(State(st): State<AppState<S>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    // The template the router matched, never the path the client sent.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(metrics::UNMATCHED_ROUTE.to_string(), |p| p.as_str().to_string());
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "the request timed out; retry with the same Idempotency-Key",
        )
        .into_response(),
    };
    st.metrics.record_request(&method, &route, response.status().as_u16(), started.elapsed());
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    async fn boom() -> &'static str {
        panic!("boom")
    }

    /// The server's own connection loop and panic layer around a handler
    /// that panics: the client gets a 500 problem+json, and the server goes
    /// on answering on the same connection.
    #[tokio::test]
    async fn a_panicking_handler_answers_500_internal() {
        let router = Router::new()
            .route("/boom", get(boom))
            .route("/fine", get(|| async { "fine" }))
            .layer(CatchPanicLayer::custom(panicked as fn(_) -> Response));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(listen::run(listener, router, 8, async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::new();
        let boom = client.get(format!("http://{addr}/boom")).send().await.expect("an answer, not a reset");
        assert_eq!(boom.status(), 500);
        assert_eq!(boom.headers()["content-type"], "application/problem+json");
        let body: serde_json::Value = boom.json().await.unwrap();
        assert_eq!(body["code"], "internal", "{body}");
        let fine = client.get(format!("http://{addr}/fine")).send().await.unwrap();
        assert_eq!(fine.text().await.unwrap(), "fine");
        stop.send(()).unwrap();
        server.await.unwrap();
    }
}
