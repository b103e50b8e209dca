//! Shared fixtures: a fresh SQLite file per test, the real binary, and an
//! in-process ledger over a real store.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

use jiff::Timestamp;
use serde_json::{Value, json};
use tempfile::TempDir;
use textcredits::domain::account::{AccountId, NewAccount};
use textcredits::domain::period::Zone;
use textcredits::ledger::Ledger;
use textcredits::store::postgres::PgStore;
use textcredits::store::sqlite::SqliteStore;

/// The `textcredits` binary cargo built for these tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_textcredits"))
}

pub fn ts(s: &str) -> Timestamp {
    s.parse().expect("test timestamps are RFC 3339")
}

pub fn id(s: &str) -> AccountId {
    AccountId::parse(s).expect("test account ids are valid")
}

/// A database file in its own temporary directory, removed at drop.
pub struct Db {
    pub dir: TempDir,
    pub path: PathBuf,
    pub url: String,
    /// The PostgreSQL schema this database lives in, dropped at drop.
    pub pg_schema: Option<String>,
    /// Held while the database is in use: the test that restarts
    /// PostgreSQL takes it exclusively, so no other test sees the restart.
    _pg_in_use: Option<std::sync::RwLockReadGuard<'static, ()>>,
}

/// Shared by every PostgreSQL test; exclusive for the one that restarts
/// the server ([`Db::postgres_alone`]).
static PG_SERVER: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

impl Db {
    pub fn new() -> Db {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("textcredits.db");
        let url = format!("sqlite:{}", path.display());
        Db { dir, path, url, pg_schema: None, _pg_in_use: None }
    }

    /// A fresh schema in the PostgreSQL database of `TEXTCREDITS_TEST_PG`,
    /// or `None` (with a visible message) when the variable is unset. Under
    /// CI it must be set: `.ci/run` does.
    pub fn postgres() -> Option<Db> {
        let guard = PG_SERVER.read().unwrap_or_else(|e| e.into_inner());
        let mut db = Db::postgres_schema()?;
        db._pg_in_use = Some(guard);
        Some(db)
    }

    /// Like [`Db::postgres`], with no other PostgreSQL test running until
    /// the guard is dropped (for restarting the server).
    pub fn postgres_alone() -> Option<(Db, std::sync::RwLockWriteGuard<'static, ()>)> {
        let guard = PG_SERVER.write().unwrap_or_else(|e| e.into_inner());
        Some((Db::postgres_schema()?, guard))
    }

    fn postgres_schema() -> Option<Db> {
        let Ok(base) = std::env::var("TEXTCREDITS_TEST_PG") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the PostgreSQL tests: set TEXTCREDITS_TEST_PG"
            );
            eprintln!("SKIPPED PostgreSQL test: TEXTCREDITS_TEST_PG is not set");
            return None;
        };
        let schema = format!("tc_{}", textcredits::ledger::random_id());
        pg_exec(&base, &format!("CREATE SCHEMA {schema}"));
        let sep = if base.contains('?') { '&' } else { '?' };
        // The application name lets the drop end this test's sessions.
        let url = format!("{base}{sep}options=-csearch_path%3D{schema}&application_name={schema}");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("unused.db");
        Some(Db { dir, path, url, pg_schema: Some(schema), _pg_in_use: None })
    }

    /// A `Command` for the binary on this database, isolated from the
    /// caller's environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.env_remove("TEXTCREDITS_DATABASE")
            .env_remove("TEXTCREDITS_DEFAULT_TIME_ZONE")
            .current_dir(self.dir.path())
            .arg("--database")
            .arg(&self.url)
            .args(args);
        cmd
    }

    /// Runs the binary on this database.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("the binary runs"))
    }

    /// Runs with `--json`, expecting success.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let run = self.run(&all);
        assert_eq!(run.code, 0, "{args:?} failed: {run:?}");
        run.json()
    }

    /// Every entry of `account` (`ledger --json`, all pages), newest first.
    pub fn ledger_entries(&self, account: &str) -> Vec<Value> {
        let mut entries = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut args = vec!["ledger", account, "--limit", "500"];
            if let Some(c) = &cursor {
                args.extend(["--cursor", c.as_str()]);
            }
            let page = self.json(&args);
            entries.extend(page["data"].as_array().expect("data is a list").clone());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return entries,
            }
        }
    }

    /// `textcredits audit` passes on this database.
    pub fn assert_audit(&self) {
        let run = self.run(&["audit"]);
        assert_eq!(run.code, 0, "audit failed: {}{}", run.stdout, run.stderr);
        assert!(run.stdout.contains("audit passed"), "{}", run.stdout);
    }

    pub async fn ledger(&self) -> Ledger<SqliteStore> {
        let store = SqliteStore::open(&self.path).expect("store opens");
        Ledger::new(store, Zone::utc())
    }

    pub async fn pg_ledger(&self) -> Ledger<PgStore> {
        let store = PgStore::open(&self.url).await.expect("the PostgreSQL store opens");
        Ledger::new(store, Zone::utc())
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let (Some(schema), Ok(base)) = (&self.pg_schema, std::env::var("TEXTCREDITS_TEST_PG")) {
            // Sessions of a pool whose runtime cannot run any more (the
            // test is over or blocked here) would hold their locks: end them.
            pg_exec(
                &base,
                &format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{schema}'; \
                     DROP SCHEMA IF EXISTS {schema} CASCADE"
                ),
            );
        }
    }
}

/// Runs `work` on a connection to PostgreSQL from any context (a thread
/// of its own, with a runtime of its own, so it works inside async tests
/// and in drops).
fn on_pg<T: Send + 'static>(
    url: &str,
    work: impl AsyncFnOnce(&tokio_postgres::Client) -> T + Send + 'static,
) -> T {
    let url = url.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        rt.block_on(async {
            let (client, conn) =
                tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("PostgreSQL answers");
            tokio::spawn(conn);
            work(&client).await
        })
    })
    .join()
    .expect("the statement ran")
}

