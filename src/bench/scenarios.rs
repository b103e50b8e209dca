//! The named scenarios. Each sets up its accounts, then drives its
//! operations from [`super::DEFAULT_CONCURRENCY`] concurrent clients (a
//! single one where the scenario is one sequence, like closing a month),
//! timing every operation.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use jiff::{SignedDuration, Timestamp};

use super::measure::{BenchResult, Progress, concurrently};
use super::{BenchConfig, Scratch};
use crate::domain::account::{AccountId, NewAccount};
use crate::domain::command::Command;
use crate::domain::credits::Credits;
use crate::domain::period::Zone;
use crate::ledger::{IdempotencyKey, Ledger, LedgerError, Store};
use crate::store::postgres::PgStore;
use crate::store::sqlite::{SqliteStore, Tuning};

pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub default_ops: u64,
    /// Whether `--compare` runs the yardsticks next to it.
    pub compared: bool,
    /// Only for SQLite (left out of a PostgreSQL run of every scenario).
    pub sqlite_only: bool,
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "debit-many",
        about: "debits of 1 credit spread over 10,000 accounts",
        default_ops: 100_000,
        compared: true,
        sqlite_only: false,
    },
    Scenario {
        name: "debit-many-webhook",
        about: "debit-many with one webhook endpoint subscribed to every event, the delivery worker sending \
                to a receiver on loopback, and a balance.low on each account's first debit (an event per \
                account, each delivered before the run ends)",
        default_ops: 100_000,
        compared: false,
        sqlite_only: false,
    },
    Scenario {
        name: "debit-hot",
        about: "debits of 1 credit on one account",
        default_ops: 50_000,
        compared: true,
        sqlite_only: false,
    },
    Scenario {
        name: "hold-capture",
        about: "hold 2 credits, then capture 1",
        default_ops: 20_000,
        compared: false,
        sqlite_only: false,
    },
    Scenario {
        name: "balance",
        about: "balance reads over 10,000 accounts",
        default_ops: 100_000,
        compared: false,
        sqlite_only: false,
    },
    Scenario {
        name: "usage",
        about: "usage reports of this month over 10 accounts (with --history, each holds a tenth of it)",
        default_ops: 20_000,
        compared: false,
        sqlite_only: false,
    },
    Scenario {
        name: "month-rollover",
        about: "the first debit of a new month on each of N accounts",
        default_ops: 100_000,
        compared: false,
        sqlite_only: false,
    },
    Scenario {
        name: "close-month",
        about: "statements for N accounts with a purchase each",
        default_ops: 100_000,
        compared: false,
        sqlite_only: false,
    },
    Scenario {
        name: "http",
        about: "debits through the real server over loopback, one keep-alive connection per client",
        default_ops: 50_000,
        compared: false,
        sqlite_only: false,
    },
    Scenario {
        name: "http-batch",
        about: "debits through POST /v1/batch, 1,000 a request, over loopback (at most 8 clients)",
        default_ops: 100_000,
        compared: false,
        sqlite_only: false,
    },
    Scenario {
        name: "recover",
        about: "SQLite: N debits over 10,000 accounts acknowledged into the log and never materialized (the \
                writer stopped as a crash stops it), then the open that replays them; each debit counts the \
                open's time divided evenly",
        default_ops: 100_000,
        compared: false,
        sqlite_only: true,
    },
];

/// Accounts of the spread-out scenarios.
const SPREAD_ACCOUNTS: u64 = 10_000;
/// Accounts the usage scenario reads (few, so `--history` makes each long).
const USAGE_ACCOUNTS: u64 = 10;
/// The instant the scenarios run at (mid-month, so no month starts by
/// accident), and the start of the next month for the rollover.
const NOW: &str = "2026-11-15T12:00:00Z";
const NEXT_MONTH: &str = "2026-12-01T00:00:01Z";

pub struct Outcome {
    pub result: BenchResult,
    /// Average operations per committed transaction (SQLite group commit).
    pub ops_per_commit: f64,
}

