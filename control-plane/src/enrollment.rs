//! Agent enrollment: one-time tokens, certificates signed from CSRs,
//! revocation.
//!
//! Contracts:
//! - A token is 32 random bytes (hex, prefixed `ferry-et-`). Only its SHA-256
//!   ([`hash_token`]) is stored, as the document id in [`TOKENS_INDEX`], with
//!   the agent id, expiry and whether it was used or revoked. The control
//!   plane keeps no local state: any replica can accept any token.
//! - A token is consumed by a read-modify-write under optimistic
//!   concurrency (`DocStore::update`): of two control planes racing on the
//!   same token exactly one writes `used_at_ms`; the other re-reads, sees it
//!   used and refuses. [`check_token`] is the one pure decision.
//! - The CSR's key becomes the certificate's key; the agent's private key
//!   never reaches the control plane. The certificate's CN is the token's
//!   agent id whatever the CSR says; it is valid for
//!   `enrollment.certificate_ttl` (default 24 h) and signed with
//!   `enrollment.ca_key`, the key of `agents.tls.client_ca`.
//! - Revoked agent ids live in [`REVOKED_INDEX`]; each control plane caches
//!   the set ([`Revoked`]) and re-reads it every [`REVOKED_REFRESH`]. The
//!   Session and RenewCertificate RPCs refuse a revoked id (after the TLS
//!   handshake, which has already refused expired certificates). Revocation
//!   is permanent for that agent id: enroll a replacement under a new id.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ferry_sdk::proto;
use rcgen::{
    CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use crate::app::App;
use crate::elasticsearch::{Concurrency, EsClient, EsError, Refresh};
use crate::error::{Error, Result};
use crate::store::{Change, DocStore};

pub const TOKENS_INDEX: &str = ".ferry-enrollment-tokens";
pub const REVOKED_INDEX: &str = ".ferry-revoked-agents";
pub const REVOKED_REFRESH: Duration = Duration::from_secs(3);
const TOKEN_PREFIX: &str = "ferry-et-";
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// One enrollment token, stored under its hash.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct TokenDoc {
    pub agent_id: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub used_at_ms: Option<i64>,
    pub revoked: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct RevokedDoc {
    pub agent_id: String,
    pub revoked_at_ms: i64,
}

/// SHA-256 of the token text, lowercase hex: the stored id.
pub fn hash_token(token: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, token.trim().as_bytes()))
}

fn new_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| Error::Internal("no randomness for an enrollment token".into()))?;
    Ok(format!("{TOKEN_PREFIX}{}", hex::encode(bytes)))
}

/// Whether `doc` lets `agent_id` enroll at `now_ms` (an empty `agent_id`:
/// the agent takes the id the token was made for); the refusal in words.
pub fn check_token(doc: &TokenDoc, agent_id: &str, now_ms: i64) -> std::result::Result<(), String> {
    if doc.revoked {
        return Err("this enrollment token was revoked: ask the operator for a new one".into());
    }
    if let Some(used) = doc.used_at_ms {
        return Err(format!(
            "this enrollment token was already used (at unix ms {used}); tokens are single-use: ask the \
             operator for a new one (CreateEnrollmentToken)"
        ));
    }
    if now_ms >= doc.expires_at_ms {
        return Err(format!(
            "this enrollment token expired {} s ago: ask the operator for a new one (CreateEnrollmentToken)",
            (now_ms - doc.expires_at_ms) / 1000
        ));
    }
    if !agent_id.is_empty() && doc.agent_id != agent_id {
        return Err(format!(
            "this enrollment token is for agent {:?}, not {agent_id:?}: start the agent with that id",
            doc.agent_id
        ));
    }
    Ok(())
}

fn now_ms() -> i64 {
    (crate::model::now().unix_timestamp_nanos() / 1_000_000) as i64
}

fn ts(ms: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    })
}

/// The revoked agent ids, as last read from [`REVOKED_INDEX`].
#[derive(Default)]
pub struct Revoked {
    ids: RwLock<HashSet<String>>,
}

impl Revoked {
    pub fn contains(&self, agent_id: &str) -> bool {
        self.ids.read().expect("revoked lock").contains(agent_id)
    }

    fn insert(&self, agent_id: &str) {
        self.ids.write().expect("revoked lock").insert(agent_id.to_owned());
    }

