//! When credits run out at the rate of the last 30 days: a pure function
//! of integers and calendar dates, so it is exact and testable.
//!
//! The rate is what was spent in the last [`RATE_WINDOW_DAYS`] days, spread
//! evenly over them. Credits are counted in thirtieths so the daily rate
//! stays an integer. The days ahead are walked one by one: each spends the
//! rate from this month's free credits first, then from grants and paid
//! credits (R6); on each 1st the free allowance comes back whole (R2, R3).

use jiff::civil::Date;

/// Days of spending the rate is taken from.
pub const RATE_WINDOW_DAYS: i64 = 30;

/// Days ahead the forecast looks: past that, credits "last beyond" it.
pub const FORECAST_HORIZON_DAYS: i64 = 730;

/// What the account holds today, and what each month gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holdings {
    pub free_remaining: i64,
    /// Free credits each coming month starts with.
    pub monthly_free: i64,
    /// Grants and paid credits, spent after the free ones.
    pub paid_remaining: i64,
}

/// The forecast's answer when there was spending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forecast {
    /// The day this month's free credits run out, or `None` when they last
    /// until the month ends.
    pub free_runs_out: Option<Date>,
    /// The day paid credits run out; `None` when there are none or they
    /// outlast the horizon.
    pub paid_runs_out: Option<Date>,
}

/// `None` when nothing was spent in the window (no rate, no forecast).
pub fn forecast(today: Date, spent_in_window: i64, have: Holdings) -> Option<Forecast> {
    if spent_in_window <= 0 {
        return None;
    }
    // In thirtieths of a credit: the daily rate is `spent_in_window`.
    let rate = spent_in_window;
    let mut free = have.free_remaining.max(0).saturating_mul(RATE_WINDOW_DAYS);
    let mut paid = have.paid_remaining.max(0).saturating_mul(RATE_WINDOW_DAYS);
    let mut out = Forecast { free_runs_out: None, paid_runs_out: None };
    let mut free_this_month = true;
    let mut day = today;
    for _ in 0..FORECAST_HORIZON_DAYS {
        if day.day() == 1 && day != today {
            free = have.monthly_free.max(0).saturating_mul(RATE_WINDOW_DAYS);
            free_this_month = false;
        }
        let from_free = free.min(rate);
        free -= from_free;
        if free == 0 && free_this_month && out.free_runs_out.is_none() {
            out.free_runs_out = Some(day);
        }
        let from_paid = paid.min(rate - from_free);
        if from_paid > 0 {
            paid -= from_paid;
            if paid == 0 {
                out.paid_runs_out = Some(day);
                break;
            }
        }
        day = match day.tomorrow() {
            Ok(d) => d,
            Err(_) => break,
        };
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    const NOV_10: Date = date(2026, 11, 10);

    #[test]
    fn no_spending_no_forecast() {
        let have = Holdings { free_remaining: 1000, monthly_free: 1000, paid_remaining: 500 };
        assert_eq!(forecast(NOV_10, 0, have), None);
    }

    #[test]
    fn free_then_paid_run_out_at_the_rate() {
        // 3,000 in 30 days: 100 a day. 700 free: gone after 7 days (Nov 16);
        // then 500 paid is 5 days more (Nov 21).
        let have = Holdings { free_remaining: 700, monthly_free: 1000, paid_remaining: 500 };
        let f = forecast(NOV_10, 3000, have).unwrap();
        assert_eq!(f.free_runs_out, Some(date(2026, 11, 16)));
        assert_eq!(f.paid_runs_out, Some(date(2026, 11, 21)));
    }

    #[test]
    fn free_credits_that_outlast_the_month_do_not_run_out() {
        // 10 a day from 1,000: they reset on Dec 1 first.
        let have = Holdings { free_remaining: 1000, monthly_free: 1000, paid_remaining: 0 };
        let f = forecast(NOV_10, 300, have).unwrap();
        assert_eq!(f, Forecast { free_runs_out: None, paid_runs_out: None });
    }

    #[test]
    fn the_monthly_reset_refills_free_credits_before_paid_ones_are_spent() {
        // 50 a day, 100 free left, 1,000 a month, 2,000 paid: from Nov 12
        // to Nov 30 paid pays 50 a day (950 minus ...); each month's 1,000
        // free covers 20 days, then paid pays again.
        let have = Holdings { free_remaining: 100, monthly_free: 1000, paid_remaining: 2000 };
        let f = forecast(NOV_10, 1500, have).unwrap();
        assert_eq!(f.free_runs_out, Some(date(2026, 11, 11)));
        // Nov 12-30: 19 days x 50 = 950 paid (1,050 left). Dec: 20 free days,
        // Dec 21-31: 550 paid (500 left). Jan: 20 free days, Jan 21-30: 500.
        assert_eq!(f.paid_runs_out, Some(date(2027, 1, 30)));
    }

    #[test]
    fn fractions_of_a_credit_a_day_are_kept() {
        // 1 credit in 30 days, 1 free credit left: it lasts 30 days, past Nov.
        let have = Holdings { free_remaining: 1, monthly_free: 0, paid_remaining: 0 };
        assert_eq!(forecast(date(2026, 11, 1), 1, have).unwrap().free_runs_out, Some(date(2026, 11, 30)));
    }

    #[test]
    fn the_horizon_bounds_the_walk() {
        // 1 credit a month against a huge paid balance: beyond the horizon.
        let have = Holdings { free_remaining: 0, monthly_free: 0, paid_remaining: 1_000_000 };
        let f = forecast(NOV_10, 1, have).unwrap();
        assert_eq!(f.paid_runs_out, None);
        // Exactly at the horizon: FORECAST_HORIZON_DAYS days of 1 a day.
        let have = Holdings { free_remaining: 0, monthly_free: 0, paid_remaining: FORECAST_HORIZON_DAYS };
        let f = forecast(NOV_10, 30, have).unwrap();
        let last = NOV_10.checked_add(jiff::Span::new().days(FORECAST_HORIZON_DAYS - 1)).unwrap();
        assert_eq!(f.paid_runs_out, Some(last));
        let have = Holdings { free_remaining: 0, monthly_free: 0, paid_remaining: FORECAST_HORIZON_DAYS + 1 };
        assert_eq!(forecast(NOV_10, 30, have).unwrap().paid_runs_out, None);
    }
}
