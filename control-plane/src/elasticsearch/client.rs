//! `EsClient`: a thin, typed wrapper over the Elasticsearch REST API (reqwest + rustls).
//!
//! Only the standard REST API is used, so the same code serves Elasticsearch 8.x/9.x and
//! OpenSearch 2.x/3.x. Every request carries `X-elastic-product-origin: connectors` (recent
//! Elasticsearch releases only let that origin reach the connector system indices).

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::{parse_error_body, EsError};

/// How the control plane authenticates to Elasticsearch.
#[derive(Clone, Default)]
pub enum EsAuth {
    #[default]
    None,
    /// Sent as `Authorization: ApiKey <key>` (the base64 "encoded" form Elasticsearch returns).
    ApiKey(String),
    Basic {
        username: String,
        password: String,
    },
}

impl std::fmt::Debug for EsAuth {
    // Never print secrets, even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EsAuth::None => f.write_str("None"),
            EsAuth::ApiKey(_) => f.write_str("ApiKey(<redacted>)"),
            EsAuth::Basic { username, .. } => {
                write!(f, "Basic {{ username: {username:?}, password: <redacted> }}")
            }
        }
    }
}

/// Connection settings. Build with [`EsClientConfig::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct EsClientConfig {
    /// e.g. `https://es.example:9200` (a path prefix behind a proxy is kept).
    pub url: String,
    pub auth: EsAuth,
    /// PEM file with the CA(s) that signed the cluster's certificate (added to the web PKI roots).
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    /// Whole-request timeout (bulk requests included).
    pub request_timeout: Duration,
}

impl EsClientConfig {
    pub fn new(url: impl Into<String>) -> Self {
        EsClientConfig {
            url: url.into(),
            auth: EsAuth::None,
            ca_file: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
        }
    }
}

/// Refresh policy of a write (`?refresh=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Refresh {
    /// Do not wait: the write becomes searchable at the next periodic refresh.
    #[default]
    No,
    /// Refresh the affected shards now (read-your-writes, costs a refresh per call).
    True,
    /// Wait until a refresh made the write visible (cheaper for the cluster than `True`).
    WaitFor,
}

impl Refresh {
    pub(crate) fn as_param(self) -> Option<&'static str> {
        match self {
            Refresh::No => None,
            Refresh::True => Some("true"),
            Refresh::WaitFor => Some("wait_for"),
        }
    }
}

/// Optimistic concurrency for [`EsClient::put_doc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    /// Last writer wins.
    Any,
    /// Fail with [`EsError::Conflict`] if the document exists (`op_type=create`).
    Create,
    /// Fail with [`EsError::Conflict`] unless the document is still at this version.
    IfMatch(SeqNo),
}

/// A document's position in its shard's history: the optimistic concurrency token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqNo {
    #[serde(rename = "_seq_no")]
    pub seq_no: i64,
    #[serde(rename = "_primary_term")]
    pub primary_term: i64,
}

/// A document read with its concurrency token.
#[derive(Debug, Clone)]
pub struct VersionedDoc<T> {
    pub id: String,
    pub source: T,
    pub seq_no: SeqNo,
}

/// What a single-document write answered.
#[derive(Debug, Clone, Deserialize)]
pub struct WriteResult {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(flatten)]
    pub seq_no: SeqNo,
    /// `created`, `updated`, `deleted`, `noop`, `not_found`.
    pub result: String,
}

/// One search hit. `seq_no` is set because every search asks for `seq_no_primary_term`.
#[derive(Debug, Clone, Deserialize)]
pub struct Hit<T> {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(rename = "_source")]
    pub source: T,
    #[serde(rename = "_seq_no")]
    pub seq_no: Option<i64>,
    #[serde(rename = "_primary_term")]
    pub primary_term: Option<i64>,
    /// Sort values (for `search_after`), when the search sorted.
    #[serde(default)]
    pub sort: Option<Vec<serde_json::Value>>,
}

impl<T> Hit<T> {
    pub fn seq_no(&self) -> Option<SeqNo> {
        Some(SeqNo { seq_no: self.seq_no?, primary_term: self.primary_term? })
    }
}

/// Hits of a search. `total` is exact only up to `track_total_hits` (10,000 by default).
#[derive(Debug, Clone)]
pub struct SearchResult<T> {
    pub total: u64,
    pub hits: Vec<Hit<T>>,
}

