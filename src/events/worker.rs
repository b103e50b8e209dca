//! The delivery worker `serve` runs in the background: it turns new events
//! into deliveries, leases the ones due, sends them (at most
//! [`MAX_IN_FLIGHT`] at once, each in its own task, so a slow receiver
//! never holds up the others), and records the attempts that ended since
//! its last turn in one transaction: success, a retry at the next step of
//! the schedule (or later if the receiver's `Retry-After` asks), given up
//! after the last step, or the endpoint disabled on a 410.
//!
//! It runs beside the request path and shares nothing with it but the
//! database: a debit never waits for a webhook. Time here is the wall
//! clock, even under `--test-clock` (receivers check `webhook-timestamp`
//! against theirs). On several replicas each runs one; the store's leases
//! make each attempt one replica's, and a lease that runs out (a replica
//! killed mid-send) lets another send it again: at least once.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::task::JoinSet;

use super::endpoint::EndpointUrl;
use super::schedule::RetrySchedule;
use super::secret::Secret;
use super::send::{Attempt, Outcome, Sender};
use crate::ledger::webhook::{Claimed, DeliveryStatus, Recorded};
use crate::ledger::{LedgerError, Store};

/// How long the worker waits when nothing was due.
pub const IDLE_POLL: Duration = Duration::from_millis(200);

/// Most attempts one worker has in flight at once (a claim takes no more
/// than there is room for).
pub const MAX_IN_FLIGHT: usize = crate::store::webhooks::CLAIM_BATCH as usize;

/// How long a lease lasts beyond the attempt's timeout: the time to record.
const LEASE_MARGIN: Duration = Duration::from_secs(15);

#[derive(Clone)]
pub struct Worker<S> {
    pub store: S,
    pub sender: Sender,
    pub schedule: RetrySchedule,
}

impl<S: Store + Clone + Send + Sync + 'static> Worker<S> {
    /// Runs until the process ends. Sends run in the background, at most
    /// [`MAX_IN_FLIGHT`] at once, so a slow receiver holds up only its own
    /// account's next events (which wait for it by the ordering rule),
    /// never the others'. Errors (the database away) are logged and
    /// retried after a pause; nothing is lost, as every step is a
    /// committed row.
    pub async fn run(self) {
        let mut sending: JoinSet<(Claimed, Recorded)> = JoinSet::new();
        let mut done: Vec<(Claimed, Recorded)> = Vec::new();
        loop {
            while let Some(finished) = sending.try_join_next() {
                collect(finished, &mut done);
            }
            // What ended since the last turn, recorded in one transaction
            // (if that fails, the leases run out and they are sent again).
            if !done.is_empty()
                && let Err(e) = self.store.record(std::mem::take(&mut done)).await
            {
                tracing::warn!(error = %e, "webhook attempts could not be recorded; they are sent again");
            }
            let room = MAX_IN_FLIGHT.saturating_sub(sending.len());
            if room == 0 {
                if let Some(finished) = sending.join_next().await {
                    collect(finished, &mut done);
                }
                continue;
            }
            match self.pass(crate::http::system_now(), room, &mut sending).await {
                Ok(0) => {
                    // Idle until the poll, or until a send ends (its
                    // account's next event may then go).
                    tokio::select! {
                        () = tokio::time::sleep(IDLE_POLL) => {}
                        Some(finished) = sending.join_next() => collect(finished, &mut done),
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "webhook delivery pass failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// One pass: dispatch, then claim what `room` allows and start sending
    /// it into `sending`; how many rows it moved.
    pub async fn pass(
        &self,
        now: Timestamp,
        room: usize,
        sending: &mut JoinSet<(Claimed, Recorded)>,
    ) -> Result<usize, LedgerError> {
        let dispatched = self.store.dispatch(now).await?;
        let lease =
            SignedDuration::try_from(self.sender.timeout() + LEASE_MARGIN).unwrap_or(SignedDuration::MAX);
        let claimed = self.store.claim(now, now + lease, room).await?;
        let n = dispatched + claimed.len();
        for c in claimed {
            let worker = self.clone();
            sending.spawn(async move { worker.deliver(c).await });
        }
        Ok(n)
    }

    /// Sends one attempt; what to record of it.
    async fn deliver(&self, c: Claimed) -> (Claimed, Recorded) {
        let now = crate::http::system_now();
        let secrets: Vec<Secret> =
            c.endpoint.signing_secrets(now).iter().filter_map(|s| Secret::parse(s).ok()).collect();
        let refs: Vec<&Secret> = secrets.iter().collect();
        let attempt = match EndpointUrl::parse(&c.endpoint.url) {
            Ok(url) => self.sender.send(&url, &c.event_id, now.as_second(), &refs, c.body.as_bytes()).await,
            Err(e) => Attempt {
                outcome: Outcome::Failed,
                status: None,
                body_prefix: String::new(),
                retry_after: None,
                error: Some(e.to_string()),
            },
        };
        let at = crate::http::system_now();
        let recorded = outcome_of(&self.schedule, &c, &attempt, at, random_u32());
        tracing::info!(
            endpoint = %c.endpoint.id,
            event = %c.event_id,
            status = ?attempt.status,
            outcome = recorded.status.as_str(),
            "webhook attempt"
        );
        (c, recorded)
    }
}

/// What an attempt comes to (pure): succeeded; failed and retried at the
/// schedule's next step (retry n after n failed attempts); given up after
/// the last; or, on a 410, failed and the endpoint disabled.
pub fn outcome_of(
    schedule: &RetrySchedule,
    c: &Claimed,
    a: &Attempt,
    at: Timestamp,
    random: u32,
) -> Recorded {
    let mut r = Recorded {
        at,
        status: DeliveryStatus::Succeeded,
        next_attempt_at: None,
        response_status: a.status.map(i64::from),
        response_body: a.status.map(|_| a.body_prefix.clone()),
        error: a.error.clone(),
        disable: None,
    };
    match a.outcome {
        Outcome::Succeeded => {}
        Outcome::Gone => {
            r.status = DeliveryStatus::Failed;
            r.disable = Some(format!("the endpoint answered 410 Gone at {at}; enable it again to resume"));
        }
        Outcome::Failed => {
            let retry = u32::try_from(c.attempts + 1).unwrap_or(u32::MAX);
            match schedule.next_delay(retry, random, a.retry_after) {
                Some(delay) => {
                    r.status = DeliveryStatus::Pending;
                    let delay = SignedDuration::try_from(delay).unwrap_or(SignedDuration::MAX);
                    r.next_attempt_at = Some(at.checked_add(delay).unwrap_or(Timestamp::MAX));
                }
                None => r.status = DeliveryStatus::Failed,
            }
        }
    }
    r
}

/// Keeps a finished attempt to record; a send task that failed is logged
/// (its lease runs out and it is sent again).
fn collect(
    finished: Result<(Claimed, Recorded), tokio::task::JoinError>,
    done: &mut Vec<(Claimed, Recorded)>,
) {
    match finished {
        Ok(attempt) => done.push(attempt),
        Err(e) => tracing::error!(error = %e, "a webhook delivery task failed"),
    }
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).expect("the operating system's random source is available");
    u32::from_le_bytes(b)
}
