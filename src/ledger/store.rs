//! What the ledger needs from a store, and the steps of one operation that
//! the write pipeline ([`super::batch`]) runs for every store: its request
//! fingerprint, a replay of a stored answer, the transition, the answer to
//! remember. Idempotency is decided here, once.
//!
//! Architecture invariant: a store never decides a rule. It loads state,
//! writes the rows the batch returned, and answers lists.

use std::future::Future;

use jiff::Timestamp;

use crate::domain::account::{AccountDefaults, AccountId, NewAccount};
use crate::domain::command::{self, Command, Ctx, Needs, Outcome};
use crate::domain::entry::{Entry, EntryKind};
use crate::domain::event::EventView;
use crate::domain::hold::HoldStatus;
use crate::domain::period::Month;
use crate::domain::state::{AccountState, Changes};
use crate::domain::view::{
    AccountView, DebitView, EntryView, HoldView, Page, PurchaseView, StatementView, UsageView,
};

use super::LedgerError;
use super::audit::AuditReport;
use super::key::{IdempotencyKey, Keyed, RequestKey};
use super::webhook::{Changed, Claimed, DeliveryStatus, DeliveryView, Endpoint, EndpointChange, Recorded};

/// An account token to store: its id, its label, the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    pub id: String,
    pub label: String,
    pub secret_sha256: String,
    pub created_at: Timestamp,
}

/// An account token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub account_id: String,
    pub label: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When it was last used, to the minute ([`TOKEN_USE_RESOLUTION_SECONDS`]).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<Timestamp>,
}

/// `last_used_at` is written at most this often per token, so a busy
/// token costs one small write a minute, not one per request.
pub const TOKEN_USE_RESOLUTION_SECONDS: i64 = 60;

/// One mutation of one account, with everything it needs from outside.
#[derive(Debug, Clone)]
pub struct Operation {
    pub account: AccountId,
    pub command: Command,
    pub key: Option<IdempotencyKey>,
    pub now: Timestamp,
    /// Random suffix for the id of whatever the command creates.
    pub new_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    pub outcome: Outcome,
    /// The answer comes from an earlier request with the same key.
    pub replayed: bool,
    /// Credits this execution moved, by kind (empty for a replay): what the
    /// server's metrics count.
    pub tally: Tally,
}

/// Credits moved by one execution, summed from its entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub purchased: u64,
    /// Debited, or captured from a hold.
    pub spent: u64,
    pub expired: u64,
    /// Monthly free credits and promotional grants.
    pub granted: u64,
    /// Credits of undelivered messages given back.
    pub refunded: u64,
}

impl Tally {
    pub fn of(entries: &[Entry]) -> Tally {
        let mut t = Tally::default();
        for e in entries {
            let up = e.delta_credits.max(0).unsigned_abs();
            let down = e.delta_credits.min(0).unsigned_abs();
            match e.kind {
                EntryKind::Purchase => t.purchased += up,
                EntryKind::Debit => t.spent += down,
                EntryKind::Capture => t.spent += e.held_delta_credits.min(0).unsigned_abs(),
                EntryKind::Expire => t.expired += down,
                EntryKind::GrantMonthly | EntryKind::Grant => t.granted += up,
                EntryKind::Refund => t.refunded += up,
                _ => {}
            }
        }
        t
    }
}

/// A page request: newest first, at most [`MAX_PAGE_LIMIT`] items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub cursor: Option<String>,
    pub limit: usize,
}

pub const DEFAULT_PAGE_LIMIT: usize = 50;
pub const MAX_PAGE_LIMIT: usize = 500;

impl PageRequest {
    pub fn new(cursor: Option<String>, limit: Option<i64>) -> Result<PageRequest, LedgerError> {
        let limit = limit.unwrap_or(DEFAULT_PAGE_LIMIT as i64);
        if !(1..=MAX_PAGE_LIMIT as i64).contains(&limit) {
            return Err(LedgerError::invalid(format!(
                "limit must be between 1 and {MAX_PAGE_LIMIT}, got {limit}"
            )));
        }
        Ok(PageRequest { cursor, limit: limit as usize })
    }

    pub fn first(limit: usize) -> PageRequest {
        PageRequest { cursor: None, limit }
    }
}

/// What a loaded answer of an earlier request looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub request: String,
    pub response: String,
}

