//! Exports: every item of a list (purchases, statements, ledger entries),
//! read a page at a time and written as it is read, so memory stays one
//! page whatever the history. CSV has a header row and RFC 4180 quoting
//! (the `csv` crate); JSON is one array. Used by `format=csv` on the HTTP
//! lists, the dashboard's download and `textcredits export`.
//!
//! The pages are read one after another, not in one snapshot: an item
//! added while an export runs may be missing from it, never repeated
//! (newest first, by cursor).

use std::future::Future;

use bytes::Bytes;
use futures_util::Stream;
use serde::Serialize;

use super::{LedgerError, MAX_PAGE_LIMIT, PageRequest};
use crate::domain::view::{EntryView, Page, PurchaseView, StatementView};

/// One item's CSV rows under a fixed header.
pub trait CsvRows: Serialize {
    const HEADER: &'static [&'static str];
    /// Its rows (a statement has one per line).
    fn rows(&self) -> Vec<Vec<String>>;
}

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_default()
}

impl CsvRows for PurchaseView {
    const HEADER: &'static [&'static str] = &[
        "id",
        "account_id",
        "purchased_at",
        "credits",
        "unit_price",
        "amount",
        "currency",
        "status",
        "bills_on",
        "statement_id",
        "refunded_credits",
        "automatic",
    ];

    fn rows(&self) -> Vec<Vec<String>> {
        vec![vec![
            self.id.clone(),
            self.account_id.clone(),
            self.purchased_at.to_string(),
            self.credits.to_string(),
            self.unit_price.to_string(),
            self.amount.to_string(),
            self.currency.to_string(),
            self.status.to_string(),
            self.bills_on.to_string(),
            opt(&self.statement_id),
            self.refunded_credits.to_string(),
            self.automatic.to_string(),
        ]]
    }
}

impl CsvRows for StatementView {
    const HEADER: &'static [&'static str] = &[
        "id",
        "account_id",
        "month",
        "issued_on",
        "status",
        "currency",
        "total",
        "line_kind",
        "purchase_id",
        "refund_id",
        "line_credits",
        "unit_price",
        "line_amount",
    ];

    /// One row per line, the statement's own columns repeated.
    fn rows(&self) -> Vec<Vec<String>> {
        let head = [
            self.id.clone(),
            self.account_id.clone(),
            self.month.to_string(),
            self.issued_on.to_string(),
            self.status.to_string(),
            self.currency.to_string(),
            self.total.to_string(),
        ];
        if self.lines.is_empty() {
            let mut row = head.to_vec();
            row.extend(std::iter::repeat_n(String::new(), 6));
            return vec![row];
        }
        self.lines
            .iter()
            .map(|l| {
                let mut row = head.to_vec();
                row.extend([
                    l.kind.to_string(),
                    l.purchase_id.clone(),
                    opt(&l.refund_id),
                    l.credits.to_string(),
                    l.unit_price.to_string(),
                    l.amount.to_string(),
                ]);
                row
            })
            .collect()
    }
}

impl CsvRows for EntryView {
    const HEADER: &'static [&'static str] = &[
        "id",
        "account_id",
        "kind",
        "lot_id",
        "lot_kind",
        "credits",
        "held_credits",
        "balance_after",
        "source",
        "reference",
        "effective_at",
        "created_at",
    ];

    fn rows(&self) -> Vec<Vec<String>> {
        vec![vec![
            self.id.to_string(),
            self.account_id.clone(),
            self.kind.to_string(),
            self.lot_id.clone(),
            self.lot_kind.to_string(),
            self.credits.to_string(),
            self.held_credits.to_string(),
            self.balance_after.to_string(),
            opt(&self.source),
            opt(&self.reference),
            self.effective_at.to_string(),
            self.created_at.to_string(),
        ]]
    }
}

/// How an export is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
}

