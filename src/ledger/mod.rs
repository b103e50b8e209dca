//! The ledger service: one entry point per operation, over any [`Store`].
//!
//! It takes `now` as an argument (the clock is read only at the edges), makes
//! the random ids of new objects, and turns reads into views: a read loads a
//! snapshot, rolls it forward to `now` in memory and throws the copy away,
//! so balances are exact at any instant without writing.

mod audit;
pub mod batch;
mod error;
pub mod export;
mod key;
mod store;
mod token;
pub mod webhook;

use jiff::Timestamp;

use crate::domain::account::{AccountDefaults, AccountId, NewAccount};
use crate::domain::command::{Command, Needs};
use crate::domain::credits::Credits;
use crate::domain::hold::HoldStatus;
use crate::domain::period::{Month, Zone};
use crate::domain::spend;
use crate::domain::state::{AccountState, Changes};
use crate::domain::usage;
use crate::domain::view::{
    AccountView, BalanceView, DebitView, EntryView, HoldView, Page, PurchaseView, QuoteView, StatementView,
    UsageView,
};

pub use audit::{AccountRecords, AuditReport};
pub use error::LedgerError;
pub use key::{IdempotencyKey, Keyed, MAX_KEY_BYTES, RequestKey, replayed};
pub use store::{
    DEFAULT_PAGE_LIMIT, Executed, MAX_PAGE_LIMIT, NewToken, Operation, PageRequest, Store, StoredAnswer,
    TOKEN_USE_RESOLUTION_SECONDS, Tally, TokenInfo, Transition, answer_of, replay, request_of, transition,
};
pub use token::{CreatedToken, new_account_token, sha256_hex};

/// Longest account search (an account name is at most 200 characters).
pub const MAX_SEARCH_CHARS: usize = 200;

/// A fresh random id suffix: 16 characters of base32 (80 bits).
pub fn random_id() -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source is available");
    bytes.iter().map(|b| ALPHABET[(b & 31) as usize] as char).collect()
}

/// Accounts closed at once by [`Ledger::close_all`].
pub const CLOSE_CONCURRENCY: usize = 256;

#[derive(Clone)]
pub struct Ledger<S> {
    store: S,
    defaults: AccountDefaults,
}

/// What `close_all` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloseReport {
    pub accounts: usize,
    pub statements: Vec<StatementView>,
    /// Accounts that could not close, and why; every other account closed.
    pub failed: Vec<CloseFailure>,
}

/// An account a close could not close (its months stay open, untouched).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
pub struct CloseFailure {
    pub account_id: String,
    pub detail: String,
}

impl<S: Store> Ledger<S> {
    /// A ledger whose new accounts default to `zone`, USD and $0.01.
    pub fn new(store: S, zone: Zone) -> Ledger<S> {
        Ledger::with_defaults(store, AccountDefaults::new(zone))
    }

