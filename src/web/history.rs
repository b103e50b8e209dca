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
use crate::ledger::{LedgerError, PageRequest, Store, export};

/// Purchases on one page of the history.
pub const HISTORY_PAGE_SIZE: usize = 20;

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
                        th scope="col" { "Amount" } th scope="col" { "Status" } th scope="col" { "Refunded" }
                        th scope="col" { "Type" } } }
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
                                td.kind { @if p.automatic { "Auto-recharge" } @else { "One-time" } }
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

/// Every purchase as CSV, streamed a page at a time (the export of the
/// API's `format=csv`, so the same columns).
pub async fn csv<S: Store>(
    State(st): State<WebState<S>>,
    signed: Signed,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    use futures_util::TryStreamExt as _;
    let account = signed.account(&id)?;
    let (ledger, who) = (st.app.ledger.clone(), account.clone());
    let fetch = move |req| {
        let (ledger, who) = (ledger.clone(), who.clone());
        async move { ledger.purchases(&who, None, req).await }
    };
    let stream = export::stream(export::Format::Csv, None, fetch).await?.map_err(|e| {
        tracing::error!(error = %e, "the purchases download failed part way");
        std::io::Error::other(e.to_string())
    });
    let disposition = format!("attachment; filename=\"purchases-{account}.csv\"");
    let headers = [(CONTENT_TYPE, "text/csv; charset=utf-8".to_string()), (CONTENT_DISPOSITION, disposition)];
    Ok((headers, axum::body::Body::from_stream(stream)).into_response())
}
