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
        merged.merge().map_err(LedgerError::Internal)?;
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
