//! The audit: replays an account's entries and proves every derived row
//! (lots, holds, debits, purchases, statements, balances) against them.
//!
//! Stores feed it one account at a time ([`AccountRecords`]), so memory is
//! bounded by the largest account's history, not by the database.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::domain::account::Account;
use crate::domain::debit::Debit;
use crate::domain::entry::{Entry, EntryKind};
use crate::domain::hold::{Hold, HoldStatus};
use crate::domain::lot::{Breakdown, Lot, LotKind};
use crate::domain::money::Micros;
use crate::domain::purchase::{Purchase, PurchaseRefund};
use crate::domain::statement::Statement;
use crate::domain::usage;
use crate::domain::view::UsageView;

/// How many mismatches a report keeps in full; the count goes on.
pub const MAX_REPORTED_MISMATCHES: usize = 100;

/// Everything stored for one account.
#[derive(Debug, Clone)]
pub struct AccountRecords {
    pub account: Account,
    pub lots: Vec<Lot>,
    pub holds: Vec<Hold>,
    pub debits: Vec<Debit>,
    pub purchases: Vec<Purchase>,
    pub refunds: Vec<PurchaseRefund>,
    pub statements: Vec<Statement>,
    /// In id order.
    pub entries: Vec<Entry>,
    /// The stored usage counters, by month.
    pub usage: Vec<UsageView>,
    /// The outbox, by sequence.
    pub events: Vec<crate::domain::event::Event>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AuditReport {
    pub accounts: u64,
    pub entries: u64,
    pub lots: u64,
    pub holds: u64,
    pub debits: u64,
    pub purchases: u64,
    pub statements: u64,
    pub events: u64,
    pub mismatch_count: u64,
    pub mismatches: Vec<String>,
}

impl AuditReport {
    pub fn ok(&self) -> bool {
        self.mismatch_count == 0
    }

    /// Adds rows whose account does not exist: (table, account).
    pub fn orphans(&mut self, rows: impl IntoIterator<Item = (String, String)>) {
        for (table, account) in rows {
            self.mismatch_count += 1;
            if self.mismatches.len() < MAX_REPORTED_MISMATCHES {
                self.mismatches.push(format!("{table} has rows of account {account}, which does not exist"));
            }
        }
    }

    /// No entry id lies beyond the last one the store's counter handed out
    /// (else the next entry could reuse an id).
    pub fn check_sequence(&mut self, max_entry_id: i64, last_issued: i64) {
        if max_entry_id > last_issued {
            self.mismatch_count += 1;
            if self.mismatches.len() < MAX_REPORTED_MISMATCHES {
                self.mismatches
                    .push(format!("entry ids reach {max_entry_id} but the sequence is at {last_issued}"));
            }
        }
    }

    fn mismatch(&mut self, account: &Account, what: String) {
        self.mismatch_count += 1;
        if self.mismatches.len() < MAX_REPORTED_MISMATCHES {
            self.mismatches.push(format!("account {}: {what}", account.id));
        }
    }

    /// Adds one account's checks to the report.
    pub fn check(&mut self, r: &AccountRecords) {
        self.accounts += 1;
        self.entries += r.entries.len() as u64;
        self.lots += r.lots.len() as u64;
        self.holds += r.holds.len() as u64;
        self.debits += r.debits.len() as u64;
        self.purchases += r.purchases.len() as u64;
        self.statements += r.statements.len() as u64;
        self.events += r.events.len() as u64;
        // Every check looks rows up through these indexes, so the audit
        // is linear in an account's rows, not quadratic.
        let ix = Index::of(r);
        self.check_chain(r);
        self.check_lots(r);
        self.check_holds(r, &ix);
        self.check_debits(r, &ix);
        self.check_purchases(r, &ix);
        self.check_statements(r, &ix);
        self.check_usage(r);
        self.check_events(r);
    }

