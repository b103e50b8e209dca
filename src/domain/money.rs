//! Money, exactly: integer micro-units of a currency inside (`$0.01` is
//! 10,000 micros), decimal strings at the edges (`"0.01"`).
//!
//! No float ever touches an amount. Parsing rejects a sign, more than six
//! decimals and anything that would overflow. [`Micros`] is opaque: its
//! only arithmetic is checked, and an amount that would leave the exact
//! range (about ±9.2 trillion units) refuses the operation that causes it.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::DomainError;

/// Micro-units in one unit of currency.
pub const MICROS_PER_UNIT: i64 = 1_000_000;

/// The highest unit price an account may have: $1,000 per credit. With
/// [`super::credits::MAX_CREDITS_PER_OPERATION`] the largest single amount is
/// 10^18 micros, inside `i64`.
pub const MAX_UNIT_PRICE_MICROS: i64 = 1_000 * MICROS_PER_UNIT;

/// Default price of one purchased credit: $0.01.
pub const DEFAULT_UNIT_PRICE_MICROS: i64 = 10_000;

/// An amount of money in micro-units. Negative for refund lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Micros(i64);

/// Why an amount cannot be computed: it would leave the exact range.
fn out_of_range(what: &str) -> DomainError {
    DomainError::invalid(format!(
        "{what} would be beyond the largest amount textcredits keeps exactly ({})",
        Micros(i64::MAX)
    ))
}

impl Micros {
    pub const ZERO: Micros = Micros(0);

    /// An amount as stored (micro-units).
    pub const fn from_micros(micros: i64) -> Micros {
        Micros(micros)
    }

    /// The micro-units, to store.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// Parses a non-negative decimal string with at most six decimals:
    /// `"5"`, `"0.01"`, `"12.345678"`.
    pub fn parse(text: &str) -> Result<Micros, DomainError> {
        Micros::parse_signed(text, false)
    }

    /// Parses a magnitude, negated when `negative`, so that `i64::MIN` (whose
    /// magnitude is not an `i64`) parses too.
    fn parse_signed(text: &str, negative: bool) -> Result<Micros, DomainError> {
        let bad = |why: &str| DomainError::invalid(format!("invalid amount {text:?}: {why}"));
        let (whole, frac) = match text.split_once('.') {
            Some((w, f)) => (w, f),
            None => (text, ""),
        };
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("expected a decimal number such as 0.01, without sign"));
        }
        if text.contains('.') && frac.is_empty() {
            return Err(bad("expected digits after the decimal point"));
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("expected a decimal number such as 0.01, without sign"));
        }
        if frac.len() > 6 {
            return Err(bad("at most 6 decimals"));
        }
        let too_large = || bad("too large");
        let whole: i128 = whole.parse().map_err(|_| too_large())?;
        let mut frac_micros: i128 =
            if frac.is_empty() { 0 } else { frac.parse().map_err(|_| too_large())? };
        for _ in frac.len()..6 {
            frac_micros *= 10;
        }
        let magnitude = whole
            .checked_mul(i128::from(MICROS_PER_UNIT))
            .and_then(|w| w.checked_add(frac_micros))
            .ok_or_else(too_large)?;
        let value = if negative { -magnitude } else { magnitude };
        i64::try_from(value).map(Micros).map_err(|_| too_large())
    }

    /// Parses a unit price: a [`Micros::parse`] amount no higher than
    /// [`MAX_UNIT_PRICE_MICROS`].
    pub fn parse_unit_price(text: &str) -> Result<Micros, DomainError> {
        let price = Micros::parse(text)?;
        if price.0 > MAX_UNIT_PRICE_MICROS {
            return Err(DomainError::invalid(format!(
                "unit price {text} is above the maximum of {}",
                Micros(MAX_UNIT_PRICE_MICROS)
            )));
        }
        Ok(price)
    }

    /// `credits × unit price`, checked.
    pub fn times(self, credits: i64) -> Result<Micros, DomainError> {
        self.0.checked_mul(credits).map(Micros).ok_or_else(|| out_of_range("the amount"))
    }

    pub fn checked_add(self, other: Micros) -> Result<Micros, DomainError> {
        self.0.checked_add(other.0).map(Micros).ok_or_else(|| out_of_range("the total"))
    }

    pub fn checked_sub(self, other: Micros) -> Result<Micros, DomainError> {
        self.0.checked_sub(other.0).map(Micros).ok_or_else(|| out_of_range("the total"))
    }

    pub fn checked_neg(self) -> Result<Micros, DomainError> {
        self.0.checked_neg().map(Micros).ok_or_else(|| out_of_range("the amount"))
    }

    /// The sum of `amounts`, checked.
    pub fn sum(amounts: impl IntoIterator<Item = Micros>) -> Result<Micros, DomainError> {
        amounts.into_iter().try_fold(Micros::ZERO, Micros::checked_add)
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// Rounded half-up (half away from zero, so a refund mirrors its
    /// purchase) to `decimals` decimals (0 to 6), checked.
    pub fn rounded(self, decimals: u32) -> Result<Micros, DomainError> {
        let step = 10i128.pow(6 - decimals.min(6));
        let magnitude = i128::from(self.0).abs();
        let rounded = (magnitude + step / 2) / step * step;
        let signed = if self.0 < 0 { -rounded } else { rounded };
        i64::try_from(signed).map(Micros).map_err(|_| out_of_range("the amount"))
    }

    /// Decimals needed to write it exactly (0 to 6).
    fn decimals_needed(self) -> u32 {
        let mut frac = self.0.unsigned_abs() % MICROS_PER_UNIT as u64;
        let mut n = 6;
        while n > 0 && frac % 10 == 0 {
            frac /= 10;
            n -= 1;
        }
        n
    }
}

