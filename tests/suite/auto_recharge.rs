//! Auto-recharge (issue 14) through the real server on both stores: once
//! per crossing under concurrency, the monthly cap and the purchase limit
//! with one `capped` event a month, a failed statement suspending it, a
//! short debit rescued when one recharge covers it and refused (nothing
//! bought) when it does not, and the quote saying so.

use serde_json::{Value, json};

use crate::util::{ADMIN, Answer, Db, Server, created, open_account};

fn start(db: &Db, now: &str) -> Server {
    Server::start(db, &["--test-clock", "--now", now, "--close-interval-seconds", "0"])
}

async fn patch(s: &Server, account: &str, body: Value) -> Answer {
    s.call("PATCH", &format!("/v1/accounts/{account}"), Some(ADMIN), None, Some(body)).await
}

async fn auto(s: &Server, account: &str, threshold: i64, credits: i64, monthly_cap: i64) {
    let body =
        json!({"auto_recharge": {"threshold": threshold, "credits": credits, "monthly_cap": monthly_cap}});
    let a = patch(s, account, body).await;
    assert_eq!(a.status, 200, "{a:?}");
}

async fn debit(s: &Server, account: &str, key: &str, credits: i64) -> Answer {
    s.post(&format!("/v1/accounts/{account}/debits"), ADMIN, Some(key), json!({ "credits": credits })).await
}

async fn available(s: &Server, account: &str) -> i64 {
    let b = s.get(&format!("/v1/accounts/{account}/balance"), ADMIN).await;
    assert_eq!(b.status, 200, "{b:?}");
    b.body["available"].as_i64().expect("available")
}

async fn purchases(s: &Server, account: &str) -> Vec<Value> {
    let p = s.get(&format!("/v1/accounts/{account}/purchases?limit=100"), ADMIN).await;
    assert_eq!(p.status, 200, "{p:?}");
    p.body["data"].as_array().expect("a page").clone()
}

async fn events(s: &Server, account: &str) -> Vec<Value> {
    let p = s.get(&format!("/v1/accounts/{account}/events?limit=500"), ADMIN).await;
    assert_eq!(p.status, 200, "{p:?}");
    let all = p.body["data"].as_array().expect("a page").clone();
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e["sequence"], json!(i as i64 + 1), "numbered without a gap: {all:#?}");
    }
    all
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

async fn set_clock(s: &Server, now: &str) {
    let c = s.call("PUT", "/v1/test-clock", Some(ADMIN), None, Some(json!({ "now": now }))).await;
    assert_eq!(c.status, 200, "{c:?}");
}

/// 50 debits of 40 sent at once: 1,000 free credits and a threshold of
/// 500, so available crosses below it twice whatever the order (at 480,
/// and again after the recharge brought it to 1,480): exactly two
/// recharges, each marked automatic, each with one event, billed like any
/// other purchase.
async fn fires_exactly_once_per_crossing_under_50_concurrent_debits(db: Db) {
    let s = start(&db, "2026-11-10T12:00:00Z");
    open_account(&s, "cafe").await;
    auto(&s, "cafe", 500, 1000, 0).await;
    let sends = (0..50).map(|i| {
        let s = &s;
        async move { debit(s, "cafe", &format!("d-{i}"), 40).await }
    });
    for a in futures_util::future::join_all(sends).await {
        assert_eq!(a.status, 201, "{a:?}");
    }
    let bought = purchases(&s, "cafe").await;
    assert_eq!(bought.len(), 2, "two crossings, two recharges: {bought:#?}");
    for p in &bought {
        assert_eq!(p["automatic"], true, "{p}");
        assert_eq!(p["credits"], 1000, "{p}");
        assert_eq!(p["status"], "unbilled", "{p}");
        assert_eq!(p["amount"], "10.00", "{p}");
    }
    assert_eq!(available(&s, "cafe").await, 1000 + 2000 - 50 * 40);
    let all = events(&s, "cafe").await;
    let succeeded = of_type(&all, "auto_recharge.succeeded");
    assert_eq!(succeeded.len(), 2, "{all:#?}");
    assert!(of_type(&all, "purchase.created").is_empty(), "one event per recharge: {all:#?}");
    for e in &succeeded {
        assert_eq!(e["data"]["trigger"], "low_balance", "{e}");
        assert_eq!(e["data"]["purchase"]["automatic"], true, "{e}");
        assert_eq!(e["data"]["available"], 1480, "480 left, then 1,000 bought: {e}");
    }
    // Replays buy nothing more.
    let again = debit(&s, "cafe", "d-7", 40).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"), "{again:?}");
    assert_eq!(purchases(&s, "cafe").await.len(), 2);
    // Billed on the 1st like any other purchase.
    set_clock(&s, "2026-12-01T00:00:01Z").await;
    let close = s.post("/v1/billing/close", ADMIN, Some("close-1"), json!({})).await;
    assert_eq!(close.status, 200, "{close:?}");
    let st = s.get("/v1/accounts/cafe/statements", ADMIN).await;
    assert_eq!(st.body["data"][0]["total"], "20.00", "{st:?}");
    drop(s);
    db.assert_audit();
}

