//! The webhook rows on PostgreSQL ([`crate::store::webhooks`]'s SQL). Any
//! number of replicas run the delivery worker: a claim locks the rows it
//! leases and skips those another replica is claiming (`SKIP LOCKED`), and
//! the lease keeps them its own while it sends.

use deadpool_postgres::GenericClient;
use jiff::Timestamp;

use super::pg_error;
use super::rows::{all, one as one_row, params};
use crate::domain::view::Page;
use crate::ledger::webhook::{
    AttemptView, Changed, Claimed, DeliveryStatus, DeliveryView, Endpoint, EndpointChange, MAX_ENDPOINTS,
    Recorded,
};
use crate::ledger::{Keyed, LedgerError, PageRequest, RequestKey, StoredAnswer, replayed};
use crate::store::columns::{self, Cols as _, Val, micros};
use crate::store::request_keys as keys;
use crate::store::webhooks as sql;

async fn exec(c: &impl GenericClient, q: &str, vals: Vec<Val>) -> Result<u64, LedgerError> {
    let stmt = c.prepare_cached(q).await.map_err(pg_error)?;
    c.execute(&stmt, &params(&vals)).await.map_err(pg_error)
}

/// Makes `change` under `key` in the caller's transaction
/// ([`crate::store::request_keys`]).
pub async fn change(
    c: &impl GenericClient,
    change: &EndpointChange,
    key: Option<&RequestKey>,
) -> Result<Option<Keyed<Changed>>, LedgerError> {
    let Some(k) = key else {
        return Ok(apply(c, change).await?.map(Keyed::fresh));
    };
    if exec(c, keys::CLAIM, keys::claim_vals(k)).await? == 0 {
        let vals = keys::scope_vals(k);
        let stored = one_row(c, keys::STORED, &params(&vals), |r| {
            Ok(StoredAnswer { request: r.text(0)?, response: r.text(1)? })
        })
        .await?
        .ok_or_else(|| LedgerError::Internal(format!("idempotency key {} vanished", k.key)))?;
        return replayed(k, &stored).map(Some);
    }
    let done = apply(c, change).await?;
    match &done {
        Some(answer) => exec(c, keys::KEEP, keys::keep_vals(k, answer)?).await?,
        None => exec(c, keys::FORGET, keys::scope_vals(k)).await?,
    };
    Ok(done.map(Keyed::fresh))
}

async fn apply(c: &impl GenericClient, change: &EndpointChange) -> Result<Option<Changed>, LedgerError> {
    Ok(match change {
        EndpointChange::Create(e) => {
            create(c, e).await?;
            Some(Changed::Endpoint(e.clone()))
        }
        EndpointChange::Save(e) => save(c, e).await?.then(|| Changed::Endpoint(e.clone())),
        EndpointChange::Redeliver { endpoint, event_id, now } => {
            redeliver(c, endpoint, event_id, *now).await?.then_some(Changed::Queued(1))
        }
        EndpointChange::Recover { endpoint, since, now } => {
            Some(Changed::Queued(recover(c, endpoint, *since, *now).await?))
        }
    })
}

pub async fn create(c: &impl GenericClient, e: &Endpoint) -> Result<(), LedgerError> {
    let mut vals = sql::endpoint_vals(e);
    vals.push(Val::Int(MAX_ENDPOINTS as i64));
    match exec(c, sql::INSERT_ENDPOINT, vals).await? {
        1 => Ok(()),
        _ => Err(sql::too_many()),
    }
}

pub async fn list(c: &impl GenericClient) -> Result<Vec<Endpoint>, LedgerError> {
    all(c, sql::list_endpoints(), &[], sql::endpoint).await
}

pub async fn one(c: &impl GenericClient, id: &str) -> Result<Option<Endpoint>, LedgerError> {
    one_row(c, sql::endpoint_by_id(), &[&id], sql::endpoint).await
}

async fn save(c: &impl GenericClient, e: &Endpoint) -> Result<bool, LedgerError> {
    Ok(exec(c, sql::UPDATE_ENDPOINT, sql::update_vals(e)).await? == 1)
}

pub async fn delete(c: &impl GenericClient, id: &str) -> Result<bool, LedgerError> {
    exec(c, sql::DELETE_ATTEMPTS, vec![id.into()]).await?;
    exec(c, sql::DELETE_DELIVERIES, vec![id.into()]).await?;
    Ok(exec(c, sql::DELETE_ENDPOINT, vec![id.into()]).await? == 1)
}

