//! One delivery attempt (`textcredits::events::send`) against the real
//! receiver of `webhook_receiver`, which verifies every signature on its
//! own: success, failures and what they record, 410, redirects, timeouts,
//! huge and endless answers, `Retry-After`, an outage, a secret rotation.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use textcredits::events::endpoint::EndpointUrl;
use textcredits::events::secret::Secret;
use textcredits::events::send::{Attempt, MAX_RESPONSE_PREFIX_BYTES, Outcome, Sender, USER_AGENT};

use crate::webhook_receiver::{Receiver, Reply};

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn event(sequence: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": format!("evt_{sequence}"),
        "type": "purchase.created",
        "created_at": "2026-11-25T10:00:00Z",
        "account_id": "cafe-1",
        "sequence": sequence,
        "data": {"credits": 5000},
    }))
    .unwrap()
}

/// A receiver accepting one new secret, and that secret.
async fn receiver() -> (Receiver, Secret) {
    let secret = Secret::generate();
    (Receiver::start(&[&secret.reveal()]).await, secret)
}

async fn deliver(sender: &Sender, receiver: &Receiver, secrets: &[&Secret], sequence: u64) -> Attempt {
    let url = EndpointUrl::parse(&receiver.url()).unwrap();
    sender.send(&url, &format!("evt_{sequence}"), now_secs(), secrets, &event(sequence)).await
}

#[tokio::test]
async fn a_2xx_is_success_and_the_receiver_verifies_what_it_got() {
    let (receiver, secret) = receiver().await;
    receiver.set_script([Reply::status(200).body("thanks")]);
    let attempt = deliver(&Sender::new().unwrap(), &receiver, &[&secret], 1).await;
    assert_eq!(
        attempt,
        Attempt {
            outcome: Outcome::Succeeded,
            status: Some(200),
            body_prefix: "thanks".into(),
            retry_after: None,
            error: None
        }
    );
    let events = receiver.events();
    assert_eq!(events.len(), 1);
    let got = &events[0];
    assert_eq!(got.id, "evt_1");
    assert_eq!(got.body["sequence"], 1);
    assert_eq!(got.body["type"], "purchase.created");
    assert_eq!(got.content_type, "application/json");
    assert_eq!(got.user_agent, USER_AGENT);
    assert!(got.signature.starts_with("v1,") && !got.signature.contains(' '), "{}", got.signature);
    assert!(got.timestamp.parse::<i64>().unwrap().abs_diff(now_secs()) < 60);
    // Any 2xx: the default answer is 204.
    let attempt = deliver(&Sender::new().unwrap(), &receiver, &[&secret], 2).await;
    assert_eq!((attempt.outcome, attempt.status), (Outcome::Succeeded, Some(204)));
    assert_eq!(receiver.invalid_signatures(), 0);
}

#[tokio::test]
async fn a_500_fails_with_its_status_and_the_start_of_its_body() {
    let (receiver, secret) = receiver().await;
    receiver.set_script([Reply::status(500).body("database is down"), Reply::status(429)]);
    let sender = Sender::new().unwrap();
    let attempt = deliver(&sender, &receiver, &[&secret], 1).await;
    assert_eq!(attempt.outcome, Outcome::Failed);
    assert_eq!(attempt.status, Some(500));
    assert_eq!(attempt.body_prefix, "database is down");
    assert_eq!(attempt.error, None);
    let attempt = deliver(&sender, &receiver, &[&secret], 1).await;
    assert_eq!((attempt.outcome, attempt.status), (Outcome::Failed, Some(429)));
    // The same event id on the retry.
    let got: Vec<(String, u16)> = receiver.events().into_iter().map(|d| (d.id, d.answered)).collect();
    assert_eq!(got, [("evt_1".to_string(), 500), ("evt_1".to_string(), 429)]);
    assert_eq!(receiver.invalid_signatures(), 0);
}

#[tokio::test]
async fn a_410_is_gone() {
    let (receiver, secret) = receiver().await;
    receiver.set_script([Reply::status(410)]);
    let attempt = deliver(&Sender::new().unwrap(), &receiver, &[&secret], 1).await;
    assert_eq!((attempt.outcome, attempt.status), (Outcome::Gone, Some(410)));
    assert_eq!(receiver.invalid_signatures(), 0);
}

#[tokio::test]
async fn a_redirect_is_a_failure_and_is_not_followed() {
    let (receiver, secret) = receiver().await;
    let target = Receiver::start(&[&secret.reveal()]).await;
    receiver.set_script([Reply::status(302).header("location", &target.url())]);
    let attempt = deliver(&Sender::new().unwrap(), &receiver, &[&secret], 1).await;
    assert_eq!((attempt.outcome, attempt.status), (Outcome::Failed, Some(302)));
    assert_eq!(target.requests(), 0, "the redirect's target received nothing");
    assert_eq!(receiver.invalid_signatures(), 0);
}

#[tokio::test]
async fn a_receiver_slower_than_the_timeout_fails_the_attempt() {
    let (receiver, secret) = receiver().await;
    receiver.set_script([Reply::status(200).after(Duration::from_secs(20))]);
    let sender = Sender::with_timeout(Duration::from_secs(1)).unwrap();
    let started = Instant::now();
    let attempt = deliver(&sender, &receiver, &[&secret], 1).await;
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!((attempt.outcome, attempt.status), (Outcome::Failed, None));
    assert_eq!(attempt.error.as_deref(), Some("timed out after 1 s"));
    assert_eq!(Sender::new().unwrap().timeout(), Duration::from_secs(15));
}

