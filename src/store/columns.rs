//! How every stored record maps to the columns of its table, shared by the
//! SQLite and PostgreSQL stores: one column list per table, one function to
//! read a row and one to give the values of a write.
//!
//! Both databases take the same SQL here: `$1`-style parameters (SQLite
//! numbers named parameters in order of appearance) and
//! `INSERT .. ON CONFLICT (key) DO UPDATE`. Timestamps are integer
//! microseconds since the epoch, UTC; per-lot parts of holds and debits and
//! statement lines are small JSON arrays. A value that does not read back
//! is a corrupted row, reported, never guessed.

use std::sync::OnceLock;

use jiff::Timestamp;

use crate::domain::DomainError;
use crate::domain::account::{Account, AccountId};
use crate::domain::debit::Debit;
use crate::domain::entry::{Entry, EntryKind};
use crate::domain::event::{Event, EventType};
use crate::domain::hold::{Hold, HoldStatus};
use crate::domain::lot::{Breakdown, Lot, LotKind};
use crate::domain::money::{Currency, Micros};
use crate::domain::period::{Month, Zone};
use crate::domain::purchase::{Purchase, PurchaseRefund};
use crate::domain::statement::{Statement, StatementStatus};
use crate::domain::usage;
use crate::domain::view::UsageView;

/// Reading the columns of one row, by position.
pub trait Cols {
    fn int(&self, i: usize) -> Result<i64, String>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>, String>;
    fn text(&self, i: usize) -> Result<String, String>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, String>;
    fn flag(&self, i: usize) -> Result<bool, String>;
}

/// One value of a write.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Val {
    Int(i64),
    Text(String),
    Flag(bool),
    /// A NULL; `Int` or `Text` by column in PostgreSQL, which types NULLs.
    Null,
}

impl From<i64> for Val {
    fn from(v: i64) -> Val {
        Val::Int(v)
    }
}
impl From<bool> for Val {
    fn from(v: bool) -> Val {
        Val::Flag(v)
    }
}
impl From<String> for Val {
    fn from(v: String) -> Val {
        Val::Text(v)
    }
}
impl From<&str> for Val {
    fn from(v: &str) -> Val {
        Val::Text(v.to_string())
    }
}
impl<T: Into<Val>> From<Option<T>> for Val {
    fn from(v: Option<T>) -> Val {
        v.map_or(Val::Null, Into::into)
    }
}

/// A table: its name, its columns in the order rows are read and written,
/// and its key (always the account first). Its SQL is built once.
pub struct Table {
    pub name: &'static str,
    pub cols: &'static [&'static str],
    pub key: &'static [&'static str],
    /// Counters: an upsert adds a row's values to the stored ones instead
    /// of overwriting them.
    additive: bool,
    sql: OnceLock<[String; 4]>,
}

/// A query built once per call site: `cached!(format!(...))`. Statements
/// are looked up by their text in the prepared-statement caches, so the
/// hot path must not format them again each time.
#[macro_export]
macro_rules! cached {
    ($sql:expr) => {{
        static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        SQL.get_or_init(|| $sql).as_str()
    }};
}

impl Table {
    const fn new(name: &'static str, cols: &'static [&'static str], key: &'static [&'static str]) -> Table {
        Table { name, cols, key, additive: false, sql: OnceLock::new() }
    }

    /// A table of counters (see [`Table::additive`]).
    const fn counters(
        name: &'static str,
        cols: &'static [&'static str],
        key: &'static [&'static str],
    ) -> Table {
        Table { name, cols, key, additive: true, sql: OnceLock::new() }
    }

    fn built(&self) -> &[String; 4] {
        self.sql.get_or_init(|| {
            let params: Vec<String> = (1..=self.cols.len()).map(|i| format!("${i}")).collect();
            let insert = format!(
                "INSERT INTO {} ({}) VALUES ({})",
                self.name,
                self.cols.join(", "),
                params.join(", ")
            );
            let set: Vec<String> = self
                .cols
                .iter()
                .filter(|c| !self.key.contains(c))
                .map(|c| {
                    if self.additive {
                        format!("{c} = {}.{c} + excluded.{c}", self.name)
                    } else {
                        format!("{c} = excluded.{c}")
                    }
                })
                .collect();
            let conflict = format!(" ON CONFLICT ({}) DO UPDATE SET {}", self.key.join(", "), set.join(", "));
            [self.cols.join(", "), insert.clone(), insert + &conflict, conflict]
        })
    }

    /// Whether an upsert adds to the stored values (counters).
    pub fn is_additive(&self) -> bool {
        self.additive
    }

