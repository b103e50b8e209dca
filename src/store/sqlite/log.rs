//! The log: the durable record of every group of operations, one row per
//! group, and its materialization into the tables in large batches.
//!
//! A group commits one append to `ledger_log` (its rows, every table's,
//! encoded with postcard) and the `entry` sequence it drew ids from; the
//! writer keeps the last version of each row it appended in its memory
//! (`tail.rs`), so later groups load what was acknowledged. Every so often
//! (when the tail is long, when the writer is idle, when a reader or a job
//! needs the tables) [`Log::settle`] reads the log after the last
//! materialized position, merges each table's rows (the last version of a
//! keyed row wins, usage counters add up), writes them sorted by key, so
//! each page is written once per batch rather than once per operation, moves
//! the mark and deletes what it materialized, all in one transaction.
//!
//! Recovery is the same call at open: the tables plus the log after the
//! mark are exactly what was acknowledged, whoever wrote it (a crashed
//! server, a CLI beside it). Writers of other processes are told apart by
//! `owner`: a writer appends only while the log's state is the one it left
//! (its owner id, its last position); otherwise it settles first, which
//! takes ownership and drops a tail that another writer has replayed.

use std::collections::BTreeMap;

use rusqlite::Connection;

use super::sql_error;
use super::tail::Tail;
use crate::ledger::LedgerError;
use crate::ledger::batch::Rows;
use crate::store::columns::{Table, Val};
use crate::store::pipeline::{WRITE_ORDER, append_only, table_rows};

/// The encoding of a log row; a row of another version is refused.
const LOG_FORMAT: u8 = 1;

/// Most log rows materialized in one transaction (at most
/// [`super::MAX_GROUP_OPS`] operations each), so recovery of a long log
/// goes in steps, each a commit, and its memory stays bounded.
pub const MAX_SETTLE_POSITIONS: i64 = 256;

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

/// Rows of many log rows, merged per table by key.
struct Merged {
    tables: Vec<BTreeMap<Vec<Val>, Vec<Val>>>,
}

impl Merged {
    fn new() -> Merged {
        Merged { tables: (0..WRITE_ORDER.len()).map(|_| BTreeMap::new()).collect() }
    }

    fn add(&mut self, position: i64, index: u8, rows: Vec<Vec<Val>>) -> Result<(), String> {
        let table = WRITE_ORDER[usize::from(index)];
        let keys = table.key.len();
        let merged = &mut self.tables[usize::from(index)];
        for row in rows {
            if row.len() != table.cols.len() {
                return Err(format!("log row {position}: a row of {} has {} values", table.name, row.len()));
            }
            let key = row[..keys].to_vec();
            match merged.get_mut(&key) {
                None => {
                    merged.insert(key, row);
                }
                Some(_) if append_only(table) => {
                    return Err(format!(
                        "log row {position}: a second row of {} with key {key:?}",
                        table.name
                    ));
                }
                Some(old) if table.is_additive() => {
                    for (o, n) in old.iter_mut().zip(row).skip(keys) {
                        *o = add_counters(table, o, n)?;
                    }
                }
                Some(old) => *old = row,
            }
        }
        Ok(())
    }

