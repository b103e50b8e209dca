//! Months and their boundaries in an account's own time zone (R2, R3).
//!
//! A month starts at the first instant of its 1st day in the account's zone.
//! Where local midnight does not exist (a DST gap at midnight), that is the
//! first instant after the gap; where it exists twice, the earlier one. jiff
//! resolves both, with the IANA database bundled into the binary so every
//! machine agrees on the rules.

use std::fmt;

use std::sync::OnceLock;

use jiff::tz::{TimeZone, TimeZoneDatabase};
use jiff::{Timestamp, civil};
use serde::{Deserialize, Serialize};

use super::DomainError;

/// The earliest and latest years a month may name: every month of an
/// accepted instant ([`EARLIEST_INSTANT`]..=[`LATEST_INSTANT`]) in every
/// zone (the end of 9000 in UTC is already January 9001 at UTC+14), far
/// inside jiff's range so `next`/`prev` and month ends never fail.
const MIN_YEAR: i16 = 1970;
const MAX_YEAR: i16 = 9001;

/// The first instant accepted from outside (the test clock, `expires_at`,
/// `--now`): a day after the Unix epoch, so that it is 1970 in every zone.
pub const EARLIEST_INSTANT: Timestamp = Timestamp::constant(86_400, 0);
/// The last instant accepted from outside: the end of year 9000 (UTC). Far
/// inside jiff's range (year 9999), so a month, its end and its neighbours
/// exist in every zone for every accepted instant, and a hold's expiry
/// after it too.
pub const LATEST_INSTANT: Timestamp = Timestamp::constant(221_876_927_999, 999_999_000);

/// `t` if it is in the accepted range, else why not (`what` names it).
pub fn accepted_instant(t: Timestamp, what: &str) -> Result<Timestamp, DomainError> {
    if (EARLIEST_INSTANT..=LATEST_INSTANT).contains(&t) {
        Ok(t)
    } else {
        Err(DomainError::invalid(format!(
            "{what} {t} is out of range: instants run from {EARLIEST_INSTANT} to {LATEST_INSTANT}"
        )))
    }
}

/// A calendar month, `YYYY-MM`, in no particular time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Month {
    year: i16,
    month: i8,
}

impl Month {
    pub fn new(year: i16, month: i8) -> Result<Month, DomainError> {
        if !(MIN_YEAR..=MAX_YEAR).contains(&year) || !(1..=12).contains(&month) {
            return Err(DomainError::invalid(format!("month out of range: {year}-{month}")));
        }
        Ok(Month { year, month })
    }

    /// Parses `YYYY-MM`.
    pub fn parse(text: &str) -> Result<Month, DomainError> {
        let bad = || DomainError::invalid(format!("month must be YYYY-MM, got {text:?}"));
        let (y, m) = text.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 || !(y.bytes().chain(m.bytes())).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        Month::new(y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?).map_err(|_| bad())
    }

    /// The month an instant falls in, seen from `zone`.
    pub fn of(instant: Timestamp, zone: &Zone) -> Month {
        let date = instant.to_zoned(zone.tz.clone()).date();
        Month { year: date.year(), month: date.month() }
    }

    pub fn next(self) -> Month {
        if self.month == 12 {
            Month { year: self.year + 1, month: 1 }
        } else {
            Month { year: self.year, month: self.month + 1 }
        }
    }

    pub fn prev(self) -> Month {
        if self.month == 1 {
            Month { year: self.year - 1, month: 12 }
        } else {
            Month { year: self.year, month: self.month - 1 }
        }
    }

    /// The 1st of this month as a civil date.
    pub fn first_day(self) -> civil::Date {
        civil::date(self.year, self.month, 1)
    }

    /// The first instant of this month in `zone`.
    pub fn start(self, zone: &Zone) -> Timestamp {
        // `to_zoned` on a date gives the start of that day: after a DST gap,
        // the earlier of two midnights at a fold.
        self.first_day()
            .to_zoned(zone.tz.clone())
            .expect("months are kept inside jiff's range by Month::new")
            .timestamp()
    }

