//! Unit and property tests of the pure batch apply: no store, states built
//! in memory, the answers and rows compared with running each operation
//! alone on the state the previous one left.

use jiff::Timestamp;
use proptest::prelude::*;

use super::*;
use crate::domain::DomainError;
use crate::domain::account::NewAccount;
use crate::domain::command::{Command, Outcome};
use crate::domain::credits::Credits;
use crate::domain::period::Zone;
use crate::ledger::IdempotencyKey;

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn account(id: &str, free: i64) -> Account {
    let new =
        NewAccount { id: id.into(), name: id.into(), monthly_free_credits: Some(free), ..Default::default() };
    new.build(&crate::domain::account::AccountDefaults::new(Zone::utc()), at("2026-11-01T00:00:00Z")).unwrap()
}

fn loaded(accounts: &[Account]) -> Loaded {
    Loaded { accounts: accounts.to_vec(), ..Loaded::default() }
}

fn op(account: &str, command: Command, key: Option<&str>, n: u32) -> Operation {
    Operation {
        account: AccountId::parse(account).unwrap(),
        command,
        key: key.map(|k| IdempotencyKey::parse(k).unwrap()),
        now: at("2026-11-10T00:00:00Z") + jiff::SignedDuration::from_secs(n.into()),
        new_id: format!("id{n}"),
    }
}

fn debit(n: i64) -> Command {
    Command::Debit { credits: Credits::new(n).unwrap(), reference: None, description: None }
}

fn balance_after(answer: &Result<Executed, LedgerError>) -> i64 {
    match &answer.as_ref().unwrap().outcome {
        Outcome::Debit(d) => d.balance_after,
        other => panic!("not a debit: {other:?}"),
    }
}

#[test]
fn state_carries_from_one_operation_to_the_next_and_a_refusal_writes_nothing() {
    let ops = [op("a", debit(600), None, 1), op("a", debit(600), None, 2), op("a", debit(400), None, 3)];
    let batch = apply(loaded(&[account("a", 1000)]), &ops);
    assert_eq!(balance_after(&batch.answers[0]), 400);
    assert!(matches!(
        batch.answers[1],
        Err(LedgerError::Domain(DomainError::InsufficientCredits { available: 400, .. }))
    ));
    assert_eq!(balance_after(&batch.answers[2]), 0);
    // The month's free lot, two debits and their entries: nothing of the refused one.
    assert_eq!(batch.rows.debits.len(), 2);
    let kinds: Vec<_> = batch.rows.entries.iter().map(|e| e.entry.kind.as_str()).collect();
    assert_eq!(kinds, ["grant_monthly", "debit", "debit"]);
    assert_eq!(batch.rows.lots.len(), 1);
    assert_eq!(batch.rows.lots[0].1.remaining, 0);
}

/// Events are numbered per account across a group; a refused operation
/// uses no number; the account row carries the last one.
#[test]
fn events_are_numbered_per_account_across_a_group_and_a_refusal_takes_no_number() {
    let buy = |n| Command::Purchase { credits: Credits::new(n).unwrap() };
    let ops = [
        op("a", buy(5), None, 1),
        op("b", buy(5), None, 2),
        op("a", debit(5_000), None, 3),
        op("a", buy(7), None, 4),
    ];
    let batch = apply(loaded(&[account("a", 1000), account("b", 1000)]), &ops);
    assert!(batch.answers[2].is_err());
    let numbered: Vec<(&str, i64, &str)> =
        batch.rows.events.iter().map(|(a, e)| (a.as_str(), e.sequence, e.id.as_str())).collect();
    assert_eq!(numbered, [("a", 1, "evt_id1"), ("b", 1, "evt_id2"), ("a", 2, "evt_id4")]);
    let a = batch.rows.accounts.iter().find(|x| x.id.as_str() == "a").unwrap();
    assert_eq!(a.event_sequence, 2);
}