/// An amount a merchant is charged, written with exactly its currency's
/// decimals (`"5.00"`, `"¥500"` is `"500"`, BHD `"1.250"`). An amount
/// stored before amounts were rounded keeps the decimals it needs, so it
/// is never shown as other than it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount {
    micros: Micros,
    decimals: u32,
}

impl Amount {
    pub fn micros(self) -> Micros {
        self.micros
    }
}

impl From<Amount> for Micros {
    fn from(a: Amount) -> Micros {
        a.micros
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.micros.0;
        let sign = if m < 0 { "-" } else { "" };
        let abs = m.unsigned_abs();
        let whole = abs / MICROS_PER_UNIT as u64;
        let decimals = self.decimals.max(self.micros.decimals_needed()) as usize;
        if decimals == 0 {
            return write!(f, "{sign}{whole}");
        }
        let frac = format!("{:06}", abs % MICROS_PER_UNIT as u64);
        write!(f, "{sign}{whole}.{}", &frac[..decimals])
    }
}

impl Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Read back (a stored answer) with the decimals it was written with.
impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let magnitude = text.strip_prefix('-');
        let digits = magnitude.unwrap_or(&text);
        let micros = Micros::parse_signed(digits, magnitude.is_some()).map_err(serde::de::Error::custom)?;
        let decimals = digits.split_once('.').map_or(0, |(_, f)| f.len() as u32);
        Ok(Amount { micros, decimals })
    }
}

/// Decimal string with at least two decimals and no trailing zeros beyond
/// them: `5.00`, `0.01`, `0.0125`, `-3.50`.
impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / MICROS_PER_UNIT as u64;
        let frac = format!("{:06}", abs % MICROS_PER_UNIT as u64);
        let frac = frac.trim_end_matches('0');
        let frac = if frac.len() < 2 { &format!("{frac:0<2}") } else { frac };
        write!(f, "{sign}{whole}.{frac}")
    }
}

impl Serialize for Micros {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Micros {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let magnitude = text.strip_prefix('-');
        Micros::parse_signed(magnitude.unwrap_or(&text), magnitude.is_some())
            .map_err(serde::de::Error::custom)
    }
}

