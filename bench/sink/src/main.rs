//! bench-sink: the **benchmark sink** of `bench/run`, plus its feeder.
//!
//! `bench-sink serve --listen ADDR [--upstream URL]`
//!   A minimal Elasticsearch-compatible `_bulk` receiver. It parses every NDJSON line (action
//!   line and document line, the document with a full JSON parse), answers real per-item
//!   results, and counts unique `_id`s per index (a `HashSet` per index) so the harness can
//!   detect lost or duplicated documents. It stores no documents.
//!
//!   Data indices (first path segment not starting with `.` or `_`) are answered locally:
//!   `HEAD/PUT/DELETE /{index}`, `PUT /{index}/_mapping`, `/{index}/_count` (= unique ids),
//!   `/{index}/_refresh`, `/{index}/_delete_by_query` (deletes nothing: the benchmark indices
//!   only hold documents of the current sync), `/{index}/_bulk`, `/_bulk`.
//!   Everything else (`GET /`, the `.elastic-connectors*` state indices with their `_doc`
//!   OCC, `_search`, ...) is proxied to `--upstream` (an osmem-server the harness starts), so
//!   the control plane can run against this one URL. Without `--upstream`, `GET /` is answered
//!   locally as Elasticsearch 8.15.0 and the rest is 404.
//!   Every answer carries `X-Elastic-Product: Elasticsearch` (the Python client checks it).
//!   `GET /_sink/stats` returns `{"indices":{name:{unique,ops,bytes,requests,errors,index_ops,
//!   update_ops,delete_ops,deletes_missing}}}` (`deletes_missing`: deletes of an id not present).
//!   Change-stream latency (`bench/run --cdc`): every `index`/`update` source carrying Ferry's
//!   `"_timestamp":"<RFC 3339 UTC>"` (the PostgreSQL commit time of the change) is recorded as
//!   (commit time, answer time - commit time); `GET /_sink/latency?index=I&from_us=A&to_us=B`
//!   returns `{count,p50_ms,p99_ms,max_ms,last_commit_us}` over the changes whose commit time
//!   (Unix µs) is in [A, B).
//!
//! `bench-sink feed --url URL --index NAME --rows N [--body-bytes B] [--in-flight K]`
//!   The sink's own ceiling: pre-renders N documents shaped like the benchmark table's rows into
//!   `_bulk` bodies of about B bytes (default 5 MB), then sends them with K requests in flight
//!   (default 4) and prints one JSON line with the timing of the sending only.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;

type Body = Full<Bytes>;

#[derive(Default)]
struct IndexState {
    ids: HashSet<Box<str>>,
    ops: u64,
    bytes: u64,
    requests: u64,
    errors: u64,
    created: bool,
    next_seq: u64,
    index_ops: u64,
    update_ops: u64,
    delete_ops: u64,
    deletes_missing: u64,
    /// (commit time Unix µs, latency µs) of every change with a `_timestamp`.
    latency: Vec<(i64, u32)>,
}

struct Sink {
    indices: Mutex<HashMap<String, IndexState>>,
    upstream: Option<String>,
    client: Client<HttpConnector, Body>,
    auto_id: AtomicUsize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str| -> Option<String> {
        args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(get("--threads").and_then(|t| t.parse().ok()).unwrap_or(2))
        .enable_all()
        .build()
        .expect("tokio runtime");
    match args.get(1).map(String::as_str) {
        Some("serve") => {
            let listen: SocketAddr = get("--listen").unwrap_or("127.0.0.1:0".into()).parse().expect("--listen");
            rt.block_on(serve(listen, get("--upstream")));
        }
        Some("feed") => {
            let url = get("--url").expect("--url");
            let index = get("--index").unwrap_or("sink-ceiling".into());
            let rows: usize = get("--rows").expect("--rows").parse().expect("--rows");
            let body_bytes: usize = get("--body-bytes").map(|b| b.parse().expect("--body-bytes")).unwrap_or(5 << 20);
            let in_flight: usize = get("--in-flight").map(|b| b.parse().expect("--in-flight")).unwrap_or(4);
            rt.block_on(feed(url, index, rows, body_bytes, in_flight));
        }
        _ => {
            eprintln!("usage: bench-sink serve --listen ADDR [--upstream URL] | feed --url URL --index NAME --rows N [--body-bytes B] [--in-flight K]");
            std::process::exit(2);
        }
    }
}

async fn serve(listen: SocketAddr, upstream: Option<String>) {
    let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
    let addr = listener.local_addr().unwrap();
    let sink = Arc::new(Sink {
        indices: Mutex::new(HashMap::new()),
        upstream: upstream.map(|u| u.trim_end_matches('/').to_string()),
        client: Client::builder(TokioExecutor::new()).build_http(),
        auto_id: AtomicUsize::new(0),
    });
    println!("bench-sink listening on http://{addr}");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let sink = sink.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let sink = sink.clone();
                async move { Ok::<_, Infallible>(handle(sink, req).await) }
            });
            let _ = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn with_product(mut r: Response<Body>) -> Response<Body> {
    r.headers_mut().insert("x-elastic-product", HeaderValue::from_static("Elasticsearch"));
    r
}

