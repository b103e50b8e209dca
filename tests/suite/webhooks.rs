//! Webhooks (issue 14) end to end: the real server's delivery worker
//! against a real receiver on loopback that verifies every signature
//! independently (tests/suite/webhook_receiver.rs), on both stores.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{ADMIN, Db, Server, created, open_account, snapshot};
use crate::webhook_receiver::{Receiver, Reply};

/// A retry schedule of seconds, so outages heal within a test.
const FAST: &str = "1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s";

fn start(db: &Db, schedule: &str) -> Server {
    let args = ["--test-clock", "--now", "2026-11-10T12:00:00Z", "--close-interval-seconds", "0"];
    let mut args: Vec<&str> = args.to_vec();
    args.extend(["--webhook-retry-schedule", schedule]);
    Server::start(db, &args)
}

async fn endpoint(s: &Server, body: Value) -> Value {
    let e = s.post("/v1/webhook-endpoints", ADMIN, None, body).await;
    assert_eq!(e.status, 201, "{e:?}");
    assert!(e.body["secret"].as_str().unwrap().starts_with("whsec_"), "{e:?}");
    assert_eq!(
        e.header("location"),
        Some(format!("/v1/webhook-endpoints/{}", e.body["id"].as_str().unwrap()).as_str())
    );
    e.body
}

/// Every event of `account`, oldest first.
async fn events_of(s: &Server, account: &str) -> Vec<Value> {
    let p = s.get(&format!("/v1/accounts/{account}/events?limit=500"), ADMIN).await;
    assert_eq!(p.status, 200, "{p:?}");
    p.body["data"].as_array().unwrap().clone()
}

