//! Spending credits: debits, holds and their capture or release, refunds of
//! undelivered messages, and the read-only quote. Every one of them takes
//! lots in spending order (R6) and all or nothing (R8).

use jiff::{SignedDuration, Timestamp};

use super::DomainError;
use super::credits::Credits;
use super::debit::Debit;
use super::entry::EntryKind;
use super::hold::{self, Hold, HoldStatus, Part};
use super::lot::{self, Breakdown, Lot};
use super::state::{AccountState, Changes, NewEntry};
use super::text;
use super::view::{DebitRefundView, DebitView, HoldView, QuoteView};

/// Which lots pay for `credits` (R6), or nothing at all (R8).
fn allocate(state: &AccountState, credits: i64) -> Result<Vec<(usize, i64)>, DomainError> {
    lot::allocate(&state.lots, credits).map_err(|available| DomainError::InsufficientCredits {
        available,
        requested: credits,
        shortfall: credits - available,
    })
}

fn to_parts(lots: &[Lot], taken: &[(usize, i64)]) -> Vec<Part> {
    taken.iter().map(|&(i, n)| Part { lot_id: lots[i].id.clone(), credits: n }).collect()
}

pub struct DebitRequest<'a> {
    pub id: String,
    pub credits: Credits,
    pub reference: Option<&'a str>,
    pub description: Option<&'a str>,
    pub now: Timestamp,
}

pub fn debit(
    state: &mut AccountState,
    req: DebitRequest<'_>,
    changes: &mut Changes,
) -> Result<DebitView, DomainError> {
    state.account.check_open()?;
    text::check_reference(req.reference)?;
    text::check_description("description", req.description)?;
    let taken = allocate(state, req.credits.get())?;
    let mut breakdown = Breakdown::default();
    for &(i, n) in &taken {
        state.lots[i].remaining -= n;
        breakdown.add(state.lots[i].kind, n);
        let entry =
            NewEntry::new(EntryKind::Debit, i, -n, req.now).source(Some(&req.id)).reference(req.reference);
        state.record(changes, entry);
    }
    let debit = Debit {
        id: req.id,
        credits: req.credits.get(),
        refunded: 0,
        reference: req.reference.map(str::to_string),
        description: req.description.map(str::to_string),
        created_at: req.now,
        breakdown,
        hold_id: None,
        balance_after: state.available(),
        parts: to_parts(&state.lots, &taken),
    };
    let view = DebitView::of(state.account.id.as_str(), &debit);
    // Kept in the state too, so a refund later in the same group finds it.
    state.debits.push(debit.clone());
    changes.debits.push(debit);
    Ok(view)
}

pub struct HoldRequest<'a> {
    pub id: String,
    pub credits: Credits,
    pub reference: Option<&'a str>,
    pub ttl_seconds: Option<i64>,
    pub now: Timestamp,
}

pub fn hold(
    state: &mut AccountState,
    req: HoldRequest<'_>,
    changes: &mut Changes,
) -> Result<HoldView, DomainError> {
    state.account.check_open()?;
    text::check_reference(req.reference)?;
    let ttl_seconds = req.ttl_seconds.unwrap_or(hold::DEFAULT_HOLD_TTL_SECONDS);
    hold::check_ttl(ttl_seconds)?;
    let taken = allocate(state, req.credits.get())?;
    for &(i, n) in &taken {
        state.lots[i].remaining -= n;
        state.lots[i].held += n;
        let entry = NewEntry::new(EntryKind::Hold, i, -n, req.now)
            .held(n)
            .source(Some(&req.id))
            .reference(req.reference);
        state.record(changes, entry);
    }
    let h = Hold {
        id: req.id,
        credits: req.credits.get(),
        captured: 0,
        status: HoldStatus::Held,
        expires_at: req.now + SignedDuration::from_secs(ttl_seconds),
        reference: req.reference.map(str::to_string),
        created_at: req.now,
        debit_id: None,
        parts: to_parts(&state.lots, &taken),
    };
    let view = HoldView::of(state.account.id.as_str(), &h);
    state.holds.push(h);
    Ok(view)
}

fn hold_index(state: &AccountState, hold_id: &str) -> Result<usize, DomainError> {
    state.holds.iter().position(|h| h.id == hold_id).ok_or_else(|| DomainError::not_found("hold", hold_id))
}

