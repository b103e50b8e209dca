//! What a run measures: latencies into percentiles, the machine it ran on,
//! peak memory, and a progress line on stderr.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::ledger::LedgerError;

/// One line of the report (a scenario or a yardstick).
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub scenario: String,
    pub store: String,
    pub ops: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub rows_per_op: f64,
    pub peak_rss_bytes: u64,
}

impl BenchResult {
    pub fn new(
        scenario: &str,
        store: &str,
        latencies_us: &mut [u32],
        elapsed: Duration,
        rows: u64,
    ) -> BenchResult {
        latencies_us.sort_unstable();
        let ops = latencies_us.len() as u64;
        let pct = |p: f64| -> u64 {
            if latencies_us.is_empty() {
                return 0;
            }
            let i = ((latencies_us.len() as f64 * p).ceil() as usize).clamp(1, latencies_us.len()) - 1;
            u64::from(latencies_us[i])
        };
        let seconds = elapsed.as_secs_f64();
        BenchResult {
            scenario: scenario.to_string(),
            store: store.to_string(),
            ops,
            seconds,
            ops_per_sec: if seconds > 0.0 { ops as f64 / seconds } else { 0.0 },
            p50_us: pct(0.50),
            p99_us: pct(0.99),
            p999_us: pct(0.999),
            rows_per_op: if ops > 0 { rows as f64 / ops as f64 } else { 0.0 },
            peak_rss_bytes: peak_rss_bytes(),
        }
    }
}

/// The process's peak resident memory (Linux `VmHWM`).
pub fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_bytes: u64,
    pub os: String,
    pub textcredits: String,
}

impl Machine {
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let field = |text: &str, name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        };
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: field(&cpuinfo, "model name").unwrap_or_else(|| "unknown".into()),
            memory_bytes: field(&meminfo, "MemTotal")
                .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024),
            os: std::env::consts::OS.to_string(),
            textcredits: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// A progress line on stderr, redrawn at most twice a second.
pub struct Progress {
    label: String,
    total: u64,
    started: Instant,
    last: Instant,
    on: bool,
}

impl Progress {
    pub fn new(label: &str, total: u64, on: bool) -> Progress {
        let now = Instant::now();
        Progress { label: label.to_string(), total, started: now, last: now, on }
    }

    pub fn tick(&mut self, done: u64) {
        if !self.on || self.last.elapsed() < Duration::from_millis(500) {
            return;
        }
        self.last = Instant::now();
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        let width = 30;
        let filled = (done * width / self.total.max(1)) as usize;
        eprint!(
            "\r{:<14} [{}{}] {done}/{} {:.0} ops/s ",
            self.label,
            "#".repeat(filled),
            " ".repeat(width as usize - filled.min(width as usize)),
            self.total,
            rate
        );
    }

    pub fn finish(&self) {
        if self.on {
            eprintln!(
                "\r{:<14} done in {:.2} s{}",
                self.label,
                self.started.elapsed().as_secs_f64(),
                " ".repeat(40)
            );
        }
    }
}

/// Runs operations `0..ops` from one task per client, each taking the next
/// index as it is free: `op(client, i)` runs operation `i`. Gives every
/// operation's latency in microseconds, and the whole run's duration.
pub async fn concurrently<C, F, Fut>(
    clients: Vec<C>,
    ops: u64,
    op: F,
    mut progress: Progress,
) -> Result<(Vec<u32>, Duration), LedgerError>
where
    C: Send + 'static,
    F: Fn(&C, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), LedgerError>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for client in clients {
        let (op, next) = (op.clone(), next.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= ops {
                    return Ok::<_, LedgerError>(latencies);
                }
                let t = Instant::now();
                op(&client, i).await?;
                latencies.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
            }
        });
    }
    let ticking = {
        let next = next.clone();
        tokio::spawn(async move {
            while next.load(Ordering::Relaxed) < ops {
                tokio::time::sleep(Duration::from_millis(250)).await;
                progress.tick(next.load(Ordering::Relaxed).min(ops));
            }
            progress.finish();
        })
    };
    let mut all = Vec::with_capacity(ops as usize);
    while let Some(done) = tasks.join_next().await {
        all.extend(done.map_err(|e| LedgerError::Internal(e.to_string()))??);
    }
    let elapsed = started.elapsed();
    let _ = ticking.await;
    Ok((all, elapsed))
}