#[tokio::test]
async fn only_the_first_kibibyte_of_an_answer_is_kept() {
    let (receiver, secret) = receiver().await;
    let sender = Sender::new().unwrap();
    // A mebibyte.
    receiver.set_script([Reply::status(500).body(vec![b'x'; 1 << 20])]);
    let attempt = deliver(&sender, &receiver, &[&secret], 1).await;
    assert_eq!(attempt.status, Some(500));
    assert_eq!(attempt.body_prefix, "x".repeat(MAX_RESPONSE_PREFIX_BYTES));
    // A character cut by the limit is left out: 1 + 511 × 2 bytes, then half an é.
    receiver.set_script([Reply::status(500).body(format!("a{}", "é".repeat(600)))]);
    let attempt = deliver(&sender, &receiver, &[&secret], 2).await;
    assert_eq!(attempt.body_prefix, format!("a{}", "é".repeat(511)));
    assert_eq!(attempt.body_prefix.len(), MAX_RESPONSE_PREFIX_BYTES - 1);
    assert_eq!(receiver.invalid_signatures(), 0);
}

#[tokio::test]
async fn reading_stops_at_the_limit_even_if_the_answer_never_ends() {
    let (receiver, secret) = receiver().await;
    // Were the sender to read on, it would wait for the timeout.
    receiver.set_script([Reply::status(200).body(vec![b'y'; 2 * MAX_RESPONSE_PREFIX_BYTES]).endless()]);
    let sender = Sender::with_timeout(Duration::from_secs(10)).unwrap();
    let started = Instant::now();
    let attempt = deliver(&sender, &receiver, &[&secret], 1).await;
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!((attempt.outcome, attempt.error), (Outcome::Succeeded, None));
    assert_eq!(attempt.body_prefix, "y".repeat(MAX_RESPONSE_PREFIX_BYTES));
}

#[tokio::test]
async fn retry_after_is_read_as_seconds_or_a_date() {
    let (receiver, secret) = receiver().await;
    let in_two_minutes = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
    receiver.set_script([
        Reply::status(503).header("retry-after", "3"),
        Reply::status(429).header("retry-after", &in_two_minutes),
        Reply::status(503).header("retry-after", "whenever"),
    ]);
    let sender = Sender::new().unwrap();
    let attempt = deliver(&sender, &receiver, &[&secret], 1).await;
    assert_eq!((attempt.status, attempt.retry_after), (Some(503), Some(Duration::from_secs(3))));
    let attempt = deliver(&sender, &receiver, &[&secret], 1).await;
    let asked = attempt.retry_after.unwrap();
    assert!((Duration::from_secs(115)..=Duration::from_secs(121)).contains(&asked), "{asked:?}");
    let attempt = deliver(&sender, &receiver, &[&secret], 1).await;
    assert_eq!((attempt.status, attempt.retry_after), (Some(503), None));
    assert_eq!(receiver.invalid_signatures(), 0);
}

#[tokio::test]
async fn an_outage_refuses_the_connection_and_a_restart_receives_again() {
    let (mut receiver, secret) = receiver().await;
    let sender = Sender::new().unwrap();
    assert_eq!(deliver(&sender, &receiver, &[&secret], 1).await.outcome, Outcome::Succeeded);
    receiver.stop().await;
    let attempt = deliver(&sender, &receiver, &[&secret], 2).await;
    assert_eq!((attempt.outcome, attempt.status), (Outcome::Failed, None));
    let error = attempt.error.unwrap();
    assert!(error.starts_with("could not connect"), "{error}");
    assert!(error.to_lowercase().contains("refused"), "{error}");
    receiver.restart().await;
    assert_eq!(deliver(&sender, &receiver, &[&secret], 2).await.outcome, Outcome::Succeeded);
    let ids: Vec<String> = receiver.events().into_iter().map(|d| d.id).collect();
    assert_eq!(ids, ["evt_1", "evt_2"]);
    assert_eq!(receiver.invalid_signatures(), 0);
}

#[tokio::test]
async fn during_a_rotation_receivers_with_either_secret_verify() {
    let (old, new) = (Secret::generate(), Secret::generate());
    let sender = Sender::new().unwrap();
    for holds in [&old, &new] {
        let receiver = Receiver::start(&[&holds.reveal()]).await;
        let attempt = deliver(&sender, &receiver, &[&new, &old], 1).await;
        assert_eq!(attempt.outcome, Outcome::Succeeded);
        assert_eq!(receiver.events()[0].signature.split(' ').count(), 2);
        assert_eq!(receiver.invalid_signatures(), 0);
    }
    // The receiver does check: a third secret is refused, and counted.
    let stranger = Receiver::start(&[&Secret::generate().reveal()]).await;
    let attempt = deliver(&sender, &stranger, &[&new, &old], 1).await;
    assert_eq!((attempt.outcome, attempt.status), (Outcome::Failed, Some(401)));
    assert_eq!((stranger.invalid_signatures(), stranger.events().len()), (1, 0));
}
