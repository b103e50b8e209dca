//! One account's mutation in a PostgreSQL transaction, and the loading of
//! an account's state (shared with read snapshots). The account row is
//! locked (`FOR UPDATE`) before anything else is read, so every replica
//! serializes its writes to one account in the database, and a key retried
//! on two replicas at once is found by the second.

use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::pg_error;
use super::rows::params;
use crate::domain::account::AccountId;
use crate::domain::command::Needs;
use crate::domain::period::Month;
use crate::domain::state::{AccountState, Changes};
use crate::ledger::{
    Executed, IdempotencyKey, LedgerError, Operation, StoredAnswer, answer_of, replay, request_of, transition,
};
use crate::store::columns::Cols as _;
use crate::store::columns::{
    self, ACCOUNTS, DEBITS, ENTRIES, HOLDS, KEYS, LOTS, PURCHASES, REFUNDS, STATEMENTS, Table, Val, micros,
};

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

fn corrupt(why: String) -> LedgerError {
    LedgerError::Internal(why)
}

pub async fn all<T>(
    c: &impl GenericClient,
    sql: &str,
    p: Params<'_>,
    read: fn(&Row) -> Result<T, String>,
) -> Result<Vec<T>, LedgerError> {
    let stmt = c.prepare_cached(sql).await.map_err(pg_error)?;
    let rows = c.query(&stmt, p).await.map_err(pg_error)?;
    rows.iter().map(|r| read(r).map_err(corrupt)).collect()
}

pub async fn one<T>(
    c: &impl GenericClient,
    sql: &str,
    p: Params<'_>,
    read: fn(&Row) -> Result<T, String>,
) -> Result<Option<T>, LedgerError> {
    let stmt = c.prepare_cached(sql).await.map_err(pg_error)?;
    let row = c.query_opt(&stmt, p).await.map_err(pg_error)?;
    row.map(|r| read(&r).map_err(corrupt)).transpose()
}

async fn exec(c: &impl GenericClient, sql: &str, vals: &[Val]) -> Result<u64, LedgerError> {
    let stmt = c.prepare_cached(sql).await.map_err(pg_error)?;
    c.execute(&stmt, &params(vals)).await.map_err(pg_error)
}

/// Loads an account's state (see the SQLite store's `load_state`, which
/// this mirrors query for query).
pub async fn load_state(
    c: &impl GenericClient,
    id: &AccountId,
    needs: &Needs,
    now: Timestamp,
) -> Result<Option<AccountState>, LedgerError> {
    let a = id.as_str();
    // One round trip: the three queries are pipelined on the connection.
    let p: [&(dyn ToSql + Sync); 1] = [&a];
    let (account, lots, holds) = tokio::try_join!(
        one(c, crate::cached!(ACCOUNTS.select("WHERE account_id = $1")), &p, columns::account),
        all(c, crate::cached!(LOTS.select("WHERE account_id = $1 AND active")), &p, columns::lot),
        all(c, crate::cached!(HOLDS.select("WHERE account_id = $1 AND status = 'held'")), &p, columns::hold),
    )?;
    let Some(account) = account else {
        return Ok(None);
    };
    let zone = account.zone.clone();
    let mut s = AccountState::new(account);
    s.lots = lots;
    s.holds = holds;
    if let Some(h) = needs.hold.as_deref().filter(|h| !s.holds.iter().any(|x| x.id == *h)) {
        let sql = crate::cached!(HOLDS.select("WHERE account_id = $1 AND hold_id = $2"));
        s.holds.extend(one(c, sql, &[&a, &h], columns::hold).await?);
    }
    if let Some(d) = &needs.debit {
        s.debit = one(
            c,
            crate::cached!(DEBITS.select("WHERE account_id = $1 AND debit_id = $2")),
            &[&a, d],
            columns::debit,
        )
        .await?;
    }
    if let Some(p) = &needs.purchase {
        let sql = crate::cached!(PURCHASES.select("WHERE account_id = $1 AND purchase_id = $2"));
        s.purchases.extend(one(c, sql, &[&a, p], columns::purchase).await?);
    }
    if needs.unbilled {
        let sql = crate::cached!(PURCHASES.select(
            "WHERE account_id = $1 AND statement_id IS NULL AND credits > refunded_unbilled_credits"
        ));
        s.purchases.extend(all(c, sql, &[&a], columns::purchase).await?);
        let sql =
            crate::cached!(REFUNDS.select("WHERE account_id = $1 AND needs_line AND statement_id IS NULL"));
        s.pending_refunds = all(c, sql, &[&a], columns::refund).await?;
    }
    if needs.month_purchases {
        let month = Month::of(now, &zone);
        let sql = "SELECT COALESCE(SUM(credits - refunded_unbilled_credits), 0)::BIGINT FROM purchases \
                   WHERE account_id = $1 AND purchased_at >= $2 AND purchased_at < $3";
        let (from, to) = (micros(month.start(&zone)), micros(month.end(&zone)));
        let sum = one(c, sql, &[&a, &from, &to], |r| r.int(0)).await?;
        s.month_purchased_credits = sum.unwrap_or(0);
    }
    if let Some(sid) = &needs.statement {
        let sql = crate::cached!(
            STATEMENTS.select("WHERE account_id = $1 AND (statement_id = $2 OR status = 'failed')")
        );
        s.statements = all(c, sql, &[&a, sid], columns::statement).await?;
    }
    load_missing_lots(c, &mut s).await?;
    Ok(Some(s))
}

