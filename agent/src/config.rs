//! Agent configuration: YAML file (optional) → environment (the
//! `FERRY_A__B` rule plus the short aliases in
//! `ferry_sdk::settings::AGENT_ENV_ALIASES`) → serde structs with unknown
//! keys refused → [`RawConfig::validate`] → SDK runtime settings.
//!
//! The proxy to the control plane is `control_plane.proxy` when set, else
//! `HTTPS_PROXY` / `NO_PROXY` from the same environment map
//! (`ferry_sdk::runtime::ProxySettings::from_env`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_sdk::runtime::{
    AgentSettings, EnrollmentSettings, ProxySettings, ServedConnector, StreamCompression, TlsFiles,
};
use serde::Deserialize;

use crate::postgres::session::{SessionLimits, MAX_TIMEOUT};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub control_plane: Option<RawControlPlane>,
    #[serde(default)]
    pub connectors: Vec<RawConnector>,
    pub max_concurrent_jobs: Option<u32>,
    pub metrics: Option<RawMetrics>,
    /// Where the agent keeps what it must remember (its enrolled key and
    /// certificate). Default `./ferry-agent-state`.
    pub state_dir: Option<PathBuf>,
    pub enrollment: Option<RawEnrollment>,
    /// Limits of the agent's PostgreSQL sessions (every `postgresql`
    /// connector it serves).
    pub postgresql: Option<RawPostgresql>,
}

/// `postgresql.*`: durations as `500ms`, `30s`, `5m`, `1h` or seconds;
/// `0` turns a limit off. See `postgres::session`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawPostgresql {
    /// Longest wait for a table lock. Default 60s.
    pub lock_timeout: Option<serde_json::Value>,
    /// Longest statement; a table is read by one statement. Default 0 (off).
    pub statement_timeout: Option<serde_json::Value>,
    /// Longest idle time inside a transaction. Default 5m.
    pub idle_in_transaction_timeout: Option<serde_json::Value>,
}

impl RawPostgresql {
    pub fn validate(&self, errs: &mut Vec<String>) -> SessionLimits {
        let d = SessionLimits::default();
        let mut field = |key: &str, v: &Option<serde_json::Value>, default: Duration| match v {
            None => default,
            Some(v) => match parse_duration(v) {
                Some(t) if t <= MAX_TIMEOUT => t,
                Some(_) => {
                    errs.push(format!(
                        "postgresql.{key} {v}: at most {}s (PostgreSQL's limit)",
                        MAX_TIMEOUT.as_secs()
                    ));
                    default
                }
                None => {
                    errs.push(format!(
                        "postgresql.{key} {v}: write a duration such as 500ms, 30s, 5m, 1h (or 0 for no limit)"
                    ));
                    default
                }
            },
        };
        SessionLimits {
            lock_timeout: field("lock_timeout", &self.lock_timeout, d.lock_timeout),
            statement_timeout: field("statement_timeout", &self.statement_timeout, d.statement_timeout),
            idle_in_transaction_timeout: field(
                "idle_in_transaction_timeout",
                &self.idle_in_transaction_timeout,
                d.idle_in_transaction_timeout,
            ),
        }
    }
}

/// `500ms`, `30s`, `5m`, `1h`, or a number of seconds.
pub fn parse_duration(v: &serde_json::Value) -> Option<Duration> {
    if let Some(n) = v.as_u64() {
        return Some(Duration::from_secs(n));
    }
    let s = v.as_str()?.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Some(Duration::from_secs(n));
    }
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let ms = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    Some(Duration::from_millis(n.checked_mul(ms)?))
}

/// What the agent binary runs with: the SDK runtime's settings and the
/// PostgreSQL source's limits.
#[derive(Debug)]
pub struct Config {
    pub agent: AgentSettings,
    pub postgresql: SessionLimits,
}

