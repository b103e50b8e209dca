//! Rows to domain values and back. Timestamps are integer microseconds;
//! per-lot parts of holds and debits are small JSON arrays; anything that
//! does not parse back is reported as a corrupted row, never guessed.

use jiff::Timestamp;
use rusqlite::types::Type;
use rusqlite::{Connection, Row, params};

use crate::domain::DomainError;
use crate::domain::account::{Account, AccountId};
use crate::domain::debit::Debit;
use crate::domain::entry::{Entry, EntryKind};
use crate::domain::hold::{Hold, HoldStatus};
use crate::domain::lot::{Breakdown, Lot, LotKind};
use crate::domain::money::{Currency, Micros};
use crate::domain::period::{Month, Zone};
use crate::domain::purchase::{Purchase, PurchaseRefund};
use crate::domain::statement::{Statement, StatementStatus};

pub fn micros(t: Timestamp) -> i64 {
    t.as_microsecond()
}

fn bad(col: usize, why: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, Type::Text, format!("corrupted row: {why}").into())
}

fn ts(row: &Row<'_>, col: usize) -> rusqlite::Result<Timestamp> {
    let v: i64 = row.get(col)?;
    Timestamp::from_microsecond(v).map_err(|e| bad(col, e))
}

fn ts_opt(row: &Row<'_>, col: usize) -> rusqlite::Result<Option<Timestamp>> {
    let v: Option<i64> = row.get(col)?;
    v.map(|v| Timestamp::from_microsecond(v).map_err(|e| bad(col, e))).transpose()
}

fn parsed<T>(
    row: &Row<'_>,
    col: usize,
    parse: impl FnOnce(&str) -> Result<T, DomainError>,
) -> rusqlite::Result<T> {
    let s: String = row.get(col)?;
    parse(&s).map_err(|e| bad(col, e))
}

fn parsed_opt<T>(
    row: &Row<'_>,
    col: usize,
    parse: impl FnOnce(&str) -> Result<T, DomainError>,
) -> rusqlite::Result<Option<T>> {
    let s: Option<String> = row.get(col)?;
    s.map(|s| parse(&s).map_err(|e| bad(col, e))).transpose()
}

fn json<T: serde::de::DeserializeOwned>(row: &Row<'_>, col: usize) -> rusqlite::Result<T> {
    let s: String = row.get(col)?;
    serde_json::from_str(&s).map_err(|e| bad(col, e))
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serializes")
}

fn named<T>(row: &Row<'_>, col: usize, parse: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let s: String = row.get(col)?;
    parse(&s).ok_or_else(|| bad(col, format!("unknown value {s:?}")))
}

pub const ACCOUNT_COLS: &str = "account_id, name, time_zone, monthly_free_credits, unit_price_micros, currency, \
    auto_recharge, low_balance_threshold, monthly_purchase_limit, created_at, free_month, billed_through, suspended_by";

pub fn account(row: &Row<'_>) -> rusqlite::Result<Account> {
    let auto: Option<String> = row.get(6)?;
    Ok(Account {
        id: parsed(row, 0, AccountId::parse)?,
        name: row.get(1)?,
        zone: parsed(row, 2, Zone::parse)?,
        monthly_free_credits: row.get(3)?,
        unit_price: Micros(row.get(4)?),
        currency: parsed(row, 5, Currency::new)?,
        auto_recharge: auto.map(|s| serde_json::from_str(&s).map_err(|e| bad(6, e))).transpose()?,
        low_balance_threshold: row.get(7)?,
        monthly_purchase_limit: row.get(8)?,
        created_at: ts(row, 9)?,
        free_month: parsed_opt(row, 10, Month::parse)?,
        billed_through: parsed_opt(row, 11, Month::parse)?,
        suspended_by: row.get(12)?,
    })
}

pub fn insert_account(conn: &Connection, a: &Account) -> rusqlite::Result<()> {
    let sql = format!(
        "INSERT INTO accounts ({ACCOUNT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
    );
    conn.prepare_cached(&sql)?.execute(params![
        a.id.as_str(),
        a.name,
        a.zone.name(),
        a.monthly_free_credits,
        a.unit_price.0,
        a.currency.as_str(),
        a.auto_recharge.as_ref().map(to_json),
        a.low_balance_threshold,
        a.monthly_purchase_limit,
        micros(a.created_at),
        a.free_month.map(|m| m.to_string()),
        a.billed_through.map(|m| m.to_string()),
        a.suspended_by,
    ])?;
    Ok(())
}

