//! The `textcredits` command line: the edge where the clock, the
//! environment and the arguments come in, and exit codes go out.
//!
//! Exit codes: 0 done; 2 bad input or an operation the rules refuse (one
//! line on stderr, starting `error:`); 1 an internal failure.
//! Architecture invariant: this is the only module (with the HTTP edge to
//! come) that reads the system clock, through [`now`].

mod batch;
mod output;
mod table;

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use jiff::Timestamp;

use crate::domain::DomainError;
use crate::domain::account::{AccountDefaults, AccountId, AccountPatch, AutoRecharge, NewAccount};
use crate::domain::command::{Command, Outcome};
use crate::domain::credits::Credits;
use crate::domain::hold::HoldStatus;
use crate::domain::money::{Currency, Micros};
use crate::domain::period::{Month, Zone};
use crate::domain::statement::StatementStatus;
use crate::http::{self, LogFormat, ServeConfig};
use crate::ledger::{IdempotencyKey, Ledger, LedgerError, PageRequest, Store, export};
use crate::store::DatabaseUrl;
use crate::store::postgres::PgStore;
use crate::store::sqlite::{MAX_REPLAY_STEP_ROWS, SqliteStore, Tuning};

#[derive(Parser, Debug)]
#[command(
    name = "textcredits",
    version,
    about = "SMS text-marketing credits: balances, purchases, spending, statements"
)]
struct Cli {
    /// Where the data lives: sqlite:PATH or postgres://...
    #[arg(long, global = true, env = "TEXTCREDITS_DATABASE", default_value = "sqlite:textcredits.db")]
    database: String,
    /// Print answers as JSON (the shapes of the HTTP API).
    #[arg(long, global = true)]
    json: bool,
    /// For tests and scratch databases only: act as if it were this instant
    /// (RFC 3339), instead of the clock. On a real database an instant
    /// ahead of the clock moves its accounts ahead for good (time never
    /// runs backwards for an account). With `serve`, where the test clock
    /// starts (needs --test-clock).
    #[arg(long, global = true, value_name = "RFC3339")]
    now: Option<String>,
    /// Time zone of new accounts that name none.
    #[arg(long, global = true, env = "TEXTCREDITS_DEFAULT_TIME_ZONE", default_value = "UTC")]
    default_time_zone: String,
    /// Currency of new accounts that name none (ISO 4217).
    #[arg(long, global = true, env = "TEXTCREDITS_DEFAULT_CURRENCY", default_value = "USD")]
    default_currency: String,
    /// Unit price of new accounts that name none, in the default currency
    /// (up to 6 decimals). An account in another currency must name its own.
    #[arg(
        long,
        global = true,
        env = "TEXTCREDITS_DEFAULT_UNIT_PRICE",
        default_value = "0.01",
        allow_hyphen_values = true
    )]
    default_unit_price: String,
    /// SQLite: most table rows one step of the replay at open takes (the
    /// recovery of what a crash left unmaterialized; default 524,288,
    /// 1 to 16,777,216). Larger steps replay a long log faster and take
    /// more memory, about 450 bytes a row.
    #[arg(long, global = true, env = "TEXTCREDITS_REPLAY_STEP_ROWS", value_name = "ROWS")]
    replay_step_rows: Option<usize>,
    #[command(subcommand)]
    command: Cmd,
    /// Whether `serve --admin-token` came from the command line (set from
    /// clap's matches, not a flag).
    #[arg(skip)]
    admin_token_in_args: bool,
}

#[derive(Args, Debug, Clone)]
struct KeyArg {
    /// Idempotency key: a retry with the same key applies once. Generated
    /// (and printed on stderr) when omitted.
    #[arg(long)]
    key: Option<String>,
}

