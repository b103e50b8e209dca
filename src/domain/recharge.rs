//! Auto-recharge: a purchase the ledger makes on its own, in the
//! transaction of the debit or hold that calls for it, so a campaign does
//! not stop for want of credits.
//!
//! The rules (docs/api.md, Auto-recharge):
//! - a debit or hold that leaves available credits below `threshold` buys
//!   `credits` at the unit price, once per crossing: not again until
//!   available has been back at or above the threshold;
//! - a debit or hold that is short, and that one such purchase would
//!   cover, buys first and then succeeds (a quote says so); one that it
//!   would not cover is refused and buys nothing;
//! - a purchase that would take what auto-recharge bought this local month
//!   past `monthly_cap`, or the month's purchases past the account's
//!   `monthly_purchase_limit`, is not made: `auto_recharge.capped`, once a
//!   month;
//! - while a statement is `failed` nothing is bought:
//!   `auto_recharge.suspended`, once per failed statement.
//!
//! The account's [`Notices`](super::event::Notices) remember the crossing,
//! the month's automatic credits and the events sent, so the rules hold
//! whatever the concurrency: an account's operations run one at a time on
//! its state.

use jiff::Timestamp;
use serde_json::json;

use super::DomainError;
use super::credits::Credits;
use super::event::{EventType, emit};
use super::period::Month;
use super::purchase;
use super::state::{AccountState, Changes};

/// Why a recharge was attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The operation left available below the threshold.
    LowBalance,
    /// The operation was short, and the recharge covers it.
    InsufficientCredits,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::LowBalance => "low_balance",
            Trigger::InsufficientCredits => "insufficient_credits",
        }
    }
}

/// Before a debit or hold of `credits`: when available is short of it and
/// one recharge would cover it (and this crossing has not recharged yet),
/// buys first. Refusals by the cap or a failed statement say nothing here:
/// the operation is then refused for want of credits, and a refused
/// operation writes nothing, events included.
pub fn before_spend(state: &mut AccountState, credits: i64, ctx_id: &str, now: Timestamp, c: &mut Changes) {
    let Some(auto) = state.account.auto_recharge.clone() else {
        return;
    };
    let available = state.available();
    if available >= credits || available + auto.credits < credits || state.account.notices.recharged {
        return;
    }
    if allowed(state, now).is_ok() {
        recharge(state, Trigger::InsufficientCredits, ctx_id, now, c);
    }
}

/// After a debit or hold: below the threshold, once per crossing, buys
/// `credits`, or says once why it may not.
pub fn after_spend(state: &mut AccountState, ctx_id: &str, now: Timestamp, c: &mut Changes) {
    let Some(auto) = state.account.auto_recharge.clone() else {
        return;
    };
    if state.available() >= auto.threshold || state.account.notices.recharged {
        return;
    }
    match allowed(state, now) {
        Ok(()) => recharge(state, Trigger::LowBalance, ctx_id, now, c),
        Err(refusal) => refusal.announce(state, ctx_id, now, c),
    }
}

/// At the end of every operation: a crossing ends when available is back
/// at or above the threshold, and a suspension when no statement is
/// failed any more (so each fires again next time).
pub fn rearm(state: &mut AccountState) {
    let above = match &state.account.auto_recharge {
        Some(auto) => state.available() >= auto.threshold,
        None => true,
    };
    let notices = &mut state.account.notices;
    if above {
        notices.recharged = false;
    }
    if state.account.suspended_by.is_none() {
        notices.recharge_suspended = None;
    }
}

/// Why a recharge may not be made now.
enum Refusal {
    Suspended { statement_id: String },
    Capped { month: Month, data: serde_json::Value },
}

impl Refusal {
    /// The event, once: per failed statement, or per month.
    fn announce(self, state: &mut AccountState, ctx_id: &str, now: Timestamp, c: &mut Changes) {
        let notices = &mut state.account.notices;
        match self {
            Refusal::Suspended { statement_id } => {
                if notices.recharge_suspended.as_deref() == Some(statement_id.as_str()) {
                    return;
                }
                notices.recharge_suspended = Some(statement_id.clone());
                let data = json!({ "statement_id": statement_id });
                emit(state, c, ctx_id, EventType::AutoRechargeSuspended, now, data);
            }
            Refusal::Capped { month, data } => {
                if notices.recharge_capped == Some(month) {
                    return;
                }
                notices.recharge_capped = Some(month);
                emit(state, c, ctx_id, EventType::AutoRechargeCapped, now, data);
            }
        }
    }
}

/// The month's credits bought by auto-recharge so far.
fn bought_in(state: &AccountState, month: Month) -> i64 {
    match state.account.notices.recharged_in {
        Some((m, n)) if m == month => n,
        _ => 0,
    }
}

fn allowed(state: &AccountState, now: Timestamp) -> Result<(), Refusal> {
    let a = &state.account;
    let Some(auto) = &a.auto_recharge else {
        return Ok(());
    };
    if let Some(statement_id) = &a.suspended_by {
        return Err(Refusal::Suspended { statement_id: statement_id.clone() });
    }
    let month = Month::of(now, &a.zone);
    let bought = bought_in(state, month);
    if auto.monthly_cap > 0 && bought + auto.credits > auto.monthly_cap {
        let data = json!({
            "reason": "monthly_cap",
            "month": month.to_string(),
            "monthly_cap": auto.monthly_cap,
            "bought_this_month": bought,
            "credits": auto.credits,
        });
        return Err(Refusal::Capped { month, data });
    }
    let limit = a.monthly_purchase_limit;
    let purchased = a.purchased_in(month);
    if limit > 0 && purchased + auto.credits > limit {
        let data = json!({
            "reason": "monthly_purchase_limit",
            "month": month.to_string(),
            "monthly_purchase_limit": limit,
            "purchased_this_month": purchased,
            "credits": auto.credits,
        });
        return Err(Refusal::Capped { month, data });
    }
    Ok(())
}

/// Buys the recharge's credits, marked automatic, with its one event. A
/// purchase refused for another reason (a clock behind the billing, an
/// unbilled total beyond what is kept exactly) buys nothing, silently: the
/// operation goes on as without auto-recharge.
fn recharge(state: &mut AccountState, trigger: Trigger, ctx_id: &str, now: Timestamp, c: &mut Changes) {
    let Some(auto) = state.account.auto_recharge.clone() else {
        return;
    };
    let Ok(credits) = Credits::new(auto.credits) else {
        return;
    };
    let bought: Result<_, DomainError> =
        purchase::purchase(state, format!("pur_{ctx_id}"), credits, true, now, c);
    let Ok(view) = bought else {
        return;
    };
    let month = Month::of(now, &state.account.zone);
    let so_far = bought_in(state, month);
    let notices = &mut state.account.notices;
    notices.recharged = true;
    notices.recharged_in = Some((month, so_far + auto.credits));
    let data = json!({
        "purchase": view,
        "trigger": trigger.as_str(),
        "threshold": auto.threshold,
        "monthly_cap": auto.monthly_cap,
        "bought_this_month": so_far + auto.credits,
    });
    emit(state, c, ctx_id, EventType::AutoRechargeSucceeded, now, data);
}
