//! The bulk path: documents → NDJSON `_bulk` requests → per-item outcome.
//!
//! Contract of [`BulkIndexer::index_batch`]:
//! - Every document is either indexed, counted as a permanent failure (with the first
//!   [`MAX_KEPT_FAILURES`] reasons kept), or the call returns an error — never silently dropped.
//! - A `200` with `"errors": true` is not a success: every item is parsed, and the items must
//!   line up one to one with the documents sent (same count, same `_id`s) or the call fails.
//! - Items rejected with 429 or 5xx, whole requests answered 429/502/503/504 and transport errors
//!   are retried — only the affected documents, rebuilt into a new request — with capped
//!   exponential backoff and full jitter. Re-sending is safe: `_id`s are deterministic and the
//!   operation is `index` (a full replace). Other item failures (mapping errors, ...) are permanent.
//! - After `max_retries` retries with documents still rejected, the call returns
//!   [`EsError::RetriesExhausted`]; the caller decides (fail the job, or retry later).
//! - Invalid sources (not one `{...}` JSON object on one line) are permanent failures, never sent.
//! - Operations ([`BulkOp`]): `index` (full replace), `update` with `{"doc": source}` (partial:
//!   only the fields sent change) and `delete`. A `404` on an update or delete (the document is
//!   not there) is counted in [`BulkOutcome::missing`], not as a failure.
//! - Several operations on one `_id` in one call are applied in the order given: Elasticsearch
//!   applies a request's items of one shard in order, requests are sent one after another, and
//!   when an item is retried every later item of the same `_id` in that request is re-sent with it
//!   (in order), so a retried older change can never land after a newer one.
//!
//! `extra_fields` (e.g. `"_ferry_sync_generation":1234`) is spliced after each source's opening
//! `{` without re-parsing the document.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng as _;
use serde::Deserialize;

use super::client::{EsClient, Refresh};
use super::error::{parse_error_body, EsError};

/// The parts of a `_bulk` answer the indexer uses (standard `filter_path`, honoured by
/// Elasticsearch and OpenSearch; a server that ignores it sends the full answer, which parses
/// the same).
const BULK_FILTER_PATH: &str = "errors,items.*._id,items.*.status,items.*.error";

/// How many failure reasons a [`BulkOutcome`] keeps (the count is always exact).
pub const MAX_KEPT_FAILURES: usize = 5;

/// Bulk settings.
#[derive(Debug, Clone)]
pub struct BulkConfig {
    /// Upper bound of one `_bulk` request body; a single larger document is sent alone.
    pub max_request_bytes: usize,
    /// Retries after the first attempt (per request chunk).
    pub max_retries: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Ingest pipeline (`?pipeline=`).
    pub pipeline: Option<String>,
    pub refresh: Refresh,
}

impl Default for BulkConfig {
    fn default() -> Self {
        BulkConfig {
            max_request_bytes: 5 * 1024 * 1024,
            max_retries: 8,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            pipeline: None,
            refresh: Refresh::No,
        }
    }
}

/// One document to index: its `_id` and its source, one JSON object without raw newlines.
#[derive(Debug, Clone)]
pub struct BulkDoc {
    pub id: String,
    pub source: Bytes,
    pub op: BulkOp,
}

/// What a bulk item does with its document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BulkOp {
    /// Replace the whole document with `source`.
    #[default]
    Index,
    /// Set the fields of `source` (`{"doc": source}`); the others keep their value.
    Update,
    /// Delete the document (`source` is not sent).
    Delete,
}

impl BulkDoc {
    /// An `index` item.
    pub fn index(id: String, source: Bytes) -> Self {
        BulkDoc { id, source, op: BulkOp::Index }
    }
}

/// A permanently failed document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemFailure {
    pub id: String,
    /// HTTP status of the item; 0 for documents refused before sending (invalid source).
    pub status: u16,
    pub error_type: String,
    pub reason: String,
}

