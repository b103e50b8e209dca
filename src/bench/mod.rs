//! `textcredits bench`: named scenarios run on a real store, in a scratch
//! database (a temporary SQLite file beside the given one, or a fresh
//! PostgreSQL schema), measured: operations per second, latency
//! percentiles, rows written per operation, peak memory. With `--compare`,
//! the yardsticks ([`yardstick`]) run in the same process on the same kind
//! of database, and every figure can be read as a ratio to them.
//!
//! Speed is only ever measured here, never asserted by tests.

mod http_load;
mod measure;
mod scenarios;
mod webhook;
mod yardstick;

use std::path::PathBuf;

use serde::Serialize;

pub use measure::{BenchResult, Machine};
pub use scenarios::{SCENARIOS, Scenario};

use crate::ledger::LedgerError;
use crate::store::DatabaseUrl;

/// Concurrent clients of the in-process scenarios: enough to fill the
/// SQLite writer's groups and the PostgreSQL pool.
pub const DEFAULT_CONCURRENCY: usize = 64;

#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Scenario names; empty = all.
    pub scenarios: Vec<String>,
    pub ops: Option<u64>,
    pub concurrency: usize,
    pub compare: bool,
    pub progress: bool,
    /// Runs of each scenario; the report keeps the median by ops/s.
    pub runs: usize,
    /// Ledger entries written into the scratch database before measuring,
    /// to show that an operation's cost does not grow with history.
    pub history: u64,
    /// The SQLite replay's step at open (`recover`), in table rows.
    pub replay_step_rows: usize,
}

/// Most runs per scenario.
pub const MAX_RUNS: usize = 9;
/// Most operations per scenario, and most entries of prior history.
pub const MAX_OPS: u64 = 100_000_000;
/// Most concurrent clients.
pub const MAX_CONCURRENCY: usize = 4_096;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub results: Vec<BenchResult>,
}

/// Runs the chosen scenarios (and yardsticks) on a scratch copy of the
/// kind of database `url` names.
pub async fn run(url: &DatabaseUrl, config: &BenchConfig) -> Result<Report, LedgerError> {
    let postgres = matches!(url, DatabaseUrl::Postgres(_));
    for name in &config.scenarios {
        if let Some(s) = SCENARIOS.iter().find(|s| s.name == *name && s.sqlite_only && postgres) {
            return Err(LedgerError::invalid(format!(
                "the {} scenario is for SQLite only (PostgreSQL keeps no log to replay)",
                s.name
            )));
        }
        if !SCENARIOS.iter().any(|s| s.name == *name) {
            let names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
            return Err(LedgerError::invalid(format!(
                "unknown scenario {name:?}: one of {}",
                names.join(", ")
            )));
        }
    }
    let mut results = Vec::new();
    for scenario in SCENARIOS.iter().filter(|s| {
        if config.scenarios.is_empty() {
            !(postgres && s.sqlite_only)
        } else {
            config.scenarios.iter().any(|n| n == s.name)
        }
    }) {
        let mut ours = Vec::new();
        let mut theirs: Vec<Vec<BenchResult>> = Vec::new();
        for _ in 0..config.runs {
            let scratch = Scratch::new(url).await?;
            let outcome = scenarios::run(scenario, &scratch, config).await;
            scratch.drop_it().await;
            let outcome = outcome?;
            if config.compare && scenario.compared {
                let scratch = Scratch::new(url).await?;
                let yardsticks = yardstick::run(&scratch, &outcome, config).await;
                scratch.drop_it().await;
                theirs.push(yardsticks?);
            }
            ours.push(outcome.result);
        }
        results.push(median(ours));
        for i in 0..theirs.first().map_or(0, Vec::len) {
            results.push(median(theirs.iter().map(|run| run[i].clone()).collect()));
        }
    }
    Ok(Report { machine: Machine::read(), results })
}

/// The run with the median throughput.
fn median(mut runs: Vec<BenchResult>) -> BenchResult {
    runs.sort_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec));
    runs.swap_remove(runs.len() / 2)
}

/// A throw-away database of the same kind as the one given.
pub enum Scratch {
    Sqlite { dir: tempfile_dir::Dir, path: PathBuf },
    Postgres { base: String, schema: String, url: String },
}

impl Scratch {
    async fn new(url: &DatabaseUrl) -> Result<Scratch, LedgerError> {
        match url {
            DatabaseUrl::Sqlite(path) => {
                let near = path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map_or(PathBuf::from("."), PathBuf::from);
                let dir = tempfile_dir::Dir::new(&near)?;
                let path = dir.path.join("bench.db");
                Ok(Scratch::Sqlite { dir, path })
            }
            DatabaseUrl::Postgres(base) => {
                let schema = format!("bench_{}", crate::ledger::random_id());
                pg_batch(base, &format!("CREATE SCHEMA {schema}")).await?;
                let sep = if base.contains('?') { '&' } else { '?' };
                let url = format!("{base}{sep}options=-csearch_path%3D{schema}");
                Ok(Scratch::Postgres { base: base.clone(), schema, url })
            }
        }
    }

    pub fn store_name(&self) -> &'static str {
        match self {
            Scratch::Sqlite { .. } => "sqlite",
            Scratch::Postgres { .. } => "postgres",
        }
    }

    pub async fn drop_it(self) {
        if let Scratch::Postgres { base, schema, .. } = &self {
            let _ = pg_batch(base, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
        }
    }
}

pub async fn pg_batch(url: &str, sql: &str) -> Result<(), LedgerError> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| LedgerError::Unavailable(format!("PostgreSQL: {e}")))?;
    let task = tokio::spawn(conn);
    let done = client.batch_execute(sql).await.map_err(|e| LedgerError::Internal(format!("{sql}: {e}")));
    drop(client);
    let _ = task.await;
    done
}

/// A temporary directory removed at drop, without a crate for it.
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    use crate::ledger::LedgerError;

    pub struct Dir {
        pub path: PathBuf,
    }

    impl Dir {
        pub fn new(near: &Path) -> Result<Dir, LedgerError> {
            let path = near.join(format!(".textcredits-bench-{}", crate::ledger::random_id()));
            std::fs::create_dir_all(&path)
                .map_err(|e| LedgerError::Internal(format!("cannot create {}: {e}", path.display())))?;
            Ok(Dir { path })
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
