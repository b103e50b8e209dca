//! Every failure as `application/problem+json` with one of API.md's codes.
//! This is the one place that maps ledger errors to HTTP: internal errors
//! are logged here and never shown to a client in detail.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::domain::DomainError;
use crate::ledger::LedgerError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub extra: Map<String, Value>,
    /// The rest of the request may still be on its way: answer with
    /// `Connection: close` rather than read it as the next request.
    pub close_connection: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ApiError {
        let close_connection = status == StatusCode::PAYLOAD_TOO_LARGE;
        ApiError { status, code, detail: detail.into(), extra: Map::new(), close_connection }
    }

    fn with(mut self, field: &str, value: impl Into<Value>) -> ApiError {
        self.extra.insert(field.to_string(), value.into());
        self
    }

    /// 400: malformed JSON, a missing or bad header.
    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", detail)
    }

    /// 422: well-formed but wrong types, unknown fields, out-of-range values.
    pub fn invalid(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", detail)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or unknown bearer token")
    }

    pub fn forbidden() -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this route needs the admin token")
    }

    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    fn title(&self) -> &'static str {
        match self.code {
            _ if self.status == StatusCode::REQUEST_TIMEOUT => "Request timeout",
            "invalid_request" => "Invalid request",
            "unauthorized" => "Unauthorized",
            "forbidden" => "Forbidden",
            "not_found" => "Not found",
            "conflict" => "Conflict",
            "idempotency_conflict" => "Idempotency key reused",
            "insufficient_credits" => "Insufficient credits",
            "purchase_limit_exceeded" => "Purchase limit exceeded",
            "purchases_suspended" => "Purchases suspended",
            "hold_not_active" => "Hold not active",
            "account_closed" => "Account closed",
            "unavailable" => "Service unavailable",
            "method_not_allowed" => "Method not allowed",
            _ => "Internal error",
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> ApiError {
        let detail = e.to_string();
        match e {
            DomainError::Invalid(_) | DomainError::MonthNotEnded { .. } => ApiError::invalid(detail),
            DomainError::InsufficientCredits { available, requested, shortfall } => {
                ApiError::new(StatusCode::PAYMENT_REQUIRED, "insufficient_credits", detail)
                    .with("available", available)
                    .with("requested", requested)
                    .with("shortfall", shortfall)
            }
            DomainError::PurchaseLimitExceeded { limit, remaining } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "purchase_limit_exceeded", detail)
                    .with("limit", limit)
                    .with("remaining", remaining)
            }
            DomainError::PurchasesSuspended { statement_id } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "purchases_suspended", detail)
                    .with("statement_id", statement_id)
            }
            DomainError::HoldNotActive { .. } => {
                ApiError::new(StatusCode::CONFLICT, "hold_not_active", detail)
            }
            DomainError::NotFound { .. } => ApiError::not_found(detail),
            DomainError::AccountClosed { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "account_closed", detail)
            }
            DomainError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", detail),
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> ApiError {
        match e {
            LedgerError::Domain(d) => d.into(),
            LedgerError::AccountNotFound(_) => ApiError::not_found(e.to_string()),
            LedgerError::IdempotencyConflict { .. } => {
                ApiError::new(StatusCode::CONFLICT, "idempotency_conflict", e.to_string())
            }
            LedgerError::Unavailable(ref why) => {
                tracing::warn!(error = %why, "database unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database cannot be reached; retry",
                )
            }
            LedgerError::Internal(ref why) => {
                tracing::error!(error = %why, "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; it has been logged",
                )
            }
        }
    }
}

impl ApiError {
    /// The problem+json document.
    pub fn body(&self) -> String {
        let mut body = json!({
            "type": format!("https://textcredits.dev/problems/{}", self.code),
            "title": self.title(),
            "status": self.status.as_u16(),
            "detail": self.detail,
            "code": self.code,
        });
        if let Value::Object(map) = &mut body {
            map.extend(self.extra.clone());
        }
        body.to_string()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if self.close_connection {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
