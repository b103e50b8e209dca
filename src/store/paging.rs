//! Keyset pages, shared by the stores: newest first, a cursor that names
//! the last item of the page, `limit + 1` rows fetched to know whether
//! there is a next page.

use crate::domain::view::Page;
use crate::ledger::LedgerError;

pub fn bad_cursor() -> LedgerError {
    LedgerError::invalid("invalid cursor: pass the next_cursor of a previous page")
}

/// `<micros>:<id>` cursors for lists ordered by a time then an id.
pub fn split_cursor(cursor: &str) -> Result<(i64, String), LedgerError> {
    let (t, id) = cursor.split_once(':').ok_or_else(bad_cursor)?;
    Ok((t.parse().map_err(|_| bad_cursor())?, id.to_string()))
}

/// Cuts a `limit + 1` fetch into a page and its next cursor.
pub fn page<T, R>(
    mut items: Vec<R>,
    limit: usize,
    cursor: impl Fn(&R) -> String,
    view: impl Fn(&R) -> T,
) -> Page<T> {
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(&cursor)
    } else {
        None
    };
    Page { data: items.iter().map(view).collect(), next_cursor }
}
