//! Events (issue 14): the outbox through the real server on both stores.
//! Every change that matters writes its event in its own transaction,
//! numbered per account; alerts fire exactly at their thresholds, once,
//! and re-arm; months close into `statement.issued` and
//! `free_credits.reset` at each account's own boundary.

use serde_json::{Value, json};

use crate::util::{ADMIN, Db, Server, created, open_account, snapshot};

/// Every event of `account`, read page by page with `after` (small pages,
/// so the paging is exercised too).
async fn events(s: &Server, account: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let p = s.get(&format!("/v1/accounts/{account}/events?after={after}&limit=2"), ADMIN).await;
        assert_eq!(p.status, 200, "{p:?}");
        let data = p.body["data"].as_array().expect("a page").clone();
        all.extend(data);
        match p.body["next_cursor"].as_str() {
            Some(c) => after = c.parse().expect("the cursor is a sequence"),
            None => break,
        }
    }
    // Numbered 1, 2, 3 ... with no gap, oldest first.
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e["sequence"], json!(i as i64 + 1), "{all:#?}");
        assert_eq!(e["account_id"], account, "{e}");
        assert!(e["id"].as_str().unwrap().starts_with("evt_"), "{e}");
    }
    all
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

async fn debit(s: &Server, account: &str, key: &str, credits: i64) -> Value {
    let path = format!("/v1/accounts/{account}/debits");
    created(s.post(&path, ADMIN, Some(key), json!({ "credits": credits })).await, "debit")
}

async fn patch(s: &Server, account: &str, body: Value) {
    let a = s.call("PATCH", &format!("/v1/accounts/{account}"), Some(ADMIN), None, Some(body)).await;
    assert_eq!(a.status, 200, "{a:?}");
}

async fn set_clock(s: &Server, now: &str) {
    let c = s.call("PUT", "/v1/test-clock", Some(ADMIN), None, Some(json!({ "now": now }))).await;
    assert_eq!(c.status, 200, "{c:?}");
}

/// A purchase and its refund are events with the objects as the API shows
/// them and the available credits after; a debit that crosses no
/// threshold is none; a replay makes none; the list pages by `after`.
async fn purchases_and_refunds_are_events_in_sequence(db: Db) {
    let s = Server::start(
        &db,
        &["--test-clock", "--now", "2026-11-10T12:00:00Z", "--close-interval-seconds", "0"],
    );
    open_account(&s, "cafe").await;
    let a = "/v1/accounts/cafe";
    let p = created(
        s.post(&format!("{a}/purchases"), ADMIN, Some("p1"), json!({"credits": 500})).await,
        "purchase",
    );
    let again = s.post(&format!("{a}/purchases"), ADMIN, Some("p1"), json!({"credits": 500})).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"), "{again:?}");
    debit(&s, "cafe", "d1", 10).await;
    let pid = p["id"].as_str().unwrap();
    let r = created(
        s.post(&format!("{a}/purchases/{pid}/refund"), ADMIN, Some("r1"), json!({"credits": 100})).await,
        "refund",
    );
    created(s.post(&format!("{a}/purchases"), ADMIN, Some("p2"), json!({"credits": 7})).await, "purchase");
    let all = events(&s, "cafe").await;
    assert_eq!(types(&all), ["purchase.created", "purchase.refunded", "purchase.created"], "{all:#?}");
    assert_eq!(all[0]["data"]["purchase"], p, "the purchase as the API showed it");
    assert_eq!(all[0]["data"]["available"], 1500, "{all:#?}");
    assert_eq!(all[1]["data"]["refund"], r, "{all:#?}");
    assert_eq!(all[1]["data"]["available"], 1390, "{all:#?}");
    assert_eq!(all[0]["created_at"], "2026-11-10T12:00:00Z");
    // `after` is exclusive; past the end is an empty page.
    let tail = s.get(&format!("{a}/events?after=2"), ADMIN).await;
    assert_eq!(tail.body["data"].as_array().unwrap().len(), 1, "{tail:?}");
    assert_eq!(tail.body["data"][0]["sequence"], 3);
    let none = s.get(&format!("{a}/events?after=3"), ADMIN).await;
    assert_eq!(none.body, json!({"data": [], "next_cursor": null}));
    // Ids never change and never repeat.
    let again = events(&s, "cafe").await;
    assert_eq!(all, again);
    let mut ids: Vec<&str> = all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3);
    db.assert_audit();
    // An event lost behind the ledger's back: the audit names the gap.
    drop(s);
    crate::util::raw_sql(&db, "DELETE FROM events WHERE account_id = 'cafe' AND sequence = 2");
    let run = db.run(&["audit"]);
    assert_ne!(run.code, 0, "a gap in the events fails the audit: {run:?}");
    assert!(format!("{}{}", run.stdout, run.stderr).contains("has sequence 3, expected 2"), "{run:?}");
}

