//! The SQLite store: one database file, a log file beside it
//! (`<database>-log`), WAL, and two threads: the writer, which appends
//! operations to the log with group commit, and the materializer, which
//! writes the log into the tables in batches.
//!
//! Every mutation is queued to the writer thread (`writer.rs`), which takes
//! whatever is waiting (up to [`MAX_GROUP_OPS`]) and runs it as one group
//! of the write pipeline (`group.rs`, [`crate::ledger::batch`]): the loads
//! from the tables with the log's tail laid over them (`tail.rs`), the
//! operations applied in memory in arrival order, one append of the
//! group's rows to the log file (`log.rs`), one commit, and only then an
//! answer to each caller. With `synchronous = FULL` (the default here) a
//! commit is on disk before anyone hears of it.
//!
//! The materializer (`materializer.rs`) owns the database's write
//! connection: it writes the log into the tables, up to
//! [`MAX_SETTLE_POSITIONS`] log rows a transaction, when the tail holds
//! [`BATCH_OPS`] operations, after [`IDLE_SETTLE`] without a new group,
//! when a reader (or the writer, at [`MAX_TAIL_OPS`]) waits, before a job
//! that reads the tables, and when the store closes; at open, whatever a
//! crashed writer left is replayed. Account creation, tokens and webhooks,
//! which are not operations of an account, are jobs it runs in its own
//! transactions, writing their tables directly. The two files have a lock
//! each, so an append never waits for a materialization.
//!
//! Reads run on separate connections (WAL readers never wait for a
//! writer), each inside a transaction so a snapshot is consistent. A read
//! of the ledger first waits (at most [`READ_WAIT`]) until everything this
//! process acknowledged before it began is materialized, so it sees exactly
//! what was acknowledged. Other processes (a CLI next to a server) take
//! turns through SQLite's locks and the busy timeout; what one writes is
//! seen by another once materialized (a CLI materializes before it exits),
//! and a writer that finds the log appended by another takes it over.

mod group;
mod lists;
mod log;
mod materializer;
mod rows;
mod schema;
mod tail;
mod webhooks;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use crate::domain::account::{AccountDefaults, AccountId, NewAccount};
use crate::domain::command::{self, Needs};
use crate::domain::event::EventView;
use crate::domain::hold::HoldStatus;
use crate::domain::period::{Month, Zone};
use crate::domain::state::AccountState;
use crate::domain::view::{
    AccountView, DebitView, EntryView, HoldView, Page, PurchaseView, StatementView, UsageView,
};
use crate::ledger::batch::Wants;
use crate::ledger::webhook::{
    Changed, Claimed, DeliveryStatus, DeliveryView, Endpoint, EndpointChange, Recorded,
};
use crate::ledger::{
    AuditReport, Executed, Keyed, LedgerError, NewToken, Operation, PageRequest, RequestKey, Store, TokenInfo,
};
use crate::store::columns::ACCOUNTS;
use crate::store::tokens;
use materializer::Chore;

pub use log::{MAX_REPLAY_STEP_ROWS, MAX_SETTLE_POSITIONS, REPLAY_STEP_ROWS, path_of as log_path_of};
pub use materializer::{MATERIALIZER_NICE, MAX_BACKOFF};
pub use schema::SCHEMA_VERSION;
pub use tail::MAX_WARM_ACCOUNTS;

/// Most operations committed in one transaction.
pub const MAX_GROUP_OPS: usize = 256;
/// Operations waiting for the writer before callers wait to enqueue.
pub const WRITE_QUEUE_CAPACITY: usize = 4_096;
/// How long a connection waits for another process's lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Read connections kept open for reuse.
pub const MAX_IDLE_READERS: usize = 8;
/// Operations acknowledged but not yet materialized beyond which the
/// writer waits for the materializer (the tail it keeps in memory holds at
/// most this many operations' rows, plus one group's).
pub const MAX_TAIL_OPS: usize = 32_768;
/// Operations in the tail at which the materializer starts.
pub const BATCH_OPS: usize = 4_096;
/// How long the materializer waits without a new group before it
/// materializes what is left.
pub const IDLE_SETTLE: Duration = Duration::from_millis(5);
/// How long a read of the ledger (or a writer with a full tail) waits for
/// materialization.
pub const READ_WAIT: Duration = Duration::from_secs(30);
/// Chores (jobs, requests to materialize) waiting for the materializer
/// before callers wait to enqueue.
pub const CHORE_QUEUE_CAPACITY: usize = 1_024;