/// With `monthly_cap` 1,000 the first crossing buys 1,000 and the second
/// is capped: one `capped` event however many debits follow, nothing
/// bought; the next month it buys again. The account's purchase limit
/// caps it the same way.
async fn the_cap_and_the_purchase_limit_stop_it_with_one_capped_event(db: Db) {
    let s = start(&db, "2026-11-10T12:00:00Z");
    open_account(&s, "cafe").await;
    auto(&s, "cafe", 500, 1000, 1000).await;
    assert_eq!(debit(&s, "cafe", "d1", 600).await.status, 201); // 400: buys, 1,400
    assert_eq!(available(&s, "cafe").await, 1400);
    assert_eq!(debit(&s, "cafe", "d2", 1000).await.status, 201); // 400 again: capped
    assert_eq!(debit(&s, "cafe", "d3", 100).await.status, 201); // 300: still capped, no event
    assert_eq!(available(&s, "cafe").await, 300);
    assert_eq!(purchases(&s, "cafe").await.len(), 1);
    let all = events(&s, "cafe").await;
    let capped = of_type(&all, "auto_recharge.capped");
    assert_eq!(capped.len(), 1, "{all:#?}");
    assert_eq!(capped[0]["data"]["reason"], "monthly_cap");
    assert_eq!(capped[0]["data"]["month"], "2026-11");
    assert_eq!(capped[0]["data"]["bought_this_month"], 1000);
    // A short debit the cap allows no recharge for is refused, buys nothing.
    debit(&s, "cafe", "d4", 400).await.assert_problem(402, "insufficient_credits");
    assert_eq!(purchases(&s, "cafe").await.len(), 1);
    assert_eq!(events(&s, "cafe").await, all, "a refused debit writes no event");
    // A new month: a new cap. Its first debit below the threshold buys.
    set_clock(&s, "2026-12-02T12:00:00Z").await;
    assert_eq!(debit(&s, "cafe", "d5", 600).await.status, 201); // 1,000 free + 300 - 600 = 700
    assert_eq!(purchases(&s, "cafe").await.len(), 1, "700 is above the threshold");
    assert_eq!(debit(&s, "cafe", "d6", 300).await.status, 201); // 400: buys
    let bought = purchases(&s, "cafe").await;
    assert_eq!(bought.len(), 2, "{bought:#?}");
    assert_eq!(available(&s, "cafe").await, 1400);

    // The purchase limit applies too: 1,500 a month with 600 bought by hand.
    open_account(&s, "bar").await;
    let limit = patch(&s, "bar", json!({"monthly_purchase_limit": 1500})).await;
    assert_eq!(limit.status, 200, "{limit:?}");
    auto(&s, "bar", 500, 1000, 0).await;
    let p = s.post("/v1/accounts/bar/purchases", ADMIN, Some("p1"), json!({"credits": 600})).await;
    created(p, "purchase");
    assert_eq!(debit(&s, "bar", "d1", 1200).await.status, 201); // 400 left: 600 + 1,000 > 1,500
    assert_eq!(debit(&s, "bar", "d2", 10).await.status, 201);
    assert_eq!(purchases(&s, "bar").await.len(), 1);
    let all = events(&s, "bar").await;
    let capped = of_type(&all, "auto_recharge.capped");
    assert_eq!(capped.len(), 1, "{all:#?}");
    assert_eq!(capped[0]["data"]["reason"], "monthly_purchase_limit");
    assert_eq!(capped[0]["data"]["purchased_this_month"], 600);
    drop(s);
    db.assert_audit();
}