/// Waits (without asserting on time) until `done` holds, or panics with
/// what the receiver got.
async fn wait_until(r: &Receiver, what: &str, mut done: impl FnMut(&Receiver) -> bool) {
    for _ in 0..600 {
        if done(r) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{what}: never; the receiver got {:#?}",
        r.events().iter().map(|d| (&d.id, d.answered)).collect::<Vec<_>>()
    );
}

/// The deliveries the receiver answered 2xx, by account: (sequence, id).
fn succeeded(r: &Receiver) -> BTreeMap<String, Vec<(i64, String)>> {
    let mut by: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
    for d in r.events().into_iter().filter(|d| (200..300).contains(&d.answered)) {
        assert_eq!(d.body["id"], d.id.as_str(), "webhook-id is the event id");
        let account = d.body["account_id"].as_str().unwrap().to_string();
        by.entry(account).or_default().push((d.body["sequence"].as_i64().unwrap(), d.id.clone()));
    }
    by
}

async fn buy(s: &Server, account: &str, key: &str, credits: i64) {
    let p = format!("/v1/accounts/{account}/purchases");
    created(s.post(&p, ADMIN, Some(key), json!({ "credits": credits })).await, "purchase");
}

/// Every event reaches the endpoint, signed, once as a success, each
/// account's in sequence order with no gap, across an outage of the
/// receiver (the worker retries by the schedule and then delivers what
/// waited, in order).
async fn every_event_arrives_signed_and_in_order_across_an_outage(db: Db) {
    let mut r = Receiver::start(&[]).await;
    let s = start(&db, FAST);
    let e = endpoint(&s, json!({ "url": r.url(), "description": "production" })).await;
    r.accept(e["secret"].as_str().unwrap());
    for a in ["cafe", "bakery"] {
        open_account(&s, a).await;
        let patch = json!({"low_balance_threshold": 1200});
        assert_eq!(
            s.call("PATCH", &format!("/v1/accounts/{a}"), Some(ADMIN), None, Some(patch)).await.status,
            200
        );
    }
    buy(&s, "cafe", "p1", 500).await;
    buy(&s, "bakery", "p1", 300).await; // 1,300
    let d = "/v1/accounts/bakery/debits";
    created(s.post(d, ADMIN, Some("d1"), json!({"credits": 200})).await, "debit"); // 1,100: balance.low
    // Each: balance.low on the new threshold, the purchase (re-arms);
    // the bakery's debit: balance.low again.
    wait_until(&r, "the first five events", |r| succeeded(r).values().map(Vec::len).sum::<usize>() == 5)
        .await;
    // The receiver is down while more happens.
    r.stop().await;
    for i in 0..5 {
        buy(&s, "cafe", &format!("o{i}"), 10 + i).await;
        buy(&s, "bakery", &format!("o{i}"), 10 + i).await;
    }
    // Attempts fail meanwhile and say why.
    let eid = e["id"].as_str().unwrap();
    let mut seen_failure = false;
    for _ in 0..100 {
        let list = s.get(&format!("/v1/webhook-endpoints/{eid}/deliveries?status=pending"), ADMIN).await;
        assert_eq!(list.status, 200, "{list:?}");
        if list.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["attempts"].as_i64() > Some(0) && !d["last_error"].is_null())
        {
            seen_failure = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen_failure, "a failed attempt is recorded with its error");
    r.restart().await;
    let want: usize = events_of(&s, "cafe").await.len() + events_of(&s, "bakery").await.len();
    assert_eq!(want, 15);
    wait_until(&r, "every event", |r| succeeded(r).values().map(Vec::len).sum::<usize>() >= want).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(r.invalid_signatures(), 0);
    let got = succeeded(&r);
    for a in ["cafe", "bakery"] {
        let events: Vec<(i64, String)> = events_of(&s, a)
            .await
            .iter()
            .map(|e| (e["sequence"].as_i64().unwrap(), e["id"].as_str().unwrap().to_string()))
            .collect();
        assert_eq!(got[a], events, "{a}: every event once, in sequence order, no gap");
    }
    // Bodies are the events as the API lists them.
    let first = r.events().into_iter().find(|d| d.body["account_id"] == "cafe").unwrap();
    assert_eq!(first.body, events_of(&s, "cafe").await[0]);
    assert_eq!(first.content_type, "application/json");
    let list =
        s.get(&format!("/v1/webhook-endpoints/{eid}/deliveries?status=succeeded&limit=500"), ADMIN).await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), want, "{list:?}");
    // Each attempt is kept: a delivery made during the outage failed (with
    // why), then succeeded with the receiver's status; newest first.
    let retried: Vec<&Value> =
        list.body["data"].as_array().unwrap().iter().filter(|d| d["attempts"].as_i64() > Some(1)).collect();
    assert!(!retried.is_empty(), "{list:?}");
    for d in retried {
        let did = d["id"].as_str().unwrap();
        let a = s.get(&format!("/v1/webhook-endpoints/{eid}/deliveries/{did}/attempts"), ADMIN).await;
        assert_eq!(a.status, 200, "{a:?}");
        let attempts = a.body["data"].as_array().unwrap();
        assert_eq!(attempts.len() as i64, d["attempts"].as_i64().unwrap(), "{a:?}");
        let numbers: Vec<i64> = attempts.iter().map(|x| x["attempt"].as_i64().unwrap()).collect();
        let expected: Vec<i64> = (1..=attempts.len() as i64).rev().collect();
        assert_eq!(numbers, expected, "newest first: {a:?}");
        assert_eq!(attempts[0]["status"], "succeeded", "{a:?}");
        assert_eq!(attempts[0]["response_status"], 204, "{a:?}");
        assert_eq!(attempts[0]["error"], Value::Null, "{a:?}");
        for failed in &attempts[1..] {
            assert_eq!(failed["status"], "pending", "retried: {a:?}");
            assert_eq!(failed["response_status"], Value::Null, "no answer: {a:?}");
            assert!(failed["error"].as_str().is_some_and(|e| !e.is_empty()), "{a:?}");
            assert_eq!(failed["event_id"], did);
        }
    }
    db.assert_audit();
}

