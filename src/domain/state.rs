//! The state of one account that a transition needs, loaded by the store
//! under the account's lock: the account, its active lots and holds, and
//! whatever the operation names (a debit to refund, a purchase, ...).
//!
//! Its size is bounded by active lots and holds, never by history: that is
//! what keeps a debit as cheap in year five as on day one.
//!
//! Time moves the state on its own (R3, hold TTLs, grant expiry): before any
//! operation, [`AccountState::roll_forward`] applies every expiry and month
//! start due at `now`, in time order, each entry dated at its instant. A
//! read runs the same roll forward on a copy and throws it away, so what a
//! merchant sees is exact at any instant without a cron job.

use jiff::Timestamp;

use super::account::Account;
use super::debit::Debit;
use super::entry::{Entry, EntryKind};
use super::hold::{Hold, HoldStatus};
use super::lot::{Lot, LotKind};
use super::period::Month;
use super::purchase::{Purchase, PurchaseRefund};
use super::statement::Statement;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    pub account: Account,
    /// Active lots, plus any the operation names.
    pub lots: Vec<Lot>,
    /// Active holds, plus the one the operation names.
    pub holds: Vec<Hold>,
    /// The debits the operations name.
    pub debits: Vec<Debit>,
    /// Purchases the operation names, or all unbilled ones (close, balance).
    pub purchases: Vec<Purchase>,
    /// Refunds of billed purchases that still need their negative line.
    pub pending_refunds: Vec<PurchaseRefund>,
    /// Statements the operation names, every `failed` one, and those
    /// closed by earlier operations of the same group.
    pub statements: Vec<Statement>,
    /// The instant of the account's latest entry: time never runs backwards
    /// for an account, so nothing is applied or read before it.
    pub latest_entry_at: Option<Timestamp>,
}

/// What a transition wrote besides lots, holds and the account (which the
/// store finds by comparing the state with its loaded copy).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub entries: Vec<Entry>,
    pub debits: Vec<Debit>,
    pub purchases: Vec<Purchase>,
    pub refunds: Vec<PurchaseRefund>,
    pub statements: Vec<Statement>,
    /// The events the change calls for (written in its transaction).
    pub events: Vec<super::event::Event>,
}

enum Event {
    LotExpires(usize),
    HoldExpires(usize),
    FreeMonthStarts(Month),
}

impl AccountState {
    pub fn new(account: Account) -> AccountState {
        AccountState {
            account,
            lots: Vec::new(),
            holds: Vec::new(),
            debits: Vec::new(),
            purchases: Vec::new(),
            pending_refunds: Vec::new(),
            statements: Vec::new(),
            latest_entry_at: None,
        }
    }

    /// `now`, or the account's latest instant if that is later: its latest
    /// entry, the end of its last closed month, the start of the month of
    /// its free credits. Time never runs backwards for an account, so an
    /// operation or read stamped earlier happens at that instant.
    pub fn not_before_latest(&self, now: Timestamp) -> Timestamp {
        let a = &self.account;
        [
            self.latest_entry_at,
            a.billed_through.map(|m| m.end(&a.zone)),
            a.free_month.map(|m| m.start(&a.zone)),
        ]
        .into_iter()
        .flatten()
        .fold(now, Timestamp::max)
    }

    /// Credits available to spend: the sum of every loaded lot's
    /// `remaining`. Lots not loaded have none, and an expired lot has none
    /// except for the instant between a credit coming back to it (a
    /// release, a refund) and its expiry entry, which this sum shows so that
    /// every entry's `balance_after` is the running sum of the ledger.
    pub fn available(&self) -> i64 {
        self.lots.iter().map(|l| l.remaining).sum()
    }

    pub fn held(&self) -> i64 {
        self.holds.iter().filter(|h| h.status == HoldStatus::Held).map(Hold::held).sum()
    }

    pub fn lot_index(&self, lot_id: &str) -> Option<usize> {
        self.lots.iter().position(|l| l.id == lot_id)
    }

    /// The current month's free lot, once it exists.
    pub fn free_lot(&self) -> Option<&Lot> {
        let month = self.account.free_month?;
        self.lots.iter().find(|l| l.id == Lot::free_id(month))
    }

    /// Appends an entry for a change already made to lot `lot`.
    pub fn record(&self, changes: &mut Changes, entry: NewEntry<'_>) {
        changes.entries.push(Entry {
            id: 0,
            kind: entry.kind,
            lot_id: self.lots[entry.lot].id.clone(),
            delta_credits: entry.delta,
            held_delta_credits: entry.held_delta,
            balance_after: self.available(),
            source: entry.source.map(str::to_string),
            reference: entry.reference.map(str::to_string),
            effective_at: entry.at,
            created_at: entry.at,
        });
    }

