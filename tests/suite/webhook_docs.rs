//! docs/webhooks.md's receivers work with what the server sends: each code
//! block after a `<!-- tested: LANGUAGE PATH -->` line must be the file at
//! PATH, and each file runs as a real receiver (Python's and Node's
//! `standardwebhooks` libraries) that a delivery signed and sent by
//! `textcredits::events` must pass, one secret and two, while a tampered
//! body must not.
//!
//! The libraries: `standardwebhooks` in the repository's `.venv` (or the
//! Python named by `TEXTCREDITS_WEBHOOK_PYTHON`), and `npm ci` in
//! tests/webhook; `.ci/run` installs both. Without them the test is skipped
//! with a message, except under CI, where it fails.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use textcredits::events::endpoint::EndpointUrl;
use textcredits::events::secret::{Secret, sign};
use textcredits::events::send::{Outcome, Sender};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The tested blocks of docs/webhooks.md: (language, path, code).
fn tested_blocks() -> Vec<(String, String, String)> {
    let doc = std::fs::read_to_string(repo().join("docs/webhooks.md")).unwrap();
    let mut blocks = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix("<!-- tested: ") else { continue };
        let mut words = rest.split_whitespace();
        let (language, path) = (words.next().unwrap().to_string(), words.next().unwrap().to_string());
        let fence = lines.next().unwrap_or_default();
        assert!(fence.starts_with("```"), "a code block right after the marker of {path}");
        let code: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        blocks.push((language, path, code.join("\n") + "\n"));
    }
    blocks
}

#[test]
fn the_docs_show_the_tested_receivers_as_they_are() {
    let blocks = tested_blocks();
    let paths: Vec<&str> = blocks.iter().map(|(_, p, _)| p.as_str()).collect();
    assert_eq!(paths, ["tests/webhook/verify.py", "tests/webhook/verify.mjs"], "the blocks this test knows");
    for (_, path, code) in &blocks {
        let file = std::fs::read_to_string(repo().join(path)).unwrap();
        assert_eq!(code, &file, "docs/webhooks.md's block differs from {path}");
    }
}

/// A tool, or skip (never under CI).
fn required<T>(found: Option<T>, what: &str) -> Option<T> {
    if found.is_none() {
        assert!(std::env::var_os("CI").is_none(), "CI must run this: {what} (.ci/run installs it)");
        eprintln!("SKIPPED: {what} is not installed (see tests/suite/webhook_docs.rs)");
    }
    found
}

fn python() -> Option<PathBuf> {
    let python = std::env::var_os("TEXTCREDITS_WEBHOOK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"));
    let has_library = Command::new(&python)
        .args(["-c", "import standardwebhooks"])
        .output()
        .is_ok_and(|o| o.status.success());
    required(has_library.then_some(python), "Python's standardwebhooks in .venv")
}

fn node() -> Option<PathBuf> {
    let runs = Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    let installed = repo().join("tests/webhook/node_modules/standardwebhooks/package.json").exists();
    required((runs && installed).then(|| PathBuf::from("node")), "node with `npm ci` in tests/webhook")
}

#[tokio::test]
async fn the_python_receiver_accepts_our_deliveries_and_refuses_a_tampered_one() {
    let Some(python) = python() else { return };
    check_receiver(&python, &repo().join("tests/webhook/verify.py")).await;
}

#[tokio::test]
async fn the_node_receiver_accepts_our_deliveries_and_refuses_a_tampered_one() {
    let Some(node) = node() else { return };
    check_receiver(&node, &repo().join("tests/webhook/verify.mjs")).await;
}

/// The receiver process, killed however the test ends.
struct Running(Option<Child>);

impl Running {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("still running")
    }

    /// Kills it and returns what it printed.
    fn stop(mut self) -> std::process::Output {
        let mut child = self.0.take().expect("still running");
        let _ = child.kill();
        child.wait_with_output().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn check_receiver(program: &Path, script: &Path) {
    let secret = Secret::generate();
    let port = free_port();
    let child = Command::new(program)
        .arg(script)
        .env("WEBHOOK_SECRET", secret.reveal())
        .env("PORT", port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut running = Running(Some(child));
    wait_until_listening(&mut running, port).await;
    let base = format!("http://127.0.0.1:{port}/hooks");
    let url = EndpointUrl::parse(&base).unwrap();
    let sender = Sender::new().unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let body = |sequence: u64| {
        serde_json::to_vec(&json!({
            "id": format!("evt_{sequence}"), "type": "purchase.created", "created_at": "2026-11-25T10:00:00Z",
            "account_id": "cafe-1", "sequence": sequence, "data": {"credits": 5000},
        }))
        .unwrap()
    };

    let attempt = sender.send(&url, "evt_1", now, &[&secret], &body(1)).await;
    assert_eq!((attempt.outcome, attempt.status), (Outcome::Succeeded, Some(204)), "{attempt:?}");
    let other = Secret::generate();
    let attempt = sender.send(&url, "evt_2", now, &[&other, &secret], &body(2)).await;
    assert_eq!((attempt.outcome, attempt.status), (Outcome::Succeeded, Some(204)), "a rotation: {attempt:?}");

    // Signed for one body, sent with another.
    let signature = sign(&[&secret], "evt_3", now, &body(3));
    let tampered = reqwest::Client::new()
        .post(&base)
        .header("content-type", "application/json")
        .header("webhook-id", "evt_3")
        .header("webhook-timestamp", now.to_string())
        .header("webhook-signature", signature)
        .body(body(4))
        .send()
        .await
        .unwrap();
    assert_eq!(tampered.status(), 400);
    let attempt = sender.send(&url, "evt_5", now, &[&other], &body(5)).await;
    assert_eq!(attempt.status, Some(400), "signed by a secret the receiver does not hold");

    let output = running.stop();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["purchase.created cafe-1 1", "purchase.created cafe-1 2"]
    );
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port()
}

async fn wait_until_listening(running: &mut Running, port: u16) {
    let started = Instant::now();
    while tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await.is_err() {
        if let Some(status) = running.child().try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(running.child().stderr.as_mut().unwrap(), &mut stderr).unwrap();
            panic!("the receiver exited ({status}):\n{stderr}");
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the receiver did not listen on {port} in 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
