//! The read side's queries, written once for both databases: the SQL and
//! parameters of each list (keyset pages, newest first), and how a fetched
//! page is cut and shaped. Each store only runs a [`Query`] and reads its
//! rows with the shared readers of [`super::columns`].
//!
//! The SQL is the subset both databases take: `$n` parameters, row-value
//! comparisons, `CAST(.. AS TEXT)` where PostgreSQL must know a NULL's type.

use jiff::Timestamp;

use crate::domain::account::{Account, AccountId};
use crate::domain::debit::Debit;
use crate::domain::entry::Entry;
use crate::domain::event::{Event, EventView};
use crate::domain::hold::{Hold, HoldStatus};
use crate::domain::period::{Month, Zone};
use crate::domain::purchase::Purchase;
use crate::domain::statement::Statement;
use crate::domain::view::{AccountView, DebitView, EntryView, HoldView, Page, PurchaseView, StatementView};
use crate::ledger::{LedgerError, PageRequest};

use super::columns::{
    ACCOUNTS, DEBITS, ENTRIES, EVENTS, HOLDS, PURCHASES, STATEMENTS, Table, USAGE, Val, micros,
};
use super::paging::{bad_cursor, page, split_cursor};

/// A query and its parameters.
pub struct Query {
    pub sql: &'static str,
    pub params: Vec<Val>,
}

fn limit(req: &PageRequest) -> Val {
    Val::Int(req.limit as i64 + 1)
}

/// `(micros, id)` of a `<micros>:<id>` cursor, or the start of the list.
fn time_cursor(req: &PageRequest) -> Result<(i64, String), LedgerError> {
    match &req.cursor {
        Some(c) => split_cursor(c),
        None => Ok((i64::MAX, String::new())),
    }
}

pub fn account(id: &AccountId) -> Query {
    Query { sql: crate::cached!(ACCOUNTS.select("WHERE account_id = $1")), params: vec![id.as_str().into()] }
}

/// Accounts, newest first; with `prefix`, only those whose id or name
/// starts with it, ignoring case (a scan of the accounts: no index serves a
/// name prefix).
pub fn accounts(req: &PageRequest, prefix: Option<&str>) -> Result<Query, LedgerError> {
    let (t, id) = time_cursor(req)?;
    let sql = crate::cached!(ACCOUNTS.select(
        "WHERE ((created_at, account_id) < ($1, $2) OR $3) \
         AND (lower(account_id) LIKE $4 ESCAPE '!' OR lower(name) LIKE $4 ESCAPE '!') \
         ORDER BY created_at DESC, account_id DESC LIMIT $5"
    ));
    let pattern = match prefix {
        Some(p) => format!("{}%", like_escaped(&p.to_lowercase())),
        None => "%".to_string(),
    };
    Ok(Query {
        sql,
        params: vec![t.into(), id.into(), req.cursor.is_none().into(), pattern.into(), limit(req)],
    })
}

/// `text` with LIKE's wildcards taken literally (`!` is the escape).
fn like_escaped(text: &str) -> String {
    text.chars().fold(String::new(), |mut out, c| {
        if matches!(c, '%' | '_' | '!') {
            out.push('!');
        }
        out.push(c);
        out
    })
}

pub fn accounts_page(items: Vec<Account>, req: &PageRequest) -> Page<AccountView> {
    page(items, req.limit, |a| format!("{}:{}", micros(a.created_at), a.id), AccountView::of)
}

/// Purchases of `a` (loaded first: its zone bounds `month`).
pub fn purchases(a: &Account, month: Option<Month>, req: &PageRequest) -> Result<Query, LedgerError> {
    let (from, to) = match month {
        Some(m) => (micros(m.start(&a.zone)), micros(m.end(&a.zone))),
        None => (i64::MIN, i64::MAX),
    };
    let (t, pid) = time_cursor(req)?;
    let sql = crate::cached!(PURCHASES.select(
        "WHERE account_id = $1 AND purchased_at >= $2 AND purchased_at < $3 \
         AND ((purchased_at, purchase_id) < ($4, $5) OR $6) ORDER BY purchased_at DESC, purchase_id DESC LIMIT $7"
    ));
    let params = vec![
        a.id.as_str().into(),
        from.into(),
        to.into(),
        t.into(),
        pid.into(),
        req.cursor.is_none().into(),
        limit(req),
    ];
    Ok(Query { sql, params })
}

