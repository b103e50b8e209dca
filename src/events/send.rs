//! One delivery attempt: a signed `POST` to an endpoint, and what it came to.
//!
//! A 2xx is success, 410 Gone tells the caller to disable the endpoint, and
//! everything else is a failure to retry: other statuses, redirects (never
//! followed: a receiver that moved says so by changing its endpoint, and a
//! redirect must not carry a signed event to a host the merchant did not
//! name), timeouts and connection errors. An attempt is bounded in time
//! ([`ATTEMPT_TIMEOUT`], from connecting to the last byte read) and in what
//! it reads ([`MAX_RESPONSE_PREFIX_BYTES`] of the answer, however much the
//! receiver sends), so one bad receiver cannot hold a worker for long.
//!
//! The sender only sends: the schedule ([`super::schedule`]) decides when
//! to try again, and the caller records the [`Attempt`].

use std::time::{Duration, UNIX_EPOCH};

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};

use super::WebhookError;
use super::endpoint::EndpointUrl;
use super::schedule::parse_retry_after;
use super::secret::{Secret, sign};

/// How long one attempt may take, from connecting until the answer's status
/// and the start of its body are read: API.md's "a 2xx within 15 seconds".
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long connecting (TCP and TLS) may take, within [`ATTEMPT_TIMEOUT`]:
/// a receiver that cannot even accept in 5 seconds is down.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of an answer's body is kept (and read), in bytes: enough for a
/// receiver's error message on the dashboard, never its megabytes.
pub const MAX_RESPONSE_PREFIX_BYTES: usize = 1_024;
/// The `User-Agent` of every delivery.
pub const USER_AGENT: &str = concat!("textcredits-webhooks/", env!("CARGO_PKG_VERSION"));

/// What an attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer.
    Succeeded,
    /// Anything else but 410: retry by the schedule.
    Failed,
    /// 410 Gone: the receiver asks to be sent nothing more; the caller
    /// disables the endpoint.
    Gone,
}

/// One attempt, as the caller records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub outcome: Outcome,
    /// The answer's status, if one came.
    pub status: Option<u16>,
    /// The first [`MAX_RESPONSE_PREFIX_BYTES`] of the answer's body, as
    /// UTF-8 (invalid sequences replaced, a character cut at the end left
    /// out).
    pub body_prefix: String,
    /// The answer's `Retry-After`, read as delta-seconds or an HTTP-date
    /// (counted from the attempt's timestamp).
    pub retry_after: Option<Duration>,
    /// Why no answer came (or its body broke off): connection refused, a
    /// timeout, a TLS failure.
    pub error: Option<String>,
}

/// Sends deliveries; one per process, shared by the worker's tasks (the
/// client pools connections per host).
#[derive(Debug, Clone)]
pub struct Sender {
    client: reqwest::Client,
    timeout: Duration,
}

impl Sender {
    /// A sender with [`ATTEMPT_TIMEOUT`].
    pub fn new() -> Result<Sender, WebhookError> {
        Sender::with_timeout(ATTEMPT_TIMEOUT)
    }

    /// A sender whose attempts time out after `timeout` (tests use a second).
    pub fn with_timeout(timeout: Duration) -> Result<Sender, WebhookError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| WebhookError::Client(error_chain(&e)))?;
        Ok(Sender { client, timeout })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// One attempt: `body` (the event's JSON) to `url`, signed by `secrets`
    /// (one, or two during a rotation) for `msg_id` (the event id) at
    /// `timestamp_secs` (Unix seconds of this attempt, the wall clock).
    pub async fn send(
        &self,
        url: &EndpointUrl,
        msg_id: &str,
        timestamp_secs: i64,
        secrets: &[&Secret],
        body: &[u8],
    ) -> Attempt {
        let signature = sign(secrets, msg_id, timestamp_secs, body);
        let headers = match delivery_headers(msg_id, timestamp_secs, &signature) {
            Ok(headers) => headers,
            Err(error) => return Attempt::no_answer(error),
        };
        let request = self.client.post(url.as_url().clone()).headers(headers).body(body.to_vec());
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(e) => return Attempt::no_answer(self.describe(&e)),
        };
        let status = response.status();
        // The attempt's timestamp is the wall clock when it started: "now"
        // for an HTTP-date, within the attempt's few seconds, without this
        // layer reading a clock.
        let sent_at = UNIX_EPOCH + Duration::from_secs(u64::try_from(timestamp_secs).unwrap_or(0));
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, sent_at));
        let (prefix, error) = read_prefix(&mut response).await;
        let outcome = match status.as_u16() {
            200..=299 => Outcome::Succeeded,
            410 => Outcome::Gone,
            _ => Outcome::Failed,
        };
        Attempt {
            outcome,
            status: Some(status.as_u16()),
            body_prefix: lossy_prefix(&prefix),
            retry_after,
            error: error.map(|e| format!("the answer's body broke off: {}", self.describe(&e))),
        }
    }

    fn describe(&self, error: &reqwest::Error) -> String {
        if error.is_timeout() {
            return format!("timed out after {} s", self.timeout.as_secs_f64());
        }
        let chain = error_chain(error);
        if error.is_connect() { format!("could not connect: {chain}") } else { chain }
    }
}