/// The answer to `GET /`.
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterInfo {
    #[serde(default)]
    pub cluster_name: String,
    pub version: VersionInfo,
}

#[derive(Debug, Clone, Deserialize)]
pub struct VersionInfo {
    pub number: String,
    /// `"opensearch"` on OpenSearch; absent on Elasticsearch.
    #[serde(default)]
    pub distribution: Option<String>,
    /// `"default"` or `"serverless"` on Elasticsearch.
    #[serde(default)]
    pub build_flavor: Option<String>,
}

/// Cheap to clone (one shared connection pool); `Send + Sync`.
#[derive(Clone)]
pub struct EsClient {
    http: reqwest::Client,
    base: Url,
    /// `base` as text, for error messages (has no credentials: refused in `new`).
    base_text: String,
}

impl std::fmt::Debug for EsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EsClient").field("url", &self.base_text).finish_non_exhaustive()
    }
}

const ORIGIN_HEADER: &str = "x-elastic-product-origin";
const JSON: &str = "application/json";
const NDJSON: &str = "application/x-ndjson";

impl EsClient {
    pub fn new(config: &EsClientConfig) -> Result<Self, EsError> {
        let base = Url::parse(&config.url).map_err(|e| {
            EsError::Config(format!("elasticsearch.host {:?} is not a URL: {e}", redact_url(&config.url)))
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(EsError::Config(format!(
                "elasticsearch.host must be http:// or https://, not {}://",
                base.scheme()
            )));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(EsError::Config(
                "elasticsearch.host must not contain credentials: use elasticsearch.api_key or \
                 elasticsearch.username and elasticsearch.password"
                    .into(),
            ));
        }
        let mut headers = HeaderMap::new();
        headers.insert(ORIGIN_HEADER, HeaderValue::from_static("connectors"));
        let auth = match &config.auth {
            EsAuth::None => None,
            EsAuth::ApiKey(key) => Some(format!("ApiKey {}", key.trim())),
            EsAuth::Basic { username, password } => {
                use base64::Engine as _;
                let raw = format!("{username}:{password}");
                Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw)))
            }
        };
        if let Some(auth) = auth {
            let mut value = HeaderValue::from_str(&auth).map_err(|_| {
                EsError::Config("elasticsearch.api_key or username/password contains characters not allowed in an HTTP header".into())
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(concat!("ferry-control-plane/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca).map_err(|e| {
                EsError::Config(format!("cannot read elasticsearch.ca {}: {e}", ca.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                EsError::Config(format!(
                    "elasticsearch.ca {} holds no usable PEM certificate: {e}",
                    ca.display()
                ))
            })?;
            if certs.is_empty() {
                return Err(EsError::Config(format!(
                    "elasticsearch.ca {} holds no PEM certificate",
                    ca.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http =
            builder.build().map_err(|e| EsError::Config(format!("cannot build the HTTP client: {e}")))?;
        let base_text = base.as_str().trim_end_matches('/').to_string();
        Ok(EsClient { http, base, base_text })
    }

    /// The base URL (no credentials).
    pub fn url(&self) -> &str {
        &self.base_text
    }

    /// `GET /`: cluster name and version.
    pub async fn info(&self) -> Result<ClusterInfo, EsError> {
        let resp = self.send(Method::GET, &[], &[], None).await?;
        resp.ok()?.json()
    }

    /// `GET /{index}/_doc/{id}`. `Ok(None)` when the document does not exist;
    /// `Err(NotFound)` when the index does not exist.
    pub async fn get_doc<T: DeserializeOwned>(
        &self,
        index: &str,
        id: &str,
    ) -> Result<Option<VersionedDoc<T>>, EsError> {
        let resp = self.send(Method::GET, &[index, "_doc", id], &[], None).await?;
        if resp.status == StatusCode::NOT_FOUND {
            #[derive(Deserialize)]
            struct Missing {
                found: Option<bool>,
            }
            if let Ok(Missing { found: Some(false) }) = serde_json::from_slice(&resp.body) {
                return Ok(None);
            }
        }
        #[derive(Deserialize)]
        struct Got<T> {
            #[serde(rename = "_id")]
            id: String,
            #[serde(rename = "_source")]
            source: Option<T>,
            #[serde(flatten)]
            seq_no: SeqNo,
        }
        let got: Got<T> = resp.ok()?.json()?;
        let source = got.source.ok_or_else(|| EsError::Decode {
            path: format!("/{index}/_doc/{id}"),
            detail: "no _source (disabled in the mapping?)".into(),
        })?;
        Ok(Some(VersionedDoc { id: got.id, source, seq_no: got.seq_no }))
    }

    /// `PUT /{index}/_doc/{id}` with optimistic concurrency. A lost race is [`EsError::Conflict`].
    pub async fn put_doc<T: Serialize + ?Sized>(
        &self,
        index: &str,
        id: &str,
        body: &T,
        concurrency: Concurrency,
        refresh: Refresh,
    ) -> Result<WriteResult, EsError> {
        let body = to_json(body)?;
        let query = WriteParams::new(concurrency, refresh);
        let resp = self.send(Method::PUT, &[index, "_doc", id], &query.pairs(), Some((JSON, body))).await?;
        resp.ok_doc(index, id)?.json()
    }

    /// `POST /{index}/_doc`: index a new document under an id Elasticsearch generates.
    pub async fn create_doc_auto_id<T: Serialize + ?Sized>(
        &self,
        index: &str,
        body: &T,
        refresh: Refresh,
    ) -> Result<WriteResult, EsError> {
        let body = to_json(body)?;
        let query = WriteParams::new(Concurrency::Any, refresh);
        let resp = self.send(Method::POST, &[index, "_doc"], &query.pairs(), Some((JSON, body))).await?;
        resp.ok()?.json()
    }

    /// `POST /{index}/_update/{id}` with `{"doc": partial}`: merges fields into an existing
    /// document. Missing document → [`EsError::NotFound`]; stale `if_match` → [`EsError::Conflict`].
    pub async fn update_partial<T: Serialize + ?Sized>(
        &self,
        index: &str,
        id: &str,
        partial: &T,
        if_match: Option<SeqNo>,
        refresh: Refresh,
    ) -> Result<WriteResult, EsError> {
        #[derive(Serialize)]
        struct Update<'a, T: ?Sized> {
            doc: &'a T,
        }
        let body = to_json(&Update { doc: partial })?;
        let query = WriteParams::new(if_match.map_or(Concurrency::Any, Concurrency::IfMatch), refresh);
        let resp =
            self.send(Method::POST, &[index, "_update", id], &query.pairs(), Some((JSON, body))).await?;
        resp.ok_doc(index, id)?.json()
    }

    /// `DELETE /{index}/_doc/{id}`. `Ok(false)` if there was no such document.
    pub async fn delete_doc(&self, index: &str, id: &str, refresh: Refresh) -> Result<bool, EsError> {
        let query = WriteParams::new(Concurrency::Any, refresh);
        let resp = self.send(Method::DELETE, &[index, "_doc", id], &query.pairs(), None).await?;
        if resp.status == StatusCode::NOT_FOUND {
            #[derive(Deserialize)]
            struct R {
                result: Option<String>,
            }
            if let Ok(R { result: Some(r) }) = serde_json::from_slice(&resp.body) {
                if r == "not_found" {
                    return Ok(false);
                }
            }
        }
        resp.ok_doc(index, id)?;
        Ok(true)
    }

    /// `POST /{index}/_search?seq_no_primary_term=true` with a full search body
    /// (`query`, `sort`, `size`, `search_after`, ...).
    pub async fn search<T: DeserializeOwned>(
        &self,
        index: &str,
        body: &serde_json::Value,
    ) -> Result<SearchResult<T>, EsError> {
        let body = to_json(body)?;
        let resp = self
            .send(Method::POST, &[index, "_search"], &[("seq_no_primary_term", "true")], Some((JSON, body)))
            .await?;
        #[derive(Deserialize)]
        struct Total {
            value: u64,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum TotalField {
            Obj(Total),
            Num(u64),
        }
        #[derive(Deserialize)]
        struct Hits<T> {
            total: Option<TotalField>,
            hits: Vec<Hit<T>>,
        }
        #[derive(Deserialize)]
        struct Resp<T> {
            hits: Hits<T>,
        }
        let r: Resp<T> = resp.ok()?.json()?;
        let total = match r.hits.total {
            Some(TotalField::Obj(t)) => t.value,
            Some(TotalField::Num(n)) => n,
            None => r.hits.hits.len() as u64,
        };
        Ok(SearchResult { total, hits: r.hits.hits })
    }

    /// `POST /{index}/_count`, optionally with a query (the value of `"query"`).
    pub async fn count(&self, index: &str, query: Option<&serde_json::Value>) -> Result<u64, EsError> {
        let body = match query {
            Some(q) => Some((JSON, to_json(&serde_json::json!({ "query": q }))?)),
            None => None,
        };
        let method = if body.is_some() { Method::POST } else { Method::GET };
        let resp = self.send(method, &[index, "_count"], &[], body).await?;
        #[derive(Deserialize)]
        struct C {
            count: u64,
        }
        Ok(resp.ok()?.json::<C>()?.count)
    }

    /// `POST /{index}/_refresh`.
    pub async fn refresh(&self, index: &str) -> Result<(), EsError> {
        self.send(Method::POST, &[index, "_refresh"], &[], None).await?.ok()?;
        Ok(())
    }

    /// `POST /{index}/_delete_by_query?refresh=true&conflicts=proceed` with `{"query": query}`.
    /// Returns how many documents were deleted. Documents changed while the deletion runs
    /// (version conflicts) are skipped, not deleted: a concurrent write wins.
    pub async fn delete_by_query(&self, index: &str, query: &serde_json::Value) -> Result<u64, EsError> {
        let body = to_json(&serde_json::json!({ "query": query }))?;
        let path = [index, "_delete_by_query"];
        let resp = self
            .send(Method::POST, &path, &[("refresh", "true"), ("conflicts", "proceed")], Some((JSON, body)))
            .await?;
        #[derive(Deserialize)]
        struct R {
            deleted: u64,
            #[serde(default)]
            failures: Vec<serde_json::Value>,
        }
        let r: R = resp.ok()?.json()?;
        if let Some(first) = r.failures.first() {
            let cause = first.get("cause").unwrap_or(first);
            let text = |k: &str| cause.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
            return Err(EsError::Status {
                status: first.get("status").and_then(|s| s.as_u64()).unwrap_or(500) as u16,
                method: "POST".into(),
                path: format!("/{index}/_delete_by_query"),
                error_type: text("type"),
                reason: format!(
                    "{} ({} failures, {} deleted before)",
                    text("reason"),
                    r.failures.len(),
                    r.deleted
                ),
            });
        }
        Ok(r.deleted)
    }

    /// `HEAD /{index}` (works for aliases too).
    pub async fn index_exists(&self, index: &str) -> Result<bool, EsError> {
        let resp = self.send(Method::HEAD, &[index], &[], None).await?;
        if resp.status == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        resp.ok()?;
        Ok(true)
    }

    /// `PUT /{index}` with settings/mappings. `Ok(false)` if it already existed
    /// (`resource_already_exists_exception`), so concurrent creators do not fail.
    pub async fn create_index(&self, index: &str, body: &serde_json::Value) -> Result<bool, EsError> {
        let body = to_json(body)?;
        let resp = self.send(Method::PUT, &[index], &[], Some((JSON, body))).await?;
        match resp.ok() {
            Ok(_) => Ok(true),
            Err(EsError::Status { error_type, .. }) if error_type == "resource_already_exists_exception" => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// `GET /_ingest/pipeline/{name}`: `Some(exists)`, or `None` when the
    /// server has no ingest pipeline API to ask.
    pub async fn pipeline_exists(&self, name: &str) -> Result<Option<bool>, EsError> {
        let resp = self.send(Method::GET, &["_ingest", "pipeline", name], &[], None).await?;
        Ok(match resp.status {
            StatusCode::NOT_FOUND => Some(false),
            s if s.is_success() => Some(true),
            _ => None,
        })
    }

    /// `GET /{index}/_mapping`: the `mappings` of the (first) index it names.
    pub async fn get_mapping(&self, index: &str) -> Result<serde_json::Value, EsError> {
        let resp = self.send(Method::GET, &[index, "_mapping"], &[], None).await?;
        let all: serde_json::Map<String, serde_json::Value> = resp.ok()?.json()?;
        Ok(all.into_iter().next().map(|(_, v)| v["mappings"].clone()).unwrap_or_default())
    }

    /// `PUT /{index}/_mapping` with `{"properties": ...}` (adds fields; existing ones must agree).
    pub async fn put_mapping(&self, index: &str, body: &serde_json::Value) -> Result<(), EsError> {
        let body = to_json(body)?;
        self.send(Method::PUT, &[index, "_mapping"], &[], Some((JSON, body))).await?.ok()?;
        Ok(())
    }

    /// `GET /{index}/_mapping`: the answer as is (`{"<index>": {"mappings": ...}}`, one entry
    /// per concrete index behind an alias).
    pub async fn get_mapping_per_index(&self, index: &str) -> Result<serde_json::Value, EsError> {
        let resp = self.send(Method::GET, &[index, "_mapping"], &[], None).await?;
        resp.ok()?.json()
    }

    /// `POST /{index}/_mget` of `ids`: the documents found, with their
    /// concurrency tokens (missing ids are left out). Real time, as a GET.
    pub async fn mget<T: DeserializeOwned>(
        &self,
        index: &str,
        ids: &[String],
    ) -> Result<Vec<VersionedDoc<T>>, EsError> {
        let body = to_json(&serde_json::json!({ "ids": ids }))?;
        let resp = self.send(Method::POST, &[index, "_mget"], &[], Some((JSON, body))).await?;
        #[derive(Deserialize)]
        struct Doc<T> {
            #[serde(rename = "_id")]
            id: String,
            #[serde(default)]
            found: bool,
            #[serde(rename = "_source")]
            source: Option<T>,
            #[serde(rename = "_seq_no")]
            seq_no: Option<i64>,
            #[serde(rename = "_primary_term")]
            primary_term: Option<i64>,
        }
        #[derive(Deserialize)]
        struct Resp<T> {
            docs: Vec<Doc<T>>,
        }
        let r: Resp<T> = resp.ok()?.json()?;
        Ok(r.docs
            .into_iter()
            .filter(|d| d.found)
            .filter_map(|d| {
                Some(VersionedDoc {
                    id: d.id,
                    source: d.source?,
                    seq_no: SeqNo { seq_no: d.seq_no?, primary_term: d.primary_term? },
                })
            })
            .collect())
    }

    /// `POST /_bulk` of small control documents (not the content path, which
    /// goes through the bulk indexer): the parsed answer, whose `items` the
    /// caller reads one by one.
    pub async fn bulk_json(&self, body: Bytes) -> Result<serde_json::Value, EsError> {
        self.bulk_raw(&[], body).await?.ok()?.json()
    }

    /// `POST /_bulk` with an NDJSON body; the raw answer (status + body) for the bulk indexer,
    /// which parses items itself.
    pub(crate) async fn bulk_raw(&self, query: &[(&str, &str)], body: Bytes) -> Result<RawResponse, EsError> {
        self.send(Method::POST, &["_bulk"], query, Some((NDJSON, body))).await
    }

    fn build_url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        if !segments.is_empty() {
            // `base` is http(s), so it can always be a base: the expect cannot fire.
            let mut path = url.path_segments_mut().expect("http(s) URLs have a path");
            path.pop_if_empty();
            // Percent-encodes each segment: ids may hold '/', '?', '#', spaces, unicode.
            path.extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    async fn send(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<(&'static str, Bytes)>,
    ) -> Result<RawResponse, EsError> {
        let url = self.build_url(segments, query);
        let path = url.path().to_string();
        let mut req = self.http.request(method.clone(), url);
        if let Some((content_type, body)) = body {
            // Exactly one Content-Type: Elasticsearch (and osmem) reject duplicates.
            req = req.header(CONTENT_TYPE, content_type).body(body);
        }
        let resp = req.send().await.map_err(|e| EsError::transport(&self.base_text, &e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| EsError::transport(&self.base_text, &e))?;
        Ok(RawResponse { status, body, method, path, base: self.base_text.clone() })
    }
}

/// Query parameters of a single-document write: [`Concurrency`]
/// (`op_type=create` or `if_seq_no` + `if_primary_term`) and `refresh`.
struct WriteParams {
    concurrency: Concurrency,
    /// `if_seq_no` and `if_primary_term`, as text, for [`Concurrency::IfMatch`].
    if_match: Option<(String, String)>,
    refresh: Option<&'static str>,
}

impl WriteParams {
    fn new(concurrency: Concurrency, refresh: Refresh) -> Self {
        let if_match = match concurrency {
            Concurrency::IfMatch(s) => Some((s.seq_no.to_string(), s.primary_term.to_string())),
            Concurrency::Any | Concurrency::Create => None,
        };
        Self { concurrency, if_match, refresh: refresh.as_param() }
    }

    fn pairs(&self) -> Vec<(&str, &str)> {
        let mut query = Vec::with_capacity(3);
        if self.concurrency == Concurrency::Create {
            query.push(("op_type", "create"));
        }
        if let Some((seq, term)) = &self.if_match {
            query.push(("if_seq_no", seq.as_str()));
            query.push(("if_primary_term", term.as_str()));
        }
        if let Some(r) = self.refresh {
            query.push(("refresh", r));
        }
        query
    }
}

/// A response not yet judged.
pub(crate) struct RawResponse {
    pub status: StatusCode,
    pub body: Bytes,
    method: Method,
    path: String,
    base: String,
}

impl RawResponse {
    /// Maps non-2xx statuses to [`EsError`].
    pub(crate) fn ok(self) -> Result<Self, EsError> {
        if self.status.is_success() {
            return Ok(self);
        }
        Err(self.into_error())
    }

    /// Like `ok`, but a 409 becomes [`EsError::Conflict`] naming the document.
    fn ok_doc(self, index: &str, id: &str) -> Result<Self, EsError> {
        if self.status == StatusCode::CONFLICT {
            let (_, reason) = parse_error_body(&self.body);
            return Err(EsError::Conflict { index: index.into(), id: id.into(), reason });
        }
        self.ok()
    }

    pub(crate) fn into_error(self) -> EsError {
        let (error_type, reason) = parse_error_body(&self.body);
        match self.status.as_u16() {
            401 | 403 => EsError::Auth { url: self.base, status: self.status.as_u16(), reason },
            404 => EsError::NotFound { path: self.path, error_type, reason },
            409 => EsError::Conflict { index: String::new(), id: self.path, reason },
            status => EsError::Status {
                status,
                method: self.method.to_string(),
                path: self.path,
                error_type,
                reason,
            },
        }
    }

    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T, EsError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| EsError::Decode { path: self.path.clone(), detail: e.to_string() })
    }
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, EsError> {
    serde_json::to_vec(value).map(Bytes::from).map_err(|e| EsError::Decode {
        path: String::new(),
        detail: format!("cannot serialize the request body: {e}"),
    })
}

/// For error messages about an unparsable URL: drop anything that looks like user info.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://<redacted>@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_encode_segments_and_keep_prefix() {
        let c = EsClient::new(&EsClientConfig::new("http://h:9200/es/")).unwrap();
        let u = c.build_url(&["idx", "_doc", "a/b c?#"], &[("refresh", "true")]);
        assert_eq!(u.as_str(), "http://h:9200/es/idx/_doc/a%2Fb%20c%3F%23?refresh=true");
        let c = EsClient::new(&EsClientConfig::new("http://h:9200")).unwrap();
        assert_eq!(c.build_url(&[], &[]).as_str(), "http://h:9200/");
        assert_eq!(c.url(), "http://h:9200");
    }

    #[test]
    fn credentials_never_in_url_or_debug() {
        let err = EsClient::new(&EsClientConfig::new("http://u:secret@h:9200")).unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        let mut cfg = EsClientConfig::new("http://h:9200");
        cfg.auth = EsAuth::Basic { username: "u".into(), password: "secret".into() };
        assert!(!format!("{cfg:?}").contains("secret"));
        cfg.auth = EsAuth::ApiKey("secret".into());
        assert!(!format!("{cfg:?}").contains("secret"));
        assert!(!redact_url("ht!tp://u:secret@h").contains("secret"));
    }

    #[test]
    fn refuses_other_schemes() {
        assert!(matches!(EsClient::new(&EsClientConfig::new("ftp://h")), Err(EsError::Config(_))));
    }
}
