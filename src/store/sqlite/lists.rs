//! Read-side queries on SQLite: the lists of [`crate::store::reads`] (the
//! SQL is shared with PostgreSQL; here they only run), and the audit's walk
//! over every account.

use rusqlite::{Connection, Row, params_from_iter};

use super::rows;
use super::sql_error;
use jiff::Timestamp;

use crate::domain::account::{Account, AccountId};
use crate::domain::event::EventView;
use crate::domain::hold::HoldStatus;
use crate::domain::period::{Month, Zone};
use crate::domain::view::{
    AccountView, DebitView, EntryView, HoldView, Page, PurchaseView, StatementView, UsageView,
};
use crate::ledger::{AccountRecords, AuditReport, LedgerError, PageRequest};
use crate::store::columns::{DEBITS, ENTRIES, EVENTS, HOLDS, LOTS, PURCHASES, REFUNDS, STATEMENTS, USAGE};
use crate::store::reads::{self, Query};

fn run<T>(
    conn: &Connection,
    q: Query,
    read: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, LedgerError> {
    rows::all(conn, q.sql, params_from_iter(q.params), read).map_err(sql_error)
}

fn account(conn: &Connection, id: &AccountId) -> Result<Account, LedgerError> {
    run(conn, reads::account(id), rows::account)?
        .pop()
        .ok_or_else(|| LedgerError::AccountNotFound(id.to_string()))
}

pub fn accounts(
    conn: &Connection,
    req: &PageRequest,
    prefix: Option<&str>,
) -> Result<Page<AccountView>, LedgerError> {
    Ok(reads::accounts_page(run(conn, reads::accounts(req, prefix)?, rows::account)?, req))
}

pub fn purchases(
    conn: &Connection,
    id: &AccountId,
    month: Option<Month>,
    req: &PageRequest,
) -> Result<Page<PurchaseView>, LedgerError> {
    let a = account(conn, id)?;
    let items = run(conn, reads::purchases(&a, month, req)?, rows::purchase)?;
    reads::purchases_page(items, req, id)
}

pub fn debits(
    conn: &Connection,
    id: &AccountId,
    reference: Option<&str>,
    req: &PageRequest,
) -> Result<Page<DebitView>, LedgerError> {
    account(conn, id)?;
    Ok(reads::debits_page(run(conn, reads::debits(id, reference, req)?, rows::debit)?, req, id))
}

pub fn holds(
    conn: &Connection,
    id: &AccountId,
    status: Option<HoldStatus>,
    now: Timestamp,
    req: &PageRequest,
) -> Result<Page<HoldView>, LedgerError> {
    account(conn, id)?;
    Ok(reads::holds_page(run(conn, reads::holds(id, status, now, req)?, rows::hold)?, req, id, now))
}

pub fn entries(conn: &Connection, id: &AccountId, req: &PageRequest) -> Result<Page<EntryView>, LedgerError> {
    account(conn, id)?;
    Ok(reads::entries_page(run(conn, reads::entries(id, req)?, rows::entry)?, req, id))
}

pub fn events(
    conn: &Connection,
    id: &AccountId,
    after: i64,
    req: &PageRequest,
) -> Result<Page<EventView>, LedgerError> {
    account(conn, id)?;
    Ok(reads::events_page(run(conn, reads::events(id, after, req), rows::event)?, req, id))
}

pub fn usage(
    conn: &Connection,
    id: &AccountId,
    from: Month,
    to: Month,
) -> Result<Vec<UsageView>, LedgerError> {
    run(conn, reads::usage(id, from, to), rows::usage)
}

pub fn statements(
    conn: &Connection,
    id: Option<&AccountId>,
    month: Option<Month>,
    req: &PageRequest,
) -> Result<Page<StatementView>, LedgerError> {
    let q = reads::statements(id, month, req)?;
    if let Some(id) = id {
        account(conn, id)?;
    }
    Ok(reads::statements_page(run(conn, q, rows::statement)?, req, id.is_some()))
}

pub fn accounts_to_bill(conn: &Connection) -> Result<Vec<AccountId>, LedgerError> {
    let ids = rows::all(conn, reads::ACCOUNTS_TO_BILL, [], |r| r.get(0)).map_err(sql_error)?;
    reads::account_ids(ids)
}

pub fn accounts_to_reset(
    conn: &Connection,
    newest: Month,
) -> Result<Vec<(AccountId, Zone, Option<Month>)>, LedgerError> {
    let rows = rows::all(conn, reads::ACCOUNTS_TO_RESET, [newest.to_string()], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
    .map_err(sql_error)?;
    rows.into_iter().map(|(id, zone, m)| reads::reset_candidate(id, zone, m)).collect()
}

/// Walks every account, loading all its rows, and checks them.
pub fn audit(conn: &Connection) -> Result<AuditReport, LedgerError> {
    let mut report = AuditReport::default();
    let ids = rows::all(conn, reads::AUDIT_ACCOUNTS, [], |r| r.get(0)).map_err(sql_error)?;
    for id in reads::account_ids(ids)? {
        let records = AccountRecords {
            account: account(conn, &id)?,
            lots: run(conn, reads::audit_rows(&LOTS, &id), rows::lot)?,
            holds: run(conn, reads::audit_rows(&HOLDS, &id), rows::hold)?,
            debits: run(conn, reads::audit_rows(&DEBITS, &id), rows::debit)?,
            purchases: run(conn, reads::audit_rows(&PURCHASES, &id), rows::purchase)?,
            refunds: run(conn, reads::audit_rows(&REFUNDS, &id), rows::refund)?,
            statements: run(conn, reads::audit_rows(&STATEMENTS, &id), rows::statement)?,
            entries: run(conn, reads::audit_rows(&ENTRIES, &id), rows::entry)?,
            usage: run(conn, reads::audit_rows(&USAGE, &id), rows::usage)?,
            events: run(conn, reads::audit_rows(&EVENTS, &id), rows::event)?,
        };
        report.check(&records);
    }
    let last_id: i64 = conn
        .query_row("SELECT value FROM sequences WHERE name = 'entry'", [], |r| r.get(0))
        .map_err(sql_error)?;
    let max_id: i64 = conn
        .query_row("SELECT COALESCE(MAX(entry_id), 0) FROM entries", [], |r| r.get(0))
        .map_err(sql_error)?;
    report.check_sequence(max_id, last_id);
    report
        .orphans(rows::all(conn, reads::ORPHANS_SQL, [], |r| Ok((r.get(0)?, r.get(1)?))).map_err(sql_error)?);
    Ok(report)
}
