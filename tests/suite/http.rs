//! The HTTP API end to end (API.md): the real `textcredits serve` on a
//! loopback port, one database and one server per test, time moved with
//! the test clock. Covers the rules R1-R8 through the API in two time
//! zones, idempotent replays, every error code, account-token scoping,
//! holds and their TTL, concurrent debits, and the operational routes.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use crate::util::{ADMIN, Answer, Db, Server, ts};

// Helpers ----------------------------------------------------------------

/// Asserts the status of an answer and returns its JSON body.
#[track_caller]
fn expect(a: Answer, status: u16, what: &str) -> Value {
    assert_eq!(a.status, status, "{what}: expected HTTP {status}, got {} with body {}", a.status, a.text);
    a.body
}

/// A timestamp field of a JSON answer.
#[track_caller]
fn time(v: &Value) -> Timestamp {
    ts(v.as_str().unwrap_or_else(|| panic!("expected an RFC 3339 string, got {v}")))
}

#[track_caller]
fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("expected a JSON integer, got {v}"))
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("<not a string>")
}

/// A server with the test clock on, its clock moved to `now`.
async fn start_at(db: &Db, now: &str) -> Server {
    let s = Server::start(db, &["--test-clock"]);
    set_clock(&s, now).await;
    s
}

async fn set_clock(s: &Server, now: &str) {
    let a = s.call("PUT", "/v1/test-clock", Some(ADMIN), None, Some(json!({ "now": now }))).await;
    let body = expect(a, 200, &format!("moving the test clock to {now}"));
    assert_eq!(time(&body["now"]), ts(now), "the test clock answers where it is");
}

/// Creates an account (201) in `zone` with `free` monthly credits.
async fn create(s: &Server, id: &str, zone: &str, free: i64) -> Value {
    let body =
        json!({"id": id, "name": format!("{id} cafe"), "time_zone": zone, "monthly_free_credits": free});
    let a = s.post("/v1/accounts", ADMIN, None, body).await;
    let v = expect(a, 201, &format!("creating account {id}"));
    assert_eq!(v["id"], id);
    assert_eq!(v["time_zone"], zone, "the account keeps its IANA zone");
    assert_eq!(v["monthly_free_credits"], free);
    v
}

async fn purchase(s: &Server, token: &str, acct: &str, key: &str, credits: i64) -> Answer {
    s.post(&format!("/v1/accounts/{acct}/purchases"), token, Some(key), json!({ "credits": credits })).await
}

async fn debit(s: &Server, token: &str, acct: &str, key: &str, credits: i64) -> Answer {
    s.post(&format!("/v1/accounts/{acct}/debits"), token, Some(key), json!({ "credits": credits })).await
}

async fn hold(s: &Server, token: &str, acct: &str, key: &str, body: Value) -> Answer {
    s.post(&format!("/v1/accounts/{acct}/holds"), token, Some(key), body).await
}

async fn bought(s: &Server, acct: &str, key: &str, credits: i64) -> Value {
    let a = purchase(s, ADMIN, acct, key, credits).await;
    expect(a, 201, &format!("purchase of {credits} on {acct}"))
}

async fn debited(s: &Server, acct: &str, key: &str, credits: i64) -> Value {
    let a = debit(s, ADMIN, acct, key, credits).await;
    expect(a, 201, &format!("debit of {credits} on {acct}"))
}

async fn balance(s: &Server, acct: &str) -> Value {
    let a = s.get(&format!("/v1/accounts/{acct}/balance"), ADMIN).await;
    expect(a, 200, &format!("balance of {acct}"))
}

/// Every ledger entry of an account, newest first.
async fn ledger(s: &Server, acct: &str) -> Vec<Value> {
    let a = s.get(&format!("/v1/accounts/{acct}/ledger?limit=500"), ADMIN).await;
    let v = expect(a, 200, &format!("ledger of {acct}"));
    assert!(v["next_cursor"].is_null(), "one page holds the ledger: {v}");
    v["data"].as_array().expect("a data array").clone()
}

/// `(lot_id, credits taken)` of the debit entries of one debit, oldest first.
fn lots_of(entries: &[Value], debit_id: &str) -> Vec<(String, i64)> {
    entries
        .iter()
        .rev()
        .filter(|e| e["source"] == debit_id && e["kind"] == "debit")
        .map(|e| (str_of(&e["lot_id"]).to_string(), -int(&e["credits"])))
        .collect()
}

fn split(d: &Value) -> (i64, i64, i64) {
    (int(&d["from_free"]), int(&d["from_grants"]), int(&d["from_paid"]))
}

fn free_of(b: &Value) -> (i64, i64, i64) {
    (int(&b["free"]["allowance"]), int(&b["free"]["used"]), int(&b["free"]["remaining"]))
}

async fn new_token(s: &Server, acct: &str) -> String {
    let a = s.post(&format!("/v1/accounts/{acct}/tokens"), ADMIN, None, json!({"label": "pos"})).await;
    let v = expect(a, 201, &format!("creating a token of {acct}"));
    assert!(str_of(&v["id"]).len() > 4, "the token has an id: {v}");
    v["token"].as_str().unwrap_or_else(|| panic!("the token is shown once: {v}")).to_string()
}

// R1-R3: free credits, in Los Angeles and Tokyo --------------------------

/// Spends part of November's allowance, then checks that it is still
/// November one second (and one microsecond) before the local month start,
/// and that at it the allowance is whole again and the ledger expires
/// November's rest at exactly that instant.
async fn free_credits_reset_at_local_month_start(
    db: Db,
    zone: &str,
    month_start: &str,
    next_month_start: &str,
) {
    let s = start_at(&db, "2027-11-15T12:00:00Z").await;
    create(&s, "cafe", zone, 1_000).await;

    // R1: one credit per text; 300 texts cost 300 credits, free first.
    let d = debited(&s, "cafe", "d-300", 300).await;
    assert_eq!(int(&d["credits"]), 300);
    assert_eq!(split(&d), (300, 0, 0), "November's free credits pay: {d}");
    assert_eq!(int(&d["balance_after"]), 700);

    let start = ts(month_start);
    let b = balance(&s, "cafe").await;
    assert_eq!(free_of(&b), (1_000, 300, 700), "{b}");
    assert_eq!(time(&b["free"]["resets_at"]), start, "resets at the local month start: {b}");

    for before in [start - SignedDuration::from_secs(1), start - SignedDuration::from_micros(1)] {
        set_clock(&s, &before.to_string()).await;
        let b = balance(&s, "cafe").await;
        assert_eq!(free_of(&b), (1_000, 300, 700), "at {before} it is still November in {zone}: {b}");
        assert_eq!(int(&b["available"]), 700, "{b}");
        assert_eq!(time(&b["free"]["resets_at"]), start, "{b}");
    }

    set_clock(&s, month_start).await;
    let b = balance(&s, "cafe").await;
    assert_eq!(
        free_of(&b),
        (1_000, 0, 1_000),
        "at {month_start} December's allowance is whole and November's rest gone: {b}"
    );
    assert_eq!(int(&b["available"]), 1_000, "free credits do not roll over (R3): {b}");
    assert_eq!(time(&b["free"]["resets_at"]), ts(next_month_start), "{b}");

    let d = debited(&s, "cafe", "d-1", 1).await;
    assert_eq!(split(&d), (1, 0, 0), "the new allowance pays at its first instant: {d}");
    assert_eq!(int(&d["balance_after"]), 999);

    let entries = ledger(&s, "cafe").await;
    let expires: Vec<&Value> = entries.iter().filter(|e| e["kind"] == "expire").collect();
    assert_eq!(expires.len(), 1, "one expiry, of November's rest: {entries:#?}");
    let e = expires[0];
    assert_eq!(int(&e["credits"]), -700, "{e}");
    assert_eq!(e["lot_id"], "free_2027-11", "{e}");
    assert_eq!(time(&e["effective_at"]), start, "the expiry is dated at the local month start: {e}");
    let december = entries
        .iter()
        .find(|e| e["kind"] == "grant_monthly" && e["lot_id"] == "free_2027-12")
        .unwrap_or_else(|| panic!("December's allowance is in the ledger: {entries:#?}"));
    assert_eq!(int(&december["credits"]), 1_000);
    assert_eq!(time(&december["effective_at"]), start, "{december}");

    let a = s.get("/v1/accounts/cafe/usage?from=2027-11&to=2027-12", ADMIN).await;
    let usage = expect(a, 200, "usage of November and December");
    let months = usage["data"].as_array().expect("usage rows");
    let row = |m: &str| {
        months.iter().find(|r| r["month"] == m).unwrap_or_else(|| panic!("no usage row for {m}: {usage}"))
    };
    let nov = row("2027-11");
    assert_eq!(
        (int(&nov["free_granted"]), int(&nov["free_used"]), int(&nov["free_expired"])),
        (1_000, 300, 700),
        "November's rest expired at November's end: it counts in November: {nov}"
    );
    let dec = row("2027-12");
    assert_eq!(
        (int(&dec["free_granted"]), int(&dec["free_used"]), int(&dec["free_expired"])),
        (1_000, 1, 0),
        "{dec}"
    );
    db.assert_audit();
}