pub fn purchases_page(
    items: Vec<Purchase>,
    req: &PageRequest,
    id: &AccountId,
) -> Result<Page<PurchaseView>, LedgerError> {
    let cursor = |p: &Purchase| format!("{}:{}", micros(p.purchased_at), p.id);
    let views = page(items, req.limit, cursor, |p| PurchaseView::of(id.as_str(), p));
    let data = views.data.into_iter().collect::<Result<_, _>>()?;
    Ok(Page { data, next_cursor: views.next_cursor })
}

/// `$1..$4` of a per-account list newest first by `(created_at, id)`: the
/// account, the cursor's instant and id, and whether there is no cursor.
fn newest_first(id: &AccountId, req: &PageRequest) -> Result<Vec<Val>, LedgerError> {
    let (t, after) = time_cursor(req)?;
    Ok(vec![id.as_str().into(), t.into(), after.into(), req.cursor.is_none().into()])
}

/// Debits of `id` (captures included), newest first; with `reference`,
/// only those that carry it (served by its own index).
pub fn debits(id: &AccountId, reference: Option<&str>, req: &PageRequest) -> Result<Query, LedgerError> {
    let mut params = newest_first(id, req)?;
    // SQLite numbers `$n` in the order they first appear: keep them in order.
    let sql = match reference {
        None => crate::cached!(DEBITS.select(
            "WHERE account_id = $1 AND ((created_at, debit_id) < ($2, $3) OR $4) \
             ORDER BY created_at DESC, debit_id DESC LIMIT $5"
        )),
        Some(r) => {
            params.push(r.to_string().into());
            crate::cached!(DEBITS.select(
                "WHERE account_id = $1 AND ((created_at, debit_id) < ($2, $3) OR $4) AND reference = $5 \
                 ORDER BY created_at DESC, debit_id DESC LIMIT $6"
            ))
        }
    };
    params.push(limit(req));
    Ok(Query { sql, params })
}

pub fn debits_page(items: Vec<Debit>, req: &PageRequest, id: &AccountId) -> Page<DebitView> {
    page(
        items,
        req.limit,
        |d| format!("{}:{}", micros(d.created_at), d.id),
        |d| DebitView::of(id.as_str(), d),
    )
}

/// Holds of `id`, newest first; with `status`, only those in it at `now`.
/// A hold whose TTL ran out is expired from that instant, though its row
/// says `held` until the account's next write: `held` and `expired` are
/// decided by `expires_at`.
pub fn holds(
    id: &AccountId,
    status: Option<HoldStatus>,
    now: Timestamp,
    req: &PageRequest,
) -> Result<Query, LedgerError> {
    let mut params = newest_first(id, req)?;
    let sql = match status {
        None => crate::cached!(HOLDS.select(
            "WHERE account_id = $1 AND ((created_at, hold_id) < ($2, $3) OR $4) \
             ORDER BY created_at DESC, hold_id DESC LIMIT $5"
        )),
        Some(HoldStatus::Held) => {
            params.push(micros(now).into());
            crate::cached!(HOLDS.select(
                "WHERE account_id = $1 AND ((created_at, hold_id) < ($2, $3) OR $4) \
                 AND status = 'held' AND expires_at > $5 ORDER BY created_at DESC, hold_id DESC LIMIT $6"
            ))
        }
        Some(HoldStatus::Expired) => {
            params.push(micros(now).into());
            crate::cached!(HOLDS.select(
                "WHERE account_id = $1 AND ((created_at, hold_id) < ($2, $3) OR $4) \
                 AND (status = 'expired' OR (status = 'held' AND expires_at <= $5)) \
                 ORDER BY created_at DESC, hold_id DESC LIMIT $6"
            ))
        }
        Some(s) => {
            params.push(s.as_str().into());
            crate::cached!(HOLDS.select(
                "WHERE account_id = $1 AND ((created_at, hold_id) < ($2, $3) OR $4) AND status = $5 \
                 ORDER BY created_at DESC, hold_id DESC LIMIT $6"
            ))
        }
    };
    params.push(limit(req));
    Ok(Query { sql, params })
}

