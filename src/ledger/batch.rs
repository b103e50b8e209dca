//! The pure middle of the one write pipeline, shared by every store.
//!
//! A store takes a group of queued operations and, inside one transaction
//! holding the accounts' locks:
//! 1. asks [`Wants::of`] what the group needs and loads it into a
//!    [`Loaded`] (one query per table for the whole group, then the
//!    unbilled purchases of the accounts that auto-recharge,
//!    [`Loaded::recharging`], then the lots the loaded rows name,
//!    [`Loaded::missing_lots`], and the debits whose answers loaded keys
//!    name, [`Loaded::named_debits`]);
//! 2. calls [`apply`], which runs the operations in arrival order on
//!    those states, in memory, and returns each operation's answer and the
//!    [`Rows`] to write;
//! 3. writes the rows (one statement per table where the database allows)
//!    and commits, then answers.
//!
//! Invariants of [`apply`]: an account's state carries from one operation
//! to the next; a refused operation writes nothing (its work is done on a
//! copy that is dropped); a key used twice in a group answers from the
//! first; every row appears once, in its last version (upserts of one key
//! twice in one statement are an error in PostgreSQL). No I/O, no clock.

use std::collections::{BTreeMap, HashMap, HashSet};

use jiff::Timestamp;

use crate::domain::account::{Account, AccountId};
use crate::domain::command::Needs;
use crate::domain::debit::Debit;
use crate::domain::entry::Entry;
use crate::domain::event::Event;
use crate::domain::hold::Hold;
use crate::domain::lot::Lot;
use crate::domain::period::Month;
use crate::domain::purchase::{Purchase, PurchaseRefund};
use crate::domain::state::AccountState;
use crate::domain::statement::Statement;
use crate::domain::usage;
use crate::domain::view::UsageView;

use super::LedgerError;
use super::store::{
    Executed, Operation, StoredAnswer, answer_of, debit_named, replay, request_of, transition,
};

/// An (account, id) pair: a row named by its key.
pub type Pair = (String, String);

/// What a group needs loaded, besides every named account's row, active
/// lots and held holds. Lists are sorted and without repeats.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Wants {
    pub accounts: Vec<String>,
    pub keys: Vec<Pair>,
    pub holds: Vec<Pair>,
    pub debits: Vec<Pair>,
    pub purchases: Vec<Pair>,
    /// Accounts whose unbilled purchases and pending refund lines are needed.
    pub unbilled: Vec<String>,
    /// Accounts whose unbilled purchases are needed if they auto-recharge.
    pub unbilled_if_recharging: Vec<String>,
    pub statements: Vec<Pair>,
    /// Accounts whose `failed` statements are needed (a status change).
    pub failed_statements: Vec<String>,
}

impl Wants {
    /// What `ops` need; an operation whose command is invalid needs nothing
    /// (it is answered without a load).
    pub fn of(ops: &[Operation]) -> Wants {
        let mut w = Wants::default();
        for op in ops.iter().filter(|op| op.command.validate().is_ok()) {
            let a = op.account.as_str();
            w.add(a, &op.command.needs());
            if let Some(key) = &op.key {
                w.keys.push((a.to_string(), key.as_str().to_string()));
            }
        }
        w.settle();
        w
    }

    /// What a read of one account needs.
    pub fn read(account: &AccountId, needs: &Needs) -> Wants {
        let mut w = Wants::default();
        w.add(account.as_str(), needs);
        w.settle();
        w
    }

    fn add(&mut self, a: &str, needs: &Needs) {
        let pair = |id: &String| (a.to_string(), id.clone());
        self.accounts.push(a.to_string());
        self.holds.extend(needs.hold.iter().map(pair));
        self.debits.extend(needs.debit.iter().map(pair));
        self.purchases.extend(needs.purchase.iter().map(pair));
        if needs.unbilled {
            self.unbilled.push(a.to_string());
        }
        if needs.unbilled_if_recharging {
            self.unbilled_if_recharging.push(a.to_string());
        }
        if let Some(s) = &needs.statement {
            self.statements.push(pair(s));
            self.failed_statements.push(a.to_string());
        }
    }

