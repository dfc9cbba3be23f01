//! Prometheus metrics: the HTTP endpoint both binaries serve on
//! `metrics.listen`, and the agent runtime's own metrics ([`agent`]).
//!
//! Metrics live in process-wide statics (one agent or control plane per
//! process), so instrumenting a code path is one call and no handle has to
//! be threaded through it. [`serve`] answers `GET /metrics` (and `/`) with
//! the Prometheus text format; anything else is 404. Every name is
//! documented in README.md ("Metrics").

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use prometheus_client;

/// Labels as `name=value` pairs.
pub type Labels = Vec<(&'static str, String)>;

/// The agent runtime's metrics (`ferry_agent_*`).
pub struct AgentMetrics {
    pub documents_sent: Counter,
    pub bytes_sent: Counter,
    pub batches_sent: Counter,
    pub batches_acknowledged: Counter,
    /// 1 while a session with the control plane is up.
    pub connected: Gauge,
    pub sessions_lost: Counter,
    pub jobs_running: Gauge,
    /// By `outcome`: completed, failed, canceled.
    pub jobs_finished: Family<Labels, Counter>,
    /// By `connector`, while a change stream (incremental job) runs: bytes
    /// of WAL (or the source's log) not yet confirmed as applied.
    pub replication_lag_bytes: Family<Labels, Gauge>,
    /// By `connector`: age of the oldest change handed over and not yet
    /// acknowledged (0 when everything is acknowledged).
    pub replication_lag_seconds: Family<Labels, Gauge<f64, AtomicU64>>,
    /// By `connector`: commit time (Unix seconds) of the last change
    /// acknowledged by the control plane.
    pub replication_last_commit_timestamp: Family<Labels, Gauge<f64, AtomicU64>>,
}

impl AgentMetrics {
    /// Sets the change-stream gauges of `connector`; `None` leaves a gauge
    /// as it is (e.g. the byte lag is queried less often).
    pub fn set_replication(
        &self,
        connector: &str,
        lag_bytes: Option<i64>,
        lag_seconds: f64,
        last_commit_unix: Option<f64>,
    ) {
        let l = vec![("connector", connector.to_owned())];
        if let Some(b) = lag_bytes {
            self.replication_lag_bytes.get_or_create(&l).set(b);
        }
        self.replication_lag_seconds.get_or_create(&l).set(lag_seconds);
        if let Some(t) = last_commit_unix {
            self.replication_last_commit_timestamp.get_or_create(&l).set(t);
        }
    }

    /// Removes the change-stream gauges of `connector` (its stream ended:
    /// a stale lag would mislead).
    pub fn clear_replication(&self, connector: &str) {
        let l = vec![("connector", connector.to_owned())];
        self.replication_lag_bytes.remove(&l);
        self.replication_lag_seconds.remove(&l);
        self.replication_last_commit_timestamp.remove(&l);
    }
}

/// The agent runtime's metrics; registered by [`register_agent`].
pub static AGENT: LazyLock<AgentMetrics> = LazyLock::new(|| AgentMetrics {
    documents_sent: Counter::default(),
    bytes_sent: Counter::default(),
    batches_sent: Counter::default(),
    batches_acknowledged: Counter::default(),
    connected: Gauge::default(),
    sessions_lost: Counter::default(),
    jobs_running: Gauge::default(),
    jobs_finished: Family::default(),
    replication_lag_bytes: Family::default(),
    replication_lag_seconds: Family::default(),
    replication_last_commit_timestamp: Family::default(),
});

/// Adds the agent runtime's metrics to `registry` (prefix `ferry_agent`).
pub fn register_agent(registry: &mut Registry) {
    let r = registry.sub_registry_with_prefix("agent");
    let m = &*AGENT;
    r.register("documents_sent", "Documents sent to the control plane", m.documents_sent.clone());
    r.register("bytes_sent", "Document source bytes sent to the control plane", m.bytes_sent.clone());
    r.register("batches_sent", "Document batches sent", m.batches_sent.clone());
    r.register(
        "batches_acknowledged",
        "Batches the control plane acknowledged (indexed or permanently rejected)",
        m.batches_acknowledged.clone(),
    );
    r.register("connected", "1 while a session with the control plane is up", m.connected.clone());
    r.register(
        "sessions_lost",
        "Sessions with the control plane that ended (reconnects follow)",
        m.sessions_lost.clone(),
    );
    r.register("jobs_running", "Jobs running on this agent", m.jobs_running.clone());
    r.register("jobs_finished", "Jobs this agent finished, by outcome", m.jobs_finished.clone());
    r.register(
        "replication_lag_bytes",
        "Change stream: bytes of the source's log not yet confirmed as applied, by connector",
        m.replication_lag_bytes.clone(),
    );
    r.register(
        "replication_lag_seconds",
        "Change stream: age of the oldest change handed over and not yet acknowledged, by connector",
        m.replication_lag_seconds.clone(),
    );
    r.register(
        "replication_last_commit_timestamp_seconds",
        "Change stream: commit time (Unix seconds) of the last acknowledged change, by connector",
        m.replication_last_commit_timestamp.clone(),
    );
}

/// The Prometheus text exposition of `registry`.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, registry);
    out
}

