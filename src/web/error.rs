//! Why a page cannot be shown, as a page: one enum, mapped to a status and
//! a message in `#flash` in one place. Ledger and auth errors come through
//! the API's [`ApiError`], so internal errors are logged there and never
//! shown in detail.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::layout;
use super::session::TooManySessions;
use crate::http::ApiError;
use crate::ledger::LedgerError;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// No session, an expired one, or its token is no longer valid.
    #[error("you are signed out")]
    SignedOut,
    /// A form without this session's CSRF token (or no form at all).
    #[error(
        "this form did not come from this dashboard, or has expired: reload the page and try again; nothing was changed"
    )]
    Csrf,
    #[error(transparent)]
    TooManySessions(#[from] TooManySessions),
    /// What the API would answer, as a page.
    #[error("{}", .0.detail)]
    Api(ApiError),
}

impl From<ApiError> for WebError {
    fn from(e: ApiError) -> WebError {
        WebError::Api(e)
    }
}

impl From<crate::domain::DomainError> for WebError {
    fn from(e: crate::domain::DomainError) -> WebError {
        WebError::Api(e.into())
    }
}

impl From<LedgerError> for WebError {
    fn from(e: LedgerError) -> WebError {
        WebError::Api(e.into())
    }
}

impl WebError {
    pub fn status(&self) -> StatusCode {
        match self {
            WebError::SignedOut => StatusCode::SEE_OTHER,
            WebError::Csrf => StatusCode::FORBIDDEN,
            WebError::TooManySessions(_) => StatusCode::SERVICE_UNAVAILABLE,
            WebError::Api(e) => e.status,
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        if let WebError::SignedOut = self {
            return Redirect::to("/").into_response();
        }
        let status = self.status();
        let title = match status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::FORBIDDEN => "Refused",
            _ => "Something went wrong",
        };
        let flash = super::session::Flash { ok: false, text: self.to_string() };
        let body = maud::html! { p { a href="/" { "Back to the dashboard" } } };
        (status, Html(layout::page(title, None, Some(&flash), body).into_string())).into_response()
    }
}
