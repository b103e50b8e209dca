//! The writer thread: the only appender to this process's log.
//!
//! It takes what is queued (up to [`MAX_GROUP_OPS`] operations) and runs
//! it as one group of the write pipeline: the loads in one read
//! transaction of the database, with the tail laid over them (`group.rs`,
//! `tail.rs`), the operations applied in memory in arrival order, then one
//! `BEGIN IMMEDIATE` transaction of the log file that appends the group's
//! rows as one log row, one commit, and only then an answer to each
//! caller. A refused operation writes nothing by construction, so no
//! savepoints are needed. If the group fails before its commit (a database
//! error, a panic), it is rolled back and each operation runs again alone,
//! so one failure answers one request; a failed commit fails every
//! operation of the group (none was acknowledged).
//!
//! The writer never writes the tables (but for a takeover, below): the
//! materializer does (`materializer.rs`), on its own thread and
//! connection, while the writer goes on appending. Before each group the
//! writer drops from its tail what the materializer has written, and from
//! the log file the rows it no longer needs, in the append's transaction.
//! When its tail holds [`Tuning::max_tail_ops`] operations it waits for the
//! materializer, and refuses operations if the materializer fails.
//!
//! A writer appends only while the log is as it left it (its last
//! position and owner); otherwise another process appended (a CLI beside
//! a server), and it takes over: materializes the whole log itself, drops
//! its tail, and runs the group again.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{Chore, MAX_GROUP_OPS, READ_WAIT, Shared, Tuning, group, log, sql_error};
use crate::ledger::batch::{self, Wants};
use crate::ledger::{Executed, LedgerError, Operation};

pub type Answer = Result<Executed, LedgerError>;

/// An operation waiting for the writer, and where its answer goes.
pub type Queued = (Box<Operation>, oneshot::Sender<Answer>);

/// How many times a group runs again when another process's writer took
/// the log between its turns.
const MAX_TAKEOVERS: usize = 3;

pub struct Writer {
    /// The database: the groups' loads (read transactions), a takeover.
    pub main: Connection,
    /// The log file: the appends.
    pub log_conn: Connection,
    pub log: log::Log,
    /// The mark the tail was last trimmed to.
    pub trimmed: i64,
    /// Whether the log file still holds rows up to `trimmed`.
    pub trim_due: bool,
    pub shared: Arc<Shared>,
    pub tuning: Tuning,
    /// To wake the materializer.
    pub chores: mpsc::Sender<Chore>,
}

enum Failed {
    /// Rolled back: nothing of the group was written.
    Before(LedgerError),
    /// COMMIT itself failed: nothing was acknowledged.
    Committing(LedgerError),
}

impl Writer {
    pub fn run(mut self, mut queue: mpsc::Receiver<Queued>) {
        let mut taken = Vec::with_capacity(MAX_GROUP_OPS);
        while queue.blocking_recv_many(&mut taken, MAX_GROUP_OPS) > 0 {
            let (ops, replies): (Vec<Operation>, Vec<_>) =
                taken.drain(..).map(|(op, reply)| (*op, reply)).unzip();
            let answers = match self.make_room() {
                Ok(()) => self.run_ops(&ops),
                Err(e) => ops.iter().map(|_| Err(e.clone())).collect(),
            };
            let stats = &self.shared.groups;
            stats.groups.fetch_add(1, Ordering::Relaxed);
            stats.ops.fetch_add(ops.len() as u64, Ordering::Relaxed);
            self.publish();
            for (reply, answer) in replies.into_iter().zip(answers) {
                // The caller may have gone away (a cancelled request).
                let _ = reply.send(answer);
            }
            // A full queue means the materializer has work to look at anyway.
            let _ = self.chores.try_send(Chore::Appended);
        }
    }

