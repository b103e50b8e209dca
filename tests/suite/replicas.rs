//! Several real `textcredits serve` replicas on one PostgreSQL database:
//! exact results under concurrent load, a replica killed mid-load, and
//! PostgreSQL itself restarted under load. Skipped without
//! `TEXTCREDITS_TEST_PG`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{ADMIN, Answer, Db, Server};

const ACCOUNTS: [&str; 4] = ["r-cafe-1", "r-cafe-2", "r-cafe-3", "r-cafe-4"];

/// Starts `n` replicas at once (their migrations race for the advisory lock).
fn replicas(db: &Db, n: usize) -> Vec<Server> {
    std::thread::scope(|scope| {
        let starting: Vec<_> =
            (0..n).map(|_| scope.spawn(|| Server::start(db, &["--close-interval-seconds", "0"]))).collect();
        starting.into_iter().map(|h| h.join().expect("a replica starts")).collect()
    })
}

async fn setup(s: &Server) {
    for a in ACCOUNTS {
        let made = s.post("/v1/accounts", ADMIN, None, json!({"id": a, "name": a})).await;
        assert_eq!(made.status, 201, "{made:?}");
        let bought = s
            .post(&format!("/v1/accounts/{a}/purchases"), ADMIN, Some("seed"), json!({"credits": 2000}))
            .await;
        assert_eq!(bought.status, 201, "{bought:?}");
    }
}

async fn available(s: &Server, account: &str) -> i64 {
    let b = s.get(&format!("/v1/accounts/{account}/balance"), ADMIN).await;
    assert_eq!(b.status, 200, "{b:?}");
    b.body["available"].as_i64().expect("available")
}

/// Every entry of an account, oldest first.
async fn entries(s: &Server, account: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = cursor.as_ref().map_or(String::new(), |c| format!("&cursor={c}"));
        let page = s.get(&format!("/v1/accounts/{account}/ledger?limit=500{q}"), ADMIN).await;
        assert_eq!(page.status, 200, "{page:?}");
        out.extend(page.body["data"].as_array().expect("data").iter().cloned());
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    out.reverse();
    out
}

