//! `textcredits serve`: open the store, settle the admin token, bind, log
//! each request with an id, and stop gracefully on SIGTERM or SIGINT
//! (in-flight requests finish, then the process exits 0).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderName, Request};
use jiff::Timestamp;
use tokio::net::TcpListener;
use tower_http::LatencyUnit;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use super::{AppState, Auth, Clock, Metrics, app};
use crate::ledger::{Ledger, LedgerError, Store, random_id};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: String,
    pub admin_token: Option<String>,
    /// The token was given on the command line, where every local user can
    /// read it in the process list: warn.
    pub admin_token_in_args: bool,
    /// `Some(start)`: run on a test clock that starts there.
    pub test_clock: Option<Timestamp>,
    /// Connections held at once (see [`super::listen`]).
    pub max_connections: usize,
    /// What new accounts get when they name no zone, currency or price.
    pub defaults: crate::domain::account::AccountDefaults,
    /// Where a generated admin token is kept (beside the SQLite file);
    /// `None` with PostgreSQL, whose replicas must all be given the same one.
    pub data_dir: Option<PathBuf>,
    /// How often the server closes ended months (R5); `None` = never.
    pub close_every: Option<std::time::Duration>,
    /// Origins whose browser applications may call the API (see
    /// [`super::cors`]); none by default.
    pub cors_origins: Vec<axum::http::HeaderValue>,
    /// When failed webhook deliveries are tried again.
    pub webhook_retry_schedule: crate::events::schedule::RetrySchedule,
}

/// Request ids: a random prefix per process and a counter, short and unique.
#[derive(Clone)]
struct Ids {
    prefix: Arc<String>,
    next: Arc<AtomicU64>,
}

impl MakeRequestId for Ids {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("req_{}_{n}", self.prefix).parse().ok().map(RequestId::new)
    }
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TEXTCREDITS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal, never into a file or a pipe.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The admin token: given, or read from the data directory, or generated
/// there (owner-only, mode 0600) on first start. Returns it and the file
/// it is kept in.
fn admin_token(config: &ServeConfig) -> Result<(String, Option<PathBuf>), LedgerError> {
    if let Some(t) = &config.admin_token {
        check_admin_token(t, "--admin-token / TEXTCREDITS_ADMIN_TOKEN")?;
        return Ok((t.clone(), None));
    }
    let Some(dir) = &config.data_dir else {
        return Err(LedgerError::invalid(
            "with PostgreSQL give --admin-token (or TEXTCREDITS_ADMIN_TOKEN): every replica needs the same one",
        ));
    };
    let path = dir.join("textcredits-admin-token");
    match std::fs::metadata(&path) {
        Ok(meta) => {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(LedgerError::invalid(format!(
                    "{} is readable by other users (mode {mode:03o}); run `chmod 600 {}` and start again",
                    path.display(),
                    path.display()
                )));
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| LedgerError::Internal(format!("cannot read {}: {e}", path.display())))?;
            // The file ends with a newline; anything else around it is a mistake.
            let token = text.strip_suffix('\n').unwrap_or(&text);
            check_admin_token(token, &path.display().to_string())?;
            return Ok((token.to_string(), Some(path)));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(LedgerError::Internal(format!("cannot read {}: {e}", path.display()))),
    }
    let token = format!("tca_{}{}", random_id(), random_id());
    write_private(&path, &token)
        .map_err(|e| LedgerError::Internal(format!("cannot write {}: {e}", path.display())))?;
    Ok((token, Some(path)))
}

/// Shortest admin token accepted.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// An admin token no request could ever send is refused at start: one with
/// whitespace or control characters (a `\r` from a Windows-style env file)
/// or too short to resist guessing.
fn check_admin_token(token: &str, from: &str) -> Result<(), LedgerError> {
    if let Some(c) = token.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(LedgerError::invalid(format!(
            "the admin token from {from} contains {c:?}: no whitespace or control characters (check for a trailing \\r or space)"
        )));
    }
    if token.len() < MIN_ADMIN_TOKEN_LEN {
        return Err(LedgerError::invalid(format!(
            "the admin token from {from} must be at least {MIN_ADMIN_TOKEN_LEN} characters"
        )));
    }
    Ok(())
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

