//! Group commit on PostgreSQL: the operations waiting on a replica run
//! together, in one transaction, with a fixed number of round trips
//! however many they are.
//!
//! A few worker tasks take what is queued (up to [`MAX_GROUP`]) and run it:
//! lock every account the group names, in account order (so two groups on
//! any replicas never deadlock); load their states, stored keys and active
//! lots and holds with one query per table; apply the operations in memory,
//! one after the other, in the order they arrived (an account's state
//! carries from one to the next, a key used twice in the group is
//! answered from the first); write every changed row with one statement
//! per table (`jsonb_populate_recordset`); commit; answer. A refused
//! operation writes nothing, so it does not disturb its neighbours.
//!
//! Operations that need rows beyond the active ones (refunds, purchases and
//! their monthly limit, statements) run alone, as before. If anything goes
//! wrong inside a group before the commit, the transaction rolls back and
//! each operation runs again alone, so one failure answers one request.

use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::{GenericClient, Pool};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;

use super::tx::{self, Write, all, change_writes, key_vals, one, row_writes};
use super::{pg_error, pool_error};
use crate::domain::account::AccountId;
use crate::domain::state::AccountState;
use crate::ledger::{
    Executed, IdempotencyKey, LedgerError, Operation, StoredAnswer, answer_of, replay, request_of, transition,
};
use crate::store::columns::{
    self, ACCOUNTS, Cols as _, DEBITS, ENTRIES, HOLDS, KEYS, LOTS, PURCHASES, REFUNDS, STATEMENTS, Table, Val,
};

/// Groups in flight at once per replica (each holds one connection). An
/// account's operations always go to the same worker, so a replica's groups
/// never wait for each other's row locks.
pub const WORKERS: usize = 2;
/// Operations in one group at most.
pub const MAX_GROUP: usize = 256;
const QUEUE: usize = 1024;

type Answer = Result<Executed, LedgerError>;

pub struct Job {
    op: Operation,
    reply: oneshot::Sender<Answer>,
}

/// Where a replica's operations queue for the workers.
#[derive(Clone)]
pub struct Groups {
    queues: Arc<[mpsc::Sender<Job>]>,
}

impl Groups {
    /// Starts the workers on the current runtime; they stop when the last
    /// clone of this handle is dropped.
    pub fn start(pool: &Pool) -> Groups {
        let queues = (0..WORKERS)
            .map(|_| {
                let (queue, rx) = mpsc::channel(QUEUE);
                tokio::spawn(worker(pool.clone(), rx));
                queue
            })
            .collect();
        Groups { queues }
    }

    /// Runs `op` in the next group; gives it back if it must run alone.
    pub async fn execute(&self, op: Operation) -> Result<Answer, Operation> {
        if !groupable(&op) {
            return Err(op);
        }
        let (reply, answer) = oneshot::channel();
        let worker =
            op.account.as_str().bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
        let queue = &self.queues[worker % self.queues.len()];
        queue.send(Job { op, reply }).await.map_err(|e| e.0.op)?;
        Ok(answer.await.unwrap_or_else(|_| {
            Err(LedgerError::Unavailable("the server is shutting down; retry with the same key".into()))
        }))
    }
}

/// Whether everything `op` reads is among the rows a group loads.
fn groupable(op: &Operation) -> bool {
    let n = op.command.needs();
    n.debit.is_none() && n.purchase.is_none() && !n.unbilled && !n.month_purchases && n.statement.is_none()
}

async fn worker(pool: Pool, mut rx: mpsc::Receiver<Job>) {
    let mut jobs = Vec::new();
    while rx.recv_many(&mut jobs, MAX_GROUP).await > 0 {
        let ops: Vec<&Operation> = jobs.iter().map(|j| &j.op).collect();
        let answers = match run_group(&pool, &ops).await {
            Ok(answers) => answers,
            Err(Failed::Committing(e)) => ops.iter().map(|_| Err(e.clone())).collect(),
            Err(Failed::Before(e)) if ops.len() == 1 => vec![Err(e)],
            Err(Failed::Before(_)) => {
                let mut answers = Vec::with_capacity(ops.len());
                for op in &ops {
                    answers.push(alone(&pool, op).await);
                }
                answers
            }
        };
        for (job, answer) in jobs.drain(..).zip(answers) {
            let _ = job.reply.send(answer);
        }
    }
}

/// Runs one operation in its own transaction.
pub async fn alone(pool: &Pool, op: &Operation) -> Answer {
    let mut client = pool.get().await.map_err(pool_error)?;
    let t = client.transaction().await.map_err(pg_error)?;
    let done = tx::run(&t, op).await?;
    t.commit().await.map_err(pg_error)?;
    Ok(done)
}

