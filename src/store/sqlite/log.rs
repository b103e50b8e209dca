//! The log: the durable record of every group of operations, one row per
//! group in a file of its own beside the database (`<database>-log`), and
//! its materialization into the tables in large batches.
//!
//! A group commits one append to the log file's `log` (its rows, every
//! table's, encoded with postcard), moving `log_state` (the head, the
//! writer that appended it, the last entry id drawn) in the same
//! transaction. The writer keeps the last version of each row it appended
//! in its memory (`tail.rs`), so later groups load what was acknowledged.
//! [`settle_step`] (the materializer's, `materializer.rs`) reads up to
//! [`MAX_SETTLE_POSITIONS`] log rows after the database's mark, merges
//! each table's rows (the last version of a keyed row wins, usage counters
//! add up), writes them sorted by key, so each page is written once per
//! batch rather than once per operation, and moves the mark, all in one
//! transaction of the database. The writer deletes what is materialized
//! from the log file in its next append ([`trim`]).
//!
//! Recovery is the same steps at open ([`Log::open`]), larger (up to
//! [`REPLAY_STEP_ROWS`] table rows each, since nothing else runs): the
//! tables plus the log after the mark are exactly what was acknowledged,
//! whoever wrote it (a crashed server, a CLI beside it), and any number of
//! connections may materialize at once (the mark is read and moved under
//! the database's write lock). Writers of other processes are told apart by `owner`: a
//! writer appends only while `log_state` is the one it left (its last
//! position and owner); otherwise it takes over ([`Log::take_over`]):
//! materializes the log and drops its tail.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension};

use super::sql_error;
use super::tail::Tail;
use crate::ledger::LedgerError;
use crate::ledger::batch::Rows;
use crate::store::columns::{Table, Val};
use crate::store::pipeline::{WRITE_ORDER, append_only, table_rows};

/// The encoding of a log row; a row of another version is refused.
const LOG_FORMAT: u8 = 1;

/// Most log rows materialized in one transaction while the service runs
/// (at most [`super::MAX_GROUP_OPS`] operations each), so a step is short
/// beside the writer and its memory stays bounded.
pub const MAX_SETTLE_POSITIONS: i64 = 256;

/// Most table rows one step of the replay at open takes (whole log rows,
/// at least one): recovery is alone on the database, so it goes in fewer,
/// larger steps, and each account's pages are written once a step instead
/// of once every [`MAX_SETTLE_POSITIONS`] log rows (about 130,000 debits,
/// four rows each; measured: peak RSS 834 MiB against 613 MiB with the
/// live step, about 450 bytes a row, and 1,000,000 debits over 10,000
/// accounts replayed in 21 s instead of 80 s).
pub const REPLAY_STEP_ROWS: usize = 524_288;

/// The largest replay step an operator may set (`--replay-step-rows`):
/// about 7.5 GiB of memory.
pub const MAX_REPLAY_STEP_ROWS: usize = 16_777_216;

/// How much of the log one step of [`settle`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The materializer's: at most [`MAX_SETTLE_POSITIONS`] log rows.
    Live,
    /// The replay at open's: whole log rows until they hold `rows` table
    /// rows ([`REPLAY_STEP_ROWS`]), at least one log row.
    Replay { rows: usize },
}

/// One table's rows in a log row: its index in [`WRITE_ORDER`], the values.
type TableRows = (u8, Vec<Vec<Val>>);
/// One log row: its format, then each table's rows.
type Encoded = (u8, Vec<TableRows>);

/// A group's rows as one log row (entries numbered from `first_entry_id`).
pub fn encode(rows: &Rows, first_entry_id: i64) -> Vec<u8> {
    let tables: Vec<TableRows> =
        table_rows(rows, first_entry_id).into_iter().map(|(table, vals)| (index_of(table), vals)).collect();
    postcard::to_stdvec(&(LOG_FORMAT, tables)).expect("values serialize")
}

fn index_of(table: &Table) -> u8 {
    WRITE_ORDER.iter().position(|t| std::ptr::eq(*t, table)).expect("a written table is in WRITE_ORDER") as u8
}

