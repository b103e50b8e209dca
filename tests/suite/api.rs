//! The platform engineer's API (issue 12), through the real server on both
//! stores: single objects and lists, a capture that is a debit, and the
//! HTTP conventions (`Location`, `WWW-Authenticate`, `id` and
//! `account_id` on every object, null for what is absent, unknown query
//! parameters refused).

use serde_json::{Value, json};

use crate::util::{ADMIN, Db, Server, created, open_account, snapshot};

/// The object's keys in the order the server wrote them.
fn keys(v: &Value) -> Vec<String> {
    v.as_object().expect("an object").keys().cloned().collect()
}

/// `id` first, then `account_id` naming `account`.
fn assert_object(v: &Value, account: &str) {
    let k = keys(v);
    assert_eq!(k.first().map(String::as_str), Some("id"), "id first: {v}");
    assert_eq!(k.get(1).map(String::as_str), Some("account_id"), "account_id second: {v}");
    assert_eq!(v["account_id"], account, "{v}");
}

fn ids(page: &Value) -> Vec<String> {
    page["data"].as_array().expect("a page").iter().map(|d| d["id"].as_str().unwrap().to_string()).collect()
}

/// A capture is a debit: it has `debit_id` on the hold and `hold_id` on the
/// debit, shows in the debits list and by id, and its undelivered messages
/// are refunded like those of any debit. A capture of 0 creates no debit.
async fn a_capture_is_a_debit_that_refunds(db: Db) {
    let s = Server::start(&db, &["--test-clock", "--now", "2026-11-10T12:00:00Z"]);
    open_account(&s, "cafe").await;
    let a = "/v1/accounts/cafe";
    let h = created(
        s.post(&format!("{a}/holds"), ADMIN, Some("h1"), json!({"credits": 300, "reference": "camp-7"}))
            .await,
        "hold",
    );
    let hid = h["id"].as_str().unwrap();
    assert_eq!(h["debit_id"], Value::Null, "not captured yet: {h}");
    let c = s.post(&format!("{a}/holds/{hid}/capture"), ADMIN, Some("c1"), json!({"credits": 250})).await;
    assert_eq!(c.status, 200, "{c:?}");
    let did = c.body["debit_id"].as_str().expect("the capture's debit").to_string();
    let d = s.get(&format!("{a}/debits/{did}"), ADMIN).await;
    assert_eq!(d.status, 200, "{d:?}");
    assert_object(&d.body, "cafe");
    assert_eq!(
        (
            &d.body["credits"],
            &d.body["hold_id"],
            &d.body["reference"],
            &d.body["from_free"],
            &d.body["balance_after"]
        ),
        (&json!(250), &json!(hid), &json!("camp-7"), &json!(250), &json!(750)),
        "{d:?}"
    );
    // 40 messages were not delivered: refunded from the capture.
    let r = s.post(&format!("{a}/debits/{did}/refund"), ADMIN, Some("r1"), json!({"credits": 40})).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_object(&r.body, "cafe");
    assert_eq!((&r.body["debit_id"], &r.body["balance_after"]), (&json!(did), &json!(790)), "{r:?}");
    assert_eq!(r.header("location"), Some(format!("{a}/debits/{did}").as_str()));
    let d = s.get(&format!("{a}/debits/{did}"), ADMIN).await;
    assert_eq!(d.body["refunded_credits"], 40, "{d:?}");
    assert_eq!(d.body["balance_after"], 750, "balance_after is as of the debit: {d:?}");
    // More than what is left of it: refused, nothing changed.
    let before = snapshot(&s, "cafe").await;
    let over = s.post(&format!("{a}/debits/{did}/refund"), ADMIN, Some("r2"), json!({"credits": 211})).await;
    over.assert_problem(422, "invalid_request");
    assert_eq!(snapshot(&s, "cafe").await, before);
    // A capture of nothing spends nothing and makes no debit.
    let h0 = created(s.post(&format!("{a}/holds"), ADMIN, Some("h2"), json!({"credits": 10})).await, "hold");
    let h0id = h0["id"].as_str().unwrap();
    let c0 = s.post(&format!("{a}/holds/{h0id}/capture"), ADMIN, None, json!({"credits": 0})).await;
    assert_eq!(
        (c0.status, &c0.body["debit_id"], &c0.body["status"]),
        (200, &Value::Null, &json!("captured")),
        "{c0:?}"
    );
    // A plain debit a second later, then the list: newest first, captures
    // included.
    let t = json!({"now": "2026-11-10T12:00:01Z"});
    assert_eq!(s.call("PUT", "/v1/test-clock", Some(ADMIN), None, Some(t)).await.status, 200);
    let plain =
        created(s.post(&format!("{a}/debits"), ADMIN, Some("d1"), json!({"credits": 5})).await, "debit");
    assert_object(&plain, "cafe");
    assert_eq!(plain["hold_id"], Value::Null, "{plain}");
    assert_eq!(plain["description"], Value::Null, "absent fields are null, not missing: {plain}");
    let list = s.get(&format!("{a}/debits"), ADMIN).await;
    assert_eq!(list.status, 200, "{list:?}");
    assert_eq!(ids(&list.body), vec![plain["id"].as_str().unwrap().to_string(), did.clone()], "{list:?}");
    // The account token of the account reads them; another's 404s.
    db.assert_audit();
    // Restarted, the capture is still a debit.
    drop(s);
    let s = Server::start(&db, &["--test-clock", "--now", "2026-11-11T12:00:00Z"]);
    let d = s.get(&format!("{a}/debits/{did}"), ADMIN).await;
    assert_eq!((d.status, &d.body["hold_id"]), (200, &json!(hid)), "{d:?}");
    let cli = db.json(&["show-debit", "cafe", &did]);
    assert_eq!(cli["hold_id"], hid, "{cli}");
}

