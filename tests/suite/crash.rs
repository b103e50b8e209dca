//! SIGKILL in the middle of writes: nothing acknowledged is lost, nothing
//! is applied twice, and rerunning the same batch finishes the job.
//!
//! `textcredits batch` prints an answer line only after its operation is
//! committed, and every line carries an idempotency key. So after a kill:
//! every answered line is in the ledger; what is in the ledger is a prefix
//! of the file (lines run one after the other); balances, lots and
//! statements still prove out (`audit`); and a rerun of the whole file
//! applies each missing line once and answers the others as replays.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;

use crate::util::Db;

/// Every command runs at this instant: mid-month, so nothing expires
/// between runs and balances depend only on what was written.
const NOW: &str = "2026-11-24T18:00:00Z";
/// Lines per batch file: enough that a kill after a few hundred answers
/// lands mid-run (the pipe buffers at most ~250 answers ahead of us),
/// few enough that a full run takes about a second.
const LINES: usize = 2_000;
/// Paid credits of the account before the batch.
const INITIAL: i64 = 100_000;

fn json(db: &Db, args: &[&str]) -> Value {
    let mut all = vec!["--now", NOW];
    all.extend_from_slice(args);
    db.json(&all)
}

/// An account with no free credits and [`INITIAL`] paid ones, so every
/// debit of the batch comes from one paid lot.
fn paid_account(db: &Db, account: &str) {
    json(db, &["account", "create", account, "--name", "Big Sender", "--monthly-free-credits", "0"]);
    let initial = INITIAL.to_string();
    json(db, &["purchase", account, &initial, "--key", "initial"]);
    assert_eq!(json(db, &["balance", account])["available"], INITIAL);
}

/// Writes the batch file: line `n` debits 1 credit with key `k-n` and
/// reference `line-n`.
fn debit_file(db: &Db, account: &str) -> PathBuf {
    let text: String = (1..=LINES)
        .map(|n| {
            format!(
                "{{\"account\": \"{account}\", \"key\": \"k-{n}\", \"op\": \"debit\", \
                 \"credits\": 1, \"reference\": \"line-{n}\"}}\n"
            )
        })
        .collect();
    let path = db.dir.path().join("debits.jsonl");
    std::fs::write(&path, text).expect("batch file is written");
    path
}

/// What one run of `batch` said before it ended or was killed.
struct BatchRun {
    answers: Vec<Value>,
    killed: bool,
}

/// Runs `batch FILE`, reading answers as they are printed. With
/// `kill_after`, sends SIGKILL as soon as that many answers have been read.
fn run_batch(db: &Db, file: &Path, kill_after: Option<usize>) -> BatchRun {
    let file = file.to_str().expect("temp paths are UTF-8");
    let mut child = db
        .command(&["--now", NOW, "batch", file])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut answers = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("answers are UTF-8 lines");
        let answer: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("answer {line:?}: {e}"));
        answers.push(answer);
        if Some(answers.len()) == kill_after {
            child.kill().expect("SIGKILL is sent");
            break;
        }
    }
    let mut stderr = String::new();
    if kill_after.is_none() {
        // Only read once stdout is done: the child has exited by then.
        let mut pipe = child.stderr.take().expect("stderr is piped");
        pipe.read_to_string(&mut stderr).expect("stderr is UTF-8");
    }
    let status = child.wait().expect("the child is reaped");
    let killed = status.signal() == Some(9);
    match kill_after {
        Some(n) => assert!(
            killed,
            "the batch was to be killed after {n} answers but ended with {status:?} \
             after {} answers",
            answers.len()
        ),
        None => assert!(status.success(), "batch failed: {status:?} {stderr}"),
    }
    BatchRun { answers, killed }
}

/// The debits of the ledger by reference (`line-n`) to debit id; panics if
/// a reference appears twice (a line applied twice) or a debit is not of
/// exactly one credit.
fn debits_by_reference(db: &Db, account: &str) -> BTreeMap<String, String> {
    let mut debits = BTreeMap::new();
    for e in db.ledger_entries(account).iter().filter(|e| e["kind"] == "debit") {
        assert_eq!(e["credits"], -1, "each line debits one credit: {e}");
        let reference = e["reference"].as_str().expect("debits carry their line");
        let id = e["source"].as_str().expect("debit entries name their debit");
        let before = debits.insert(reference.to_string(), id.to_string());
        assert!(before.is_none(), "{reference} was applied twice");
    }
    debits
}

