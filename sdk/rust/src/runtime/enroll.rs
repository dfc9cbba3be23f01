//! Enrollment: from a one-time token to a client certificate, and renewal.
//!
//! An agent started with only the control plane URL, an enrollment token
//! and the CA fingerprint (`EnrollmentSettings`):
//! 1. makes its own key (ECDSA P-256, rcgen); the key never leaves the agent;
//! 2. opens TLS to the agents listener *without* a client certificate,
//!    recording the chain the server presents (handshake signatures are
//!    verified as usual; the chain is judged in step 3);
//! 3. asks `EnrollmentService/GetCaCertificate`, refuses unless the CA's
//!    SHA-256 equals the pinned fingerprint, then verifies the recorded
//!    server chain (and the host name) against that CA, all before the
//!    token is sent;
//! 4. sends {token, agent id, CSR} over the same connection (`Enroll`) and
//!    writes `agent-key.pem` (0600), `agent.pem` and `ca.pem` into
//!    `state_dir`; from then on the agent connects with mTLS as with
//!    operator-issued files.
//!
//! On restart the stored files are used and no token is needed.
//! [`renew_loop`] replaces the certificate (new key, `RenewCertificate`
//! over an mTLS channel authenticated by the current certificate) once 2/3
//! of its lifetime has passed; the next session uses the new files.
//!
//! Errors the operator must fix (wrong fingerprint, token refused) are
//! [`ConnectError::Config`] and stop the agent; unreachable control planes
//! are retried.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tonic::codegen::http::Uri;
use tonic::transport::Endpoint;

use super::connect::{ConnectError, TlsFiles};
use super::proxy::ProxySettings;
use super::{AgentSettings, Backoff};
use crate::proto;

/// What an agent needs to enroll itself.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollmentSettings {
    /// The one-time token (`FleetService/CreateEnrollmentToken`). Needed
    /// only until the first certificate is stored.
    pub token: Option<String>,
    /// SHA-256 of the control plane's agents CA (hex; `:` and a `sha256:`
    /// prefix are accepted).
    pub ca_fingerprint: Option<String>,
    /// Sent with the token; empty: the id the token was made for.
    pub agent_id: Option<String>,
    /// Where the key, certificate and CA are kept.
    pub state_dir: PathBuf,
}

impl std::fmt::Debug for EnrollmentSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollmentSettings")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("ca_fingerprint", &self.ca_fingerprint)
            .field("agent_id", &self.agent_id)
            .field("state_dir", &self.state_dir)
            .finish()
    }
}

/// The files enrollment keeps in `state_dir`.
pub fn stored_files(state_dir: &Path) -> TlsFiles {
    TlsFiles {
        ca: state_dir.join("ca.pem"),
        cert: state_dir.join("agent.pem"),
        key: state_dir.join("agent-key.pem"),
    }
}

fn normalize_fingerprint(s: &str) -> String {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_prefix("sha256:").unwrap_or(&s);
    s.chars().filter(|c| *c != ':').collect()
}