    /// `account_id, lot_id, ...`
    pub fn list(&self) -> &str {
        &self.built()[0]
    }

    /// `SELECT <all columns> FROM <table> ` followed by `rest`.
    pub fn select(&self, rest: &str) -> String {
        format!("SELECT {} FROM {} {rest}", self.list(), self.name)
    }

    pub fn insert(&self) -> &str {
        &self.built()[1]
    }

    /// Insert, or overwrite every non-key column of the row with that key
    /// (add to them, for counters).
    pub fn upsert(&self) -> &str {
        &self.built()[2]
    }

    /// Writes many rows in one statement: `INSERT INTO <table> (<all
    /// columns>) SELECT <select> FROM <source>`, as an upsert if `upsert`.
    pub fn insert_from(&self, select: &str, source: &str, upsert: bool) -> String {
        let conflict = if upsert { self.built()[3].as_str() } else { "" };
        format!("INSERT INTO {} ({}) SELECT {select} FROM {source}{conflict}", self.name, self.list())
    }
}

pub static ACCOUNTS: Table = Table::new(
    "accounts",
    &[
        "account_id",
        "name",
        "time_zone",
        "monthly_free_credits",
        "unit_price_micros",
        "currency",
        "auto_recharge",
        "low_balance_threshold",
        "monthly_purchase_limit",
        "created_at",
        "free_month",
        "billed_through",
        "suspended_by",
        "purchased_month",
        "purchased_month_credits",
        "status",
        "event_sequence",
        "notices",
        "reset_announced",
    ],
    &["account_id"],
);
pub static LOTS: Table = Table::new(
    "lots",
    &[
        "account_id",
        "lot_id",
        "kind",
        "original",
        "remaining",
        "held",
        "expires_at",
        "expired",
        "created_at",
        "unit_price_micros",
        "active",
    ],
    &["account_id", "lot_id"],
);
pub static HOLDS: Table = Table::new(
    "holds",
    &[
        "account_id",
        "hold_id",
        "credits",
        "captured",
        "status",
        "expires_at",
        "reference",
        "created_at",
        "parts",
        "debit_id",
    ],
    &["account_id", "hold_id"],
);
pub static DEBITS: Table = Table::new(
    "debits",
    &[
        "account_id",
        "debit_id",
        "credits",
        "refunded",
        "reference",
        "description",
        "created_at",
        "from_free",
        "from_grants",
        "from_paid",
        "parts",
        "hold_id",
        "balance_after",
    ],
    &["account_id", "debit_id"],
);
pub static PURCHASES: Table = Table::new(
    "purchases",
    &[
        "account_id",
        "purchase_id",
        "credits",
        "unit_price_micros",
        "currency",
        "purchased_at",
        "month",
        "refunded_credits",
        "refunded_unbilled_credits",
        "statement_id",
        "automatic",
    ],
    &["account_id", "purchase_id"],
);
pub static REFUNDS: Table = Table::new(
    "purchase_refunds",
    &[
        "account_id",
        "refund_id",
        "purchase_id",
        "credits",
        "unit_price_micros",
        "created_at",
        "month",
        "needs_line",
        "statement_id",
    ],
    &["account_id", "refund_id"],
);
pub static STATEMENTS: Table = Table::new(
    "statements",
    &[
        "account_id",
        "month",
        "statement_id",
        "issued_on",
        "lines",
        "total_micros",
        "currency",
        "status",
        "created_at",
    ],
    &["account_id", "month"],
);
pub static ENTRIES: Table = Table::new(
    "entries",
    &[
        "account_id",
        "entry_id",
        "kind",
        "lot_id",
        "delta_credits",
        "held_delta_credits",
        "balance_after",
        "source",
        "reference",
        "idempotency_key",
        "effective_at",
        "created_at",
    ],
    &["account_id", "entry_id"],
);

/// The outbox: every event of every account, numbered per account, written
/// with the change that caused it. `dispatched` turns true once the
/// delivery worker has queued it for every endpoint.
pub static EVENTS: Table = Table::new(
    "events",
    &["account_id", "sequence", "event_id", "type", "created_at", "data", "dispatched"],
    &["account_id", "sequence"],
);

pub fn event(r: &impl Cols) -> Result<Event, String> {
    Ok(Event {
        sequence: r.int(1)?,
        id: r.text(2)?,
        kind: named(r, 3, EventType::parse)?,
        created_at: ts(r, 4)?,
        data: json(r, 5)?,
    })
}

