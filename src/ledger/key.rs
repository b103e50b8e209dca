//! Idempotency keys: a retry with the same key and the same request gets the
//! first answer and changes nothing; the same key with another request is a
//! conflict. Keys are scoped to an account and stored in the same
//! transaction as the mutation they name, so a crash cannot separate them.

use std::fmt;

use jiff::Timestamp;
use serde::de::DeserializeOwned;

use super::{LedgerError, StoredAnswer};
use crate::domain::DomainError;

/// Longest key, in bytes (API.md: 1-255 printable ASCII).
pub const MAX_KEY_BYTES: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(text: &str) -> Result<IdempotencyKey, DomainError> {
        let ok = !text.is_empty()
            && text.len() <= MAX_KEY_BYTES
            && text.bytes().all(|b| (0x20..0x7f).contains(&b));
        if !ok {
            return Err(DomainError::invalid(format!(
                "idempotency key must be 1 to {MAX_KEY_BYTES} printable ASCII characters"
            )));
        }
        Ok(IdempotencyKey(text.to_string()))
    }

    /// A fresh random key, for a CLI user who gave none.
    pub fn generate() -> IdempotencyKey {
        IdempotencyKey(format!("cli_{}", super::random_id()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An idempotency key sent with a request outside the write pipeline (the
/// webhook routes), bound to that request: its method, path and body. Such
/// keys live in `request_keys`, in the same transaction as the change.
#[derive(Debug, Clone)]
pub struct RequestKey {
    /// The routes that share the key's namespace (`webhooks`).
    pub scope: &'static str,
    pub key: IdempotencyKey,
    /// The request, as text: the same key with another one is a conflict.
    pub request: String,
    pub at: Timestamp,
}

/// What a keyed change answered: new, or the first answer again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyed<T> {
    pub value: T,
    pub replayed: bool,
}

impl<T> Keyed<T> {
    pub fn fresh(value: T) -> Keyed<T> {
        Keyed { value, replayed: false }
    }
}

/// The first answer to `key` again, or a conflict if it answered another
/// request.
pub fn replayed<T: DeserializeOwned>(
    key: &RequestKey,
    stored: &StoredAnswer,
) -> Result<Keyed<T>, LedgerError> {
    if stored.request != key.request {
        return Err(LedgerError::IdempotencyConflict { key: key.key.to_string() });
    }
    let value = serde_json::from_str(&stored.response)
        .map_err(|e| LedgerError::Internal(format!("stored answer of key {}: {e}", key.key)))?;
    Ok(Keyed { value, replayed: true })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_printable_ascii_up_to_255_bytes() {
        assert!(IdempotencyKey::parse("order-42 retry").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        for bad in ["", "tab\there", "é", &"k".repeat(256)] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_request_key_answers_its_first_answer_and_only_to_its_own_request() {
        let key = RequestKey {
            scope: "webhooks",
            key: IdempotencyKey::parse("k1").unwrap(),
            request: "POST /v1/webhook-endpoints {\"url\":\"https://a.example/\"}".into(),
            at: Timestamp::UNIX_EPOCH,
        };
        let stored = StoredAnswer { request: key.request.clone(), response: "42".into() };
        assert_eq!(replayed::<u64>(&key, &stored).unwrap(), Keyed { value: 42, replayed: true });
        let other = StoredAnswer { request: "POST /v1/webhook-endpoints {}".into(), ..stored.clone() };
        assert!(matches!(replayed::<u64>(&key, &other), Err(LedgerError::IdempotencyConflict { .. })));
        let broken = StoredAnswer { response: "".into(), ..stored };
        assert!(matches!(replayed::<u64>(&key, &broken), Err(LedgerError::Internal(_))));
    }
}
