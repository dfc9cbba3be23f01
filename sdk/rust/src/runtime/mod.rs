//! The agent runtime: everything between a [`Source`] and the control plane.
//!
//! [`Agent::run`] dials the control plane (mTLS), opens the one long-lived
//! `AgentService/Session` stream, says `Hello` with the connectors it serves
//! and their configuration schemas, then serves the control plane's requests
//! until it is canceled: configuration checks, job assignments, cancels and
//! acknowledgements. When the stream breaks it reconnects forever with
//! jittered exponential backoff, logging why. Jobs running when the stream
//! breaks are stopped; the control plane resumes them from their last
//! acknowledged checkpoint once an agent is back.

mod backoff;
mod connect;
mod enroll;
mod proxy;
mod session;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use backoff::Backoff;
pub use connect::{ConnectError, TlsFiles, MAX_MESSAGE_BYTES};
pub use enroll::{renew_at, stored_files, EnrollmentSettings};
pub use proxy::{no_proxy_matches, ProxySettings};

use crate::source::Source;

/// How the agent compresses what it sends (gRPC message compression,
/// `grpc-encoding`). Off by default: on a fast network the CPU costs more
/// than the bytes saved; across a slow or metered link (a remote site, a VPN)
/// `zstd` shrinks the document stream several times over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StreamCompression {
    #[default]
    None,
    Gzip,
    Zstd,
}

impl StreamCompression {
    /// Parses `none`, `gzip` or `zstd`.
    pub fn parse(s: &str) -> Option<StreamCompression> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "" => Some(StreamCompression::None),
            "gzip" => Some(StreamCompression::Gzip),
            "zstd" => Some(StreamCompression::Zstd),
            _ => None,
        }
    }

    pub(crate) fn encoding(self) -> Option<tonic::codec::CompressionEncoding> {
        match self {
            StreamCompression::None => None,
            StreamCompression::Gzip => Some(tonic::codec::CompressionEncoding::Gzip),
            StreamCompression::Zstd => Some(tonic::codec::CompressionEncoding::Zstd),
        }
    }
}

/// A connector this agent offers to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedConnector {
    pub connector_id: String,
    pub service_type: String,
}

/// Everything the runtime needs to know, already validated.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// `https://host:port` of the control plane's agents listener.
    pub control_plane_url: String,
    /// Client certificate, key and the CA that signed the control plane's
    /// certificate. `None` only for plaintext test setups (`http://`).
    pub tls: Option<TlsFiles>,
    /// Overrides the host name checked against the server certificate.
    pub server_name: Option<String>,
    /// HTTP CONNECT proxy to reach the control plane through (`proxy.rs`).
    pub proxy: Option<ProxySettings>,
    /// Where to serve Prometheus metrics (`crate::metrics`); `None`: off.
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub connectors: Vec<ServedConnector>,
    /// Jobs run at once by this agent.
    pub max_concurrent_jobs: u32,
    pub connect_timeout: Duration,
    /// Compression of the agent → control plane stream.
    pub compression: StreamCompression,
    /// Reported to the control plane (fleet view).
    pub agent_version: String,
    /// Enroll with a token instead of operator-issued files (`enroll.rs`);
    /// `tls` is then filled from the state directory.
    pub enrollment: Option<EnrollmentSettings>,
}

/// An agent: settings plus the sources it can read.
pub struct Agent {
    settings: AgentSettings,
    sources: Vec<Arc<dyn Source>>,
}

impl Agent {
    pub fn new(settings: AgentSettings, sources: Vec<Arc<dyn Source>>) -> Self {
        Self { settings, sources }
    }

    /// Runs sessions until `shutdown` fires. Returns an error only for
    /// problems no retry can fix (unreadable certificate files, a connector
    /// whose service type no source serves).
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), ConnectError> {
        for c in &self.settings.connectors {
            if !self.sources.iter().any(|s| s.service_type() == c.service_type) {
                return Err(ConnectError::Config(format!(
                    "connector {:?} has service_type {:?}, but this agent only serves {:?}",
                    c.connector_id,
                    c.service_type,
                    self.sources.iter().map(|s| s.service_type().to_owned()).collect::<Vec<_>>()
                )));
            }
        }
        if let Some(e) = self.settings.enrollment.clone() {
            match enroll::ensure_identity(&self.settings, &e, &shutdown).await? {
                Some(files) => self.settings.tls = Some(files),
                None => return Ok(()),
            }
            tokio::spawn(enroll::renew_loop(self.settings.clone(), e.state_dir.clone(), shutdown.clone()));
        }
        let mut dialer = connect::Dialer::new(&self.settings)?;
        if let Some(addr) = self.settings.metrics_listen {
            let mut registry = crate::metrics::prometheus_client::registry::Registry::with_prefix("ferry");
            crate::metrics::register_agent(&mut registry);
            crate::metrics::spawn_server(addr, registry, shutdown.clone())
                .await
                .map_err(|e| ConnectError::Config(format!("cannot listen on metrics.listen {addr}: {e}")))?;
        }
        if let Some(p) = &self.settings.proxy {
            tracing::info!(proxy = %p.addr, "reaching the control plane through an HTTP CONNECT proxy");
        }
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
        let sources = Arc::new(self.sources);
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            if self.settings.enrollment.is_some() {
                // Pick up a renewed certificate.
                dialer = connect::Dialer::new(&self.settings)?;
            }
            let started = tokio::time::Instant::now();
            let end = session::run(&self.settings, &dialer, sources.clone(), shutdown.clone()).await;
            match end {
                session::End::Shutdown => return Ok(()),
                session::End::Lost(reason) => {
                    crate::metrics::AGENT.sessions_lost.inc();
                    // A session that lived a while was healthy: start over
                    // with short delays.
                    if started.elapsed() > Duration::from_secs(30) {
                        backoff.reset();
                    }
                    let delay = backoff.next_delay();
                    let hint = tls_hint(&reason).map(|h| format!(" — {h}")).unwrap_or_default();
                    tracing::warn!(
                        url = %self.settings.control_plane_url,
                        retry_in_ms = delay.as_millis() as u64,
                        "control plane session ended: {reason}{hint}; reconnecting"
                    );
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}

/// What a TLS failure means for the operator, when the error text shows one.
fn tls_hint(reason: &str) -> Option<&'static str> {
    const REFUSED_US: [&str; 5] = [
        "alert: UnknownCA",
        "alert: CertificateExpired",
        "alert: BadCertificate",
        "alert: CertificateRequired",
        "alert: CertificateUnknown",
    ];
    if REFUSED_US.iter().any(|a| reason.contains(a)) {
        Some(
            "the control plane refused this agent's certificate: it is expired, or not signed by the CA the \
             control plane trusts for agents (control_plane.tls.cert / key)",
        )
    } else if reason.contains("invalid peer certificate") {
        Some(
            "this agent does not trust the control plane's certificate: check control_plane.tls.ca \
             (and control_plane.server_name)",
        )
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tls_failures_get_a_hint() {
        assert!(super::tls_hint("transport error: received fatal alert: CertificateExpired")
            .unwrap()
            .contains("refused this agent's certificate"));
        assert!(super::tls_hint("invalid peer certificate: UnknownIssuer")
            .unwrap()
            .contains("does not trust"));
        assert_eq!(super::tls_hint("connection refused"), None);
    }
}