/// `GET .../debits?reference` and `GET .../holds?status`, paginated, with
/// bad values and unknown parameters refused (400) and other accounts'
/// objects answering 404.
async fn debits_and_holds_are_listed_and_filtered(db: Db) {
    let s = Server::start(&db, &["--test-clock", "--now", "2026-11-10T12:00:00Z"]);
    open_account(&s, "cafe").await;
    open_account(&s, "other").await;
    let a = "/v1/accounts/cafe";
    let mut campaign = Vec::new();
    for i in 0..5 {
        let reference = if i % 2 == 0 { "camp-a" } else { "camp-b" };
        let d = created(
            s.post(
                &format!("{a}/debits"),
                ADMIN,
                Some(&format!("d{i}")),
                json!({"credits": 1, "reference": reference}),
            )
            .await,
            "debit",
        );
        if reference == "camp-a" {
            campaign.push(d["id"].as_str().unwrap().to_string());
        }
        let t = format!("2026-11-10T12:00:0{}Z", i + 1);
        assert_eq!(
            s.call("PUT", "/v1/test-clock", Some(ADMIN), None, Some(json!({"now": t}))).await.status,
            200
        );
    }
    campaign.reverse();
    // Two pages of camp-a, newest first.
    let p1 = s.get(&format!("{a}/debits?reference=camp-a&limit=2"), ADMIN).await;
    assert_eq!(p1.status, 200, "{p1:?}");
    let cursor = p1.body["next_cursor"].as_str().expect("a second page").to_string();
    let p2 = s.get(&format!("{a}/debits?reference=camp-a&limit=2&cursor={cursor}"), ADMIN).await;
    let mut seen = ids(&p1.body);
    seen.extend(ids(&p2.body));
    assert_eq!(seen, campaign, "{p1:?} {p2:?}");
    assert_eq!(p2.body["next_cursor"], Value::Null);
    assert!(ids(&s.get(&format!("{a}/debits?reference=nope"), ADMIN).await.body).is_empty());
    // Holds by status.
    let held = created(s.post(&format!("{a}/holds"), ADMIN, Some("h1"), json!({"credits": 3})).await, "hold");
    let gone = created(s.post(&format!("{a}/holds"), ADMIN, Some("h2"), json!({"credits": 4})).await, "hold");
    let gid = gone["id"].as_str().unwrap();
    assert_eq!(s.post(&format!("{a}/holds/{gid}/release"), ADMIN, None, json!({})).await.status, 200);
    let only = |status: &str| {
        let s = &s;
        let path = format!("{a}/holds?status={status}");
        async move {
            let page = s.get(&path, ADMIN).await;
            assert_eq!(page.status, 200, "{page:?}");
            for h in page.body["data"].as_array().unwrap() {
                assert_object(h, "cafe");
            }
            ids(&page.body)
        }
    };
    assert_eq!(only("held").await, vec![held["id"].as_str().unwrap().to_string()]);
    assert_eq!(only("released").await, vec![gid.to_string()]);
    assert!(only("expired").await.is_empty());
    assert_eq!(ids(&s.get(&format!("{a}/holds"), ADMIN).await.body).len(), 2);
    // A hold whose TTL runs out is expired from that instant in the list
    // too, before any write touches the account.
    let short = created(
        s.post(&format!("{a}/holds"), ADMIN, Some("h3"), json!({"credits": 2, "ttl_seconds": 1})).await,
        "hold",
    );
    let t = json!({"now": "2026-11-10T12:00:09Z"});
    assert_eq!(s.call("PUT", "/v1/test-clock", Some(ADMIN), None, Some(t)).await.status, 200);
    let sid = short["id"].as_str().unwrap().to_string();
    assert_eq!(only("expired").await, vec![sid.clone()]);
    assert!(!only("held").await.contains(&sid));
    let all = s.get(&format!("{a}/holds"), ADMIN).await.body;
    let listed = all["data"].as_array().unwrap().iter().find(|h| h["id"] == sid.as_str()).unwrap();
    assert_eq!(listed["status"], "expired", "{all}");
    assert_eq!(s.get(&format!("{a}/holds/{sid}"), ADMIN).await.body["status"], "expired");
    // Bad input: 400 problems, nothing changed.
    let before = snapshot(&s, "cafe").await;
    for bad in [
        format!("{a}/holds?status=frozen"),
        format!("{a}/holds?state=held"),
        format!("{a}/debits?reference="),
        format!("{a}/debits?reference=has%20space"),
        format!("{a}/debits?limit=0"),
        format!("{a}/debits?limit=501"),
        format!("{a}/debits?month=2026-11"),
        format!("{a}/ledger?month=2026-11"),
        format!("{a}/purchases?colour=blue"),
        "/v1/accounts?month=2026-11".to_string(),
        format!("{a}/usage?from=2026-11&extra=1"),
    ] {
        s.get(&bad, ADMIN).await.assert_problem(400, "invalid_request");
    }
    s.get(&format!("{a}/debits?cursor=garbage"), ADMIN).await.assert_problem(400, "invalid_request");
    // Routes that take no query parameters refuse any: a debit sent with
    // `?dry_run=1` is not made.
    let dry = s.post(&format!("{a}/debits?dry_run=1"), ADMIN, Some("dry"), json!({"credits": 1})).await;
    dry.assert_problem(400, "invalid_request");
    for path in
        [format!("{a}/balance?x=1"), format!("{a}?expand=all"), format!("{a}/debits/{}?v=2", campaign[0])]
    {
        s.get(&path, ADMIN).await.assert_problem(400, "invalid_request");
    }
    assert_eq!(snapshot(&s, "cafe").await, before);
    // Another account's debit, or one that does not exist: 404.
    let did = &campaign[0];
    s.get(&format!("/v1/accounts/other/debits/{did}"), ADMIN).await.assert_problem(404, "not_found");
    s.get(&format!("{a}/debits/deb_nothing"), ADMIN).await.assert_problem(404, "not_found");
    s.get("/v1/accounts/ghost/debits", ADMIN).await.assert_problem(404, "not_found");
    s.get("/v1/accounts/ghost/holds", ADMIN).await.assert_problem(404, "not_found");
    // The CLI lists them too, and refuses a bad status with one line.
    let run = db.json(&["debits", "cafe", "--reference", "camp-a"]);
    assert_eq!(ids(&run), campaign, "{run}");
    let bad = db.run(&["holds", "cafe", "--status", "frozen"]);
    assert_eq!((bad.code, bad.stderr.lines().count()), (2, 1), "{bad:?}");
}