/// A `failed` statement suspends auto-recharge: `suspended` once, nothing
/// bought on any crossing; once the statement is `paid` it buys again.
async fn a_failed_statement_suspends_it_until_paid(db: Db) {
    let s = start(&db, "2026-11-10T12:00:00Z");
    open_account(&s, "cafe").await;
    created(
        s.post("/v1/accounts/cafe/purchases", ADMIN, Some("p1"), json!({"credits": 100})).await,
        "purchase",
    );
    set_clock(&s, "2026-12-01T00:00:01Z").await;
    let close = s.post("/v1/billing/close", ADMIN, Some("close-1"), json!({})).await;
    assert_eq!(close.status, 200, "{close:?}");
    let st = s.get("/v1/accounts/cafe/statements", ADMIN).await;
    let sid = st.body["data"][0]["id"].as_str().expect("a statement").to_string();
    let failed =
        s.post(&format!("/v1/statements/{sid}/status"), ADMIN, None, json!({"status": "failed"})).await;
    assert_eq!(failed.status, 200, "{failed:?}");
    auto(&s, "cafe", 500, 1000, 0).await;
    assert_eq!(debit(&s, "cafe", "d1", 700).await.status, 201); // 1,000 + 100 - 700 = 400
    assert_eq!(debit(&s, "cafe", "d2", 10).await.status, 201);
    assert_eq!(purchases(&s, "cafe").await.len(), 1, "nothing bought while suspended");
    let all = events(&s, "cafe").await;
    let suspended = of_type(&all, "auto_recharge.suspended");
    assert_eq!(suspended.len(), 1, "{all:#?}");
    assert_eq!(suspended[0]["data"]["statement_id"], sid.as_str());
    // Paid: the next debit below the threshold buys.
    let paid = s.post(&format!("/v1/statements/{sid}/status"), ADMIN, None, json!({"status": "paid"})).await;
    assert_eq!(paid.status, 200, "{paid:?}");
    assert_eq!(debit(&s, "cafe", "d3", 10).await.status, 201); // 380: buys
    let bought = purchases(&s, "cafe").await;
    assert_eq!(bought.len(), 2, "{bought:#?}");
    assert_eq!(bought[0]["automatic"], true, "newest first: {bought:#?}");
    assert_eq!(available(&s, "cafe").await, 1380);
    assert_eq!(of_type(&events(&s, "cafe").await, "auto_recharge.suspended").len(), 1);
    drop(s);
    db.assert_audit();
}