#[test]
fn a_key_used_twice_answers_from_the_first_and_is_stored_once() {
    let ops = [
        op("a", debit(10), Some("k"), 1),
        op("a", debit(10), Some("k"), 2),
        op("a", debit(11), Some("k"), 3),
    ];
    let batch = apply(loaded(&[account("a", 1000)]), &ops);
    let first = batch.answers[0].as_ref().unwrap();
    let again = batch.answers[1].as_ref().unwrap();
    assert!(!first.replayed && again.replayed);
    assert_eq!(first.outcome, again.outcome);
    assert!(matches!(batch.answers[2], Err(LedgerError::IdempotencyConflict { .. })));
    assert_eq!(batch.rows.keys.len(), 1);
    assert_eq!(batch.rows.debits.len(), 1);
}

#[test]
fn a_key_stored_before_the_group_is_replayed() {
    let first = apply(loaded(&[account("a", 1000)]), &[op("a", debit(10), Some("k"), 1)]);
    let key = first.rows.keys[0].clone();
    let mut l = loaded(&[account("a", 1000)]);
    l.keys.push((("a".into(), "k".into()), key.answer));
    // The key names the debit it made; the load's last round brings it.
    let (_, made) = first.rows.debits[0].clone();
    assert_eq!(l.named_debits(), [("a".to_string(), made.id.clone())]);
    l.debits.push(("a".into(), made));
    assert_eq!(l.named_debits(), []);
    let batch = apply(l, &[op("a", debit(10), Some("k"), 2)]);
    let again = batch.answers[0].as_ref().unwrap();
    assert!(again.replayed);
    assert_eq!(again.outcome, first.answers[0].as_ref().unwrap().outcome);
    assert!(batch.rows.is_empty());
}

#[test]
fn a_key_whose_debit_is_not_loaded_answers_internal_and_writes_nothing() {
    let first = apply(loaded(&[account("a", 1000)]), &[op("a", debit(10), Some("k"), 1)]);
    let mut l = loaded(&[account("a", 1000)]);
    l.keys.push((("a".into(), "k".into()), first.rows.keys[0].answer.clone()));
    let batch = apply(l, &[op("a", debit(10), Some("k"), 2), op("a", debit(1), None, 3)]);
    assert!(matches!(&batch.answers[0], Err(LedgerError::Internal(m)) if m.contains("names debit")));
    assert_eq!(balance_after(&batch.answers[1]), 999);
}

#[test]
fn unknown_accounts_and_invalid_commands_are_answered_alone() {
    let bad = Command::Release { hold_id: "nope".into() };
    let ops = [op("ghost", debit(1), None, 1), op("a", bad, None, 2), op("a", debit(1), None, 3)];
    let batch = apply(loaded(&[account("a", 5)]), &ops);
    assert!(matches!(batch.answers[0], Err(LedgerError::AccountNotFound(_))));
    assert!(matches!(batch.answers[1], Err(LedgerError::Domain(_))));
    assert_eq!(balance_after(&batch.answers[2]), 4);
}

#[test]
fn objects_made_in_the_group_are_found_later_in_it_and_written_once_in_their_last_version() {
    let ops = [
        op("a", Command::Purchase { credits: Credits::new(100).unwrap() }, None, 1),
        op(
            "a",
            Command::RefundPurchase {
                purchase_id: "pur_id1".into(),
                credits: Some(Credits::new(30).unwrap()),
            },
            None,
            2,
        ),
        op("a", debit(5), None, 3),
        op(
            "a",
            Command::RefundDebit { debit_id: "deb_id3".into(), credits: Credits::new(2).unwrap() },
            None,
            4,
        ),
        op(
            "a",
            Command::RefundDebit { debit_id: "deb_id3".into(), credits: Credits::new(3).unwrap() },
            None,
            5,
        ),
    ];
    let batch = apply(loaded(&[account("a", 0)]), &ops);
    for (i, a) in batch.answers.iter().enumerate() {
        assert!(a.is_ok(), "operation {i}: {a:?}");
    }
    assert_eq!(batch.rows.purchases.len(), 1);
    assert_eq!(batch.rows.purchases[0].1.refunded_credits, 30);
    assert_eq!(batch.rows.debits.len(), 1);
    assert_eq!(batch.rows.debits[0].1.refunded, 5);
    // The purchase limit's counter: 100 bought, 30 refunded before billing.
    assert_eq!(batch.rows.accounts[0].purchased_month_credits, 70);
}

