//! The one error type of the events layer: bad configuration or bad input (a
//! secret, a retry schedule, an endpoint URL), each message a sentence an
//! operator or a merchant can act on. A failed delivery is not an error
//! here: it is an [`Attempt`](super::send::Attempt) with its outcome.

use thiserror::Error;

use super::endpoint::MAX_ENDPOINT_URL_LEN;
use super::schedule::MAX_RETRY_STEPS;
use super::secret::{MAX_SECRET_BYTES, MIN_SECRET_BYTES};

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WebhookError {
    #[error("invalid webhook secret: it must start with `whsec_`")]
    SecretPrefix,
    #[error("invalid webhook secret: the part after `whsec_` is not standard base64 ({0})")]
    SecretBase64(String),
    #[error(
        "invalid webhook secret: it holds {bytes} bytes; use {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} random bytes"
    )]
    SecretLength { bytes: usize },

    #[error("invalid webhook retry schedule: it is empty; give steps such as `5s,5m,30m,2h`")]
    ScheduleEmpty,
    #[error("invalid webhook retry schedule: {steps} steps; at most {MAX_RETRY_STEPS} are allowed")]
    ScheduleTooLong { steps: usize },
    #[error("invalid webhook retry schedule: step {position} `{item}` {reason}")]
    ScheduleStep { position: usize, item: String, reason: String },

    #[error(
        "invalid webhook endpoint URL: it is {len} bytes long; at most {MAX_ENDPOINT_URL_LEN} are allowed"
    )]
    UrlTooLong { len: usize },
    #[error("invalid webhook endpoint URL: it contains whitespace or a control character")]
    UrlWhitespace,
    #[error("invalid webhook endpoint URL: {0}")]
    UrlSyntax(String),
    #[error("invalid webhook endpoint URL: the scheme is `{0}`; use http or https")]
    UrlScheme(String),
    #[error("invalid webhook endpoint URL: it has no host")]
    UrlNoHost,
    #[error(
        "invalid webhook endpoint URL: it carries a user name or password (`user:pass@`); remove them: deliveries are signed, so the receiver needs no password to trust them"
    )]
    UrlUserinfo,
    #[error("invalid webhook endpoint URL: it has a fragment (`#...`), which is never sent; remove it")]
    UrlFragment,

    #[error("the webhook HTTP client could not be built: {0}")]
    Client(String),
}