pub fn update_account(conn: &Connection, a: &Account) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE accounts SET name = ?2, time_zone = ?3, monthly_free_credits = ?4, unit_price_micros = ?5, \
         auto_recharge = ?6, low_balance_threshold = ?7, monthly_purchase_limit = ?8, free_month = ?9, \
         billed_through = ?10, suspended_by = ?11 WHERE account_id = ?1",
    )?
    .execute(params![
        a.id.as_str(),
        a.name,
        a.zone.name(),
        a.monthly_free_credits,
        a.unit_price.0,
        a.auto_recharge.as_ref().map(to_json),
        a.low_balance_threshold,
        a.monthly_purchase_limit,
        a.free_month.map(|m| m.to_string()),
        a.billed_through.map(|m| m.to_string()),
        a.suspended_by,
    ])?;
    Ok(())
}

pub const LOT_COLS: &str =
    "lot_id, kind, original, remaining, held, expires_at, expired, created_at, unit_price_micros";

pub fn lot(row: &Row<'_>) -> rusqlite::Result<Lot> {
    let price: Option<i64> = row.get(8)?;
    Ok(Lot {
        id: row.get(0)?,
        kind: named(row, 1, LotKind::parse)?,
        original: row.get(2)?,
        remaining: row.get(3)?,
        held: row.get(4)?,
        expires_at: ts_opt(row, 5)?,
        expired: row.get(6)?,
        created_at: ts(row, 7)?,
        unit_price: price.map(Micros),
    })
}

pub fn upsert_lot(conn: &Connection, account: &AccountId, l: &Lot, active: bool) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO lots (account_id, lot_id, kind, original, remaining, held, expires_at, expired, \
         created_at, unit_price_micros, active) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        account.as_str(),
        l.id,
        l.kind.as_str(),
        l.original,
        l.remaining,
        l.held,
        l.expires_at.map(micros),
        l.expired,
        micros(l.created_at),
        l.unit_price.map(|p| p.0),
        active,
    ])?;
    Ok(())
}

pub const HOLD_COLS: &str = "hold_id, credits, captured, status, expires_at, reference, created_at, parts";

pub fn hold(row: &Row<'_>) -> rusqlite::Result<Hold> {
    Ok(Hold {
        id: row.get(0)?,
        credits: row.get(1)?,
        captured: row.get(2)?,
        status: named(row, 3, HoldStatus::parse)?,
        expires_at: ts(row, 4)?,
        reference: row.get(5)?,
        created_at: ts(row, 6)?,
        parts: json(row, 7)?,
    })
}

pub fn upsert_hold(conn: &Connection, account: &AccountId, h: &Hold) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO holds (account_id, hold_id, credits, captured, status, expires_at, reference, \
         created_at, parts) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        account.as_str(),
        h.id,
        h.credits,
        h.captured,
        h.status.as_str(),
        micros(h.expires_at),
        h.reference,
        micros(h.created_at),
        to_json(&h.parts),
    ])?;
    Ok(())
}

pub const DEBIT_COLS: &str = "debit_id, credits, refunded, reference, description, created_at, from_free, from_grants, from_paid, parts";

pub fn debit(row: &Row<'_>) -> rusqlite::Result<Debit> {
    Ok(Debit {
        id: row.get(0)?,
        credits: row.get(1)?,
        refunded: row.get(2)?,
        reference: row.get(3)?,
        description: row.get(4)?,
        created_at: ts(row, 5)?,
        breakdown: Breakdown { from_free: row.get(6)?, from_grants: row.get(7)?, from_paid: row.get(8)? },
        parts: json(row, 9)?,
    })
}

pub fn upsert_debit(conn: &Connection, account: &AccountId, d: &Debit) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO debits (account_id, debit_id, credits, refunded, reference, description, created_at, \
         from_free, from_grants, from_paid, parts) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        account.as_str(),
        d.id,
        d.credits,
        d.refunded,
        d.reference,
        d.description,
        micros(d.created_at),
        d.breakdown.from_free,
        d.breakdown.from_grants,
        d.breakdown.from_paid,
        to_json(&d.parts),
    ])?;
    Ok(())
}

pub const PURCHASE_COLS: &str = "purchase_id, credits, unit_price_micros, currency, purchased_at, month, \
    refunded_credits, refunded_unbilled_credits, statement_id";

