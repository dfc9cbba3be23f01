//! Control plane configuration: YAML file → environment overlay (see
//! `ferry_sdk::settings` for the `FERRY_A__B` rule) → serde structs with
//! unknown keys refused → [`RawConfig::validate`], a pure function that
//! returns the typed [`Config`] or every problem with what to do about it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::elasticsearch::EsAuth;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub elasticsearch: RawElasticsearch,
    pub agents: RawAgents,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub jobs: RawJobs,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub enrollment: RawEnrollment,
}

/// Agent enrollment with one-time tokens (`enrollment.rs`).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawEnrollment {
    /// Private key of `agents.tls.client_ca`; set: enrollment is on.
    pub ca_key: Option<PathBuf>,
    /// Lifetime of enrolled agents' certificates: `90s`, `30m`, `24h`,
    /// `7d` or plain seconds. Default 24h.
    pub certificate_ttl: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// `IP:PORT` to serve Prometheus metrics on (`/metrics`); unset: off.
    pub listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawElasticsearch {
    pub host: Option<String>,
    pub api_key: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// CA bundle for an https Elasticsearch with a private CA.
    pub ca: Option<PathBuf>,
    /// Largest bulk request body, bytes.
    pub bulk_max_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgents {
    pub listen: Option<String>,
    pub tls: Option<RawServerTls>,
    /// true: a connector bound to no agent (`allowed_agents` empty) is
    /// served by nobody. false (default): by any agent with a certificate
    /// from `tls.client_ca`, with a warning in the log.
    pub require_binding: Option<bool>,
    /// Seconds one message to an agent may wait for the agent to read its
    /// stream; past it the session is closed and its jobs handed back.
    /// Default 30.
    pub send_timeout_s: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
    pub tls: Option<RawServerTls>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawServerTls {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    /// Admin only: the certificate CNs allowed to call the admin API (exact
    /// match). Required when `admin.tls.client_ca` shares a certificate with
    /// `agents.tls.client_ca`.
    pub allowed_identities: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawJobs {
    /// Batches an agent may have unacknowledged per job.
    pub max_unacked_batches: Option<u32>,
    pub max_batch_bytes: Option<u32>,
    pub max_batch_documents: Option<u32>,
    /// A running job whose agent has not been heard of for this long is
    /// taken back and resumed elsewhere.
    pub lease_timeout_s: Option<u64>,
    /// How often the dispatcher looks for pending jobs.
    pub poll_interval_ms: Option<u64>,
    /// How often a progress line is logged per running job (default 30).
    pub progress_log_s: Option<u64>,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub elasticsearch: EsSettings,
    pub agents_listen: SocketAddr,
    pub agents_tls: ServerTls,
    /// See `agents::authz`.
    pub agents_require_binding: bool,
    /// `agents.send_timeout_s` (see `agents::registry`).
    pub agents_send_timeout: Duration,
    pub admin_listen: SocketAddr,
    pub admin_tls: Option<ServerTls>,
    pub jobs: JobSettings,
    /// Where Prometheus metrics are served; `None`: not served.
    pub metrics_listen: Option<SocketAddr>,
    pub enrollment: Option<EnrollmentSettings>,
}

#[derive(Debug, Clone)]
pub struct EnrollmentSettings {
    pub ca_key: PathBuf,
    pub certificate_ttl: Duration,
}

/// `90s`, `30m`, `24h`, `7d` or a number of seconds.
pub fn parse_duration(v: &serde_json::Value) -> Option<Duration> {
    if let Some(n) = v.as_u64() {
        return Some(Duration::from_secs(n));
    }
    let s = v.as_str()?.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Some(Duration::from_secs(n));
    }
    let (num, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: u64 = num.trim().parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    Some(Duration::from_secs(n.checked_mul(mult)?))
}

#[derive(Debug, Clone)]
pub struct EsSettings {
    pub url: String,
    pub auth: EsAuth,
    pub ca: Option<PathBuf>,
    pub bulk_max_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
    /// Non-empty: only client certificates with one of these CNs are served
    /// (admin only; see `admin::identity`).
    pub allowed_identities: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct JobSettings {
    pub max_unacked_batches: u32,
    pub max_batch_bytes: u32,
    pub max_batch_documents: u32,
    pub lease_timeout: Duration,
    pub poll_interval: Duration,
    pub progress_log_every: Duration,
}

/// Loads the file at `path`, applies `env`, validates, then checks what
/// needs the files ([`check_trust_roots`]).
pub fn load(path: Option<&Path>, env: &BTreeMap<String, String>) -> Result<Config, String> {
    let mut doc = ferry_sdk::settings::read_yaml_file(path)?;
    ferry_sdk::settings::overlay_env(&mut doc, env, &[]);
    let raw: RawConfig = serde_json::from_value(doc).map_err(|e| format!("invalid configuration: {e}"))?;
    let config =
        raw.validate().map_err(|errs| format!("invalid configuration:\n  - {}", errs.join("\n  - ")))?;
    check_trust_roots(&config).map_err(|e| format!("invalid configuration:\n  - {e}"))?;
    Ok(config)
}

const SHARED_CA: &str =
    "admin.tls.client_ca trusts the CA that signs agent certificates (agents.tls.client_ca): \
     every agent's certificate would be an admin credential. Give operators their own CA \
     (admin.tls.client_ca: operators-ca.pem), or keep the shared CA and list the operators' certificate \
     CNs in admin.tls.allowed_identities";

/// Refuses an admin API that trusts the agents' CA without an identity
/// allow-list: same file, or a certificate in both PEM bundles. Files that
/// cannot be read are left to the server start, which names them.
pub fn check_trust_roots(config: &Config) -> Result<(), String> {
    let Some(admin) = &config.admin_tls else { return Ok(()) };
    let (Some(admin_ca), Some(agents_ca)) = (&admin.client_ca, &config.agents_tls.client_ca) else {
        return Ok(());
    };
    if !admin.allowed_identities.is_empty() {
        return Ok(());
    }
    if shares_a_certificate(admin_ca, agents_ca) {
        return Err(SHARED_CA.to_owned());
    }
    Ok(())
}

/// Whether two CA files are one, or their PEM bundles hold a common
/// certificate.
fn shares_a_certificate(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    if let (Ok(ca), Ok(cb)) = (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        if ca == cb {
            return true;
        }
    }
    let certs = |p: &Path| -> Vec<Vec<u8>> {
        let Ok(pem) = std::fs::read(p) else { return vec![] };
        rustls_pemfile::certs(&mut pem.as_slice())
            .filter_map(|c| c.ok())
            .map(|c| c.as_ref().to_vec())
            .collect()
    };
    let other = certs(b);
    certs(a).iter().any(|c| other.contains(c))
}

fn parse_addr(key: &str, v: &Option<String>, default: &str, errs: &mut Vec<String>) -> SocketAddr {
    let s = v.as_deref().unwrap_or(default);
    s.parse().unwrap_or_else(|_| {
        errs.push(format!("{key}: {s:?} is not an address: write it as IP:PORT, e.g. 0.0.0.0:50051"));
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

fn server_tls(key: &str, raw: &RawServerTls, errs: &mut Vec<String>) -> Option<ServerTls> {
    match (&raw.cert, &raw.key) {
        (Some(cert), Some(key_path)) => Some(ServerTls {
            cert: cert.clone(),
            key: key_path.clone(),
            client_ca: raw.client_ca.clone(),
            allowed_identities: raw.allowed_identities.clone().unwrap_or_default(),
        }),
        _ => {
            errs.push(format!("{key}: both cert and key are required (PEM files)"));
            None
        }
    }
}

impl RawConfig {
    /// Pure validation: no I/O. Collects every problem at once.
    pub fn validate(self) -> Result<Config, Vec<String>> {
        let mut errs = Vec::new();
        let es = &self.elasticsearch;
        let url = es.host.clone().unwrap_or_default();
        if url.is_empty() {
            errs.push("elasticsearch.host is required, e.g. http://127.0.0.1:9200".into());
        } else if !(url.starts_with("http://") || url.starts_with("https://")) {
            errs.push(format!("elasticsearch.host {url:?} must start with http:// or https://"));
        }
        let auth = match (&es.api_key, &es.username, &es.password) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                errs.push(
                    "elasticsearch: api_key and username/password are mutually exclusive; use api_key".into(),
                );
                EsAuth::None
            }
            (Some(k), None, None) => EsAuth::ApiKey(k.clone()),
            (None, Some(u), Some(p)) => EsAuth::Basic { username: u.clone(), password: p.clone() },
            (None, Some(_), None) | (None, None, Some(_)) => {
                errs.push("elasticsearch: username and password go together; set both or neither".into());
                EsAuth::None
            }
            (None, None, None) => EsAuth::None,
        };
        let agents_listen = parse_addr("agents.listen", &self.agents.listen, "0.0.0.0:50051", &mut errs);
        let agents_tls = match &self.agents.tls {
            None => {
                errs.push(
                    "agents.tls is required: agents connect with mTLS only. Set agents.tls.cert, \
                     agents.tls.key and agents.tls.client_ca (the CA that signs agent certificates)"
                        .into(),
                );
                None
            }
            Some(t) => {
                if t.client_ca.is_none() {
                    errs.push(
                        "agents.tls.client_ca is required: only agents with a certificate signed by it may connect"
                            .into(),
                    );
                }
                server_tls("agents.tls", t, &mut errs)
            }
        };
        let admin_listen = parse_addr("admin.listen", &self.admin.listen, "127.0.0.1:50052", &mut errs);
        let admin_tls = self.admin.tls.as_ref().and_then(|t| server_tls("admin.tls", t, &mut errs));
        if self.agents.tls.as_ref().is_some_and(|t| t.allowed_identities.is_some()) {
            errs.push(
                "agents.tls.allowed_identities is not a setting: an agent's access is set per connector \
                 (allowed_agents) and agents.require_binding"
                    .into(),
            );
        }
        if let Some(t) = &admin_tls {
            if !t.allowed_identities.is_empty() && t.client_ca.is_none() {
                errs.push(
                    "admin.tls.allowed_identities needs admin.tls.client_ca: identities are the CNs of client \
                     certificates signed by it"
                        .into(),
                );
            }
            for (i, id) in t.allowed_identities.iter().enumerate() {
                if id.is_empty() || id.trim() != id {
                    errs.push(format!(
                        "admin.tls.allowed_identities[{i}] {id:?}: write the certificate's CN exactly, without spaces around it"
                    ));
                }
            }
            if t.client_ca.is_some()
                && t.client_ca == self.agents.tls.as_ref().and_then(|a| a.client_ca.clone())
                && t.allowed_identities.is_empty()
            {
                errs.push(SHARED_CA.into());
            }
        }
        if admin_tls.is_none() && !admin_listen.ip().is_loopback() {
            errs.push(format!(
                "admin.listen is {admin_listen}, not a loopback address, and admin.tls is not set: the admin API \
                 serves plaintext only on loopback. Set admin.tls (cert, key, optionally client_ca) or listen on 127.0.0.1"
            ));
        }
        let metrics_listen = self
            .metrics
            .listen
            .as_ref()
            .map(|_| parse_addr("metrics.listen", &self.metrics.listen, "", &mut errs));
        let j = &self.jobs;
        let jobs = JobSettings {
            max_unacked_batches: j.max_unacked_batches.unwrap_or(8).clamp(1, 64),
            max_batch_bytes: j.max_batch_bytes.unwrap_or(2 * 1024 * 1024).clamp(16 * 1024, 32 * 1024 * 1024),
            max_batch_documents: j.max_batch_documents.unwrap_or(2_500).clamp(1, 100_000),
            lease_timeout: Duration::from_secs(j.lease_timeout_s.unwrap_or(60).max(5)),
            poll_interval: Duration::from_millis(j.poll_interval_ms.unwrap_or(1_000).clamp(50, 60_000)),
            progress_log_every: Duration::from_secs(j.progress_log_s.unwrap_or(30).clamp(1, 3_600)),
        };
        let enrollment = self.enrollment.ca_key.as_ref().map(|ca_key| {
            let ttl = match &self.enrollment.certificate_ttl {
                None => Duration::from_secs(24 * 3600),
                Some(v) => match parse_duration(v) {
                    Some(d) if d >= Duration::from_secs(60) => d,
                    _ => {
                        errs.push(format!(
                            "enrollment.certificate_ttl {v}: write a duration of at least a minute, e.g. 24h, 30m, 3600"
                        ));
                        Duration::from_secs(24 * 3600)
                    }
                },
            };
            EnrollmentSettings { ca_key: ca_key.clone(), certificate_ttl: ttl }
        });
        if enrollment.is_none() && self.enrollment.certificate_ttl.is_some() {
            errs.push("enrollment.certificate_ttl is set but enrollment.ca_key is not: set both".into());
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(Config {
            elasticsearch: EsSettings {
                url: url.trim_end_matches('/').to_owned(),
                auth,
                ca: es.ca.clone(),
                bulk_max_bytes: es.bulk_max_bytes.unwrap_or(5 * 1024 * 1024),
            },
            agents_listen,
            agents_tls: agents_tls.expect("checked above"),
            agents_require_binding: self.agents.require_binding.unwrap_or(false),
            agents_send_timeout: Duration::from_secs(self.agents.send_timeout_s.unwrap_or(30).clamp(1, 3600)),
            admin_listen,
            admin_tls,
            jobs,
            metrics_listen,
            enrollment,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn environment_alone_makes_a_config() {
        let cfg = load(
            None,
            &env(&[
                ("FERRY_ELASTICSEARCH__HOST", "http://127.0.0.1:9200/"),
                ("FERRY_ELASTICSEARCH__API_KEY", "s3cr3t"),
                ("FERRY_AGENTS__TLS__CERT", "s.pem"),
                ("FERRY_AGENTS__TLS__KEY", "s-key.pem"),
                ("FERRY_AGENTS__TLS__CLIENT_CA", "ca.pem"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.elasticsearch.url, "http://127.0.0.1:9200");
        assert!(matches!(cfg.elasticsearch.auth, EsAuth::ApiKey(_)));
        assert_eq!(cfg.admin_listen.to_string(), "127.0.0.1:50052");
        assert!(!format!("{:?}", cfg.elasticsearch.auth).contains("s3cr3t"));
    }

    #[test]
    fn durations() {
        use serde_json::json;
        assert_eq!(parse_duration(&json!("24h")), Some(Duration::from_secs(86400)));
        assert_eq!(parse_duration(&json!("90s")), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration(&json!(120)), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration(&json!("2w")), None);
    }

    #[test]
    fn plaintext_admin_off_loopback_is_refused_with_advice() {
        let err = load(
            None,
            &env(&[
                ("FERRY_ELASTICSEARCH__HOST", "http://127.0.0.1:9200"),
                ("FERRY_AGENTS__TLS__CERT", "s.pem"),
                ("FERRY_AGENTS__TLS__KEY", "s-key.pem"),
                ("FERRY_AGENTS__TLS__CLIENT_CA", "ca.pem"),
                ("FERRY_ADMIN__LISTEN", "0.0.0.0:50052"),
            ]),
        )
        .unwrap_err();
        assert!(err.contains("admin.tls"), "{err}");
    }

    #[test]
    fn missing_agent_tls_and_unknown_keys_are_named() {
        let err = load(
            None,
            &env(&[("FERRY_ELASTICSEARCH__HOST", "http://x:9200"), ("FERRY_AGENTS__LISTEN", "0.0.0.0:1")]),
        )
        .unwrap_err();
        assert!(err.contains("agents.tls is required"), "{err}");
        let err = load(None, &env(&[("FERRY_ELASTICSEARCH__HOSTS", "http://x:9200")])).unwrap_err();
        assert!(err.contains("hosts"), "{err}");
    }

    /// Every `elasticsearch.<key>` an error message or doc in this crate names
    /// is a key the configuration accepts (issue 17: messages named `url` and
    /// `ca_file`, which do not exist).
    #[test]
    fn messages_name_only_real_elasticsearch_keys() {
        // serde lists the accepted fields when it refuses an unknown one.
        let refusal =
            serde_json::from_value::<RawElasticsearch>(serde_json::json!({"-": 1})).unwrap_err().to_string();
        let accepted: Vec<&str> = refusal.split('`').skip(3).step_by(2).collect();
        assert!(accepted.contains(&"host") && accepted.contains(&"ca"), "{refusal}");
        let mut named = Vec::new();
        let mut dirs = vec![std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for (at, _) in text.match_indices("elasticsearch.") {
                    // `config.elasticsearch.host` is a Rust field path, not a key named to a user.
                    let before = text[..at].chars().next_back().unwrap_or(' ');
                    if before.is_alphanumeric() || before == '.' || before == '_' || before == ':' {
                        continue;
                    }
                    let key: String = text[at + "elasticsearch.".len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if !key.is_empty() {
                        named.push((path.display().to_string(), key));
                    }
                }
            }
        }
        assert!(named.iter().any(|(_, k)| k == "host"), "the scan found nothing: {named:?}");
        let wrong: Vec<_> = named.iter().filter(|(_, k)| !accepted.contains(&k.as_str())).collect();
        assert!(wrong.is_empty(), "keys that do not exist (accepted: {accepted:?}): {wrong:?}");
    }

    fn with_admin_ca(agents_ca: &str, admin_ca: &str, extra: &[(&str, &str)]) -> Result<Config, String> {
        let mut pairs = vec![
            ("FERRY_ELASTICSEARCH__HOST", "http://127.0.0.1:9200"),
            ("FERRY_AGENTS__TLS__CERT", "s.pem"),
            ("FERRY_AGENTS__TLS__KEY", "s-key.pem"),
            ("FERRY_AGENTS__TLS__CLIENT_CA", agents_ca),
            ("FERRY_ADMIN__LISTEN", "0.0.0.0:50052"),
            ("FERRY_ADMIN__TLS__CERT", "s.pem"),
            ("FERRY_ADMIN__TLS__KEY", "s-key.pem"),
            ("FERRY_ADMIN__TLS__CLIENT_CA", admin_ca),
        ];
        pairs.extend_from_slice(extra);
        load(None, &env(&pairs))
    }

    fn ca_pem(name: &str) -> String {
        let mut p = rcgen::CertificateParams::new(vec![]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().pem()
    }

    #[test]
    fn an_admin_api_trusting_the_agents_ca_needs_an_identity_allow_list() {
        // The same file.
        let err = with_admin_ca("ca.pem", "ca.pem", &[]).unwrap_err();
        assert!(err.contains("every agent's certificate would be an admin credential"), "{err}");
        assert!(err.contains("admin.tls.allowed_identities"), "{err}");
        // Two files, one certificate (a copy, or a bundle holding it).
        let dir = tempfile::tempdir().unwrap();
        let (agents, operators) = (ca_pem("agents CA"), ca_pem("operators CA"));
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        };
        let agents_ca = write("agents-ca.pem", &agents);
        let copy = write("copy.pem", &agents);
        let bundle = write("bundle.pem", &format!("{operators}{agents}"));
        let operators_ca = write("operators-ca.pem", &operators);
        for admin_ca in [&copy, &bundle] {
            let err = with_admin_ca(&agents_ca, admin_ca, &[]).unwrap_err();
            assert!(err.contains("admin.tls.client_ca trusts the CA that signs agent certificates"), "{err}");
        }
        // Its own CA: fine.
        with_admin_ca(&agents_ca, &operators_ca, &[]).unwrap();
        // The shared CA with an allow-list: fine, and the list is kept.
        let c =
            with_admin_ca(&agents_ca, &copy, &[("FERRY_ADMIN__TLS__ALLOWED_IDENTITIES__0", "operator-1")])
                .unwrap();
        assert_eq!(c.admin_tls.unwrap().allowed_identities, vec!["operator-1".to_owned()]);
        // Identities are compared exactly: no padded entries; agents have no list.
        let err = with_admin_ca(&agents_ca, &copy, &[("FERRY_ADMIN__TLS__ALLOWED_IDENTITIES__0", " op ")])
            .unwrap_err();
        assert!(err.contains("allowed_identities[0]"), "{err}");
        let err =
            with_admin_ca(&agents_ca, &operators_ca, &[("FERRY_AGENTS__TLS__ALLOWED_IDENTITIES__0", "a")])
                .unwrap_err();
        assert!(err.contains("agents.tls.allowed_identities is not a setting"), "{err}");
    }
}
