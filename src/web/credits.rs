//! The Credits page of one account: the balance cards, the next charge, the
//! policy in plain words, the 12-month chart, the forecast, and "Will my
//! campaign go out?" (the quote, answered in words).

use crate::domain::view::AccountStatus;
use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use jiff::{SignedDuration, Timestamp};
use maud::{Markup, html};
use serde::Deserialize;

use super::error::WebError;
use super::forecast::{self, Holdings, RATE_WINDOW_DAYS};
use super::format::{count, day, money, time_of_day};
use super::layout::{self, Nav, csrf_field};
use super::signed::Signed;
use super::{WebState, chart};
use crate::domain::account::AccountId;
use crate::domain::credits::Credits;
use crate::domain::period::{Month, Zone};
use crate::domain::view::{AccountView, BalanceView, QuoteView};
use crate::ledger::{MAX_PAGE_LIMIT, PageRequest, Store};

/// Months in the usage chart.
pub const CHART_MONTHS: usize = 12;

/// Most ledger entries read to measure the last 30 days' spending; an
/// account busier than that gets a forecast from its latest entries.
pub const MAX_FORECAST_ENTRIES: usize = 10_000;

/// The answer of the quote box: the words, or why the number was refused.
enum QuoteAnswer {
    Quote(QuoteView),
    Refused(String),
}

