//! The two proxies the suite watches the agent through.
//!
//! - [`LinkProxy`]: TCP between the agent and the control plane's agent listener. TLS passes
//!   through untouched (the suite cannot read the stream, and does not need to): it records when
//!   the agent wrote and how many bytes, and can cut every connection and refuse new ones for a
//!   while (a dropped link).
//! - [`EsProxy`]: HTTP between the control plane and osmem-server. It can hold `_bulk` requests
//!   (Elasticsearch stalls, so acknowledgements stop) or delay each by some milliseconds (a slow
//!   cluster), and counts bulk requests in flight.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

#[derive(Default)]
struct LinkState {
    /// When the agent wrote, and how much (agent → control plane).
    writes: Mutex<Vec<(Instant, usize)>>,
    bytes_up: AtomicU64,
    refuse_until: Mutex<Option<Instant>>,
    conns: Mutex<JoinSet<()>>,
    connections: AtomicU64,
}

/// TCP proxy in front of the control plane's agent listener.
pub struct LinkProxy {
    addr: SocketAddr,
    state: Arc<LinkState>,
    task: tokio::task::JoinHandle<()>,
}

impl LinkProxy {
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<LinkProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("bind the link proxy")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(LinkState::default());
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((agent, _)) = listener.accept().await else { continue };
                let refuse = st.refuse_until.lock().expect("lock").is_some_and(|t| Instant::now() < t);
                if refuse {
                    drop(agent);
                    continue;
                }
                st.connections.fetch_add(1, Ordering::Relaxed);
                let s = st.clone();
                st.conns.lock().expect("lock").spawn(async move {
                    let Ok(cp) = TcpStream::connect(upstream).await else { return };
                    let _ = agent.set_nodelay(true);
                    let _ = cp.set_nodelay(true);
                    let (mut ar, mut aw) = agent.into_split();
                    let (mut cr, mut cw) = cp.into_split();
                    let up = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match ar.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            s.writes.lock().expect("lock").push((Instant::now(), n));
                            s.bytes_up.fetch_add(n as u64, Ordering::Relaxed);
                            if cw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = cw.shutdown().await;
                    };
                    let down = async {
                        let _ = tokio::io::copy(&mut cr, &mut aw).await;
                        let _ = aw.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        Ok(LinkProxy { addr, state, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Bytes the agent wrote so far.
    pub fn bytes_up(&self) -> u64 {
        self.state.bytes_up.load(Ordering::Relaxed)
    }

    /// Connections accepted so far (not counting refused ones).
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::Relaxed)
    }

    /// The longest silence of the agent between `from` and `to`.
    pub fn longest_silence(&self, from: Instant, to: Instant) -> Duration {
        let writes = self.state.writes.lock().expect("lock");
        let mut last = from;
        let mut longest = Duration::ZERO;
        for (t, _) in writes.iter().filter(|(t, _)| *t >= from && *t <= to) {
            longest = longest.max(*t - last);
            last = *t;
        }
        longest.max(to - last)
    }

    /// Drops every connection and refuses new ones for `refuse_for`.
    pub fn cut(&self, refuse_for: Duration) {
        *self.state.refuse_until.lock().expect("lock") = Some(Instant::now() + refuse_for);
        self.state.conns.lock().expect("lock").abort_all();
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.state.conns.lock().expect("lock").abort_all();
    }
}

struct EsState {
    upstream: String,
    http: reqwest::Client,
    hold: AtomicBool,
    delay_ms: AtomicU64,
    bulk_in_flight: AtomicU64,
}

/// HTTP proxy in front of Elasticsearch that can stall or slow `_bulk`.
pub struct EsProxy {
    addr: SocketAddr,
    state: Arc<EsState>,
    task: tokio::task::JoinHandle<()>,
}

impl EsProxy {
    pub async fn start(upstream: &str) -> anyhow::Result<EsProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("bind the Elasticsearch proxy")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(EsState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            hold: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            bulk_in_flight: AtomicU64::new(0),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let st = st.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(handle(&st, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(EsProxy { addr, state, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Hold every `_bulk` request until [`EsProxy::release`].
    pub fn hold(&self) {
        self.state.hold.store(true, Ordering::SeqCst);
    }

    pub fn release(&self) {
        self.state.hold.store(false, Ordering::SeqCst);
    }

    /// Delay every `_bulk` request by `ms`.
    pub fn set_delay_ms(&self, ms: u64) {
        self.state.delay_ms.store(ms, Ordering::SeqCst);
    }

    pub fn bulk_in_flight(&self) -> u64 {
        self.state.bulk_in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for EsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(st: &EsState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return proxy_error(&format!("reading the request body: {e}")),
    };
    // Every `_bulk` is held (Elasticsearch stalls as a whole), but only
    // content batches count as in flight: the control plane also writes its
    // own small state documents (last_seen, fleet records) with `_bulk`,
    // always to dot-prefixed indices.
    let is_bulk = parts.uri.path().ends_with("/_bulk");
    let is_content = is_bulk && !first_action_targets_state_index(&body);
    if is_bulk {
        if is_content {
            st.bulk_in_flight.fetch_add(1, Ordering::SeqCst);
        }
        while st.hold.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let delay = st.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
    }
    let resp = match forward(st, parts, body).await {
        Ok(r) => r,
        Err(e) => proxy_error(&format!("{e:#}")),
    };
    if is_content {
        st.bulk_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
    resp
}

/// Whether the first action line of a `_bulk` body names a dot-prefixed
/// index (the control plane's state, not a content batch).
fn first_action_targets_state_index(body: &[u8]) -> bool {
    let line = body.split(|b| *b == b'\n').next().unwrap_or_default();
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else { return false };
    v.as_object()
        .and_then(|o| o.values().next())
        .and_then(|a| a.get("_index"))
        .and_then(|i| i.as_str())
        .is_some_and(|i| i.starts_with('.'))
}

fn proxy_error(reason: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(502)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            serde_json::json!({"error": {"type": "proxy_error", "reason": reason}, "status": 502})
                .to_string(),
        )))
        .expect("static response")
}

async fn forward(
    st: &EsState,
    parts: hyper::http::request::Parts,
    body: Bytes,
) -> anyhow::Result<Response<Full<Bytes>>> {
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes())?;
    let mut up = st.http.request(method, format!("{}{}", st.upstream, path)).body(body);
    for (name, value) in &parts.headers {
        if name != hyper::header::HOST && name != hyper::header::CONTENT_LENGTH {
            up = up.header(name.as_str(), value.as_bytes());
        }
    }
    let resp = up.send().await?;
    let status = resp.status().as_u16();
    let content_type = resp.headers().get("content-type").cloned();
    let bytes = resp.bytes().await?;
    let mut out = Response::builder().status(status);
    if let Some(ct) = content_type {
        out = out.header("content-type", ct.as_bytes());
    }
    Ok(out.body(Full::new(bytes))?)
}
