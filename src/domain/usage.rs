//! Usage reports: per local month, what was granted, used, expired,
//! purchased and refunded.
//!
//! Each entry counts in one month's row ([`month_of`]): the month of its
//! `effective_at` in the account's zone, except that what expires at the
//! first instant of a month counts in the month that ended (December's
//! unused free credits are December's). The rows are kept as counters,
//! written with the entries in the same transaction ([`by_month`] gives a
//! group's additions), so a report costs the months asked for, never the
//! account's history. Months in which an account did nothing have no row
//! and report zeros.

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

/// The month whose row `e` counts in, seen from `zone`.
pub fn month_of(e: &Entry, zone: &Zone) -> Month {
    let at = if e.kind == EntryKind::Expire {
        // An expiry at a month's first instant ends the month before it.
        e.effective_at - jiff::SignedDuration::from_micros(1)
    } else {
        e.effective_at
    };
    Month::of(at, zone)
}

/// Adds what `e` did to `row`.
pub fn add(row: &mut UsageView, e: &Entry) {
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

/// The names of a row's counters, in the order of [`counts`].
pub const COUNTS: [&str; 10] = [
    "free_granted",
    "free_used",
    "free_expired",
    "paid_purchased",
    "paid_used",
    "paid_refunded",
    "grants_granted",
    "grants_used",
    "grants_expired",
    "refunded",
];

/// A row's counters, in the order of [`COUNTS`].
pub fn counts(u: &UsageView) -> [i64; 10] {
    [
        u.free_granted,
        u.free_used,
        u.free_expired,
        u.paid_purchased,
        u.paid_used,
        u.paid_refunded,
        u.grants_granted,
        u.grants_used,
        u.grants_expired,
        u.refunded,
    ]
}

/// The row of `month` with the counters `c`, in the order of [`COUNTS`].
pub fn from_counts(month: Month, c: [i64; 10]) -> UsageView {
    let [
        free_granted,
        free_used,
        free_expired,
        paid_purchased,
        paid_used,
        paid_refunded,
        grants_granted,
        grants_used,
        grants_expired,
        refunded,
    ] = c;
    UsageView {
        month,
        free_granted,
        free_used,
        free_expired,
        paid_purchased,
        paid_used,
        paid_refunded,
        grants_granted,
        grants_used,
        grants_expired,
        refunded,
    }
}

/// Adds `from`'s counters to `to`'s (same month).
pub fn merge(to: &mut UsageView, from: &UsageView) {
    let mut sum = counts(to);
    sum.iter_mut().zip(counts(from)).for_each(|(s, c)| *s += c);
    *to = from_counts(to.month, sum);
}

/// What `entries` add to each month's row, oldest month first (months
/// they add nothing to, such as a month of holds only, are left out).
pub fn by_month<'a>(entries: impl IntoIterator<Item = &'a Entry>, zone: &Zone) -> Vec<UsageView> {
    let mut rows: Vec<UsageView> = Vec::new();
    for e in entries {
        let month = month_of(e, zone);
        let i = match rows.iter().position(|r| r.month == month) {
            Some(i) => i,
            None => {
                rows.push(empty(month));
                rows.len() - 1
            }
        };
        add(&mut rows[i], e);
    }
    rows.retain(|r| counts(r) != [0; 10]);
    rows.sort_by_key(|r| r.month);
    rows
}

/// The report for `from..=to`: the stored counters, plus what `pending`
/// (entries time alone brings and no write has stored yet) adds; zeros for
/// months with neither.
pub fn report(
    stored: &[UsageView],
    pending: &[Entry],
    zone: &Zone,
    from: Month,
    to: Month,
) -> Result<Vec<UsageView>, DomainError> {
    let mut rows: Vec<UsageView> = months(from, to)?.into_iter().map(empty).collect();
    for extra in stored.iter().chain(by_month(pending, zone).iter()) {
        if let Some(row) = rows.iter_mut().find(|r| r.month == extra.month) {
            merge(row, extra);
        }
    }
    Ok(rows)
}

/// A month with nothing in it.
pub fn empty(month: Month) -> UsageView {
    from_counts(month, [0; 10])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: EntryKind, lot_id: &str, delta: i64, held: i64, at: &str) -> Entry {
        let at: jiff::Timestamp = at.parse().unwrap();
        Entry {
            id: 1,
            kind,
            lot_id: lot_id.into(),
            delta_credits: delta,
            held_delta_credits: held,
            balance_after: 0,
            source: None,
            reference: None,
            effective_at: at,
            created_at: at,
        }
    }

    #[test]
    fn an_expiry_at_a_month_start_counts_in_the_month_that_ended() {
        let utc = Zone::utc();
        let expiry = entry(EntryKind::Expire, "free_2026-11", -700, 0, "2026-12-01T00:00:00Z");
        let debit = entry(EntryKind::Debit, "free_2026-12", -5, 0, "2026-12-01T00:00:00Z");
        let rows = by_month([&expiry, &debit], &utc);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].month.to_string(), rows[0].free_expired), ("2026-11".to_string(), 700));
        assert_eq!((rows[1].month.to_string(), rows[1].free_used), ("2026-12".to_string(), 5));
    }

    #[test]
    fn months_that_entries_add_nothing_to_are_left_out() {
        let hold = entry(EntryKind::Hold, "free_2026-11", -5, 5, "2026-11-03T00:00:00Z");
        assert!(by_month([&hold], &Zone::utc()).is_empty());
    }
}