fn decode(position: i64, bytes: &[u8]) -> Result<Vec<TableRows>, String> {
    let (format, tables): Encoded =
        postcard::from_bytes(bytes).map_err(|e| format!("log row {position} does not decode: {e}"))?;
    if format != LOG_FORMAT {
        return Err(format!("log row {position} has format {format}; this binary reads {LOG_FORMAT}"));
    }
    if let Some((i, _)) = tables.iter().find(|(i, _)| usize::from(*i) >= WRITE_ORDER.len()) {
        return Err(format!("log row {position} names table {i}, which does not exist"));
    }
    Ok(tables)
}

/// Rows of many log rows, per table in the order they were logged; merged
/// by key when written (one sort per table, no key copied).
struct Merged {
    /// Per table of [`WRITE_ORDER`]: each row with the position it came in.
    tables: Vec<Vec<(i64, Vec<Val>)>>,
}

impl Merged {
    fn new() -> Merged {
        Merged { tables: (0..WRITE_ORDER.len()).map(|_| Vec::new()).collect() }
    }

    fn add(&mut self, position: i64, index: u8, rows: Vec<Vec<Val>>) -> Result<(), String> {
        let table = WRITE_ORDER[usize::from(index)];
        if let Some(row) = rows.iter().find(|row| row.len() != table.cols.len()) {
            return Err(format!("log row {position}: a row of {} has {} values", table.name, row.len()));
        }
        self.tables[usize::from(index)].extend(rows.into_iter().map(|row| (position, row)));
        Ok(())
    }

    /// Sorts every table's rows by key (stably: a key's versions stay in
    /// log order) and folds each key's versions into one: the last wins,
    /// counters add up, and a second row of an append-only table is refused.
    fn merge(&mut self) -> Result<(), String> {
        for (table, rows) in WRITE_ORDER.iter().zip(&mut self.tables) {
            let keys = table.key.len();
            rows.sort_by(|(_, a), (_, b)| a[..keys].cmp(&b[..keys]));
            let mut folded: Vec<(i64, Vec<Val>)> = Vec::with_capacity(rows.len());
            for (position, row) in rows.drain(..) {
                match folded.last_mut() {
                    Some((_, old)) if old[..keys] == row[..keys] => {
                        if append_only(table) {
                            return Err(format!(
                                "log row {position}: a second row of {} with key {:?}",
                                table.name,
                                &row[..keys]
                            ));
                        }
                        if table.is_additive() {
                            for (o, n) in old.iter_mut().zip(row).skip(keys) {
                                *o = add_counters(table, o, n)?;
                            }
                        } else {
                            *old = row;
                        }
                    }
                    _ => folded.push((position, row)),
                }
            }
            *rows = folded;
        }
        Ok(())
    }

    /// Writes every table, in [`WRITE_ORDER`], each row once (after
    /// [`Merged::merge`]).
    fn write(&self, conn: &Connection) -> rusqlite::Result<()> {
        for (table, rows) in WRITE_ORDER.iter().zip(&self.tables) {
            if rows.is_empty() {
                continue;
            }
            let sql = if append_only(table) { table.insert() } else { table.upsert() };
            let mut stmt = conn.prepare_cached(sql)?;
            for (_, vals) in rows {
                stmt.execute(rusqlite::params_from_iter(vals))?;
            }
        }
        Ok(())
    }
}

fn add_counters(table: &Table, old: &Val, new: Val) -> Result<Val, String> {
    match (old, new) {
        (Val::Int(a), Val::Int(b)) => {
            a.checked_add(b).map(Val::Int).ok_or_else(|| format!("a counter of {} overflows", table.name))
        }
        (a, b) => Err(format!("a counter of {} is not a number: {a:?}, {b:?}", table.name)),
    }
}

/// The log's file beside the database: `<database>-log`.
pub fn path_of(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push("-log");
    PathBuf::from(name)
}

