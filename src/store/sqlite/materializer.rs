//! The materializer thread: writes the log into the tables, off the
//! writer's path, and runs the writes that are not operations.
//!
//! It owns the database's write connection (and a read connection of the
//! log file). It materializes (`log::settle_step`, up to
//! [`super::MAX_SETTLE_POSITIONS`] log rows a transaction, publishing the
//! mark after each) when the writer's tail holds [`Tuning::batch_ops`]
//! operations, after [`Tuning::idle_settle`] without a new group, when a
//! reader or the writer waits for it, before a job that reads the ledger's
//! tables (account creation, webhook dispatch) and at close. A failed
//! materialization is retried on the next of these, and when it is the
//! idle one, only after a backoff that doubles up to [`MAX_BACKOFF`].
//!
//! Jobs (account creation, tokens, webhooks) run here in one transaction,
//! each in its own savepoint, so they never wait for a materialization
//! that holds the database's write lock.
//!
//! The thread runs at nice [`MATERIALIZER_NICE`]: on a small machine it
//! yields the CPU to the writer and the requests, and the longer it waits
//! the larger (and cheaper per operation) its batches; the writer's limit
//! on its tail bounds how far it may fall behind.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{Shared, Tuning, log, publish_materialized, sql_error};
use crate::ledger::LedgerError;

/// The longest wait before an idle materialization that failed is tried
/// again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The first wait after a failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(5);

/// Most chores taken at once.
const MAX_CHORES: usize = 256;

/// What waits for the materializer.
pub enum Chore {
    /// The writer committed a group.
    Appended,
    /// A reader or the writer waits for everything to be materialized.
    Nudge,
    /// Materialize everything acknowledged now, and say when it is done.
    Settle(oneshot::Sender<Result<(), LedgerError>>),
    /// Other work (with whether it reads the ledger's tables, so the log is
    /// materialized first).
    Job(Box<dyn Job>, bool),
}

/// Work queued for the materializer, its result kept until the commit.
pub trait Job: Send {
    /// Runs the work; `true` if it succeeded and its savepoint stays.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the transaction's fate is known.
    fn finish(self: Box<Self>, commit: Result<(), LedgerError>);
}

pub struct TypedJob<T, F> {
    pub work: Option<F>,
    pub result: Option<Result<T, LedgerError>>,
    pub reply: oneshot::Sender<Result<T, LedgerError>>,
}

impl<T, F> Job for TypedJob<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, LedgerError> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let work = self.work.take().expect("a job runs once");
        let result = catch_unwind(AssertUnwindSafe(|| work(conn))).unwrap_or_else(|_| {
            Err(LedgerError::Internal("an operation panicked; it was rolled back".into()))
        });
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, commit: Result<(), LedgerError>) {
        let answer = match (commit, self.result) {
            (Ok(()), Some(result)) => result,
            (Err(e), _) => Err(e),
            (Ok(()), None) => Err(LedgerError::Internal("operation was never run".into())),
        };
        // The caller may have gone away (a cancelled request): nothing to do.
        let _ = self.reply.send(answer);
    }
}

pub struct Materializer {
    /// The database's write connection.
    pub main: Connection,
    /// A read connection of the log file.
    pub log_conn: Connection,
    pub shared: Arc<Shared>,
    pub tuning: Tuning,
    /// After a failure: no idle retry before this instant.
    pub retry_at: Option<(Instant, Duration)>,
}

/// The materializer's niceness: under load it yields the CPU to the writer
/// and to the requests, and works in larger batches the longer it waits.
pub const MATERIALIZER_NICE: i32 = 10;

/// Lowers this thread's CPU priority (Linux gives each thread its own nice
/// value); elsewhere, or if refused, it runs at the process's priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority on this thread's own id, with no pointers.
    unsafe {
        let _ = libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, MATERIALIZER_NICE);
    }
}

