//! Errors of the ledger service: a refusal by the rules (the domain's), or
//! something about the request or the database. The edges (CLI, HTTP) map
//! each variant to an exit code or an API.md error code in one place.

use thiserror::Error;

use crate::domain::DomainError;

#[derive(Debug, Clone, Error)]
pub enum LedgerError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("account {0} not found")]
    AccountNotFound(String),
    #[error("idempotency key {key:?} was already used with a different request")]
    IdempotencyConflict { key: String },
    /// The database cannot be reached or is busy past its timeout: retry.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A bug or a corrupted database: logged, never shown to a client in detail.
    #[error("internal error: {0}")]
    Internal(String),
}

impl LedgerError {
    pub fn invalid(message: impl Into<String>) -> LedgerError {
        LedgerError::Domain(DomainError::invalid(message))
    }
}