pub fn purchase(row: &Row<'_>) -> rusqlite::Result<Purchase> {
    Ok(Purchase {
        id: row.get(0)?,
        credits: row.get(1)?,
        unit_price: Micros(row.get(2)?),
        currency: parsed(row, 3, Currency::new)?,
        purchased_at: ts(row, 4)?,
        month: parsed(row, 5, Month::parse)?,
        refunded_credits: row.get(6)?,
        refunded_unbilled_credits: row.get(7)?,
        statement_id: row.get(8)?,
    })
}

pub fn upsert_purchase(conn: &Connection, account: &AccountId, p: &Purchase) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO purchases (account_id, purchase_id, credits, unit_price_micros, currency, \
         purchased_at, month, refunded_credits, refunded_unbilled_credits, statement_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        account.as_str(),
        p.id,
        p.credits,
        p.unit_price.0,
        p.currency.as_str(),
        micros(p.purchased_at),
        p.month.to_string(),
        p.refunded_credits,
        p.refunded_unbilled_credits,
        p.statement_id,
    ])?;
    Ok(())
}

pub const REFUND_COLS: &str =
    "refund_id, purchase_id, credits, unit_price_micros, created_at, month, needs_line, statement_id";

pub fn refund(row: &Row<'_>) -> rusqlite::Result<PurchaseRefund> {
    Ok(PurchaseRefund {
        id: row.get(0)?,
        purchase_id: row.get(1)?,
        credits: row.get(2)?,
        unit_price: Micros(row.get(3)?),
        created_at: ts(row, 4)?,
        month: parsed(row, 5, Month::parse)?,
        needs_line: row.get(6)?,
        statement_id: row.get(7)?,
    })
}

pub fn upsert_refund(conn: &Connection, account: &AccountId, r: &PurchaseRefund) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO purchase_refunds (account_id, refund_id, purchase_id, credits, unit_price_micros, \
         created_at, month, needs_line, statement_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        account.as_str(),
        r.id,
        r.purchase_id,
        r.credits,
        r.unit_price.0,
        micros(r.created_at),
        r.month.to_string(),
        r.needs_line,
        r.statement_id,
    ])?;
    Ok(())
}

pub const STATEMENT_COLS: &str =
    "account_id, month, statement_id, issued_on, lines, total_micros, currency, status, created_at";

pub fn statement(row: &Row<'_>) -> rusqlite::Result<Statement> {
    let issued: String = row.get(3)?;
    Ok(Statement {
        account_id: parsed(row, 0, AccountId::parse)?,
        month: parsed(row, 1, Month::parse)?,
        id: row.get(2)?,
        issued_on: issued.parse().map_err(|e| bad(3, e))?,
        lines: json(row, 4)?,
        total: Micros(row.get(5)?),
        currency: parsed(row, 6, Currency::new)?,
        status: named(row, 7, StatementStatus::parse)?,
        created_at: ts(row, 8)?,
    })
}

pub fn upsert_statement(conn: &Connection, s: &Statement) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO statements (account_id, month, statement_id, issued_on, lines, total_micros, \
         currency, status, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        s.account_id.as_str(),
        s.month.to_string(),
        s.id,
        s.issued_on.to_string(),
        to_json(&s.lines),
        s.total.0,
        s.currency.as_str(),
        s.status.as_str(),
        micros(s.created_at),
    ])?;
    Ok(())
}

pub const ENTRY_COLS: &str = "entry_id, kind, lot_id, delta_credits, held_delta_credits, balance_after, source, \
    reference, effective_at, created_at";

pub fn entry(row: &Row<'_>) -> rusqlite::Result<Entry> {
    Ok(Entry {
        id: row.get(0)?,
        kind: named(row, 1, EntryKind::parse)?,
        lot_id: row.get(2)?,
        delta_credits: row.get(3)?,
        held_delta_credits: row.get(4)?,
        balance_after: row.get(5)?,
        source: row.get(6)?,
        reference: row.get(7)?,
        effective_at: ts(row, 8)?,
        created_at: ts(row, 9)?,
    })
}

pub fn insert_entry(
    conn: &Connection,
    account: &AccountId,
    e: &Entry,
    key: Option<&str>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO entries (account_id, entry_id, kind, lot_id, delta_credits, held_delta_credits, balance_after, \
         source, reference, idempotency_key, effective_at, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        account.as_str(),
        e.id,
        e.kind.as_str(),
        e.lot_id,
        e.delta_credits,
        e.held_delta_credits,
        e.balance_after,
        e.source,
        e.reference,
        key,
        micros(e.effective_at),
        micros(e.created_at),
    ])?;
    Ok(())
}