    /// Applies everything that time alone brings up to `now`: expiries of
    /// lots and holds, and the start of a new free month (R2, R3).
    pub fn roll_forward(&mut self, now: Timestamp, changes: &mut Changes) {
        let mut events: Vec<(Timestamp, u8, Event)> = Vec::new();
        for (i, l) in self.lots.iter().enumerate() {
            if let Some(at) = l.expires_at.filter(|&at| !l.expired && at <= now) {
                events.push((at, 0, Event::LotExpires(i)));
            }
        }
        for (i, h) in self.holds.iter().enumerate() {
            if h.status == HoldStatus::Held && h.expires_at <= now {
                events.push((h.expires_at, 1, Event::HoldExpires(i)));
            }
        }
        let zone = self.account.zone.clone();
        let month = Month::of(now, &zone);
        if self.account.free_month.is_none_or(|m| m < month) {
            let start = month.start(&zone).max(self.account.created_at);
            events.push((start, 2, Event::FreeMonthStarts(month)));
        }
        events.sort_by_key(|(at, order, _)| (*at, *order));
        for (at, _, event) in events {
            match event {
                Event::LotExpires(i) => self.expire_lot(i, at, changes),
                Event::HoldExpires(i) => {
                    self.release_hold(i, at, changes);
                    self.holds[i].status = HoldStatus::Expired;
                }
                Event::FreeMonthStarts(m) => self.start_free_month(m, at, changes),
            }
        }
    }

    fn expire_lot(&mut self, i: usize, at: Timestamp, changes: &mut Changes) {
        let lot = &mut self.lots[i];
        lot.expired = true;
        let left = lot.remaining;
        if left > 0 {
            lot.remaining = 0;
            let source = (lot.kind == LotKind::Grant).then(|| lot.id.clone());
            let entry = NewEntry::new(EntryKind::Expire, i, -left, at).source(source.as_deref());
            self.record(changes, entry);
        }
    }

    fn start_free_month(&mut self, month: Month, at: Timestamp, changes: &mut Changes) {
        let zone = &self.account.zone;
        let allowance = self.account.monthly_free_credits;
        self.lots.push(Lot {
            id: Lot::free_id(month),
            kind: LotKind::MonthlyFree,
            original: allowance,
            remaining: allowance,
            held: 0,
            expires_at: Some(month.end(zone)),
            expired: false,
            created_at: at,
            unit_price: None,
        });
        self.account.free_month = Some(month);
        let i = self.lots.len() - 1;
        self.record(changes, NewEntry::new(EntryKind::GrantMonthly, i, allowance, at));
    }

    /// Returns every credit hold `h` still holds to its lots; those of a lot
    /// that has expired meanwhile expire at once. Leaves the status to the
    /// caller (released or expired).
    pub fn release_hold(&mut self, h: usize, at: Timestamp, changes: &mut Changes) {
        let parts = std::mem::take(&mut self.holds[h].parts);
        let hold_id = self.holds[h].id.clone();
        let reference = self.holds[h].reference.clone();
        for part in parts.iter().rev() {
            let i = self.lot_index(&part.lot_id).expect("the store loads every lot an active hold holds");
            self.lots[i].held -= part.credits;
            self.lots[i].remaining += part.credits;
            let entry = NewEntry::new(EntryKind::Release, i, part.credits, at)
                .held(-part.credits)
                .source(Some(&hold_id))
                .reference(reference.as_deref());
            self.record(changes, entry);
            if self.lots[i].expired {
                self.lots[i].remaining -= part.credits;
                let entry = NewEntry::new(EntryKind::Expire, i, -part.credits, at).source(Some(&hold_id));
                self.record(changes, entry);
            }
        }
    }

    /// Lots whose stored row must be written: new or different from `before`.
    pub fn changed_lots<'a>(&'a self, before: &'a AccountState) -> impl Iterator<Item = &'a Lot> + 'a {
        self.lots.iter().filter(move |l| !before.lots.contains(l))
    }

    /// Holds whose stored row must be written.
    pub fn changed_holds<'a>(&'a self, before: &'a AccountState) -> impl Iterator<Item = &'a Hold> + 'a {
        self.holds.iter().filter(move |h| !before.holds.contains(h))
    }
}

/// The parts of an entry a transition chooses; [`AccountState::record`]
/// fills in the lot id and the balance after.
pub struct NewEntry<'a> {
    kind: EntryKind,
    lot: usize,
    delta: i64,
    held_delta: i64,
    source: Option<&'a str>,
    reference: Option<&'a str>,
    at: Timestamp,
}

impl<'a> NewEntry<'a> {
    pub fn new(kind: EntryKind, lot: usize, delta: i64, at: Timestamp) -> NewEntry<'a> {
        NewEntry { kind, lot, delta, held_delta: 0, source: None, reference: None, at }
    }

    pub fn held(mut self, held_delta: i64) -> Self {
        self.held_delta = held_delta;
        self
    }

    pub fn source(mut self, source: Option<&'a str>) -> Self {
        self.source = source;
        self
    }

    pub fn reference(mut self, reference: Option<&'a str>) -> Self {
        self.reference = reference;
        self
    }
}