/// `balance.low` fires when available falls below the threshold (not at
/// it), once, and again only after available rose back to it.
async fn balance_low_fires_once_per_crossing(db: Db) {
    let s = Server::start(
        &db,
        &["--test-clock", "--now", "2026-11-10T12:00:00Z", "--close-interval-seconds", "0"],
    );
    open_account(&s, "cafe").await;
    patch(&s, "cafe", json!({"low_balance_threshold": 300})).await;
    debit(&s, "cafe", "d1", 700).await; // 300 left: at the threshold, not below
    assert_eq!(types(&events(&s, "cafe").await), Vec::<&str>::new());
    debit(&s, "cafe", "d2", 1).await; // 299: below
    debit(&s, "cafe", "d3", 50).await; // still below: no second alert
    let all = events(&s, "cafe").await;
    let low: Vec<&Value> = all.iter().filter(|e| e["type"] == "balance.low").collect();
    assert_eq!(low.len(), 1, "{all:#?}");
    assert_eq!((&low[0]["data"]["available"], &low[0]["data"]["threshold"]), (&json!(299), &json!(300)));
    // Back to the threshold re-arms; below again alerts again.
    let p = "/v1/accounts/cafe/purchases";
    created(s.post(p, ADMIN, Some("p1"), json!({"credits": 51})).await, "purchase"); // 300
    debit(&s, "cafe", "d4", 1).await; // 299
    let all = events(&s, "cafe").await;
    let low: Vec<&Value> = all.iter().filter(|e| e["type"] == "balance.low").collect();
    assert_eq!(low.len(), 2, "{all:#?}");
    assert_eq!(low[1]["data"]["available"], 299);
    db.assert_audit();
}

/// `free_credits.low` at exactly 75% and 90% of the month's allowance
/// used (held credits count), once each, again next month.
async fn free_credits_low_fires_at_75_and_90_percent_once_a_month(db: Db) {
    let s = Server::start(
        &db,
        &["--test-clock", "--now", "2026-11-10T12:00:00Z", "--close-interval-seconds", "0"],
    );
    open_account(&s, "cafe").await;
    let free_low = |all: &[Value]| -> Vec<(i64, i64)> {
        all.iter()
            .filter(|e| e["type"] == "free_credits.low")
            .map(|e| (e["data"]["percent_used"].as_i64().unwrap(), e["data"]["used"].as_i64().unwrap()))
            .collect()
    };
    debit(&s, "cafe", "d1", 749).await;
    assert_eq!(free_low(&events(&s, "cafe").await), []);
    // A hold of 1 reaches 750 of 1,000: 75%.
    let h = "/v1/accounts/cafe/holds";
    created(s.post(h, ADMIN, Some("h1"), json!({"credits": 1})).await, "hold");
    assert_eq!(free_low(&events(&s, "cafe").await), [(75, 750)]);
    debit(&s, "cafe", "d2", 149).await; // 899
    assert_eq!(free_low(&events(&s, "cafe").await), [(75, 750)]);
    debit(&s, "cafe", "d3", 1).await; // 900: 90%
    debit(&s, "cafe", "d4", 50).await;
    assert_eq!(free_low(&events(&s, "cafe").await), [(75, 750), (90, 900)]);
    // December: a new allowance, the alerts re-arm; a jump past both
    // thresholds sends both, in order.
    set_clock(&s, "2026-12-02T12:00:00Z").await;
    debit(&s, "cafe", "d5", 950).await;
    let all = events(&s, "cafe").await;
    assert_eq!(free_low(&all), [(75, 750), (90, 900), (75, 950), (90, 950)], "{all:#?}");
    assert_eq!(all.last().unwrap()["data"]["month"], "2026-12");
    db.assert_audit();
}

