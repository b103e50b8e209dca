//! Read-side queries: pages of lists (newest first, keyset cursors), the
//! entries of a period, and the audit's walk over every account.

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};

use super::rows;
use super::rows::all;
use super::sql_error;
use crate::domain::account::{Account, AccountId};
use crate::domain::entry::Entry;
use crate::domain::period::Month;
use crate::domain::view::{AccountView, EntryView, Page, PurchaseView, StatementView};
use crate::ledger::{AccountRecords, AuditReport, LedgerError, ORPHANS_SQL, PageRequest};
use crate::store::columns::{ACCOUNTS, DEBITS, ENTRIES, HOLDS, LOTS, PURCHASES, REFUNDS, STATEMENTS, micros};
use crate::store::paging::{bad_cursor, page, split_cursor};

fn account(conn: &Connection, id: &AccountId) -> Result<Account, LedgerError> {
    let sql = format!("SELECT {} FROM accounts WHERE account_id = ?1", ACCOUNTS.list());
    conn.prepare_cached(&sql)
        .and_then(|mut s| s.query_row([id.as_str()], rows::account).optional())
        .map_err(sql_error)?
        .ok_or_else(|| LedgerError::AccountNotFound(id.to_string()))
}

pub fn accounts(conn: &Connection, req: &PageRequest) -> Result<Page<AccountView>, LedgerError> {
    let (before_t, before_id) = match &req.cursor {
        Some(c) => split_cursor(c)?,
        None => (i64::MAX, String::new()),
    };
    let sql = format!(
        "SELECT {} FROM accounts WHERE (created_at, account_id) < (?1, ?2) OR ?3 \
         ORDER BY created_at DESC, account_id DESC LIMIT ?4",
        ACCOUNTS.list()
    );
    let first = req.cursor.is_none();
    let items = all(conn, &sql, params![before_t, before_id, first, req.limit as i64 + 1], rows::account)
        .map_err(sql_error)?;
    Ok(page(items, req.limit, |a| format!("{}:{}", micros(a.created_at), a.id), AccountView::of))
}

pub fn purchases(
    conn: &Connection,
    id: &AccountId,
    month: Option<Month>,
    req: &PageRequest,
) -> Result<Page<PurchaseView>, LedgerError> {
    let a = account(conn, id)?;
    let (from, to) = match month {
        Some(m) => (micros(m.start(&a.zone)), micros(m.end(&a.zone))),
        None => (i64::MIN, i64::MAX),
    };
    let (before_t, before_id) = match &req.cursor {
        Some(c) => split_cursor(c)?,
        None => (i64::MAX, String::new()),
    };
    let sql = format!(
        "SELECT {} FROM purchases WHERE account_id = ?1 AND purchased_at >= ?2 AND purchased_at < ?3 \
         AND ((purchased_at, purchase_id) < (?4, ?5) OR ?6) ORDER BY purchased_at DESC, purchase_id DESC LIMIT ?7",
        PURCHASES.list()
    );
    let params =
        params![id.as_str(), from, to, before_t, before_id, req.cursor.is_none(), req.limit as i64 + 1];
    let items = all(conn, &sql, params, rows::purchase).map_err(sql_error)?;
    Ok(page(
        items,
        req.limit,
        |p| format!("{}:{}", micros(p.purchased_at), p.id),
        |p| PurchaseView::of(id.as_str(), p),
    ))
}

pub fn entries(conn: &Connection, id: &AccountId, req: &PageRequest) -> Result<Page<EntryView>, LedgerError> {
    account(conn, id)?;
    let before: i64 = match &req.cursor {
        Some(c) => c.parse().map_err(|_| bad_cursor())?,
        None => i64::MAX,
    };
    let sql = format!(
        "SELECT {} FROM entries WHERE account_id = ?1 AND entry_id < ?2 ORDER BY entry_id DESC LIMIT ?3",
        ENTRIES.list()
    );
    let items = all(conn, &sql, params![id.as_str(), before, req.limit as i64 + 1], rows::entry)
        .map_err(sql_error)?;
    Ok(page(items, req.limit, |e| e.id.to_string(), EntryView::of))
}

