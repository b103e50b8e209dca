//! Endpoint secrets and the Standard Webhooks signature.
//!
//! A secret is `whsec_` followed by standard base64 (with padding) of the
//! HMAC key: at least [`MIN_SECRET_BYTES`] random bytes, as API.md promises,
//! [`GENERATED_SECRET_BYTES`] when we make one. The signature of one delivery
//! is `v1,` and the base64 of HMAC-SHA256 keyed with those bytes over
//! `"{webhook-id}.{webhook-timestamp}.{body}"`; during a rotation both
//! secrets sign and the `webhook-signature` header holds both entries,
//! space-separated, so a receiver holding either one accepts the delivery.
//!
//! A [`Secret`]'s `Debug` never shows the key (it ends up in logs through
//! any struct that derives `Debug`); [`Secret::reveal`] is the one way out,
//! for showing it to the merchant once and for storing it.
//!
//! [`verify`] is the receiver's side, for our tests and anyone who wants it:
//! it checks signatures only; the freshness of the timestamp (the libraries'
//! five minutes, [`TIMESTAMP_TOLERANCE_SECS`]) needs a clock, so the caller
//! compares with [`timestamp_is_fresh`].

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::WebhookError;

/// What every secret starts with (the Standard Webhooks convention).
pub const SECRET_PREFIX: &str = "whsec_";
/// Fewest key bytes a secret may have: API.md promises at least 24 random
/// bytes (192 bits), and the specification's own example has exactly 24.
pub const MIN_SECRET_BYTES: usize = 24;
/// Most key bytes a secret may have: 64 bytes is SHA-256's block, beyond
/// which HMAC hashes the key down to 32 anyway, so longer keys only add
/// bytes to store and parse.
pub const MAX_SECRET_BYTES: usize = 64;
/// Key bytes of a secret we generate (256 bits, SHA-256's output size).
pub const GENERATED_SECRET_BYTES: usize = 32;
/// Most secrets that sign one delivery: the current one and, during a
/// rotation, the one it replaces.
pub const MAX_SIGNING_SECRETS: usize = 2;
/// Most entries of a `webhook-signature` header that [`verify`] looks at, so
/// a hostile header cannot make it compute without end; we send at most
/// [`MAX_SIGNING_SECRETS`].
pub const MAX_SIGNATURE_ENTRIES: usize = 8;
/// How far a `webhook-timestamp` may be from the receiver's clock, in
/// seconds, either way: the Standard Webhooks libraries' five minutes.
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 5 * 60;
/// The signature scheme we produce and accept (HMAC-SHA256).
const SIGNATURE_VERSION: &str = "v1";

type HmacSha256 = Hmac<Sha256>;

/// An endpoint's signing secret: the raw HMAC key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key: Vec<u8>,
}

impl Secret {
    /// A new secret of [`GENERATED_SECRET_BYTES`] bytes from the operating
    /// system's random source.
    pub fn generate() -> Secret {
        let mut key = vec![0u8; GENERATED_SECRET_BYTES];
        getrandom::fill(&mut key).expect("the operating system's random source is available");
        Secret { key }
    }

    /// Reads `whsec_` + standard base64 (padded) of
    /// [`MIN_SECRET_BYTES`]..=[`MAX_SECRET_BYTES`] bytes.
    pub fn parse(text: &str) -> Result<Secret, WebhookError> {
        let encoded = text.strip_prefix(SECRET_PREFIX).ok_or(WebhookError::SecretPrefix)?;
        // Bound the decoding work before doing it: base64 is 4 characters
        // for every 3 bytes.
        if encoded.len() > MAX_SECRET_BYTES.div_ceil(3) * 4 {
            return Err(WebhookError::SecretLength { bytes: encoded.len() / 4 * 3 });
        }
        let key = STANDARD.decode(encoded).map_err(|e| WebhookError::SecretBase64(e.to_string()))?;
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&key.len()) {
            return Err(WebhookError::SecretLength { bytes: key.len() });
        }
        Ok(Secret { key })
    }

    /// The secret as text (`whsec_...`), to show the merchant once or to
    /// store; the only way the key leaves this type.
    pub fn reveal(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.key))
    }

    fn mac(&self, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC accepts keys of any length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp_secs.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({SECRET_PREFIX}<{} bytes, redacted>)", self.key.len())
    }
}

