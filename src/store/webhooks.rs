//! Webhook endpoints' and deliveries' SQL, written once for both databases
//! (`$n` parameters numbered in order of first appearance, as
//! [`super::tokens`]). These rows are outside the write pipeline: the
//! delivery worker makes deliveries from the events not yet dispatched,
//! leases the ones due, sends them and records what happened.
//!
//! Ordering: a delivery is only claimed when no earlier event of the same
//! account is still pending for the same endpoint, so an account's events
//! reach an endpoint in `sequence` order. A lease (`leased_until`) makes
//! each attempt one replica's: on PostgreSQL the claim also skips rows
//! another replica is claiming (`FOR UPDATE SKIP LOCKED`).

use super::columns::{Cols, Val, micros, opt_ts, ts};
use crate::domain::event::EventType;
use crate::ledger::webhook::{AttemptView, DeliveryStatus, DeliveryView, Endpoint};

/// Most events the worker dispatches (turns into deliveries) per pass.
pub const DISPATCH_BATCH: i64 = 500;

/// Most deliveries one worker leases per pass, and has in flight at once.
pub const CLAIM_BATCH: i64 = 64;

/// A claim's `LIMIT`: what the worker has room for, at most a batch.
pub fn claim_limit(room: usize) -> i64 {
    i64::try_from(room).unwrap_or(i64::MAX).clamp(0, CLAIM_BATCH)
}

pub const ENDPOINT_COLS: &str = "endpoint_id, url, description, events, enabled, secret, old_secret, \
    old_secret_until, disabled_reason, created_at";

/// `$1`..`$10` the columns, `$11` the most endpoints: inserts unless there
/// are that many already (0 rows).
pub const INSERT_ENDPOINT: &str = "INSERT INTO webhook_endpoints (endpoint_id, url, description, events, \
    enabled, secret, old_secret, old_secret_until, disabled_reason, created_at) \
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 WHERE (SELECT count(*) FROM webhook_endpoints) < $11";

/// `$1`..`$9` the columns after the id, `$10` the id: overwrites the
/// endpoint (see [`update_vals`]).
pub const UPDATE_ENDPOINT: &str = "UPDATE webhook_endpoints SET url = $1, description = $2, events = $3, \
    enabled = $4, secret = $5, old_secret = $6, old_secret_until = $7, disabled_reason = $8, created_at = $9 \
    WHERE endpoint_id = $10";

/// The parameters of [`UPDATE_ENDPOINT`]: the id last.
pub fn update_vals(e: &Endpoint) -> Vec<Val> {
    let mut vals = endpoint_vals(e);
    vals.rotate_left(1);
    vals
}

pub fn list_endpoints() -> &'static str {
    crate::cached!(format!(
        "SELECT {ENDPOINT_COLS} FROM webhook_endpoints ORDER BY created_at DESC, endpoint_id DESC"
    ))
}

/// `$1` endpoint.
pub fn endpoint_by_id() -> &'static str {
    crate::cached!(format!("SELECT {ENDPOINT_COLS} FROM webhook_endpoints WHERE endpoint_id = $1"))
}

/// `$1` endpoint (its deliveries first, in the same transaction).
pub const DELETE_DELIVERIES: &str = "DELETE FROM webhook_deliveries WHERE endpoint_id = $1";
pub const DELETE_ENDPOINT: &str = "DELETE FROM webhook_endpoints WHERE endpoint_id = $1";

/// `$1` most: events no worker has dispatched yet, oldest of each account
/// first.
pub const UNDISPATCHED: &str = "SELECT account_id, sequence, event_id, type FROM events \
    WHERE dispatched = FALSE ORDER BY account_id, sequence LIMIT $1";

/// `$1` account, `$2` sequence.
pub const MARK_DISPATCHED: &str =
    "UPDATE events SET dispatched = TRUE WHERE account_id = $1 AND sequence = $2";

/// `$1` endpoint, `$2` account, `$3` sequence, `$4` event id, `$5` type,
/// `$6` now.
pub const INSERT_DELIVERY: &str = "INSERT INTO webhook_deliveries (endpoint_id, account_id, sequence, \
    event_id, event_type, status, attempts, next_attempt_at, created_at) \
    VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6) ON CONFLICT DO NOTHING";

