//! A fault-injecting HTTP proxy to put in front of osmem-server (or any Elasticsearch), to test
//! how the bulk path survives an overloaded cluster.
//!
//! For `_bulk` requests it can:
//! - answer whole requests `429 es_rejected_execution_exception` without forwarding them
//!   ([`FaultPlan::reject_every_nth_bulk`]), and
//! - forward the request, then rewrite some items of the real answer to 429
//!   ([`FaultPlan::item_429_every_nth`]: item positions `n-1, 2n-1, ...` of each response).
//!   Those documents *were* indexed; a client re-sending them is idempotent (same `_id`), which is
//!   exactly what a real partial rejection requires of it.
//!
//! Everything else is forwarded untouched. Counters tell the test what was injected, and
//! [`FaultProxy::requests`] counts every request by method and path (document ids folded into
//! `{id}`), so a test can measure what a component costs its Elasticsearch
//! (`FaultPlan::default()` injects nothing: a plain counting proxy).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// Which faults to inject. `0` disables a fault.
#[derive(Debug, Clone, Copy, Default)]
pub struct FaultPlan {
    /// Bulk requests number 1, n+1, 2n+1, ... are answered 429 whole.
    pub reject_every_nth_bulk: u64,
    /// In each forwarded bulk answer, items at positions n-1, 2n-1, ... become 429.
    pub item_429_every_nth: usize,
}

/// What the proxy injected so far.
#[derive(Debug, Default)]
pub struct FaultCounters {
    /// `"GET /.elastic-connectors/_doc/{id}"` → how many.
    pub by_route: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    pub bulk_requests: AtomicU64,
    pub rejected_requests: AtomicU64,
    pub rejected_items: AtomicU64,
    /// While set, every `_bulk` request is answered 429 whole (see
    /// [`FaultProxy::hold_bulks`]).
    pub holding: std::sync::atomic::AtomicBool,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    counters: Arc<FaultCounters>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`http://host:port`).
    pub async fn start(upstream: &str, plan: FaultPlan) -> anyhow::Result<FaultProxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("bind the fault proxy")?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(FaultCounters::default());
        let state = Arc::new(State {
            upstream: upstream.trim_end_matches('/').to_string(),
            plan,
            counters: counters.clone(),
            http: reqwest::Client::new(),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(state.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(FaultProxy { addr, counters, task })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn counters(&self) -> &FaultCounters {
        &self.counters
    }

    /// Requests forwarded (or answered) so far, by route.
    pub fn requests(&self) -> std::collections::BTreeMap<String, u64> {
        self.counters.by_route.lock().expect("counter lock").clone()
    }

    /// All requests so far.
    pub fn total_requests(&self) -> u64 {
        self.requests().values().sum()
    }

    pub fn rejected_requests(&self) -> u64 {
        self.counters.rejected_requests.load(Ordering::Relaxed)
    }

    /// While `on`, answer every `_bulk` 429 (nothing reaches the index, so
    /// nothing is acknowledged); everything else still passes.
    pub fn hold_bulks(&self, on: bool) {
        self.counters.holding.store(on, Ordering::SeqCst);
    }

    pub fn rejected_items(&self) -> u64 {
        self.counters.rejected_items.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct State {
    upstream: String,
    plan: FaultPlan,
    counters: Arc<FaultCounters>,
    http: reqwest::Client,
}

impl State {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        match self.try_handle(req).await {
            Ok(r) => r,
            Err(e) => respond(
                502,
                json!({"error": {"type": "proxy_error", "reason": format!("{e:#}")}, "status": 502}),
            ),
        }
    }

    async fn try_handle(&self, req: Request<Incoming>) -> anyhow::Result<Response<Full<Bytes>>> {
        let (parts, body) = req.into_parts();
        let body = body.collect().await?.to_bytes();
        let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let is_bulk = parts.uri.path().ends_with("/_bulk");
        *self
            .counters
            .by_route
            .lock()
            .expect("counter lock")
            .entry(format!("{} {}", parts.method, route(parts.uri.path())))
            .or_default() += 1;
        if is_bulk {
            let n = self.counters.bulk_requests.fetch_add(1, Ordering::Relaxed);
            let every = self.plan.reject_every_nth_bulk;
            if (every > 0 && n.is_multiple_of(every)) || self.counters.holding.load(Ordering::SeqCst) {
                self.counters.rejected_requests.fetch_add(1, Ordering::Relaxed);
                return Ok(respond(
                    429,
                    json!({"error": {"type": "es_rejected_execution_exception",
                        "reason": "injected by the fault proxy"}, "status": 429}),
                ));
            }
        }
        let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes())?;
        let mut upstream =
            self.http.request(method, format!("{}{}", self.upstream, path_and_query)).body(body);
        for (name, value) in &parts.headers {
            if name != hyper::header::HOST && name != hyper::header::CONTENT_LENGTH {
                upstream = upstream.header(name.as_str(), value.as_bytes());
            }
        }
        let resp = upstream.send().await?;
        let status = resp.status().as_u16();
        let content_type = resp.headers().get("content-type").cloned();
        let bytes = resp.bytes().await?;
        let every = self.plan.item_429_every_nth;
        if is_bulk && status == 200 && every > 0 {
            let mut v: Value = serde_json::from_slice(&bytes)?;
            let mut rejected = 0;
            if let Some(items) = v["items"].as_array_mut() {
                for (pos, item) in items.iter_mut().enumerate() {
                    if !(pos + 1).is_multiple_of(every) {
                        continue;
                    }
                    let Some(body) = item.as_object_mut().and_then(|o| o.values_mut().next()) else {
                        continue;
                    };
                    let id = body["_id"].clone();
                    *body = json!({"_index": body["_index"].clone(), "_id": id, "status": 429,
                        "error": {"type": "es_rejected_execution_exception", "reason": "injected item rejection"}});
                    rejected += 1;
                }
            }
            if rejected > 0 {
                v["errors"] = Value::Bool(true);
                self.counters.rejected_items.fetch_add(rejected, Ordering::Relaxed);
            }
            return Ok(respond(200, v));
        }
        let mut out = Response::builder().status(status);
        if let Some(ct) = content_type {
            out = out.header("content-type", ct.as_bytes());
        }
        Ok(out.body(Full::new(bytes))?)
    }
}

/// A path with document ids folded: `/idx/_doc/abc` → `/idx/_doc/{id}`
/// (also `_update`, `_create`).
pub fn route(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').collect();
    let mut out = Vec::with_capacity(parts.len());
    for (i, p) in parts.iter().enumerate() {
        let after_doc = i > 0 && matches!(parts[i - 1], "_doc" | "_update" | "_create");
        out.push(if after_doc { "{id}" } else { p });
    }
    out.join("/")
}

fn respond(status: u16, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("static response parts are valid")
}