/// Enrolling with a one-time token (`ferry_sdk::runtime::enroll`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnrollment {
    pub token: Option<String>,
    /// SHA-256 of the control plane's agents CA, from CreateEnrollmentToken.
    pub ca_fingerprint: Option<String>,
    /// Default: the agent id the token was made for.
    pub agent_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// `IP:PORT` to serve Prometheus metrics on (`/metrics`); unset: off.
    pub listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawControlPlane {
    pub url: Option<String>,
    pub tls: Option<RawTls>,
    /// Host name to check the control plane's certificate against, when it
    /// differs from the URL's host.
    pub server_name: Option<String>,
    pub connect_timeout_s: Option<u64>,
    /// `none` (default), `gzip` or `zstd`: compression of the document stream.
    pub compression: Option<String>,
    /// HTTP CONNECT proxy to reach the control plane through.
    pub proxy: Option<RawProxy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    /// `http://host:port` (credentials may also be given as `user:pass@`).
    pub url: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConnector {
    pub connector_id: Option<String>,
    pub service_type: Option<String>,
}

/// [`load_config`]'s runtime settings.
pub fn load(path: Option<&Path>, env: &BTreeMap<String, String>) -> Result<AgentSettings, String> {
    load_config(path, env).map(|c| c.agent)
}

/// Loads the file at `path`, applies `env`, validates.
pub fn load_config(path: Option<&Path>, env: &BTreeMap<String, String>) -> Result<Config, String> {
    let mut doc = ferry_sdk::settings::read_yaml_file(path)?;
    ferry_sdk::settings::overlay_agent_env(&mut doc, env);
    let mut raw: RawConfig =
        serde_json::from_value(doc).map_err(|e| format!("invalid configuration: {e}"))?;
    let mut pg_errs = vec![];
    // Validated apart: the SDK's settings know nothing of PostgreSQL.
    let postgresql = raw.postgresql.take().unwrap_or_default().validate(&mut pg_errs);
    let mut settings = match raw.validate() {
        Ok(s) if pg_errs.is_empty() => Ok(s),
        Ok(_) => Err(pg_errs),
        Err(mut errs) => {
            errs.extend(pg_errs);
            Err(errs)
        }
    }
    .map_err(|errs| format!("invalid configuration:\n  - {}", errs.join("\n  - ")))?;
    if settings.proxy.is_none() {
        let host = url_host(&settings.control_plane_url);
        settings.proxy =
            ProxySettings::from_env(env, host).map_err(|e| format!("invalid configuration: {e}"))?;
    }
    Ok(Config { agent: settings, postgresql })
}

/// The host of `scheme://host[:port][/...]` (IPv6 keeps its brackets).
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if authority.starts_with('[') {
        return authority.split_inclusive(']').next().unwrap_or(authority);
    }
    authority.split(':').next().unwrap_or(authority)
}

