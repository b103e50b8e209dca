//! The `http` and `http-batch` scenarios: the real server (the same router
//! as `serve`) on a loopback port, and a load generator in the same
//! process: one keep-alive HTTP/1.1 connection per client, each sending
//! debits (one a request, or [`BATCH_SIZE`] a `POST /v1/batch`) and
//! reading the answers. A few lines of raw HTTP keep the generator out of
//! the way of what is measured (and out of the dependencies).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::BenchConfig;
use super::measure::Progress;
use crate::http::{AppState, Auth, Clock, Metrics, app};
use crate::ledger::{Ledger, LedgerError, Store};

const TOKEN: &str = "bench-admin-token-0123456789";

/// Debits per request of `http-batch`: the batch route's most.
pub const BATCH_SIZE: u64 = crate::http::MAX_BATCH_OPERATIONS as u64;

/// Clients of `http-batch` at most: each has a thousand debits in flight.
pub const MAX_BATCH_CLIENTS: usize = 8;

fn io(e: std::io::Error) -> LedgerError {
    LedgerError::Internal(format!("http load: {e}"))
}

pub async fn run<S: Store>(
    ledger: Arc<Ledger<S>>,
    ops: u64,
    accounts: u64,
    config: &BenchConfig,
    batch: u64,
) -> Result<(Vec<u32>, Duration), LedgerError> {
    let state = AppState {
        ledger: (*ledger).clone(),
        auth: Arc::new(Auth::new(TOKEN)),
        clock: Clock::System,
        metrics: Arc::new(Metrics::default()),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(io)?;
    let addr = listener.local_addr().map_err(io)?;
    let server = tokio::spawn(async move { axum::serve(listener, app(state)).await });
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    let clients_n = if batch > 1 { config.concurrency.min(MAX_BATCH_CLIENTS) } else { config.concurrency };
    for _ in 0..clients_n {
        let next = next.clone();
        clients.spawn(async move {
            let stream = TcpStream::connect(addr).await.map_err(io)?;
            stream.set_nodelay(true).map_err(io)?;
            let mut conn = BufReader::new(stream);
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(batch, Ordering::Relaxed);
                if i >= ops {
                    return Ok::<_, LedgerError>(latencies);
                }
                let n = batch.min(ops - i);
                let t = Instant::now();
                let account = |k: u64| super::scenarios::account_id(k.wrapping_mul(7_919) % accounts);
                let request = if batch == 1 {
                    let body = "{\"credits\":1}";
                    format!(
                        "POST /v1/accounts/{}/debits HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {TOKEN}\r\n\
                         Idempotency-Key: http-{i}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        account(i),
                        body.len()
                    )
                } else {
                    let operations: Vec<String> = (i..i + n)
                        .map(|k| {
                            format!(
                                "{{\"account_id\":\"{}\",\"op\":\"debit\",\"idempotency_key\":\"http-{k}\",\"credits\":1}}",
                                account(k)
                            )
                        })
                        .collect();
                    let body = format!("{{\"operations\":[{}]}}", operations.join(","));
                    format!(
                        "POST /v1/batch HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {TOKEN}\r\n\
                         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                };
                conn.get_mut().write_all(request.as_bytes()).await.map_err(io)?;
                let (status, body) = read_response(&mut conn).await.map_err(io)?;
                let debited = if batch == 1 {
                    u64::from(status == 201)
                } else {
                    let text = String::from_utf8_lossy(&body);
                    if status == 200 { text.matches("{\"status\":201,").count() as u64 } else { 0 }
                };
                if debited != n {
                    return Err(LedgerError::Internal(format!(
                        "the server answered {status} with {debited} of {n} debits made"
                    )));
                }
                // Each debit of a batch waits for the whole batch.
                let took = t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                latencies.extend(std::iter::repeat_n(took, n as usize));
            }
        });
    }
    let mut progress = Progress::new("http", ops, config.progress);
    let mut all = Vec::with_capacity(ops as usize);
    while let Some(done) = clients.join_next().await {
        all.extend(done.map_err(|e| LedgerError::Internal(e.to_string()))??);
        progress.tick(next.load(Ordering::Relaxed).min(ops));
    }
    let elapsed = started.elapsed();
    progress.finish();
    server.abort();
    Ok((all, elapsed))
}

/// Reads one response; its status code and body.
async fn read_response(conn: &mut BufReader<TcpStream>) -> std::io::Result<(u16, Vec<u8>)> {
    let mut line = String::new();
    conn.read_line(&mut line).await?;
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut length = 0usize;
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    conn.read_exact(&mut body).await?;
    Ok((status, body))
}
