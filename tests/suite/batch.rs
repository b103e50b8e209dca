//! `POST /v1/batch` (issue 15) through the real server on both stores:
//! each operation answered exactly as its own route answers it (the same
//! body a replay of its key gives there, the same problem), one account's
//! operations in their order, a token's scope, the limits at their edges,
//! and bad batches refused with nothing changed.

use serde_json::{Value, json};

use crate::util::{ADMIN, Answer, Db, Server, open_account, snapshot};

async fn batch(s: &Server, token: &str, operations: Value) -> Answer {
    s.post("/v1/batch", token, None, json!({ "operations": operations })).await
}

fn results(a: &Answer) -> Vec<Value> {
    assert_eq!(a.status, 200, "{a:?}");
    a.body["results"].as_array().expect("results").clone()
}

async fn token(s: &Server, account: &str) -> String {
    let t = s.post(&format!("/v1/accounts/{account}/tokens"), ADMIN, None, json!({"label": "pos"})).await;
    assert_eq!(t.status, 201, "{t:?}");
    t.body["token"].as_str().unwrap().to_string()
}

/// Every kind of operation, answered as its route answers it: a keyed
/// operation's body is what a replay of its key answers on its own route;
/// a refused one's problem is what its route answers to the same request.
async fn each_operation_is_answered_as_its_own_route_answers_it(db: Db) {
    let s = Server::start(&db, &[]);
    open_account(&s, "cafe").await;
    open_account(&s, "bakery").await;
    let first = batch(
        &s,
        ADMIN,
        json!([
            {"account_id": "cafe", "op": "purchase", "idempotency_key": "p1", "credits": 500},
            {"account_id": "cafe", "op": "debit", "idempotency_key": "d1", "credits": 10, "reference": "camp-1"},
            {"account_id": "bakery", "op": "hold", "idempotency_key": "h1", "credits": 20},
            {"account_id": "bakery", "op": "debit", "credits": 1},
            {"account_id": "cafe", "op": "debit", "idempotency_key": "d2", "credits": 100000},
            {"account_id": "nobody", "op": "debit", "idempotency_key": "d3", "credits": 1},
            {"account_id": "cafe", "op": "debit", "idempotency_key": "d4", "credits": 1, "extra": true},
            {"account_id": "cafe/../bakery", "op": "debit", "idempotency_key": "d5", "credits": 1},
            {"account_id": "cafe", "op": "debit", "idempotency_key": "d6", "credits": "1"},
            {"account_id": "cafe", "op": "capture", "credits": 1},
            {"account_id": "cafe", "op": "debit", "idempotency_key": "d7", "credits": 1, "hold_id": "hold_x"},
        ]),
    )
    .await;
    let r = results(&first);
    let statuses: Vec<i64> = r.iter().map(|x| x["status"].as_i64().unwrap()).collect();
    assert_eq!(statuses, [201, 201, 201, 400, 402, 404, 422, 404, 422, 400, 422], "{r:#?}");
    // The keyed ones: the route's replay of the key is the batch's body.
    for (i, path, key, body) in [
        (0, "/v1/accounts/cafe/purchases", "p1", json!({"credits": 500})),
        (1, "/v1/accounts/cafe/debits", "d1", json!({"credits": 10, "reference": "camp-1"})),
        (2, "/v1/accounts/bakery/holds", "h1", json!({"credits": 20})),
    ] {
        let again = s.post(path, ADMIN, Some(key), body).await;
        assert_eq!(again.header("idempotent-replayed"), Some("true"), "{again:?}");
        assert_eq!(again.body, r[i]["body"], "operation {i}");
        assert_eq!(i64::from(again.status), statuses[i]);
    }
    // The refused ones: the route answers the same request the same way.
    let same = [
        (3, "/v1/accounts/bakery/debits", None, json!({"credits": 1})),
        (4, "/v1/accounts/cafe/debits", Some("d2"), json!({"credits": 100000})),
        (5, "/v1/accounts/nobody/debits", Some("d3"), json!({"credits": 1})),
        (6, "/v1/accounts/cafe/debits", Some("d4"), json!({"credits": 1, "extra": true})),
        (7, "/v1/accounts/cafe%2F..%2Fbakery/debits", Some("d5"), json!({"credits": 1})),
        (8, "/v1/accounts/cafe/debits", Some("d6"), json!({"credits": "1"})),
        (10, "/v1/accounts/cafe/debits", Some("d7"), json!({"credits": 1, "hold_id": "hold_x"})),
    ];
    for (i, path, key, body) in same {
        let direct = s.post(path, ADMIN, key, body).await;
        assert_eq!(i64::from(direct.status), statuses[i], "{i}: {direct:?}");
        assert_eq!(direct.body, r[i]["body"], "operation {i}");
    }
    assert_eq!(r[4]["body"]["code"], "insufficient_credits");
    assert!(r[9]["body"]["detail"].as_str().unwrap().contains("hold_id"), "{r:#?}");
    // Capture and release go to the hold's own routes.
    let hid = r[2]["body"]["id"].as_str().unwrap();
    let second = batch(
        &s,
        ADMIN,
        json!([
            {"account_id": "bakery", "op": "capture", "hold_id": hid, "credits": 5},
            {"account_id": "bakery", "op": "release", "hold_id": hid},
            {"account_id": "bakery", "op": "release", "hold_id": "hold_nope"},
        ]),
    )
    .await;
    let r2 = results(&second);
    assert_eq!(r2[0]["status"], 200, "{r2:#?}");
    assert_eq!(r2[0]["body"]["captured"], 5);
    assert_eq!(r2[0]["body"]["status"], "captured");
    assert_eq!(r2[1]["status"], 409, "a captured hold is not active: {r2:#?}");
    assert_eq!(
        r2[1]["body"],
        s.post(&format!("/v1/accounts/bakery/holds/{hid}/release"), ADMIN, None, json!({})).await.body
    );
    assert_eq!(r2[2]["status"], 404, "{r2:#?}");
    let b = s.get("/v1/accounts/cafe/balance", ADMIN).await;
    assert_eq!(b.body["available"], 1000 + 500 - 10);
    drop(s);
    db.assert_audit();
}