impl Attempt {
    fn no_answer(error: String) -> Attempt {
        Attempt {
            outcome: Outcome::Failed,
            status: None,
            body_prefix: String::new(),
            retry_after: None,
            error: Some(error),
        }
    }
}

fn delivery_headers(msg_id: &str, timestamp_secs: i64, signature: &str) -> Result<HeaderMap, String> {
    let value = |name: &str, text: &str| {
        HeaderValue::from_str(text).map_err(|_| format!("the {name} {text:?} cannot be sent as a header"))
    };
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("webhook-id", value("event id", msg_id)?);
    headers.insert("webhook-timestamp", HeaderValue::from(timestamp_secs));
    headers.insert("webhook-signature", value("signature", signature)?);
    Ok(headers)
}

/// Reads at most [`MAX_RESPONSE_PREFIX_BYTES`] of the body, chunk by chunk,
/// and stops: the rest is never read (the connection is dropped with it).
async fn read_prefix(response: &mut reqwest::Response) -> (Vec<u8>, Option<reqwest::Error>) {
    let mut prefix = Vec::with_capacity(MAX_RESPONSE_PREFIX_BYTES);
    while prefix.len() < MAX_RESPONSE_PREFIX_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_RESPONSE_PREFIX_BYTES - prefix.len();
                prefix.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) => break,
            Err(e) => return (prefix, Some(e)),
        }
    }
    (prefix, None)
}

/// UTF-8 from the first bytes of a body: invalid sequences become U+FFFD,
/// and a character cut off by the limit is left out rather than replaced.
fn lossy_prefix(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    let mut rest = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                text.push_str(valid);
                return text;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                text.push_str(&String::from_utf8_lossy(valid));
                let Some(bad_len) = e.error_len() else { return text };
                text.push(char::REPLACEMENT_CHARACTER);
                rest = &after[bad_len..];
            }
        }
    }
}

/// An error and its causes, outermost first: reqwest's own message is
/// "error sending request", the cause ("Connection refused") is below it.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_cut_by_the_limit_is_left_out() {
        assert_eq!(lossy_prefix("abc".as_bytes()), "abc");
        assert_eq!(lossy_prefix(&"é".as_bytes()[..1]), "");
        assert_eq!(lossy_prefix(&"a€".as_bytes()[..3]), "a");
        assert_eq!(lossy_prefix("a€".as_bytes()), "a€");
    }

    #[test]
    fn invalid_bytes_in_the_middle_are_replaced() {
        assert_eq!(lossy_prefix(b"a\xffb"), "a\u{FFFD}b");
        assert_eq!(lossy_prefix(b"\xff\xfe"), "\u{FFFD}\u{FFFD}");
        assert_eq!(lossy_prefix(b"a\xe2\x82b"), "a\u{FFFD}b");
    }

    #[test]
    fn the_user_agent_names_the_version() {
        assert_eq!(USER_AGENT, format!("textcredits-webhooks/{}", env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn headers_that_cannot_be_sent_are_an_error_not_a_panic() {
        assert!(delivery_headers("evt_1", 1, "v1,abc").is_ok());
        let err = delivery_headers("evt\n1", 1, "v1,abc").unwrap_err();
        assert!(err.contains("event id"), "{err}");
    }
}
