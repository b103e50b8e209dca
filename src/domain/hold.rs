//! Holds: credits reserved for a campaign before it goes out. Capture the
//! number actually sent (at most what is held), the rest goes back; a hold
//! never captured is released when its TTL runs out.
//!
//! A hold takes its credits out of the lots at once, in spending order (R6),
//! and remembers which lots they came from, so a release puts each credit
//! back where it was; credits returned to a lot that has expired meanwhile
//! expire on the spot.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::DomainError;

/// Default TTL of a hold: one day.
pub const DEFAULT_HOLD_TTL_SECONDS: i64 = 86_400;
/// Longest TTL of a hold: 30 days. A campaign that takes longer should not
/// keep credits away from everything else.
pub const MAX_HOLD_TTL_SECONDS: i64 = 30 * 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HoldStatus {
    Held,
    Captured,
    Released,
    Expired,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Held => "held",
            HoldStatus::Captured => "captured",
            HoldStatus::Released => "released",
            HoldStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<HoldStatus> {
        [HoldStatus::Held, HoldStatus::Captured, HoldStatus::Released, HoldStatus::Expired]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// Credits of one lot inside a hold or a debit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub lot_id: String,
    pub credits: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub id: String,
    pub credits: i64,
    pub captured: i64,
    pub status: HoldStatus,
    pub expires_at: Timestamp,
    pub reference: Option<String>,
    pub created_at: Timestamp,
    /// The debit its capture created (none before a capture, or for a
    /// capture of 0 credits).
    pub debit_id: Option<String>,
    /// Credits still held, per lot, in spending order.
    pub parts: Vec<Part>,
}

impl Hold {
    pub fn held(&self) -> i64 {
        self.parts.iter().map(|p| p.credits).sum()
    }

    pub fn ensure_active(&self) -> Result<(), DomainError> {
        if self.status != HoldStatus::Held {
            return Err(DomainError::HoldNotActive {
                hold_id: self.id.clone(),
                status: self.status.as_str().to_string(),
            });
        }
        Ok(())
    }
}

pub fn check_ttl(ttl_seconds: i64) -> Result<(), DomainError> {
    if !(1..=MAX_HOLD_TTL_SECONDS).contains(&ttl_seconds) {
        return Err(DomainError::invalid(format!(
            "ttl_seconds must be between 1 and {MAX_HOLD_TTL_SECONDS}, got {ttl_seconds}"
        )));
    }
    Ok(())
}

impl std::fmt::Display for HoldStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
