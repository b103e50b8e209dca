//! SQLite's side of [`crate::store::columns`]: reading a `rusqlite` row by
//! position, binding [`Val`]s, and one function per write of the ledger.

use rusqlite::types::{ToSqlOutput, Type};
use rusqlite::{Connection, Row, ToSql};

use crate::domain::account::{Account, AccountId};
use crate::domain::debit::Debit;
use crate::domain::entry::Entry;
use crate::domain::hold::Hold;
use crate::domain::lot::Lot;
use crate::domain::purchase::{Purchase, PurchaseRefund};
use crate::domain::statement::Statement;
use crate::store::columns::{self, Cols, Table, Val};

impl Cols for Row<'_> {
    fn int(&self, i: usize) -> Result<i64, String> {
        self.get(i).map_err(|e| e.to_string())
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, String> {
        self.get(i).map_err(|e| e.to_string())
    }
    fn text(&self, i: usize) -> Result<String, String> {
        self.get(i).map_err(|e| e.to_string())
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, String> {
        self.get(i).map_err(|e| e.to_string())
    }
    fn flag(&self, i: usize) -> Result<bool, String> {
        self.get(i).map_err(|e| e.to_string())
    }
}

impl ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        match self {
            Val::Int(v) => v.to_sql(),
            Val::Text(v) => v.to_sql(),
            Val::Flag(v) => v.to_sql(),
            Val::Null => Ok(ToSqlOutput::Owned(rusqlite::types::Value::Null)),
        }
    }
}

/// A row that does not read back, as rusqlite's error.
fn corrupt(why: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, Type::Text, why.into())
}

pub fn account(r: &Row<'_>) -> rusqlite::Result<Account> {
    columns::account(r).map_err(corrupt)
}
pub fn lot(r: &Row<'_>) -> rusqlite::Result<Lot> {
    columns::lot(r).map_err(corrupt)
}
pub fn hold(r: &Row<'_>) -> rusqlite::Result<Hold> {
    columns::hold(r).map_err(corrupt)
}
pub fn debit(r: &Row<'_>) -> rusqlite::Result<Debit> {
    columns::debit(r).map_err(corrupt)
}
pub fn purchase(r: &Row<'_>) -> rusqlite::Result<Purchase> {
    columns::purchase(r).map_err(corrupt)
}
pub fn refund(r: &Row<'_>) -> rusqlite::Result<PurchaseRefund> {
    columns::refund(r).map_err(corrupt)
}
pub fn statement(r: &Row<'_>) -> rusqlite::Result<Statement> {
    columns::statement(r).map_err(corrupt)
}
pub fn entry(r: &Row<'_>) -> rusqlite::Result<Entry> {
    columns::entry(r).map_err(corrupt)
}

fn write(conn: &Connection, sql: &str, vals: Vec<Val>) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute(rusqlite::params_from_iter(vals))?;
    Ok(())
}

fn upsert(conn: &Connection, table: &Table, vals: Vec<Val>) -> rusqlite::Result<()> {
    write(conn, table.upsert(), vals)
}

pub fn insert_account(conn: &Connection, a: &Account) -> rusqlite::Result<()> {
    write(conn, columns::ACCOUNTS.insert(), columns::account_vals(a))
}

pub fn update_account(conn: &Connection, a: &Account) -> rusqlite::Result<()> {
    upsert(conn, &columns::ACCOUNTS, columns::account_vals(a))
}

pub fn upsert_lot(conn: &Connection, account: &AccountId, l: &Lot, active: bool) -> rusqlite::Result<()> {
    upsert(conn, &columns::LOTS, columns::lot_vals(account, l, active))
}

pub fn upsert_hold(conn: &Connection, account: &AccountId, h: &Hold) -> rusqlite::Result<()> {
    upsert(conn, &columns::HOLDS, columns::hold_vals(account, h))
}

pub fn upsert_debit(conn: &Connection, account: &AccountId, d: &Debit) -> rusqlite::Result<()> {
    upsert(conn, &columns::DEBITS, columns::debit_vals(account, d))
}

pub fn upsert_purchase(conn: &Connection, account: &AccountId, p: &Purchase) -> rusqlite::Result<()> {
    upsert(conn, &columns::PURCHASES, columns::purchase_vals(account, p))
}

pub fn upsert_refund(conn: &Connection, account: &AccountId, r: &PurchaseRefund) -> rusqlite::Result<()> {
    upsert(conn, &columns::REFUNDS, columns::refund_vals(account, r))
}

pub fn upsert_statement(conn: &Connection, s: &Statement) -> rusqlite::Result<()> {
    upsert(conn, &columns::STATEMENTS, columns::statement_vals(s))
}

pub fn insert_entry(
    conn: &Connection,
    account: &AccountId,
    e: &Entry,
    key: Option<&str>,
) -> rusqlite::Result<()> {
    write(conn, columns::ENTRIES.insert(), columns::entry_vals(account, e, key))
}
