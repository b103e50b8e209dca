//! Bad input and whole flows through the real `textcredits` binary.
//!
//! Every refusal must exit 2, print exactly one line on stderr starting
//! `error:` and change nothing. "Nothing" is checked from the outside, the
//! way an operator would: `audit` passes, and the balance, ledger, purchases,
//! statements and settings of every account read back identical. The
//! refusal tables run each case against one prepared database and report
//! every broken case by name, not just the first.

use serde_json::{Value, json};

use crate::util::{Db, Run};

/// The instant every command runs at, unless a case says otherwise: a
/// Tuesday late in November 2026, so the month has not ended anywhere.
const NOW: &str = "2026-11-24T18:00:00Z";

/// Runs the binary at `now` (always given, so no test reads the clock).
fn run_at(db: &Db, now: &str, args: &[&str]) -> Run {
    let mut all = vec!["--now", now];
    all.extend_from_slice(args);
    db.run(&all)
}

/// Runs at [`NOW`] with `--json`, expecting success.
fn json(db: &Db, args: &[&str]) -> Value {
    json_at(db, NOW, args)
}

fn json_at(db: &Db, now: &str, args: &[&str]) -> Value {
    let mut all = vec!["--now", now];
    all.extend_from_slice(args);
    db.json(&all)
}

/// `audit` passes (run with `--now` like everything else).
fn audit(db: &Db) -> Result<(), String> {
    let run = run_at(db, NOW, &["audit"]);
    if run.code == 0 && run.stdout.contains("audit passed") {
        Ok(())
    } else {
        Err(format!("audit failed (exit {}): {}{}", run.code, run.stdout, run.stderr))
    }
}

fn assert_audit(db: &Db) {
    if let Err(e) = audit(db) {
        panic!("{e}");
    }
}

/// What an operator can read of these accounts: the proof that a refused
/// command changed nothing is that all of it reads back the same.
fn snapshot(db: &Db, accounts: &[&str]) -> Value {
    let mut all = serde_json::Map::new();
    all.insert("account list".into(), json(db, &["account", "list", "--limit", "500"]));
    for &a in accounts {
        all.insert(
            a.to_string(),
            json!({
                "balance": json(db, &["balance", a]),
                "ledger": db.ledger_entries(a),
                "account": json(db, &["account", "show", a]),
                "purchases": json(db, &["purchases", a, "--limit", "500"]),
                "statements": json(db, &["statements", a, "--limit", "500"]),
            }),
        );
    }
    Value::Object(all)
}

/// The first place where two JSON values differ, as a path and both sides.
fn first_difference(path: &str, before: &Value, after: &Value) -> Option<String> {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            let keys = b.keys().chain(a.keys().filter(|k| !b.contains_key(*k)));
            keys.into_iter().find_map(|k| {
                let (bv, av) = (b.get(k).unwrap_or(&Value::Null), a.get(k).unwrap_or(&Value::Null));
                first_difference(&format!("{path}.{k}"), bv, av)
            })
        }
        (Value::Array(b), Value::Array(a)) => {
            let same_length = b.len() == a.len();
            (0..b.len().max(a.len())).find_map(|i| match (b.get(i), a.get(i)) {
                (Some(bv), Some(av)) if same_length => first_difference(&format!("{path}[{i}]"), bv, av),
                (bv, av) if bv != av => Some(format!(
                    "{path}: {} items, now {}; item {i} was {}, now {}",
                    b.len(),
                    a.len(),
                    bv.unwrap_or(&Value::Null),
                    av.unwrap_or(&Value::Null)
                )),
                _ => None,
            })
        }
        _ if before == after => None,
        _ => Some(format!("{path}: was {before}, now {after}")),
    }
}

/// One bad command line and a fragment its error line must contain.
struct Case {
    name: String,
    args: Vec<String>,
    expect: String,
}

fn case(name: impl Into<String>, args: &[&str], expect: &str) -> Case {
    Case { name: name.into(), args: args.iter().map(|s| s.to_string()).collect(), expect: expect.to_string() }
}

