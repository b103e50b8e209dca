//! Sign-in and sign-out. The sign-in form's CSRF token is a random value in
//! a cookie of its own (there is no session yet) that the form must repeat;
//! SameSite=Strict keeps other sites from sending either.

use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::WebState;
use super::error::WebError;
use super::layout::{self, csrf_field};
use super::session::{Flash, same_secret, secret};
use super::signed::{SESSION_COOKIE, SIGN_IN_COOKIE, Signed, caller_of, cookie, over_tls, set_cookie};
use crate::http::Caller;
use crate::ledger::Store;

/// Where a caller lands after sign-in.
fn home(caller: &Caller) -> String {
    match caller {
        Caller::Admin => "/accounts".to_string(),
        Caller::Account(id) => format!("/a/{id}"),
    }
}

#[derive(Deserialize)]
pub struct SignedOutQuery {
    signed_out: Option<String>,
}

pub async fn page<S: Store>(
    State(_): State<WebState<S>>,
    signed: Result<Signed, WebError>,
    axum::extract::Query(q): axum::extract::Query<SignedOutQuery>,
    headers: HeaderMap,
) -> Response {
    if let Ok(s) = signed {
        return Redirect::to(&home(&s.caller)).into_response();
    }
    let flash = q.signed_out.map(|_| Flash { ok: true, text: "You are signed out.".into() });
    form_page(&headers, StatusCode::OK, flash)
}

/// The sign-in form, with a fresh CSRF cookie.
fn form_page(req: &HeaderMap, status: StatusCode, flash: Option<Flash>) -> Response {
    let csrf = secret();
    let body = html! {
        p { "Sign in with your account token, or with the admin token to pick an account." }
        form #sign-in method="post" action="/sign-in" {
            (csrf_field(&csrf))
            label for="token" { "Token" }
            input #token type="password" name="token" autocomplete="off" required;
            button type="submit" { "Sign in" }
        }
    };
    let mut headers = HeaderMap::new();
    headers.insert(SET_COOKIE, set_cookie(SIGN_IN_COOKIE, &csrf, over_tls(req)));
    (status, headers, Html(layout::page("Sign in", None, flash.as_ref(), body).into_string())).into_response()
}

#[derive(Deserialize)]
pub struct SignInForm {
    csrf: Option<String>,
    token: Option<String>,
}

pub async fn sign_in<S: Store>(
    State(st): State<WebState<S>>,
    headers: HeaderMap,
    form: Result<Form<SignInForm>, FormRejection>,
) -> Result<Response, WebError> {
    let Ok(Form(form)) = form else { return Err(WebError::Csrf) };
    let expected = cookie(&headers, SIGN_IN_COOKIE).ok_or(WebError::Csrf)?;
    if !form.csrf.as_deref().is_some_and(|c| same_secret(c, expected)) {
        return Err(WebError::Csrf);
    }
    let token = form.token.unwrap_or_default().trim().to_string();
    let caller = match caller_of(&st, &token).await {
        Ok(c) if !token.is_empty() => c,
        Ok(_) | Err(WebError::SignedOut) => {
            let flash = Flash { ok: false, text: "That token is not valid. Check it and try again.".into() };
            return Ok(form_page(&headers, StatusCode::UNAUTHORIZED, Some(flash)));
        }
        Err(e) => return Err(e),
    };
    let (id, _) = st.sessions.create(&token, st.app.clock.now())?;
    let tls = over_tls(&headers);
    let mut headers = HeaderMap::new();
    headers.append(SET_COOKIE, set_cookie(SESSION_COOKIE, &id, tls));
    headers.append(SET_COOKIE, set_cookie(SIGN_IN_COOKIE, "", tls));
    headers.insert(LOCATION, home(&caller).parse().expect("a path"));
    Ok((StatusCode::SEE_OTHER, headers).into_response())
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    csrf: Option<String>,
}

pub async fn sign_out<S: Store>(
    State(st): State<WebState<S>>,
    signed: Signed,
    headers: HeaderMap,
    form: Result<Form<CsrfOnly>, FormRejection>,
) -> Result<Response, WebError> {
    let Ok(Form(form)) = form else { return Err(WebError::Csrf) };
    signed.check_csrf(form.csrf.as_deref())?;
    st.sessions.end(&signed.session_id);
    let tls = over_tls(&headers);
    let mut headers = HeaderMap::new();
    headers.insert(SET_COOKIE, set_cookie(SESSION_COOKIE, "", tls));
    headers.insert(LOCATION, "/?signed_out=1".parse().expect("a path"));
    Ok((StatusCode::SEE_OTHER, headers).into_response())
}
