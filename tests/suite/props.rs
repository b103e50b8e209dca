//! Property tests (proptest).
//!
//! - [`ledger_matches_the_model`]: random sequences of operations and time
//!   jumps go through the real [`Ledger`] on a real SQLite file and, after
//!   every step, are compared with a small reference model written here
//!   (`Model`): the answer or refusal, the quote beforehand, every
//!   account's balance, lots and holds, the dates of what time brought
//!   (R3), the audit, and an idempotent replay that changes nothing.
//! - Pure properties of the domain: lot allocation (R6, R8), month
//!   boundaries in DST zones (R2, R3), and money's decimal round trip.
//!
//! A failure prints the generated case (proptest's minimal input) and the
//! trace of the commands the run resolved it to, with their instants.

use std::collections::BTreeMap;
use std::fmt::Debug;

use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp, ToSpan, civil};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use textcredits::domain::DomainError;
use textcredits::domain::account::AccountId;
use textcredits::domain::command::{Command, Needs, Outcome};
use textcredits::domain::credits::Credits;
use textcredits::domain::lot::{self, Lot, LotKind};
use textcredits::domain::money::Micros;
use textcredits::domain::period::{EARLIEST_INSTANT, LATEST_INSTANT, Month, Zone};
use textcredits::domain::state::Changes;
use textcredits::domain::view::BalanceView;
use textcredits::ledger::{IdempotencyKey, Ledger, LedgerError, MAX_PAGE_LIMIT, PageRequest, Store};
use textcredits::store::sqlite::{SqliteStore, Tuning};

use crate::util::{self, Db, ts};

/// Cases per property unless `PROPTEST_CASES` says otherwise; 64 model runs
/// of up to 40 steps take a few seconds.
const DEFAULT_CASES: u32 = 64;
/// Longest operation sequence of one model case.
const MAX_STEPS: usize = 40;
/// Every operation moves the clock on by this much, so no two lots share a
/// `created_at` and the spending order never falls back on random ids.
const STEP_MICROS: i64 = 1_000;

fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(cases);
    ProptestConfig {
        cases,
        // Failures are kept as ignored regression tests in this file, not
        // in files proptest would write next to it.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn credits(n: i64) -> Credits {
    Credits::new(n).expect("generated quantities are valid")
}

// ---------------------------------------------------------------------------
// Local months, computed with jiff directly (not with `Month`) so the model
// does not share the code it checks.

/// The 1st of the local month `t` falls in.
/// A zone from the IANA database bundled into the binary, the one the code
/// uses (the host's may be older: Debian's 2025b still has Cuba leave DST
/// in November 2026).
fn bundled_zone(name: &str) -> TimeZone {
    jiff::tz::TimeZoneDatabase::bundled().get(name).expect("known zone")
}

fn month_of(t: Timestamp, tz: &TimeZone) -> civil::Date {
    t.to_zoned(tz.clone()).date().first_of_month()
}

/// The first instant of the local month that starts on `first`.
fn start_of(first: civil::Date, tz: &TimeZone) -> Timestamp {
    first.to_zoned(tz.clone()).expect("months in range").timestamp()
}

/// The first instant of the local month `months` after the one of `t`.
fn later_month_start(t: Timestamp, tz: &TimeZone, months: i64) -> Timestamp {
    let first = month_of(t, tz).checked_add(months.months()).expect("months in range");
    start_of(first, tz)
}

// ---------------------------------------------------------------------------
// The reference model: one account's lots, holds, debits and purchases.

/// Kinds of lot; the declaration order is the order kinds are spent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Free,
    Grant,
    Purchase,
}

#[derive(Debug, Clone)]
struct MLot {
    /// `free_YYYY-MM`, or the id of the purchase or grant once known.
    id: String,
    kind: Kind,
    remaining: i64,
    held: i64,
    expires_at: Option<Timestamp>,
    created_at: Timestamp,
    expired: bool,
}

#[derive(Debug, Clone)]
struct MHold {
    id: String,
    credits: i64,
    /// Credits still held, per lot index, in the order they were taken.
    parts: Vec<(usize, i64)>,
    expires_at: Timestamp,
    /// `held`, `captured`, `released` or `expired`, as the ledger says.
    status: &'static str,
    captured: i64,
}

#[derive(Debug, Clone)]
struct MDebit {
    id: String,
    /// Credits a refund may still give back, per lot index, in spending order.
    parts: Vec<(usize, i64)>,
}

#[derive(Debug, Clone)]
struct Model {
    id: AccountId,
    tz: TimeZone,
    allowance: i64,
    created_at: Timestamp,
    /// The local month whose free lot exists (its 1st day), and that lot.
    free_month: Option<(civil::Date, usize)>,
    lots: Vec<MLot>,
    holds: Vec<MHold>,
    debits: Vec<MDebit>,
    /// The lot of each purchase (a purchase's id is its lot's).
    purchases: Vec<usize>,
}

/// Why the model expects a command to be refused.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    Insufficient { available: i64, shortfall: i64 },
    HoldNotActive,
    NotFound,
    Invalid,
}

/// What a command answered, in the terms the model can predict.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Summary {
    Purchase { credits: i64 },
    Debit { credits: i64, free: i64, grants: i64, paid: i64, balance_after: i64 },
    Hold { credits: i64, captured: i64, status: String },
    DebitRefund { credits: i64, expired: i64, balance_after: i64 },
    PurchaseRefund { credits: i64, balance_after: i64 },
    Grant { credits: i64, balance_after: i64 },
}

/// The balance fields the model predicts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Balance {
    free_allowance: i64,
    free_used: i64,
    free_remaining: i64,
    resets_at: Timestamp,
    paid: i64,
    grants: i64,
    held: i64,
    available: i64,
}

impl Balance {
    fn of(v: &BalanceView) -> Balance {
        Balance {
            free_allowance: v.free.allowance,
            free_used: v.free.used,
            free_remaining: v.free.remaining,
            resets_at: v.free.resets_at,
            paid: v.paid.remaining,
            grants: v.grants.remaining,
            held: v.held,
            available: v.available,
        }
    }
}

impl Model {
    fn new(id: AccountId, zone: &str, allowance: i64, now: Timestamp) -> Model {
        Model {
            id,
            tz: bundled_zone(zone),
            allowance,
            created_at: now,
            free_month: None,
            lots: Vec::new(),
            holds: Vec::new(),
            debits: Vec::new(),
            purchases: Vec::new(),
        }
    }

    fn push_lot(&mut self, kind: Kind, n: i64, expires_at: Option<Timestamp>, at: Timestamp) {
        self.lots.push(MLot {
            id: String::new(),
            kind,
            remaining: n,
            held: 0,
            expires_at,
            created_at: at,
            expired: false,
        });
    }