fn is_data_index(seg: &str) -> bool {
    !seg.is_empty() && !seg.starts_with('.') && !seg.starts_with('_') && !seg.contains(['*', ','])
}

async fn handle(sink: Arc<Sink>, req: Request<Incoming>) -> Response<Body> {
    with_product(route(sink, req).await)
}

async fn route(sink: Arc<Sink>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let method = req.method().clone();
    match (segs.as_slice(), &method) {
        (["_bulk"], &Method::POST | &Method::PUT) => bulk(&sink, None, req).await,
        (["_sink", "stats"], _) => stats(&sink),
        (["_sink", "latency"], _) => latency(&sink, req.uri().query().unwrap_or("")),
        ([idx, "_bulk"], &Method::POST | &Method::PUT) if is_data_index(idx) => {
            let idx = idx.to_string();
            bulk(&sink, Some(idx), req).await
        }
        ([idx], m) if is_data_index(idx) => {
            let mut map = sink.indices.lock().unwrap();
            match *m {
                Method::HEAD => {
                    let exists = map.get(*idx).map(|s| s.created).unwrap_or(false);
                    json(if exists { StatusCode::OK } else { StatusCode::NOT_FOUND }, Bytes::new())
                }
                Method::PUT => {
                    let st = map.entry(idx.to_string()).or_default();
                    if st.created {
                        json(StatusCode::BAD_REQUEST, format!(
                            r#"{{"error":{{"root_cause":[{{"type":"resource_already_exists_exception","reason":"index [{idx}] already exists"}}],"type":"resource_already_exists_exception","reason":"index [{idx}] already exists"}},"status":400}}"#))
                    } else {
                        st.created = true;
                        json(StatusCode::OK, format!(r#"{{"acknowledged":true,"shards_acknowledged":true,"index":"{idx}"}}"#))
                    }
                }
                Method::DELETE => {
                    map.remove(*idx);
                    json(StatusCode::OK, r#"{"acknowledged":true}"#)
                }
                _ => json(StatusCode::OK, format!(r#"{{"{idx}":{{"aliases":{{}},"mappings":{{}},"settings":{{}}}}}}"#)),
            }
        }
        ([idx, op], _) if is_data_index(idx) && matches!(*op, "_mapping" | "_count" | "_refresh" | "_delete_by_query" | "_flush") => {
            let map = sink.indices.lock().unwrap();
            let st = map.get(*idx);
            match *op {
                "_mapping" => json(StatusCode::OK, r#"{"acknowledged":true}"#),
                "_count" => json(StatusCode::OK, format!(
                    r#"{{"count":{},"_shards":{{"total":1,"successful":1,"skipped":0,"failed":0}}}}"#,
                    st.map(|s| s.ids.len()).unwrap_or(0))),
                "_delete_by_query" => json(StatusCode::OK,
                    r#"{"took":0,"timed_out":false,"total":0,"deleted":0,"batches":0,"version_conflicts":0,"noops":0,"retries":{"bulk":0,"search":0},"throttled_millis":0,"requests_per_second":-1.0,"throttled_until_millis":0,"failures":[]}"#),
                _ => json(StatusCode::OK, r#"{"_shards":{"total":1,"successful":1,"failed":0}}"#),
            }
        }
        _ => proxy(&sink, req).await,
    }
}

fn stats(sink: &Sink) -> Response<Body> {
    let map = sink.indices.lock().unwrap();
    let mut out = serde_json::Map::new();
    for (k, s) in map.iter() {
        out.insert(k.clone(), serde_json::json!({
            "unique": s.ids.len(), "ops": s.ops, "bytes": s.bytes, "requests": s.requests, "errors": s.errors,
            "index_ops": s.index_ops, "update_ops": s.update_ops, "delete_ops": s.delete_ops,
            "deletes_missing": s.deletes_missing, "latency_samples": s.latency.len(),
        }));
    }
    json(StatusCode::OK, serde_json::to_vec(&serde_json::json!({ "indices": out })).unwrap())
}

fn latency(sink: &Sink, query: &str) -> Response<Body> {
    let param = |k: &str| query.split('&').find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')));
    let index = param("index").unwrap_or("");
    let from: i64 = param("from_us").and_then(|v| v.parse().ok()).unwrap_or(i64::MIN);
    let to: i64 = param("to_us").and_then(|v| v.parse().ok()).unwrap_or(i64::MAX);
    let map = sink.indices.lock().unwrap();
    let (mut lat, last) = match map.get(index) {
        Some(st) => (
            st.latency.iter().filter(|(c, _)| *c >= from && *c < to).map(|(_, l)| *l).collect::<Vec<u32>>(),
            st.latency.iter().map(|(c, _)| *c).max().unwrap_or(0),
        ),
        None => (Vec::new(), 0),
    };
    drop(map);
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i] as f64 / 1000.0
    };
    let body = serde_json::json!({
        "count": lat.len(), "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": pct(1.0), "last_commit_us": last,
    });
    json(StatusCode::OK, serde_json::to_vec(&body).unwrap())
}

/// The commit time (Unix µs) in Ferry's `"_timestamp":"YYYY-MM-DDTHH:MM:SS[.f]Z"` of a source.
fn commit_time_us(src: &[u8]) -> Option<i64> {
    const KEY: &[u8] = b"\"_timestamp\":\"";
    let at = memchr::memmem::rfind(src, KEY)? + KEY.len();
    let t = src.get(at..at + 19)?;
    let num = |r: std::ops::Range<usize>| -> Option<i64> { std::str::from_utf8(&t[r]).ok()?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (mo + if mo > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let mut us = ((days * 24 + h) * 60 + mi) * 60 + se;
    us *= 1_000_000;
    let rest = &src[at + 19..];
    if rest.first() == Some(&b'.') {
        let digits: Vec<u8> = rest[1..].iter().take_while(|c| c.is_ascii_digit()).copied().collect();
        let mut frac = 0i64;
        for i in 0..6 {
            frac = frac * 10 + digits.get(i).map(|c| (c - b'0') as i64).unwrap_or(0);
        }
        us += frac;
    }
    Some(us)
}

async fn proxy(sink: &Sink, req: Request<Incoming>) -> Response<Body> {
    let Some(up) = &sink.upstream else {
        if req.uri().path() == "/" {
            return json(StatusCode::OK, r#"{"name":"bench-sink","cluster_name":"bench","cluster_uuid":"bench","version":{"number":"8.15.0","build_flavor":"default","lucene_version":"9.11.1","minimum_wire_compatibility_version":"7.17.0","minimum_index_compatibility_version":"7.0.0"},"tagline":"You Know, for Search"}"#);
        }
        return json(StatusCode::NOT_FOUND, r#"{"error":{"type":"not_found","reason":"bench-sink has no upstream"},"status":404}"#);
    };
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return json(StatusCode::BAD_REQUEST, format!(r#"{{"error":"{e}"}}"#)),
    };
    let pq = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut b = Request::builder().method(parts.method).uri(format!("{up}{pq}"));
    for (k, v) in parts.headers.iter() {
        if k != HOST {
            b = b.header(k, v);
        }
    }
    let out = b.body(Full::new(body)).expect("request");
    match sink.client.request(out).await {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let mut r = Response::new(Full::new(body));
            *r.status_mut() = parts.status;
            for (k, v) in parts.headers.iter() {
                if k != hyper::header::CONTENT_LENGTH && k != hyper::header::TRANSFER_ENCODING {
                    r.headers_mut().insert(k, v.clone());
                }
            }
            r
        }
        Err(e) => json(StatusCode::BAD_GATEWAY, format!(r#"{{"error":{{"type":"proxy_error","reason":{}}},"status":502}}"#, serde_json::to_string(&e.to_string()).unwrap())),
    }
}

#[derive(Deserialize)]
struct Meta<'a> {
    #[serde(rename = "_index", borrow, default)]
    index: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "_id", borrow, default)]
    id: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Action<'a> {
    #[serde(borrow, default)]
    index: Option<Meta<'a>>,
    #[serde(borrow, default)]
    create: Option<Meta<'a>>,
    #[serde(borrow, default)]
    update: Option<Meta<'a>>,
    #[serde(borrow, default)]
    delete: Option<Meta<'a>>,
}

struct Item {
    op: &'static str,
    index: String,
    id: String,
    error: Option<(u16, &'static str, String)>,
    source_len: usize,
    commit_us: Option<i64>,
}

fn bad_request(reason: String) -> Response<Body> {
    json(StatusCode::BAD_REQUEST, format!(
        r#"{{"error":{{"root_cause":[{{"type":"illegal_argument_exception","reason":{r}}}],"type":"illegal_argument_exception","reason":{r}}},"status":400}}"#,
        r = serde_json::to_string(&reason).unwrap()))
}

/// Which parts of a `_bulk` answer to write: Elasticsearch's `filter_path`, for the shapes bulk
/// clients use (`took`, `errors`, `items.*.<field>`); no parameter means everything.
struct BulkFilter {
    took: bool,
    errors: bool,
    /// `None`: every item field.
    item_fields: Option<Vec<String>>,
}

impl BulkFilter {
    fn from_query(query: Option<&str>) -> BulkFilter {
        let fp = query.into_iter().flat_map(|q| q.split('&')).find_map(|kv| kv.strip_prefix("filter_path="));
        let Some(fp) = fp else { return BulkFilter { took: true, errors: true, item_fields: None } };
        let fp = fp.replace("%2C", ",").replace("%2c", ",").replace("%2A", "*").replace("%2a", "*");
        let paths: Vec<&str> = fp.split(',').collect();
        let item_fields = if paths.iter().any(|p| *p == "items" || *p == "items.*") {
            None
        } else {
            Some(paths.iter().filter_map(|p| p.strip_prefix("items.*.")).map(str::to_owned).collect())
        };
        BulkFilter { took: paths.contains(&"took"), errors: paths.contains(&"errors"), item_fields }
    }

    fn item(&self, field: &str) -> bool {
        self.item_fields.as_ref().is_none_or(|f| f.iter().any(|x| x == field))
    }
}

/// Appends `,"key":value` (or `"key":value` first in its object) when the filter keeps it.
fn field(out: &mut Vec<u8>, first: &mut bool, keep: bool, key: &str, value: &[u8]) {
    if !keep {
        return;
    }
    if !*first {
        out.push(b',');
    }
    *first = false;
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(value);
}

async fn bulk(sink: &Sink, default_index: Option<String>, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let filter = BulkFilter::from_query(req.uri().query());
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return bad_request(format!("reading body: {e}")),
    };
    // Parse every line outside the lock.
    let mut items: Vec<Item> = Vec::with_capacity(1024);
    let mut lines = body.split(|&c| c == b'\n').filter(|l| !l.iter().all(|c| c.is_ascii_whitespace()));
    let mut line_no = 0usize;
    while let Some(action_line) = lines.next() {
        line_no += 1;
        let action: Action = match serde_json::from_slice(action_line) {
            Ok(a) => a,
            Err(e) => return bad_request(format!("Malformed action/metadata line [{line_no}]: {e}")),
        };
        let (op, meta, has_source) = match (action.index, action.create, action.update, action.delete) {
            (Some(m), None, None, None) => ("index", m, true),
            (None, Some(m), None, None) => ("create", m, true),
            (None, None, Some(m), None) => ("update", m, true),
            (None, None, None, Some(m)) => ("delete", m, false),
            _ => return bad_request(format!("Malformed action/metadata line [{line_no}]: expected exactly one of index/create/update/delete")),
        };
        let index = match (meta.index, &default_index) {
            (Some(i), _) => i.into_owned(),
            (None, Some(d)) => d.clone(),
            (None, None) => return bad_request(format!("action line [{line_no}] has no _index")),
        };
        let id = match meta.id {
            Some(id) => id.into_owned(),
            None if op == "index" || op == "create" => format!("auto-{}", sink.auto_id.fetch_add(1, Ordering::Relaxed)),
            None => return bad_request(format!("action line [{line_no}] ({op}) has no _id")),
        };
        let mut error = None;
        let mut source_len = 0;
        let mut commit_us = None;
        if has_source {
            line_no += 1;
            let Some(src) = lines.next() else {
                return bad_request(format!("The bulk request must be terminated by a newline [{line_no}]"));
            };
            source_len = src.len();
            commit_us = commit_time_us(src);
            if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(src) {
                error = Some((400, "mapper_parsing_exception", format!("failed to parse: {e}")));
            } else if src.first() != Some(&b'{') {
                error = Some((400, "mapper_parsing_exception", "source is not a JSON object".to_string()));
            }
        }
        items.push(Item { op, index, id, error, source_len, commit_us });
    }
    // Record under the lock, render the answer after.
    let mut results: Vec<(u16, u64, bool)> = Vec::with_capacity(items.len()); // status, seq_no, existed
    let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0);
    {
        let mut map = sink.indices.lock().unwrap();
        let mut cur_name: Option<&str> = None;
        let mut cur: Option<&mut IndexState> = None;
        for it in &items {
            if cur_name != Some(it.index.as_str()) {
                cur = Some(map.entry(it.index.clone()).or_default());
                cur_name = Some(it.index.as_str());
                // Safety valve: re-borrow per index switch (rare: one index per request).
                let st = cur.as_deref_mut().unwrap();
                st.requests += 1;
                st.created = true;
            }
            let st = cur.as_deref_mut().unwrap();
            st.ops += 1;
            st.bytes += it.source_len as u64;
            if it.error.is_some() {
                st.errors += 1;
                results.push((it.error.as_ref().unwrap().0, 0, false));
                continue;
            }
            let seq = st.next_seq;
            st.next_seq += 1;
            if let Some(c) = it.commit_us {
                st.latency.push((c, (now_us - c).clamp(0, u32::MAX as i64) as u32));
            }
            match it.op {
                "delete" => {
                    st.delete_ops += 1;
                    let existed = st.ids.remove(it.id.as_str());
                    if !existed {
                        st.deletes_missing += 1;
                    }
                    results.push((if existed { 200 } else { 404 }, seq, existed));
                }
                "update" => {
                    st.update_ops += 1;
                    let existed = st.ids.contains(it.id.as_str());
                    if !existed {
                        st.errors += 1;
                    }
                    results.push((if existed { 200 } else { 404 }, seq, existed));
                }
                "create" => {
                    let fresh = st.ids.insert(it.id.clone().into_boxed_str());
                    if !fresh {
                        st.errors += 1;
                    }
                    results.push((if fresh { 201 } else { 409 }, seq, !fresh));
                }
                _ => {
                    st.index_ops += 1;
                    let fresh = st.ids.insert(it.id.clone().into_boxed_str());
                    results.push((if fresh { 201 } else { 200 }, seq, !fresh));
                }
            }
        }
    }
    let errors = results.iter().any(|r| r.0 >= 300);
    let mut out = Vec::with_capacity(64 + items.len() * 190);
    out.push(b'{');
    let mut first = true;
    field(&mut out, &mut first, filter.took, "took", started.elapsed().as_millis().to_string().as_bytes());
    field(&mut out, &mut first, filter.errors, "errors", if errors { b"true" } else { b"false" });
    if filter.item_fields.as_ref().is_none_or(|f| !f.is_empty()) {
        if !first {
            out.push(b',');
        }
        out.extend_from_slice(b"\"items\":[");
        for (n, (it, (status, seq, existed))) in items.iter().zip(results).enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"");
            out.extend_from_slice(it.op.as_bytes());
            out.extend_from_slice(b"\":{");
            let mut f = true;
            let keep = |k: &str| filter.item(k);
            field(&mut out, &mut f, keep("_index"), "_index", &serde_json::to_vec(&it.index).unwrap());
            field(&mut out, &mut f, keep("_id"), "_id", &serde_json::to_vec(&it.id).unwrap());
            let result = match (it.op, status) {
                ("delete", 200) => "deleted",
                (_, 404) => "not_found",
                (_, 409) => "conflict",
                (_, 201) => "created",
                _ => "updated",
            };
            let error = match &it.error {
                Some((st, ty, reason)) => Some((*st, ty.to_string(), reason.clone())),
                None if status >= 300 => Some((
                    status,
                    if status == 409 { "version_conflict_engine_exception" } else { "document_missing_exception" }.to_string(),
                    result.to_string(),
                )),
                None => None,
            };
            if let Some((st, ty, reason)) = error {
                field(&mut out, &mut f, keep("status"), "status", st.to_string().as_bytes());
                let e = format!(r#"{{"type":"{ty}","reason":{}}}"#, serde_json::to_string(&reason).unwrap());
                field(&mut out, &mut f, keep("error"), "error", e.as_bytes());
            } else {
                field(&mut out, &mut f, keep("_version"), "_version", if existed { b"2" } else { b"1" });
                field(&mut out, &mut f, keep("result"), "result", format!("\"{result}\"").as_bytes());
                field(&mut out, &mut f, keep("_shards"), "_shards", br#"{"total":1,"successful":1,"failed":0}"#);
                field(&mut out, &mut f, keep("_seq_no"), "_seq_no", seq.to_string().as_bytes());
                field(&mut out, &mut f, keep("_primary_term"), "_primary_term", b"1");
                field(&mut out, &mut f, keep("status"), "status", status.to_string().as_bytes());
            }
            out.extend_from_slice(b"}}");
        }
        out.push(b']');
    }
    out.push(b'}');
    json(StatusCode::OK, out)
}

// ---------------------------------------------------------------------------------------------
// Feeder: the sink's own ceiling with pre-rendered NDJSON.

fn render_doc(out: &mut Vec<u8>, index: &str, g: u64) {
    use std::io::Write;
    const CATS: [&str; 8] = ["books", "music", "garden", "toys", "kitchen", "sports", "office", "outdoor"];
    let h = g.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let hex = format!("{h:016x}{:016x}", h.rotate_left(17) ^ 0xDEAD_BEEF);
    let mut desc = String::with_capacity(320);
    while desc.len() < 300 {
        desc.push_str(&hex);
        desc.push(' ');
    }
    desc.truncate(300);
    write!(out, r#"{{"index":{{"_index":"{index}","_id":"{g}"}}}}"#).unwrap();
    out.push(b'\n');
    write!(out,
        r#"{{"id":{g},"sku":"SKU-{g:010}","title":"Product {g} {hex}","description":"{desc}","category":"{}","price":{}.{:02},"quantity":{},"created_at":"2021-03-04T05:06:07.123456+00:00","active":{},"attrs":{{"color":"c{}","size":{},"tags":["t{}","t{}"]}}}}"#,
        CATS[(g % 8) as usize], g % 1000, g % 100, g % 500, g % 3 != 0, g % 17, g % 5, g % 11, g % 13).unwrap();
    out.push(b'\n');
}

async fn feed(url: String, index: String, rows: usize, body_bytes: usize, in_flight: usize) {
    let t_render = Instant::now();
    let mut bodies: Vec<Bytes> = Vec::new();
    let mut cur: Vec<u8> = Vec::with_capacity(body_bytes + 4096);
    for g in 1..=rows as u64 {
        render_doc(&mut cur, &index, g);
        if cur.len() >= body_bytes {
            bodies.push(Bytes::from(std::mem::replace(&mut cur, Vec::with_capacity(body_bytes + 4096))));
        }
    }
    if !cur.is_empty() {
        bodies.push(Bytes::from(cur));
    }
    let total_bytes: usize = bodies.iter().map(|b| b.len()).sum();
    let render_s = t_render.elapsed().as_secs_f64();
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new()).build_http();
    let target = format!("{}/_bulk", url.trim_end_matches('/'));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let (bodies, next, client, target) = (bodies.clone(), next.clone(), client.clone(), target.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(b) = bodies.get(i) else { return Ok::<(), String>(()) };
                let req = Request::post(&target)
                    .header(CONTENT_TYPE, "application/x-ndjson")
                    .body(Full::new(b.clone()))
                    .unwrap();
                let resp = client.request(req).await.map_err(|e| e.to_string())?;
                let status = resp.status();
                let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
                if !status.is_success() || !body.starts_with(b"{\"took\":") || memchr::memmem::find(&body[..body.len().min(64)], b"\"errors\":false").is_none() {
                    return Err(format!("bulk {i}: {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)])));
                }
            }
        }));
    }
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            eprintln!("feed failed: {e}");
            std::process::exit(1);
        }
    }
    let wall = t.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({ "rows": rows, "requests": bodies.len(), "bytes": total_bytes, "render_s": render_s, "wall_s": wall,
            "docs_per_s": rows as f64 / wall, "mb_per_s": total_bytes as f64 / wall / 1e6 })
    );
}