/// When the log is materialized: [`Tuning::default`] is what the service
/// runs; tests lower the limits to materialize (and recover) at every step.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// The writer waits for the materializer once its tail holds this many
    /// operations.
    pub max_tail_ops: usize,
    /// The materializer starts once the tail holds this many operations.
    pub batch_ops: usize,
    /// Materialize after this long without a new group (never, if `None`).
    pub idle_settle: Option<Duration>,
    /// Most accounts the writer keeps warm in memory (0: none).
    pub max_warm_accounts: usize,
    /// Materialize when the store is dropped (if not, the next open
    /// replays the log, as after a crash).
    pub settle_on_close: bool,
    /// Most table rows a step of the replay at open takes (whole log rows,
    /// at least one).
    pub replay_step_rows: usize,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            max_tail_ops: MAX_TAIL_OPS,
            batch_ops: BATCH_OPS,
            idle_settle: Some(IDLE_SETTLE),
            max_warm_accounts: MAX_WARM_ACCOUNTS,
            settle_on_close: true,
            replay_step_rows: log::REPLAY_STEP_ROWS,
        }
    }
}

#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: mpsc::Sender<writer::Queued>,
    chores: mpsc::Sender<Chore>,
    readers: Mutex<Vec<Connection>>,
    shared: Arc<Shared>,
}

/// What the writer and materializer threads tell each other and the rest
/// of the store.
#[derive(Default)]
struct Shared {
    groups: GroupStats,
    marks: Mutex<Marks>,
    /// Signalled whenever the materialized mark moves or a settle fails.
    moved: Condvar,
    /// A reader or the writer waits for everything to be materialized
    /// (kept here as well as sent, so a full queue of chores loses no
    /// request).
    wanted: AtomicBool,
}

/// How many groups the writer committed and how many operations they held
/// (the group size the benchmark reports and its yardstick copies), and
/// how many times it materialized the log.
#[derive(Default)]
pub struct GroupStats {
    pub groups: AtomicU64,
    pub ops: AtomicU64,
    pub settles: AtomicU64,
}

/// The log's positions as the writer and materializer last published them.
#[derive(Default)]
struct Marks {
    /// The last position acknowledged.
    acked: i64,
    materialized: i64,
    /// Operations in the writer's tail.
    tail_ops: usize,
    /// Accounts warm in the writer's tail.
    warm: usize,
    /// Settles that failed so far, and the last one's error.
    failures: u64,
    failure: String,
}

/// The materializer (or a writer that took over) moved the mark.
fn publish_materialized(shared: &Shared, mark: i64) {
    let mut marks = shared.marks.lock().expect("marks lock");
    if mark > marks.materialized {
        marks.materialized = mark;
        drop(marks);
        shared.moved.notify_all();
    }
}

/// Maps SQLite failures: lock timeouts and unopenable files are worth a
/// retry (`Unavailable`); anything else is a bug or corruption.
pub(crate) fn sql_error(e: rusqlite::Error) -> LedgerError {
    match e.sqlite_error_code() {
        Some(
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::CannotOpen | ErrorCode::DiskFull,
        ) => LedgerError::Unavailable(e.to_string()),
        _ => LedgerError::Internal(e.to_string()),
    }
}

/// Pages the WAL holds before the writer copies them back into the
/// database file (SQLite's default is 1,000). Debits over many accounts
/// dirty a different page of each table each; a longer WAL lets one copy
/// serve many commits of the same page: +60% debits/s over 10,000 accounts
/// (`bench debit-many`, 4.7k/s to 7.5k/s, medians of 3), for a WAL file of up
/// to 128 MiB and a longer replay when a crashed database is opened.
const WAL_CHECKPOINT_PAGES: i64 = 32_768;

/// Page cache of the writer's connection, and of each reader's (KiB).
/// Pages of the database file are read through the memory map and not
/// copied; pages still in the WAL are copied into the cache, so readers
/// keep a small one: the server stays under 100 MiB of resident memory.
const WRITER_CACHE_KIB: i64 = 65_536;
/// Page cache of a connection to the log file (KiB): its rows are read
/// once, soon after they are written.
const LOG_CACHE_KIB: i64 = 8_192;

/// Pages the log file's WAL holds before the writer copies them back
/// itself. The materializer copies them (a passive checkpoint, which does
/// not hold up appends) after each materialization, so the writer does
/// only when the materializer is held back.
const LOG_WAL_BACKSTOP_PAGES: i64 = 16_384;
const READER_CACHE_KIB: i64 = 8_192;