    /// Writes every table, in [`WRITE_ORDER`], each row once.
    fn write(&self, conn: &Connection) -> rusqlite::Result<()> {
        for (table, rows) in WRITE_ORDER.iter().zip(&self.tables) {
            if rows.is_empty() {
                continue;
            }
            let sql = if append_only(table) { table.insert() } else { table.upsert() };
            let mut stmt = conn.prepare_cached(sql)?;
            for vals in rows.values() {
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

/// The log's state as the writer left it, and the tail it keeps.
pub struct Log {
    /// This writer's id in `ledger_log_state.owner`, new at each open.
    owner: String,
    /// The last position this writer appended or materialized.
    head: i64,
    /// The last materialized position.
    materialized: i64,
    pub tail: Tail,
}

/// What `ledger_log_state` and `ledger_log` say now.
struct Mark {
    materialized: i64,
    owner: String,
    last: Option<i64>,
}

fn read_mark(conn: &Connection) -> rusqlite::Result<Mark> {
    conn.prepare_cached(
        "SELECT materialized, owner, (SELECT max(position) FROM ledger_log) FROM ledger_log_state WHERE id = 1",
    )?
    .query_row([], |r| Ok(Mark { materialized: r.get(0)?, owner: r.get(1)?, last: r.get(2)? }))
}

fn new_owner() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Log {
    /// A writer that has seen nothing yet: its first [`Log::settle`]
    /// replays whatever the log holds.
    pub fn new() -> Log {
        Log { owner: new_owner(), head: -1, materialized: -1, tail: Tail::default() }
    }

    /// The last position appended (what an acknowledged operation is in).
    pub fn head(&self) -> i64 {
        self.head
    }

    pub fn materialized(&self) -> i64 {
        self.materialized
    }

    /// In the writer's open transaction: whether the log is as this writer
    /// left it, so its tail is the log's and it may append.
    pub fn is_current(&self, conn: &Connection) -> rusqlite::Result<bool> {
        let mark = read_mark(conn)?;
        Ok(mark.owner == self.owner
            && mark.materialized == self.materialized
            && mark.last.unwrap_or(mark.materialized) == self.head)
    }

    /// In the writer's open transaction: appends a committed group's rows
    /// as the next position. [`Log::appended`] follows its commit.
    pub fn append(&self, conn: &Connection, rows: &Rows) -> rusqlite::Result<()> {
        let mut first = 0;
        let n = rows.entries.len() as i64;
        if n > 0 {
            let last: i64 = conn
                .prepare_cached(
                    "UPDATE sequences SET value = value + ?1 WHERE name = 'entry' RETURNING value",
                )?
                .query_row([n], |r| r.get(0))?;
            first = last - n + 1;
        }
        conn.prepare_cached("INSERT INTO ledger_log (position, rows) VALUES (?1, ?2)")?
            .execute(rusqlite::params![self.head + 1, encode(rows, first)])?;
        Ok(())
    }

    /// After the commit of [`Log::append`]: the group is acknowledged.
    pub fn appended(&mut self, rows: &Rows, ops: usize) {
        self.head += 1;
        self.tail.absorb(rows, ops);
    }

    /// Materializes the whole log into the tables (in steps of at most
    /// [`MAX_SETTLE_POSITIONS`] positions, each its own transaction) and
    /// takes ownership of it; the tail is then empty. Outside any
    /// transaction. On an error the tail is kept: nothing was lost, and the
    /// next settle starts again from the mark.
    pub fn settle(&mut self, conn: &Connection) -> Result<(), LedgerError> {
        loop {
            match self.settle_step(conn) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    return Err(e);
                }
            }
        }
    }

    /// One transaction of [`Log::settle`]; `true` once the log is empty.
    fn settle_step(&mut self, conn: &Connection) -> Result<bool, LedgerError> {
        conn.prepare_cached("BEGIN IMMEDIATE").and_then(|mut s| s.execute([])).map_err(sql_error)?;
        let mark = read_mark(conn).map_err(sql_error)?;
        let upto = mark.last.unwrap_or(mark.materialized).min(mark.materialized + MAX_SETTLE_POSITIONS);
        let mut merged = Merged::new();
        let mut expected = mark.materialized + 1;
        {
            let mut stmt = conn
                .prepare_cached("SELECT position, rows FROM ledger_log WHERE position > ?1 AND position <= ?2 ORDER BY position")
                .map_err(sql_error)?;
            let mut found = stmt.query([mark.materialized, upto]).map_err(sql_error)?;
            while let Some(r) = found.next().map_err(sql_error)? {
                let position: i64 = r.get(0).map_err(sql_error)?;
                if position != expected {
                    return Err(LedgerError::Internal(format!(
                        "the log skips from position {} to {position}",
                        expected - 1
                    )));
                }
                expected += 1;
                let bytes: Vec<u8> = r.get(1).map_err(sql_error)?;
                for (index, rows) in decode(position, &bytes).map_err(LedgerError::Internal)? {
                    merged.add(position, index, rows).map_err(LedgerError::Internal)?;
                }
            }
        }
        if expected != upto + 1 {
            return Err(LedgerError::Internal(format!("the log ends at {} short of {upto}", expected - 1)));
        }
        merged.write(conn).map_err(sql_error)?;
        conn.prepare_cached("UPDATE ledger_log_state SET materialized = ?1, owner = ?2 WHERE id = 1")
            .and_then(|mut s| s.execute(rusqlite::params![upto, self.owner]))
            .map_err(sql_error)?;
        conn.prepare_cached("DELETE FROM ledger_log WHERE position <= ?1")
            .and_then(|mut s| s.execute([upto]))
            .map_err(sql_error)?;
        conn.prepare_cached("COMMIT").and_then(|mut s| s.execute([])).map_err(sql_error)?;
        let done = mark.last.is_none_or(|last| upto >= last);
        self.materialized = upto;
        if done {
            self.head = upto;
            self.tail.clear();
        }
        Ok(done)
    }
}

/// Positions waiting in the log of the database (for tests and `bench`).
pub fn pending(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT count(*) FROM ledger_log", [], |r| r.get(0))
}