pub async fn page<S: Store>(
    State(st): State<WebState<S>>,
    signed: Signed,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, WebError> {
    render(&st, &signed, &id, None).await
}

#[derive(Deserialize)]
pub struct QuoteForm {
    csrf: Option<String>,
    credits: Option<String>,
}

pub async fn quote<S: Store>(
    State(st): State<WebState<S>>,
    signed: Signed,
    axum::extract::Path(id): axum::extract::Path<String>,
    form: Result<Form<QuoteForm>, FormRejection>,
) -> Result<Response, WebError> {
    let Ok(Form(form)) = form else { return Err(WebError::Csrf) };
    signed.check_csrf(form.csrf.as_deref())?;
    let account = signed.account(&id)?;
    let answer = match Credits::parse(form.credits.as_deref().unwrap_or("").replace(',', "").as_str()) {
        Ok(c) => QuoteAnswer::Quote(st.app.ledger.quote(&account, c, st.app.clock.now()).await?),
        Err(e) => QuoteAnswer::Refused(format!("Enter a number of texts: {e}.")),
    };
    render(&st, &signed, &id, Some(answer)).await
}

async fn render<S: Store>(
    st: &WebState<S>,
    signed: &Signed,
    id: &str,
    quote: Option<QuoteAnswer>,
) -> Result<Response, WebError> {
    let account = signed.account(id)?;
    let now = st.app.clock.now();
    let ledger = &st.app.ledger;
    let view = ledger.account(&account, now).await?;
    let balance =
        view.balance.clone().ok_or_else(|| crate::ledger::LedgerError::Internal("no balance".into()))?;
    let zone = Zone::parse(&view.time_zone)?;
    let current = Month::of(now, &zone);
    let mut from = current;
    for _ in 1..CHART_MONTHS {
        from = from.prev();
    }
    let usage = ledger.usage(&account, Some(from), Some(current), now).await?;
    let spent = spent_since(st, &account, now - SignedDuration::from_hours(24 * RATE_WINDOW_DAYS)).await?;
    let status = if matches!(quote, Some(QuoteAnswer::Refused(_))) {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let today = zone.date_of(now);
    let body = html! {
        @if view.status == AccountStatus::Closed {
            p #closed .notice role="status" {
                "This account is closed: no credits can be bought, spent or held. Its history and statements stay here, and its last purchases are still billed."
            }
        }
        (cards(&view, &balance, &zone, today.year()))
        p #next-charge .next-charge { (next_charge(&view, &balance, current, today.year())) }
        p.policy {
            "1 credit = 1 text to 1 patron. You get " (count(view.monthly_free_credits))
            " free credits each month; they do not roll over. Paid credits never expire and are billed on the 1st of the next month."
        }
        (settings(&view))
        (quote_box(signed, id, quote.as_ref()))
        h2 { "The last " (CHART_MONTHS) " months" }
        (chart::usage(&usage))
        h2 { "Forecast" }
        p #forecast { (forecast_text(&view, &balance, today, spent)) }
    };
    let nav = Nav { signed, account: Some(id) };
    let title = format!("Credits of {}", view.name);
    let flash = signed.session.flash.as_ref();
    Ok((status, Html(layout::page(&title, Some(&nav), flash, body).into_string())).into_response())
}

fn cards(view: &AccountView, b: &BalanceView, zone: &Zone, year: i16) -> Markup {
    let resets = zone.date_of(b.free.resets_at);
    html! {
        p.as-of { "As of " time #as-of datetime=(b.as_of) { (time_of_day(b.as_of, zone)) } " (" (view.time_zone) ")" }
        div.cards {
            section.card aria-labelledby="free-title" {
                h2 #free-title { "Free credits this month" }
                p.big { span #free-remaining { (count(b.free.remaining)) } " left" }
                p { span #free-used { (count(b.free.used)) } " used of " span #free-allowance { (count(b.free.allowance)) } }
                meter #free-meter value=(b.free.used) min="0" max=(b.free.allowance.max(1)) aria-label="Free credits used" {}
                p { "Resets on " time #free-resets datetime=(resets) { (day(resets, year)) } }
            }
            section.card aria-labelledby="paid-title" {
                h2 #paid-title { "Paid credits" }
                p.big #paid-remaining { (count(b.paid.remaining)) }
                p { "Never expire" }
                @if b.grants.remaining > 0 { p { "Plus " (count(b.grants.remaining)) " promotional credits" } }
            }
            section.card aria-labelledby="held-title" {
                h2 #held-title { "On hold" }
                p.big #held { (count(b.held)) }
                p { "Reserved for campaigns" }
            }
            section.card aria-labelledby="available-title" {
                h2 #available-title { "Available" }
                p.big #available { (count(b.available)) }
                @if view.status == AccountStatus::Closed { p { "Closed: none can be sent" } } @else { p { "Texts you can send now" } }
            }
        }
    }
}

/// The account's auto-recharge and alert settings, in words.
fn settings(view: &AccountView) -> Markup {
    let recharge = match &view.auto_recharge {
        None => "Off: credits are bought only when you buy them.".to_string(),
        Some(r) => {
            let cap = if r.monthly_cap > 0 {
                format!(", up to {} credits a month", count(r.monthly_cap))
            } else {
                String::new()
            };
            // Settings keep credits x unit price exact, so the price is
            // always there; should it not be, the words go without it.
            let price = view
                .currency
                .charge(view.unit_price, r.credits)
                .map_or(String::new(), |m| format!(" ({})", money(&view.currency, m)));
            format!(
                "On: {} credits{price} are bought when fewer than {} are available{cap}. They are billed with your other purchases.",
                count(r.credits),
                count(r.threshold),
            )
        }
    };
    let alert = if view.low_balance_threshold > 0 {
        format!("When fewer than {} credits are available.", count(view.low_balance_threshold))
    } else {
        "Off.".to_string()
    };
    let limit = if view.monthly_purchase_limit > 0 {
        format!("{} credits a month.", count(view.monthly_purchase_limit))
    } else {
        "None.".to_string()
    };
    html! {
        section.settings aria-labelledby="settings-title" {
            h2 #settings-title { "Auto-recharge and alerts" }
            dl {
                dt { "Auto-recharge" } dd #auto-recharge { (recharge) }
                dt { "Low balance alert" } dd #low-balance-alert { (alert) }
                dt { "Purchase limit" } dd #purchase-limit { (limit) }
            }
            @if let Some(st) = &view.purchases_suspended_by {
                p #suspended .error role="alert" {
                    "Purchases and auto-recharge are paused: statement " (st) " was not paid."
                }
            }
        }
    }
}

fn next_charge(view: &AccountView, b: &BalanceView, current: Month, year: i16) -> String {
    let u = &b.unbilled;
    let when = if u.bills_on == current.next().first_day() { "this month" } else { "and not billed yet" };
    let bought = if u.credits == 0 {
        "no credits bought this month".to_string()
    } else {
        format!("{} credits bought {when}", count(u.credits))
    };
    format!("Next charge: {} on {} ({bought})", money(&view.currency, u.amount), day(u.bills_on, year))
}

fn quote_box(signed: &Signed, id: &str, answer: Option<&QuoteAnswer>) -> Markup {
    html! {
        section.quote aria-labelledby="quote-title" {
            h2 #quote-title { "Will my campaign go out?" }
            form #quote-form method="post" action={ "/a/" (id) "/quote" } {
                (csrf_field(&signed.session.csrf))
                label for="quote-credits" { "Number of texts" }
                input #quote-credits name="credits" inputmode="numeric" required;
                button type="submit" { "Check" }
            }
            @match answer {
                Some(QuoteAnswer::Quote(q)) => (quote_answer(id, q)),
                Some(QuoteAnswer::Refused(why)) => p #quote-answer .error role="alert" { (why) },
                None => {},
            }
        }
    }
}

fn quote_answer(id: &str, q: &QuoteView) -> Markup {
    let texts = count(q.credits);
    if q.covered {
        let mut parts = Vec::new();
        for (n, what) in [(q.from_free, "free"), (q.from_grants, "promotional"), (q.from_paid, "paid")] {
            if n > 0 {
                parts.push(format!("{} {what}", count(n)));
            }
        }
        html! {
            p #quote-answer role="status" {
                "Yes: " (texts) " texts can go out now, from " (parts.join(", ")) " credits"
                @if q.auto_recharge_credits > 0 {
                    ", after auto-recharge buys " (count(q.auto_recharge_credits)) " credits"
                }
                "."
            }
        }
    } else {
        html! {
            p #quote-answer role="status" {
                "No: " (texts) " texts need " (texts) " credits and " (count(q.available)) " are available. You are short by "
                (count(q.shortfall)) " credits = " (money(&q.currency, q.shortfall_amount)) "."
            }
            p { a.button #quote-buy href={ "/a/" (id) "/buy?credits=" (q.shortfall) } { "Buy " (count(q.shortfall)) " credits" } }
        }
    }
}

fn forecast_text(view: &AccountView, b: &BalanceView, today: jiff::civil::Date, spent: i64) -> String {
    let have = Holdings {
        free_remaining: b.free.remaining,
        monthly_free: view.monthly_free_credits,
        paid_remaining: b.paid.remaining + b.grants.remaining,
    };
    forecast::forecast(today, spent, have).map_or(String::new(), |f| forecast_words(today, have, f))
}

/// The forecast in one sentence.
fn forecast_words(today: jiff::civil::Date, have: Holdings, f: forecast::Forecast) -> String {
    let year = today.year();
    let paid = |verb: &str| match (have.paid_remaining, f.paid_runs_out) {
        (0, _) => "you have no paid credits".to_string(),
        (_, Some(d)) => format!("your paid credits{verb} on {}", day(d, year)),
        (_, None) => "your paid credits last more than two years".to_string(),
    };
    if have.free_remaining <= 0 {
        // Nothing left to run out: say so, and when they come back.
        let reset = today.last_of_month().tomorrow().map(|d| day(d, year)).unwrap_or_default();
        return format!(
            "Your free credits are used up until they reset on {reset}; at this rate {}.",
            paid(" run out")
        );
    }
    let free = match f.free_runs_out {
        Some(d) => format!("your free credits run out on {}", day(d, year)),
        None => "your free credits last until they reset".to_string(),
    };
    format!("At this rate {free} and {}.", paid(""))
}

/// Credits spent (debits and captures) since `since`, from the newest
/// entries back, at most [`MAX_FORECAST_ENTRIES`] of them.
async fn spent_since<S: Store>(
    st: &WebState<S>,
    account: &AccountId,
    since: Timestamp,
) -> Result<i64, WebError> {
    let mut spent = 0i64;
    let mut read = 0usize;
    let mut page = PageRequest::first(MAX_PAGE_LIMIT);
    loop {
        let got = st.app.ledger.entries(account, page).await?;
        for e in &got.data {
            if e.effective_at < since {
                return Ok(spent);
            }
            spent += match e.kind.as_str() {
                "debit" => -e.credits,
                "capture" => -e.held_credits,
                _ => 0,
            };
        }
        read += got.data.len();
        match got.next_cursor {
            Some(c) if read < MAX_FORECAST_ENTRIES => {
                page = PageRequest::new(Some(c), Some(MAX_PAGE_LIMIT as i64))?
            }
            _ => return Ok(spent),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn the_forecast_says_free_credits_are_used_up_when_none_are_left() {
        let today = date(2026, 11, 20);
        let have = Holdings { free_remaining: 0, monthly_free: 1000, paid_remaining: 500 };
        let f = forecast::forecast(today, 3000, have).unwrap();
        assert_eq!(
            forecast_words(today, have, f),
            "Your free credits are used up until they reset on Dec 1; at this rate your paid credits run out on Nov 24."
        );
        let have = Holdings { free_remaining: 700, monthly_free: 1000, paid_remaining: 500 };
        let f = forecast::forecast(today, 3000, have).unwrap();
        assert_eq!(
            forecast_words(today, have, f),
            "At this rate your free credits run out on Nov 26 and your paid credits on Dec 11."
        );
    }
}
