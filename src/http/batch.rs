//! `POST /v1/batch`: up to [`MAX_BATCH_OPERATIONS`] debits, holds,
//! captures, releases and purchases in one request, each with its own
//! account, key and answer.
//!
//! Each operation stands alone, exactly as its own route would answer it,
//! because it *is* answered by its own route: the batch checks each
//! operation's envelope (refusing the whole batch if one is not an
//! operation), then turns each into the request a client would have sent
//! (`POST /v1/accounts/{account_id}/debits` with the caller's
//! `Authorization`, its `Idempotency-Key` and the rest of its fields as
//! the body) and runs it through the application's router in process
//! (so each also counts in the metrics as a request to its route). What
//! differs is only the transport: one connection, one body, one answer.
//! Operations of one account run in their order, one after the other (a
//! capture may follow its hold); different accounts run at once, so the
//! store groups them into few transactions. A batch that outlives the
//! request timeout answers 503 while its operations still commit: sent
//! again with the same keys, each answers what it first answered.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Request};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tower::ServiceExt as _;
use utoipa_axum::router::OpenApiRouter;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::extract::{LargeBody, NoQuery};
use crate::ledger::Store;

/// Most operations in one batch.
pub const MAX_BATCH_OPERATIONS: usize = 1_000;

/// The batch route's own body limit: a thousand operations of up to a
/// kilobyte each (every other route takes 64 KiB).
pub const MAX_BATCH_BODY_BYTES: usize = 1024 * 1024;

pub fn routes<S: Store>() -> OpenApiRouter<AppState<S>> {
    OpenApiRouter::default().routes(utoipa_axum::routes!(batch))
}

/// What an operation does: the route it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchOp {
    /// `POST /v1/accounts/{account_id}/debits`
    Debit,
    /// `POST /v1/accounts/{account_id}/holds`
    Hold,
    /// `POST /v1/accounts/{account_id}/holds/{hold_id}/capture`
    Capture,
    /// `POST /v1/accounts/{account_id}/holds/{hold_id}/release`
    Release,
    /// `POST /v1/accounts/{account_id}/purchases`
    Purchase,
}

impl BatchOp {
    const NAMES: &str = "debit, hold, capture, release or purchase";

    fn parse(s: &str) -> Option<BatchOp> {
        serde_json::from_value(Value::String(s.to_string())).ok()
    }

    fn needs_hold(self) -> bool {
        matches!(self, BatchOp::Capture | BatchOp::Release)
    }

    fn path(self, account: &str, hold: &str) -> String {
        let a = format!("/v1/accounts/{}", escape(account));
        match self {
            BatchOp::Debit => format!("{a}/debits"),
            BatchOp::Hold => format!("{a}/holds"),
            BatchOp::Capture => format!("{a}/holds/{}/capture", escape(hold)),
            BatchOp::Release => format!("{a}/holds/{}/release", escape(hold)),
            BatchOp::Purchase => format!("{a}/purchases"),
        }
    }
}

/// One operation: where it goes, its key, and the fields of its route's
/// body (`credits`, `reference`, `description`, `ttl_seconds`), which its
/// route checks as it checks its own body.
#[derive(Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct BatchOperation {
    pub account_id: String,
    #[schema(inline)]
    pub op: BatchOp,
    /// As the route's `Idempotency-Key` header (required where the route
    /// requires it).
    #[schema(value_type = Option<crate::ledger::IdempotencyKey>)]
    pub idempotency_key: Option<String>,
    /// The hold of a `capture` or `release`.
    pub hold_id: Option<String>,
    /// The rest of the operation's fields: its route's body.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub body: Map<String, Value>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct BatchBody {
    /// 1 to 1,000 operations, answered in this order.
    #[schema(min_items = 1, max_items = 1000)]
    pub operations: Vec<BatchOperation>,
}

/// One operation's answer: the status and body its own route answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchResult {
    pub status: u16,
    /// The route's JSON body: the object, or a problem.
    #[schema(value_type = Object)]
    pub body: Value,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchResults {
    /// One per operation, in the order sent.
    pub results: Vec<BatchResult>,
}