pub async fn load_missing_lots(c: &impl GenericClient, s: &mut AccountState) -> Result<(), LedgerError> {
    let mut wanted: Vec<String> = Vec::new();
    if let Some(d) = &s.debit {
        wanted.extend(d.parts.iter().map(|p| p.lot_id.clone()));
    }
    wanted.extend(s.purchases.iter().map(|p| p.id.clone()));
    wanted.extend(s.holds.iter().flat_map(|h| h.parts.iter().map(|p| p.lot_id.clone())));
    let sql = crate::cached!(LOTS.select("WHERE account_id = $1 AND lot_id = $2"));
    let a = s.account.id.as_str().to_string();
    for lot_id in wanted {
        if s.lot_index(&lot_id).is_none()
            && let Some(lot) = one(c, sql, &[&a, &lot_id], columns::lot).await?
        {
            s.lots.push(lot);
        }
    }
    Ok(())
}

/// Runs one mutation inside the open transaction `c` (the caller commits
/// on `Ok`): lock the account, then the steps of [`crate::ledger::run_in`].
pub async fn run(c: &impl GenericClient, op: &Operation) -> Result<Executed, LedgerError> {
    let request = request_of(op)?;
    let a = op.account.as_str();
    let locked = one(c, "SELECT 1 FROM accounts WHERE account_id = $1 FOR UPDATE", &[&a], |_| Ok(())).await?;
    if locked.is_none() {
        return Err(LedgerError::AccountNotFound(op.account.to_string()));
    }
    // Under the lock, the key check and the loads go out together.
    let key_check = async {
        match &op.key {
            Some(key) => find_key(c, &op.account, key).await,
            None => Ok(None),
        }
    };
    let needs = op.command.needs();
    let (stored, before) = tokio::try_join!(key_check, load_state(c, &op.account, &needs, op.now))?;
    if let (Some(key), Some(stored)) = (&op.key, stored) {
        return replay(key, &request, &stored);
    }
    let before = before.ok_or_else(|| LedgerError::AccountNotFound(op.account.to_string()))?;
    let done = transition(&before, op)?;
    let key = op.key.as_ref().map(IdempotencyKey::as_str);
    let mut ws = row_writes(&before, &done.after);
    ws.extend(change_writes(&op.account, done.changes, key, op.now));
    let mut batch: Vec<(&str, Vec<Val>)> = ws.into_iter().map(Write::single).collect();
    if let Some(key) = &op.key {
        let answer = answer_of(request, &done.outcome)?;
        batch.push((KEYS.insert(), key_vals(&op.account, key, answer, op.now)));
    }
    // One round trip for all the writes: pipelined on the connection.
    futures_util::future::try_join_all(batch.iter().map(|(sql, vals)| exec(c, sql, vals))).await?;
    Ok(Executed { outcome: done.outcome, replayed: false, tally: done.tally })
}