async fn r2_r3_free_credits_reset_at_local_month_start_in_los_angeles(db: Db) {
    // December 1, 2027 00:00 PST (UTC-8) is 08:00 UTC.
    free_credits_reset_at_local_month_start(
        db,
        "America/Los_Angeles",
        "2027-12-01T08:00:00Z",
        "2028-01-01T08:00:00Z",
    )
    .await;
}

async fn r2_r3_free_credits_reset_at_local_month_start_in_tokyo(db: Db) {
    // December 1, 2027 00:00 JST (UTC+9) is 15:00 UTC on November 30.
    free_credits_reset_at_local_month_start(db, "Asia/Tokyo", "2027-11-30T15:00:00Z", "2027-12-31T15:00:00Z")
        .await;
}

async fn r2_an_allowance_of_zero_is_allowed(db: Db) {
    let s = start_at(&db, "2027-11-15T12:00:00Z").await;
    create(&s, "nofree", "Asia/Tokyo", 0).await;
    let b = balance(&s, "nofree").await;
    assert_eq!(free_of(&b), (0, 0, 0), "{b}");
    let a = debit(&s, ADMIN, "nofree", "d1", 1).await;
    a.assert_problem(402, "insufficient_credits");
    assert_eq!((int(&a.body["available"]), int(&a.body["shortfall"])), (0, 1));
}

// R1, R4, R6, R7 ---------------------------------------------------------

async fn r1_r6_spending_order_free_then_grants_by_expiry_then_oldest_purchase(db: Db) {
    let s = start_at(&db, "2027-03-10T12:00:00Z").await;
    create(&s, "tokyo", "Asia/Tokyo", 1_000).await;
    let p1 = bought(&s, "tokyo", "p1", 500).await;
    set_clock(&s, "2027-03-10T12:05:00Z").await;
    let p2 = bought(&s, "tokyo", "p2", 2_500).await;
    let grant = |credits: i64, expires_at: &str| json!({"credits": credits, "expires_at": expires_at, "reason": "spring promo"});
    let late =
        s.post("/v1/accounts/tokyo/grants", ADMIN, Some("g-late"), grant(300, "2027-06-01T00:00:00Z")).await;
    let late = expect(late, 201, "grant expiring in June");
    let early =
        s.post("/v1/accounts/tokyo/grants", ADMIN, Some("g-early"), grant(200, "2027-04-15T00:00:00Z")).await;
    let early = expect(early, 201, "grant expiring in April");
    let (p1, p2) = (str_of(&p1["id"]), str_of(&p2["id"]));
    let (late, early) = (str_of(&late["id"]), str_of(&early["id"]));

    let b = balance(&s, "tokyo").await;
    assert_eq!(int(&b["available"]), 1_000 + 500 + 2_500 + 300 + 200, "{b}");
    assert_eq!(int(&b["grants"]["remaining"]), 500, "{b}");

    let d1 = debited(&s, "tokyo", "d1", 1_100).await;
    assert_eq!(split(&d1), (1_000, 100, 0), "free first, then grants: {d1}");
    let d2 = debited(&s, "tokyo", "d2", 600).await;
    assert_eq!(split(&d2), (0, 400, 200), "grants, then paid: {d2}");

    // R1: a campaign to 2,500 patrons costs 2,500 credits.
    let before = int(&balance(&s, "tokyo").await["available"]);
    let d3 = debited(&s, "tokyo", "d3", 2_500).await;
    assert_eq!(int(&d3["credits"]), 2_500);
    assert_eq!(split(&d3), (0, 0, 2_500), "{d3}");
    assert_eq!(before - int(&d3["balance_after"]), 2_500, "{d3}");
    let after = balance(&s, "tokyo").await;
    assert_eq!(int(&after["available"]), before - 2_500, "{after}");
    assert_eq!(int(&after["available"]), 300, "{after}");

    let entries = ledger(&s, "tokyo").await;
    let lots = |d: &Value| lots_of(&entries, str_of(&d["id"]));
    let pair = |lot: &str, n: i64| (lot.to_string(), n);
    assert_eq!(
        lots(&d1),
        vec![pair("free_2027-03", 1_000), pair(early, 100)],
        "the grant that expires first pays first"
    );
    assert_eq!(
        lots(&d2),
        vec![pair(early, 100), pair(late, 300), pair(p1, 200)],
        "then the later grant, then the oldest purchase"
    );
    assert_eq!(
        lots(&d3),
        vec![pair(p1, 300), pair(p2, 2_200)],
        "the oldest purchase is used up before the newer one"
    );
    let spent: i64 = entries.iter().filter(|e| e["source"] == d3["id"]).map(|e| -int(&e["credits"])).sum();
    assert_eq!(spent, 2_500, "the ledger moves 2,500 credits for 2,500 texts");
    db.assert_audit();
}

async fn r4_purchases_cost_the_unit_price_and_never_expire(db: Db) {
    let s = start_at(&db, "2027-11-15T12:00:00Z").await;
    create(&s, "la", "America/Los_Angeles", 1_000).await;
    let p = bought(&s, "la", "p1", 500).await;
    assert_eq!(p["credits"], 500, "{p}");
    assert_eq!(p["amount"], "5.00", "500 credits at $0.01: {p}");
    assert_eq!(p["unit_price"], "0.01", "{p}");
    assert_eq!(p["currency"], "USD", "{p}");
    assert_eq!(p["account_id"], "la", "{p}");
    assert_eq!(p["status"], "unbilled", "{p}");
    assert_eq!(p["bills_on"], "2027-12-01", "{p}");
    assert_eq!(p["refunded_credits"], 0, "{p}");
    assert!(str_of(&p["id"]).starts_with("pur_"), "{p}");
    assert_eq!(time(&p["purchased_at"]), ts("2027-11-15T12:00:00Z"), "{p}");
    let b = balance(&s, "la").await;
    assert_eq!(int(&b["paid"]["remaining"]), 500, "usable at once: {b}");
    assert_eq!(int(&b["available"]), 1_500, "{b}");

    let list = expect(s.get("/v1/accounts/la/purchases", ADMIN).await, 200, "purchase history");
    assert_eq!(list["data"], json!([p]), "the history shows the purchase as bought");

    // Fourteen months later the purchased credits are all still there.
    set_clock(&s, "2029-01-20T00:00:00Z").await;
    let b = balance(&s, "la").await;
    assert_eq!(int(&b["paid"]["remaining"]), 500, "paid credits never expire: {b}");
    assert_eq!(free_of(&b), (1_000, 0, 1_000), "{b}");
    let d = debited(&s, "la", "d1", 1_500).await;
    assert_eq!(split(&d), (1_000, 0, 500), "{d}");
    db.assert_audit();
}

