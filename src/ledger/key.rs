//! Idempotency keys: a retry with the same key and the same request gets the
//! first answer and changes nothing; the same key with another request is a
//! conflict. Keys are scoped to an account and stored in the same
//! transaction as the mutation they name, so a crash cannot separate them.

use std::fmt;

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
}
