//! The webhook side of `debit-many-webhook`: a receiver on loopback that
//! answers 204 and counts, one endpoint subscribed to every event, the
//! delivery worker `serve` runs, and an alert on each account's first
//! debit, so the outbox, the dispatch and the sending all run beside the
//! debits being measured.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use super::scenarios::account_id;
use crate::domain::account::AccountPatch;
use crate::domain::command::Command;
use crate::events::schedule::RetrySchedule;
use crate::events::send::Sender;
use crate::events::worker::Worker;
use crate::ledger::webhook::Endpoint;
use crate::ledger::{Ledger, LedgerError, Store};

/// How long the run waits, after the last debit, for every event to be
/// delivered before it fails.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Receiving {
    received: Arc<AtomicU64>,
    receiver: tokio::task::JoinHandle<()>,
    worker: tokio::task::JoinHandle<()>,
}

impl Receiving {
    /// Sets each account's `low_balance_threshold` above its balance (its
    /// first debit sends `balance.low`), then starts the receiver, the
    /// endpoint and the worker.
    pub async fn start<S: Store + Clone + Send + Sync + 'static>(
        ledger: &Arc<Ledger<S>>,
        accounts: u64,
        now: Timestamp,
    ) -> Result<Receiving, LedgerError> {
        for i in 0..accounts {
            let balance = ledger.balance(&account_id(i), now).await?;
            let patch = AccountPatch { low_balance_threshold: Some(balance.available), ..Default::default() };
            ledger.execute(&account_id(i), Command::UpdateAccount { patch }, None, now).await?;
        }
        let received = Arc::new(AtomicU64::new(0));
        let count = received.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                let count = count.clone();
                async move {
                    count.fetch_add(1, Ordering::Relaxed);
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        let internal =
            |e: std::io::Error| LedgerError::Internal(format!("the bench's webhook receiver: {e}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(internal)?;
        let port = listener.local_addr().map_err(internal)?.port();
        let receiver = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let endpoint = Endpoint {
            id: format!("we_{}", crate::ledger::random_id()),
            url: format!("http://127.0.0.1:{port}/hook"),
            description: Some("bench".into()),
            events: None,
            enabled: true,
            secret: crate::events::secret::Secret::generate().reveal(),
            old_secret: None,
            disabled_reason: None,
            created_at: now,
        };
        ledger
            .store()
            .change_webhooks(crate::ledger::webhook::EndpointChange::Create(endpoint), None)
            .await?;
        let sender = Sender::new().map_err(|e| LedgerError::Internal(e.to_string()))?;
        let schedule = RetrySchedule::parse("1s").map_err(|e| LedgerError::Internal(e.to_string()))?;
        let worker = Worker { store: ledger.store().clone(), sender, schedule };
        let worker = tokio::spawn(worker.run());
        Ok(Receiving { received, receiver, worker })
    }

    /// Waits until the receiver has every account's event, then stops.
    pub async fn finish(self, accounts: u64) -> Result<(), LedgerError> {
        let started = Instant::now();
        while self.received.load(Ordering::Relaxed) < accounts {
            if started.elapsed() > DRAIN_TIMEOUT {
                self.stop();
                return Err(LedgerError::Internal(format!(
                    "debit-many-webhook: {} of {accounts} events delivered after {DRAIN_TIMEOUT:?}",
                    self.received.load(Ordering::Relaxed)
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.stop();
        Ok(())
    }

    fn stop(&self) {
        self.worker.abort();
        self.receiver.abort();
    }
}
