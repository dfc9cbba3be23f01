//! Development certificates without openssl: `ferry-control-plane certs`.
//!
//! - [`init`] makes a certificate authority and the control plane's server
//!   certificate in one directory (`ca.pem`, `ca-key.pem`, `server.pem`,
//!   `server-key.pem`). The same CA signs agent certificates, so the
//!   directory is what `agents.tls` points at (`client_ca: ca.pem`).
//! - [`issue_agent`] signs a client certificate whose Subject CN is the
//!   agent id (the identity the control plane reads, `agents/identity.rs`).
//!
//! Contract: existing files are never overwritten unless `force` is set (a
//! second `init` must not silently replace a CA agents already trust); key
//! files are written with mode 0600. The CA's fingerprint ([`fingerprint`]:
//! SHA-256 of its DER, lowercase hex) is what an operator hands an agent so
//! it can check it talks to this control plane.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(
        "{path} already exists: pass --force to replace it (agents trusting the old CA will be refused)"
    )]
    Exists { path: PathBuf },
    #[error("cannot {what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Cert(String),
}

fn cert_err(what: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |e| PkiError::Cert(format!("{what}: {e}"))
}

/// What `certs init` makes.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub dir: PathBuf,
    /// DNS names and IP addresses the server certificate is valid for.
    pub hosts: Vec<String>,
    /// Validity of the server certificate.
    pub days: u32,
    pub force: bool,
}

/// Files written by [`init`].
#[derive(Debug, Clone)]
pub struct InitOutput {
    pub ca: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub ca_fingerprint: String,
}

/// The CA lives ten years: replacing it means re-issuing every agent.
const CA_DAYS: i64 = 3650;

/// Makes `ca.pem`/`ca-key.pem` and `server.pem`/`server-key.pem` in `dir`.
pub fn init(opts: &InitOptions) -> Result<InitOutput, PkiError> {
    let out = InitOutput {
        ca: opts.dir.join("ca.pem"),
        ca_key: opts.dir.join("ca-key.pem"),
        server_cert: opts.dir.join("server.pem"),
        server_key: opts.dir.join("server-key.pem"),
        ca_fingerprint: String::new(),
    };
    if !opts.force {
        for p in [&out.ca, &out.ca_key, &out.server_cert, &out.server_key] {
            if p.exists() {
                return Err(PkiError::Exists { path: p.clone() });
            }
        }
    }
    std::fs::create_dir_all(&opts.dir).map_err(|source| PkiError::Io {
        what: "create directory",
        path: opts.dir.clone(),
        source,
    })?;

    let now = OffsetDateTime::now_utc();
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "Ferry development CA");
    ca.distinguished_name.push(DnType::OrganizationName, "Ferry");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    ca.not_before = now - Duration::hours(1);
    ca.not_after = now + Duration::days(CA_DAYS);
    let ca_key = KeyPair::generate().map_err(cert_err("generate the CA key"))?;
    let ca_cert = ca.self_signed(&ca_key).map_err(cert_err("self-sign the CA certificate"))?;
    let fingerprint = fingerprint(ca_cert.der());
    write_file(&out.ca, ca_cert.pem().as_bytes(), false)?;
    write_file(&out.ca_key, ca_key.serialize_pem().as_bytes(), true)?;
    let issuer = Issuer::new(ca, ca_key);

    let hosts =
        if opts.hosts.is_empty() { vec!["localhost".into(), "127.0.0.1".into()] } else { opts.hosts.clone() };
    let mut server = CertificateParams::new(hosts.clone()).map_err(cert_err("server certificate names"))?;
    server.distinguished_name.push(DnType::CommonName, hosts[0].as_str());
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let (cert, key) = sign_leaf(server, &issuer, opts.days)?;
    write_file(&out.server_cert, cert.as_bytes(), false)?;
    write_file(&out.server_key, key.as_bytes(), true)?;
    Ok(InitOutput { ca_fingerprint: fingerprint, ..out })
}

