//! When a failed delivery is tried again: the retry schedule, its jitter,
//! and the receiver's `Retry-After`.
//!
//! The schedule is the server flag `--webhook-retry-schedule`: the delays
//! before the first, second, ... retry, comma-separated, each a whole
//! number with a unit: `s` (seconds), `m` (minutes), `h` (hours) or `d`
//! (days), such as `5s,5m,30m,2h`. Whole numbers only, no fractions and no
//! milliseconds: a step is at least [`MIN_RETRY_STEP`] and at most
//! [`MAX_RETRY_STEP`], and there are at most [`MAX_RETRY_STEPS`]. After the
//! last step's retry fails, the delivery is given up.
//!
//! Every delay is jittered by up to ±[`JITTER_PERCENT`]% so that deliveries
//! that failed together (an endpoint's outage) do not all come back in the
//! same second. The jitter is pure: the caller hands in a random `u32`, so
//! tests choose it. The arithmetic is on whole milliseconds.
//!
//! A receiver's `Retry-After` (delta-seconds, or an HTTP-date: `httpdate` is
//! already under hyper) can only push a retry later, never sooner, and never
//! past [`MAX_RETRY_STEP`].

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use super::WebhookError;

/// Most steps a schedule may have: a bound on how many times one delivery
/// is tried (the default has 10).
pub const MAX_RETRY_STEPS: usize = 50;
/// Shortest step: a retry sooner than a second is no retry at all.
pub const MIN_RETRY_STEP: Duration = Duration::from_secs(1);
/// Longest step, and the longest any retry is put off (jitter and
/// `Retry-After` included): seven days.
pub const MAX_RETRY_STEP: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// How far a delay is jittered either way, in percent of its step: a retry
/// comes between 80% and 120% of its step (capped at [`MAX_RETRY_STEP`]).
pub const JITTER_PERCENT: u64 = 20;
/// The default schedule: 10 retries. Its steps add up to 99 h 35 min 5 s
/// (358,505 s); with every jitter at its lowest (80%), 79 h 40 min 4 s, so
/// a delivery is retried for at least 72 hours, as API.md promises.
pub const DEFAULT_RETRY_SCHEDULE: &str = "5s,5m,30m,2h,5h,10h,10h,1d,1d,1d";
/// Longest `Retry-After` value read, in bytes: an HTTP-date is 29.
const MAX_RETRY_AFTER_LEN: usize = 64;

/// The delays before each retry, in order (validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    steps: Vec<Duration>,
}

impl RetrySchedule {
    /// Reads a comma-separated list such as `5s,5m,30m,2h` (spaces around
    /// items are allowed).
    pub fn parse(text: &str) -> Result<RetrySchedule, WebhookError> {
        if text.trim().is_empty() {
            return Err(WebhookError::ScheduleEmpty);
        }
        // Count before parsing, so a huge flag is refused without work.
        let count = text.split(',').count();
        if count > MAX_RETRY_STEPS {
            return Err(WebhookError::ScheduleTooLong { steps: count });
        }
        let steps = text
            .split(',')
            .enumerate()
            .map(|(index, item)| {
                parse_step(item.trim()).map_err(|reason| WebhookError::ScheduleStep {
                    position: index + 1,
                    item: item.trim().to_string(),
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RetrySchedule { steps })
    }

    pub fn steps(&self) -> &[Duration] {
        &self.steps
    }

    /// The steps added up: how long a delivery is retried without jitter.
    pub fn total(&self) -> Duration {
        self.steps.iter().sum()
    }

    /// The delay before retry `retry` (1 is the first retry, after the first
    /// attempt failed), jittered by `random` (any `u32`, uniformly drawn:
    /// 0 gives 80% of the step, `u32::MAX` just under 120%); `None` once
    /// the schedule is used up: the delivery is given up.
    pub fn delay_before(&self, retry: u32, random: u32) -> Option<Duration> {
        let index = usize::try_from(retry).ok()?.checked_sub(1)?;
        let step_ms = u64::try_from(self.steps.get(index)?.as_millis()).expect("a step is at most 7 days");
        let low_ms = step_ms * (100 - JITTER_PERCENT) / 100;
        let spread_ms = step_ms * 2 * JITTER_PERCENT / 100;
        // u128: spread (at most 2.9e8 ms) times 2^32 exceeds u64 for long steps.
        let jitter_ms = ((u128::from(spread_ms) * u128::from(random)) >> 32) as u64;
        Some(Duration::from_millis(low_ms + jitter_ms).min(MAX_RETRY_STEP))
    }

    /// The delay before retry `retry`, honouring the receiver's
    /// `Retry-After` if it asked for one: [`RetrySchedule::delay_before`]
    /// combined by [`honour_retry_after`]; `None` means give up (a
    /// `Retry-After` does not extend the schedule).
    pub fn next_delay(&self, retry: u32, random: u32, retry_after: Option<Duration>) -> Option<Duration> {
        let delay = self.delay_before(retry, random)?;
        Some(match retry_after {
            Some(asked) => honour_retry_after(delay, asked),
            None => delay,
        })
    }
}

impl Default for RetrySchedule {
    fn default() -> RetrySchedule {
        RetrySchedule::parse(DEFAULT_RETRY_SCHEDULE).expect("the default schedule is valid")
    }
}

impl FromStr for RetrySchedule {
    type Err = WebhookError;
    fn from_str(text: &str) -> Result<RetrySchedule, WebhookError> {
        RetrySchedule::parse(text)
    }
}

/// Written back in the flag's syntax, each step in its largest whole unit.
impl fmt::Display for RetrySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, step) in self.steps.iter().enumerate() {
            let secs = step.as_secs();
            let (n, unit) = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")]
                .into_iter()
                .find(|(size, _)| secs % size == 0)
                .map(|(size, unit)| (secs / size, unit))
                .expect("1 divides everything");
            write!(f, "{}{n}{unit}", if index == 0 { "" } else { "," })?;
        }
        Ok(())
    }
}

