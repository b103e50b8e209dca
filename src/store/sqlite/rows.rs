//! SQLite's side of [`crate::store::columns`]: reading a `rusqlite` row by
//! position, binding [`Val`]s, and one function per write of the ledger.

use rusqlite::types::{ToSqlOutput, Type};
use rusqlite::{Connection, Params, Row, ToSql};

use crate::domain::account::Account;
use crate::domain::debit::Debit;
use crate::domain::entry::Entry;
use crate::domain::hold::Hold;
use crate::domain::lot::Lot;
use crate::domain::purchase::{Purchase, PurchaseRefund};
use crate::domain::statement::Statement;
use crate::store::columns::{self, Cols, Val};

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

/// Every row of a query, read by `read`.
pub fn all<T, P: Params>(
    conn: &Connection,
    sql: &str,
    params: P,
    read: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, read)?;
    rows.collect()
}

/// A row that does not read back, as rusqlite's error.
pub(super) fn corrupt(why: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, Type::Text, why.into())
}

pub fn account(r: &Row<'_>) -> rusqlite::Result<Account> {
    columns::account(r).map_err(corrupt)
}
pub fn usage(r: &Row<'_>) -> rusqlite::Result<crate::domain::view::UsageView> {
    columns::usage(r).map_err(corrupt)
}
pub fn token(r: &Row<'_>) -> rusqlite::Result<crate::ledger::TokenInfo> {
    crate::store::tokens::token(r).map_err(corrupt)
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
pub fn event(r: &Row<'_>) -> rusqlite::Result<crate::domain::event::Event> {
    columns::event(r).map_err(corrupt)
}
pub fn entry(r: &Row<'_>) -> rusqlite::Result<Entry> {
    columns::entry(r).map_err(corrupt)
}

fn write(conn: &Connection, sql: &str, vals: Vec<Val>) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute(rusqlite::params_from_iter(vals))?;
    Ok(())
}

pub fn insert_account(conn: &Connection, a: &Account) -> rusqlite::Result<()> {
    write(conn, columns::ACCOUNTS.insert(), columns::account_vals(a))
}
