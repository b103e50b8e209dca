//! One account's mutation inside the writer's transaction: the
//! [`crate::ledger::Tx`] of SQLite. The writer holds SQLite's write lock for
//! the whole group, so loading the account is already serialized; the hot
//! path (a debit) is a handful of cached statements.

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Params, Row, params};

use super::rows;
use super::sql_error;
use crate::domain::account::AccountId;
use crate::domain::command::Needs;
use crate::domain::period::Month;
use crate::domain::state::{AccountState, Changes};
use crate::domain::statement::Statement;
use crate::ledger::{IdempotencyKey, LedgerError, StoredAnswer, Tx};
use crate::store::columns::{ACCOUNTS, DEBITS, HOLDS, KEYS, LOTS, PURCHASES, REFUNDS, STATEMENTS, micros};

pub struct SqliteTx<'c> {
    pub conn: &'c Connection,
}

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

/// Loads an account's state; shared by writes and read snapshots.
pub fn load_state(
    conn: &Connection,
    id: &AccountId,
    needs: &Needs,
    now: Timestamp,
) -> rusqlite::Result<Option<AccountState>> {
    let a = id.as_str();
    let sql = crate::cached!(format!("SELECT {} FROM accounts WHERE account_id = ?1", ACCOUNTS.list()));
    let Some(account) = conn.prepare_cached(sql)?.query_row([a], rows::account).optional()? else {
        return Ok(None);
    };
    let zone = account.zone.clone();
    let mut s = AccountState::new(account);
    let lot_sql =
        crate::cached!(format!("SELECT {} FROM lots WHERE account_id = ?1 AND active = 1", LOTS.list()));
    s.lots = all(conn, lot_sql, [a], rows::lot)?;
    let hold_sql = crate::cached!(format!(
        "SELECT {} FROM holds WHERE account_id = ?1 AND status = 'held'",
        HOLDS.list()
    ));
    s.holds = all(conn, hold_sql, [a], rows::hold)?;
    if let Some(h) = needs.hold.as_deref().filter(|h| !s.holds.iter().any(|x| x.id == *h)) {
        let sql = crate::cached!(format!(
            "SELECT {} FROM holds WHERE account_id = ?1 AND hold_id = ?2",
            HOLDS.list()
        ));
        s.holds.extend(conn.prepare_cached(sql)?.query_row([a, h], rows::hold).optional()?);
    }
    if let Some(d) = &needs.debit {
        let sql = crate::cached!(format!(
            "SELECT {} FROM debits WHERE account_id = ?1 AND debit_id = ?2",
            DEBITS.list()
        ));
        s.debit = conn.prepare_cached(sql)?.query_row([a, d], rows::debit).optional()?;
    }
    if let Some(p) = &needs.purchase {
        let sql = crate::cached!(format!(
            "SELECT {} FROM purchases WHERE account_id = ?1 AND purchase_id = ?2",
            PURCHASES.list()
        ));
        s.purchases.extend(conn.prepare_cached(sql)?.query_row([a, p], rows::purchase).optional()?);
    }
    if needs.unbilled {
        let sql = crate::cached!(format!(
            "SELECT {} FROM purchases WHERE account_id = ?1 AND statement_id IS NULL AND credits > refunded_unbilled_credits",
            PURCHASES.list()
        ));
        s.purchases.extend(all(conn, sql, [a], rows::purchase)?);
        let sql = crate::cached!(format!(
            "SELECT {} FROM purchase_refunds WHERE account_id = ?1 AND needs_line = 1 AND statement_id IS NULL",
            REFUNDS.list()
        ));
        s.pending_refunds = all(conn, sql, [a], rows::refund)?;
    }
    if needs.month_purchases {
        let month = Month::of(now, &zone);
        s.month_purchased_credits = conn
            .prepare_cached(
                "SELECT COALESCE(SUM(credits - refunded_unbilled_credits), 0) FROM purchases \
                 WHERE account_id = ?1 AND purchased_at >= ?2 AND purchased_at < ?3",
            )?
            .query_row(params![a, micros(month.start(&zone)), micros(month.end(&zone))], |r| r.get(0))?;
    }
    if let Some(sid) = &needs.statement {
        let sql = crate::cached!(format!(
            "SELECT {} FROM statements WHERE account_id = ?1 AND (statement_id = ?2 OR status = 'failed')",
            STATEMENTS.list()
        ));
        s.statements = all(conn, sql, [a, sid], rows::statement)?;
    }
    load_missing_lots(conn, &mut s)?;
    Ok(Some(s))
}

