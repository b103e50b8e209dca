//! The Statements page of one account: per month its lines, total and
//! status. Each statement's element has the statement id as its id, so the
//! purchase history links to `#st_...`.

use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};

use super::WebState;
use super::error::WebError;
use super::format::{count, money};
use super::layout::{self, Nav};
use super::signed::Signed;
use crate::domain::view::StatementView;
use crate::ledger::{MAX_PAGE_LIMIT, PageRequest, Store};

/// Statements shown: the latest 500 months are more than forty years.
pub const MAX_STATEMENTS_SHOWN: usize = MAX_PAGE_LIMIT;

pub async fn account<S: Store>(
    State(st): State<WebState<S>>,
    signed: Signed,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let account = signed.account(&id)?;
    let list =
        st.app.ledger.statements(Some(&account), None, PageRequest::first(MAX_STATEMENTS_SHOWN)).await?;
    let body = html! {
        div #statements {
            @if list.data.is_empty() { p { "No statements yet: a month with purchases gets one on the 1st of the next month." } }
            @for s in &list.data { (statement(s, false)) }
        }
    };
    let nav = Nav { signed: &signed, account: Some(&id) };
    Ok(Html(layout::page("Statements", Some(&nav), None, body).into_string()).into_response())
}

/// One statement: its month, status, lines and total.
pub fn statement(s: &StatementView, with_account: bool) -> Markup {
    html! {
        section.statement id=(s.id) aria-labelledby={ (s.id) "-title" } {
            h2 id={ (s.id) "-title" } {
                @if with_account { (s.account_id) ": " }
                (s.month) " · " span.status { (s.status) } " · total " (money(&s.currency, s.total))
            }
            p { "Issued on " (s.issued_on) }
            div.scroll {
                table {
                    thead { tr { th scope="col" { "Purchase" } th scope="col" { "Credits" } th scope="col" { "Unit price" } th scope="col" { "Amount" } } }
                    tbody {
                        @for l in &s.lines {
                            tr { td { (l.purchase_id) } td.num { (count(l.credits)) }
                                td.num { (money(&s.currency, l.unit_price)) } td.num { (money(&s.currency, l.amount)) } }
                        }
                    }
                }
            }
        }
    }
}
