//! The channel to the control plane: TLS with a client certificate, connect
//! timeout, HTTP/2 keep-alives so dead links are noticed behind NATs and
//! firewalls that drop idle flows; directly or through an HTTP CONNECT
//! proxy (`proxy.rs`), with the same TLS end to end either way.

use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::proxy::ProxyConnector;
use super::AgentSettings;

/// How a session reaches the control plane: the endpoint (URL, TLS,
/// timeouts, HTTP/2 settings) and, when configured, the proxy to tunnel
/// through.
#[derive(Debug, Clone)]
pub(super) struct Dialer {
    endpoint: Endpoint,
    proxy: Option<ProxyConnector>,
}

impl Dialer {
    pub(super) fn new(settings: &AgentSettings) -> Result<Dialer, ConnectError> {
        let proxy =
            settings.proxy.clone().map(|proxy| ProxyConnector { proxy, timeout: settings.connect_timeout });
        Ok(Dialer { endpoint: endpoint(settings)?, proxy })
    }

    pub(super) async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        match &self.proxy {
            None => self.endpoint.connect().await,
            Some(p) => self.endpoint.connect_with_connector(p.clone()).await,
        }
    }
}

/// PEM files for mTLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA that signed the control plane's server certificate.
    pub ca: PathBuf,
    /// This agent's certificate; its Subject CN is the agent id.
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Config(String),
    #[error("cannot read {what} {path}: {source}")]
    ReadFile { what: &'static str, path: PathBuf, source: std::io::Error },
}

fn read(what: &'static str, path: &PathBuf) -> Result<Vec<u8>, ConnectError> {
    std::fs::read(path).map_err(|source| ConnectError::ReadFile { what, path: path.clone(), source })
}

/// Maximum size of one gRPC message either way. Batches are much smaller;
/// this leaves room for single rows of tens of MiB.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

pub(super) fn endpoint(settings: &AgentSettings) -> Result<Endpoint, ConnectError> {
    let url = &settings.control_plane_url;
    let mut ep = Endpoint::from_shared(url.clone())
        .map_err(|e| ConnectError::Config(format!("control_plane.url {url:?} is not a valid URL: {e}")))?
        .connect_timeout(settings.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        // Acks are small; a larger window than HTTP/2's 64 KiB default only
        // avoids stalls when many arrive at once.
        .initial_stream_window_size(Some(1024 * 1024))
        .initial_connection_window_size(Some(4 * 1024 * 1024));
    match (&settings.tls, url.starts_with("https://")) {
        (Some(tls), true) => {
            let mut cfg = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(read("CA certificate", &tls.ca)?))
                .identity(Identity::from_pem(read("certificate", &tls.cert)?, read("key", &tls.key)?));
            if let Some(name) = &settings.server_name {
                cfg = cfg.domain_name(name.clone());
            }
            ep = ep.tls_config(cfg).map_err(|e| ConnectError::Config(format!("TLS setup failed: {e}")))?;
        }
        (None, false) => {}
        (Some(_), false) => {
            return Err(ConnectError::Config(format!(
                "control_plane.url {url:?} is not https:// but TLS files are set: use https://"
            )))
        }
        (None, true) => {
            return Err(ConnectError::Config(
                "control_plane.tls (ca, cert, key) is required for an https:// control plane: \
                 the control plane only accepts agents with a client certificate"
                    .into(),
            ))
        }
    }
    Ok(ep)
}
