//! Accounts: one merchant each, with its own time zone, free allowance, unit
//! price and limits. The ids are chosen by the platform (its merchant ids),
//! so they are validated strictly: `[A-Za-z0-9_.-]{1,64}`, and never `.` or
//! `..`, which no client can put in a URL path (it resolves them away).

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::DomainError;
use super::credits::MAX_CREDITS_PER_OPERATION;
use super::money::{Currency, DEFAULT_UNIT_PRICE_MICROS, Micros};
use super::period::{Month, Zone};

/// Longest account id, in bytes (all ASCII).
pub const MAX_ACCOUNT_ID_LEN: usize = 64;
/// Longest account name, in characters.
pub const MAX_ACCOUNT_NAME_CHARS: usize = 200;
/// Free credits every month unless the account says otherwise (R2).
pub const DEFAULT_MONTHLY_FREE_CREDITS: i64 = 1_000;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountId(String);

impl AccountId {
    pub fn parse(text: &str) -> Result<AccountId, DomainError> {
        let ok = !text.is_empty()
            && text.len() <= MAX_ACCOUNT_ID_LEN
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
        if text == "." || text == ".." {
            return Err(DomainError::invalid(format!(
                "invalid account id {text:?}: `.` and `..` cannot appear in a URL path; choose another id"
            )));
        }
        if ok {
            Ok(AccountId(text.to_string()))
        } else {
            Err(DomainError::invalid(format!(
                "invalid account id {text:?}: use 1 to {MAX_ACCOUNT_ID_LEN} of A-Z a-z 0-9 _ . -"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AccountId {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        AccountId::parse(&s)
    }
}

impl From<AccountId> for String {
    fn from(a: AccountId) -> String {
        a.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Buy `credits` when available falls below `threshold`, spending at most
/// `monthly_cap` credits of such purchases a month (0 = no cap).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoRecharge {
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub threshold: i64,
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub credits: i64,
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub monthly_cap: i64,
}

impl AutoRecharge {
    pub fn validate(&self) -> Result<(), DomainError> {
        check_quantity("auto_recharge.threshold", self.threshold)?;
        check_quantity("auto_recharge.monthly_cap", self.monthly_cap)?;
        if self.credits < 1 || self.credits > MAX_CREDITS_PER_OPERATION {
            return Err(DomainError::invalid(format!(
                "auto_recharge.credits must be between 1 and {MAX_CREDITS_PER_OPERATION}"
            )));
        }
        if self.monthly_cap > 0 && self.monthly_cap < self.credits {
            return Err(DomainError::invalid(format!(
                "auto_recharge.monthly_cap ({}) is less than one recharge of {} credits: raise it, or 0 for no cap",
                self.monthly_cap, self.credits
            )));
        }
        Ok(())
    }
}

/// A merchant's account and the little state the ledger keeps on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: AccountId,
    pub name: String,
    pub zone: Zone,
    pub monthly_free_credits: i64,
    pub unit_price: Micros,
    pub currency: Currency,
    pub auto_recharge: Option<AutoRecharge>,
    /// Alert when available falls below this (0 = no alert).
    pub low_balance_threshold: i64,
    /// Most credits purchasable per local month (0 = no limit).
    pub monthly_purchase_limit: i64,
    pub created_at: Timestamp,
    /// The month of the current monthly free lot, once one exists.
    pub free_month: Option<Month>,
    /// The last month whose statement has been closed.
    pub billed_through: Option<Month>,
    /// A `failed` statement that suspends new purchases.
    pub suspended_by: Option<String>,
    /// The local month of the latest purchase, and the net credits bought
    /// in it (less refunds before billing): what the purchase limit counts,
    /// kept here by the domain so a purchase loads nothing else.
    pub purchased_month: Option<Month>,
    pub purchased_month_credits: i64,
    /// Closed: no purchases, debits or holds; reads, refunds, the holds
    /// already made and billing go on, so its last months are billed.
    pub closed: bool,
    /// The `sequence` of the account's last event (0: none yet).
    pub event_sequence: i64,
    /// The alerts sent, so each fires once per crossing or month.
    pub notices: super::event::Notices,
    /// The last month whose `free_credits.reset` was sent (or recorded).
    pub reset_announced: Option<Month>,
}

impl Account {
    /// Refuses what a closed account may not do (purchases, debits, holds).
    pub fn check_open(&self) -> Result<(), DomainError> {
        if self.closed {
            return Err(DomainError::AccountClosed { account_id: self.id.to_string() });
        }
        Ok(())
    }

    pub fn status(&self) -> &'static str {
        if self.closed { "closed" } else { "active" }
    }

    /// Net credits bought so far in `month` (the purchase limit's window).
    pub fn purchased_in(&self, month: Month) -> i64 {
        if self.purchased_month == Some(month) { self.purchased_month_credits } else { 0 }
    }
}

/// What a platform sends to create an account; unset fields take defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    #[schema(pattern = r"^(?!\.{1,2}$)[A-Za-z0-9_.-]{1,64}$", example = "cafe-1")]
    pub id: String,
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// An IANA time zone name of the server's bundled database, in any
    /// case (`America/Los_Angeles`, `UTC`).
    #[schema(min_length = 1, max_length = 64, example = "America/Los_Angeles")]
    pub time_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub monthly_free_credits: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The price of one credit: 0 to 1000, up to 6 decimals.
    #[schema(pattern = r"^0*([0-9]{1,3}(\.[0-9]{1,6})?|1000(\.0{1,6})?)$", example = "0.01")]
    pub unit_price: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[A-Z]{3}$", example = "USD")]
    pub currency: Option<String>,
}

/// What a new account gets when its creation names no zone, currency or
/// unit price (the server's `--default-time-zone`, `--default-currency`
/// and `--default-unit-price`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountDefaults {
    pub zone: Zone,
    pub currency: Currency,
    pub unit_price: Micros,
}

impl AccountDefaults {
    /// `zone`, US dollars, $0.01 a credit.
    pub fn new(zone: Zone) -> AccountDefaults {
        AccountDefaults {
            zone,
            currency: Currency::usd(),
            unit_price: Micros::from_micros(DEFAULT_UNIT_PRICE_MICROS),
        }
    }
}

impl NewAccount {
    /// Validates every field and fills in the server's defaults. An account
    /// in another currency than the default must name its unit price: the
    /// default price is in the default currency.
    pub fn build(&self, defaults: &AccountDefaults, now: Timestamp) -> Result<Account, DomainError> {
        let zone = match &self.time_zone {
            Some(name) => Zone::parse(name)?,
            None => defaults.zone.clone(),
        };
        let monthly_free_credits = self.monthly_free_credits.unwrap_or(DEFAULT_MONTHLY_FREE_CREDITS);
        check_quantity("monthly_free_credits", monthly_free_credits)?;
        let currency = match &self.currency {
            Some(code) => Currency::new(code)?,
            None => defaults.currency.clone(),
        };
        let unit_price = match &self.unit_price {
            Some(text) => Micros::parse_unit_price(text)?,
            None if currency == defaults.currency => defaults.unit_price,
            None => {
                return Err(DomainError::invalid(format!(
                    "an account in {currency} needs its unit_price: the default price {} is in {}",
                    defaults.unit_price, defaults.currency
                )));
            }
        };
        // Its first month's allowance is not news: the first
        // `free_credits.reset` is at its first month boundary.
        let reset_announced = Some(Month::of(now, &zone));
        Ok(Account {
            id: AccountId::parse(&self.id)?,
            name: check_name(&self.name)?,
            zone,
            monthly_free_credits,
            unit_price,
            currency,
            auto_recharge: None,
            low_balance_threshold: 0,
            monthly_purchase_limit: 0,
            created_at: now,
            free_month: None,
            billed_through: None,
            suspended_by: None,
            purchased_month: None,
            purchased_month_credits: 0,
            closed: false,
            event_sequence: 0,
            notices: super::event::Notices::default(),
            reset_announced,
        })
    }
}

/// Settings an operator may change. `None` leaves a field as it is;
/// `auto_recharge: Some(None)` turns auto-recharge off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// An IANA time zone name of the server's bundled database, in any
    /// case (`America/Los_Angeles`, `UTC`).
    #[schema(min_length = 1, max_length = 64, example = "America/Los_Angeles")]
    pub time_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub monthly_free_credits: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The price of one credit: 0 to 1000, up to 6 decimals.
    #[schema(pattern = r"^0*([0-9]{1,3}(\.[0-9]{1,6})?|1000(\.0{1,6})?)$", example = "0.01")]
    pub unit_price: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "double_option")]
    pub auto_recharge: Option<Option<AutoRecharge>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub low_balance_threshold: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub monthly_purchase_limit: Option<i64>,
    /// `closed` closes the account, `active` reopens it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(active|closed)$", example = "closed")]
    pub status: Option<String>,
}