/// `$1` now, `$2` most: the deliveries due, each the account's earliest
/// pending one for its endpoint, of enabled endpoints, not leased.
pub const DUE: &str = "SELECT d.endpoint_id, d.account_id, d.sequence, d.attempts FROM webhook_deliveries d \
    WHERE d.status = 'pending' AND d.next_attempt_at <= $1 \
    AND (d.leased_until IS NULL OR d.leased_until <= $1) \
    AND EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.endpoint_id = d.endpoint_id AND e.enabled = TRUE) \
    AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p WHERE p.endpoint_id = d.endpoint_id \
        AND p.account_id = d.account_id AND p.status = 'pending' AND p.sequence < d.sequence) \
    ORDER BY d.next_attempt_at LIMIT $2";

/// [`DUE`] for SQLite, told which indexes to take (`INDEXED BY`): the due
/// pending deliveries in time order, and each one's earlier pending ones
/// through the partial index, so a claim reads neither every pending
/// delivery nor an account's delivered history. PostgreSQL's planner
/// takes them on its own.
pub fn due_sqlite() -> &'static str {
    crate::cached!(
        DUE.replacen("FROM webhook_deliveries d ", "FROM webhook_deliveries d INDEXED BY deliveries_due ", 1)
            .replacen(
                "FROM webhook_deliveries p ",
                "FROM webhook_deliveries p INDEXED BY deliveries_pending ",
                1
            )
    )
}

/// `$1` leased until, `$2` endpoint, `$3` account, `$4` sequence.
pub const LEASE: &str = "UPDATE webhook_deliveries SET leased_until = $1 \
    WHERE endpoint_id = $2 AND account_id = $3 AND sequence = $4";

/// `$1` account, `$2` sequence: the event as the API shows it.
pub fn event_row() -> &'static str {
    crate::cached!(super::columns::EVENTS.select("WHERE account_id = $1 AND sequence = $2"))
}

/// Records an attempt: `$1` status, `$2` next attempt, `$3` at, `$4`
/// response status, `$5` response body, `$6` error, `$7` endpoint, `$8`
/// account, `$9` sequence, `$10` the lease it was sent under (an attempt
/// whose lease ran out and was taken over records nothing).
pub const RECORD: &str = "UPDATE webhook_deliveries SET status = $1, next_attempt_at = $2, \
    last_attempt_at = $3, last_response_status = $4, last_response_body = $5, last_error = $6, \
    attempts = attempts + 1, leased_until = NULL \
    WHERE endpoint_id = $7 AND account_id = $8 AND sequence = $9 AND leased_until = $10";

/// `$1` endpoint, `$2` account, `$3` sequence, `$4` attempt, `$5` event
/// id, `$6` at, `$7` status after it, `$8` response status, `$9` response
/// body, `$10` error: the attempt's own row (see [`attempt_vals`]).
pub const INSERT_ATTEMPT: &str = "INSERT INTO webhook_attempts (endpoint_id, account_id, sequence, attempt, \
    event_id, attempted_at, status, response_status, response_body, error) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING";

/// `$1` endpoint, `$2` account, `$3` sequence, `$4` the oldest attempt
/// kept.
pub const TRIM_ATTEMPTS: &str = "DELETE FROM webhook_attempts \
    WHERE endpoint_id = $1 AND account_id = $2 AND sequence = $3 AND attempt < $4";

/// `$1` endpoint (deleted with it).
pub const DELETE_ATTEMPTS: &str = "DELETE FROM webhook_attempts WHERE endpoint_id = $1";

/// `$1` endpoint, `$2` event id: whether the endpoint has that delivery.
pub const HAS_DELIVERY: &str =
    "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1 AND event_id = $2";

/// `$1` endpoint, `$2` event id: its attempts, newest first.
pub const ATTEMPTS: &str = "SELECT attempt, event_id, endpoint_id, account_id, attempted_at, status, \
    response_status, response_body, error FROM webhook_attempts \
    WHERE endpoint_id = $1 AND event_id = $2 ORDER BY attempt DESC";