/// Spends `credits` of a hold (the texts actually sent) and releases the
/// rest. The credits spent become a debit `debit_id` (with `hold_id`), which
/// a refund of undelivered messages takes back like any other; a capture of
/// 0 credits spends nothing and creates no debit.
pub fn capture(
    state: &mut AccountState,
    hold_id: &str,
    credits: i64,
    debit_id: String,
    now: Timestamp,
    changes: &mut Changes,
) -> Result<HoldView, DomainError> {
    let h = hold_index(state, hold_id)?;
    state.holds[h].ensure_active()?;
    let held = state.holds[h].held();
    if !(0..=held).contains(&credits) {
        return Err(DomainError::invalid(format!(
            "capture must be between 0 and the {held} credits held, got {credits}"
        )));
    }
    let mut left = credits;
    let reference = state.holds[h].reference.clone();
    let (mut breakdown, mut spent) = (Breakdown::default(), Vec::new());
    for p in 0..state.holds[h].parts.len() {
        let n = left.min(state.holds[h].parts[p].credits);
        if n == 0 {
            continue;
        }
        left -= n;
        state.holds[h].parts[p].credits -= n;
        let i = state.lot_index(&state.holds[h].parts[p].lot_id).expect("lots of active holds are loaded");
        state.lots[i].held -= n;
        breakdown.add(state.lots[i].kind, n);
        spent.push(Part { lot_id: state.lots[i].id.clone(), credits: n });
        let entry = NewEntry::new(EntryKind::Capture, i, 0, now)
            .held(-n)
            .source(Some(hold_id))
            .reference(reference.as_deref());
        state.record(changes, entry);
    }
    state.holds[h].parts.retain(|p| p.credits > 0);
    state.release_hold(h, now, changes);
    state.holds[h].captured = credits;
    state.holds[h].status = HoldStatus::Captured;
    if credits > 0 {
        let debit = Debit {
            id: debit_id,
            credits,
            refunded: 0,
            reference,
            description: None,
            created_at: now,
            breakdown,
            hold_id: Some(hold_id.to_string()),
            balance_after: state.available(),
            parts: spent,
        };
        state.holds[h].debit_id = Some(debit.id.clone());
        state.debits.push(debit.clone());
        changes.debits.push(debit);
    }
    Ok(HoldView::of(state.account.id.as_str(), &state.holds[h]))
}

pub fn release(
    state: &mut AccountState,
    hold_id: &str,
    now: Timestamp,
    changes: &mut Changes,
) -> Result<HoldView, DomainError> {
    let h = hold_index(state, hold_id)?;
    state.holds[h].ensure_active()?;
    state.release_hold(h, now, changes);
    state.holds[h].status = HoldStatus::Released;
    Ok(HoldView::of(state.account.id.as_str(), &state.holds[h]))
}

/// Gives back credits of undelivered messages to the lots they came from,
/// the longest-lived first; those of a lot that has expired since (last
/// month's free credits) expire again at once.
pub fn refund_debit(
    state: &mut AccountState,
    refund_id: String,
    debit_id: &str,
    credits: Credits,
    now: Timestamp,
    changes: &mut Changes,
) -> Result<DebitRefundView, DomainError> {
    let d = state
        .debits
        .iter()
        .position(|d| d.id == debit_id)
        .ok_or_else(|| DomainError::not_found("debit", debit_id))?;
    let mut debit = state.debits[d].clone();
    let refundable = debit.credits - debit.refunded;
    let mut left = credits.get();
    if left > refundable {
        return Err(DomainError::invalid(format!(
            "cannot refund {left} credits of debit {debit_id}: {refundable} are still refundable"
        )));
    }
    let mut expired_credits = 0;
    for part in debit.parts.iter_mut().rev() {
        let n = left.min(part.credits);
        if n == 0 {
            continue;
        }
        left -= n;
        part.credits -= n;
        let i = state.lot_index(&part.lot_id).expect("the store loads the lots of the debit");
        state.lots[i].remaining += n;
        state.record(changes, NewEntry::new(EntryKind::Refund, i, n, now).source(Some(debit_id)));
        if state.lots[i].expired {
            state.lots[i].remaining -= n;
            expired_credits += n;
            state.record(changes, NewEntry::new(EntryKind::Expire, i, -n, now).source(Some(debit_id)));
        }
    }
    debit.parts.retain(|p| p.credits > 0);
    debit.refunded += credits.get();
    let view = DebitRefundView {
        id: refund_id,
        account_id: state.account.id.to_string(),
        debit_id: debit.id.clone(),
        credits: credits.get(),
        expired_credits,
        refunded_credits: debit.refunded,
        balance_after: state.available(),
        created_at: now,
    };
    state.debits[d] = debit.clone();
    changes.debits.push(debit);
    Ok(view)
}

/// Can a campaign of `credits` texts go out now, and from which lots,
/// counting the credits auto-recharge would buy first? The state must be
/// rolled forward to `now`; nothing changes.
pub fn quote(state: &AccountState, credits: Credits, now: Timestamp) -> Result<QuoteView, DomainError> {
    let requested = credits.get();
    // What auto-recharge would buy first, on a copy (only when it is on).
    let after;
    let (state, recharge) = if state.account.auto_recharge.is_some() {
        let mut copy = state.clone();
        super::recharge::before_spend(&mut copy, requested, "quote", now, &mut Changes::default());
        let bought = copy.available() - state.available();
        after = copy;
        (&after, bought)
    } else {
        (state, 0)
    };
    let available = state.available();
    let mut breakdown = Breakdown::default();
    let mut left = requested;
    for i in lot::spending_order(&state.lots) {
        let n = left.min(state.lots[i].remaining);
        breakdown.add(state.lots[i].kind, n);
        left -= n;
    }
    let a = &state.account;
    Ok(QuoteView {
        credits: requested,
        available,
        covered: left == 0,
        from_free: breakdown.from_free,
        from_grants: breakdown.from_grants,
        from_paid: breakdown.from_paid,
        shortfall: left,
        shortfall_amount: a.currency.amount(a.currency.charge(a.unit_price, left)?),
        currency: a.currency.clone(),
        auto_recharge_credits: recharge,
    })
}