/// One page's bytes: the CSV header before the first, JSON's brackets
/// around the whole.
fn encode<T: CsvRows>(format: Format, items: &[T], first: bool, last: bool) -> Result<Bytes, LedgerError> {
    let fail = |e: String| LedgerError::Internal(format!("export: {e}"));
    match format {
        Format::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            if first {
                w.write_record(T::HEADER).map_err(|e| fail(e.to_string()))?;
            }
            for row in items.iter().flat_map(CsvRows::rows) {
                w.write_record(&row).map_err(|e| fail(e.to_string()))?;
            }
            w.into_inner().map(Bytes::from).map_err(|e| fail(e.to_string()))
        }
        Format::Json => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                out.push(if first && i == 0 { b'[' } else { b',' });
                serde_json::to_writer(&mut out, item).map_err(|e| fail(e.to_string()))?;
            }
            if first && items.is_empty() {
                out.push(b'[');
            }
            if last {
                out.extend_from_slice(b"]\n");
            }
            Ok(Bytes::from(out))
        }
    }
}

/// Every item `fetch` pages through from `cursor` (the start when
/// `None`), as a stream of bytes. The first page is read before this
/// returns, so a missing account or a bad cursor is an error here, not a
/// broken stream; a failure later ends the stream with an error (an HTTP
/// client sees the transfer cut short, never a shorter file that looks
/// whole).
pub async fn stream<T, F, Fut>(
    format: Format,
    cursor: Option<String>,
    mut fetch: F,
) -> Result<impl Stream<Item = Result<Bytes, LedgerError>> + Send + use<T, F, Fut>, LedgerError>
where
    T: CsvRows + Send + 'static,
    F: FnMut(PageRequest) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Page<T>, LedgerError>> + Send,
{
    let page = fetch(PageRequest::new(cursor, Some(MAX_PAGE_LIMIT as i64))?).await?;
    let head = encode(format, &page.data, true, page.next_cursor.is_none())?;
    let state = (fetch, page.next_cursor, Some(head));
    Ok(futures_util::stream::unfold(state, move |(mut fetch, cursor, head)| async move {
        if let Some(bytes) = head {
            return Some((Ok(bytes), (fetch, cursor, None)));
        }
        let req = PageRequest::new(Some(cursor?), Some(MAX_PAGE_LIMIT as i64));
        let page = match req {
            Ok(req) => fetch(req).await,
            Err(e) => Err(e),
        };
        match page.and_then(|p| Ok((encode(format, &p.data, false, p.next_cursor.is_none())?, p.next_cursor)))
        {
            Ok((bytes, next)) => Some((Ok(bytes), (fetch, next, None))),
            Err(e) => Some((Err(e), (fetch, None, None))),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::{Currency, Micros};

    fn purchase(id: &str) -> PurchaseView {
        PurchaseView {
            id: id.into(),
            account_id: "cafe-1".into(),
            credits: 500,
            unit_price: Micros::from_micros(10_000),
            amount: Currency::usd().amount(Micros::from_micros(5_000_000)),
            currency: Currency::usd(),
            purchased_at: "2026-11-24T18:00:00Z".parse().unwrap(),
            bills_on: jiff::civil::date(2026, 12, 1),
            status: crate::domain::view::PurchaseStatus::Unbilled,
            statement_id: None,
            refunded_credits: 0,
            automatic: false,
        }
    }

    #[test]
    fn csv_has_a_header_and_quotes_as_rfc_4180() {
        let bytes = encode(Format::Csv, &[purchase("pur_a,\"b\"")], true, true).unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next().unwrap(), PurchaseView::HEADER.join(","));
        assert_eq!(
            lines.next().unwrap(),
            "\"pur_a,\"\"b\"\"\",cafe-1,2026-11-24T18:00:00Z,500,0.01,5.00,USD,unbilled,2026-12-01,,0,false"
        );
        assert!(lines.next().is_none());
        // Later pages carry no header.
        let more = encode(Format::Csv, &[purchase("pur_b")], false, true).unwrap();
        assert!(String::from_utf8(more.to_vec()).unwrap().starts_with("pur_b,"));
    }

    #[test]
    fn json_pages_make_one_array() {
        let pages = [
            encode(Format::Json, &[purchase("a"), purchase("b")], true, false).unwrap(),
            encode(Format::Json, &[purchase("c")], false, false).unwrap(),
            encode::<PurchaseView>(Format::Json, &[], false, true).unwrap(),
        ];
        let all: Vec<u8> = pages.iter().flat_map(|b| b.to_vec()).collect();
        let v: serde_json::Value = serde_json::from_slice(&all).unwrap();
        let ids: Vec<&str> = v.as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        let empty = encode::<PurchaseView>(Format::Json, &[], true, true).unwrap();
        assert_eq!(&empty[..], b"[]\n");
    }
}