/// Checks the command and gives its fingerprint: what an idempotency key
/// is bound to.
pub fn request_of(op: &Operation) -> Result<String, LedgerError> {
    op.command.validate()?;
    serde_json::to_string(&op.command).map_err(|e| LedgerError::Internal(e.to_string()))
}

/// A debit's answer as kept with its key: the debit it made, by id. The
/// debit's row holds the whole answer ([`DebitView::as_made`]), so the key
/// does not repeat it (a stored debit answer in full was about 275 bytes
/// of JSON, this one about 30).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MadeDebit {
    debit: String,
}

/// The debit a stored answer names instead of holding, if it is one.
pub fn debit_named(stored: &StoredAnswer) -> Option<String> {
    // A whole answer is an object that starts with its "type".
    if !stored.response.starts_with("{\"debit\":") {
        return None;
    }
    serde_json::from_str::<MadeDebit>(&stored.response).ok().map(|m| m.debit)
}

/// The first answer to `key` again, or a conflict if it answered another
/// request. `state` is the account's, with the debit the answer names
/// loaded (see [`debit_named`]).
pub fn replay(
    state: &AccountState,
    key: &IdempotencyKey,
    request: &str,
    stored: &StoredAnswer,
) -> Result<Executed, LedgerError> {
    if stored.request != request {
        return Err(LedgerError::IdempotencyConflict { key: key.to_string() });
    }
    let account = &state.account.id;
    if let Some(id) = debit_named(stored) {
        let Some(debit) = state.debits.iter().find(|d| d.id == id) else {
            return Err(LedgerError::Internal(format!(
                "the stored answer of key {key} of account {account} names debit {id}, which is not there"
            )));
        };
        let outcome = Outcome::Debit(DebitView::as_made(account.as_str(), debit));
        return Ok(Executed { outcome, replayed: true, tally: Tally::default() });
    }
    let bad = |e: serde_json::Error| LedgerError::Internal(format!("stored answer of key {key}: {e}"));
    let mut answer: serde_json::Value = serde_json::from_str(&stored.response).map_err(bad)?;
    // Answers stored before objects carried `account_id` get it back.
    if let Some(body) = answer.get_mut("body").and_then(serde_json::Value::as_object_mut) {
        body.entry("account_id").or_insert_with(|| account.as_str().into());
    }
    let outcome = serde_json::from_value(answer).map_err(bad)?;
    Ok(Executed { outcome, replayed: true, tally: Tally::default() })
}

/// What a command does to a loaded state.
pub struct Transition {
    pub after: AccountState,
    pub outcome: Outcome,
    pub changes: Changes,
    pub tally: Tally,
}

pub fn transition(before: &AccountState, op: &Operation) -> Result<Transition, LedgerError> {
    let mut after = before.clone();
    let ctx = Ctx { now: op.now, new_id: op.new_id.clone() };
    let (outcome, changes) = command::apply(&mut after, &op.command, &ctx)?;
    let tally = Tally::of(&changes.entries);
    Ok(Transition { after, outcome, changes, tally })
}

/// What to remember with the key, `after` being the account's state the
/// operation left: a debit's answer by the debit's id when its row
/// rebuilds the answer exactly, any other answer whole.
pub fn answer_of(
    request: String,
    outcome: &Outcome,
    after: &AccountState,
) -> Result<StoredAnswer, LedgerError> {
    let internal = |e: serde_json::Error| LedgerError::Internal(e.to_string());
    if let Outcome::Debit(view) = outcome
        && let Some(debit) = after.debits.iter().find(|d| d.id == view.id)
        && DebitView::as_made(after.account.id.as_str(), debit) == *view
    {
        let response = serde_json::to_string(&MadeDebit { debit: view.id.clone() }).map_err(internal)?;
        return Ok(StoredAnswer { request, response });
    }
    let response = serde_json::to_string(outcome).map_err(internal)?;
    Ok(StoredAnswer { request, response })
}

