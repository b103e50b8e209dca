//! Webhook endpoints and deliveries as the service sees them: what is
//! stored, what the API shows, and what the delivery worker claims and
//! records. The rows live outside the write pipeline (as tokens do): an
//! event is written with its change; its deliveries are made from it
//! afterwards, so nothing on a request's path waits for a webhook.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::domain::event::EventType;
use crate::ledger::LedgerError;

/// Most endpoints a server keeps (a platform has a few: production,
/// staging, an analytics sink); creating one more is refused.
pub const MAX_ENDPOINTS: usize = 100;

/// Longest endpoint description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 500;

/// How long a rotated-out secret still signs: both signatures are sent.
pub const OLD_SECRET_SIGNS_FOR: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

/// A stored endpoint, secrets included (serialized only into the answer
/// kept with a request's idempotency key: a retried creation or rotation
/// shows the secret it first showed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    pub description: Option<String>,
    /// The types it receives; `None`: every type, present and future.
    pub events: Option<Vec<EventType>>,
    pub enabled: bool,
    pub secret: String,
    /// The secret before the last rotation, and until when it still signs.
    pub old_secret: Option<(String, Timestamp)>,
    /// Why the server disabled it (a 410), if it did.
    pub disabled_reason: Option<String>,
    pub created_at: Timestamp,
}

impl Endpoint {
    pub fn wants(&self, kind: EventType) -> bool {
        self.events.as_ref().is_none_or(|types| types.contains(&kind))
    }

    /// The secrets that sign at `now`: the current one, and the old one for
    /// a day after a rotation.
    pub fn signing_secrets(&self, now: Timestamp) -> Vec<String> {
        let mut secrets = vec![self.secret.clone()];
        if let Some((old, until)) = &self.old_secret
            && now < *until
        {
            secrets.push(old.clone());
        }
        secrets
    }
}

/// The key namespace of the webhook routes' idempotency keys
/// ([`super::RequestKey::scope`]): one key names one request among them.
pub const KEY_SCOPE: &str = "webhooks";

/// A change a webhook route makes: one transaction of the store, with the
/// request's idempotency key when it sent one.
#[derive(Debug, Clone)]
pub enum EndpointChange {
    /// A new endpoint (refused past [`MAX_ENDPOINTS`]).
    Create(Endpoint),
    /// An endpoint overwritten (an update, a rotated secret).
    Save(Endpoint),
    /// One event sent again.
    Redeliver { endpoint: String, event_id: String, now: Timestamp },
    /// Every failed delivery made since `since` sent again.
    Recover { endpoint: String, since: Timestamp, now: Timestamp },
}

impl EndpointChange {
    /// Whether the change reads deliveries the log may not have
    /// materialized the events of (SQLite settles first).
    pub fn reads_deliveries(&self) -> bool {
        matches!(self, EndpointChange::Redeliver { .. } | EndpointChange::Recover { .. })
    }
}

/// What a change did: kept with its key, answered again to a retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Changed {
    /// The endpoint as created or saved.
    Endpoint(Endpoint),
    /// How many deliveries were queued to be sent again.
    Queued(u64),
}

/// An endpoint as the API shows it: never its secret (shown once, at
/// creation and rotation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct EndpointView {
    pub id: String,
    pub url: String,
    pub description: Option<String>,
    /// The event types it receives; null: all of them.
    #[schema(inline)]
    pub events: Option<Vec<EventType>>,
    pub enabled: bool,
    /// Why the server disabled it (it answered 410 Gone), or null.
    pub disabled_reason: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

impl EndpointView {
    pub fn of(e: &Endpoint) -> EndpointView {
        EndpointView {
            id: e.id.clone(),
            url: e.url.clone(),
            description: e.description.clone(),
            events: e.events.clone(),
            enabled: e.enabled,
            disabled_reason: e.disabled_reason.clone(),
            created_at: e.created_at,
        }
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not yet sent, or failed and to be tried again at `next_attempt_at`.
    Pending,
    Succeeded,
    /// Given up after the last step of the retry schedule, or a 410.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        [DeliveryStatus::Pending, DeliveryStatus::Succeeded, DeliveryStatus::Failed]
            .into_iter()
            .find(|d| d.as_str() == s)
    }
}