/// One account's operations run in their order (the debit that needs the
/// purchase comes after it); an account token reaches only its account.
async fn an_accounts_operations_run_in_order_and_tokens_keep_their_scope(db: Db) {
    let s = Server::start(&db, &[]);
    open_account(&s, "cafe").await;
    open_account(&s, "bakery").await;
    let ops: Vec<Value> = (0..5)
        .flat_map(|i| {
            [
                json!({"account_id": "cafe", "op": "debit", "idempotency_key": format!("a{i}"), "credits": 1500}),
                json!({"account_id": "cafe", "op": "purchase", "idempotency_key": format!("p{i}"), "credits": 1500}),
                json!({"account_id": "cafe", "op": "debit", "idempotency_key": format!("b{i}"), "credits": 1500}),
                json!({"account_id": "bakery", "op": "debit", "idempotency_key": format!("c{i}"), "credits": 100}),
            ]
        })
        .collect();
    let r = results(&batch(&s, ADMIN, Value::Array(ops)).await);
    let statuses: Vec<i64> = r.iter().map(|x| x["status"].as_i64().unwrap()).collect();
    // cafe has 1,000 at the start of each round: its first debit of 1,500
    // is short, the purchase of 1,500 then pays for the debit after it.
    assert_eq!(statuses, [402, 201, 201, 201].repeat(5), "{r:#?}");
    assert_eq!(s.get("/v1/accounts/cafe/balance", ADMIN).await.body["available"], 1000);
    assert_eq!(s.get("/v1/accounts/bakery/balance", ADMIN).await.body["available"], 500);
    // An account token: its own account yes, the other as on the route.
    let t = token(&s, "cafe").await;
    let r = results(
        &batch(
            &s,
            &t,
            json!([
                {"account_id": "cafe", "op": "debit", "idempotency_key": "t1", "credits": 1},
                {"account_id": "bakery", "op": "debit", "idempotency_key": "t2", "credits": 1},
            ]),
        )
        .await,
    );
    assert_eq!(r[0]["status"], 201, "{r:#?}");
    let direct = s.post("/v1/accounts/bakery/debits", &t, Some("t2"), json!({"credits": 1})).await;
    assert_eq!(r[1]["status"], i64::from(direct.status), "{r:#?}");
    assert_eq!(r[1]["body"], direct.body);
    assert_eq!(s.get("/v1/accounts/bakery/balance", ADMIN).await.body["available"], 500);
    drop(s);
    db.assert_audit();
}