/// Every 201 says where its object is (`Location`); a 401 says how to
/// authenticate (`WWW-Authenticate: Bearer`); every object's `id` comes
/// first with its `account_id`, and absent values are null.
async fn created_objects_have_a_location_and_401s_a_challenge(db: Db) {
    let s = Server::start(&db, &["--test-clock", "--now", "2026-11-10T12:00:00Z"]);
    let acct = s.post("/v1/accounts", ADMIN, None, json!({"id": "cafe", "name": "Cafe"})).await;
    assert_eq!((acct.status, acct.header("location")), (201, Some("/v1/accounts/cafe")), "{acct:?}");
    let again = s.post("/v1/accounts", ADMIN, None, json!({"id": "cafe", "name": "Cafe"})).await;
    assert_eq!((again.status, again.header("location")), (200, None), "{again:?}");
    let a = "/v1/accounts/cafe";
    let cases: Vec<(String, Option<&str>, Value, &str)> = vec![
        (format!("{a}/purchases"), Some("p1"), json!({"credits": 100}), "purchases"),
        (format!("{a}/debits"), Some("d1"), json!({"credits": 10}), "debits"),
        (format!("{a}/holds"), Some("h1"), json!({"credits": 10}), "holds"),
    ];
    let mut made = Vec::new();
    for (path, key, body, kind) in cases {
        let r = s.post(&path, ADMIN, key, body.clone()).await;
        assert_eq!(r.status, 201, "{r:?}");
        assert_object(&r.body, "cafe");
        let id = r.body["id"].as_str().unwrap();
        let location = format!("{a}/{kind}/{id}");
        assert_eq!(r.header("location"), Some(location.as_str()), "{r:?}");
        // The Location reads the same object back.
        let back = s.get(&location, ADMIN).await;
        assert_eq!((back.status, &back.body["id"]), (200, &json!(id)), "{back:?}");
        // A replay says the same, with the same Location.
        let replay = s.post(&path, ADMIN, key, body).await;
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
        assert_eq!(replay.header("location"), Some(location.as_str()));
        made.push(r.body);
    }
    let pid = made[0]["id"].as_str().unwrap();
    assert_eq!(made[0]["statement_id"], Value::Null, "unbilled: null, not missing: {}", made[0]);
    let refund =
        s.post(&format!("{a}/purchases/{pid}/refund"), ADMIN, Some("pr"), json!({"credits": 10})).await;
    assert_eq!(refund.status, 201, "{refund:?}");
    assert_object(&refund.body, "cafe");
    assert_eq!(refund.header("location"), Some(format!("{a}/purchases/{pid}").as_str()));
    let grant =
        s.post(&format!("{a}/grants"), ADMIN, Some("g"), json!({"credits": 5, "reason": "sorry"})).await;
    assert_eq!(grant.status, 201, "{grant:?}");
    assert_object(&grant.body, "cafe");
    assert_eq!(grant.header("location"), Some(format!("{a}/ledger").as_str()));
    let token = s.post(&format!("{a}/tokens"), ADMIN, None, json!({"label": "pos"})).await;
    let tid = token.body["id"].as_str().unwrap();
    assert_eq!(token.header("location"), Some(format!("{a}/tokens/{tid}").as_str()), "{token:?}");
    // Entries and lists carry the account too; absent values are null.
    let entries = s.get(&format!("{a}/ledger"), ADMIN).await;
    for e in entries.body["data"].as_array().unwrap() {
        assert_object(e, "cafe");
        assert!(e.as_object().unwrap().contains_key("reference"), "{e}");
    }
    let list = s.get("/v1/accounts", ADMIN).await;
    assert_eq!(list.body["data"][0]["balance"], Value::Null, "in lists, balance is null: {list:?}");
    // 401: with the challenge, whatever was wrong.
    for token in [None, Some("wrong-token-0123456789"), Some("tc_cafe_nope")] {
        let r = s.call("GET", a, token, None, None).await;
        r.assert_problem(401, "unauthorized");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{r:?}");
    }
    // Two credentials on one request: neither acts.
    let two = s
        .client
        .get(format!("{}{a}", s.base))
        .header("Authorization", format!("Bearer {ADMIN}"))
        .header("Authorization", "Bearer someone-else-0123456789")
        .send()
        .await
        .unwrap();
    crate::util::Answer::from(two).await.assert_problem(401, "unauthorized");
}

