//! The PostgreSQL store: many server replicas, one database.
//!
//! Every mutation runs in a group of the write pipeline (`group.rs`): one
//! transaction on a pooled connection that locks the accounts' rows
//! (`SELECT ... FOR UPDATE`, in id order), loads, applies in memory, writes
//! and commits. The row locks are the only serialization, so different
//! accounts proceed in parallel on every replica, and one account's
//! operations are applied one at a time however many replicas receive them. Reads run in read-only REPEATABLE READ
//! transactions (one snapshot) and take no lock.
//!
//! A lost connection (PostgreSQL restarting) answers `Unavailable` (HTTP
//! 503); the pool drops broken connections and opens new ones on demand, so
//! the server recovers without a restart.

mod group;
mod lists;
mod rows;
mod schema;
mod webhooks;

use std::time::Duration;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use jiff::Timestamp;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

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
use crate::store::columns::{self, ACCOUNTS, Cols as _, micros};
use crate::store::tokens;

/// Connections per process: a little above the cores, since a connection
/// mostly waits on the network.
pub const POOL_SIZE: usize = 16;
/// How long a request waits for a connection, or for one to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    groups: group::Groups,
}

/// Maps PostgreSQL failures: a lost or refused connection, a shutdown or a
/// serialization failure is worth a retry (`Unavailable`); the rest is a bug.
pub(crate) fn pg_error(e: tokio_postgres::Error) -> LedgerError {
    let lost = || {
        e.is_closed()
            || std::error::Error::source(&e).is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some())
    };
    let retry = match e.code() {
        None => lost(),
        Some(code) => matches!(
            *code,
            SqlState::T_R_SERIALIZATION_FAILURE
                | SqlState::T_R_DEADLOCK_DETECTED
                | SqlState::ADMIN_SHUTDOWN
                | SqlState::CRASH_SHUTDOWN
                | SqlState::CANNOT_CONNECT_NOW
                | SqlState::TOO_MANY_CONNECTIONS
        ),
    };
    if retry { LedgerError::Unavailable(e.to_string()) } else { LedgerError::Internal(e.to_string()) }
}

fn pool_error(e: deadpool_postgres::PoolError) -> LedgerError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg_error(e),
        other => LedgerError::Unavailable(format!("no database connection: {other}")),
    }
}

impl PgStore {
    /// Connects, and migrates the schema (once, under an advisory lock).
    pub async fn open(url: &str) -> Result<PgStore, LedgerError> {
        let config: tokio_postgres::Config =
            url.parse().map_err(|e| LedgerError::invalid(format!("invalid PostgreSQL URL: {e}")))?;
        let manager =
            Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let timeouts = Timeouts {
            wait: Some(CONNECT_TIMEOUT),
            create: Some(CONNECT_TIMEOUT),
            recycle: Some(CONNECT_TIMEOUT),
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .timeouts(timeouts)
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| LedgerError::Internal(format!("cannot build the connection pool: {e}")))?;
        let store = PgStore { groups: group::Groups::start(&pool), pool };
        let mut client = store.pool.get().await.map_err(pool_error)?;
        schema::migrate(&mut client).await.map_err(pg_error)?.map_err(LedgerError::Internal)?;
        Ok(store)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, LedgerError> {
        self.pool.get().await.map_err(pool_error)
    }
}

/// Runs `$body` with `$tx` bound to a read-write transaction, committed
/// if it succeeds.
macro_rules! in_tx {
    ($self:ident, |$tx:ident| $body:expr) => {{
        let mut client = $self.client().await?;
        let $tx = client.transaction().await.map_err(pg_error)?;
        let result = $body?;
        $tx.commit().await.map_err(pg_error)?;
        Ok(result)
    }};
}

/// Runs `$body` with `$c` bound to a read-only snapshot transaction.
macro_rules! read {
    ($self:ident, |$c:ident| $body:expr) => {{
        let mut client = $self.client().await?;
        let $c = client
            .build_transaction()
            .read_only(true)
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .start()
            .await
            .map_err(pg_error)?;
        let result = $body;
        $c.commit().await.map_err(pg_error)?;
        result
    }};
}

impl Store for PgStore {
    async fn execute(&self, op: Operation) -> Result<Executed, LedgerError> {
        self.groups.execute(op).await
    }

