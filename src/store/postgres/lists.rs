//! Read-side queries on PostgreSQL: the same pages, keyset cursors and
//! audit walk as the SQLite store's `lists.rs`.

use deadpool_postgres::GenericClient;
use jiff::Timestamp;

use super::rows::{all, one};
use crate::domain::account::{Account, AccountId};
use crate::domain::entry::Entry;
use crate::domain::period::Month;
use crate::domain::statement::Statement;
use crate::domain::view::{AccountView, EntryView, Page, PurchaseView, StatementView};
use crate::ledger::{AccountRecords, AuditReport, LedgerError, ORPHANS_SQL, PageRequest};
use crate::store::columns::Cols as _;
use crate::store::columns::{
    self, ACCOUNTS, DEBITS, ENTRIES, HOLDS, LOTS, PURCHASES, REFUNDS, STATEMENTS, micros,
};
use crate::store::paging::{bad_cursor, page, split_cursor};

async fn account(c: &impl GenericClient, id: &AccountId) -> Result<Account, LedgerError> {
    one(c, &ACCOUNTS.select("WHERE account_id = $1"), &[&id.as_str()], columns::account)
        .await?
        .ok_or_else(|| LedgerError::AccountNotFound(id.to_string()))
}

pub async fn accounts(c: &impl GenericClient, req: &PageRequest) -> Result<Page<AccountView>, LedgerError> {
    let (t, id) = match &req.cursor {
        Some(cur) => split_cursor(cur)?,
        None => (i64::MAX, String::new()),
    };
    let sql = ACCOUNTS.select(
        "WHERE (created_at, account_id) < ($1, $2) OR $3 ORDER BY created_at DESC, account_id DESC LIMIT $4",
    );
    let limit = req.limit as i64 + 1;
    let items = all(c, &sql, &[&t, &id, &req.cursor.is_none(), &limit], columns::account).await?;
    Ok(page(items, req.limit, |a| format!("{}:{}", micros(a.created_at), a.id), AccountView::of))
}

pub async fn purchases(
    c: &impl GenericClient,
    id: &AccountId,
    month: Option<Month>,
    req: &PageRequest,
) -> Result<Page<PurchaseView>, LedgerError> {
    let a = account(c, id).await?;
    let (from, to) = match month {
        Some(m) => (micros(m.start(&a.zone)), micros(m.end(&a.zone))),
        None => (i64::MIN, i64::MAX),
    };
    let (t, pid) = match &req.cursor {
        Some(cur) => split_cursor(cur)?,
        None => (i64::MAX, String::new()),
    };
    let sql = PURCHASES.select(
        "WHERE account_id = $1 AND purchased_at >= $2 AND purchased_at < $3 \
         AND ((purchased_at, purchase_id) < ($4, $5) OR $6) ORDER BY purchased_at DESC, purchase_id DESC LIMIT $7",
    );
    let limit = req.limit as i64 + 1;
    let items =
        all(c, &sql, &[&id.as_str(), &from, &to, &t, &pid, &req.cursor.is_none(), &limit], columns::purchase)
            .await?;
    Ok(page(
        items,
        req.limit,
        |p| format!("{}:{}", micros(p.purchased_at), p.id),
        |p| PurchaseView::of(id.as_str(), p),
    ))
}

pub async fn entries(
    c: &impl GenericClient,
    id: &AccountId,
    req: &PageRequest,
) -> Result<Page<EntryView>, LedgerError> {
    account(c, id).await?;
    let before: i64 = match &req.cursor {
        Some(cur) => cur.parse().map_err(|_| bad_cursor())?,
        None => i64::MAX,
    };
    let sql = ENTRIES.select("WHERE account_id = $1 AND entry_id < $2 ORDER BY entry_id DESC LIMIT $3");
    let items = all(c, &sql, &[&id.as_str(), &before, &(req.limit as i64 + 1)], columns::entry).await?;
    Ok(page(items, req.limit, |e| e.id.to_string(), EntryView::of))
}