fn parse_step(item: &str) -> Result<Duration, String> {
    let split = item.find(|c: char| !c.is_ascii_digit()).unwrap_or(item.len());
    let (digits, unit) = item.split_at(split);
    if digits.is_empty() || unit.contains(|c: char| c.is_ascii_digit() || c == '.') {
        return Err("is not a whole number followed by s, m, h or d (such as 30m)".to_string());
    }
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "" => return Err("has no unit; add s, m, h or d".to_string()),
        other => return Err(format!("has the unit `{other}`; use s, m, h or d")),
    };
    let too_long = || format!("is longer than the longest step, {}", show(MAX_RETRY_STEP));
    let n: u64 = digits.parse().map_err(|_| too_long())?;
    let step = Duration::from_secs(n.checked_mul(unit_secs).ok_or_else(too_long)?);
    if step < MIN_RETRY_STEP {
        return Err(format!("is shorter than the shortest step, {}", show(MIN_RETRY_STEP)));
    }
    if step > MAX_RETRY_STEP {
        return Err(too_long());
    }
    Ok(step)
}

fn show(limit: Duration) -> String {
    RetrySchedule { steps: vec![limit] }.to_string()
}

/// The later of the schedule's delay and the receiver's `Retry-After`,
/// never more than [`MAX_RETRY_STEP`]: a receiver may slow us down, not
/// hurry us, and cannot park a delivery for longer than a step.
pub fn honour_retry_after(delay: Duration, retry_after: Duration) -> Duration {
    delay.max(retry_after).min(MAX_RETRY_STEP)
}

