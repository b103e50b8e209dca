//! The README's examples run as written (issue 12 item 8): each shell block
//! after a `<!-- tested: NAME -->` line runs in bash (`-e`, `-o pipefail`)
//! in a fresh directory, with the built `textcredits` first on the PATH.

use std::path::Path;
use std::process::Command;

/// The blocks marked as tested, by name.
fn tested_blocks() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix("<!-- tested: ") else { continue };
        let name = rest.split_whitespace().next().unwrap().to_string();
        assert_eq!(lines.next(), Some("```sh"), "a shell block right after the marker of {name}");
        let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        blocks.push((name, body.join("\n")));
    }
    blocks
}

fn run(name: &str, script: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = crate::util::bin().parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir.path())
        .env("PATH", path)
        .env_remove("TEXTCREDITS_DATABASE")
        .env_remove("TEXTCREDITS_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the README's {name} block failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn the_readme_blocks_run_as_written() {
    let blocks = tested_blocks();
    let names: Vec<&str> = blocks.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["http", "cli"], "the blocks this test knows");
    for (name, script) in &blocks {
        // The HTTP block runs curl: without it the block is skipped, as the
        // browser and contract tests skip without their tools (never under CI).
        if name == "http" && Command::new("curl").arg("--version").output().is_err() {
            assert!(std::env::var_os("CI").is_none(), "CI must run the README's HTTP block: install curl");
            eprintln!("SKIPPED the README's http block: curl is not installed");
            continue;
        }
        let out = run(name, script);
        let stdout = String::from_utf8_lossy(&out.stdout);
        match name.as_str() {
            // The balance after the debit of 120: 880 of the free 1,000.
            "http" => assert!(stdout.contains(r#""available":880"#), "{stdout}"),
            // The audit's verdict is the last line.
            _ => assert_eq!(stdout.trim_end().lines().last(), Some("audit passed"), "{stdout}"),
        }
    }
}
