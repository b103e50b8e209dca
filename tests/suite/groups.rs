//! Operations that arrive together: both stores run what is queued as one
//! group (SQLite's writer thread, PostgreSQL's group workers), in arrival
//! order per account. Every burst here is sent at once, so it lands in a
//! few groups; the answers must be those of running the operations one at a
//! time, in the order they were sent.

use futures_util::future::join_all;
use textcredits::domain::DomainError;
use textcredits::domain::account::AccountId;
use textcredits::domain::command::{Command, Outcome};
use textcredits::domain::credits::Credits;
use textcredits::ledger::{Executed, IdempotencyKey, Ledger, LedgerError, PageRequest, Store};

use crate::util::{account, id, ts};

const NOW: &str = "2026-11-25T12:00:00Z";

fn debit(n: i64, reference: &str) -> Command {
    let credits = Credits::new(n).expect("valid");
    Command::Debit { credits, reference: Some(reference.into()), description: None }
}

fn key(k: &str) -> Option<IdempotencyKey> {
    Some(IdempotencyKey::parse(k).expect("valid key"))
}

/// Sends every operation at once and waits for all the answers, in order.
async fn burst<S: Store>(
    l: &Ledger<S>,
    ops: Vec<(AccountId, Command, Option<IdempotencyKey>)>,
) -> Vec<Result<Executed, LedgerError>> {
    let now = ts(NOW);
    join_all(ops.into_iter().map(|(a, cmd, k)| async move { l.execute(&a, cmd, k, now).await })).await
}

async fn available<S: Store>(l: &Ledger<S>, a: &AccountId) -> i64 {
    l.balance(a, ts(NOW)).await.expect("balance").available
}

async fn audit_ok<S: Store>(l: &Ledger<S>) {
    let report = l.audit().await.expect("audit runs");
    assert!(report.ok(), "audit: {:?}", report.mismatches);
}

/// Entry ids of the account, oldest first: they must increase with the
/// order of the operations.
async fn entry_ids<S: Store>(l: &Ledger<S>, a: &AccountId) -> Vec<i64> {
    let mut ids: Vec<i64> =
        l.entries(a, PageRequest::first(500)).await.expect("entries").data.iter().map(|e| e.id).collect();
    ids.reverse();
    ids
}

fn insufficient(r: &Result<Executed, LedgerError>) -> bool {
    matches!(r, Err(LedgerError::Domain(DomainError::InsufficientCredits { .. })))
}

async fn a_burst_spends_exactly_the_balance_in_arrival_order<S: Store>(l: Ledger<S>) {
    let a = account(&l, "acct_burst", "America/Los_Angeles", 100, ts("2026-11-01T00:00:00Z")).await;
    let ops = (0..150).map(|i| (a.clone(), debit(1, &format!("m{i}")), key(&format!("k{i}")))).collect();
    let answers = burst(&l, ops).await;
    // One at a time, in order: the first 100 are paid, the last 50 refused.
    for (i, r) in answers.iter().enumerate() {
        if i < 100 {
            let Ok(Executed { outcome: Outcome::Debit(d), replayed: false, .. }) = r else {
                panic!("debit {i}: {r:?}")
            };
            assert_eq!(d.balance_after, 99 - i as i64, "debit {i}");
        } else {
            assert!(insufficient(r), "debit {i}: {r:?}");
        }
    }
    assert_eq!(available(&l, &a).await, 0);
    let ids = entry_ids(&l, &a).await;
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "entry ids increase: {ids:?}");
    audit_ok(&l).await;
}

