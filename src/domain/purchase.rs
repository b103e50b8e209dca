//! Purchases of paid credits (R4) and their refunds. A purchase is billed on
//! the 1st of the month after it was made, local time (R5); a refund takes
//! back only unused credits: before billing it shrinks the purchase's line
//! on the coming statement, after billing it is a negative line on the next.

use jiff::{Timestamp, civil::Date};
use serde::{Deserialize, Serialize};

use super::DomainError;
use super::credits::Credits;
use super::entry::EntryKind;
use super::lot::{Lot, LotKind};
use super::money::{Currency, Micros};
use super::period::Month;
use super::state::{AccountState, Changes, NewEntry};
use super::view::{PurchaseRefundView, PurchaseView};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purchase {
    pub id: String,
    pub credits: i64,
    pub unit_price: Micros,
    pub currency: Currency,
    pub purchased_at: Timestamp,
    /// The local month it was bought in, so billed in.
    pub month: Month,
    pub refunded_credits: i64,
    /// Refunded before billing: these credits never reach a statement.
    pub refunded_unbilled_credits: i64,
    pub statement_id: Option<String>,
    /// Bought by auto-recharge, not by a request.
    pub automatic: bool,
}

impl Purchase {
    /// What it charges: credits x unit price, rounded to the minor unit.
    pub fn amount(&self) -> Result<Micros, DomainError> {
        self.currency.charge(self.unit_price, self.credits)
    }

    /// What its statement line will charge (rounded as the line is).
    pub fn billable_amount(&self) -> Result<Micros, DomainError> {
        self.currency.charge(self.unit_price, self.billable_credits())
    }

    pub fn bills_on(&self) -> Date {
        self.month.next().first_day()
    }

