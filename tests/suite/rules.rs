//! The rules of the credit policy (DESIGN.md §1, R1-R8) and what platforms
//! expect beyond them (holds, refunds, idempotency, limits), as tests
//! generic over the store: the conformance suite. Each test runs once per
//! store through `conformance!` at the bottom.

use jiff::Timestamp;
use textcredits::domain::DomainError;
use textcredits::domain::account::{AccountId, AccountPatch, NewAccount};
use textcredits::domain::command::{Command, Outcome};
use textcredits::domain::credits::Credits;
use textcredits::domain::period::Month;
use textcredits::domain::statement::StatementStatus;
use textcredits::domain::view::{BalanceView, EntryView, StatementView};
use textcredits::ledger::{IdempotencyKey, Ledger, LedgerError, PageRequest, Store};

use crate::util::{account, ts};

fn c(n: i64) -> Credits {
    Credits::new(n).expect("test quantities are valid")
}

fn debit(n: i64) -> Command {
    Command::Debit { credits: c(n), reference: None, description: None }
}

fn purchase(n: i64) -> Command {
    Command::Purchase { credits: c(n) }
}

fn hold(n: i64, ttl_seconds: Option<i64>) -> Command {
    Command::Hold { credits: c(n), reference: Some("campaign-1".into()), ttl_seconds }
}

fn grant(n: i64, expires_at: Option<&str>) -> Command {
    Command::Grant { credits: c(n), expires_at: expires_at.map(ts), reason: "promo".into() }
}

async fn run<S: Store>(
    l: &Ledger<S>,
    a: &AccountId,
    cmd: Command,
    now: &str,
) -> Result<Outcome, LedgerError> {
    l.execute(a, cmd, None, ts(now)).await.map(|done| done.outcome)
}

async fn ok<S: Store>(l: &Ledger<S>, a: &AccountId, cmd: Command, now: &str) -> Outcome {
    run(l, a, cmd, now).await.unwrap_or_else(|e| panic!("refused: {e}"))
}

async fn balance<S: Store>(l: &Ledger<S>, a: &AccountId, now: &str) -> BalanceView {
    l.balance(a, ts(now)).await.expect("balance")
}

async fn entries<S: Store>(l: &Ledger<S>, a: &AccountId) -> Vec<EntryView> {
    l.entries(a, PageRequest::first(500)).await.expect("entries").data
}

async fn audit_ok<S: Store>(l: &Ledger<S>) {
    let report = l.audit().await.expect("audit runs");
    assert!(report.ok(), "audit: {:?}", report.mismatches);
}

fn id_of(o: &Outcome) -> String {
    match o {
        Outcome::Purchase(p) => p.id.clone(),
        Outcome::Debit(d) => d.id.clone(),
        Outcome::Hold(h) => h.id.clone(),
        Outcome::Grant(g) => g.id.clone(),
        other => panic!("no id in {other:?}"),
    }
}

fn closed(o: Outcome) -> Vec<StatementView> {
    match o {
        Outcome::Closed(s) => s,
        other => panic!("not a close: {other:?}"),
    }
}

/// Lots a debit or hold took its credits from, in order.
async fn lots_of<S: Store>(l: &Ledger<S>, a: &AccountId, source: &str) -> Vec<(String, i64)> {
    let mut found: Vec<(String, i64)> = entries(l, a)
        .await
        .into_iter()
        .filter(|e| e.source.as_deref() == Some(source) && matches!(e.kind.as_str(), "debit" | "hold"))
        .map(|e| (e.id, e.lot_id, -e.credits))
        .map(|(id, lot, n)| (id, (lot, n)))
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .map(|(_, x)| x)
        .collect();
    found.dedup();
    found
}

// R1 -------------------------------------------------------------------

async fn r1_a_campaign_to_2500_patrons_costs_2500_credits<S: Store>(l: Ledger<S>) {
    let a = account(&l, "cafe", "UTC", 1_000, ts("2026-11-02T09:00:00Z")).await;
    ok(&l, &a, purchase(3_000), "2026-11-02T09:00:00Z").await;
    let before = balance(&l, &a, "2026-11-02T09:00:00Z").await.available;
    let Outcome::Debit(d) = ok(&l, &a, debit(2_500), "2026-11-02T09:01:00Z").await else { panic!() };
    assert_eq!(d.credits, 2_500);
    assert_eq!(before - d.balance_after, 2_500);
    assert_eq!(balance(&l, &a, "2026-11-02T09:02:00Z").await.available, before - 2_500);
    audit_ok(&l).await;
}

// R2 -------------------------------------------------------------------

/// Spends the whole allowance just before a local month start and checks
/// that the allowance is back exactly at it, not a microsecond earlier.
async fn reset_exactly_at<S: Store>(
    l: &Ledger<S>,
    zone: &str,
    last_instant_of_month: &str,
    month_start: &str,
) {
    let a = account(l, "cafe", zone, 1_000, ts("2026-01-01T00:00:00Z")).await;
    ok(l, &a, debit(1_000), last_instant_of_month).await;
    let before = balance(l, &a, last_instant_of_month).await;
    assert_eq!((before.free.remaining, before.free.used), (0, 1_000));
    assert_eq!(before.free.resets_at, ts(month_start));
    let after = balance(l, &a, month_start).await;
    assert_eq!((after.free.remaining, after.free.used, after.available), (1_000, 0, 1_000));
    let Outcome::Debit(d) = ok(l, &a, debit(1_000), month_start).await else { panic!() };
    assert_eq!(d.from_free, 1_000, "the new month's allowance pays at its first instant");
    audit_ok(l).await;
}