/// Active ISO 4217 currency codes (2025), sorted for binary search.
const ISO_4217: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BGN", "BHD",
    "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHF", "CLP", "CNY",
    "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP",
    "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR",
    "IQD", "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT",
    "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR",
    "MVR", "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK",
    "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD",
    "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY",
    "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS", "VES", "VND", "VUV", "WST", "XAF", "XCD", "XCG",
    "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

/// Currencies whose minor unit is not a hundredth (ISO 4217's exponents);
/// every other code of [`ISO_4217`] has 2 decimals.
const NO_DECIMALS: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF",
    "XPF",
];
const THREE_DECIMALS: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];

/// An ISO 4217 currency code, one of [`ISO_4217`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

impl Currency {
    pub fn new(code: &str) -> Result<Currency, DomainError> {
        if ISO_4217.binary_search(&code).is_ok() {
            Ok(Currency(code.to_string()))
        } else {
            Err(DomainError::invalid(format!(
                "currency must be a three-letter ISO 4217 code such as USD, got {code:?}"
            )))
        }
    }

    pub fn usd() -> Currency {
        Currency("USD".to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Decimals of its minor unit (ISO 4217): JPY 0, USD 2, BHD 3.
    pub fn decimals(&self) -> u32 {
        let code = self.0.as_str();
        if NO_DECIMALS.contains(&code) {
            0
        } else if THREE_DECIMALS.contains(&code) {
            3
        } else {
            2
        }
    }

    /// What `credits` at `unit_price` charge: the exact product, rounded
    /// half-up to the minor unit. Checked.
    pub fn charge(&self, unit_price: Micros, credits: i64) -> Result<Micros, DomainError> {
        unit_price.times(credits)?.rounded(self.decimals())
    }

    /// `amount` as it is shown: with this currency's decimals.
    pub fn amount(&self, amount: Micros) -> Amount {
        Amount { micros: amount, decimals: self.decimals() }
    }

    /// How a person reads an amount: `$5.00`, `€5.00`, `CHF 5.00`.
    pub fn display(&self, amount: Micros) -> String {
        let symbol = match self.0.as_str() {
            "USD" => "$",
            "EUR" => "€",
            "GBP" => "£",
            "JPY" => "¥",
            _ => "",
        };
        let text = self.amount(amount).to_string();
        let (sign, abs) = match text.strip_prefix('-') {
            Some(abs) => ("-", abs),
            None => ("", text.as_str()),
        };
        if symbol.is_empty() { format!("{sign}{} {abs}", self.0) } else { format!("{sign}{symbol}{abs}") }
    }
}

impl TryFrom<String> for Currency {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Currency::new(&s)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_decimals() {
        assert_eq!(Micros::parse("0.01").unwrap(), Micros(10_000));
        assert_eq!(Micros::parse("5").unwrap(), Micros(5_000_000));
        assert_eq!(Micros::parse("12.345678").unwrap(), Micros(12_345_678));
        assert_eq!(Micros::parse("0").unwrap(), Micros(0));
    }

    #[test]
    fn rejects_bad_amounts() {
        for bad in [
            "",
            "-0.01",
            "+1",
            "0.0000001",
            "1.",
            ".5",
            "1,00",
            "abc",
            "1e3",
            "9223372036854.775808",
            "99999999999999999999",
        ] {
            assert!(Micros::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn formats_with_two_to_six_decimals() {
        assert_eq!(Micros(5_000_000).to_string(), "5.00");
        assert_eq!(Micros(10_000).to_string(), "0.01");
        assert_eq!(Micros(12_500).to_string(), "0.0125");
        assert_eq!(Micros(-3_500_000).to_string(), "-3.50");
        assert_eq!(Micros(1).to_string(), "0.000001");
    }

    #[test]
    fn format_and_parse_round_trip() {
        for m in [0, 1, 10_000, 12_345_678, 999_999_999_999] {
            assert_eq!(Micros::parse(&Micros(m).to_string()).unwrap(), Micros(m));
        }
    }

    #[test]
    fn unit_price_has_a_ceiling() {
        assert!(Micros::parse_unit_price("1000").is_ok());
        assert!(Micros::parse_unit_price("1000.000001").is_err());
    }

    #[test]
    fn currency_display() {
        assert_eq!(Currency::usd().display(Micros(5_000_000)), "$5.00");
        assert_eq!(Currency::new("CHF").unwrap().display(Micros(-10_000)), "-CHF 0.01");
        assert!(Currency::new("usd").is_err());
        assert!(Currency::new("ZZZ").is_err());
        assert!(Currency::new("EUR").is_ok());
        assert_eq!(Currency::usd().display(Micros(i64::MIN)), "-$9223372036854.775808");
    }

    #[test]
    fn charges_round_half_up_to_the_minor_unit() {
        let c = |code: &str| Currency::new(code).unwrap();
        let price = Micros::parse("0.0075").unwrap();
        // 5 x 0.0075 = 0.0375 -> 0.04; 2 x 0.0075 = 0.015 -> 0.02 (half up).
        assert_eq!(c("USD").charge(price, 5).unwrap(), Micros(40_000));
        assert_eq!(c("USD").charge(price, 2).unwrap(), Micros(20_000));
        assert_eq!(c("USD").charge(price, 1).unwrap(), Micros(10_000));
        assert_eq!(c("USD").charge(Micros(4_999), 1).unwrap(), Micros(0));
        assert_eq!(c("JPY").charge(Micros::parse("1.5").unwrap(), 1).unwrap(), Micros(2_000_000));
        assert_eq!(c("JPY").charge(Micros::parse("1.4999").unwrap(), 1).unwrap(), Micros(1_000_000));
        assert_eq!(c("BHD").charge(Micros::parse("0.0125").unwrap(), 1).unwrap(), Micros(13_000));
        // Half away from zero: a refund line mirrors its purchase.
        assert_eq!(Micros(-15_000).rounded(2).unwrap(), Micros(-20_000));
        assert!(Micros(i64::MAX).rounded(0).is_err());
    }

    #[test]
    fn amounts_show_exactly_the_currency_decimals() {
        let c = |code: &str| Currency::new(code).unwrap();
        assert_eq!(c("USD").amount(Micros(5_000_000)).to_string(), "5.00");
        assert_eq!(c("JPY").amount(Micros(6_000_000_000)).to_string(), "6000");
        assert_eq!(c("BHD").amount(Micros(1_250_000)).to_string(), "1.250");
        assert_eq!(c("USD").amount(Micros(-1_830_000)).to_string(), "-1.83");
        assert_eq!(c("JPY").display(Micros(500_000_000)), "¥500");
        // An unrounded amount stored before rounding is shown as it is.
        assert_eq!(c("USD").amount(Micros(37_500)).to_string(), "0.0375");
        for (code, m) in [("USD", 5_000_000), ("JPY", -3_000_000), ("BHD", 1_250_000), ("USD", 37_500)] {
            let shown = serde_json::to_string(&c(code).amount(Micros(m))).unwrap();
            let back: Amount = serde_json::from_str(&shown).unwrap();
            assert_eq!((back.micros(), back.to_string()), (Micros(m), c(code).amount(Micros(m)).to_string()));
        }
    }

    #[test]
    fn arithmetic_is_checked() {
        assert!(Micros(i64::MAX).checked_add(Micros(1)).is_err());
        assert!(Micros(i64::MIN).checked_neg().is_err());
        assert!(Micros(i64::MIN).checked_sub(Micros(1)).is_err());
        assert!(Micros(1_000_000_000).times(10_000_000_000).is_err());
        assert_eq!(Micros::sum([Micros(1), Micros(2)]).unwrap(), Micros(3));
        assert!(Micros::sum([Micros(i64::MAX), Micros(1), Micros(-5)]).is_err());
    }
}