/// Runs one statement on PostgreSQL from any context.
pub fn pg_exec(url: &str, sql: &str) {
    let sql = sql.to_string();
    on_pg(url, async move |c| c.batch_execute(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}")));
}

/// Runs SQL on the test's database behind the ledger's back (to corrupt
/// it on purpose).
pub fn raw_sql(db: &Db, sql: &str) {
    if db.pg_schema.is_some() {
        pg_exec(&db.url, sql);
    } else {
        let conn = rusqlite::Connection::open(&db.path).expect("open");
        conn.execute_batch(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// The one text value `sql` selects on the test's database, behind the
/// ledger's back (to look at how a row is kept).
pub fn raw_text(db: &Db, sql: &str) -> String {
    if db.pg_schema.is_none() {
        let conn = rusqlite::Connection::open(&db.path).expect("open");
        return conn.query_row(sql, [], |r| r.get(0)).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let sql = sql.to_string();
    on_pg(&db.url, async move |c| {
        c.query_one(&sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
    })
}

/// Creates an account through the ledger.
pub async fn account<S: textcredits::ledger::Store>(
    l: &Ledger<S>,
    account: &str,
    zone: &str,
    free: i64,
    now: Timestamp,
) -> AccountId {
    let new = NewAccount {
        id: account.into(),
        name: format!("{account} cafe"),
        time_zone: Some(zone.into()),
        monthly_free_credits: Some(free),
        ..Default::default()
    };
    l.create_account(new, now).await.expect("account is created");
    id(account)
}

/// The admin token the test servers run with.
pub const ADMIN: &str = "test-admin-token-0123456789";

/// A real `textcredits serve` process on a free loopback port.
pub struct Server {
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub client: reqwest::Client,
}

/// One HTTP answer: status, headers, and the body as JSON (or `Null`).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A problem+json answer with this status and code.
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.header("content-type"), Some("application/problem+json"), "{self:?}");
        assert_eq!(self.body["code"], code, "{self:?}");
        assert_eq!(self.body["status"], status, "{self:?}");
    }
}

impl Server {
    /// Starts `serve` on `db` with `--admin-token ADMIN` and `extra` flags,
    /// and waits until it says where it listens.
    pub fn start(db: &Db, extra: &[&str]) -> Server {
        use std::io::BufRead as _;
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--admin-token", ADMIN];
        args.extend_from_slice(extra);
        let mut child = db
            .command(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the server starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let first = lines.next().expect("a first line").expect("readable");
        let base = first.strip_prefix("textcredits listening on ").expect("the listen line").to_string();
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, base, client: reqwest::Client::new() }
    }

    /// Sends a request with an optional bearer token, idempotency key and
    /// JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Answer::from(req.send().await.expect("the server answers")).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.call("GET", path, Some(token), None, None).await
    }

    pub async fn post(&self, path: &str, token: &str, key: Option<&str>, body: Value) -> Answer {
        self.call("POST", path, Some(token), key, Some(body)).await
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().expect("the server exits")
    }
}

impl Answer {
    pub async fn from(r: reqwest::Response) -> Answer {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer { status, headers, body, text }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a refused request must leave as it was: the account's balance
/// (without the time it was read) and its whole ledger.
pub async fn snapshot(s: &Server, account: &str) -> (Value, Value) {
    let b = s.get(&format!("/v1/accounts/{account}/balance"), ADMIN).await;
    assert_eq!(b.status, 200, "{b:?}");
    let mut balance = b.body;
    balance.as_object_mut().expect("an object").remove("as_of");
    let l = s.get(&format!("/v1/accounts/{account}/ledger?limit=500"), ADMIN).await;
    assert_eq!(l.status, 200, "{l:?}");
    (balance, l.body)
}

/// Creates `id` (1,000 free credits a month, UTC) through the API.
pub async fn open_account(s: &Server, id: &str) {
    let body = json!({"id": id, "name": format!("{id} cafe"), "time_zone": "UTC"});
    let a = s.post("/v1/accounts", ADMIN, None, body).await;
    assert_eq!(a.status, 201, "{a:?}");
}

pub fn created(a: Answer, what: &str) -> Value {
    assert_eq!(a.status, 201, "{what}: {a:?}");
    a.body
}

/// Undoes the migration that made captures debits (SQLite 8, PostgreSQL
/// 7) and what it wrote, and every one after it (the outbox: SQLite 9,
/// PostgreSQL 8; automatic purchases and webhook attempts: SQLite 10,
/// PostgreSQL 9; the webhook routes' idempotency keys: SQLite 12,
/// PostgreSQL 10), as if the database were from before them.
pub const UNDO_CAPTURE_DEBITS: &str = "DROP TABLE request_keys; ALTER TABLE purchases DROP COLUMN automatic; DROP TABLE webhook_attempts; DROP TABLE events; DROP TABLE webhook_deliveries; DROP TABLE webhook_endpoints; \
    DROP INDEX accounts_by_reset; ALTER TABLE accounts DROP COLUMN reset_announced; \
    ALTER TABLE accounts DROP COLUMN event_sequence; ALTER TABLE accounts DROP COLUMN notices; \
    DELETE FROM debits WHERE hold_id IS NOT NULL; \
    DROP INDEX debits_by_time; DROP INDEX debits_by_reference; DROP INDEX holds_by_time; \
    ALTER TABLE holds DROP COLUMN debit_id; ALTER TABLE debits DROP COLUMN hold_id; \
    ALTER TABLE debits DROP COLUMN balance_after;";
