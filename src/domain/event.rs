//! Events: what happened to an account that a platform must hear about,
//! decided here, written by the store in the same transaction as the change
//! (the outbox), and delivered from there (webhooks, the events list).
//!
//! Each account numbers its events: `sequence` is +1 per event, so a
//! receiver orders them and sees a gap. The account keeps its last number
//! and [`Notices`], the memory that makes an alert fire once per crossing
//! (or once a month) and re-arm.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::period::Month;
use super::state::{AccountState, Changes};

/// The types of event (API.md, Webhooks).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
pub enum EventType {
    #[serde(rename = "purchase.created")]
    PurchaseCreated,
    #[serde(rename = "purchase.refunded")]
    PurchaseRefunded,
    #[serde(rename = "statement.issued")]
    StatementIssued,
    #[serde(rename = "balance.low")]
    BalanceLow,
    #[serde(rename = "free_credits.low")]
    FreeCreditsLow,
    #[serde(rename = "free_credits.reset")]
    FreeCreditsReset,
    #[serde(rename = "auto_recharge.succeeded")]
    AutoRechargeSucceeded,
    #[serde(rename = "auto_recharge.capped")]
    AutoRechargeCapped,
    #[serde(rename = "auto_recharge.suspended")]
    AutoRechargeSuspended,
}

impl EventType {
    pub const ALL: [EventType; 9] = [
        EventType::PurchaseCreated,
        EventType::PurchaseRefunded,
        EventType::StatementIssued,
        EventType::BalanceLow,
        EventType::FreeCreditsLow,
        EventType::FreeCreditsReset,
        EventType::AutoRechargeSucceeded,
        EventType::AutoRechargeCapped,
        EventType::AutoRechargeSuspended,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::PurchaseCreated => "purchase.created",
            EventType::PurchaseRefunded => "purchase.refunded",
            EventType::StatementIssued => "statement.issued",
            EventType::BalanceLow => "balance.low",
            EventType::FreeCreditsLow => "free_credits.low",
            EventType::FreeCreditsReset => "free_credits.reset",
            EventType::AutoRechargeSucceeded => "auto_recharge.succeeded",
            EventType::AutoRechargeCapped => "auto_recharge.capped",
            EventType::AutoRechargeSuspended => "auto_recharge.suspended",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event of an account. Its id never changes (a webhook's
/// `webhook-id`, the same on every retry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    pub sequence: i64,
    pub kind: EventType,
    pub created_at: Timestamp,
    /// The object as the API shows it, with `available` after the change.
    pub data: Value,
}

/// An event as the API shows it (the events list, and the body of a
/// webhook).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventView {
    pub id: String,
    pub account_id: String,
    /// +1 per event of the account: order by it, and a gap is a missed event.
    pub sequence: i64,
    #[serde(rename = "type")]
    #[schema(inline)]
    pub kind: EventType,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// The object concerned as the API shows it, and `available`: the
    /// account's available credits after the change.
    #[schema(value_type = Object)]
    pub data: Value,
}

impl EventView {
    pub fn of(account: &str, e: &Event) -> EventView {
        EventView {
            id: e.id.clone(),
            account_id: account.to_string(),
            sequence: e.sequence,
            kind: e.kind,
            created_at: e.created_at,
            data: e.data.clone(),
        }
    }
}

/// Used shares of the month's free allowance that warn, in percent.
pub const FREE_LOW_PERCENTS: [u8; 2] = [75, 90];

/// What an account remembers of the alerts it has sent, and of what
/// auto-recharge did (stored with the account as a small JSON object;
/// absent fields read as never sent, nothing bought).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Notices {
    /// `balance.low` was sent and available has not risen back to the
    /// threshold since.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub balance_low: bool,
    /// The month of the last `free_credits.low`, and its percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_low: Option<(Month, u8)>,
    /// Auto-recharge bought in the current crossing: available has not
    /// been at or above its threshold since.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub recharged: bool,
    /// The local month and the credits auto-recharge bought in it (for
    /// `monthly_cap`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recharged_in: Option<(Month, i64)>,
    /// The month `auto_recharge.capped` was sent for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recharge_capped: Option<Month>,
    /// The failed statement `auto_recharge.suspended` was sent for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recharge_suspended: Option<String>,
}