fn sha256_hex(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn config(msg: impl Into<String>) -> ConnectError {
    ConnectError::Config(msg.into())
}

/// The TLS files to connect with: the stored ones, or new ones from
/// enrolling (retrying while the control plane is unreachable, until
/// `shutdown`).
pub(super) async fn ensure_identity(
    settings: &AgentSettings,
    e: &EnrollmentSettings,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<Option<TlsFiles>, ConnectError> {
    let files = stored_files(&e.state_dir);
    if files.cert.exists() && files.key.exists() && files.ca.exists() {
        tracing::info!(state_dir = %e.state_dir.display(), "using the enrolled certificate from the state directory");
        return Ok(Some(files));
    }
    let token = e.token.as_deref().filter(|t| !t.trim().is_empty()).ok_or_else(|| {
        config(format!(
            "no certificate in {} and no enrollment.token: ask the operator for a token \
             (FleetService/CreateEnrollmentToken) or configure control_plane.tls",
            e.state_dir.display()
        ))
    })?;
    let fingerprint =
        e.ca_fingerprint.as_deref().map(normalize_fingerprint).filter(|f| f.len() == 64).ok_or_else(
            || {
                config(
                "enrollment.ca_fingerprint (64 hex digits, from CreateEnrollmentToken) is required to enroll",
            )
            },
        )?;
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
    loop {
        match enroll_once(settings, e, token, &fingerprint).await {
            Ok(()) => return Ok(Some(files)),
            Err(Attempt::Fatal(err)) => return Err(err),
            Err(Attempt::Retry(why)) => {
                let delay = backoff.next_delay();
                tracing::warn!(url = %settings.control_plane_url, retry_in_ms = delay.as_millis() as u64, "enrollment failed: {why}; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

enum Attempt {
    Fatal(ConnectError),
    Retry(String),
}

fn status_attempt(what: &str, s: tonic::Status) -> Attempt {
    use tonic::Code;
    match s.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Aborted | Code::Internal => {
            Attempt::Retry(format!("{what}: {}", s.message()))
        }
        _ => Attempt::Fatal(config(format!("{what} refused by the control plane: {}", s.message()))),
    }
}

fn new_csr() -> Result<(String, String), ConnectError> {
    let key = rcgen::KeyPair::generate().map_err(|e| config(format!("cannot make a key: {e}")))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, "ferry-agent");
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| config(format!("cannot make a certificate signing request: {e}")))?;
    Ok((key.serialize_pem(), csr))
}

async fn enroll_once(
    settings: &AgentSettings,
    e: &EnrollmentSettings,
    token: &str,
    fingerprint: &str,
) -> Result<(), Attempt> {
    let url = &settings.control_plane_url;
    let uri: Uri =
        url.parse().map_err(|err| Attempt::Fatal(config(format!("control_plane.url {url:?}: {err}"))))?;
    let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let name = settings.server_name.clone().unwrap_or(host.clone());
    let server_name = ServerName::try_from(name.clone())
        .map_err(|err| Attempt::Fatal(config(format!("server name {name:?}: {err}"))))?;
    let recorder = Arc::new(RecordingVerifier::default());
    let connector = PinConnector {
        recorder: recorder.clone(),
        server_name: server_name.clone(),
        target: format!("{host}:{port}"),
        proxy: settings.proxy.clone(),
        timeout: settings.connect_timeout,
    };
    // TLS is done by the connector; tonic sees a plain stream.
    let channel = Endpoint::from_shared(format!("http://{}:{port}", uri.host().unwrap_or_default()))
        .map_err(|err| Attempt::Fatal(config(format!("control_plane.url {url:?}: {err}"))))?
        .connect_timeout(settings.connect_timeout)
        .timeout(Duration::from_secs(30))
        .connect_with_connector(connector)
        .await
        .map_err(|err| Attempt::Retry(format!("cannot connect: {}", super::session::error_chain(&err))))?;
    let mut client = proto::enrollment_service_client::EnrollmentServiceClient::new(channel);
    let ca_pem = client
        .get_ca_certificate(proto::GetCaCertificateRequest {})
        .await
        .map_err(|s| status_attempt("GetCaCertificate", s))?
        .into_inner()
        .ca_certificate_pem;
    let ca_der = rustls_pemfile::certs(&mut ca_pem.as_bytes())
        .next()
        .and_then(|r| r.ok())
        .ok_or_else(|| Attempt::Fatal(config("the control plane sent a CA that is not a PEM certificate")))?;
    let actual = sha256_hex(ca_der.as_ref());
    if actual != fingerprint {
        return Err(Attempt::Fatal(config(format!(
            "refusing to enroll: the control plane's CA has fingerprint {actual}, not the pinned \
             enrollment.ca_fingerprint {fingerprint}. This is not the control plane the token was made for \
             (or someone is in between); the token was not sent"
        ))));
    }
    let (ee, intermediates) = recorder
        .chain
        .lock()
        .expect("chain lock")
        .clone()
        .ok_or_else(|| Attempt::Retry("no server certificate recorded".into()))?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca_der.clone())
        .map_err(|err| Attempt::Fatal(config(format!("the control plane's CA: {err}"))))?;
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .map_err(|err| Attempt::Fatal(config(format!("the control plane's CA: {err}"))))?;
    verifier.verify_server_cert(&ee, &intermediates, &server_name, &[], UnixTime::now()).map_err(|err| {
        Attempt::Fatal(config(format!(
            "refusing to enroll: the control plane's server certificate does not verify against its pinned CA \
             for {name:?}: {err} (set control_plane.server_name if the certificate names another host)"
        )))
    })?;
    let (key_pem, csr_pem) = new_csr().map_err(Attempt::Fatal)?;
    let resp = client
        .enroll(proto::EnrollRequest {
            token: token.trim().to_owned(),
            agent_id: e.agent_id.clone().unwrap_or_default(),
            csr_pem,
        })
        .await
        .map_err(|s| status_attempt("enrollment", s))?
        .into_inner();
    write_identity(&e.state_dir, &key_pem, &resp.certificate_pem, Some(&resp.ca_certificate_pem))
        .map_err(Attempt::Fatal)?;
    tracing::info!(
        state_dir = %e.state_dir.display(),
        expires_at = resp.expires_at.map(|t| t.seconds).unwrap_or_default(),
        "enrolled: certificate stored"
    );
    Ok(())
}

fn write_identity(
    dir: &Path,
    key_pem: &str,
    cert_pem: &str,
    ca_pem: Option<&str>,
) -> Result<(), ConnectError> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| ConnectError::ReadFile { what: "state directory", path: dir.to_owned(), source })?;
    let files = stored_files(dir);
    let write = |path: &Path, data: &str| -> Result<(), ConnectError> {
        let tmp = path.with_extension("tmp");
        let io =
            |source| ConnectError::ReadFile { what: "state file (writing)", path: path.to_owned(), source };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(data.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    };
    if let Some(ca) = ca_pem {
        write(&files.ca, ca)?;
    }
    // Each file is replaced atomically (write + fsync + rename). A crash
    // between the key and the certificate on first enrollment leaves no
    // certificate (the agent enrolls again with a new token); during a
    // renewal it leaves a mismatched pair, which the TLS setup reports.
    write(&files.key, key_pem)?;
    write(&files.cert, cert_pem)
}

/// (not_before, not_after) of the first certificate in `pem`, unix seconds.
fn validity(pem: &[u8]) -> Option<(i64, i64)> {
    let der = rustls_pemfile::certs(&mut &pem[..]).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some((cert.validity().not_before.timestamp(), cert.validity().not_after.timestamp()))
}

/// When the certificate in `pem` is due for renewal (2/3 of its life), as
/// unix seconds.
pub fn renew_at(pem: &[u8]) -> Option<i64> {
    let (nb, na) = validity(pem)?;
    Some(nb + (na - nb) * 2 / 3)
}

/// Renews the enrolled certificate when due, until `shutdown`.
pub(super) async fn renew_loop(
    settings: AgentSettings,
    state_dir: PathBuf,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let files = stored_files(&state_dir);
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
    loop {
        let due = std::fs::read(&files.cert).ok().as_deref().and_then(renew_at);
        let Some(due) = due else {
            tracing::warn!(cert = %files.cert.display(), "cannot read the enrolled certificate's validity; not renewing it");
            return;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let wait = Duration::from_secs((due - now).max(0) as u64);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match renew_once(&settings, &state_dir).await {
            Ok(()) => {
                backoff.reset();
                tracing::info!(cert = %files.cert.display(), "certificate renewed; the next session uses it");
            }
            Err(why) => {
                let delay = backoff.next_delay();
                tracing::warn!(retry_in_ms = delay.as_millis() as u64, "certificate renewal failed: {why}");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

async fn renew_once(settings: &AgentSettings, state_dir: &Path) -> Result<(), String> {
    let mut s = settings.clone();
    s.tls = Some(stored_files(state_dir));
    let dialer = super::connect::Dialer::new(&s).map_err(|e| e.to_string())?;
    let channel = dialer.connect().await.map_err(|e| super::session::error_chain(&e))?;
    let (key_pem, csr_pem) = new_csr().map_err(|e| e.to_string())?;
    let resp = proto::enrollment_service_client::EnrollmentServiceClient::new(channel)
        .renew_certificate(proto::RenewCertificateRequest { csr_pem })
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    write_identity(state_dir, &key_pem, &resp.certificate_pem, None).map_err(|e| e.to_string())
}

/// Accepts any server chain at the handshake but keeps it, so that it can
/// be verified once the pinned CA is known. Handshake signatures are
/// verified normally (the server proves it holds the certificate's key).
#[derive(Debug, Default)]
struct RecordingVerifier {
    chain: Mutex<Option<(CertificateDer<'static>, Vec<CertificateDer<'static>>)>>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.chain.lock().expect("chain lock") = Some((
            end_entity.clone().into_owned(),
            intermediates.iter().map(|c| c.clone().into_owned()).collect(),
        ));
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

/// TCP (or a CONNECT tunnel) + TLS with [`RecordingVerifier`], for tonic.
#[derive(Clone)]
struct PinConnector {
    recorder: Arc<RecordingVerifier>,
    server_name: ServerName<'static>,
    target: String,
    proxy: Option<ProxySettings>,
    timeout: Duration,
}

impl tonic::codegen::Service<Uri> for PinConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let connect = async {
                let tcp = match &this.proxy {
                    Some(p) => super::proxy::tunnel(p, &this.target).await?,
                    None => TcpStream::connect(&this.target).await?,
                };
                tcp.set_nodelay(true)?;
                let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(std::io::Error::other)?
                .dangerous()
                .with_custom_certificate_verifier(this.recorder.clone())
                .with_no_client_auth();
                cfg.alpn_protocols = vec![b"h2".to_vec()];
                let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
                    .connect(this.server_name.clone(), tcp)
                    .await?;
                Ok(TokioIo::new(tls))
            };
            match tokio::time::timeout(this.timeout, connect).await {
                Ok(r) => r,
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no TLS connection to {} within {:?}", this.target, this.timeout),
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_normalize_and_renewal_is_at_two_thirds() {
        assert_eq!(normalize_fingerprint(" SHA256:AB:cd "), "abcd");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.not_before = time::OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        p.not_after = time::OffsetDateTime::from_unix_timestamp(1_000_000 + 3000).unwrap();
        let pem = p.self_signed(&key).unwrap().pem();
        assert_eq!(renew_at(pem.as_bytes()), Some(1_002_000));
    }

    #[test]
    fn identity_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("state");
        write_identity(&d, "key", "cert", Some("ca")).unwrap();
        let f = stored_files(&d);
        for p in [&f.key, &f.cert, &f.ca] {
            assert_eq!(std::fs::metadata(p).unwrap().permissions().mode() & 0o777, 0o600, "{}", p.display());
        }
        assert_eq!(std::fs::read_to_string(&f.key).unwrap(), "key");
    }
}
