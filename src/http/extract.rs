//! Request parts, parsed strictly and failing as problem+json: JSON bodies
//! (size-limited, `application/json` only, unknown fields refused), query
//! strings, and the `Idempotency-Key` header.

use super::error::ErrorCode;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::domain::account::AccountId;
use crate::ledger::IdempotencyKey;

/// Largest request body, in bytes. Every request body of the API is a few
/// hundred bytes; anything bigger is a mistake or an attack.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON body. An empty body reads as `{}` (routes whose fields are all
/// optional need no body).
pub struct Body<T>(pub T);

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Body<T>, ApiError> {
        let content_type =
            req.headers().get(CONTENT_TYPE).map(|v| v.to_str().unwrap_or("invalid").to_string());
        let bytes = read_limited(req.into_body(), MAX_BODY_BYTES).await?;
        let empty = bytes.iter().all(u8::is_ascii_whitespace);
        if !empty && !content_type.as_deref().is_some_and(is_json) {
            return Err(not_json());
        }
        parse_object(if empty { b"{}" } else { &bytes }).map(Body)
    }
}

/// The JSON body of `POST /v1/batch`: an object (any shape: the batch
/// checks its operations), up to [`super::batch::MAX_BATCH_BODY_BYTES`].
pub struct LargeBody(pub serde_json::Value);

impl<S: Send + Sync> FromRequest<S> for LargeBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<LargeBody, ApiError> {
        let content_type =
            req.headers().get(CONTENT_TYPE).map(|v| v.to_str().unwrap_or("invalid").to_string());
        let bytes = read_limited(req.into_body(), super::batch::MAX_BATCH_BODY_BYTES).await?;
        if !content_type.as_deref().is_some_and(is_json) {
            return Err(not_json());
        }
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
        Ok(LargeBody(value))
    }
}

fn not_json() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::InvalidRequest,
        "send the body as JSON with Content-Type: application/json",
    )
}

/// Most bytes read (and thrown away) from a body that is too large before
/// the 413 goes out, so an ordinary client reads the answer instead of a
/// reset connection. Beyond it the connection is simply closed.
const MAX_DRAINED_BYTES: usize = 4 * 1024 * 1024;

/// Longest a request body may take to arrive, from the end of its headers:
/// a body trickled in more slowly answers 408 and the connection closes.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn read_limited(body: axum::body::Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    match tokio::time::timeout(BODY_READ_TIMEOUT, read_all(body, limit)).await {
        Ok(read) => read,
        Err(_) => {
            let mut e = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                ErrorCode::InvalidRequest,
                format!("the request body did not arrive within {} seconds", BODY_READ_TIMEOUT.as_secs()),
            );
            e.close_connection = true;
            Err(e)
        }
    }
}

async fn read_all(mut body: axum::body::Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    use http_body_util::BodyExt as _;
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ApiError::bad_request("the request body could not be read"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen <= limit {
            kept.extend_from_slice(&data);
        } else if seen > MAX_DRAINED_BYTES {
            break;
        }
    }
    if seen > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::InvalidRequest,
            format!("request body larger than {limit} bytes"),
        ));
    }
    Ok(kept)
}

/// Every request body of the API is a JSON object whose only arrays are
/// lists of strings (a webhook endpoint's event types): serde would fill
/// a struct from any other array field by field, in order, which nobody
/// means (`[500]` is not a purchase of 500 credits).
fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::invalid("the body must be a JSON object"));
    }
    if has_array(&value) {
        return Err(ApiError::invalid("no field of this API takes an array other than a list of strings"));
    }
    // From the bytes again, not the value: serde then refuses a field given
    // twice, which a parsed value has already resolved to the last one.
    serde_json::from_slice(bytes).map_err(|e| ApiError::invalid(format!("invalid body: {e}")))
}

fn has_array(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Array(items) => !items.iter().all(serde_json::Value::is_string),
        serde_json::Value::Object(m) => m.values().any(has_array),
        _ => false,
    }
}

/// Ids in the path. One that cannot even be decoded names nothing: 404.
pub struct Ids<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Ids<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Ids<T>, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(t)| Ids(t))
            .map_err(|e| ApiError::not_found(format!("no such resource: {}", e.body_text())))
    }
}

/// A query string. Bad values are 400, and so are unknown parameters
/// where the route's parameters say `deny_unknown_fields` (all of them do).
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Q<T>, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(q)| Q(q))
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {}", e.body_text())))
    }
}

/// A route that takes no query parameters: any query string is refused
/// (400), as an unknown body field is, so a parameter a client believes in
/// (`?dry_run=1`) never goes unnoticed.
pub struct NoQuery;

impl<S: Send + Sync> FromRequestParts<S> for NoQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<NoQuery, ApiError> {
        match parts.uri.query() {
            None | Some("") => Ok(NoQuery),
            Some(q) => Err(ApiError::bad_request(format!(
                "this route takes no query parameters, got {:?}",
                q.chars().take(100).collect::<String>()
            ))),
        }
    }
}

/// The `Idempotency-Key` header, when sent.
pub struct Key(pub Option<IdempotencyKey>);

impl<S: Send + Sync> FromRequestParts<S> for Key {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Key, ApiError> {
        let mut sent = parts.headers.get_all("idempotency-key").iter();
        let Some(value) = sent.next() else {
            return Ok(Key(None));
        };
        // Two keys on one request: whichever we chose, a retry that carries
        // only the other would apply twice.
        if sent.next().is_some() {
            return Err(ApiError::bad_request("send one Idempotency-Key header, not several"));
        }
        let text =
            value.to_str().map_err(|_| ApiError::bad_request("Idempotency-Key must be printable ASCII"))?;
        IdempotencyKey::parse(text).map(|k| Key(Some(k))).map_err(|e| ApiError::bad_request(e.to_string()))
    }
}

impl Key {
    /// Purchases, debits, holds, refunds and grants cannot go without one
    /// (API.md): a retry without a key would apply twice.
    pub fn required(self) -> Result<IdempotencyKey, ApiError> {
        self.0.ok_or_else(|| ApiError::bad_request("this request needs an Idempotency-Key header"))
    }
}

/// An account id from a path: one that cannot exist is simply not found.
pub fn account_id(text: &str) -> Result<AccountId, ApiError> {
    AccountId::parse(text).map_err(|_| ApiError::not_found(format!("account {text} not found")))
}
