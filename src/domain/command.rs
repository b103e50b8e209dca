//! Commands: every mutation of an account as plain data, and the one pure
//! function that applies a command to an account's state.
//!
//! Commands are data (not closures) so that a store can queue them, group
//! them into one transaction (SQLite group commit) and fingerprint them for
//! idempotency: the same key with a different command is a conflict.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::DomainError;
use super::account::{Account, AccountDefaults, AccountPatch, NewAccount};
use super::credits::Credits;
use super::grant::{self, GrantRequest};
use super::period::Month;
use super::purchase;
use super::recharge;
use super::spend::{self, DebitRequest, HoldRequest};
use super::state::{AccountState, Changes};
use super::statement::{self, StatementStatus};
use super::text;
use super::view::{
    AccountView, DebitRefundView, DebitView, GrantView, HoldView, PurchaseRefundView, PurchaseView,
    StatementView,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    Purchase {
        credits: Credits,
    },
    Debit {
        credits: Credits,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
    Hold {
        credits: Credits,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_seconds: Option<i64>,
    },
    Capture {
        hold_id: String,
        credits: i64,
    },
    Release {
        hold_id: String,
    },
    RefundDebit {
        debit_id: String,
        credits: Credits,
    },
    RefundPurchase {
        purchase_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credits: Option<Credits>,
    },
    Grant {
        credits: Credits,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<Timestamp>,
        reason: String,
    },
    UpdateAccount {
        patch: AccountPatch,
    },
    CloseMonths {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        through: Option<Month>,
    },
    SetStatementStatus {
        statement_id: String,
        status: StatementStatus,
    },
}

/// What a store must load besides the account, its active lots and holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Needs {
    pub hold: Option<String>,
    pub debit: Option<String>,
    pub purchase: Option<String>,
    /// Every purchase and refund not yet on a statement (close, balance).
    pub unbilled: bool,
    /// The unbilled purchases, if the account has auto-recharge on (a
    /// debit or hold may buy, and a purchase checks the unbilled total it
    /// joins): known once the account is loaded, so a second round.
    pub unbilled_if_recharging: bool,
    /// This statement, and every `failed` one of the account.
    pub statement: Option<String>,
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Purchase { .. } => "purchase",
            Command::Debit { .. } => "debit",
            Command::Hold { .. } => "hold",
            Command::Capture { .. } => "capture",
            Command::Release { .. } => "release",
            Command::RefundDebit { .. } => "refund_debit",
            Command::RefundPurchase { .. } => "refund_purchase",
            Command::Grant { .. } => "grant",
            Command::UpdateAccount { .. } => "update_account",
            Command::CloseMonths { .. } => "close_months",
            Command::SetStatementStatus { .. } => "set_statement_status",
        }
    }

    /// Checks the ids a command names before anything is loaded, so garbage
    /// never reaches a query.
    pub fn validate(&self) -> Result<(), DomainError> {
        match self {
            Command::Capture { hold_id, .. } | Command::Release { hold_id } => {
                text::check_object_id("hold", "hold_", hold_id)
            }
            Command::RefundDebit { debit_id, .. } => text::check_object_id("debit", "deb_", debit_id),
            Command::RefundPurchase { purchase_id, .. } => {
                text::check_object_id("purchase", "pur_", purchase_id)
            }
            Command::SetStatementStatus { statement_id, .. } => {
                text::check_object_id("statement", "st_", statement_id)
            }
            _ => Ok(()),
        }
    }

    pub fn needs(&self) -> Needs {
        match self {
            Command::Capture { hold_id, .. } | Command::Release { hold_id } => {
                Needs { hold: Some(hold_id.clone()), ..Needs::default() }
            }
            Command::RefundDebit { debit_id, .. } => {
                Needs { debit: Some(debit_id.clone()), ..Needs::default() }
            }
            Command::RefundPurchase { purchase_id, .. } => {
                Needs { purchase: Some(purchase_id.clone()), ..Needs::default() }
            }
            // A purchase checks the unbilled total it joins.
            Command::CloseMonths { .. } | Command::Purchase { .. } => {
                Needs { unbilled: true, ..Needs::default() }
            }
            Command::SetStatementStatus { statement_id, .. } => {
                Needs { statement: Some(statement_id.clone()), ..Needs::default() }
            }
            Command::Debit { .. } | Command::Hold { .. } => {
                Needs { unbilled_if_recharging: true, ..Needs::default() }
            }
            _ => Needs::default(),
        }
    }
}

/// The answer of a command, as first given; stored with its idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "body", rename_all = "snake_case")]
pub enum Outcome {
    Account(Box<AccountView>),
    Purchase(PurchaseView),
    PurchaseRefund(PurchaseRefundView),
    Debit(DebitView),
    DebitRefund(DebitRefundView),
    Hold(HoldView),
    Grant(GrantView),
    Closed(Vec<StatementView>),
    Statement(StatementView),
}

impl Outcome {
    /// The API shape of the answer: its body, without the type tag.
    pub fn body(&self) -> serde_json::Value {
        match serde_json::to_value(self).expect("outcomes serialize") {
            serde_json::Value::Object(mut m) => m.remove("body").unwrap_or_default(),
            other => other,
        }
    }
}

/// What a transition takes from outside besides the state: the time and a
/// fresh random suffix for the id of anything it creates (the domain reads
/// no clock and no random source).
#[derive(Debug, Clone)]
pub struct Ctx {
    pub now: Timestamp,
    pub new_id: String,
}