/// What one `index_batch` achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BulkOutcome {
    /// Items applied (indexed, updated or deleted).
    pub indexed: u64,
    /// Of those, deletes applied.
    pub deleted: u64,
    /// Of those, documents written (index and update items): what a job
    /// reports as `indexed_document_count` (a delete is not an indexed
    /// document, Elastic counts it in `deleted_document_count` only).
    pub written: u64,
    /// Updates and deletes of documents that were not there (answered 404): nothing to do.
    pub missing: u64,
    pub failed: u64,
    /// The first [`MAX_KEPT_FAILURES`] permanent failures.
    pub failures: Vec<ItemFailure>,
    /// Source bytes of the documents indexed (for `indexed_document_volume`).
    pub bytes: u64,
    /// Request body bytes sent, retries included.
    pub bytes_sent: u64,
    /// Documents re-sent because their item was rejected with 429/5xx.
    pub retried_items: u64,
    /// Whole requests re-sent (429/502/503/504 or transport error).
    pub retried_requests: u64,
}

impl BulkOutcome {
    fn fail(&mut self, failure: ItemFailure) {
        self.failed += 1;
        if self.failures.len() < MAX_KEPT_FAILURES {
            self.failures.push(failure);
        }
    }
}

/// Sends batches of documents with `_bulk`. Cheap to clone, `Send + Sync`: run several
/// `index_batch` calls concurrently to keep several requests in flight.
#[derive(Debug, Clone)]
pub struct BulkIndexer {
    client: EsClient,
    config: Arc<BulkConfig>,
}

impl BulkIndexer {
    pub fn new(client: EsClient, config: BulkConfig) -> Self {
        BulkIndexer { client, config: Arc::new(config) }
    }

    /// The same indexer sending documents through `pipeline` (`None`: none).
    pub fn with_pipeline(&self, pipeline: Option<String>) -> BulkIndexer {
        if self.config.pipeline == pipeline {
            return self.clone();
        }
        let config = BulkConfig { pipeline, ..(*self.config).clone() };
        BulkIndexer { client: self.client.clone(), config: Arc::new(config) }
    }

    /// The client the indexer sends with.
    pub fn client(&self) -> &EsClient {
        &self.client
    }

    pub fn config(&self) -> &BulkConfig {
        &self.config
    }

    /// Indexes `docs` into `index` (see the module docs for the contract). `extra_fields` is a
    /// JSON fragment (`"k":v,...` without braces, or empty) added to every document.
    pub async fn index_batch(
        &self,
        index: &str,
        docs: &[BulkDoc],
        extra_fields: &[u8],
    ) -> Result<BulkOutcome, EsError> {
        let mut outcome = BulkOutcome::default();
        if memchr::memchr(b'\n', extra_fields).is_some() {
            return Err(EsError::Config("bulk extra_fields must not contain a newline".into()));
        }
        let action_prefix = ActionPrefixes::new(index);
        let mut valid: Vec<usize> = Vec::with_capacity(docs.len());
        for (i, doc) in docs.iter().enumerate() {
            let checked = if doc.op == BulkOp::Delete { Ok(()) } else { validate_source(&doc.source) };
            match checked {
                Ok(()) => valid.push(i),
                Err(reason) => outcome.fail(ItemFailure {
                    id: doc.id.clone(),
                    status: 0,
                    error_type: "invalid_source".into(),
                    reason: reason.into(),
                }),
            }
        }
        let mut query: Vec<(&str, &str)> = Vec::with_capacity(3);
        // Only what `parse_items` reads: without this, every item carries _index, _version,
        // result, _shards, _seq_no and _primary_term, about two thirds of a ~190-byte item that
        // Elasticsearch writes and we parse for every document.
        query.push(("filter_path", BULK_FILTER_PATH));
        if let Some(p) = &self.config.pipeline {
            query.push(("pipeline", p));
        }
        if let Some(r) = self.config.refresh.as_param() {
            query.push(("refresh", r));
        }
        let sizes = |i: &usize| line_size(&action_prefix, &docs[*i], extra_fields);
        for chunk in split_by_size(&valid, sizes, self.config.max_request_bytes) {
            self.send_chunk(index, docs, chunk, &action_prefix, extra_fields, &query, &mut outcome).await?;
        }
        let m = &*crate::metrics::METRICS;
        m.documents_indexed.inc_by(outcome.indexed);
        m.bytes_indexed.inc_by(outcome.bytes);
        m.documents_rejected.inc_by(outcome.failed);
        Ok(outcome)
    }