async fn r7_the_balance_has_every_field_of_the_api_shape(db: Db) {
    let s = start_at(&db, "2027-11-24T18:00:00Z").await;
    create(&s, "cafe-1", "America/New_York", 1_000).await;
    debited(&s, "cafe-1", "d1", 300).await;
    bought(&s, "cafe-1", "p1", 500).await;
    expect(hold(&s, ADMIN, "cafe-1", "h1", json!({"credits": 50})).await, 201, "hold");
    let b = balance(&s, "cafe-1").await;
    let obj = b.as_object().expect("an object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["account_id", "as_of", "available", "free", "grants", "held", "paid", "unbilled"],
        "{b}"
    );
    assert_eq!(b["account_id"], "cafe-1");
    for field in [&b["as_of"], &b["free"]["resets_at"]] {
        assert!(str_of(field).ends_with('Z'), "timestamps are RFC 3339 in UTC: {field}");
    }
    assert_eq!(time(&b["as_of"]), ts("2027-11-24T18:00:00Z"), "as of the test clock: {b}");
    // The hold took its 50 from the free lot: held credits are neither
    // used nor remaining.
    assert_eq!(free_of(&b), (1_000, 300, 650), "{b}");
    assert_eq!(
        time(&b["free"]["resets_at"]),
        ts("2027-12-01T05:00:00Z"),
        "December starts at 05:00 UTC in New York: {b}"
    );
    assert_eq!(b["paid"], json!({"remaining": 500}), "{b}");
    assert_eq!(b["grants"], json!({"remaining": 0}), "{b}");
    assert_eq!(b["held"], 50, "{b}");
    assert_eq!(b["available"], 650 + 500, "{b}");
    assert_eq!(
        b["unbilled"],
        json!({"credits": 500, "amount": "5.00", "currency": "USD", "bills_on": "2027-12-01"}),
        "{b}"
    );
    let account = expect(s.get("/v1/accounts/cafe-1", ADMIN).await, 200, "account");
    assert_eq!(account["balance"], b, "the account carries the same balance");
    db.assert_audit();
}

// R5 ---------------------------------------------------------------------

async fn r5_statements_on_the_first_and_failed_payment_suspends_purchases(db: Db) {
    let s = start_at(&db, "2027-11-20T03:00:00Z").await;
    create(&s, "tokyo", "Asia/Tokyo", 1_000).await;
    create(&s, "la", "America/Los_Angeles", 1_000).await;
    let p1 = bought(&s, "tokyo", "p1", 500).await;
    let la1 = bought(&s, "la", "la1", 100).await;
    set_clock(&s, "2027-11-25T03:00:00Z").await;
    let p2 = bought(&s, "tokyo", "p2", 300).await;
    // 16:00 UTC on November 30 is already December 1 in Tokyo.
    set_clock(&s, "2027-11-30T16:00:00Z").await;
    let p3 = bought(&s, "tokyo", "p3", 200).await;
    assert_eq!(p3["bills_on"], "2028-01-01", "a December purchase in Tokyo: {p3}");
    let b = balance(&s, "tokyo").await;
    assert_eq!(
        b["unbilled"],
        json!({"credits": 1_000, "amount": "10.00", "currency": "USD", "bills_on": "2027-12-01"}),
        "{b}"
    );

    // November has ended in Tokyo but not in Los Angeles.
    let close = |body: Value| s.post("/v1/billing/close", ADMIN, None, body);
    let c = expect(close(json!({})).await, 200, "closing ended months");
    assert_eq!(c["closed"], 1, "only Tokyo's November has ended: {c}");
    let st = &c["statements"][0];
    let sid = str_of(&st["id"]).to_string();
    assert_eq!(st["account_id"], "tokyo", "{st}");
    assert_eq!(st["month"], "2027-11", "{st}");
    assert_eq!(st["issued_on"], "2027-12-01", "{st}");
    assert_eq!(st["total"], "8.00", "{st}");
    assert_eq!(st["currency"], "USD", "{st}");
    assert_eq!(st["status"], "open", "{st}");
    let mut lines: Vec<(String, i64, String, String)> = st["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            (
                str_of(&l["purchase_id"]).to_string(),
                int(&l["credits"]),
                str_of(&l["unit_price"]).to_string(),
                str_of(&l["amount"]).to_string(),
            )
        })
        .collect();
    lines.sort();
    let mut want = vec![
        (str_of(&p1["id"]).to_string(), 500, "0.01".into(), "5.00".into()),
        (str_of(&p2["id"]).to_string(), 300, "0.01".into(), "3.00".into()),
    ];
    want.sort();
    assert_eq!(lines, want, "one line per November purchase: {st}");
    let c = expect(close(json!({})).await, 200, "closing again");
    assert_eq!(c["closed"], 0, "closing is idempotent: {c}");

    let b = balance(&s, "tokyo").await;
    assert_eq!(
        b["unbilled"],
        json!({"credits": 200, "amount": "2.00", "currency": "USD", "bills_on": "2028-01-01"}),
        "{b}"
    );
    let list = expect(s.get("/v1/accounts/tokyo/purchases", ADMIN).await, 200, "purchases");
    for p in list["data"].as_array().expect("purchases") {
        if p["id"] == p3["id"] {
            assert_eq!(p["status"], "unbilled", "{p}");
        } else {
            assert_eq!(p["status"], "billed", "{p}");
            assert_eq!(p["statement_id"], sid.as_str(), "{p}");
        }
    }
    let nov =
        expect(s.get("/v1/accounts/tokyo/purchases?month=2027-11", ADMIN).await, 200, "November purchases");
    assert_eq!(nov["data"].as_array().map(Vec::len), Some(2), "{nov}");

    // One second before Los Angeles' December: nothing to close yet.
    set_clock(&s, "2027-12-01T07:59:59Z").await;
    let c = expect(close(json!({})).await, 200, "close before LA's month end");
    assert_eq!(c["closed"], 0, "November has not ended in Los Angeles: {c}");
    set_clock(&s, "2027-12-01T08:00:00Z").await;
    let c = expect(close(json!({})).await, 200, "close at LA's month end");
    assert_eq!(c["closed"], 1, "{c}");
    assert_eq!(c["statements"][0]["account_id"], "la", "{c}");
    assert_eq!(c["statements"][0]["lines"][0]["purchase_id"], la1["id"], "{c}");
    assert_eq!(c["statements"][0]["total"], "1.00", "{c}");
    let c = expect(close(json!({})).await, 200, "closing again");
    assert_eq!(c["closed"], 0, "{c}");

    let mine = expect(s.get("/v1/accounts/tokyo/statements", ADMIN).await, 200, "Tokyo's statements");
    let mine = mine["data"].as_array().expect("statements").clone();
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["id"], sid.as_str());
    let month = expect(s.get("/v1/statements?month=2027-11", ADMIN).await, 200, "November's statements");
    let mut accounts: Vec<&str> =
        month["data"].as_array().expect("statements").iter().map(|st| str_of(&st["account_id"])).collect();
    accounts.sort_unstable();
    assert_eq!(accounts, ["la", "tokyo"], "{month}");
    let dec = expect(s.get("/v1/statements?month=2027-12", ADMIN).await, 200, "December's statements");
    assert_eq!(dec["data"], json!([]), "December has not been closed: {dec}");

    // A failed payment suspends purchases; spending goes on.
    let status_path = format!("/v1/statements/{sid}/status");
    let status = |st: &'static str| s.post(&status_path, ADMIN, None, json!({ "status": st }));
    let failed = expect(status("failed").await, 200, "marking the statement failed");
    assert_eq!(failed["status"], "failed", "{failed}");
    let a = purchase(&s, ADMIN, "tokyo", "p4", 100).await;
    a.assert_problem(422, "purchases_suspended");
    assert_eq!(a.body["statement_id"], sid.as_str(), "{a:?}");
    let account = expect(s.get("/v1/accounts/tokyo", ADMIN).await, 200, "account");
    assert_eq!(account["purchases_suspended_by"], sid.as_str(), "{account}");
    debited(&s, "tokyo", "d-while-suspended", 10).await;
    status("open").await.assert_problem(422, "invalid_request");
    let paid = expect(status("paid").await, 200, "marking the statement paid");
    assert_eq!(paid["status"], "paid", "{paid}");
    let p4 = purchase(&s, ADMIN, "tokyo", "p5", 100).await;
    expect(p4, 201, "a purchase once the statement is paid");
    db.assert_audit();
}

