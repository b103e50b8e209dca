//! `textcredits batch`: operations from a JSON-lines file, one answer line
//! each, printed (and flushed) only after the operation is committed.
//!
//! A line is a command of the ledger plus its account and key:
//! `{"account": "cafe-1", "key": "k-1", "op": "debit", "credits": 3}`.
//! With a key on every line, rerunning a batch after a crash applies each
//! line exactly once: done lines answer `"replayed": true`.

use std::io::{BufRead, BufReader, Write as _};
use std::process::ExitCode;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::Failure;
use crate::domain::account::AccountId;
use crate::domain::command::Command;
use crate::ledger::{IdempotencyKey, Ledger, LedgerError, Store};

/// Longest line read, in bytes: far above any command.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

fn parse_line(line: &str) -> Result<(AccountId, Option<IdempotencyKey>, Command), LedgerError> {
    let mut v: Value =
        serde_json::from_str(line).map_err(|e| LedgerError::invalid(format!("not JSON: {e}")))?;
    let obj = v.as_object_mut().ok_or_else(|| LedgerError::invalid("each line must be a JSON object"))?;
    let account = match obj.remove("account") {
        Some(Value::String(s)) => AccountId::parse(&s)?,
        _ => return Err(LedgerError::invalid("missing \"account\" (a string)")),
    };
    let key = match obj.remove("key") {
        Some(Value::String(s)) => Some(IdempotencyKey::parse(&s)?),
        None | Some(Value::Null) => None,
        Some(_) => return Err(LedgerError::invalid("\"key\" must be a string")),
    };
    let command =
        serde_json::from_value(v).map_err(|e| LedgerError::invalid(format!("bad operation: {e}")))?;
    Ok((account, key, command))
}

pub async fn run<S: Store>(ledger: &Ledger<S>, file: &str, now: Timestamp) -> Result<ExitCode, Failure> {
    let reader: Box<dyn BufRead> = if file == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let f =
            std::fs::File::open(file).map_err(|e| Failure::Refused(format!("cannot read {file}: {e}")))?;
        Box::new(BufReader::new(f))
    };
    let mut refused = 0u64;
    let mut stdout = std::io::stdout().lock();
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| Failure::Refused(format!("cannot read line {}: {e}", n + 1)))?;
        if line.trim().is_empty() {
            continue;
        }
        let result = if line.len() > MAX_LINE_BYTES {
            Err(LedgerError::invalid(format!("line longer than {MAX_LINE_BYTES} bytes")))
        } else {
            match parse_line(&line) {
                Ok((account, key, command)) => ledger.execute(&account, command, key, now).await,
                Err(e) => Err(e),
            }
        };
        let answer = match result {
            Ok(done) => {
                json!({"line": n + 1, "ok": true, "replayed": done.replayed, "result": done.outcome.body()})
            }
            Err(e @ (LedgerError::Internal(_) | LedgerError::Unavailable(_))) => {
                return Err(Failure::from(e));
            }
            Err(e) => {
                refused += 1;
                json!({"line": n + 1, "ok": false, "error": e.to_string()})
            }
        };
        let _ = writeln!(stdout, "{answer}");
        let _ = stdout.flush();
    }
    Ok(if refused == 0 { ExitCode::SUCCESS } else { ExitCode::from(2) })
}