/// The checks after a kill. `answers` are what the killed run printed;
/// `known` maps line numbers to debit ids acknowledged by earlier runs.
/// Returns how many lines are applied.
fn check_after_kill(db: &Db, account: &str, answers: &[Value], known: &mut BTreeMap<usize, String>) -> usize {
    db.assert_audit();
    let debits = debits_by_reference(db, account);
    let applied = debits.len();
    let expected: BTreeSet<String> = (1..=applied).map(|n| format!("line-{n}")).collect();
    let present: BTreeSet<String> = debits.keys().cloned().collect();
    assert_eq!(present, expected, "lines run in order, so the applied ones are the first {applied}");
    assert!(applied < LINES, "the kill came after the whole batch ({applied} lines)");
    for a in answers {
        assert_eq!(a["ok"], true, "{a}");
        let n = a["line"].as_u64().expect("answers carry their line") as usize;
        let id = a["result"]["id"].as_str().expect("a debit answer has an id");
        let reference = format!("line-{n}");
        assert_eq!(a["result"]["reference"], reference.as_str(), "{a}");
        assert_eq!(
            debits.get(&reference).map(String::as_str),
            Some(id),
            "acknowledged line {n} ({id}) is not in the ledger after the kill"
        );
        if let Some(earlier) = known.insert(n, id.to_string()) {
            assert_eq!(earlier, id, "line {n} answered with another debit");
        }
    }
    let balance = json(db, &["balance", account]);
    let left = INITIAL - applied as i64;
    assert_eq!(balance["available"], left, "{balance}");
    assert_eq!(balance["paid"]["remaining"], left, "{balance}");
    assert_eq!(balance["held"], 0, "{balance}");
    applied
}

/// Reruns the file to the end: the first `applied` lines replay (with the
/// ids acknowledged before), the rest apply once; the balance ends at
/// exactly `INITIAL - LINES`.
fn finish(db: &Db, account: &str, file: &Path, applied: usize, known: &BTreeMap<usize, String>) {
    let run = run_batch(db, file, None);
    assert!(!run.killed);
    assert_eq!(run.answers.len(), LINES, "one answer per line");
    let debits = debits_by_reference(db, account);
    assert_eq!(debits.len(), LINES, "every line applied exactly once");
    for (i, a) in run.answers.iter().enumerate() {
        let n = i + 1;
        assert_eq!(a["line"], n, "{a}");
        assert_eq!(a["ok"], true, "{a}");
        assert_eq!(a["replayed"], n <= applied, "line {n} of {applied} applied: {a}");
        let id = a["result"]["id"].as_str().expect("a debit answer has an id");
        assert_eq!(debits[&format!("line-{n}")], id, "line {n}");
        if let Some(earlier) = known.get(&n) {
            assert_eq!(earlier, id, "line {n} replayed another debit");
        }
    }
    let balance = json(db, &["balance", account]);
    assert_eq!(balance["available"], INITIAL - LINES as i64, "{balance}");
    db.assert_audit();
}

/// Kills the batch once after `kill_after` answers, checks, and finishes.
fn kill_once_then_finish(kill_after: usize) {
    let db = Db::new();
    paid_account(&db, "big");
    let file = debit_file(&db, "big");
    let run = run_batch(&db, &file, Some(kill_after));
    assert_eq!(run.answers.len(), kill_after);
    for (i, a) in run.answers.iter().enumerate() {
        assert_eq!(a["line"], i + 1, "{a}");
        assert_eq!(a["replayed"], false, "first run: {a}");
    }
    let mut known = BTreeMap::new();
    let applied = check_after_kill(&db, "big", &run.answers, &mut known);
    assert!(applied >= kill_after, "{applied} applied < {kill_after} acked");
    finish(&db, "big", &file, applied, &known);
}

#[test]
fn sigkill_after_150_answers_loses_nothing_acknowledged() {
    kill_once_then_finish(150);
}

#[test]
fn sigkill_after_275_answers_loses_nothing_acknowledged() {
    kill_once_then_finish(275);
}

#[test]
fn sigkill_after_400_answers_loses_nothing_acknowledged() {
    kill_once_then_finish(400);
}