pub fn event_vals(account: &AccountId, e: &Event) -> Vec<Val> {
    vec![
        account.as_str().into(),
        e.sequence.into(),
        e.id.clone().into(),
        e.kind.as_str().into(),
        micros(e.created_at).into(),
        to_json(&e.data).into(),
        false.into(),
    ]
}

pub static KEYS: Table = Table::new(
    "idempotency_keys",
    &["account_id", "key", "request", "response", "created_at"],
    &["account_id", "key"],
);

/// Each account's usage counters per local month (see
/// [`crate::domain::usage`]): written with the entries, added up.
pub static USAGE: Table = Table::counters("usage_months", &USAGE_COLS, &["account_id", "month"]);

/// The account, the month, then the counters named as the domain names them.
const USAGE_COLS: [&str; 12] = {
    let c = usage::COUNTS;
    ["account_id", "month", c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9]]
};

pub fn usage(r: &impl Cols) -> Result<UsageView, String> {
    let mut c = [0i64; 10];
    for (i, n) in c.iter_mut().enumerate() {
        *n = r.int(2 + i)?;
    }
    Ok(usage::from_counts(parsed(r, 1, Month::parse)?, c))
}

pub fn usage_vals(a: &AccountId, u: &UsageView) -> Vec<Val> {
    let mut vals: Vec<Val> = vec![a.as_str().into(), u.month.to_string().into()];
    vals.extend(usage::counts(u).map(Val::Int));
    vals
}

/// Rows in every table of the ledger, one number.
pub const ROW_COUNT_SQL: &str = "SELECT CAST((SELECT COUNT(*) FROM accounts) + (SELECT COUNT(*) FROM lots) + (SELECT COUNT(*) FROM holds) + (SELECT COUNT(*) FROM debits) + (SELECT COUNT(*) FROM purchases) + (SELECT COUNT(*) FROM purchase_refunds) + (SELECT COUNT(*) FROM statements) + (SELECT COUNT(*) FROM entries) + (SELECT COUNT(*) FROM idempotency_keys) + (SELECT COUNT(*) FROM account_tokens) + (SELECT COUNT(*) FROM usage_months) + (SELECT COUNT(*) FROM events) AS BIGINT)";

pub fn micros(t: Timestamp) -> i64 {
    t.as_microsecond()
}

fn corrupt(i: usize, why: impl std::fmt::Display) -> String {
    format!("corrupted row (column {i}): {why}")
}

/// A stored instant (microseconds since the epoch).
pub fn instant(micros: i64) -> Result<Timestamp, String> {
    Timestamp::from_microsecond(micros).map_err(|e| format!("corrupt instant {micros}: {e}"))
}

pub fn ts(r: &impl Cols, i: usize) -> Result<Timestamp, String> {
    Timestamp::from_microsecond(r.int(i)?).map_err(|e| corrupt(i, e))
}

pub fn opt_ts(r: &impl Cols, i: usize) -> Result<Option<Timestamp>, String> {
    r.opt_int(i)?.map(|v| Timestamp::from_microsecond(v).map_err(|e| corrupt(i, e))).transpose()
}

fn parsed<T>(
    r: &impl Cols,
    i: usize,
    parse: impl FnOnce(&str) -> Result<T, DomainError>,
) -> Result<T, String> {
    parse(&r.text(i)?).map_err(|e| corrupt(i, e))
}

fn opt_parsed<T>(
    r: &impl Cols,
    i: usize,
    parse: impl FnOnce(&str) -> Result<T, DomainError>,
) -> Result<Option<T>, String> {
    r.opt_text(i)?.map(|s| parse(&s).map_err(|e| corrupt(i, e))).transpose()
}

fn named<T>(r: &impl Cols, i: usize, parse: fn(&str) -> Option<T>) -> Result<T, String> {
    let s = r.text(i)?;
    parse(&s).ok_or_else(|| corrupt(i, format!("unknown value {s:?}")))
}

fn json<T: serde::de::DeserializeOwned>(r: &impl Cols, i: usize) -> Result<T, String> {
    serde_json::from_str(&r.text(i)?).map_err(|e| corrupt(i, e))
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serializes")
}

