//! The log's tail: the last version of every row the writer has committed
//! to the log (`log.rs`) but not yet materialized into the tables, kept in
//! the writer's memory so the next groups load what was acknowledged.
//!
//! A group's load runs its queries on the tables, then [`Tail::patch`]
//! lays the tail over what they returned: a row the tail holds replaces
//! the stored one (or drops it, if it no longer matches the load's
//! condition), and the tail's rows that match a load are added. The
//! conditions are the loads' own ([`Load`]): active lots, held holds,
//! unbilled purchases, refunds waiting for a line, failed statements. Only
//! what a group can load is kept (entries only as each account's latest
//! instant); the rest of a group's rows (entries, events, usage counters)
//! are in the log alone until materialized.
//!
//! Each row carries the log position that wrote its version, so the tail
//! is trimmed as the materializer catches up ([`Tail::trim`]): a row whose
//! version is materialized is read from the tables again, and the tail
//! holds only what the tables do not have yet.
//!
//! The tail is also the writer's cache of accounts: once a group has read
//! an account's rows of a load by account from the tables (its row, its
//! latest entry, its active lots, held holds, unbilled purchases, pending
//! refunds, failed statements), the tail keeps them ([`Tail::remember`])
//! and the account is *warm* for that load: later groups take those rows
//! from the tail and ask the tables nothing, and a trim keeps what a warm
//! account's loads need. At most [`MAX_WARM_ACCOUNTS`] accounts are warm;
//! beyond that the least recently used are let go (their rows leave once
//! materialized). Only the writer changes these rows (another process's
//! writes go through the log, and the writer that finds them drops its
//! whole tail), so a warm account's rows are exactly the tables' plus
//! what was logged since.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use jiff::Timestamp;

use crate::domain::account::Account;
use crate::domain::debit::Debit;
use crate::domain::hold::{Hold, HoldStatus};
use crate::domain::lot::Lot;
use crate::domain::purchase::{Purchase, PurchaseRefund};
use crate::domain::statement::{Statement, StatementStatus};
use crate::ledger::StoredAnswer;
use crate::ledger::batch::{Loaded, Pair, Rows};
use crate::store::pipeline::{Ask, Load};

/// Most accounts the writer's tail keeps warm (about 1 KiB each with a few
/// lots), plus those of the group that loads them.
pub const MAX_WARM_ACCOUNTS: usize = 65_536;

/// The position of a row the tail read from the tables.
const STORED: i64 = i64::MIN;

#[derive(Debug, Default)]
pub struct Tail {
    accounts: HashMap<String, At<Account>>,
    latest_entries: HashMap<String, At<Timestamp>>,
    lots: BTreeMap<Pair, At<(Lot, bool)>>,
    holds: BTreeMap<Pair, At<Hold>>,
    debits: HashMap<Pair, At<Debit>>,
    purchases: BTreeMap<Pair, At<Purchase>>,
    refunds: BTreeMap<Pair, At<PurchaseRefund>>,
    /// By account and statement id (the id a command names).
    statements: BTreeMap<Pair, At<Statement>>,
    keys: HashMap<Pair, At<StoredAnswer>>,
    /// The positions the tail holds, oldest first, with the keys of the
    /// loadable rows each wrote (so a trim visits only those).
    positions: VecDeque<Logged>,
    /// Operations whose groups the tail holds.
    ops: usize,
    /// The warm accounts: which loads the tail answers whole for each.
    warm: HashMap<String, Warm>,
    /// Groups loaded so far (the clock of least recent use).
    clock: u64,
    /// The mark the tail was last trimmed to.
    mark: i64,
    /// Most accounts kept warm (none: a reader's tail, which keeps nothing).
    max_warm: usize,
}

/// A warm account: its loads the tail answers (bits of [`bit`]) and the
/// group that last used it.
#[derive(Debug, Clone, Copy)]
struct Warm {
    loads: u8,
    used: u64,
}