// R8 ---------------------------------------------------------------------

async fn r8_a_debit_or_hold_too_large_changes_nothing(db: Db) {
    let s = start_at(&db, "2027-11-15T12:00:00Z").await;
    create(&s, "cafe", "America/Los_Angeles", 1_000).await;
    bought(&s, "cafe", "p1", 500).await;
    expect(hold(&s, ADMIN, "cafe", "h1", json!({"credits": 200})).await, 201, "hold");
    let balance_before = balance(&s, "cafe").await;
    let ledger_before = ledger(&s, "cafe").await;
    assert_eq!(int(&balance_before["available"]), 1_300);

    let a = debit(&s, ADMIN, "cafe", "too-much", 1_301).await;
    a.assert_problem(402, "insufficient_credits");
    assert_eq!(int(&a.body["available"]), 1_300, "{a:?}");
    assert_eq!(int(&a.body["shortfall"]), 1, "{a:?}");
    let a = hold(&s, ADMIN, "cafe", "too-much-hold", json!({"credits": 1_301})).await;
    a.assert_problem(402, "insufficient_credits");
    assert_eq!((int(&a.body["available"]), int(&a.body["shortfall"])), (1_300, 1), "{a:?}");
    let q =
        expect(s.post("/v1/accounts/cafe/quote", ADMIN, None, json!({"credits": 1_301})).await, 200, "quote");
    assert_eq!(q["covered"], false, "{q}");
    assert_eq!((int(&q["shortfall"]), q["shortfall_amount"].clone()), (1, json!("0.01")), "{q}");

    assert_eq!(balance(&s, "cafe").await, balance_before, "the balance is unchanged");
    assert_eq!(ledger(&s, "cafe").await, ledger_before, "the ledger is unchanged");

    let d = debited(&s, "cafe", "exact", 1_300).await;
    assert_eq!(int(&d["balance_after"]), 0, "everything available can be spent: {d}");
    db.assert_audit();
}

// Idempotency ------------------------------------------------------------

async fn idempotent_replays_answer_the_first_response(db: Db) {
    let s = start_at(&db, "2027-11-15T12:00:00Z").await;
    create(&s, "cafe", "UTC", 1_000).await;
    create(&s, "other", "UTC", 1_000).await;

    let first = purchase(&s, ADMIN, "cafe", "k-p", 500).await;
    assert_eq!(first.status, 201, "{first:?}");
    assert_eq!(first.header("idempotent-replayed"), None, "a first answer is no replay");
    let again = purchase(&s, ADMIN, "cafe", "k-p", 500).await;
    assert_eq!(again.status, 201, "{again:?}");
    assert_eq!(again.header("idempotent-replayed"), Some("true"), "{again:?}");
    assert_eq!(again.body, first.body, "the replay answers the first purchase");
    assert_eq!(int(&balance(&s, "cafe").await["paid"]["remaining"]), 500, "bought once");
    purchase(&s, ADMIN, "cafe", "k-p", 501).await.assert_problem(409, "idempotency_conflict");

    let first = debit(&s, ADMIN, "cafe", "k-d", 100).await;
    assert_eq!(first.status, 201, "{first:?}");
    debited(&s, "cafe", "k-d2", 100).await;
    let again = debit(&s, ADMIN, "cafe", "k-d", 100).await;
    assert_eq!(again.status, 201, "{again:?}");
    assert_eq!(again.header("idempotent-replayed"), Some("true"), "{again:?}");
    assert_eq!(again.body, first.body, "the replay is the first answer, balance_after included");
    debit(&s, ADMIN, "cafe", "k-d", 99).await.assert_problem(409, "idempotency_conflict");
    let with_reference = s
        .post("/v1/accounts/cafe/debits", ADMIN, Some("k-d"), json!({"credits": 100, "reference": "x"}))
        .await;
    with_reference.assert_problem(409, "idempotency_conflict");
    // The key of a debit reused for a purchase is another request too.
    purchase(&s, ADMIN, "cafe", "k-d", 100).await.assert_problem(409, "idempotency_conflict");

    let body = json!({"credits": 50, "reference": "campaign-7", "ttl_seconds": 600});
    let first = hold(&s, ADMIN, "cafe", "k-h", body.clone()).await;
    assert_eq!(first.status, 201, "{first:?}");
    let again = hold(&s, ADMIN, "cafe", "k-h", body).await;
    assert_eq!((again.status, again.header("idempotent-replayed")), (201, Some("true")), "{again:?}");
    assert_eq!(again.body, first.body);
    hold(&s, ADMIN, "cafe", "k-h", json!({"credits": 51})).await.assert_problem(409, "idempotency_conflict");

    let b = balance(&s, "cafe").await;
    assert_eq!(
        (int(&b["available"]), int(&b["held"])),
        (1_000 + 500 - 200 - 50, 50),
        "each operation applied exactly once: {b}"
    );

    // Keys belong to an account: the same key elsewhere is a new request.
    let elsewhere = purchase(&s, ADMIN, "other", "k-p", 500).await;
    assert_eq!(elsewhere.status, 201, "{elsewhere:?}");
    assert_eq!(elsewhere.header("idempotent-replayed"), None, "{elsewhere:?}");
    assert_ne!(elsewhere.body["id"], first.body["id"]);

    // Purchases, debits and holds require a key.
    for route in ["purchases", "debits", "holds"] {
        let a = s
            .call(
                "POST",
                &format!("/v1/accounts/cafe/{route}"),
                Some(ADMIN),
                None,
                Some(json!({"credits": 1})),
            )
            .await;
        a.assert_problem(400, "invalid_request");
        assert!(
            a.body["detail"].as_str().is_some_and(|d| d.contains("Idempotency-Key")),
            "the error names the missing header: {a:?}"
        );
    }
    assert_eq!(balance(&s, "cafe").await, b, "requests without a key change nothing");
    db.assert_audit();
}

