//! What the outside world sees: the JSON shapes of API.md, shared by the CLI
//! (`--json`) and the HTTP API, and stored as the first answer of an
//! idempotent request so a replay returns exactly the same bytes of meaning.

use jiff::{Timestamp, civil::Date};
use serde::{Deserialize, Serialize};

use super::DomainError;
use super::account::{Account, AutoRecharge};
use super::debit::Debit;
use super::entry::{Entry, EntryKind};
use super::hold::{Hold, HoldStatus};
use super::lot::{Breakdown, LotKind};
use super::money::{Amount, Currency, Micros};
use super::period::Month;
use super::purchase::{Purchase, PurchaseRefund};
use super::state::AccountState;
use super::statement::{Line, LineKind, Statement, StatementStatus};

#[cfg(test)]
mod spelling {
    use super::*;

    /// `as_str` is the JSON spelling.
    #[test]
    fn enums_are_spelled_as_serde_writes_them() {
        let json = |v: serde_json::Value| v.as_str().unwrap().to_string();
        for s in [AccountStatus::Active, AccountStatus::Closed] {
            assert_eq!(json(serde_json::to_value(s).unwrap()), s.as_str());
        }
        for s in [PurchaseStatus::Unbilled, PurchaseStatus::Billed] {
            assert_eq!(json(serde_json::to_value(s).unwrap()), s.as_str());
        }
        for s in [RefundBilling::BeforeBilling, RefundBilling::AfterBilling] {
            assert_eq!(json(serde_json::to_value(s).unwrap()), s.as_str());
        }
    }
}

/// Whether an account may spend and buy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Active,
    /// No purchases, debits or holds; reads, refunds and billing go on.
    Closed,
}

/// Whether a purchase is on a statement yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PurchaseStatus {
    /// Billed on `bills_on`.
    Unbilled,
    /// On `statement_id`.
    Billed,
}

/// When a purchase refund was made, against billing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefundBilling {
    /// Its purchase's line shrinks.
    BeforeBilling,
    /// A negative line goes on the statement of its month.
    AfterBilling,
}

