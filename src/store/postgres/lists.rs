//! Read-side queries on PostgreSQL: the lists of [`crate::store::reads`]
//! (the SQL is shared with SQLite; here they only run), and the audit's
//! walk over every account.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::rows::{all, one, params};
use jiff::Timestamp;

use crate::domain::account::{Account, AccountId};
use crate::domain::event::EventView;
use crate::domain::hold::HoldStatus;
use crate::domain::period::{Month, Zone};
use crate::domain::view::{
    AccountView, DebitView, EntryView, HoldView, Page, PurchaseView, StatementView, UsageView,
};
use crate::ledger::{AccountRecords, AuditReport, LedgerError, PageRequest};
use crate::store::columns::Cols as _;
use crate::store::columns::{
    self, DEBITS, ENTRIES, EVENTS, HOLDS, LOTS, PURCHASES, REFUNDS, STATEMENTS, USAGE,
};
use crate::store::reads::{self, Query};

async fn run<T>(
    c: &impl GenericClient,
    q: Query,
    read: fn(&Row) -> Result<T, String>,
) -> Result<Vec<T>, LedgerError> {
    all(c, q.sql, &params(&q.params), read).await
}

async fn account(c: &impl GenericClient, id: &AccountId) -> Result<Account, LedgerError> {
    run(c, reads::account(id), columns::account)
        .await?
        .pop()
        .ok_or_else(|| LedgerError::AccountNotFound(id.to_string()))
}

pub async fn accounts(
    c: &impl GenericClient,
    req: &PageRequest,
    prefix: Option<&str>,
) -> Result<Page<AccountView>, LedgerError> {
    Ok(reads::accounts_page(run(c, reads::accounts(req, prefix)?, columns::account).await?, req))
}

pub async fn purchases(
    c: &impl GenericClient,
    id: &AccountId,
    month: Option<Month>,
    req: &PageRequest,
) -> Result<Page<PurchaseView>, LedgerError> {
    let a = account(c, id).await?;
    let items = run(c, reads::purchases(&a, month, req)?, columns::purchase).await?;
    reads::purchases_page(items, req, id)
}

pub async fn debits(
    c: &impl GenericClient,
    id: &AccountId,
    reference: Option<&str>,
    req: &PageRequest,
) -> Result<Page<DebitView>, LedgerError> {
    account(c, id).await?;
    Ok(reads::debits_page(run(c, reads::debits(id, reference, req)?, columns::debit).await?, req, id))
}

pub async fn events(
    c: &impl GenericClient,
    id: &AccountId,
    after: i64,
    req: &PageRequest,
) -> Result<Page<EventView>, LedgerError> {
    account(c, id).await?;
    Ok(reads::events_page(run(c, reads::events(id, after, req), columns::event).await?, req, id))
}

pub async fn holds(
    c: &impl GenericClient,
    id: &AccountId,
    status: Option<HoldStatus>,
    now: Timestamp,
    req: &PageRequest,
) -> Result<Page<HoldView>, LedgerError> {
    account(c, id).await?;
    Ok(reads::holds_page(run(c, reads::holds(id, status, now, req)?, columns::hold).await?, req, id, now))
}

pub async fn entries(
    c: &impl GenericClient,
    id: &AccountId,
    req: &PageRequest,
) -> Result<Page<EntryView>, LedgerError> {
    account(c, id).await?;
    Ok(reads::entries_page(run(c, reads::entries(id, req)?, columns::entry).await?, req, id))
}

pub async fn usage(
    c: &impl GenericClient,
    id: &AccountId,
    from: Month,
    to: Month,
) -> Result<Vec<UsageView>, LedgerError> {
    run(c, reads::usage(id, from, to), columns::usage).await
}

pub async fn statements(
    c: &impl GenericClient,
    id: Option<&AccountId>,
    month: Option<Month>,
    req: &PageRequest,
) -> Result<Page<StatementView>, LedgerError> {
    let q = reads::statements(id, month, req)?;
    if let Some(id) = id {
        account(c, id).await?;
    }
    Ok(reads::statements_page(run(c, q, columns::statement).await?, req, id.is_some()))
}

pub async fn accounts_to_bill(c: &impl GenericClient) -> Result<Vec<AccountId>, LedgerError> {
    reads::account_ids(all(c, reads::ACCOUNTS_TO_BILL, &[], |r| r.text(0)).await?)
}

pub async fn accounts_to_reset(
    c: &impl GenericClient,
    newest: Month,
) -> Result<Vec<(AccountId, Zone, Option<Month>)>, LedgerError> {
    let newest = newest.to_string();
    let rows = all(c, reads::ACCOUNTS_TO_RESET, &[&newest], |r| Ok((r.text(0)?, r.text(1)?, r.opt_text(2)?)))
        .await?;
    rows.into_iter().map(|(id, zone, m)| reads::reset_candidate(id, zone, m)).collect()
}

/// Walks every account, loading all its rows, and checks them.
pub async fn audit(c: &impl GenericClient) -> Result<AuditReport, LedgerError> {
    let mut report = AuditReport::default();
    for id in reads::account_ids(all(c, reads::AUDIT_ACCOUNTS, &[], |r| r.text(0)).await?)? {
        let records = AccountRecords {
            account: account(c, &id).await?,
            lots: run(c, reads::audit_rows(&LOTS, &id), columns::lot).await?,
            holds: run(c, reads::audit_rows(&HOLDS, &id), columns::hold).await?,
            debits: run(c, reads::audit_rows(&DEBITS, &id), columns::debit).await?,
            purchases: run(c, reads::audit_rows(&PURCHASES, &id), columns::purchase).await?,
            refunds: run(c, reads::audit_rows(&REFUNDS, &id), columns::refund).await?,
            statements: run(c, reads::audit_rows(&STATEMENTS, &id), columns::statement).await?,
            entries: run(c, reads::audit_rows(&ENTRIES, &id), columns::entry).await?,
            usage: run(c, reads::audit_rows(&USAGE, &id), columns::usage).await?,
            events: run(c, reads::audit_rows(&EVENTS, &id), columns::event).await?,
        };
        report.check(&records);
    }
    let sql = "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM entry_ids";
    let last_id = one(c, sql, &[], |r| r.int(0)).await?.unwrap_or(0);
    let max_id = one(c, "SELECT COALESCE(MAX(entry_id), 0) FROM entries", &[], |r| r.int(0)).await?;
    report.check_sequence(max_id.unwrap_or(0), last_id);
    report.orphans(all(c, reads::ORPHANS_SQL, &[], |r| Ok((r.text(0)?, r.text(1)?))).await?);
    Ok(report)
}