// Every error code -------------------------------------------------------

async fn every_error_code_of_the_api(db: Db) {
    let s = start_at(&db, "2027-11-15T12:00:00Z").await;
    create(&s, "cafe", "UTC", 1_000).await;
    let token = new_token(&s, "cafe").await;

    // invalid_request, 400: malformed JSON and a missing key.
    let raw = s
        .client
        .post(format!("{}/v1/accounts/cafe/debits", s.base))
        .bearer_auth(ADMIN)
        .header("Idempotency-Key", "k-raw")
        .header("Content-Type", "application/json")
        .body("{\"credits\": ")
        .send()
        .await
        .expect("the server answers");
    let a = Answer::from(raw).await;
    a.assert_problem(400, "invalid_request");
    assert!(
        a.body["title"].is_string() && a.body["type"].is_string() && a.body["detail"].is_string(),
        "{a:?}"
    );
    s.call("POST", "/v1/accounts/cafe/debits", Some(ADMIN), None, Some(json!({"credits": 1})))
        .await
        .assert_problem(400, "invalid_request");
    s.get("/v1/statements", ADMIN).await.assert_problem(400, "invalid_request");
    // invalid_request, 422: wrong types, out of range, unknown fields.
    debit(&s, ADMIN, "cafe", "k-zero", 0).await.assert_problem(422, "invalid_request");
    s.post("/v1/accounts/cafe/debits", ADMIN, Some("k-str"), json!({"credits": "5"}))
        .await
        .assert_problem(422, "invalid_request");
    s.post("/v1/accounts/cafe/debits", ADMIN, Some("k-unknown"), json!({"credits": 5, "bogus": 1}))
        .await
        .assert_problem(422, "invalid_request");
    s.post("/v1/accounts", ADMIN, None, json!({"id": "bad zone", "name": "x", "time_zone": "Mars/Olympus"}))
        .await
        .assert_problem(422, "invalid_request");

    // unauthorized: no token, a wrong token, a forged account token.
    s.call("GET", "/v1/accounts/cafe/balance", None, None, None).await.assert_problem(401, "unauthorized");
    s.get("/v1/accounts/cafe/balance", "not-the-admin-token-at-all")
        .await
        .assert_problem(401, "unauthorized");
    s.get("/v1/accounts/cafe/balance", "tck_cafe_forgedsecret").await.assert_problem(401, "unauthorized");
    s.call("GET", "/v1/accounts", None, None, None).await.assert_problem(401, "unauthorized");

    // forbidden: an account token on an admin-only route.
    s.get("/v1/accounts", &token).await.assert_problem(403, "forbidden");
    s.post("/v1/accounts", &token, None, json!({"id": "mine", "name": "Mine"}))
        .await
        .assert_problem(403, "forbidden");

    // not_found: unknown account, hold, debit, purchase, statement, route.
    s.get("/v1/accounts/ghost", ADMIN).await.assert_problem(404, "not_found");
    s.get("/v1/accounts/ghost/balance", ADMIN).await.assert_problem(404, "not_found");
    debit(&s, ADMIN, "ghost", "k-ghost", 1).await.assert_problem(404, "not_found");
    s.post("/v1/accounts/ghost/tokens", ADMIN, None, json!({"label": "pos"}))
        .await
        .assert_problem(404, "not_found");
    s.get("/v1/accounts/cafe/holds/hold_doesnotexist", ADMIN).await.assert_problem(404, "not_found");
    s.post("/v1/accounts/cafe/holds/hold_doesnotexist/capture", ADMIN, None, json!({"credits": 1}))
        .await
        .assert_problem(404, "not_found");
    s.post("/v1/accounts/cafe/debits/deb_doesnotexist/refund", ADMIN, Some("r-1"), json!({"credits": 1}))
        .await
        .assert_problem(404, "not_found");
    s.post("/v1/accounts/cafe/purchases/pur_doesnotexist/refund", ADMIN, Some("r-2"), json!({}))
        .await
        .assert_problem(404, "not_found");
    s.post("/v1/statements/st_2027-10_cafe/status", ADMIN, None, json!({"status": "paid"}))
        .await
        .assert_problem(404, "not_found");
    s.get("/v1/no-such-route", ADMIN).await.assert_problem(404, "not_found");

    // conflict: the same id with other settings; the same body is a repeat.
    let same = json!({"id": "cafe", "name": "cafe cafe", "time_zone": "UTC", "monthly_free_credits": 1_000});
    let a = s.post("/v1/accounts", ADMIN, None, same).await;
    let v = expect(a, 200, "creating the same account again");
    assert_eq!(v["id"], "cafe");
    let other = json!({"id": "cafe", "name": "cafe cafe", "time_zone": "UTC", "monthly_free_credits": 500});
    s.post("/v1/accounts", ADMIN, None, other).await.assert_problem(409, "conflict");

    // idempotency_conflict.
    debited(&s, "cafe", "k-once", 10).await;
    debit(&s, ADMIN, "cafe", "k-once", 11).await.assert_problem(409, "idempotency_conflict");

    // insufficient_credits.
    let a = debit(&s, ADMIN, "cafe", "k-big", 5_000).await;
    a.assert_problem(402, "insufficient_credits");
    assert_eq!((int(&a.body["available"]), int(&a.body["shortfall"])), (990, 4_010), "{a:?}");

    // purchase_limit_exceeded.
    let patched = s
        .call("PATCH", "/v1/accounts/cafe", Some(ADMIN), None, Some(json!({"monthly_purchase_limit": 1_000})))
        .await;
    let patched = expect(patched, 200, "setting a purchase limit");
    assert_eq!(patched["monthly_purchase_limit"], 1_000, "{patched}");
    bought(&s, "cafe", "k-600", 600).await;
    let a = purchase(&s, ADMIN, "cafe", "k-500", 500).await;
    a.assert_problem(422, "purchase_limit_exceeded");
    assert_eq!((int(&a.body["limit"]), int(&a.body["remaining"])), (1_000, 400), "{a:?}");
    bought(&s, "cafe", "k-400", 400).await;

    // hold_not_active: capture after release.
    let h = expect(hold(&s, ADMIN, "cafe", "k-hold", json!({"credits": 10})).await, 201, "hold");
    let hid = str_of(&h["id"]);
    let released =
        s.call("POST", &format!("/v1/accounts/cafe/holds/{hid}/release"), Some(ADMIN), None, None).await;
    let released = expect(released, 200, "release");
    assert_eq!(released["status"], "released", "{released}");
    s.post(&format!("/v1/accounts/cafe/holds/{hid}/capture"), ADMIN, None, json!({"credits": 5}))
        .await
        .assert_problem(409, "hold_not_active");

    // Method not allowed is a problem too.
    s.call("DELETE", "/v1/accounts/cafe", Some(ADMIN), None, None)
        .await
        .assert_problem(405, "invalid_request");
    db.assert_audit();
}

// Account tokens ---------------------------------------------------------

