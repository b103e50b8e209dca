//! SQLite's log (issue 15, `src/store/sqlite/log.rs`): what a group
//! acknowledges is one log row until it is materialized; reads wait for
//! it, the next open replays it, another process's writer takes it over,
//! the tail's limit holds at its edge, a replay killed at any point
//! resumes from its last whole step, and a log row that does not read
//! back refuses to open instead of being skipped.

use jiff::Timestamp;
use serde_json::json;
use textcredits::domain::account::AccountId;
use textcredits::domain::command::Command;
use textcredits::domain::credits::Credits;
use textcredits::domain::period::Zone;
use textcredits::ledger::{IdempotencyKey, Ledger};
use textcredits::store::sqlite::{MAX_SETTLE_POSITIONS, SqliteStore, Tuning};

use crate::util::{ADMIN, Db, Server, account, created, open_account, ts};

const NOW: &str = "2026-11-20T12:00:00Z";

/// Materializes only when told to (or at its limit): never when idle,
/// never at close.
fn held_back(max_tail_ops: usize) -> Tuning {
    Tuning { max_tail_ops, idle_settle: None, settle_on_close: false }
}

fn open(db: &Db, tuning: Tuning) -> Ledger<SqliteStore> {
    Ledger::new(SqliteStore::open_with(&db.path, tuning).expect("the store opens"), Zone::utc())
}

fn key(k: &str) -> Option<IdempotencyKey> {
    Some(IdempotencyKey::parse(k).expect("valid key"))
}

fn debit_of(n: i64) -> Command {
    Command::Debit { credits: Credits::new(n).unwrap(), reference: None, description: None }
}

async fn debit(l: &Ledger<SqliteStore>, a: &AccountId, n: i64, k: &str, now: Timestamp) {
    l.execute(a, debit_of(n), key(k), now).await.expect("debit");
}

/// Entries in the file's table, read raw (no replay).
fn entries(db: &Db) -> i64 {
    let conn = rusqlite::Connection::open(&db.path).unwrap();
    conn.query_row("SELECT count(*) FROM entries", [], |r| r.get(0)).unwrap()
}

async fn pending(l: &Ledger<SqliteStore>) -> i64 {
    l.store().log_pending().await.expect("the log is read")
}

#[tokio::test]
async fn the_tail_is_materialized_at_its_limit_and_not_one_operation_before() {
    let db = Db::new();
    let l = open(&db, held_back(5));
    let now = ts(NOW);
    let a = account(&l, "cafe", "UTC", 1_000, now).await;
    let settles = l.store().settles();
    for i in 0..4 {
        debit(&l, &a, 1, &format!("d{i}"), now).await;
    }
    assert_eq!(pending(&l).await, 4, "four operations, four log rows, none materialized");
    assert_eq!(l.store().settles(), settles);
    debit(&l, &a, 1, "d4", now).await;
    settled(&l, settles, 1).await;
    assert_eq!(pending(&l).await, 0, "all five are materialized");
    // A replay of a key in the tail, and one in the tables, answer the same.
    debit(&l, &a, 1, "d5", now).await;
    assert!(l.execute(&a, debit_of(1), key("d5"), now).await.unwrap().replayed);
    assert!(l.execute(&a, debit_of(1), key("d0"), now).await.unwrap().replayed);
    assert_eq!(pending(&l).await, 1, "replays append nothing");
    assert_eq!(l.balance(&a, now).await.unwrap().available, 994, "a read waits for materialization");
    assert_eq!(pending(&l).await, 0);
}

