//! Store implementations of [`crate::ledger::Store`], chosen by database URL.
//!
//! - `sqlite:PATH` (default `sqlite:textcredits.db`): [`sqlite::SqliteStore`].
//! - `postgres://...`: [`postgres::PgStore`], for several server replicas.

pub mod columns;
pub mod paging;
pub mod pipeline;
pub mod postgres;
pub mod reads;
pub mod request_keys;
pub mod sqlite;
pub mod tokens;
pub mod webhooks;

use std::path::PathBuf;

use crate::ledger::LedgerError;

/// Where the data lives, parsed from a `--database` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

impl DatabaseUrl {
    pub fn parse(url: &str) -> Result<DatabaseUrl, LedgerError> {
        if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            if path.is_empty() {
                return Err(LedgerError::invalid(
                    "sqlite URL needs a file path, as in sqlite:textcredits.db",
                ));
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(url.to_string()));
        }
        Err(LedgerError::invalid(format!(
            "unsupported database URL {url:?}: use sqlite:PATH or postgres://..."
        )))
    }
}