async fn r2_free_credits_reset_at_local_midnight_in_los_angeles<S: Store>(l: Ledger<S>) {
    // 2026-12-01 00:00 in Los Angeles (PST, UTC-8) is 08:00 UTC.
    reset_exactly_at(&l, "America/Los_Angeles", "2026-12-01T07:59:59.999999Z", "2026-12-01T08:00:00Z").await;
}

async fn r2_free_credits_reset_at_local_midnight_in_tokyo<S: Store>(l: Ledger<S>) {
    // 2026-12-01 00:00 in Tokyo (UTC+9) is 15:00 UTC on November 30.
    reset_exactly_at(&l, "Asia/Tokyo", "2026-11-30T14:59:59.999999Z", "2026-11-30T15:00:00Z").await;
}

async fn r2_free_credits_reset_in_a_month_with_a_dst_change<S: Store>(l: Ledger<S>) {
    // New York leaves DST on 2026-11-01: November starts at 04:00 UTC (EDT)
    // and December at 05:00 UTC (EST).
    reset_exactly_at(&l, "America/New_York", "2026-12-01T04:59:59.999999Z", "2026-12-01T05:00:00Z").await;
}

async fn r2_free_credits_reset_after_a_spring_forward<S: Store>(l: Ledger<S>) {
    // London enters BST on 2026-03-29: April starts at 23:00 UTC on March 31.
    reset_exactly_at(&l, "Europe/London", "2026-03-31T22:59:59.999999Z", "2026-03-31T23:00:00Z").await;
}

async fn r2_allowance_is_per_account_and_may_be_zero<S: Store>(l: Ledger<S>) {
    let now = "2026-11-02T09:00:00Z";
    let big = account(&l, "big", "UTC", 5_000, ts(now)).await;
    let none = account(&l, "none", "UTC", 0, ts(now)).await;
    assert_eq!(balance(&l, &big, now).await.free.allowance, 5_000);
    let b = balance(&l, &none, now).await;
    assert_eq!((b.free.allowance, b.available), (0, 0));
    let refused = run(&l, &none, debit(1), now).await.unwrap_err();
    assert!(matches!(refused, LedgerError::Domain(DomainError::InsufficientCredits { available: 0, .. })));
    // The default is 1,000 in the server's default zone.
    let new = NewAccount { id: "plain".into(), name: "Plain".into(), ..Default::default() };
    let (view, created) = l.create_account(new, ts(now)).await.unwrap();
    assert!(created);
    assert_eq!((view.monthly_free_credits, view.time_zone.as_str()), (1_000, "UTC"));
}

async fn r2_a_new_allowance_applies_from_the_next_month<S: Store>(l: Ledger<S>) {
    let a = account(&l, "cafe", "UTC", 1_000, ts("2026-11-02T00:00:00Z")).await;
    ok(&l, &a, debit(10), "2026-11-02T00:00:00Z").await;
    let patch = AccountPatch { monthly_free_credits: Some(2_000), ..Default::default() };
    ok(&l, &a, Command::UpdateAccount { patch }, "2026-11-03T00:00:00Z").await;
    assert_eq!(balance(&l, &a, "2026-11-04T00:00:00Z").await.free.allowance, 1_000);
    assert_eq!(balance(&l, &a, "2026-12-01T00:00:00Z").await.free.allowance, 2_000);
}

// R3 -------------------------------------------------------------------

async fn r3_unused_free_credits_expire_at_the_local_month_end_with_an_entry<S: Store>(l: Ledger<S>) {
    let a = account(&l, "cafe", "America/Los_Angeles", 1_000, ts("2026-11-01T12:00:00Z")).await;
    ok(&l, &a, debit(300), "2026-11-10T12:00:00Z").await;
    ok(&l, &a, debit(1), "2026-12-05T12:00:00Z").await;
    let all = entries(&l, &a).await;
    let expire = all.iter().find(|e| e.kind.as_str() == "expire").expect("an expire entry");
    assert_eq!((expire.credits, expire.lot_id.as_str()), (-700, "free_2026-11"));
    assert_eq!(expire.effective_at, ts("2026-12-01T08:00:00Z"));
    let granted =
        all.iter().find(|e| e.kind.as_str() == "grant_monthly" && e.lot_id == "free_2026-12").unwrap();
    assert_eq!((granted.credits, granted.effective_at), (1_000, ts("2026-12-01T08:00:00Z")));
    let b = balance(&l, &a, "2026-12-05T12:00:00Z").await;
    assert_eq!((b.free.remaining, b.available), (999, 999));
    audit_ok(&l).await;
}