/// A database from before captures were debits: the upgrade makes each
/// capture a debit `deb_<hold id>` from its capture entries and gives each
/// debit its `balance_after`, so the old campaign's undelivered messages
/// can be refunded; the audit passes before and after.
async fn old_captures_become_debits_on_upgrade(db: Db) {
    let s = Server::start(&db, &["--test-clock", "--now", "2026-11-10T12:00:00Z"]);
    open_account(&s, "cafe").await;
    let a = "/v1/accounts/cafe";
    created(s.post(&format!("{a}/purchases"), ADMIN, Some("p"), json!({"credits": 500})).await, "purchase");
    created(
        s.post(&format!("{a}/grants"), ADMIN, Some("g"), json!({"credits": 20, "reason": "hi"})).await,
        "grant",
    );
    let d = created(s.post(&format!("{a}/debits"), ADMIN, Some("d"), json!({"credits": 30})).await, "debit");
    // 1,200 held across the free, grant and paid lots; 1,100 sent.
    let h = created(
        s.post(&format!("{a}/holds"), ADMIN, Some("h"), json!({"credits": 1200, "reference": "camp"})).await,
        "hold",
    );
    let hid = h["id"].as_str().unwrap().to_string();
    let c = s.post(&format!("{a}/holds/{hid}/capture"), ADMIN, None, json!({"credits": 1100})).await;
    assert_eq!(c.status, 200, "{c:?}");
    let new_style = s.get(&format!("{a}/debits/{}", c.body["debit_id"].as_str().unwrap()), ADMIN).await.body;
    drop(s);
    let undo = if db.pg_schema.is_some() {
        format!("{} DELETE FROM schema_migrations WHERE version >= 7;", crate::util::UNDO_CAPTURE_DEBITS)
    } else {
        format!("{} PRAGMA user_version = 7;", crate::util::UNDO_CAPTURE_DEBITS)
    };
    crate::util::raw_sql(&db, &undo);
    let s = Server::start(&db, &["--test-clock", "--now", "2026-11-10T13:00:00Z"]);
    let did = format!("deb_{hid}");
    assert_eq!(s.get(&format!("{a}/holds/{hid}"), ADMIN).await.body["debit_id"], did.as_str());
    let old = s.get(&format!("{a}/debits/{did}"), ADMIN).await;
    assert_eq!(old.status, 200, "{old:?}");
    for field in [
        "credits",
        "from_free",
        "from_grants",
        "from_paid",
        "reference",
        "hold_id",
        "balance_after",
        "created_at",
    ] {
        assert_eq!(old.body[field], new_style[field], "{field}: {old:?} vs {new_style}");
    }
    let plain = s.get(&format!("{a}/debits/{}", d["id"].as_str().unwrap()), ADMIN).await;
    assert_eq!(plain.body["balance_after"], d["balance_after"], "{plain:?}");
    db.assert_audit();
    let r = s.post(&format!("{a}/debits/{did}/refund"), ADMIN, Some("r"), json!({"credits": 600})).await;
    assert_eq!(r.status, 201, "{r:?}");
    // 1,520 - 30 - 1,100 + 600; back to the longest-lived lots first:
    // the paid (110), the grant (20), then the free lot (470).
    let b = s.get(&format!("{a}/balance"), ADMIN).await.body;
    assert_eq!(
        (&b["available"], &b["paid"]["remaining"], &b["grants"]["remaining"], &b["free"]["remaining"]),
        (&json!(990), &json!(500), &json!(20), &json!(470)),
        "{b}"
    );
    db.assert_audit();
}