/// The page, each hold as it stands at `now` (see [`holds`]).
pub fn holds_page(items: Vec<Hold>, req: &PageRequest, id: &AccountId, now: Timestamp) -> Page<HoldView> {
    let view = |h: &Hold| {
        let mut v = HoldView::of(id.as_str(), h);
        if v.status == HoldStatus::Held && h.expires_at <= now {
            v.status = HoldStatus::Expired;
        }
        v
    };
    page(items, req.limit, |h| format!("{}:{}", micros(h.created_at), h.id), view)
}

pub fn entries(id: &AccountId, req: &PageRequest) -> Result<Query, LedgerError> {
    let before: i64 = match &req.cursor {
        Some(c) => c.parse().map_err(|_| bad_cursor())?,
        None => i64::MAX,
    };
    let sql = crate::cached!(
        ENTRIES.select("WHERE account_id = $1 AND entry_id < $2 ORDER BY entry_id DESC LIMIT $3")
    );
    Ok(Query { sql, params: vec![id.as_str().into(), before.into(), limit(req)] })
}

pub fn entries_page(items: Vec<Entry>, req: &PageRequest, id: &AccountId) -> Page<EntryView> {
    page(items, req.limit, |e| e.id.to_string(), |e| EntryView::of(id.as_str(), e))
}

/// The account's events after sequence `after`, oldest first (the one
/// list that is: a poller reads on from the last sequence it saw).
pub fn events(id: &AccountId, after: i64, req: &PageRequest) -> Query {
    let sql =
        crate::cached!(EVENTS.select("WHERE account_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3"));
    Query { sql, params: vec![id.as_str().into(), after.into(), limit(req)] }
}

/// A page of events; its `next_cursor` is the last sequence on it, the
/// `after` of the next page.
pub fn events_page(items: Vec<Event>, req: &PageRequest, id: &AccountId) -> Page<EventView> {
    page(items, req.limit, |e| e.sequence.to_string(), |e| EventView::of(id.as_str(), e))
}

/// Entries whose `effective_at` lies in `[from, to)`, in id order.
/// The stored usage counters of `id` for the months `from..=to` (months
/// as `YYYY-MM` text sort as they run).
pub fn usage(id: &AccountId, from: Month, to: Month) -> Query {
    let sql =
        crate::cached!(USAGE.select("WHERE account_id = $1 AND month >= $2 AND month <= $3 ORDER BY month"));
    Query { sql, params: vec![id.as_str().into(), from.to_string().into(), to.to_string().into()] }
}

/// Statements of one account (optionally one month), or of every account
/// for one month.
pub fn statements(
    id: Option<&AccountId>,
    month: Option<Month>,
    req: &PageRequest,
) -> Result<Query, LedgerError> {
    match (id, month) {
        (Some(id), _) => {
            let before = match &req.cursor {
                Some(c) => Month::parse(c).map_err(|_| bad_cursor())?.to_string(),
                None => "9999-99".to_string(),
            };
            let sql = crate::cached!(STATEMENTS.select(
                "WHERE account_id = $1 AND month < $2 AND (CAST($3 AS TEXT) IS NULL OR month = $3) \
                 ORDER BY month DESC LIMIT $4"
            ));
            let params =
                vec![id.as_str().into(), before.into(), month.map(|m| m.to_string()).into(), limit(req)];
            Ok(Query { sql, params })
        }
        (None, Some(month)) => {
            let after = match &req.cursor {
                Some(c) => AccountId::parse(c).map_err(|_| bad_cursor())?.to_string(),
                None => String::new(),
            };
            let sql = crate::cached!(
                STATEMENTS.select("WHERE month = $1 AND account_id > $2 ORDER BY account_id LIMIT $3")
            );
            Ok(Query { sql, params: vec![month.to_string().into(), after.into(), limit(req)] })
        }
        (None, None) => Err(LedgerError::invalid("give an account or a month")),
    }
}