    /// Sends one request's worth of documents, then retries whatever was rejected.
    #[allow(clippy::too_many_arguments)]
    async fn send_chunk(
        &self,
        index: &str,
        docs: &[BulkDoc],
        chunk: &[usize],
        action_prefix: &ActionPrefixes,
        extra: &[u8],
        query: &[(&str, &str)],
        outcome: &mut BulkOutcome,
    ) -> Result<(), EsError> {
        let mut pending: Vec<usize> = chunk.to_vec();
        let mut attempt: u32 = 0;
        let mut body: Option<Bytes> = None;
        loop {
            // Rebuilt only when the set of documents changed (after item retries); a whole-request
            // retry re-sends the same buffer (refcounted, no copy).
            let payload = match &body {
                Some(b) => b.clone(),
                None => {
                    let b = build_body(action_prefix, docs, &pending, extra);
                    body = Some(b.clone());
                    b
                }
            };
            outcome.bytes_sent += payload.len() as u64;
            let started = std::time::Instant::now();
            let sent = self.client.bulk_raw(query, payload).await;
            crate::metrics::METRICS.bulk_duration.observe(started.elapsed().as_secs_f64());
            let last_problem = match sent {
                Err(e) if e.is_retryable() => {
                    outcome.retried_requests += 1;
                    count_retry("transport".into(), 1);
                    e.to_string()
                }
                Err(e) => return Err(e),
                Ok(resp) if matches!(resp.status.as_u16(), 429 | 502 | 503 | 504) => {
                    outcome.retried_requests += 1;
                    count_retry(format!("http_{}", resp.status.as_u16()), 1);
                    let (t, r) = parse_error_body(&resp.body);
                    format!("{} {t}: {r}", resp.status.as_u16())
                }
                // A lone document over Elasticsearch's http.max_content_length: that document
                // is a permanent failure, not the job's (requests are planned far below it, so
                // only a single oversized document gets here).
                Ok(resp) if resp.status.as_u16() == 413 && pending.len() == 1 => {
                    let doc = &docs[pending[0]];
                    outcome.fail(ItemFailure {
                        id: doc.id.clone(),
                        status: 413,
                        error_type: "document_too_large".into(),
                        reason: format!(
                            "the document ({} bytes) is larger than Elasticsearch accepts in one request \
                             (http.max_content_length)",
                            doc.source.len()
                        ),
                    });
                    return Ok(());
                }
                Ok(resp) if !resp.status.is_success() => return Err(resp.into_error()),
                Ok(resp) => {
                    let ids: Vec<&str> = pending.iter().map(|&i| docs[i].id.as_str()).collect();
                    let verdicts = parse_items(&resp.body, &ids)
                        .map_err(|detail| EsError::Decode { path: "/_bulk".into(), detail })?;
                    let mut retry = Vec::new();
                    let mut last = String::new();
                    // Ids with an item being retried: their later items must be re-sent after it.
                    let mut retried_ids: std::collections::HashSet<&str> = Default::default();
                    for (&doc_index, verdict) in pending.iter().zip(verdicts) {
                        let doc = &docs[doc_index];
                        if retried_ids.contains(doc.id.as_str()) {
                            // Applied (or not) ahead of an older change of the same id that
                            // must be retried: re-send it after that one, whatever it got.
                            retry.push(doc_index);
                            continue;
                        }
                        match verdict {
                            ItemVerdict::Ok => {
                                outcome.indexed += 1;
                                if doc.op == BulkOp::Delete {
                                    outcome.deleted += 1;
                                } else {
                                    outcome.written += 1;
                                }
                                outcome.bytes += doc.source.len() as u64;
                            }
                            ItemVerdict::Failed(f) if f.status == 404 && doc.op != BulkOp::Index => {
                                outcome.indexed += 1;
                                outcome.missing += 1;
                            }
                            ItemVerdict::Retry(f) => {
                                count_retry(format!("item_{}", f.status), 1);
                                if last.is_empty() {
                                    last = format!("{} {}: {}", f.status, f.error_type, f.reason);
                                }
                                retried_ids.insert(doc.id.as_str());
                                retry.push(doc_index);
                            }
                            ItemVerdict::Failed(f) => outcome.fail(f),
                        }
                    }
                    if retry.is_empty() {
                        return Ok(());
                    }
                    outcome.retried_items += retry.len() as u64;
                    pending = retry;
                    body = None;
                    last
                }
            };
            attempt += 1;
            if attempt > self.config.max_retries {
                return Err(EsError::RetriesExhausted {
                    index: index.to_string(),
                    attempts: attempt,
                    pending: pending.len(),
                    last: last_problem,
                });
            }
            let delay = backoff(self.config.initial_backoff, self.config.max_backoff, attempt);
            tracing::debug!(index, attempt, documents = pending.len(), ?delay, problem = %last_problem, "retrying bulk");
            tokio::time::sleep(delay).await;
        }
    }
}