/// Lots that what was loaded names but that are no longer active (a debit
/// refunded into last month's free lot, a purchase with nothing unused).
fn load_missing_lots(conn: &Connection, s: &mut AccountState) -> rusqlite::Result<()> {
    let mut wanted: Vec<String> = Vec::new();
    if let Some(d) = &s.debit {
        wanted.extend(d.parts.iter().map(|p| p.lot_id.clone()));
    }
    wanted.extend(s.purchases.iter().map(|p| p.id.clone()));
    wanted.extend(s.holds.iter().flat_map(|h| h.parts.iter().map(|p| p.lot_id.clone())));
    let sql =
        crate::cached!(format!("SELECT {} FROM lots WHERE account_id = ?1 AND lot_id = ?2", LOTS.list()));
    for lot_id in wanted {
        if s.lot_index(&lot_id).is_none()
            && let Some(lot) =
                conn.prepare_cached(sql)?.query_row([s.account.id.as_str(), &lot_id], rows::lot).optional()?
        {
            s.lots.push(lot);
        }
    }
    Ok(())
}

impl Tx for SqliteTx<'_> {
    fn find_key(
        &mut self,
        account: &AccountId,
        key: &IdempotencyKey,
    ) -> Result<Option<StoredAnswer>, LedgerError> {
        self.conn
            .prepare_cached(
                "SELECT request, response FROM idempotency_keys WHERE account_id = ?1 AND key = ?2",
            )
            .and_then(|mut s| {
                s.query_row([account.as_str(), key.as_str()], |r| {
                    Ok(StoredAnswer { request: r.get(0)?, response: r.get(1)? })
                })
                .optional()
            })
            .map_err(sql_error)
    }

    fn load(
        &mut self,
        account: &AccountId,
        needs: &Needs,
        now: Timestamp,
    ) -> Result<Option<AccountState>, LedgerError> {
        load_state(self.conn, account, needs, now).map_err(sql_error)
    }

    fn save(
        &mut self,
        before: &AccountState,
        after: &AccountState,
        changes: Changes,
        key: Option<&IdempotencyKey>,
        now: Timestamp,
    ) -> Result<(), LedgerError> {
        save(self.conn, before, after, changes, key.map(IdempotencyKey::as_str), now).map_err(sql_error)
    }

    fn remember_key(
        &mut self,
        account: &AccountId,
        key: &IdempotencyKey,
        answer: &StoredAnswer,
        now: Timestamp,
    ) -> Result<(), LedgerError> {
        self.conn
            .prepare_cached(KEYS.insert())
            .and_then(|mut s| {
                s.execute(params![
                    account.as_str(),
                    key.as_str(),
                    answer.request,
                    answer.response,
                    micros(now)
                ])
            })
            .map(|_| ())
            .map_err(sql_error)
    }
}

fn save(
    conn: &Connection,
    before: &AccountState,
    after: &AccountState,
    changes: Changes,
    key: Option<&str>,
    now: Timestamp,
) -> rusqlite::Result<()> {
    let id = &after.account.id;
    if after.account != before.account {
        rows::update_account(conn, &after.account)?;
    }
    for lot in after.changed_lots(before) {
        rows::upsert_lot(conn, id, lot, lot.is_active(after.account.free_month))?;
    }
    for hold in after.changed_holds(before) {
        rows::upsert_hold(conn, id, hold)?;
    }
    for d in &changes.debits {
        rows::upsert_debit(conn, id, d)?;
    }
    for p in &changes.purchases {
        rows::upsert_purchase(conn, id, p)?;
    }
    for r in &changes.refunds {
        rows::upsert_refund(conn, id, r)?;
    }
    for s in &changes.statements {
        debug_assert_eq!(Statement::parse_id(&s.id).ok(), Some((s.account_id.clone(), s.month)));
        rows::upsert_statement(conn, s)?;
    }
    let n = changes.entries.len() as i64;
    if n > 0 {
        let last: i64 = conn
            .prepare_cached("UPDATE sequences SET value = value + ?1 WHERE name = 'entry' RETURNING value")?
            .query_row([n], |r| r.get(0))?;
        for (i, mut e) in changes.entries.into_iter().enumerate() {
            e.id = last - n + 1 + i as i64;
            e.created_at = now;
            rows::insert_entry(conn, id, &e, key)?;
        }
    }
    Ok(())
}