/// One event's delivery to one endpoint, with its last attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    /// The event's id: the `webhook-id` of every attempt.
    pub id: String,
    pub endpoint_id: String,
    pub account_id: String,
    pub sequence: i64,
    #[schema(inline)]
    pub event_type: EventType,
    #[schema(inline)]
    pub status: DeliveryStatus,
    pub attempts: i64,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_attempt_at: Option<Timestamp>,
    /// The HTTP status of the last attempt (null: no answer).
    pub last_response_status: Option<i64>,
    /// The first 1 KiB of the last answer's body.
    pub last_response_body: Option<String>,
    /// Why the last attempt got no answer (refused, timed out).
    pub last_error: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// Most attempts kept per delivery (the oldest go first): a schedule's
/// steps and a few redeliveries fit.
pub const MAX_ATTEMPTS_KEPT: i64 = 50;

/// One attempt of a delivery: what the receiver answered, or why nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    /// 1 for the first attempt, +1 per attempt (redeliveries included).
    pub attempt: i64,
    pub event_id: String,
    pub endpoint_id: String,
    pub account_id: String,
    #[schema(value_type = String, format = DateTime)]
    pub attempted_at: Timestamp,
    /// The delivery's status after it: `succeeded`, `pending` (to be
    /// retried) or `failed` (given up, or the endpoint answered 410).
    #[schema(inline)]
    pub status: DeliveryStatus,
    /// The HTTP status it got (null: no answer).
    pub response_status: Option<i64>,
    /// The first 1 KiB of the answer's body.
    pub response_body: Option<String>,
    /// Why it got no answer (refused, timed out).
    pub error: Option<String>,
}

/// A delivery's attempts, newest first (at most [`MAX_ATTEMPTS_KEPT`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AttemptList {
    pub data: Vec<AttemptView>,
}

/// A delivery the worker has leased: what to send, where, signed with what.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub endpoint: Endpoint,
    pub account_id: String,
    pub sequence: i64,
    /// The webhook's body: the event as the API shows it.
    pub body: String,
    pub event_id: String,
    /// Attempts made before this one.
    pub attempts: i64,
    pub leased_until: Timestamp,
}

/// What became of an attempt, to record.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: Timestamp,
    pub status: DeliveryStatus,
    /// When to try again (status pending).
    pub next_attempt_at: Option<Timestamp>,
    pub response_status: Option<i64>,
    pub response_body: Option<String>,
    pub error: Option<String>,
    /// The endpoint answered 410: disable it, with this reason.
    pub disable: Option<String>,
}

/// The event types of a subscription, checked: at least one, each known,
/// each once (in the order of [`EventType::ALL`]).
pub fn check_types(names: &[String]) -> Result<Vec<EventType>, LedgerError> {
    if names.is_empty() {
        return Err(LedgerError::invalid(
            "events is empty: name at least one event type, or leave events out for all of them",
        ));
    }
    let mut types = Vec::with_capacity(names.len());
    for n in names {
        let Some(t) = EventType::parse(n) else {
            let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
            return Err(LedgerError::invalid(format!(
                "unknown event type {n:?}: use one of {}",
                known.join(", ")
            )));
        };
        types.push(t);
    }
    types.sort_unstable();
    types.dedup();
    Ok(types)
}

/// A description: at most [`MAX_DESCRIPTION_CHARS`], no control characters.
pub fn check_description(text: &str) -> Result<String, LedgerError> {
    if text.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(LedgerError::invalid(format!(
            "description is longer than {MAX_DESCRIPTION_CHARS} characters"
        )));
    }
    if text.chars().any(char::is_control) {
        return Err(LedgerError::invalid("description holds control characters"));
    }
    Ok(text.to_string())
}
