//! The yardsticks our figures are read against, run on the same kind of
//! database with the same durability:
//!
//! - `hand-ledger`: what a platform engineer would write instead: per debit,
//!   one transaction with `UPDATE balances SET credits = credits - n WHERE
//!   account = ? AND credits >= n` and one entry `INSERT`.
//! - `bare-insert`: the physical limit: as many rows as our debits wrote,
//!   inserted by a bare loop with no logic, in transactions of the size ours
//!   committed (SQLite's groups; one operation each on PostgreSQL).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::measure::{BenchResult, Progress, concurrently};
use super::scenarios::Outcome;
use super::{BenchConfig, Scratch};
use crate::ledger::LedgerError;
use crate::store::postgres::POOL_SIZE;

/// Accounts the hand-written ledger spreads over (as `debit-many` does).
const SPREAD_ACCOUNTS: u64 = 10_000;

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

pub async fn run(
    scratch: &Scratch,
    ours: &Outcome,
    config: &BenchConfig,
) -> Result<Vec<BenchResult>, LedgerError> {
    let r = &ours.result;
    let accounts = if r.scenario == "debit-hot" { 1 } else { SPREAD_ACCOUNTS.min(r.ops) };
    let rows = (r.rows_per_op * r.ops as f64).round() as u64;
    let rows_per_tx = ((r.rows_per_op * ours.ops_per_commit).round() as u64).max(1);
    let store = scratch.store_name();
    let hand = format!("hand-ledger/{}", r.scenario);
    let bare = format!("bare-insert/{}", r.scenario);
    match scratch {
        Scratch::Sqlite { path, .. } => {
            let path = path.clone();
            let ops = r.ops;
            let (hand_lat, hand_time, bare_lat, bare_time) = tokio::task::spawn_blocking(move || {
                let conn = sqlite_conn(&path)?;
                let (hl, ht) = sqlite_hand_ledger(&conn, accounts, ops)?;
                let (bl, bt) = sqlite_bare_insert(&conn, rows, rows_per_tx, ops)?;
                Ok::<_, rusqlite::Error>((hl, ht, bl, bt))
            })
            .await
            .map_err(|e| LedgerError::Internal(e.to_string()))?
            .map_err(|e| LedgerError::Internal(format!("yardstick: {e}")))?;
            let (mut hl, mut bl) = (hand_lat, bare_lat);
            Ok(vec![
                BenchResult::new(&hand, store, &mut hl, hand_time, 1),
                BenchResult::new(&bare, store, &mut bl, bare_time, rows),
            ])
        }
        Scratch::Postgres { url, .. } => {
            let workers = config.concurrency.min(POOL_SIZE);
            let (mut hl, ht) = pg_hand_ledger(url, accounts, r.ops, workers).await?;
            let (mut bl, bt) =
                pg_bare_insert(url, r.ops, r.rows_per_op.round().max(1.0) as u64, workers).await?;
            Ok(vec![
                BenchResult::new(&hand, store, &mut hl, ht, r.ops),
                BenchResult::new(&bare, store, &mut bl, bt, rows),
            ])
        }
    }
    .map(|mut v: Vec<BenchResult>| {
        // Rows per op of the hand ledger: its UPDATE and its INSERT write two.
        v[0].rows_per_op = 1.0;
        v
    })
}