async fn a_key_sent_many_times_in_one_burst_is_applied_once<S: Store>(l: Ledger<S>) {
    let a = account(&l, "acct_retry", "UTC", 1000, ts("2026-11-01T00:00:00Z")).await;
    let mut ops: Vec<_> = (0..20).map(|_| (a.clone(), debit(7, "campaign"), key("same-key"))).collect();
    // The same key with another request, in the middle of the burst.
    ops.insert(10, (a.clone(), debit(8, "campaign"), key("same-key")));
    let answers = burst(&l, ops).await;
    let first = answers[0].as_ref().expect("the first is applied");
    assert!(!first.replayed);
    for (i, r) in answers.iter().enumerate().skip(1) {
        if i == 10 {
            assert!(matches!(r, Err(LedgerError::IdempotencyConflict { .. })), "{r:?}");
            continue;
        }
        let r = r.as_ref().expect("a replay");
        assert!(r.replayed, "answer {i} is a replay");
        assert_eq!(r.outcome, first.outcome, "answer {i} is the first answer");
    }
    assert_eq!(available(&l, &a).await, 993);
    audit_ok(&l).await;
}

async fn a_refused_operation_in_a_burst_changes_nothing_around_it<S: Store>(l: Ledger<S>) {
    let a = account(&l, "acct_mixed", "Asia/Tokyo", 50, ts("2026-11-01T00:00:00Z")).await;
    let missing = id("acct_nobody");
    let too_many = (a.clone(), debit(51, "too-big"), key("big"));
    let ops = vec![
        (a.clone(), debit(10, "a"), key("a")),
        (missing.clone(), debit(1, "x"), key("x")),
        too_many.clone(),
        (a.clone(), debit(15, "b"), key("b")),
        (missing, debit(1, "y"), None),
        (a.clone(), debit(25, "c"), None),
        too_many,
    ];
    let answers = burst(&l, ops).await;
    assert!(answers[0].is_ok() && answers[3].is_ok() && answers[5].is_ok(), "{answers:?}");
    assert!(matches!(answers[1], Err(LedgerError::AccountNotFound(_))), "{:?}", answers[1]);
    assert!(matches!(answers[4], Err(LedgerError::AccountNotFound(_))), "{:?}", answers[4]);
    assert!(insufficient(&answers[2]) && insufficient(&answers[6]), "{answers:?}");
    assert_eq!(available(&l, &a).await, 0);
    // The refused key was not remembered: once there are credits, it works.
    let grant = Command::Grant {
        credits: Credits::new(60).expect("valid"),
        expires_at: None,
        reason: "promo".into(),
    };
    l.execute(&a, grant, None, ts(NOW)).await.expect("grant");
    let again = l.execute(&a, debit(51, "too-big"), key("big"), ts(NOW)).await.expect("now it fits");
    assert!(!again.replayed);
    audit_ok(&l).await;
}

async fn holds_made_captured_and_released_in_one_burst<S: Store>(l: Ledger<S>) {
    let a = account(&l, "acct_holds", "Europe/London", 100, ts("2026-11-01T00:00:00Z")).await;
    let hold =
        |n| Command::Hold { credits: Credits::new(n).expect("valid"), reference: None, ttl_seconds: None };
    let mut holds = Vec::new();
    for n in [10, 20, 30] {
        let done = l.execute(&a, hold(n), None, ts(NOW)).await.expect("hold");
        let Outcome::Hold(h) = done.outcome else { panic!("not a hold") };
        holds.push(h.id);
    }
    let capture = |h: &str, n| Command::Capture { hold_id: h.to_string(), credits: n };
    let release = |h: &str| Command::Release { hold_id: h.to_string() };
    let ops = vec![
        (a.clone(), release(&holds[0]), None),
        (a.clone(), capture(&holds[0], 5), None), // released just before
        (a.clone(), capture(&holds[1], 15), key("cap")),
        (a.clone(), capture(&holds[1], 15), key("cap")), // its replay
        (a.clone(), capture(&holds[1], 1), None),        // already captured
        (a.clone(), hold(40), None),
        (a.clone(), debit(1, "last"), None),
    ];
    let answers = burst(&l, ops).await;
    let not_active = |r: &Result<Executed, LedgerError>| {
        matches!(r, Err(LedgerError::Domain(DomainError::HoldNotActive { .. })))
    };
    assert!(answers[0].is_ok(), "{:?}", answers[0]);
    assert!(not_active(&answers[1]), "{:?}", answers[1]);
    assert!(answers[2].as_ref().is_ok_and(|r| !r.replayed), "{:?}", answers[2]);
    assert!(answers[3].as_ref().is_ok_and(|r| r.replayed), "{:?}", answers[3]);
    assert!(not_active(&answers[4]), "{:?}", answers[4]);
    assert!(answers[5].is_ok() && answers[6].is_ok(), "{answers:?}");
    // 100 - 15 captured - 30 still held - 40 held - 1 debited.
    assert_eq!(available(&l, &a).await, 14);
    // A released hold from before the burst is found and refused as such.
    let late = l.execute(&a, capture(&holds[0], 1), None, ts(NOW)).await;
    assert!(not_active(&late), "{late:?}");
    audit_ok(&l).await;
}

