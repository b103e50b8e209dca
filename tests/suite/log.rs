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
use textcredits::ledger::{IdempotencyKey, Ledger, Store};
use textcredits::store::sqlite::{SqliteStore, Tuning, log_path_of};

use crate::util::{ADMIN, Db, Server, account, created, open_account, ts};

const NOW: &str = "2026-11-20T12:00:00Z";

/// Materializes only when told to (or at its limit): never when idle,
/// never at close.
fn held_back(max_tail_ops: usize) -> Tuning {
    Tuning {
        max_tail_ops,
        batch_ops: max_tail_ops,
        idle_settle: None,
        settle_on_close: false,
        ..Tuning::default()
    }
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

/// A count the database file gives, read raw (no replay).
fn count(db: &Db, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(&db.path).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Entries in the file's table, read raw (no replay).
fn entries(db: &Db) -> i64 {
    count(db, "SELECT count(*) FROM entries")
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

/// The database file's mark, read raw (no replay).
fn mark(db: &Db) -> i64 {
    let conn = rusqlite::Connection::open(&db.path).unwrap();
    conn.query_row("SELECT materialized FROM ledger_log_state", [], |r| r.get(0)).unwrap()
}

/// The log file beside the database, opened raw.
fn log_file(db: &Db) -> rusqlite::Connection {
    rusqlite::Connection::open(log_path_of(&db.path)).unwrap()
}

/// What the files say of the log, read raw (no replay): the mark, and the
/// positions after it (rows at or before the mark, materialized but not
/// yet deleted, are not read again).
fn log_state(db: &Db) -> (i64, i64, Option<i64>, Option<i64>) {
    let mark = mark(db);
    log_file(db)
        .query_row(
            "SELECT count(*), min(position), max(position) FROM log WHERE position > ?1",
            [mark],
            |r| Ok((mark, r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap()
}

/// The log after a kill: contiguous and starting right after the mark
/// (each step of the replay is one transaction, of whole log rows).
fn assert_log_whole(db: &Db, first: i64, when: &str) -> i64 {
    let (mark, count, min, max) = log_state(db);
    if count > 0 {
        assert_eq!(min, Some(mark + 1), "{when}: the log starts right after the mark");
        assert_eq!(max, Some(mark + count), "{when}: the log has no gap");
        assert!(count <= first, "{when}: {count} of {first} left");
    }
    count
}

/// The replay's step in these tests: a few hundred of their log rows (a
/// debit writes about five table rows), so a replay of thousands of
/// operations takes many steps, as a long log does with the default.
const STEP_ROWS: &str = "1000";

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
    let mut child = db
        .command(&["--replay-step-rows", STEP_ROWS, "--now", NOW, "balance", "cafe"])
        .spawn()
        .expect("the binary runs");
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
        let mut child = db
            .command(&["--replay-step-rows", STEP_ROWS, "--now", NOW, "balance", "cafe"])
            .spawn()
            .expect("the binary runs");
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
    log_file(&db)
        .execute("UPDATE log SET rows = x'02ff' WHERE position = (SELECT max(position) FROM log)", [])
        .unwrap();
    let err = SqliteStore::open(&db.path).err().expect("a corrupt log row refuses the open");
    let msg = err.to_string();
    assert!(msg.contains("does not decode") || msg.contains("format"), "{msg}");
    let (mark, rows, ..) = log_state(&db);
    assert_eq!(rows, 2, "nothing of the log was skipped or dropped");
    let conn = rusqlite::Connection::open(&db.path).unwrap();
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

/// A log row's bytes in the log file, read raw.
fn log_row(db: &Db, position: i64) -> Vec<u8> {
    log_file(db).query_row("SELECT rows FROM log WHERE position = ?1", [position], |r| r.get(0)).unwrap()
}

fn set_log_row(db: &Db, position: i64, bytes: &[u8]) {
    let n = log_file(db)
        .execute("UPDATE log SET rows = ?2 WHERE position = ?1", rusqlite::params![position, bytes])
        .unwrap();
    assert_eq!(n, 1, "log row {position} exists");
}

/// A materialization that fails (a log row that does not decode) is
/// retried, and meanwhile: a read of the ledger says why it cannot answer,
/// the writer takes operations until its tail is full and then refuses
/// them with the same reason, and nothing is lost; once the row reads back,
/// everything acknowledged is there once.
#[tokio::test]
async fn a_failing_materialization_refuses_reads_and_then_writes_and_loses_nothing() {
    let db = Db::new();
    let now = ts(NOW);
    let l = open(&db, Tuning { batch_ops: 2, ..held_back(3) });
    let a = account(&l, "cafe", "UTC", 1_000, now).await;
    debit(&l, &a, 1, "d1", now).await;
    let (mark, ..) = log_state(&db);
    let good = log_row(&db, mark + 1);
    set_log_row(&db, mark + 1, b"\x02\xff");
    // The second debit fills the batch: the materializer fails on the first.
    debit(&l, &a, 2, "d2", now).await;
    let read = l.balance(&a, now).await.expect_err("a read cannot see what was acknowledged");
    assert!(
        matches!(&read, textcredits::ledger::LedgerError::Unavailable(m) if m.contains("does not decode")),
        "{read:?}"
    );
    debit(&l, &a, 4, "d3", now).await;
    let refused = l.execute(&a, debit_of(8), key("d4"), now).await.expect_err("the tail is full");
    assert!(
        matches!(&refused, textcredits::ledger::LedgerError::Unavailable(m)
            if m.contains("cannot take more operations") && m.contains("does not decode")),
        "{refused:?}"
    );
    assert_eq!(log_state(&db).0, mark, "nothing was materialized");
    set_log_row(&db, mark + 1, &good);
    assert_eq!(l.balance(&a, now).await.unwrap().available, 1_000 - 1 - 2 - 4, "d4 was refused whole");
    debit(&l, &a, 8, "d4", now).await;
    assert_eq!(l.balance(&a, now).await.unwrap().available, 1_000 - 15);
    drop(l);
    db.assert_audit();
}

/// The log file keeps only what is not materialized: the writer deletes
/// the rest in its next append, and a store that closes deletes it too.
#[tokio::test]
async fn the_log_file_keeps_only_what_is_not_materialized() {
    let db = Db::new();
    let now = ts(NOW);
    let rows_upto = |db: &Db, mark: i64| -> i64 {
        log_file(db).query_row("SELECT count(*) FROM log WHERE position <= ?1", [mark], |r| r.get(0)).unwrap()
    };
    {
        let l = open(&db, Tuning { settle_on_close: true, ..held_back(4) });
        let a = account(&l, "cafe", "UTC", 1_000, now).await;
        for i in 0..4 {
            debit(&l, &a, 1, &format!("d{i}"), now).await;
        }
        let settles = l.store().settles();
        l.store().settle().await.unwrap();
        assert!(l.store().settles() > settles);
        let (mark, pending, ..) = log_state(&db);
        assert_eq!(pending, 0);
        assert_eq!(rows_upto(&db, mark), 4, "materialized, not yet deleted");
        debit(&l, &a, 1, "d4", now).await;
        assert_eq!(rows_upto(&db, mark), 0, "the next append deleted them");
        assert_eq!(log_state(&db).1, 1);
    }
    // The store closed (its threads end on their own): wait for the last
    // materialization and its delete.
    let waited = std::time::Instant::now();
    while log_file(&db).query_row("SELECT count(*) FROM log", [], |r| r.get::<_, i64>(0)).unwrap() > 0 {
        assert!(waited.elapsed() < std::time::Duration::from_secs(30), "the closing store emptied its log");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(count(&db, "SELECT count(*) FROM debits"), 5, "all five in the tables");
    db.assert_audit();
}

/// A database whose log an older binary kept in the database itself
/// (table `ledger_log`, before the log had a file of its own): the open
/// moves it into the log file, replays it and drops the table.
#[tokio::test]
async fn a_log_kept_in_the_database_by_an_older_version_is_replayed() {
    let db = Db::new();
    let now = ts(NOW);
    {
        let l = open(&db, held_back(1_000));
        let a = account(&l, "cafe", "UTC", 1_000, now).await;
        for i in 0..10 {
            debit(&l, &a, 3, &format!("d{i}"), now).await;
        }
        assert_eq!(pending(&l).await, 10);
    }
    // What the older binary would have left: the same rows in `ledger_log`
    // of the database, and no log file.
    let (mark, ..) = log_state(&db);
    let rows: Vec<(i64, Vec<u8>)> = {
        let log = log_file(&db);
        let mut stmt =
            log.prepare("SELECT position, rows FROM log WHERE position > ?1 ORDER BY position").unwrap();
        stmt.query_map([mark], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    };
    assert_eq!(rows.len(), 10);
    let last_entry_id: i64 =
        log_file(&db).query_row("SELECT last_entry_id FROM log_state", [], |r| r.get(0)).unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let mut p = log_path_of(&db.path).into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    {
        let conn = rusqlite::Connection::open(&db.path).unwrap();
        conn.execute_batch("CREATE TABLE ledger_log (position INTEGER PRIMARY KEY, rows BLOB NOT NULL)")
            .unwrap();
        for (position, bytes) in &rows {
            conn.execute(
                "INSERT INTO ledger_log (position, rows) VALUES (?1, ?2)",
                rusqlite::params![position, bytes],
            )
            .unwrap();
        }
        conn.execute("UPDATE sequences SET value = ?1 WHERE name = 'entry'", [last_entry_id]).unwrap();
    }
    let l = open(&db, Tuning::default());
    let a = AccountId::parse("cafe").unwrap();
    assert_eq!(l.balance(&a, now).await.unwrap().available, 1_000 - 30);
    assert!(l.execute(&a, debit_of(3), key("d9"), now).await.unwrap().replayed, "the keys came with it");
    debit(&l, &a, 3, "d10", now).await;
    assert_eq!(l.balance(&a, now).await.unwrap().available, 1_000 - 33);
    drop(l);
    let tables = count(&db, "SELECT count(*) FROM sqlite_master WHERE name = 'ledger_log'");
    assert_eq!(tables, 0, "the old table is dropped");
    db.assert_audit();
}

/// The writer keeps at most `max_warm_accounts` accounts in memory and
/// lets the least recently used go cold at its edge; a warm account's
/// rows come from memory, a cold one's from the tables (seen here by
/// deleting both accounts' lots behind the store's back, which a running
/// store does not expect: the warm debit still finds its credits).
#[tokio::test]
async fn the_writer_keeps_its_limit_of_warm_accounts_and_lets_the_least_recent_go() {
    let db = Db::new();
    let now = ts(NOW);
    let l = open(&db, Tuning { max_warm_accounts: 3, ..Tuning::default() });
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(account(&l, &format!("cafe-{i}"), "UTC", 1_000, now).await);
    }
    for (i, a) in ids.iter().take(3).enumerate() {
        debit(&l, a, 1, &format!("d{i}"), now).await;
        assert_eq!(l.store().warm_accounts(), i + 1, "warm after {} accounts", i + 1);
    }
    debit(&l, &ids[3], 1, "d3", now).await;
    assert_eq!(l.store().warm_accounts(), 3, "at the limit: the least recently used went cold");
    l.store().settle().await.unwrap();
    crate::util::raw_sql(&db, "DELETE FROM lots WHERE account_id IN ('cafe-0', 'cafe-3')");
    debit(&l, &ids[3], 1, "e3", now).await;
    let cold = l.execute(&ids[0], debit_of(1), key("e0"), now).await;
    assert!(cold.is_err(), "cafe-0 went cold, so its lots were read from the tables: {cold:?}");
    assert_eq!(l.store().warm_accounts(), 3);
}

/// The materializer runs at a lower CPU priority than the writer and the
/// requests (nice `MATERIALIZER_NICE`), so under load it yields to them
/// and works in larger batches (Linux: each thread has its own nice value).
#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_materializer_yields_the_cpu_to_the_writer() {
    let db = Db::new();
    let l = open(&db, Tuning::default());
    let now = ts(NOW);
    let a = account(&l, "cafe", "UTC", 1_000, now).await;
    debit(&l, &a, 1, "d1", now).await;
    let nice_of = |name: &str| -> Vec<i64> {
        let mut found = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
            let (head, rest) = stat.rsplit_once(") ").unwrap();
            if head.ends_with(&format!("({name}")) {
                found.push(rest.split_whitespace().nth(16).unwrap().parse().unwrap());
            }
        }
        found
    };
    // Thread names are cut to 15 bytes.
    let materializers = nice_of("sqlite-material");
    assert!(!materializers.is_empty(), "a materializer thread runs");
    let nice = i64::from(textcredits::store::sqlite::MATERIALIZER_NICE);
    assert!(materializers.iter().all(|&n| n == nice), "{materializers:?}");
    let writers = nice_of("sqlite-writer");
    assert!(!writers.is_empty() && writers.iter().all(|&n| n == 0), "{writers:?}");
}
