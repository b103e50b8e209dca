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
use crate::domain::statement::LineKind;
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
                    thead { tr { th scope="col" { "Line" } th scope="col" { "Credits" } th scope="col" { "Unit price" } th scope="col" { "Amount" } } }
                    tbody {
                        @for l in &s.lines {
                            tr { td { @match l.kind { LineKind::Purchase => { "Purchase " (l.purchase_id) }, LineKind::Refund => { "Refund of " (l.purchase_id) } } } td.num { (count(l.credits)) }
                                td.num { (money(&s.currency, l.unit_price)) } td.num { (money(&s.currency, l.amount)) } }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::{Currency, Micros};
    use crate::domain::statement::StatementStatus;
    use crate::domain::view::LineView;

    /// A merchant reading a statement sees which line is a refund.
    #[test]
    fn refund_lines_say_they_are_refunds() {
        let usd = Currency::usd();
        let line = |kind, credits: i64, cents: i64| LineView {
            kind,
            purchase_id: "pur_a".into(),
            refund_id: (kind == LineKind::Refund).then(|| "prf_b".to_string()),
            credits,
            unit_price: Micros::from_micros(10_000),
            amount: usd.amount(Micros::from_micros(cents * 10_000)),
        };
        let s = StatementView {
            id: "st_2026-12_cafe".into(),
            account_id: "cafe".into(),
            month: crate::domain::period::Month::parse("2026-12").unwrap(),
            issued_on: jiff::civil::date(2027, 1, 1),
            lines: vec![line(LineKind::Purchase, 500, 500), line(LineKind::Refund, -100, -100)],
            total: usd.amount(Micros::from_micros(4_000_000)),
            currency: usd.clone(),
            status: StatementStatus::Open,
        };
        let html = statement(&s, false).into_string();
        assert!(html.contains("Purchase pur_a"), "{html}");
        assert!(html.contains("Refund of pur_a"), "{html}");
        assert!(html.contains("-$1.00"), "{html}");
    }
}