/// The bit of a load by account in [`Warm::loads`] (0 for loads by pair).
fn bit(load: Load) -> u8 {
    match load {
        Load::Accounts => 1,
        Load::LatestEntry => 2,
        Load::ActiveLots => 4,
        Load::HeldHolds => 8,
        Load::UnbilledPurchases => 16,
        Load::PendingRefunds => 32,
        Load::FailedStatements => 64,
        Load::Holds | Load::Debits | Load::Purchases | Load::Statements | Load::Keys | Load::Lots => 0,
    }
}

/// Whether `a` is warm for `load`.
fn is_warm(warm: &HashMap<String, Warm>, a: &str, load: Load) -> bool {
    warm.get(a).is_some_and(|w| w.loads & bit(load) != 0)
}

/// A position of the log in the tail, with the keys of the loadable rows
/// it wrote (the rows themselves are in the maps, once).
#[derive(Debug, Default)]
struct Logged {
    position: i64,
    ops: usize,
    accounts: Vec<String>,
    lots: Vec<Pair>,
    holds: Vec<Pair>,
    debits: Vec<Pair>,
    purchases: Vec<Pair>,
    refunds: Vec<Pair>,
    statements: Vec<Pair>,
    keys: Vec<Pair>,
    /// The accounts it wrote entries of.
    entries_of: Vec<String>,
}

/// A row's last version and the log position that wrote it.
#[derive(Debug)]
struct At<T> {
    row: T,
    position: i64,
}

/// The condition of [`Load::UnbilledPurchases`].
fn unbilled(p: &Purchase) -> bool {
    p.statement_id.is_none() && p.credits > p.refunded_unbilled_credits
}

/// The condition of [`Load::PendingRefunds`].
fn pending(r: &PurchaseRefund) -> bool {
    r.needs_line && r.statement_id.is_none()
}

fn pair(a: &str, id: &str) -> Pair {
    (a.to_string(), id.to_string())
}

/// The rows of account `a` in a map keyed by (account, id).
fn of_account<'m, T>(map: &'m BTreeMap<Pair, At<T>>, a: &'m str) -> impl Iterator<Item = &'m T> + 'm {
    map.range((a.to_string(), String::new())..).take_while(move |((acc, _), _)| acc == a).map(|(_, v)| &v.row)
}

impl Tail {
    /// Operations not yet materialized.
    pub fn ops(&self) -> usize {
        self.ops
    }

    /// Whether the tail holds no row at all.
    pub fn is_empty(&self) -> bool {
        self.ops == 0 && self.warm.is_empty() && self.accounts.is_empty()
    }

    /// Whether the tail answers `load` of account `a` whole (the tables
    /// need not be asked).
    pub fn answers(&self, load: Load, a: &str) -> bool {
        is_warm(&self.warm, a, load)
    }

    /// A group about to load `accounts`: they are the most recently used.
    pub fn touch(&mut self, accounts: &[String]) {
        self.clock += 1;
        for a in accounts {
            if let Some(w) = self.warm.get_mut(a) {
                w.used = self.clock;
            }
        }
    }