fn sqlite_conn(path: &std::path::Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path.with_file_name("yardstick.db"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

fn sqlite_hand_ledger(
    conn: &rusqlite::Connection,
    accounts: u64,
    ops: u64,
) -> rusqlite::Result<(Vec<u32>, Duration)> {
    conn.execute_batch(
        "CREATE TABLE balances (account TEXT PRIMARY KEY, credits INTEGER NOT NULL) WITHOUT ROWID;
         CREATE TABLE ledger (id INTEGER PRIMARY KEY, account TEXT NOT NULL, delta INTEGER NOT NULL, at INTEGER NOT NULL);",
    )?;
    conn.execute_batch("BEGIN")?;
    for a in 0..accounts {
        conn.execute(
            "INSERT INTO balances VALUES (?1, ?2)",
            rusqlite::params![format!("bench-{a}"), ops as i64],
        )?;
    }
    conn.execute_batch("COMMIT")?;
    let mut latencies = Vec::with_capacity(ops as usize);
    let started = Instant::now();
    for i in 0..ops {
        let t = Instant::now();
        let account = format!("bench-{}", i.wrapping_mul(7_919) % accounts);
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let changed = conn
            .prepare_cached("UPDATE balances SET credits = credits - 1 WHERE account = ?1 AND credits >= 1")?
            .execute([&account])?;
        if changed == 1 {
            conn.prepare_cached("INSERT INTO ledger (account, delta, at) VALUES (?1, -1, ?2)")?
                .execute(rusqlite::params![account, i as i64])?;
        }
        conn.execute_batch("COMMIT")?;
        latencies.push(micros(t.elapsed()));
    }
    Ok((latencies, started.elapsed()))
}

fn sqlite_bare_insert(
    conn: &rusqlite::Connection,
    rows: u64,
    rows_per_tx: u64,
    ops: u64,
) -> rusqlite::Result<(Vec<u32>, Duration)> {
    conn.execute_batch("CREATE TABLE bare (a INTEGER NOT NULL, b INTEGER NOT NULL, c TEXT NOT NULL)")?;
    let mut latencies = Vec::with_capacity(ops as usize);
    let started = Instant::now();
    let mut written = 0;
    while written < rows {
        let t = Instant::now();
        let n = rows_per_tx.min(rows - written);
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let mut stmt = conn.prepare_cached("INSERT INTO bare (a, b, c) VALUES (?1, ?2, ?3)")?;
        for i in written..written + n {
            stmt.execute(rusqlite::params![i as i64, -1i64, "bench-row"])?;
        }
        drop(stmt);
        conn.execute_batch("COMMIT")?;
        written += n;
        // Each operation of the transaction waited for it.
        let per_tx = (n as f64 / rows.max(1) as f64 * ops as f64).round() as usize;
        latencies.extend(std::iter::repeat_n(micros(t.elapsed()), per_tx.max(1)));
    }
    latencies.truncate(ops as usize);
    Ok((latencies, started.elapsed()))
}

async fn pg_client(url: &str) -> Result<tokio_postgres::Client, LedgerError> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| LedgerError::Unavailable(format!("PostgreSQL: {e}")))?;
    tokio::spawn(conn);
    Ok(client)
}

fn pg(e: tokio_postgres::Error) -> LedgerError {
    LedgerError::Internal(format!("yardstick: {e}"))
}

/// Runs `ops` transactions from `workers` connections; `body(client, i)` is one.
async fn pg_drive<F, Fut>(
    url: &str,
    ops: u64,
    workers: usize,
    body: F,
) -> Result<(Vec<u32>, Duration), LedgerError>
where
    F: Fn(Arc<tokio_postgres::Client>, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send,
{
    let mut clients = Vec::with_capacity(workers);
    for _ in 0..workers {
        clients.push(Arc::new(pg_client(url).await?));
    }
    let op = move |client: &Arc<tokio_postgres::Client>, i| {
        let done = body(client.clone(), i);
        async move { done.await.map_err(pg) }
    };
    concurrently(clients, ops, op, Progress::new("yardstick", ops, false)).await
}

async fn pg_hand_ledger(
    url: &str,
    accounts: u64,
    ops: u64,
    workers: usize,
) -> Result<(Vec<u32>, Duration), LedgerError> {
    let setup = pg_client(url).await?;
    setup
        .batch_execute(&format!(
            "CREATE TABLE hand_balances (account TEXT PRIMARY KEY, credits BIGINT NOT NULL);
             CREATE TABLE hand_ledger (id BIGSERIAL PRIMARY KEY, account TEXT NOT NULL, delta BIGINT NOT NULL, at BIGINT NOT NULL);
             INSERT INTO hand_balances SELECT 'bench-' || g, {ops} FROM generate_series(0, {}) g;",
            accounts - 1
        ))
        .await
        .map_err(pg)?;
    pg_drive(url, ops, workers, move |client, i| async move {
        let account = format!("bench-{}", i.wrapping_mul(7_919) % accounts);
        client.batch_execute("BEGIN").await?;
        let n = client
            .execute(
                "UPDATE hand_balances SET credits = credits - 1 WHERE account = $1 AND credits >= 1",
                &[&account],
            )
            .await?;
        if n == 1 {
            client
                .execute(
                    "INSERT INTO hand_ledger (account, delta, at) VALUES ($1, -1, $2)",
                    &[&account, &(i as i64)],
                )
                .await?;
        }
        client.batch_execute("COMMIT").await
    })
    .await
}

async fn pg_bare_insert(
    url: &str,
    ops: u64,
    rows_per_op: u64,
    workers: usize,
) -> Result<(Vec<u32>, Duration), LedgerError> {
    let setup = pg_client(url).await?;
    setup
        .batch_execute("CREATE TABLE bare (a BIGINT NOT NULL, b BIGINT NOT NULL, c TEXT NOT NULL)")
        .await
        .map_err(pg)?;
    pg_drive(url, ops, workers, move |client, i| async move {
        client.batch_execute("BEGIN").await?;
        for r in 0..rows_per_op {
            client
                .execute(
                    "INSERT INTO bare (a, b, c) VALUES ($1, $2, 'bench-row')",
                    &[&(i as i64), &(r as i64)],
                )
                .await?;
        }
        client.batch_execute("COMMIT").await
    })
    .await
}
