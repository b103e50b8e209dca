//! The server's clock: the system clock, or with `--test-clock` a clock an
//! operator moves (`PUT /v1/test-clock`), as Stripe's test clocks do, so a
//! platform can test month ends and billing in minutes.

use std::sync::{Arc, Mutex};

use jiff::Timestamp;

/// The system clock, truncated to the microseconds the stores keep. The
/// edges (this module and the CLI) are the only callers of the real clock.
pub fn system_now() -> Timestamp {
    let t = Timestamp::now();
    Timestamp::from_microsecond(t.as_microsecond()).expect("the clock is within range")
}

#[derive(Clone)]
pub enum Clock {
    System,
    /// Starts at the real time; only moves forward, so no month that has
    /// been billed can receive a new purchase.
    Test(Arc<Mutex<Timestamp>>),
}

impl Clock {
    pub fn test(start: Timestamp) -> Clock {
        Clock::Test(Arc::new(Mutex::new(start)))
    }

    pub fn now(&self) -> Timestamp {
        match self {
            Clock::System => system_now(),
            Clock::Test(t) => *t.lock().expect("clock lock"),
        }
    }

    pub fn is_test(&self) -> bool {
        matches!(self, Clock::Test(_))
    }

    /// Moves the test clock; refuses to go back in time.
    pub fn set(&self, to: Timestamp) -> Result<Timestamp, String> {
        let Clock::Test(t) = self else {
            return Err("the server runs on the system clock".into());
        };
        let mut now = t.lock().expect("clock lock");
        if to < *now {
            return Err(format!("the test clock only moves forward: it is {} and {to} is earlier", *now));
        }
        *now = Timestamp::from_microsecond(to.as_microsecond()).expect("in range");
        Ok(*now)
    }
}