fn open_connection(path: &Path, cache_kib: i64) -> rusqlite::Result<Connection> {
    let flags =
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // Each operation's savepoint journals into memory, not a temp file.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // A page cache, and reads through a memory map, so hot pages are not
    // copied in from the OS on every operation.
    conn.pragma_update(None, "cache_size", -cache_kib)?;
    conn.pragma_update(None, "mmap_size", 256i64 << 20)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database file, and
    /// materializes what its log holds (recovery after a crash).
    pub fn open(path: &Path) -> Result<SqliteStore, LedgerError> {
        SqliteStore::open_with(path, Tuning::default())
    }

    /// [`SqliteStore::open`] with the log materialized as `tuning` says.
    pub fn open_with(path: &Path, tuning: Tuning) -> Result<SqliteStore, LedgerError> {
        let unopenable = |p: &Path, e: rusqlite::Error| {
            LedgerError::Unavailable(format!("cannot open database {}: {e}", p.display()))
        };
        let mut main = open_connection(path, WRITER_CACHE_KIB).map_err(|e| unopenable(path, e))?;
        schema::migrate(&mut main).map_err(sql_error)?.map_err(LedgerError::Internal)?;
        let log_path = log::path_of(path);
        let log_conn = open_connection(&log_path, LOG_CACHE_KIB).map_err(|e| unopenable(&log_path, e))?;
        log::prepare(&main, &log_conn).map_err(sql_error)?;
        let log = log::Log::open(&main, &log_conn, tuning.max_warm_accounts, tuning.replay_step_rows)?;
        let mark = log::read_mark(&main).map_err(sql_error)?;
        // What the replay materialized leaves the log now, not in the first
        // append (after a crash that can be many rows).
        log::trim(&log_conn, mark).map_err(sql_error)?;
        log_conn.pragma_update(None, "wal_autocheckpoint", LOG_WAL_BACKSTOP_PAGES).map_err(sql_error)?;
        let shared = Arc::new(Shared::default());
        {
            let mut marks = shared.marks.lock().expect("marks lock");
            marks.acked = log.head();
            marks.materialized = mark;
        }
        let materializer = materializer::Materializer {
            main: open_connection(path, WRITER_CACHE_KIB).map_err(|e| unopenable(path, e))?,
            log_conn: open_connection(&log_path, LOG_CACHE_KIB).map_err(|e| unopenable(&log_path, e))?,
            shared: shared.clone(),
            tuning,
            retry_at: None,
        };
        let (chores, chores_rx) = mpsc::channel(CHORE_QUEUE_CAPACITY);
        let (tx, rx) = mpsc::channel(WRITE_QUEUE_CAPACITY);
        let writer = writer::Writer {
            main,
            log_conn,
            log,
            trimmed: mark,
            trim_due: false,
            shared: shared.clone(),
            tuning,
            chores: chores.clone(),
        };
        let spawn = |name: &str| std::thread::Builder::new().name(name.into());
        let failed =
            |e: std::io::Error| LedgerError::Internal(format!("cannot start the database's threads: {e}"));
        spawn("sqlite-materializer").spawn(move || materializer.run(chores_rx)).map_err(failed)?;
        spawn("sqlite-writer").spawn(move || writer.run(rx)).map_err(failed)?;
        let inner =
            Inner { path: path.to_path_buf(), writer: tx, chores, readers: Mutex::new(Vec::new()), shared };
        Ok(SqliteStore { inner: Arc::new(inner) })
    }

    /// Positions of the log not yet materialized, as stored.
    pub async fn log_pending(&self) -> Result<i64, LedgerError> {
        let log_path = log::path_of(&self.inner.path);
        self.read(move |conn| {
            let log = Connection::open(&log_path).map_err(sql_error)?;
            log::pending(conn, &log).map_err(sql_error)
        })
        .await
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Groups committed so far and the operations they held.
    pub fn group_stats(&self) -> (u64, u64) {
        let g = &self.inner.shared.groups;
        (g.groups.load(Ordering::Relaxed), g.ops.load(Ordering::Relaxed))
    }

    /// Accounts the writer keeps warm now.
    pub fn warm_accounts(&self) -> usize {
        self.inner.shared.marks.lock().expect("marks lock").warm
    }

    /// Times the log was materialized so far.
    pub fn settles(&self) -> u64 {
        self.inner.shared.groups.settles.load(Ordering::Relaxed)
    }

    /// Runs `work` in the writer's next transaction, in its own savepoint
    /// (tokens, webhook endpoints: writes that are not operations).
    async fn write<T, F>(&self, work: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, LedgerError> + Send + 'static,
    {
        self.write_job(work, false).await
    }

    /// [`SqliteStore::write`], for work that reads the ledger's tables
    /// (account creation, webhook dispatch): the log is materialized first.
    async fn write_settled<T, F>(&self, work: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, LedgerError> + Send + 'static,
    {
        self.write_job(work, true).await
    }

    async fn write_job<T, F>(&self, work: F, settled: bool) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, LedgerError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(materializer::TypedJob { work: Some(work), result: None, reply });
        self.chore(Chore::Job(job, settled)).await?;
        answer
            .await
            .map_err(|_| LedgerError::Internal("the database materializer dropped an operation".into()))?
    }

    async fn chore(&self, chore: Chore) -> Result<(), LedgerError> {
        self.inner
            .chores
            .send(chore)
            .await
            .map_err(|_| LedgerError::Unavailable("the database materializer has stopped".into()))
    }

    /// Runs `f` on a read connection inside one read transaction, on the
    /// tables as they are (tokens, webhooks: written directly).
    async fn read<T, F>(&self, f: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, LedgerError> + Send + 'static,
    {
        self.read_when(f, false).await
    }

    /// [`SqliteStore::read`] of the ledger: once everything acknowledged
    /// before it began is materialized.
    async fn read_ledger<T, F>(&self, f: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, LedgerError> + Send + 'static,
    {
        self.read_when(f, true).await
    }

    async fn read_when<T, F>(&self, f: F, ledger: bool) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, LedgerError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            if ledger {
                inner.wait_materialized()?;
            }
            let conn = match inner.readers.lock().expect("reader pool lock").pop() {
                Some(c) => c,
                None => open_connection(&inner.path, READER_CACHE_KIB).map_err(sql_error)?,
            };
            let result = conn.unchecked_transaction().map_err(sql_error).and_then(|tx| f(&tx));
            let mut idle = inner.readers.lock().expect("reader pool lock");
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| LedgerError::Internal(format!("read task failed: {e}")))?
    }
}

impl Inner {
    /// Waits until the log is materialized up to what was acknowledged now.
    fn wait_materialized(&self) -> Result<(), LedgerError> {
        let marks = self.shared.marks.lock().expect("marks lock");
        if marks.materialized >= marks.acked {
            return Ok(());
        }
        let (target, failures) = (marks.acked, marks.failures);
        // The flag, in case the queue is full: the materializer then has
        // chores to look at anyway, and sees it after them.
        self.shared.wanted.store(true, Ordering::SeqCst);
        if let Err(mpsc::error::TrySendError::Closed(_)) = self.chores.try_send(Chore::Nudge) {
            return Err(LedgerError::Unavailable("the database materializer has stopped".into()));
        }
        let (marks, waited) = self
            .shared
            .moved
            .wait_timeout_while(marks, READ_WAIT, |m| m.materialized < target && m.failures == failures)
            .expect("marks lock");
        if marks.materialized >= target {
            Ok(())
        } else if marks.failures != failures {
            Err(LedgerError::Unavailable(format!(
                "the ledger could not be brought up to date: {}",
                marks.failure
            )))
        } else {
            debug_assert!(waited.timed_out());
            Err(LedgerError::Unavailable(format!(
                "the ledger was not brought up to date within {} s",
                READ_WAIT.as_secs()
            )))
        }
    }
}

impl Store for SqliteStore {
    async fn execute(&self, op: Operation) -> Result<Executed, LedgerError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .writer
            .send((Box::new(op), reply))
            .await
            .map_err(|_| LedgerError::Unavailable("the database writer has stopped".into()))?;
        answer.await.map_err(|_| LedgerError::Internal("the database writer dropped an operation".into()))?
    }

    async fn create_account(
        &self,
        new: NewAccount,
        defaults: AccountDefaults,
        now: Timestamp,
    ) -> Result<(AccountView, bool), LedgerError> {
        self.write_settled(move |conn| {
            let id = AccountId::parse(&new.id)?;
            let sql = format!("SELECT {} FROM accounts WHERE account_id = ?1", ACCOUNTS.list());
            let existing = conn
                .prepare_cached(&sql)
                .and_then(|mut s| s.query_row([id.as_str()], rows::account).optional())
                .map_err(sql_error)?;
            let (account, created) = command::create_account(&new, existing.as_ref(), &defaults, now)?;
            if created {
                rows::insert_account(conn, &account).map_err(sql_error)?;
            }
            Ok((AccountView::of(&account), created))
        })
        .await
    }

    async fn state(&self, account: AccountId, needs: Needs) -> Result<AccountState, LedgerError> {
        self.read_ledger(move |conn| {
            let (mut states, _) =
                group::load(conn, &Wants::read(&account, &needs), &mut tail::Tail::default())?.into_states();
            states.remove(account.as_str()).ok_or_else(|| LedgerError::AccountNotFound(account.to_string()))
        })
        .await
    }

    async fn accounts(
        &self,
        page: PageRequest,
        prefix: Option<String>,
    ) -> Result<Page<AccountView>, LedgerError> {
        self.read_ledger(move |conn| lists::accounts(conn, &page, prefix.as_deref())).await
    }

    async fn purchases(
        &self,
        account: AccountId,
        month: Option<Month>,
        page: PageRequest,
    ) -> Result<Page<PurchaseView>, LedgerError> {
        self.read_ledger(move |conn| lists::purchases(conn, &account, month, &page)).await
    }

    async fn entries(&self, account: AccountId, page: PageRequest) -> Result<Page<EntryView>, LedgerError> {
        self.read_ledger(move |conn| lists::entries(conn, &account, &page)).await
    }

    async fn events(
        &self,
        account: AccountId,
        after: i64,
        page: PageRequest,
    ) -> Result<Page<EventView>, LedgerError> {
        self.read_ledger(move |conn| lists::events(conn, &account, after, &page)).await
    }

    async fn debits(
        &self,
        account: AccountId,
        reference: Option<String>,
        page: PageRequest,
    ) -> Result<Page<DebitView>, LedgerError> {
        self.read_ledger(move |conn| lists::debits(conn, &account, reference.as_deref(), &page)).await
    }

    async fn holds(
        &self,
        account: AccountId,
        status: Option<HoldStatus>,
        now: Timestamp,
        page: PageRequest,
    ) -> Result<Page<HoldView>, LedgerError> {
        self.read_ledger(move |conn| lists::holds(conn, &account, status, now, &page)).await
    }

    async fn usage(
        &self,
        account: AccountId,
        from: Month,
        to: Month,
    ) -> Result<(AccountState, Vec<UsageView>), LedgerError> {
        self.read_ledger(move |conn| {
            let (mut states, _) =
                group::load(conn, &Wants::read(&account, &Needs::default()), &mut tail::Tail::default())?
                    .into_states();
            let state = states
                .remove(account.as_str())
                .ok_or_else(|| LedgerError::AccountNotFound(account.to_string()))?;
            Ok((state, lists::usage(conn, &account, from, to)?))
        })
        .await
    }

    async fn statements(
        &self,
        account: Option<AccountId>,
        month: Option<Month>,
        page: PageRequest,
    ) -> Result<Page<StatementView>, LedgerError> {
        self.read_ledger(move |conn| lists::statements(conn, account.as_ref(), month, &page)).await
    }

    async fn accounts_to_reset(
        &self,
        newest: Month,
    ) -> Result<Vec<(AccountId, Zone, Option<Month>)>, LedgerError> {
        self.read_ledger(move |conn| lists::accounts_to_reset(conn, newest)).await
    }

    async fn accounts_to_bill(&self) -> Result<Vec<AccountId>, LedgerError> {
        self.read_ledger(lists::accounts_to_bill).await
    }

    async fn add_token(&self, account: AccountId, token: NewToken) -> Result<(), LedgerError> {
        self.write(move |conn| {
            let a = account.as_str();
            let n = conn
                .prepare_cached(tokens::INSERT)
                .and_then(|mut s| {
                    s.execute(rusqlite::params![
                        a,
                        token.id,
                        token.label,
                        token.secret_sha256,
                        token.created_at.as_microsecond(),
                        tokens::MAX_TOKENS_PER_ACCOUNT
                    ])
                })
                .map_err(sql_error)?;
            if n == 1 {
                return Ok(());
            }
            let exists = conn
                .prepare_cached(tokens::ACCOUNT_EXISTS)
                .and_then(|mut s| s.exists([a]))
                .map_err(sql_error)?;
            Err(if exists { tokens::too_many() } else { LedgerError::AccountNotFound(a.to_string()) })
        })
        .await
    }

    async fn token_by_secret(
        &self,
        account: AccountId,
        secret_sha256: String,
    ) -> Result<Option<TokenInfo>, LedgerError> {
        self.read(move |conn| {
            let found = rows::all(conn, tokens::BY_SECRET, [account.as_str(), &secret_sha256], rows::token)
                .map_err(sql_error)?;
            Ok(found.into_iter().next())
        })
        .await
    }

    async fn tokens(&self, account: AccountId) -> Result<Vec<TokenInfo>, LedgerError> {
        self.read(move |conn| {
            let a = account.as_str();
            let exists = conn
                .prepare_cached(tokens::ACCOUNT_EXISTS)
                .and_then(|mut s| s.exists([a]))
                .map_err(sql_error)?;
            if !exists {
                return Err(LedgerError::AccountNotFound(a.to_string()));
            }
            rows::all(conn, tokens::LIST, [a], rows::token).map_err(sql_error)
        })
        .await
    }

    async fn revoke_token(&self, account: AccountId, token_id: String) -> Result<bool, LedgerError> {
        self.write(move |conn| {
            let n = conn
                .prepare_cached(tokens::DELETE)
                .and_then(|mut s| s.execute([account.as_str(), &token_id]))
                .map_err(sql_error)?;
            Ok(n == 1)
        })
        .await
    }

    async fn touch_token(
        &self,
        account: AccountId,
        token_id: String,
        at: Timestamp,
    ) -> Result<(), LedgerError> {
        self.write(move |conn| {
            conn.prepare_cached(tokens::TOUCH)
                .and_then(|mut s| {
                    s.execute(rusqlite::params![at.as_microsecond(), account.as_str(), token_id])
                })
                .map_err(sql_error)?;
            Ok(())
        })
        .await
    }

    async fn change_webhooks(
        &self,
        change: EndpointChange,
        key: Option<RequestKey>,
    ) -> Result<Option<Keyed<Changed>>, LedgerError> {
        let settled = change.reads_deliveries();
        self.write_job(move |conn| webhooks::change(conn, &change, key.as_ref()), settled).await
    }

    async fn endpoints(&self) -> Result<Vec<Endpoint>, LedgerError> {
        self.read(webhooks::list).await
    }

    async fn endpoint(&self, id: String) -> Result<Option<Endpoint>, LedgerError> {
        self.read(move |conn| webhooks::one(conn, &id)).await
    }

    async fn delete_endpoint(&self, id: String) -> Result<bool, LedgerError> {
        self.write(move |conn| webhooks::delete(conn, &id)).await
    }

    async fn dispatch(&self, now: Timestamp) -> Result<usize, LedgerError> {
        self.write_settled(move |conn| webhooks::dispatch(conn, now)).await
    }

    async fn claim(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> Result<Vec<Claimed>, LedgerError> {
        self.write(move |conn| webhooks::claim(conn, now, lease_until, limit)).await
    }

    async fn record(&self, attempts: Vec<(Claimed, Recorded)>) -> Result<(), LedgerError> {
        self.write(move |conn| attempts.iter().try_for_each(|(c, r)| webhooks::record(conn, c, r))).await
    }

    async fn deliveries(
        &self,
        endpoint: String,
        status: Option<DeliveryStatus>,
        page: PageRequest,
    ) -> Result<Page<DeliveryView>, LedgerError> {
        self.read(move |conn| webhooks::deliveries(conn, &endpoint, status, &page)).await
    }

    async fn attempts(
        &self,
        endpoint: String,
        event_id: String,
    ) -> Result<Option<Vec<crate::ledger::webhook::AttemptView>>, LedgerError> {
        self.read(move |conn| webhooks::attempts(conn, &endpoint, &event_id)).await
    }

    async fn settle(&self) -> Result<(), LedgerError> {
        let (reply, answer) = oneshot::channel();
        self.chore(Chore::Settle(reply)).await?;
        answer.await.map_err(|_| LedgerError::Internal("the database writer dropped a request".into()))?
    }

    async fn row_count(&self) -> Result<u64, LedgerError> {
        self.read_ledger(|conn| {
            conn.query_row(crate::store::columns::ROW_COUNT_SQL, [], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(sql_error)
        })
        .await
    }

    async fn audit(&self) -> Result<AuditReport, LedgerError> {
        self.read_ledger(lists::audit).await
    }
}