/// The parameters of [`INSERT_ATTEMPT`], and of [`TRIM_ATTEMPTS`] (whose
/// fourth is the oldest attempt kept) once the delivery has more attempts
/// than are kept: the attempt is the one after those the delivery had
/// when claimed.
pub fn attempt_vals(
    c: &crate::ledger::webhook::Claimed,
    r: &crate::ledger::webhook::Recorded,
) -> (Vec<Val>, Option<Vec<Val>>) {
    let attempt = c.attempts + 1;
    let key = |n: i64| -> Vec<Val> {
        vec![c.endpoint.id.clone().into(), c.account_id.clone().into(), c.sequence.into(), n.into()]
    };
    let mut insert = key(attempt);
    insert.extend([
        c.event_id.clone().into(),
        micros(r.at).into(),
        r.status.as_str().into(),
        r.response_status.into(),
        r.response_body.clone().into(),
        r.error.clone().into(),
    ]);
    let kept = crate::ledger::webhook::MAX_ATTEMPTS_KEPT;
    (insert, (attempt > kept).then(|| key(attempt - kept + 1)))
}

pub fn attempt(r: &impl Cols) -> Result<AttemptView, String> {
    let status = r.text(5)?;
    Ok(AttemptView {
        attempt: r.int(0)?,
        event_id: r.text(1)?,
        endpoint_id: r.text(2)?,
        account_id: r.text(3)?,
        attempted_at: ts(r, 4)?,
        status: DeliveryStatus::parse(&status).ok_or_else(|| format!("delivery status {status:?}"))?,
        response_status: r.opt_int(6)?,
        response_body: r.opt_text(7)?,
        error: r.opt_text(8)?,
    })
}

/// `$1` reason, `$2` endpoint.
pub const DISABLE: &str =
    "UPDATE webhook_endpoints SET enabled = FALSE, disabled_reason = $1 WHERE endpoint_id = $2";

/// `$1` now, `$2` endpoint, `$3` event id: sends it again.
pub const REDELIVER: &str = "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $1, \
    leased_until = NULL WHERE endpoint_id = $2 AND event_id = $3";

/// `$1` now, `$2` endpoint, `$3` since: every failed delivery made since.
pub const RECOVER: &str = "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $1, \
    leased_until = NULL WHERE endpoint_id = $2 AND status = 'failed' AND created_at >= $3";

const DELIVERY_COLS: &str = "event_id, endpoint_id, account_id, sequence, event_type, status, attempts, \
    next_attempt_at, last_attempt_at, last_response_status, last_response_body, last_error, created_at";

/// `$1` endpoint, `$2` status or NULL, `$3`/`$4` the cursor (created at,
/// event id), `$5` limit: newest first.
pub fn deliveries() -> &'static str {
    crate::cached!(format!(
        "SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE endpoint_id = $1 \
         AND (CAST($2 AS TEXT) IS NULL OR status = $2) AND (created_at, event_id) < ($3, $4) \
         ORDER BY created_at DESC, event_id DESC LIMIT $5"
    ))
}

pub fn too_many() -> crate::ledger::LedgerError {
    crate::ledger::LedgerError::invalid(format!(
        "at most {} webhook endpoints: delete one that is no longer used first",
        crate::ledger::webhook::MAX_ENDPOINTS
    ))
}

/// Whether `e` takes events of the stored type `kind`.
pub fn wants(e: &Endpoint, kind: &str) -> bool {
    EventType::parse(kind).is_some_and(|k| e.wants(k))
}

/// The parameters of [`INSERT_DELIVERY`].
pub fn delivery_vals(
    endpoint: &str,
    account: &str,
    sequence: i64,
    event_id: &str,
    kind: &str,
    now: jiff::Timestamp,
) -> Vec<Val> {
    vec![endpoint.into(), account.into(), sequence.into(), event_id.into(), kind.into(), micros(now).into()]
}

/// A leased delivery with the body it sends: the event as the API shows it.
pub fn claimed(
    endpoint: Endpoint,
    account: &str,
    event: crate::domain::event::Event,
    attempts: i64,
    leased_until: jiff::Timestamp,
) -> crate::ledger::webhook::Claimed {
    let view = crate::domain::event::EventView::of(account, &event);
    crate::ledger::webhook::Claimed {
        endpoint,
        account_id: account.to_string(),
        sequence: event.sequence,
        body: serde_json::to_string(&view).expect("views serialize"),
        event_id: event.id,
        attempts,
        leased_until,
    }
}

