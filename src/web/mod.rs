//! The merchant's dashboard (issue 13): server-rendered HTML pages over the
//! ledger, for an account token (the merchant) or the admin token (staff).
//!
//! Architecture invariant: like a handler of `http/`, a page handler reads
//! the session, re-checks its token through the API's auth path
//! ([`signed`]), calls the ledger and renders; it decides no rule. Every
//! page of an account calls `Caller::may_access` first, so an account token
//! never sees another account, whatever the URL says. Every POST checks the
//! session's CSRF token before anything else. Templates are `maud` macros,
//! checked at compile time; the only script is `price.js` (the live price),
//! served as a file, and every page works without it.
//!
//! The pages and hooks are documented in docs/dashboard.md.

mod admin;
mod assets;
mod chart;
mod credits;
mod error;
mod forecast;
mod format;
mod history;
mod layout;
mod purchase;
mod session;
mod signed;
mod signin;
mod statements;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};

use crate::http::AppState;
use crate::ledger::Store;

pub use session::{MAX_SESSIONS, MAX_SESSIONS_PER_TOKEN, SESSION_LIFETIME_SECONDS};

/// Largest form body, in bytes: every form holds a few short fields.
pub const MAX_FORM_BYTES: usize = 8 * 1024;

/// Sent with every page: no inline script or style, no framing, no
/// third-party anything.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The API's state plus the sessions of this process.
pub struct WebState<S> {
    pub app: AppState<S>,
    pub sessions: Arc<session::Sessions>,
}

impl<S: Clone> Clone for WebState<S> {
    fn clone(&self) -> Self {
        WebState { app: self.app.clone(), sessions: self.sessions.clone() }
    }
}

/// Every route of the dashboard, to merge into [`crate::http::app`].
pub fn router<S: Store>(app: AppState<S>) -> Router<AppState<S>> {
    let state = WebState { app, sessions: Arc::new(session::Sessions::default()) };
    let a = "/a/{id}";
    Router::new()
        .route("/", get(signin::page::<S>))
        .route("/sign-in", post(signin::sign_in::<S>))
        .route("/sign-out", post(signin::sign_out::<S>))
        .route("/accounts", get(admin::accounts::<S>))
        .route("/statements", get(admin::month::<S>))
        .route(a, get(credits::page::<S>))
        .route(&format!("{a}/quote"), post(credits::quote::<S>))
        .route(&format!("{a}/buy"), get(purchase::dialog::<S>).post(purchase::review::<S>))
        .route(&format!("{a}/buy/confirm"), post(purchase::confirm::<S>))
        .route(&format!("{a}/purchases"), get(history::page::<S>))
        .route(&format!("{a}/purchases.csv"), get(history::csv::<S>))
        .route(&format!("{a}/statements"), get(statements::account::<S>))
        .route("/static/style.css", get(assets::style))
        .route("/static/price.js", get(assets::script))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// The headers of issue 13 on every answer of the dashboard.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}
