//! The contract test: schemathesis (from PyPI) runs every one of its checks
//! against the served `/openapi.json` with the admin token: no server
//! error, no undocumented status, header or content type, no response that
//! breaks its schema, no request outside the schema accepted and none inside
//! it refused, save the refusals `tests/contract/schemathesis.toml` declares
//! (what the server holds, rules between fields). `tests/contract/hooks.py`
//! sends integers as integers and gives each valid write its own
//! idempotency key.
//!
//! It needs the `st` command: `TEXTCREDITS_SCHEMATHESIS=/path/to/st`, or
//! `.venv/bin/st` in the repository (`python3 -m venv .venv &&
//! .venv/bin/pip install schemathesis==4.32.5`; `.ci/run` does this). Without
//! it the test is skipped with a message, except under CI, where it fails.
//!
//! The generated-client test does what a platform engineer does: it makes
//! a Python client from the served `/openapi.json` with
//! openapi-python-client (`.venv/bin/openapi-python-client`, installed by
//! `.ci/run`) and drives a flow through the generated code
//! (`tests/client/drive.py`).

use std::path::PathBuf;

use serde_json::json;

use crate::util::{ADMIN, Db, Server};

/// A tool from the repository's `.venv`, or skip (never under CI).
fn venv_tool(name: &str) -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin").join(name);
    if path.exists() {
        return Some(path);
    }
    assert!(std::env::var_os("CI").is_none(), "CI must run this: install {name} (.ci/run does)");
    eprintln!("SKIPPED: {name} not installed in .venv (see tests/suite/contract.rs)");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_python_client_drives_the_api() {
    let Some(generator) = venv_tool("openapi-python-client") else { return };
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let db = Db::new();
    let server = Server::start(&db, &[]);
    let spec = server.client.get(format!("{}/openapi.json", server.base)).send().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("openapi.json"), spec.bytes().await.unwrap()).unwrap();
    let (base, out) = (server.base.clone(), dir.path().to_path_buf());
    let (generated, driven) = tokio::task::spawn_blocking(move || {
        let generated = std::process::Command::new(generator)
            .args(["generate", "--meta", "none", "--path"])
            .arg(out.join("openapi.json"))
            .arg("--output-path")
            .arg(out.join("textcredits_client"))
            .current_dir(&out)
            .output()
            .expect("openapi-python-client runs");
        let driven = std::process::Command::new(python)
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/client/drive.py"))
            .args([base.as_str(), ADMIN])
            .arg(&out)
            .output()
            .expect("python runs");
        (generated, driven)
    })
    .await
    .unwrap();
    let text = |o: &std::process::Output| {
        format!("{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };
    assert!(generated.status.success(), "the generator failed:\n{}", text(&generated));
    // Every operation made it into the client but /metrics (not JSON).
    let warnings = text(&generated);
    let skipped = warnings.matches("WARNING parsing").count();
    assert!(
        skipped == 0 || (skipped == 1 && warnings.contains("WARNING parsing GET /metrics")),
        "{warnings}"
    );
    assert!(driven.status.success(), "the generated client:\n{}", text(&driven));
    assert!(text(&driven).contains("generated client: ok"), "{}", text(&driven));
    db.assert_audit();
}

fn schemathesis() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("TEXTCREDITS_SCHEMATHESIS") {
        return Some(PathBuf::from(path));
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/st");
    local.exists().then_some(local)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_contract_violation() {
    let Some(st) = schemathesis() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the contract test: install schemathesis (.ci/run does)"
        );
        eprintln!("SKIPPED contract test: schemathesis not installed (see tests/suite/contract.rs)");
        return;
    };
    let db = Db::new();
    let server = Server::start(&db, &["--test-clock"]);
    for (id, name) in [("cafe-1", "Cafe One"), ("cafe-2", "Cafe Two")] {
        let created = server.post("/v1/accounts", ADMIN, None, json!({"id": id, "name": name})).await;
        assert_eq!(created.status, 201, "{created:?}");
    }
    let bought =
        server.post("/v1/accounts/cafe-1/purchases", ADMIN, Some("seed-1"), json!({"credits": 5000})).await;
    assert_eq!(bought.status, 201, "{bought:?}");
    let contract = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/contract");
    let (config, hooks) = (contract.join("schemathesis.toml"), contract.join("hooks.py"));
    let base = server.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(st)
            .env("SCHEMATHESIS_HOOKS", hooks)
            .arg("--config-file")
            .arg(config)
            .arg("run")
            .arg(format!("{base}/openapi.json"))
            .args(["-H", &format!("Authorization: Bearer {ADMIN}")])
            .args(["--checks", "all"])
            // One worker: with two, hypothesis once failed the run with an
            // internal "AST constructor recursion depth mismatch" (its
            // lambda-source cache), nothing to do with the API.
            .args(["--max-examples", "25", "--workers", "1", "--seed", "20261125", "--no-color"])
            .output()
            .expect("schemathesis runs")
    })
    .await
    .expect("the run finishes");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("passed"), "{report}");
    db.assert_audit();
}
