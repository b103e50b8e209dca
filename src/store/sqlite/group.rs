//! The one write pipeline on SQLite ([`crate::ledger::batch`]): load a
//! group's states with one query per table ([`crate::store::pipeline`]),
//! apply it in memory, write its rows. The writer thread holds SQLite's
//! write lock for the whole transaction, so nothing is locked row by row.
//!
//! Writes run one prepared statement per table, executed once per row:
//! SQLite is in the process, so a row costs no round trip, and binding
//! values is cheaper than building and parsing one JSON document per table.

use rusqlite::Connection;

use super::sql_error;
use crate::ledger::LedgerError;
use crate::ledger::batch::{Loaded, Rows, Wants};
use crate::store::pipeline::{Dialect, Load, append_only, plan, plan_missing, plan_recharging, table_rows};

fn run_load(conn: &Connection, load: Load, param: &str, loaded: &mut Loaded) -> Result<(), LedgerError> {
    let mut stmt = conn.prepare_cached(Dialect::Sqlite.sql(load, false)).map_err(sql_error)?;
    let mut rows = stmt.query([param]).map_err(sql_error)?;
    while let Some(r) = rows.next().map_err(sql_error)? {
        load.land(loaded, r).map_err(LedgerError::Internal)?;
    }
    Ok(())
}

/// Everything `wants` names, as stored (in the caller's transaction).
pub fn load(conn: &Connection, wants: &Wants) -> Result<Loaded, LedgerError> {
    let mut loaded = Loaded::default();
    for (load, param) in plan(wants) {
        run_load(conn, load, &param, &mut loaded)?;
    }
    if let Some((load, param)) = plan_recharging(&loaded, wants) {
        run_load(conn, load, &param, &mut loaded)?;
    }
    if let Some((load, param)) = plan_missing(&loaded) {
        run_load(conn, load, &param, &mut loaded)?;
    }
    Ok(loaded)
}

/// Writes a group's rows; entries take the next ids of the `entry` sequence.
pub fn write(conn: &Connection, rows: &Rows) -> rusqlite::Result<()> {
    let n = rows.entries.len() as i64;
    let mut first = 0;
    if n > 0 {
        let last: i64 = conn
            .prepare_cached("UPDATE sequences SET value = value + ?1 WHERE name = 'entry' RETURNING value")?
            .query_row([n], |r| r.get(0))?;
        first = last - n + 1;
    }
    for (table, values) in table_rows(rows, first) {
        let sql = if append_only(table) { table.insert() } else { table.upsert() };
        let mut stmt = conn.prepare_cached(sql)?;
        for vals in values {
            stmt.execute(rusqlite::params_from_iter(vals))?;
        }
    }
    Ok(())
}
