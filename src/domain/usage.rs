//! Usage reports: per local month, what was granted, used, expired,
//! purchased and refunded, computed from the ledger entries alone.
//!
//! Months in which an account did nothing have no entries (the free lot of
//! an idle month is never materialized), so they report zeros.

use super::DomainError;
use super::entry::{Entry, EntryKind};
use super::lot::LotKind;
use super::period::{Month, Zone};
use super::view::UsageView;

/// Longest report: ten years of months.
pub const MAX_USAGE_MONTHS: usize = 120;

/// The months `from..=to`, checked against [`MAX_USAGE_MONTHS`].
pub fn months(from: Month, to: Month) -> Result<Vec<Month>, DomainError> {
    if from > to {
        return Err(DomainError::invalid(format!("from {from} is after to {to}")));
    }
    let mut out = vec![from];
    while *out.last().expect("starts non-empty") < to {
        if out.len() == MAX_USAGE_MONTHS {
            return Err(DomainError::invalid(format!(
                "a usage report covers at most {MAX_USAGE_MONTHS} months"
            )));
        }
        out.push(out.last().expect("non-empty").next());
    }
    Ok(out)
}

/// Sums `entries` into one row per month of `from..=to`, each entry in the
/// month of its `effective_at` in `zone`.
pub fn usage(entries: &[Entry], zone: &Zone, from: Month, to: Month) -> Result<Vec<UsageView>, DomainError> {
    let mut rows: Vec<UsageView> = months(from, to)?.into_iter().map(empty).collect();
    for e in entries {
        let month = Month::of(e.effective_at, zone);
        let Some(row) = rows.iter_mut().find(|r| r.month == month) else {
            continue;
        };
        let kind = LotKind::of_lot_id(&e.lot_id);
        // Credits spent: a debit's delta, or the held credits a capture took.
        let spent = match e.kind {
            EntryKind::Debit => -e.delta_credits,
            EntryKind::Capture => -e.held_delta_credits,
            _ => 0,
        };
        let expired = if e.kind == EntryKind::Expire { -e.delta_credits } else { 0 };
        match kind {
            LotKind::MonthlyFree => {
                row.free_used += spent;
                row.free_expired += expired;
                if e.kind == EntryKind::GrantMonthly {
                    row.free_granted += e.delta_credits;
                }
            }
            LotKind::Grant => {
                row.grants_used += spent;
                row.grants_expired += expired;
                if e.kind == EntryKind::Grant {
                    row.grants_granted += e.delta_credits;
                }
            }
            LotKind::Purchase => {
                row.paid_used += spent;
                if e.kind == EntryKind::Purchase {
                    row.paid_purchased += e.delta_credits;
                }
                if e.kind == EntryKind::Refund && e.delta_credits < 0 {
                    row.paid_refunded -= e.delta_credits;
                }
            }
        }
        if e.kind == EntryKind::Refund && e.delta_credits > 0 {
            row.refunded += e.delta_credits;
        }
    }
    Ok(rows)
}

fn empty(month: Month) -> UsageView {
    UsageView {
        month,
        free_granted: 0,
        free_used: 0,
        free_expired: 0,
        paid_purchased: 0,
        paid_used: 0,
        paid_refunded: 0,
        grants_granted: 0,
        grants_used: 0,
        grants_expired: 0,
        refunded: 0,
    }
}
