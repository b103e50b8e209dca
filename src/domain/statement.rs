//! Monthly statements (R5): one per account per month with purchases, one
//! line per purchase, refunds of already billed purchases as negative
//! lines, issued on the 1st of the following month, local time.

use jiff::{Timestamp, civil::Date};
use serde::{Deserialize, Serialize};

use super::DomainError;
use super::account::AccountId;
use super::money::{Currency, Micros};
use super::period::Month;
use super::state::{AccountState, Changes};
use super::view::StatementView;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatementStatus {
    Open,
    Paid,
    Failed,
}

impl StatementStatus {
    /// A payment outcome an operator may record: `paid` or `failed`.
    pub fn parse_payment(s: &str) -> Result<StatementStatus, DomainError> {
        match StatementStatus::parse(s) {
            Some(status @ (StatementStatus::Paid | StatementStatus::Failed)) => Ok(status),
            _ => Err(DomainError::invalid(format!("status must be paid or failed, got {s:?}"))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StatementStatus::Open => "open",
            StatementStatus::Paid => "paid",
            StatementStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<StatementStatus> {
        [StatementStatus::Open, StatementStatus::Paid, StatementStatus::Failed]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// What a statement line charges for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// Purchased credits (positive).
    Purchase,
    /// A refund of credits of a purchase billed earlier (negative).
    Refund,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// `None` on lines issued before lines had kinds (and before amounts
    /// were rounded: those lines are the exact product).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<LineKind>,
    pub purchase_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<String>,
    /// Negative for a refund line.
    pub credits: i64,
    pub unit_price: Micros,
    /// Credits x unit price, rounded half-up to the currency's minor unit.
    pub amount: Micros,
}

impl Line {
    pub fn kind(&self) -> LineKind {
        self.kind.unwrap_or(if self.credits < 0 { LineKind::Refund } else { LineKind::Purchase })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    pub id: String,
    pub account_id: AccountId,
    pub month: Month,
    pub issued_on: Date,
    pub lines: Vec<Line>,
    pub total: Micros,
    pub currency: Currency,
    pub status: StatementStatus,
    pub created_at: Timestamp,
}

impl Statement {
    /// `st_YYYY-MM_<account>`: unique per account and month, and routable to
    /// the account's shard from the id alone.
    pub fn id_for(account: &AccountId, month: Month) -> String {
        format!("st_{month}_{account}")
    }

    /// The account and month a statement id names.
    pub fn parse_id(id: &str) -> Result<(AccountId, Month), DomainError> {
        let not_found = || DomainError::not_found("statement", id);
        let rest = id.strip_prefix("st_").ok_or_else(not_found)?;
        if rest.len() < 9 || !rest.is_char_boundary(7) || rest.as_bytes()[7] != b'_' {
            return Err(not_found());
        }
        let month = Month::parse(&rest[..7]).map_err(|_| not_found())?;
        let account = AccountId::parse(&rest[8..]).map_err(|_| not_found())?;
        Ok((account, month))
    }
}

/// Closes every month up to `through` that has purchases or refund lines
/// not yet on a statement: one statement per such month, oldest first.
/// Months already closed are left alone, so closing twice changes nothing.
pub fn close_months(
    state: &mut AccountState,
    through: Option<Month>,
    now: Timestamp,
    changes: &mut Changes,
) -> Result<Vec<StatementView>, DomainError> {
    let zone = state.account.zone.clone();
    let current = Month::of(now, &zone);
    let through = through.unwrap_or(current.prev());
    if through >= current {
        return Err(DomainError::MonthNotEnded {
            month: through.to_string(),
            ends_at: through.end(&zone).to_string(),
        });
    }
    if state.account.billed_through.is_some_and(|b| b >= through) {
        return Ok(Vec::new());
    }
    let mut months: Vec<Month> = state
        .purchases
        .iter()
        .filter(|p| p.statement_id.is_none() && p.billable_credits() > 0)
        .map(|p| p.month)
        .chain(state.pending_refunds.iter().map(|r| r.month))
        .filter(|&m| m <= through)
        .collect();
    months.sort();
    months.dedup();
    let mut views = Vec::new();
    for month in months {
        let statement = close_one(state, month, now, changes)?;
        views.push(StatementView::of(&statement));
        // Kept in the state too, so a status change later in the same
        // group finds it.
        state.statements.push(statement.clone());
        changes.statements.push(statement);
    }
    state.account.billed_through = Some(through);
    Ok(views)
}

fn close_one(
    state: &mut AccountState,
    month: Month,
    now: Timestamp,
    changes: &mut Changes,
) -> Result<Statement, DomainError> {
    let a = &state.account;
    let id = Statement::id_for(&a.id, month);
    let mut lines = Vec::new();
    let mut total = Micros::ZERO;
    for p in state.purchases.iter_mut().filter(|p| p.month == month && p.statement_id.is_none()) {
        let credits = p.billable_credits();
        if credits == 0 {
            continue;
        }
        let amount = a.currency.charge(p.unit_price, credits)?;
        total = total.checked_add(amount)?;
        lines.push(Line {
            kind: Some(LineKind::Purchase),
            purchase_id: p.id.clone(),
            refund_id: None,
            credits,
            unit_price: p.unit_price,
            amount,
        });
        p.statement_id = Some(id.clone());
        changes.purchases.push(p.clone());
    }
    let (due, later): (Vec<_>, Vec<_>) =
        std::mem::take(&mut state.pending_refunds).into_iter().partition(|r| r.month == month);
    state.pending_refunds = later;
    for mut r in due {
        let amount = r.amount(&a.currency)?.checked_neg()?;
        total = total.checked_add(amount)?;
        lines.push(Line {
            kind: Some(LineKind::Refund),
            purchase_id: r.purchase_id.clone(),
            refund_id: Some(r.id.clone()),
            credits: -r.credits,
            unit_price: r.unit_price,
            amount,
        });
        r.statement_id = Some(id.clone());
        changes.refunds.push(r);
    }
    Ok(Statement {
        id,
        account_id: a.id.clone(),
        month,
        issued_on: month.next().first_day(),
        lines,
        total,
        currency: a.currency.clone(),
        status: StatementStatus::Open,
        created_at: now,
    })
}

/// Records the payment outcome of a statement. A `failed` statement
/// suspends new purchases until it is paid.
pub fn set_status(
    state: &mut AccountState,
    statement_id: &str,
    status: StatementStatus,
    changes: &mut Changes,
) -> Result<StatementView, DomainError> {
    let i = state
        .statements
        .iter()
        .position(|s| s.id == statement_id)
        .ok_or_else(|| DomainError::not_found("statement", statement_id))?;
    let from = state.statements[i].status;
    let allowed = matches!(
        (from, status),
        (StatementStatus::Open, StatementStatus::Paid | StatementStatus::Failed)
            | (StatementStatus::Failed, StatementStatus::Paid)
    );
    if from == status {
        return Ok(StatementView::of(&state.statements[i]));
    }
    if !allowed {
        return Err(DomainError::invalid(format!(
            "statement {statement_id} is {}; it cannot become {}",
            from.as_str(),
            status.as_str()
        )));
    }
    state.statements[i].status = status;
    changes.statements.push(state.statements[i].clone());
    state.account.suspended_by =
        state.statements.iter().find(|s| s.status == StatementStatus::Failed).map(|s| s.id.clone());
    Ok(StatementView::of(&state.statements[i]))
}

impl std::fmt::Display for StatementStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_ids_round_trip() {
        let account = AccountId::parse("cafe_1.x-2").unwrap();
        let month = Month::parse("2026-11").unwrap();
        let id = Statement::id_for(&account, month);
        assert_eq!(id, "st_2026-11_cafe_1.x-2");
        assert_eq!(Statement::parse_id(&id).unwrap(), (account, month));
        for bad in ["", "st_", "st_2026-11_", "st_2026-13_a", "pur_x", "st_2026-11xa"] {
            assert!(Statement::parse_id(bad).is_err(), "{bad:?}");
        }
    }
}
