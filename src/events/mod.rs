//! Webhook delivery, the parts that need no store: what the delivery worker
//! calls to sign, send and time one attempt (issue 14). The outbox (the
//! event rows written in the same transaction as each change) and the
//! worker's queue live elsewhere; nothing here touches a database.
//!
//! - [`secret`]: endpoint secrets (`whsec_...`) and the Standard Webhooks
//!   signature (`webhook-signature`), signing and verifying.
//! - [`schedule`]: the retry schedule (`--webhook-retry-schedule`), jitter,
//!   and `Retry-After`.
//! - [`endpoint`]: which endpoint URLs are accepted.
//! - [`send`]: one delivery attempt over HTTP, and what it came to.
//!
//! The wire format follows the Standard Webhooks specification so that a
//! receiver can verify deliveries with its published libraries
//! (docs/webhooks.md shows how, in Python and Node).

pub mod endpoint;
mod error;
pub mod schedule;
pub mod secret;
pub mod send;
pub mod worker;

pub use error::WebhookError;