    async fn refresh(&self, es: &EsClient) -> Result<()> {
        let res = es
            .search::<RevokedDoc>(
                REVOKED_INDEX,
                &serde_json::json!({"size": 10000, "query": {"match_all": {}}}),
            )
            .await;
        let ids: HashSet<String> = match res {
            Ok(r) => r.hits.into_iter().map(|h| h.source.agent_id).collect(),
            Err(EsError::NotFound { .. }) => HashSet::new(),
            Err(e) => return Err(e.into()),
        };
        *self.ids.write().expect("revoked lock") = ids;
        Ok(())
    }
}

/// Re-reads the revoked set every [`REVOKED_REFRESH`] until shutdown. A
/// failed read keeps the previous set.
pub async fn run_revoked_refresh(app: Arc<App>) {
    let mut tick = tokio::time::interval(REVOKED_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = app.revoked.refresh(&app.stores.es).await {
            tracing::warn!("reading the revoked agents failed (keeping the previous list): {e}");
        }
    }
}

/// Signing material: the agents' client CA and its key.
pub struct Signer {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    ca_fingerprint: String,
    certificate_ttl: Duration,
}

impl Signer {
    pub fn load(
        ca_cert: &std::path::Path,
        ca_key: &std::path::Path,
        certificate_ttl: Duration,
    ) -> std::result::Result<Signer, String> {
        let ca_pem = std::fs::read_to_string(ca_cert)
            .map_err(|e| format!("cannot read agents.tls.client_ca {}: {e}", ca_cert.display()))?;
        let key_pem = std::fs::read_to_string(ca_key)
            .map_err(|e| format!("cannot read enrollment.ca_key {}: {e}", ca_key.display()))?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| format!("enrollment.ca_key {} is not a PEM private key: {e}", ca_key.display()))?;
        let der = rustls_pemfile::certs(&mut ca_pem.as_bytes())
            .next()
            .ok_or_else(|| format!("agents.tls.client_ca {} holds no certificate", ca_cert.display()))?
            .map_err(|e| format!("agents.tls.client_ca {} is not PEM: {e}", ca_cert.display()))?;
        let ca_fingerprint = crate::pki::fingerprint(der.as_ref());
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key).map_err(|e| {
            format!("enrollment.ca_key does not go with agents.tls.client_ca {}: {e}", ca_cert.display())
        })?;
        Ok(Signer { issuer, ca_pem, ca_fingerprint, certificate_ttl })
    }

    pub fn ca_fingerprint(&self) -> &str {
        &self.ca_fingerprint
    }

    /// Parses `csr_pem` (checking its self-signature) without signing.
    fn parse_csr(csr_pem: &str) -> Result<CertificateSigningRequestParams> {
        CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
            Error::invalid("csr_pem", format!("not a valid PEM certificate signing request: {e}"))
        })
    }

    /// A client certificate for `agent_id` over the CSR's key; (PEM, expiry ms).
    fn sign(&self, mut csr: CertificateSigningRequestParams, agent_id: &str) -> Result<(String, i64)> {
        let now = time::OffsetDateTime::now_utc();
        let p = &mut csr.params;
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, agent_id);
        p.subject_alt_names.clear();
        p.is_ca = rcgen::IsCa::ExplicitNoCa;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.use_authority_key_identifier_extension = true;
        // A few minutes of slack for an agent whose clock is a little behind.
        p.not_before = now - time::Duration::minutes(5);
        let not_after = now + time::Duration::seconds(self.certificate_ttl.as_secs() as i64);
        p.not_after = not_after;
        let mut serial = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
            .map_err(|_| Error::Internal("no randomness for a serial number".into()))?;
        serial[0] &= 0x7f;
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let cert = csr
            .signed_by(&self.issuer)
            .map_err(|e| Error::Internal(format!("signing the certificate: {e}")))?;
        Ok((cert.pem(), (not_after.unix_timestamp_nanos() / 1_000_000) as i64))
    }
}

fn tokens(app: &App) -> DocStore<TokenDoc> {
    DocStore::new(app.stores.es.clone(), TOKENS_INDEX)
}

fn signer(app: &App) -> Result<&Signer> {
    app.enrollment.as_deref().ok_or_else(|| {
        Error::FailedPrecondition(
            "enrollment is not configured on this control plane: set enrollment.ca_key (the key of \
             agents.tls.client_ca)"
                .into(),
        )
    })
}