pub fn statements_page(items: Vec<Statement>, req: &PageRequest, by_account: bool) -> Page<StatementView> {
    let cursor = |s: &Statement| if by_account { s.month.to_string() } else { s.account_id.to_string() };
    page(items, req.limit, cursor, StatementView::of)
}

/// Accounts with purchases or refund lines not yet on a statement.
pub const ACCOUNTS_TO_BILL: &str = "SELECT DISTINCT account_id FROM purchases \
    WHERE statement_id IS NULL AND credits > refunded_unbilled_credits \
    UNION SELECT DISTINCT account_id FROM purchase_refunds WHERE needs_line = TRUE AND statement_id IS NULL \
    ORDER BY account_id";

/// Accounts that may not have heard of their current month's allowance:
/// none announced, or one before `$1` (the newest month anywhere). Near a
/// boundary this includes accounts whose zone has not reached it yet; the
/// ledger tells them apart by zone.
pub const ACCOUNTS_TO_RESET: &str = "SELECT account_id, time_zone, reset_announced FROM accounts \
    WHERE reset_announced IS NULL OR reset_announced < $1 ORDER BY account_id";

/// A row of [`ACCOUNTS_TO_RESET`].
pub fn reset_candidate(
    id: String,
    zone: String,
    announced: Option<String>,
) -> Result<(AccountId, Zone, Option<Month>), LedgerError> {
    let bad = |what: &str| LedgerError::Internal(format!("account {id:?}: unreadable {what}"));
    let account = AccountId::parse(&id).map_err(|_| bad("id"))?;
    let zone = Zone::parse(&zone).map_err(|_| bad("time zone"))?;
    let announced = announced.map(|m| Month::parse(&m).map_err(|_| bad("reset_announced"))).transpose()?;
    Ok((account, zone, announced))
}

pub fn account_ids(ids: Vec<String>) -> Result<Vec<AccountId>, LedgerError> {
    ids.iter().map(|s| AccountId::parse(s).map_err(|e| LedgerError::Internal(e.to_string()))).collect()
}

/// Rows whose account does not exist (the append-only tables carry no
/// foreign key, see the schemas): table and account, a few.
pub const ORPHANS_SQL: &str = "SELECT 'entries', account_id FROM entries t \
    WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.account_id = t.account_id) \
    UNION ALL SELECT 'debits', account_id FROM debits t \
    WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.account_id = t.account_id) \
    UNION ALL SELECT 'idempotency_keys', account_id FROM idempotency_keys t \
    WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.account_id = t.account_id) \
    UNION ALL SELECT 'events', account_id FROM events t \
    WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.account_id = t.account_id) LIMIT 20";

/// The audit's walk: every account, then each table's rows of one account.
pub const AUDIT_ACCOUNTS: &str = "SELECT account_id FROM accounts ORDER BY account_id";

/// One account's rows of `table` in the audit's order.
pub fn audit_rows(table: &'static Table, id: &AccountId) -> Query {
    use super::columns::{LOTS, REFUNDS};
    static SQL: std::sync::OnceLock<Vec<(&'static str, String)>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        [
            (&ACCOUNTS, "account_id"),
            (&LOTS, "lot_id"),
            (&HOLDS, "hold_id"),
            (&DEBITS, "debit_id"),
            (&PURCHASES, "purchase_id"),
            (&REFUNDS, "refund_id"),
            (&STATEMENTS, "month"),
            (&ENTRIES, "entry_id"),
            (&USAGE, "month"),
            (&EVENTS, "sequence"),
        ]
        .into_iter()
        .map(|(t, order)| (t.name, t.select(&format!("WHERE account_id = $1 ORDER BY {order}"))))
        .collect()
    });
    let sql = all.iter().find(|(name, _)| *name == table.name).map(|(_, sql)| sql.as_str());
    Query { sql: sql.expect("a table the audit reads"), params: vec![id.as_str().into()] }
}