    /// Everything time alone brings, up to `now`.
    fn roll_forward(&mut self, now: Timestamp) {
        // Holds: past its TTL a hold gives back everything it still holds.
        for h in 0..self.holds.len() {
            if self.holds[h].status == "held" && self.holds[h].expires_at <= now {
                self.holds[h].status = "expired";
                let parts = std::mem::take(&mut self.holds[h].parts);
                self.give_back(&parts);
            }
        }
        // R3 and grants: at its expiry a lot loses what it has left; held
        // credits expire only when their hold gives them back.
        for l in &mut self.lots {
            if !l.expired && l.expires_at.is_some_and(|at| at <= now) {
                l.expired = true;
                l.remaining = 0;
            }
        }
        // R2: a local month brings a fresh free lot of the allowance, from
        // its first instant (or the account's creation).
        let month = month_of(now, &self.tz);
        if self.free_month.is_none_or(|(m, _)| m != month) {
            let start = start_of(month, &self.tz).max(self.created_at);
            let end = later_month_start(now, &self.tz, 1);
            self.push_lot(Kind::Free, self.allowance, Some(end), start);
            let free = self.lots.len() - 1;
            self.lots[free].id = format!("free_{}", month.strftime("%Y-%m"));
            self.free_month = Some((month, free));
        }
    }

    /// Credits leave holds (or debits) and go back to their lots; those of a
    /// lot that has expired meanwhile expire at once.
    fn give_back(&mut self, parts: &[(usize, i64)]) {
        for &(i, n) in parts {
            self.lots[i].held -= n;
            if !self.lots[i].expired {
                self.lots[i].remaining += n;
            }
        }
    }

    /// R6: this month's free lot, then grants by earliest expiry (never
    /// expiring last), then purchases oldest first; only unexpired lots with
    /// credits left.
    fn spending_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> =
            (0..self.lots.len()).filter(|&i| !self.lots[i].expired && self.lots[i].remaining > 0).collect();
        order.sort_by_key(|&i| {
            let l = &self.lots[i];
            (l.kind, l.expires_at.is_none(), l.expires_at, l.created_at)
        });
        order
    }

    /// Available = the sum of what the lots have left.
    fn available(&self) -> i64 {
        self.lots.iter().map(|l| l.remaining).sum()
    }

    /// What R6 would take for `n` credits, lot by lot, and what is missing.
    fn take(&self, n: i64) -> (Vec<(usize, i64)>, i64) {
        let mut left = n;
        let mut parts = Vec::new();
        for i in self.spending_order() {
            let k = left.min(self.lots[i].remaining);
            if k > 0 {
                parts.push((i, k));
                left -= k;
            }
        }
        (parts, left)
    }

    /// R8: all or nothing; refused with what is available and what is short.
    fn allocate(&self, n: i64) -> Result<Vec<(usize, i64)>, Refusal> {
        match self.take(n) {
            (parts, 0) => Ok(parts),
            (_, shortfall) => Err(Refusal::Insufficient { available: self.available(), shortfall }),
        }
    }

    /// Credits from free, grants and paid lots in `parts`.
    fn breakdown(&self, parts: &[(usize, i64)]) -> [i64; 3] {
        let mut by = [0; 3];
        for &(i, n) in parts {
            by[self.lots[i].kind as usize] += n;
        }
        by
    }

    fn balance(&self) -> Balance {
        let (_, free) = self.free_month.expect("rolled forward");
        let free = &self.lots[free];
        let of_kind = |kind: Kind| -> i64 {
            let lots = self.lots.iter().filter(|l| l.kind == kind && !l.expired);
            lots.map(|l| l.remaining).sum()
        };
        let active = self.holds.iter().filter(|h| h.status == "held");
        Balance {
            free_allowance: self.allowance,
            free_used: self.allowance - free.remaining - free.held,
            free_remaining: free.remaining,
            resets_at: free.expires_at.expect("free lots expire"),
            paid: of_kind(Kind::Purchase),
            grants: of_kind(Kind::Grant),
            held: active.flat_map(|h| &h.parts).map(|&(_, n)| n).sum(),
            available: self.available(),
        }
    }

    fn hold_index(&self, id: &str) -> Result<usize, Refusal> {
        let h = self.holds.iter().position(|h| h.id == id);
        let h = h.ok_or(Refusal::NotFound)?;
        if self.holds[h].status != "held" {
            return Err(Refusal::HoldNotActive);
        }
        Ok(h)
    }

    /// What `cmd` must answer at `now`; the model changes only on success.
    fn apply(&mut self, cmd: &Command, now: Timestamp) -> Result<Summary, Refusal> {
        self.roll_forward(now);
        match cmd {
            Command::Purchase { credits } => Ok(self.purchase(credits.get(), now)),
            Command::Debit { credits, .. } => self.debit(credits.get()),
            Command::Hold { credits, ttl_seconds, .. } => {
                let ttl = SignedDuration::from_secs(ttl_seconds.unwrap_or(86_400));
                self.hold(credits.get(), now + ttl)
            }
            Command::Capture { hold_id, credits } => self.capture(hold_id, *credits),
            Command::Release { hold_id } => {
                let h = self.hold_index(hold_id)?;
                self.finish_hold(h, 0, "released");
                Ok(self.hold_summary(h))
            }
            Command::RefundDebit { debit_id, credits } => self.refund_debit(debit_id, credits.get()),
            Command::RefundPurchase { purchase_id, credits } => {
                self.refund_purchase(purchase_id, credits.map(Credits::get))
            }
            Command::Grant { credits, expires_at, .. } => {
                // Grants: an expiry must lie in the future.
                if expires_at.is_some_and(|at| at <= now) {
                    return Err(Refusal::Invalid);
                }
                self.push_lot(Kind::Grant, credits.get(), *expires_at, now);
                Ok(Summary::Grant { credits: credits.get(), balance_after: self.available() })
            }
            other => panic!("the model does not know {other:?}"),
        }
    }

    /// R4: purchased credits are usable at once and never expire.
    fn purchase(&mut self, n: i64, now: Timestamp) -> Summary {
        self.push_lot(Kind::Purchase, n, None, now);
        self.purchases.push(self.lots.len() - 1);
        Summary::Purchase { credits: n }
    }

    /// R1, R6, R8: n credits leave the lots in spending order, or nothing does.
    fn debit(&mut self, n: i64) -> Result<Summary, Refusal> {
        let parts = self.allocate(n)?;
        for &(i, k) in &parts {
            self.lots[i].remaining -= k;
        }
        let [free, grants, paid] = self.breakdown(&parts);
        self.debits.push(MDebit { id: String::new(), parts });
        Ok(Summary::Debit { credits: n, free, grants, paid, balance_after: self.available() })
    }

    /// Holds: credits leave `remaining` for `held` in spending order (R6, R8).
    fn hold(&mut self, n: i64, expires_at: Timestamp) -> Result<Summary, Refusal> {
        let parts = self.allocate(n)?;
        for &(i, k) in &parts {
            self.lots[i].remaining -= k;
            self.lots[i].held += k;
        }
        self.holds.push(MHold {
            id: String::new(),
            credits: n,
            parts,
            expires_at,
            status: "held",
            captured: 0,
        });
        Ok(self.hold_summary(self.holds.len() - 1))
    }

    /// Captures spend the first `c` held credits (0..=held), the rest go back.
    fn capture(&mut self, hold_id: &str, c: i64) -> Result<Summary, Refusal> {
        let h = self.hold_index(hold_id)?;
        let held: i64 = self.holds[h].parts.iter().map(|p| p.1).sum();
        if !(0..=held).contains(&c) {
            return Err(Refusal::Invalid);
        }
        self.finish_hold(h, c, "captured");
        Ok(self.hold_summary(h))
    }

    /// Spends the first `c` credits a hold holds and gives back the rest.
    fn finish_hold(&mut self, h: usize, c: i64, status: &'static str) {
        let mut left = c;
        let mut parts = std::mem::take(&mut self.holds[h].parts);
        for (i, n) in &mut parts {
            let k = left.min(*n);
            left -= k;
            *n -= k;
            self.lots[*i].held -= k;
        }
        self.give_back(&parts);
        self.holds[h].status = status;
        self.holds[h].captured = c;
    }

    fn hold_summary(&self, h: usize) -> Summary {
        let h = &self.holds[h];
        Summary::Hold { credits: h.credits, captured: h.captured, status: h.status.into() }
    }

    /// Refunds of undelivered texts go back to the lots they came from, the
    /// longest-lived first, at most what is still refundable; credits of a
    /// lot that has expired meanwhile expire again.
    fn refund_debit(&mut self, debit_id: &str, n: i64) -> Result<Summary, Refusal> {
        let d = self.debits.iter().position(|d| d.id == debit_id);
        let d = d.ok_or(Refusal::NotFound)?;
        let refundable: i64 = self.debits[d].parts.iter().map(|p| p.1).sum();
        if n > refundable {
            return Err(Refusal::Invalid);
        }
        let (mut left, mut expired) = (n, 0);
        let mut parts = std::mem::take(&mut self.debits[d].parts);
        for (i, k) in parts.iter_mut().rev() {
            let back = left.min(*k);
            left -= back;
            *k -= back;
            if self.lots[*i].expired {
                expired += back;
            } else {
                self.lots[*i].remaining += back;
            }
        }
        self.debits[d].parts = parts;
        Ok(Summary::DebitRefund { credits: n, expired, balance_after: self.available() })
    }

    /// Refunds of purchases take back only unused credits (default: all).
    fn refund_purchase(&mut self, purchase_id: &str, n: Option<i64>) -> Result<Summary, Refusal> {
        let p = self.purchases.iter().find(|&&p| self.lots[p].id == purchase_id);
        let lot = *p.ok_or(Refusal::NotFound)?;
        let unused = self.lots[lot].remaining;
        let n = n.unwrap_or(unused);
        if n == 0 || n > unused {
            return Err(Refusal::Invalid);
        }
        self.lots[lot].remaining -= n;
        Ok(Summary::PurchaseRefund { credits: n, balance_after: self.available() })
    }

    /// Records the id the ledger gave to what `cmd` just created.
    fn bind_id(&mut self, cmd: &Command, outcome: &Outcome) {
        match (cmd, outcome) {
            (Command::Purchase { .. }, Outcome::Purchase(v)) => {
                self.lots.last_mut().expect("pushed").id = v.id.clone();
            }
            (Command::Grant { .. }, Outcome::Grant(v)) => {
                self.lots.last_mut().expect("pushed").id = v.id.clone();
            }
            (Command::Debit { .. }, Outcome::Debit(v)) => {
                self.debits.last_mut().expect("pushed").id = v.id.clone();
            }
            (Command::Hold { .. }, Outcome::Hold(v)) => {
                self.holds.last_mut().expect("pushed").id = v.id.clone();
            }
            _ => {}
        }
    }
}