/// Waits (bounded) until the writer has materialized `n` more times than
/// `since`: it answers a group first and materializes after it.
async fn settled(l: &Ledger<SqliteStore>, since: u64, n: u64) {
    let waited = std::time::Instant::now();
    while l.store().settles() < since + n && waited.elapsed() < std::time::Duration::from_secs(30) {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    assert_eq!(l.store().settles(), since + n, "materializations");
}

#[tokio::test]
async fn what_a_dropped_writer_acknowledged_is_replayed_at_the_next_open() {
    let db = Db::new();
    let now = ts(NOW);
    let (a, b);
    {
        let l = open(&db, held_back(1_000_000));
        a = account(&l, "cafe", "UTC", 1_000, now).await;
        b = account(&l, "bistro", "Europe/Berlin", 100, now).await;
        let purchase = Command::Purchase { credits: Credits::new(500).unwrap() };
        l.execute(&b, purchase, key("p"), now).await.unwrap();
        for i in 0..300 {
            debit(&l, if i % 3 == 0 { &b } else { &a }, 1, &format!("d{i}"), now).await;
        }
        assert_eq!(pending(&l).await, 301);
        // Dropped without materializing: its tail is gone with it.
    }
    let rows_before = entries(&db);
    let l = open(&db, Tuning::default());
    assert_eq!(pending(&l).await, 0, "the open replayed the log");
    assert_eq!(l.balance(&a, now).await.unwrap().available, 800);
    assert_eq!(l.balance(&b, now).await.unwrap().available, 500);
    let rows_after = entries(&db);
    assert!(rows_after > rows_before, "entries {rows_before} -> {rows_after}");
    let audit = l.audit().await.unwrap();
    assert!(audit.ok(), "{:?}", audit.mismatches);
    // The keys came back with the rows: a replay is a replay.
    assert!(l.execute(&a, debit_of(1), key("d1"), now).await.unwrap().replayed);
    drop(l);
    db.assert_audit();
}

/// What the database file says of the log, read raw (no replay): the
/// mark, and the positions after it.
fn log_state(db: &Db) -> (i64, i64, Option<i64>, Option<i64>) {
    let conn = rusqlite::Connection::open(&db.path).unwrap();
    conn.query_row(
        "SELECT materialized, (SELECT count(*) FROM ledger_log), (SELECT min(position) FROM ledger_log), \
         (SELECT max(position) FROM ledger_log) FROM ledger_log_state",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .unwrap()
}

/// The log after a kill: contiguous, starting right after the mark, and
/// (while not drained) shorter than `first` by whole steps of
/// [`MAX_SETTLE_POSITIONS`] log rows, each step one transaction.
fn assert_log_whole(db: &Db, first: i64, when: &str) -> i64 {
    let (mark, count, min, max) = log_state(db);
    if count > 0 {
        assert_eq!(min, Some(mark + 1), "{when}: the log starts right after the mark");
        assert_eq!(max, Some(mark + count), "{when}: the log has no gap");
        assert_eq!((first - count) % MAX_SETTLE_POSITIONS, 0, "{when}: {count} of {first} left");
    }
    count
}

/// Recovery killed at any point (SIGKILL of the real binary while it
/// replays a long log at open, in the middle of its steps and at a random
/// instant) resumes where the last committed step left it: nothing is
/// lost, nothing applied twice, and the audit passes.
#[tokio::test]
async fn a_replay_killed_at_any_point_resumes_and_loses_nothing() {
    let db = Db::new();
    let now = ts(NOW);
    const DEBITS: usize = 3_000;
    {
        let l = open(&db, held_back(1_000_000));
        let a = account(&l, "cafe", "UTC", 1_000, now).await;
        let b = account(&l, "bistro", "Europe/Berlin", 100, now).await;
        let purchase = Command::Purchase { credits: Credits::new(5_000).unwrap() };
        l.execute(&b, purchase, key("p"), now).await.unwrap();
        for i in 0..DEBITS {
            debit(&l, if i % 4 == 0 { &a } else { &b }, 1, &format!("d{i}"), now).await;
        }
        // Dropped without materializing, as a crashed server leaves it.
    }
    let first = DEBITS as i64 + 1;
    assert_eq!(assert_log_whole(&db, first, "before"), first);
    let (mark_before, ..) = log_state(&db);

    // Killed as soon as a step of the replay has committed.
    let mut child = db.command(&["--now", NOW, "balance", "cafe"]).spawn().expect("the binary runs");
    let waited = std::time::Instant::now();
    while log_state(&db).0 == mark_before && waited.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    child.kill().expect("SIGKILL is sent");
    child.wait().unwrap();
    let left = assert_log_whole(&db, first, "killed after a step");
    eprintln!("killed after {:?}: {left} of {first} log rows left", waited.elapsed());
    assert!(left > 0 && left < first, "killed mid-replay: {left} of {first} log rows left");

    // Killed at instants spread over the rest of it.
    let mut last = left;
    for delay_ms in [2u64, 9, 23, 41, 67, 110] {
        let mut child = db.command(&["--now", NOW, "balance", "cafe"]).spawn().expect("the binary runs");
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
        let now_left = assert_log_whole(&db, first, &format!("killed after {delay_ms} ms"));
        eprintln!("killed after {delay_ms} ms: {now_left} left");
        assert!(now_left <= last, "a replay never adds to the log: {last} -> {now_left}");
        last = now_left;
    }

    // The run that is not killed finishes the replay: every debit once.
    let a_debits = DEBITS.div_ceil(4) as i64;
    let balance = db.json(&["--now", NOW, "balance", "cafe"]);
    assert_eq!(balance["available"], 1_000 - a_debits, "{balance}");
    let balance = db.json(&["--now", NOW, "balance", "bistro"]);
    assert_eq!(balance["available"], 5_100 - (DEBITS as i64 - a_debits), "{balance}");
    assert_eq!(assert_log_whole(&db, first, "after"), 0);
    let l = open(&db, Tuning::default());
    let a = AccountId::parse("cafe").unwrap();
    assert!(l.execute(&a, debit_of(1), key("d0"), now).await.unwrap().replayed, "the keys were replayed too");
    drop(l);
    db.assert_audit();
}

#[tokio::test]
async fn a_log_row_that_does_not_read_back_refuses_to_open_and_changes_nothing() {
    let db = Db::new();
    let now = ts(NOW);
    {
        let l = open(&db, held_back(1_000));
        let a = account(&l, "cafe", "UTC", 1_000, now).await;
        debit(&l, &a, 7, "d1", now).await;
        debit(&l, &a, 8, "d2", now).await;
        assert_eq!(pending(&l).await, 2);
    }
    crate::util::raw_sql(
        &db,
        "UPDATE ledger_log SET rows = x'02ff' WHERE position = (SELECT max(position) FROM ledger_log)",
    );
    let err = SqliteStore::open(&db.path).err().expect("a corrupt log row refuses the open");
    let msg = err.to_string();
    assert!(msg.contains("does not decode") || msg.contains("format"), "{msg}");
    let conn = rusqlite::Connection::open(&db.path).unwrap();
    let (rows, mark): (i64, i64) = conn
        .query_row("SELECT (SELECT count(*) FROM ledger_log), materialized FROM ledger_log_state", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(rows, 2, "nothing of the log was skipped or dropped");
    let debits: i64 = conn.query_row("SELECT count(*) FROM debits", [], |r| r.get(0)).unwrap();
    assert_eq!(debits, 0, "the good row before it was not materialized alone either (one transaction)");
    assert!(mark >= 0);
    // The CLI says so in one line, exit code 1 (not the user's input).
    let run = db.run(&["balance", "cafe"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("log row"), "{run:?}");
}

/// A server and CLI runs on the same file: each sees what the other
/// acknowledged, though the server's writer keeps a tail in memory.
#[tokio::test]
async fn a_cli_beside_a_server_sees_what_the_server_acknowledged_and_the_server_what_it_wrote() {
    let db = Db::new();
    let s = Server::start(&db, &["--test-clock", "--now", NOW]);
    open_account(&s, "cafe").await;
    let a = "/v1/accounts/cafe";
    created(s.post(&format!("{a}/purchases"), ADMIN, Some("p1"), json!({"credits": 200})).await, "purchase");
    for i in 0..20 {
        let d = s.post(&format!("{a}/debits"), ADMIN, Some(&format!("s{i}")), json!({"credits": 1})).await;
        created(d, "debit");
    }
    // The CLI's open replays whatever the server has not materialized.
    let balance = db.json(&["--now", NOW, "balance", "cafe"]);
    assert_eq!(balance["available"], 1_180, "{balance}");
    let run = db.run(&["--now", NOW, "debit", "cafe", "30", "--key", "cli-1"]);
    assert_eq!(run.code, 0, "{run:?}");
    // The server's next read, and its next write, see the CLI's debit.
    let b = s.get(&format!("{a}/balance"), ADMIN).await;
    assert_eq!(b.body["available"], 1_150, "{b:?}");
    created(s.post(&format!("{a}/debits"), ADMIN, Some("s-last"), json!({"credits": 50})).await, "debit");
    let balance = db.json(&["--now", NOW, "balance", "cafe"]);
    assert_eq!(balance["available"], 1_100, "{balance}");
    drop(s);
    db.assert_audit();
}
