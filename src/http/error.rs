//! Every failure as `application/problem+json` with one of API.md's codes.
//! This is the one place that maps ledger errors to HTTP: internal errors
//! are logged here and never shown to a client in detail.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::domain::DomainError;
use crate::ledger::LedgerError;

/// The `code` of every problem answer: what a client matches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400/422: malformed JSON or query, wrong types, out-of-range values,
    /// unknown fields or parameters; also 405, 408, 413 and 415.
    InvalidRequest,
    /// 401: missing or unknown bearer token.
    Unauthorized,
    /// 403: an account token on an admin route.
    Forbidden,
    /// 404.
    NotFound,
    /// 409: the id exists with other settings.
    Conflict,
    /// 409: the idempotency key was used with another body.
    IdempotencyConflict,
    /// 402, with `available`, `requested` and `shortfall`.
    InsufficientCredits,
    /// 422, with `limit` and `remaining`.
    PurchaseLimitExceeded,
    /// 422, with `statement_id`: a failed statement is unpaid.
    PurchasesSuspended,
    /// 422: the account is closed.
    AccountClosed,
    /// 409: the hold was already captured, released or expired.
    HoldNotActive,
    /// 503: the database cannot be reached, or the request timed out; retry.
    Unavailable,
    /// 500: a bug; it has been logged.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::IdempotencyConflict => "idempotency_conflict",
            ErrorCode::InsufficientCredits => "insufficient_credits",
            ErrorCode::PurchaseLimitExceeded => "purchase_limit_exceeded",
            ErrorCode::PurchasesSuspended => "purchases_suspended",
            ErrorCode::AccountClosed => "account_closed",
            ErrorCode::HoldNotActive => "hold_not_active",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub detail: String,
    pub extra: Map<String, Value>,
    /// The rest of the request may still be on its way: answer with
    /// `Connection: close` rather than read it as the next request.
    pub close_connection: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, detail: impl Into<String>) -> ApiError {
        let close_connection = status == StatusCode::PAYLOAD_TOO_LARGE;
        ApiError { status, code, detail: detail.into(), extra: Map::new(), close_connection }
    }

    fn with(mut self, field: &str, value: impl Into<Value>) -> ApiError {
        self.extra.insert(field.to_string(), value.into());
        self
    }

    /// 400: malformed JSON, a missing or bad header.
    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, detail)
    }

    /// 422: well-formed but wrong types, unknown fields, out-of-range values.
    pub fn invalid(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidRequest, detail)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, "missing or unknown bearer token")
    }

    pub fn forbidden() -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, "this route needs the admin token")
    }

    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, detail)
    }

    fn title(&self) -> &'static str {
        if self.status == StatusCode::REQUEST_TIMEOUT {
            return "Request timeout";
        }
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            return "Method not allowed";
        }
        match self.code {
            ErrorCode::InvalidRequest => "Invalid request",
            ErrorCode::Unauthorized => "Unauthorized",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::NotFound => "Not found",
            ErrorCode::Conflict => "Conflict",
            ErrorCode::IdempotencyConflict => "Idempotency key reused",
            ErrorCode::InsufficientCredits => "Insufficient credits",
            ErrorCode::PurchaseLimitExceeded => "Purchase limit exceeded",
            ErrorCode::PurchasesSuspended => "Purchases suspended",
            ErrorCode::HoldNotActive => "Hold not active",
            ErrorCode::AccountClosed => "Account closed",
            ErrorCode::Unavailable => "Service unavailable",
            ErrorCode::Internal => "Internal error",
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> ApiError {
        let detail = e.to_string();
        match e {
            DomainError::Invalid(_) | DomainError::MonthNotEnded { .. } => ApiError::invalid(detail),
            DomainError::InsufficientCredits { available, requested, shortfall } => {
                ApiError::new(StatusCode::PAYMENT_REQUIRED, ErrorCode::InsufficientCredits, detail)
                    .with("available", available)
                    .with("requested", requested)
                    .with("shortfall", shortfall)
            }
            DomainError::PurchaseLimitExceeded { limit, remaining } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::PurchaseLimitExceeded, detail)
                    .with("limit", limit)
                    .with("remaining", remaining)
            }
            DomainError::PurchasesSuspended { statement_id } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::PurchasesSuspended, detail)
                    .with("statement_id", statement_id)
            }
            DomainError::HoldNotActive { .. } => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::HoldNotActive, detail)
            }
            DomainError::NotFound { .. } => ApiError::not_found(detail),
            DomainError::AccountClosed { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::AccountClosed, detail)
            }
            DomainError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, ErrorCode::Conflict, detail),
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> ApiError {
        match e {
            LedgerError::Domain(d) => d.into(),
            LedgerError::AccountNotFound(_) => ApiError::not_found(e.to_string()),
            LedgerError::IdempotencyConflict { .. } => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::IdempotencyConflict, e.to_string())
            }
            LedgerError::Unavailable(ref why) => {
                tracing::warn!(error = %why, "database unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Unavailable,
                    "the database cannot be reached; retry",
                )
            }
            LedgerError::Internal(ref why) => {
                tracing::error!(error = %why, "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal,
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
            "type": format!("https://textcredits.dev/problems/{}", self.code.as_str()),
            "title": self.title(),
            "status": self.status.as_u16(),
            "detail": self.detail,
            "code": self.code.as_str(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The code in the JSON, the code in the OpenAPI enum and `as_str` are
    /// one spelling.
    #[test]
    fn codes_serialize_as_they_are_named() {
        for code in [
            ErrorCode::InvalidRequest,
            ErrorCode::Unauthorized,
            ErrorCode::Forbidden,
            ErrorCode::NotFound,
            ErrorCode::Conflict,
            ErrorCode::IdempotencyConflict,
            ErrorCode::InsufficientCredits,
            ErrorCode::PurchaseLimitExceeded,
            ErrorCode::PurchasesSuspended,
            ErrorCode::AccountClosed,
            ErrorCode::HoldNotActive,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
            let body: Value =
                serde_json::from_str(&ApiError::new(StatusCode::CONFLICT, code, "x").body()).unwrap();
            assert_eq!(body["code"], code.as_str());
        }
    }
}
