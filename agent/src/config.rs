//! Agent configuration: YAML file (optional) → environment (the
//! `FERRY_A__B` rule plus the short aliases in
//! `ferry_sdk::settings::AGENT_ENV_ALIASES`) → serde structs with unknown
//! keys refused → [`RawConfig::validate`] → SDK runtime settings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_sdk::runtime::{AgentSettings, ServedConnector, StreamCompression, TlsFiles};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub control_plane: Option<RawControlPlane>,
    #[serde(default)]
    pub connectors: Vec<RawConnector>,
    pub max_concurrent_jobs: Option<u32>,
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

pub fn load(path: Option<&Path>, env: &BTreeMap<String, String>) -> Result<AgentSettings, String> {
    let mut doc = ferry_sdk::settings::read_yaml_file(path)?;
    ferry_sdk::settings::overlay_agent_env(&mut doc, env);
    let raw: RawConfig = serde_json::from_value(doc).map_err(|e| format!("invalid configuration: {e}"))?;
    raw.validate().map_err(|errs| format!("invalid configuration:\n  - {}", errs.join("\n  - ")))
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
        });
        let url = cp.url.unwrap_or_default();
        if url.is_empty() {
            errs.push("control_plane.url is required, e.g. https://cp.example.com:50051 (or FERRY_CONTROL_PLANE_URL)".into());
        } else if !url.starts_with("https://") && !url.starts_with("http://") {
            errs.push(format!("control_plane.url {url:?} must start with https://"));
        }
        let tls = match cp.tls {
            Some(RawTls { ca: Some(ca), cert: Some(cert), key: Some(key) }) => {
                Some(TlsFiles { ca, cert, key })
            }
            Some(_) => {
                errs.push("control_plane.tls needs all of ca, cert and key (PEM files)".into());
                None
            }
            None if url.starts_with("https://") => {
                errs.push(
                    "control_plane.tls (ca, cert, key) is required: the control plane accepts agents with a client certificate only"
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
            connectors,
            max_concurrent_jobs: self.max_concurrent_jobs.unwrap_or(2).clamp(1, 64),
            connect_timeout: Duration::from_secs(cp.connect_timeout_s.unwrap_or(10).max(1)),
            compression,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
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
}