    /// Credits its statement line will charge.
    pub fn billable_credits(&self) -> i64 {
        self.credits - self.refunded_unbilled_credits
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseRefund {
    pub id: String,
    pub purchase_id: String,
    pub credits: i64,
    pub unit_price: Micros,
    pub created_at: Timestamp,
    /// The local month of the refund: the statement its negative line goes on.
    pub month: Month,
    /// The purchase was already billed: the refund needs a negative line.
    pub needs_line: bool,
    pub statement_id: Option<String>,
}

impl PurchaseRefund {
    /// What it gives back, rounded to the minor unit of `currency` (the
    /// account's) as a purchase of the same credits would be.
    pub fn amount(&self, currency: &Currency) -> Result<Micros, DomainError> {
        currency.charge(self.unit_price, self.credits)
    }
}

/// Buys `credits` at the account's unit price (R4): usable at once, never
/// expiring, billed on the 1st of next month (R5). `automatic`: bought by
/// auto-recharge ([`super::recharge`]), under the same checks. Refuses
/// before it changes anything.
pub fn purchase(
    state: &mut AccountState,
    id: String,
    credits: Credits,
    automatic: bool,
    now: Timestamp,
    changes: &mut Changes,
) -> Result<PurchaseView, DomainError> {
    let a = &state.account;
    a.check_open()?;
    if let Some(statement_id) = &a.suspended_by {
        return Err(DomainError::PurchasesSuspended { statement_id: statement_id.clone() });
    }
    let month = Month::of(now, &a.zone);
    if let Some(billed) = a.billed_through.filter(|&b| month <= b) {
        return Err(DomainError::invalid(format!(
            "month {month} is already billed (statements are closed through {billed}); check the clock"
        )));
    }
    let n = credits.get();
    let limit = a.monthly_purchase_limit;
    let so_far = a.purchased_in(month);
    if limit > 0 && so_far + n > limit {
        let remaining = (limit - so_far).max(0);
        return Err(DomainError::PurchaseLimitExceeded { limit, remaining });
    }
    // The amount, and the unbilled total it joins (which bounds every
    // statement it will be on), stay exact, or the purchase is refused.
    let amount = a.currency.charge(a.unit_price, n)?;
    let mut unbilled = state.purchases.iter().filter(|p| p.statement_id.is_none());
    let unbilled = unbilled.try_fold(Micros::ZERO, |sum, p| sum.checked_add(p.billable_amount()?))?;
    unbilled.checked_add(amount).map_err(|_| {
        DomainError::invalid(format!(
            "buying {n} credits would take the unbilled total beyond the largest amount textcredits keeps exactly; \
             buy fewer, or close the month first"
        ))
    })?;
    let p = Purchase {
        id,
        credits: n,
        unit_price: a.unit_price,
        currency: a.currency.clone(),
        purchased_at: now,
        month,
        refunded_credits: 0,
        refunded_unbilled_credits: 0,
        statement_id: None,
        automatic,
    };
    state.lots.push(Lot {
        id: p.id.clone(),
        kind: LotKind::Purchase,
        original: n,
        remaining: n,
        held: 0,
        expires_at: None,
        expired: false,
        created_at: now,
        unit_price: Some(p.unit_price),
    });
    let i = state.lots.len() - 1;
    state.record(changes, NewEntry::new(EntryKind::Purchase, i, n, now).source(Some(&p.id)));
    state.account.purchased_month = Some(month);
    state.account.purchased_month_credits = so_far + n;
    let view = PurchaseView::of(state.account.id.as_str(), &p)?;
    // Kept in the state too, so a later operation of the same group (a
    // refund, a close) sees it.
    state.purchases.push(p.clone());
    changes.purchases.push(p);
    Ok(view)
}

/// Takes back unused credits of a purchase (default: all of them).
pub fn refund_purchase(
    state: &mut AccountState,
    refund_id: String,
    purchase_id: &str,
    credits: Option<Credits>,
    now: Timestamp,
    changes: &mut Changes,
) -> Result<PurchaseRefundView, DomainError> {
    let not_found = || DomainError::not_found("purchase", purchase_id);
    let p = state.purchases.iter().position(|p| p.id == purchase_id).ok_or_else(not_found)?;
    let i = state.lot_index(purchase_id).ok_or_else(not_found)?;
    let unused = state.lots[i].remaining;
    let n = credits.map_or(unused, Credits::get);
    if n == 0 || n > unused {
        return Err(DomainError::invalid(format!(
            "cannot refund {n} credits of purchase {purchase_id}: {unused} are unused"
        )));
    }
    state.lots[i].remaining -= n;
    state.record(changes, NewEntry::new(EntryKind::Refund, i, -n, now).source(Some(purchase_id)));
    let a = &state.account;
    let purchase = &mut state.purchases[p];
    purchase.refunded_credits += n;
    let needs_line = purchase.statement_id.is_some();
    let counted = !needs_line && a.purchased_month == Some(purchase.month);
    // Before billing, what the refund gives back is how much its purchase's
    // line drops (both rounded), so the two always agree.
    let billable_before = purchase.billable_amount()?;
    if !needs_line {
        purchase.refunded_unbilled_credits += n;
    }
    let line_drop = billable_before.checked_sub(purchase.billable_amount()?)?;
    // A refund's negative line goes on the statement of its own month, or
    // the first one still open if the clock is behind the billing.
    let mut month = Month::of(now, &a.zone);
    if let Some(billed) = a.billed_through.filter(|&b| month <= b) {
        month = billed.next();
    }
    let refund = PurchaseRefund {
        id: refund_id,
        purchase_id: purchase_id.to_string(),
        credits: n,
        unit_price: purchase.unit_price,
        created_at: now,
        month,
        needs_line,
        statement_id: None,
    };
    // After billing, the negative line's amount (what the refund is worth).
    let amount = if needs_line { refund.amount(&a.currency)? } else { line_drop };
    let view = PurchaseRefundView::of(a.id.as_str(), &refund, &a.currency, amount, state.available())?;
    if counted {
        state.account.purchased_month_credits -= n;
    }
    changes.purchases.push(state.purchases[p].clone());
    if needs_line {
        state.pending_refunds.push(refund.clone());
    }
    changes.refunds.push(refund);
    Ok(view)
}