/// `ferry_bulk_retries_total{reason}`.
fn count_retry(reason: String, n: u64) {
    crate::metrics::METRICS.bulk_retries.get_or_create(&crate::metrics::label("reason", reason)).inc_by(n);
}

/// Full jitter: uniform in `[0, min(cap, initial * 2^(attempt-1))]`.
fn backoff(initial: Duration, cap: Duration, attempt: u32) -> Duration {
    let exp = initial.saturating_mul(1u32 << (attempt.saturating_sub(1)).min(20));
    let ceiling = exp.min(cap).as_millis() as u64;
    Duration::from_millis(rand::rng().random_range(0..=ceiling))
}

/// Cheap validation: one JSON object on one line. Not a full parse (Elasticsearch reports
/// malformed JSON per item as a permanent `mapper_parsing_exception`).
fn validate_source(source: &[u8]) -> Result<(), &'static str> {
    if source.first() != Some(&b'{') || source.last() != Some(&b'}') {
        return Err("source is not a JSON object (must start with '{' and end with '}')");
    }
    if memchr::memchr(b'\n', source).is_some() {
        return Err("source contains a raw newline (NDJSON needs one line per document)");
    }
    Ok(())
}

/// `{"index":{"_index":"<index>","_id":` — the constant part of every action line.
fn action_prefix(op: &str, index: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(index.len() + 32);
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(op.as_bytes());
    out.extend_from_slice(br#"":{"_index":"#);
    // Writing a &str into a Vec cannot fail.
    serde_json::to_writer(&mut out, index).expect("serialize a string");
    out.extend_from_slice(br#","_id":"#);
    out
}

/// The action line prefixes of one index, per operation.
struct ActionPrefixes {
    index: Vec<u8>,
    update: Vec<u8>,
    delete: Vec<u8>,
}

impl ActionPrefixes {
    fn new(index: &str) -> Self {
        ActionPrefixes {
            index: action_prefix("index", index),
            update: action_prefix("update", index),
            delete: action_prefix("delete", index),
        }
    }

    fn of(&self, op: BulkOp) -> &[u8] {
        match op {
            BulkOp::Index => &self.index,
            BulkOp::Update => &self.update,
            BulkOp::Delete => &self.delete,
        }
    }
}

const ACTION_SUFFIX: &[u8] = b"}}\n";
/// An update's source goes inside `{"doc":...}`; generation fields are not added to it (the
/// document keeps the generation it was indexed with).
const UPDATE_OPEN: &[u8] = br#"{"doc":"#;

/// Exact byte size of a document's lines, so requests can be planned without building them.
fn line_size(prefixes: &ActionPrefixes, doc: &BulkDoc, extra: &[u8]) -> usize {
    let action = prefixes.of(doc.op).len() + json_string_len(&doc.id) + ACTION_SUFFIX.len();
    action
        + match doc.op {
            BulkOp::Index => spliced_len(&doc.source, extra) + 1,
            BulkOp::Update => UPDATE_OPEN.len() + doc.source.len() + 2,
            BulkOp::Delete => 0,
        }
}

/// Length of `s` as a JSON string literal, as serde_json writes it (quotes included).
fn json_string_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// Groups consecutive documents into requests of at most `max_bytes` (a lone bigger one alone).
fn split_by_size(items: &[usize], size: impl Fn(&usize) -> usize, max_bytes: usize) -> Vec<&[usize]> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (pos, item) in items.iter().enumerate() {
        let s = size(item);
        if pos > start && bytes + s > max_bytes {
            chunks.push(&items[start..pos]);
            start = pos;
            bytes = 0;
        }
        bytes += s;
    }
    if start < items.len() {
        chunks.push(&items[start..]);
    }
    chunks
}

/// One request body, allocated once at its exact size.
fn build_body(prefixes: &ActionPrefixes, docs: &[BulkDoc], which: &[usize], extra: &[u8]) -> Bytes {
    let total: usize = which.iter().map(|&i| line_size(prefixes, &docs[i], extra)).sum();
    let mut out = Vec::with_capacity(total);
    for &i in which {
        let doc = &docs[i];
        out.extend_from_slice(prefixes.of(doc.op));
        serde_json::to_writer(&mut out, &doc.id).expect("serialize a string");
        out.extend_from_slice(ACTION_SUFFIX);
        match doc.op {
            BulkOp::Index => {
                splice_source(&mut out, &doc.source, extra);
                out.push(b'\n');
            }
            BulkOp::Update => {
                out.extend_from_slice(UPDATE_OPEN);
                out.extend_from_slice(&doc.source);
                out.extend_from_slice(b"}\n");
            }
            BulkOp::Delete => {}
        }
    }
    debug_assert_eq!(out.len(), total, "line_size must match what build_body writes");
    Bytes::from(out)
}

/// Writes `source` with `extra` inserted right after its opening `{` (validated before).
fn splice_source(out: &mut Vec<u8>, source: &[u8], extra: &[u8]) {
    if extra.is_empty() {
        out.extend_from_slice(source);
    } else if is_empty_object(source) {
        // `{}` or `{ }`: no comma.
        out.push(b'{');
        out.extend_from_slice(extra);
        out.push(b'}');
    } else {
        out.push(b'{');
        out.extend_from_slice(extra);
        out.push(b',');
        out.extend_from_slice(&source[1..]);
    }
}

/// Bytes `splice_source` writes.
fn spliced_len(source: &[u8], extra: &[u8]) -> usize {
    if extra.is_empty() {
        source.len()
    } else if is_empty_object(source) {
        extra.len() + 2
    } else {
        source.len() + extra.len() + 1
    }
}

/// Short-circuits at the first non-blank byte, so it costs nothing on real documents.
fn is_empty_object(source: &[u8]) -> bool {
    source[1..source.len() - 1].iter().all(u8::is_ascii_whitespace)
}

/// What happened to one item.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ItemVerdict {
    Ok,
    Retry(ItemFailure),
    Failed(ItemFailure),
}

