//! Ledger entries: the append-only lines every balance is derived from.
//!
//! `delta_credits` is the change to one lot's available credits (and so to
//! the account's available total); `held_delta_credits` the change to
//! credits held by one hold. `balance_after` is the account's available
//! total after the entry. Replaying entries in id order must reproduce every
//! lot, hold and balance: that is what `textcredits audit` proves.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    GrantMonthly,
    Expire,
    Purchase,
    Debit,
    Hold,
    Capture,
    Release,
    Refund,
    Grant,
    Adjust,
}

impl EntryKind {
    pub const ALL: [EntryKind; 10] = [
        EntryKind::GrantMonthly,
        EntryKind::Expire,
        EntryKind::Purchase,
        EntryKind::Debit,
        EntryKind::Hold,
        EntryKind::Capture,
        EntryKind::Release,
        EntryKind::Refund,
        EntryKind::Grant,
        EntryKind::Adjust,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::GrantMonthly => "grant_monthly",
            EntryKind::Expire => "expire",
            EntryKind::Purchase => "purchase",
            EntryKind::Debit => "debit",
            EntryKind::Hold => "hold",
            EntryKind::Capture => "capture",
            EntryKind::Release => "release",
            EntryKind::Refund => "refund",
            EntryKind::Grant => "grant",
            EntryKind::Adjust => "adjust",
        }
    }

    pub fn parse(s: &str) -> Option<EntryKind> {
        EntryKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// An entry as a transition produces it; the store assigns `id` (monotonic
/// per database) and stamps account, idempotency key and `created_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: i64,
    pub kind: EntryKind,
    pub lot_id: String,
    pub delta_credits: i64,
    pub held_delta_credits: i64,
    pub balance_after: i64,
    /// The purchase, debit, hold or grant this entry belongs to.
    pub source: Option<String>,
    /// The client's reference (a campaign id), when it gave one.
    pub reference: Option<String>,
    /// When the entry takes effect: a month boundary or an expiry instant
    /// for entries written lazily after the fact, else the operation's time.
    pub effective_at: Timestamp,
    pub created_at: Timestamp,
}

impl std::fmt::Display for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