    fn settle(&mut self) {
        fn tidy<T: Ord>(v: &mut Vec<T>) {
            v.sort_unstable();
            v.dedup();
        }
        tidy(&mut self.accounts);
        tidy(&mut self.keys);
        tidy(&mut self.holds);
        tidy(&mut self.debits);
        tidy(&mut self.purchases);
        tidy(&mut self.unbilled);
        tidy(&mut self.unbilled_if_recharging);
        tidy(&mut self.statements);
        tidy(&mut self.failed_statements);
    }
}

/// What a store loaded for a group: rows with the account they belong to.
/// A row may come twice (named and active); [`apply`] keeps one.
#[derive(Debug, Default, Clone)]
pub struct Loaded {
    pub accounts: Vec<Account>,
    pub lots: Vec<(String, Lot)>,
    pub holds: Vec<(String, Hold)>,
    pub debits: Vec<(String, Debit)>,
    pub purchases: Vec<(String, Purchase)>,
    pub refunds: Vec<(String, PurchaseRefund)>,
    pub statements: Vec<Statement>,
    pub keys: Vec<(Pair, StoredAnswer)>,
    /// Each account's latest entry instant (none for an account without).
    pub latest_entries: Vec<(String, Timestamp)>,
}

impl Loaded {
    /// Adds another round's rows.
    pub fn extend(&mut self, more: Loaded) {
        self.accounts.extend(more.accounts);
        self.lots.extend(more.lots);
        self.holds.extend(more.holds);
        self.debits.extend(more.debits);
        self.purchases.extend(more.purchases);
        self.refunds.extend(more.refunds);
        self.statements.extend(more.statements);
        self.keys.extend(more.keys);
        self.latest_entries.extend(more.latest_entries);
    }

    /// The accounts of `wants.unbilled_if_recharging` that auto-recharge and
    /// whose unbilled purchases the first round did not load.
    pub fn recharging(&self, wants: &Wants) -> Vec<String> {
        let mut out: Vec<String> = self
            .accounts
            .iter()
            .filter(|a| a.auto_recharge.is_some())
            .map(|a| a.id.as_str().to_string())
            .filter(|a| wants.unbilled_if_recharging.binary_search(a).is_ok())
            .filter(|a| wants.unbilled.binary_search(a).is_err())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Lots that the loaded debits, purchases and holds name but that were
    /// not loaded as active (a debit refunded into last month's free lot, a
    /// purchase with nothing unused): the load's last round.
    pub fn missing_lots(&self) -> Vec<Pair> {
        let have: HashSet<(&str, &str)> =
            self.lots.iter().map(|(a, l)| (a.as_str(), l.id.as_str())).collect();
        let mut wanted: Vec<Pair> = Vec::new();
        let mut want = |a: &str, lot: &str| {
            if !have.contains(&(a, lot)) {
                wanted.push((a.to_string(), lot.to_string()));
            }
        };
        for (a, d) in &self.debits {
            d.parts.iter().for_each(|p| want(a, &p.lot_id));
        }
        for (a, p) in &self.purchases {
            want(a, &p.id);
        }
        for (a, h) in &self.holds {
            h.parts.iter().for_each(|p| want(a, &p.lot_id));
        }
        wanted.sort_unstable();
        wanted.dedup();
        wanted
    }

    /// Debits that loaded keys' answers name ([`debit_named`]) but that
    /// were not loaded: a retry of a debit is answered from its row (the
    /// load's last round, with [`Loaded::missing_lots`]; a replay needs
    /// none of the debit's lots).
    pub fn named_debits(&self) -> Vec<Pair> {
        let have: HashSet<(&str, &str)> =
            self.debits.iter().map(|(a, d)| (a.as_str(), d.id.as_str())).collect();
        let mut wanted: Vec<Pair> = self
            .keys
            .iter()
            .filter_map(|((a, _), stored)| debit_named(stored).map(|d| (a.clone(), d)))
            .filter(|(a, d)| !have.contains(&(a.as_str(), d.as_str())))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        wanted
    }

    /// The loaded states by account, each row once.
    pub fn into_states(self) -> (HashMap<String, AccountState>, HashMap<Pair, StoredAnswer>) {
        let mut states: HashMap<String, AccountState> =
            self.accounts.into_iter().map(|a| (a.id.as_str().to_string(), AccountState::new(a))).collect();
        for (a, at) in self.latest_entries {
            if let Some(state) = states.get_mut(&a) {
                state.latest_entry_at = Some(at);
            }
        }
        let s = &mut states;
        place(s, self.lots, |s| &mut s.lots, |l| &l.id);
        place(s, self.holds, |s| &mut s.holds, |h| &h.id);
        place(s, self.debits, |s| &mut s.debits, |d| &d.id);
        place(s, self.purchases, |s| &mut s.purchases, |p| &p.id);
        place(s, self.refunds, |s| &mut s.pending_refunds, |r| &r.id);
        let statements = self.statements.into_iter().map(|st| (st.account_id.as_str().to_string(), st));
        place(s, statements, |s| &mut s.statements, |st| &st.id);
        (states, self.keys.into_iter().collect())
    }
}

/// Puts each row into its account's state, unless one with its id is
/// there already (a row loaded both as named and as active).
fn place<T>(
    states: &mut HashMap<String, AccountState>,
    rows: impl IntoIterator<Item = (String, T)>,
    list: fn(&mut AccountState) -> &mut Vec<T>,
    id: fn(&T) -> &String,
) {
    for (a, row) in rows {
        if let Some(state) = states.get_mut(&a) {
            let list = list(state);
            if !list.iter().any(|x| id(x) == id(&row)) {
                list.push(row);
            }
        }
    }
}

/// An idempotency key to remember: the account, the key, the answer, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub account: AccountId,
    pub key: String,
    pub answer: StoredAnswer,
    pub at: Timestamp,
}