/// The parameters of [`deliveries`].
pub fn deliveries_vals(
    endpoint: &str,
    status: Option<DeliveryStatus>,
    page: &crate::ledger::PageRequest,
) -> Result<Vec<Val>, crate::ledger::LedgerError> {
    let (t, id) = cursor(page.cursor.as_deref())?;
    Ok(vec![
        endpoint.into(),
        status.map(|s| s.as_str()).into(),
        t.into(),
        id.into(),
        Val::Int(page.limit as i64 + 1),
    ])
}

pub fn deliveries_page(
    items: Vec<DeliveryView>,
    page: &crate::ledger::PageRequest,
) -> crate::domain::view::Page<DeliveryView> {
    super::paging::page(items, page.limit, cursor_of, Clone::clone)
}

pub fn endpoint(r: &impl Cols) -> Result<Endpoint, String> {
    let events = match r.opt_text(3)? {
        None => None,
        Some(text) => {
            let names: Vec<String> = serde_json::from_str(&text).map_err(|e| format!("events: {e}"))?;
            let types = names.iter().map(|n| EventType::parse(n).ok_or_else(|| format!("event type {n:?}")));
            Some(types.collect::<Result<Vec<_>, _>>()?)
        }
    };
    let old_secret = match (r.opt_text(6)?, opt_ts(r, 7)?) {
        (Some(s), Some(until)) => Some((s, until)),
        _ => None,
    };
    Ok(Endpoint {
        id: r.text(0)?,
        url: r.text(1)?,
        description: r.opt_text(2)?,
        events,
        enabled: r.flag(4)?,
        secret: r.text(5)?,
        old_secret,
        disabled_reason: r.opt_text(8)?,
        created_at: ts(r, 9)?,
    })
}

pub fn endpoint_vals(e: &Endpoint) -> Vec<Val> {
    let events = e
        .events
        .as_ref()
        .map(|t| serde_json::to_string(&t.iter().map(|t| t.as_str()).collect::<Vec<_>>()).expect("strings"));
    vec![
        e.id.clone().into(),
        e.url.clone().into(),
        e.description.clone().into(),
        events.into(),
        e.enabled.into(),
        e.secret.clone().into(),
        e.old_secret.as_ref().map(|(s, _)| s.clone()).into(),
        e.old_secret.as_ref().map(|(_, until)| micros(*until)).into(),
        e.disabled_reason.clone().into(),
        micros(e.created_at).into(),
    ]
}

pub fn delivery(r: &impl Cols) -> Result<DeliveryView, String> {
    let kind = r.text(4)?;
    let status = r.text(5)?;
    Ok(DeliveryView {
        id: r.text(0)?,
        endpoint_id: r.text(1)?,
        account_id: r.text(2)?,
        sequence: r.int(3)?,
        event_type: EventType::parse(&kind).ok_or_else(|| format!("event type {kind:?}"))?,
        status: DeliveryStatus::parse(&status).ok_or_else(|| format!("delivery status {status:?}"))?,
        attempts: r.int(6)?,
        next_attempt_at: opt_ts(r, 7)?,
        last_attempt_at: opt_ts(r, 8)?,
        last_response_status: r.opt_int(9)?,
        last_response_body: r.opt_text(10)?,
        last_error: r.opt_text(11)?,
        created_at: ts(r, 12)?,
    })
}

/// The parameters of [`RECORD`].
pub fn record_vals(c: &crate::ledger::webhook::Claimed, r: &crate::ledger::webhook::Recorded) -> Vec<Val> {
    vec![
        r.status.as_str().into(),
        r.next_attempt_at.map(micros).into(),
        micros(r.at).into(),
        r.response_status.into(),
        r.response_body.clone().into(),
        r.error.clone().into(),
        c.endpoint.id.clone().into(),
        c.account_id.clone().into(),
        c.sequence.into(),
        micros(c.leased_until).into(),
    ]
}

/// `(created_at, event_id)` of a deliveries cursor, or the start.
pub fn cursor(c: Option<&str>) -> Result<(i64, String), crate::ledger::LedgerError> {
    match c {
        Some(c) => super::paging::split_cursor(c),
        None => Ok((i64::MAX, String::new())),
    }
}

pub fn cursor_of(d: &DeliveryView) -> String {
    format!("{}:{}", micros(d.created_at), d.id)
}