/// Parses a `_bulk` answer and checks it lines up with the ids sent. Errors are alignment or
/// decoding problems (the whole request's result is then unknown).
pub(crate) fn parse_items(body: &[u8], sent_ids: &[&str]) -> Result<Vec<ItemVerdict>, String> {
    #[derive(Deserialize)]
    struct Response<'a> {
        #[serde(default)]
        errors: bool,
        #[serde(borrow)]
        items: Vec<Item<'a>>,
    }
    // Each item is `{"<op>": {...}}`; we only send `index`, but accept any op name.
    #[derive(Deserialize)]
    struct Item<'a> {
        #[serde(borrow, alias = "create", alias = "update", alias = "delete")]
        index: Option<ItemBody<'a>>,
    }
    #[derive(Deserialize)]
    struct ItemBody<'a> {
        #[serde(rename = "_id", borrow, default)]
        id: Option<std::borrow::Cow<'a, str>>,
        status: u16,
        #[serde(default)]
        error: Option<serde_json::Value>,
    }
    let resp: Response =
        serde_json::from_slice(body).map_err(|e| format!("bulk response is not valid JSON: {e}"))?;
    if resp.items.len() != sent_ids.len() {
        return Err(format!(
            "bulk response has {} items for {} documents sent",
            resp.items.len(),
            sent_ids.len()
        ));
    }
    let mut saw_error = false;
    let mut verdicts = Vec::with_capacity(sent_ids.len());
    for (pos, (item, sent)) in resp.items.into_iter().zip(sent_ids).enumerate() {
        let body = item
            .index
            .ok_or_else(|| format!("bulk response item {pos} has no index/create/update/delete entry"))?;
        if let Some(id) = &body.id {
            if id != sent {
                return Err(format!(
                    "bulk response item {pos} is for _id {id:?}, but {sent:?} was sent there"
                ));
            }
        }
        if (200..300).contains(&body.status) {
            verdicts.push(ItemVerdict::Ok);
            continue;
        }
        saw_error = true;
        let (error_type, reason) = match &body.error {
            Some(serde_json::Value::Object(e)) => {
                let get = |k: &str| e.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
                (get("type"), get("reason"))
            }
            Some(serde_json::Value::String(s)) => (String::new(), s.clone()),
            _ => (String::new(), String::new()),
        };
        let failure = ItemFailure { id: sent.to_string(), status: body.status, error_type, reason };
        verdicts.push(if body.status == 429 || body.status >= 500 {
            ItemVerdict::Retry(failure)
        } else {
            ItemVerdict::Failed(failure)
        });
    }
    if saw_error && !resp.errors {
        // Inconsistent but harmless: we trust the items, not the flag.
        tracing::debug!("bulk response says errors=false but has failed items");
    }
    Ok(verdicts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str, source: &str) -> BulkDoc {
        BulkDoc::index(id.into(), Bytes::copy_from_slice(source.as_bytes()))
    }

    #[test]
    fn body_carries_update_and_delete_actions() {
        let docs = [
            BulkDoc { op: BulkOp::Update, ..doc("u", r#"{"x":2}"#) },
            BulkDoc { op: BulkOp::Delete, ..doc("d", "") },
            doc("i", r#"{"x":3}"#),
        ];
        let p = ActionPrefixes::new("idx");
        let body = build_body(&p, &docs, &[0, 1, 2], br#""_g":7"#);
        let lines: Vec<&str> = std::str::from_utf8(&body).unwrap().split_terminator('\n').collect();
        assert_eq!(
            lines,
            [
                r#"{"update":{"_index":"idx","_id":"u"}}"#,
                r#"{"doc":{"x":2}}"#,
                r#"{"delete":{"_index":"idx","_id":"d"}}"#,
                r#"{"index":{"_index":"idx","_id":"i"}}"#,
                r#"{"_g":7,"x":3}"#,
            ]
        );
    }

    #[test]
    fn body_is_ndjson_with_spliced_fields() {
        let docs = [doc("a", r#"{"x":1}"#), doc("we\"ird\n", "{}"), doc("c", "{ }")];
        let p = ActionPrefixes::new("idx");
        let body = build_body(&p, &docs, &[0, 1, 2], br#""_g":7"#);
        let text = std::str::from_utf8(&body).unwrap();
        let lines: Vec<&str> = text.split_terminator('\n').collect();
        assert_eq!(lines.len(), 6);
        assert_eq!(lines[0], r#"{"index":{"_index":"idx","_id":"a"}}"#);
        assert_eq!(lines[1], r#"{"_g":7,"x":1}"#);
        assert_eq!(lines[2], r#"{"index":{"_index":"idx","_id":"we\"ird\n"}}"#);
        for l in &lines {
            serde_json::from_str::<serde_json::Value>(l).unwrap();
        }
        assert_eq!(serde_json::from_str::<serde_json::Value>(lines[3]).unwrap(), serde_json::json!({"_g":7}));
        assert_eq!(serde_json::from_str::<serde_json::Value>(lines[5]).unwrap(), serde_json::json!({"_g":7}));
        // No extra fields: sources verbatim.
        let body = build_body(&p, &docs, &[1], b"");
        assert!(body.ends_with(b"}}\n{}\n"));
    }

    #[test]
    fn json_string_len_matches_serde() {
        for s in ["", "abc", "a\"b\\c", "\u{1}\u{1f}\t\r\n\u{8}\u{c}", "é日本\u{7f}"] {
            assert_eq!(json_string_len(s), serde_json::to_string(s).unwrap().len(), "{s:?}");
        }
    }

    #[test]
    fn validation() {
        assert!(validate_source(b"{}").is_ok());
        assert!(validate_source(br#"{"a":"b"}"#).is_ok());
        assert!(validate_source(b"").is_err());
        assert!(validate_source(b"[1]").is_err());
        assert!(validate_source(b" {}").is_err());
        assert!(validate_source(b"{\"a\":\n1}").is_err());
    }

    #[test]
    fn split_respects_max_and_lone_giants() {
        let items: Vec<usize> = (0..6).collect();
        let sizes = [40, 40, 40, 500, 10, 10];
        let chunks = split_by_size(&items, |i| sizes[*i], 100);
        assert_eq!(chunks, vec![&[0, 1][..], &[2][..], &[3][..], &[4, 5][..]]);
        assert!(split_by_size(&[], |_| 1, 10).is_empty());
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let (i, cap) = (Duration::from_millis(200), Duration::from_secs(10));
        for attempt in 1..40u32 {
            let ceiling = (i * 2u32.pow((attempt - 1).min(20))).min(cap);
            let delays: Vec<Duration> = (0..50).map(|_| backoff(i, cap, attempt)).collect();
            assert!(delays.iter().all(|d| *d <= ceiling), "attempt {attempt}: {delays:?}");
            if attempt >= 3 {
                // Full jitter: not a constant.
                assert!(delays.iter().any(|d| *d != delays[0]), "attempt {attempt}: {delays:?}");
            }
        }
    }

    // Captured from osmem-server (same shape as Elasticsearch 8.x).
    const MIXED: &str = r#"{"errors":true,"items":[
        {"index":{"_id":"a","_index":"idx1","_primary_term":1,"_seq_no":0,"_shards":{"failed":0,"successful":1,"total":2},"_version":1,"result":"created","status":201}},
        {"index":{"_id":"b","_index":"idx1","error":{"caused_by":{"reason":"For input string: \"xx\"","type":"illegal_argument_exception"},"reason":"failed to parse field [n] of type [long] in document with id 'b'. Preview of field's value: 'xx'","type":"mapper_parsing_exception"},"status":400}},
        {"index":{"_id":"c","_index":"idx1","_primary_term":1,"_seq_no":1,"_version":2,"result":"updated","status":200}},
        {"index":{"_id":"d","_index":"idx1","error":{"type":"es_rejected_execution_exception","reason":"rejected execution of coordinating operation"},"status":429}},
        {"index":{"_id":"e","_index":"idx1","error":{"type":"unavailable_shards_exception","reason":"primary shard is not active"},"status":503}}
    ],"took":1}"#;

    #[test]
    fn items_mixed_statuses() {
        let v = parse_items(MIXED.as_bytes(), &["a", "b", "c", "d", "e"]).unwrap();
        assert_eq!(v[0], ItemVerdict::Ok);
        match &v[1] {
            ItemVerdict::Failed(f) => {
                assert_eq!(
                    (f.id.as_str(), f.status, f.error_type.as_str()),
                    ("b", 400, "mapper_parsing_exception")
                );
                assert!(f.reason.starts_with("failed to parse field [n]"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(v[2], ItemVerdict::Ok);
        assert!(matches!(&v[3], ItemVerdict::Retry(f) if f.status == 429 && f.id == "d"));
        assert!(matches!(&v[4], ItemVerdict::Retry(f) if f.status == 503));
    }

    #[test]
    fn items_alignment_is_checked() {
        let err = parse_items(MIXED.as_bytes(), &["a", "b", "c", "d"]).unwrap_err();
        assert!(err.contains("5 items for 4 documents"), "{err}");
        let err = parse_items(MIXED.as_bytes(), &["a", "b", "X", "d", "e"]).unwrap_err();
        assert!(err.contains("item 2 is for _id \"c\""), "{err}");
        assert!(parse_items(b"{\"took\":1}", &[]).is_err());
        assert!(parse_items(b"not json", &["a"]).is_err());
        let err = parse_items(br#"{"errors":false,"items":[{"weird":{}}]}"#, &["a"]).unwrap_err();
        assert!(err.contains("no index"), "{err}");
    }

    #[test]
    fn items_trusted_over_errors_flag() {
        // errors:false but an item failed: the item wins. Escaped ids compare decoded.
        let body = br#"{"errors":false,"items":[{"create":{"_id":"q\"1","status":400,"error":{"type":"t","reason":"r"}}},{"index":{"status":201}}]}"#;
        let v = parse_items(body, &["q\"1", "z"]).unwrap();
        assert!(matches!(&v[0], ItemVerdict::Failed(f) if f.error_type == "t"));
        assert_eq!(v[1], ItemVerdict::Ok);
    }
}