/// 1,000 operations are one batch; 1,001 are refused whole. Batches that
/// are not `{"operations": [...]}` are refused, and change nothing.
async fn the_limits_hold_at_their_edges_and_bad_batches_change_nothing(db: Db) {
    let s = Server::start(&db, &[]);
    let accounts: Vec<String> = (0..10).map(|i| format!("cafe-{i}")).collect();
    for a in &accounts {
        open_account(&s, a).await;
    }
    let ops = |n: usize, prefix: &str| -> Value {
        Value::Array(
            (0..n)
                .map(|i| {
                    json!({"account_id": accounts[i % 10], "op": "debit", "idempotency_key": format!("{prefix}{i}"), "credits": 1})
                })
                .collect(),
        )
    };
    let before: Vec<(Value, Value)> = {
        let mut v = Vec::new();
        for a in &accounts {
            v.push(snapshot(&s, a).await);
        }
        v
    };
    let over = batch(&s, ADMIN, ops(1001, "x")).await;
    over.assert_problem(422, "invalid_request");
    assert!(over.body["detail"].as_str().unwrap().contains("1 to 1000"), "{over:?}");
    for (body, status) in [
        (json!({}), 422),
        (json!({"operations": []}), 422),
        (json!({"operations": {"account_id": "cafe-0"}}), 422),
        (json!({"operations": [], "dry_run": true}), 422),
        (json!([{"account_id": "cafe-0", "op": "debit", "credits": 1}]), 422),
    ] {
        s.post("/v1/batch", ADMIN, None, body.clone()).await.assert_problem(status, "invalid_request");
    }
    // One operation that is not one refuses the whole batch, before any
    // runs (the good debit beside it is not applied).
    let good = json!({"account_id": "cafe-0", "op": "debit", "idempotency_key": "g", "credits": 1});
    for (bad, says) in [
        (json!("debit"), "operation 1: each operation must be a JSON object"),
        (json!({"op": "debit", "credits": 1}), "operation 1: \"account_id\" must be a string"),
        (json!({"account_id": 7, "op": "debit"}), "operation 1: \"account_id\" must be a string"),
        (json!({"account_id": "cafe-0", "op": "refund"}), "operation 1: unknown op \"refund\""),
        (json!({"account_id": "cafe-0", "credits": 1}), "operation 1: \"op\" must be"),
        (json!({"account_id": "cafe-0", "op": "capture", "hold_id": 5}), "\"hold_id\" must be a string"),
        (
            json!({"account_id": "cafe-0", "op": "debit", "idempotency_key": " x"}),
            "operation 1: an idempotency key",
        ),
        (
            json!({"account_id": "cafe-0", "op": "debit", "idempotency_key": "k".repeat(256)}),
            "operation 1: idempotency key",
        ),
        (json!({"account_id": "cafe-0", "op": "debit", "idempotency_key": 5}), "must be a string"),
    ] {
        let a = batch(&s, ADMIN, json!([good, bad])).await;
        a.assert_problem(422, "invalid_request");
        assert!(a.body["detail"].as_str().unwrap().contains(says), "{bad}: {a:?}");
    }
    let raw = |content_type: &'static str, body: Vec<u8>| {
        s.client
            .post(format!("{}/v1/batch", s.base))
            .bearer_auth(ADMIN)
            .header("content-type", content_type)
            .body(body)
    };
    let a = Answer::from(raw("application/json", b"{\"operations\": [".to_vec()).send().await.unwrap()).await;
    a.assert_problem(400, "invalid_request");
    let a = Answer::from(raw("text/plain", b"{\"operations\": []}".to_vec()).send().await.unwrap()).await;
    a.assert_problem(415, "invalid_request");
    // Exactly 1 MiB (padded with JSON's own whitespace) is taken; one byte
    // more is not.
    open_account(&s, "edge").await;
    let one = br#"{"operations": [{"account_id": "edge", "op": "debit", "idempotency_key": "edge", "credits": 1}]}"#;
    let limit = 1024 * 1024;
    let mut exact = one.to_vec();
    exact.resize(limit, b' ');
    let mut over = exact.clone();
    over.push(b' ');
    let a = Answer::from(raw("application/json", over).send().await.unwrap()).await;
    a.assert_problem(413, "invalid_request");
    for (i, a) in accounts.iter().enumerate() {
        assert_eq!(snapshot(&s, a).await, before[i], "{a}: nothing changed");
    }
    let a = Answer::from(raw("application/json", exact).send().await.unwrap()).await;
    assert_eq!(results(&a).len(), 1);
    assert_eq!(results(&a)[0]["status"], 201, "{a:?}");
    let big = format!(
        "{{\"operations\": [{{\"account_id\": \"cafe-0\", \"op\": \"debit\", \"credits\": 1, \"description\": \"{}\"}}]}}",
        "x".repeat(1024 * 1024)
    );
    let a = Answer::from(raw("application/json", big.into_bytes()).send().await.unwrap()).await;
    a.assert_problem(413, "invalid_request");
    let a = s.post("/v1/batch", "not-a-token", None, json!({"operations": []})).await;
    assert_eq!(a.status, 401, "{a:?}");
    let a = s.post("/v1/batch?dry_run=1", ADMIN, None, json!({"operations": []})).await;
    a.assert_problem(400, "invalid_request");
    for (i, a) in accounts.iter().enumerate() {
        assert_eq!(snapshot(&s, a).await, before[i], "{a}: nothing changed");
    }
    // Exactly 1,000: every one applied, once.
    let r = results(&batch(&s, ADMIN, ops(1000, "k")).await);
    assert_eq!(r.len(), 1000);
    assert!(r.iter().all(|x| x["status"] == 201), "{:?}", r.iter().find(|x| x["status"] != 201));
    // Sent again: every one a replay, nothing applied twice.
    let again = results(&batch(&s, ADMIN, ops(1000, "k")).await);
    assert_eq!(
        again.iter().map(|x| &x["body"]).collect::<Vec<_>>(),
        r.iter().map(|x| &x["body"]).collect::<Vec<_>>()
    );
    for a in &accounts {
        assert_eq!(s.get(&format!("/v1/accounts/{a}/balance"), ADMIN).await.body["available"], 900, "{a}");
    }
    drop(s);
    db.assert_audit();
}

on_every_store! {
    #[tokio::test] each_operation_is_answered_as_its_own_route_answers_it,
    #[tokio::test] an_accounts_operations_run_in_order_and_tokens_keep_their_scope,
    #[tokio::test] the_limits_hold_at_their_edges_and_bad_batches_change_nothing,
}
