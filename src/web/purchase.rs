//! Actions > Purchase credits: a dialog page (quantity, quick picks, the
//! price), a confirm step, and the purchase. Each confirm form carries its
//! own idempotency key, so a double click (two identical posts) buys once:
//! the second is the ledger's replay of the first.

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::WebState;
use super::error::WebError;
use super::format::{count, day, money};
use super::layout::{self, Nav, csrf_field};
use super::session::{Flash, secret};
use super::signed::Signed;
use crate::domain::DomainError;
use crate::domain::command::{Command, Outcome};
use crate::domain::credits::Credits;
use crate::domain::period::{Month, Zone};
use crate::domain::view::AccountView;
use crate::ledger::{IdempotencyKey, LedgerError, Store};

/// The quick picks of the dialog, in credits.
pub const QUICK_PICKS: [i64; 3] = [1_000, 5_000, 10_000];

/// What the dialog shows first when no quantity is given.
const DEFAULT_CREDITS: i64 = 1_000;

#[derive(Deserialize)]
pub struct DialogQuery {
    credits: Option<String>,
}

#[derive(Deserialize)]
pub struct PurchaseForm {
    csrf: Option<String>,
    credits: Option<String>,
    key: Option<String>,
}

/// Everything a price line needs about the account, at `now`.
struct Terms {
    view: AccountView,
    bills_on: jiff::civil::Date,
    year: i16,
}

async fn terms<S: Store>(st: &WebState<S>, signed: &Signed, id: &str) -> Result<Terms, WebError> {
    let account = signed.account(id)?;
    let now = st.app.clock.now();
    let view = st.app.ledger.account(&account, now).await?;
    let zone = Zone::parse(&view.time_zone)?;
    let bills_on = Month::of(now, &zone).next().first_day();
    Ok(Terms { view, bills_on, year: zone.date_of(now).year() })
}

/// "5,000 credits x $0.01 = $50.00, billed on Dec 1".
fn price_line(t: &Terms, credits: Credits) -> String {
    // Credits are at most 10^9 and a unit price at most 10^9 micros: the
    // product is exact; should it ever not be, the line says so. Rounded
    // to the minor unit, as the purchase will be.
    let amount = match t.view.currency.charge(t.view.unit_price, credits.get()) {
        Ok(amount) => money(&t.view.currency, amount),
        Err(_) => "more than can be charged".to_string(),
    };
    format!(
        "{} credits x {} = {}, billed on {}",
        count(credits.get()),
        money(&t.view.currency, t.view.unit_price),
        amount,
        day(t.bills_on, t.year)
    )
}

fn parse_credits(text: Option<&str>) -> Result<Credits, String> {
    Credits::parse(&text.unwrap_or("").replace(',', ""))
        .map_err(|e| format!("Enter a number of credits: {e}. Nothing was bought."))
}

fn dialog_page(signed: &Signed, id: &str, t: &Terms, typed: &str, flash: Option<&Flash>) -> Markup {
    let price = parse_credits(Some(typed)).map(|c| price_line(t, c)).unwrap_or_default();
    let body = html! {
        p { "Paid credits never expire. They are billed on the 1st of the next month." }
        ul.picks aria-label="Quick picks" {
            @for n in QUICK_PICKS {
                li { a.button href={ "/a/" (id) "/buy?credits=" (n) } { (count(n)) } }
            }
        }
        form #purchase-form method="post" action={ "/a/" (id) "/buy" }
            data-unit-micros=(t.view.unit_price.as_micros()) data-currency=(t.view.currency.as_str())
            data-bills-on=(day(t.bills_on, t.year)) {
            (csrf_field(&signed.session.csrf))
            label for="purchase-credits" { "Credits to buy" }
            input #purchase-credits name="credits" inputmode="numeric" value=(typed) required;
            p #purchase-price aria-live="polite" { (price) }
            button type="submit" { "Review purchase" }
        }
        script src="/static/price.js" defer {}
    };
    let nav = Nav { signed, account: Some(id) };
    layout::page("Purchase credits", Some(&nav), flash, body)
}

pub async fn dialog<S: Store>(
    State(st): State<WebState<S>>,
    signed: Signed,
    Path(id): Path<String>,
    Query(q): Query<DialogQuery>,
) -> Result<Response, WebError> {
    let t = terms(&st, &signed, &id).await?;
    let typed = q.credits.unwrap_or_else(|| DEFAULT_CREDITS.to_string());
    let flash = signed.session.flash.clone();
    Ok(Html(dialog_page(&signed, &id, &t, &typed, flash.as_ref()).into_string()).into_response())
}

/// The dialog again with a refusal: 422, nothing bought.
fn refused(signed: &Signed, id: &str, t: &Terms, typed: &str, why: String) -> Response {
    let flash = Flash { ok: false, text: why };
    let page = dialog_page(signed, id, t, typed, Some(&flash));
    (StatusCode::UNPROCESSABLE_ENTITY, Html(page.into_string())).into_response()
}