    pub fn with_defaults(store: S, defaults: AccountDefaults) -> Ledger<S> {
        Ledger { store, defaults }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub async fn create_account(
        &self,
        new: NewAccount,
        now: Timestamp,
    ) -> Result<(AccountView, bool), LedgerError> {
        self.store.create_account(new, self.defaults.clone(), now).await
    }

    /// Runs one mutation; see [`Command`] for the list.
    pub async fn execute(
        &self,
        account: &AccountId,
        command: Command,
        key: Option<IdempotencyKey>,
        now: Timestamp,
    ) -> Result<Executed, LedgerError> {
        let op = Operation { account: account.clone(), command, key, now, new_id: random_id() };
        self.store.execute(op).await
    }

    /// The account's state as of `now` (or its latest entry, if later: time
    /// never runs backwards for an account), computed on a copy, with the
    /// instant used.
    async fn state_at(
        &self,
        account: &AccountId,
        needs: Needs,
        now: Timestamp,
    ) -> Result<(AccountState, Timestamp), LedgerError> {
        let mut state = self.store.state(account.clone(), needs).await?;
        let now = state.not_before_latest(now);
        state.roll_forward(now, &mut Changes::default());
        Ok((state, now))
    }

    pub async fn balance(&self, account: &AccountId, now: Timestamp) -> Result<BalanceView, LedgerError> {
        let (state, now) = self.state_at(account, Needs { unbilled: true, ..Needs::default() }, now).await?;
        Ok(BalanceView::of(&state, now)?)
    }

    pub async fn account(&self, account: &AccountId, now: Timestamp) -> Result<AccountView, LedgerError> {
        let (state, now) = self.state_at(account, Needs { unbilled: true, ..Needs::default() }, now).await?;
        let mut view = AccountView::of(&state.account);
        view.balance = Some(BalanceView::of(&state, now)?);
        Ok(view)
    }

    /// One object of the account that `needs` names, shaped by `view`;
    /// not found (404) when the account has none with that id.
    async fn one<T>(
        &self,
        account: &AccountId,
        needs: Needs,
        now: Timestamp,
        (what, id): (&'static str, &str),
        view: impl FnOnce(&AccountState) -> Option<Result<T, crate::domain::DomainError>>,
    ) -> Result<T, LedgerError> {
        let (state, _) = self.state_at(account, needs, now).await?;
        Ok(view(&state).ok_or_else(|| crate::domain::DomainError::not_found(what, id))??)
    }

    /// One purchase of the account.
    pub async fn purchase(
        &self,
        account: &AccountId,
        purchase_id: &str,
        now: Timestamp,
    ) -> Result<PurchaseView, LedgerError> {
        let needs = Needs { purchase: Some(purchase_id.to_string()), ..Needs::default() };
        self.one(account, needs, now, ("purchase", purchase_id), |s| {
            s.purchases.iter().find(|p| p.id == purchase_id).map(|p| PurchaseView::of(account.as_str(), p))
        })
        .await
    }

    /// One statement of the account.
    pub async fn statement(
        &self,
        account: &AccountId,
        statement_id: &str,
        now: Timestamp,
    ) -> Result<StatementView, LedgerError> {
        let needs = Needs { statement: Some(statement_id.to_string()), ..Needs::default() };
        self.one(account, needs, now, ("statement", statement_id), |s| {
            s.statements.iter().find(|st| st.id == statement_id).map(|st| Ok(StatementView::of(st)))
        })
        .await
    }

    /// Can `credits` texts go out now? Changes nothing.
    pub async fn quote(
        &self,
        account: &AccountId,
        credits: Credits,
        now: Timestamp,
    ) -> Result<QuoteView, LedgerError> {
        // A quote counts what auto-recharge would buy, under a purchase's checks.
        let needs = Needs { unbilled_if_recharging: true, ..Needs::default() };
        let (state, now) = self.state_at(account, needs, now).await?;
        Ok(spend::quote(&state, credits, now)?)
    }

    pub async fn hold(
        &self,
        account: &AccountId,
        hold_id: &str,
        now: Timestamp,
    ) -> Result<HoldView, LedgerError> {
        let needs = Needs { hold: Some(hold_id.to_string()), ..Needs::default() };
        self.one(account, needs, now, ("hold", hold_id), |s| {
            s.holds.iter().find(|h| h.id == hold_id).map(|h| Ok(HoldView::of(account.as_str(), h)))
        })
        .await
    }

    /// One debit of the account (a capture of a hold included).
    pub async fn debit(
        &self,
        account: &AccountId,
        debit_id: &str,
        now: Timestamp,
    ) -> Result<DebitView, LedgerError> {
        let needs = Needs { debit: Some(debit_id.to_string()), ..Needs::default() };
        self.one(account, needs, now, ("debit", debit_id), |s| {
            s.debits.iter().find(|d| d.id == debit_id).map(|d| Ok(DebitView::of(account.as_str(), d)))
        })
        .await
    }

    /// Debits, newest first (captures included); `reference` keeps those
    /// that carry it.
    pub async fn debits(
        &self,
        account: &AccountId,
        reference: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<DebitView>, LedgerError> {
        crate::domain::text::check_reference(reference)?;
        self.store.debits(account.clone(), reference.map(str::to_string), page).await
    }

    /// Holds, newest first, as they stand at `now` (one whose TTL ran out
    /// is expired); `status` keeps those in it.
    pub async fn holds(
        &self,
        account: &AccountId,
        status: Option<HoldStatus>,
        page: PageRequest,
        now: Timestamp,
    ) -> Result<Page<HoldView>, LedgerError> {
        self.store.holds(account.clone(), status, now, page).await
    }

    /// Accounts, newest first; `q` keeps those whose id or name starts
    /// with it, ignoring case (1 to 200 printable characters).
    pub async fn accounts(
        &self,
        page: PageRequest,
        q: Option<&str>,
    ) -> Result<Page<AccountView>, LedgerError> {
        if let Some(q) = q {
            let n = q.chars().count();
            if n == 0 || n > MAX_SEARCH_CHARS || q.chars().any(char::is_control) {
                return Err(LedgerError::invalid(format!(
                    "q must be 1 to {MAX_SEARCH_CHARS} printable characters"
                )));
            }
        }
        self.store.accounts(page, q.map(str::to_string)).await
    }

    pub async fn purchases(
        &self,
        account: &AccountId,
        month: Option<Month>,
        page: PageRequest,
    ) -> Result<Page<PurchaseView>, LedgerError> {
        self.store.purchases(account.clone(), month, page).await
    }

    /// The account's events after sequence `after` (0: from the first),
    /// oldest first.
    pub async fn events(
        &self,
        account: &AccountId,
        after: i64,
        page: PageRequest,
    ) -> Result<Page<crate::domain::event::EventView>, LedgerError> {
        if after < 0 {
            return Err(LedgerError::invalid("after must be a sequence number, 0 or more"));
        }
        self.store.events(account.clone(), after, page).await
    }

    pub async fn entries(
        &self,
        account: &AccountId,
        page: PageRequest,
    ) -> Result<Page<EntryView>, LedgerError> {
        self.store.entries(account.clone(), page).await
    }

    /// Usage per local month of `from..=to` (R7 reports): the monthly
    /// counters the writes keep, plus what time has brought since the last
    /// write (rolled forward on a copy), read in one snapshot. Its cost is
    /// the months asked for, not the account's history.
    /// `from` defaults to this month in the account's zone, `to` to the
    /// later of this month and `from`.
    pub async fn usage(
        &self,
        account: &AccountId,
        from: Option<Month>,
        to: Option<Month>,
        now: Timestamp,
    ) -> Result<Vec<UsageView>, LedgerError> {
        if let (Some(from), Some(to)) = (from, to) {
            usage::months(from, to)?;
        }
        // The months `now` falls in across every zone (UTC-12 to UTC+14):
        // the widest the defaults can be, read with the state in one snapshot.
        let utc = Zone::utc();
        let west = Month::of(now - jiff::SignedDuration::from_hours(12), &utc);
        let east = Month::of(now + jiff::SignedDuration::from_hours(14), &utc);
        let (wide_from, wide_to) = (from.unwrap_or(west), to.unwrap_or(east).max(from.unwrap_or(west)));
        let (mut state, mut stored) = self.store.usage(account.clone(), wide_from, wide_to).await?;
        let now = state.not_before_latest(now);
        let zone = state.account.zone.clone();
        let current = Month::of(now, &zone);
        let from = from.unwrap_or(current);
        let to = to.unwrap_or(current.max(from));
        usage::months(from, to)?;
        if from < wide_from || to > wide_to {
            // The account's latest instant is ahead of the clock: read the
            // months that instant names.
            (state, stored) = self.store.usage(account.clone(), from, to).await?;
        }
        // What time alone has brought since the last write (expiries, a
        // month start), on a copy: counted, not stored.
        let mut pending = Changes::default();
        state.roll_forward(now, &mut pending);
        Ok(usage::report(&stored, &pending.entries, &zone, from, to)?)
    }

    pub async fn statements(
        &self,
        account: Option<&AccountId>,
        month: Option<Month>,
        page: PageRequest,
    ) -> Result<Page<StatementView>, LedgerError> {
        self.store.statements(account.cloned(), month, page).await
    }

    /// Closes every account's ended months through `through` (default: the
    /// last month that has ended in each account's zone). Accounts for which
    /// `through` has not ended yet are left for later.
    pub async fn close_all(
        &self,
        through: Option<Month>,
        now: Timestamp,
    ) -> Result<CloseReport, LedgerError> {
        if let Some(month) = through {
            // The first month end anywhere is on the easternmost zone (UTC+14).
            let first_end = month.end(&Zone::utc()) - jiff::SignedDuration::from_hours(14);
            if now < first_end {
                return Err(LedgerError::invalid(format!(
                    "month {month} has not ended yet in any time zone"
                )));
            }
        }
        let mut report = CloseReport::default();
        let mut accounts = self.store.accounts_to_bill().await?;
        // And those whose month has begun without its `free_credits.reset`.
        let newest = Month::of(now + jiff::SignedDuration::from_hours(14), &Zone::utc());
        for (account, zone, announced) in self.store.accounts_to_reset(newest).await? {
            if announced.is_none_or(|m| m < Month::of(now, &zone)) {
                accounts.push(account);
            }
        }
        accounts.sort_unstable();
        accounts.dedup();
        // Accounts close independently: keep many in flight, so a store that
        // groups commits (SQLite) or has a pool (PostgreSQL) is kept busy.
        for chunk in accounts.chunks(CLOSE_CONCURRENCY) {
            let mut closing = tokio::task::JoinSet::new();
            for account in chunk {
                let (ledger, account) = (self.clone(), account.clone());
                closing.spawn(async move {
                    let done = ledger.execute(&account, Command::CloseMonths { through }, None, now).await;
                    (account, done)
                });
            }
            while let Some(done) = closing.join_next().await {
                let (account, done) = done.map_err(|e| LedgerError::Internal(format!("close task: {e}")))?;
                match done {
                    Ok(Executed { outcome: crate::domain::command::Outcome::Closed(statements), .. }) => {
                        report.accounts += 1;
                        report.statements.extend(statements);
                    }
                    Ok(other) => return Err(LedgerError::Internal(format!("close answered {other:?}"))),
                    // `through` has not ended yet in this account's zone.
                    Err(LedgerError::Domain(crate::domain::DomainError::MonthNotEnded { .. })) => {}
                    // The database is away: the whole close is worth a retry.
                    Err(e @ LedgerError::Unavailable(_)) => return Err(e),
                    // This account cannot close (it wrote nothing); the
                    // others go on.
                    Err(e) => report
                        .failed
                        .push(CloseFailure { account_id: account.to_string(), detail: e.to_string() }),
                }
            }
        }
        report.statements.sort_by(|a, b| (&a.account_id, a.month).cmp(&(&b.account_id, b.month)));
        report.failed.sort_by(|a, b| a.account_id.cmp(&b.account_id));
        Ok(report)
    }

    /// Creates an account token labelled `label`; the answer is the only
    /// time the token is shown.
    pub async fn create_token(
        &self,
        account: &AccountId,
        label: String,
        now: Timestamp,
    ) -> Result<CreatedToken, LedgerError> {
        crate::domain::text::check_description("label", Some(&label))?;
        let (token, secret_sha256) = new_account_token(account);
        let id = format!("tok_{}", random_id());
        self.store
            .add_token(account.clone(), NewToken { id: id.clone(), label, secret_sha256, created_at: now })
            .await?;
        Ok(CreatedToken { id, account_id: account.to_string(), token })
    }

    pub async fn audit(&self) -> Result<AuditReport, LedgerError> {
        self.store.audit().await
    }
}
