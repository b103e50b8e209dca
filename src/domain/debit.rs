//! Debits: credits spent on texts that went out (R1: one credit per text),
//! and refunds of the ones that were not delivered.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::hold::Part;
use super::lot::Breakdown;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Debit {
    pub id: String,
    pub credits: i64,
    pub refunded: i64,
    pub reference: Option<String>,
    pub description: Option<String>,
    pub created_at: Timestamp,
    pub breakdown: Breakdown,
    /// The hold this debit captured, when it is a capture.
    pub hold_id: Option<String>,
    /// Credits available on the account right after the debit.
    pub balance_after: i64,
    /// Credits per lot that a refund may still return, in spending order.
    pub parts: Vec<Part>,
}