pub async fn dispatch(c: &impl GenericClient, now: Timestamp) -> Result<usize, LedgerError> {
    let q = crate::cached!(format!("{} FOR UPDATE SKIP LOCKED", sql::UNDISPATCHED));
    let events =
        all(c, q, &[&sql::DISPATCH_BATCH], |r| Ok((r.text(0)?, r.int(1)?, r.text(2)?, r.text(3)?))).await?;
    if events.is_empty() {
        return Ok(0);
    }
    let endpoints = list(c).await?;
    for (account, sequence, event_id, kind) in &events {
        for e in endpoints.iter().filter(|e| sql::wants(e, kind)) {
            let vals = sql::delivery_vals(&e.id, account, *sequence, event_id, kind, now);
            exec(c, sql::INSERT_DELIVERY, vals).await?;
        }
        exec(c, sql::MARK_DISPATCHED, vec![account.clone().into(), (*sequence).into()]).await?;
    }
    Ok(events.len())
}

pub async fn claim(
    c: &impl GenericClient,
    now: Timestamp,
    lease_until: Timestamp,
    limit: usize,
) -> Result<Vec<Claimed>, LedgerError> {
    let q = crate::cached!(format!("{} FOR UPDATE OF d SKIP LOCKED", sql::DUE));
    let limit = sql::claim_limit(limit);
    let due =
        all(c, q, &[&micros(now), &limit], |r| Ok((r.text(0)?, r.text(1)?, r.int(2)?, r.int(3)?))).await?;
    let mut claimed = Vec::with_capacity(due.len());
    for (endpoint_id, account, sequence, attempts) in due {
        let vals = vec![
            micros(lease_until).into(),
            endpoint_id.clone().into(),
            account.clone().into(),
            sequence.into(),
        ];
        exec(c, sql::LEASE, vals).await?;
        let Some(endpoint) = one(c, &endpoint_id).await? else { continue };
        let event = one_row(c, sql::event_row(), &[&account, &sequence], columns::event)
            .await?
            .ok_or_else(|| LedgerError::Internal(format!("delivery of {account}/{sequence} has no event")))?;
        claimed.push(sql::claimed(endpoint, &account, event, attempts, lease_until));
    }
    Ok(claimed)
}

pub async fn record(c: &impl GenericClient, claimed: &Claimed, r: &Recorded) -> Result<(), LedgerError> {
    if exec(c, sql::RECORD, sql::record_vals(claimed, r)).await? != 1 {
        return Ok(());
    }
    let (attempt, trim) = sql::attempt_vals(claimed, r);
    exec(c, sql::INSERT_ATTEMPT, attempt).await?;
    if let Some(trim) = trim {
        exec(c, sql::TRIM_ATTEMPTS, trim).await?;
    }
    if let Some(reason) = &r.disable {
        exec(c, sql::DISABLE, vec![reason.clone().into(), claimed.endpoint.id.clone().into()]).await?;
    }
    Ok(())
}

/// The attempts of the endpoint's delivery of `event_id`, or `None` when
/// it has no such delivery.
pub async fn attempts(
    c: &impl GenericClient,
    endpoint: &str,
    event_id: &str,
) -> Result<Option<Vec<AttemptView>>, LedgerError> {
    let vals: Vec<Val> = vec![endpoint.into(), event_id.into()];
    let has = one_row(c, sql::HAS_DELIVERY, &params(&vals), |r| r.int(0)).await?;
    if has.unwrap_or(0) == 0 {
        return Ok(None);
    }
    Ok(Some(all(c, sql::ATTEMPTS, &params(&vals), sql::attempt).await?))
}

pub async fn deliveries(
    c: &impl GenericClient,
    endpoint: &str,
    status: Option<DeliveryStatus>,
    page: &PageRequest,
) -> Result<Page<DeliveryView>, LedgerError> {
    let vals = sql::deliveries_vals(endpoint, status, page)?;
    let items = all(c, sql::deliveries(), &params(&vals), sql::delivery).await?;
    Ok(sql::deliveries_page(items, page))
}

async fn redeliver(
    c: &impl GenericClient,
    endpoint: &str,
    event_id: &str,
    now: Timestamp,
) -> Result<bool, LedgerError> {
    Ok(exec(c, sql::REDELIVER, vec![micros(now).into(), endpoint.into(), event_id.into()]).await? == 1)
}

async fn recover(
    c: &impl GenericClient,
    endpoint: &str,
    since: Timestamp,
    now: Timestamp,
) -> Result<u64, LedgerError> {
    exec(c, sql::RECOVER, vec![micros(now).into(), endpoint.into(), micros(since).into()]).await
}