impl Notices {
    pub fn is_empty(&self) -> bool {
        *self == Notices::default()
    }
}

/// Appends an event of `kind` to `changes`, numbered after the account's
/// last one, with an id made from the operation's fresh id.
pub fn emit(
    state: &mut AccountState,
    changes: &mut Changes,
    ctx_id: &str,
    kind: EventType,
    now: Timestamp,
    mut data: Value,
) {
    let available = state.available();
    if let Value::Object(map) = &mut data {
        map.insert("available".into(), available.into());
    }
    state.account.event_sequence += 1;
    let n = changes.events.len();
    let id = if n == 0 { format!("evt_{ctx_id}") } else { format!("evt_{ctx_id}_{n}") };
    changes.events.push(Event { id, sequence: state.account.event_sequence, kind, created_at: now, data });
}

/// The alerts an operation's end state calls for: `balance.low` when
/// available is below the threshold (once, until it is back at or above
/// it), and `free_credits.low` when the month's used free credits reach
/// 75% and 90% of the allowance (once each per month). Held credits count
/// as used: they are promised to a campaign.
pub fn alerts(state: &mut AccountState, changes: &mut Changes, ctx_id: &str, now: Timestamp) {
    let threshold = state.account.low_balance_threshold;
    let available = state.available();
    if threshold > 0 && available < threshold {
        if !state.account.notices.balance_low {
            state.account.notices.balance_low = true;
            emit(state, changes, ctx_id, EventType::BalanceLow, now, json!({ "threshold": threshold }));
        }
    } else if state.account.notices.balance_low {
        state.account.notices.balance_low = false;
    }
    let (Some(month), Some(lot)) = (state.account.free_month, state.free_lot()) else {
        return;
    };
    let (allowance, remaining) = (lot.original, lot.remaining);
    if allowance <= 0 {
        return;
    }
    let used = allowance - remaining;
    let sent = match state.account.notices.free_low {
        Some((m, p)) if m == month => p,
        _ => 0,
    };
    for percent in FREE_LOW_PERCENTS {
        // used / allowance >= percent / 100, in integers.
        let reached = i128::from(used) * 100 >= i128::from(allowance) * i128::from(percent);
        if reached && percent > sent {
            state.account.notices.free_low = Some((month, percent));
            let data = json!({
                "month": month.to_string(),
                "percent_used": percent,
                "allowance": allowance,
                "used": used,
                "remaining": remaining,
            });
            emit(state, changes, ctx_id, EventType::FreeCreditsLow, now, data);
        }
    }
}

/// `free_credits.reset` for the account's current free month, once per
/// account and month (sent by the task that closes months, so shortly
/// after each account's own boundary, or when it catches up). An account
/// from before events has none recorded: its current month is recorded
/// without an event. A closed account spends nothing, so hears nothing.
pub fn announce_reset(state: &mut AccountState, changes: &mut Changes, ctx_id: &str, now: Timestamp) {
    let Some(month) = state.account.free_month else {
        return;
    };
    let last = state.account.reset_announced;
    if last.is_some_and(|m| m >= month) {
        return;
    }
    state.account.reset_announced = Some(month);
    if last.is_none() || state.account.closed {
        return;
    }
    let zone = state.account.zone.clone();
    let allowance = state.free_lot().map_or(0, |l| l.original);
    let data = json!({
        "month": month.to_string(),
        "allowance": allowance,
        "resets_at": month.end(&zone).to_string(),
    });
    emit(state, changes, ctx_id, EventType::FreeCreditsReset, now, data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_spelled_as_serde_writes_them_and_parse_back() {
        for t in EventType::ALL {
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::parse("purchase.deleted"), None);
    }

    #[test]
    fn notices_read_back_from_an_empty_object() {
        let n: Notices = serde_json::from_str("{}").unwrap();
        assert!(n.is_empty());
        let month = Month::parse("2026-11").unwrap();
        let n = Notices {
            balance_low: true,
            free_low: Some((month, 75)),
            recharged: true,
            recharged_in: Some((month, 2000)),
            recharge_capped: Some(month),
            recharge_suspended: Some("st_x".into()),
        };
        let text = serde_json::to_string(&n).unwrap();
        assert_eq!(serde_json::from_str::<Notices>(&text).unwrap(), n);
    }
}