    /// Keeps what a round read from the tables (`fresh`, before the tail
    /// was laid over it) for the accounts each load by account asked the
    /// tables for (`asked`), under any newer version the tail holds, and
    /// makes those accounts warm for those loads (an account the tables do
    /// not have stays cold: it may be created later).
    pub fn remember(&mut self, asked: &[(Load, Vec<String>)], fresh: &Loaded) {
        if asked.is_empty() || self.max_warm == 0 {
            return;
        }
        // Only what a load by account asked the tables for, and only rows
        // that meet its condition: what a load by pair brought (a captured
        // hold, a billed purchase) no warm load needs, and no trim would
        // find it again.
        let asked_for: HashSet<(u8, &str)> =
            asked.iter().flat_map(|(l, ids)| ids.iter().map(move |a| (bit(*l), a.as_str()))).collect();
        let wants = |load: Load, a: &str| asked_for.contains(&(bit(load), a));
        let stored = |row| At { row, position: STORED };
        for a in fresh.accounts.iter().filter(|a| wants(Load::Accounts, a.id.as_str())) {
            self.accounts.entry(a.id.as_str().to_string()).or_insert_with(|| stored(a.clone()));
        }
        for (a, t) in fresh.latest_entries.iter().filter(|(a, _)| wants(Load::LatestEntry, a)) {
            self.latest_entries.entry(a.clone()).or_insert(At { row: *t, position: STORED });
        }
        for (a, l) in fresh.lots.iter().filter(|(a, _)| wants(Load::ActiveLots, a)) {
            self.lots
                .entry(pair(a, &l.id))
                .or_insert_with(|| At { row: (l.clone(), true), position: STORED });
        }
        let held = |(a, h): &&(String, Hold)| h.status == HoldStatus::Held && wants(Load::HeldHolds, a);
        for (a, h) in fresh.holds.iter().filter(held) {
            self.holds.entry(pair(a, &h.id)).or_insert_with(|| At { row: h.clone(), position: STORED });
        }
        let unbilled_of = |(a, p): &&(String, Purchase)| unbilled(p) && wants(Load::UnbilledPurchases, a);
        for (a, p) in fresh.purchases.iter().filter(unbilled_of) {
            self.purchases.entry(pair(a, &p.id)).or_insert_with(|| At { row: p.clone(), position: STORED });
        }
        let pending_of = |(a, r): &&(String, PurchaseRefund)| pending(r) && wants(Load::PendingRefunds, a);
        for (a, r) in fresh.refunds.iter().filter(pending_of) {
            self.refunds.entry(pair(a, &r.id)).or_insert_with(|| At { row: r.clone(), position: STORED });
        }
        let failed = |st: &&Statement| {
            st.status == StatementStatus::Failed && wants(Load::FailedStatements, st.account_id.as_str())
        };
        for st in fresh.statements.iter().filter(failed) {
            self.statements
                .entry(pair(st.account_id.as_str(), &st.id))
                .or_insert_with(|| At { row: st.clone(), position: STORED });
        }
        for (load, accounts) in asked {
            for a in accounts.iter().filter(|a| self.accounts.contains_key(a.as_str())) {
                let w = self.warm.entry(a.clone()).or_insert(Warm { loads: 0, used: self.clock });
                w.loads |= bit(*load);
            }
        }
        if self.warm.len() > self.max_warm {
            self.cool();
        }
    }

    /// Lets the least recently used go cold, down to seven eighths of the
    /// limit (those the last group used stay), and drops their rows that
    /// are materialized.
    fn cool(&mut self) {
        let mut used: Vec<u64> = self.warm.values().map(|w| w.used).collect();
        let keep = (self.max_warm - self.max_warm / 8).max(1);
        let cut = used.len() - keep;
        let (_, &mut oldest_kept, _) = used.select_nth_unstable(cut);
        self.warm.retain(|_, w| w.used >= oldest_kept);
        self.sweep(self.mark);
    }

    /// Drops every row (the limit of warm accounts stays).
    pub fn clear(&mut self) {
        *self = Tail { max_warm: self.max_warm, ..Tail::default() };
    }

    /// A writer's tail, which keeps at most `max_warm` accounts warm.
    pub fn keeping(max_warm: usize) -> Tail {
        Tail { max_warm, ..Tail::default() }
    }

    /// Accounts warm now.
    pub fn warm(&self) -> usize {
        self.warm.len()
    }

