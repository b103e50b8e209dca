//! Dashboard sessions, kept on the server: the cookie carries only a random
//! id (160 bits), the token stays in memory here and never reaches the
//! browser again after sign-in.
//!
//! A session does not decide who the caller is: every request of a session
//! re-checks its token through the API's own auth path
//! ([`super::signed::Signed`]), so a token that stops being valid (revoked)
//! ends its sessions with no extra work. Sessions live in one process: with
//! several replicas behind a balancer, route a browser to one replica
//! (sticky sessions), or it signs in again.
//!
//! Limits: a session lives [`SESSION_LIFETIME_SECONDS`] from sign-in, by the
//! server's clock (the test clock too); at most [`MAX_SESSIONS`] at once
//! (then sign-in is refused until some end) and [`MAX_SESSIONS_PER_TOKEN`]
//! per token (a new sign-in ends that token's oldest).

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};

use crate::ledger::random_id;

/// How long a session lasts after sign-in: a working day.
pub const SESSION_LIFETIME_SECONDS: i64 = 12 * 3600;

/// Most sessions held at once (each is a few hundred bytes).
pub const MAX_SESSIONS: usize = 10_000;

/// Most sessions of one token: a merchant on a few devices.
pub const MAX_SESSIONS_PER_TOKEN: usize = 8;

/// A message shown once on the next page (after a redirect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    pub ok: bool,
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub token: String,
    /// Every form of this session carries it.
    pub csrf: String,
    pub created_at: Timestamp,
    pub flash: Option<Flash>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("too many people are signed in right now ({MAX_SESSIONS} sessions); try again later")]
pub struct TooManySessions;

#[derive(Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

/// A fresh unguessable value for a session id or a CSRF token.
pub fn secret() -> String {
    format!("{}{}", random_id(), random_id())
}

fn expired(s: &Session, now: Timestamp) -> bool {
    now >= s.created_at + SignedDuration::from_secs(SESSION_LIFETIME_SECONDS)
}

impl Sessions {
    /// Starts a session for `token`; answers its id.
    pub fn create(&self, token: &str, now: Timestamp) -> Result<(String, Session), TooManySessions> {
        let mut all = self.by_id.lock().expect("sessions lock");
        all.retain(|_, s| !expired(s, now));
        let mut same: Vec<(Timestamp, String)> =
            all.iter().filter(|(_, s)| s.token == token).map(|(id, s)| (s.created_at, id.clone())).collect();
        if same.len() >= MAX_SESSIONS_PER_TOKEN {
            same.sort();
            for (_, id) in same.iter().take(same.len() + 1 - MAX_SESSIONS_PER_TOKEN) {
                all.remove(id);
            }
        }
        if all.len() >= MAX_SESSIONS {
            return Err(TooManySessions);
        }
        let session = Session { token: token.to_string(), csrf: secret(), created_at: now, flash: None };
        let id = secret();
        all.insert(id.clone(), session.clone());
        Ok((id, session))
    }

    /// The live session `id`, with its flash message taken out (shown once).
    pub fn get(&self, id: &str, now: Timestamp) -> Option<Session> {
        let mut all = self.by_id.lock().expect("sessions lock");
        let live = all.get(id).is_some_and(|s| !expired(s, now));
        if !live {
            all.remove(id);
            return None;
        }
        let s = all.get_mut(id)?;
        let shown = s.clone();
        s.flash = None;
        Some(shown)
    }

    pub fn set_flash(&self, id: &str, flash: Flash) {
        if let Some(s) = self.by_id.lock().expect("sessions lock").get_mut(id) {
            s.flash = Some(flash);
        }
    }

    pub fn end(&self, id: &str) {
        self.by_id.lock().expect("sessions lock").remove(id);
    }
}

/// Equal secrets, compared in constant time.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    #[test]
    fn a_session_lives_exactly_its_lifetime() {
        let s = Sessions::default();
        let (id, _) = s.create("tok", at(0)).unwrap();
        assert!(s.get(&id, at(SESSION_LIFETIME_SECONDS - 1)).is_some());
        assert!(s.get(&id, at(SESSION_LIFETIME_SECONDS)).is_none());
        // Once gone, it stays gone.
        assert!(s.get(&id, at(0)).is_none());
    }

    #[test]
    fn a_token_keeps_at_most_its_newest_sessions() {
        let s = Sessions::default();
        let ids: Vec<String> =
            (0..MAX_SESSIONS_PER_TOKEN as i64).map(|i| s.create("tok", at(i)).unwrap().0).collect();
        assert!(ids.iter().all(|id| s.get(id, at(100)).is_some()));
        let (newest, _) = s.create("tok", at(200)).unwrap();
        assert!(s.get(&ids[0], at(201)).is_none(), "the oldest ended");
        assert!(ids[1..].iter().all(|id| s.get(id, at(201)).is_some()));
        assert!(s.get(&newest, at(201)).is_some());
    }

    #[test]
    fn sign_in_is_refused_at_the_maximum_until_one_expires() {
        let s = Sessions::default();
        for i in 0..MAX_SESSIONS {
            s.create(&format!("tok-{i}"), at(0)).unwrap();
        }
        assert_eq!(s.create("one-more", at(1)).unwrap_err(), TooManySessions);
        assert!(s.create("one-more", at(SESSION_LIFETIME_SECONDS)).is_ok(), "expired ones make room");
    }

    #[test]
    fn flash_messages_show_once_and_sessions_end() {
        let s = Sessions::default();
        let (id, _) = s.create("tok", at(0)).unwrap();
        s.set_flash(&id, Flash { ok: true, text: "Bought".into() });
        assert_eq!(s.get(&id, at(1)).unwrap().flash.unwrap().text, "Bought");
        assert!(s.get(&id, at(2)).unwrap().flash.is_none());
        s.end(&id);
        assert!(s.get(&id, at(3)).is_none());
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
        assert_ne!(secret(), secret());
        assert_eq!(secret().len(), 32);
    }
}