impl RawConfig {
    pub fn validate(self) -> Result<AgentSettings, Vec<String>> {
        let mut errs = vec![];
        let cp = self.control_plane.unwrap_or(RawControlPlane {
            url: None,
            tls: None,
            server_name: None,
            connect_timeout_s: None,
            compression: None,
            proxy: None,
        });
        let url = cp.url.unwrap_or_default();
        if url.is_empty() {
            errs.push("control_plane.url is required, e.g. https://cp.example.com:50051 (or FERRY_CONTROL_PLANE_URL)".into());
        } else if !url.starts_with("https://") && !url.starts_with("http://") {
            errs.push(format!("control_plane.url {url:?} must start with https://"));
        }
        let enrollment = match self.enrollment {
            Some(_) if cp.tls.is_some() => {
                errs.push(
                    "control_plane.tls and enrollment are both set: use operator-issued files or a token, not both"
                        .into(),
                );
                None
            }
            Some(e) => Some(EnrollmentSettings {
                token: e.token.filter(|t| !t.trim().is_empty()),
                ca_fingerprint: e.ca_fingerprint,
                agent_id: e.agent_id.filter(|t| !t.trim().is_empty()),
                state_dir: self.state_dir.clone().unwrap_or_else(|| PathBuf::from("ferry-agent-state")),
            }),
            None => None,
        };
        let tls = match cp.tls {
            Some(RawTls { ca: Some(ca), cert: Some(cert), key: Some(key) }) => {
                Some(TlsFiles { ca, cert, key })
            }
            Some(_) => {
                errs.push("control_plane.tls needs all of ca, cert and key (PEM files)".into());
                None
            }
            None if url.starts_with("https://") && enrollment.is_none() => {
                errs.push(
                    "control_plane.tls (ca, cert, key) is required: the control plane accepts agents with a client certificate only \
                     (or enroll with a token: enrollment.token and enrollment.ca_fingerprint)"
                        .into(),
                );
                None
            }
            None => None,
        };
        let compression = match cp.compression.as_deref().map(StreamCompression::parse) {
            None => StreamCompression::None,
            Some(Some(c)) => c,
            Some(None) => {
                errs.push(format!(
                    "control_plane.compression {:?} is not one of none, gzip, zstd (zstd pays on slow links; none on a LAN)",
                    cp.compression.unwrap_or_default()
                ));
                StreamCompression::None
            }
        };
        let proxy = match cp.proxy {
            None | Some(RawProxy { url: None, .. }) => None,
            Some(RawProxy { url: Some(url), username, password }) => match ProxySettings::parse(&url) {
                Ok(mut p) => {
                    match (username, password) {
                        (Some(u), pass) => p.credentials = Some((u, pass.unwrap_or_default())),
                        (None, Some(_)) => {
                            errs.push("control_plane.proxy.password is set without a username".into())
                        }
                        (None, None) => {}
                    }
                    Some(p)
                }
                Err(e) => {
                    errs.push(format!("control_plane.proxy.url: {e}"));
                    None
                }
            },
        };
        let metrics_listen = match self.metrics.and_then(|m| m.listen) {
            None => None,
            Some(l) => {
                match l.parse::<std::net::SocketAddr>() {
                    Ok(a) => Some(a),
                    Err(_) => {
                        errs.push(format!("metrics.listen {l:?} is not an address: write it as IP:PORT, e.g. 127.0.0.1:9465"));
                        None
                    }
                }
            }
        };
        if self.connectors.is_empty() {
            errs.push(
                "connectors: list at least one {connector_id, service_type} (or set FERRY_CONNECTOR_ID)"
                    .into(),
            );
        }
        let mut connectors = vec![];
        for (i, c) in self.connectors.into_iter().enumerate() {
            match c.connector_id.filter(|s| !s.trim().is_empty()) {
                Some(id) => connectors.push(ServedConnector {
                    connector_id: id,
                    service_type: c.service_type.unwrap_or_else(|| "postgresql".into()),
                }),
                None => errs.push(format!("connectors[{i}].connector_id is required")),
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(AgentSettings {
            control_plane_url: url,
            tls,
            server_name: cp.server_name,
            proxy,
            metrics_listen,
            connectors,
            max_concurrent_jobs: self.max_concurrent_jobs.unwrap_or(2).clamp(1, 64),
            connect_timeout: Duration::from_secs(cp.connect_timeout_s.unwrap_or(10).max(1)),
            compression,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            enrollment,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_environment_aliases_configure_an_agent_without_a_file() {
        let env: BTreeMap<String, String> = [
            ("FERRY_CONTROL_PLANE_URL", "https://127.0.0.1:50051"),
            ("FERRY_TLS_CA", "ca.pem"),
            ("FERRY_TLS_CERT", "a.pem"),
            ("FERRY_TLS_KEY", "a-key.pem"),
            ("FERRY_CONNECTOR_ID", "c1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let s = load(None, &env).unwrap();
        assert_eq!(s.control_plane_url, "https://127.0.0.1:50051");
        assert_eq!(
            s.connectors,
            vec![ServedConnector { connector_id: "c1".into(), service_type: "postgresql".into() }]
        );
        assert_eq!(s.tls.unwrap().key, PathBuf::from("a-key.pem"));
    }

    #[test]
    fn proxy_comes_from_the_file_or_else_https_proxy_unless_no_proxy() {
        let env = |extra: &[(&str, &str)]| -> BTreeMap<String, String> {
            [("FERRY_CONTROL_PLANE_URL", "http://cp.internal:50051"), ("FERRY_CONNECTOR_ID", "c")]
                .iter()
                .chain(extra)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(load(None, &env(&[])).unwrap().proxy, None);
        let p = load(None, &env(&[("HTTPS_PROXY", "http://u:p@proxy:3128")])).unwrap().proxy.unwrap();
        assert_eq!((p.addr.as_str(), p.credentials), ("proxy:3128", Some(("u".into(), "p".into()))));
        let no = env(&[("HTTPS_PROXY", "http://proxy:3128"), ("NO_PROXY", ".internal")]);
        assert_eq!(load(None, &no).unwrap().proxy, None);
        // The file wins, and its credentials are separate keys.
        let file = env(&[
            ("HTTPS_PROXY", "http://other:1"),
            ("FERRY_CONTROL_PLANE__PROXY__URL", "http://10.0.0.1:8080"),
            ("FERRY_CONTROL_PLANE__PROXY__USERNAME", "agent"),
            ("FERRY_CONTROL_PLANE__PROXY__PASSWORD", "s3cret"),
        ]);
        let p = load(None, &file).unwrap().proxy.unwrap();
        assert_eq!(p.addr, "10.0.0.1:8080");
        assert_eq!(p.credentials, Some(("agent".into(), "s3cret".into())));
        let bad = load(None, &env(&[("FERRY_CONTROL_PLANE__PROXY__URL", "socks5://p:1")])).unwrap_err();
        assert!(bad.contains("control_plane.proxy.url"), "{bad}");
        assert_eq!(url_host("https://[::1]:50051/x"), "[::1]");
        assert_eq!(url_host("https://cp.example.com"), "cp.example.com");
    }

    #[test]
    fn missing_tls_for_https_is_explained() {
        let env: BTreeMap<String, String> =
            [("FERRY_CONTROL_PLANE_URL", "https://x:1"), ("FERRY_CONNECTOR_ID", "c")]
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect();
        let err = load(None, &env).unwrap_err();
        assert!(err.contains("control_plane.tls"), "{err}");
    }

    #[test]
    fn compression_is_read_from_the_environment_and_checked() {
        let env = |c: &str| -> BTreeMap<String, String> {
            [
                ("FERRY_CONTROL_PLANE_URL", "http://127.0.0.1:1"),
                ("FERRY_CONNECTOR_ID", "c"),
                ("FERRY_CONTROL_PLANE__COMPRESSION", c),
            ]
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect()
        };
        assert_eq!(load(None, &env("zstd")).unwrap().compression, StreamCompression::Zstd);
        assert_eq!(load(None, &env("GZIP")).unwrap().compression, StreamCompression::Gzip);
        let err = load(None, &env("lz4")).unwrap_err();
        assert!(err.contains("control_plane.compression") && err.contains("zstd"), "{err}");
    }

    #[test]
    fn postgresql_limits_are_read_and_checked() {
        let base = [("FERRY_CONTROL_PLANE_URL", "http://127.0.0.1:1"), ("FERRY_CONNECTOR_ID", "c")];
        let with = |extra: &[(&str, &str)]| {
            let mut all: Vec<(&str, &str)> = base.to_vec();
            all.extend_from_slice(extra);
            let env: BTreeMap<String, String> =
                all.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            load_config(None, &env)
        };
        assert_eq!(with(&[]).unwrap().postgresql, SessionLimits::default());
        let c = with(&[
            ("FERRY_POSTGRESQL__LOCK_TIMEOUT", "500ms"),
            ("FERRY_POSTGRESQL__STATEMENT_TIMEOUT", "2h"),
            ("FERRY_POSTGRESQL__IDLE_IN_TRANSACTION_TIMEOUT", "0"),
        ])
        .unwrap();
        assert_eq!(c.postgresql.lock_timeout, Duration::from_millis(500));
        assert_eq!(c.postgresql.statement_timeout, Duration::from_secs(7200));
        assert_eq!(c.postgresql.idle_in_transaction_timeout, Duration::ZERO);
        let err = with(&[
            ("FERRY_POSTGRESQL__LOCK_TIMEOUT", "soon"),
            ("FERRY_POSTGRESQL__STATEMENT_TIMEOUT", "30d"),
        ])
        .unwrap_err();
        assert!(err.contains("postgresql.lock_timeout \"soon\": write a duration"), "{err}");
        assert!(err.contains("postgresql.statement_timeout"), "{err}");
        let err = with(&[("FERRY_POSTGRESQL__LOCK_TIMOUT", "1s")]).unwrap_err();
        assert!(err.contains("lock_timout"), "{err}");
    }
}