/// The errors of the batch itself (an operation's are in its result).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum BatchErrors {
    /// Malformed JSON.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(super::openapi::Problem),
    /// Missing or unknown bearer token.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(super::openapi::Problem),
    /// The body did not arrive within 10 seconds of the headers.
    #[response(status = 408, content_type = "application/problem+json")]
    TooSlow(super::openapi::Problem),
    /// Body larger than 1 MiB.
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(super::openapi::Problem),
    /// Body not sent as application/json.
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(super::openapi::Problem),
    /// Not `{"operations": [...]}` with 1 to 1,000 operations, each an
    /// object with a string `account_id`, a known `op`, a string or null
    /// `hold_id` and a well-formed `idempotency_key`.
    #[response(status = 422, content_type = "application/problem+json")]
    Invalid(super::openapi::Problem),
    /// The request timed out: retry (each operation with its key).
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(super::openapi::Problem),
}

/// Run operations in one request.
///
/// Up to 1,000 debits, holds, captures, releases and purchases, each on its own account with its own key, each answered with the status and body its own route would answer (a refused one refuses only itself). Operations of one account run in their order; the answer is 200 whenever the batch itself is well formed.
#[utoipa::path(post, path = "/v1/batch", operation_id = "createBatch", tag = "spending", request_body(content = BatchBody, content_type = "application/json"), responses((status = 200, description = "Each operation's answer, in order", body = BatchResults), BatchErrors))]
pub async fn batch<S: Store>(
    State(st): State<AppState<S>>,
    _caller: Caller,
    _: NoQuery,
    headers: HeaderMap,
    LargeBody(body): LargeBody,
) -> Result<Response, ApiError> {
    let operations = operations_of(body)?;
    let auth = headers.get(axum::http::header::AUTHORIZATION).cloned();
    let router = super::app(st.clone());
    // Each account's operations in order, the accounts at once.
    let mut by_account: BTreeMap<String, Vec<(usize, Operation)>> = BTreeMap::new();
    let n = operations.len();
    for (i, op) in operations.into_iter().enumerate() {
        by_account.entry(op.account.clone()).or_default().push((i, op));
    }
    let runs = by_account.into_values().map(|ops| {
        let router = router.clone();
        let auth = auth.clone();
        async move {
            let mut out = Vec::with_capacity(ops.len());
            for (i, op) in ops {
                out.push((i, run(&router, op, auth.as_ref()).await));
            }
            out
        }
    });
    let mut results: Vec<Option<BatchResult>> = (0..n).map(|_| None).collect();
    for (i, result) in futures_util::future::join_all(runs).await.into_iter().flatten() {
        results[i] = Some(result);
    }
    let results = results.into_iter().map(|r| r.expect("every operation is answered")).collect();
    Ok(Json(BatchResults { results }).into_response())
}

/// An operation whose envelope is checked: where it goes and its key; its
/// route checks the body.
struct Operation {
    account: String,
    op: BatchOp,
    /// A capture's or release's hold (`None`: not given, answered 400).
    hold: Option<String>,
    key: Option<HeaderValue>,
    body: Map<String, Value>,
}

/// The operations of a body `{"operations": [...]}`, each envelope
/// checked as the schema states it (an object with a string `account_id`,
/// a known `op`, a string or null `hold_id`, a well-formed
/// `idempotency_key`): a batch with one that is not is refused whole,
/// before anything runs. What the schema cannot state (a capture without
/// its hold) is that operation's own 400.
fn operations_of(body: Value) -> Result<Vec<Operation>, ApiError> {
    let Value::Object(mut top) = body else {
        return Err(ApiError::invalid("the body must be a JSON object: {\"operations\": [...]}"));
    };
    let operations = top.shift_remove("operations");
    if let Some(field) = top.keys().next() {
        return Err(ApiError::invalid(format!(
            "unknown field {field:?}: the body is {{\"operations\": [...]}}"
        )));
    }
    let Some(Value::Array(operations)) = operations else {
        return Err(ApiError::invalid("\"operations\" must be a list of operations"));
    };
    if operations.is_empty() || operations.len() > MAX_BATCH_OPERATIONS {
        return Err(ApiError::invalid(format!(
            "a batch holds 1 to {MAX_BATCH_OPERATIONS} operations, got {}",
            operations.len()
        )));
    }
    operations
        .into_iter()
        .enumerate()
        .map(|(i, op)| envelope(op).map_err(|why| ApiError::invalid(format!("operation {i}: {why}"))))
        .collect()
}