async fn r3_an_account_idle_for_three_months<S: Store>(l: Ledger<S>) {
    let a = account(&l, "cafe", "Asia/Tokyo", 1_000, ts("2026-01-05T00:00:00Z")).await;
    ok(&l, &a, purchase(200), "2026-01-05T00:00:00Z").await;
    ok(&l, &a, debit(300), "2026-01-05T00:00:00Z").await;
    // Nothing happens in February, March or April. The reads alone are exact:
    let b = balance(&l, &a, "2026-03-15T00:00:00Z").await;
    assert_eq!((b.free.remaining, b.paid.remaining, b.available), (1_000, 200, 1_200));
    ok(&l, &a, debit(1_100), "2026-05-02T00:00:00Z").await;
    let all = entries(&l, &a).await;
    let expires: Vec<_> = all.iter().filter(|e| e.kind.as_str() == "expire").collect();
    assert_eq!(expires.len(), 1, "only January's lot had credits to expire");
    assert_eq!((expires[0].credits, expires[0].effective_at), (-700, ts("2026-01-31T15:00:00Z")));
    let b = balance(&l, &a, "2026-05-02T00:00:00Z").await;
    assert_eq!((b.free.remaining, b.paid.remaining), (0, 100));
    let usage = l
        .usage(&a, Month::parse("2026-01").ok(), Month::parse("2026-05").ok(), ts("2026-05-02T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(
        (usage[0].free_used, usage[0].free_expired),
        (300, 700),
        "January's leftovers expire at its end (Feb 1 local time) and count in January"
    );
    assert_eq!(usage[1].free_expired, 0);
    assert_eq!((usage[4].free_used, usage[4].paid_used), (1_000, 100));
    audit_ok(&l).await;
}

async fn r3_free_credits_held_across_the_month_end_expire_when_released<S: Store>(l: Ledger<S>) {
    let a = account(&l, "cafe", "UTC", 1_000, ts("2026-11-01T00:00:00Z")).await;
    let h = id_of(&ok(&l, &a, hold(400, Some(3 * 86_400)), "2026-11-30T12:00:00Z").await);
    // The hold keeps November's credits out of the expiry at the month end...
    assert_eq!(balance(&l, &a, "2026-12-01T01:00:00Z").await.held, 400);
    // ...and releasing them in December expires them at once (R3).
    ok(&l, &a, Command::Release { hold_id: h }, "2026-12-01T02:00:00Z").await;
    let b = balance(&l, &a, "2026-12-01T02:00:00Z").await;
    assert_eq!((b.held, b.free.remaining, b.available), (0, 1_000, 1_000));
    let expired: i64 =
        entries(&l, &a).await.iter().filter(|e| e.kind.as_str() == "expire").map(|e| -e.credits).sum();
    assert_eq!(expired, 600 + 400);
    audit_ok(&l).await;
}

// R4 -------------------------------------------------------------------

async fn r4_paid_credits_never_expire<S: Store>(l: Ledger<S>) {
    let a = account(&l, "cafe", "UTC", 0, ts("2026-01-01T00:00:00Z")).await;
    let Outcome::Purchase(p) = ok(&l, &a, purchase(500), "2026-01-10T00:00:00Z").await else { panic!() };
    assert_eq!(
        (p.amount.to_string(), p.unit_price.to_string(), p.status.as_str()),
        ("5.00".into(), "0.01".into(), "unbilled")
    );
    assert_eq!(p.bills_on.to_string(), "2026-02-01");
    let b = balance(&l, &a, "2027-03-10T00:00:00Z").await;
    assert_eq!((b.paid.remaining, b.available), (500, 500));
    ok(&l, &a, debit(500), "2027-03-10T00:00:00Z").await;
    audit_ok(&l).await;
}

/// The exact product of credits and unit price, charged rounded half-up to
/// the currency's minor unit: 333 x 0.0125 = 4.1625 -> 4.16 EUR.
async fn r4_purchases_use_the_account_unit_price_exactly<S: Store>(l: Ledger<S>) {
    let now = ts("2026-11-02T00:00:00Z");
    let new = NewAccount {
        id: "eu".into(),
        name: "EU".into(),
        unit_price: Some("0.0125".into()),
        currency: Some("EUR".into()),
        ..Default::default()
    };
    l.create_account(new, now).await.unwrap();
    let a = crate::util::id("eu");
    let Outcome::Purchase(p) = ok(&l, &a, purchase(333), "2026-11-02T00:00:00Z").await else { panic!() };
    assert_eq!((p.amount.to_string(), p.currency.as_str()), ("4.16".into(), "EUR"));
    let Outcome::Purchase(p) = ok(&l, &a, purchase(334), "2026-11-02T00:00:00Z").await else { panic!() };
    assert_eq!(p.amount.to_string(), "4.18", "4.175 rounds half up");
}

// R5 -------------------------------------------------------------------

async fn r5_purchases_of_a_month_are_billed_on_the_first_of_the_next<S: Store>(l: Ledger<S>) {
    let a = account(&l, "cafe", "America/Los_Angeles", 0, ts("2026-11-01T08:00:00Z")).await;
    let p1 = id_of(&ok(&l, &a, purchase(500), "2026-11-03T18:00:00Z").await);
    // 2026-12-01T05:00Z is still November 30 in Los Angeles.
    let p2 = id_of(&ok(&l, &a, purchase(1_000), "2026-12-01T05:00:00Z").await);
    let p3 = id_of(&ok(&l, &a, purchase(200), "2026-12-01T09:00:00Z").await);
    let b = balance(&l, &a, "2026-12-01T09:00:00Z").await;
    assert_eq!((b.unbilled.credits, b.unbilled.amount.to_string()), (1_700, "17.00".into()));
    let report = l.close_all(None, ts("2026-12-01T10:00:00Z")).await.unwrap();
    assert_eq!(report.statements.len(), 1);
    let s = &report.statements[0];
    assert_eq!(
        (s.month.to_string(), s.issued_on.to_string(), s.total.to_string()),
        ("2026-11".into(), "2026-12-01".into(), "15.00".into())
    );
    let lines: Vec<_> = s.lines.iter().map(|l| (l.purchase_id.clone(), l.credits)).collect();
    assert!(lines.contains(&(p1.clone(), 500)) && lines.contains(&(p2, 1_000)) && lines.len() == 2);
    let history = l.purchases(&a, None, PageRequest::first(10)).await.unwrap().data;
    assert_eq!(history[0].id, p3, "newest first");
    assert_eq!(
        (history[0].status.as_str(), history[0].bills_on.to_string()),
        ("unbilled", "2027-01-01".into())
    );
    let billed = history.iter().find(|p| p.id == p1).unwrap();
    assert_eq!((billed.status.as_str(), billed.statement_id.as_deref()), ("billed", Some(s.id.as_str())));
    audit_ok(&l).await;
}

async fn r5_closing_a_month_twice_changes_nothing<S: Store>(l: Ledger<S>) {
    let a = account(&l, "cafe", "UTC", 0, ts("2026-11-01T00:00:00Z")).await;
    ok(&l, &a, purchase(100), "2026-11-03T00:00:00Z").await;
    let first =
        l.close_all(Some(Month::parse("2026-11").unwrap()), ts("2026-12-02T00:00:00Z")).await.unwrap();
    assert_eq!(first.statements.len(), 1);
    let again = closed(ok(&l, &a, Command::CloseMonths { through: None }, "2026-12-03T00:00:00Z").await);
    assert!(again.is_empty());
    let second = l.close_all(None, ts("2026-12-03T00:00:00Z")).await.unwrap();
    assert!(second.statements.is_empty());
    let all = l.statements(Some(&a), None, PageRequest::first(10)).await.unwrap().data;
    assert_eq!(all.len(), 1);
    audit_ok(&l).await;
}

async fn r5_a_month_without_purchases_gets_no_statement<S: Store>(l: Ledger<S>) {
    let a = account(&l, "cafe", "UTC", 1_000, ts("2026-10-01T00:00:00Z")).await;
    ok(&l, &a, purchase(100), "2026-10-03T00:00:00Z").await;
    ok(&l, &a, debit(50), "2026-11-03T00:00:00Z").await;
    let made = closed(ok(&l, &a, Command::CloseMonths { through: None }, "2026-12-02T00:00:00Z").await);
    let months: Vec<String> = made.iter().map(|s| s.month.to_string()).collect();
    assert_eq!(months, ["2026-10"], "November had no purchase");
    let nov =
        l.statements(None, Some(Month::parse("2026-11").unwrap()), PageRequest::first(10)).await.unwrap();
    assert!(nov.data.is_empty());
}

async fn r5_a_month_that_has_not_ended_cannot_close<S: Store>(l: Ledger<S>) {
    let a = account(&l, "cafe", "America/Los_Angeles", 0, ts("2026-11-01T08:00:00Z")).await;
    ok(&l, &a, purchase(100), "2026-11-03T00:00:00Z").await;
    // Already December in UTC, still November 30 in Los Angeles.
    let through = Some(Month::parse("2026-11").unwrap());
    let e = run(&l, &a, Command::CloseMonths { through }, "2026-12-01T05:00:00Z").await.unwrap_err();
    assert!(matches!(e, LedgerError::Domain(DomainError::MonthNotEnded { .. })), "{e}");
    assert!(l.statements(Some(&a), None, PageRequest::first(5)).await.unwrap().data.is_empty());
}

async fn r5_refunds_leave_the_coming_statement_or_credit_the_next<S: Store>(l: Ledger<S>) {
    let a = account(&l, "cafe", "UTC", 0, ts("2026-10-01T00:00:00Z")).await;
    let before = id_of(&ok(&l, &a, purchase(500), "2026-10-03T00:00:00Z").await);
    let after = id_of(&ok(&l, &a, purchase(300), "2026-10-04T00:00:00Z").await);
    // Refunded before billing: the line shrinks to what was kept.
    let refund = Command::RefundPurchase { purchase_id: before.clone(), credits: Some(c(200)) };
    ok(&l, &a, refund, "2026-10-05T00:00:00Z").await;
    let oct = closed(ok(&l, &a, Command::CloseMonths { through: None }, "2026-11-01T00:00:00Z").await);
    let lines: Vec<_> = oct[0].lines.iter().map(|l| (l.purchase_id.clone(), l.credits)).collect();
    assert!(lines.contains(&(before.clone(), 300)) && lines.contains(&(after.clone(), 300)));
    assert_eq!(oct[0].total.to_string(), "6.00");
    // Refunded after billing: a negative line on November's statement.
    ok(&l, &a, Command::RefundPurchase { purchase_id: after.clone(), credits: None }, "2026-11-10T00:00:00Z")
        .await;
    let b = balance(&l, &a, "2026-11-10T00:00:00Z").await;
    assert_eq!((b.unbilled.credits, b.unbilled.amount.to_string()), (-300, "-3.00".into()));
    let nov = closed(ok(&l, &a, Command::CloseMonths { through: None }, "2026-12-01T00:00:00Z").await);
    assert_eq!(nov.len(), 1);
    assert_eq!((nov[0].lines[0].purchase_id.clone(), nov[0].lines[0].credits), (after, -300));
    assert_eq!(nov[0].total.to_string(), "-3.00");
    audit_ok(&l).await;
}

async fn r5_a_failed_statement_suspends_purchases_until_paid<S: Store>(l: Ledger<S>) {
    let a = account(&l, "cafe", "UTC", 0, ts("2026-10-01T00:00:00Z")).await;
    ok(&l, &a, purchase(100), "2026-10-03T00:00:00Z").await;
    let s =
        closed(ok(&l, &a, Command::CloseMonths { through: None }, "2026-11-01T00:00:00Z").await).remove(0);
    let failed = Command::SetStatementStatus { statement_id: s.id.clone(), status: StatementStatus::Failed };
    ok(&l, &a, failed, "2026-11-02T00:00:00Z").await;
    let e = run(&l, &a, purchase(10), "2026-11-02T00:00:00Z").await.unwrap_err();
    assert!(
        matches!(e, LedgerError::Domain(DomainError::PurchasesSuspended { ref statement_id }) if *statement_id == s.id),
        "{e}"
    );
    // Spending what is there goes on.
    ok(&l, &a, debit(10), "2026-11-02T00:00:00Z").await;
    let paid = Command::SetStatementStatus { statement_id: s.id.clone(), status: StatementStatus::Paid };
    ok(&l, &a, paid, "2026-11-03T00:00:00Z").await;
    ok(&l, &a, purchase(10), "2026-11-03T00:00:00Z").await;
}

// R6 -------------------------------------------------------------------

async fn r6_free_first_then_grants_by_expiry_then_oldest_purchase<S: Store>(l: Ledger<S>) {
    let a = account(&l, "cafe", "UTC", 100, ts("2026-11-01T00:00:00Z")).await;
    let old = id_of(&ok(&l, &a, purchase(100), "2026-11-01T00:00:00Z").await);
    let new = id_of(&ok(&l, &a, purchase(100), "2026-11-02T00:00:00Z").await);
    let late = id_of(&ok(&l, &a, grant(100, Some("2026-12-20T00:00:00Z")), "2026-11-03T00:00:00Z").await);
    let never = id_of(&ok(&l, &a, grant(100, None), "2026-11-03T00:00:00Z").await);
    let soon = id_of(&ok(&l, &a, grant(100, Some("2026-12-10T00:00:00Z")), "2026-11-04T00:00:00Z").await);
    let d = id_of(&ok(&l, &a, debit(550), "2026-11-05T00:00:00Z").await);
    let order = lots_of(&l, &a, &d).await;
    let expected = vec![
        ("free_2026-11".to_string(), 100),
        (soon, 100),
        (late, 100),
        (never, 100),
        (old.clone(), 100),
        (new.clone(), 50),
    ];
    assert_eq!(order, expected);
    let b = balance(&l, &a, "2026-11-05T00:00:00Z").await;
    assert_eq!((b.free.remaining, b.grants.remaining, b.paid.remaining), (0, 0, 50));
    audit_ok(&l).await;
}

// R7 -------------------------------------------------------------------

async fn r7_the_balance_shows_every_part<S: Store>(l: Ledger<S>) {
    let a = account(&l, "cafe-1", "America/Los_Angeles", 1_000, ts("2026-11-01T08:00:00Z")).await;
    ok(&l, &a, purchase(500), "2026-11-20T18:00:00Z").await;
    ok(&l, &a, debit(300), "2026-11-21T18:00:00Z").await;
    ok(&l, &a, hold(100, None), "2026-11-24T17:00:00Z").await;
    ok(&l, &a, grant(50, None), "2026-11-24T17:30:00Z").await;
    let b = balance(&l, &a, "2026-11-24T18:00:00Z").await;
    // Held free credits are neither used nor remaining until captured.
    let json = serde_json::to_value(&b).unwrap();
    let expected = serde_json::json!({
        "account_id": "cafe-1", "as_of": "2026-11-24T18:00:00Z",
        "free": {"allowance": 1000, "used": 300, "remaining": 600, "resets_at": "2026-12-01T08:00:00Z"},
        "paid": {"remaining": 500}, "grants": {"remaining": 50},
        "held": 100, "available": 1150,
        "unbilled": {"credits": 500, "amount": "5.00", "currency": "USD", "bills_on": "2026-12-01"}
    });
    assert_eq!(json, expected);
}

// R8 -------------------------------------------------------------------

async fn r8_a_debit_one_credit_too_large_changes_nothing<S: Store>(l: Ledger<S>) {
    let a = account(&l, "cafe", "UTC", 1_000, ts("2026-11-01T00:00:00Z")).await;
    ok(&l, &a, purchase(500), "2026-11-01T00:00:00Z").await;
    let before = (balance(&l, &a, "2026-11-02T00:00:00Z").await, entries(&l, &a).await);
    let e = run(&l, &a, debit(1_501), "2026-11-02T00:00:00Z").await.unwrap_err();
    match e {
        LedgerError::Domain(DomainError::InsufficientCredits { available, requested, shortfall }) => {
            assert_eq!((available, requested, shortfall), (1_500, 1_501, 1));
        }
        other => panic!("{other}"),
    }
    assert_eq!(e.to_string(), "insufficient credits: 1500 available, 1501 requested (short by 1)");
    let after = (balance(&l, &a, "2026-11-02T00:00:00Z").await, entries(&l, &a).await);
    assert_eq!(before, after);
    ok(&l, &a, debit(1_500), "2026-11-02T00:00:00Z").await;
    audit_ok(&l).await;
}

async fn r8_held_credits_are_not_available_and_a_hold_too_large_changes_nothing<S: Store>(l: Ledger<S>) {
    let a = account(&l, "cafe", "UTC", 1_000, ts("2026-11-01T00:00:00Z")).await;
    ok(&l, &a, hold(600, None), "2026-11-01T00:00:00Z").await;
    let e = run(&l, &a, debit(401), "2026-11-01T00:00:00Z").await.unwrap_err();
    assert!(matches!(
        e,
        LedgerError::Domain(DomainError::InsufficientCredits { available: 400, shortfall: 1, .. })
    ));
    let e = run(&l, &a, hold(401, None), "2026-11-01T00:00:00Z").await.unwrap_err();
    assert!(matches!(e, LedgerError::Domain(DomainError::InsufficientCredits { available: 400, .. })));
    let b = balance(&l, &a, "2026-11-01T00:00:00Z").await;
    assert_eq!((b.held, b.available), (600, 400));
}

// Holds ----------------------------------------------------------------

async fn holds_capture_what_was_sent_and_release_the_rest<S: Store>(l: Ledger<S>) {
    let a = account(&l, "cafe", "UTC", 1_000, ts("2026-11-01T00:00:00Z")).await;
    let h = id_of(&ok(&l, &a, hold(800, None), "2026-11-01T00:00:00Z").await);
    let Outcome::Hold(done) =
        ok(&l, &a, Command::Capture { hold_id: h.clone(), credits: 750 }, "2026-11-01T01:00:00Z").await
    else {
        panic!()
    };
    assert_eq!((done.status.as_str(), done.captured), ("captured", 750));
    let b = balance(&l, &a, "2026-11-01T01:00:00Z").await;
    assert_eq!((b.held, b.available, b.free.used), (0, 250, 750));
    let e = run(&l, &a, Command::Capture { hold_id: h.clone(), credits: 1 }, "2026-11-01T02:00:00Z")
        .await
        .unwrap_err();
    assert!(matches!(e, LedgerError::Domain(DomainError::HoldNotActive { .. })));
    let e = run(&l, &a, Command::Release { hold_id: h }, "2026-11-01T02:00:00Z").await.unwrap_err();
    assert!(matches!(e, LedgerError::Domain(DomainError::HoldNotActive { .. })));
    audit_ok(&l).await;
}

async fn holds_capture_more_than_held_is_refused<S: Store>(l: Ledger<S>) {
    let a = account(&l, "cafe", "UTC", 1_000, ts("2026-11-01T00:00:00Z")).await;
    let h = id_of(&ok(&l, &a, hold(100, None), "2026-11-01T00:00:00Z").await);
    let e = run(&l, &a, Command::Capture { hold_id: h.clone(), credits: 101 }, "2026-11-01T00:00:00Z")
        .await
        .unwrap_err();
    assert!(matches!(e, LedgerError::Domain(DomainError::Invalid(_))));
    let e = run(&l, &a, Command::Capture { hold_id: "hold_nope".into(), credits: 1 }, "2026-11-01T00:00:00Z")
        .await
        .unwrap_err();
    assert!(matches!(e, LedgerError::Domain(DomainError::NotFound { .. })));
    assert_eq!(balance(&l, &a, "2026-11-01T00:00:00Z").await.held, 100);
}

async fn holds_expire_when_their_ttl_runs_out<S: Store>(l: Ledger<S>) {
    let a = account(&l, "cafe", "UTC", 1_000, ts("2026-11-01T00:00:00Z")).await;
    let h = id_of(&ok(&l, &a, hold(300, Some(3_600)), "2026-11-01T00:00:00Z").await);
    assert_eq!(l.hold(&a, &h, ts("2026-11-01T00:59:59Z")).await.unwrap().status.as_str(), "held");
    assert_eq!(balance(&l, &a, "2026-11-01T00:59:59Z").await.available, 700);
    // Nothing ran at the expiry; a read after it is exact anyway.
    assert_eq!(l.hold(&a, &h, ts("2026-11-01T01:00:00Z")).await.unwrap().status.as_str(), "expired");
    assert_eq!(balance(&l, &a, "2026-11-01T01:00:00Z").await.available, 1_000);
    let e = run(&l, &a, Command::Capture { hold_id: h.clone(), credits: 10 }, "2026-11-01T02:00:00Z")
        .await
        .unwrap_err();
    assert!(
        matches!(e, LedgerError::Domain(DomainError::HoldNotActive { ref status, .. }) if status == "expired"),
        "{e}"
    );
    // The refused capture wrote nothing; the next operation writes the
    // release, dated at the expiry.
    assert!(!entries(&l, &a).await.iter().any(|e| e.kind.as_str() == "release"));
    ok(&l, &a, debit(1), "2026-11-01T03:00:00Z").await;
    let release = entries(&l, &a).await.into_iter().find(|e| e.kind.as_str() == "release").unwrap();
    assert_eq!((release.credits, release.effective_at), (300, ts("2026-11-01T01:00:00Z")));
    audit_ok(&l).await;
}

// Refunds and grants -----------------------------------------------------

async fn refunds_of_undelivered_messages_go_back_to_their_lots<S: Store>(l: Ledger<S>) {
    let a = account(&l, "cafe", "UTC", 1_000, ts("2026-11-01T00:00:00Z")).await;
    ok(&l, &a, purchase(500), "2026-11-01T00:00:00Z").await;
    let d = id_of(&ok(&l, &a, debit(1_200), "2026-11-02T00:00:00Z").await);
    // The longest-lived credits come back first: the paid ones.
    ok(&l, &a, Command::RefundDebit { debit_id: d.clone(), credits: c(250) }, "2026-11-03T00:00:00Z").await;
    let b = balance(&l, &a, "2026-11-03T00:00:00Z").await;
    assert_eq!((b.paid.remaining, b.free.remaining), (500, 50));
    let e =
        run(&l, &a, Command::RefundDebit { debit_id: d.clone(), credits: c(951) }, "2026-11-03T00:00:00Z")
            .await
            .unwrap_err();
    assert!(matches!(e, LedgerError::Domain(DomainError::Invalid(_))), "{e}");
    // After the month end, free credits given back stay expired.
    let Outcome::DebitRefund(r) =
        ok(&l, &a, Command::RefundDebit { debit_id: d, credits: c(950) }, "2026-12-02T00:00:00Z").await
    else {
        panic!()
    };
    assert_eq!((r.credits, r.expired_credits, r.refunded_credits), (950, 950, 1_200));
    let b = balance(&l, &a, "2026-12-02T00:00:00Z").await;
    assert_eq!((b.free.remaining, b.paid.remaining), (1_000, 500));
    audit_ok(&l).await;
}

async fn refunds_of_purchases_take_back_only_unused_credits<S: Store>(l: Ledger<S>) {
    let a = account(&l, "cafe", "UTC", 0, ts("2026-11-01T00:00:00Z")).await;
    let p = id_of(&ok(&l, &a, purchase(500), "2026-11-01T00:00:00Z").await);
    ok(&l, &a, debit(400), "2026-11-02T00:00:00Z").await;
    let too_many = Command::RefundPurchase { purchase_id: p.clone(), credits: Some(c(101)) };
    assert!(run(&l, &a, too_many, "2026-11-03T00:00:00Z").await.is_err());
    let Outcome::PurchaseRefund(r) =
        ok(&l, &a, Command::RefundPurchase { purchase_id: p.clone(), credits: None }, "2026-11-03T00:00:00Z")
            .await
    else {
        panic!()
    };
    assert_eq!((r.credits, r.amount.to_string()), (100, "1.00".into()));
    assert!(
        run(&l, &a, Command::RefundPurchase { purchase_id: p, credits: None }, "2026-11-03T00:00:00Z")
            .await
            .is_err()
    );
    assert_eq!(balance(&l, &a, "2026-11-03T00:00:00Z").await.available, 0);
    audit_ok(&l).await;
}

async fn grants_expire_at_their_instant<S: Store>(l: Ledger<S>) {
    let a = account(&l, "cafe", "UTC", 0, ts("2026-11-01T00:00:00Z")).await;
    ok(&l, &a, grant(100, Some("2026-11-10T00:00:00Z")), "2026-11-01T00:00:00Z").await;
    assert_eq!(balance(&l, &a, "2026-11-09T23:59:59Z").await.grants.remaining, 100);
    assert_eq!(balance(&l, &a, "2026-11-10T00:00:00Z").await.grants.remaining, 0);
    let past = grant(5, Some("2026-11-01T00:00:00Z"));
    assert!(run(&l, &a, past, "2026-11-02T00:00:00Z").await.is_err());
    ok(&l, &a, grant(5, None), "2026-11-11T00:00:00Z").await;
    audit_ok(&l).await;
}

// Idempotency and limits -----------------------------------------------

async fn idempotent_replays_return_the_first_answer_and_change_nothing<S: Store>(l: Ledger<S>) {
    let a = account(&l, "cafe", "UTC", 1_000, ts("2026-11-01T00:00:00Z")).await;
    let b = account(&l, "other", "UTC", 1_000, ts("2026-11-01T00:00:00Z")).await;
    let key = IdempotencyKey::parse("order-1").unwrap();
    let now = ts("2026-11-01T00:00:00Z");
    let first = l.execute(&a, debit(10), Some(key.clone()), now).await.unwrap();
    let later = ts("2026-11-05T00:00:00Z");
    let again = l.execute(&a, debit(10), Some(key.clone()), later).await.unwrap();
    assert!(!first.replayed && again.replayed);
    assert_eq!(first.outcome, again.outcome);
    assert_eq!(balance(&l, &a, "2026-11-05T00:00:00Z").await.available, 990);
    let e = l.execute(&a, debit(11), Some(key.clone()), later).await.unwrap_err();
    assert!(matches!(e, LedgerError::IdempotencyConflict { .. }));
    // Keys belong to one account.
    assert!(!l.execute(&b, debit(10), Some(key), later).await.unwrap().replayed);
    audit_ok(&l).await;
}

async fn the_purchase_limit_caps_a_months_purchases<S: Store>(l: Ledger<S>) {
    let a = account(&l, "cafe", "UTC", 0, ts("2026-11-01T00:00:00Z")).await;
    let patch = AccountPatch { monthly_purchase_limit: Some(1_000), ..Default::default() };
    ok(&l, &a, Command::UpdateAccount { patch }, "2026-11-01T00:00:00Z").await;
    ok(&l, &a, purchase(600), "2026-11-02T00:00:00Z").await;
    let e = run(&l, &a, purchase(401), "2026-11-03T00:00:00Z").await.unwrap_err();
    assert!(
        matches!(e, LedgerError::Domain(DomainError::PurchaseLimitExceeded { limit: 1_000, remaining: 400 })),
        "{e}"
    );
    ok(&l, &a, purchase(400), "2026-11-03T00:00:00Z").await;
    ok(&l, &a, purchase(1_000), "2026-12-01T00:00:00Z").await;
}

async fn unknown_accounts_are_not_found<S: Store>(l: Ledger<S>) {
    let ghost = crate::util::id("ghost");
    let e = run(&l, &ghost, debit(1), "2026-11-01T00:00:00Z").await.unwrap_err();
    assert!(matches!(e, LedgerError::AccountNotFound(_)));
    assert!(matches!(
        l.balance(&ghost, ts("2026-11-01T00:00:00Z")).await,
        Err(LedgerError::AccountNotFound(_))
    ));
    let _: Timestamp = ts("2026-11-01T00:00:00Z");
}

async fn creating_an_account_again_is_idempotent_or_a_conflict<S: Store>(l: Ledger<S>) {
    let now = ts("2026-11-01T00:00:00Z");
    let new = NewAccount { id: "cafe".into(), name: "Cafe".into(), ..Default::default() };
    assert!(l.create_account(new.clone(), now).await.unwrap().1);
    assert!(!l.create_account(new.clone(), now).await.unwrap().1);
    let other = NewAccount { name: "Another".into(), ..new };
    let e = l.create_account(other, now).await.unwrap_err();
    assert!(matches!(e, LedgerError::Domain(DomainError::Conflict(_))));
}

conformance!(
    r1_a_campaign_to_2500_patrons_costs_2500_credits,
    r2_free_credits_reset_at_local_midnight_in_los_angeles,
    r2_free_credits_reset_at_local_midnight_in_tokyo,
    r2_free_credits_reset_in_a_month_with_a_dst_change,
    r2_free_credits_reset_after_a_spring_forward,
    r2_allowance_is_per_account_and_may_be_zero,
    r2_a_new_allowance_applies_from_the_next_month,
    r3_unused_free_credits_expire_at_the_local_month_end_with_an_entry,
    r3_an_account_idle_for_three_months,
    r3_free_credits_held_across_the_month_end_expire_when_released,
    r4_paid_credits_never_expire,
    r4_purchases_use_the_account_unit_price_exactly,
    r5_purchases_of_a_month_are_billed_on_the_first_of_the_next,
    r5_closing_a_month_twice_changes_nothing,
    r5_a_month_without_purchases_gets_no_statement,
    r5_a_month_that_has_not_ended_cannot_close,
    r5_refunds_leave_the_coming_statement_or_credit_the_next,
    r5_a_failed_statement_suspends_purchases_until_paid,
    r6_free_first_then_grants_by_expiry_then_oldest_purchase,
    r7_the_balance_shows_every_part,
    r8_a_debit_one_credit_too_large_changes_nothing,
    r8_held_credits_are_not_available_and_a_hold_too_large_changes_nothing,
    holds_capture_what_was_sent_and_release_the_rest,
    holds_capture_more_than_held_is_refused,
    holds_expire_when_their_ttl_runs_out,
    refunds_of_undelivered_messages_go_back_to_their_lots,
    refunds_of_purchases_take_back_only_unused_credits,
    grants_expire_at_their_instant,
    idempotent_replays_return_the_first_answer_and_change_nothing,
    the_purchase_limit_caps_a_months_purchases,
    unknown_accounts_are_not_found,
    creating_an_account_again_is_idempotent_or_a_conflict,
);
