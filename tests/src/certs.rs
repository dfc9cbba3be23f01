//! Throwaway X.509 certificates for mTLS tests, made with `rcgen`.
//!
//! A [`TestPki`] is one certificate authority plus a temporary directory to
//! write PEM files into (deleted on drop). It issues:
//! - [`TestPki::server_cert`]: for the control plane's agent listener, SANs
//!   `127.0.0.1` and `localhost`, extended key usage serverAuth;
//! - [`TestPki::client_cert`]: for an agent, Subject CN = the agent id (the
//!   control plane takes the agent's identity from it), clientAuth;
//! - [`TestPki::expired_client_cert`]: like a client certificate but valid
//!   only in 2020.
//!
//! A second `TestPki::new()` is a foreign CA: its certificates must be
//! rejected by a server that trusts the first one.
//!
//! ```no_run
//! # fn demo() -> anyhow::Result<()> {
//! let pki = ferry_tests::certs::TestPki::new()?;
//! let ca = pki.write_ca()?; // ca.pem
//! let server = pki.write_server_cert()?; // server.pem + server-key.pem
//! let agent = pki.write_client_cert("agent-1")?; // agent-1.pem + agent-1-key.pem
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

static CA_SERIAL: AtomicUsize = AtomicUsize::new(1);

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct CertKey {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Paths of a written certificate and its key.
#[derive(Debug, Clone)]
pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertKey {
    /// Writes `<stem>.pem` and `<stem>-key.pem` into `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> anyhow::Result<CertPaths> {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}-key.pem"));
        std::fs::write(&cert, &self.cert_pem).with_context(|| format!("write {}", cert.display()))?;
        std::fs::write(&key, &self.key_pem).with_context(|| format!("write {}", key.display()))?;
        Ok(CertPaths { cert, key })
    }
}

/// A test certificate authority and a temporary directory for PEM files.
pub struct TestPki {
    name: String,
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    dir: tempfile::TempDir,
}