pub async fn run(s: &Scenario, scratch: &Scratch, config: &BenchConfig) -> Result<Outcome, LedgerError> {
    match scratch {
        Scratch::Sqlite { path, .. } if s.name == "recover" => recover(path, s, config).await,
        Scratch::Sqlite { path, .. } => {
            let store = SqliteStore::open(path)?;
            let before = store.group_stats();
            let mut result = run_on(store.clone(), s, scratch, config).await?;
            let after = store.group_stats();
            let (groups, ops) = (after.0 - before.0, after.1 - before.1);
            let per = if groups > 0 { ops as f64 / groups as f64 } else { 1.0 };
            result.ops_per_commit = per;
            Ok(result)
        }
        Scratch::Postgres { url, .. } => run_on(PgStore::open(url).await?, s, scratch, config).await,
    }
}

/// Writes `ops` debits with a writer that never materializes and is
/// dropped with its tail, as a crash leaves it; then times the open that
/// replays the log.
async fn recover(path: &std::path::Path, s: &Scenario, config: &BenchConfig) -> Result<Outcome, LedgerError> {
    let ops = config.ops.unwrap_or(s.default_ops).max(1);
    let now = ts(NOW);
    let accounts = SPREAD_ACCOUNTS.min(ops);
    let never = Tuning {
        max_tail_ops: usize::MAX,
        batch_ops: usize::MAX,
        idle_settle: None,
        settle_on_close: false,
        ..Tuning::default()
    };
    let rows_before = {
        let ledger = Arc::new(Ledger::new(SqliteStore::open_with(path, never)?, Zone::utc()));
        setup(&ledger, accounts, Work::Debit, now, config).await?;
        if config.history > 0 {
            let progress = Progress::new("history", config.history, config.progress);
            history(&ledger, accounts, config.history, now, progress, config).await?;
            // History goes into the tables: only the run's debits are replayed.
            ledger.store().settle().await?;
        }
        let rows = ledger.store().row_count().await?;
        drive(&ledger, "recover (writing the log)", ops, accounts, Work::Debit, config).await?;
        let pending = ledger.store().log_pending().await?;
        if pending == 0 {
            return Err(LedgerError::Internal("the writer materialized its log before the crash".into()));
        }
        rows
    };
    let started = Instant::now();
    let store = SqliteStore::open_with(
        path,
        Tuning { replay_step_rows: config.replay_step_rows, ..Tuning::default() },
    )?;
    let elapsed = started.elapsed();
    if store.log_pending().await? != 0 {
        return Err(LedgerError::Internal("the open left the log unreplayed".into()));
    }
    let rows = store.row_count().await?.saturating_sub(rows_before);
    let result = BenchResult::new(s.name, "sqlite", &mut evenly(elapsed, ops), elapsed, rows);
    Ok(Outcome { result, ops_per_commit: 1.0 })
}

fn ts(s: &str) -> Timestamp {
    s.parse().expect("bench timestamps are valid")
}

pub(super) fn account_id(i: u64) -> AccountId {
    AccountId::parse(&format!("bench-{i}")).expect("valid id")
}

