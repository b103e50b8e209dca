//! PostgreSQL's side of [`crate::store::columns`]: reading a row by
//! position, binding [`Val`]s, and running a query for its rows.

use bytes::BytesMut;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use super::pg_error;
use crate::ledger::LedgerError;
use crate::store::columns::{Cols, Val};

impl Cols for Row {
    fn int(&self, i: usize) -> Result<i64, String> {
        self.try_get(i).map_err(|e| e.to_string())
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, String> {
        self.try_get(i).map_err(|e| e.to_string())
    }
    fn text(&self, i: usize) -> Result<String, String> {
        self.try_get(i).map_err(|e| e.to_string())
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, String> {
        self.try_get(i).map_err(|e| e.to_string())
    }
    fn flag(&self, i: usize) -> Result<bool, String> {
        self.try_get(i).map_err(|e| e.to_string())
    }
}

impl ToSql for Val {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Val::Int(v) => v.to_sql(ty, out),
            Val::Text(v) => v.to_sql(ty, out),
            Val::Flag(v) => v.to_sql(ty, out),
            Val::Null => Ok(IsNull::Yes),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <i64 as ToSql>::accepts(ty) || <String as ToSql>::accepts(ty) || <bool as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

/// Parameters for a query, from a write's values.
pub fn params(vals: &[Val]) -> Vec<&(dyn ToSql + Sync)> {
    vals.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

fn corrupt(why: String) -> LedgerError {
    LedgerError::Internal(why)
}

pub async fn all<T>(
    c: &impl GenericClient,
    sql: &str,
    p: Params<'_>,
    read: fn(&Row) -> Result<T, String>,
) -> Result<Vec<T>, LedgerError> {
    let stmt = c.prepare_cached(sql).await.map_err(pg_error)?;
    let rows = c.query(&stmt, p).await.map_err(pg_error)?;
    rows.iter().map(|r| read(r).map_err(corrupt)).collect()
}

pub async fn one<T>(
    c: &impl GenericClient,
    sql: &str,
    p: Params<'_>,
    read: fn(&Row) -> Result<T, String>,
) -> Result<Option<T>, LedgerError> {
    let stmt = c.prepare_cached(sql).await.map_err(pg_error)?;
    let row = c.query_opt(&stmt, p).await.map_err(pg_error)?;
    row.map(|r| read(&r).map_err(corrupt)).transpose()
}