#[derive(Args, Debug, Clone)]
struct PageArgs {
    #[arg(long, allow_negative_numbers = true)]
    limit: Option<i64>,
    #[arg(long)]
    cursor: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the HTTP API (docs/api.md) and the dashboard on this database.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "TEXTCREDITS_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
        /// The admin token; generated and kept beside the database when unset.
        #[arg(long, env = "TEXTCREDITS_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// Let the admin move time with PUT /v1/test-clock (for testing month
        /// ends); it starts at --now when given, else at the wall clock.
        #[arg(long)]
        test_clock: bool,
        /// Connections held at once; one more is answered 503 and closed.
        #[arg(long, env = "TEXTCREDITS_MAX_CONNECTIONS", default_value_t = http::DEFAULT_MAX_CONNECTIONS)]
        max_connections: usize,
        /// Let a browser application on this origin (scheme://host[:port])
        /// call the API; repeat for several (at most 100). Off by default.
        #[arg(
            long = "cors-origin",
            value_name = "ORIGIN",
            env = "TEXTCREDITS_CORS_ORIGINS",
            value_delimiter = ','
        )]
        cors_origins: Vec<String>,
        /// When a failed webhook delivery is tried again: comma-separated
        /// steps (`s`, `m`, `h`, `d`), each after the previous attempt; after
        /// the last the delivery is given up. The default retries for 3 days.
        #[arg(long, value_name = "STEPS", default_value = crate::events::schedule::DEFAULT_RETRY_SCHEDULE, value_parser = parse_retry_schedule)]
        webhook_retry_schedule: crate::events::schedule::RetrySchedule,
        /// Seconds between automatic closes of ended months into statements; 0 = never.
        #[arg(long, default_value_t = 60)]
        close_interval_seconds: u64,
        /// Log lines as text or JSON (stderr).
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        log_format: String,
    },
    /// Create, show, list and configure accounts.
    #[command(subcommand)]
    Account(AccountCmd),
    /// Create, list and revoke an account's API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Buy credits at the account's unit price (billed on the 1st of next month).
    Purchase {
        account: String,
        #[arg(allow_negative_numbers = true)]
        credits: String,
        #[command(flatten)]
        key: KeyArg,
    },
    /// Spend credits on texts sent (1 credit per text).
    Debit {
        account: String,
        #[arg(allow_negative_numbers = true)]
        credits: String,
        #[arg(long)]
        reference: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        key: KeyArg,
    },
    /// Can a campaign of this many texts go out now? Changes nothing.
    Quote {
        account: String,
        #[arg(allow_negative_numbers = true)]
        credits: String,
    },
    /// Reserve credits for a campaign.
    Hold {
        account: String,
        #[arg(allow_negative_numbers = true)]
        credits: String,
        #[arg(long)]
        reference: Option<String>,
        /// Seconds before an uncaptured hold is released (default 86400).
        #[arg(long, allow_negative_numbers = true)]
        ttl: Option<i64>,
        #[command(flatten)]
        key: KeyArg,
    },
    /// Spend the credits of a hold actually sent; release the rest.
    Capture {
        account: String,
        hold_id: String,
        #[arg(allow_negative_numbers = true)]
        credits: String,
        #[command(flatten)]
        key: KeyArg,
    },
    /// Release a hold without spending.
    Release {
        account: String,
        hold_id: String,
        #[command(flatten)]
        key: KeyArg,
    },
    /// Show a hold.
    ShowHold { account: String, hold_id: String },
    /// Holds, newest first.
    Holds {
        account: String,
        /// Only holds in this status: held, captured, released or expired.
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show a debit (a capture of a hold is one too).
    ShowDebit { account: String, debit_id: String },
    /// Debits, newest first, captures of holds included.
    Debits {
        account: String,
        /// Only debits with this reference.
        #[arg(long)]
        reference: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Refund undelivered messages of a debit, or unused credits of a purchase.
    #[command(subcommand)]
    Refund(RefundCmd),
    /// Give promotional credits.
    Grant {
        account: String,
        #[arg(allow_negative_numbers = true)]
        credits: String,
        #[arg(long)]
        reason: String,
        #[arg(long, value_name = "RFC3339")]
        expires_at: Option<String>,
        #[command(flatten)]
        key: KeyArg,
    },
    /// Balance now: free, paid and granted credits, held, available, unbilled.
    Balance { account: String },
    /// Purchase history, newest first.
    Purchases {
        account: String,
        #[arg(long)]
        month: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Ledger entries, newest first.
    Ledger {
        account: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Usage per month (default: this month).
    Usage {
        account: String,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
    },
    /// Close months and record payments.
    #[command(subcommand)]
    Billing(BillingCmd),
    /// Statements of an account, or of every account for a month.
    Statements {
        account: Option<String>,
        #[arg(long)]
        month: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Write every purchase, statement or ledger entry of an account to
    /// stdout (newest first), read a page at a time.
    Export {
        /// purchases, statements or ledger.
        #[arg(value_parser = ["purchases", "statements", "ledger"])]
        what: String,
        #[arg(long)]
        account: String,
        /// Only this month, YYYY-MM (purchases, statements).
        #[arg(long)]
        month: Option<String>,
        /// csv (a header row, RFC 4180 quoting) or json (one array).
        #[arg(long, value_parser = ["csv", "json"], default_value = "csv")]
        format: String,
    },
    /// Replay the ledger and prove every balance; exit 1 on any mismatch.
    Audit,
    /// Measure: run named scenarios on a scratch database of the kind
    /// --database names (nothing of yours is touched) and report the figures.
    Bench {
        /// debit-many, debit-many-webhook, debit-hot, hold-capture, balance, usage, month-rollover,
        /// close-month, http, http-batch, recover (SQLite only). Default: all.
        scenarios: Vec<String>,
        /// Operations per scenario (default: the scenario's own).
        #[arg(long)]
        ops: Option<u64>,
        /// Concurrent clients.
        #[arg(long, default_value_t = crate::bench::DEFAULT_CONCURRENCY)]
        concurrency: usize,
        /// Also run the yardsticks (hand-written ledger, bare inserts).
        #[arg(long)]
        compare: bool,
        /// Runs of each scenario; the report keeps the median.
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// Entries of prior history written before measuring (e.g. 10000000).
        #[arg(long, default_value_t = 0)]
        history: u64,
    },
    /// Apply operations from a JSON-lines file (or - for stdin), one answer
    /// line each; rerunning after a crash is safe when each line has a key.
    Batch {
        #[arg(default_value = "-")]
        file: String,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCmd {
    /// A new token for the account; printed once, only its hash is kept.
    Create {
        account: String,
        #[arg(long)]
        label: String,
    },
    /// The account's tokens (never their secrets).
    List { account: String },
    /// Revoke a token: it answers 401 from its next request on.
    Revoke { account: String, token_id: String },
}

#[derive(Subcommand, Debug)]
enum AccountCmd {
    Create {
        id: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        time_zone: Option<String>,
        #[arg(long, allow_negative_numbers = true)]
        monthly_free_credits: Option<i64>,
        #[arg(long)]
        unit_price: Option<String>,
        #[arg(long)]
        currency: Option<String>,
    },
    Show {
        id: String,
    },
    List {
        #[command(flatten)]
        page: PageArgs,
        /// Only accounts whose id or name starts with this (any case).
        #[arg(long)]
        q: Option<String>,
    },
    Set {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        time_zone: Option<String>,
        #[arg(long, allow_negative_numbers = true)]
        monthly_free_credits: Option<i64>,
        #[arg(long)]
        unit_price: Option<String>,
        #[arg(long, allow_negative_numbers = true)]
        low_balance_threshold: Option<i64>,
        #[arg(long, allow_negative_numbers = true)]
        monthly_purchase_limit: Option<i64>,
        /// THRESHOLD:CREDITS:MONTHLY_CAP
        #[arg(long, conflicts_with = "no_auto_recharge")]
        auto_recharge: Option<String>,
        #[arg(long)]
        no_auto_recharge: bool,
        /// `closed` closes the account (no purchases, debits or holds;
        /// reads, refunds and billing go on); `active` reopens it.
        #[arg(long, value_parser = ["active", "closed"])]
        status: Option<String>,
        #[command(flatten)]
        key: KeyArg,
    },
}

#[derive(Subcommand, Debug)]
enum RefundCmd {
    Debit {
        account: String,
        debit_id: String,
        #[arg(allow_negative_numbers = true)]
        credits: String,
        #[command(flatten)]
        key: KeyArg,
    },
    Purchase {
        account: String,
        purchase_id: String,
        /// Default: every unused credit.
        #[arg(allow_negative_numbers = true)]
        credits: Option<String>,
        #[command(flatten)]
        key: KeyArg,
    },
}

#[derive(Subcommand, Debug)]
enum BillingCmd {
    /// Close ended months into statements (default: every ended month).
    Close {
        #[arg(long)]
        month: Option<String>,
    },
    /// Record a statement as paid or failed.
    Status { statement_id: String, status: String },
}

/// A CLI failure: the exit code says whose fault it is.
enum Failure {
    /// Bad input or refused by the rules: exit 2.
    Refused(String),
    /// Something broke: exit 1.
    Broken(String),
}

impl From<LedgerError> for Failure {
    fn from(e: LedgerError) -> Failure {
        match e {
            LedgerError::Unavailable(_) | LedgerError::Internal(_) => Failure::Broken(e.to_string()),
            _ => Failure::Refused(e.to_string()),
        }
    }
}

impl From<DomainError> for Failure {
    fn from(e: DomainError) -> Failure {
        Failure::Refused(e.to_string())
    }
}

/// The system clock (see [`crate::http::system_now`]).
pub fn now() -> Timestamp {
    crate::http::system_now()
}

fn parse_time(flag: &str, text: &str) -> Result<Timestamp, Failure> {
    let t: Timestamp = text.parse().map_err(|e| {
        Failure::Refused(format!(
            "invalid {flag} {text:?}: expected RFC 3339 such as 2026-11-24T18:00:00Z ({e})"
        ))
    })?;
    let t = Timestamp::from_microsecond(t.as_microsecond()).expect("parsed timestamps are in range");
    crate::domain::period::accepted_instant(t, flag).map_err(|e| Failure::Refused(e.to_string()))
}

pub fn main() -> ExitCode {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let parsed = Cli::command().try_get_matches().and_then(|m| {
        let mut cli = Cli::from_arg_matches(&m)?;
        cli.admin_token_in_args = m
            .subcommand_matches("serve")
            .and_then(|s| s.value_source("admin_token"))
            .is_some_and(|source| source == clap::parser::ValueSource::CommandLine);
        Ok(cli)
    });
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{}", clap_error_line(&e.render().to_string()));
            return ExitCode::from(2);
        }
    };
    // The server uses every core (its HTTP connections, the PostgreSQL
    // group workers); a command runs one operation and needs one thread.
    let runtime = match cli.command {
        Cmd::Serve { .. } => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
        _ => tokio::runtime::Builder::new_current_thread().enable_all().build(),
    };
    let result = match runtime {
        Ok(rt) => rt.block_on(run(cli)),
        Err(e) => Err(Failure::Broken(format!("cannot start the runtime: {e}"))),
    };
    match result {
        Ok(code) => code,
        Err(Failure::Refused(m)) => {
            eprintln!("error: {}", one_line(&m));
            ExitCode::from(2)
        }
        Err(Failure::Broken(m)) => {
            eprintln!("error: {}", one_line(&m));
            ExitCode::from(1)
        }
    }
}

/// clap's message in one line: its first line, plus the list it announces
/// ("the following required arguments were not provided: --reason <REASON>"),
/// without the usage and help hints.
fn clap_error_line(text: &str) -> String {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let mut line = lines.next().unwrap_or("error: invalid arguments").trim_end().to_string();
    if line.ends_with(':') {
        let items: Vec<&str> = lines.take_while(|l| l.starts_with(' ')).map(str::trim).collect();
        line = format!("{line} {}", items.join(", "));
    }
    line
}

fn one_line(m: &str) -> String {
    m.replace('\n', " ")
}

async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let now = match &cli.now {
        Some(t) => parse_time("--now", t)?,
        None => now(),
    };
    let zone = Zone::parse(&cli.default_time_zone)?;
    let defaults = AccountDefaults {
        zone: zone.clone(),
        currency: Currency::new(&cli.default_currency)
            .map_err(|e| Failure::Refused(format!("--default-currency: {e}")))?,
        unit_price: Micros::parse_unit_price(&cli.default_unit_price)
            .map_err(|e| Failure::Refused(format!("--default-unit-price: {e}")))?,
    };
    let url = DatabaseUrl::parse(&cli.database)?;
    let tuning = sqlite_tuning(&url, cli.replay_step_rows)?;
    if let Cmd::Serve { test_clock, max_connections, cors_origins, .. } = &cli.command {
        if cors_origins.len() > http::cors::MAX_CORS_ORIGINS {
            return Err(Failure::Refused(format!(
                "--cors-origin: at most {} origins",
                http::cors::MAX_CORS_ORIGINS
            )));
        }
        for origin in cors_origins {
            http::cors::parse_origin(origin).map_err(Failure::Refused)?;
        }
        if cli.json {
            return Err(Failure::Refused(
                "serve has no --json (its answers are the HTTP API's JSON); for JSON logs use --log-format json"
                    .into(),
            ));
        }
        if cli.now.is_some() && !test_clock {
            return Err(Failure::Refused(
                "serve --now needs --test-clock: it sets where the test clock starts".into(),
            ));
        }
        if !(1..=http::MAX_MAX_CONNECTIONS).contains(max_connections) {
            return Err(Failure::Refused(format!(
                "--max-connections must be 1 to {}",
                http::MAX_MAX_CONNECTIONS
            )));
        }
    }
    if let Cmd::Bench { scenarios, ops, concurrency, compare, runs, history } = cli.command {
        use crate::bench::{MAX_CONCURRENCY, MAX_OPS, MAX_RUNS};
        let ok = ops.is_none_or(|n| (1..=MAX_OPS).contains(&n))
            && (1..=MAX_CONCURRENCY).contains(&concurrency)
            && (1..=MAX_RUNS).contains(&runs)
            && history <= MAX_OPS;
        if !ok {
            return Err(Failure::Refused(format!(
                "--ops must be 1 to {MAX_OPS}, --history at most {MAX_OPS}, --concurrency 1 to \
                 {MAX_CONCURRENCY}, --runs 1 to {MAX_RUNS}"
            )));
        }
        let config = crate::bench::BenchConfig {
            scenarios,
            ops,
            concurrency,
            compare,
            progress: true,
            runs,
            history,
            replay_step_rows: tuning.replay_step_rows,
        };
        let report = crate::bench::run(&url, &config).await?;
        Out { json: cli.json }.print(&report, output::bench);
        return Ok(ExitCode::SUCCESS);
    }
    match url {
        DatabaseUrl::Sqlite(path) => {
            // A generated admin token is kept beside the database file.
            let data_dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => std::path::PathBuf::from("."),
            };
            let store = SqliteStore::open_with(&path, tuning)?;
            let ran = run_on(store.clone(), cli, defaults, now, Some(data_dir)).await;
            // What this process acknowledged goes into the tables before it
            // exits (even after a refusal), so a server beside it reads it.
            let settled = store.settle().await;
            let code = ran?;
            settled?;
            Ok(code)
        }
        DatabaseUrl::Postgres(url) => run_on(PgStore::open(&url).await?, cli, defaults, now, None).await,
    }
}

/// The SQLite store's settings from the command line; refused on
/// PostgreSQL, which has no log to replay.
fn sqlite_tuning(url: &DatabaseUrl, replay_step_rows: Option<usize>) -> Result<Tuning, Failure> {
    let Some(rows) = replay_step_rows else { return Ok(Tuning::default()) };
    if matches!(url, DatabaseUrl::Postgres(_)) {
        return Err(Failure::Refused(
            "--replay-step-rows is for SQLite only: PostgreSQL has no log to replay".into(),
        ));
    }
    if !(1..=MAX_REPLAY_STEP_ROWS).contains(&rows) {
        return Err(Failure::Refused(format!("--replay-step-rows must be 1 to {MAX_REPLAY_STEP_ROWS}")));
    }
    Ok(Tuning { replay_step_rows: rows, ..Tuning::default() })
}

async fn run_on<S: Store>(
    store: S,
    cli: Cli,
    defaults: AccountDefaults,
    now: Timestamp,
    data_dir: Option<std::path::PathBuf>,
) -> Result<ExitCode, Failure> {
    if let Cmd::Serve {
        listen,
        admin_token,
        test_clock,
        max_connections,
        cors_origins,
        close_interval_seconds,
        webhook_retry_schedule,
        log_format,
    } = cli.command
    {
        let format = if log_format == "json" { LogFormat::Json } else { LogFormat::Text };
        http::init_logging(format);
        let close_every =
            (close_interval_seconds > 0).then(|| std::time::Duration::from_secs(close_interval_seconds));
        let config = ServeConfig {
            listen,
            admin_token,
            admin_token_in_args: cli.admin_token_in_args,
            test_clock: test_clock.then_some(now),
            max_connections,
            defaults,
            data_dir,
            close_every,
            webhook_retry_schedule,
            // Checked before the store opened.
            cors_origins: cors_origins.iter().filter_map(|o| http::cors::parse_origin(o).ok()).collect(),
        };
        http::serve(store, config).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let out = Out { json: cli.json };
    dispatch(Ledger::with_defaults(store, defaults), cli.command, now, out).await
}

#[derive(Clone, Copy)]
struct Out {
    json: bool,
}

impl Out {
    fn print<T: serde::Serialize>(self, value: &T, human: impl FnOnce(&T) -> String) {
        let text = if self.json { output::json(value) } else { human(value) };
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
    }

    /// An outcome prints as its API shape, without the type tag.
    fn print_outcome(self, outcome: &Outcome) {
        self.print(&outcome.body(), |_| output::outcome(outcome));
    }
}

fn account_id(s: &str) -> Result<AccountId, Failure> {
    Ok(AccountId::parse(s)?)
}

fn credits(s: &str) -> Result<Credits, Failure> {
    Ok(Credits::parse(s)?)
}

fn month(s: &str) -> Result<Month, Failure> {
    Ok(Month::parse(s)?)
}

/// The given key, or a generated one (`true`: print it once it worked).
fn key(k: &KeyArg) -> Result<(IdempotencyKey, bool), Failure> {
    match &k.key {
        Some(k) => Ok((IdempotencyKey::parse(k)?, false)),
        None => Ok((IdempotencyKey::generate(), true)),
    }
}

fn page(p: &PageArgs) -> Result<PageRequest, Failure> {
    Ok(PageRequest::new(p.cursor.clone(), p.limit)?)
}

/// A mutation: validate everything local first, then one call.
async fn mutate<S: Store>(
    ledger: &Ledger<S>,
    account: &str,
    command: Command,
    k: &KeyArg,
    now: Timestamp,
    out: Out,
) -> Result<ExitCode, Failure> {
    let id = account_id(account)?;
    let (key, generated) = key(k)?;
    let done = ledger.execute(&id, command, Some(key.clone()), now).await?;
    if generated {
        // After success only: a refusal prints exactly one line.
        eprintln!("idempotency key: {key}");
    }
    if done.replayed {
        eprintln!("replayed: this key was already used; nothing changed");
    }
    out.print_outcome(&done.outcome);
    Ok(ExitCode::SUCCESS)
}

async fn dispatch<S: Store>(
    ledger: Ledger<S>,
    cmd: Cmd,
    now: Timestamp,
    out: Out,
) -> Result<ExitCode, Failure> {
    let l = &ledger;
    match cmd {
        Cmd::Account(a) => return account_cmd(l, a, now, out).await,
        Cmd::Token(t) => return token_cmd(l, t, now, out).await,
        Cmd::Purchase { account, credits: c, key } => {
            return mutate(l, &account, Command::Purchase { credits: credits(&c)? }, &key, now, out).await;
        }
        Cmd::Debit { account, credits: c, reference, description, key } => {
            let command = Command::Debit { credits: credits(&c)?, reference, description };
            return mutate(l, &account, command, &key, now, out).await;
        }
        Cmd::Hold { account, credits: c, reference, ttl, key } => {
            let command = Command::Hold { credits: credits(&c)?, reference, ttl_seconds: ttl };
            return mutate(l, &account, command, &key, now, out).await;
        }
        Cmd::Capture { account, hold_id, credits: c, key } => {
            let n: i64 = c
                .parse()
                .map_err(|_| Failure::Refused(format!("credits must be a whole number, got {c:?}")))?;
            return mutate(l, &account, Command::Capture { hold_id, credits: n }, &key, now, out).await;
        }
        Cmd::Release { account, hold_id, key } => {
            return mutate(l, &account, Command::Release { hold_id }, &key, now, out).await;
        }
        Cmd::Refund(RefundCmd::Debit { account, debit_id, credits: c, key }) => {
            let command = Command::RefundDebit { debit_id, credits: credits(&c)? };
            return mutate(l, &account, command, &key, now, out).await;
        }
        Cmd::Refund(RefundCmd::Purchase { account, purchase_id, credits: c, key }) => {
            let credits = c.as_deref().map(credits).transpose()?;
            return mutate(l, &account, Command::RefundPurchase { purchase_id, credits }, &key, now, out)
                .await;
        }
        Cmd::Grant { account, credits: c, reason, expires_at, key } => {
            let expires_at = expires_at.map(|t| parse_time("--expires-at", &t)).transpose()?;
            let command = Command::Grant { credits: credits(&c)?, expires_at, reason };
            return mutate(l, &account, command, &key, now, out).await;
        }
        Cmd::Quote { account, credits: c } => {
            let (id, c) = (account_id(&account)?, credits(&c)?);
            out.print(&l.quote(&id, c, now).await?, output::quote);
        }
        Cmd::ShowHold { account, hold_id } => {
            out.print(&l.hold(&account_id(&account)?, &hold_id, now).await?, output::hold)
        }
        Cmd::Holds { account, status, page: p } => {
            let (id, p) = (account_id(&account)?, page(&p)?);
            let status = status
                .map(|s| {
                    HoldStatus::parse(&s).ok_or_else(|| {
                        Failure::Refused(format!(
                            "--status must be held, captured, released or expired, got {s:?}"
                        ))
                    })
                })
                .transpose()?;
            out.print(&l.holds(&id, status, p, now).await?, output::hold_list);
        }
        Cmd::ShowDebit { account, debit_id } => {
            out.print(&l.debit(&account_id(&account)?, &debit_id, now).await?, output::debit)
        }
        Cmd::Debits { account, reference, page: p } => {
            let (id, p) = (account_id(&account)?, page(&p)?);
            out.print(&l.debits(&id, reference.as_deref(), p).await?, output::debit_list);
        }
        Cmd::Balance { account } => {
            out.print(&l.balance(&account_id(&account)?, now).await?, output::balance)
        }
        Cmd::Purchases { account, month: m, page: p } => {
            let (id, m, p) = (account_id(&account)?, m.as_deref().map(month).transpose()?, page(&p)?);
            out.print(&l.purchases(&id, m, p).await?, output::purchase_list);
        }
        Cmd::Ledger { account, page: p } => {
            let (id, p) = (account_id(&account)?, page(&p)?);
            out.print(&l.entries(&id, p).await?, output::entry_list);
        }
        Cmd::Usage { account, from, to } => {
            let id = account_id(&account)?;
            let (from, to) = (from.as_deref().map(month).transpose()?, to.as_deref().map(month).transpose()?);
            out.print(&l.usage(&id, from, to, now).await?, |u| output::usage(u));
        }
        Cmd::Billing(BillingCmd::Close { month: m }) => {
            let through = m.as_deref().map(month).transpose()?;
            let report = l.close_all(through, now).await?;
            out.print(&report.statements, |s| output::outcome(&Outcome::Closed(s.clone())));
            // Every other account closed; these could not (exit 1).
            for f in &report.failed {
                eprintln!("error: account {} could not close: {}", f.account_id, one_line(&f.detail));
            }
            if !report.failed.is_empty() {
                return Ok(ExitCode::from(1));
            }
        }
        Cmd::Billing(BillingCmd::Status { statement_id, status }) => {
            let status = StatementStatus::parse_payment(&status)?;
            let (account, _) = crate::domain::statement::Statement::parse_id(&statement_id)?;
            let command = Command::SetStatementStatus { statement_id, status };
            let done = l.execute(&account, command, None, now).await?;
            out.print_outcome(&done.outcome);
        }
        Cmd::Statements { account, month: m, page: p } => {
            let id = account.as_deref().map(account_id).transpose()?;
            let (m, p) = (m.as_deref().map(month).transpose()?, page(&p)?);
            if id.is_none() && m.is_none() {
                return Err(Failure::Refused(
                    "give an account, or --month for every account's statements".into(),
                ));
            }
            out.print(&l.statements(id.as_ref(), m, p).await?, output::statement_page);
        }
        Cmd::Export { what, account, month: m, format } => {
            let (id, m) = (account_id(&account)?, m.as_deref().map(month).transpose()?);
            let format = if format == "json" { export::Format::Json } else { export::Format::Csv };
            let ledger = l.clone();
            match what.as_str() {
                "purchases" => {
                    let fetch = move |req| {
                        let (ledger, id) = (ledger.clone(), id.clone());
                        async move { ledger.purchases(&id, m, req).await }
                    };
                    write_out(export::stream(format, None, fetch).await?).await?;
                }
                "statements" => {
                    let fetch = move |req| {
                        let (ledger, id) = (ledger.clone(), id.clone());
                        async move { ledger.statements(Some(&id), m, req).await }
                    };
                    write_out(export::stream(format, None, fetch).await?).await?;
                }
                _ if m.is_some() => {
                    return Err(Failure::Refused("the ledger export has no --month".into()));
                }
                _ => {
                    let fetch = move |req| {
                        let (ledger, id) = (ledger.clone(), id.clone());
                        async move { ledger.entries(&id, req).await }
                    };
                    write_out(export::stream(format, None, fetch).await?).await?;
                }
            }
        }
        Cmd::Audit => {
            let report = l.audit().await?;
            out.print(&report, output::audit);
            if !report.ok() {
                return Ok(ExitCode::from(1));
            }
        }
        Cmd::Batch { file } => return batch::run(l, &file, now).await,
        Cmd::Serve { .. } | Cmd::Bench { .. } => unreachable!("serve and bench are dispatched in run()"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn token_cmd<S: Store>(
    l: &Ledger<S>,
    cmd: TokenCmd,
    now: Timestamp,
    out: Out,
) -> Result<ExitCode, Failure> {
    match cmd {
        TokenCmd::Create { account, label } => {
            let created = l.create_token(&account_id(&account)?, label, now).await?;
            out.print(&created, output::new_token);
        }
        TokenCmd::List { account } => {
            out.print(&l.store().tokens(account_id(&account)?).await?, |t| output::token_list(t));
        }
        TokenCmd::Revoke { account, token_id } => {
            let id = account_id(&account)?;
            if !l.store().revoke_token(id.clone(), token_id.clone()).await? {
                return Err(Failure::Refused(format!("account {id} has no token {token_id}")));
            }
            if !out.json {
                println!("revoked {token_id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn account_cmd<S: Store>(
    l: &Ledger<S>,
    cmd: AccountCmd,
    now: Timestamp,
    out: Out,
) -> Result<ExitCode, Failure> {
    match cmd {
        AccountCmd::Create { id, name, time_zone, monthly_free_credits, unit_price, currency } => {
            let new = NewAccount { id, name, time_zone, monthly_free_credits, unit_price, currency };
            let (view, created) = l.create_account(new, now).await?;
            if !created {
                eprintln!("account {} already exists with these settings; nothing changed", view.id);
            }
            out.print(&view, output::account);
        }
        AccountCmd::Show { id } => out.print(&l.account(&account_id(&id)?, now).await?, output::account),
        AccountCmd::List { page: p, q } => {
            out.print(&l.accounts(page(&p)?, q.as_deref()).await?, output::account_list)
        }
        AccountCmd::Set {
            id,
            name,
            time_zone,
            monthly_free_credits,
            unit_price,
            low_balance_threshold,
            monthly_purchase_limit,
            auto_recharge,
            no_auto_recharge,
            status,
            key,
        } => {
            let auto_recharge = match (auto_recharge, no_auto_recharge) {
                (Some(spec), _) => Some(Some(parse_auto_recharge(&spec)?)),
                (None, true) => Some(None),
                (None, false) => None,
            };
            let patch = AccountPatch {
                name,
                time_zone,
                monthly_free_credits,
                unit_price,
                auto_recharge,
                low_balance_threshold,
                monthly_purchase_limit,
                status,
            };
            return mutate(l, &id, Command::UpdateAccount { patch }, &key, now, out).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_auto_recharge(spec: &str) -> Result<AutoRecharge, Failure> {
    let bad =
        || Failure::Refused(format!("--auto-recharge must be THRESHOLD:CREDITS:MONTHLY_CAP, got {spec:?}"));
    let parts: Vec<i64> = spec.split(':').map(|p| p.parse().map_err(|_| bad())).collect::<Result<_, _>>()?;
    let [threshold, credits, monthly_cap] = parts[..] else {
        return Err(bad());
    };
    Ok(AutoRecharge { threshold, credits, monthly_cap })
}

/// Writes an export to stdout as it is read.
async fn write_out(
    stream: impl futures_util::Stream<Item = Result<bytes::Bytes, LedgerError>>,
) -> Result<(), Failure> {
    use futures_util::StreamExt as _;
    let mut stream = std::pin::pin!(stream);
    let broken = |e: std::io::Error| Failure::Broken(format!("cannot write the export: {e}"));
    while let Some(chunk) = stream.next().await {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(&chunk?).and_then(|()| stdout.flush()).map_err(broken)?;
    }
    Ok(())
}

/// `--webhook-retry-schedule`, checked when the flags are read.
fn parse_retry_schedule(text: &str) -> Result<crate::events::schedule::RetrySchedule, String> {
    crate::events::schedule::RetrySchedule::parse(text).map_err(|e| e.to_string())
}