    async fn create_account(
        &self,
        new: NewAccount,
        defaults: AccountDefaults,
        now: Timestamp,
    ) -> Result<(AccountView, bool), LedgerError> {
        let id = AccountId::parse(&new.id)?;
        let built = new.build(&defaults, now)?;
        let mut client = self.client().await?;
        let t = client.transaction().await.map_err(pg_error)?;
        // Insert unless it exists; then compare with what is there (two
        // replicas creating the same id at once both end up here).
        let insert = format!("{} ON CONFLICT (account_id) DO NOTHING", ACCOUNTS.insert());
        let stmt = t.prepare_cached(&insert).await.map_err(pg_error)?;
        let vals = columns::account_vals(&built);
        let inserted = t.execute(&stmt, &rows::params(&vals)).await.map_err(pg_error)?;
        let existing = rows::one(
            &t,
            &ACCOUNTS.select("WHERE account_id = $1 FOR UPDATE"),
            &[&id.as_str()],
            columns::account,
        )
        .await?;
        let (account, created) = if inserted == 1 {
            (built, true)
        } else {
            command::create_account(&new, existing.as_ref(), &defaults, now)?
        };
        t.commit().await.map_err(pg_error)?;
        Ok((AccountView::of(&account), created))
    }

    async fn state(&self, account: AccountId, needs: Needs) -> Result<AccountState, LedgerError> {
        read!(self, |c| {
            let (mut states, _) = group::load(&c, &Wants::read(&account, &needs), false).await?.into_states();
            states.remove(account.as_str()).ok_or_else(|| LedgerError::AccountNotFound(account.to_string()))
        })
    }

    async fn accounts(
        &self,
        page: PageRequest,
        prefix: Option<String>,
    ) -> Result<Page<AccountView>, LedgerError> {
        read!(self, |c| lists::accounts(&c, &page, prefix.as_deref()).await)
    }

    async fn purchases(
        &self,
        account: AccountId,
        month: Option<Month>,
        page: PageRequest,
    ) -> Result<Page<PurchaseView>, LedgerError> {
        read!(self, |c| lists::purchases(&c, &account, month, &page).await)
    }

    async fn entries(&self, account: AccountId, page: PageRequest) -> Result<Page<EntryView>, LedgerError> {
        read!(self, |c| lists::entries(&c, &account, &page).await)
    }

    async fn events(
        &self,
        account: AccountId,
        after: i64,
        page: PageRequest,
    ) -> Result<Page<EventView>, LedgerError> {
        read!(self, |c| lists::events(&c, &account, after, &page).await)
    }

    async fn debits(
        &self,
        account: AccountId,
        reference: Option<String>,
        page: PageRequest,
    ) -> Result<Page<DebitView>, LedgerError> {
        read!(self, |c| lists::debits(&c, &account, reference.as_deref(), &page).await)
    }

    async fn holds(
        &self,
        account: AccountId,
        status: Option<HoldStatus>,
        now: Timestamp,
        page: PageRequest,
    ) -> Result<Page<HoldView>, LedgerError> {
        read!(self, |c| lists::holds(&c, &account, status, now, &page).await)
    }

    async fn usage(
        &self,
        account: AccountId,
        from: Month,
        to: Month,
    ) -> Result<(AccountState, Vec<UsageView>), LedgerError> {
        read!(self, |c| {
            let (mut states, _) =
                group::load(&c, &Wants::read(&account, &Needs::default()), false).await?.into_states();
            let state = states
                .remove(account.as_str())
                .ok_or_else(|| LedgerError::AccountNotFound(account.to_string()))?;
            Ok((state, lists::usage(&c, &account, from, to).await?))
        })
    }

    async fn statements(
        &self,
        account: Option<AccountId>,
        month: Option<Month>,
        page: PageRequest,
    ) -> Result<Page<StatementView>, LedgerError> {
        read!(self, |c| lists::statements(&c, account.as_ref(), month, &page).await)
    }

    async fn accounts_to_reset(
        &self,
        newest: Month,
    ) -> Result<Vec<(AccountId, Zone, Option<Month>)>, LedgerError> {
        read!(self, |c| lists::accounts_to_reset(&c, newest).await)
    }

    async fn accounts_to_bill(&self) -> Result<Vec<AccountId>, LedgerError> {
        read!(self, |c| lists::accounts_to_bill(&c).await)
    }

