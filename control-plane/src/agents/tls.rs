//! The agents listener's TLS, done here rather than inside tonic so that a
//! refused agent leaves a log line.
//!
//! tonic's built-in TLS drops failed handshakes silently; an operator whose
//! agent has an expired certificate would see nothing on the control plane.
//! [`incoming`] accepts TCP connections, runs each rustls handshake in its own
//! task (a slow or hostile client cannot hold up the others; a handshake has
//! [`HANDSHAKE_TIMEOUT`]), logs every refusal with the peer address and the
//! reason in words, and hands the established streams to tonic.
//! `tokio_rustls::server::TlsStream` carries the verified client certificate
//! to `Request::peer_certs`, where `identity.rs` reads the agent id.
//!
//! Client certificates are verified by rustls' `WebPkiClientVerifier`
//! against `agents.tls.client_ca` (chain, validity period, client-auth
//! usage). They are mandatory at the handshake unless enrollment is on
//! (`enrollment.ca_key`): then a client may connect without one, to call
//! `EnrollmentService/GetCaCertificate` and `Enroll`; every other RPC
//! (Session, RenewCertificate) refuses a connection without a verified
//! certificate (`Request::peer_certs` is `None`). A certificate that is
//! presented is still verified at the handshake, so expired or foreign
//! certificates are refused there either way.
//!
//! [`ReloadableConfig`] re-reads `agents.tls` (certificate, key, client CA)
//! on SIGHUP: handshakes started after the reload use the new files,
//! established sessions keep theirs. A reload that fails (unreadable or
//! mismatched files) keeps the previous configuration and logs why.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::config::ServerTls;

pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn read_certs(what: &str, path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {} is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {} holds no certificate", path.display()));
    }
    Ok(certs)
}

/// rustls server config: our certificate, mandatory client certificates
/// from `client_ca`, ALPN h2 (gRPC).
pub fn server_config(t: &ServerTls, allow_no_certificate: bool) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs("agents.tls.cert", &t.cert)?;
    let key_pem =
        std::fs::read(&t.key).map_err(|e| format!("cannot read agents.tls.key {}: {e}", t.key.display()))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| format!("agents.tls.key {} is not PEM: {e}", t.key.display()))?
        .ok_or_else(|| format!("agents.tls.key {} holds no private key", t.key.display()))?;
    let ca_path = t.client_ca.as_ref().ok_or("agents.tls.client_ca is required")?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in read_certs("agents.tls.client_ca", ca_path)? {
        roots.add(ca).map_err(|e| format!("agents.tls.client_ca {}: {e}", ca_path.display()))?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let builder = if allow_no_certificate { builder.allow_unauthenticated() } else { builder };
    let verifier = builder.build().map_err(|e| format!("agents.tls.client_ca {}: {e}", ca_path.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| format!("agents.tls.cert/key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The agents listener's TLS configuration, replaceable at run time.
pub struct ReloadableConfig {
    files: ServerTls,
    allow_no_certificate: bool,
    current: std::sync::RwLock<Arc<rustls::ServerConfig>>,
}

impl ReloadableConfig {
    pub fn load(files: &ServerTls, allow_no_certificate: bool) -> Result<ReloadableConfig, String> {
        Ok(ReloadableConfig {
            files: files.clone(),
            allow_no_certificate,
            current: std::sync::RwLock::new(server_config(files, allow_no_certificate)?),
        })
    }

    /// Re-reads the files; on error the previous configuration stays.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = server_config(&self.files, self.allow_no_certificate)?;
        *self.current.write().expect("tls config lock") = fresh;
        Ok(())
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().expect("tls config lock").clone())
    }
}

/// Reloads `config` on every SIGHUP until `shutdown`.
pub async fn reload_on_sighup(config: Arc<ReloadableConfig>, shutdown: CancellationToken) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot install a SIGHUP handler; certificates will not be reloaded: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hup.recv() => match config.reload() {
                Ok(()) => tracing::info!("SIGHUP: reloaded agents.tls (certificate, key, client CA)"),
                Err(e) => tracing::error!("SIGHUP: agents.tls not reloaded, keeping the previous certificates: {e}"),
            },
        }
    }
}

/// Established TLS connections from `listener`, until `shutdown`.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ReloadableConfig>,
    shutdown: CancellationToken,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let (tcp, addr) = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: wait a little instead of spinning.
                        tracing::warn!("accepting an agent connection failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = config.acceptor();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => log_refusal(addr, &e),
                    Err(_) => {
                        crate::metrics::METRICS
                            .tls_refusals
                            .get_or_create(&crate::metrics::label("reason", "timeout"))
                            .inc();
                        tracing::warn!(
                        address = %addr,
                        "agent at {addr} refused: no TLS handshake within {} s",
                        HANDSHAKE_TIMEOUT.as_secs()
                        )
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

fn log_refusal(addr: SocketAddr, e: &std::io::Error) {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        // Closed before saying anything TLS: a port probe or health check.
        tracing::debug!(address = %addr, "connection closed before a TLS handshake");
        return;
    }
    let rustls_error = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let label = rustls_error.map_or("handshake_failed", reason_label);
    crate::metrics::METRICS.tls_refusals.get_or_create(&crate::metrics::label("reason", label)).inc();
    let reason = rustls_error.map(describe).unwrap_or_else(|| format!("TLS handshake failed: {e}"));
    tracing::warn!(address = %addr, "agent at {addr} refused: {reason}");
}

/// The `reason` label of `ferry_tls_refusals_total`.
fn reason_label(e: &rustls::Error) -> &'static str {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::NoCertificatesPresented => "no_certificate",
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => "expired",
        rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => "not_yet_valid",
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => "unknown_ca",
        rustls::Error::InvalidCertificate(C::Revoked) => "revoked",
        rustls::Error::InvalidCertificate(_) => "bad_certificate",
        rustls::Error::AlertReceived(_) => "agent_aborted",
        _ => "handshake_failed",
    }
}

/// A rustls handshake error in an operator's words.
fn describe(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::NoCertificatesPresented => {
            "no client certificate: agents must present a certificate signed by agents.tls.client_ca".into()
        }
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "certificate expired: issue the agent a new certificate".into()
        }
        rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "certificate not valid yet (check the clocks)".into()
        }
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            "certificate not signed by the client CA (agents.tls.client_ca): a foreign or self-made certificate"
                .into()
        }
        rustls::Error::InvalidCertificate(C::Revoked) => "certificate revoked".into(),
        rustls::Error::InvalidCertificate(C::InvalidPurpose | C::InvalidPurposeContext { .. }) => {
            "certificate not meant for client authentication (extended key usage)".into()
        }
        rustls::Error::InvalidCertificate(other) => format!("certificate rejected: {other:?}"),
        rustls::Error::AlertReceived(alert) => {
            format!("the agent aborted the handshake ({alert:?}): it probably does not trust this control plane's certificate")
        }
        other => format!("TLS handshake failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_read_like_advice() {
        let e = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        assert!(describe(&e).contains("not signed by the client CA"));
        let e = rustls::Error::InvalidCertificate(rustls::CertificateError::Expired);
        assert!(describe(&e).contains("expired"));
        assert!(describe(&rustls::Error::NoCertificatesPresented).contains("no client certificate"));
    }
}