fn envelope(op: Value) -> Result<Operation, String> {
    // `shift_remove` keeps the other fields in the order sent, so the
    // route reads the body as the client wrote it (its problems point at
    // the same columns).
    let Value::Object(mut fields) = op else {
        return Err("each operation must be a JSON object".into());
    };
    let Some(Value::String(account)) = fields.shift_remove("account_id") else {
        return Err("\"account_id\" must be a string".into());
    };
    let op = match fields.shift_remove("op") {
        Some(Value::String(name)) => {
            BatchOp::parse(&name).ok_or_else(|| format!("unknown op {name:?}: {}", BatchOp::NAMES))?
        }
        _ => return Err(format!("\"op\" must be {}", BatchOp::NAMES)),
    };
    // A capture's or release's hold is in its path; any other operation's
    // `hold_id` stays in its body, for its route to refuse.
    let hold = match fields.get("hold_id") {
        None | Some(Value::Null | Value::String(_)) if !op.needs_hold() => None,
        None | Some(Value::Null) => None,
        Some(Value::String(h)) => {
            let h = h.clone();
            fields.shift_remove("hold_id");
            Some(h)
        }
        Some(_) => return Err("\"hold_id\" must be a string".into()),
    };
    let key = match fields.shift_remove("idempotency_key") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => {
            crate::ledger::IdempotencyKey::parse(&k).map_err(|e| e.to_string())?;
            if k.trim_matches(' ') != k {
                return Err("an idempotency key neither begins nor ends with a space".into());
            }
            let header = HeaderValue::from_str(&k);
            Some(header.map_err(|_| "Idempotency-Key must be printable ASCII".to_string())?)
        }
        Some(_) => return Err("\"idempotency_key\" must be a string".into()),
    };
    Ok(Operation { account, op, hold, key, body: fields })
}

/// Runs one operation through its own route.
async fn run(router: &axum::Router, op: Operation, auth: Option<&HeaderValue>) -> BatchResult {
    if op.op.needs_hold() && op.hold.is_none() {
        return refused(ApiError::bad_request(
            "capture and release need \"hold_id\": the hold, as in their path",
        ));
    }
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(op.op.path(&op.account, op.hold.as_deref().unwrap_or_default()))
        .header(axum::http::header::CONTENT_TYPE, "application/json");
    if let Some(auth) = auth {
        req = req.header(axum::http::header::AUTHORIZATION, auth.clone());
    }
    if let Some(key) = op.key {
        req = req.header("idempotency-key", key);
    }
    let body = Value::Object(op.body).to_string();
    let req = match req.body(axum::body::Body::from(body)) {
        Ok(req) => req,
        Err(e) => return refused(ApiError::bad_request(format!("the operation cannot be sent: {e}"))),
    };
    let response = match router.clone().oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    answer_of(response).await
}

/// A route's answer as a result: its status and JSON body.
async fn answer_of(response: Response) -> BatchResult {
    use http_body_util::BodyExt as _;
    let status = response.status().as_u16();
    let body = match response.into_body().collect().await {
        Ok(bytes) => serde_json::from_slice(&bytes.to_bytes()).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    BatchResult { status, body }
}

fn refused(e: ApiError) -> BatchResult {
    BatchResult { status: e.status.as_u16(), body: serde_json::from_str(&e.body()).unwrap_or(Value::Null) }
}

/// Percent-encodes a path segment: every byte but `A-Z a-z 0-9 - . _ ~`.
fn escape(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(escape("cafe-1.x_y~"), "cafe-1.x_y~");
        assert_eq!(escape("a/b c"), "a%2Fb%20c");
        assert_eq!(escape("é"), "%C3%A9");
        assert_eq!(BatchOp::Capture.path("a/b", "hold_1"), "/v1/accounts/a%2Fb/holds/hold_1/capture");
    }

    #[test]
    fn ops_parse_as_serde_writes_them() {
        assert_eq!(BatchOp::parse("debit"), Some(BatchOp::Debit));
        assert_eq!(BatchOp::parse("Debit"), None);
        assert_eq!(BatchOp::parse("refund"), None);
    }
}