async fn an_account_token_sees_only_its_own_account(db: Db) {
    let s = start_at(&db, "2027-11-15T12:00:00Z").await;
    create(&s, "shop-a", "America/Los_Angeles", 1_000).await;
    create(&s, "shop-b", "Asia/Tokyo", 1_000).await;
    let t = new_token(&s, "shop-a").await;
    let t = t.as_str();
    let b_debit = debited(&s, "shop-b", "b-d", 5).await;
    let b_hold = expect(hold(&s, ADMIN, "shop-b", "b-h", json!({"credits": 5})).await, 201, "hold on shop-b");

    // Its own account: read, purchase, debit, hold, refund a debit.
    let b = expect(s.get("/v1/accounts/shop-a/balance", t).await, 200, "own balance");
    assert_eq!(int(&b["available"]), 1_000, "{b}");
    expect(s.get("/v1/accounts/shop-a", t).await, 200, "own account");
    expect(purchase(&s, t, "shop-a", "a-p", 100).await, 201, "own purchase");
    let d = expect(debit(&s, t, "shop-a", "a-d", 40).await, 201, "own debit");
    let did = str_of(&d["id"]);
    let r = s
        .post(&format!("/v1/accounts/shop-a/debits/{did}/refund"), t, Some("a-r"), json!({"credits": 15}))
        .await;
    let r = expect(r, 201, "refund of undelivered texts with an account token");
    assert_eq!(int(&r["credits"]), 15, "{r}");
    let h = expect(hold(&s, t, "shop-a", "a-h", json!({"credits": 30})).await, 201, "own hold");
    let hid = str_of(&h["id"]);
    expect(s.get(&format!("/v1/accounts/shop-a/holds/{hid}"), t).await, 200, "own hold read");
    let c =
        s.post(&format!("/v1/accounts/shop-a/holds/{hid}/capture"), t, None, json!({"credits": 20})).await;
    expect(c, 200, "own capture");
    expect(s.post("/v1/accounts/shop-a/quote", t, None, json!({"credits": 10})).await, 200, "own quote");
    for path in ["ledger", "purchases", "statements", "usage"] {
        expect(s.get(&format!("/v1/accounts/shop-a/{path}"), t).await, 200, &format!("own {path}"));
    }
    let b = balance(&s, "shop-a").await;
    assert_eq!(int(&b["available"]), 1_000 + 100 - 40 + 15 - 20, "the token's operations applied: {b}");

    // Another account, existing or not: the same 404.
    let (bd, bh) = (str_of(&b_debit["id"]), str_of(&b_hold["id"]));
    let calls: Vec<(&str, String, Option<&str>, Option<Value>)> = vec![
        ("GET", "".into(), None, None),
        ("GET", "/balance".into(), None, None),
        ("GET", "/ledger".into(), None, None),
        ("GET", "/purchases".into(), None, None),
        ("GET", "/statements".into(), None, None),
        ("GET", "/usage".into(), None, None),
        ("POST", "/quote".into(), None, Some(json!({"credits": 1}))),
        ("POST", "/purchases".into(), Some("x-p"), Some(json!({"credits": 1}))),
        ("POST", "/debits".into(), Some("x-d"), Some(json!({"credits": 1}))),
        ("POST", "/holds".into(), Some("x-h"), Some(json!({"credits": 1}))),
        ("GET", format!("/holds/{bh}"), None, None),
        ("POST", format!("/holds/{bh}/capture"), None, Some(json!({"credits": 1}))),
        ("POST", format!("/holds/{bh}/release"), None, None),
        ("POST", format!("/debits/{bd}/refund"), Some("x-r"), Some(json!({"credits": 1}))),
    ];
    for (method, tail, key, body) in calls {
        let other = s.call(method, &format!("/v1/accounts/shop-b{tail}"), Some(t), key, body.clone()).await;
        other.assert_problem(404, "not_found");
        let ghost = s.call(method, &format!("/v1/accounts/ghost1{tail}"), Some(t), key, body).await;
        ghost.assert_problem(404, "not_found");
        assert_eq!(
            other.text.replace("shop-b", "ACCOUNT"),
            ghost.text.replace("ghost1", "ACCOUNT"),
            "{method} {tail}: another account and a missing one answer alike"
        );
    }
    // Its own account's path with another account's hold or debit: 404.
    s.get(&format!("/v1/accounts/shop-a/holds/{bh}"), t).await.assert_problem(404, "not_found");
    s.post(&format!("/v1/accounts/shop-a/holds/{bh}/release"), t, None, json!({}))
        .await
        .assert_problem(404, "not_found");
    s.post(&format!("/v1/accounts/shop-a/debits/{bd}/refund"), t, Some("a-r2"), json!({"credits": 1}))
        .await
        .assert_problem(404, "not_found");
    let b_after = balance(&s, "shop-b").await;
    assert_eq!(
        (int(&b_after["available"]), int(&b_after["held"])),
        (990, 5),
        "nothing happened to shop-b: {b_after}"
    );

    // Admin-only routes: 403, even on its own account.
    let purchase_id = str_of(
        &expect(s.get("/v1/accounts/shop-a/purchases", ADMIN).await, 200, "purchases")["data"][0]["id"],
    )
    .to_string();
    let admin_only: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/v1/accounts".into(), None),
        ("POST", "/v1/accounts".into(), Some(json!({"id": "new", "name": "New"}))),
        ("PATCH", "/v1/accounts/shop-a".into(), Some(json!({"monthly_purchase_limit": 0}))),
        ("POST", "/v1/accounts/shop-a/tokens".into(), Some(json!({"label": "more"}))),
        (
            "POST",
            "/v1/accounts/shop-a/grants".into(),
            Some(json!({"credits": 100, "reason": "self-service"})),
        ),
        ("POST", format!("/v1/accounts/shop-a/purchases/{purchase_id}/refund"), Some(json!({}))),
        ("POST", "/v1/billing/close".into(), Some(json!({}))),
        ("GET", "/v1/statements?month=2027-11".into(), None),
        ("POST", "/v1/statements/st_2027-11_shop-a/status".into(), Some(json!({"status": "paid"}))),
        ("GET", "/v1/test-clock".into(), None),
        ("PUT", "/v1/test-clock".into(), Some(json!({"now": "2030-01-01T00:00:00Z"}))),
    ];
    for (method, path, body) in admin_only {
        let a = s.call(method, &path, Some(t), None, body).await;
        assert_eq!(a.status, 403, "{method} {path} with an account token: {}", a.text);
        a.assert_problem(403, "forbidden");
    }
    assert_eq!(balance(&s, "shop-a").await, b, "refused requests changed nothing");
    let clock = expect(s.get("/v1/test-clock", ADMIN).await, 200, "clock");
    assert_eq!(time(&clock["now"]), ts("2027-11-15T12:00:00Z"), "the clock did not move");
    db.assert_audit();
}

// Holds ------------------------------------------------------------------

