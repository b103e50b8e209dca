//! Hostile and careless clients (issue 11), through the real server: what a
//! client sends must not grow the server's memory (metrics labels), hold
//! its connections (slow headers, idle keep-alive, too many connections),
//! crash a handler, or store an instant the calendar code cannot handle.

use serde_json::{Value, json};

use crate::util::{ADMIN, Answer, Db, Server, created, open_account, snapshot};

/// A small deterministic generator (xorshift64*): random enough for
/// methods and paths, and a failure can be replayed from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// `len` characters drawn from `alphabet`.
    fn word(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len).map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize] as char).collect()
    }
}

const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
/// No `.`: a client normalizes `/./` and `/../` away, which would reach
/// other routes than the two shapes below.
const PATH_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-_";

/// Requests whose method and path are random: a made-up method or a
/// standard one, on a random path or a real route with a random id.
async fn random_requests(s: &Server, rng: &mut Rng, n: usize) {
    for _ in 0..n {
        let method = match rng.next() % 3 {
            0 => ["GET", "POST", "DELETE"][(rng.next() % 3) as usize].to_string(),
            _ => {
                let len = 3 + (rng.next() % 8) as usize;
                rng.word(UPPER, len)
            }
        };
        let len = 1 + (rng.next() % 20) as usize;
        let segment = rng.word(PATH_CHARS, len);
        let path = match rng.next() % 2 {
            0 => format!("/{segment}/{}", rng.word(PATH_CHARS, 5)),
            _ => format!("/v1/accounts/{segment}/balance"),
        };
        let a = s.call(&method, &path, None, None, None).await;
        assert!((400..500).contains(&a.status), "{method} {path}: {a:?}");
    }
}

/// The series `/metrics` shows (each line without its value).
async fn metrics_lines(s: &Server) -> Vec<String> {
    let m = s.call("GET", "/metrics", None, None, None).await;
    assert_eq!(m.status, 200, "{m:?}");
    m.text.lines().map(|l| l.rsplit_once(' ').map_or(l, |(series, _)| series).to_string()).collect()
}

