//! The control plane's Prometheus metrics (`ferry_*`), served on
//! `metrics.listen` by `ferry_sdk::metrics::serve`.
//!
//! Process-wide statics: instrumenting the bulk path, the ingest path, the
//! TLS listener or the job lifecycle is one call at the spot, with no handle
//! passed through code other work changes too. Names and meanings are listed
//! in README.md ("Metrics"); `deploy/grafana-dashboard.json` charts them.

use std::sync::LazyLock;

use ferry_sdk::metrics::prometheus_client::metrics::counter::Counter;
use ferry_sdk::metrics::prometheus_client::metrics::family::Family;
use ferry_sdk::metrics::prometheus_client::metrics::gauge::Gauge;
use ferry_sdk::metrics::prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use ferry_sdk::metrics::prometheus_client::registry::Registry;
use ferry_sdk::metrics::Labels;

pub struct Metrics {
    pub documents_indexed: Counter,
    pub bytes_indexed: Counter,
    pub documents_rejected: Counter,
    pub bulk_duration: Histogram,
    /// By `reason`: `transport`, `http_429`, `http_503`, ..., `item_429`, ...
    pub bulk_retries: Family<Labels, Counter>,
    pub inflight_batches: Gauge,
    pub inflight_bytes: Gauge,
    pub agents_connected: Gauge,
    pub jobs_assigned: Counter,
    /// By `status`: completed, error, canceled.
    pub jobs_finished: Family<Labels, Counter>,
    pub jobs_released: Counter,
    /// By `reason`: expired, unknown_ca, no_certificate, ...
    pub tls_refusals: Family<Labels, Counter>,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    documents_indexed: Counter::default(),
    bytes_indexed: Counter::default(),
    documents_rejected: Counter::default(),
    // 5 ms .. ~41 s.
    bulk_duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
    bulk_retries: Family::default(),
    inflight_batches: Gauge::default(),
    inflight_bytes: Gauge::default(),
    agents_connected: Gauge::default(),
    jobs_assigned: Counter::default(),
    jobs_finished: Family::default(),
    jobs_released: Counter::default(),
    tls_refusals: Family::default(),
});

/// One label pair.
pub fn label(name: &'static str, value: impl Into<String>) -> Labels {
    vec![(name, value.into())]
}

/// The registry `metrics.listen` serves.
pub fn registry() -> Registry {
    let mut r = Registry::with_prefix("ferry");
    let m = &*METRICS;
    r.register("documents_indexed", "Documents Elasticsearch indexed", m.documents_indexed.clone());
    r.register("bytes_indexed", "Source bytes of the documents indexed", m.bytes_indexed.clone());
    r.register(
        "documents_rejected",
        "Documents Elasticsearch rejected permanently (counted on the job)",
        m.documents_rejected.clone(),
    );
    r.register("bulk_request_duration_seconds", "Duration of one _bulk request", m.bulk_duration.clone());
    r.register("bulk_retries", "Bulk requests or items retried, by reason", m.bulk_retries.clone());
    r.register("inflight_batches", "Agent batches being indexed now", m.inflight_batches.clone());
    r.register("inflight_bytes", "Source bytes of the batches being indexed now", m.inflight_bytes.clone());
    r.register("agents_connected", "Agent sessions open on this instance", m.agents_connected.clone());
    r.register("jobs_assigned", "Sync job attempts assigned to agents", m.jobs_assigned.clone());
    r.register("jobs_finished", "Sync jobs finished, by status", m.jobs_finished.clone());
    r.register("jobs_released", "Running jobs handed back as pending (for resume)", m.jobs_released.clone());
    r.register("tls_refusals", "Agent TLS handshakes refused, by reason", m.tls_refusals.clone());
    r
}

/// Counts a batch as in flight until dropped.
pub struct InflightBatch {
    bytes: i64,
}

impl InflightBatch {
    pub fn new(bytes: usize) -> InflightBatch {
        let bytes = bytes as i64;
        METRICS.inflight_batches.inc();
        METRICS.inflight_bytes.inc_by(bytes);
        InflightBatch { bytes }
    }
}

impl Drop for InflightBatch {
    fn drop(&mut self) {
        METRICS.inflight_batches.dec();
        METRICS.inflight_bytes.dec_by(self.bytes);
    }
}