    /// Takes in the rows of a committed group of `ops` operations, logged
    /// at `position`: each row moves into its map, and the position keeps
    /// its key.
    pub fn absorb(&mut self, rows: Rows, ops: usize, position: i64) {
        self.ops += ops;
        let mut logged = Logged { position, ops, ..Logged::default() };
        /// Into `map` (a hash or B-tree map) under `key`, with the key
        /// noted in `keys`.
        fn put<K: Clone, T>(
            map: &mut impl Extend<(K, At<T>)>,
            keys: &mut Vec<K>,
            key: K,
            row: T,
            position: i64,
        ) {
            keys.push(key.clone());
            map.extend([(key, At { row, position })]);
        }
        for a in rows.accounts {
            put(&mut self.accounts, &mut logged.accounts, a.id.as_str().to_string(), a, position);
        }
        for (a, lot, active) in rows.lots {
            put(&mut self.lots, &mut logged.lots, pair(a.as_str(), &lot.id), (lot, active), position);
        }
        for (a, h) in rows.holds {
            put(&mut self.holds, &mut logged.holds, pair(a.as_str(), &h.id), h, position);
        }
        for (a, d) in rows.debits {
            put(&mut self.debits, &mut logged.debits, pair(a.as_str(), &d.id), d, position);
        }
        for (a, p) in rows.purchases {
            put(&mut self.purchases, &mut logged.purchases, pair(a.as_str(), &p.id), p, position);
        }
        for (a, r) in rows.refunds {
            put(&mut self.refunds, &mut logged.refunds, pair(a.as_str(), &r.id), r, position);
        }
        for st in rows.statements {
            let k = pair(st.account_id.as_str(), &st.id);
            put(&mut self.statements, &mut logged.statements, k, st, position);
        }
        for k in rows.keys {
            put(&mut self.keys, &mut logged.keys, pair(k.account.as_str(), &k.key), k.answer, position);
        }
        for e in &rows.entries {
            let a = e.account.as_str();
            self.latest_entries.insert(a.to_string(), At { row: e.entry.created_at, position });
            if logged.entries_of.last().is_none_or(|last| last != a) {
                logged.entries_of.push(a.to_string());
            }
        }
        self.positions.push_back(logged);
    }

    /// Drops what the tables hold now that the log is materialized up to
    /// `upto`: rows whose last version was logged at or before it, but for
    /// what a warm account's loads need.
    pub fn trim(&mut self, upto: i64) {
        self.mark = self.mark.max(upto);
        while self.positions.front().is_some_and(|l| l.position <= upto) {
            let logged = self.positions.pop_front().expect("a front");
            self.ops -= logged.ops;
            self.forget(&logged);
        }
    }

    /// Drops each row `logged` names whose version is the one logged
    /// there, unless a warm account's load needs it.
    fn forget(&mut self, logged: &Logged) {
        let (p, warm) = (logged.position, &self.warm);
        let ours = |position: i64| position == p;
        for id in &logged.accounts {
            if self.accounts.get(id).is_some_and(|v| ours(v.position)) && !is_warm(warm, id, Load::Accounts) {
                self.accounts.remove(id);
            }
        }
        for a in &logged.entries_of {
            if self.latest_entries.get(a).is_some_and(|v| ours(v.position))
                && !is_warm(warm, a, Load::LatestEntry)
            {
                self.latest_entries.remove(a);
            }
        }
        for k in &logged.lots {
            if self
                .lots
                .get(k)
                .is_some_and(|v| ours(v.position) && !(v.row.1 && is_warm(warm, &k.0, Load::ActiveLots)))
            {
                self.lots.remove(k);
            }
        }
        for k in &logged.holds {
            if self.holds.get(k).is_some_and(|v| {
                ours(v.position)
                    && !(v.row.status == HoldStatus::Held && is_warm(warm, &k.0, Load::HeldHolds))
            }) {
                self.holds.remove(k);
            }
        }
        for k in &logged.debits {
            if self.debits.get(k).is_some_and(|v| ours(v.position)) {
                self.debits.remove(k);
            }
        }
        for k in &logged.purchases {
            if self.purchases.get(k).is_some_and(|v| {
                ours(v.position) && !(unbilled(&v.row) && is_warm(warm, &k.0, Load::UnbilledPurchases))
            }) {
                self.purchases.remove(k);
            }
        }
        for k in &logged.refunds {
            if self.refunds.get(k).is_some_and(|v| {
                ours(v.position) && !(pending(&v.row) && is_warm(warm, &k.0, Load::PendingRefunds))
            }) {
                self.refunds.remove(k);
            }
        }
        for k in &logged.statements {
            if self.statements.get(k).is_some_and(|v| {
                ours(v.position)
                    && !(v.row.status == StatementStatus::Failed
                        && is_warm(warm, &k.0, Load::FailedStatements))
            }) {
                self.statements.remove(k);
            }
        }
        for k in &logged.keys {
            if self.keys.get(k).is_some_and(|v| ours(v.position)) {
                self.keys.remove(k);
            }
        }
    }

