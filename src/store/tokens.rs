//! Account tokens' SQL, written once for both databases (`$n` parameters,
//! as [`super::reads`]). Tokens are not ledger rows: they are created,
//! listed, touched (`last_used_at`) and deleted (revoked) outside the write
//! pipeline, each in one statement.
//!
//! Each `$n` first appears in the order of its number: SQLite numbers
//! `$`-parameters by first appearance, PostgreSQL by their digits.

use super::columns::{Cols, opt_ts, ts};
use crate::ledger::{LedgerError, TokenInfo};

/// Most tokens one account may hold (a merchant's devices and
/// integrations); creating one more is refused.
pub const MAX_TOKENS_PER_ACCOUNT: i64 = 100;

/// `$1` account, `$2` token id, `$3` label, `$4` secret hash, `$5` created
/// at: inserts unless the account is missing or holds the most tokens
/// (0 rows: the store then says which).
pub const INSERT: &str = "INSERT INTO account_tokens (account_id, token_id, label, secret_sha256, created_at) \
     SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM accounts WHERE account_id = $1) \
     AND (SELECT count(*) FROM account_tokens WHERE account_id = $1) < $6";

/// `$1` account.
pub const ACCOUNT_EXISTS: &str = "SELECT 1 FROM accounts WHERE account_id = $1";

/// `$1` account, `$2` secret hash: the token with that secret.
pub const BY_SECRET: &str = "SELECT token_id, account_id, label, created_at, last_used_at FROM account_tokens WHERE account_id = $1 AND secret_sha256 = $2";

/// `$1` account: its tokens, newest first (at most [`MAX_TOKENS_PER_ACCOUNT`]).
pub const LIST: &str = "SELECT token_id, account_id, label, created_at, last_used_at FROM account_tokens \
     WHERE account_id = $1 ORDER BY created_at DESC, token_id DESC";

/// `$1` account, `$2` token id.
pub const DELETE: &str = "DELETE FROM account_tokens WHERE account_id = $1 AND token_id = $2";

/// `$1` instant, `$2` account, `$3` token id: records a use (never moves
/// `last_used_at` back).
pub const TOUCH: &str = "UPDATE account_tokens SET last_used_at = $1 \
     WHERE account_id = $2 AND token_id = $3 AND (last_used_at IS NULL OR last_used_at < $1)";

/// The refusal of one token too many.
pub fn too_many() -> LedgerError {
    LedgerError::invalid(format!(
        "an account holds at most {MAX_TOKENS_PER_ACCOUNT} tokens: revoke one it no longer uses first"
    ))
}

/// A token's row as [`LIST`] and [`BY_SECRET`] select it.
pub fn token(r: &impl Cols) -> Result<TokenInfo, String> {
    Ok(TokenInfo {
        id: r.text(0)?,
        account_id: r.text(1)?,
        label: r.text(2)?,
        created_at: ts(r, 3)?,
        last_used_at: opt_ts(r, 4)?,
    })
}
