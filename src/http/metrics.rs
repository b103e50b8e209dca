//! Prometheus metrics (OpenMetrics text, through the maintained
//! `prometheus-client` crate): request counts and latency histograms per
//! route, and the credits the ledger moved.
//!
//! Every label value comes from a fixed set, whatever a client sends: the
//! method is one of the standard methods or `other`, the route is a route
//! template of the router or `unmatched`, the status is one of the codes
//! this server answers or its class (`2xx`...). So the number of series is
//! bounded by the code, and no client can grow the server's memory or
//! the scrape by inventing methods or paths.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::ledger::Tally;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS_SECONDS: [f64; 13] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// The status codes counted by their own value; any other status is
/// counted by its class, so the label set stays fixed.
const COUNTED_STATUSES: [u16; 17] =
    [200, 201, 204, 400, 401, 402, 403, 404, 405, 408, 409, 413, 415, 422, 431, 500, 503];

/// The route label of a request no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The method label: a method of RFC 9110 or PATCH, else `other`.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method as M;
    const STANDARD: [M; 9] =
        [M::GET, M::HEAD, M::POST, M::PUT, M::PATCH, M::DELETE, M::OPTIONS, M::TRACE, M::CONNECT];
    match STANDARD.iter().find(|m| *m == method) {
        Some(m) => m.as_str(),
        None => "other",
    }
}

/// The status label: a code of [`COUNTED_STATUSES`], or a class.
fn status_label(status: u16) -> String {
    if COUNTED_STATUSES.contains(&status) { status.to_string() } else { format!("{}xx", status / 100) }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    /// A route template (`/v1/accounts/{id}/debits`) or `unmatched`:
    /// templates are `'static` strings of the router.
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS_SECONDS)
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    purchased: Counter,
    spent: Counter,
    expired: Counter,
    granted: Counter,
    refunded: Counter,
    statements: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let (purchased, spent, expired, granted, refunded, statements): (
            Counter,
            Counter,
            Counter,
            Counter,
            Counter,
            Counter,
        ) = Default::default();
        let mut registry = Registry::default();
        // Counters get `_total` from the encoder: the names below are the
        // scraped names without it.
        registry.register(
            "textcredits_http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "textcredits_http_request_duration_seconds",
            "HTTP request latency by method and route",
            latency.clone(),
        );
        let credits: [(&str, &str, &Counter); 5] = [
            ("purchased", "Credits purchased", &purchased),
            ("spent", "Credits spent by debits and captured holds", &spent),
            ("expired", "Credits expired (free months, grants)", &expired),
            ("granted", "Credits granted (monthly free and promotional)", &granted),
            ("refunded", "Credits of undelivered messages given back", &refunded),
        ];
        for (name, help, counter) in credits {
            registry.register(format!("textcredits_credits_{name}"), help, counter.clone());
        }
        registry.register(
            "textcredits_statements_issued",
            "Statements issued by the automatic close",
            statements.clone(),
        );
        Metrics { registry, requests, latency, purchased, spent, expired, granted, refunded, statements }
    }
}

impl Metrics {
    /// Counts one answered request. `route` is the matched route template
    /// or [`UNMATCHED_ROUTE`], never a path a client wrote.
    pub fn record_request(&self, method: &axum::http::Method, route: &str, status: u16, elapsed: Duration) {
        let method = method_label(method);
        let route = route.to_string();
        self.requests
            .get_or_create(&RequestLabels { method, route: route.clone(), status: status_label(status) })
            .inc();
        self.latency.get_or_create(&RouteLabels { method, route }).observe(elapsed.as_secs_f64());
    }

    pub fn record_tally(&self, t: &Tally) {
        self.purchased.inc_by(t.purchased);
        self.spent.inc_by(t.spent);
        self.expired.inc_by(t.expired);
        self.granted.inc_by(t.granted);
        self.refunded.inc_by(t.refunded);
    }

    pub fn record_statements(&self, n: u64) {
        self.statements.inc_by(n);
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_outside_the_fixed_set_are_counted_by_class() {
        assert_eq!(status_label(201), "201");
        assert_eq!(status_label(418), "4xx");
        assert_eq!(status_label(599), "5xx");
        assert_eq!(method_label(&axum::http::Method::PATCH), "PATCH");
        let made_up = axum::http::Method::from_bytes(b"BREW").expect("a token");
        assert_eq!(method_label(&made_up), "other");
    }
}
