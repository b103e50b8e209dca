//! The signed-in caller of a page: the session from the cookie, its token
//! re-checked on every request through the API's own auth extractor
//! ([`Caller`]), and the CSRF check of its forms.
//!
//! Re-checking each time (the API caches valid tokens, so it is cheap) is
//! what makes a revoked token end its sessions: the dashboard keeps no
//! verdict of its own.

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};

use super::WebState;
use super::error::WebError;
use super::session::{Session, same_secret};
use crate::domain::account::AccountId;
use crate::http::{ApiError, Caller};
use crate::ledger::Store;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "tc_session";

/// The cookie holding the sign-in form's CSRF token (before any session).
pub const SIGN_IN_COOKIE: &str = "tc_sign_in";

pub struct Signed {
    pub session_id: String,
    pub session: Session,
    pub caller: Caller,
}

/// The value of cookie `name` in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get_all(COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(
        |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        },
    )
}

/// Whether the browser reached us over TLS: the server itself speaks plain
/// HTTP, so TLS is a proxy's, which says so in `X-Forwarded-Proto`. Only
/// then is a cookie marked `Secure` (a browser would drop it over HTTP).
pub fn over_tls(headers: &HeaderMap) -> bool {
    headers.get("x-forwarded-proto").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, Secure over TLS; an
/// empty `value` with `Max-Age=0` deletes it.
pub fn set_cookie(name: &str, value: &str, tls: bool) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    let age = if value.is_empty() { "; Max-Age=0" } else { "" };
    HeaderValue::from_str(&format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict{secure}{age}"))
        .expect("cookie values are base32")
}

/// Checks `token` exactly as the API checks a bearer token.
pub async fn caller_of<S: Store>(state: &WebState<S>, token: &str) -> Result<Caller, WebError> {
    let header = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| WebError::SignedOut)?;
    let (mut parts, ()) = axum::http::Request::builder()
        .header(AUTHORIZATION, header)
        .body(())
        .map_err(|_| WebError::SignedOut)?
        .into_parts();
    match Caller::from_request_parts(&mut parts, &state.app).await {
        Ok(caller) => Ok(caller),
        Err(e) if e.status == StatusCode::UNAUTHORIZED => Err(WebError::SignedOut),
        Err(e) => Err(e.into()),
    }
}

impl<S: Store> FromRequestParts<WebState<S>> for Signed {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &WebState<S>) -> Result<Signed, WebError> {
        let id = cookie(&parts.headers, SESSION_COOKIE).ok_or(WebError::SignedOut)?.to_string();
        let now = state.app.clock.now();
        let session = state.sessions.get(&id, now).ok_or(WebError::SignedOut)?;
        let caller = match caller_of(state, &session.token).await {
            Err(WebError::SignedOut) => {
                state.sessions.end(&id);
                return Err(WebError::SignedOut);
            }
            other => other?,
        };
        Ok(Signed { session_id: id, session, caller })
    }
}

impl Signed {
    /// A form of this session: refused (403) unless it carries its token.
    pub fn check_csrf(&self, sent: Option<&str>) -> Result<(), WebError> {
        match sent {
            Some(s) if same_secret(s, &self.session.csrf) => Ok(()),
            _ => Err(WebError::Csrf),
        }
    }

    /// The account of the URL, if this caller may see it; any other is
    /// "not found", as in the API.
    pub fn account(&self, id: &str) -> Result<AccountId, WebError> {
        let id = AccountId::parse(id).map_err(|_| ApiError::not_found(format!("account {id} not found")))?;
        self.caller.may_access(&id)?;
        Ok(id)
    }

    pub fn is_admin(&self) -> bool {
        self.caller == Caller::Admin
    }
}