/// Debit ids the ledger holds, with how many debit entries each has.
async fn debit_ids(s: &Server, account: &str) -> BTreeMap<String, usize> {
    let mut ids = BTreeMap::new();
    for e in entries(s, account).await.iter().filter(|e| e["kind"] == "debit") {
        *ids.entry(e["source"].as_str().expect("source").to_string()).or_default() += 1;
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_apply_every_operation_once() {
    let Some(db) = Db::postgres() else { return };
    let servers = Arc::new(replicas(&db, 3));
    setup(&servers[0]).await;
    let mut tasks = Vec::new();
    for (a, account) in ACCOUNTS.iter().enumerate() {
        // 60 debits of 10, each sent to two replicas at once with one key.
        for i in 0..60 {
            for copy in 0..2 {
                let servers = servers.clone();
                let path = format!("/v1/accounts/{account}/debits");
                let key = format!("debit-{i}");
                tasks.push(tokio::spawn(async move {
                    let s = &servers[(i + copy + a) % 3];
                    ("debit", key.clone(), s.post(&path, ADMIN, Some(&key), json!({"credits": 10})).await)
                }));
            }
        }
        // 10 purchases of 100 and 10 holds of 50 captured at 30, spread out.
        for i in 0..10 {
            let (to, name) = (servers.clone(), account.to_string());
            tasks.push(tokio::spawn(async move {
                let s = &to[i % 3];
                let path = format!("/v1/accounts/{name}/purchases");
                (
                    "purchase",
                    format!("p-{i}"),
                    s.post(&path, ADMIN, Some(&format!("p-{i}")), json!({"credits": 100})).await,
                )
            }));
            let (servers, account) = (servers.clone(), account.to_string());
            tasks.push(tokio::spawn(async move {
                let held = servers[(i + 1) % 3]
                    .post(
                        &format!("/v1/accounts/{account}/holds"),
                        ADMIN,
                        Some(&format!("h-{i}")),
                        json!({"credits": 50}),
                    )
                    .await;
                assert_eq!(held.status, 201, "{held:?}");
                let hid = held.body["id"].as_str().expect("hold id").to_string();
                let path = format!("/v1/accounts/{account}/holds/{hid}/capture");
                ("capture", hid, servers[(i + 2) % 3].post(&path, ADMIN, None, json!({"credits": 30})).await)
            }));
        }
    }
    for t in tasks {
        let (kind, key, answer) = t.await.expect("the request task");
        assert!(matches!(answer.status, 200 | 201), "{kind} {key}: {answer:?}");
    }
    for account in ACCOUNTS {
        // 2,000 bought + 1,000 free + 1,000 bought now - 600 debited - 300 captured.
        assert_eq!(available(&servers[1], account).await, 3_100, "{account}");
        let ids = debit_ids(&servers[2], account).await;
        assert_eq!(ids.len(), 60, "{account}: one debit per key, not two: {ids:?}");
        assert!(ids.values().all(|&n| n <= 2), "{account}: {ids:?}");
    }
    db.assert_audit();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_load_loses_nothing_acknowledged() {
    let Some(db) = Db::postgres() else { return };
    let mut servers = replicas(&db, 3);
    setup(&servers[0]).await;
    let victim = servers.pop().expect("three replicas");
    let survivors = Arc::new(servers);
    let victim_base = victim.base.clone();
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..240usize {
        let survivors = survivors.clone();
        let client = client.clone();
        let victim_base = victim_base.clone();
        tasks.push(tokio::spawn(async move {
            let account = ACCOUNTS[i % ACCOUNTS.len()];
            let path = format!("/v1/accounts/{account}/debits");
            let key = format!("k-{i}");
            // Every third request goes to the replica about to die.
            if i % 3 == 0 {
                let sent = client
                    .post(format!("{victim_base}{path}"))
                    .bearer_auth(ADMIN)
                    .header("Idempotency-Key", &key)
                    .json(&json!({"credits": 5}))
                    .send()
                    .await;
                if let Ok(r) = sent {
                    let a = Answer::from(r).await;
                    if a.status == 201 {
                        return (account, a.body["id"].as_str().map(str::to_string));
                    }
                }
            }
            // Not acknowledged (or not sent there): the client retries with
            // the same key on a live replica.
            let a = survivors[i % 2].post(&path, ADMIN, Some(&key), json!({"credits": 5})).await;
            assert_eq!(a.status, 201, "{a:?}");
            (account, a.body["id"].as_str().map(str::to_string))
        }));
        if i == 80 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let pid = victim.child.id().to_string();
            let _ = std::process::Command::new("kill").args(["-KILL", &pid]).status();
        }
    }
    let mut acknowledged: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for t in tasks {
        let (account, id) = t.await.expect("the request task");
        acknowledged.entry(account).or_default().insert(id.expect("a debit id"));
    }
    drop(victim);
    for account in ACCOUNTS {
        let ids = debit_ids(&survivors[0], account).await;
        let acked = &acknowledged[account];
        assert_eq!(acked.len(), 60, "{account}: every key was acknowledged once");
        for id in acked {
            assert!(ids.contains_key(id), "{account}: acknowledged {id} is in the ledger");
        }
        assert_eq!(ids.len(), 60, "{account}: one debit per key: {ids:?}");
        assert_eq!(available(&survivors[1], account).await, 3_000 - 60 * 5, "{account}");
    }
    db.assert_audit();
}

/// Runs `pg_ctlcluster <version> main restart` (as root, as on CI).
fn restart_postgres() -> bool {
    let version = std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .unwrap_or_else(|| "15".to_string());
    let status = std::process::Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", "restart"])
        .status();
    status.is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
// The guard is held on purpose for the whole test: no other PostgreSQL
// test may run while the server restarts, and nothing else takes it here.
#[allow(clippy::await_holding_lock)]
async fn servers_answer_503_while_postgres_restarts_and_recover_alone() {
    let Some((db, _alone)) = Db::postgres_alone() else { return };
    let servers = Arc::new(replicas(&db, 2));
    setup(&servers[0]).await;
    let restarting = tokio::task::spawn_blocking(restart_postgres);
    let (mut ok, mut unavailable) = (BTreeSet::new(), 0usize);
    let mut i = 0usize;
    // Debit until the restart is over and a debit has gone through after it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut restarted = false;
    let mut after_restart = 0;
    while tokio::time::Instant::now() < deadline && after_restart < 5 {
        let key = format!("k-{i}");
        let a = servers[i % 2]
            .post("/v1/accounts/r-cafe-1/debits", ADMIN, Some(&key), json!({"credits": 1}))
            .await;
        match a.status {
            201 => {
                ok.insert(a.body["id"].as_str().expect("id").to_string());
                if restarted {
                    after_restart += 1;
                }
            }
            503 => {
                a.assert_problem(503, "unavailable");
                unavailable += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue; // the same key is retried
            }
            other => panic!("never a {other} during a restart: {a:?}"),
        }
        if !restarted && restarting.is_finished() {
            restarted = true;
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(restarting.await.expect("the restart ran"), "pg_ctlcluster restart failed");
    assert!(after_restart >= 5, "the servers recovered on their own ({unavailable} answers were 503)");
    eprintln!(
        "restart: {} debits acknowledged, {unavailable} answers 503 while PostgreSQL was down",
        ok.len()
    );
    let ids = debit_ids(&servers[1], "r-cafe-1").await;
    for id in &ok {
        assert!(ids.contains_key(id), "acknowledged {id} is in the ledger");
    }
    assert_eq!(ids.len(), ok.len(), "every debit in the ledger was acknowledged once");
    assert_eq!(available(&servers[0], "r-cafe-1").await, 3_000 - ok.len() as i64);
    db.assert_audit();
}

/// Every CLI command takes a PostgreSQL URL as well.
#[test]
fn the_command_line_works_on_postgres() {
    let Some(db) = Db::postgres() else { return };
    let now = ["--now", "2026-11-20T12:00:00Z"];
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&now);
        all.push("--json");
        let r = db.run(&all);
        assert_eq!(r.code, 0, "{args:?}: {r:?}");
        r.json()
    };
    run(&["account", "create", "pg-cafe", "--name", "PG Cafe", "--time-zone", "Asia/Tokyo"]);
    run(&["purchase", "pg-cafe", "500", "--key", "p1"]);
    let debit = run(&["debit", "pg-cafe", "1200", "--key", "d1"]);
    assert_eq!((debit["from_free"].as_i64(), debit["from_paid"].as_i64()), (Some(1000), Some(200)));
    assert_eq!(run(&["balance", "pg-cafe"])["available"], 300);
    let refused = db.run(&["debit", "pg-cafe", "301", "--key", "d2", "--now", "2026-11-20T12:00:00Z"]);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert_eq!(
        refused.stderr.trim(),
        "error: insufficient credits: 300 available, 301 requested (short by 1)"
    );
    let closed = db.run(&["billing", "close", "--now", "2026-12-01T00:00:00Z", "--json"]);
    assert_eq!(closed.code, 0, "{closed:?}");
    assert_eq!(closed.json().as_array().map(Vec::len), Some(1), "November's statement: {closed:?}");
    db.assert_audit();
}

/// A token revoked through one replica answers 401 on the other from the
/// very next request (no replica keeps a token cache).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_revoked_on_one_replica_is_refused_by_the_other() {
    let Some(db) = Db::postgres() else { return };
    let servers = replicas(&db, 2);
    let (one, other) = (&servers[0], &servers[1]);
    assert_eq!(one.post("/v1/accounts", ADMIN, None, json!({"id": "r-tok", "name": "t"})).await.status, 201);
    let made = one.post("/v1/accounts/r-tok/tokens", ADMIN, None, json!({"label": "pos"})).await;
    assert_eq!(made.status, 201, "{made:?}");
    let (tid, token) = (made.body["id"].as_str().unwrap(), made.body["token"].as_str().unwrap());
    // Both replicas have seen it work.
    for s in [one, other] {
        assert_eq!(s.get("/v1/accounts/r-tok/balance", token).await.status, 200);
    }
    let revoked =
        one.call("DELETE", &format!("/v1/accounts/r-tok/tokens/{tid}"), Some(ADMIN), None, None).await;
    assert_eq!(revoked.status, 204, "{revoked:?}");
    other.get("/v1/accounts/r-tok/balance", token).await.assert_problem(401, "unauthorized");
    one.get("/v1/accounts/r-tok/balance", token).await.assert_problem(401, "unauthorized");
}