/// Applies `cmd` to `state` at `ctx.now`: rolls time forward, then runs the
/// operation. On error the caller must discard `state` and the changes.
pub fn apply(state: &mut AccountState, cmd: &Command, ctx: &Ctx) -> Result<(Outcome, Changes), DomainError> {
    cmd.validate()?;
    let now = ctx.now;
    let id = |prefix: &str| format!("{prefix}_{}", ctx.new_id);
    let mut changes = Changes::default();
    state.roll_forward(now, &mut changes);
    let c = &mut changes;
    let outcome = match cmd {
        Command::Purchase { credits } => {
            Outcome::Purchase(purchase::purchase(state, id("pur"), *credits, false, now, c)?)
        }
        Command::Debit { credits, reference, description } => {
            let req = DebitRequest {
                id: id("deb"),
                credits: *credits,
                reference: reference.as_deref(),
                description: description.as_deref(),
                now,
            };
            recharge::before_spend(state, credits.get(), &ctx.new_id, now, c);
            let debit = spend::debit(state, req, c)?;
            recharge::after_spend(state, &ctx.new_id, now, c);
            Outcome::Debit(debit)
        }
        Command::Hold { credits, reference, ttl_seconds } => {
            let req = HoldRequest {
                id: id("hold"),
                credits: *credits,
                reference: reference.as_deref(),
                ttl_seconds: *ttl_seconds,
                now,
            };
            recharge::before_spend(state, credits.get(), &ctx.new_id, now, c);
            let hold = spend::hold(state, req, c)?;
            recharge::after_spend(state, &ctx.new_id, now, c);
            Outcome::Hold(hold)
        }
        Command::Capture { hold_id, credits } => {
            Outcome::Hold(spend::capture(state, hold_id, *credits, id("deb"), now, c)?)
        }
        Command::Release { hold_id } => Outcome::Hold(spend::release(state, hold_id, now, c)?),
        Command::RefundDebit { debit_id, credits } => {
            Outcome::DebitRefund(spend::refund_debit(state, id("drf"), debit_id, *credits, now, c)?)
        }
        Command::RefundPurchase { purchase_id, credits } => Outcome::PurchaseRefund(
            purchase::refund_purchase(state, id("prf"), purchase_id, *credits, now, c)?,
        ),
        Command::Grant { credits, expires_at, reason } => {
            let req = GrantRequest { id: id("grt"), credits: *credits, expires_at: *expires_at, reason, now };
            Outcome::Grant(grant::grant(state, req, c)?)
        }
        Command::UpdateAccount { patch } => Outcome::Account(Box::new(update_account(state, patch, now, c)?)),
        Command::CloseMonths { through } => {
            Outcome::Closed(statement::close_months(state, *through, now, c)?)
        }
        Command::SetStatementStatus { statement_id, status } => {
            Outcome::Statement(statement::set_status(state, statement_id, *status, c)?)
        }
    };
    announce(state, cmd, &outcome, ctx, &mut changes);
    Ok((outcome, changes))
}

/// The events an applied command calls for, in this order (after those of
/// an auto-recharge, made during the command): what it made (a purchase,
/// a refund, statements), the new month's allowance (from the task that
/// closes months), then the alerts its end state calls for.
fn announce(state: &mut AccountState, cmd: &Command, outcome: &Outcome, ctx: &Ctx, changes: &mut Changes) {
    use super::event::{EventType, alerts, announce_reset, emit};
    use serde_json::json;
    let (id, now) = (ctx.new_id.as_str(), ctx.now);
    match outcome {
        Outcome::Purchase(p) => {
            emit(state, changes, id, EventType::PurchaseCreated, now, json!({ "purchase": p }))
        }
        Outcome::PurchaseRefund(r) => {
            emit(state, changes, id, EventType::PurchaseRefunded, now, json!({ "refund": r }))
        }
        Outcome::Closed(statements) => {
            for s in statements {
                emit(state, changes, id, EventType::StatementIssued, now, json!({ "statement": s }));
            }
        }
        _ => {}
    }
    if matches!(cmd, Command::CloseMonths { .. }) {
        announce_reset(state, changes, id, now);
    }
    recharge::rearm(state);
    alerts(state, changes, id, now);
}

/// Changes settings. A new time zone moves the end of the current free
/// month to the new zone's month boundary; a new allowance applies from the
/// next month (this month's free lot was already granted).
fn update_account(
    state: &mut AccountState,
    patch: &AccountPatch,
    now: Timestamp,
    changes: &mut Changes,
) -> Result<AccountView, DomainError> {
    if patch.is_empty() {
        return Err(DomainError::invalid("nothing to change: give at least one setting"));
    }
    let next = patch.apply_to(&state.account)?;
    let zone_changed = next.zone != state.account.zone;
    state.account = next;
    if zone_changed {
        let zone = state.account.zone.clone();
        if let Some(month) = state.account.free_month {
            let free_id = super::lot::Lot::free_id(month);
            if let Some(lot) = state.lots.iter_mut().find(|l| l.id == free_id && !l.expired) {
                lot.expires_at = Some(month.end(&zone));
            }
        }
        state.roll_forward(now, changes);
    }
    Ok(AccountView::of(&state.account))
}

/// Whether creating `new` over an existing account is a repeat (same
/// settings: answer the account again) or a conflict.
pub fn create_account(
    new: &NewAccount,
    existing: Option<&Account>,
    defaults: &AccountDefaults,
    now: Timestamp,
) -> Result<(Account, bool), DomainError> {
    let built = new.build(defaults, now)?;
    let Some(existing) = existing else {
        return Ok((built, true));
    };
    let same = existing.name == built.name
        && existing.zone == built.zone
        && existing.monthly_free_credits == built.monthly_free_credits
        && existing.unit_price == built.unit_price
        && existing.currency == built.currency;
    if !same {
        return Err(DomainError::Conflict(format!(
            "account {} already exists with other settings",
            existing.id
        )));
    }
    Ok((existing.clone(), false))
}