pub fn account(r: &impl Cols) -> Result<Account, String> {
    let auto = r.opt_text(6)?;
    Ok(Account {
        id: parsed(r, 0, AccountId::parse)?,
        name: r.text(1)?,
        zone: parsed(r, 2, Zone::parse)?,
        monthly_free_credits: r.int(3)?,
        unit_price: Micros::from_micros(r.int(4)?),
        currency: parsed(r, 5, Currency::new)?,
        auto_recharge: auto.map(|s| serde_json::from_str(&s).map_err(|e| corrupt(6, e))).transpose()?,
        low_balance_threshold: r.int(7)?,
        monthly_purchase_limit: r.int(8)?,
        created_at: ts(r, 9)?,
        free_month: opt_parsed(r, 10, Month::parse)?,
        billed_through: opt_parsed(r, 11, Month::parse)?,
        suspended_by: r.opt_text(12)?,
        purchased_month: opt_parsed(r, 13, Month::parse)?,
        purchased_month_credits: r.int(14)?,
        closed: match r.text(15)?.as_str() {
            "active" => false,
            "closed" => true,
            other => return Err(corrupt(15, format!("status {other:?}"))),
        },
        event_sequence: r.int(16)?,
        notices: json(r, 17)?,
        reset_announced: opt_parsed(r, 18, Month::parse)?,
    })
}

pub fn account_vals(a: &Account) -> Vec<Val> {
    vec![
        a.id.as_str().into(),
        a.name.clone().into(),
        a.zone.name().into(),
        a.monthly_free_credits.into(),
        a.unit_price.as_micros().into(),
        a.currency.as_str().into(),
        a.auto_recharge.as_ref().map(to_json).into(),
        a.low_balance_threshold.into(),
        a.monthly_purchase_limit.into(),
        micros(a.created_at).into(),
        a.free_month.map(|m| m.to_string()).into(),
        a.billed_through.map(|m| m.to_string()).into(),
        a.suspended_by.clone().into(),
        a.purchased_month.map(|m| m.to_string()).into(),
        a.purchased_month_credits.into(),
        a.status().into(),
        a.event_sequence.into(),
        to_json(&a.notices).into(),
        a.reset_announced.map(|m| m.to_string()).into(),
    ]
}

pub fn lot(r: &impl Cols) -> Result<Lot, String> {
    Ok(Lot {
        id: r.text(1)?,
        kind: named(r, 2, LotKind::parse)?,
        original: r.int(3)?,
        remaining: r.int(4)?,
        held: r.int(5)?,
        expires_at: opt_ts(r, 6)?,
        expired: r.flag(7)?,
        created_at: ts(r, 8)?,
        unit_price: r.opt_int(9)?.map(Micros::from_micros),
    })
}

pub fn lot_vals(account: &AccountId, l: &Lot, active: bool) -> Vec<Val> {
    vec![
        account.as_str().into(),
        l.id.clone().into(),
        l.kind.as_str().into(),
        l.original.into(),
        l.remaining.into(),
        l.held.into(),
        l.expires_at.map(micros).into(),
        l.expired.into(),
        micros(l.created_at).into(),
        l.unit_price.map(Micros::as_micros).into(),
        active.into(),
    ]
}

pub fn hold(r: &impl Cols) -> Result<Hold, String> {
    Ok(Hold {
        id: r.text(1)?,
        credits: r.int(2)?,
        captured: r.int(3)?,
        status: named(r, 4, HoldStatus::parse)?,
        expires_at: ts(r, 5)?,
        reference: r.opt_text(6)?,
        created_at: ts(r, 7)?,
        parts: json(r, 8)?,
        debit_id: r.opt_text(9)?,
    })
}

pub fn hold_vals(account: &AccountId, h: &Hold) -> Vec<Val> {
    vec![
        account.as_str().into(),
        h.id.clone().into(),
        h.credits.into(),
        h.captured.into(),
        h.status.as_str().into(),
        micros(h.expires_at).into(),
        h.reference.clone().into(),
        micros(h.created_at).into(),
        to_json(&h.parts).into(),
        h.debit_id.clone().into(),
    ]
}

pub fn debit(r: &impl Cols) -> Result<Debit, String> {
    Ok(Debit {
        id: r.text(1)?,
        credits: r.int(2)?,
        refunded: r.int(3)?,
        reference: r.opt_text(4)?,
        description: r.opt_text(5)?,
        created_at: ts(r, 6)?,
        breakdown: Breakdown { from_free: r.int(7)?, from_grants: r.int(8)?, from_paid: r.int(9)? },
        parts: json(r, 10)?,
        hold_id: r.opt_text(11)?,
        balance_after: r.int(12)?,
    })
}

pub fn debit_vals(account: &AccountId, d: &Debit) -> Vec<Val> {
    vec![
        account.as_str().into(),
        d.id.clone().into(),
        d.credits.into(),
        d.refunded.into(),
        d.reference.clone().into(),
        d.description.clone().into(),
        micros(d.created_at).into(),
        d.breakdown.from_free.into(),
        d.breakdown.from_grants.into(),
        d.breakdown.from_paid.into(),
        to_json(&d.parts).into(),
        d.hold_id.clone().into(),
        d.balance_after.into(),
    ]
}