/// `FleetService/CreateEnrollmentToken`.
pub async fn create_token(
    app: &App,
    req: proto::CreateEnrollmentTokenRequest,
) -> Result<proto::CreateEnrollmentTokenResponse> {
    let signer = signer(app)?;
    crate::pki::check_agent_id(&req.agent_id).map_err(|m| Error::invalid("agent_id", m))?;
    if app.revoked.contains(&req.agent_id) {
        return Err(Error::FailedPrecondition(format!(
            "agent {:?} is revoked; enroll the replacement under a new agent id",
            req.agent_id
        )));
    }
    let ttl =
        if req.ttl_seconds == 0 { DEFAULT_TOKEN_TTL } else { Duration::from_secs(req.ttl_seconds.into()) };
    if ttl > MAX_TOKEN_TTL {
        return Err(Error::invalid("ttl_seconds", "at most 30 days (2592000)"));
    }
    let token = new_token()?;
    let created = now_ms();
    let doc = TokenDoc {
        agent_id: req.agent_id.clone(),
        created_at_ms: created,
        expires_at_ms: created + ttl.as_millis() as i64,
        used_at_ms: None,
        revoked: false,
    };
    tokens(app).create(&hash_token(&token), &doc).await?;
    tracing::info!(agent_id = %req.agent_id, ttl_s = ttl.as_secs(), "enrollment token created");
    Ok(proto::CreateEnrollmentTokenResponse {
        token,
        ca_fingerprint: signer.ca_fingerprint.clone(),
        expires_at: ts(doc.expires_at_ms),
    })
}

/// `FleetService/RevokeAgent`.
pub async fn revoke_agent(app: &App, req: proto::RevokeAgentRequest) -> Result<proto::RevokeAgentResponse> {
    if req.agent_id.trim().is_empty() {
        return Err(Error::invalid("agent_id", "required"));
    }
    let doc = RevokedDoc { agent_id: req.agent_id.clone(), revoked_at_ms: now_ms() };
    app.stores.es.put_doc(REVOKED_INDEX, &req.agent_id, &doc, Concurrency::Any, Refresh::True).await?;
    app.revoked.insert(&req.agent_id);
    // Void its unused tokens.
    let store = tokens(app);
    let unused = store
        .search(&serde_json::json!({"size": 1000, "query": {"term": {"agent_id": req.agent_id}}}))
        .await?;
    let mut voided = 0;
    for h in unused.hits {
        if h.source.used_at_ms.is_some() || h.source.revoked {
            continue;
        }
        let r = store
            .update(&h.id, |d| {
                if d.revoked || d.used_at_ms.is_some() {
                    return Ok(Change::Keep(false));
                }
                d.revoked = true;
                Ok(Change::Write(true))
            })
            .await?;
        if matches!(r, Some((_, true))) {
            voided += 1;
        }
    }
    tracing::warn!(agent_id = %req.agent_id, tokens_voided = voided, "agent revoked: its sessions are refused from now on");
    Ok(proto::RevokeAgentResponse { tokens_revoked: voided })
}

fn peer_agent_id<T>(request: &Request<T>) -> Option<std::result::Result<String, String>> {
    let certs = request.peer_certs()?;
    let first = certs.first()?;
    Some(crate::agents::identity::agent_id_from_cert(first.as_ref()))
}

/// `ferry.v1.EnrollmentService`, on the agents listener.
pub struct EnrollmentService {
    app: Arc<App>,
}

impl EnrollmentService {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl proto::enrollment_service_server::EnrollmentService for EnrollmentService {
    async fn get_ca_certificate(
        &self,
        _request: Request<proto::GetCaCertificateRequest>,
    ) -> std::result::Result<Response<proto::GetCaCertificateResponse>, Status> {
        let signer = signer(&self.app)?;
        Ok(Response::new(proto::GetCaCertificateResponse { ca_certificate_pem: signer.ca_pem.clone() }))
    }