async fn bursts_over_many_accounts_stay_exact<S: Store>(l: Ledger<S>) {
    let mut accounts = Vec::new();
    for i in 0..20 {
        accounts.push(account(&l, &format!("acct_many_{i}"), "UTC", 30, ts("2026-11-01T00:00:00Z")).await);
    }
    let ops = (0..25)
        .flat_map(|round| accounts.iter().map(move |a| (a.clone(), debit(2, "r"), key(&format!("r{round}")))))
        .collect();
    let answers = burst(&l, ops).await;
    let paid = answers.iter().filter(|r| r.is_ok()).count();
    let refused = answers.iter().filter(|r| insufficient(r)).count();
    assert_eq!((paid, refused), (20 * 15, 20 * 10));
    for a in &accounts {
        assert_eq!(available(&l, a).await, 0, "{a:?}");
    }
    audit_ok(&l).await;
}

conformance!(
    a_burst_spends_exactly_the_balance_in_arrival_order,
    a_key_sent_many_times_in_one_burst_is_applied_once,
    a_refused_operation_in_a_burst_changes_nothing_around_it,
    holds_made_captured_and_released_in_one_burst,
    bursts_over_many_accounts_stay_exact,
);

/// PostgreSQL's append-only tables carry no foreign key to their account
/// (a check per row was most of an insert's cost): the audit looks instead.
/// The audit checks the same things on both stores: rows of an account
/// that does not exist, and entry ids beyond the store's counter.
async fn audit_reports_orphans_and_a_counter_behind_the_entries(db: crate::util::Db) {
    let pg = db.pg_schema.is_some();
    let report = if pg {
        let l = db.pg_ledger().await;
        let a = account(&l, "acct_real", "UTC", 10, ts("2026-11-01T00:00:00Z")).await;
        l.execute(&a, debit(1, "x"), key("k1"), ts(NOW)).await.expect("debit");
        audit_ok(&l).await;
        crate::util::raw_sql(&db, ORPHAN_KEY);
        crate::util::raw_sql(&db, "SELECT setval('entry_ids', 1)");
        l.audit().await.expect("audit runs")
    } else {
        let l = db.ledger().await;
        let a = account(&l, "acct_real", "UTC", 10, ts("2026-11-01T00:00:00Z")).await;
        l.execute(&a, debit(1, "x"), key("k1"), ts(NOW)).await.expect("debit");
        audit_ok(&l).await;
        crate::util::raw_sql(&db, ORPHAN_KEY);
        crate::util::raw_sql(&db, "UPDATE sequences SET value = 1 WHERE name = 'entry'");
        l.audit().await.expect("audit runs")
    };
    let found = |what: &str| report.mismatches.iter().any(|m| m.contains(what));
    assert!(found("idempotency_keys has rows of account acct_ghost"), "{:?}", report.mismatches);
    assert!(found("entry ids reach 2 but the sequence is at 1"), "{:?}", report.mismatches);
}