impl TestPki {
    /// A new CA (`CN=Ferry Test CA <n>`, unique per process) with its own
    /// temporary directory.
    pub fn new() -> anyhow::Result<TestPki> {
        let name = format!("Ferry Test CA {}", CA_SERIAL.fetch_add(1, Ordering::Relaxed));
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name.as_str());
        params.distinguished_name.push(DnType::OrganizationName, "Ferry tests");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2999, 1, 1);
        let key = KeyPair::generate().context("generate CA key")?;
        let ca_pem = params.self_signed(&key).context("self-sign CA certificate")?.pem();
        let issuer = Issuer::new(params, key);
        let dir = tempfile::Builder::new().prefix("ferry-pki-").tempdir().context("create PKI temp dir")?;
        Ok(TestPki { name, issuer, ca_pem, dir })
    }

    /// The CA's subject CN.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The temporary directory the `write_*` helpers write into.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A server certificate for `127.0.0.1` and `localhost`.
    pub fn server_cert(&self) -> anyhow::Result<CertKey> {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .context("server certificate SANs")?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, 2000, 2999)
    }

    /// A client certificate whose Subject CN is `name` (an agent id).
    pub fn client_cert(&self, name: &str) -> anyhow::Result<CertKey> {
        self.issue(client_params(name), 2000, 2999)
    }

    /// A client certificate for `name` that expired at the start of 2021.
    pub fn expired_client_cert(&self, name: &str) -> anyhow::Result<CertKey> {
        self.issue(client_params(name), 2020, 2021)
    }

    /// Writes `ca.pem`; returns its path.
    pub fn write_ca(&self) -> anyhow::Result<PathBuf> {
        let path = self.dir().join("ca.pem");
        std::fs::write(&path, &self.ca_pem).with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    }

    /// Writes `server.pem` and `server-key.pem`.
    pub fn write_server_cert(&self) -> anyhow::Result<CertPaths> {
        self.server_cert()?.write(self.dir(), "server")
    }

    /// Writes `<name>.pem` and `<name>-key.pem` for a client certificate
    /// with CN = `name`.
    pub fn write_client_cert(&self, name: &str) -> anyhow::Result<CertPaths> {
        self.client_cert(name)?.write(self.dir(), name)
    }

    /// Writes `<name>-expired.pem` and `<name>-expired-key.pem`.
    pub fn write_expired_client_cert(&self, name: &str) -> anyhow::Result<CertPaths> {
        self.expired_client_cert(name)?.write(self.dir(), &format!("{name}-expired"))
    }

    fn issue(&self, mut params: CertificateParams, from_year: i32, to_year: i32) -> anyhow::Result<CertKey> {
        params.not_before = rcgen::date_time_ymd(from_year, 1, 1);
        params.not_after = rcgen::date_time_ymd(to_year, 1, 1);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().context("generate key")?;
        let cert = params.signed_by(&key, &self.issuer).context("sign certificate")?;
        Ok(CertKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

fn client_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// `openssl <args>`; returns (success, stdout + stderr).
    fn openssl(args: &[&std::ffi::OsStr]) -> (bool, String) {
        let out =
            Command::new("openssl").args(args).output().expect("run openssl (bash deploy/install-deps.sh)");
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    fn verify(ca: &Path, cert: &Path, purpose: &str) -> (bool, String) {
        openssl(&[
            "verify".as_ref(),
            "-purpose".as_ref(),
            purpose.as_ref(),
            "-CAfile".as_ref(),
            ca.as_os_str(),
            cert.as_os_str(),
        ])
    }

    #[test]
    fn written_files_parse_and_chain() {
        let pki = TestPki::new().unwrap();
        let ca = pki.write_ca().unwrap();
        let server = pki.write_server_cert().unwrap();
        let client = pki.write_client_cert("agent-1").unwrap();
        let expired = pki.write_expired_client_cert("agent-1").unwrap();
        let foreign = TestPki::new().unwrap();
        let foreign_client = foreign.write_client_cert("agent-1").unwrap();
        assert_ne!(pki.name(), foreign.name());

        // The PEMs load the way TLS stacks load them.
        for paths in [&server, &client, &expired, &foreign_client] {
            let mut pem = std::fs::read(&paths.cert).unwrap();
            pem.extend(std::fs::read(&paths.key).unwrap());
            reqwest::Identity::from_pem(&pem).unwrap();
        }
        reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();

        // The server certificate: SANs and chain.
        let (ok, text) = openssl(&[
            "x509".as_ref(),
            "-noout".as_ref(),
            "-text".as_ref(),
            "-in".as_ref(),
            server.cert.as_os_str(),
        ]);
        assert!(ok, "{text}");
        assert!(text.contains("IP Address:127.0.0.1"), "{text}");
        assert!(text.contains("DNS:localhost"), "{text}");
        let (ok, text) = verify(&ca, &server.cert, "sslserver");
        assert!(ok, "{text}");

        // The client certificate: CN = the agent id, and it chains.
        let (ok, text) = openssl(&[
            "x509".as_ref(),
            "-noout".as_ref(),
            "-subject".as_ref(),
            "-nameopt".as_ref(),
            "RFC2253".as_ref(),
            "-in".as_ref(),
            client.cert.as_os_str(),
        ]);
        assert!(ok, "{text}");
        assert_eq!(text.trim(), "subject=CN=agent-1");
        let (ok, text) = verify(&ca, &client.cert, "sslclient");
        assert!(ok, "{text}");

        // The expired one and the foreign one do not verify.
        let (ok, text) = verify(&ca, &expired.cert, "sslclient");
        assert!(!ok && text.contains("expired"), "{text}");
        let (ok, text) = verify(&ca, &foreign_client.cert, "sslclient");
        assert!(!ok, "{text}");
    }
}