    /// The first instant of the following month in `zone`: when this
    /// month's free credits expire and its purchases are billed.
    pub fn end(self, zone: &Zone) -> Timestamp {
        self.next().start(zone)
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl TryFrom<String> for Month {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Month::parse(&s)
    }
}

impl From<Month> for String {
    fn from(m: Month) -> String {
        m.to_string()
    }
}

/// A validated IANA time zone with its name.
#[derive(Debug, Clone)]
pub struct Zone {
    name: String,
    tz: TimeZone,
}

impl Zone {
    /// Looks `name` up in the IANA database bundled into the binary, never
    /// the host's files: an account's month boundaries must not depend on
    /// how a server is set up (`localtime` names the host's own zone).
    pub fn parse(name: &str) -> Result<Zone, DomainError> {
        static BUNDLED: OnceLock<TimeZoneDatabase> = OnceLock::new();
        let db = BUNDLED.get_or_init(TimeZoneDatabase::bundled);
        // "Factory" is a placeholder zone of the database, not a place.
        let plausible = !name.is_empty() && name.len() <= 64 && !name.eq_ignore_ascii_case("factory");
        match db.get(name) {
            // Stored under the database's spelling: `utc` and `UTC` are one zone.
            Ok(tz) if plausible => Ok(Zone { name: tz.iana_name().unwrap_or(name).to_string(), tz }),
            _ => Err(DomainError::invalid(format!(
                "unknown time zone {name:?}: use an IANA name such as America/New_York or UTC"
            ))),
        }
    }

    pub fn utc() -> Zone {
        Zone { name: "UTC".to_string(), tz: TimeZone::UTC }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The local calendar date of an instant.
    pub fn date_of(&self, instant: Timestamp) -> civil::Date {
        instant.to_zoned(self.tz.clone()).date()
    }
}

impl PartialEq for Zone {
    fn eq(&self, other: &Zone) -> bool {
        self.name == other.name
    }
}
impl Eq for Zone {}

impl Serialize for Zone {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Zone::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn month_parse_and_display() {
        assert_eq!(Month::parse("2026-11").unwrap().to_string(), "2026-11");
        assert!(Month::parse("9001-01").is_ok(), "the months of accepted instants");
        for bad in ["2026-13", "2026-00", "2026-1", "26-11", "2026/11", "", "abcd-ef", "1969-12", "9002-01"] {
            assert!(Month::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Month::parse("2026-12").unwrap().next().to_string(), "2027-01");
        assert_eq!(Month::parse("2026-01").unwrap().prev().to_string(), "2025-12");
    }

    #[test]
    fn month_start_is_local_midnight() {
        let la = Zone::parse("America/Los_Angeles").unwrap();
        let dec = Month::parse("2026-12").unwrap();
        assert_eq!(dec.start(&la), ts("2026-12-01T08:00:00Z"));
        let tokyo = Zone::parse("Asia/Tokyo").unwrap();
        assert_eq!(dec.start(&tokyo), ts("2026-11-30T15:00:00Z"));
        // In summer, Los Angeles is UTC-7.
        assert_eq!(Month::parse("2026-07").unwrap().start(&la), ts("2026-07-01T07:00:00Z"));
    }

    #[test]
    fn month_of_follows_the_zone() {
        let la = Zone::parse("America/Los_Angeles").unwrap();
        let instant = ts("2026-12-01T07:59:59Z");
        assert_eq!(Month::of(instant, &la).to_string(), "2026-11");
        assert_eq!(Month::of(instant, &Zone::utc()).to_string(), "2026-12");
    }

    #[test]
    fn a_midnight_inside_a_dst_gap_starts_the_month_after_the_gap() {
        // Paraguay began DST on Sunday 2023-10-01 at 00:00, jumping to 01:00:
        // October began at 01:00 -03, which is 04:00 UTC.
        let zone = Zone::parse("America/Asuncion").unwrap();
        let start = Month::parse("2023-10").unwrap().start(&zone);
        assert_eq!(start, ts("2023-10-01T04:00:00Z"));
        assert_eq!(Month::of(start, &zone).to_string(), "2023-10");
        let just_before = start.checked_sub(jiff::SignedDuration::from_secs(1)).unwrap();
        assert_eq!(Month::of(just_before, &zone).to_string(), "2023-09");
    }

    #[test]
    fn unknown_zones_are_rejected() {
        for bad in ["Mars/Olympus", "", "America/New York", "localtime", "posixrules", "Factory"] {
            assert!(Zone::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Zone::parse("Europe/Berlin").is_ok());
        assert_eq!(Zone::parse("america/new_york").unwrap().name(), "America/New_York");
        assert_eq!(Zone::parse("utc").unwrap(), Zone::utc());
    }
}