/// 3,000 requests with random methods and paths leave `/metrics` exactly
/// as many lines long as a few such requests made it: label values come
/// from a fixed set, not from what clients send.
async fn random_methods_and_paths_do_not_grow_the_metrics(db: Db) {
    let s = Server::start(&db, &[]);
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    // Every kind of answer once (each label set the test can reach), and
    // the scrape itself once.
    random_requests(&s, &mut rng, 200).await;
    metrics_lines(&s).await;
    let before = metrics_lines(&s).await;
    random_requests(&s, &mut rng, 3_000).await;
    let after = metrics_lines(&s).await;
    let new: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
    assert!(new.is_empty(), "3,000 random requests added metrics lines: {new:#?}");
    assert_eq!(after.len(), before.len(), "3,000 random requests changed the number of metrics lines");
    let m = s.call("GET", "/metrics", None, None, None).await;
    assert!(
        m.text.contains(r#"method="other",route="unmatched",status="404""#),
        "made-up methods count as `other` and unknown paths as `unmatched`:\n{}",
        m.text
    );
}

/// Item 6: refunds and grants need a key (a retry without one applied
/// twice), and a request with two keys is refused (a retry carrying only
/// the second charged twice). Each refusal changes nothing.
async fn refunds_and_grants_need_one_idempotency_key(db: Db) {
    let s = Server::start(&db, &[]);
    open_account(&s, "cafe").await;
    let p = created(
        s.post("/v1/accounts/cafe/purchases", ADMIN, Some("p1"), json!({"credits": 100})).await,
        "purchase",
    );
    let d = created(
        s.post("/v1/accounts/cafe/debits", ADMIN, Some("d1"), json!({"credits": 1040})).await,
        "debit",
    );
    let (pid, did) = (p["id"].as_str().unwrap().to_string(), d["id"].as_str().unwrap().to_string());
    let before = snapshot(&s, "cafe").await;
    let refund_debit = format!("/v1/accounts/cafe/debits/{did}/refund");
    let refund_purchase = format!("/v1/accounts/cafe/purchases/{pid}/refund");
    let grant = json!({"credits": 50, "reason": "sorry"});
    for (path, body) in [
        (refund_debit.as_str(), json!({"credits": 12})),
        (refund_purchase.as_str(), json!({})),
        ("/v1/accounts/cafe/grants", grant.clone()),
    ] {
        for _ in 0..2 {
            let a = s.post(path, ADMIN, None, body.clone()).await;
            a.assert_problem(400, "invalid_request");
            assert!(a.body["detail"].as_str().unwrap().contains("Idempotency-Key"), "{a:?}");
        }
    }
    // Two keys on one request, on every route that takes one.
    for (path, body) in [
        ("/v1/accounts/cafe/purchases", json!({"credits": 5})),
        ("/v1/accounts/cafe/debits", json!({"credits": 5})),
        (refund_debit.as_str(), json!({"credits": 12})),
        ("/v1/accounts/cafe/grants", grant.clone()),
    ] {
        let r = s
            .client
            .post(format!("{}{path}", s.base))
            .bearer_auth(ADMIN)
            .header("Idempotency-Key", "k-first")
            .header("Idempotency-Key", "k-second")
            .json(&body)
            .send()
            .await
            .expect("an answer");
        Answer::from(r).await.assert_problem(400, "invalid_request");
    }
    assert_eq!(snapshot(&s, "cafe").await, before, "refused requests changed the account");
    db.assert_audit();

    // With a key, a retried refund and a retried grant apply once.
    for _ in 0..2 {
        let r = s.post(&refund_debit, ADMIN, Some("r1"), json!({"credits": 12})).await;
        assert_eq!(r.status, 201, "{r:?}");
        let g = s.post("/v1/accounts/cafe/grants", ADMIN, Some("g1"), grant.clone()).await;
        assert_eq!(g.status, 201, "{g:?}");
    }
    let (b, _) = snapshot(&s, "cafe").await;
    assert_eq!(b["available"], 60 + 12 + 50, "one refund of 12 and one grant of 50: {b}");
    db.assert_audit();
}

/// Item 5: instants from outside are limited to the documented range (422
/// beyond it, nothing changed); at the very edge of the range everything
/// still works, in the zone furthest ahead of UTC.
async fn instants_beyond_year_9000_are_refused_and_the_edge_works(db: Db) {
    let s = Server::start(&db, &["--test-clock", "--now", "2026-12-01T00:00:00Z"]);
    let body = json!({"id": "kiri", "name": "Kiritimati cafe", "time_zone": "Pacific/Kiritimati"});
    assert_eq!(s.post("/v1/accounts", ADMIN, None, body).await.status, 201);
    let before = snapshot(&s, "kiri").await;
    for far in ["9999-12-30T00:00:00Z", "9001-01-01T00:00:00Z"] {
        let a = s.call("PUT", "/v1/test-clock", Some(ADMIN), None, Some(json!({"now": far}))).await;
        a.assert_problem(422, "invalid_request");
        let g = json!({"credits": 5, "reason": "promo", "expires_at": far});
        s.post("/v1/accounts/kiri/grants", ADMIN, Some(far), g).await.assert_problem(422, "invalid_request");
    }
    let clock = s.get("/v1/test-clock", ADMIN).await;
    assert_eq!(clock.body["now"], "2026-12-01T00:00:00Z", "the refused moves left the clock: {clock:?}");
    assert_eq!(snapshot(&s, "kiri").await, before, "refused instants changed the account");
    let cli = db.run(&["--now", "9999-12-30T00:00:00Z", "balance", "kiri"]);
    assert_eq!(cli.code, 2, "{cli:?}");
    assert_eq!(cli.stderr.lines().count(), 1, "one line: {cli:?}");

    // The last accepted instant: reads, spending, buying and billing work
    // (no panic, no dropped connection), and the books still add up.
    let edge = "9000-12-31T23:59:59.999999Z";
    let a = s.call("PUT", "/v1/test-clock", Some(ADMIN), None, Some(json!({"now": edge}))).await;
    assert_eq!(a.status, 200, "{a:?}");
    let b = s.get("/v1/accounts/kiri/balance", ADMIN).await;
    assert_eq!(b.status, 200, "{b:?}");
    assert_eq!(b.body["free"]["resets_at"], "9001-01-31T10:00:00Z", "{b:?}");
    let d = s.post("/v1/accounts/kiri/debits", ADMIN, Some("d"), json!({"credits": 3})).await;
    assert_eq!(d.status, 201, "{d:?}");
    let p = s.post("/v1/accounts/kiri/purchases", ADMIN, Some("p"), json!({"credits": 3})).await;
    assert_eq!(p.status, 201, "{p:?}");
    let h = s
        .post("/v1/accounts/kiri/holds", ADMIN, Some("h"), json!({"credits": 3, "ttl_seconds": 2_592_000}))
        .await;
    assert_eq!(h.status, 201, "a hold expiring after the edge: {h:?}");
    let close = s.post("/v1/billing/close", ADMIN, None, json!({})).await;
    assert_eq!(close.status, 200, "{close:?}");
    let u = s.get("/v1/accounts/kiri/usage?from=9000-11&to=9000-12", ADMIN).await;
    assert_eq!(u.status, 200, "{u:?}");
    db.assert_audit();
}

/// Item 9: `.` and `..` are refused as account ids (no client can put them
/// in a URL path), through the API and the CLI; nothing is created.
async fn dot_account_ids_are_refused(db: Db) {
    let s = Server::start(&db, &[]);
    for id in [".", ".."] {
        let a = s.post("/v1/accounts", ADMIN, None, json!({"id": id, "name": "dots"})).await;
        a.assert_problem(422, "invalid_request");
        let run = db.run(&["account", "create", id, "--name", "dots"]);
        assert_eq!(run.code, 2, "{run:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    }
    assert_eq!(s.get("/v1/accounts", ADMIN).await.body["data"], json!([]), "no account was created");
    assert!(
        s.post("/v1/accounts", ADMIN, None, json!({"id": "...", "name": "three dots"})).await.status == 201
    );
}

/// Item 10: a month end run ahead of the clock (`--now` on a real database)
/// does not make later real-time operations fail or go back: each is
/// applied at the account's latest instant, and its answer shows it.
async fn time_never_runs_backwards_for_an_account(db: Db) {
    let run = db.run(&["--now", "2026-12-01T10:00:00Z", "account", "create", "cafe", "--name", "Cafe"]);
    assert_eq!(run.code, 0, "{run:?}");
    db.json(&["--now", "2026-12-01T10:01:00Z", "purchase", "cafe", "50", "--key", "p0"]);
    let closed = db.run(&["--now", "2027-01-02T00:00:00Z", "billing", "close"]);
    assert_eq!(closed.code, 0, "{closed:?}");
    let latest = db.ledger_entries("cafe")[0]["created_at"].as_str().unwrap().to_string();
    assert!(latest.as_str() >= "2027-01-01T00:00:00Z", "the close ran in January: {latest}");
    // Back on the (earlier) clock: a debit, a purchase, a balance, each at
    // the account's latest instant.
    let at = "2026-12-01T10:05:00Z";
    let d = db.json(&["--now", at, "debit", "cafe", "5", "--key", "d1"]);
    assert_eq!(d["created_at"], latest.as_str(), "applied at the latest instant: {d}");
    assert_eq!(d["from_free"], 5, "{d}");
    let p = db.json(&["--now", at, "purchase", "cafe", "100", "--key", "p1"]);
    assert_eq!(p["purchased_at"], latest.as_str(), "December is billed; this one is January's: {p}");
    assert_eq!(p["bills_on"], "2027-02-01", "{p}");
    let b = db.json(&["--now", at, "balance", "cafe"]);
    assert_eq!(b["as_of"], latest.as_str(), "{b}");
    assert_eq!(b["free"]["used"], 5, "January's free credits, spent once: {b}");
    assert_eq!(b["free"]["resets_at"], "2027-02-01T00:00:00Z", "{b}");
    let entries = db.ledger_entries("cafe");
    let mut instants: Vec<&str> = entries.iter().map(|e| e["created_at"].as_str().unwrap()).collect();
    instants.reverse();
    assert!(instants.windows(2).all(|w| w[0] <= w[1]), "entries in time order: {instants:?}");
    db.assert_audit();
}

/// Item 10: `serve --now` starts the test clock there and needs
/// `--test-clock`; `serve --json` is refused (it did nothing).
async fn serve_now_starts_the_test_clock(db: Db) {
    let s = Server::start(&db, &["--test-clock", "--now", "2030-02-28T23:59:00Z"]);
    assert_eq!(s.get("/v1/test-clock", ADMIN).await.body["now"], "2030-02-28T23:59:00Z");
    drop(s);
    for args in [
        &["serve", "--now", "2030-02-28T23:59:00Z", "--listen", "127.0.0.1:0"][..],
        &["--json", "serve", "--listen", "127.0.0.1:0"][..],
    ] {
        let run = db.run(args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    }
}

on_every_store!(
    #[tokio::test]
    random_methods_and_paths_do_not_grow_the_metrics,
    #[tokio::test]
    refunds_and_grants_need_one_idempotency_key,
    #[tokio::test]
    instants_beyond_year_9000_are_refused_and_the_edge_works,
    #[tokio::test]
    dot_account_ids_are_refused,
    #[tokio::test]
    time_never_runs_backwards_for_an_account,
    #[tokio::test]
    serve_now_starts_the_test_clock,
    #[tokio::test]
    tokens_are_listed_and_revoked,
    #[tokio::test]
    money_never_wraps_and_close_goes_on_past_a_broken_account,
    #[tokio::test]
    usage_counts_each_month_once_and_expiries_in_their_month,
    #[tokio::test]
    a_closed_account_refuses_spending_and_goes_on_billing,
    #[tokio::test]
    accounts_are_found_by_id_or_name_prefix,
    #[tokio::test]
    one_purchase_and_one_statement_by_id,
);

/// Runs `serve` with `env` and `args` on a fresh SQLite directory until it
/// exits (a bad token or an address it cannot bind ends it).
fn serve_until_exit(db: &Db, env: &[(&str, &str)], args: &[&str]) -> crate::util::Run {
    let mut cmd = db.command(&["serve"]);
    cmd.env_remove("TEXTCREDITS_ADMIN_TOKEN").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the binary runs");
    crate::util::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// An address no one can listen on: `serve` gets past its token checks,
/// then stops.
const UNBINDABLE: &str = "192.0.2.1:1";

/// Item 8: admin tokens no request could match are refused at start; the
/// generated token file is owner-only and a file others can read is
/// refused; a token on the command line draws a warning. Item 11: logs
/// written to a file carry no colour codes.
#[test]
fn the_admin_token_is_checked_at_start() {
    use std::os::unix::fs::PermissionsExt as _;
    let db = Db::new();
    for bad in
        ["abcdefghijklmnop\r", " abcdefghijklmnop", "abcdefgh ijklmnop", "abc\tdefghijklmnop", "short-token"]
    {
        let run = serve_until_exit(&db, &[("TEXTCREDITS_ADMIN_TOKEN", bad)], &["--listen", "127.0.0.1:0"]);
        assert_eq!(run.code, 2, "{bad:?}: {run:?}");
        assert!(run.stderr.contains("admin token"), "{bad:?}: {run:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    }
    assert!(!db.dir.path().join("textcredits-admin-token").exists(), "no token file for refused starts");

    // Generated: owner-only.
    let run = serve_until_exit(&db, &[], &["--listen", UNBINDABLE]);
    assert_eq!(run.code, 1, "cannot bind: {run:?}");
    let file = db.dir.path().join("textcredits-admin-token");
    let mode = std::fs::metadata(&file).expect("the generated token file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "owner-only");
    let token = std::fs::read_to_string(&file).unwrap();
    // Readable by others: refused, with the fix in the message.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = serve_until_exit(&db, &[], &["--listen", "127.0.0.1:0"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("chmod 600"), "{run:?}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), token, "the refused start left the token alone");

    // On the command line: a warning; logs into a file: no ANSI colour.
    let run =
        serve_until_exit(&db, &[], &["--admin-token", "a-good-long-admin-token", "--listen", UNBINDABLE]);
    assert!(run.stderr.contains("warning: --admin-token on the command line"), "{run:?}");
    assert!(run.stderr.contains("TEXTCREDITS_ADMIN_TOKEN"), "{run:?}");
    assert!(!run.stderr.contains('\u{1b}'), "no colour codes when stderr is not a terminal: {run:?}");
    let run = serve_until_exit(
        &db,
        &[("TEXTCREDITS_ADMIN_TOKEN", "a-good-long-admin-token")],
        &["--listen", UNBINDABLE],
    );
    assert!(!run.stderr.contains("warning"), "from the environment, no warning: {run:?}");
}

/// Reads what the server sends on `conn` until it closes the connection
/// (or `limit` passes: the server then did not close it).
async fn read_until_closed(conn: &mut tokio::net::TcpStream, limit: std::time::Duration) -> Option<String> {
    use tokio::io::AsyncReadExt as _;
    let mut got = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| String::from_utf8_lossy(&got).into_owned())
}

/// One request on an open keep-alive connection; the answer's status line.
async fn ask(conn: &mut tokio::net::TcpStream, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    conn.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let n = conn.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_string()
}

/// Item 4: headers trickled in are cut off after the header timeout, an
/// idle keep-alive connection is closed, connections past the cap are
/// refused with a 503 problem while the open ones are still answered, and
/// a body that arrives too slowly answers 408. Bounded: a handful of
/// connections, each check waits at most a few seconds past its timeout.
#[tokio::test]
async fn slow_idle_and_surplus_connections_are_cut_off() {
    use std::time::{Duration, Instant};
    use tokio::io::AsyncWriteExt as _;
    use tokio::net::TcpStream;
    const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    const MARGIN: Duration = Duration::from_secs(8);
    let db = Db::new();
    let s = Server::start(&db, &["--max-connections", "4"]);
    let addr = s.base.strip_prefix("http://").unwrap().to_string();

    // A monitor's keep-alive connection, open before the crowd arrives.
    let mut monitor = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(ask(&mut monitor, "/healthz").await, "HTTP/1.1 200 OK");
    // Three clients that trickle a header line every second.
    let mut tricklers = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(&addr).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        tricklers.push(c);
    }
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for i in 0..30 {
            for c in tricklers.iter_mut() {
                if c.write_all(format!("x-slow-{i}: 1\r\n").as_bytes()).await.is_err() {
                    return (tricklers, true);
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        (tricklers, false)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The cap (4) is full: a fifth connection is refused with a problem.
    let mut fifth = TcpStream::connect(&addr).await.unwrap();
    fifth.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let refused =
        read_until_closed(&mut fifth, Duration::from_secs(5)).await.expect("closed after the refusal");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(
        refused.contains("application/problem+json") && refused.contains("\"code\":\"unavailable\""),
        "{refused}"
    );
    // The open monitor connection is still answered.
    assert_eq!(ask(&mut monitor, "/healthz").await, "HTTP/1.1 200 OK");

    // The tricklers are cut off after the header timeout.
    let (mut tricklers, cut) = trickle.await.unwrap();
    assert!(cut || started.elapsed() < HEADER_TIMEOUT + MARGIN, "the trickling clients were never cut off");
    for c in tricklers.iter_mut() {
        let rest = read_until_closed(c, MARGIN).await;
        assert!(rest.is_some(), "a trickling connection is still open after {:?}", started.elapsed());
    }
    // The monitor, idle since its last answer, is closed too.
    assert!(
        read_until_closed(&mut monitor, HEADER_TIMEOUT + MARGIN).await.is_some(),
        "idle keep-alive kept open"
    );

    // Room again: new connections are served.
    let mut again = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(ask(&mut again, "/healthz").await, "HTTP/1.1 200 OK");

    // A body that trickles: 408 problem+json, and the connection closes.
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/accounts HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN}\r\n\
         content-type: application/json\r\ncontent-length: 60\r\n\r\n{{\"id\""
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let answer =
        read_until_closed(&mut slow, Duration::from_secs(10) + MARGIN).await.expect("answered and closed");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert_eq!(
        s.get("/v1/accounts", ADMIN).await.body["data"],
        json!([]),
        "the slow request created nothing"
    );
}

/// Item 7: an account's tokens are listed (never their secrets) and
/// revoked; a revoked token answers 401 from the next request on; an
/// account holds at most 100; only the admin lists and revokes.
async fn tokens_are_listed_and_revoked(db: Db) {
    let s = Server::start(&db, &[]);
    open_account(&s, "cafe").await;
    open_account(&s, "other").await;
    let mut made = Vec::new();
    for label in ["pos", "website"] {
        let t =
            created(s.post("/v1/accounts/cafe/tokens", ADMIN, None, json!({"label": label})).await, "token");
        made.push((t["id"].as_str().unwrap().to_string(), t["token"].as_str().unwrap().to_string()));
    }
    let (pos_id, pos) = made[0].clone();
    let (web_id, web) = made[1].clone();
    assert_eq!(s.get("/v1/accounts/cafe/balance", &pos).await.status, 200);
    let list = s.get("/v1/accounts/cafe/tokens", ADMIN).await;
    assert_eq!(list.status, 200, "{list:?}");
    let data = list.body["data"].as_array().unwrap().clone();
    assert_eq!(data.len(), 2, "{list:?}");
    assert!(
        !list.text.contains(&pos) && !list.text.contains(&web),
        "a list never shows a token: {}",
        list.text
    );
    let field = |id: &str, f: &str| data.iter().find(|t| t["id"] == id).unwrap()[f].clone();
    assert_eq!(field(&pos_id, "label"), "pos");
    assert!(field(&pos_id, "last_used_at").is_string(), "used: {data:?}");
    assert!(field(&web_id, "last_used_at").is_null(), "never used: {data:?}");
    let keys: Vec<&String> = data[0].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["id", "account_id", "label", "created_at", "last_used_at"],
        "nothing else, no secret hash"
    );
    // Only the admin lists and revokes.
    s.get("/v1/accounts/cafe/tokens", &pos).await.assert_problem(403, "forbidden");
    let path = format!("/v1/accounts/cafe/tokens/{web_id}");
    s.call("DELETE", &path, Some(&pos), None, None).await.assert_problem(403, "forbidden");
    // Revoked: 401 from the next request; the other token goes on.
    let r = s.call("DELETE", &format!("/v1/accounts/cafe/tokens/{pos_id}"), Some(ADMIN), None, None).await;
    assert_eq!(r.status, 204, "{r:?}");
    s.get("/v1/accounts/cafe/balance", &pos).await.assert_problem(401, "unauthorized");
    assert_eq!(s.get("/v1/accounts/cafe/balance", &web).await.status, 200);
    // Gone, unknown, or another account's: 404.
    for path in [
        format!("/v1/accounts/cafe/tokens/{pos_id}"),
        "/v1/accounts/cafe/tokens/tok_nope".to_string(),
        format!("/v1/accounts/other/tokens/{web_id}"),
    ] {
        s.call("DELETE", &path, Some(ADMIN), None, None).await.assert_problem(404, "not_found");
    }
    s.get("/v1/accounts/ghost/tokens", ADMIN).await.assert_problem(404, "not_found");
    assert_eq!(
        s.get("/v1/accounts/cafe/balance", &web).await.status,
        200,
        "a refused revoke changed nothing"
    );
    // At most 100 per account.
    for i in 1..100 {
        created(
            s.post("/v1/accounts/cafe/tokens", ADMIN, None, json!({"label": format!("t{i}")})).await,
            "token",
        );
    }
    let over = s.post("/v1/accounts/cafe/tokens", ADMIN, None, json!({"label": "one too many"})).await;
    over.assert_problem(422, "invalid_request");
    assert_eq!(s.get("/v1/accounts/cafe/tokens", ADMIN).await.body["data"].as_array().unwrap().len(), 100);

    // The CLI: create, list, revoke; a bad revoke exits 2 with one line.
    let t = db.json(&["token", "create", "other", "--label", "cli"]);
    let (tid, token) = (t["id"].as_str().unwrap().to_string(), t["token"].as_str().unwrap().to_string());
    assert_eq!(s.get("/v1/accounts/other/balance", &token).await.status, 200);
    let listed = db.json(&["token", "list", "other"]);
    assert_eq!(listed[0]["id"], tid.as_str(), "{listed}");
    assert_eq!(db.run(&["token", "revoke", "other", &tid]).code, 0);
    s.get("/v1/accounts/other/balance", &token).await.assert_problem(401, "unauthorized");
    let again = db.run(&["token", "revoke", "other", &tid]);
    assert_eq!((again.code, again.stderr.lines().count()), (2, 1), "{again:?}");
}

/// Item 2: an amount, or the unbilled total it joins, beyond the exact
/// range refuses the purchase (422, nothing changed) instead of
/// saturating; billing close works account by account: one that cannot
/// close (here, a row corrupted behind the ledger's back) is listed in
/// `failed` and left untouched, every other account closes.
async fn money_never_wraps_and_close_goes_on_past_a_broken_account(db: Db) {
    let s = Server::start(
        &db,
        &["--test-clock", "--now", "2026-11-10T12:00:00Z", "--close-interval-seconds", "0"],
    );
    for (id, price) in [("big", "1000"), ("small", "0.01"), ("broken", "1000")] {
        let body = json!({"id": id, "name": id, "time_zone": "UTC", "unit_price": price});
        assert_eq!(s.post("/v1/accounts", ADMIN, None, body).await.status, 201);
    }
    let buy = |acct: &'static str, key: String, credits: i64| {
        let s = &s;
        async move {
            s.post(
                &format!("/v1/accounts/{acct}/purchases"),
                ADMIN,
                Some(&key),
                json!({ "credits": credits }),
            )
            .await
        }
    };
    // Nine purchases of 10^9 credits at 1,000 each: 9 x 10^12, exact.
    for i in 0..9 {
        assert_eq!(buy("big", format!("b{i}"), 1_000_000_000).await.status, 201);
    }
    let before = snapshot(&s, "big").await;
    assert_eq!(before.0["unbilled"]["amount"], "9000000000000.00", "{:?}", before.0);
    // The tenth would take the unbilled total past the exact range.
    let tenth = buy("big", "b9".into(), 1_000_000_000).await;
    tenth.assert_problem(422, "invalid_request");
    assert!(tenth.body["detail"].as_str().unwrap().contains("unbilled total"), "{tenth:?}");
    assert_eq!(snapshot(&s, "big").await, before, "the refused purchase changed nothing");
    assert_eq!(buy("small", "s1".into(), 100).await.status, 201);
    assert_eq!(buy("broken", "x1".into(), 5).await.status, 201);
    db.assert_audit();

    // A purchase row corrupted behind the ledger's back (with the server
    // stopped: a running SQLite server keeps the accounts it uses in its
    // writer's memory): its line cannot be computed exactly.
    drop(s);
    db.assert_audit();
    crate::util::raw_sql(&db, "UPDATE purchases SET credits = 9000000000000 WHERE account_id = 'broken'");
    let s = Server::start(
        &db,
        &["--test-clock", "--now", "2026-12-01T00:00:01Z", "--close-interval-seconds", "0"],
    );
    for round in 0..2 {
        let close = s.post("/v1/billing/close", ADMIN, None, json!({})).await;
        assert_eq!(close.status, 200, "{close:?}");
        assert_eq!(close.body["closed"], if round == 0 { 2 } else { 0 }, "{close:?}");
        let failed = close.body["failed"].as_array().unwrap();
        assert_eq!(failed.len(), 1, "{close:?}");
        assert_eq!(failed[0]["account_id"], "broken");
        assert!(failed[0]["detail"].as_str().unwrap().contains("largest amount"), "{close:?}");
    }
    let statements = s.get("/v1/statements?month=2026-11", ADMIN).await;
    let mut totals: Vec<(String, String)> = statements.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| (st["account_id"].as_str().unwrap().to_string(), st["total"].as_str().unwrap().to_string()))
        .collect();
    totals.sort();
    assert_eq!(
        totals,
        [("big".to_string(), "9000000000000.00".to_string()), ("small".into(), "1.00".into())]
    );
    // The broken account is not half-closed: no statement, nothing billed.
    let st = s.get("/v1/accounts/broken/statements", ADMIN).await;
    assert_eq!(st.body["data"], json!([]), "{st:?}");
    let run = db.run(&["--now", "2026-12-01T00:00:02Z", "billing", "close"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("account broken could not close"), "{run:?}");
    crate::util::raw_sql(&db, "UPDATE purchases SET credits = 5 WHERE account_id = 'broken'");
    let p = s.get("/v1/accounts/broken/purchases", ADMIN).await;
    assert_eq!(p.body["data"][0]["status"], "unbilled", "{p:?}");
}

/// November and December 2026 of `cafe`'s usage report.
async fn usage_of(s: &Server) -> Value {
    let u = s.get("/v1/accounts/cafe/usage?from=2026-11&to=2026-12", ADMIN).await;
    assert_eq!(u.status, 200, "{u:?}");
    u.body["data"].clone()
}

/// Item 3: usage comes from monthly counters written with the entries;
/// what expires at the end of a month counts in that month's row, whether
/// the expiry is already written or only due; the counters add up to the
/// entries (audit), and they are rebuilt from the entries by the migration
/// that introduced them.
async fn usage_counts_each_month_once_and_expiries_in_their_month(db: Db) {
    let s = Server::start(
        &db,
        &["--test-clock", "--now", "2026-11-10T12:00:00Z", "--close-interval-seconds", "0"],
    );
    open_account(&s, "cafe").await;
    let debit = |key: &'static str, credits: i64| {
        let s = &s;
        async move { s.post("/v1/accounts/cafe/debits", ADMIN, Some(key), json!({ "credits": credits })).await }
    };
    assert_eq!(debit("n1", 300).await.status, 201);
    let g = json!({"credits": 50, "reason": "promo", "expires_at": "2026-12-01T00:00:00Z"});
    assert_eq!(s.post("/v1/accounts/cafe/grants", ADMIN, Some("g1"), g).await.status, 201);
    let pick = |rows: &Value, month: &str, field: &str| {
        rows.as_array().unwrap().iter().find(|r| r["month"] == month).unwrap()[field].as_i64().unwrap()
    };
    let a = s
        .call("PUT", "/v1/test-clock", Some(ADMIN), None, Some(json!({"now": "2026-12-05T09:00:00Z"})))
        .await;
    assert_eq!(a.status, 200);
    // December's first write has not happened: November's expiries are due,
    // not written, and already count in November.
    let due = usage_of(&s).await;
    assert_eq!(pick(&due, "2026-11", "free_used"), 300, "{due}");
    assert_eq!(pick(&due, "2026-11", "free_expired"), 700, "{due}");
    assert_eq!(pick(&due, "2026-11", "grants_expired"), 50, "{due}");
    assert_eq!(pick(&due, "2026-12", "free_expired"), 0, "{due}");
    assert_eq!(pick(&due, "2026-12", "free_granted"), 1000, "{due}");
    // A December debit writes them: the report is the same, plus the debit.
    assert_eq!(debit("d1", 5).await.status, 201);
    let written = usage_of(&s).await;
    assert_eq!(pick(&written, "2026-11", "free_expired"), 700, "{written}");
    assert_eq!(pick(&written, "2026-12", "free_expired"), 0, "{written}");
    assert_eq!(pick(&written, "2026-12", "free_used"), 5, "{written}");
    db.assert_audit();

    // The counters behind the ledger's back: the audit notices.
    crate::util::raw_sql(&db, "UPDATE usage_months SET free_used = free_used + 1 WHERE account_id = 'cafe'");
    let run = db.run(&["audit"]);
    assert_ne!(run.code, 0, "a wrong counter fails the audit: {run:?}");
    assert!(format!("{}{}", run.stdout, run.stderr).contains("usage counters"), "{run:?}");
    drop(s);
    // Undo the migration that made them (and those after it); opening
    // again rebuilds them from the entries.
    let later = format!(
        "{} DROP TABLE usage_months; ALTER TABLE accounts DROP COLUMN status;",
        crate::util::UNDO_CAPTURE_DEBITS
    );
    let undo = if db.pg_schema.is_some() {
        format!("{later} DELETE FROM schema_migrations WHERE version >= 5;")
    } else {
        format!("{later} PRAGMA user_version = 5;")
    };
    let undo = undo.as_str();
    crate::util::raw_sql(&db, undo);
    db.assert_audit();
    let s = Server::start(&db, &["--test-clock", "--now", "2026-12-05T10:00:00Z"]);
    assert_eq!(usage_of(&s).await, written, "rebuilt from the entries, the same report");
}

/// Issue 12 item 3 (and issue 13's closed-account message): a closed
/// account refuses purchases, debits and holds with 422 `account_closed`
/// and changes nothing; reads, refunds, the holds it already made and
/// billing go on; `active` reopens it. The CLI does the same.
async fn a_closed_account_refuses_spending_and_goes_on_billing(db: Db) {
    let s = Server::start(
        &db,
        &["--test-clock", "--now", "2026-11-10T12:00:00Z", "--close-interval-seconds", "0"],
    );
    open_account(&s, "cafe").await;
    let post = |path: &'static str, key: &'static str, body: Value| {
        let s = &s;
        async move { s.post(&format!("/v1/accounts/cafe/{path}"), ADMIN, Some(key), body).await }
    };
    created(post("purchases", "p1", json!({"credits": 100})).await, "purchase");
    let d = created(post("debits", "d1", json!({"credits": 30})).await, "debit");
    let h = created(post("holds", "h1", json!({"credits": 20})).await, "hold");
    let patch = |status: &str| {
        let s = &s;
        let body = json!({ "status": status });
        async move { s.call("PATCH", "/v1/accounts/cafe", Some(ADMIN), None, Some(body)).await }
    };
    let closed = patch("closed").await;
    assert_eq!((closed.status, closed.body["status"].clone()), (200, json!("closed")), "{closed:?}");
    let before = snapshot(&s, "cafe").await;
    for (path, key, body) in [
        ("purchases", "p2", json!({"credits": 5})),
        ("debits", "d2", json!({"credits": 5})),
        ("holds", "h2", json!({"credits": 5})),
    ] {
        let a = post(path, key, body).await;
        a.assert_problem(422, "account_closed");
        assert!(a.body["detail"].as_str().unwrap().contains("closed"), "{a:?}");
    }
    assert_eq!(snapshot(&s, "cafe").await, before, "refused on a closed account, nothing changed");
    let cli = db.run(&["debit", "cafe", "5", "--key", "cli-d"]);
    assert_eq!((cli.code, cli.stderr.lines().count()), (2, 1), "{cli:?}");
    // What goes on: reads, a refund, settling the hold already made, billing.
    assert_eq!(s.get("/v1/accounts/cafe", ADMIN).await.body["status"], "closed");
    let did = d["id"].as_str().unwrap();
    let r = s
        .post(&format!("/v1/accounts/cafe/debits/{did}/refund"), ADMIN, Some("r1"), json!({"credits": 3}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let hid = h["id"].as_str().unwrap();
    let c =
        s.post(&format!("/v1/accounts/cafe/holds/{hid}/capture"), ADMIN, None, json!({"credits": 10})).await;
    assert_eq!(c.status, 200, "{c:?}");
    let a = s
        .call("PUT", "/v1/test-clock", Some(ADMIN), None, Some(json!({"now": "2026-12-01T00:00:01Z"})))
        .await;
    assert_eq!(a.status, 200);
    let close = s.post("/v1/billing/close", ADMIN, None, json!({})).await;
    assert_eq!(close.body["closed"], 1, "its last month is billed: {close:?}");
    // Reopened, it spends again (CLI too).
    assert_eq!(patch("active").await.body["status"], "active");
    assert_eq!(post("debits", "d3", json!({"credits": 5})).await.status, 201);
    let bad = patch("frozen").await;
    bad.assert_problem(422, "invalid_request");
    let run = db.run(&["--now", "2026-12-01T00:00:02Z", "account", "set", "cafe", "--status", "closed"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(s.get("/v1/accounts/cafe", ADMIN).await.body["status"], "closed");
    db.assert_audit();
}

/// Issue 12 item 2 (`q`), which the dashboard's admin search uses: the
/// accounts whose id or name starts with `q`, any case, paginated, with
/// LIKE's wildcards taken literally; a bad `q` is a 400.
async fn accounts_are_found_by_id_or_name_prefix(db: Db) {
    let s = Server::start(&db, &[]);
    for (id, name) in [
        ("cafe-one", "Blue Cup"),
        ("cafe-two", "Green Bean"),
        ("bakery", "Cafe Sol"),
        ("a_b", "x"),
        ("axb", "y"),
    ] {
        assert_eq!(s.post("/v1/accounts", ADMIN, None, json!({"id": id, "name": name})).await.status, 201);
    }
    let ids = |a: &Answer| {
        let mut v: Vec<String> = a.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let find = |q: &str| {
        let s = &s;
        let path = format!("/v1/accounts?q={q}");
        async move { s.get(&path, ADMIN).await }
    };
    assert_eq!(ids(&find("CAFE").await), ["bakery", "cafe-one", "cafe-two"]);
    assert_eq!(ids(&find("green").await), ["cafe-two"]);
    assert_eq!(ids(&find("a_").await), ["a_b"], "_ is not a wildcard");
    assert_eq!(ids(&find("%25").await), Vec::<String>::new(), "% is not a wildcard");
    // Pages of one, following the cursor, find the same three.
    let (mut seen, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/accounts?q=caf&limit=1&cursor={c}"),
            None => "/v1/accounts?q=caf&limit=1".to_string(),
        };
        let page = s.get(&path, ADMIN).await;
        seen.extend(ids(&page));
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, ["bakery", "cafe-one", "cafe-two"]);
    find("").await.assert_problem(400, "invalid_request");
    assert_eq!(find(&"x".repeat(200)).await.status, 200, "200 characters are accepted");
    find(&"x".repeat(201)).await.assert_problem(400, "invalid_request");
    let cli = db.json(&["account", "list", "--q", "GREEN"]);
    assert_eq!(cli["data"].as_array().unwrap().len(), 1, "{cli}");
}

/// Issue 12 item 2, part: one purchase and one statement by id, exactly as
/// their lists show them; another account's, or none, answers 404; an
/// account token reads its own.
async fn one_purchase_and_one_statement_by_id(db: Db) {
    let s = Server::start(
        &db,
        &["--test-clock", "--now", "2026-11-10T12:00:00Z", "--close-interval-seconds", "0"],
    );
    open_account(&s, "cafe").await;
    open_account(&s, "other").await;
    let p = created(
        s.post("/v1/accounts/cafe/purchases", ADMIN, Some("p1"), json!({"credits": 300})).await,
        "purchase",
    );
    let o = created(
        s.post("/v1/accounts/other/purchases", ADMIN, Some("p1"), json!({"credits": 7})).await,
        "purchase",
    );
    let (pid, oid) = (p["id"].as_str().unwrap(), o["id"].as_str().unwrap());
    let got = s.get(&format!("/v1/accounts/cafe/purchases/{pid}"), ADMIN).await;
    assert_eq!(got.status, 200, "{got:?}");
    let listed = s.get("/v1/accounts/cafe/purchases", ADMIN).await.body["data"][0].clone();
    assert_eq!(got.body, listed, "one purchase is what the list shows");
    let token =
        created(s.post("/v1/accounts/cafe/tokens", ADMIN, None, json!({"label": "pos"})).await, "token");
    let token = token["token"].as_str().unwrap();
    assert_eq!(s.get(&format!("/v1/accounts/cafe/purchases/{pid}"), token).await.body, listed);
    for (path, who) in [
        (format!("/v1/accounts/cafe/purchases/{oid}"), ADMIN),
        ("/v1/accounts/cafe/purchases/pur_nope".to_string(), ADMIN),
        (format!("/v1/accounts/other/purchases/{oid}"), token),
        ("/v1/accounts/cafe/statements/st_2026-11_cafe".to_string(), ADMIN),
    ] {
        s.get(&path, who).await.assert_problem(404, "not_found");
    }
    let a = s
        .call("PUT", "/v1/test-clock", Some(ADMIN), None, Some(json!({"now": "2026-12-01T00:00:01Z"})))
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(s.post("/v1/billing/close", ADMIN, None, json!({})).await.body["closed"], 2);
    let st = s.get("/v1/accounts/cafe/statements/st_2026-11_cafe", token).await;
    assert_eq!(st.status, 200, "{st:?}");
    assert_eq!(
        st.body,
        s.get("/v1/accounts/cafe/statements", ADMIN).await.body["data"][0],
        "as its list shows it"
    );
    assert_eq!(st.body["total"], "3.00", "{st:?}");
    s.get("/v1/accounts/cafe/statements/st_2026-11_other", ADMIN).await.assert_problem(404, "not_found");
    let billed = s.get(&format!("/v1/accounts/cafe/purchases/{pid}"), ADMIN).await;
    assert_eq!(billed.body["status"], "billed", "{billed:?}");
}

/// Item 4's stated limits at their edges: a request head just under 64 KiB
/// is served, one over is refused (431, by hyper); `--max-connections`
/// takes 1 to 100,000.
#[tokio::test]
async fn the_head_size_and_connection_cap_limits_hold_at_their_edges() {
    let db = Db::new();
    let s = Server::start(&db, &[]);
    let head = |filler: usize| {
        let s = &s;
        async move {
            s.client
                .get(format!("{}/healthz", s.base))
                .header("x-filler", "a".repeat(filler))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };
    assert_eq!(head(60 * 1024).await.ok(), Some(200), "a head under 64 KiB is served");
    let over = head(64 * 1024 + 1).await;
    assert!(over.as_ref().is_ok_and(|&st| st == 431) || over.is_err(), "over 64 KiB: {over:?}");
    assert_ne!(over.ok(), Some(200));
    assert_eq!(s.call("GET", "/healthz", None, None, None).await.status, 200, "and the server goes on");
    for bad in ["0", "100001", "lots"] {
        let run = db.run(&["serve", "--listen", "127.0.0.1:0", "--max-connections", bad]);
        assert_eq!((run.code, run.stderr.lines().count()), (2, 1), "--max-connections {bad}: {run:?}");
    }
}
