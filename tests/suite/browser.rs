//! The dashboard in headless Chromium (tests/browser/dashboard.mjs, driven
//! by playwright-core) against the real server with the test clock, set up
//! through the API. Without node, chromium or tests/browser/node_modules it
//! is SKIPPED with a message; under CI (CI=true) that is a failure.

use serde_json::json;

use crate::util::{ADMIN, Db, Server};

const CHROMIUM: &str = "/usr/bin/chromium";

fn browser_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Whether the browser test can run here; under CI it must.
fn runnable() -> bool {
    let node = std::process::Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    let missing: Vec<&str> = [
        (!node).then_some("node"),
        (!std::path::Path::new(CHROMIUM).exists()).then_some(CHROMIUM),
        (!browser_dir().join("node_modules/playwright-core").exists())
            .then_some("tests/browser/node_modules (npm ci)"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(std::env::var("CI").is_err(), "CI must run the browser test; missing: {missing:?}");
    eprintln!("SKIPPED browser test: missing {missing:?}");
    false
}

async fn token(server: &Server, account: &str) -> String {
    let t =
        server.post(&format!("/v1/accounts/{account}/tokens"), ADMIN, None, json!({"label": "web"})).await;
    assert_eq!(t.status, 201, "{t:?}");
    t.body["token"].as_str().expect("a token").to_string()
}

#[tokio::test]
async fn dashboard_in_a_real_browser() {
    if !runnable() {
        return;
    }
    let db = Db::new();
    let server = Server::start(&db, &["--test-clock", "--close-interval-seconds", "0"]);
    for (id, zone) in [("cafe-one", "America/Los_Angeles"), ("other-cafe", "UTC"), ("closed-cafe", "UTC")] {
        let body = json!({"id": id, "name": format!("{id} shop"), "time_zone": zone});
        assert_eq!(server.post("/v1/accounts", ADMIN, None, body).await.status, 201);
    }
    let (mine, other) = (token(&server, "cafe-one").await, token(&server, "other-cafe").await);
    let closed = json!({"status": "closed"});
    let c = server.call("PATCH", "/v1/accounts/closed-cafe", Some(ADMIN), None, Some(closed)).await;
    assert_eq!(c.status, 200, "{c:?}");
    let p =
        server.post("/v1/accounts/cafe-one/purchases", ADMIN, Some("p-1"), json!({"credits": 1200})).await;
    assert_eq!(p.status, 201, "{p:?}");
    let d = server.post("/v1/accounts/cafe-one/debits", ADMIN, Some("d-1"), json!({"credits": 1300})).await;
    assert_eq!(d.status, 201, "{d:?}");
    // Auto-recharge at 900: the hold leaves 850 and buys 1,000 on its own.
    let auto = json!({"auto_recharge": {"threshold": 900, "credits": 1000, "monthly_cap": 0}, "low_balance_threshold": 100});
    let a = server.call("PATCH", "/v1/accounts/cafe-one", Some(ADMIN), None, Some(auto)).await;
    assert_eq!(a.status, 200, "{a:?}");
    let h = server.post("/v1/accounts/cafe-one/holds", ADMIN, Some("h-1"), json!({"credits": 50})).await;
    assert_eq!(h.status, 201, "{h:?}");

    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    let started = std::time::Instant::now();
    let out = std::process::Command::new("node")
        .arg(browser_dir().join("dashboard.mjs"))
        .env("BASE", &server.base)
        .env("ADMIN", ADMIN)
        .env("ACCOUNT", "cafe-one")
        .env("TOKEN", &mine)
        .env("OTHER", "other-cafe")
        .env("OTHER_TOKEN", &other)
        .env("CLOSED", "closed-cafe")
        .env("SHOTS", &shots)
        .output()
        .expect("node runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("browser test took {:?}\n{stdout}{stderr}", started.elapsed());
    assert!(out.status.success(), "the browser test failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

#[tokio::test]
async fn pages_send_the_security_headers_and_refuse_forms_without_csrf() {
    let db = Db::new();
    let server = Server::start(&db, &[]);
    let page = server.client.get(format!("{}/", server.base)).send().await.expect("answers");
    assert_eq!(page.status(), 200);
    let h = page.headers();
    assert!(h["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "same-origin");
    let cookie = h["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && !cookie.contains("Secure"),
        "{cookie}"
    );
    // Behind a TLS proxy the cookie is Secure.
    let tls = server
        .client
        .get(format!("{}/", server.base))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert!(tls.headers()["set-cookie"].to_str().unwrap().contains("; Secure"));
    // Sign-in without the CSRF token of its cookie: 403, no session.
    let forged = server
        .client
        .post(format!("{}/sign-in", server.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={ADMIN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert!(forged.headers().get("set-cookie").is_none());
    // A form body one byte over the limit is refused.
    let big = "x".repeat(textcredits::web::MAX_FORM_BYTES + 1);
    let r = server
        .client
        .post(format!("{}/sign-in", server.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={big}"))
        .send()
        .await
        .unwrap();
    assert!(r.status() == 413 || r.status() == 403, "{}", r.status());
}