#[test]
fn missing_lots_are_those_named_but_not_loaded() {
    let done = apply(loaded(&[account("a", 10)]), &[op("a", debit(4), None, 1)]);
    let (_, d) = done.rows.debits[0].clone();
    let mut l = loaded(&[account("a", 10)]);
    l.debits.push(("a".into(), d));
    assert_eq!(l.missing_lots(), [("a".to_string(), "free_2026-11".to_string())]);
}

/// One operation of a generated sequence, on one of two accounts.
fn command() -> impl Strategy<Value = (usize, Command, Option<u8>)> {
    let credits = 1i64..400;
    prop_oneof![
        (0..2usize, credits.clone(), proptest::option::of(0..4u8)).prop_map(|(a, n, k)| (a, debit(n), k)),
        (0..2usize, credits.clone(), proptest::option::of(0..4u8)).prop_map(|(a, n, k)| (
            a,
            Command::Purchase { credits: Credits::new(n).unwrap() },
            k
        )),
        (0..2usize, credits, proptest::option::of(0..4u8)).prop_map(|(a, n, k)| {
            (a, Command::Hold { credits: Credits::new(n).unwrap(), reference: None, ttl_seconds: None }, k)
        }),
    ]
}

proptest! {
    /// Applying a group at once answers exactly as applying its operations
    /// one per group, each on the state the previous groups left.
    #[test]
    fn a_group_answers_as_its_operations_one_by_one(cmds in proptest::collection::vec(command(), 1..30)) {
        let names = ["a", "b"];
        let ops: Vec<Operation> = cmds
            .iter()
            .enumerate()
            .map(|(i, (a, c, k))| {
                let key = k.map(|k| format!("k{k}"));
                op(names[*a], c.clone(), key.as_deref(), i as u32)
            })
            .collect();
        let start = [account("a", 500), account("b", 0)];
        let together = apply(loaded(&start), &ops);

        let mut states = loaded(&start).into_states().0;
        let mut keys: Vec<(Pair, StoredAnswer)> = Vec::new();
        let mut made: Vec<(String, Debit)> = Vec::new();
        for (i, o) in ops.iter().enumerate() {
            let mut l = Loaded::default();
            let s = &states[o.account.as_str()];
            l.accounts.push(s.account.clone());
            l.lots = s.lots.iter().map(|x| (o.account.to_string(), x.clone())).collect();
            l.holds = s.holds.iter().map(|x| (o.account.to_string(), x.clone())).collect();
            l.keys = keys.clone();
            // As a store's last round: the debits the keys' answers name.
            let named: Vec<Pair> = l.named_debits();
            l.debits = made.iter().filter(|(a, d)| named.contains(&(a.clone(), d.id.clone()))).cloned().collect();
            let alone = apply(l, std::slice::from_ref(o));
            let (got, want) = (&alone.answers[0], &together.answers[i]);
            prop_assert_eq!(format!("{got:?}"), format!("{want:?}"), "operation {}", i);
            keys.extend(alone.rows.keys.iter().map(|k| ((k.account.to_string(), k.key.clone()), k.answer.clone())));
            made.extend(alone.rows.debits.iter().map(|(a, d)| (a.to_string(), d.clone())));
            let mut next = alone.rows;
            if let Some(a) = next.accounts.pop() {
                states.get_mut(o.account.as_str()).unwrap().account = a;
            }
            let st = states.get_mut(o.account.as_str()).unwrap();
            for (_, lot, _) in next.lots {
                match st.lot_index(&lot.id) {
                    Some(j) => st.lots[j] = lot,
                    None => st.lots.push(lot),
                }
            }
            for (_, hold) in next.holds {
                match st.holds.iter().position(|h| h.id == hold.id) {
                    Some(j) => st.holds[j] = hold,
                    None => st.holds.push(hold),
                }
            }
        }
    }
}