/// How long a scraper has to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `registry` on `listener` until `shutdown`. One small task per
/// connection; each answers one request and closes (scrapers reconnect).
pub async fn serve(listener: TcpListener, registry: Arc<Registry>, shutdown: CancellationToken) {
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        let (mut stream, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("metrics listener: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let registry = registry.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let answer = async {
                let path = read_request_path(&mut stream).await?;
                let (status, ctype, body) = if path == "/metrics" || path == "/" {
                    ("200 OK", "text/plain; version=0.0.4; charset=utf-8", render(&registry))
                } else {
                    ("404 Not Found", "text/plain", "metrics are at /metrics\n".to_owned())
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                stream.write_all(head.as_bytes()).await?;
                stream.write_all(body.as_bytes()).await?;
                stream.shutdown().await
            };
            tokio::select! {
                _ = shutdown.cancelled() => {}
                r = tokio::time::timeout(REQUEST_TIMEOUT * 2, answer) => {
                    if let Ok(Err(e)) = r {
                        tracing::debug!("metrics request failed: {e}");
                    }
                }
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Reads an HTTP/1 request head (at most 8 KiB, within [`REQUEST_TIMEOUT`])
/// and returns its path without the query.
async fn read_request_path(stream: &mut tokio::net::TcpStream) -> std::io::Result<String> {
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request within 5 s"))??;
    let line = String::from_utf8_lossy(head.split(|&b| b == b'\n').next().unwrap_or_default()).into_owned();
    let target = line.split_whitespace().nth(1).unwrap_or("/");
    Ok(target.split('?').next().unwrap_or("/").to_owned())
}

/// Binds `addr` and serves `registry` there in the background until
/// `shutdown`; returns the bound address (port 0 picks a free one).
pub async fn spawn_server(
    addr: SocketAddr,
    registry: Registry,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(serve(listener, Arc::new(registry), shutdown));
    tracing::info!(address = %local, "serving Prometheus metrics on http://{local}/metrics");
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scrape_returns_the_text_format() {
        let mut registry = Registry::with_prefix("ferry");
        register_agent(&mut registry);
        AGENT.documents_sent.inc_by(3);
        AGENT.jobs_finished.get_or_create(&vec![("outcome", "completed".to_owned())]).inc();
        let stop = CancellationToken::new();
        let addr = spawn_server("127.0.0.1:0".parse().unwrap(), registry, stop.clone()).await.unwrap();
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).await.unwrap();
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        assert!(body.contains("# TYPE ferry_agent_documents_sent counter"), "{body}");
        assert!(body.contains("ferry_agent_documents_sent_total "), "{body}");
        assert!(body.contains("ferry_agent_jobs_finished_total{outcome=\"completed\"} "), "{body}");
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /other HTTP/1.1\r\n\r\n").await.unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).await.unwrap();
        assert!(body.starts_with("HTTP/1.1 404"), "{body}");
        stop.cancel();
    }
}