/// A 410 disables the endpoint and what happens meanwhile waits for it;
/// enabling it again sends that, in order. During a secret rotation both
/// secrets sign; a redelivery sends the same `webhook-id` again; a
/// recovery sends again what was given up.
async fn gone_rotation_redelivery_and_recovery(db: Db) {
    let r = Receiver::start(&[]).await;
    let s = start(&db, "1s");
    let e = endpoint(&s, json!({ "url": r.url(), "events": ["purchase.created"] })).await;
    let eid = e["id"].as_str().unwrap().to_string();
    let old = e["secret"].as_str().unwrap().to_string();
    r.accept(&old);
    open_account(&s, "cafe").await;
    r.set_script([Reply::status(410)]);
    buy(&s, "cafe", "p1", 5).await;
    let ep = format!("/v1/webhook-endpoints/{eid}");
    for _ in 0..100 {
        if s.get(&ep, ADMIN).await.body["enabled"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shown = s.get(&ep, ADMIN).await.body;
    assert_eq!(shown["enabled"], false, "{shown}");
    assert!(shown["disabled_reason"].as_str().unwrap().contains("410"), "{shown}");
    assert!(shown.get("secret").is_none(), "never shown again: {shown}");
    // Disabled: events are kept, not sent.
    buy(&s, "cafe", "p2", 6).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(r.events().len(), 1, "only the 410'd one arrived");
    // Rotation: the new secret and the old both sign.
    let rot = s.post(&format!("{ep}/rotate-secret"), ADMIN, None, json!({})).await;
    assert_eq!(rot.status, 200, "{rot:?}");
    let new = rot.body["secret"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert!(!rot.body["old_secret_expires_at"].is_null(), "{rot:?}");
    r.accept_only(&new);
    let on = s.call("PATCH", &ep, Some(ADMIN), None, Some(json!({"enabled": true}))).await;
    assert_eq!((on.status, &on.body["enabled"]), (200, &json!(true)), "{on:?}");
    wait_until(&r, "the kept event", |r| r.events().iter().filter(|d| d.answered == 204).count() == 1).await;
    let kept = r.events().last().unwrap().clone();
    assert_eq!(kept.body["sequence"], 2, "the 410'd event was given up; the next one was kept");
    assert_eq!(kept.signature.split(' ').count(), 2, "two signatures during a rotation: {}", kept.signature);
    r.accept_only(&old);
    buy(&s, "cafe", "p3", 7).await;
    wait_until(&r, "signed by the old secret too", |r| {
        r.events().iter().filter(|d| d.answered == 204).count() == 2
    })
    .await;
    assert_eq!(r.invalid_signatures(), 0);
    // The first delivery failed (410); recover sends it again, and a
    // redelivery sends one again with the same webhook-id.
    let first = events_of(&s, "cafe").await[0]["id"].as_str().unwrap().to_string();
    let failed = s.get(&format!("{ep}/deliveries?status=failed"), ADMIN).await;
    assert_eq!(failed.body["data"][0]["id"], first.as_str(), "{failed:?}");
    assert_eq!(failed.body["data"][0]["last_response_status"], 410, "{failed:?}");
    let rec = s.post(&format!("{ep}/recover"), ADMIN, None, json!({"since": "2020-01-01T00:00:00Z"})).await;
    assert_eq!((rec.status, &rec.body["queued"]), (202, &json!(1)), "{rec:?}");
    wait_until(&r, "the recovered event", |r| r.events().iter().any(|d| d.id == first && d.answered == 204))
        .await;
    let again = s.post(&format!("{ep}/deliveries/{first}/redeliver"), ADMIN, None, json!({})).await;
    assert_eq!(again.status, 202, "{again:?}");
    wait_until(&r, "the redelivered event", |r| r.events().iter().filter(|d| d.id == first).count() == 3)
        .await;
    // Only purchase.created was subscribed to.
    assert!(r.events().iter().all(|d| d.body["type"] == "purchase.created"));
}

/// Bad input on every webhook route: a 4xx problem, nothing changed.
async fn bad_webhook_input_is_refused(db: Db) {
    let s = start(&db, "1s");
    open_account(&s, "cafe").await;
    let e = endpoint(&s, json!({"url": "http://127.0.0.1:9/hooks"})).await;
    let eid = e["id"].as_str().unwrap().to_string();
    let before = (snapshot(&s, "cafe").await, s.get("/v1/webhook-endpoints", ADMIN).await.body);
    let long = format!("https://example.com/{}", "a".repeat(2100));
    for body in [
        json!({"url": "ftp://example.com/hooks"}),
        json!({"url": "not a url"}),
        json!({"url": long}),
        json!({"url": "https://user:pw@example.com/"}),
        json!({"url": "https://example.com/", "events": ["purchase.deleted"]}),
        json!({"url": "https://example.com/", "events": []}),
        json!({"url": "https://example.com/", "description": "x".repeat(501)}),
        json!({"url": "https://example.com/", "secret": "whsec_mine"}),
    ] {
        let a = s.post("/v1/webhook-endpoints", ADMIN, None, body.clone()).await;
        assert_eq!(a.status, 422, "{body}: {a:?}");
    }
    let ep = format!("/v1/webhook-endpoints/{eid}");
    for body in
        [json!({}), json!({"url": "mailto:x@y"}), json!({"events": ["nope"]}), json!({"enabled": "yes"})]
    {
        let a = s.call("PATCH", &ep, Some(ADMIN), None, Some(body.clone())).await;
        assert!(a.status == 422 || a.status == 400, "{body}: {a:?}");
    }
    for (m, path, body) in [
        ("GET", "/v1/webhook-endpoints/we_nope".to_string(), None),
        ("DELETE", "/v1/webhook-endpoints/we_nope".to_string(), None),
        ("POST", "/v1/webhook-endpoints/we_nope/rotate-secret".to_string(), Some(json!({}))),
        ("POST", format!("{ep}/deliveries/evt_nope/redeliver"), Some(json!({}))),
        ("GET", format!("{ep}/deliveries/evt_nope/attempts"), None),
        ("GET", "/v1/webhook-endpoints/we_nope/deliveries/evt_nope/attempts".to_string(), None),
    ] {
        let a = s.call(m, &path, Some(ADMIN), None, body).await;
        assert_eq!(a.status, 404, "{m} {path}: {a:?}");
    }
    for q in ["status=done", "limit=0", "cursor=x", "after=1"] {
        let a = s.get(&format!("{ep}/deliveries?{q}"), ADMIN).await;
        assert_eq!(a.status, 400, "{q}: {a:?}");
    }
    for body in [json!({"since": "yesterday"}), json!({"since": "2999-01-01T00:00:00Z"}), json!({})] {
        let a = s.post(&format!("{ep}/recover"), ADMIN, None, body.clone()).await;
        assert!(a.status == 422 || a.status == 400, "{body}: {a:?}");
    }
    // Account tokens may not manage endpoints.
    let t = s.post("/v1/accounts/cafe/tokens", ADMIN, None, json!({"label": "pos"})).await;
    let token = t.body["token"].as_str().unwrap().to_string();
    assert_eq!(s.get("/v1/webhook-endpoints", &token).await.status, 403);
    let a = s.post("/v1/webhook-endpoints", &token, None, json!({"url": "https://example.com/"})).await;
    assert_eq!(a.status, 403, "{a:?}");
    assert_eq!((snapshot(&s, "cafe").await, s.get("/v1/webhook-endpoints", ADMIN).await.body), before);
}

/// Every webhook write takes an `Idempotency-Key` (API.md): a retry with
/// the same key and request answers the first answer again, marked
/// `Idempotent-Replayed`, and changes nothing more (one endpoint, one
/// rotation, one redelivery, one recovery); the same key with another
/// request is a 409; a key that changed nothing (a 404) is not kept; a bad
/// key is a 400 that changes nothing; concurrent requests with one key
/// make one endpoint.
async fn webhook_writes_are_idempotent_with_a_key(db: Db) {
    let r = Receiver::start(&[]).await;
    let s = start(&db, "1s");
    open_account(&s, "cafe").await;
    let endpoints =
        || async { s.get("/v1/webhook-endpoints", ADMIN).await.body["data"].as_array().unwrap().len() };
    let body = json!({ "url": r.url(), "events": ["purchase.created"] });
    let first = s.post("/v1/webhook-endpoints", ADMIN, Some("ep-1"), body.clone()).await;
    assert_eq!((first.status, first.header("idempotent-replayed")), (201, None), "{first:?}");
    let again = s.post("/v1/webhook-endpoints", ADMIN, Some("ep-1"), body.clone()).await;
    assert_eq!((again.status, again.header("idempotent-replayed")), (201, Some("true")), "{again:?}");
    assert_eq!(again.body, first.body, "the same id and the same secret");
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(endpoints().await, 1);
    let eid = first.body["id"].as_str().unwrap().to_string();
    let original = first.body["secret"].as_str().unwrap().to_string();
    let ep = format!("/v1/webhook-endpoints/{eid}");
    // The same key with another request: another body, another route.
    let other =
        s.post("/v1/webhook-endpoints", ADMIN, Some("ep-1"), json!({"url": "https://b.example/"})).await;
    assert_eq!((other.status, other.body["code"].as_str()), (409, Some("idempotency_conflict")), "{other:?}");
    let other = s.post(&format!("{ep}/rotate-secret"), ADMIN, Some("ep-1"), json!({})).await;
    assert_eq!((other.status, other.body["code"].as_str()), (409, Some("idempotency_conflict")), "{other:?}");
    assert_eq!(endpoints().await, 1);
    // A key that found nothing to change is not kept.
    let gone = s.post("/v1/webhook-endpoints/we_nope/rotate-secret", ADMIN, Some("k-404"), json!({})).await;
    assert_eq!(gone.status, 404, "{gone:?}");
    let reused = s.post(&format!("{ep}/rotate-secret"), ADMIN, Some("k-404"), json!({})).await;
    assert_eq!((reused.status, reused.header("idempotent-replayed")), (200, None), "{reused:?}");
    let rotated = reused.body["secret"].as_str().unwrap().to_string();
    // A retried rotation rotates once: the secret it replaced still signs
    // beside the one it showed (a second rotation would have replaced
    // that one, and `rotated` would sign no more).
    let rot = s.post(&format!("{ep}/rotate-secret"), ADMIN, Some("rot-1"), json!({})).await;
    let rot_again = s.post(&format!("{ep}/rotate-secret"), ADMIN, Some("rot-1"), json!({})).await;
    assert_eq!((rot.status, rot_again.status), (200, 200), "{rot:?} {rot_again:?}");
    assert_eq!(rot_again.header("idempotent-replayed"), Some("true"));
    assert_eq!(rot_again.body, rot.body);
    let current = rot.body["secret"].as_str().unwrap().to_string();
    assert_ne!(current, rotated);
    r.accept_only(&rotated);
    buy(&s, "cafe", "p1", 5).await;
    wait_until(&r, "signed by the secret before the one rotation", |r| r.events().len() == 1).await;
    r.accept_only(&current);
    buy(&s, "cafe", "p2", 5).await;
    wait_until(&r, "signed by the rotated secret", |r| r.events().len() == 2).await;
    assert_eq!(r.invalid_signatures(), 0);
    assert_ne!(original, current);
    // A retried redelivery queues nothing more: once it was sent, the
    // delivery stays succeeded.
    let did = events_of(&s, "cafe").await[0]["id"].as_str().unwrap().to_string();
    let redeliver = format!("{ep}/deliveries/{did}/redeliver");
    let red = s.post(&redeliver, ADMIN, Some("red-1"), json!({})).await;
    assert_eq!((red.status, &red.body["queued"]), (202, &json!(1)), "{red:?}");
    wait_until(&r, "the redelivered event", |r| r.events().iter().filter(|d| d.id == did).count() == 2).await;
    let delivery = || async {
        let list = s.get(&format!("{ep}/deliveries"), ADMIN).await.body;
        list["data"].as_array().unwrap().iter().find(|d| d["id"] == did.as_str()).cloned().unwrap()
    };
    for _ in 0..600 {
        if delivery().await["status"] == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent = delivery().await;
    assert_eq!(sent["status"], "succeeded", "{sent}");
    let red_again = s.post(&redeliver, ADMIN, Some("red-1"), json!({})).await;
    assert_eq!(
        (red_again.status, red_again.header("idempotent-replayed")),
        (202, Some("true")),
        "{red_again:?}"
    );
    assert_eq!(delivery().await, sent, "nothing queued again");
    // A retried recovery answers what the first one queued, though nothing
    // has failed since it: a new request would queue none.
    r.set_script([Reply::status(500), Reply::status(500)]);
    buy(&s, "cafe", "p3", 5).await;
    let failed =
        || async { s.get(&format!("{ep}/deliveries?status=failed"), ADMIN).await.body["data"].clone() };
    for _ in 0..600 {
        if failed().await.as_array().unwrap().len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = s.get(&format!("{ep}/deliveries"), ADMIN).await.body;
    assert_eq!(failed().await.as_array().unwrap().len(), 1, "given up after the schedule: {all:#}");
    r.set_script([]);
    let since = json!({"since": "2020-01-01T00:00:00Z"});
    let rec = s.post(&format!("{ep}/recover"), ADMIN, Some("rec-1"), since.clone()).await;
    assert_eq!((rec.status, &rec.body["queued"]), (202, &json!(1)), "{rec:?}");
    for _ in 0..600 {
        if failed().await.as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rec_again = s.post(&format!("{ep}/recover"), ADMIN, Some("rec-1"), since.clone()).await;
    assert_eq!((rec_again.status, &rec_again.body["queued"]), (202, &json!(1)), "{rec_again:?}");
    assert_eq!(rec_again.header("idempotent-replayed"), Some("true"));
    let fresh = s.post(&format!("{ep}/recover"), ADMIN, Some("rec-2"), since.clone()).await;
    assert_eq!((fresh.status, &fresh.body["queued"]), (202, &json!(0)), "{fresh:?}");
    // A retried update answers the first answer.
    let patch = json!({"description": "production"});
    let up = s.call("PATCH", &ep, Some(ADMIN), Some("up-1"), Some(patch.clone())).await;
    let up_again = s.call("PATCH", &ep, Some(ADMIN), Some("up-1"), Some(patch)).await;
    assert_eq!(
        (up.status, up_again.status, up_again.header("idempotent-replayed")),
        (200, 200, Some("true"))
    );
    assert_eq!(up_again.body, up.body);
    // Bad keys on every webhook write: a 400 that changes nothing.
    let before = s.get("/v1/webhook-endpoints", ADMIN).await.body;
    let long = "k".repeat(256);
    for (m, path, body) in [
        ("POST", "/v1/webhook-endpoints".to_string(), Some(json!({"url": "https://c.example/"}))),
        ("PATCH", ep.clone(), Some(json!({"enabled": false}))),
        ("POST", format!("{ep}/rotate-secret"), None),
        ("POST", redeliver.clone(), None),
        ("POST", format!("{ep}/recover"), Some(since.clone())),
    ] {
        for key in ["", long.as_str(), "tab\there"] {
            let a = s.call(m, &path, Some(ADMIN), Some(key), body.clone()).await;
            assert_eq!(
                (a.status, a.body["code"].as_str()),
                (400, Some("invalid_request")),
                "{m} {path} {key:?}: {a:?}"
            );
        }
        let mut req = reqwest::Client::new()
            .request(reqwest::Method::from_bytes(m.as_bytes()).unwrap(), format!("{}{path}", s.base))
            .bearer_auth(ADMIN)
            .header("Idempotency-Key", "a")
            .header("Idempotency-Key", "b");
        if let Some(b) = &body {
            req = req.json(b);
        }
        let twice = req.send().await.unwrap();
        assert_eq!(twice.status(), 400, "{m} {path} with two keys");
    }
    assert_eq!(s.get("/v1/webhook-endpoints", ADMIN).await.body, before);
    // Concurrent requests with one key make one endpoint.
    let body = json!({"url": "https://d.example/"});
    let answers = futures_util::future::join_all(
        (0..8).map(|_| s.post("/v1/webhook-endpoints", ADMIN, Some("ep-race"), body.clone())),
    )
    .await;
    for a in &answers {
        assert_eq!((a.status, &a.body["id"]), (201, &answers[0].body["id"]), "{a:?}");
    }
    assert_eq!(answers.iter().filter(|a| a.header("idempotent-replayed").is_none()).count(), 1);
    assert_eq!(endpoints().await, 2);
}

/// The worker has at most `MAX_IN_FLIGHT` (64) deliveries in flight at
/// once, claiming only what it has room for: with 100 accounts' events due
/// together and a receiver that answers each after 2 s, exactly 64 are
/// held unanswered at the peak, and every one arrives.
async fn at_most_max_in_flight_deliveries_are_sent_at_once(db: Db) {
    use textcredits::events::worker::MAX_IN_FLIGHT;
    const ACCOUNTS: usize = 100;
    let r = Receiver::start(&[]).await;
    let s = start(&db, FAST);
    let e = endpoint(&s, json!({ "url": r.url(), "events": ["purchase.created"] })).await;
    r.accept(e["secret"].as_str().unwrap());
    let ep = format!("/v1/webhook-endpoints/{}", e["id"].as_str().unwrap());
    let off = s.call("PATCH", &ep, Some(ADMIN), None, Some(json!({"enabled": false}))).await;
    assert_eq!(off.status, 200, "{off:?}");
    for i in 0..ACCOUNTS {
        let account = format!("c{i}");
        open_account(&s, &account).await;
        buy(&s, &account, "p", 1).await;
    }
    let count = |status: &'static str| {
        let path = format!("{ep}/deliveries?status={status}&limit=500");
        let s = &s;
        async move { s.get(&path, ADMIN).await.body["data"].as_array().unwrap().len() }
    };
    for _ in 0..600 {
        if count("pending").await == ACCOUNTS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count("pending").await, ACCOUNTS, "every event waits for the disabled endpoint");
    r.set_script((0..ACCOUNTS).map(|_| Reply::status(204).after(Duration::from_secs(2))));
    let on = s.call("PATCH", &ep, Some(ADMIN), None, Some(json!({"enabled": true}))).await;
    assert_eq!(on.status, 200, "{on:?}");
    for _ in 0..600 {
        if count("succeeded").await == ACCOUNTS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count("succeeded").await, ACCOUNTS, "every delivery arrives");
    assert_eq!(r.events().len(), ACCOUNTS, "each once");
    assert_eq!(r.most_in_flight(), MAX_IN_FLIGHT, "at the limit, never past it");
}

on_every_store!(
    #[tokio::test]
    every_event_arrives_signed_and_in_order_across_an_outage,
    #[tokio::test]
    gone_rotation_redelivery_and_recovery,
    #[tokio::test]
    bad_webhook_input_is_refused,
    #[tokio::test]
    webhook_writes_are_idempotent_with_a_key,
    #[tokio::test]
    at_most_max_in_flight_deliveries_are_sent_at_once,
);

/// Two replicas on PostgreSQL with one endpoint: each event is delivered
/// once (the claim's row locks and leases make each attempt one
/// replica's). Then a replica is killed while its attempts (one per
/// account, all at once, each hanging at the receiver) are in flight:
/// a new replica sends them again once their leases run out, and every
/// event arrives, each account's in order; only those in flight at the
/// kill may arrive twice (at least once).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_deliver_each_event_once_and_a_killed_one_loses_nothing() {
    let Some(db) = Db::postgres() else { return };
    let r = Receiver::start(&[]).await;
    let (a, b) = (start(&db, FAST), start(&db, FAST));
    let e = endpoint(&a, json!({ "url": r.url() })).await;
    r.accept(e["secret"].as_str().unwrap());
    let accounts = ["cafe", "bakery", "diner"];
    for name in accounts {
        open_account(&a, name).await;
    }
    for i in 0..10 {
        for (n, name) in accounts.iter().enumerate() {
            let s = if (i + n) % 2 == 0 { &a } else { &b };
            buy(s, name, &format!("p{i}"), 10 + i as i64).await;
        }
    }
    wait_until(&r, "thirty events", |r| succeeded(r).values().map(Vec::len).sum::<usize>() >= 30).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(r.requests(), 30, "each event sent once by one of the two replicas");
    for name in accounts {
        let want: Vec<(i64, String)> = events_of(&a, name)
            .await
            .iter()
            .map(|e| (e["sequence"].as_i64().unwrap(), e["id"].as_str().unwrap().to_string()))
            .collect();
        assert_eq!(succeeded(&r)[name], want, "{name}: once each, in order");
    }

    // Only `a` delivers now; its next attempts hang at the receiver.
    drop(b);
    r.set_script((0..3).map(|_| Reply::status(204).after(Duration::from_secs(5))));
    let before = r.requests();
    for (n, name) in accounts.iter().enumerate() {
        buy(&a, name, "late-1", 100 + n as i64).await;
        buy(&a, name, "late-2", 200 + n as i64).await;
    }
    for _ in 0..300 {
        if r.requests() >= before + 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let in_flight = r.requests() - before;
    // One per account: a slow answer holds up its own account's next
    // event (the ordering rule), never the other accounts'.
    assert_eq!(in_flight, 3, "each account's first late event is in flight when the replica is killed");
    let pid = a.child.id().to_string();
    let killed = std::process::Command::new("kill").args(["-KILL", &pid]).status().expect("kill runs");
    assert!(killed.success());
    drop(a);
    // A new replica resumes: what `a` leased is sent again when its lease
    // runs out, and the rest in order behind it.
    let c = start(&db, FAST);
    wait_until(&r, "every event after the kill", |r| {
        succeeded(r)
            .values()
            .map(|v| v.iter().map(|(_, id)| id).collect::<std::collections::BTreeSet<_>>().len())
            .sum::<usize>()
            >= 36
    })
    .await;
    assert_eq!(r.invalid_signatures(), 0);
    let got = succeeded(&r);
    let mut twice = 0;
    for name in accounts {
        let want: Vec<(i64, String)> = events_of(&c, name)
            .await
            .iter()
            .map(|e| (e["sequence"].as_i64().unwrap(), e["id"].as_str().unwrap().to_string()))
            .collect();
        // In the order of first arrival, every event once, in sequence order.
        let mut first: Vec<(i64, String)> = Vec::new();
        for d in &got[name] {
            if first.contains(d) {
                twice += 1;
            } else {
                first.push(d.clone());
            }
        }
        assert_eq!(first, want, "{name}: every event, in order");
    }
    // What hung at the receiver was recorded there on arrival, and sent
    // again by the new replica: at least once, and at most twice.
    assert!(twice >= 1, "the attempts in flight at the kill are sent again");
    assert!(twice <= in_flight, "only what was in flight at the kill arrives twice: {twice} > {in_flight}");
    db.assert_audit();
}

/// Through the store itself, on both stores.
mod attempts {
    /// A delivery keeps its newest `MAX_ATTEMPTS_KEPT` attempts: at the limit
    /// all of them, past it the oldest go. Driven through the store's own
    /// claim and record, as the worker does, on both stores.
    async fn a_delivery_keeps_its_newest_attempts_up_to_the_limit<S: textcredits::ledger::Store>(
        l: textcredits::ledger::Ledger<S>,
    ) {
        use textcredits::domain::command::Command;
        use textcredits::ledger::webhook::{DeliveryStatus, Endpoint, MAX_ATTEMPTS_KEPT, Recorded};
        let now = crate::util::ts("2026-11-10T12:00:00Z");
        let cafe = crate::util::account(&l, "cafe", "UTC", 1000, now).await;
        let purchase = Command::Purchase { credits: textcredits::domain::credits::Credits::new(5).unwrap() };
        l.execute(&cafe, purchase, None, now).await.unwrap();
        let endpoint = Endpoint {
            id: "we_limit".into(),
            url: "http://127.0.0.1:9/hooks".into(),
            description: None,
            events: None,
            enabled: true,
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            old_secret: None,
            disabled_reason: None,
            created_at: now,
        };
        let create = textcredits::ledger::webhook::EndpointChange::Create(endpoint);
        l.store().change_webhooks(create, None).await.unwrap();
        assert_eq!(l.store().dispatch(now).await.unwrap(), 1);
        let mut event_id = String::new();
        let attempts = |l: &textcredits::ledger::Ledger<S>, id: String| {
            let store = l.store().clone();
            async move { store.attempts("we_limit".into(), id).await.unwrap().expect("the delivery exists") }
        };
        for n in 1..=MAX_ATTEMPTS_KEPT + 2 {
            let at = now + jiff::SignedDuration::from_secs(n);
            let claimed = l.store().claim(at, at + jiff::SignedDuration::from_secs(30), 64).await.unwrap();
            assert_eq!(claimed.len(), 1, "attempt {n}");
            let c = claimed.into_iter().next().unwrap();
            assert_eq!(c.attempts, n - 1);
            event_id = c.event_id.clone();
            let r = Recorded {
                at,
                status: DeliveryStatus::Pending,
                next_attempt_at: Some(at),
                response_status: Some(500),
                response_body: Some(format!("attempt {n}")),
                error: None,
                disable: None,
            };
            l.store().record(vec![(c, r)]).await.unwrap();
            let kept = attempts(&l, event_id.clone()).await;
            assert_eq!(kept.len() as i64, n.min(MAX_ATTEMPTS_KEPT), "after attempt {n}");
            assert_eq!(kept[0].attempt, n, "newest first");
            assert_eq!(kept[0].response_body.as_deref(), Some(format!("attempt {n}").as_str()));
            assert_eq!(kept.last().unwrap().attempt, (n - MAX_ATTEMPTS_KEPT + 1).max(1), "the oldest kept");
        }
        assert!(l.store().attempts("we_limit".into(), "evt_nope".into()).await.unwrap().is_none());
        assert!(l.store().attempts("we_nope".into(), event_id).await.unwrap().is_none());
    }

    conformance!(a_delivery_keeps_its_newest_attempts_up_to_the_limit);
}