/// The log file's schema: the rows, and one row of state (the last
/// position, the writer that appended it, the last entry id drawn).
const LOG_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log (
    position INTEGER PRIMARY KEY,
    rows BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS log_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    head INTEGER NOT NULL,
    owner TEXT NOT NULL,
    last_entry_id INTEGER NOT NULL
);
";

/// Creates the log file's tables if they are missing and takes over what
/// an older version of this binary logged in the database itself (table
/// `ledger_log`, schema version 11): its rows are copied into the log
/// file, then its table dropped, each step safe to repeat after a crash.
pub fn prepare(main: &Connection, log: &Connection) -> rusqlite::Result<()> {
    log.execute_batch("BEGIN IMMEDIATE")?;
    let prepared = (|| {
        log.execute_batch(LOG_SCHEMA)?;
        let (mark, last_entry_id): (i64, i64) = main.query_row(
            "SELECT materialized, (SELECT value FROM sequences WHERE name = 'entry') FROM ledger_log_state",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        log.execute(
            "INSERT OR IGNORE INTO log_state (id, head, owner, last_entry_id) VALUES (1, ?1, '', ?2)",
            rusqlite::params![mark, last_entry_id],
        )?;
        let legacy: bool = main.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'ledger_log'",
            [],
            |r| r.get(0),
        )?;
        if legacy {
            let rows = super::rows::all(
                main,
                "SELECT position, rows FROM ledger_log WHERE position > ?1 ORDER BY position",
                [mark],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
            )?;
            let mut insert = log.prepare("INSERT OR IGNORE INTO log (position, rows) VALUES (?1, ?2)")?;
            for (position, bytes) in &rows {
                insert.execute(rusqlite::params![position, bytes])?;
            }
            let head = rows.last().map_or(mark, |(p, _)| *p);
            log.execute(
                "UPDATE log_state SET head = max(head, ?1), last_entry_id = max(last_entry_id, ?2) WHERE id = 1",
                rusqlite::params![head, last_entry_id],
            )?;
        }
        log.execute_batch("COMMIT")?;
        if legacy {
            main.execute_batch("DROP TABLE ledger_log")?;
        }
        Ok(())
    })();
    if prepared.is_err() {
        let _ = log.execute_batch("ROLLBACK");
    }
    prepared
}

/// The writer's side of the log: where it left it, and the tail it keeps.
pub struct Log {
    /// This writer's id in `log_state.owner`, new at each open.
    owner: String,
    /// The log's last position as this writer last saw it (its own
    /// append, or the head it found when it replayed another's).
    head: i64,
    /// The owner `log_state` named then.
    seen: String,
    pub tail: Tail,
}