enum Failed {
    /// Rolled back: nothing of the group was written.
    Before(LedgerError),
    /// The commit's answer was lost: the group may or may not be written.
    Committing(LedgerError),
}

impl From<LedgerError> for Failed {
    fn from(e: LedgerError) -> Failed {
        Failed::Before(e)
    }
}

/// The states a group works on, by account: as loaded, and as the
/// operations so far left them.
struct Accounts {
    before: HashMap<String, AccountState>,
    now: HashMap<String, AccountState>,
}

async fn run_group(pool: &Pool, ops: &[&Operation]) -> Result<Vec<Answer>, Failed> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let t = client.transaction().await.map_err(pg_error)?;
    let mut answers: Vec<Option<Answer>> = vec![None; ops.len()];
    let mut requests = vec![String::new(); ops.len()];
    for (i, op) in ops.iter().enumerate() {
        match request_of(op) {
            Ok(r) => requests[i] = r,
            Err(e) => answers[i] = Some(Err(e)),
        }
    }
    let live = || ops.iter().enumerate().filter(|(i, _)| answers[*i].is_none());
    let mut ids: Vec<&str> = live().map(|(_, op)| op.account.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();

    // Lock first, in account order; everything after reads under the locks.
    let sql = crate::cached!(ACCOUNTS.select("WHERE account_id = ANY($1) ORDER BY account_id FOR UPDATE"));
    let locked = all(&t, sql, &[&ids], columns::account).await?;
    let (key_accounts, keys): (Vec<&str>, Vec<&str>) =
        live().filter_map(|(_, op)| op.key.as_ref().map(|k| (op.account.as_str(), k.as_str()))).unzip();
    // One primary-key lookup per pair, whatever the table's statistics say
    // (a hash join over the whole table is what an `IN` list became).
    let keys_sql = "SELECT k.account_id, k.key, k.request, k.response \
                    FROM unnest($1::text[], $2::text[]) AS wanted (account_id, key), \
                    LATERAL (SELECT * FROM idempotency_keys \
                             WHERE account_id = wanted.account_id AND key = wanted.key) AS k";
    let by_account: [&(dyn ToSql + Sync); 1] = [&ids];
    let by_key: [&(dyn ToSql + Sync); 2] = [&key_accounts, &keys];
    let (lots, holds, stored) = tokio::try_join!(
        all(&t, crate::cached!(LOTS.select("WHERE account_id = ANY($1) AND active")), &by_account, |r| {
            Ok((r.text(0)?, columns::lot(r)?))
        }),
        all(
            &t,
            crate::cached!(HOLDS.select("WHERE account_id = ANY($1) AND status = 'held'")),
            &by_account,
            |r| { Ok((r.text(0)?, columns::hold(r)?)) }
        ),
        all(&t, keys_sql, &by_key, |r| {
            Ok(((r.text(0)?, r.text(1)?), StoredAnswer { request: r.text(2)?, response: r.text(3)? }))
        }),
    )?;
    let mut states: HashMap<String, AccountState> =
        locked.into_iter().map(|a| (a.id.as_str().to_string(), AccountState::new(a))).collect();
    for (a, lot) in lots {
        if let Some(s) = states.get_mut(&a) {
            s.lots.push(lot);
        }
    }
    for (a, hold) in holds {
        if let Some(s) = states.get_mut(&a) {
            s.holds.push(hold);
        }
    }
    for s in states.values_mut() {
        tx::load_missing_lots(&t, s).await?;
    }
    let mut stored: HashMap<(String, String), StoredAnswer> = stored.into_iter().collect();
    let mut accounts = Accounts { before: states.clone(), now: states };

    let mut writes: Vec<Write> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        if answers[i].is_some() {
            continue;
        }
        let answer = apply_one(&t, op, &mut accounts, &mut stored, &requests[i], &mut writes).await?;
        answers[i] = Some(answer);
    }
    let mut ordered: Vec<Write> = Vec::new();
    for (a, after) in &accounts.now {
        ordered.extend(row_writes(&accounts.before[a], after));
    }
    ordered.extend(writes);
    write_all(&t, ordered).await?;
    t.commit().await.map_err(|e| Failed::Committing(pg_error(e)))?;
    Ok(answers.into_iter().map(|a| a.expect("every operation answered")).collect())
}