    /// Drops the rows materialized by `upto` that no warm account's load
    /// needs.
    fn sweep(&mut self, upto: i64) {
        let Tail {
            accounts,
            latest_entries,
            lots,
            holds,
            debits,
            purchases,
            refunds,
            statements,
            keys,
            warm,
            ..
        } = self;
        let warm = &*warm;
        accounts.retain(|a, v| v.position > upto || is_warm(warm, a, Load::Accounts));
        latest_entries.retain(|a, v| v.position > upto || is_warm(warm, a, Load::LatestEntry));
        lots.retain(|(a, _), v| v.position > upto || (v.row.1 && is_warm(warm, a, Load::ActiveLots)));
        holds.retain(|(a, _), v| {
            v.position > upto || (v.row.status == HoldStatus::Held && is_warm(warm, a, Load::HeldHolds))
        });
        purchases.retain(|(a, _), v| {
            v.position > upto || (unbilled(&v.row) && is_warm(warm, a, Load::UnbilledPurchases))
        });
        refunds.retain(|(a, _), v| {
            v.position > upto || (pending(&v.row) && is_warm(warm, a, Load::PendingRefunds))
        });
        statements.retain(|(a, _), v| {
            v.position > upto
                || (v.row.status == StatementStatus::Failed && is_warm(warm, a, Load::FailedStatements))
        });
        debits.retain(|_, v| v.position > upto);
        keys.retain(|_, v| v.position > upto);
    }

