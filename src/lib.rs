//! textcredits: the SMS text-marketing credits of many merchant accounts.
//!
//! Layout (each layer depends only on those above it; see ARCHITECTURE.md):
//!
//! - [`domain`]: pure rules: credits, money, months, lots, transitions.
//! - [`ledger`]: the application service: one function per operation, the
//!   store trait it needs, idempotency, audit.
//! - [`store`]: the store implementations (SQLite).
//! - [`http`]: the HTTP API v1 (axum).
//! - [`events`]: webhook delivery: secrets and signatures, the retry
//!   schedule, endpoint URLs, one attempt over HTTP (no store).
//! - [`web`]: the merchant's dashboard (server-rendered HTML over the ledger).
//! - [`bench`]: `textcredits bench`, the measured scenarios and yardsticks.
//! - [`cli`]: the `textcredits` command line, the only place (with `http`)
//!   that reads the clock or the environment.

pub mod bench;
pub mod cli;
pub mod domain;
pub mod events;
pub mod http;
pub mod ledger;
pub mod store;
pub mod web;
