//! Who is calling: the admin, or one account through an account token.
//!
//! Account tokens look like `tck_<account id>_<secret>`: the account id in
//! the token routes the check to that account's rows (and shard); only the
//! SHA-256 of the secret is stored. Every comparison of secrets compares
//! digests in constant time.
//!
//! An account token is looked up in the database on every request (one
//! primary-key read), never cached: a revoked token answers 401 on every
//! replica from the next request on. Its `last_used_at` is written at most
//! once a minute ([`TOKEN_USE_RESOLUTION_SECONDS`]).

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::ApiError;
use crate::domain::account::AccountId;
#[cfg(test)]
use crate::ledger::new_account_token;
use crate::ledger::{Store, TOKEN_USE_RESOLUTION_SECONDS, sha256_hex};

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub struct Auth {
    admin_sha256: Vec<u8>,
}

impl Auth {
    pub fn new(admin_token: &str) -> Auth {
        Auth { admin_sha256: Sha256::digest(admin_token.as_bytes()).to_vec() }
    }

    fn is_admin(&self, token: &str) -> bool {
        constant_time_eq(&Sha256::digest(token.as_bytes()), &self.admin_sha256)
    }
}

fn parse_account_token(token: &str) -> Option<(AccountId, &str)> {
    let rest = token.strip_prefix("tck_")?;
    let (account, secret) = rest.rsplit_once('_')?;
    Some((AccountId::parse(account).ok()?, secret))
}

/// The credentials of `Bearer <token>`; the scheme name is
/// case-insensitive (RFC 9110 §11.1).
fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Account(AccountId),
}

impl Caller {
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Account(_) => Err(ApiError::forbidden()),
        }
    }

    /// An account token sees its own account only; any other answers 404,
    /// so it never learns whether another account exists.
    pub fn may_access(&self, account: &AccountId) -> Result<(), ApiError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Account(own) if own == account => Ok(()),
            Caller::Account(_) => Err(ApiError::not_found(format!("account {account} not found"))),
        }
    }
}

impl<S: Store> FromRequestParts<AppState<S>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState<S>) -> Result<Caller, ApiError> {
        // Two credentials on one request: which one acts would be a guess.
        if parts.headers.get_all(AUTHORIZATION).iter().nth(1).is_some() {
            return Err(ApiError::unauthorized());
        }
        let header = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        let token = header.and_then(bearer).ok_or_else(ApiError::unauthorized)?;
        if state.auth.is_admin(token) {
            return Ok(Caller::Admin);
        }
        let (account, secret) = parse_account_token(token).ok_or_else(ApiError::unauthorized)?;
        let store = state.ledger.store();
        let digest = sha256_hex(secret.as_bytes());
        let found = store.token_by_secret(account.clone(), digest).await.map_err(ApiError::from)?;
        let Some(found) = found else {
            return Err(ApiError::unauthorized());
        };
        let now = state.clock.now();
        let stale = found.last_used_at.is_none_or(|at| {
            now.duration_since(at) >= jiff::SignedDuration::from_secs(TOKEN_USE_RESOLUTION_SECONDS)
        });
        if stale {
            // A failed touch costs only the figure, never the request.
            if let Err(e) = store.touch_token(account.clone(), found.id, now).await {
                tracing::warn!(error = %e, "could not record a token's use");
            }
        }
        Ok(Caller::Account(account))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_tokens_name_their_account() {
        let account = AccountId::parse("cafe_1.x").unwrap();
        let (token, hash) = new_account_token(&account);
        let (parsed, secret) = parse_account_token(&token).unwrap();
        assert_eq!(parsed, account);
        assert_eq!(sha256_hex(secret.as_bytes()), hash);
        assert!(parse_account_token("tck_").is_none());
        assert!(parse_account_token("Bearer x").is_none());
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
    }

    #[test]
    fn admin_check_is_exact() {
        let auth = Auth::new("s3cret");
        assert!(auth.is_admin("s3cret"));
        assert!(!auth.is_admin("s3cre"));
        assert!(!auth.is_admin(""));
    }
}