/// Months close at each account's own boundary (Tokyo, UTC, Los Angeles):
/// the close task issues `statement.issued` (with what the platform
/// charges) and `free_credits.reset` once per account and month; a server
/// that was down over the 1st catches up when it starts again.
async fn months_close_into_events_at_each_accounts_boundary(db: Db) {
    let now = "2026-11-20T12:00:00Z";
    let s = Server::start(&db, &["--test-clock", "--now", now, "--close-interval-seconds", "1"]);
    for (id, zone) in [("tokyo", "Asia/Tokyo"), ("london", "UTC"), ("la", "America/Los_Angeles")] {
        let body = json!({"id": id, "name": id, "time_zone": zone});
        assert_eq!(s.post("/v1/accounts", ADMIN, None, body).await.status, 201);
        let p = format!("/v1/accounts/{id}/purchases");
        created(s.post(&p, ADMIN, Some("p"), json!({"credits": 250})).await, "purchase");
    }
    let kinds = |all: &[Value]| types(all).into_iter().map(str::to_string).collect::<Vec<_>>();
    // Waits (without asserting on time) until the close task has given
    // `account` `n` events.
    async fn wait_for(s: &Server, account: &str, n: usize) -> Vec<Value> {
        for _ in 0..300 {
            let all = events(s, account).await;
            if all.len() >= n {
                return all;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("{account} never got {n} events: {:#?}", events(s, account).await);
    }
    // 00:30 on December 1st in Tokyo; still November elsewhere.
    set_clock(&s, "2026-11-30T15:30:00Z").await;
    let tokyo = wait_for(&s, "tokyo", 3).await;
    assert_eq!(kinds(&tokyo), ["purchase.created", "statement.issued", "free_credits.reset"]);
    let st = &tokyo[1]["data"]["statement"];
    assert_eq!(
        (&st["month"], &st["total"], &st["issued_on"]),
        (&json!("2026-11"), &json!("2.50"), &json!("2026-12-01"))
    );
    assert_eq!(tokyo[2]["data"]["month"], "2026-12");
    assert_eq!(tokyo[2]["data"]["allowance"], 1000);
    assert_eq!(events(&s, "london").await.len(), 1, "London's month has not ended");
    assert_eq!(events(&s, "la").await.len(), 1);
    // 00:30 in London.
    set_clock(&s, "2026-12-01T00:30:00Z").await;
    let london = wait_for(&s, "london", 3).await;
    assert_eq!(kinds(&london), ["purchase.created", "statement.issued", "free_credits.reset"]);
    assert_eq!(events(&s, "la").await.len(), 1, "Los Angeles is still in November");
    // The server is down over Los Angeles' midnight; started again later,
    // it catches up, once.
    drop(s);
    let s = Server::start(
        &db,
        &["--test-clock", "--now", "2026-12-01T20:00:00Z", "--close-interval-seconds", "1"],
    );
    let la = wait_for(&s, "la", 3).await;
    assert_eq!(kinds(&la), ["purchase.created", "statement.issued", "free_credits.reset"]);
    assert_eq!(la[2]["created_at"], "2026-12-01T20:00:00Z");
    // More passes of the task change nothing.
    let close = s.post("/v1/billing/close", ADMIN, None, json!({})).await;
    assert_eq!(close.status, 200, "{close:?}");
    for (id, all) in [("tokyo", tokyo), ("london", london), ("la", la)] {
        assert_eq!(events(&s, id).await, all, "{id}: once per account and month");
    }
    db.assert_audit();
}

/// Bad queries on the events list: 400 problems (or 404), nothing changed.
async fn bad_event_queries_are_refused(db: Db) {
    let s = Server::start(
        &db,
        &["--test-clock", "--now", "2026-11-10T12:00:00Z", "--close-interval-seconds", "0"],
    );
    open_account(&s, "cafe").await;
    created(s.post("/v1/accounts/cafe/purchases", ADMIN, Some("p"), json!({"credits": 5})).await, "purchase");
    let before = (snapshot(&s, "cafe").await, events(&s, "cafe").await);
    for q in
        ["after=-1", "after=x", "after=1.5", "limit=0", "limit=501", "cursor=1", "month=2026-11", "after="]
    {
        let a = s.get(&format!("/v1/accounts/cafe/events?{q}"), ADMIN).await;
        a.assert_problem(400, "invalid_request");
    }
    s.get("/v1/accounts/nobody/events", ADMIN).await.assert_problem(404, "not_found");
    let t = s.post("/v1/accounts/cafe/tokens", ADMIN, None, json!({"label": "pos"})).await;
    let token = t.body["token"].as_str().expect("a token").to_string();
    open_account(&s, "other").await;
    let other = s.get("/v1/accounts/other/events", &token).await;
    assert!(other.status == 403 || other.status == 404, "{other:?}");
    assert_eq!(s.get("/v1/accounts/cafe/events", &token).await.status, 200, "its own account's");
    assert_eq!((snapshot(&s, "cafe").await, events(&s, "cafe").await), before);
}

on_every_store!(
    #[tokio::test]
    purchases_and_refunds_are_events_in_sequence,
    #[tokio::test]
    balance_low_fires_once_per_crossing,
    #[tokio::test]
    free_credits_low_fires_at_75_and_90_percent_once_a_month,
    #[tokio::test]
    months_close_into_events_at_each_accounts_boundary,
    #[tokio::test]
    bad_event_queries_are_refused,
);