/// The `webhook-signature` header value: one `v1,<base64>` entry per
/// secret, in the order given, space-separated.
///
/// # Panics
///
/// With no secret or more than [`MAX_SIGNING_SECRETS`]: the caller picks
/// an endpoint's secrets, so that is a programmer error.
pub fn sign(secrets: &[&Secret], msg_id: &str, timestamp_secs: i64, body: &[u8]) -> String {
    assert!(
        (1..=MAX_SIGNING_SECRETS).contains(&secrets.len()),
        "a delivery is signed by 1 to {MAX_SIGNING_SECRETS} secrets, not {}",
        secrets.len()
    );
    let entries: Vec<String> = secrets
        .iter()
        .map(|secret| {
            let tag = secret.mac(msg_id, timestamp_secs, body).finalize().into_bytes();
            format!("{SIGNATURE_VERSION},{}", STANDARD.encode(tag))
        })
        .collect();
    entries.join(" ")
}

/// Whether any `v1` entry of a `webhook-signature` header is the signature
/// of this message by any of `secrets`. Each comparison is constant-time
/// (the `hmac` crate's `verify_slice`), and every pair is compared, so the
/// time taken does not depend on which entry matched. Entries of other
/// versions and malformed ones are skipped, as the specification says;
/// only the first [`MAX_SIGNATURE_ENTRIES`] entries are looked at.
pub fn verify(secrets: &[&Secret], msg_id: &str, timestamp_secs: i64, body: &[u8], header: &str) -> bool {
    let candidates: Vec<Vec<u8>> = header
        .split(' ')
        .take(MAX_SIGNATURE_ENTRIES)
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
        .collect();
    let mut matched = false;
    for secret in secrets {
        let mac = secret.mac(msg_id, timestamp_secs, body);
        for candidate in &candidates {
            matched |= mac.clone().verify_slice(candidate).is_ok();
        }
    }
    matched
}