    /// Drops from the tail what the materializer has written; waits for it
    /// while the tail is full, and refuses if it cannot catch up.
    fn make_room(&mut self) -> Result<(), LedgerError> {
        self.trim();
        if self.log.tail.ops() < self.tuning.max_tail_ops {
            return Ok(());
        }
        self.shared.wanted.store(true, Ordering::SeqCst);
        if let Err(mpsc::error::TrySendError::Closed(_)) = self.chores.try_send(Chore::Nudge) {
            return Err(LedgerError::Unavailable("the database materializer has stopped".into()));
        }
        // Each step the materializer publishes makes room: wait for as
        // many as it takes (within READ_WAIT), not for the whole tail.
        let deadline = Instant::now() + READ_WAIT;
        let failures = self.shared.marks.lock().expect("marks lock").failures;
        loop {
            let marks = self.shared.marks.lock().expect("marks lock");
            let seen = marks.materialized;
            let left = deadline.saturating_duration_since(Instant::now());
            let (marks, _) = self
                .shared
                .moved
                .wait_timeout_while(marks, left, |m| m.materialized == seen && m.failures == failures)
                .expect("marks lock");
            let failure = (marks.failures != failures).then(|| marks.failure.clone());
            drop(marks);
            self.trim();
            if self.log.tail.ops() < self.tuning.max_tail_ops {
                return Ok(());
            }
            if let Some(why) = failure {
                return Err(LedgerError::Unavailable(format!(
                    "the ledger cannot take more operations until its log is materialized: {why}"
                )));
            }
            if left.is_zero() {
                return Err(LedgerError::Unavailable(format!(
                    "the ledger's log was not materialized within {} s",
                    READ_WAIT.as_secs()
                )));
            }
        }
    }

    fn trim(&mut self) {
        let mark = self.shared.marks.lock().expect("marks lock").materialized;
        if mark > self.trimmed {
            self.log.tail.trim(mark);
            self.trimmed = mark;
            self.trim_due = true;
        }
    }

    /// Tells readers and the materializer what is acknowledged.
    fn publish(&self) {
        let mut marks = self.shared.marks.lock().expect("marks lock");
        marks.acked = marks.acked.max(self.log.head());
        marks.tail_ops = self.log.tail.ops();
        marks.warm = self.log.tail.warm();
    }

    /// Runs `ops` as one group; if it fails before its commit, each again
    /// alone.
    fn run_ops(&mut self, ops: &[Operation]) -> Vec<Answer> {
        let outcome = catch_unwind(AssertUnwindSafe(|| self.commit_group(ops))).unwrap_or_else(|_| {
            Err(Failed::Before(LedgerError::Internal("an operation panicked; it was rolled back".into())))
        });
        match outcome {
            Ok(answers) => answers,
            Err(Failed::Committing(e)) => {
                self.roll_back();
                ops.iter().map(|_| Err(e.clone())).collect()
            }
            Err(Failed::Before(e)) => {
                self.roll_back();
                if ops.len() == 1 {
                    return vec![Err(e)];
                }
                ops.iter().flat_map(|op| self.run_ops(std::slice::from_ref(op))).collect()
            }
        }
    }

    fn roll_back(&self) {
        for conn in [&self.main, &self.log_conn] {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
    }

    fn commit_group(&mut self, ops: &[Operation]) -> Result<Vec<Answer>, Failed> {
        let before = |e: rusqlite::Error| Failed::Before(sql_error(e));
        for _ in 0..MAX_TAKEOVERS {
            if !self.log.is_current(&self.log_conn).map_err(before)? {
                self.take_over().map_err(Failed::Before)?;
            }
            let main = &self.main;
            main.prepare_cached("BEGIN").and_then(|mut s| s.execute([])).map_err(before)?;
            let loaded = group::load(main, &Wants::of(ops), &mut self.log.tail).map_err(Failed::Before)?;
            main.prepare_cached("COMMIT").and_then(|mut s| s.execute([])).map_err(before)?;
            let batch = batch::apply(loaded, ops);
            if batch.rows.is_empty() {
                return Ok(batch.answers);
            }
            let conn = &self.log_conn;
            conn.prepare_cached("BEGIN IMMEDIATE").and_then(|mut s| s.execute([])).map_err(before)?;
            if self.trim_due {
                log::trim(conn, self.trimmed).map_err(before)?;
            }
            if !self.log.append(conn, &batch.rows).map_err(before)? {
                // Another process appended since the check: take over, again.
                conn.execute_batch("ROLLBACK").map_err(before)?;
                continue;
            }
            conn.prepare_cached("COMMIT")
                .and_then(|mut s| s.execute([]))
                .map_err(|e| Failed::Committing(sql_error(e)))?;
            self.trim_due = false;
            self.log.appended(batch.rows, ops.len());
            return Ok(batch.answers);
        }
        Err(Failed::Before(LedgerError::Unavailable(
            "other processes kept writing to the database; try again".into(),
        )))
    }

    /// Another process wrote since this writer's last turn: the log is
    /// materialized here, and this tail dropped.
    fn take_over(&mut self) -> Result<(), LedgerError> {
        let mark = self.log.take_over(&self.main, &self.log_conn)?;
        self.trimmed = self.trimmed.max(mark);
        self.trim_due = true;
        super::publish_materialized(&self.shared, mark);
        Ok(())
    }
}