/// `as_str` (the JSON spelling) and `Display` of the views' enums.
macro_rules! spelled {
    ($t:ty { $($v:ident => $s:literal),* $(,)? }) => {
        impl $t {
            pub fn as_str(self) -> &'static str {
                match self { $(<$t>::$v => $s),* }
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
spelled!(AccountStatus { Active => "active", Closed => "closed" });
spelled!(PurchaseStatus { Unbilled => "unbilled", Billed => "billed" });
spelled!(RefundBilling { BeforeBilling => "before_billing", AfterBilling => "after_billing" });
spelled!(LineKind { Purchase => "purchase", Refund => "refund" });

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccountView {
    pub id: String,
    pub name: String,
    pub time_zone: String,
    pub monthly_free_credits: i64,
    pub unit_price: Micros,
    pub currency: Currency,
    pub auto_recharge: Option<AutoRecharge>,
    pub low_balance_threshold: i64,
    pub monthly_purchase_limit: i64,
    pub purchases_suspended_by: Option<String>,
    /// `active`, or `closed` (no purchases, debits or holds).
    #[schema(inline)]
    pub status: AccountStatus,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// In the answer for one account; null in lists.
    pub balance: Option<BalanceView>,
}

impl AccountView {
    pub fn of(a: &Account) -> AccountView {
        AccountView {
            id: a.id.to_string(),
            name: a.name.clone(),
            time_zone: a.zone.name().to_string(),
            monthly_free_credits: a.monthly_free_credits,
            unit_price: a.unit_price,
            currency: a.currency.clone(),
            auto_recharge: a.auto_recharge.clone(),
            low_balance_threshold: a.low_balance_threshold,
            monthly_purchase_limit: a.monthly_purchase_limit,
            purchases_suspended_by: a.suspended_by.clone(),
            status: if a.closed { AccountStatus::Closed } else { AccountStatus::Active },
            created_at: a.created_at,
            balance: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FreeView {
    pub allowance: i64,
    pub used: i64,
    pub remaining: i64,
    #[schema(value_type = String, format = DateTime)]
    pub resets_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RemainingView {
    pub remaining: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UnbilledView {
    pub credits: i64,
    /// What the next statement totals so far: the sum of the rounded
    /// amounts of these purchases, less their refunds.
    pub amount: Amount,
    pub currency: Currency,
    #[schema(value_type = String, format = Date)]
    pub bills_on: Date,
}

/// R7: the balance of an account at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BalanceView {
    pub account_id: String,
    #[schema(value_type = String, format = DateTime)]
    pub as_of: Timestamp,
    pub free: FreeView,
    pub paid: RemainingView,
    pub grants: RemainingView,
    pub held: i64,
    pub available: i64,
    pub unbilled: UnbilledView,
}

impl BalanceView {
    /// `state` must be rolled forward to `now` and carry every unbilled
    /// purchase and pending refund.
    pub fn of(state: &AccountState, now: Timestamp) -> Result<BalanceView, DomainError> {
        let a = &state.account;
        let month = Month::of(now, &a.zone);
        let by_kind = |kind: LotKind| -> i64 {
            state.lots.iter().filter(|l| l.kind == kind && l.is_spendable()).map(|l| l.remaining).sum()
        };
        let (allowance, used, remaining) = match state.free_lot() {
            Some(l) => (l.original, l.original - l.remaining - l.held, l.remaining),
            None => (a.monthly_free_credits, 0, a.monthly_free_credits),
        };
        Ok(BalanceView {
            account_id: a.id.to_string(),
            as_of: now,
            free: FreeView { allowance, used, remaining, resets_at: month.end(&a.zone) },
            paid: RemainingView { remaining: by_kind(LotKind::Purchase) },
            grants: RemainingView { remaining: by_kind(LotKind::Grant) },
            held: state.held(),
            available: state.available(),
            unbilled: unbilled(state, month)?,
        })
    }
}

/// What the next statement charges so far: unbilled purchases less their
/// refunds, and negative lines still to come; billed on the 1st after the
/// oldest month among them (or after this month when there are none).
fn unbilled(state: &AccountState, month: Month) -> Result<UnbilledView, DomainError> {
    let mut credits = 0;
    let mut amount = Micros::ZERO;
    let mut oldest = month;
    for p in state.purchases.iter().filter(|p| p.statement_id.is_none()) {
        credits += p.billable_credits();
        // Purchases are refused when this sum would leave the exact range.
        amount = amount.checked_add(p.billable_amount()?)?;
        oldest = oldest.min(p.month);
    }
    for r in state.pending_refunds.iter() {
        credits -= r.credits;
        amount = amount.checked_sub(r.amount(&state.account.currency)?)?;
        oldest = oldest.min(r.month);
    }
    Ok(UnbilledView {
        credits,
        amount: state.account.currency.amount(amount),
        currency: state.account.currency.clone(),
        bills_on: oldest.next().first_day(),
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QuoteView {
    pub credits: i64,
    pub available: i64,
    pub covered: bool,
    pub from_free: i64,
    pub from_grants: i64,
    pub from_paid: i64,
    pub shortfall: i64,
    /// What buying the shortfall would charge.
    pub shortfall_amount: Amount,
    pub currency: Currency,
    /// Credits auto-recharge would buy first to cover the campaign (0 when
    /// none: covered without, or not allowed, see docs/api.md).
    pub auto_recharge_credits: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PurchaseView {
    pub id: String,
    pub account_id: String,
    pub credits: i64,
    pub unit_price: Micros,
    /// Credits x unit price, rounded half-up to the currency's minor unit.
    pub amount: Amount,
    pub currency: Currency,
    #[schema(value_type = String, format = DateTime)]
    pub purchased_at: Timestamp,
    #[schema(value_type = String, format = Date)]
    pub bills_on: Date,
    #[schema(inline)]
    pub status: PurchaseStatus,
    /// The statement that billed it, or null while `unbilled`.
    pub statement_id: Option<String>,
    pub refunded_credits: i64,
    /// Bought by auto-recharge.
    pub automatic: bool,
}

impl PurchaseView {
    pub fn of(account: &str, p: &Purchase) -> Result<PurchaseView, DomainError> {
        Ok(PurchaseView {
            id: p.id.clone(),
            account_id: account.to_string(),
            credits: p.credits,
            unit_price: p.unit_price,
            amount: p.currency.amount(p.amount()?),
            currency: p.currency.clone(),
            purchased_at: p.purchased_at,
            bills_on: p.bills_on(),
            status: if p.statement_id.is_some() { PurchaseStatus::Billed } else { PurchaseStatus::Unbilled },
            statement_id: p.statement_id.clone(),
            refunded_credits: p.refunded_credits,
            automatic: p.automatic,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PurchaseRefundView {
    pub id: String,
    pub account_id: String,
    pub purchase_id: String,
    pub credits: i64,
    pub amount: Amount,
    pub currency: Currency,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// `before_billing`: the purchase's line shrinks; `after_billing`: a
    /// negative line goes on the statement of `month`.
    #[schema(inline)]
    pub billing: RefundBilling,
    pub month: Month,
    pub balance_after: i64,
}

impl PurchaseRefundView {
    /// `amount`: what the refund gives back (see [`super::purchase::refund_purchase`]).
    pub fn of(
        account: &str,
        r: &PurchaseRefund,
        currency: &Currency,
        amount: Micros,
        balance_after: i64,
    ) -> Result<PurchaseRefundView, DomainError> {
        Ok(PurchaseRefundView {
            id: r.id.clone(),
            account_id: account.to_string(),
            purchase_id: r.purchase_id.clone(),
            credits: r.credits,
            amount: currency.amount(amount),
            currency: currency.clone(),
            created_at: r.created_at,
            billing: if r.needs_line { RefundBilling::AfterBilling } else { RefundBilling::BeforeBilling },
            month: r.month,
            balance_after,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DebitView {
    pub id: String,
    pub account_id: String,
    pub credits: i64,
    pub reference: Option<String>,
    pub description: Option<String>,
    pub from_free: i64,
    pub from_grants: i64,
    pub from_paid: i64,
    pub refunded_credits: i64,
    /// The hold whose capture this debit is, or null.
    pub hold_id: Option<String>,
    /// Credits available right after the debit.
    pub balance_after: i64,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

impl DebitView {
    pub fn of(account: &str, d: &Debit) -> DebitView {
        let Breakdown { from_free, from_grants, from_paid } = d.breakdown;
        DebitView {
            id: d.id.clone(),
            account_id: account.to_string(),
            credits: d.credits,
            reference: d.reference.clone(),
            description: d.description.clone(),
            from_free,
            from_grants,
            from_paid,
            refunded_credits: d.refunded,
            hold_id: d.hold_id.clone(),
            balance_after: d.balance_after,
            created_at: d.created_at,
        }
    }

    /// The debit as it was answered when it was made, before any refund:
    /// every other field of a debit's row never changes, so a debit's
    /// first answer is rebuilt from its row (what an idempotency key
    /// replays, [`crate::ledger::replay`]).
    pub fn as_made(account: &str, d: &Debit) -> DebitView {
        DebitView { refunded_credits: 0, ..DebitView::of(account, d) }
    }
}

/// A refund of undelivered messages of a debit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DebitRefundView {
    /// Names this refund in its answer (and its replay); its ledger entries
    /// carry the debit's id as their source. Empty in answers stored before
    /// refunds had ids.
    #[serde(default)]
    pub id: String,
    pub account_id: String,
    pub debit_id: String,
    pub credits: i64,
    /// Credits that went back to lots that had already expired, and so
    /// expired again at once.
    pub expired_credits: i64,
    /// Credits of the debit refunded so far, this refund included.
    pub refunded_credits: i64,
    pub balance_after: i64,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HoldView {
    pub id: String,
    pub account_id: String,
    pub credits: i64,
    pub captured: i64,
    #[schema(inline)]
    pub status: HoldStatus,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    pub reference: Option<String>,
    /// The debit its capture created, or null.
    pub debit_id: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

impl HoldView {
    pub fn of(account: &str, h: &Hold) -> HoldView {
        HoldView {
            id: h.id.clone(),
            account_id: account.to_string(),
            credits: h.credits,
            captured: h.captured,
            status: h.status,
            expires_at: h.expires_at,
            reference: h.reference.clone(),
            debit_id: h.debit_id.clone(),
            created_at: h.created_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GrantView {
    pub id: String,
    pub account_id: String,
    pub credits: i64,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
    pub reason: String,
    pub balance_after: i64,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LineView {
    /// `purchase`: credits bought that month; `refund`: credits of a
    /// purchase billed earlier, given back (negative).
    #[schema(inline)]
    pub kind: LineKind,
    pub purchase_id: String,
    /// The refund a `refund` line is for; null on purchase lines.
    pub refund_id: Option<String>,
    /// Negative on refund lines.
    pub credits: i64,
    pub unit_price: Micros,
    /// Credits x unit price, rounded half-up to the currency's minor unit.
    pub amount: Amount,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatementView {
    pub id: String,
    pub account_id: String,
    pub month: Month,
    #[schema(value_type = String, format = Date)]
    pub issued_on: Date,
    pub lines: Vec<LineView>,
    /// The sum of the rounded lines: what the platform charges.
    pub total: Amount,
    pub currency: Currency,
    #[schema(inline)]
    pub status: StatementStatus,
}

impl StatementView {
    pub fn of(s: &Statement) -> StatementView {
        let line = |l: &Line| LineView {
            kind: l.kind(),
            purchase_id: l.purchase_id.clone(),
            refund_id: l.refund_id.clone(),
            credits: l.credits,
            unit_price: l.unit_price,
            amount: s.currency.amount(l.amount),
        };
        StatementView {
            id: s.id.clone(),
            account_id: s.account_id.to_string(),
            month: s.month,
            issued_on: s.issued_on,
            lines: s.lines.iter().map(line).collect(),
            total: s.currency.amount(s.total),
            currency: s.currency.clone(),
            status: s.status,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EntryView {
    pub id: i64,
    pub account_id: String,
    #[schema(inline)]
    pub kind: EntryKind,
    pub lot_id: String,
    #[schema(inline)]
    pub lot_kind: LotKind,
    pub credits: i64,
    pub held_credits: i64,
    pub balance_after: i64,
    pub source: Option<String>,
    pub reference: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub effective_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

impl EntryView {
    pub fn of(account: &str, e: &Entry) -> EntryView {
        EntryView {
            id: e.id,
            account_id: account.to_string(),
            kind: e.kind,
            lot_id: e.lot_id.clone(),
            lot_kind: LotKind::of_lot_id(&e.lot_id),
            credits: e.delta_credits,
            held_credits: e.held_delta_credits,
            balance_after: e.balance_after,
            source: e.source.clone(),
            reference: e.reference.clone(),
            effective_at: e.effective_at,
            created_at: e.created_at,
        }
    }
}

/// Usage of one local month, from the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageView {
    pub month: Month,
    pub free_granted: i64,
    pub free_used: i64,
    pub free_expired: i64,
    pub paid_purchased: i64,
    pub paid_used: i64,
    /// Unused purchased credits taken back by purchase refunds.
    pub paid_refunded: i64,
    pub grants_granted: i64,
    pub grants_used: i64,
    pub grants_expired: i64,
    /// Credits of undelivered messages given back (debit refunds).
    pub refunded: i64,
}

/// A page of a list, newest first (API.md "Lists"). Its OpenAPI schema
/// is written by hand in `http::openapi` (`Page_<Item>`, items a `$ref`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}
