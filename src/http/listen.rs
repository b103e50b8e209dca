//! The connection loop under the router: how many connections the server
//! holds, how long a client may take, and the graceful stop.
//!
//! - At most `max_connections` at once (`serve --max-connections`). One
//!   past the cap is answered `503` problem+json with `Connection: close`
//!   and closed, so the connections already open (a monitor's `/healthz`)
//!   keep being served. Refusals in flight are capped too
//!   ([`MAX_REFUSALS`]); beyond it a connection is simply closed.
//! - A request's headers must arrive within [`HEADER_READ_TIMEOUT`]; the
//!   same timer runs while a keep-alive connection waits for its next
//!   request (hyper starts it when the previous response is written), so
//!   an idle connection is closed after that long too.
//! - Headers larger than [`MAX_HEADER_BYTES`] answer 431 (hyper's answer,
//!   without a body: it is made below the application).
//! - On SIGTERM or SIGINT the listener closes, open connections finish the
//!   request they are in (keep-alive ends), and the loop returns once they
//!   are done or [`SHUTDOWN_GRACE`] has passed.

use super::error::ErrorCode;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::error::ApiError;

/// How long a client may take to send a request's headers, and how long a
/// keep-alive connection may sit idle between requests.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Connections held at once when `--max-connections` is not given: room for
/// a platform's connection pools on a small machine, far below its file
/// descriptor limit.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// The most `--max-connections` may ask for (a file descriptor each).
pub const MAX_MAX_CONNECTIONS: usize = 100_000;
/// Refusals being written at once; past it a connection is just closed.
pub const MAX_REFUSALS: usize = 64;
/// Longest the stop waits for open connections to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Longest a refusal takes: writing the answer and draining what the client
/// sent (closing with unread bytes would reset the connection before the
/// client reads the answer).
const REFUSAL_TIME: Duration = Duration::from_millis(500);

/// Serves `router` on `listener` until `stop` completes, then drains.
pub async fn run(
    listener: TcpListener,
    router: Router,
    max_connections: usize,
    stop: impl Future<Output = ()>,
) {
    let open = Arc::new(Semaphore::new(max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSALS));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).max_header_size(MAX_HEADER_BYTES);
    tokio::pin!(stop);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            if let Ok(slot) = refusing.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream, max_connections).await;
                    drop(slot);
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A client that goes away or breaks the protocol ends its own
            // connection; nothing to report.
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after the grace period; stopping anyway");
    }
}

/// Answers a connection past the cap with 503 and closes it.
async fn refuse(mut stream: TcpStream, max: usize) {
    let detail = format!("the server holds its maximum of {max} connections; retry shortly");
    let body = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, detail).body();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_TIME, async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < 64 * 1024 {
            match tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
}