    /// The account's events are numbered 1, 2, 3 ... up to the last number
    /// the account gave out, none missing (a receiver would see a gap that
    /// no redelivery could fill).
    fn check_events(&mut self, r: &AccountRecords) {
        for (i, e) in r.events.iter().enumerate() {
            if e.sequence != i as i64 + 1 {
                let what = format!("event {} has sequence {}, expected {}", e.id, e.sequence, i + 1);
                return self.mismatch(&r.account, what);
            }
        }
        if r.events.len() as i64 != r.account.event_sequence {
            let what = format!(
                "{} events stored, but the account numbered {}",
                r.events.len(),
                r.account.event_sequence
            );
            self.mismatch(&r.account, what);
        }
    }

    /// The stored usage counters add up to exactly what the entries do.
    /// Compared over all months together: each entry counts in a month of
    /// the zone the account had when it was written, and a zone may change.
    fn check_usage(&mut self, r: &AccountRecords) {
        let sums = |rows: &[UsageView]| {
            rows.iter().fold([0i64; 10], |mut sum, u| {
                sum.iter_mut().zip(usage::counts(u)).for_each(|(s, c)| *s += c);
                sum
            })
        };
        let (stored, expected) = (sums(&r.usage), sums(&usage::by_month(&r.entries, &r.account.zone)));
        if stored != expected {
            self.mismatch(
                &r.account,
                format!(
                    "usage counters add up to {stored:?}, the entries to {expected:?} ({})",
                    usage::COUNTS.join(", ")
                ),
            );
        }
    }

    /// Entry ids increase, and each `balance_after` is the running sum.
    fn check_chain(&mut self, r: &AccountRecords) {
        let mut balance = 0i64;
        let mut last_id = 0i64;
        for e in &r.entries {
            if e.id <= last_id {
                self.mismatch(&r.account, format!("entry {} does not follow entry {last_id}", e.id));
            }
            last_id = e.id;
            balance += e.delta_credits;
            if e.balance_after != balance {
                self.mismatch(
                    &r.account,
                    format!("entry {}: balance_after {} but entries sum to {balance}", e.id, e.balance_after),
                );
            }
        }
        let available: i64 = r.lots.iter().map(|l| l.remaining).sum();
        if available != balance {
            self.mismatch(
                &r.account,
                format!("lots hold {available} available credits, entries sum to {balance}"),
            );
        }
    }

    fn check_lots(&mut self, r: &AccountRecords) {
        let mut sums: BTreeMap<&str, (i64, i64, i64)> = BTreeMap::new();
        for e in &r.entries {
            let s = sums.entry(e.lot_id.as_str()).or_default();
            s.0 += e.delta_credits;
            s.1 += e.held_delta_credits;
            if matches!(e.kind, EntryKind::GrantMonthly | EntryKind::Purchase | EntryKind::Grant) {
                s.2 += e.delta_credits;
            }
        }
        for l in &r.lots {
            let (remaining, held, original) = sums.remove(l.id.as_str()).unwrap_or_default();
            if (remaining, held, original) != (l.remaining, l.held, l.original) {
                self.mismatch(
                    &r.account,
                    format!(
                        "lot {}: stored remaining/held/original {}/{}/{}, entries give {remaining}/{held}/{original}",
                        l.id, l.remaining, l.held, l.original
                    ),
                );
            }
            if l.remaining < 0 || l.held < 0 || (l.expired && l.remaining != 0) {
                self.mismatch(&r.account, format!("lot {} is inconsistent: {l:?}", l.id));
            }
        }
        for lot_id in sums.keys() {
            self.mismatch(&r.account, format!("entries name lot {lot_id}, which is not stored"));
        }
    }

