//! The admin's pages: every account with its balance and a search (id or
//! name prefix), and one month's statements across accounts. An account
//! token gets the API's answer to an admin-only route: 403.

use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::WebState;
use super::error::WebError;
use super::format::{count, money};
use super::layout::{self, Nav};
use super::signed::Signed;
use super::statements::statement;
use crate::domain::period::{Month, Zone};
use crate::http::ApiError;
use crate::ledger::{MAX_PAGE_LIMIT, PageRequest, Store};

/// Accounts shown on one page of the list (each costs a balance read).
pub const ACCOUNTS_SHOWN: usize = 50;

#[derive(Deserialize)]
pub struct Search {
    q: Option<String>,
}

pub async fn accounts<S: Store>(
    State(st): State<WebState<S>>,
    signed: Signed,
    Query(search): Query<Search>,
) -> Result<Response, WebError> {
    signed.caller.require_admin()?;
    let q = search.q.unwrap_or_default();
    let wanted = q.trim();
    let req = PageRequest::first(ACCOUNTS_SHOWN);
    let found = st.app.ledger.accounts(req, (!wanted.is_empty()).then_some(wanted)).await?.data;
    let now = st.app.clock.now();
    let mut rows = Vec::new();
    for a in found {
        let id = crate::domain::account::AccountId::parse(&a.id)?;
        rows.push((a, st.app.ledger.balance(&id, now).await?));
    }
    let body = html! {
        form #accounts-search method="get" action="/accounts" role="search" {
            label for="q" { "Find an account (id or name)" }
            input #q type="search" name="q" value=(q);
            button type="submit" { "Search" }
        }
        div.scroll {
            table #accounts {
                caption { "Accounts" }
                thead { tr { th scope="col" { "Account" } th scope="col" { "Name" } th scope="col" { "Available" }
                    th scope="col" { "Free left" } th scope="col" { "Paid" } th scope="col" { "Next charge" } } }
                tbody {
                    @for (a, b) in &rows {
                        tr data-account-id=(a.id) {
                            td { a href={ "/a/" (a.id) } { (a.id) } }
                            td { (a.name) }
                            td.num { (count(b.available)) }
                            td.num { (count(b.free.remaining)) }
                            td.num { (count(b.paid.remaining)) }
                            td.num { (money(&b.unbilled.currency, b.unbilled.amount)) " on " (b.unbilled.bills_on) }
                        }
                    }
                }
            }
        }
        @if rows.is_empty() { p { "No account matches." } }
    };
    let nav = Nav { signed: &signed, account: None };
    Ok(Html(layout::page("Accounts", Some(&nav), None, body).into_string()).into_response())
}

#[derive(Deserialize)]
pub struct MonthQuery {
    month: Option<String>,
}

pub async fn month<S: Store>(
    State(st): State<WebState<S>>,
    signed: Signed,
    Query(q): Query<MonthQuery>,
) -> Result<Response, WebError> {
    signed.caller.require_admin()?;
    let month = match q.month.as_deref().filter(|m| !m.is_empty()) {
        Some(m) => Month::parse(m).map_err(|e| ApiError::bad_request(e.to_string()))?,
        None => Month::of(st.app.clock.now(), &Zone::utc()).prev(),
    };
    let list = st.app.ledger.statements(None, Some(month), PageRequest::first(MAX_PAGE_LIMIT)).await?;
    let body = html! {
        form method="get" action="/statements" {
            label for="month" { "Month (YYYY-MM)" }
            input #month name="month" value=(month);
            button type="submit" { "Show" }
        }
        div #statements {
            @if list.data.is_empty() { p { "No statements for " (month) "." } }
            @for s in &list.data { (statement(s, true)) }
        }
    };
    let nav = Nav { signed: &signed, account: None };
    Ok(Html(layout::page(&format!("Statements of {month}"), Some(&nav), None, body).into_string())
        .into_response())
}