/// A `Retry-After` header value: delta-seconds (`120`) or an HTTP-date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`, compared with `now`; a date in the
/// past is zero). Capped at [`MAX_RETRY_STEP`]; `None` when the value is
/// neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() || value.len() > MAX_RETRY_AFTER_LEN {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for a u64 is far beyond the cap anyway.
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs).min(MAX_RETRY_STEP));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO).min(MAX_RETRY_STEP))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECS: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn the_default_retries_for_at_least_72_hours_even_with_the_lowest_jitter() {
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.steps().len(), 10);
        assert_eq!(schedule.total(), SECS(99 * 3600 + 35 * 60 + 5));
        assert_eq!(schedule.total(), SECS(358_505));
        let lowest: Duration = (1..=10).map(|n| schedule.delay_before(n, 0).unwrap()).sum();
        assert_eq!(lowest, SECS(79 * 3600 + 40 * 60 + 4));
        assert!(lowest >= SECS(72 * 3600));
        assert_eq!(schedule.to_string(), DEFAULT_RETRY_SCHEDULE);
    }

    #[test]
    fn delays_are_jittered_within_twenty_percent_and_the_schedule_ends() {
        let schedule = RetrySchedule::parse("10s,1h").unwrap();
        assert_eq!(schedule.delay_before(0, 0), None, "retry 0 is the first attempt, not a retry");
        assert_eq!(schedule.delay_before(1, 0), Some(Duration::from_millis(8_000)));
        assert_eq!(schedule.delay_before(1, 1 << 31), Some(Duration::from_millis(10_000)));
        assert_eq!(schedule.delay_before(1, u32::MAX), Some(Duration::from_millis(11_999)));
        assert_eq!(schedule.delay_before(2, 0), Some(SECS(2_880)));
        assert_eq!(schedule.delay_before(2, u32::MAX), Some(Duration::from_millis(4_319_999)));
        assert_eq!(schedule.delay_before(3, 0), None, "given up after the last step");
        assert_eq!(schedule.delay_before(u32::MAX, 0), None);
    }

    #[test]
    fn jitter_never_goes_past_the_longest_step() {
        let schedule = RetrySchedule::parse("7d").unwrap();
        assert_eq!(schedule.delay_before(1, u32::MAX), Some(MAX_RETRY_STEP));
        assert_eq!(schedule.delay_before(1, 0), Some(MAX_RETRY_STEP * 4 / 5));
    }

    #[test]
    fn retry_after_only_postpones_and_is_capped() {
        assert_eq!(honour_retry_after(SECS(10), SECS(3)), SECS(10));
        assert_eq!(honour_retry_after(SECS(10), SECS(30)), SECS(30));
        assert_eq!(honour_retry_after(SECS(10), SECS(30 * 86_400)), MAX_RETRY_STEP);
        let schedule = RetrySchedule::parse("5s").unwrap();
        assert_eq!(schedule.next_delay(1, 1 << 31, Some(SECS(60))), Some(SECS(60)));
        assert_eq!(schedule.next_delay(1, 1 << 31, Some(SECS(1))), Some(SECS(5)));
        assert_eq!(schedule.next_delay(1, 1 << 31, None), Some(SECS(5)));
        assert_eq!(schedule.next_delay(2, 0, Some(SECS(60))), None, "Retry-After does not extend it");
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + SECS(1_445_412_400); // 2015-10-21 07:26:40 UTC
        assert_eq!(parse_retry_after("3", now), Some(SECS(3)));
        assert_eq!(parse_retry_after(" 120 ", now), Some(SECS(120)));
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now), Some(SECS(80)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("604800", now), Some(MAX_RETRY_STEP));
        assert_eq!(parse_retry_after("604801", now), Some(MAX_RETRY_STEP));
        assert_eq!(parse_retry_after("99999999999999999999999", now), Some(MAX_RETRY_STEP));
        for bad in ["", "-1", "1.5", "soon", "3 s", &"9".repeat(MAX_RETRY_AFTER_LEN + 1)] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad}");
        }
        assert_eq!(parse_retry_after(&"9".repeat(MAX_RETRY_AFTER_LEN), now), Some(MAX_RETRY_STEP));
    }

    #[test]
    fn every_unit_parses_and_prints_back() {
        let schedule = RetrySchedule::parse(" 1s, 90s ,2m,3h,4d, 3600s").unwrap();
        assert_eq!(
            schedule.steps(),
            [SECS(1), SECS(90), SECS(120), SECS(3 * 3600), SECS(4 * 86_400), SECS(3600)]
        );
        assert_eq!(schedule.to_string(), "1s,90s,2m,3h,4d,1h");
        assert_eq!("5m".parse::<RetrySchedule>().unwrap().steps(), [SECS(300)]);
    }

    #[test]
    fn steps_at_the_edges() {
        assert!(RetrySchedule::parse("1s").is_ok());
        assert!(RetrySchedule::parse("7d").is_ok());
        assert!(RetrySchedule::parse("168h").is_ok());
        assert!(RetrySchedule::parse("604800s").is_ok());
        let err = RetrySchedule::parse("604801s").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid webhook retry schedule: step 1 `604801s` is longer than the longest step, 7d"
        );
        let err = RetrySchedule::parse("5s,0s").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid webhook retry schedule: step 2 `0s` is shorter than the shortest step, 1s"
        );
        let huge = RetrySchedule::parse("99999999999999999999999d").unwrap_err();
        assert!(huge.to_string().contains("longer than the longest step"), "{huge}");
        let overflow = RetrySchedule::parse("999999999999999999d").unwrap_err();
        assert!(overflow.to_string().contains("longer than the longest step"), "{overflow}");
    }

    #[test]
    fn at_most_fifty_steps() {
        let fifty = vec!["1s"; MAX_RETRY_STEPS].join(",");
        assert_eq!(RetrySchedule::parse(&fifty).unwrap().steps().len(), MAX_RETRY_STEPS);
        let err = RetrySchedule::parse(&format!("{fifty},1s")).unwrap_err();
        assert_eq!(err, WebhookError::ScheduleTooLong { steps: 51 });
        assert_eq!(err.to_string(), "invalid webhook retry schedule: 51 steps; at most 50 are allowed");
    }

    #[test]
    fn malformed_schedules_name_the_bad_item() {
        assert_eq!(RetrySchedule::parse(""), Err(WebhookError::ScheduleEmpty));
        assert_eq!(RetrySchedule::parse("  "), Err(WebhookError::ScheduleEmpty));
        let cases = [
            ("5s,,5m", "step 2 `` is not a whole number followed by s, m, h or d (such as 30m)"),
            ("5s,5m,", "step 3 `` is not a whole number"),
            ("5", "step 1 `5` has no unit; add s, m, h or d"),
            ("5s,500ms", "step 2 `500ms` has the unit `ms`; use s, m, h or d"),
            ("1.5h", "step 1 `1.5h` is not a whole number"),
            ("1h30m", "step 1 `1h30m` is not a whole number"),
            ("-5s", "step 1 `-5s` is not a whole number"),
            ("5 m", "step 1 `5 m` has the unit ` m`"),
            ("h", "step 1 `h` is not a whole number"),
            ("5S", "step 1 `5S` has the unit `S`"),
        ];
        for (text, expected) in cases {
            let err = RetrySchedule::parse(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