    fn check_holds(&mut self, r: &AccountRecords, ix: &Index<'_>) {
        let mut per_lot: BTreeMap<&str, i64> = BTreeMap::new();
        for h in &r.holds {
            let entries = ix.from(&h.id);
            let (mut held, mut captured) = (0, 0);
            for e in entries {
                held += e.held_delta_credits;
                if e.kind == EntryKind::Capture {
                    captured -= e.held_delta_credits;
                }
            }
            let active = h.status == HoldStatus::Held;
            if held != h.held()
                || captured != h.captured
                || (!active && held != 0)
                || (active && held != h.credits)
            {
                self.mismatch(
                    &r.account,
                    format!(
                        "hold {} ({}): stores {} held, {} captured; entries give {held}, {captured}",
                        h.id,
                        h.status.as_str(),
                        h.held(),
                        h.captured
                    ),
                );
            }
            // A capture of credits is a debit that names the hold back.
            let debit = h.debit_id.as_ref().and_then(|d| r.debits.iter().find(|x| &x.id == d));
            let debit_ok = match debit {
                None => h.debit_id.is_none() && (h.status != HoldStatus::Captured || h.captured == 0),
                Some(d) => d.hold_id.as_ref() == Some(&h.id) && d.credits == h.captured,
            };
            if !debit_ok {
                self.mismatch(
                    &r.account,
                    format!(
                        "hold {} captured {} credits; its debit {:?} is missing or does not match",
                        h.id, h.captured, h.debit_id
                    ),
                );
            }
            for p in &h.parts {
                *per_lot.entry(p.lot_id.as_str()).or_default() += p.credits;
            }
        }
        for l in &r.lots {
            let in_holds = per_lot.get(l.id.as_str()).copied().unwrap_or(0);
            if in_holds != l.held {
                self.mismatch(
                    &r.account,
                    format!("lot {}: {} held, active holds hold {in_holds}", l.id, l.held),
                );
            }
        }
    }

    fn check_debits(&mut self, r: &AccountRecords, ix: &Index<'_>) {
        for d in &r.debits {
            let mut spent = Breakdown::default();
            let mut refunded = 0;
            for e in ix.from(&d.id) {
                match e.kind {
                    EntryKind::Debit => spent.add(LotKind::of_lot_id(&e.lot_id), -e.delta_credits),
                    EntryKind::Refund => refunded += e.delta_credits,
                    _ => {}
                }
            }
            // A capture's credits were spent by its hold's capture entries.
            for e in d.hold_id.iter().flat_map(|h| ix.from(h)) {
                if e.kind == EntryKind::Capture {
                    spent.add(LotKind::of_lot_id(&e.lot_id), -e.held_delta_credits);
                }
            }
            let total = spent.from_free + spent.from_grants + spent.from_paid;
            let refundable: i64 = d.parts.iter().map(|p| p.credits).sum();
            if total != d.credits
                || spent != d.breakdown
                || refunded != d.refunded
                || refundable != d.credits - d.refunded
            {
                self.mismatch(
                    &r.account,
                    format!(
                        "debit {}: stored {} credits, {} refunded; entries give {total}, {refunded}",
                        d.id, d.credits, d.refunded
                    ),
                );
            }
        }
    }

    fn check_purchases(&mut self, r: &AccountRecords, ix: &Index<'_>) {
        for p in &r.purchases {
            let (mut bought, mut refunded) = (0, 0);
            for e in ix.from(&p.id) {
                match e.kind {
                    EntryKind::Purchase => bought += e.delta_credits,
                    EntryKind::Refund => refunded -= e.delta_credits,
                    _ => {}
                }
            }
            let refunds = ix.refunded.get(p.id.as_str()).copied().unwrap_or(0);
            let lot_ok = ix
                .lots
                .get(p.id.as_str())
                .is_some_and(|l| l.original == p.credits && l.unit_price == Some(p.unit_price));
            if bought != p.credits || refunded != p.refunded_credits || refunds != refunded || !lot_ok {
                self.mismatch(
                    &r.account,
                    format!(
                        "purchase {}: stored {} credits, {} refunded; entries give {bought}, {refunded}",
                        p.id, p.credits, p.refunded_credits
                    ),
                );
            }
        }
    }

