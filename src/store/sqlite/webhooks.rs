//! The webhook rows on SQLite ([`crate::store::webhooks`]'s SQL), run by
//! the writer thread (writes) or a reader (lists). One writer means no
//! two claims ever race, so no row lock is needed.

use jiff::Timestamp;
use rusqlite::{Connection, params_from_iter};

use super::{rows, sql_error};
use crate::domain::view::Page;
use crate::ledger::webhook::{
    AttemptView, Changed, Claimed, DeliveryStatus, DeliveryView, Endpoint, EndpointChange, MAX_ENDPOINTS,
    Recorded,
};
use crate::ledger::{Keyed, LedgerError, PageRequest, RequestKey, StoredAnswer, replayed};
use crate::store::columns::{Val, micros};
use crate::store::request_keys as keys;
use crate::store::webhooks as sql;

fn exec(conn: &Connection, q: &str, vals: Vec<Val>) -> Result<usize, LedgerError> {
    conn.prepare_cached(q).and_then(|mut s| s.execute(params_from_iter(vals))).map_err(sql_error)
}

fn endpoint_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Endpoint> {
    sql::endpoint(r).map_err(rows::corrupt)
}

/// Makes `change` under `key` in the caller's transaction
/// ([`crate::store::request_keys`]).
pub fn change(
    conn: &Connection,
    change: &EndpointChange,
    key: Option<&RequestKey>,
) -> Result<Option<Keyed<Changed>>, LedgerError> {
    let Some(k) = key else {
        return Ok(apply(conn, change)?.map(Keyed::fresh));
    };
    if exec(conn, keys::CLAIM, keys::claim_vals(k))? == 0 {
        let stored = conn
            .prepare_cached(keys::STORED)
            .and_then(|mut s| {
                s.query_row(params_from_iter(keys::scope_vals(k)), |r| {
                    Ok(StoredAnswer { request: r.get(0)?, response: r.get(1)? })
                })
            })
            .map_err(sql_error)?;
        return replayed(k, &stored).map(Some);
    }
    let done = apply(conn, change)?;
    match &done {
        Some(answer) => exec(conn, keys::KEEP, keys::keep_vals(k, answer)?)?,
        None => exec(conn, keys::FORGET, keys::scope_vals(k))?,
    };
    Ok(done.map(Keyed::fresh))
}

fn apply(conn: &Connection, change: &EndpointChange) -> Result<Option<Changed>, LedgerError> {
    Ok(match change {
        EndpointChange::Create(e) => {
            create(conn, e)?;
            Some(Changed::Endpoint(e.clone()))
        }
        EndpointChange::Save(e) => save(conn, e)?.then(|| Changed::Endpoint(e.clone())),
        EndpointChange::Redeliver { endpoint, event_id, now } => {
            redeliver(conn, endpoint, event_id, *now)?.then_some(Changed::Queued(1))
        }
        EndpointChange::Recover { endpoint, since, now } => {
            Some(Changed::Queued(recover(conn, endpoint, *since, *now)?))
        }
    })
}

pub fn create(conn: &Connection, e: &Endpoint) -> Result<(), LedgerError> {
    let mut vals = sql::endpoint_vals(e);
    vals.push(Val::Int(MAX_ENDPOINTS as i64));
    match exec(conn, sql::INSERT_ENDPOINT, vals)? {
        1 => Ok(()),
        _ => Err(sql::too_many()),
    }
}

pub fn list(conn: &Connection) -> Result<Vec<Endpoint>, LedgerError> {
    rows::all(conn, sql::list_endpoints(), [], endpoint_row).map_err(sql_error)
}

pub fn one(conn: &Connection, id: &str) -> Result<Option<Endpoint>, LedgerError> {
    Ok(rows::all(conn, sql::endpoint_by_id(), [id], endpoint_row).map_err(sql_error)?.pop())
}

fn save(conn: &Connection, e: &Endpoint) -> Result<bool, LedgerError> {
    Ok(exec(conn, sql::UPDATE_ENDPOINT, sql::update_vals(e))? == 1)
}

pub fn delete(conn: &Connection, id: &str) -> Result<bool, LedgerError> {
    exec(conn, sql::DELETE_ATTEMPTS, vec![id.into()])?;
    exec(conn, sql::DELETE_DELIVERIES, vec![id.into()])?;
    Ok(exec(conn, sql::DELETE_ENDPOINT, vec![id.into()])? == 1)
}