fn new_owner() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The head of the log and the writer that appended it.
fn read_head(log: &Connection) -> rusqlite::Result<(i64, String)> {
    log.prepare_cached("SELECT head, owner FROM log_state WHERE id = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
}

/// The last materialized position, in the database.
pub fn read_mark(main: &Connection) -> rusqlite::Result<i64> {
    main.prepare_cached("SELECT materialized FROM ledger_log_state WHERE id = 1")?.query_row([], |r| r.get(0))
}

impl Log {
    /// Replays the log into the tables (recovery at open) in steps of at
    /// most `step_rows` table rows ([`REPLAY_STEP_ROWS`]) and returns the
    /// writer that carries on from its head, keeping at most `max_warm`
    /// accounts warm in its tail.
    pub fn open(
        main: &Connection,
        log: &Connection,
        max_warm: usize,
        step_rows: usize,
    ) -> Result<Log, LedgerError> {
        let (head, seen) = read_head(log).map_err(sql_error)?;
        settle(main, log, head, Step::Replay { rows: step_rows })?;
        Ok(Log { owner: new_owner(), head, seen, tail: Tail::keeping(max_warm) })
    }

    /// The last position appended (what an acknowledged operation is in).
    pub fn head(&self) -> i64 {
        self.head
    }

    /// Whether the log is as this writer left it, so its tail is the log's.
    pub fn is_current(&self, log: &Connection) -> rusqlite::Result<bool> {
        let (head, owner) = read_head(log)?;
        Ok(head == self.head && owner == self.seen)
    }

    /// In the writer's open transaction on the log: appends a group's rows
    /// as the next position, if the log is still as this writer left it
    /// (`false` if another process appended since). [`Log::appended`]
    /// follows its commit.
    pub fn append(&self, log: &Connection, rows: &Rows) -> rusqlite::Result<bool> {
        let n = rows.entries.len() as i64;
        let last: Option<i64> = log
            .prepare_cached(
                "UPDATE log_state SET head = head + 1, owner = ?1, last_entry_id = last_entry_id + ?2 \
                 WHERE id = 1 AND head = ?3 AND owner = ?4 RETURNING last_entry_id",
            )?
            .query_row(rusqlite::params![self.owner, n, self.head, self.seen], |r| r.get(0))
            .optional()?;
        let Some(last) = last else { return Ok(false) };
        log.prepare_cached("INSERT INTO log (position, rows) VALUES (?1, ?2)")?
            .execute(rusqlite::params![self.head + 1, encode(rows, last - n + 1)])?;
        Ok(true)
    }

    /// After the commit of [`Log::append`]: the group is acknowledged.
    pub fn appended(&mut self, rows: Rows, ops: usize) {
        self.head += 1;
        self.seen.clone_from(&self.owner);
        self.tail.absorb(rows, ops, self.head);
    }

    /// Another process appended: its rows (and everything before them) are
    /// materialized, this writer's tail is dropped (the tables have it
    /// all) and it carries on from the head it found.
    pub fn take_over(&mut self, main: &Connection, log: &Connection) -> Result<i64, LedgerError> {
        let (head, seen) = read_head(log).map_err(sql_error)?;
        let mark = settle(main, log, head, Step::Live)?;
        self.head = head;
        self.seen = seen;
        self.tail.clear();
        Ok(mark)
    }
}

/// Materializes the log up to `target` at least (in steps as `step` says,
/// each its own transaction on the database) and returns the mark.
/// Outside any transaction. Any number of connections, of any process,
/// may run it at once: each step reads and moves the mark under the
/// database's write lock, so a position is materialized once. On an error
/// nothing of the failed step is written.
pub fn settle(main: &Connection, log: &Connection, target: i64, step: Step) -> Result<i64, LedgerError> {
    loop {
        let (mark, head) = settle_step(main, log, step)?;
        if mark >= target.min(head) {
            return Ok(mark);
        }
    }
}

/// One transaction of [`settle`]: the new mark and the log's head then.
pub fn settle_step(main: &Connection, log: &Connection, step: Step) -> Result<(i64, i64), LedgerError> {
    main.prepare_cached("BEGIN IMMEDIATE").and_then(|mut s| s.execute([])).map_err(sql_error)?;
    match materialize(main, log, step) {
        Ok(Some(moved)) => {
            main.prepare_cached("COMMIT").and_then(|mut s| s.execute([])).map_err(sql_error)?;
            Ok(moved)
        }
        Ok(None) => {
            let _ = main.execute_batch("ROLLBACK");
            let mark = read_mark(main).map_err(sql_error)?;
            Ok((mark, read_head(log).map_err(sql_error)?.0.max(mark)))
        }
        Err(e) => {
            let _ = main.execute_batch("ROLLBACK");
            let _ = log.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// In the database's write transaction: the next step's rows, merged and
/// written, and the mark moved (`None` if nothing is after the mark).
fn materialize(main: &Connection, log: &Connection, step: Step) -> Result<Option<(i64, i64)>, LedgerError> {
    let mark = read_mark(main).map_err(sql_error)?;
    log.prepare_cached("BEGIN").and_then(|mut s| s.execute([])).map_err(sql_error)?;
    let read = read_step(log, mark, step);
    log.prepare_cached("COMMIT").and_then(|mut s| s.execute([])).map_err(sql_error)?;
    let Some((upto, head, last_entry_id, mut merged)) = read? else { return Ok(None) };
    merged.merge().map_err(LedgerError::Internal)?;
    merged.write(main).map_err(sql_error)?;
    main.prepare_cached("UPDATE ledger_log_state SET materialized = ?1 WHERE id = 1")
        .and_then(|mut s| s.execute([upto]))
        .map_err(sql_error)?;
    main.prepare_cached("UPDATE sequences SET value = max(value, ?1) WHERE name = 'entry'")
        .and_then(|mut s| s.execute([last_entry_id]))
        .map_err(sql_error)?;
    Ok(Some((upto, head)))
}

/// In a read transaction of the log: the rows after `mark`, as many as
/// `step` takes, checked contiguous and decoded; with the last position
/// taken, the log's head and its last entry id.
fn read_step(
    log: &Connection,
    mark: i64,
    step: Step,
) -> Result<Option<(i64, i64, i64, Merged)>, LedgerError> {
    let (head, last_entry_id): (i64, i64) = log
        .prepare_cached("SELECT head, last_entry_id FROM log_state WHERE id = 1")
        .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(sql_error)?;
    if head <= mark {
        return Ok(None);
    }
    let (mut upto, most_rows) = match step {
        Step::Live => (head.min(mark + MAX_SETTLE_POSITIONS), usize::MAX),
        Step::Replay { rows } => (head, rows),
    };
    let mut taken = 0;
    let mut merged = Merged::new();
    let mut expected = mark + 1;
    let mut stmt = log
        .prepare_cached(
            "SELECT position, rows FROM log WHERE position > ?1 AND position <= ?2 ORDER BY position",
        )
        .map_err(sql_error)?;
    let mut found = stmt.query([mark, upto]).map_err(sql_error)?;
    while let Some(r) = found.next().map_err(sql_error)? {
        let position: i64 = r.get(0).map_err(sql_error)?;
        if position != expected {
            return Err(LedgerError::Internal(format!(
                "the log skips from position {} to {position}",
                expected - 1
            )));
        }
        expected += 1;
        let bytes =
            r.get_ref(1).map_err(sql_error)?.as_blob().map_err(|e| LedgerError::Internal(e.to_string()))?;
        for (index, rows) in decode(position, bytes).map_err(LedgerError::Internal)? {
            taken += rows.len();
            merged.add(position, index, rows).map_err(LedgerError::Internal)?;
        }
        if taken >= most_rows {
            upto = position;
            break;
        }
    }
    if expected != upto + 1 {
        return Err(LedgerError::Internal(format!(
            "the log ends at {} short of {upto}: its file is damaged or not this database's",
            expected - 1
        )));
    }
    Ok(Some((upto, head, last_entry_id, merged)))
}

/// In the writer's transaction on the log: deletes what is materialized
/// (up to `mark`). Rows at or before the mark are never read again, so a
/// crash that leaves some is harmless.
pub fn trim(log: &Connection, mark: i64) -> rusqlite::Result<()> {
    log.prepare_cached("DELETE FROM log WHERE position <= ?1")?.execute([mark])?;
    Ok(())
}

/// Positions waiting in the log after the mark (for tests and `bench`).
pub fn pending(main: &Connection, log: &Connection) -> rusqlite::Result<i64> {
    let mark = read_mark(main)?;
    log.query_row("SELECT count(*) FROM log WHERE position > ?1", [mark], |r| r.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::columns::{ACCOUNTS, ENTRIES, USAGE};

    fn index(table: &Table) -> u8 {
        index_of(table)
    }

    /// A row of `table` whose key is `key` and every other value `v`.
    fn row(table: &Table, key: &[&str], v: i64) -> Vec<Val> {
        let mut vals: Vec<Val> = key.iter().map(|k| Val::Text(k.to_string())).collect();
        vals.resize(table.cols.len(), Val::Int(v));
        vals
    }

    /// A replay step takes whole log rows until it holds its most table
    /// rows (at least one log row); a live step takes its positions.
    #[test]
    fn a_replay_step_stops_at_its_most_rows_on_a_log_row_boundary() {
        let log = Connection::open_in_memory().unwrap();
        log.execute_batch(LOG_SCHEMA).unwrap();
        log.execute("INSERT INTO log_state (id, head, owner, last_entry_id) VALUES (1, 3, 'w', 0)", [])
            .unwrap();
        let acc = index(&ACCOUNTS);
        for position in 1..=3_i64 {
            let rows = vec![
                row(&ACCOUNTS, &[&format!("a{position}")], 1),
                row(&ACCOUNTS, &[&format!("b{position}")], 1),
            ];
            let bytes = postcard::to_stdvec(&(LOG_FORMAT, vec![(acc, rows)])).unwrap();
            log.execute(
                "INSERT INTO log (position, rows) VALUES (?1, ?2)",
                rusqlite::params![position, bytes],
            )
            .unwrap();
        }
        let upto = |step: Step| {
            let (upto, head, _, merged) = read_step(&log, 0, step).unwrap().expect("rows after the mark");
            assert_eq!(head, 3);
            let taken: usize = merged.tables.iter().map(Vec::len).sum();
            assert_eq!(taken as i64, 2 * upto, "the rows of every log row taken, and only those");
            upto
        };
        assert_eq!(
            upto(Step::Replay { rows: 4 }),
            2,
            "at the edge: the log row that reaches it ends the step"
        );
        assert_eq!(upto(Step::Replay { rows: 5 }), 3, "one row short: the next log row is taken whole");
        assert_eq!(upto(Step::Replay { rows: 1 }), 1, "at least one log row");
        assert_eq!(upto(Step::Replay { rows: usize::MAX }), 3, "never past the head");
        assert_eq!(upto(Step::Live), 3);
        assert!(read_step(&log, 3, Step::Live).unwrap().is_none(), "nothing after the head");
    }

    #[test]
    fn a_key_folds_to_its_last_version_and_counters_add_up() {
        let mut m = Merged::new();
        let (acc, usage) = (index(&ACCOUNTS), index(&USAGE));
        m.add(1, acc, vec![row(&ACCOUNTS, &["b"], 1), row(&ACCOUNTS, &["a"], 2)]).unwrap();
        m.add(2, acc, vec![row(&ACCOUNTS, &["b"], 3)]).unwrap();
        m.add(1, usage, vec![row(&USAGE, &["a", "2026-11"], 5)]).unwrap();
        m.add(2, usage, vec![row(&USAGE, &["a", "2026-11"], 7), row(&USAGE, &["a", "2026-12"], 1)]).unwrap();
        m.merge().unwrap();
        let rows = |i: u8| m.tables[usize::from(i)].iter().map(|(_, r)| r.clone()).collect::<Vec<_>>();
        assert_eq!(
            rows(acc),
            vec![row(&ACCOUNTS, &["a"], 2), row(&ACCOUNTS, &["b"], 3)],
            "sorted, last wins"
        );
        assert_eq!(rows(usage), vec![row(&USAGE, &["a", "2026-11"], 12), row(&USAGE, &["a", "2026-12"], 1)]);
    }

    #[test]
    fn a_second_row_of_an_append_only_table_or_a_short_row_is_refused() {
        let mut m = Merged::new();
        let e = index(&ENTRIES);
        m.add(3, e, vec![row(&ENTRIES, &["a", "1"], 0)]).unwrap();
        m.add(4, e, vec![row(&ENTRIES, &["a", "1"], 0)]).unwrap();
        let err = m.merge().unwrap_err();
        assert!(err.contains("log row 4: a second row of entries"), "{err}");
        let short = m.add(5, e, vec![vec![Val::Null]]).unwrap_err();
        assert!(short.contains("log row 5: a row of entries has 1 values"), "{short}");
    }

    #[test]
    fn a_counter_that_would_overflow_is_refused() {
        let mut m = Merged::new();
        let usage = index(&USAGE);
        m.add(1, usage, vec![row(&USAGE, &["a", "2026-11"], i64::MAX)]).unwrap();
        m.add(2, usage, vec![row(&USAGE, &["a", "2026-11"], 1)]).unwrap();
        assert!(m.merge().unwrap_err().contains("overflows"));
    }
}