async fn holds_expire_with_their_ttl_and_capture_releases_the_rest(db: Db) {
    let s = start_at(&db, "2027-11-15T12:00:00Z").await;
    create(&s, "cafe", "Asia/Tokyo", 1_000).await;

    let h = expect(
        hold(
            &s,
            ADMIN,
            "cafe",
            "h-ttl",
            json!({"credits": 300, "reference": "campaign-1", "ttl_seconds": 60}),
        )
        .await,
        201,
        "hold with a TTL",
    );
    assert_eq!(h["status"], "held", "{h}");
    assert_eq!((int(&h["credits"]), int(&h["captured"])), (300, 0), "{h}");
    assert_eq!(h["reference"], "campaign-1", "{h}");
    assert_eq!(time(&h["expires_at"]), ts("2027-11-15T12:01:00Z"), "{h}");
    let hid = str_of(&h["id"]).to_string();
    let b = balance(&s, "cafe").await;
    assert_eq!((int(&b["held"]), int(&b["available"])), (300, 700), "held credits are not available: {b}");

    set_clock(&s, "2027-11-15T12:01:01Z").await;
    let got =
        expect(s.get(&format!("/v1/accounts/cafe/holds/{hid}"), ADMIN).await, 200, "the hold after its TTL");
    assert_eq!(got["status"], "expired", "{got}");
    let b = balance(&s, "cafe").await;
    assert_eq!(
        (int(&b["held"]), int(&b["available"])),
        (0, 1_000),
        "an expired hold gives its credits back: {b}"
    );
    assert_eq!(free_of(&b), (1_000, 0, 1_000), "{b}");
    s.post(&format!("/v1/accounts/cafe/holds/{hid}/capture"), ADMIN, None, json!({"credits": 100}))
        .await
        .assert_problem(409, "hold_not_active");

    // Capture part of a hold: the rest is released.
    let h2 = expect(
        hold(&s, ADMIN, "cafe", "h-2", json!({"credits": 400})).await,
        201,
        "hold with the default TTL",
    );
    assert_eq!(time(&h2["expires_at"]), ts("2027-11-16T12:01:01Z"), "the default TTL is 86,400 s: {h2}");
    let hid2 = str_of(&h2["id"]).to_string();
    s.post(&format!("/v1/accounts/cafe/holds/{hid2}/capture"), ADMIN, None, json!({"credits": 401}))
        .await
        .assert_problem(422, "invalid_request");
    let c = s
        .post(&format!("/v1/accounts/cafe/holds/{hid2}/capture"), ADMIN, None, json!({"credits": 250}))
        .await;
    let c = expect(c, 200, "capturing 250 of 400");
    assert_eq!(c["status"], "captured", "{c}");
    assert_eq!((int(&c["credits"]), int(&c["captured"])), (400, 250), "{c}");
    let b = balance(&s, "cafe").await;
    assert_eq!((int(&b["held"]), int(&b["available"])), (0, 750), "250 spent, 150 released: {b}");
    assert_eq!(free_of(&b), (1_000, 250, 750), "{b}");
    let got =
        expect(s.get(&format!("/v1/accounts/cafe/holds/{hid2}"), ADMIN).await, 200, "the captured hold");
    assert_eq!(got, c, "reading the hold answers what capture did");
    s.call("POST", &format!("/v1/accounts/cafe/holds/{hid2}/release"), Some(ADMIN), None, None)
        .await
        .assert_problem(409, "hold_not_active");
    db.assert_audit();
}

// Concurrency ------------------------------------------------------------

async fn fifty_concurrent_debits_spend_exactly_what_is_there(db: Db) {
    let s = Arc::new(start_at(&db, "2027-11-15T12:00:00Z").await);
    create(&s, "busy", "UTC", 1_000).await;
    bought(&s, "busy", "p1", 1_000).await;
    assert_eq!(int(&balance(&s, "busy").await["available"]), 2_000);

    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { debit(&s, ADMIN, "busy", &format!("d-{i}"), 50).await })
        })
        .collect();
    let mut created = 0;
    let mut refused = 0;
    for t in tasks {
        let a = t.await.expect("the task finishes");
        match a.status {
            201 => created += 1,
            402 => {
                a.assert_problem(402, "insufficient_credits");
                refused += 1;
            }
            other => panic!("unexpected answer {other}: {}", a.text),
        }
    }
    assert_eq!((created, refused), (40, 10), "2,000 credits pay exactly 40 debits of 50");
    let b = balance(&s, "busy").await;
    assert_eq!(int(&b["available"]), 0, "{b}");
    assert_eq!(free_of(&b), (1_000, 1_000, 0), "{b}");
    assert_eq!(int(&b["paid"]["remaining"]), 0, "{b}");
    let debits = ledger(&s, "busy")
        .await
        .iter()
        .filter(|e| e["kind"] == "debit")
        .map(|e| -int(&e["credits"]))
        .sum::<i64>();
    assert_eq!(debits, 2_000, "the ledger holds exactly 2,000 credits of debits");
    db.assert_audit();
}

async fn fifty_concurrent_retries_with_one_key_debit_once(db: Db) {
    let s = Arc::new(start_at(&db, "2027-11-15T12:00:00Z").await);
    create(&s, "busy", "UTC", 1_000).await;
    bought(&s, "busy", "p1", 1_000).await;

    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { debit(&s, ADMIN, "busy", "same-key", 50).await })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("the task finishes"));
    }
    for a in &answers {
        assert_eq!(a.status, 201, "every retry answers the debit: {}", a.text);
        assert_eq!(a.body, answers[0].body, "every answer is the first one");
    }
    let replays = answers.iter().filter(|a| a.header("idempotent-replayed") == Some("true")).count();
    assert_eq!(replays, 49, "one first answer and 49 replays");
    let b = balance(&s, "busy").await;
    assert_eq!(int(&b["available"]), 1_950, "one debit applied: {b}");
    let debits: Vec<Value> = ledger(&s, "busy").await.into_iter().filter(|e| e["kind"] == "debit").collect();
    assert_eq!(debits.len(), 1, "{debits:#?}");
    assert_eq!(debits[0]["source"], answers[0].body["id"]);
    db.assert_audit();
}

// Operations -------------------------------------------------------------

/// The value of an unlabelled counter in Prometheus text.
fn counter(metrics: &str, name: &str) -> i64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no counter {name} in:\n{metrics}"))
}

async fn health_metrics_openapi_dashboard_and_clock(db: Db) {
    let s = start_at(&db, "2027-11-15T12:00:00Z").await;

    let h = s.call("GET", "/healthz", None, None, None).await;
    assert_eq!(h.status, 200, "{h:?}");

    create(&s, "cafe", "UTC", 1_000).await;
    debited(&s, "cafe", "d1", 120).await;
    debited(&s, "cafe", "d2", 30).await;
    debited(&s, "cafe", "d2", 30).await; // a replay spends nothing
    let m = s.call("GET", "/metrics", None, None, None).await;
    assert_eq!(m.status, 200, "{m:?}");
    assert!(
        m.header("content-type").is_some_and(|c| c.starts_with("application/openmetrics-text")),
        "{:?}",
        m.headers
    );
    assert!(m.text.contains("textcredits_http_requests_total"), "{}", m.text);
    assert!(
        m.text.lines().any(|l| l.starts_with("textcredits_http_requests_total{")
            && l.contains("route=\"/v1/accounts/{id}/debits\"")
            && l.contains("status=\"201\"")
            && l.ends_with(" 3")),
        "three answered debits are counted by route and status:\n{}",
        m.text
    );
    assert_eq!(
        counter(&m.text, "textcredits_credits_spent_total"),
        150,
        "spent credits count the debits once"
    );

    let o = s.call("GET", "/openapi.json", None, None, None).await;
    let doc = expect(o, 200, "the OpenAPI document");
    assert!(str_of(&doc["openapi"]).starts_with("3.1"), "OpenAPI 3.1: {}", doc["openapi"]);
    let paths = doc["paths"].as_object().expect("paths");
    let want: [(&str, &[&str]); 24] = [
        ("/v1/accounts", &["post", "get"]),
        ("/v1/accounts/{id}", &["get", "patch"]),
        ("/v1/accounts/{id}/tokens", &["post"]),
        ("/v1/accounts/{id}/balance", &["get"]),
        ("/v1/accounts/{id}/quote", &["post"]),
        ("/v1/accounts/{id}/purchases", &["post", "get"]),
        ("/v1/accounts/{id}/purchases/{pid}/refund", &["post"]),
        ("/v1/accounts/{id}/debits", &["post"]),
        ("/v1/accounts/{id}/debits/{did}/refund", &["post"]),
        ("/v1/accounts/{id}/holds", &["post"]),
        ("/v1/accounts/{id}/holds/{hid}/capture", &["post"]),
        ("/v1/accounts/{id}/holds/{hid}/release", &["post"]),
        ("/v1/accounts/{id}/holds/{hid}", &["get"]),
        ("/v1/accounts/{id}/grants", &["post"]),
        ("/v1/accounts/{id}/ledger", &["get"]),
        ("/v1/accounts/{id}/usage", &["get"]),
        ("/v1/accounts/{id}/statements", &["get"]),
        ("/v1/statements", &["get"]),
        ("/v1/billing/close", &["post"]),
        ("/v1/statements/{sid}/status", &["post"]),
        ("/v1/test-clock", &["get", "put"]),
        ("/healthz", &["get"]),
        ("/metrics", &["get"]),
        ("/openapi.json", &["get"]),
    ];
    for (path, methods) in want {
        let item = paths
            .get(path)
            .unwrap_or_else(|| panic!("the OpenAPI document lacks {path}; it has {:?}", paths.keys()));
        for m in methods {
            assert!(item.get(*m).is_some(), "the OpenAPI document lacks {m} {path}");
        }
    }

    let home = s.call("GET", "/", None, None, None).await;
    assert_eq!(home.status, 200, "{home:?}");
    assert!(home.header("content-type").is_some_and(|c| c.starts_with("text/html")), "{:?}", home.headers);
    assert!(home.text.to_ascii_lowercase().contains("<html"), "{}", home.text);

    // The test clock only moves forward.
    let back = s
        .call("PUT", "/v1/test-clock", Some(ADMIN), None, Some(json!({"now": "2027-11-15T11:59:59Z"})))
        .await;
    back.assert_problem(422, "invalid_request");
    let now = expect(s.get("/v1/test-clock", ADMIN).await, 200, "the clock");
    assert_eq!(time(&now["now"]), ts("2027-11-15T12:00:00Z"), "the clock stayed");

    let status = s.stop();
    assert!(status.success(), "SIGTERM stops the server cleanly: {status:?}");
    db.assert_audit();
}