/// Applies one operation to its account's state in memory, and queues
/// what it created.
async fn apply_one(
    t: &impl GenericClient,
    op: &Operation,
    accounts: &mut Accounts,
    stored: &mut HashMap<(String, String), StoredAnswer>,
    request: &str,
    writes: &mut Vec<Write>,
) -> Result<Answer, LedgerError> {
    let a = op.account.as_str();
    if !accounts.now.contains_key(a) {
        return Ok(Err(LedgerError::AccountNotFound(a.to_string())));
    }
    if let Some(key) = &op.key
        && let Some(answer) = stored.get(&(a.to_string(), key.as_str().to_string()))
    {
        return Ok(replay(key, request, answer));
    }
    if let Some(h) = op.command.needs().hold {
        load_hold(t, &op.account, &h, accounts).await?;
    }
    let state = accounts.now.get_mut(a).expect("checked above");
    let done = match transition(state, op) {
        Ok(done) => done,
        Err(e) => return Ok(Err(e)),
    };
    *state = done.after;
    let key = op.key.as_ref().map(IdempotencyKey::as_str);
    writes.extend(change_writes(&op.account, done.changes, key, op.now));
    if let Some(key) = &op.key {
        let answer = answer_of(request.to_string(), &done.outcome)?;
        writes.push(Write { table: &KEYS, vals: key_vals(&op.account, key, answer.clone(), op.now) });
        stored.insert((a.to_string(), key.as_str().to_string()), answer);
    }
    Ok(Ok(Executed { outcome: done.outcome, replayed: false, tally: done.tally }))
}

/// A hold that is no longer held was not loaded with the group: read it
/// (and its lots) as stored, since the group has not touched it.
async fn load_hold(
    t: &impl GenericClient,
    account: &AccountId,
    hold: &str,
    accounts: &mut Accounts,
) -> Result<(), LedgerError> {
    let a = account.as_str();
    if accounts.now[a].holds.iter().any(|x| x.id == hold) {
        return Ok(());
    }
    let sql = crate::cached!(HOLDS.select("WHERE account_id = $1 AND hold_id = $2"));
    let Some(found) = one(t, sql, &[&a, &hold], columns::hold).await? else {
        return Ok(());
    };
    for states in [&mut accounts.before, &mut accounts.now] {
        let s = states.get_mut(a).expect("loaded account");
        s.holds.push(found.clone());
        tx::load_missing_lots(t, s).await?;
    }
    Ok(())
}

/// Writes every row with one statement per table, in an order that keeps
/// each account's entry ids increasing in the order of its operations.
async fn write_all(t: &impl GenericClient, writes: Vec<Write>) -> Result<(), LedgerError> {
    let order: [&'static Table; 9] =
        [&ACCOUNTS, &LOTS, &HOLDS, &DEBITS, &PURCHASES, &REFUNDS, &STATEMENTS, &ENTRIES, &KEYS];
    let mut rows: Vec<Vec<Vec<Val>>> = vec![Vec::new(); order.len()];
    for w in writes {
        let i = order.iter().position(|t| std::ptr::eq(*t, w.table)).expect("a known table");
        rows[i].push(w.vals);
    }
    let statements: Vec<(String, String)> = order
        .iter()
        .zip(rows)
        .filter(|(_, rows)| !rows.is_empty())
        .map(|(table, rows)| (many_sql(table), json_rows(table, rows)))
        .collect();
    let run = statements.iter().map(|(sql, json)| async move {
        let stmt = t.prepare_cached(sql).await.map_err(pg_error)?;
        t.execute(&stmt, &[json]).await.map_err(pg_error)
    });
    futures_util::future::try_join_all(run).await?;
    Ok(())
}

/// The statement that writes a JSON array of rows into `table`.
fn many_sql(table: &'static Table) -> String {
    let source = format!("jsonb_populate_recordset(NULL::{}, $1::text::jsonb) WITH ORDINALITY", table.name);
    if std::ptr::eq(table, &ENTRIES) {
        let select = table.list().replacen("entry_id", "nextval('entry_ids')", 1);
        format!("{} ORDER BY ordinality", table.insert_from(&select, &source, false))
    } else {
        table.insert_from(table.list(), &source, !std::ptr::eq(table, &KEYS))
    }
}

fn json_rows(table: &Table, rows: Vec<Vec<Val>>) -> String {
    let rows: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|vals| {
            let row = table.cols.iter().zip(vals).map(|(c, v)| {
                let v = match v {
                    Val::Int(i) => serde_json::Value::from(i),
                    Val::Text(s) => serde_json::Value::from(s),
                    Val::Flag(b) => serde_json::Value::from(b),
                    Val::Null => serde_json::Value::Null,
                };
                (c.to_string(), v)
            });
            serde_json::Value::Object(row.collect())
        })
        .collect();
    serde_json::Value::Array(rows).to_string()
}