impl AccountPatch {
    pub fn is_empty(&self) -> bool {
        *self == AccountPatch::default()
    }

    /// Applies the patch to a copy of `account`; nothing changes on error.
    pub fn apply_to(&self, account: &Account) -> Result<Account, DomainError> {
        let mut next = account.clone();
        if let Some(name) = &self.name {
            next.name = check_name(name)?;
        }
        if let Some(zone) = &self.time_zone {
            next.zone = Zone::parse(zone)?;
        }
        if let Some(n) = self.monthly_free_credits {
            check_quantity("monthly_free_credits", n)?;
            next.monthly_free_credits = n;
        }
        if let Some(price) = &self.unit_price {
            next.unit_price = Micros::parse_unit_price(price)?;
        }
        if let Some(auto) = &self.auto_recharge {
            if let Some(a) = auto {
                a.validate()?;
            }
            next.auto_recharge = auto.clone();
        }
        if let Some(n) = self.low_balance_threshold {
            check_quantity("low_balance_threshold", n)?;
            next.low_balance_threshold = n;
        }
        if let Some(n) = self.monthly_purchase_limit {
            check_quantity("monthly_purchase_limit", n)?;
            next.monthly_purchase_limit = n;
        }
        if let Some(status) = &self.status {
            next.closed = match status.as_str() {
                "active" => false,
                "closed" => true,
                other => {
                    return Err(DomainError::invalid(format!(
                        "status must be active or closed, got {other:?}"
                    )));
                }
            };
        }
        Ok(next)
    }
}