pub async fn serve<S: Store>(store: S, config: ServeConfig) -> Result<(), LedgerError> {
    let (token, token_file) = admin_token(&config)?;
    if config.admin_token_in_args {
        let warning = "--admin-token on the command line can be read by every local user in the process list; \
                       set TEXTCREDITS_ADMIN_TOKEN instead";
        eprintln!("warning: {warning}");
        tracing::warn!("{warning}");
    }
    let clock = match config.test_clock {
        Some(start) => Clock::test(start),
        None => Clock::System,
    };
    let state = AppState {
        ledger: Ledger::with_defaults(store, config.defaults.clone()),
        auth: Arc::new(Auth::new(&token)),
        clock,
        metrics: Arc::new(Metrics::default()),
    };
    if let Some(every) = config.close_every {
        tokio::spawn(close_months_forever(state.clone(), every));
    }
    let sender = crate::events::send::Sender::new().map_err(|e| LedgerError::Internal(e.to_string()))?;
    let worker = crate::events::worker::Worker {
        store: state.ledger.store().clone(),
        sender,
        schedule: config.webhook_retry_schedule.clone(),
    };
    tokio::spawn(worker.run());
    let ids = Ids { prefix: Arc::new(random_id()[..6].to_string()), next: Arc::new(AtomicU64::new(1)) };
    let header = HeaderName::from_static("x-request-id");
    let mut router = app(state.clone());
    if let Some(cors) = super::cors::layer(&config.cors_origins) {
        router = router.layer(cors);
    }
    let router = router
        .layer(PropagateRequestIdLayer::new(header.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
                    tracing::info_span!("request", method = %req.method(), uri = %req.uri(), request_id = %id)
                })
                .on_response(
                    DefaultOnResponse::new().level(tracing::Level::INFO).latency_unit(LatencyUnit::Micros),
                ),
        )
        .layer(SetRequestIdLayer::new(header, ids));
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|e| LedgerError::Unavailable(format!("cannot listen on {}: {e}", config.listen)))?;
    let addr = listener.local_addr().map_err(|e| LedgerError::Internal(e.to_string()))?;
    // The first lines a person (or a test harness) reads: where, and how to get in.
    println!("textcredits listening on http://{addr}");
    match token_file {
        Some(path) => println!("admin token: {token} (kept in {})", path.display()),
        None => println!("admin token: from --admin-token / TEXTCREDITS_ADMIN_TOKEN"),
    }
    if let Some(start) = config.test_clock {
        println!("test clock: on at {start} (PUT /v1/test-clock moves time)");
    }
    tracing::info!(%addr, test_clock = config.test_clock.is_some(), max_connections = config.max_connections, "serving");
    super::listen::run(listener, router, config.max_connections, shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}

/// R5: statements are issued without anyone asking. Every `every`, close
/// each account's ended months (idempotent, so a slow or repeated pass, or
/// another replica's, changes nothing). Failures are logged and retried.
async fn close_months_forever<S: Store>(state: AppState<S>, every: std::time::Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Accounts whose failure was already logged: said once, not every tick.
    let mut reported: std::collections::HashSet<crate::ledger::CloseFailure> = Default::default();
    loop {
        ticks.tick().await;
        match state.ledger.close_all(None, state.clock.now()).await {
            Ok(report) => {
                if !report.statements.is_empty() {
                    tracing::info!(statements = report.statements.len(), "closed ended months");
                    state.metrics.record_statements(report.statements.len() as u64);
                }
                for f in &report.failed {
                    if !reported.contains(f) {
                        tracing::warn!(account = %f.account_id, detail = %f.detail, "an account could not close its months; the others did");
                    }
                }
                reported = report.failed.into_iter().collect();
            }
            Err(e) => {
                tracing::warn!(error = %e, "closing ended months failed; retrying at the next tick")
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