/// The opening of both steps: the form (its CSRF token first), the terms,
/// and the quantity; a bad quantity is the dialog again with its message.
async fn checked<S: Store>(
    st: &WebState<S>,
    signed: &Signed,
    id: &str,
    form: Result<Form<PurchaseForm>, FormRejection>,
) -> Result<Result<(PurchaseForm, Terms, String, Credits), Response>, WebError> {
    let Ok(Form(form)) = form else { return Err(WebError::Csrf) };
    signed.check_csrf(form.csrf.as_deref())?;
    let t = terms(st, signed, id).await?;
    let typed = form.credits.clone().unwrap_or_default();
    Ok(match parse_credits(form.credits.as_deref()) {
        Ok(credits) => Ok((form, t, typed, credits)),
        Err(why) => Err(refused(signed, id, &t, &typed, why)),
    })
}

/// The confirm step: the price, and one button that buys.
pub async fn review<S: Store>(
    State(st): State<WebState<S>>,
    signed: Signed,
    Path(id): Path<String>,
    form: Result<Form<PurchaseForm>, FormRejection>,
) -> Result<Response, WebError> {
    let (_, t, _, credits) = match checked(&st, &signed, &id, form).await? {
        Ok(checked) => checked,
        Err(page) => return Ok(page),
    };
    let body = html! {
        p #purchase-summary { "Buy " (price_line(&t, credits)) "?" }
        form #purchase-confirm-form method="post" action={ "/a/" (id) "/buy/confirm" } {
            (csrf_field(&signed.session.csrf))
            input type="hidden" name="credits" value=(credits.get());
            input type="hidden" name="key" value={ "web-" (secret()) };
            button #purchase-confirm type="submit" { "Confirm purchase" }
        }
        p { a href={ "/a/" (id) "/buy?credits=" (credits.get()) } { "Change the quantity" } }
    };
    let nav = Nav { signed: &signed, account: Some(&id) };
    Ok(Html(layout::page("Confirm purchase", Some(&nav), None, body).into_string()).into_response())
}

pub async fn confirm<S: Store>(
    State(st): State<WebState<S>>,
    signed: Signed,
    Path(id): Path<String>,
    form: Result<Form<PurchaseForm>, FormRejection>,
) -> Result<Response, WebError> {
    let (form, t, typed, credits) = match checked(&st, &signed, &id, form).await? {
        Ok(checked) => checked,
        Err(page) => return Ok(page),
    };
    let key = match form.key.as_deref().map(IdempotencyKey::parse) {
        Some(Ok(k)) => k,
        _ => {
            return Ok(refused(
                &signed,
                &id,
                &t,
                &typed,
                "This form has no purchase key: review the purchase again. Nothing was bought.".into(),
            ));
        }
    };
    let account = signed.account(&id)?;
    let done =
        st.app.ledger.execute(&account, Command::Purchase { credits }, Some(key), st.app.clock.now()).await;
    let purchase = match done {
        Ok(e) => match e.outcome {
            Outcome::Purchase(p) => p,
            other => return Err(LedgerError::Internal(format!("a purchase answered {other:?}")).into()),
        },
        Err(e) => match refusal(&e) {
            Some(why) => return Ok(refused(&signed, &id, &t, &typed, why)),
            None => return Err(e.into()),
        },
    };
    let text = format!(
        "Bought {} credits for {}, billed on {}.",
        count(purchase.credits),
        money(&purchase.currency, purchase.amount),
        day(purchase.bills_on, t.year)
    );
    st.sessions.set_flash(&signed.session_id, Flash { ok: true, text });
    Ok(Redirect::to(&format!("/a/{id}/purchases")).into_response())
}

/// A refusal by the rules, in words for the merchant; `None` for errors
/// that are not the merchant's to fix (shown as an error page).
fn refusal(e: &LedgerError) -> Option<String> {
    let LedgerError::Domain(d) = e else {
        return match e {
            LedgerError::IdempotencyConflict { .. } => {
                Some("This confirmation was already used for another quantity: review the purchase again. Nothing more was bought.".into())
            }
            _ => None,
        };
    };
    Some(match d {
        DomainError::PurchaseLimitExceeded { limit, remaining } => format!(
            "This would pass your purchase limit of {} credits a month: {} can still be bought this month. Nothing was bought.",
            count(*limit),
            count(*remaining)
        ),
        DomainError::PurchasesSuspended { statement_id } => {
            format!("Purchases are suspended until statement {statement_id} is paid. Nothing was bought.")
        }
        DomainError::AccountClosed { .. } => {
            "This account is closed, so no credits can be bought. Nothing was bought.".to_string()
        }
        other => format!("{other}. Nothing was bought."),
    })
}