/// A place the ledger keeps its accounts (the `store` layer implements it
/// for SQLite and PostgreSQL).
pub trait Store: Clone + Send + Sync + 'static {
    /// Runs one mutation atomically, in a group of the write pipeline
    /// ([`super::batch`]).
    fn execute(&self, op: Operation) -> impl Future<Output = Result<Executed, LedgerError>> + Send;

    /// Creates an account, or answers the existing one if it has the same
    /// settings (`false`: nothing was created).
    fn create_account(
        &self,
        new: NewAccount,
        defaults: AccountDefaults,
        now: Timestamp,
    ) -> impl Future<Output = Result<(AccountView, bool), LedgerError>> + Send;

    /// A consistent snapshot of an account's state, for reads.
    fn state(
        &self,
        account: AccountId,
        needs: Needs,
    ) -> impl Future<Output = Result<AccountState, LedgerError>> + Send;

    /// Accounts, newest first; with `prefix`, those whose id or name
    /// starts with it, ignoring case.
    fn accounts(
        &self,
        page: PageRequest,
        prefix: Option<String>,
    ) -> impl Future<Output = Result<Page<AccountView>, LedgerError>> + Send;

    fn purchases(
        &self,
        account: AccountId,
        month: Option<Month>,
        page: PageRequest,
    ) -> impl Future<Output = Result<Page<PurchaseView>, LedgerError>> + Send;

    fn entries(
        &self,
        account: AccountId,
        page: PageRequest,
    ) -> impl Future<Output = Result<Page<EntryView>, LedgerError>> + Send;

    /// Debits (captures included), newest first; with `reference`, only
    /// those that carry it.
    fn debits(
        &self,
        account: AccountId,
        reference: Option<String>,
        page: PageRequest,
    ) -> impl Future<Output = Result<Page<DebitView>, LedgerError>> + Send;

    /// The account's events after sequence `after`, oldest first.
    fn events(
        &self,
        account: AccountId,
        after: i64,
        page: PageRequest,
    ) -> impl Future<Output = Result<Page<EventView>, LedgerError>> + Send;

    /// Holds, newest first, as they stand at `now`; with `status`, only
    /// those in it.
    fn holds(
        &self,
        account: AccountId,
        status: Option<HoldStatus>,
        now: Timestamp,
        page: PageRequest,
    ) -> impl Future<Output = Result<Page<HoldView>, LedgerError>> + Send;

    /// One snapshot of the account's state (as [`Store::state`] with no
    /// needs) and its stored usage counters for the months `from..=to`.
    fn usage(
        &self,
        account: AccountId,
        from: Month,
        to: Month,
    ) -> impl Future<Output = Result<(AccountState, Vec<UsageView>), LedgerError>> + Send;

    /// Statements of one account, or of every account for one month.
    fn statements(
        &self,
        account: Option<AccountId>,
        month: Option<Month>,
        page: PageRequest,
    ) -> impl Future<Output = Result<Page<StatementView>, LedgerError>> + Send;

    /// Accounts with purchases or refunds not yet on a statement.
    /// Accounts that may not have heard of their month's free credits yet:
    /// none announced, or one before `newest` (see
    /// [`crate::store::reads::ACCOUNTS_TO_RESET`]), with their zones.
    fn accounts_to_reset(
        &self,
        newest: Month,
    ) -> impl Future<
        Output = Result<Vec<(AccountId, crate::domain::period::Zone, Option<Month>)>, LedgerError>,
    > + Send;

    fn accounts_to_bill(&self) -> impl Future<Output = Result<Vec<AccountId>, LedgerError>> + Send;

    /// Stores an account token (only the SHA-256 of its secret, hex);
    /// refused past [`crate::store::tokens::MAX_TOKENS_PER_ACCOUNT`].
    fn add_token(
        &self,
        account: AccountId,
        token: NewToken,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// The token of `account` whose secret hashes to `secret_sha256` (hex),
    /// read from the database on every call: a revoked token is gone for
    /// every replica at once.
    fn token_by_secret(
        &self,
        account: AccountId,
        secret_sha256: String,
    ) -> impl Future<Output = Result<Option<TokenInfo>, LedgerError>> + Send;

    /// The account's tokens, newest first.
    fn tokens(&self, account: AccountId) -> impl Future<Output = Result<Vec<TokenInfo>, LedgerError>> + Send;

    /// Deletes a token; `false` if the account has none with that id.
    fn revoke_token(
        &self,
        account: AccountId,
        token_id: String,
    ) -> impl Future<Output = Result<bool, LedgerError>> + Send;

    /// Records that the token was used at `at`.
    fn touch_token(
        &self,
        account: AccountId,
        token_id: String,
        at: Timestamp,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Makes one change to the webhook rows in one transaction
    /// ([`EndpointChange`]: a new endpoint, an endpoint overwritten, a
    /// redelivery, a recovery); with a key, the key is kept in that
    /// transaction with what the change did, and a retry answers that
    /// again (a conflict if the key came with another request). `None`:
    /// there was no such endpoint or delivery; nothing changed and the
    /// key is not kept.
    fn change_webhooks(
        &self,
        change: EndpointChange,
        key: Option<RequestKey>,
    ) -> impl Future<Output = Result<Option<Keyed<Changed>>, LedgerError>> + Send;

    /// Every endpoint, newest first (at most [`super::webhook::MAX_ENDPOINTS`]).
    fn endpoints(&self) -> impl Future<Output = Result<Vec<Endpoint>, LedgerError>> + Send;

    fn endpoint(&self, id: String) -> impl Future<Output = Result<Option<Endpoint>, LedgerError>> + Send;

    /// Deletes an endpoint and its deliveries; `false` if there is none.
    fn delete_endpoint(&self, id: String) -> impl Future<Output = Result<bool, LedgerError>> + Send;

    /// Turns up to [`crate::store::webhooks::DISPATCH_BATCH`] events not yet
    /// dispatched into one pending delivery per endpoint that wants them
    /// (enabled or not: a disabled endpoint gets them when enabled again);
    /// how many events it dispatched.
    fn dispatch(&self, now: Timestamp) -> impl Future<Output = Result<usize, LedgerError>> + Send;

    /// Leases until `lease_until` at most `limit` (at most
    /// [`crate::store::webhooks::CLAIM_BATCH`]) of the deliveries due at
    /// `now`, each the earliest pending event of its account for its
    /// endpoint.
    fn claim(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Claimed>, LedgerError>> + Send;

    /// Records attempts of claimed deliveries (and disables an endpoint
    /// that answered 410), all in one transaction.
    fn record(
        &self,
        attempts: Vec<(Claimed, Recorded)>,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// An endpoint's deliveries, newest first; with `status`, only those.
    fn deliveries(
        &self,
        endpoint: String,
        status: Option<DeliveryStatus>,
        page: PageRequest,
    ) -> impl Future<Output = Result<Page<DeliveryView>, LedgerError>> + Send;

    /// The attempts of the endpoint's delivery of `event_id`, newest first
    /// (at most [`super::webhook::MAX_ATTEMPTS_KEPT`]); `None` when the
    /// endpoint has no such delivery.
    fn attempts(
        &self,
        endpoint: String,
        event_id: String,
    ) -> impl Future<Output = Result<Option<Vec<super::webhook::AttemptView>>, LedgerError>> + Send;

    /// Brings everything acknowledged so far into the tables every reader
    /// sees: SQLite materializes its log (before a CLI exits, and when a
    /// benchmark's timed run ends); PostgreSQL writes its tables in each
    /// group's transaction and has nothing to do.
    fn settle(&self) -> impl Future<Output = Result<(), LedgerError>> + Send {
        async { Ok(()) }
    }

    /// Rows in every table, for the benchmark's rows-per-operation figure.
    fn row_count(&self) -> impl Future<Output = Result<u64, LedgerError>> + Send;

    /// Replays every account's entries and checks every derived row.
    fn audit(&self) -> impl Future<Output = Result<AuditReport, LedgerError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers stored before objects carried `account_id` (and debit
    /// refunds an `id`) replay with the account filled in.
    #[test]
    fn an_answer_stored_before_account_ids_replays_with_its_account() {
        let account = AccountId::parse("cafe").unwrap();
        let key = IdempotencyKey::parse("k-1").unwrap();
        let response = r#"{"type":"debit_refund","body":{"debit_id":"deb_1","credits":2,"expired_credits":0,
            "refunded_credits":2,"balance_after":998,"created_at":"2026-11-10T12:00:00Z"}}"#;
        let stored = StoredAnswer { request: "r".into(), response: response.into() };
        let state = state_of(&account);
        let done = replay(&state, &key, "r", &stored).unwrap();
        assert!(done.replayed);
        assert_eq!(done.outcome.body()["account_id"], "cafe");
        assert_eq!(done.outcome.body()["debit_id"], "deb_1");
        let other = replay(&state, &key, "another request", &stored);
        assert!(matches!(other, Err(LedgerError::IdempotencyConflict { .. })), "{other:?}");
    }

    fn state_of(account: &AccountId) -> AccountState {
        let new = NewAccount { id: account.to_string(), name: "Cafe".into(), ..Default::default() };
        let zone = crate::domain::period::Zone::utc();
        let at: Timestamp = "2026-11-01T00:00:00Z".parse().unwrap();
        AccountState::new(new.build(&AccountDefaults::new(zone), at).unwrap())
    }

    fn debit_op(account: &AccountId, credits: i64, new_id: &str) -> Operation {
        let credits = crate::domain::credits::Credits::new(credits).unwrap();
        Operation {
            account: account.clone(),
            command: Command::Debit { credits, reference: Some("msg-1".into()), description: None },
            key: Some(IdempotencyKey::parse("k-1").unwrap()),
            now: "2026-11-10T12:00:00Z".parse().unwrap(),
            new_id: new_id.into(),
        }
    }

    /// A debit's key keeps the debit's id alone, and its replay rebuilds
    /// the first answer from the debit's row: exactly, even after a refund
    /// of the debit changed the row; a debit that is not there is an
    /// internal error, never another answer.
    #[test]
    fn a_debit_answer_is_kept_as_its_debit_and_replays_as_it_was_made() {
        let account = AccountId::parse("cafe").unwrap();
        let op = debit_op(&account, 5, "one");
        let done = transition(&state_of(&account), &op).unwrap();
        let request = request_of(&op).unwrap();
        let stored = answer_of(request.clone(), &done.outcome, &done.after).unwrap();
        let Outcome::Debit(view) = &done.outcome else { panic!("{:?}", done.outcome) };
        assert_eq!(stored.response, format!(r#"{{"debit":"{}"}}"#, view.id));
        assert_eq!(debit_named(&stored), Some(view.id.clone()));

        let key = op.key.clone().unwrap();
        let again = replay(&done.after, &key, &request, &stored).unwrap();
        assert!(again.replayed);
        assert_eq!(again.outcome, done.outcome);

        let refund = Operation {
            command: Command::RefundDebit {
                debit_id: view.id.clone(),
                credits: crate::domain::credits::Credits::new(2).unwrap(),
            },
            key: None,
            new_id: "two".into(),
            ..op.clone()
        };
        let refunded = transition(&done.after, &refund).unwrap().after;
        assert_eq!(refunded.debits[0].refunded, 2);
        let again = replay(&refunded, &key, &request, &stored).unwrap();
        assert_eq!(again.outcome, done.outcome, "the first answer, refunded 0");

        let gone = replay(&state_of(&account), &key, &request, &stored);
        assert!(matches!(&gone, Err(LedgerError::Internal(m)) if m.contains(&view.id)), "{gone:?}");
        let other = replay(&done.after, &key, "another request", &stored);
        assert!(matches!(other, Err(LedgerError::IdempotencyConflict { .. })), "{other:?}");
    }

    /// Every answer that is not a debit's is kept whole, and so is a debit
    /// whose row would not rebuild it (never the case as made; checked).
    #[test]
    fn other_answers_are_kept_whole() {
        let account = AccountId::parse("cafe").unwrap();
        let op = debit_op(&account, 5, "one");
        let done = transition(&state_of(&account), &op).unwrap();
        let mut changed = done.after.clone();
        changed.debits[0].balance_after += 1;
        let stored = answer_of("r".into(), &done.outcome, &changed).unwrap();
        assert!(stored.response.starts_with(r#"{"type":"debit","body":{"#), "{}", stored.response);
        assert_eq!(debit_named(&stored), None);
        let again = replay(&state_of(&account), &op.key.clone().unwrap(), "r", &stored).unwrap();
        assert_eq!(again.outcome, done.outcome);

        let purchase = Operation {
            command: Command::Purchase { credits: crate::domain::credits::Credits::new(100).unwrap() },
            ..op
        };
        let bought = transition(&state_of(&account), &purchase).unwrap();
        let stored = answer_of("r".into(), &bought.outcome, &bought.after).unwrap();
        assert!(stored.response.starts_with(r#"{"type":"purchase""#), "{}", stored.response);
    }
}