const ORPHAN_KEY: &str = "INSERT INTO idempotency_keys (account_id, key, request, response, created_at) \
                          VALUES ('acct_ghost', 'k', '{}', '{}', 0)";

#[tokio::test]
async fn sqlite_audit_reports_orphans_and_a_counter_behind_the_entries() {
    audit_reports_orphans_and_a_counter_behind_the_entries(crate::util::Db::new()).await;
}

#[tokio::test]
async fn postgres_audit_reports_orphans_and_a_counter_behind_the_entries() {
    let Some(db) = crate::util::Db::postgres() else { return };
    audit_reports_orphans_and_a_counter_behind_the_entries(db).await;
}

/// A debit's key keeps the debit's id, not its answer (the debit's row
/// holds the answer): a retry answers exactly the first answer, with its
/// `refunded_credits` of 0 after a refund, whether the writer still holds
/// the debit in its memory (SQLite's tail) or the tables do, and from the
/// first of a burst; an answer kept whole, as earlier versions kept every
/// answer, still replays.
async fn a_debit_key_is_answered_from_its_debit(db: crate::util::Db) {
    macro_rules! body {
        ($l:expr, $again:expr) => {{
            let l = $l;
            let a = account(&l, "cafe", "UTC", 100, ts("2026-11-01T00:00:00Z")).await;
            let first = l.execute(&a, debit(10, "m-1"), key("k1"), ts(NOW)).await.expect("debit");
            let Outcome::Debit(made) = &first.outcome else { panic!("not a debit: {first:?}") };
            let retry = l.execute(&a, debit(10, "m-1"), key("k1"), ts(NOW)).await.expect("retry");
            assert!(retry.replayed);
            assert_eq!(retry.outcome, first.outcome);

            let refund = Command::RefundDebit { debit_id: made.id.clone(), credits: Credits::new(4).unwrap() };
            l.execute(&a, refund, key("r1"), ts(NOW)).await.expect("refund");
            // In a burst beside its first use, and after the refund.
            let answers = burst(
                &l,
                vec![
                    (a.clone(), debit(10, "m-1"), key("k1")),
                    (a.clone(), debit(1, "m-2"), key("k2")),
                    (a.clone(), debit(1, "m-2"), key("k2")),
                ],
            )
            .await;
            let answers: Vec<Executed> = answers.into_iter().map(|r| r.expect("answered")).collect();
            assert_eq!(answers[0].outcome, first.outcome, "the first answer, refunded 0");
            assert!(answers[0].replayed && !answers[1].replayed && answers[2].replayed);
            assert_eq!(answers[1].outcome, answers[2].outcome);
            assert_eq!(available(&l, &a).await, 100 - 10 + 4 - 1);

            // A read waits for the tables; they keep the debit's id alone.
            let kept = crate::util::raw_text(
                &db,
                "SELECT response FROM idempotency_keys WHERE account_id = 'cafe' AND key = 'k1'",
            );
            assert_eq!(kept, format!(r#"{{"debit":"{}"}}"#, made.id));
            drop(l);
            // An answer kept whole, as before, with a debit id of no row.
            let whole = r#"{"type":"debit","body":{"id":"deb_old1","account_id":"cafe","credits":3,"reference":"m-0","description":null,"from_free":3,"from_grants":0,"from_paid":0,"refunded_credits":0,"hold_id":null,"balance_after":97,"created_at":"2026-11-20T00:00:00Z"}}"#;
            crate::util::raw_sql(
                &db,
                &format!(
                    "INSERT INTO idempotency_keys (account_id, key, request, response, created_at) VALUES \
                     ('cafe', 'old', '{{\"op\":\"debit\",\"credits\":3,\"reference\":\"m-0\"}}', '{whole}', 0)"
                ),
            );
            // Opened again: the writer reads the key and the debit from the tables.
            let l = $again;
            let again = l.execute(&a, debit(10, "m-1"), key("k1"), ts(NOW)).await.expect("retry");
            assert!(again.replayed);
            assert_eq!(again.outcome, first.outcome);
            let old = l.execute(&a, debit(3, "m-0"), key("old"), ts(NOW)).await.expect("old key");
            assert!(old.replayed);
            let Outcome::Debit(old) = old.outcome else { panic!("not a debit") };
            assert_eq!((old.id.as_str(), old.balance_after), ("deb_old1", 97));
            let e = l.execute(&a, debit(11, "m-1"), key("k1"), ts(NOW)).await.unwrap_err();
            assert!(matches!(e, LedgerError::IdempotencyConflict { .. }), "{e}");
            assert_eq!(available(&l, &a).await, 93);
            audit_ok(&l).await;
        }};
    }
    if db.pg_schema.is_some() {
        body!(db.pg_ledger().await, db.pg_ledger().await)
    } else {
        body!(db.ledger().await, db.ledger().await)
    }
}

#[tokio::test]
async fn sqlite_a_debit_key_is_answered_from_its_debit() {
    a_debit_key_is_answered_from_its_debit(crate::util::Db::new()).await;
}

#[tokio::test]
async fn postgres_a_debit_key_is_answered_from_its_debit() {
    let Some(db) = crate::util::Db::postgres() else { return };
    a_debit_key_is_answered_from_its_debit(db).await;
}

/// A panic while a group is applied (here: an active hold whose lot was
/// deleted behind the ledger's back) answers `internal` to its operation
/// only; the other operations of the group are answered, and the writer
/// (SQLite) or worker (PostgreSQL) goes on.
async fn a_panic_in_a_group_answers_internal_and_the_store_goes_on(db: crate::util::Db) {
    macro_rules! body {
        ($l:expr, $again:expr) => {{
            let l = $l;
            let at = ts("2026-11-01T00:00:00Z");
            let a = account(&l, "acct_broken", "UTC", 10, at).await;
            let b = account(&l, "acct_fine", "UTC", 10, at).await;
            let hold =
                Command::Hold { credits: Credits::new(4).unwrap(), reference: None, ttl_seconds: None };
            let Outcome::Hold(h) = l.execute(&a, hold, key("h"), ts(NOW)).await.expect("hold").outcome else {
                panic!("not a hold")
            };
            // A read first: on SQLite the hold is then in the tables, not
            // only in the log's tail (the writer's memory); the store is
            // opened again so its writer reads the account from the tables.
            available(&l, &a).await;
            drop(l);
            crate::util::raw_sql(&db, "DELETE FROM lots WHERE account_id = 'acct_broken'");
            let l = $again;
            let release = Command::Release { hold_id: h.id.clone() };
            let answers = burst(
                &l,
                vec![
                    (a.clone(), release, None),
                    (b.clone(), debit(1, "x"), key("d1")),
                    (b.clone(), debit(1, "y"), key("d2")),
                ],
            )
            .await;
            assert!(matches!(answers[0], Err(LedgerError::Internal(_))), "{:?}", answers[0]);
            assert!(answers[1].is_ok() && answers[2].is_ok(), "{answers:?}");
            let after = l.execute(&b, debit(1, "z"), key("d3"), ts(NOW)).await;
            assert!(after.is_ok(), "the store goes on: {after:?}");
            assert_eq!(available(&l, &b).await, 7);
        }};
    }
    if db.pg_schema.is_some() {
        body!(db.pg_ledger().await, db.pg_ledger().await)
    } else {
        body!(db.ledger().await, db.ledger().await)
    }
}

#[tokio::test]
async fn sqlite_a_panic_in_a_group_answers_internal_and_the_store_goes_on() {
    a_panic_in_a_group_answers_internal_and_the_store_goes_on(crate::util::Db::new()).await;
}

#[tokio::test]
async fn postgres_a_panic_in_a_group_answers_internal_and_the_store_goes_on() {
    let Some(db) = crate::util::Db::postgres() else { return };
    a_panic_in_a_group_answers_internal_and_the_store_goes_on(db).await;
}
