//! Numbers, money, dates and times as people read them on the dashboard:
//! "1,000", "$12.00", "Dec 1", "18:04:12". Every hook of docs/dashboard.md
//! shows its value through these, so a script reads what a person reads.

use jiff::Timestamp;
use jiff::civil::Date;

use crate::domain::money::{Currency, Micros};
use crate::domain::period::Zone;

/// Digits in groups of three: `1234567` is `"1,234,567"`.
pub fn count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let sign = if n < 0 { "-" } else { "" };
    format!("{sign}{}", group(&digits))
}

fn group(digits: &str) -> String {
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An amount as [`Currency::display`] writes it, with its whole part in
/// groups of three: `"$1,200.00"`, `"CHF 5.00"`.
pub fn money(currency: &Currency, amount: impl Into<Micros>) -> String {
    let plain = currency.display(amount.into());
    // The whole part is the first run of digits (a code such as CHF has none).
    let Some(start) = plain.find(|c: char| c.is_ascii_digit()) else {
        return plain;
    };
    let end = plain[start..].find(|c: char| !c.is_ascii_digit()).map_or(plain.len(), |e| start + e);
    format!("{}{}{}", &plain[..start], group(&plain[start..end]), &plain[end..])
}

/// `"Dec 1"`, with the year when it is not `this_year`: `"Jan 14, 2027"`.
pub fn day(date: Date, this_year: i16) -> String {
    let short = date.strftime("%b %-d").to_string();
    if date.year() == this_year { short } else { format!("{short}, {}", date.year()) }
}

/// The local time of day of an instant in `zone`: `"18:04:12"`.
pub fn time_of_day(instant: Timestamp, zone: &Zone) -> String {
    match instant.in_tz(zone.name()) {
        Ok(zoned) => zoned.strftime("%H:%M:%S").to_string(),
        // Zones are validated when stored; this is only a fallback.
        Err(_) => instant.strftime("%H:%M:%S UTC").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(-12_000), "-12,000");
    }

    #[test]
    fn money_is_grouped_and_keeps_its_symbol() {
        let usd = Currency::usd();
        assert_eq!(money(&usd, Micros::from_micros(12_000_000)), "$12.00");
        assert_eq!(money(&usd, Micros::from_micros(1_200_000_000)), "$1,200.00");
        assert_eq!(money(&usd, Micros::from_micros(-3_500_000)), "-$3.50");
        assert_eq!(money(&usd, Micros::from_micros(10_000)), "$0.01");
        let chf = Currency::new("CHF").unwrap();
        assert_eq!(money(&chf, Micros::from_micros(1_000_000_000)), "CHF 1,000.00");
    }

    #[test]
    fn days_name_the_year_only_when_it_differs() {
        let d = jiff::civil::date(2026, 12, 1);
        assert_eq!(day(d, 2026), "Dec 1");
        assert_eq!(day(jiff::civil::date(2027, 1, 14), 2026), "Jan 14, 2027");
    }

    #[test]
    fn times_of_day_are_local() {
        let t: Timestamp = "2026-11-25T02:04:12Z".parse().unwrap();
        assert_eq!(time_of_day(t, &Zone::parse("America/Los_Angeles").unwrap()), "18:04:12");
        assert_eq!(time_of_day(t, &Zone::utc()), "02:04:12");
    }
}