fn check_name(name: &str) -> Result<String, DomainError> {
    let trimmed = name.trim();
    let chars = trimmed.chars().count();
    if chars == 0 || chars > MAX_ACCOUNT_NAME_CHARS || trimmed.chars().any(char::is_control) {
        return Err(DomainError::invalid(format!(
            "name must be 1 to {MAX_ACCOUNT_NAME_CHARS} printable characters"
        )));
    }
    Ok(trimmed.to_string())
}

/// A setting counted in credits: 0 up to the per-operation maximum.
fn check_quantity(field: &str, n: i64) -> Result<(), DomainError> {
    if !(0..=MAX_CREDITS_PER_OPERATION).contains(&n) {
        return Err(DomainError::invalid(format!(
            "{field} must be between 0 and {MAX_CREDITS_PER_OPERATION}, got {n}"
        )));
    }
    Ok(())
}

/// Distinguishes a field that is absent from one that is `null`.
pub mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(v: &Option<Option<T>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_are_strict() {
        assert!(AccountId::parse("cafe-1").is_ok());
        assert!(AccountId::parse("A.b_c-9").is_ok());
        assert!(AccountId::parse(&"x".repeat(64)).is_ok());
        assert!(AccountId::parse("...").is_ok() && AccountId::parse(".a").is_ok());
        for bad in [".", "..", "", "café", "a b", "a/b", "a:b", &"x".repeat(65)] {
            assert!(AccountId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn new_account_defaults() {
        let now: Timestamp = "2026-11-01T00:00:00Z".parse().unwrap();
        let a = NewAccount { id: "cafe-1".into(), name: "Cafe".into(), ..Default::default() }
            .build(&AccountDefaults::new(Zone::utc()), now)
            .unwrap();
        assert_eq!(a.monthly_free_credits, 1_000);
        assert_eq!(a.unit_price, Micros::from_micros(10_000));
        assert_eq!(a.currency.as_str(), "USD");
        assert_eq!(a.zone.name(), "UTC");
    }

    #[test]
    fn patch_distinguishes_null_from_absent() {
        let p: AccountPatch = serde_json::from_str(r#"{"auto_recharge": null}"#).unwrap();
        assert_eq!(p.auto_recharge, Some(None));
        let p: AccountPatch = serde_json::from_str("{}").unwrap();
        assert_eq!(p.auto_recharge, None);
    }
}
