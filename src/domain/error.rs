//! Why a domain transition refuses: each variant is a sentence a merchant or
//! an operator can act on, and maps to one API.md error code at the edges.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DomainError {
    /// The request itself is malformed or out of range.
    #[error("{0}")]
    Invalid(String),
    /// R8: nothing was consumed.
    #[error("insufficient credits: {available} available, {requested} requested (short by {shortfall})")]
    InsufficientCredits { available: i64, requested: i64, shortfall: i64 },
    #[error("purchase limit exceeded: {limit} credits a month, {remaining} left this month")]
    PurchaseLimitExceeded { limit: i64, remaining: i64 },
    #[error("purchases are suspended: statement {statement_id} failed to be paid")]
    PurchasesSuspended { statement_id: String },
    #[error("hold {hold_id} is {status}, not held")]
    HoldNotActive { hold_id: String, status: String },
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// The account is closed: no purchases, debits or holds.
    #[error("account {account_id} is closed: reopen it (status active) to buy, spend or hold credits")]
    AccountClosed { account_id: String },
    /// A close asked for a month that has not ended in the account's zone.
    #[error("month {month} has not ended yet for this account: it ends at {ends_at}")]
    MonthNotEnded { month: String, ends_at: String },
    /// The object exists with other settings (account ids are client-chosen).
    #[error("{0}")]
    Conflict(String),
}

impl DomainError {
    pub fn invalid(message: impl Into<String>) -> DomainError {
        DomainError::Invalid(message.into())
    }

    pub fn not_found(what: &'static str, id: impl Into<String>) -> DomainError {
        DomainError::NotFound { what, id: id.into() }
    }
}