/// The real answer in the model's terms; `Err(Ok(_))` is a refusal,
/// `Err(Err(_))` an error no rule explains.
fn summarize(got: &Result<Outcome, LedgerError>) -> Result<Summary, Result<Refusal, String>> {
    let outcome = match got {
        Ok(o) => o,
        Err(LedgerError::Domain(e)) => {
            return Err(match e {
                DomainError::InsufficientCredits { available, shortfall, .. } => {
                    Ok(Refusal::Insufficient { available: *available, shortfall: *shortfall })
                }
                DomainError::HoldNotActive { .. } => Ok(Refusal::HoldNotActive),
                DomainError::NotFound { .. } => Ok(Refusal::NotFound),
                DomainError::Invalid(_) => Ok(Refusal::Invalid),
                other => Err(format!("{other:?}")),
            });
        }
        Err(other) => return Err(Err(format!("{other:?}"))),
    };
    Ok(match outcome {
        Outcome::Purchase(v) => Summary::Purchase { credits: v.credits },
        Outcome::Debit(v) => Summary::Debit {
            credits: v.credits,
            free: v.from_free,
            grants: v.from_grants,
            paid: v.from_paid,
            balance_after: v.balance_after,
        },
        Outcome::Hold(v) => {
            Summary::Hold { credits: v.credits, captured: v.captured, status: v.status.as_str().to_string() }
        }
        Outcome::DebitRefund(v) => Summary::DebitRefund {
            credits: v.credits,
            expired: v.expired_credits,
            balance_after: v.balance_after,
        },
        Outcome::PurchaseRefund(v) => {
            Summary::PurchaseRefund { credits: v.credits, balance_after: v.balance_after }
        }
        Outcome::Grant(v) => Summary::Grant { credits: v.credits, balance_after: v.balance_after },
        other => return Err(Err(format!("unexpected outcome {other:?}"))),
    })
}

// ---------------------------------------------------------------------------
// Generated cases: steps name what to do; a run resolves them against the
// model into commands with real ids.

/// Havana's November 2026 starts at the first of two local midnights.
const MODEL_ZONES: &[&str] =
    &["America/Los_Angeles", "Asia/Tokyo", "Europe/Berlin", "America/Havana", "Pacific/Kiritimati"];
const ALLOWANCES: &[i64] = &[0, 25, 1000];

#[derive(Debug, Clone)]
enum Expiry {
    Never,
    InSeconds(i64),
    /// At the next local month start: the same instant the free lot expires.
    AtMonthEnd,
}

#[derive(Debug, Clone)]
enum Jump {
    Minutes(i64),
    Days(i64),
    /// To the next local month start of an account, plus an offset.
    MonthStart {
        acct: usize,
        offset_us: i64,
    },
    /// Over several idle months, to some hours into a later local month.
    IdleMonths {
        acct: usize,
        months: i64,
        hours: i64,
    },
    /// To the next instant a hold or lot of an account expires, plus an offset.
    NextExpiry {
        acct: usize,
        offset_us: i64,
    },
}

/// One step. `pick` chooses among the account's objects (any status);
/// `per_mille` scales a quantity; `over` asks for one more than allowed.
#[derive(Debug, Clone)]
enum Step {
    Purchase {
        acct: usize,
        credits: i64,
    },
    Debit {
        acct: usize,
        credits: i64,
    },
    Hold {
        acct: usize,
        credits: i64,
        ttl_seconds: Option<i64>,
    },
    Capture {
        acct: usize,
        pick: usize,
        per_mille: i64,
        over: bool,
    },
    Release {
        acct: usize,
        pick: usize,
    },
    RefundDebit {
        acct: usize,
        pick: usize,
        per_mille: i64,
        over: bool,
    },
    RefundPurchase {
        acct: usize,
        pick: usize,
        per_mille: Option<i64>,
        over: bool,
    },
    Grant {
        acct: usize,
        credits: i64,
        expiry: Expiry,
    },
    Wait(Jump),
    /// Several operations sent at once, so the store groups them: they
    /// enter its queue in this order, and must answer as if one at a time.
    Burst(Vec<Step>),
}

