//! Lots: blocks of credits with one origin and one expiry, and the order in
//! which they are spent (R6).
//!
//! A lot's `remaining` credits are available; its `held` credits sit in
//! active holds. Expiry zeroes `remaining` only: held credits expire when
//! their hold releases them, because a hold's credits are not available to
//! anything else, expiry included.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::money::Micros;
use super::period::Month;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LotKind {
    MonthlyFree,
    Grant,
    Purchase,
}

impl LotKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LotKind::MonthlyFree => "monthly_free",
            LotKind::Grant => "grant",
            LotKind::Purchase => "purchase",
        }
    }

    /// Lot ids say their kind: `free_...`, `grt_...`, `pur_...`.
    pub fn of_lot_id(id: &str) -> LotKind {
        if id.starts_with("free_") {
            LotKind::MonthlyFree
        } else if id.starts_with("grt_") {
            LotKind::Grant
        } else {
            LotKind::Purchase
        }
    }

    pub fn parse(s: &str) -> Option<LotKind> {
        match s {
            "monthly_free" => Some(LotKind::MonthlyFree),
            "grant" => Some(LotKind::Grant),
            "purchase" => Some(LotKind::Purchase),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lot {
    /// `free_YYYY-MM`, or the id of the purchase or grant that made it.
    pub id: String,
    pub kind: LotKind,
    pub original: i64,
    pub remaining: i64,
    pub held: i64,
    pub expires_at: Option<Timestamp>,
    pub expired: bool,
    /// When the lot's credits became usable.
    pub created_at: Timestamp,
    /// Purchases only: the price each credit was bought at.
    pub unit_price: Option<Micros>,
}

impl Lot {
    pub fn free_id(month: Month) -> String {
        format!("free_{month}")
    }

    pub fn is_spendable(&self) -> bool {
        !self.expired && self.remaining > 0
    }

    /// Whether the store must load this lot with the account: it has credits
    /// (available or held), or it is the current month's free lot, whose
    /// `original - remaining` is the free usage of the month (R7).
    pub fn is_active(&self, free_month: Option<Month>) -> bool {
        self.remaining > 0
            || self.held > 0
            || (self.kind == LotKind::MonthlyFree && free_month.is_some_and(|m| self.id == Lot::free_id(m)))
    }

    /// R6: what expires first is spent first. This month's free credits,
    /// then grants by earliest expiry (those that never expire last), then
    /// purchases, oldest first.
    fn spending_key(&self) -> (LotKind, bool, Option<Timestamp>, Timestamp, &str) {
        // `None` sorts first in Option's order; a lot that never expires
        // must sort last among its kind, hence the flag before the instant.
        (self.kind, self.expires_at.is_none(), self.expires_at, self.created_at, &self.id)
    }
}

/// Indices of the lots that can pay, in the order they pay (R6).
pub fn spending_order(lots: &[Lot]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..lots.len()).filter(|&i| lots[i].is_spendable()).collect();
    order.sort_by(|&a, &b| lots[a].spending_key().cmp(&lots[b].spending_key()));
    order
}

/// Credits available to spend now: the sum of spendable lots.
pub fn available(lots: &[Lot]) -> i64 {
    lots.iter().filter(|l| l.is_spendable()).map(|l| l.remaining).sum()
}

/// Which lots would pay for `credits` and how much each (R6), without
/// changing anything. `Err(available)` when they cannot all be paid (R8).
pub fn allocate(lots: &[Lot], credits: i64) -> Result<Vec<(usize, i64)>, i64> {
    let mut left = credits;
    let mut parts = Vec::new();
    for i in spending_order(lots) {
        if left == 0 {
            break;
        }
        let take = left.min(lots[i].remaining);
        parts.push((i, take));
        left -= take;
    }
    if left > 0 {
        return Err(available(lots));
    }
    Ok(parts)
}

/// Credits from each kind of lot, as quotes and debits report them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breakdown {
    pub from_free: i64,
    pub from_grants: i64,
    pub from_paid: i64,
}

impl Breakdown {
    pub fn add(&mut self, kind: LotKind, credits: i64) {
        match kind {
            LotKind::MonthlyFree => self.from_free += credits,
            LotKind::Grant => self.from_grants += credits,
            LotKind::Purchase => self.from_paid += credits,
        }
    }
}

impl std::fmt::Display for LotKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lot(id: &str, kind: LotKind, remaining: i64, expires: Option<&str>, created: &str) -> Lot {
        Lot {
            id: id.into(),
            kind,
            original: remaining,
            remaining,
            held: 0,
            expires_at: expires.map(|e| e.parse().unwrap()),
            expired: false,
            created_at: created.parse().unwrap(),
            unit_price: None,
        }
    }

    #[test]
    fn r6_free_then_grants_by_expiry_then_oldest_purchase() {
        let lots = vec![
            lot("pur_new", LotKind::Purchase, 10, None, "2026-11-20T00:00:00Z"),
            lot("grt_forever", LotKind::Grant, 10, None, "2026-11-02T00:00:00Z"),
            lot("pur_old", LotKind::Purchase, 10, None, "2026-10-01T00:00:00Z"),
            lot("grt_late", LotKind::Grant, 10, Some("2027-01-01T00:00:00Z"), "2026-11-03T00:00:00Z"),
            lot(
                "free_2026-11",
                LotKind::MonthlyFree,
                10,
                Some("2026-12-01T00:00:00Z"),
                "2026-11-01T00:00:00Z",
            ),
            lot("grt_soon", LotKind::Grant, 10, Some("2026-12-15T00:00:00Z"), "2026-11-04T00:00:00Z"),
        ];
        let ids: Vec<&str> = spending_order(&lots).iter().map(|&i| lots[i].id.as_str()).collect();
        assert_eq!(ids, ["free_2026-11", "grt_soon", "grt_late", "grt_forever", "pur_old", "pur_new"]);
    }

    #[test]
    fn r8_allocation_is_all_or_nothing() {
        let lots = vec![lot("free_2026-11", LotKind::MonthlyFree, 5, None, "2026-11-01T00:00:00Z")];
        assert_eq!(allocate(&lots, 6), Err(5));
        assert_eq!(allocate(&lots, 5), Ok(vec![(0, 5)]));
    }
}