/// Runs every case and checks the refusal contract; panics once at the end
/// listing each broken case. `--now NOW` is added unless the case brings
/// its own `--now`. Each case is compared with the state just before it,
/// so a case that does change something is the only one blamed.
fn assert_all_refused(db: &Db, accounts: &[&str], cases: &[Case]) {
    let mut before = snapshot(db, accounts);
    assert_audit(db);
    let mut failures = Vec::new();
    for c in cases {
        let mut args: Vec<&str> = Vec::new();
        if !c.args.iter().any(|a| a.starts_with("--now")) {
            args.extend(["--now", NOW]);
        }
        args.extend(c.args.iter().map(String::as_str));
        let run = db.run(&args);
        let mut problems = Vec::new();
        if run.code != 2 {
            problems.push(format!("exit code {} instead of 2", run.code));
        }
        let lines: Vec<&str> = run.stderr.lines().collect();
        match lines.as_slice() {
            [line] if line.starts_with("error: ") => {
                if !line.contains(&c.expect) {
                    problems.push(format!("error line {line:?} lacks {:?}", c.expect));
                }
            }
            _ => problems.push(format!("stderr is not exactly one `error:` line: {:?}", run.stderr)),
        }
        if !run.stdout.is_empty() {
            problems.push(format!("printed an answer: {:?}", run.stdout));
        }
        let after = snapshot(db, accounts);
        if let Some(d) = first_difference("", &before, &after) {
            problems.push(format!("the database changed: {d}"));
            before = after;
        }
        if let Err(e) = audit(db) {
            problems.push(e);
        }
        for p in problems {
            failures.push(format!("case {:?} {:?}: {p}", c.name, c.args));
        }
    }
    assert!(
        failures.is_empty(),
        "{} problem(s) in {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// A database with two accounts:
/// - `cafe-1` (New York): 500 bought, 300 spent, a hold of 100 still held,
///   a hold of 20 released; 1,100 available.
/// - `fresh` (UTC): created and never touched, so even its free lot of the
///   month does not exist yet; 1,000 available.
struct Fixture {
    db: Db,
    purchase_id: String,
    debit_id: String,
    held_id: String,
    released_id: String,
}

const ACCOUNTS: &[&str] = &["cafe-1", "fresh"];

fn fixture() -> Fixture {
    let db = Db::new();
    json(&db, &["account", "create", "cafe-1", "--name", "Cafe One", "--time-zone", "America/New_York"]);
    json(&db, &["account", "create", "fresh", "--name", "Fresh"]);
    let purchase = json(&db, &["purchase", "cafe-1", "500", "--key", "fx-p"]);
    let debit = json(&db, &["debit", "cafe-1", "300", "--key", "fx-d"]);
    let held = json(&db, &["hold", "cafe-1", "100", "--key", "fx-h1"]);
    let released = json(&db, &["hold", "cafe-1", "20", "--key", "fx-h2"]);
    let id = |v: &Value| v["id"].as_str().expect("answers carry an id").to_string();
    let released_id = id(&released);
    json(&db, &["release", "cafe-1", &released_id, "--key", "fx-r"]);
    assert_eq!(json(&db, &["balance", "cafe-1"])["available"], 1100);
    assert_eq!(json(&db, &["balance", "fresh"])["available"], 1000);
    assert_audit(&db);
    Fixture { purchase_id: id(&purchase), debit_id: id(&debit), held_id: id(&held), released_id, db }
}

#[test]
fn bad_credits_are_refused_by_every_operation() {
    let fx = fixture();
    let values = [
        ("negative", "-5", "positive whole number"),
        ("zero", "0", "positive whole number"),
        ("fractional", "1.5", "positive whole number"),
        ("non-numeric", "abc", "positive whole number"),
        ("empty", "", "positive whole number"),
        ("exponent", "1e3", "positive whole number"),
        ("plus sign", "+5", "positive whole number"),
        ("above 10^12", "10000000000000", "at most 1000000000"),
        ("one above the per-operation max", "1000000001", "at most 1000000000"),
        ("above i64", "99999999999999999999", "at most 1000000000"),
    ];
    let mut cases = Vec::new();
    for op in ["purchase", "debit", "hold", "grant", "quote"] {
        for (label, value, expect) in values {
            let key = format!("bad-{op}-{label}");
            let mut args = vec![op, "cafe-1", value];
            if op == "grant" {
                args.extend(["--reason", "promo"]);
            }
            if op != "quote" {
                args.extend(["--key", &key]);
            }
            cases.push(case(format!("{op} {label}"), &args, expect));
        }
    }
    for (label, value, expect) in values {
        let d = fx.debit_id.as_str();
        let p = fx.purchase_id.as_str();
        let args = ["refund", "debit", "cafe-1", d, value, "--key", "bad-rd"];
        cases.push(case(format!("refund debit {label}"), &args, expect));
        let args = ["refund", "purchase", "cafe-1", p, value, "--key", "bad-rp"];
        cases.push(case(format!("refund purchase {label}"), &args, expect));
    }
    let h = fx.held_id.as_str();
    for (label, value, expect) in [
        ("negative", "-5", "between 0 and the 100 credits held"),
        ("fractional", "1.5", "whole number"),
        ("non-numeric", "abc", "whole number"),
        ("huge", "10000000000000", "between 0 and the 100 credits held"),
    ] {
        let args = ["capture", "cafe-1", h, value, "--key", "bad-capture"];
        cases.push(case(format!("capture {label}"), &args, expect));
    }
    // The answer format must not matter to where the error goes.
    cases.push(case(
        "debit negative with --json",
        &["--json", "debit", "cafe-1", "-5", "--key", "bad-json"],
        "positive whole number",
    ));
    assert_all_refused(&fx.db, ACCOUNTS, &cases);
}

#[test]
fn unknown_and_malformed_accounts_are_refused() {
    let fx = fixture();
    let h = fx.held_id.as_str();
    let unknown = "account nobody not found";
    let mut cases = vec![
        case("purchase", &["purchase", "nobody", "5", "--key", "u1"], unknown),
        case("debit", &["debit", "nobody", "5", "--key", "u2"], unknown),
        case("hold", &["hold", "nobody", "5", "--key", "u3"], unknown),
        case("grant", &["grant", "nobody", "5", "--reason", "promo", "--key", "u4"], unknown),
        case("quote", &["quote", "nobody", "5"], unknown),
        case("balance", &["balance", "nobody"], unknown),
        case("ledger", &["ledger", "nobody"], unknown),
        case("usage", &["usage", "nobody"], unknown),
        case("account show", &["account", "show", "nobody"], unknown),
        case("account set", &["account", "set", "nobody", "--name", "X", "--key", "u5"], unknown),
        case("capture", &["capture", "nobody", h, "1", "--key", "u6"], unknown),
        case("release", &["release", "nobody", h, "--key", "u7"], unknown),
    ];
    let too_long = "x".repeat(65);
    for (label, bad) in [
        ("accented", "café"),
        ("space", "a b"),
        ("65 characters", too_long.as_str()),
        ("empty", ""),
        ("slash", "a/b"),
    ] {
        let invalid = "invalid account id";
        let create = ["account", "create", bad, "--name", "X"];
        cases.push(case(format!("create {label}"), &create, invalid));
        let debit = ["debit", bad, "5", "--key", "bad-id"];
        cases.push(case(format!("debit {label}"), &debit, invalid));
        let purchase = ["purchase", bad, "5", "--key", "bad-id"];
        cases.push(case(format!("purchase {label}"), &purchase, invalid));
        cases.push(case(format!("balance {label}"), &["balance", bad], invalid));
    }
    // An existing id with other settings is a conflict, not a new account.
    cases.push(case(
        "create over an existing id with another name",
        &["account", "create", "cafe-1", "--name", "Someone Else"],
        "already exists with other settings",
    ));
    assert_all_refused(&fx.db, ACCOUNTS, &cases);
}

#[test]
fn bad_time_zones_and_settings_are_refused() {
    let fx = fixture();
    let unknown_zone = "unknown time zone";
    let mut cases = Vec::new();
    for (label, zone) in
        [("made up", "Mars/Olympus"), ("misspelt", "America/New_Yrok"), ("empty", ""), ("offset", "+25:00")]
    {
        let create = ["account", "create", "tz-1", "--name", "X", "--time-zone", zone];
        cases.push(case(format!("create {label}"), &create, unknown_zone));
        let set = ["account", "set", "cafe-1", "--time-zone", zone, "--key", "tz"];
        cases.push(case(format!("set {label}"), &set, unknown_zone));
    }
    cases.extend([
        case(
            "default time zone",
            &["--default-time-zone", "Mars/Olympus", "account", "create", "tz-2", "--name", "X"],
            unknown_zone,
        ),
        case("set nothing", &["account", "set", "cafe-1", "--key", "set-0"], "nothing to change"),
        case(
            "negative free credits",
            &["account", "create", "s-1", "--name", "X", "--monthly-free-credits", "-1"],
            "monthly_free_credits must be between 0 and 1000000000",
        ),
        case(
            "set negative free credits",
            &["account", "set", "cafe-1", "--monthly-free-credits", "-1", "--key", "s"],
            "monthly_free_credits must be between 0 and 1000000000",
        ),
        case(
            "lower-case currency",
            &["account", "create", "s-2", "--name", "X", "--currency", "usd"],
            "three-letter ISO 4217",
        ),
        case("empty name", &["account", "create", "s-3", "--name", " "], "name must be"),
        case(
            "short auto-recharge",
            &["account", "set", "cafe-1", "--auto-recharge", "1:2", "--key", "ar"],
            "THRESHOLD:CREDITS:MONTHLY_CAP",
        ),
    ]);
    assert_all_refused(&fx.db, ACCOUNTS, &cases);
}

#[test]
fn bad_unit_prices_are_refused() {
    let fx = fixture();
    let mut cases = Vec::new();
    for (label, price, expect) in [
        ("negative", "-0.01", "invalid amount"),
        ("seven decimals", "0.0000001", "at most 6 decimals"),
        ("non-numeric", "abc", "invalid amount"),
        ("empty", "", "invalid amount"),
        ("above the maximum", "1000.01", "above the maximum"),
    ] {
        // `--unit-price=-0.01` reaches our parser; `--unit-price -0.01`
        // (below) is refused by clap as an unknown flag.
        let flag = format!("--unit-price={price}");
        let create = ["account", "create", "up-1", "--name", "X", &flag];
        cases.push(case(format!("create {label}"), &create, expect));
        let set = ["account", "set", "cafe-1", &flag, "--key", "up"];
        cases.push(case(format!("set {label}"), &set, expect));
    }
    cases.push(case(
        "create negative as two words",
        &["account", "create", "up-2", "--name", "X", "--unit-price", "-0.01"],
        "unexpected argument",
    ));
    cases.push(case(
        "set negative as two words",
        &["account", "set", "cafe-1", "--unit-price", "-0.01", "--key", "up"],
        "unexpected argument",
    ));
    assert_all_refused(&fx.db, ACCOUNTS, &cases);
}

/// `--replay-step-rows` tunes SQLite's replay; on PostgreSQL, which has no
/// log to replay, it is refused before any connection is tried.
#[test]
fn the_replay_step_is_refused_on_postgresql() {
    let out = std::process::Command::new(crate::util::bin())
        .args(["--database", "postgres://nobody@127.0.0.1:1/none", "--replay-step-rows", "10"])
        .args(["balance", "cafe-1"])
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("for SQLite only"), "{stderr}");
}

/// `--replay-step-rows` at both ends of its range is taken (the values
/// past them are refused in the bad-flags test below).
#[test]
fn the_replay_step_is_taken_at_its_edges() {
    let db = crate::util::Db::new();
    for rows in ["1", "16777216"] {
        let run = db.run(&["--replay-step-rows", rows, "account", "list"]);
        assert_eq!(run.code, 0, "--replay-step-rows {rows}: {run:?}");
    }
}

#[test]
fn bad_flags_subcommands_times_and_pages_are_refused() {
    let fx = fixture();
    let now_err = "invalid --now";
    let cases = vec![
        case("unknown flag after", &["balance", "cafe-1", "--bogus"], "unexpected argument '--bogus'"),
        case(
            "unknown flag before",
            &["--bogus", "debit", "cafe-1", "5", "--key", "f1"],
            "unexpected argument '--bogus'",
        ),
        case(
            "unknown flag on a mutation",
            &["debit", "cafe-1", "5", "--key", "f2", "--bogus"],
            "unexpected argument '--bogus'",
        ),
        case("unknown subcommand", &["frobnicate"], "unrecognized subcommand"),
        case("unknown nested subcommand", &["account", "frobnicate"], "unrecognized subcommand"),
        case("no subcommand", &[], "requires a subcommand"),
        case("flag value missing", &["debit", "cafe-1", "5", "--key"], "a value is required"),
        case("--now words", &["--now", "yesterday", "debit", "cafe-1", "5", "--key", "n1"], now_err),
        case(
            "--now without offset",
            &["--now", "2026-11-24T18:00:00", "debit", "cafe-1", "5", "--key", "n2"],
            now_err,
        ),
        case("--now date only", &["--now", "2026-11-24", "purchase", "cafe-1", "5", "--key", "n3"], now_err),
        case("--now month 13", &["--now", "2026-13-01T00:00:00Z", "balance", "cafe-1"], now_err),
        case("--now empty", &["--now", "", "balance", "cafe-1"], now_err),
        case(
            "--now twice",
            &["--now", NOW, "--now", NOW, "balance", "cafe-1"],
            "cannot be used multiple times",
        ),
        case(
            "--expires-at words",
            &["grant", "cafe-1", "5", "--reason", "promo", "--expires-at", "tomorrow", "--key", "e1"],
            "invalid --expires-at",
        ),
        case(
            "--expires-at in the past",
            &[
                "grant",
                "cafe-1",
                "5",
                "--reason",
                "promo",
                "--expires-at",
                "2026-11-01T00:00:00Z",
                "--key",
                "e2",
            ],
            "not in the future",
        ),
        case(
            "--replay-step-rows 0",
            &["--replay-step-rows", "0", "balance", "cafe-1"],
            "must be 1 to 16777216",
        ),
        case(
            "--replay-step-rows past its most",
            &["--replay-step-rows", "16777217", "balance", "cafe-1"],
            "must be 1 to 16777216",
        ),
        case(
            "--replay-step-rows abc",
            &["--replay-step-rows", "abc", "balance", "cafe-1"],
            "invalid value 'abc'",
        ),
        case("--limit 0", &["ledger", "cafe-1", "--limit", "0"], "between 1 and 500"),
        case("--limit 501", &["purchases", "cafe-1", "--limit", "501"], "between 1 and 500"),
        case("--limit abc", &["ledger", "cafe-1", "--limit", "abc"], "invalid value 'abc'"),
        case("--cursor garbage", &["ledger", "cafe-1", "--cursor", "zz"], "invalid cursor"),
        case(
            "--ttl 0",
            &["hold", "cafe-1", "5", "--ttl", "0", "--key", "t0"],
            "ttl_seconds must be between 1",
        ),
        case(
            "--ttl negative",
            &["hold", "cafe-1", "5", "--ttl", "-1", "--key", "t1"],
            "ttl_seconds must be between 1",
        ),
        case(
            "key too long",
            &["debit", "cafe-1", "5", "--key", &"k".repeat(256)],
            "idempotency key must be 1 to 255",
        ),
        case("key not ASCII", &["debit", "cafe-1", "5", "--key", "clé"], "idempotency key must be 1 to 255"),
        case("key empty", &["debit", "cafe-1", "5", "--key", ""], "idempotency key must be 1 to 255"),
        case("statements of nobody in particular", &["statements"], "give an account, or --month"),
        case(
            "statement status open",
            &["billing", "status", "st_2026-11_cafe-1", "open"],
            "status must be paid or failed",
        ),
    ];
    assert_all_refused(&fx.db, ACCOUNTS, &cases);
}

#[test]
fn bad_months_are_refused() {
    let fx = fixture();
    let mut cases = Vec::new();
    for (label, month) in [
        ("month 13", "2026-13"),
        ("month 00", "2026-00"),
        ("one-digit month", "2026-1"),
        ("name", "nov"),
        ("two-digit year", "26-11"),
        ("with a day", "2026-11-01"),
        ("empty", ""),
        ("before 1970", "1969-12"),
    ] {
        let expect = "month must be YYYY-MM";
        let purchases = ["purchases", "cafe-1", "--month", month];
        cases.push(case(format!("purchases {label}"), &purchases, expect));
        let from = ["usage", "cafe-1", "--from", month];
        cases.push(case(format!("usage --from {label}"), &from, expect));
        let to = ["usage", "cafe-1", "--to", month];
        cases.push(case(format!("usage --to {label}"), &to, expect));
        let close = ["billing", "close", "--month", month];
        cases.push(case(format!("billing close {label}"), &close, expect));
        let statements = ["statements", "--month", month];
        cases.push(case(format!("statements {label}"), &statements, expect));
    }
    cases.push(case(
        "usage backwards",
        &["usage", "cafe-1", "--from", "2026-12", "--to", "2026-11"],
        "after to",
    ));
    cases.push(case(
        "usage over ten years",
        &["usage", "cafe-1", "--from", "2000-01", "--to", "2026-11"],
        "at most 120 months",
    ));
    assert_all_refused(&fx.db, ACCOUNTS, &cases);
}

/// R8 through the binary: one credit too many consumes nothing, and the
/// error names what is available and the shortfall.
#[test]
fn r8_one_credit_more_than_available_is_refused_whole() {
    let fx = fixture();
    let late = "--now=2026-12-15T12:00:00Z";
    let cases = vec![
        case(
            "debit on a fresh account",
            &["debit", "fresh", "1001", "--key", "r8-1"],
            "insufficient credits: 1000 available, 1001 requested (short by 1)",
        ),
        case(
            "hold on a fresh account",
            &["hold", "fresh", "1001", "--key", "r8-2"],
            "insufficient credits: 1000 available, 1001 requested (short by 1)",
        ),
        // Held credits are not available: 1,500 bought or free, 300 spent,
        // 100 held.
        case(
            "debit next to a hold",
            &["debit", "cafe-1", "1101", "--key", "r8-3"],
            "insufficient credits: 1100 available, 1101 requested (short by 1)",
        ),
        case(
            "hold next to a hold",
            &["--json", "hold", "cafe-1", "1101", "--key", "r8-4"],
            "insufficient credits: 1100 available, 1101 requested (short by 1)",
        ),
        // In a later month the refusal must not write the month's roll
        // forward either (expiry of November, grant of December, expiry of
        // the hold): cafe-1 then has 1,000 free of December and 500 paid.
        case(
            "debit in the next month",
            &[late, "debit", "fresh", "1001", "--key", "r8-5"],
            "insufficient credits: 1000 available, 1001 requested (short by 1)",
        ),
        case(
            "debit in the next month next to a hold",
            &[late, "debit", "cafe-1", "1501", "--key", "r8-6"],
            "insufficient credits: 1500 available, 1501 requested (short by 1)",
        ),
    ];
    assert_all_refused(&fx.db, ACCOUNTS, &cases);

    // The edge itself: exactly what is available goes through.
    let quote = json(&fx.db, &["quote", "fresh", "1001"]);
    assert_eq!(quote["covered"], false, "{quote}");
    assert_eq!(quote["shortfall"], 1, "{quote}");
    assert_eq!(quote["shortfall_amount"], "0.01", "{quote}");
    let debit = json(&fx.db, &["debit", "fresh", "1000", "--key", "r8-all"]);
    assert_eq!(debit["balance_after"], 0, "{debit}");
    assert_eq!(json(&fx.db, &["balance", "fresh"])["available"], 0);
    assert_audit(&fx.db);
}

#[test]
fn holds_and_refunds_refuse_what_they_do_not_cover() {
    let fx = fixture();
    let (h, r) = (fx.held_id.as_str(), fx.released_id.as_str());
    let (d, p) = (fx.debit_id.as_str(), fx.purchase_id.as_str());
    let cases = vec![
        case(
            "capture more than held",
            &["capture", "cafe-1", h, "101", "--key", "h1"],
            "between 0 and the 100 credits held, got 101",
        ),
        case(
            "release twice",
            &["release", "cafe-1", r, "--key", "h2"],
            &format!("hold {r} is released, not held"),
        ),
        case(
            "capture a released hold",
            &["capture", "cafe-1", r, "5", "--key", "h3"],
            "is released, not held",
        ),
        case(
            "capture an expired hold",
            &["--now", "2026-11-26T18:00:00Z", "capture", "cafe-1", h, "5", "--key", "h4"],
            "is expired, not held",
        ),
        case(
            "release an unknown hold",
            &["release", "cafe-1", "hold_doesnotexist", "--key", "h5"],
            "hold hold_doesnotexist not found",
        ),
        case("release another account's hold", &["release", "fresh", h, "--key", "h6"], "not found"),
        case(
            "refund more than debited",
            &["refund", "debit", "cafe-1", d, "301", "--key", "f1"],
            "cannot refund 301 credits",
        ),
        case(
            "refund an unknown debit",
            &["refund", "debit", "cafe-1", "deb_doesnotexist", "1", "--key", "f2"],
            "not found",
        ),
        case(
            "refund more than purchased",
            &["refund", "purchase", "cafe-1", p, "501", "--key", "f3"],
            "cannot refund 501 credits",
        ),
    ];
    assert_all_refused(&fx.db, ACCOUNTS, &cases);

    // After a partial refund, the rest is the limit.
    let refund = json(&fx.db, &["refund", "debit", "cafe-1", d, "200", "--key", "ok-1"]);
    assert_eq!(refund["refunded_credits"], 200, "{refund}");
    let cases = vec![case(
        "refund more than what is left",
        &["refund", "debit", "cafe-1", d, "101", "--key", "f4"],
        "100 are still refundable",
    )];
    assert_all_refused(&fx.db, ACCOUNTS, &cases);
}

/// Same key and same request: the first answer again, nothing changes.
/// Same key and another request: a conflict, nothing changes.
#[test]
fn idempotency_keys_replay_or_conflict() {
    let fx = fixture();
    let db = &fx.db;
    let first = json(db, &["debit", "cafe-1", "10", "--key", "idem-1"]);
    let before = snapshot(db, ACCOUNTS);

    let again = run_at(db, NOW, &["--json", "debit", "cafe-1", "10", "--key", "idem-1"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(again.json(), first, "a replay answers the first answer");
    assert!(again.stderr.contains("replayed"), "{again:?}");
    let after = snapshot(db, ACCOUNTS);
    assert_eq!(first_difference("", &before, &after), None);

    // A replay later in time is still a replay of the same answer.
    let later = json_at(db, "2026-11-24T19:00:00Z", &["debit", "cafe-1", "10", "--key", "idem-1"]);
    assert_eq!(later, first);

    let conflict = "idempotency key \"idem-1\" was already used with a different request";
    let cases = vec![
        case("other credits", &["debit", "cafe-1", "11", "--key", "idem-1"], conflict),
        case("other reference", &["debit", "cafe-1", "10", "--reference", "x", "--key", "idem-1"], conflict),
        case("other operation", &["purchase", "cafe-1", "10", "--key", "idem-1"], conflict),
        case("other operation, same credits", &["hold", "cafe-1", "10", "--key", "idem-1"], conflict),
    ];
    assert_all_refused(db, ACCOUNTS, &cases);

    // A refused request does not use up its key.
    let refused = run_at(db, NOW, &["debit", "cafe-1", "5000", "--key", "idem-2"]);
    assert_eq!(refused.code, 2, "{refused:?}");
    let ok = json(db, &["debit", "cafe-1", "5", "--key", "idem-2"]);
    assert_eq!(ok["credits"], 5, "{ok}");

    // Keys belong to an account: the same key elsewhere is a new request.
    let other = json(db, &["debit", "fresh", "10", "--key", "idem-1"]);
    assert_ne!(other["id"], first["id"]);
    assert_audit(db);
}

/// A refusal exits 2 with one `error:` line even when the CLI made up the
/// idempotency key itself (no `--key`).
#[test]
fn refusal_without_key_prints_one_line() {
    let fx = fixture();
    let cases = vec![
        case("insufficient", &["debit", "fresh", "1001"], "insufficient credits"),
        case("unknown account", &["debit", "nobody", "5"], "not found"),
        case(
            "bad time zone",
            &["account", "set", "cafe-1", "--time-zone", "Mars/Olympus"],
            "unknown time zone",
        ),
        case("release twice", &["release", "cafe-1", &fx.released_id], "not held"),
    ];
    assert_all_refused(&fx.db, ACCOUNTS, &cases);
}

/// clap's errors are cut to their first line; for a missing argument that
/// line must still say which argument is missing.
#[test]
fn missing_required_argument_is_named() {
    let fx = fixture();
    let cases = vec![
        case("grant without --reason", &["grant", "cafe-1", "5", "--key", "m1"], "--reason"),
        case("account create without --name", &["account", "create", "m-1"], "--name"),
        case("debit without credits", &["debit", "cafe-1"], "CREDITS"),
    ];
    assert_all_refused(&fx.db, ACCOUNTS, &cases);
}

/// R7 through the binary: the balance shape of API.md after a purchase, a
/// debit, a hold and a debit that spills from free into paid credits (R6).
#[test]
fn r7_purchase_debit_balance_flow() {
    let db = Db::new();
    let account =
        json(&db, &["account", "create", "cafe-1", "--name", "Cafe One", "--time-zone", "America/New_York"]);
    assert_eq!(account["id"], "cafe-1");
    assert_eq!(account["time_zone"], "America/New_York");
    assert_eq!(account["monthly_free_credits"], 1000);
    assert_eq!(account["unit_price"], "0.01");
    assert_eq!(account["currency"], "USD");

    let purchase = json(&db, &["purchase", "cafe-1", "500", "--key", "p-1"]);
    assert_eq!(purchase["credits"], 500, "{purchase}");
    assert_eq!(purchase["unit_price"], "0.01", "{purchase}");
    assert_eq!(purchase["amount"], "5.00", "{purchase}");
    assert_eq!(purchase["currency"], "USD", "{purchase}");
    assert_eq!(purchase["status"], "unbilled", "{purchase}");
    assert_eq!(purchase["bills_on"], "2026-12-01", "{purchase}");
    assert_eq!(purchase["purchased_at"], NOW, "{purchase}");

    let debit = json(&db, &["debit", "cafe-1", "300", "--reference", "camp-1", "--key", "d-1"]);
    assert_eq!(debit["credits"], 300, "{debit}");
    assert_eq!(debit["reference"], "camp-1", "{debit}");
    assert_eq!(
        (&debit["from_free"], &debit["from_grants"], &debit["from_paid"]),
        (&json!(300), &json!(0), &json!(0)),
        "R6: free credits go first: {debit}"
    );
    assert_eq!(debit["balance_after"], 1200, "{debit}");

    let balance = json(&db, &["balance", "cafe-1"]);
    let expected = json!({
        "account_id": "cafe-1",
        "as_of": NOW,
        "free": {"allowance": 1000, "used": 300, "remaining": 700,
                 "resets_at": "2026-12-01T05:00:00Z"},
        "paid": {"remaining": 500},
        "grants": {"remaining": 0},
        "held": 0,
        "available": 1200,
        "unbilled": {"credits": 500, "amount": "5.00", "currency": "USD",
                     "bills_on": "2026-12-01"},
    });
    assert_eq!(balance, expected);

    let hold = json(&db, &["hold", "cafe-1", "100", "--reference", "camp-2", "--key", "h-1"]);
    assert_eq!(hold["status"], "held", "{hold}");
    assert_eq!(hold["expires_at"], "2026-11-25T18:00:00Z", "default TTL 1 day");
    let balance = json(&db, &["balance", "cafe-1"]);
    assert_eq!(balance["held"], 100, "{balance}");
    assert_eq!(balance["available"], 1100, "{balance}");

    // 600 free left after the hold took 100 of them: the rest is paid.
    let spill = json(&db, &["debit", "cafe-1", "700", "--key", "d-2"]);
    assert_eq!((&spill["from_free"], &spill["from_paid"]), (&json!(600), &json!(100)), "{spill}");
    assert_eq!(spill["balance_after"], 400, "{spill}");

    let hold_id = hold["id"].as_str().unwrap();
    let captured = json(&db, &["capture", "cafe-1", hold_id, "60", "--key", "c-1"]);
    assert_eq!(captured["status"], "captured", "{captured}");
    assert_eq!(captured["captured"], 60, "{captured}");

    let balance = json(&db, &["balance", "cafe-1"]);
    assert_eq!(balance["free"]["used"], 960, "{balance}");
    assert_eq!(balance["free"]["remaining"], 40, "{balance}");
    assert_eq!(balance["paid"]["remaining"], 400, "{balance}");
    assert_eq!(balance["held"], 0, "{balance}");
    assert_eq!(balance["available"], 440, "{balance}");
    assert_eq!(balance["unbilled"]["amount"], "5.00", "{balance}");

    // The ledger's newest entry agrees with the balance.
    let entries = db.ledger_entries("cafe-1");
    assert_eq!(entries[0]["balance_after"], 440, "{entries:?}");
    assert_audit(&db);
}

/// People read money as `$5.00`, not micros or bare decimals.
#[test]
fn human_output_shows_money_with_its_symbol() {
    let db = Db::new();
    json(&db, &["account", "create", "cafe-1", "--name", "Cafe One"]);
    let purchase = run_at(&db, NOW, &["purchase", "cafe-1", "500", "--key", "p-1"]);
    assert_eq!(purchase.code, 0, "{purchase:?}");
    assert!(purchase.stdout.contains("$5.00"), "{}", purchase.stdout);
    assert!(purchase.stdout.contains("$0.01"), "{}", purchase.stdout);

    let balance = run_at(&db, NOW, &["balance", "cafe-1"]);
    assert_eq!(balance.code, 0, "{balance:?}");
    assert!(balance.stdout.contains("500 credits, $5.00 on 2026-12-01"), "{}", balance.stdout);
    let list = run_at(&db, NOW, &["purchases", "cafe-1"]);
    assert!(list.stdout.contains("$5.00"), "{}", list.stdout);
    let quote = run_at(&db, NOW, &["quote", "cafe-1", "2000"]);
    assert!(quote.stdout.contains("$5.00"), "500 short: {}", quote.stdout);
    let account = run_at(&db, NOW, &["account", "show", "cafe-1"]);
    assert!(account.stdout.contains("$0.01"), "{}", account.stdout);
}

/// R5 through the binary: a statement only once the month has ended in the
/// account's zone, with the purchase as its line; closing again is a no-op.
#[test]
fn r5_billing_close_after_month_end_issues_the_statement() {
    let db = Db::new();
    json(&db, &["account", "create", "cafe-1", "--name", "Cafe One", "--time-zone", "America/New_York"]);
    let purchase = json(&db, &["purchase", "cafe-1", "500", "--key", "p-1"]);
    let purchase_id = purchase["id"].as_str().unwrap();

    // Not yet: still November in New York (and one second before its end).
    assert_eq!(json(&db, &["billing", "close"]), json!([]));
    let just_before = "2026-12-01T04:59:59Z";
    assert_eq!(json_at(&db, just_before, &["billing", "close"]), json!([]));

    let month_end = "2026-12-01T05:00:00Z";
    let closed = json_at(&db, month_end, &["billing", "close"]);
    let expected = json!([{
        "id": "st_2026-11_cafe-1",
        "account_id": "cafe-1",
        "month": "2026-11",
        "issued_on": "2026-12-01",
        "lines": [{"kind": "purchase", "purchase_id": purchase_id, "refund_id": null, "credits": 500,
                   "unit_price": "0.01", "amount": "5.00"}],
        "total": "5.00",
        "currency": "USD",
        "status": "open",
    }]);
    assert_eq!(closed, expected);

    // Closing again issues nothing new.
    let later = "2026-12-02T12:00:00Z";
    assert_eq!(json_at(&db, later, &["billing", "close"]), json!([]));
    let statements = json_at(&db, later, &["statements", "cafe-1"]);
    assert_eq!(statements["data"], expected, "{statements}");

    let purchases = json_at(&db, later, &["purchases", "cafe-1"]);
    let billed = &purchases["data"][0];
    assert_eq!(billed["status"], "billed", "{purchases}");
    assert_eq!(billed["statement_id"], "st_2026-11_cafe-1", "{purchases}");
    let balance = json_at(&db, later, &["balance", "cafe-1"]);
    assert_eq!(balance["unbilled"]["credits"], 0, "{balance}");
    assert_eq!(balance["unbilled"]["bills_on"], "2027-01-01", "{balance}");

    let human = run_at(&db, later, &["statements", "cafe-1"]);
    assert!(human.stdout.contains("st_2026-11_cafe-1"), "{}", human.stdout);
    assert!(human.stdout.contains("$5.00"), "{}", human.stdout);
    assert_audit(&db);
}

/// Answer lines of a `batch` run, parsed.
fn batch_answers(run: &Run) -> Vec<Value> {
    run.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("answer {l:?}: {e}")))
        .collect()
}

#[test]
fn batch_applies_lines_once_and_replays_on_rerun() {
    let db = Db::new();
    json(&db, &["account", "create", "cafe-1", "--name", "Cafe One"]);
    let file = db.dir.path().join("ops.jsonl");
    let lines = [
        r#"{"account": "cafe-1", "key": "b-1", "op": "purchase", "credits": 100}"#,
        r#"{"account": "cafe-1", "key": "b-2", "op": "debit", "credits": 3, "reference": "camp-1"}"#,
        "",
        r#"{"account": "cafe-1", "key": "b-3", "op": "hold", "credits": 7}"#,
        r#"{"account": "cafe-1", "key": "b-4", "op": "grant", "credits": 10, "reason": "welcome"}"#,
    ];
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let path = file.to_str().unwrap();

    let first = run_at(&db, NOW, &["batch", path]);
    assert_eq!(first.code, 0, "{first:?}");
    let answers = batch_answers(&first);
    assert_eq!(answers.len(), 4, "one answer per non-empty line: {answers:?}");
    for (a, line) in answers.iter().zip([1, 2, 4, 5]) {
        assert_eq!(a["line"], line, "{a}");
        assert_eq!(a["ok"], true, "{a}");
        assert_eq!(a["replayed"], false, "{a}");
    }
    assert_eq!(answers[0]["result"]["amount"], "1.00");
    assert_eq!(answers[1]["result"]["reference"], "camp-1");
    assert_eq!(answers[2]["result"]["status"], "held");
    let balance = json(&db, &["balance", "cafe-1"]);
    assert_eq!(balance["available"], 1000 + 100 - 3 - 7 + 10, "{balance}");
    let before = snapshot(&db, &["cafe-1"]);

    let rerun = run_at(&db, NOW, &["batch", path]);
    assert_eq!(rerun.code, 0, "{rerun:?}");
    let replays = batch_answers(&rerun);
    assert_eq!(replays.len(), 4);
    for (first, again) in answers.iter().zip(&replays) {
        assert_eq!(again["replayed"], true, "{again}");
        assert_eq!(again["result"], first["result"], "same answer again");
    }
    let after = snapshot(&db, &["cafe-1"]);
    assert_eq!(first_difference("", &before, &after), None);
    assert_audit(&db);
}

#[test]
fn batch_refused_lines_change_nothing_and_exit_2() {
    let db = Db::new();
    json(&db, &["account", "create", "cafe-1", "--name", "Cafe One"]);
    json(&db, &["debit", "cafe-1", "1", "--key", "used"]);
    let file = db.dir.path().join("ops.jsonl");
    let lines = [
        r#"{"account": "cafe-1", "key": "r-1", "op": "debit", "credits": 0}"#,
        "not json",
        r#"{"account": "nobody", "key": "r-2", "op": "debit", "credits": 1}"#,
        r#"{"account": "cafe-1", "key": "r-3", "op": "debit", "credits": 1, "bogus": 1}"#,
        r#"{"account": "cafe-1", "key": "r-4", "op": "debit", "credits": 1000}"#,
        r#"{"account": "cafe-1", "key": "used", "op": "debit", "credits": 2}"#,
        r#"{"account": "cafe-1", "key": "r-5", "op": "debit", "credits": 2}"#,
    ];
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let run = run_at(&db, NOW, &["batch", file.to_str().unwrap()]);
    assert_eq!(run.code, 2, "a refused line makes the exit code 2: {run:?}");
    let answers = batch_answers(&run);
    assert_eq!(answers.len(), 7, "{answers:?}");
    for a in &answers[..6] {
        assert_eq!(a["ok"], false, "{a}");
        assert!(a["error"].is_string(), "{a}");
    }
    let errors: Vec<&str> = answers[..6].iter().map(|a| a["error"].as_str().unwrap()).collect();
    assert!(errors[4].contains("999 available, 1000 requested (short by 1)"));
    assert!(errors[5].contains("already used with a different request"));
    assert_eq!(answers[6]["ok"], true, "the good line still applies");
    assert_eq!(json(&db, &["balance", "cafe-1"])["available"], 997);
    let debits = db.ledger_entries("cafe-1").iter().filter(|e| e["kind"] == "debit").count();
    assert_eq!(debits, 2, "only the fixture's debit and r-5");
    assert_audit(&db);
}

/// `debit-many-webhook` runs beside `debit-many` in the same run, and ends
/// only when the receiver has every account's event (or fails).
#[test]
fn bench_measures_debits_with_a_webhook_endpoint_beside_none() {
    let db = Db::new();
    let run = db.run(&[
        "bench",
        "debit-many",
        "debit-many-webhook",
        "--ops",
        "300",
        "--concurrency",
        "8",
        "--json",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let report = run.json();
    let results = report["results"].as_array().expect("results");
    let names: Vec<&str> = results.iter().map(|r| r["scenario"].as_str().expect("scenario")).collect();
    assert_eq!(names, ["debit-many", "debit-many-webhook"]);
    assert!(results.iter().all(|r| r["ops"] == 300), "{report}");
}

/// `http-batch` sends its debits 1,000 to a `POST /v1/batch` (the last
/// batch partial) and fails unless every one was made.
#[test]
fn bench_sends_debits_through_the_batch_route() {
    let db = Db::new();
    let run = db.run(&["bench", "http-batch", "--ops", "2500", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let report = run.json();
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), 1, "{report}");
    assert_eq!(results[0]["scenario"], "http-batch");
    assert_eq!(results[0]["ops"], 2500);
}

/// `recover` writes its debits into the log with a writer that never
/// materializes and is dropped with its tail, then times the open that
/// replays them (failing unless the log was there and the open emptied
/// it): every debit's rows land. PostgreSQL has no log: named there, the
/// scenario is refused before anything runs.
#[test]
fn bench_recover_times_the_replay_of_an_unmaterialized_log() {
    let db = Db::new();
    let run = db.run(&["bench", "recover", "--ops", "700", "--history", "200", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let report = run.json();
    let r = &report["results"][0];
    assert_eq!(r["scenario"], "recover", "{report}");
    assert_eq!(r["ops"], 700);
    assert_eq!(r["rows_per_op"], 3.0, "entry, debit and key of each debit replayed: {report}");
    if let Some(pg) = Db::postgres() {
        let refused = pg.run(&["bench", "recover", "--ops", "10"]);
        assert_eq!(refused.code, 2, "{refused:?}");
        assert_eq!(refused.stderr.lines().count(), 1, "{refused:?}");
        assert!(refused.stderr.contains("for SQLite only"), "{refused:?}");
    }
}

/// `textcredits bench` reports every scenario it ran in the JSON shape of
/// the performance issue (its figures are measured, never asserted).
#[test]
fn bench_reports_its_scenarios_as_json() {
    let db = Db::new();
    let run = db.run(&[
        "bench",
        "debit-hot",
        "balance",
        "--ops",
        "40",
        "--concurrency",
        "4",
        "--compare",
        "--json",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let report = run.json();
    assert!(report["machine"]["cpus"].as_u64().is_some_and(|n| n >= 1), "{report}");
    let results = report["results"].as_array().expect("results");
    let names: Vec<&str> = results.iter().map(|r| r["scenario"].as_str().expect("scenario")).collect();
    assert_eq!(names, ["debit-hot", "hand-ledger/debit-hot", "bare-insert/debit-hot", "balance"]);
    for r in results {
        for field in [
            "store",
            "ops",
            "seconds",
            "ops_per_sec",
            "p50_us",
            "p99_us",
            "p999_us",
            "rows_per_op",
            "peak_rss_bytes",
        ] {
            assert!(!r[field].is_null(), "{field} missing in {r}");
        }
    }
    assert_eq!(results[0]["ops"], 40);
    assert_eq!(results[0]["store"], "sqlite");
    // A debit writes its entry, the debit and the idempotency key.
    assert_eq!(results[0]["rows_per_op"], 3.0);
    // Three runs (the median is kept), on top of prior history.
    let run = db.run(&["bench", "debit-many", "--ops", "30", "--runs", "3", "--history", "500", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let results = run.json()["results"].as_array().expect("results").clone();
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0]["ops"], 30);
    for bad in [
        &["bench", "--runs", "0"][..],
        &["bench", "--ops", "0"],
        &["bench", "--runs", "10"],
        &["bench", "--concurrency", "0"],
        &["bench", "--history", "100000001"],
    ] {
        let r = db.run(bad);
        assert_eq!(r.code, 2, "{bad:?}: {r:?}");
    }
    let bad = db.run(&["bench", "no-such-scenario"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.starts_with("error: unknown scenario"), "{bad:?}");
    assert!(
        !std::fs::read_dir(db.dir.path())
            .expect("dir")
            .any(|e| { e.expect("entry").file_name().to_string_lossy().starts_with(".textcredits-bench") }),
        "the scratch database is removed"
    );
}
