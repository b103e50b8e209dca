//! The one write pipeline on PostgreSQL ([`crate::ledger::batch`]): the
//! operations waiting on a replica run together, in one transaction, with
//! a fixed number of round trips however many they are.
//!
//! A few worker tasks take what is queued (up to [`MAX_GROUP`]) and run it:
//! lock every account the group names, in account order (so two groups on
//! any replicas never deadlock); load what the group needs with one query
//! per table ([`crate::store::pipeline`], pipelined on the connection);
//! apply the operations in memory in arrival order; write every row with
//! one statement per table (`jsonb_populate_recordset`); commit; answer.
//! Every mutation goes this way, purchases, refunds and statements too.
//!
//! If anything goes wrong before the commit (a database error, a panic),
//! the transaction rolls back and each operation runs again alone, so one
//! failure answers one request; a panic answers `internal` and the worker
//! goes on. A lost COMMIT answers `unavailable` to the whole group.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use deadpool_postgres::{GenericClient, Pool};
use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};

use super::{pg_error, pool_error};
use crate::ledger::batch::{self, Loaded, Rows, Wants};
use crate::ledger::{Executed, LedgerError, Operation};
use crate::store::columns::{ENTRIES, Table, Val};
use crate::store::pipeline::{Dialect, Load, append_only, plan, plan_last, plan_recharging, table_rows};

/// Groups in flight at once per replica (each holds one connection). An
/// account's operations always go to the same worker, so a replica's groups
/// never wait for each other's row locks.
pub const WORKERS: usize = 2;
/// Operations in one group at most.
pub const MAX_GROUP: usize = 256;
/// Operations waiting per worker before callers wait to enqueue.
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

    /// Runs `op` in the next group of its account's worker.
    pub async fn execute(&self, op: Operation) -> Answer {
        let (reply, answer) = oneshot::channel();
        let worker =
            op.account.as_str().bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
        let queue = &self.queues[worker % self.queues.len()];
        let stopped =
            || LedgerError::Unavailable("the server is shutting down; retry with the same key".into());
        queue.send(Job { op, reply }).await.map_err(|_| stopped())?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

async fn worker(pool: Pool, mut rx: mpsc::Receiver<Job>) {
    let mut jobs = Vec::new();
    while rx.recv_many(&mut jobs, MAX_GROUP).await > 0 {
        let ops: Vec<Operation> = jobs.iter().map(|j| j.op.clone()).collect();
        let answers = run_ops(&pool, &ops).await;
        for (job, answer) in jobs.drain(..).zip(answers) {
            let _ = job.reply.send(answer);
        }
    }
}

/// Runs `ops` as one group; if it fails before its commit, each again alone.
async fn run_ops(pool: &Pool, ops: &[Operation]) -> Vec<Answer> {
    let outcome = AssertUnwindSafe(run_group(pool, ops)).catch_unwind().await.unwrap_or_else(|_| {
        tracing::error!(operations = ops.len(), "a group of operations panicked; it was rolled back");
        Err(Failed::Before(LedgerError::Internal("an operation panicked; it was rolled back".into())))
    });
    match outcome {
        Ok(answers) => answers,
        Err(Failed::Committing(e)) => ops.iter().map(|_| Err(e.clone())).collect(),
        Err(Failed::Before(e)) if ops.len() == 1 => vec![Err(e)],
        Err(Failed::Before(_)) => {
            let mut answers = Vec::with_capacity(ops.len());
            for op in ops {
                answers.extend(Box::pin(run_ops(pool, std::slice::from_ref(op))).await);
            }
            answers
        }
    }
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

async fn run_group(pool: &Pool, ops: &[Operation]) -> Result<Vec<Answer>, Failed> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let t = client.transaction().await.map_err(pg_error)?;
    let loaded = load(&t, &Wants::of(ops), true).await?;
    let batch = batch::apply(loaded, ops);
    write(&t, &batch.rows).await?;
    t.commit().await.map_err(|e| Failed::Committing(pg_error(e)))?;
    Ok(batch.answers)
}

async fn run_load(
    c: &impl GenericClient,
    load: Load,
    param: &str,
    lock: bool,
) -> Result<Vec<tokio_postgres::Row>, LedgerError> {
    let stmt = c.prepare_cached(Dialect::Postgres.sql(load, lock)).await.map_err(pg_error)?;
    c.query(&stmt, &[&param]).await.map_err(pg_error)
}

fn land(loaded: &mut Loaded, load: Load, rows: Vec<tokio_postgres::Row>) -> Result<(), LedgerError> {
    rows.iter().try_for_each(|r| load.land(loaded, r)).map_err(LedgerError::Internal)
}

/// Everything `wants` names, as stored; with `lock`, the accounts' rows are
/// locked first, in id order, and everything else is read under the locks.
pub async fn load(c: &impl GenericClient, wants: &Wants, lock: bool) -> Result<Loaded, LedgerError> {
    let mut loaded = Loaded::default();
    let mut plan = plan(wants).into_iter().peekable();
    if lock && let Some((load, param)) = plan.next_if(|(l, _)| *l == Load::Accounts) {
        let rows = run_load(c, load, &param, true).await?;
        land(&mut loaded, load, rows)?;
    }
    let rest: Vec<(Load, String)> = plan.collect();
    // One round trip: the queries are pipelined on the connection.
    let results =
        futures_util::future::try_join_all(rest.iter().map(|(load, param)| run_load(c, *load, param, false)))
            .await?;
    for ((load, _), rows) in rest.iter().zip(results) {
        land(&mut loaded, *load, rows)?;
    }
    if let Some((load, param)) = plan_recharging(&loaded, wants) {
        let rows = run_load(c, load, &param, false).await?;
        land(&mut loaded, load, rows)?;
    }
    let last = plan_last(&loaded);
    let results =
        futures_util::future::try_join_all(last.iter().map(|(load, param)| run_load(c, *load, param, false)))
            .await?;
    for ((load, _), rows) in last.iter().zip(results) {
        land(&mut loaded, *load, rows)?;
    }
    Ok(loaded)
}

/// Writes a group's rows with one statement per table, pipelined.
pub async fn write(t: &impl GenericClient, rows: &Rows) -> Result<(), LedgerError> {
    let statements: Vec<(String, String)> = table_rows(rows, 0)
        .into_iter()
        .map(|(table, values)| (many_sql(table), json_rows(table, values)))
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
        table.insert_from(table.list(), &source, !append_only(table))
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
