//! The idempotency keys of requests outside the write pipeline (the
//! webhook routes; [`crate::ledger::RequestKey`]), SQL once for both
//! databases. In the change's own transaction the key is claimed first
//! (an insert that does nothing if the key is there: on PostgreSQL a
//! second request with the same key waits on the first's row until it
//! commits or rolls back), then the change runs and its answer is kept on
//! the claimed row, or the claim is dropped if the change found nothing
//! to change.

use super::columns::Val;
use crate::ledger::{LedgerError, RequestKey};

/// `$1` scope, `$2` key, `$3` request, `$4` at: 1 row if claimed, 0 if
/// the key is kept already.
pub const CLAIM: &str = "INSERT INTO request_keys (scope, key, request, response, created_at) \
    VALUES ($1, $2, $3, '', $4) ON CONFLICT DO NOTHING";

/// `$1` scope, `$2` key: the kept request and answer.
pub const STORED: &str = "SELECT request, response FROM request_keys WHERE scope = $1 AND key = $2";

/// `$1` the answer, `$2` scope, `$3` key.
pub const KEEP: &str = "UPDATE request_keys SET response = $1 WHERE scope = $2 AND key = $3";

/// `$1` scope, `$2` key.
pub const FORGET: &str = "DELETE FROM request_keys WHERE scope = $1 AND key = $2";

pub fn claim_vals(k: &RequestKey) -> Vec<Val> {
    vec![k.scope.into(), k.key.as_str().into(), k.request.clone().into(), Val::Int(k.at.as_microsecond())]
}

pub fn scope_vals(k: &RequestKey) -> Vec<Val> {
    vec![k.scope.into(), k.key.as_str().into()]
}

/// [`KEEP`]'s parameters: what the change did, as JSON.
pub fn keep_vals<T: serde::Serialize>(k: &RequestKey, answer: &T) -> Result<Vec<Val>, LedgerError> {
    let text = serde_json::to_string(answer).map_err(|e| LedgerError::Internal(e.to_string()))?;
    let mut vals = vec![text.into()];
    vals.extend(scope_vals(k));
    Ok(vals)
}