/// A crash during the recovery run is no different: kill the first run,
/// kill the rerun (part replays, part new lines), then finish.
#[test]
fn sigkill_during_the_rerun_too() {
    let db = Db::new();
    paid_account(&db, "big");
    let file = debit_file(&db, "big");
    let mut known = BTreeMap::new();

    let first = run_batch(&db, &file, Some(200));
    let applied_first = check_after_kill(&db, "big", &first.answers, &mut known);

    // Far enough past the first run's lines that new lines are applied.
    let second = run_batch(&db, &file, Some(applied_first + 300));
    for a in &second.answers {
        let n = a["line"].as_u64().unwrap() as usize;
        assert_eq!(a["replayed"], n <= applied_first, "line {n}: {a}");
    }
    let applied = check_after_kill(&db, "big", &second.answers, &mut known);
    assert!(applied >= applied_first + 300, "{applied} applied");
    finish(&db, "big", &file, applied, &known);
}

/// A kill among purchases, debits, holds and grants: whatever was applied
/// is a prefix of the file, the balance is what that prefix makes it, and
/// the rerun finishes with every line applied once.
///
/// Fewer lines than the debit tests: every purchase, grant and hold stays
/// active, and each operation loads all of them, so a run grows
/// quadratically.
#[test]
fn sigkill_among_mixed_operations() {
    const ACCOUNT: &str = "mixed";
    const MIXED_LINES: usize = 600;
    let db = Db::new();
    json(&db, &["account", "create", ACCOUNT, "--name", "Mixed"]);
    let initial = json(&db, &["balance", ACCOUNT])["available"].as_i64().unwrap();
    // (operation, extra fields, change to available)
    let ops = [
        ("purchase", r#""credits": 3"#, 3),
        ("debit", r#""credits": 2, "reference": "mix""#, -2),
        ("hold", r#""credits": 1, "reference": "mix""#, -1),
        ("grant", r#""credits": 1, "reason": "promo""#, 1),
    ];
    let text: String = (1..=MIXED_LINES)
        .map(|n| {
            let (op, fields, _) = ops[(n - 1) % ops.len()];
            format!("{{\"account\": \"{ACCOUNT}\", \"key\": \"m-{n}\", \"op\": \"{op}\", {fields}}}\n")
        })
        .collect();
    let file = db.dir.path().join("mixed.jsonl");
    std::fs::write(&file, text).unwrap();
    let change_of = |n: usize| ops[(n - 1) % ops.len()].2;

    let killed = run_batch(&db, &file, Some(200));
    db.assert_audit();
    let entries = db.ledger_entries(ACCOUNT);
    let sources: BTreeSet<String> =
        entries.iter().filter_map(|e| e["source"].as_str().map(str::to_string)).collect();
    let after_kill = json(&db, &["balance", ACCOUNT]);
    assert_eq!(
        entries[0]["balance_after"], after_kill["available"],
        "the newest entry and the balance agree"
    );
    for a in &killed.answers {
        let id = a["result"]["id"].as_str().unwrap();
        assert!(sources.contains(id), "acknowledged {a} is not in the ledger");
    }

    let done = run_batch(&db, &file, None);
    assert_eq!(done.answers.len(), MIXED_LINES);
    let ids: Vec<String> = done
        .answers
        .iter()
        .map(|a| {
            assert_eq!(a["ok"], true, "{a}");
            a["result"]["id"].as_str().unwrap().to_string()
        })
        .collect();
    for (a, first) in done.answers.iter().zip(&killed.answers) {
        assert_eq!(a["result"], first["result"], "a replay answers as the first time");
    }
    // The applied lines were the first `applied` ones, each exactly once.
    let applied = ids.iter().take_while(|id| sources.contains(*id)).count();
    let expected: BTreeSet<String> = ids[..applied].iter().cloned().collect();
    let stray: BTreeSet<String> = sources.iter().filter(|s| !expected.contains(*s)).cloned().collect();
    assert!(
        stray.is_empty(),
        "applied before the kill but not among the first {applied} lines: \
         {stray:?}"
    );
    assert!(applied >= killed.answers.len() && applied < MIXED_LINES, "{applied}");
    for (i, a) in done.answers.iter().enumerate() {
        assert_eq!(a["replayed"], i < applied, "{a}");
    }
    let expected_after_kill: i64 = initial + (1..=applied).map(change_of).sum::<i64>();
    assert_eq!(after_kill["available"], expected_after_kill, "{after_kill}");

    let end = json(&db, &["balance", ACCOUNT]);
    let expected_end: i64 = initial + (1..=MIXED_LINES).map(change_of).sum::<i64>();
    assert_eq!(end["available"], expected_end, "{end}");
    assert_eq!(end["held"], (MIXED_LINES / ops.len()) as i64, "{end}");
    db.assert_audit();
}