pub fn purchase(r: &impl Cols) -> Result<Purchase, String> {
    Ok(Purchase {
        id: r.text(1)?,
        credits: r.int(2)?,
        unit_price: Micros::from_micros(r.int(3)?),
        currency: parsed(r, 4, Currency::new)?,
        purchased_at: ts(r, 5)?,
        month: parsed(r, 6, Month::parse)?,
        refunded_credits: r.int(7)?,
        refunded_unbilled_credits: r.int(8)?,
        statement_id: r.opt_text(9)?,
        automatic: r.flag(10)?,
    })
}

pub fn purchase_vals(account: &AccountId, p: &Purchase) -> Vec<Val> {
    vec![
        account.as_str().into(),
        p.id.clone().into(),
        p.credits.into(),
        p.unit_price.as_micros().into(),
        p.currency.as_str().into(),
        micros(p.purchased_at).into(),
        p.month.to_string().into(),
        p.refunded_credits.into(),
        p.refunded_unbilled_credits.into(),
        p.statement_id.clone().into(),
        p.automatic.into(),
    ]
}

pub fn refund(r: &impl Cols) -> Result<PurchaseRefund, String> {
    Ok(PurchaseRefund {
        id: r.text(1)?,
        purchase_id: r.text(2)?,
        credits: r.int(3)?,
        unit_price: Micros::from_micros(r.int(4)?),
        created_at: ts(r, 5)?,
        month: parsed(r, 6, Month::parse)?,
        needs_line: r.flag(7)?,
        statement_id: r.opt_text(8)?,
    })
}

pub fn refund_vals(account: &AccountId, f: &PurchaseRefund) -> Vec<Val> {
    vec![
        account.as_str().into(),
        f.id.clone().into(),
        f.purchase_id.clone().into(),
        f.credits.into(),
        f.unit_price.as_micros().into(),
        micros(f.created_at).into(),
        f.month.to_string().into(),
        f.needs_line.into(),
        f.statement_id.clone().into(),
    ]
}

pub fn statement(r: &impl Cols) -> Result<Statement, String> {
    Ok(Statement {
        account_id: parsed(r, 0, AccountId::parse)?,
        month: parsed(r, 1, Month::parse)?,
        id: r.text(2)?,
        issued_on: r.text(3)?.parse().map_err(|e| corrupt(3, e))?,
        lines: json(r, 4)?,
        total: Micros::from_micros(r.int(5)?),
        currency: parsed(r, 6, Currency::new)?,
        status: named(r, 7, StatementStatus::parse)?,
        created_at: ts(r, 8)?,
    })
}

pub fn statement_vals(s: &Statement) -> Vec<Val> {
    vec![
        s.account_id.as_str().into(),
        s.month.to_string().into(),
        s.id.clone().into(),
        s.issued_on.to_string().into(),
        to_json(&s.lines).into(),
        s.total.as_micros().into(),
        s.currency.as_str().into(),
        s.status.as_str().into(),
        micros(s.created_at).into(),
    ]
}

pub fn entry(r: &impl Cols) -> Result<Entry, String> {
    Ok(Entry {
        id: r.int(1)?,
        kind: named(r, 2, EntryKind::parse)?,
        lot_id: r.text(3)?,
        delta_credits: r.int(4)?,
        held_delta_credits: r.int(5)?,
        balance_after: r.int(6)?,
        source: r.opt_text(7)?,
        reference: r.opt_text(8)?,
        effective_at: ts(r, 10)?,
        created_at: ts(r, 11)?,
    })
}

pub fn entry_vals(account: &AccountId, e: &Entry, key: Option<&str>) -> Vec<Val> {
    vec![
        account.as_str().into(),
        e.id.into(),
        e.kind.as_str().into(),
        e.lot_id.clone().into(),
        e.delta_credits.into(),
        e.held_delta_credits.into(),
        e.balance_after.into(),
        e.source.clone().into(),
        e.reference.clone().into(),
        key.into(),
        micros(e.effective_at).into(),
        micros(e.created_at).into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upserts_overwrite_every_column_but_the_key() {
        assert_eq!(
            HOLDS.upsert(),
            "INSERT INTO holds (account_id, hold_id, credits, captured, status, expires_at, reference, created_at, \
             parts, debit_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (account_id, hold_id) \
             DO UPDATE SET credits = excluded.credits, captured = excluded.captured, status = excluded.status, \
             expires_at = excluded.expires_at, reference = excluded.reference, created_at = excluded.created_at, \
             parts = excluded.parts, debit_id = excluded.debit_id"
        );
    }
}