    async fn add_token(&self, account: AccountId, token: NewToken) -> Result<(), LedgerError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(tokens::INSERT).await.map_err(pg_error)?;
        let a = account.as_str();
        let at = micros(token.created_at);
        let max = tokens::MAX_TOKENS_PER_ACCOUNT;
        let n = client
            .execute(&stmt, &[&a, &token.id, &token.label, &token.secret_sha256, &at, &max])
            .await
            .map_err(pg_error)?;
        if n == 1 {
            return Ok(());
        }
        let exists = rows::one(&client, tokens::ACCOUNT_EXISTS, &[&a], |_| Ok(())).await?.is_some();
        Err(if exists {
            crate::store::tokens::too_many()
        } else {
            LedgerError::AccountNotFound(a.to_string())
        })
    }

    async fn token_by_secret(
        &self,
        account: AccountId,
        secret_sha256: String,
    ) -> Result<Option<TokenInfo>, LedgerError> {
        let client = self.client().await?;
        rows::one(&client, tokens::BY_SECRET, &[&account.as_str(), &secret_sha256], tokens::token).await
    }

    async fn tokens(&self, account: AccountId) -> Result<Vec<TokenInfo>, LedgerError> {
        read!(self, |c| {
            let a = account.as_str();
            if rows::one(&c, tokens::ACCOUNT_EXISTS, &[&a], |_| Ok(())).await?.is_none() {
                return Err(LedgerError::AccountNotFound(a.to_string()));
            }
            rows::all(&c, tokens::LIST, &[&a], tokens::token).await
        })
    }

    async fn revoke_token(&self, account: AccountId, token_id: String) -> Result<bool, LedgerError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(tokens::DELETE).await.map_err(pg_error)?;
        let n = client.execute(&stmt, &[&account.as_str(), &token_id]).await.map_err(pg_error)?;
        Ok(n == 1)
    }

    async fn touch_token(
        &self,
        account: AccountId,
        token_id: String,
        at: Timestamp,
    ) -> Result<(), LedgerError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(tokens::TOUCH).await.map_err(pg_error)?;
        client.execute(&stmt, &[&micros(at), &account.as_str(), &token_id]).await.map_err(pg_error)?;
        Ok(())
    }

    async fn change_webhooks(
        &self,
        change: EndpointChange,
        key: Option<RequestKey>,
    ) -> Result<Option<Keyed<Changed>>, LedgerError> {
        in_tx!(self, |tx| webhooks::change(&tx, &change, key.as_ref()).await)
    }

    async fn endpoints(&self) -> Result<Vec<Endpoint>, LedgerError> {
        read!(self, |c| webhooks::list(&c).await)
    }

    async fn endpoint(&self, id: String) -> Result<Option<Endpoint>, LedgerError> {
        read!(self, |c| webhooks::one(&c, &id).await)
    }

    async fn delete_endpoint(&self, id: String) -> Result<bool, LedgerError> {
        in_tx!(self, |tx| webhooks::delete(&tx, &id).await)
    }

    async fn dispatch(&self, now: Timestamp) -> Result<usize, LedgerError> {
        in_tx!(self, |tx| webhooks::dispatch(&tx, now).await)
    }

    async fn claim(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> Result<Vec<Claimed>, LedgerError> {
        in_tx!(self, |tx| webhooks::claim(&tx, now, lease_until, limit).await)
    }

    async fn record(&self, attempts: Vec<(Claimed, Recorded)>) -> Result<(), LedgerError> {
        in_tx!(self, |tx| {
            for (c, r) in &attempts {
                webhooks::record(&tx, c, r).await?;
            }
            Ok::<(), LedgerError>(())
        })
    }

    async fn deliveries(
        &self,
        endpoint: String,
        status: Option<DeliveryStatus>,
        page: PageRequest,
    ) -> Result<Page<DeliveryView>, LedgerError> {
        read!(self, |c| webhooks::deliveries(&c, &endpoint, status, &page).await)
    }

    async fn attempts(
        &self,
        endpoint: String,
        event_id: String,
    ) -> Result<Option<Vec<crate::ledger::webhook::AttemptView>>, LedgerError> {
        read!(self, |c| webhooks::attempts(&c, &endpoint, &event_id).await)
    }

    async fn row_count(&self) -> Result<u64, LedgerError> {
        let client = self.client().await?;
        let n = rows::one(&client, columns::ROW_COUNT_SQL, &[], |r| r.int(0)).await?;
        Ok(n.unwrap_or(0) as u64)
    }

    async fn audit(&self) -> Result<AuditReport, LedgerError> {
        read!(self, |c| lists::audit(&c).await)
    }
}
