//! Account tokens: `tck_<account id>_<secret>`. The account id in the
//! token routes its check to that account's rows; only the SHA-256 of the
//! secret is stored, so a token is shown once, at creation.

use sha2::{Digest, Sha256};

use super::random_id;
use crate::domain::account::AccountId;

/// The hex SHA-256 of `bytes` (how secrets are stored).
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A new account token: what to show once, and the hash to store.
pub fn new_account_token(account: &AccountId) -> (String, String) {
    let secret = format!("{}{}", random_id(), random_id());
    (format!("tck_{account}_{secret}"), sha256_hex(secret.as_bytes()))
}

/// A token just created: its id, and the token itself (shown once).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    pub id: String,
    pub account_id: String,
    pub token: String,
}