/// Whether a `webhook-timestamp` is within [`TIMESTAMP_TOLERANCE_SECS`] of
/// `now_secs`, either way (both Unix seconds).
pub fn timestamp_is_fresh(timestamp_secs: i64, now_secs: i64) -> bool {
    timestamp_secs.abs_diff(now_secs) <= TIMESTAMP_TOLERANCE_SECS.unsigned_abs()
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Standard Webhooks example, as the specification's JavaScript
    // library tests it ("sign function works" in
    // libraries/javascript/src/webhook.test.ts), and as Python's hmac
    // computes it independently.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: i64 = 1_614_265_330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn spec_secret() -> Secret {
        Secret::parse(SPEC_SECRET).unwrap()
    }

    #[test]
    fn signs_the_specifications_example() {
        assert_eq!(sign(&[&spec_secret()], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY), SPEC_SIGNATURE);
    }

    #[test]
    fn verifies_the_specifications_example_and_nothing_else() {
        let secret = spec_secret();
        assert!(verify(&[&secret], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, SPEC_SIGNATURE));
        assert!(!verify(&[&secret], SPEC_ID, SPEC_TIMESTAMP, br#"{"test": 2432232315}"#, SPEC_SIGNATURE));
        assert!(!verify(&[&secret], "msg_other", SPEC_TIMESTAMP, SPEC_BODY, SPEC_SIGNATURE));
        assert!(!verify(&[&secret], SPEC_ID, SPEC_TIMESTAMP + 1, SPEC_BODY, SPEC_SIGNATURE));
        assert!(!verify(&[&Secret::generate()], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, SPEC_SIGNATURE));
        for bad in ["", "v1,", "v1,!!!", "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", "v1,g0hM9SsE"] {
            assert!(!verify(&[&secret], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, bad), "{bad}");
        }
    }

    #[test]
    fn during_a_rotation_both_secrets_sign_and_either_verifies() {
        let (old, new) = (spec_secret(), Secret::generate());
        let header = sign(&[&new, &old], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY);
        let entries: Vec<&str> = header.split(' ').collect();
        assert_eq!(entries.len(), 2, "{header}");
        assert_eq!(entries[1], SPEC_SIGNATURE);
        assert!(verify(&[&old], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, &header));
        assert!(verify(&[&new], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, &header));
        assert!(!verify(&[&Secret::generate()], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, &header));
    }

    #[test]
    fn verify_looks_at_the_first_entries_only() {
        let secret = spec_secret();
        let padding = ["v2,x"; MAX_SIGNATURE_ENTRIES - 1].join(" ");
        let last_counted = format!("{padding} {SPEC_SIGNATURE}");
        assert!(verify(&[&secret], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, &last_counted));
        let one_too_far = format!("{padding} v2,x {SPEC_SIGNATURE}");
        assert!(!verify(&[&secret], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, &one_too_far));
    }

    #[test]
    #[should_panic(expected = "1 to 2 secrets, not 3")]
    fn three_signing_secrets_are_a_programmer_error() {
        let s = spec_secret();
        sign(&[&s, &s, &s], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY);
    }

    #[test]
    fn generated_secrets_round_trip_and_differ() {
        let (a, b) = (Secret::generate(), Secret::generate());
        assert_ne!(a, b);
        let text = a.reveal();
        assert!(text.starts_with("whsec_"), "{text}");
        assert_eq!(text.len(), "whsec_".len() + 44, "32 bytes are 44 base64 characters");
        assert_eq!(Secret::parse(&text).unwrap(), a);
        assert_eq!(spec_secret().reveal(), SPEC_SECRET);
    }

    #[test]
    fn debug_never_shows_the_key() {
        let secret = spec_secret();
        let shown = format!("{secret:?} {:?}", Some(&secret));
        assert!(!shown.contains("MfKQ9r8G"), "{shown}");
        assert_eq!(format!("{secret:?}"), "Secret(whsec_<24 bytes, redacted>)");
    }

    #[test]
    fn secret_lengths_at_the_edges() {
        let of = |n: usize| format!("whsec_{}", STANDARD.encode(vec![7u8; n]));
        assert_eq!(Secret::parse(&of(MIN_SECRET_BYTES - 1)), Err(WebhookError::SecretLength { bytes: 23 }));
        assert!(Secret::parse(&of(MIN_SECRET_BYTES)).is_ok());
        assert!(Secret::parse(&of(MAX_SECRET_BYTES)).is_ok());
        assert_eq!(Secret::parse(&of(MAX_SECRET_BYTES + 1)), Err(WebhookError::SecretLength { bytes: 65 }));
        assert!(matches!(Secret::parse(&of(10_000)), Err(WebhookError::SecretLength { .. })));
    }

    #[test]
    fn malformed_secrets_are_refused_with_a_reason() {
        assert_eq!(Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), Err(WebhookError::SecretPrefix));
        assert_eq!(Secret::parse(""), Err(WebhookError::SecretPrefix));
        for bad in
            ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", "whsec_MfKQ9r8G-YqrTwjUPD8ILPZIo2LaLaSw", "whsec_ MfKQ"]
        {
            let err = Secret::parse(bad).unwrap_err();
            assert!(matches!(err, WebhookError::SecretBase64(_)), "{bad}: {err}");
            assert!(err.to_string().contains("not standard base64"), "{err}");
        }
        let short = Secret::parse("whsec_c2hvcnQ=").unwrap_err();
        assert_eq!(short.to_string(), "invalid webhook secret: it holds 5 bytes; use 24 to 64 random bytes");
    }

    #[test]
    fn timestamps_within_five_minutes_either_way_are_fresh() {
        let now = 1_700_000_000;
        assert!(timestamp_is_fresh(now, now));
        assert!(timestamp_is_fresh(now - TIMESTAMP_TOLERANCE_SECS, now));
        assert!(timestamp_is_fresh(now + TIMESTAMP_TOLERANCE_SECS, now));
        assert!(!timestamp_is_fresh(now - TIMESTAMP_TOLERANCE_SECS - 1, now));
        assert!(!timestamp_is_fresh(now + TIMESTAMP_TOLERANCE_SECS + 1, now));
        assert!(!timestamp_is_fresh(i64::MIN, i64::MAX));
    }
}