/// Files written by [`issue_agent`].
#[derive(Debug, Clone)]
pub struct AgentOutput {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Signs a client certificate for agent `id` with the CA in `ca_dir`
/// (`ca.pem`, `ca-key.pem`); writes `<out_dir>/<id>.pem` and `<id>-key.pem`.
pub fn issue_agent(
    ca_dir: &Path,
    id: &str,
    out_dir: &Path,
    days: u32,
    force: bool,
) -> Result<AgentOutput, PkiError> {
    check_agent_id(id).map_err(PkiError::Cert)?;
    let out =
        AgentOutput { cert: out_dir.join(format!("{id}.pem")), key: out_dir.join(format!("{id}-key.pem")) };
    if !force {
        for p in [&out.cert, &out.key] {
            if p.exists() {
                return Err(PkiError::Exists { path: p.clone() });
            }
        }
    }
    let issuer = load_issuer(ca_dir)?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, id);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let (cert, key) = sign_leaf(params, &issuer, days)?;
    std::fs::create_dir_all(out_dir).map_err(|source| PkiError::Io {
        what: "create directory",
        path: out_dir.to_owned(),
        source,
    })?;
    write_file(&out.cert, cert.as_bytes(), false)?;
    write_file(&out.key, key.as_bytes(), true)?;
    Ok(out)
}

/// Agent ids are certificate CNs and file names: letters, digits, `-_.`.
pub fn check_agent_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "agent id {id:?}: use letters, digits, '-', '_' and '.' only (it is the certificate's CN and a file name)"
        ));
    }
    if id.starts_with('.') {
        return Err(format!("agent id {id:?} must not start with '.'"));
    }
    Ok(())
}

/// The CA made by [`init`], read back from `ca_dir`.
pub fn load_issuer(ca_dir: &Path) -> Result<Issuer<'static, KeyPair>, PkiError> {
    let read = |name: &str| {
        let path = ca_dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| PkiError::Io { what: "read", path, source })
    };
    let key = KeyPair::from_pem(&read("ca-key.pem")?).map_err(cert_err("parse ca-key.pem"))?;
    Issuer::from_ca_cert_pem(&read("ca.pem")?, key).map_err(cert_err("parse ca.pem"))
}

/// SHA-256 of a certificate's DER, lowercase hex (no separators).
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, der))
}

fn sign_leaf(
    mut params: CertificateParams,
    issuer: &Issuer<'_, KeyPair>,
    days: u32,
) -> Result<(String, String), PkiError> {
    let now = OffsetDateTime::now_utc();
    // An hour of slack: a peer whose clock is a little behind still accepts it.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(i64::from(days.max(1)));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().map_err(cert_err("generate a key"))?;
    let cert = params.signed_by(&key, issuer).map_err(cert_err("sign the certificate"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn write_file(path: &Path, data: &[u8], private: bool) -> Result<(), PkiError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true).mode(if private { 0o600 } else { 0o644 });
    let mut f =
        opts.open(path).map_err(|source| PkiError::Io { what: "write", path: path.to_owned(), source })?;
    f.write_all(data).map_err(|source| PkiError::Io { what: "write", path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_then_agent_chain_and_refuse_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let opts = InitOptions { dir: dir.path().into(), hosts: vec![], days: 30, force: false };
        let out = init(&opts).unwrap();
        assert_eq!(out.ca_fingerprint.len(), 64);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&out.ca_key).unwrap().permissions().mode() & 0o777, 0o600);
        let again = init(&opts).unwrap_err().to_string();
        assert!(again.contains("--force"), "{again}");

        let agent = issue_agent(dir.path(), "agent-1", dir.path(), 7, false).unwrap();
        let pem = std::fs::read(&agent.cert).unwrap();
        let (_, der) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        assert_eq!(crate::agents::identity::agent_id_from_cert(&der.contents).unwrap(), "agent-1");
        let cert = der.parse_x509().unwrap();
        let ca_pem = std::fs::read(&out.ca).unwrap();
        let (_, ca_der) = x509_parser::pem::parse_x509_pem(&ca_pem).unwrap();
        let ca = ca_der.parse_x509().unwrap();
        assert_eq!(cert.issuer(), ca.subject());
        cert.verify_signature(Some(ca.public_key())).unwrap();
        assert_eq!(fingerprint(&ca_der.contents), out.ca_fingerprint);

        assert!(issue_agent(dir.path(), "../x", dir.path(), 7, false).is_err());
    }
}