/// A debit (or hold) that is short, and that one recharge covers, buys
/// first and succeeds, as the quote said; one that a recharge would not
/// cover is refused and buys nothing.
async fn a_short_debit_is_rescued_when_one_recharge_covers_it(db: Db) {
    let s = start(&db, "2026-11-10T12:00:00Z");
    open_account(&s, "cafe").await;
    // Threshold 0: it buys only for a debit or hold that is short.
    auto(&s, "cafe", 0, 1000, 2000).await;
    assert_eq!(debit(&s, "cafe", "d1", 900).await.status, 201); // 100 left
    assert!(purchases(&s, "cafe").await.is_empty());
    let q = s.post("/v1/accounts/cafe/quote", ADMIN, None, json!({"credits": 600})).await;
    assert_eq!(q.status, 200, "{q:?}");
    assert_eq!(q.body["covered"], true, "{q:?}");
    assert_eq!(q.body["auto_recharge_credits"], 1000, "{q:?}");
    assert_eq!(q.body["shortfall"], 0, "{q:?}");
    assert!(purchases(&s, "cafe").await.is_empty(), "a quote buys nothing");
    // More than available plus one recharge: refused, nothing bought.
    let too_many = s.post("/v1/accounts/cafe/quote", ADMIN, None, json!({"credits": 1101})).await;
    assert_eq!(too_many.body["covered"], false, "{too_many:?}");
    assert_eq!(too_many.body["auto_recharge_credits"], 0, "{too_many:?}");
    let refused = debit(&s, "cafe", "d2", 1101).await;
    refused.assert_problem(402, "insufficient_credits");
    assert_eq!(refused.body["available"], 100, "{refused:?}");
    assert!(purchases(&s, "cafe").await.is_empty(), "nothing bought");
    // Covered by one recharge: it buys, then debits.
    let d = created(debit(&s, "cafe", "d3", 600).await, "debit");
    assert_eq!(d["balance_after"], 500, "{d}");
    let bought = purchases(&s, "cafe").await;
    assert_eq!(bought.len(), 1);
    assert_eq!(bought[0]["automatic"], true);
    let all = events(&s, "cafe").await;
    let succeeded = of_type(&all, "auto_recharge.succeeded");
    assert_eq!(succeeded.len(), 1, "{all:#?}");
    assert_eq!(succeeded[0]["data"]["trigger"], "insufficient_credits");
    // A hold is rescued the same way.
    let h = s.post("/v1/accounts/cafe/holds", ADMIN, Some("h1"), json!({"credits": 1200})).await;
    let h = created(h, "hold");
    assert_eq!(h["credits"], 1200);
    assert_eq!(purchases(&s, "cafe").await.len(), 2);
    assert_eq!(available(&s, "cafe").await, 300);
    // The cap of 2,000 is reached: the next short debit is refused.
    assert_eq!(
        s.post("/v1/accounts/cafe/quote", ADMIN, None, json!({"credits": 400})).await.body["covered"],
        false
    );
    debit(&s, "cafe", "d4", 400).await.assert_problem(402, "insufficient_credits");
    assert_eq!(purchases(&s, "cafe").await.len(), 2);
    drop(s);
    db.assert_audit();
}