    fn check_statements(&mut self, r: &AccountRecords, ix: &Index<'_>) {
        let mut billed: BTreeSet<&str> = BTreeSet::new();
        for s in &r.statements {
            // A sum or product beyond the exact range is itself a finding.
            let total = Micros::sum(s.lines.iter().map(|l| l.amount));
            for line in &s.lines {
                // Lines with a kind are rounded to the minor unit; those
                // issued before lines had kinds are the exact product.
                let expected = match line.kind {
                    Some(_) => {
                        line.unit_price.times(line.credits).and_then(|m| m.rounded(s.currency.decimals()))
                    }
                    None => line.unit_price.times(line.credits),
                };
                if expected.ok() != Some(line.amount) {
                    self.mismatch(
                        &r.account,
                        format!(
                            "statement {}: line of {} is not credits x unit price (rounded to the minor unit)",
                            s.id, line.purchase_id
                        ),
                    );
                }
                if line.credits > 0 {
                    let p = ix.purchases.get(line.purchase_id.as_str());
                    let ok = p.is_some_and(|p| {
                        p.statement_id.as_deref() == Some(&s.id)
                            && p.billable_credits() == line.credits
                            && p.month == s.month
                    });
                    if !ok || !billed.insert(&line.purchase_id) {
                        self.mismatch(
                            &r.account,
                            format!(
                                "statement {}: line of {} does not match the purchase",
                                s.id, line.purchase_id
                            ),
                        );
                    }
                }
            }
            match total {
                Ok(total) if total == s.total => {}
                Ok(total) => self.mismatch(
                    &r.account,
                    format!("statement {}: total {} but lines sum to {total}", s.id, s.total),
                ),
                Err(e) => self.mismatch(&r.account, format!("statement {}: {e}", s.id)),
            }
            let refund_lines = s.lines.iter().filter(|l| l.credits < 0).count();
            let refunds = ix.refund_lines.get(s.id.as_str()).copied().unwrap_or(0);
            if refund_lines != refunds {
                self.mismatch(
                    &r.account,
                    format!("statement {}: {refund_lines} refund lines for {refunds} refunds", s.id),
                );
            }
        }
        for p in r.purchases.iter().filter(|p| p.statement_id.is_some()) {
            if !billed.contains(p.id.as_str()) {
                self.mismatch(
                    &r.account,
                    format!("purchase {} is marked billed but on no statement line", p.id),
                );
            }
        }
    }
}

/// One account's rows by the ids the checks look them up with.
struct Index<'a> {
    /// Entries by their `source` (the hold, debit or purchase they belong to).
    by_source: HashMap<&'a str, Vec<&'a Entry>>,
    lots: HashMap<&'a str, &'a Lot>,
    purchases: HashMap<&'a str, &'a Purchase>,
    /// Credits refunded per purchase.
    refunded: HashMap<&'a str, i64>,
    /// Refunds per statement they are a line of.
    refund_lines: HashMap<&'a str, usize>,
}

impl<'a> Index<'a> {
    fn of(r: &'a AccountRecords) -> Index<'a> {
        let mut ix = Index {
            by_source: HashMap::new(),
            lots: r.lots.iter().map(|l| (l.id.as_str(), l)).collect(),
            purchases: r.purchases.iter().map(|p| (p.id.as_str(), p)).collect(),
            refunded: HashMap::new(),
            refund_lines: HashMap::new(),
        };
        for e in &r.entries {
            if let Some(source) = e.source.as_deref() {
                ix.by_source.entry(source).or_default().push(e);
            }
        }
        for f in &r.refunds {
            *ix.refunded.entry(f.purchase_id.as_str()).or_default() += f.credits;
            if let Some(s) = f.statement_id.as_deref() {
                *ix.refund_lines.entry(s).or_default() += 1;
            }
        }
        ix
    }

    fn from(&self, source: &str) -> impl Iterator<Item = &'a Entry> + '_ {
        self.by_source.get(source).into_iter().flatten().copied()
    }
}