/// An entry to append, with the key of the operation that made it. Ids are
/// 0: the store numbers entries in this order (so an account's ids follow
/// its operations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRow {
    pub account: AccountId,
    pub entry: Entry,
    pub key: Option<String>,
}

/// Everything a group writes: each row once, in its last version.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rows {
    pub accounts: Vec<Account>,
    /// With whether the lot is active (loaded by the next operation).
    pub lots: Vec<(AccountId, Lot, bool)>,
    pub holds: Vec<(AccountId, Hold)>,
    pub debits: Vec<(AccountId, Debit)>,
    pub purchases: Vec<(AccountId, Purchase)>,
    pub refunds: Vec<(AccountId, PurchaseRefund)>,
    pub statements: Vec<Statement>,
    pub entries: Vec<EntryRow>,
    /// The outbox: each event once, numbered per account in order.
    pub events: Vec<(AccountId, Event)>,
    pub keys: Vec<KeyRow>,
    /// What the group adds to each account's monthly usage counters (one
    /// row per account and month, summed over the group; stores add them
    /// to what is stored).
    pub usage: Vec<(AccountId, UsageView)>,
}

impl Rows {
    pub fn is_empty(&self) -> bool {
        self.usage.is_empty()
            && self.accounts.is_empty()
            && self.entries.is_empty()
            && self.events.is_empty()
            && self.keys.is_empty()
            && self.statements.is_empty()
            && self.purchases.is_empty()
            && self.refunds.is_empty()
            && self.debits.is_empty()
            && self.holds.is_empty()
            && self.lots.is_empty()
    }
}

/// Keeps the last version of each row (by `id`), in first-seen order.
fn last_versions<T>(rows: Vec<T>, id: impl Fn(&T) -> (String, String)) -> Vec<T> {
    let mut seen = HashSet::new();
    let mut kept: Vec<T> = rows.into_iter().rev().filter(|r| seen.insert(id(r))).collect();
    kept.reverse();
    kept
}

/// What a group's operations answered and what they wrote.
#[derive(Debug)]
pub struct Batch {
    /// One answer per operation, in order.
    pub answers: Vec<Result<Executed, LedgerError>>,
    pub rows: Rows,
}