#[derive(Debug, Clone)]
struct Case {
    /// Each account's zone and monthly free credits.
    accounts: Vec<(&'static str, i64)>,
    start: Timestamp,
    steps: Vec<Step>,
}

fn amount() -> impl Strategy<Value = i64> {
    prop_oneof![3 => 1..=60i64, 1 => 60..=1500i64]
}

fn expiry() -> impl Strategy<Value = Expiry> {
    prop_oneof![
        2 => Just(Expiry::Never),
        3 => prop::sample::select(vec![1i64, 90, 3_600, 86_400, 9 * 86_400, 40 * 86_400])
            .prop_map(Expiry::InSeconds),
        1 => Just(Expiry::AtMonthEnd),
    ]
}

fn offset_us() -> impl Strategy<Value = i64> {
    prop::sample::select(vec![-1_000_000i64, -1, 0, 1, 3_600_000_000])
}

fn jump() -> impl Strategy<Value = Jump> {
    prop_oneof![
        3 => (1..=180i64).prop_map(Jump::Minutes),
        3 => (1..=12i64).prop_map(Jump::Days),
        3 => (0..2usize, offset_us()).prop_map(|(acct, offset_us)| Jump::MonthStart { acct, offset_us }),
        1 => (0..2usize, 2..=5i64, 0..=500i64)
            .prop_map(|(acct, months, hours)| Jump::IdleMonths { acct, months, hours }),
        2 => (0..2usize, offset_us()).prop_map(|(acct, offset_us)| Jump::NextExpiry { acct, offset_us }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let acct = || 0..2usize;
    let ttl = prop::option::of(prop::sample::select(vec![30i64, 3_600, 10 * 86_400, 30 * 86_400]));
    let over = || prop::bool::weighted(0.1);
    prop_oneof![
        3 => (acct(), amount()).prop_map(|(acct, credits)| Step::Purchase { acct, credits }),
        4 => (acct(), amount()).prop_map(|(acct, credits)| Step::Debit { acct, credits }),
        3 => (acct(), amount(), ttl)
            .prop_map(|(acct, credits, ttl_seconds)| Step::Hold { acct, credits, ttl_seconds }),
        3 => (acct(), any::<usize>(), 0..=1000i64, over()).prop_map(
            |(acct, pick, per_mille, over)| Step::Capture { acct, pick, per_mille, over }
        ),
        2 => (acct(), any::<usize>()).prop_map(|(acct, pick)| Step::Release { acct, pick }),
        2 => (acct(), any::<usize>(), 0..=1000i64, over()).prop_map(
            |(acct, pick, per_mille, over)| Step::RefundDebit { acct, pick, per_mille, over }
        ),
        2 => (acct(), any::<usize>(), prop::option::of(0..=1000i64), over()).prop_map(
            |(acct, pick, per_mille, over)| Step::RefundPurchase { acct, pick, per_mille, over }
        ),
        2 => (acct(), 1..=200i64, expiry())
            .prop_map(|(acct, credits, expiry)| Step::Grant { acct, credits, expiry }),
        4 => jump().prop_map(Step::Wait),
    ]
}

/// Most operations of one burst.
const MAX_BURST: usize = 8;

fn step_or_burst() -> impl Strategy<Value = Step> {
    let operation = step().prop_filter("a burst holds operations", |s| !matches!(s, Step::Wait(_)));
    prop_oneof![
        5 => step(),
        1 => prop::collection::vec(operation, 2..=MAX_BURST).prop_map(Step::Burst),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let account = (prop::sample::select(MODEL_ZONES), prop::sample::select(ALLOWANCES));
    (
        prop::collection::vec(account, 1..=2),
        0..(2 * 365 * 24 * 60i64),
        prop::collection::vec(step_or_burst(), 1..=MAX_STEPS),
    )
        .prop_map(|(accounts, minutes, steps)| Case { accounts, start: start_of_case(minutes), steps })
}

/// Where a case starts: mostly in 2025-2027, sometimes in the first days of
/// the accepted range or in its last three months (the runner never
/// passes its end).
fn start_of_case(minutes: i64) -> Timestamp {
    match minutes % 10 {
        0 => EARLIEST_INSTANT + SignedDuration::from_mins(minutes % (3 * 24 * 60)),
        1 => LATEST_INSTANT - SignedDuration::from_mins(1 + minutes % (90 * 24 * 60)),
        _ => ts("2025-06-01T00:00:00Z") + SignedDuration::from_mins(minutes),
    }
}

/// `per_mille` thousandths of `whole`, at least 1 (commands take positive
/// credits), or one more than `whole` when `over`.
fn scaled(whole: i64, per_mille: i64, over: bool) -> i64 {
    if over { whole + 1 } else { (whole * per_mille / 1000).max(1) }
}

/// A hold to capture or release: four times in five an active one if there
/// is any, else any hold (to be refused as not active).
fn pick_hold(m: &Model, i: usize) -> Option<usize> {
    let active: Vec<usize> = (0..m.holds.len()).filter(|&h| m.holds[h].status == "held").collect();
    if i % 5 == 0 || active.is_empty() {
        (!m.holds.is_empty()).then(|| (i / 5) % m.holds.len())
    } else {
        Some(active[(i / 5) % active.len()])
    }
}

/// The account a step acts on, and its command with real ids. An empty
/// list is asked for a well-formed id that does not exist.
fn resolve(step: &Step, models: &[Model], now: Timestamp) -> (usize, Command) {
    let n = models.len();
    let pick = |len: usize, i: usize| (len > 0).then(|| i % len);
    match *step {
        Step::Purchase { acct, credits: c } => (acct % n, Command::Purchase { credits: credits(c) }),
        Step::Debit { acct, credits: c } => {
            let cmd = Command::Debit {
                credits: credits(c),
                reference: Some(format!("campaign-{c}")),
                description: None,
            };
            (acct % n, cmd)
        }
        Step::Hold { acct, credits: c, ttl_seconds } => {
            let cmd = Command::Hold { credits: credits(c), reference: None, ttl_seconds };
            (acct % n, cmd)
        }
        Step::Capture { acct, pick: i, per_mille, over } => {
            let m = &models[acct % n];
            let (hold_id, credits) = match pick_hold(m, i) {
                Some(h) => {
                    let held: i64 = m.holds[h].parts.iter().map(|p| p.1).sum();
                    let c = if over { held + 1 } else { held * per_mille / 1000 };
                    (m.holds[h].id.clone(), c)
                }
                None => ("hold_nosuchhold".into(), 1),
            };
            (acct % n, Command::Capture { hold_id, credits })
        }
        Step::Release { acct, pick: i } => {
            let m = &models[acct % n];
            let hold_id = pick_hold(m, i).map_or("hold_nosuchhold".into(), |h| m.holds[h].id.clone());
            (acct % n, Command::Release { hold_id })
        }
        Step::RefundDebit { acct, pick: i, per_mille, over } => {
            let m = &models[acct % n];
            let (debit_id, c) = match pick(m.debits.len(), i) {
                Some(d) => {
                    let refundable = m.debits[d].parts.iter().map(|p| p.1).sum();
                    (m.debits[d].id.clone(), scaled(refundable, per_mille, over))
                }
                None => ("deb_nosuchdebit".into(), 1),
            };
            let cmd = Command::RefundDebit { debit_id, credits: credits(c) };
            (acct % n, cmd)
        }
        Step::RefundPurchase { acct, pick: i, per_mille, over } => {
            let m = &models[acct % n];
            let (purchase_id, c) = match pick(m.purchases.len(), i) {
                Some(p) => {
                    let lot = &m.lots[m.purchases[p]];
                    let c = per_mille.map(|pm| scaled(lot.remaining, pm, over));
                    (lot.id.clone(), c)
                }
                None => ("pur_nosuchpurchase".into(), None),
            };
            let cmd = Command::RefundPurchase { purchase_id, credits: c.map(credits) };
            (acct % n, cmd)
        }
        Step::Grant { acct, credits: c, ref expiry } => {
            let m = &models[acct % n];
            let expires_at = match *expiry {
                Expiry::Never => None,
                Expiry::InSeconds(s) => Some(now + SignedDuration::from_secs(s)),
                Expiry::AtMonthEnd => Some(later_month_start(now, &m.tz, 1)),
            }
            .map(|at| at.min(LATEST_INSTANT));
            let cmd = Command::Grant { credits: credits(c), expires_at, reason: "promo".into() };
            (acct % n, cmd)
        }
        Step::Wait(_) | Step::Burst(_) => unreachable!("waits and bursts are not commands"),
    }
}

/// Where a jump lands; always later than `now`.
fn land(jump: &Jump, models: &[Model], now: Timestamp) -> Timestamp {
    let n = models.len();
    let target = match *jump {
        Jump::Minutes(m) => now + SignedDuration::from_mins(m),
        Jump::Days(d) => now + SignedDuration::from_hours(24 * d),
        Jump::MonthStart { acct, offset_us } => {
            later_month_start(now, &models[acct % n].tz, 1) + SignedDuration::from_micros(offset_us)
        }
        Jump::IdleMonths { acct, months, hours } => {
            later_month_start(now, &models[acct % n].tz, months) + SignedDuration::from_hours(hours)
        }
        Jump::NextExpiry { acct, offset_us } => {
            let m = &models[acct % n];
            let holds = m.holds.iter().filter(|h| h.status == "held").map(|h| h.expires_at);
            let lots = m.lots.iter().filter(|l| !l.expired);
            let lots = lots.filter_map(|l| l.expires_at);
            let next = holds.chain(lots).filter(|&at| at > now).min();
            next.unwrap_or(now) + SignedDuration::from_micros(offset_us)
        }
    };
    // Never past the end of the accepted range (less a second for the
    // steps after this jump).
    let end = LATEST_INSTANT - SignedDuration::from_secs(1);
    target.min(end).max(now + SignedDuration::from_micros(STEP_MICROS))
}

// ---------------------------------------------------------------------------
// Running a case: the real ledger and the model, step by step.

struct Run<S> {
    ledger: Ledger<S>,
    models: Vec<Model>,
    now: Timestamp,
    trace: Vec<String>,
    /// Whether every step is checked by reads (balances, quotes, the
    /// audit); if not, only by its answers and replays, and the caller
    /// checks at points of its own (reads make SQLite materialize its log).
    reads: bool,
}

/// Fails with the message and the trace of the run so far.
macro_rules! ensure {
    ($run:expr, $cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err($run.failure(format!($($msg)+)));
        }
    };
}

impl<S: Store> Run<S> {
    fn failure(&self, msg: String) -> String {
        format!("{msg}\ntrace:\n  {}", self.trace.join("\n  "))
    }

    fn expect<T>(&self, what: &str, r: Result<T, LedgerError>) -> Result<T, String> {
        r.map_err(|e| self.failure(format!("{what} failed: {e:?}")))
    }

    async fn balance(&self, id: &AccountId) -> Result<BalanceView, String> {
        self.expect("balance", self.ledger.balance(id, self.now).await)
    }

    /// The newest entry id of an account (0 if none).
    async fn last_entry(&self, id: &AccountId) -> Result<i64, String> {
        let page = self.ledger.entries(id, PageRequest::first(1)).await;
        let page = self.expect("entries", page)?;
        Ok(page.data.first().map_or(0, |e| e.id))
    }

    /// Every account's balance is the model's; the audit replays the
    /// entries to the stored lots and finds nothing wrong.
    async fn check_all(&mut self) -> Result<(), String> {
        for m in &mut self.models {
            m.roll_forward(self.now);
        }
        for m in &self.models {
            let real = self.balance(&m.id).await?;
            let got = Balance::of(&real);
            let want = m.balance();
            ensure!(self, got == want, "balance of {}: got {got:?}, model {want:?}", m.id);
            ensure!(
                self,
                got.free_used >= 0 && got.free_used <= got.free_allowance,
                "free used out of 0..=allowance: {got:?}"
            );
            ensure!(
                self,
                got.available == got.free_remaining + got.paid + got.grants,
                "available is not free + paid + grants: {got:?}"
            );
            ensure!(
                self,
                [got.free_remaining, got.paid, got.grants, got.held].iter().all(|&n| n >= 0),
                "negative balance field: {got:?}"
            );
            self.check_lots(m).await?;
            self.check_entry_dates(m).await?;
            // Each hold's status and capture, expiry included.
            for h in 0..m.holds.len() {
                let view = self.ledger.hold(&m.id, &m.holds[h].id, self.now).await;
                let got = summarize(&view.map(Outcome::Hold));
                let want = m.hold_summary(h);
                ensure!(self, got == Ok(want.clone()), "hold {}: got {got:?}, model {want:?}", m.holds[h].id);
            }
        }
        let audit = self.expect("audit", self.ledger.audit().await)?;
        ensure!(self, audit.ok(), "audit: {:?}", audit.mismatches);
        Ok(())
    }

    /// Lot by lot, the store (rolled forward on a copy) holds what the model
    /// holds: every lot with credits left or held, by id.
    async fn check_lots(&self, m: &Model) -> Result<(), String> {
        let state = self.ledger.store().state(m.id.clone(), Needs::default());
        let mut state = self.expect("state", state.await)?;
        state.roll_forward(self.now, &mut Changes::default());
        let real: BTreeMap<&str, (i64, i64)> = state
            .lots
            .iter()
            .filter(|l| l.remaining > 0 || l.held > 0)
            .map(|l| (l.id.as_str(), (l.remaining, l.held)))
            .collect();
        let want: BTreeMap<&str, (i64, i64)> = m
            .lots
            .iter()
            .filter(|l| l.remaining > 0 || l.held > 0)
            .map(|l| (l.id.as_str(), (l.remaining, l.held)))
            .collect();
        ensure!(self, real == want, "lots of {}: got {real:?}, model {want:?}", m.id);
        Ok(())
    }

    /// R2, R3: what time brings is dated when it happened, not when it was
    /// written: a free lot starts at its month's first instant (or at the
    /// account's creation) and expires at the next month's; a grant expires
    /// at its `expires_at`.
    async fn check_entry_dates(&self, m: &Model) -> Result<(), String> {
        let mut cursor = None;
        loop {
            let page = PageRequest { cursor, limit: MAX_PAGE_LIMIT };
            let page = self.expect("entries", self.ledger.entries(&m.id, page).await)?;
            for e in &page.data {
                let Some(lot) = m.lots.iter().find(|l| l.id == e.lot_id) else {
                    return Err(self.failure(format!("{e:?} names a lot the model lacks")));
                };
                let dated = match (e.kind.as_str(), &e.source) {
                    ("grant_monthly", _) => Some(lot.created_at),
                    ("expire", None) => lot.expires_at,
                    ("expire", Some(source)) if *source == lot.id => lot.expires_at,
                    _ => None,
                };
                if let Some(at) = dated {
                    ensure!(self, e.effective_at == at, "{e:?} should be dated {at}");
                }
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(()),
            }
        }
    }

    /// A quote for a debit or hold covers exactly what the model would
    /// take, from the same kinds of lots, and changes nothing.
    async fn check_quote(&self, a: usize, cmd: &Command) -> Result<(), String> {
        let (Command::Debit { credits: c, .. } | Command::Hold { credits: c, .. }) = cmd else {
            return Ok(());
        };
        let mut m = self.models[a].clone();
        m.roll_forward(self.now);
        let (parts, shortfall) = m.take(c.get());
        let [free, grants, paid] = m.breakdown(&parts);
        let q = self.ledger.quote(&m.id, *c, self.now).await;
        let q = self.expect("quote", q)?;
        let got = (q.covered, q.available, q.from_free, q.from_grants, q.from_paid, q.shortfall);
        let want = (shortfall == 0, m.available(), free, grants, paid, shortfall);
        ensure!(self, got == want, "quote of {c}: got {got:?}, model {want:?}");
        Ok(())
    }

    async fn command(&mut self, index: usize, a: usize, cmd: Command) -> Result<(), String> {
        let id = self.models[a].id.clone();
        let now = self.now;
        self.trace.push(format!("{index}: at {now} on {id}: {cmd:?}"));
        let before = if self.reads {
            self.check_quote(a, &cmd).await?;
            Some((self.balance(&id).await?, self.last_entry(&id).await?))
        } else {
            None
        };
        let key = IdempotencyKey::parse(&format!("step-{index}")).expect("valid key");

        let mut model = self.models[a].clone();
        let want = model.apply(&cmd, now);
        let executed = self.ledger.execute(&id, cmd.clone(), Some(key.clone()), now).await;
        ensure!(
            self,
            executed.as_ref().map_or(true, |e| !e.replayed),
            "step {index}: a first request answered as a replay"
        );
        let first = executed.map(|e| e.outcome);
        let got = summarize(&first);
        self.trace.push(format!("   -> {got:?}"));
        ensure!(
            self,
            got.as_ref().map_err(|e| e.as_ref()) == want.as_ref().map_err(Ok),
            "step {index}: ledger answered {got:?}, model expects {want:?}"
        );
        if let Ok(outcome) = &first {
            model.bind_id(&cmd, outcome);
            self.models[a] = model;
        }
        let Some(before) = before else {
            return self.check_replays(index, &id, &cmd, key, &first).await;
        };
        self.check_all().await?;
        let after = (self.balance(&id).await?, self.last_entry(&id).await?);
        if first.is_err() {
            // A refused operation changes nothing, not even time's entries.
            ensure!(self, after == before, "refused step {index} changed {before:?} into {after:?}");
        }
        self.check_replays(index, &id, &cmd, key, &first).await?;
        let replayed = (self.balance(&id).await?, self.last_entry(&id).await?);
        ensure!(self, replayed == after, "replays of step {index} changed {after:?} into {replayed:?}");
        Ok(())
    }

    /// The same key and body get the first answer again (a refusal is
    /// simply refused again: nothing was remembered); the same key with
    /// another body is a conflict.
    async fn check_replays(
        &self,
        index: usize,
        id: &AccountId,
        cmd: &Command,
        key: IdempotencyKey,
        first: &Result<Outcome, LedgerError>,
    ) -> Result<(), String> {
        let now = self.now;
        let again = self.ledger.execute(id, cmd.clone(), Some(key.clone()), now).await;
        match (first, &again) {
            (Ok(o), Ok(e)) => ensure!(
                self,
                e.replayed && e.outcome == *o,
                "replay of step {index}: {e:?}, first answer {o:?}"
            ),
            (Err(f), Err(e)) => ensure!(
                self,
                format!("{f:?}") == format!("{e:?}"),
                "replay of refused step {index}: {e:?}, first {f:?}"
            ),
            _ => ensure!(self, false, "replay of step {index}: {again:?}, first {first:?}"),
        }
        if first.is_ok() {
            let other = match cmd {
                Command::Purchase { credits: c } if c.get() == 1 => 2,
                _ => 1,
            };
            let other = Command::Purchase { credits: credits(other) };
            let conflict = self.ledger.execute(id, other, Some(key), now).await;
            ensure!(
                self,
                matches!(conflict, Err(LedgerError::IdempotencyConflict { .. })),
                "same key, other body at step {index}: {conflict:?}"
            );
        }
        Ok(())
    }

    /// A burst: every operation is queued before the first is answered
    /// (`join_all` polls them in order, and each enqueues on its first
    /// poll), so the store may group them; each answer must be the model's
    /// for the operations in this order.
    async fn burst(&mut self, index: usize, steps: &[Step]) -> Result<(), String> {
        let mut sent = Vec::new();
        let mut now = self.now;
        for (j, step) in steps.iter().enumerate() {
            let (a, cmd) = resolve(step, &self.models, now);
            let key = IdempotencyKey::parse(&format!("burst-{index}-{j}")).expect("valid key");
            self.trace.push(format!("{index}.{j}: at {now} on {} (burst): {cmd:?}", self.models[a].id));
            sent.push((a, cmd, key, now));
            now += SignedDuration::from_micros(STEP_MICROS);
        }
        let answers = futures_util::future::join_all(sent.iter().map(|(a, cmd, key, at)| {
            self.ledger.execute(&self.models[*a].id, cmd.clone(), Some(key.clone()), *at)
        }))
        .await;
        for (j, ((a, cmd, _, at), answer)) in sent.iter().zip(answers).enumerate() {
            let mut model = self.models[*a].clone();
            let want = model.apply(cmd, *at);
            let first = answer.map(|e| e.outcome);
            let got = summarize(&first);
            self.trace.push(format!("   {index}.{j} -> {got:?}"));
            ensure!(
                self,
                got.as_ref().map_err(|e| e.as_ref()) == want.as_ref().map_err(Ok),
                "burst step {index}.{j}: ledger answered {got:?}, model expects {want:?}"
            );
            if let Ok(outcome) = &first {
                model.bind_id(cmd, outcome);
                self.models[*a] = model;
            }
        }
        self.now = now;
        if self.reads { self.check_all().await } else { Ok(()) }
    }

    async fn step(&mut self, index: usize, step: &Step) -> Result<(), String> {
        if let Step::Burst(steps) = step {
            return self.burst(index, steps).await;
        }
        if let Step::Wait(jump) = step {
            self.now = land(jump, &self.models, self.now);
            self.trace.push(format!("{index}: wait until {} ({jump:?})", self.now));
            return if self.reads { self.check_all().await } else { Ok(()) };
        }
        let (a, cmd) = resolve(step, &self.models, self.now);
        self.command(index, a, cmd).await?;
        self.now += SignedDuration::from_micros(STEP_MICROS);
        Ok(())
    }
}

/// The case's accounts, opened on `ledger`, and a run checked as `reads` says.
async fn start_case<S: Store>(case: &Case, ledger: Ledger<S>, reads: bool) -> Result<Run<S>, String> {
    let mut models = Vec::new();
    let mut now = case.start;
    for (i, &(zone, free)) in case.accounts.iter().enumerate() {
        let name = ["a", "b"][i];
        let id = util::account(&ledger, name, zone, free, now).await;
        models.push(Model::new(id, zone, free, now));
        now += SignedDuration::from_micros(STEP_MICROS);
    }
    let trace = vec![format!("accounts {:?} from {}", case.accounts, case.start)];
    let mut run = Run { ledger, models, now, trace, reads };
    run.check_all().await?;
    Ok(run)
}

async fn run_case<S: Store>(case: &Case, ledger: Ledger<S>) -> Result<(), String> {
    let mut run = start_case(case, ledger, true).await?;
    for (i, step) in case.steps.iter().enumerate() {
        run.step(i, step).await?;
    }
    Ok(())
}

/// What a run across SQLite's log does after a step.
#[derive(Debug, Clone, Copy)]
enum After {
    Nothing,
    /// Every check of the model (its reads materialize the log).
    Check,
    /// The store is dropped without materializing (its tail, in memory, is
    /// lost as in a crash) and opened again, which replays the log.
    Reopen,
}

fn after() -> impl Strategy<Value = After> {
    prop_oneof![6 => Just(After::Nothing), 2 => Just(After::Check), 2 => Just(After::Reopen)]
}

/// The writer waits at `max_tail_ops`; the materializer starts at
/// `batch_ops` (below it, it runs while the writer goes on appending); the
/// writer keeps `max_warm_accounts` accounts warm (few: they go cold and
/// warm again often); the replay at open goes in steps of as few table
/// rows as the tail holds operations (a log row or a few a step).
fn log_tuning(max_tail_ops: usize, batch_ops: usize, max_warm_accounts: usize) -> Tuning {
    Tuning {
        max_tail_ops,
        batch_ops,
        idle_settle: None,
        max_warm_accounts,
        settle_on_close: false,
        replay_step_rows: max_tail_ops,
    }
}

/// The model run on SQLite with a short tail, few reads and reopenings
/// after random steps: groups load from the tables under the log's tail,
/// the log is materialized at random depths and replayed at every open,
/// and accounts go cold and warm again in the writer.
async fn run_across_the_log(
    case: &Case,
    afters: &[After],
    (max_tail_ops, batch_ops, warm): (usize, usize, usize),
    db: &Db,
) -> Result<(), String> {
    let open = || {
        SqliteStore::open_with(&db.path, log_tuning(max_tail_ops, batch_ops, warm))
            .map(|s| Ledger::new(s, Zone::utc()))
    };
    let ledger = open().map_err(|e| format!("open: {e}"))?;
    let mut run = start_case(case, ledger, false).await?;
    for (i, step) in case.steps.iter().enumerate() {
        run.step(i, step).await?;
        match afters[i % afters.len()] {
            After::Nothing => {}
            After::Check => run.check_all().await?,
            After::Reopen => {
                let pending =
                    run.ledger.store().log_pending().await.map_err(|e| run.failure(e.to_string()))?;
                run.trace.push(format!("{i}: reopen with {pending} log rows to replay"));
                let Run { ledger, models, now, trace, reads } = run;
                drop(ledger);
                let ledger = open().map_err(|e| format!("reopen: {e}\ntrace:\n  {}", trace.join("\n  ")))?;
                run = Run { ledger, models, now, trace, reads };
            }
        }
    }
    run.check_all().await
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime").block_on(f)
}

proptest! {
    #![proptest_config(config(DEFAULT_CASES))]

    /// After every step: same success or refusal as the model, same balance
    /// (free, paid, grants, held, available) on every account, the audit
    /// passes, and a replay with the same key answers the same and changes
    /// nothing.
    #[test]
    fn ledger_matches_the_model(case in case()) {
        let db = Db::new();
        block_on(async { run_case(&case, db.ledger().await).await }).map_err(TestCaseError::fail)?;
    }
}

proptest! {
    #![proptest_config(config(DEFAULT_CASES))]

    /// The same across SQLite's log: what each step answers (and its
    /// replays) matches the model whether the rows it loads come from the
    /// tables or from the tail not yet materialized, and every check, after
    /// random steps and at the end, holds after materializations and after
    /// the writer is dropped with its tail and the log replayed (while its
    /// materializer may still be writing).
    #[test]
    fn ledger_matches_the_model_across_the_log(
        case in case(),
        afters in prop::collection::vec(after(), 1..=MAX_STEPS),
        max_tail_ops in 1..=12usize,
        batch_ops in 1..=12usize,
        warm in 0..=3usize,
    ) {
        let db = Db::new();
        let tuning = (max_tail_ops, batch_ops.min(max_tail_ops), warm);
        block_on(run_across_the_log(&case, &afters, tuning, &db)).map_err(TestCaseError::fail)?;
    }
}

proptest! {
    #![proptest_config(config(DEFAULT_CASES / 2))]

    /// The same on PostgreSQL (a fresh schema per case), when
    /// `TEXTCREDITS_TEST_PG` is set.
    #[test]
    fn ledger_matches_the_model_on_postgres(case in case()) {
        let Some(db) = Db::postgres() else { return Ok(()) };
        block_on(async { run_case(&case, db.pg_ledger().await).await }).map_err(TestCaseError::fail)?;
    }
}

// ---------------------------------------------------------------------------
// Pure properties of the domain.

/// Zones for month boundaries: DST in both hemispheres, midnight DST changes
/// (Asuncion, Havana, Santiago), 30- and 45-minute offsets.
const ZONES: &[&str] = &[
    "UTC",
    "America/Los_Angeles",
    "Europe/London",
    "Europe/Berlin",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "America/Asuncion",
    "America/Havana",
    "America/Santiago",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Pacific/Chatham",
];

fn zone() -> impl Strategy<Value = Zone> {
    prop::sample::select(ZONES).prop_map(|z| Zone::parse(z).expect("known zone"))
}

fn month() -> impl Strategy<Value = Month> {
    (1971..=2100i16, 1..=12i8).prop_map(|(y, m)| Month::new(y, m).expect("in range"))
}

/// A lot as `allocate` sees it: free lots expire, purchases never, grants
/// may; some have expired or have nothing left.
fn lots() -> impl Strategy<Value = Vec<Lot>> {
    let day = |d: i64| ts("2026-11-01T00:00:00Z") + SignedDuration::from_hours(24 * d);
    let one = (
        prop::sample::select(vec![LotKind::MonthlyFree, LotKind::Grant, LotKind::Purchase]),
        0..=40i64,
        prop::option::of(0..6i64),
        0..6i64,
        prop::bool::weighted(0.15),
    );
    prop::collection::vec(one, 0..8).prop_map(move |specs| {
        let lots = specs.into_iter().enumerate();
        lots.map(|(i, (kind, remaining, expiry, created, expired))| {
            let expires_at = match kind {
                LotKind::MonthlyFree => Some(day(30)),
                LotKind::Grant => expiry.map(|d| day(10 + d)),
                LotKind::Purchase => None,
            };
            Lot {
                id: format!("{}_{i}", kind.as_str()),
                kind,
                original: remaining,
                remaining: if expired { 0 } else { remaining },
                held: 0,
                expires_at,
                expired,
                created_at: day(created),
                unit_price: None,
            }
        })
        .collect()
    })
}

/// Whether `b` may be spent after `a` under R6.
fn r6_allows(a: &Lot, b: &Lot) -> bool {
    let never = |l: &Lot| l.expires_at.is_none();
    match a.kind.cmp(&b.kind) {
        std::cmp::Ordering::Less => true,
        std::cmp::Ordering::Greater => false,
        std::cmp::Ordering::Equal => match a.kind {
            LotKind::Grant => never(b) || (!never(a) && a.expires_at <= b.expires_at),
            LotKind::Purchase => a.created_at <= b.created_at,
            LotKind::MonthlyFree => true,
        },
    }
}

/// R2, R3 as in [`months_start_at_their_first_local_instant`], over every
/// month 1971-2100 in every zone: the few months whose local midnight falls
/// in a DST gap or fold are too rare for random sampling to find.
#[test]
fn months_start_at_their_first_local_instant_in_every_month() {
    let (mut gaps, mut folds) = (Vec::new(), Vec::new());
    for name in ZONES {
        let zone = Zone::parse(name).expect("known zone");
        let tz = bundled_zone(name);
        for year in 1971..=2100 {
            for month in 1..=12 {
                let m = Month::new(year, month).expect("in range");
                let start = m.start(&zone);
                let before = start - SignedDuration::from_micros(1);
                assert_eq!(Month::of(start, &zone), m, "{m} in {name}");
                assert_eq!(Month::of(before, &zone), m.prev(), "{m} in {name}");
                let midnight = m.first_day().to_datetime(civil::Time::midnight());
                let local = tz.to_ambiguous_zoned(midnight);
                match local.offset() {
                    AmbiguousOffset::Unambiguous { .. } => {}
                    AmbiguousOffset::Gap { .. } => gaps.push(format!("{name} {m}")),
                    AmbiguousOffset::Fold { .. } => {
                        folds.push(format!("{name} {m}"));
                        let earlier = local.earlier().expect("a fold has two");
                        assert_eq!(start, earlier.timestamp(), "{m} in {name}");
                    }
                }
            }
        }
    }
    // The zone list must keep both kinds of month start covered (Asuncion
    // 2023-10 starts at 01:00, Havana 2020-11 had two midnights).
    assert!(gaps.contains(&"America/Asuncion 2023-10".to_string()), "{gaps:?}");
    assert!(folds.contains(&"America/Havana 2020-11".to_string()), "{folds:?}");
}

fn same<T: PartialEq + Debug>(got: T, want: T, what: &str) -> Result<(), TestCaseError> {
    if got != want {
        return Err(TestCaseError::fail(format!("{what}: got {got:?}, want {want:?}")));
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(1024))]

    /// R6: the spending order holds exactly the spendable lots, free first,
    /// grants by earliest expiry (never last), purchases oldest first.
    #[test]
    fn r6_spending_order(lots in lots()) {
        let order = lot::spending_order(&lots);
        let spendable: Vec<usize> =
            (0..lots.len()).filter(|&i| !lots[i].expired && lots[i].remaining > 0).collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        same(sorted, spendable, "lots in the order")?;
        for w in order.windows(2) {
            let (a, b) = (&lots[w[0]], &lots[w[1]]);
            prop_assert!(r6_allows(a, b), "{} spent before {}: {lots:?}", a.id, b.id);
        }
    }

    /// R8: allocate takes exactly the credits asked or nothing, never more
    /// than a lot has, and fills lots in spending order without skipping.
    #[test]
    fn r8_allocate_is_exact_or_nothing(lots in lots(), credits in 0..=200i64) {
        let available: i64 =
            lots.iter().filter(|l| !l.expired).map(|l| l.remaining).sum();
        match lot::allocate(&lots, credits) {
            Err(reported) => {
                same(reported, available, "available")?;
                prop_assert!(credits > available, "refused {credits} of {available}");
            }
            Ok(parts) => {
                prop_assert!(credits <= available, "took {credits} of {available}");
                same(parts.iter().map(|p| p.1).sum::<i64>(), credits, "taken")?;
                let order = lot::spending_order(&lots);
                let used: Vec<usize> = parts.iter().map(|p| p.0).collect();
                same(&used[..], &order[..parts.len()], "lots used")?;
                for (k, &(i, n)) in parts.iter().enumerate() {
                    prop_assert!(n > 0 && n <= lots[i].remaining, "took {n} of {:?}", lots[i]);
                    if k + 1 < parts.len() {
                        same(n, lots[i].remaining, "an earlier lot is emptied first")?;
                    }
                }
            }
        }
    }

    /// R2, R3: a month starts at its first local instant in every zone: that
    /// instant is in the month, the microsecond before is in the previous one.
    #[test]
    fn months_start_at_their_first_local_instant(m in month(), zone in zone()) {
        let start = m.start(&zone);
        same(Month::of(start, &zone), m, "month of the start")?;
        let before = start - SignedDuration::from_micros(1);
        same(Month::of(before, &zone), m.prev(), "month just before the start")?;
        same(m.end(&zone), m.next().start(&zone), "end is the next start")?;
        same(zone.date_of(start).day(), 1, "local day of the start")?;
    }

    /// Every instant lies in its month: start <= t < end.
    #[test]
    fn instants_lie_in_their_month(
        secs in ts("1971-01-02T00:00:00Z").as_second()..ts("2100-12-30T00:00:00Z").as_second(),
        micros in 0..1_000_000i64,
        zone in zone(),
    ) {
        let t = Timestamp::from_second(secs).expect("in range")
            + SignedDuration::from_micros(micros);
        let m = Month::of(t, &zone);
        prop_assert!(m.start(&zone) <= t && t < m.end(&zone), "{t} not in {m} of {}", zone.name());
    }

    /// Money: formatting then parsing gives the amount back; the text has
    /// two to six decimals.
    #[test]
    fn micros_format_parse_round_trip(m in 0..=i64::MAX) {
        let text = Micros::from_micros(m).to_string();
        same(Micros::parse(&text).ok(), Some(Micros::from_micros(m)), &text)?;
        let (_, frac) = text.split_once('.').expect("a decimal point");
        prop_assert!((2..=6).contains(&frac.len()), "{text}");
        prop_assert!(frac.len() == 2 || !frac.ends_with('0'), "{text}");
    }

    /// Money in JSON (signed: refund lines are negative) round-trips.
    #[test]
    fn micros_json_round_trip(m in i64::MIN..=i64::MAX) {
        let json = serde_json::to_string(&Micros::from_micros(m)).expect("serializes");
        let back: Micros = serde_json::from_str(&json).expect("deserializes");
        same(back, Micros::from_micros(m), &json)?;
    }

    /// Parsing decimal text is exact: the value of the digits, or an error
    /// when it does not fit.
    #[test]
    fn micros_parse_is_exact(text in "[0-9]{1,20}(\\.[0-9]{1,6})?") {
        let (whole, frac) = text.split_once('.').unwrap_or((&text, ""));
        let exact = whole.parse::<i128>().expect("digits") * 1_000_000
            + format!("{frac:0<6}").parse::<i128>().expect("digits");
        let want = i64::try_from(exact).ok().map(Micros::from_micros);
        same(Micros::parse(&text).ok(), want, &text)?;
    }
}

/// `Micros::from_micros(i64::MIN)` round-trips although its magnitude is no `i64`
/// (the sign is applied before the range check).
#[test]
fn micros_json_round_trip_at_i64_min() {
    let json = serde_json::to_string(&Micros::from_micros(i64::MIN)).expect("serializes");
    let back = serde_json::from_str::<Micros>(&json);
    assert_eq!(back.ok(), Some(Micros::from_micros(i64::MIN)), "{json}");
}