pub fn dispatch(conn: &Connection, now: Timestamp) -> Result<usize, LedgerError> {
    let events: Vec<(String, i64, String, String)> =
        rows::all(conn, sql::UNDISPATCHED, [sql::DISPATCH_BATCH], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .map_err(sql_error)?;
    if events.is_empty() {
        return Ok(0);
    }
    let endpoints = list(conn)?;
    for (account, sequence, event_id, kind) in &events {
        for e in endpoints.iter().filter(|e| sql::wants(e, kind)) {
            let vals = sql::delivery_vals(&e.id, account, *sequence, event_id, kind, now);
            exec(conn, sql::INSERT_DELIVERY, vals)?;
        }
        exec(conn, sql::MARK_DISPATCHED, vec![account.clone().into(), (*sequence).into()])?;
    }
    Ok(events.len())
}

pub fn claim(
    conn: &Connection,
    now: Timestamp,
    lease_until: Timestamp,
    limit: usize,
) -> Result<Vec<Claimed>, LedgerError> {
    let due: Vec<(String, String, i64, i64)> =
        rows::all(conn, sql::due_sqlite(), rusqlite::params![micros(now), sql::claim_limit(limit)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .map_err(sql_error)?;
    let mut claimed = Vec::with_capacity(due.len());
    for (endpoint_id, account, sequence, attempts) in due {
        let vals = vec![
            micros(lease_until).into(),
            endpoint_id.clone().into(),
            account.clone().into(),
            sequence.into(),
        ];
        exec(conn, sql::LEASE, vals)?;
        let Some(endpoint) = one(conn, &endpoint_id)? else { continue };
        let event = rows::all(conn, sql::event_row(), rusqlite::params![account, sequence], rows::event)
            .map_err(sql_error)?
            .pop()
            .ok_or_else(|| LedgerError::Internal(format!("delivery of {account}/{sequence} has no event")))?;
        claimed.push(sql::claimed(endpoint, &account, event, attempts, lease_until));
    }
    Ok(claimed)
}

pub fn record(conn: &Connection, c: &Claimed, r: &Recorded) -> Result<(), LedgerError> {
    if exec(conn, sql::RECORD, sql::record_vals(c, r))? != 1 {
        return Ok(());
    }
    let (attempt, trim) = sql::attempt_vals(c, r);
    exec(conn, sql::INSERT_ATTEMPT, attempt)?;
    if let Some(trim) = trim {
        exec(conn, sql::TRIM_ATTEMPTS, trim)?;
    }
    if let Some(reason) = &r.disable {
        exec(conn, sql::DISABLE, vec![reason.clone().into(), c.endpoint.id.clone().into()])?;
    }
    Ok(())
}

/// The attempts of the endpoint's delivery of `event_id`, or `None` when
/// it has no such delivery.
pub fn attempts(
    conn: &Connection,
    endpoint: &str,
    event_id: &str,
) -> Result<Option<Vec<AttemptView>>, LedgerError> {
    let key = rusqlite::params![endpoint, event_id];
    let has: i64 = conn
        .prepare_cached(sql::HAS_DELIVERY)
        .and_then(|mut s| s.query_row(key, |r| r.get(0)))
        .map_err(sql_error)?;
    if has == 0 {
        return Ok(None);
    }
    let list =
        rows::all(conn, sql::ATTEMPTS, key, |r| sql::attempt(r).map_err(rows::corrupt)).map_err(sql_error)?;
    Ok(Some(list))
}

pub fn deliveries(
    conn: &Connection,
    endpoint: &str,
    status: Option<DeliveryStatus>,
    page: &PageRequest,
) -> Result<Page<DeliveryView>, LedgerError> {
    let vals = sql::deliveries_vals(endpoint, status, page)?;
    let items = rows::all(conn, sql::deliveries(), params_from_iter(vals), |r| {
        sql::delivery(r).map_err(rows::corrupt)
    })
    .map_err(sql_error)?;
    Ok(sql::deliveries_page(items, page))
}

fn redeliver(conn: &Connection, endpoint: &str, event_id: &str, now: Timestamp) -> Result<bool, LedgerError> {
    Ok(exec(conn, sql::REDELIVER, vec![micros(now).into(), endpoint.into(), event_id.into()])? == 1)
}

fn recover(conn: &Connection, endpoint: &str, since: Timestamp, now: Timestamp) -> Result<u64, LedgerError> {
    Ok(exec(conn, sql::RECOVER, vec![micros(now).into(), endpoint.into(), micros(since).into()])? as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The claim reads the due deliveries through `deliveries_due` (no
    /// scan of every pending one, no sort) and each one's earlier pending
    /// ones through `deliveries_pending` (not the account's history).
    #[test]
    fn a_claim_reads_only_what_is_due_through_its_indexes() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::sqlite::schema::migrate(&mut conn).unwrap().unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", sql::due_sqlite()))
            .unwrap()
            .query_map(rusqlite::params![0, 64], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let text = plan.join("\n");
        assert!(text.contains("SEARCH d USING INDEX deliveries_due"), "{text}");
        assert!(text.contains("SEARCH p USING COVERING INDEX deliveries_pending"), "{text}");
        assert!(!text.contains("SCAN") && !text.contains("TEMP B-TREE"), "{text}");
    }
}
