//! Prometheus metrics in text format, kept in memory: request counts and
//! latency histograms per route, and ledger counters. A few mutexes and
//! atomics; no metrics crate needed for this little.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::ledger::Tally;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS_SECONDS: [f64; 13] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

#[derive(Default)]
struct Histogram {
    /// Count per bucket (not cumulative), then the overflow bucket.
    counts: [u64; BUCKETS_SECONDS.len() + 1],
    sum_us: u64,
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<(String, String), Histogram>>,
    purchased: AtomicU64,
    spent: AtomicU64,
    expired: AtomicU64,
    granted: AtomicU64,
    refunded: AtomicU64,
    statements: AtomicU64,
}

impl Metrics {
    pub fn record_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        *self.requests.lock().expect("metrics").entry((method.into(), route.into(), status)).or_default() +=
            1;
        let mut latency = self.latency.lock().expect("metrics");
        let h = latency.entry((method.into(), route.into())).or_default();
        let seconds = elapsed.as_secs_f64();
        let bucket = BUCKETS_SECONDS.iter().position(|&b| seconds <= b).unwrap_or(BUCKETS_SECONDS.len());
        h.counts[bucket] += 1;
        h.sum_us += elapsed.as_micros() as u64;
    }

    pub fn record_tally(&self, t: &Tally) {
        self.purchased.fetch_add(t.purchased, Ordering::Relaxed);
        self.spent.fetch_add(t.spent, Ordering::Relaxed);
        self.expired.fetch_add(t.expired, Ordering::Relaxed);
        self.granted.fetch_add(t.granted, Ordering::Relaxed);
        self.refunded.fetch_add(t.refunded, Ordering::Relaxed);
    }

    pub fn record_statements(&self, n: u64) {
        self.statements.fetch_add(n, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP textcredits_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE textcredits_http_requests_total counter\n");
        for ((method, route, status), n) in self.requests.lock().expect("metrics").iter() {
            let _ = writeln!(
                out,
                "textcredits_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP textcredits_http_request_duration_seconds HTTP request latency by route.\n");
        out.push_str("# TYPE textcredits_http_request_duration_seconds histogram\n");
        for ((method, route), h) in self.latency.lock().expect("metrics").iter() {
            let labels = format!("method=\"{method}\",route=\"{route}\"");
            let mut cumulative = 0;
            for (i, bound) in BUCKETS_SECONDS.iter().enumerate() {
                cumulative += h.counts[i];
                let _ = writeln!(
                    out,
                    "textcredits_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                );
            }
            cumulative += h.counts[BUCKETS_SECONDS.len()];
            let _ = writeln!(
                out,
                "textcredits_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {cumulative}"
            );
            let _ = writeln!(
                out,
                "textcredits_http_request_duration_seconds_sum{{{labels}}} {}",
                h.sum_us as f64 / 1e6
            );
            let _ = writeln!(out, "textcredits_http_request_duration_seconds_count{{{labels}}} {cumulative}");
        }
        let counters = [
            ("purchased", "Credits purchased.", &self.purchased),
            ("spent", "Credits spent by debits and captured holds.", &self.spent),
            ("expired", "Credits expired (free months, grants).", &self.expired),
            ("granted", "Credits granted (monthly free and promotional).", &self.granted),
            ("refunded", "Credits of undelivered messages given back.", &self.refunded),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP textcredits_credits_{name}_total {help}");
            let _ = writeln!(out, "# TYPE textcredits_credits_{name}_total counter");
            let _ = writeln!(out, "textcredits_credits_{name}_total {}", value.load(Ordering::Relaxed));
        }
        out.push_str(
            "# HELP textcredits_statements_issued_total Statements issued by the automatic close.\n",
        );
        out.push_str("# TYPE textcredits_statements_issued_total counter\n");
        let _ =
            writeln!(out, "textcredits_statements_issued_total {}", self.statements.load(Ordering::Relaxed));
        out
    }
}