async fn without_test_clock_the_clock_routes_do_not_exist(db: Db) {
    let s = Server::start(&db, &[]);
    s.get("/v1/test-clock", ADMIN).await.assert_problem(404, "not_found");
    s.call("PUT", "/v1/test-clock", Some(ADMIN), None, Some(json!({"now": "2030-01-01T00:00:00Z"})))
        .await
        .assert_problem(404, "not_found");
    let h = s.call("GET", "/healthz", None, None, None).await;
    assert_eq!(h.status, 200, "{h:?}");
    let status = s.stop();
    assert!(status.success(), "SIGTERM stops the server cleanly: {status:?}");
}

// Lists ------------------------------------------------------------------

async fn lists_page_newest_first_with_a_cursor(db: Db) {
    let s = start_at(&db, "2027-11-15T12:00:00Z").await;
    create(&s, "cafe", "UTC", 1_000).await;
    for i in 0..4 {
        debited(&s, "cafe", &format!("d{i}"), 10).await;
    }
    let all = ledger(&s, "cafe").await;
    assert_eq!(all.len(), 5, "an allowance and four debits: {all:#?}");
    let ids: Vec<i64> = all.iter().map(|e| int(&e["id"])).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");

    let mut paged = Vec::new();
    let mut path = "/v1/accounts/cafe/ledger?limit=2".to_string();
    loop {
        let page = expect(s.get(&path, ADMIN).await, 200, &path);
        let data = page["data"].as_array().expect("data").clone();
        assert!(data.len() <= 2, "{page}");
        paged.extend(data);
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/accounts/cafe/ledger?limit=2&cursor={c}"),
            None => break,
        }
        assert!(paged.len() < 10, "the cursor never ends");
    }
    assert_eq!(paged, all, "the pages together are the whole list, in order");

    // Every bad query value is a 400.
    for bad in ["limit=0", "limit=501", "cursor=garbage", "limit=abc"] {
        s.get(&format!("/v1/accounts/cafe/ledger?{bad}"), ADMIN).await.assert_problem(400, "invalid_request");
    }
    let accounts = expect(s.get("/v1/accounts?limit=1", ADMIN).await, 200, "accounts");
    assert_eq!(accounts["data"].as_array().map(Vec::len), Some(1), "{accounts}");
}

// Automatic close and token keys ------------------------------------------

async fn r5_the_server_closes_ended_months_by_itself(db: Db) {
    let s = Server::start(&db, &["--test-clock", "--close-interval-seconds", "1"]);
    set_clock(&s, "2027-11-15T12:00:00Z").await;
    create(&s, "cafe", "UTC", 1_000).await;
    bought(&s, "cafe", "p1", 500).await;
    set_clock(&s, "2027-12-01T00:00:01Z").await;
    let mut statements = Value::Null;
    for _ in 0..50 {
        let a = s.get("/v1/accounts/cafe/statements", ADMIN).await;
        statements = expect(a, 200, "statements");
        if statements["data"].as_array().is_some_and(|d| !d.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        statements["data"].as_array().map(Vec::len),
        Some(1),
        "November's statement is issued without anyone calling /v1/billing/close: {statements}"
    );
}

/// A token's answer holds a secret kept only as a hash, so it cannot be
/// replayed: the key is refused rather than silently ignored.
async fn token_creation_refuses_an_idempotency_key(db: Db) {
    let s = start_at(&db, "2027-11-15T12:00:00Z").await;
    create(&s, "cafe", "UTC", 1_000).await;
    let body = json!({"label": "pos"});
    let keyed = s.post("/v1/accounts/cafe/tokens", ADMIN, Some("tok-1"), body.clone()).await;
    keyed.assert_problem(400, "invalid_request");
    let plain = s.post("/v1/accounts/cafe/tokens", ADMIN, None, body).await;
    assert_eq!(plain.status, 201, "{plain:?}");
}

on_every_store!(
    #[tokio::test]
    r2_an_allowance_of_zero_is_allowed,
    #[tokio::test]
    r1_r6_spending_order_free_then_grants_by_expiry_then_oldest_purchase,
    #[tokio::test]
    r4_purchases_cost_the_unit_price_and_never_expire,
    #[tokio::test]
    r7_the_balance_has_every_field_of_the_api_shape,
    #[tokio::test]
    r5_statements_on_the_first_and_failed_payment_suspends_purchases,
    #[tokio::test]
    r8_a_debit_or_hold_too_large_changes_nothing,
    #[tokio::test]
    idempotent_replays_answer_the_first_response,
    #[tokio::test]
    every_error_code_of_the_api,
    #[tokio::test]
    an_account_token_sees_only_its_own_account,
    #[tokio::test]
    holds_expire_with_their_ttl_and_capture_releases_the_rest,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    fifty_concurrent_debits_spend_exactly_what_is_there,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    fifty_concurrent_retries_with_one_key_debit_once,
    #[tokio::test]
    health_metrics_openapi_dashboard_and_clock,
    #[tokio::test]
    without_test_clock_the_clock_routes_do_not_exist,
    #[tokio::test]
    lists_page_newest_first_with_a_cursor,
    #[tokio::test]
    r5_the_server_closes_ended_months_by_itself,
    #[tokio::test]
    token_creation_refuses_an_idempotency_key,
    #[tokio::test]
    r2_r3_free_credits_reset_at_local_month_start_in_los_angeles,
    #[tokio::test]
    r2_r3_free_credits_reset_at_local_month_start_in_tokyo,
);
