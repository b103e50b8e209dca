//! Promotional grants: credits an operator gives, with an optional expiry.
//! They are spent after this month's free credits and before paid ones, the
//! soonest to expire first (R6).

use jiff::Timestamp;

use super::DomainError;
use super::credits::Credits;
use super::entry::EntryKind;
use super::lot::{Lot, LotKind};
use super::state::{AccountState, Changes, NewEntry};
use super::text;
use super::view::GrantView;

pub struct GrantRequest<'a> {
    pub id: String,
    pub credits: Credits,
    pub expires_at: Option<Timestamp>,
    pub reason: &'a str,
    pub now: Timestamp,
}

pub fn grant(
    state: &mut AccountState,
    req: GrantRequest<'_>,
    changes: &mut Changes,
) -> Result<GrantView, DomainError> {
    text::check_description("reason", Some(req.reason))?;
    if let Some(at) = req.expires_at {
        super::period::accepted_instant(at, "expires_at")?;
    }
    if let Some(at) = req.expires_at.filter(|&at| at <= req.now) {
        return Err(DomainError::invalid(format!("expires_at {at} is not in the future")));
    }
    let n = req.credits.get();
    state.lots.push(Lot {
        id: req.id.clone(),
        kind: LotKind::Grant,
        original: n,
        remaining: n,
        held: 0,
        expires_at: req.expires_at,
        expired: false,
        created_at: req.now,
        unit_price: None,
    });
    let i = state.lots.len() - 1;
    let entry =
        NewEntry::new(EntryKind::Grant, i, n, req.now).source(Some(&req.id)).reference(Some(req.reason));
    state.record(changes, entry);
    Ok(GrantView {
        id: req.id,
        account_id: state.account.id.to_string(),
        credits: n,
        expires_at: req.expires_at,
        reason: req.reason.to_string(),
        balance_after: state.available(),
        created_at: req.now,
    })
}