async fn find_key(
    c: &impl GenericClient,
    account: &AccountId,
    key: &IdempotencyKey,
) -> Result<Option<StoredAnswer>, LedgerError> {
    let sql = "SELECT request, response FROM idempotency_keys WHERE account_id = $1 AND key = $2";
    one(c, sql, &[&account.as_str(), &key.as_str()], |r| {
        Ok(StoredAnswer { request: r.text(0)?, response: r.text(1)? })
    })
    .await
}

/// Entries take their id from the sequence as they are inserted: in order
/// under the account's lock, so an account's ids increase.
fn insert_entry_sql() -> &'static str {
    crate::cached!({
        let cols = ENTRIES.cols;
        let values: Vec<String> = (0..cols.len())
            .map(|i| match i {
                0 => "$1".to_string(),
                1 => "nextval('entry_ids')".to_string(),
                _ => format!("${i}"),
            })
            .collect();
        format!("INSERT INTO entries ({}) VALUES ({})", ENTRIES.list(), values.join(", "))
    })
}

/// One row to write: an upsert into its table (entries: an insert that
/// draws the entry id from the sequence).
pub struct Write {
    pub table: &'static Table,
    pub vals: Vec<Val>,
}

impl Write {
    /// The statement and values that write this row alone.
    fn single(self) -> (&'static str, Vec<Val>) {
        let Write { table, mut vals } = self;
        if std::ptr::eq(table, &ENTRIES) {
            vals.remove(1); // the id comes from the sequence
            (insert_entry_sql(), vals)
        } else {
            (table.upsert(), vals)
        }
    }
}

/// The rows of the account itself, its lots and its holds that differ
/// from `before` to `after`.
pub fn row_writes(before: &AccountState, after: &AccountState) -> Vec<Write> {
    let id = &after.account.id;
    let mut out = Vec::new();
    if after.account != before.account {
        out.push(Write { table: &ACCOUNTS, vals: columns::account_vals(&after.account) });
    }
    for lot in after.changed_lots(before) {
        let vals = columns::lot_vals(id, lot, lot.is_active(after.account.free_month));
        out.push(Write { table: &LOTS, vals });
    }
    for hold in after.changed_holds(before) {
        out.push(Write { table: &HOLDS, vals: columns::hold_vals(id, hold) });
    }
    out
}

/// The records one transition created, and its entries stamped with the
/// operation's key and time.
pub fn change_writes(id: &AccountId, changes: Changes, key: Option<&str>, now: Timestamp) -> Vec<Write> {
    let mut out = Vec::new();
    let w = |table, vals| Write { table, vals };
    out.extend(changes.debits.iter().map(|d| w(&DEBITS, columns::debit_vals(id, d))));
    out.extend(changes.purchases.iter().map(|p| w(&PURCHASES, columns::purchase_vals(id, p))));
    out.extend(changes.refunds.iter().map(|r| w(&REFUNDS, columns::refund_vals(id, r))));
    out.extend(changes.statements.iter().map(|s| w(&STATEMENTS, columns::statement_vals(s))));
    for mut e in changes.entries {
        e.created_at = now;
        out.push(w(&ENTRIES, columns::entry_vals(id, &e, key)));
    }
    out
}

/// The values of an idempotency key's row (see [`KEYS`]).
pub fn key_vals(account: &AccountId, key: &IdempotencyKey, answer: StoredAnswer, now: Timestamp) -> Vec<Val> {
    vec![
        account.as_str().into(),
        key.as_str().into(),
        answer.request.into(),
        answer.response.into(),
        micros(now).into(),
    ]
}