/// A hold that leaves available below the threshold buys like a debit;
/// a capture, a release and a refund (which do not spend) buy nothing.
async fn a_hold_below_the_threshold_buys_and_nothing_else_does(db: Db) {
    let s = start(&db, "2026-11-10T12:00:00Z");
    open_account(&s, "cafe").await;
    auto(&s, "cafe", 500, 1000, 0).await;
    let h =
        created(s.post("/v1/accounts/cafe/holds", ADMIN, Some("h1"), json!({"credits": 600})).await, "hold");
    assert_eq!(purchases(&s, "cafe").await.len(), 1, "400 left: bought");
    let hid = h["id"].as_str().unwrap();
    let c = s
        .post(&format!("/v1/accounts/cafe/holds/{hid}/capture"), ADMIN, Some("c1"), json!({"credits": 600}))
        .await;
    assert_eq!(c.status, 200, "{c:?}");
    assert_eq!(available(&s, "cafe").await, 1400);
    let d = created(debit(&s, "cafe", "d1", 900).await, "debit"); // 500: at, not below
    let did = d["id"].as_str().unwrap();
    let r = s
        .post(&format!("/v1/accounts/cafe/debits/{did}/refund"), ADMIN, Some("r1"), json!({"credits": 5}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(purchases(&s, "cafe").await.len(), 1);
    // Turned off: nothing more is bought.
    let off = patch(&s, "cafe", json!({"auto_recharge": null})).await;
    assert_eq!(off.status, 200, "{off:?}");
    assert_eq!(debit(&s, "cafe", "d2", 400).await.status, 201);
    assert_eq!(purchases(&s, "cafe").await.len(), 1);
    drop(s);
    db.assert_audit();
}

/// A recharge is a purchase under the same checks: one that would take
/// the unbilled total past what is kept exactly is not made, as a
/// purchase by request is refused. (So a debit loads the unbilled
/// purchases of an account that auto-recharges.)
async fn the_unbilled_total_bounds_a_recharge_as_it_bounds_a_purchase(db: Db) {
    let s = start(&db, "2026-11-10T12:00:00Z");
    let body = json!({"id": "cafe", "name": "Cafe", "unit_price": "1000", "currency": "USD"});
    assert_eq!(s.post("/v1/accounts", ADMIN, None, body).await.status, 201);
    // Nine purchases of 1,000,000,000 credits at 1,000: 9e18 micro-dollars.
    for i in 0..9 {
        let p = s
            .post(
                "/v1/accounts/cafe/purchases",
                ADMIN,
                Some(&format!("p{i}")),
                json!({"credits": 1_000_000_000}),
            )
            .await;
        created(p, "purchase");
        assert_eq!(debit(&s, "cafe", &format!("d{i}"), 1_000_000_000).await.status, 201);
    }
    let tenth =
        s.post("/v1/accounts/cafe/purchases", ADMIN, Some("p9"), json!({"credits": 1_000_000_000})).await;
    assert_eq!(tenth.status, 422, "{tenth:?}");
    assert_eq!(available(&s, "cafe").await, 1000);
    auto(&s, "cafe", 0, 1_000_000_000, 0).await;
    let q = s.post("/v1/accounts/cafe/quote", ADMIN, None, json!({"credits": 2000})).await;
    assert_eq!(q.body["auto_recharge_credits"], 0, "{q:?}");
    debit(&s, "cafe", "short", 2000).await.assert_problem(402, "insufficient_credits");
    assert_eq!(purchases(&s, "cafe").await.len(), 9, "nothing bought");
    drop(s);
    db.assert_audit();
}

/// Settings that cannot work are refused, and change nothing.
async fn bad_settings_are_refused(db: Db) {
    let s = start(&db, "2026-11-10T12:00:00Z");
    open_account(&s, "cafe").await;
    let before = s.get("/v1/accounts/cafe", ADMIN).await.body;
    for bad in [
        json!({"threshold": 500, "credits": 1000, "monthly_cap": 999}),
        json!({"threshold": 500, "credits": 0, "monthly_cap": 0}),
        json!({"threshold": -1, "credits": 1000, "monthly_cap": 0}),
        json!({"threshold": 500, "credits": 1000}),
        json!({"threshold": 500, "credits": 1000, "monthly_cap": 0, "extra": 1}),
        json!({"threshold": "500", "credits": 1000, "monthly_cap": 0}),
        json!(1000),
    ] {
        let a = patch(&s, "cafe", json!({ "auto_recharge": bad })).await;
        assert!(a.status == 400 || a.status == 422, "{bad}: {a:?}");
        assert_eq!(a.header("content-type"), Some("application/problem+json"), "{a:?}");
        assert_eq!(s.get("/v1/accounts/cafe", ADMIN).await.body, before, "{bad}: nothing changed");
    }
    let a =
        patch(&s, "cafe", json!({"auto_recharge": {"threshold": 500, "credits": 1000, "monthly_cap": 999}}))
            .await;
    a.assert_problem(422, "invalid_request");
    assert!(a.body["detail"].as_str().unwrap().contains("monthly_cap"), "{a:?}");
}

on_every_store! {
    #[tokio::test] fires_exactly_once_per_crossing_under_50_concurrent_debits,
    #[tokio::test] the_cap_and_the_purchase_limit_stop_it_with_one_capped_event,
    #[tokio::test] a_failed_statement_suspends_it_until_paid,
    #[tokio::test] a_short_debit_is_rescued_when_one_recharge_covers_it,
    #[tokio::test] a_hold_below_the_threshold_buys_and_nothing_else_does,
    #[tokio::test] the_unbilled_total_bounds_a_recharge_as_it_bounds_a_purchase,
    #[tokio::test] bad_settings_are_refused,
}
