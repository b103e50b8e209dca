//! The one write pipeline's load on SQLite ([`crate::ledger::batch`]): a
//! group's states with one query per table ([`crate::store::pipeline`]),
//! each round laid under the log's tail (`tail.rs`), so what was
//! acknowledged but not yet materialized is what the group sees. The
//! writer thread holds SQLite's write lock for the whole transaction, so
//! nothing is locked row by row; what a group writes is one log row
//! (`log.rs`).

use rusqlite::Connection;

use super::sql_error;
use super::tail::Tail;
use crate::ledger::LedgerError;
use crate::ledger::batch::{Loaded, Wants};
use crate::store::pipeline::{Ask, Dialect, Load, asks, last_round};

fn run_load(conn: &Connection, load: Load, param: &str, loaded: &mut Loaded) -> Result<(), LedgerError> {
    let mut stmt = conn.prepare_cached(Dialect::Sqlite.sql(load, false)).map_err(sql_error)?;
    let mut rows = stmt.query([param]).map_err(sql_error)?;
    while let Some(r) = rows.next().map_err(sql_error)? {
        load.land(loaded, r).map_err(LedgerError::Internal)?;
    }
    Ok(())
}

/// One round of loads: from the tables (a load by account only for the
/// accounts the tail does not answer whole), then the tail laid over them.
fn round(
    conn: &Connection,
    asks: &[(Load, Ask<'_>)],
    tail: &mut Tail,
    loaded: &mut Loaded,
) -> Result<(), LedgerError> {
    let mut fresh = Loaded::default();
    let mut asked = Vec::new();
    for (load, ask) in asks {
        let param = match ask {
            Ask::Accounts(ids) => {
                let cold: Vec<String> = ids.iter().filter(|a| !tail.answers(*load, a)).cloned().collect();
                if cold.is_empty() {
                    continue;
                }
                let param = Ask::Accounts(&cold).json();
                asked.push((*load, cold));
                param
            }
            Ask::Pairs(_) => ask.json(),
        };
        run_load(conn, *load, &param, &mut fresh)?;
    }
    tail.remember(&asked, &fresh);
    tail.patch(asks, &mut fresh);
    loaded.extend(fresh);
    Ok(())
}

/// Everything `wants` names, as acknowledged: the tables (in the caller's
/// transaction) with `tail` over them (an empty one for readers, who wait
/// for materialization instead); the tail keeps what the tables gave.
pub fn load(conn: &Connection, wants: &Wants, tail: &mut Tail) -> Result<Loaded, LedgerError> {
    tail.touch(&wants.accounts);
    let mut loaded = Loaded::default();
    round(conn, &asks(wants), tail, &mut loaded)?;
    let recharging = loaded.recharging(wants);
    if !recharging.is_empty() {
        round(conn, &[(Load::UnbilledPurchases, Ask::Accounts(&recharging))], tail, &mut loaded)?;
    }
    let last = last_round(&loaded);
    if !last.is_empty() {
        let asks: Vec<(Load, Ask<'_>)> = last.iter().map(|(l, pairs)| (*l, Ask::Pairs(pairs))).collect();
        round(conn, &asks, tail, &mut loaded)?;
    }
    Ok(loaded)
}
