//! Purchase history: one page of purchases (newest first, by cursor), and
//! every purchase as CSV (the `csv` crate: a header row, RFC 4180 quoting).

use axum::extract::{Path, Query, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{Html, IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::WebState;
use super::error::WebError;
use super::format::{count, day, money};
use super::layout::{self, Nav};
use super::signed::Signed;
use crate::domain::period::Zone;
use crate::domain::view::PurchaseView;
use crate::ledger::{LedgerError, MAX_PAGE_LIMIT, PageRequest, Store};

/// Purchases on one page of the history.
pub const HISTORY_PAGE_SIZE: usize = 20;

/// Most purchases in one CSV download: a bound on one request's work.
pub const MAX_CSV_PURCHASES: usize = 100_000;

#[derive(Deserialize)]
pub struct HistoryQuery {
    cursor: Option<String>,
}

pub async fn page<S: Store>(
    State(st): State<WebState<S>>,
    signed: Signed,
    Path(id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Response, WebError> {
    let account = signed.account(&id)?;
    let now = st.app.clock.now();
    let view = st.app.ledger.account(&account, now).await?;
    let zone = Zone::parse(&view.time_zone)?;
    let year = zone.date_of(now).year();
    let req = PageRequest::new(q.cursor, Some(HISTORY_PAGE_SIZE as i64))?;
    let purchases = st.app.ledger.purchases(&account, None, req).await.map_err(list_error)?;
    let body = html! {
        p { a #purchases-csv href={ "/a/" (id) "/purchases.csv" } download { "Download CSV" } }
        @if purchases.data.is_empty() {
            p { "No purchases yet." }
        } @else {
            div.scroll {
                table #purchases {
                    caption { "Purchases, newest first" }
                    thead { tr { th scope="col" { "Date" } th scope="col" { "Credits" } th scope="col" { "Unit price" }
                        th scope="col" { "Amount" } th scope="col" { "Status" } th scope="col" { "Refunded" } } }
                    tbody {
                        @for p in &purchases.data {
                            tr data-purchase-id=(p.id) {
                                td { (day(zone.date_of(p.purchased_at), year)) }
                                td.num { (count(p.credits)) }
                                td.num { (money(&p.currency, p.unit_price)) }
                                td.num { (money(&p.currency, p.amount)) }
                                td {
                                    @match &p.statement_id {
                                        Some(sid) => a href={ "/a/" (id) "/statements#" (sid) } { "Billed" },
                                        None => { "Unbilled, bills on " (day(p.bills_on, year)) },
                                    }
                                }
                                td.num { (count(p.refunded_credits)) }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(c) = &purchases.next_cursor {
            p { a href={ "/a/" (id) "/purchases?cursor=" (c) } { "Older purchases" } }
        }
    };
    let nav = Nav { signed: &signed, account: Some(&id) };
    let flash = signed.session.flash.as_ref();
    Ok(Html(layout::page("Purchases", Some(&nav), flash, body).into_string()).into_response())
}

/// An unusable cursor came from the URL: the same refusal as the API's.
fn list_error(e: LedgerError) -> WebError {
    match e {
        LedgerError::Domain(crate::domain::DomainError::Invalid(why)) => {
            crate::http::ApiError::bad_request(why).into()
        }
        other => other.into(),
    }
}

pub const CSV_HEADER: [&str; 10] = [
    "id",
    "purchased_at",
    "credits",
    "unit_price",
    "amount",
    "currency",
    "status",
    "bills_on",
    "statement_id",
    "refunded_credits",
];

fn record(p: &PurchaseView) -> [String; 10] {
    [
        p.id.clone(),
        p.purchased_at.to_string(),
        p.credits.to_string(),
        p.unit_price.to_string(),
        p.amount.to_string(),
        p.currency.to_string(),
        p.status.clone(),
        p.bills_on.to_string(),
        p.statement_id.clone().unwrap_or_default(),
        p.refunded_credits.to_string(),
    ]
}

/// Every purchase (at most [`MAX_CSV_PURCHASES`]), newest first.
pub fn to_csv(purchases: &[PurchaseView]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(CSV_HEADER)?;
    for p in purchases {
        w.write_record(record(p))?;
    }
    w.into_inner().map_err(|e| e.into_error().into())
}

pub async fn csv<S: Store>(
    State(st): State<WebState<S>>,
    signed: Signed,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let account = signed.account(&id)?;
    let mut all = Vec::new();
    let mut req = PageRequest::first(MAX_PAGE_LIMIT);
    loop {
        let got = st.app.ledger.purchases(&account, None, req).await?;
        all.extend(got.data);
        match got.next_cursor {
            Some(c) if all.len() < MAX_CSV_PURCHASES => {
                req = PageRequest::new(Some(c), Some(MAX_PAGE_LIMIT as i64))?
            }
            _ => break,
        }
    }
    all.truncate(MAX_CSV_PURCHASES);
    let bytes = to_csv(&all).map_err(|e| LedgerError::Internal(format!("csv: {e}")))?;
    let disposition = format!("attachment; filename=\"purchases-{account}.csv\"");
    Ok(([(CONTENT_TYPE, "text/csv; charset=utf-8".to_string()), (CONTENT_DISPOSITION, disposition)], bytes)
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::{Currency, Micros};

    #[test]
    fn csv_has_a_header_and_quotes_as_rfc_4180() {
        let p = PurchaseView {
            id: "pur_a,\"b\"".into(),
            account_id: "cafe-1".into(),
            credits: 500,
            unit_price: Micros::from_micros(10_000),
            amount: Currency::usd().amount(Micros::from_micros(5_000_000)),
            currency: Currency::usd(),
            purchased_at: "2026-11-24T18:00:00Z".parse().unwrap(),
            bills_on: jiff::civil::date(2026, 12, 1),
            status: "unbilled".into(),
            statement_id: None,
            refunded_credits: 0,
        };
        let text = String::from_utf8(to_csv(&[p]).unwrap()).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next().unwrap(), CSV_HEADER.join(","));
        assert_eq!(
            lines.next().unwrap(),
            "\"pur_a,\"\"b\"\"\",2026-11-24T18:00:00Z,500,0.01,5.00,USD,unbilled,2026-12-01,,0"
        );
        assert!(lines.next().is_none());
    }
}
