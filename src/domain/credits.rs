//! Credits: whole text messages. One credit pays for one text to one patron
//! (R1), so a quantity is always an integer; there is no fractional credit.
//!
//! Quantities an operation asks for are validated once, here, into
//! [`Credits`]: positive and at most [`MAX_CREDITS_PER_OPERATION`]. Balances
//! are sums of such quantities and stay far below `i64::MAX`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::DomainError;

/// The most credits one operation (purchase, debit, hold, grant, refund) may
/// move: one billion texts. Far above any campaign, far below overflow even
/// when multiplied by the largest unit price ([`super::money::MAX_UNIT_PRICE_MICROS`]).
pub const MAX_CREDITS_PER_OPERATION: i64 = 1_000_000_000;

/// A positive number of credits that one operation moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Credits(i64);

impl Credits {
    /// Validates a quantity requested by a client.
    pub fn new(n: i64) -> Result<Credits, DomainError> {
        if n <= 0 {
            return Err(DomainError::invalid(format!("credits must be a positive whole number, got {n}")));
        }
        if n > MAX_CREDITS_PER_OPERATION {
            return Err(DomainError::invalid(format!(
                "credits must be at most {MAX_CREDITS_PER_OPERATION} per operation, got {n}"
            )));
        }
        Ok(Credits(n))
    }

    /// Parses a decimal integer as typed on a command line: no sign, no
    /// fraction, no exponent.
    pub fn parse(text: &str) -> Result<Credits, DomainError> {
        let trimmed = text.trim();
        if trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DomainError::invalid(format!(
                "credits must be a positive whole number, got {text:?}"
            )));
        }
        match trimmed.parse::<i64>() {
            Ok(n) => Credits::new(n),
            Err(_) => Err(DomainError::invalid(format!(
                "credits must be at most {MAX_CREDITS_PER_OPERATION} per operation, got {trimmed}"
            ))),
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Credits {
    type Error = DomainError;
    fn try_from(n: i64) -> Result<Self, Self::Error> {
        Credits::new(n)
    }
}

impl From<Credits> for i64 {
    fn from(c: Credits) -> i64 {
        c.0
    }
}

impl fmt::Display for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_edges_of_the_range() {
        assert_eq!(Credits::new(1).unwrap().get(), 1);
        assert_eq!(Credits::new(MAX_CREDITS_PER_OPERATION).unwrap().get(), MAX_CREDITS_PER_OPERATION);
    }

    #[test]
    fn rejects_zero_negative_and_too_large() {
        assert!(Credits::new(0).is_err());
        assert!(Credits::new(-1).is_err());
        assert!(Credits::new(MAX_CREDITS_PER_OPERATION + 1).is_err());
    }

    #[test]
    fn parses_only_plain_digits() {
        assert_eq!(Credits::parse("250").unwrap().get(), 250);
        for bad in ["", "-5", "+5", "1.5", "1e3", "abc", "99999999999999999999999", " "] {
            assert!(Credits::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }
}