    /// Lays the tail over `fresh`, what one round of loads (`asks`) read
    /// from the tables: stored rows the tail has a newer version of are
    /// dropped, then the tail's rows each load asks for are added.
    pub fn patch(&self, asks: &[(Load, Ask<'_>)], fresh: &mut Loaded) {
        if self.is_empty() {
            return;
        }
        fresh.accounts.retain(|a| !self.accounts.contains_key(a.id.as_str()));
        fresh.latest_entries.retain(|(a, _)| !self.latest_entries.contains_key(a));
        fresh.lots.retain(|(a, l)| !self.lots.contains_key(&pair(a, &l.id)));
        fresh.holds.retain(|(a, h)| !self.holds.contains_key(&pair(a, &h.id)));
        fresh.debits.retain(|(a, d)| !self.debits.contains_key(&pair(a, &d.id)));
        fresh.purchases.retain(|(a, p)| !self.purchases.contains_key(&pair(a, &p.id)));
        fresh.refunds.retain(|(a, r)| !self.refunds.contains_key(&pair(a, &r.id)));
        fresh.statements.retain(|s| !self.statements.contains_key(&pair(s.account_id.as_str(), &s.id)));
        fresh.keys.retain(|(k, _)| !self.keys.contains_key(k));
        for (load, ask) in asks {
            match ask {
                Ask::Accounts(ids) => ids.iter().for_each(|a| self.add_of_account(*load, a, fresh)),
                Ask::Pairs(pairs) => pairs.iter().for_each(|p| self.add_named(*load, p, fresh)),
            }
        }
    }

    /// The tail's rows of account `a` that `load` (a load by account) asks for.
    fn add_of_account(&self, load: Load, a: &str, fresh: &mut Loaded) {
        let owned = || a.to_string();
        match load {
            Load::Accounts => fresh.accounts.extend(self.accounts.get(a).map(|x| x.row.clone())),
            Load::LatestEntry => {
                fresh.latest_entries.extend(self.latest_entries.get(a).map(|x| (owned(), x.row)))
            }
            Load::ActiveLots => fresh.lots.extend(
                of_account(&self.lots, a).filter(|(_, active)| *active).map(|(l, _)| (owned(), l.clone())),
            ),
            Load::HeldHolds => fresh.holds.extend(
                of_account(&self.holds, a)
                    .filter(|h| h.status == HoldStatus::Held)
                    .map(|h| (owned(), h.clone())),
            ),
            Load::UnbilledPurchases => fresh
                .purchases
                .extend(of_account(&self.purchases, a).filter(|p| unbilled(p)).map(|p| (owned(), p.clone()))),
            Load::PendingRefunds => fresh
                .refunds
                .extend(of_account(&self.refunds, a).filter(|r| pending(r)).map(|r| (owned(), r.clone()))),
            Load::FailedStatements => fresh.statements.extend(
                of_account(&self.statements, a).filter(|s| s.status == StatementStatus::Failed).cloned(),
            ),
            Load::Holds | Load::Debits | Load::Purchases | Load::Statements | Load::Keys | Load::Lots => {
                unreachable!("{load:?} is a load by pair")
            }
        }
    }

    /// The tail's row that `load` (a load by pair) names, if it has it.
    fn add_named(&self, load: Load, p: &Pair, fresh: &mut Loaded) {
        let a = || p.0.clone();
        match load {
            Load::Holds => fresh.holds.extend(self.holds.get(p).map(|h| (a(), h.row.clone()))),
            Load::Debits => fresh.debits.extend(self.debits.get(p).map(|d| (a(), d.row.clone()))),
            Load::Purchases => fresh.purchases.extend(self.purchases.get(p).map(|x| (a(), x.row.clone()))),
            Load::Statements => fresh.statements.extend(self.statements.get(p).map(|s| s.row.clone())),
            Load::Keys => fresh.keys.extend(self.keys.get(p).map(|k| (p.clone(), k.row.clone()))),
            Load::Lots => fresh.lots.extend(self.lots.get(p).map(|l| (a(), l.row.0.clone()))),
            _ => unreachable!("{load:?} is a load by account"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::account::AccountId;
    use crate::ledger::batch::KeyRow;

    fn key_row(key: &str, response: &str) -> KeyRow {
        KeyRow {
            account: AccountId::parse("a").expect("an id"),
            key: key.into(),
            answer: StoredAnswer { request: "r".into(), response: response.into() },
            at: Timestamp::UNIX_EPOCH,
        }
    }

    /// What the tail lays over an empty load of the keys `k1` and `k2`.
    fn keys_seen(tail: &Tail) -> Vec<(String, String)> {
        let pairs = [pair("a", "k1"), pair("a", "k2")];
        let mut fresh = Loaded::default();
        tail.patch(&[(Load::Keys, Ask::Pairs(&pairs))], &mut fresh);
        fresh.keys.into_iter().map(|((_, k), answer)| (k, answer.response)).collect()
    }

    /// A row is kept once, in its last version; a trim drops it only when
    /// the position that wrote that version is materialized.
    #[test]
    fn a_trim_drops_a_row_only_once_its_last_version_is_materialized() {
        let mut tail = Tail::keeping(4);
        tail.absorb(Rows { keys: vec![key_row("k1", "first")], ..Rows::default() }, 1, 1);
        let second = Rows { keys: vec![key_row("k1", "again"), key_row("k2", "other")], ..Rows::default() };
        tail.absorb(second, 2, 2);
        let both = vec![("k1".to_string(), "again".to_string()), ("k2".to_string(), "other".to_string())];
        assert_eq!(keys_seen(&tail), both);
        assert_eq!(tail.ops(), 3);

        tail.trim(1);
        assert_eq!(keys_seen(&tail), both, "k1's last version was logged at 2");
        assert_eq!(tail.ops(), 2);

        tail.trim(2);
        assert_eq!(keys_seen(&tail), vec![], "both are in the tables now");
        assert_eq!(tail.ops(), 0);
        assert!(tail.is_empty());
    }
}