impl Materializer {
    pub fn run(mut self, mut chores: mpsc::Receiver<Chore>) {
        lower_priority();
        let idle = tokio::runtime::Builder::new_current_thread().enable_time().build();
        let mut taken = Vec::with_capacity(MAX_CHORES);
        loop {
            let waiting = match (&idle, self.tuning.idle_settle) {
                (Ok(rt), Some(wait)) if self.pending() => rt.block_on(async {
                    tokio::time::timeout(wait, chores.recv_many(&mut taken, MAX_CHORES)).await
                }),
                _ => Ok(chores.blocking_recv_many(&mut taken, MAX_CHORES)),
            };
            match waiting {
                Err(_) => {
                    // No group for a while: a good time to materialize.
                    if self.retry_at.is_none_or(|(at, _)| Instant::now() >= at) {
                        let _ = self.settle();
                    }
                }
                Ok(0) => break,
                Ok(_) => self.serve(&mut taken),
            }
        }
        if self.tuning.settle_on_close && self.settle().is_ok() {
            // The writer has stopped: what is materialized leaves the log.
            let mark = self.shared.marks.lock().expect("marks lock").materialized;
            let _ = log::trim(&self.log_conn, mark);
        }
    }

    /// Whether anything acknowledged is not materialized yet.
    fn pending(&self) -> bool {
        let marks = self.shared.marks.lock().expect("marks lock");
        marks.materialized < marks.acked
    }

    fn serve(&mut self, taken: &mut Vec<Chore>) {
        let (mut jobs, mut settled_jobs, mut settles, mut now) = (Vec::new(), false, Vec::new(), false);
        for chore in taken.drain(..) {
            match chore {
                Chore::Appended => {}
                Chore::Nudge => now = true,
                Chore::Settle(reply) => settles.push(reply),
                Chore::Job(job, settled) => {
                    settled_jobs |= settled;
                    jobs.push(job);
                }
            }
        }
        now |= self.shared.wanted.swap(false, Ordering::SeqCst);
        let full = self.shared.marks.lock().expect("marks lock").tail_ops >= self.tuning.batch_ops
            && self.retry_at.is_none_or(|(at, _)| Instant::now() >= at);
        let settled = if now || full || settled_jobs || !settles.is_empty() { self.settle() } else { Ok(()) };
        for reply in settles {
            let _ = reply.send(settled.clone());
        }
        if !jobs.is_empty() {
            match (settled_jobs, settled) {
                (true, Err(e)) => jobs.into_iter().for_each(|job| job.finish(Err(e.clone()))),
                _ => run_jobs(&self.main, jobs),
            }
        }
    }

    /// Materializes everything acknowledged so far, publishing the mark
    /// after each step.
    fn settle(&mut self) -> Result<(), LedgerError> {
        let target = self.shared.marks.lock().expect("marks lock").acked;
        let settled = catch_unwind(AssertUnwindSafe(|| {
            loop {
                let (mark, head) = log::settle_step(&self.main, &self.log_conn, log::Step::Live)?;
                publish_materialized(&self.shared, mark);
                if mark >= target.min(head) {
                    return Ok(());
                }
            }
        }))
        .unwrap_or_else(|_| {
            let _ = self.main.execute_batch("ROLLBACK");
            Err(LedgerError::Internal("materializing the log panicked; it was rolled back".into()))
        });
        self.shared.groups.settles.fetch_add(1, Ordering::Relaxed);
        match &settled {
            Ok(()) => {
                self.retry_at = None;
                // The log file's WAL is copied back here, off the writer's
                // path; a failure is only a longer WAL.
                let _ = self.log_conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            }
            Err(e) => {
                let wait = self.retry_at.map_or(FIRST_BACKOFF, |(_, w)| (w * 2).min(MAX_BACKOFF));
                self.retry_at = Some((Instant::now() + wait, wait));
                let mut marks = self.shared.marks.lock().expect("marks lock");
                marks.failures += 1;
                marks.failure = e.to_string();
                drop(marks);
                self.shared.moved.notify_all();
            }
        }
        settled
    }
}

/// Runs jobs in one transaction, each in its own savepoint.
fn run_jobs(conn: &Connection, mut jobs: Vec<Box<dyn Job>>) {
    let mut run = || -> rusqlite::Result<()> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        for job in jobs.iter_mut() {
            conn.prepare_cached("SAVEPOINT job")?.execute([])?;
            if !job.run(conn) {
                conn.prepare_cached("ROLLBACK TO job")?.execute([])?;
            }
            conn.prepare_cached("RELEASE job")?.execute([])?;
        }
        conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(())
    };
    let commit = run().map_err(sql_error);
    if commit.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    for job in jobs {
        job.finish(commit.clone());
    }
}