/// `--cors-origin`: a browser application on that origin may call the API
/// (preflight answered, the answer's headers readable); other origins, and
/// every origin without the flag, get no CORS headers; bad origins stop the
/// server at start with one line.
#[tokio::test]
async fn cors_origins_are_let_in_and_no_others() {
    let db = Db::new();
    let s = Server::start(
        &db,
        &["--cors-origin", "https://app.example.com", "--cors-origin", "http://localhost:5173"],
    );
    let preflight = |origin: &'static str| {
        let s = &s;
        async move {
            let r = s
                .client
                .request(reqwest::Method::OPTIONS, format!("{}/v1/accounts/cafe/debits", s.base))
                .header("Origin", origin)
                .header("Access-Control-Request-Method", "POST")
                .header("Access-Control-Request-Headers", "authorization,content-type,idempotency-key")
                .send()
                .await
                .unwrap();
            crate::util::Answer::from(r).await
        }
    };
    let ok = preflight("https://app.example.com").await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.header("access-control-allow-origin"), Some("https://app.example.com"), "{ok:?}");
    let methods = ok.header("access-control-allow-methods").unwrap_or_default().to_ascii_uppercase();
    assert!(methods.contains("POST") && methods.contains("PATCH"), "{ok:?}");
    let headers = ok.header("access-control-allow-headers").unwrap_or_default().to_ascii_lowercase();
    for h in ["authorization", "content-type", "idempotency-key"] {
        assert!(headers.contains(h), "{h}: {ok:?}");
    }
    assert_eq!(ok.header("access-control-allow-credentials"), None, "never with cookies");
    let other = preflight("https://evil.example.com").await;
    assert_eq!(other.header("access-control-allow-origin"), None, "{other:?}");
    // The real request: allowed, with Location and the replay header readable.
    let r = s
        .client
        .post(format!("{}/v1/accounts", s.base))
        .bearer_auth(ADMIN)
        .header("Origin", "http://localhost:5173")
        .json(&json!({"id": "cafe", "name": "Cafe"}))
        .send()
        .await
        .unwrap();
    let r = crate::util::Answer::from(r).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header("access-control-allow-origin"), Some("http://localhost:5173"));
    let exposed = r.header("access-control-expose-headers").unwrap_or_default().to_ascii_lowercase();
    assert!(exposed.contains("location") && exposed.contains("idempotent-replayed"), "{r:?}");
    drop(s);
    // Off by default.
    let plain = Server::start(&db, &[]);
    let r = plain
        .client
        .get(format!("{}/healthz", plain.base))
        .header("Origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers().get("access-control-allow-origin"), None);
    drop(plain);
    // At most 100 origins: the 100th is let in, a 101st stops the start.
    let origins: Vec<String> = (0..101).map(|i| format!("https://app{i}.example.com")).collect();
    let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--admin-token", ADMIN];
    for o in &origins[..100] {
        args.extend(["--cors-origin", o.as_str()]);
    }
    let full = Server::start(&db, &args[5..]);
    let r = full
        .client
        .get(format!("{}/healthz", full.base))
        .header("Origin", "https://app99.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers().get("access-control-allow-origin").unwrap(), "https://app99.example.com");
    drop(full);
    args.extend(["--cors-origin", origins[100].as_str()]);
    let run = db.run(&args);
    assert_eq!((run.code, run.stderr.lines().count()), (2, 1), "{run:?}");
    assert!(run.stderr.contains("at most 100"), "{run:?}");
    // The environment takes a comma-separated list.
    let mut env = db.command(&["serve", "--listen", "127.0.0.1:0", "--admin-token", ADMIN]);
    let out = env.env("TEXTCREDITS_CORS_ORIGINS", "https://a.example,not-an-origin").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not-an-origin"), "{out:?}");
    for bad in ["app.example.com", "https://app.example.com/", "*", "https://a.example/path"] {
        let run = db.run(&["serve", "--listen", "127.0.0.1:0", "--admin-token", ADMIN, "--cors-origin", bad]);
        assert_eq!((run.code, run.stderr.lines().count()), (2, 1), "{bad}: {run:?}");
        assert!(run.stderr.contains("--cors-origin"), "{run:?}");
    }
}

/// Money in the currency's minor units: every charged amount rounded
/// half-up and written with exactly the currency's decimals; a statement's
/// total is the sum of its rounded lines and what `unbilled` said it would
/// be; a refund line says it is one. The server's default currency and
/// price act, and an account in another currency must name its price.
async fn money_is_charged_in_minor_units(db: Db) {
    let s = Server::start(
        &db,
        &[
            "--test-clock",
            "--now",
            "2026-11-10T12:00:00Z",
            "--close-interval-seconds",
            "0",
            "--default-currency",
            "JPY",
            "--default-unit-price",
            "1.5",
        ],
    );
    let make = |body: Value| {
        let s = &s;
        async move { s.post("/v1/accounts", ADMIN, None, body).await }
    };
    // The defaults: JPY at 1.5 yen a credit.
    let jp = make(json!({"id": "tokyo", "name": "Tokyo", "time_zone": "UTC"})).await;
    assert_eq!(
        (jp.status, &jp.body["currency"], &jp.body["unit_price"]),
        (201, &json!("JPY"), &json!("1.50")),
        "{jp:?}"
    );
    // USD without a price: refused, nothing created.
    let refused = make(json!({"id": "nyc", "name": "NYC", "currency": "USD"})).await;
    refused.assert_problem(422, "invalid_request");
    assert!(refused.body["detail"].as_str().unwrap().contains("unit_price"), "{refused:?}");
    s.get("/v1/accounts/nyc", ADMIN).await.assert_problem(404, "not_found");
    let us = make(
        json!({"id": "nyc", "name": "NYC", "currency": "USD", "unit_price": "0.0075", "time_zone": "UTC"}),
    )
    .await;
    assert_eq!(us.status, 201, "{us:?}");
    let bh = make(json!({"id": "manama", "name": "Manama", "currency": "BHD", "unit_price": "0.0125", "time_zone": "UTC"})).await;
    assert_eq!(bh.status, 201, "{bh:?}");
    let buy = |account: &'static str, key: &'static str, credits: i64| {
        let s = &s;
        async move {
            let p = s
                .post(
                    &format!("/v1/accounts/{account}/purchases"),
                    ADMIN,
                    Some(key),
                    json!({"credits": credits}),
                )
                .await;
            assert_eq!(p.status, 201, "{p:?}");
            p.body
        }
    };
    // 4,001 x 1.5 = 6,001.5 yen -> 6002, no decimals.
    assert_eq!(buy("tokyo", "t1", 4001).await["amount"], "6002");
    // 5 x 0.0075 = 0.0375 -> 0.04; 3 x 0.0075 = 0.0225 -> 0.02; 2 -> 0.015 -> 0.02.
    let p5 = buy("nyc", "n1", 5).await;
    assert_eq!(p5["amount"], "0.04");
    assert_eq!(buy("nyc", "n2", 3).await["amount"], "0.02");
    assert_eq!(buy("nyc", "n3", 2).await["amount"], "0.02");
    // 1 x 0.0125 BHD = 0.0125 -> 0.013, three decimals.
    assert_eq!(buy("manama", "b1", 1).await["amount"], "0.013");
    // Before billing, a refund gives back what the purchase's line drops:
    // 2 x 0.005 = 0.01; 1 x 0.005 = 0.005 -> 0.01 still, so nothing.
    let half = make(
        json!({"id": "half", "name": "Half", "currency": "USD", "unit_price": "0.005", "time_zone": "UTC"}),
    )
    .await;
    assert_eq!(half.status, 201, "{half:?}");
    let two = buy("half", "h1", 2).await;
    assert_eq!(two["amount"], "0.01");
    let pid2 = two["id"].as_str().unwrap();
    let r = s
        .post(&format!("/v1/accounts/half/purchases/{pid2}/refund"), ADMIN, Some("hr"), json!({"credits": 1}))
        .await;
    assert_eq!(
        (r.status, &r.body["amount"], &r.body["billing"]),
        (201, &json!("0.00"), &json!("before_billing")),
        "{r:?}"
    );
    let b = s.get("/v1/accounts/half/balance", ADMIN).await.body;
    assert_eq!(b["unbilled"]["amount"], "0.01", "{b}");
    let unbilled = s.get("/v1/accounts/nyc/balance", ADMIN).await.body["unbilled"].clone();
    assert_eq!(
        (&unbilled["credits"], &unbilled["amount"]),
        (&json!(10), &json!("0.08")),
        "the sum of the rounded purchases: {unbilled}"
    );
    let q = s.post("/v1/accounts/tokyo/quote", ADMIN, None, json!({"credits": 5001})).await;
    assert_eq!((&q.body["shortfall"], &q.body["shortfall_amount"]), (&json!(0), &json!("0")), "{q:?}");
    let q = s.post("/v1/accounts/tokyo/quote", ADMIN, None, json!({"credits": 5004})).await;
    assert_eq!(
        (&q.body["shortfall"], &q.body["shortfall_amount"]),
        (&json!(3), &json!("5")),
        "4.5 -> 5: {q:?}"
    );
    // Close November: lines rounded, the total their sum (not 0.075 -> 0.08 of the exact sum).
    let t = json!({"now": "2026-12-01T00:00:01Z"});
    assert_eq!(s.call("PUT", "/v1/test-clock", Some(ADMIN), None, Some(t)).await.status, 200);
    let close = s.post("/v1/billing/close", ADMIN, None, json!({})).await;
    assert_eq!(close.status, 200, "{close:?}");
    let st = s.get("/v1/accounts/nyc/statements", ADMIN).await.body["data"][0].clone();
    let amounts: Vec<&str> =
        st["lines"].as_array().unwrap().iter().map(|l| l["amount"].as_str().unwrap()).collect();
    let mut sorted = amounts.clone();
    sorted.sort();
    assert_eq!(sorted, ["0.02", "0.02", "0.04"], "{st}");
    assert_eq!(st["total"], unbilled["amount"], "what unbilled said: {st}");
    for l in st["lines"].as_array().unwrap() {
        assert_eq!((&l["kind"], &l["refund_id"]), (&json!("purchase"), &Value::Null), "{l}");
    }
    let jst = s.get("/v1/accounts/tokyo/statements", ADMIN).await.body["data"][0].clone();
    assert_eq!((&jst["total"], &jst["lines"][0]["amount"]), (&json!("6002"), &json!("6002")), "{jst}");
    let bst = s.get("/v1/accounts/manama/statements", ADMIN).await.body["data"][0].clone();
    assert_eq!(bst["total"], "0.013", "{bst}");
    // A refund of a billed purchase: a line that says so, on December's statement.
    let pid = p5["id"].as_str().unwrap();
    let r = s
        .post(&format!("/v1/accounts/nyc/purchases/{pid}/refund"), ADMIN, Some("nr"), json!({"credits": 5}))
        .await;
    assert_eq!((r.status, &r.body["amount"]), (201, &json!("0.04")), "{r:?}");
    let t = json!({"now": "2027-01-01T00:00:01Z"});
    assert_eq!(s.call("PUT", "/v1/test-clock", Some(ADMIN), None, Some(t)).await.status, 200);
    assert_eq!(s.post("/v1/billing/close", ADMIN, None, json!({})).await.status, 200);
    let dec = s.get("/v1/accounts/nyc/statements?month=2026-12", ADMIN).await.body["data"][0].clone();
    let line = &dec["lines"][0];
    assert_eq!(
        (
            &line["kind"],
            &line["purchase_id"],
            &line["refund_id"],
            &line["credits"],
            &line["amount"],
            &dec["total"]
        ),
        (&json!("refund"), &json!(pid), &r.body["id"], &json!(-5), &json!("-0.04"), &json!("-0.04")),
        "{dec}"
    );
    db.assert_audit();
    // The CLI shows yen without decimals.
    let run = db.run(&["--now", "2027-01-01T00:00:02Z", "purchases", "tokyo"]);
    assert!(run.stdout.contains("¥6002") || run.stdout.contains("¥6,002"), "{run:?}");
    assert!(!run.stdout.contains("6002.00"), "{run:?}");
}

/// Bad `--default-currency` / `--default-unit-price`: one line, exit 2.
#[test]
fn bad_default_currency_or_price_is_refused() {
    let db = Db::new();
    for args in [
        ["--default-currency", "usd", "account", "list"],
        ["--default-currency", "XYZ", "account", "list"],
        ["--default-unit-price", "-1", "account", "list"],
        ["--default-unit-price", "0.0000001", "account", "list"],
        ["--default-unit-price", "1001", "account", "list"],
    ] {
        let run = db.run(&args);
        assert_eq!((run.code, run.stderr.lines().count()), (2, 1), "{args:?}: {run:?}");
        assert!(run.stderr.contains("--default-"), "{run:?}");
    }
}

/// Rows of a CSV answer: the header, then the records.
fn csv_rows(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let header = r.headers().expect("a header row").iter().map(str::to_string).collect();
    let rows = r.records().map(|rec| rec.expect("RFC 4180").iter().map(str::to_string).collect()).collect();
    (header, rows)
}

/// `format=csv` on the purchase, statement and ledger lists: a header row,
/// RFC 4180 quoting, every item across pages (more than one page of 500
/// here), the same filters as JSON; `textcredits export` writes the same
/// as CSV or one JSON array. Bad formats and parameters are refused.
async fn lists_export_as_csv_across_pages(db: Db) {
    let s = Server::start(
        &db,
        &["--test-clock", "--now", "2026-11-10T12:00:00Z", "--close-interval-seconds", "0"],
    );
    open_account(&s, "cafe").await;
    open_account(&s, "other").await;
    let a = "/v1/accounts/cafe";
    let mut ids = Vec::new();
    for i in 0..520 {
        let p = created(
            s.post(&format!("{a}/purchases"), ADMIN, Some(&format!("p{i}")), json!({"credits": 1 + i % 7}))
                .await,
            "purchase",
        );
        ids.push(p["id"].as_str().unwrap().to_string());
    }
    let d = created(
        s.post(
            &format!("{a}/debits"),
            ADMIN,
            Some("d"),
            json!({"credits": 3, "reference": "a,\"quoted\"ref"}),
        )
        .await,
        "debit",
    );
    // Purchases: every one, newest first, as the JSON pages list them.
    let r = s.get(&format!("{a}/purchases?format=csv"), ADMIN).await;
    assert_eq!(
        (r.status, r.header("content-type")),
        (200, Some("text/csv; charset=utf-8")),
        "{}",
        &r.text[..200.min(r.text.len())]
    );
    assert!(r.header("content-disposition").unwrap().contains("purchases-cafe.csv"));
    let (header, rows) = csv_rows(&r.text);
    assert_eq!(&header[..3], ["id", "account_id", "purchased_at"]);
    let mut json_ids = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = s.get(&format!("{a}/purchases?limit=500{cursor}"), ADMIN).await.body;
        json_ids
            .extend(page["data"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    let csv_ids: Vec<String> = rows.iter().map(|r| r[0].clone()).collect();
    assert_eq!(csv_ids.len(), 520);
    assert_eq!(csv_ids, json_ids);
    // The ledger, quoting a reference with a comma and quotes.
    let l = s.get(&format!("{a}/ledger?format=csv"), ADMIN).await;
    let (header, rows) = csv_rows(&l.text);
    let reference = header.iter().position(|h| h == "reference").unwrap();
    let source = header.iter().position(|h| h == "source").unwrap();
    let debit_row = rows.iter().find(|r| r[source] == d["id"].as_str().unwrap()).expect("the debit's entry");
    assert_eq!(debit_row[reference], "a,\"quoted\"ref");
    assert_eq!(rows.len(), 520 + 1 + 1, "every purchase, the free grant and the debit: {}", rows.len());
    // Statements, after the month closes; a month filter; a cursor.
    let t = json!({"now": "2026-12-01T00:00:01Z"});
    assert_eq!(s.call("PUT", "/v1/test-clock", Some(ADMIN), None, Some(t)).await.status, 200);
    assert_eq!(s.post("/v1/billing/close", ADMIN, None, json!({})).await.status, 200);
    let st = s.get(&format!("{a}/statements?format=csv&month=2026-11"), ADMIN).await;
    let (header, rows) = csv_rows(&st.text);
    assert_eq!(header[0], "id");
    assert_eq!(rows.len(), 520, "a row per line");
    assert!(rows.iter().all(|r| r[0] == "st_2026-11_cafe"));
    assert!(
        csv_rows(&s.get(&format!("{a}/statements?format=csv&month=2026-10"), ADMIN).await.text).1.is_empty()
    );
    let all = s.get("/v1/statements?month=2026-11&format=csv", ADMIN).await;
    assert_eq!(csv_rows(&all.text).1.len(), 520);
    let json_first = s.get(&format!("{a}/purchases?limit=10"), ADMIN).await.body;
    let c = json_first["next_cursor"].as_str().unwrap();
    let rest = csv_rows(&s.get(&format!("{a}/purchases?format=csv&cursor={c}"), ADMIN).await.text).1;
    assert_eq!(rest.len(), 510, "from the cursor on");
    // Bad input: 400/404 problems.
    for bad in [
        format!("{a}/purchases?format=xml"),
        format!("{a}/purchases?format=csv&limit=10"),
        format!("{a}/purchases?format=csv&cursor=nonsense"),
        format!("{a}/debits?format=csv"),
        format!("{a}/ledger?format="),
    ] {
        s.get(&bad, ADMIN).await.assert_problem(400, "invalid_request");
    }
    s.get("/v1/accounts/ghost/purchases?format=csv", ADMIN).await.assert_problem(404, "not_found");
    // An account token exports its own account only.
    let token = s.post(&format!("{a}/tokens"), ADMIN, None, json!({"label": "pos"})).await.body["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(s.get(&format!("{a}/ledger?format=csv"), &token).await.status, 200);
    s.get("/v1/accounts/other/purchases?format=csv", &token).await.assert_problem(404, "not_found");
    // The CLI: CSV the same as the API's; JSON one array.
    let run = db.run(&[
        "--now",
        "2026-12-01T00:00:02Z",
        "export",
        "purchases",
        "--account",
        "cafe",
        "--format",
        "csv",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(csv_rows(&run.stdout).1.iter().map(|r| r[0].clone()).collect::<Vec<_>>(), json_ids);
    let run =
        db.run(&["export", "statements", "--account", "cafe", "--month", "2026-11", "--format", "json"]);
    let v: Value = serde_json::from_str(&run.stdout).expect("one JSON array");
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["lines"].as_array().unwrap().len(), 520);
    for bad in [
        vec!["export", "ledger", "--account", "cafe", "--month", "2026-11"],
        vec!["export", "debits", "--account", "cafe"],
        vec!["export", "purchases", "--account", "cafe", "--format", "xml"],
        vec!["export", "purchases", "--account", "ghost"],
        vec!["export", "purchases", "--account", "cafe", "--month", "2026-13"],
    ] {
        let run = db.run(&bad);
        assert_eq!((run.code, run.stderr.lines().count()), (2, 1), "{bad:?}: {run:?}");
    }
}

on_every_store!(
    #[tokio::test]
    lists_export_as_csv_across_pages,
    #[tokio::test]
    money_is_charged_in_minor_units,
    #[tokio::test]
    old_captures_become_debits_on_upgrade,
    #[tokio::test]
    a_capture_is_a_debit_that_refunds,
    #[tokio::test]
    debits_and_holds_are_listed_and_filtered,
    #[tokio::test]
    created_objects_have_a_location_and_401s_a_challenge,
);
