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

use std::collections::{BTreeMap, HashMap, VecDeque};

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
    /// The positions the tail holds, oldest first, with their operations.
    positions: VecDeque<(i64, usize)>,
    /// Operations whose groups the tail holds.
    ops: usize,
}

/// A row's last version and the log position that wrote it.
#[derive(Debug)]
struct At<T> {
    row: T,
    position: i64,
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

    pub fn is_empty(&self) -> bool {
        self.ops == 0
    }

    pub fn clear(&mut self) {
        *self = Tail::default();
    }

    /// Takes in the rows of a committed group of `ops` operations, logged
    /// at `position`.
    pub fn absorb(&mut self, rows: &Rows, ops: usize, position: i64) {
        self.ops += ops;
        self.positions.push_back((position, ops));
        for a in &rows.accounts {
            self.accounts.insert(a.id.as_str().to_string(), At { row: a.clone(), position });
        }
        for (a, lot, active) in &rows.lots {
            self.lots.insert(pair(a.as_str(), &lot.id), At { row: (lot.clone(), *active), position });
        }
        for (a, h) in &rows.holds {
            self.holds.insert(pair(a.as_str(), &h.id), At { row: h.clone(), position });
        }
        for (a, d) in &rows.debits {
            self.debits.insert(pair(a.as_str(), &d.id), At { row: d.clone(), position });
        }
        for (a, p) in &rows.purchases {
            self.purchases.insert(pair(a.as_str(), &p.id), At { row: p.clone(), position });
        }
        for (a, r) in &rows.refunds {
            self.refunds.insert(pair(a.as_str(), &r.id), At { row: r.clone(), position });
        }
        for s in &rows.statements {
            self.statements.insert(pair(s.account_id.as_str(), &s.id), At { row: s.clone(), position });
        }
        for k in &rows.keys {
            self.keys.insert(pair(k.account.as_str(), &k.key), At { row: k.answer.clone(), position });
        }
        for e in &rows.entries {
            self.latest_entries
                .insert(e.account.as_str().to_string(), At { row: e.entry.created_at, position });
        }
    }

    /// Drops what the tables hold now that the log is materialized up to
    /// `upto`: rows whose last version was logged at or before it.
    pub fn trim(&mut self, upto: i64) {
        if self.positions.front().is_none_or(|&(p, _)| p > upto) {
            return;
        }
        while let Some(&(p, ops)) = self.positions.front()
            && p <= upto
        {
            self.ops -= ops;
            self.positions.pop_front();
        }
        if self.positions.is_empty() {
            self.clear();
            return;
        }
        self.accounts.retain(|_, v| v.position > upto);
        self.latest_entries.retain(|_, v| v.position > upto);
        self.lots.retain(|_, v| v.position > upto);
        self.holds.retain(|_, v| v.position > upto);
        self.debits.retain(|_, v| v.position > upto);
        self.purchases.retain(|_, v| v.position > upto);
        self.refunds.retain(|_, v| v.position > upto);
        self.statements.retain(|_, v| v.position > upto);
        self.keys.retain(|_, v| v.position > upto);
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
            Load::UnbilledPurchases => fresh.purchases.extend(
                of_account(&self.purchases, a)
                    .filter(|p| p.statement_id.is_none() && p.credits > p.refunded_unbilled_credits)
                    .map(|p| (owned(), p.clone())),
            ),
            Load::PendingRefunds => fresh.refunds.extend(
                of_account(&self.refunds, a)
                    .filter(|r| r.needs_line && r.statement_id.is_none())
                    .map(|r| (owned(), r.clone())),
            ),
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