async fn run_on<S: Store>(
    store: S,
    s: &Scenario,
    scratch: &Scratch,
    config: &BenchConfig,
) -> Result<Outcome, LedgerError> {
    let store_name = scratch.store_name();
    let ledger = Arc::new(Ledger::new(store, Zone::utc()));
    let ops = config.ops.unwrap_or(s.default_ops).max(1);
    let now = ts(NOW);
    let (accounts, work) = match s.name {
        "debit-many" => (SPREAD_ACCOUNTS.min(ops), Work::Debit),
        "debit-many-webhook" => (SPREAD_ACCOUNTS.min(ops), Work::Debit),
        "debit-hot" => (1, Work::Debit),
        "hold-capture" => (SPREAD_ACCOUNTS.min(ops), Work::HoldCapture),
        "balance" => (SPREAD_ACCOUNTS.min(ops), Work::Balance),
        "usage" => (USAGE_ACCOUNTS.min(ops), Work::Usage),
        "month-rollover" => (ops, Work::Rollover),
        "http" => (SPREAD_ACCOUNTS.min(ops), Work::Http),
        "http-batch" => (SPREAD_ACCOUNTS.min(ops), Work::HttpBatch),
        _ => (ops, Work::Close),
    };
    setup(&ledger, accounts, work, now, config).await?;
    if config.history > 0 {
        let progress = Progress::new("history", config.history, config.progress);
        history(&ledger, accounts, config.history, now, progress, config).await?;
    }
    let webhook = match s.name {
        "debit-many-webhook" => Some(super::webhook::Receiving::start(&ledger, accounts, now).await?),
        _ => None,
    };
    let rows_before = ledger.store().row_count().await?;
    let (mut latencies, elapsed) = if work == Work::Close {
        close_all(&ledger, ops, config).await?
    } else if work == Work::Http {
        super::http_load::run(ledger.clone(), ops, accounts, config, 1).await?
    } else if work == Work::HttpBatch {
        super::http_load::run(ledger.clone(), ops, accounts, config, super::http_load::BATCH_SIZE).await?
    } else {
        drive(&ledger, s.name, ops, accounts, work, config).await?
    };
    // What was acknowledged but not yet materialized (SQLite's log) is
    // work of the run: its time counts.
    let settling = std::time::Instant::now();
    ledger.store().settle().await?;
    let elapsed = elapsed + settling.elapsed();
    if let Some(webhook) = webhook {
        webhook.finish(accounts).await?;
    }
    let rows = ledger.store().row_count().await?.saturating_sub(rows_before);
    let result = BenchResult::new(s.name, store_name, &mut latencies, elapsed, rows);
    Ok(Outcome { result, ops_per_commit: 1.0 })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Work {
    Debit,
    HoldCapture,
    Balance,
    Usage,
    Rollover,
    Close,
    Http,
    HttpBatch,
}

/// Creates the accounts, with enough credits for any number of operations,
/// and what the scenario needs before it starts.
async fn setup<S: Store>(
    ledger: &Arc<Ledger<S>>,
    accounts: u64,
    work: Work,
    now: Timestamp,
    config: &BenchConfig,
) -> Result<(), LedgerError> {
    let mut progress = Progress::new("setup", accounts, config.progress);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..config.concurrency {
        let (ledger, next) = (ledger.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= accounts {
                    return Ok::<(), LedgerError>(());
                }
                let id = account_id(i);
                let new = NewAccount {
                    id: id.to_string(),
                    name: format!("Bench cafe {i}"),
                    monthly_free_credits: Some(1_000),
                    ..Default::default()
                };
                ledger.create_account(new, now).await?;
                let first = match work {
                    Work::Rollover => Command::Debit { credits: one(), reference: None, description: None },
                    Work::Close => Command::Purchase { credits: Credits::new(100).expect("valid") },
                    _ => Command::Purchase { credits: Credits::new(1_000_000).expect("valid") },
                };
                ledger.execute(&id, first, None, now).await?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| LedgerError::Internal(e.to_string()))??;
        progress.tick(next.load(Ordering::Relaxed).min(accounts));
    }
    progress.finish();
    Ok(())
}

/// Writes `entries` entries of prior history over the first `accounts`
/// accounts through the ledger itself (a purchase per account to pay for
/// them, then one-credit debits), so the database holds what a real one
/// would and the audit still passes.
async fn history<S: Store>(
    ledger: &Arc<Ledger<S>>,
    accounts: u64,
    entries: u64,
    now: Timestamp,
    progress: Progress,
    config: &BenchConfig,
) -> Result<(), LedgerError> {
    let accounts = accounts.max(1);
    let per = entries.div_ceil(accounts) as i64;
    let credits = Credits::new(per).map_err(LedgerError::from)?;
    for i in 0..accounts {
        ledger.execute(&account_id(i), Command::Purchase { credits }, None, now).await?;
    }
    let clients = vec![ledger.clone(); config.concurrency];
    concurrently(
        clients,
        entries,
        move |ledger: &Arc<Ledger<S>>, i| {
            let ledger = ledger.clone();
            async move {
                let debit = Command::Debit { credits: one(), reference: None, description: None };
                ledger.execute(&account_id(i % accounts), debit, None, now).await.map(|_| ())
            }
        },
        progress,
    )
    .await?;
    Ok(())
}

fn one() -> Credits {
    Credits::new(1).expect("valid")
}

/// Runs `ops` operations from concurrent clients; the latency of each.
async fn drive<S: Store>(
    ledger: &Arc<Ledger<S>>,
    name: &str,
    ops: u64,
    accounts: u64,
    work: Work,
    config: &BenchConfig,
) -> Result<(Vec<u32>, std::time::Duration), LedgerError> {
    let clients = vec![ledger.clone(); config.concurrency];
    let progress = Progress::new(name, ops, config.progress);
    concurrently(
        clients,
        ops,
        move |ledger: &Arc<Ledger<S>>, i| one_op(ledger.clone(), work, i, accounts),
        progress,
    )
    .await
}

async fn one_op<S: Store>(
    ledger: Arc<Ledger<S>>,
    work: Work,
    i: u64,
    accounts: u64,
) -> Result<(), LedgerError> {
    // Spread over the accounts, in an order that is not their creation order.
    let account = account_id(i.wrapping_mul(7_919) % accounts);
    let key = || IdempotencyKey::parse(&format!("bench-{i}")).expect("valid key");
    let now = ts(NOW) + SignedDuration::from_micros(i as i64);
    match work {
        Work::Debit => {
            let debit = Command::Debit { credits: one(), reference: None, description: None };
            ledger.execute(&account, debit, Some(key()), now).await?;
        }
        Work::HoldCapture => {
            let hold = Command::Hold {
                credits: Credits::new(2).expect("valid"),
                reference: None,
                ttl_seconds: None,
            };
            let held = ledger.execute(&account, hold, Some(key()), now).await?;
            let crate::domain::command::Outcome::Hold(h) = held.outcome else {
                return Err(LedgerError::Internal("a hold answered something else".into()));
            };
            ledger.execute(&account, Command::Capture { hold_id: h.id, credits: 1 }, None, now).await?;
        }
        Work::Balance => {
            ledger.balance(&account, now).await?;
        }
        Work::Usage => {
            ledger.usage(&account, None, None, now).await?;
        }
        Work::Rollover => {
            let debit = Command::Debit { credits: one(), reference: None, description: None };
            let account = account_id(i);
            ledger.execute(&account, debit, Some(key()), ts(NEXT_MONTH)).await?;
        }
        Work::Close | Work::Http | Work::HttpBatch => {
            unreachable!("closing and HTTP load have their own drivers")
        }
    }
    Ok(())
}

/// Closes November for every account at once, as the server does on the
/// 1st; the latency of each account's close is not separable, so each is
/// counted as the whole run divided evenly.
async fn close_all<S: Store>(
    ledger: &Arc<Ledger<S>>,
    ops: u64,
    config: &BenchConfig,
) -> Result<(Vec<u32>, std::time::Duration), LedgerError> {
    let progress = Progress::new("close-month", ops, config.progress);
    let started = Instant::now();
    let report = ledger.close_all(None, ts(NEXT_MONTH)).await?;
    let elapsed = started.elapsed();
    progress.finish();
    if report.statements.len() as u64 != ops {
        return Err(LedgerError::Internal(format!(
            "{} statements for {ops} accounts",
            report.statements.len()
        )));
    }
    Ok((evenly(elapsed, ops), elapsed))
}

/// The latencies of `ops` operations whose run of `elapsed` is not
/// separable: each counts the whole divided evenly (µs).
fn evenly(elapsed: std::time::Duration, ops: u64) -> Vec<u32> {
    let each = (elapsed.as_micros() / u128::from(ops.max(1))).min(u128::from(u32::MAX)) as u32;
    vec![each; ops as usize]
}
