//! Shared fixtures: a fresh SQLite file per test, the real binary, and an
//! in-process ledger over a real store.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

use jiff::Timestamp;
use serde_json::Value;
use tempfile::TempDir;
use textcredits::domain::account::{AccountId, NewAccount};
use textcredits::domain::period::Zone;
use textcredits::ledger::Ledger;
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
}

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
        Db { dir, path, url }
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
    l.create_account(new, now)
        .await
        .expect("account is created");
    id(account)
}