pub fn entries_between(
    conn: &Connection,
    id: &AccountId,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<Entry>, LedgerError> {
    account(conn, id)?;
    let sql = format!(
        "SELECT {} FROM entries WHERE account_id = ?1 AND effective_at >= ?2 AND effective_at < ?3 ORDER BY entry_id",
        ENTRIES.list()
    );
    all(conn, &sql, params![id.as_str(), micros(from), micros(to)], rows::entry).map_err(sql_error)
}

pub fn statements(
    conn: &Connection,
    id: Option<&AccountId>,
    month: Option<Month>,
    req: &PageRequest,
) -> Result<Page<StatementView>, LedgerError> {
    let limit = req.limit as i64 + 1;
    let items = match (id, month) {
        (Some(id), _) => {
            account(conn, id)?;
            let before = match &req.cursor {
                Some(c) => Month::parse(c).map_err(|_| bad_cursor())?.to_string(),
                None => "9999-99".to_string(),
            };
            let sql = format!(
                "SELECT {} FROM statements WHERE account_id = ?1 AND month < ?2 AND (?3 IS NULL OR month = ?3) \
                 ORDER BY month DESC LIMIT ?4",
                STATEMENTS.list()
            );
            let params = params![id.as_str(), before, month.map(|m| m.to_string()), limit];
            all(conn, &sql, params, rows::statement).map_err(sql_error)?
        }
        (None, Some(month)) => {
            let after = match &req.cursor {
                Some(c) => AccountId::parse(c).map_err(|_| bad_cursor())?.to_string(),
                None => String::new(),
            };
            let sql = format!(
                "SELECT {} FROM statements WHERE month = ?1 AND account_id > ?2 ORDER BY account_id LIMIT ?3",
                STATEMENTS.list()
            );
            all(conn, &sql, params![month.to_string(), after, limit], rows::statement).map_err(sql_error)?
        }
        (None, None) => return Err(LedgerError::invalid("give an account or a month")),
    };
    let cursor = |s: &crate::domain::statement::Statement| {
        if id.is_some() { s.month.to_string() } else { s.account_id.to_string() }
    };
    Ok(page(items, req.limit, cursor, StatementView::of))
}

pub fn accounts_to_bill(conn: &Connection) -> Result<Vec<AccountId>, LedgerError> {
    let sql = "SELECT DISTINCT account_id FROM purchases WHERE statement_id IS NULL AND credits > refunded_unbilled_credits \
               UNION SELECT DISTINCT account_id FROM purchase_refunds WHERE needs_line = 1 AND statement_id IS NULL \
               ORDER BY account_id";
    let ids: Vec<String> = all(conn, sql, [], |r| r.get(0)).map_err(sql_error)?;
    ids.iter().map(|s| AccountId::parse(s).map_err(|e| LedgerError::Internal(e.to_string()))).collect()
}

/// Walks every account, loading all its rows, and checks them.
pub fn audit(conn: &Connection) -> Result<AuditReport, LedgerError> {
    let mut report = AuditReport::default();
    let sql = format!("SELECT {} FROM accounts ORDER BY account_id", ACCOUNTS.list());
    let accounts = all(conn, &sql, [], rows::account).map_err(sql_error)?;
    for account in accounts {
        let records = account_records(conn, account).map_err(sql_error)?;
        report.check(&records);
    }
    let last_id: i64 = conn
        .query_row("SELECT value FROM sequences WHERE name = 'entry'", [], |r| r.get(0))
        .map_err(sql_error)?;
    let max_id: Option<i64> =
        conn.query_row("SELECT MAX(entry_id) FROM entries", [], |r| r.get(0)).map_err(sql_error)?;
    report.check_sequence(max_id.unwrap_or(0), last_id);
    report.orphans(all(conn, ORPHANS_SQL, [], |r| Ok((r.get(0)?, r.get(1)?))).map_err(sql_error)?);
    Ok(report)
}

fn account_records(conn: &Connection, account: Account) -> rusqlite::Result<AccountRecords> {
    let a = account.id.as_str().to_string();
    let q = |table: &str, cols: &str, order: &str| {
        format!("SELECT {cols} FROM {table} WHERE account_id = ?1 ORDER BY {order}")
    };
    Ok(AccountRecords {
        lots: all(conn, &q("lots", LOTS.list(), "lot_id"), [&a], rows::lot)?,
        holds: all(conn, &q("holds", HOLDS.list(), "hold_id"), [&a], rows::hold)?,
        debits: all(conn, &q("debits", DEBITS.list(), "debit_id"), [&a], rows::debit)?,
        purchases: all(conn, &q("purchases", PURCHASES.list(), "purchase_id"), [&a], rows::purchase)?,
        refunds: all(conn, &q("purchase_refunds", REFUNDS.list(), "refund_id"), [&a], rows::refund)?,
        statements: all(conn, &q("statements", STATEMENTS.list(), "month"), [&a], rows::statement)?,
        entries: all(conn, &q("entries", ENTRIES.list(), "entry_id"), [&a], rows::entry)?,
        account,
    })
}
