//! A real webhook receiver for the tests: an HTTP/1.1 server on 127.0.0.1
//! that checks every delivery's signature, records the verified ones, and
//! answers what the test scripted (a status, headers, a body, a delay, a
//! body that never ends).
//!
//! It verifies with the Standard Webhooks algorithm written out here, with
//! the `hmac`, `sha2` and `base64` crates, not by calling `src/events`: a
//! bug in the signer cannot hide behind the same bug in the verifier. A
//! request whose signature (any space-separated `v1` entry, by any accepted
//! secret) does not match, or whose `webhook-timestamp` is more than five
//! minutes from now, is answered 401 and counted in
//! [`Receiver::invalid_signatures`]; tests assert it stays zero.
//!
//! [`Receiver::stop`] closes the listener and every open connection (an
//! outage); [`Receiver::restart`] listens again on the same port.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use sha2::Sha256;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::{JoinHandle, JoinSet};

/// Largest delivery body the receiver reads, in bytes.
const MAX_BODY_BYTES: usize = 1 << 20;
/// How far `webhook-timestamp` may be from the receiver's clock (the
/// Standard Webhooks libraries' five minutes).
const TOLERANCE_SECS: u64 = 5 * 60;

/// One verified delivery, as it arrived.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub content_type: String,
    pub user_agent: String,
    pub body: Value,
    /// The status the receiver answered it with.
    pub answered: u16,
}

/// One scripted answer; without a script the receiver answers 204.
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Bytes,
    delay: Duration,
    endless: bool,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply { status, headers: Vec::new(), body: Bytes::new(), delay: Duration::ZERO, endless: false }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Reply {
        self.body = body.into();
        self
    }

    /// Waits this long before answering.
    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    /// After the body, the answer never ends (no more bytes, no end).
    pub fn endless(mut self) -> Reply {
        self.endless = true;
        self
    }
}

struct State {
    keys: Mutex<Vec<Vec<u8>>>,
    script: Mutex<VecDeque<Reply>>,
    deliveries: Mutex<Vec<Delivery>>,
    requests: AtomicUsize,
    invalid: AtomicUsize,
    /// Verified requests not yet answered, and the most there were at once.
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

pub struct Receiver {
    addr: SocketAddr,
    state: Arc<State>,
    task: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Listens on a free loopback port, accepting deliveries signed by any
    /// of `secrets` (`whsec_...`).
    pub async fn start(secrets: &[&str]) -> Receiver {
        let keys = Mutex::new(secrets.iter().map(|s| key_of(s)).collect());
        let state = Arc::new(State {
            keys,
            script: Mutex::new(VecDeque::new()),
            deliveries: Mutex::new(Vec::new()),
            requests: AtomicUsize::new(0),
            invalid: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
        });
        let listener = listen(SocketAddr::from(([127, 0, 0, 1], 0)));
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(serve(listener, state.clone()));
        Receiver { addr, state, task: Some(task) }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    /// Stops listening and drops every connection: deliveries now fail to
    /// connect.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same port, with the same records and script.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = listen(self.addr);
        self.task = Some(tokio::spawn(serve(listener, self.state.clone())));
    }

    /// The answers to the next requests with a valid signature, in order;
    /// once used up, 204.
    pub fn set_script(&self, replies: impl IntoIterator<Item = Reply>) {
        *self.state.script.lock().unwrap() = replies.into_iter().collect();
    }

    /// Accepts deliveries signed by `secret` too (an endpoint's secret is
    /// known once the endpoint is created, after the receiver).
    pub fn accept(&self, secret: &str) {
        self.state.keys.lock().unwrap().push(key_of(secret));
    }

    /// Accepts only `secret` from now on (the old one of a rotation no
    /// longer verifies here).
    pub fn accept_only(&self, secret: &str) {
        *self.state.keys.lock().unwrap() = vec![key_of(secret)];
    }

    /// The verified deliveries, in the order they arrived.
    pub fn events(&self) -> Vec<Delivery> {
        self.state.deliveries.lock().unwrap().clone()
    }

    /// Requests of any kind, verified or not.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// The most verified requests this receiver held unanswered at once.
    pub fn most_in_flight(&self) -> usize {
        self.state.most_in_flight.load(Ordering::SeqCst)
    }

    /// Requests refused for a missing or wrong signature or a stale timestamp.
    pub fn invalid_signatures(&self) -> usize {
        self.state.invalid.load(Ordering::SeqCst)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// `SO_REUSEADDR`, so a restart can bind the port while the old
/// connections linger in TIME_WAIT.
fn listen(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap_or_else(|e| panic!("the receiver binds {addr}: {e}"));
    socket.listen(128).unwrap()
}

/// The connections are tasks of a set owned by this task, so aborting it
/// (stop) closes them all, not only the listener.
async fn serve(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        while connections.try_join_next().is_some() {}
        let state = state.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| answer(state.clone(), request));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type Body = BoxBody<Bytes, Infallible>;

async fn answer(state: Arc<State>, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = request.into_parts();
    let header =
        |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let Ok(collected) = Limited::new(body, MAX_BODY_BYTES).collect().await else {
        return Ok(plain(413));
    };
    let body = collected.to_bytes();
    let (id, timestamp, signature) =
        (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"));
    let keys = state.keys.lock().unwrap().clone();
    if !signed(&keys, &id, &timestamp, &body, &signature) {
        state.invalid.fetch_add(1, Ordering::SeqCst);
        return Ok(plain(401));
    }
    let reply = state.script.lock().unwrap().pop_front().unwrap_or_else(|| Reply::status(204));
    state.deliveries.lock().unwrap().push(Delivery {
        id,
        timestamp,
        signature,
        content_type: header("content-type"),
        user_agent: header("user-agent"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        answered: reply.status,
    });
    let now_in_flight = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.most_in_flight.fetch_max(now_in_flight, Ordering::SeqCst);
    tokio::time::sleep(reply.delay).await;
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut response = Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(name, value);
    }
    let body = if reply.endless {
        let first = futures_util::stream::iter([Ok::<_, Infallible>(Frame::data(reply.body))]);
        StreamBody::new(futures_util::StreamExt::chain(first, futures_util::stream::pending())).boxed()
    } else {
        Full::new(reply.body).boxed()
    };
    Ok(response.body(body).unwrap())
}

fn plain(status: u16) -> Response<Body> {
    Response::builder().status(status).body(Full::new(Bytes::new()).boxed()).unwrap()
}

/// The Standard Webhooks check: a fresh timestamp, and any `v1` entry equal
/// (in constant time) to HMAC-SHA256 over `{id}.{timestamp}.{body}` by any
/// accepted key.
fn key_of(secret: &str) -> Vec<u8> {
    STANDARD.decode(secret.strip_prefix("whsec_").expect("a whsec_ secret")).expect("base64")
}

fn signed(keys: &[Vec<u8>], id: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    let Ok(at) = timestamp.parse::<u64>() else { return false };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    if id.is_empty() || at.abs_diff(now) > TOLERANCE_SECS {
        return false;
    }
    let tags: Vec<Vec<u8>> = header
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|tag| STANDARD.decode(tag).ok())
        .collect();
    keys.iter().any(|key| {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        tags.iter().any(|tag| mac.clone().verify_slice(tag).is_ok())
    })
}