pub async fn entries_between(
    c: &impl GenericClient,
    id: &AccountId,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<Entry>, LedgerError> {
    account(c, id).await?;
    let sql = ENTRIES
        .select("WHERE account_id = $1 AND effective_at >= $2 AND effective_at < $3 ORDER BY entry_id");
    all(c, &sql, &[&id.as_str(), &micros(from), &micros(to)], columns::entry).await
}

pub async fn statements(
    c: &impl GenericClient,
    id: Option<&AccountId>,
    month: Option<Month>,
    req: &PageRequest,
) -> Result<Page<StatementView>, LedgerError> {
    let limit = req.limit as i64 + 1;
    let items = match (id, month) {
        (Some(id), _) => {
            account(c, id).await?;
            let before = match &req.cursor {
                Some(cur) => Month::parse(cur).map_err(|_| bad_cursor())?.to_string(),
                None => "9999-99".to_string(),
            };
            let sql = STATEMENTS.select(
                "WHERE account_id = $1 AND month < $2 AND ($3::TEXT IS NULL OR month = $3) ORDER BY month DESC LIMIT $4",
            );
            let m = month.map(|m| m.to_string());
            all(c, &sql, &[&id.as_str(), &before, &m, &limit], columns::statement).await?
        }
        (None, Some(month)) => {
            let after = match &req.cursor {
                Some(cur) => AccountId::parse(cur).map_err(|_| bad_cursor())?.to_string(),
                None => String::new(),
            };
            let sql = STATEMENTS.select("WHERE month = $1 AND account_id > $2 ORDER BY account_id LIMIT $3");
            all(c, &sql, &[&month.to_string(), &after, &limit], columns::statement).await?
        }
        (None, None) => return Err(LedgerError::invalid("give an account or a month")),
    };
    let cursor = |s: &Statement| if id.is_some() { s.month.to_string() } else { s.account_id.to_string() };
    Ok(page(items, req.limit, cursor, StatementView::of))
}

pub async fn accounts_to_bill(c: &impl GenericClient) -> Result<Vec<AccountId>, LedgerError> {
    let sql = "SELECT DISTINCT account_id FROM purchases WHERE statement_id IS NULL AND credits > refunded_unbilled_credits \
               UNION SELECT DISTINCT account_id FROM purchase_refunds WHERE needs_line AND statement_id IS NULL \
               ORDER BY account_id";
    let ids = all(c, sql, &[], |r| r.text(0)).await?;
    ids.iter().map(|s| AccountId::parse(s).map_err(|e| LedgerError::Internal(e.to_string()))).collect()
}

pub async fn audit(c: &impl GenericClient) -> Result<AuditReport, LedgerError> {
    let mut report = AuditReport::default();
    for account in all(c, &ACCOUNTS.select("ORDER BY account_id"), &[], columns::account).await? {
        let a = account.id.as_str().to_string();
        let q = |table: &columns::Table, order: &str| {
            table.select(&format!("WHERE account_id = $1 ORDER BY {order}"))
        };
        let records = AccountRecords {
            lots: all(c, &q(&LOTS, "lot_id"), &[&a], columns::lot).await?,
            holds: all(c, &q(&HOLDS, "hold_id"), &[&a], columns::hold).await?,
            debits: all(c, &q(&DEBITS, "debit_id"), &[&a], columns::debit).await?,
            purchases: all(c, &q(&PURCHASES, "purchase_id"), &[&a], columns::purchase).await?,
            refunds: all(c, &q(&REFUNDS, "refund_id"), &[&a], columns::refund).await?,
            statements: all(c, &q(&STATEMENTS, "month"), &[&a], columns::statement).await?,
            entries: all(c, &q(&ENTRIES, "entry_id"), &[&a], columns::entry).await?,
            account,
        };
        report.check(&records);
    }
    let sql = "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM entry_ids";
    let last_id = one(c, sql, &[], |r| r.int(0)).await?.unwrap_or(0);
    let max_id = one(c, "SELECT COALESCE(MAX(entry_id), 0) FROM entries", &[], |r| r.int(0)).await?;
    report.check_sequence(max_id.unwrap_or(0), last_id);
    report.orphans(all(c, ORPHANS_SQL, &[], |r| Ok((r.text(0)?, r.text(1)?))).await?);
    Ok(report)
}