    async fn enroll(
        &self,
        request: Request<proto::EnrollRequest>,
    ) -> std::result::Result<Response<proto::EnrollResponse>, Status> {
        let address = request.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        let req = request.into_inner();
        let signer = signer(&self.app)?;
        let csr = Signer::parse_csr(&req.csr_pem)?;
        let refuse = |why: String| {
            tracing::warn!(agent_id = %req.agent_id, address = %address, "enrollment refused: {why}");
            Status::permission_denied(format!("enrollment refused: {why}"))
        };
        if !req.agent_id.is_empty() && self.app.revoked.contains(&req.agent_id) {
            return Err(refuse(format!("agent {:?} is revoked", req.agent_id)));
        }
        let now = now_ms();
        let consumed = tokens(&self.app)
            .update(&hash_token(&req.token), |doc| match check_token(doc, &req.agent_id, now) {
                Ok(()) => {
                    doc.used_at_ms = Some(now);
                    Ok(Change::Write(Ok(())))
                }
                Err(why) => Ok(Change::Keep(Err(why))),
            })
            .await?;
        let agent_id = match consumed {
            None => return Err(refuse("unknown enrollment token (check it was copied whole)".into())),
            Some((_, Err(why))) => return Err(refuse(why)),
            Some((token, Ok(()))) => token.doc.agent_id,
        };
        let (certificate_pem, expires_ms) = signer.sign(csr, &agent_id)?;
        tracing::info!(agent_id = %agent_id, address = %address, "agent enrolled");
        Ok(Response::new(proto::EnrollResponse {
            certificate_pem,
            ca_certificate_pem: signer.ca_pem.clone(),
            expires_at: ts(expires_ms),
        }))
    }

    async fn renew_certificate(
        &self,
        request: Request<proto::RenewCertificateRequest>,
    ) -> std::result::Result<Response<proto::RenewCertificateResponse>, Status> {
        let agent_id = match peer_agent_id(&request) {
            None => {
                return Err(Status::unauthenticated(
                    "RenewCertificate needs the agent's current client certificate (mTLS)",
                ))
            }
            Some(Err(e)) => return Err(Status::unauthenticated(e)),
            Some(Ok(id)) => id,
        };
        if self.app.revoked.contains(&agent_id) {
            return Err(Status::permission_denied(format!("agent {agent_id:?} is revoked")));
        }
        let signer = signer(&self.app)?;
        let csr = Signer::parse_csr(&request.into_inner().csr_pem)?;
        let (certificate_pem, expires_ms) = signer.sign(csr, &agent_id)?;
        tracing::info!(agent_id = %agent_id, "agent certificate renewed");
        Ok(Response::new(proto::RenewCertificateResponse { certificate_pem, expires_at: ts(expires_ms) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_hashed_random_and_checked() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 64);
        let h = hash_token(&a);
        assert_eq!(h.len(), 64);
        assert!(!h.contains(&a[TOKEN_PREFIX.len()..]));
        assert_eq!(hash_token(&format!(" {a}\n")), h, "surrounding whitespace (a pasted token) is ignored");
        assert_ne!(hash_token(&b), h);

        let doc =
            TokenDoc { agent_id: "a1".into(), created_at_ms: 0, expires_at_ms: 10_000, ..Default::default() };
        assert!(check_token(&doc, "a1", 9_999).is_ok());
        assert!(check_token(&doc, "", 9_999).is_ok());
        assert!(check_token(&doc, "a1", 10_000).unwrap_err().contains("expired"));
        assert!(check_token(&doc, "a2", 5_000).unwrap_err().contains("for agent \"a1\""));
        let used = TokenDoc { used_at_ms: Some(1), ..doc.clone() };
        assert!(check_token(&used, "a1", 5_000).unwrap_err().contains("already used"));
        let revoked = TokenDoc { revoked: true, ..doc };
        assert!(check_token(&revoked, "a1", 5_000).unwrap_err().contains("revoked"));
    }

    #[test]
    fn a_csr_becomes_a_client_certificate_for_the_token_agent() {
        let dir = tempfile::tempdir().unwrap();
        let out = crate::pki::init(&crate::pki::InitOptions {
            dir: dir.path().into(),
            hosts: vec![],
            days: 1,
            force: false,
        })
        .unwrap();
        let signer = Signer::load(&out.ca, &out.ca_key, Duration::from_secs(600)).unwrap();
        assert_eq!(signer.ca_fingerprint(), out.ca_fingerprint);
        let key = KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "someone-else");
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let (pem, expires) = signer.sign(Signer::parse_csr(&csr).unwrap(), "agent-7").unwrap();
        let (_, der) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        assert_eq!(crate::agents::identity::agent_id_from_cert(&der.contents).unwrap(), "agent-7");
        let cert = der.parse_x509().unwrap();
        assert_eq!(cert.public_key().subject_public_key.data.as_ref(), key.public_key_raw());
        let left = expires - now_ms();
        assert!((590_000..=600_000).contains(&left), "{left}");
        assert!(Signer::parse_csr("not a csr").is_err());
    }
}