/// Runs `ops` in arrival order on the states `loaded` holds (see the
/// module's invariants).
pub fn apply(loaded: Loaded, ops: &[Operation]) -> Batch {
    let (mut states, mut keys) = loaded.into_states();
    let before = states.clone();
    let mut rows = Rows::default();
    let mut answers = Vec::with_capacity(ops.len());
    let mut usage: BTreeMap<(String, Month), (AccountId, UsageView)> = BTreeMap::new();
    for op in ops {
        let first_entry = rows.entries.len();
        let answer = apply_one(op, &mut states, &mut keys, &mut rows);
        if let Some(state) = states.get(op.account.as_str()) {
            let new = rows.entries[first_entry..].iter().map(|e| &e.entry);
            for add in usage::by_month(new, &state.account.zone) {
                let at = (op.account.as_str().to_string(), add.month);
                match usage.get_mut(&at) {
                    Some((_, row)) => usage::merge(row, &add),
                    None => {
                        usage.insert(at, (op.account.clone(), add));
                    }
                }
            }
        }
        answers.push(answer);
    }
    rows.usage = usage.into_values().collect();
    let mut ids: Vec<&String> = states.keys().collect();
    ids.sort_unstable();
    for a in ids {
        let (old, new) = (&before[a], &states[a]);
        let id = &new.account.id;
        if new.account != old.account {
            rows.accounts.push(new.account.clone());
        }
        for lot in new.changed_lots(old) {
            rows.lots.push((id.clone(), lot.clone(), lot.is_active(new.account.free_month)));
        }
        for hold in new.changed_holds(old) {
            rows.holds.push((id.clone(), hold.clone()));
        }
    }
    let by_id = |a: &AccountId, id: &str| (a.as_str().to_string(), id.to_string());
    rows.debits = last_versions(std::mem::take(&mut rows.debits), |(a, d)| by_id(a, &d.id));
    rows.purchases = last_versions(std::mem::take(&mut rows.purchases), |(a, p)| by_id(a, &p.id));
    rows.refunds = last_versions(std::mem::take(&mut rows.refunds), |(a, r)| by_id(a, &r.id));
    rows.statements = last_versions(std::mem::take(&mut rows.statements), |s| by_id(&s.account_id, &s.id));
    Batch { answers, rows }
}

fn apply_one(
    op: &Operation,
    states: &mut HashMap<String, AccountState>,
    keys: &mut HashMap<Pair, StoredAnswer>,
    rows: &mut Rows,
) -> Result<Executed, LedgerError> {
    let request = request_of(op)?;
    let a = op.account.as_str();
    let Some(state) = states.get_mut(a) else {
        return Err(LedgerError::AccountNotFound(a.to_string()));
    };
    let pair = op.key.as_ref().map(|k| (a.to_string(), k.as_str().to_string()));
    if let (Some(key), Some(pair)) = (&op.key, &pair)
        && let Some(stored) = keys.get(pair)
    {
        return replay(state, key, &request, stored);
    }
    // Time never runs backwards for an account: an operation stamped before
    // its latest entry (a skewed replica, a wrong clock) is applied at that
    // instant, and its answer shows it.
    let clamped;
    let latest = state.not_before_latest(op.now);
    let op = if latest > op.now {
        clamped = Operation { now: latest, ..op.clone() };
        &clamped
    } else {
        op
    };
    let done = transition(state, op)?;
    let answer = match &op.key {
        Some(_) => Some(answer_of(request, &done.outcome, &done.after)?),
        None => None,
    };
    *state = done.after;
    if !done.changes.entries.is_empty() {
        state.latest_entry_at = Some(op.now);
    }
    let id = &op.account;
    let changes = done.changes;
    rows.debits.extend(changes.debits.into_iter().map(|d| (id.clone(), d)));
    rows.purchases.extend(changes.purchases.into_iter().map(|p| (id.clone(), p)));
    rows.refunds.extend(changes.refunds.into_iter().map(|r| (id.clone(), r)));
    rows.statements.extend(changes.statements);
    rows.events.extend(changes.events.into_iter().map(|e| (id.clone(), e)));
    let key = op.key.as_ref().map(|k| k.as_str().to_string());
    for mut entry in changes.entries {
        entry.created_at = op.now;
        rows.entries.push(EntryRow { account: id.clone(), entry, key: key.clone() });
    }
    if let (Some(answer), Some(pair)) = (answer, pair) {
        rows.keys.push(KeyRow {
            account: id.clone(),
            key: pair.1.clone(),
            answer: answer.clone(),
            at: op.now,
        });
        keys.insert(pair, answer);
    }
    Ok(Executed { outcome: done.outcome, replayed: false, tally: done.tally })
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
