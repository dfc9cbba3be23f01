//! Typed configuration of the PostgreSQL source, parsed from a connector's
//! [`ConfigValues`] (the keys of Elastic's PostgreSQL connector).
//!
//! Parsing is pure (no I/O) and checks everything that can be checked
//! without a server; every error names the field and says what to fix.

use std::time::Duration;

use ferry_sdk::{ConfigValues, SourceError};
use serde_json::Value;

use super::session::SessionLimits;

/// Which tables of the schema to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableSelection {
    /// `*`: every ordinary and partitioned table of the schema.
    All,
    /// These tables, by exact name.
    Listed(Vec<String>),
}

/// Validated configuration of one PostgreSQL connector.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: String,
    pub database: String,
    pub schema: String,
    pub tables: TableSelection,
    /// Elastic's rows-per-request. Kept for compatibility; Ferry streams and
    /// sizes batches by bytes, so this is only a hint.
    pub fetch_size: u32,
    /// How many times a failed connection attempt is retried.
    pub retry_count: u32,
    pub ssl_enabled: bool,
    /// PEM certificate(s) of the CA that signed the server certificate; when
    /// empty and `ssl_enabled`, the public web PKI roots are used.
    pub ssl_ca: Option<String>,
    /// The agent's session timeouts (not a connector value: set by
    /// [`super::PostgresSource`] from the agent's configuration).
    pub limits: SessionLimits,
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &"**********")
            .field("database", &self.database)
            .field("schema", &self.schema)
            .field("tables", &self.tables)
            .field("fetch_size", &self.fetch_size)
            .field("retry_count", &self.retry_count)
            .field("ssl_enabled", &self.ssl_enabled)
            .field("ssl_ca", &self.ssl_ca.as_ref().map(|_| "<pem>"))
            .field("limits", &self.limits)
            .finish()
    }
}

/// Default of `fetch_size`, as in Elastic's connector.
pub const DEFAULT_FETCH_SIZE: u32 = 50;
/// Default of `retry_count`, as in Elastic's connector.
pub const DEFAULT_RETRY_COUNT: u32 = 3;

impl PostgresConfig {
    /// Parse and validate connector values.
    pub fn from_values(values: &ConfigValues) -> Result<Self, SourceError> {
        let host = required_str(values, "host", "the PostgreSQL server's host name or IP address")?;
        let port = match int_field(values, "port")? {
            None => return Err(missing("port", "the PostgreSQL server's TCP port, usually 5432")),
            Some(p) if (1..=65535).contains(&p) => p as u16,
            Some(p) => return Err(cfg_err(format!("`port` must be between 1 and 65535 (got {p})"))),
        };
        let username = required_str(values, "username", "the PostgreSQL role to connect as")?;
        let password = opt_str(values, "password")?.unwrap_or_default();
        let database = required_str(values, "database", "the name of the database to read")?;
        let schema = required_str(values, "schema", "the schema whose tables are read, e.g. public")?;
        let tables = parse_tables(values.get("tables"))?;
        let fetch_size = positive(values, "fetch_size", DEFAULT_FETCH_SIZE)?;
        let retry_count = match int_field(values, "retry_count")? {
            None => DEFAULT_RETRY_COUNT,
            Some(n) if (0..=100).contains(&n) => n as u32,
            Some(n) => return Err(cfg_err(format!("`retry_count` must be between 0 and 100 (got {n})"))),
        };
        let ssl_enabled = bool_field(values, "ssl_enabled")?.unwrap_or(false);
        let ssl_ca = opt_str(values, "ssl_ca")?;
        if ssl_enabled {
            if let Some(pem) = &ssl_ca {
                parse_ca(pem)?;
            }
        }
        Ok(Self {
            host,
            port,
            username,
            password,
            database,
            schema,
            tables,
            fetch_size,
            retry_count,
            ssl_enabled,
            ssl_ca,
            limits: SessionLimits::default(),
        })
    }

    /// `host:port` for messages.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Connect timeout per attempt.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(10)
    }
}

/// Parse `ssl_ca` (PEM) into DER certificates.
pub(crate) fn parse_ca(pem: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, SourceError> {
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_bytes()).collect();
    match certs {
        Ok(c) if !c.is_empty() => Ok(c),
        Ok(_) => Err(cfg_err(
            "`ssl_ca` holds no certificate: paste the CA certificate in PEM form \
             (-----BEGIN CERTIFICATE----- ...)"
                .to_owned(),
        )),
        Err(e) => Err(cfg_err(format!(
            "`ssl_ca` is not a valid PEM certificate ({e}): paste the CA certificate in PEM form"
        ))),
    }
}

fn parse_tables(v: Option<&Value>) -> Result<TableSelection, SourceError> {
    let names: Vec<String> = match v {
        None | Some(Value::Null) => vec![],
        Some(Value::String(s)) => {
            s.split(',').map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()).collect()
        }
        Some(Value::Array(items)) => {
            let mut out = Vec::new();
            for item in items {
                match item {
                    Value::String(s) => {
                        out.extend(s.split(',').map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()))
                    }
                    other => {
                        return Err(cfg_err(format!(
                            "`tables` must be a comma-separated list of table names (found {other})"
                        )))
                    }
                }
            }
            out
        }
        Some(other) => {
            return Err(cfg_err(format!(
                "`tables` must be a comma-separated list of table names or * (got {other})"
            )))
        }
    };
    if names.is_empty() || names.iter().any(|n| n == "*") {
        return Ok(TableSelection::All);
    }
    let mut names = names;
    names.sort();
    names.dedup();
    Ok(TableSelection::Listed(names))
}

fn cfg_err(msg: String) -> SourceError {
    SourceError::Configuration(msg)
}

fn missing(key: &str, what: &str) -> SourceError {
    cfg_err(format!("`{key}` is required: set it to {what}"))
}

/// A string value; `None` when absent, null or empty.
fn opt_str(values: &ConfigValues, key: &str) -> Result<Option<String>, SourceError> {
    match values.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(cfg_err(format!("`{key}` must be text (got {other})"))),
    }
}

fn required_str(values: &ConfigValues, key: &str, what: &str) -> Result<String, SourceError> {
    opt_str(values, key)?.map(|s| s.trim().to_owned()).ok_or_else(|| missing(key, what))
}

fn int_field(values: &ConfigValues, key: &str) -> Result<Option<i64>, SourceError> {
    match values.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| cfg_err(format!("`{key}` must be a whole number (got \"{s}\")"))),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) => Ok(Some(i)),
            None => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => Ok(Some(f as i64)),
                _ => Err(cfg_err(format!("`{key}` must be a whole number (got {n})"))),
            },
        },
        Some(other) => Err(cfg_err(format!("`{key}` must be a whole number (got {other})"))),
    }
}

fn positive(values: &ConfigValues, key: &str, default: u32) -> Result<u32, SourceError> {
    match int_field(values, key)? {
        None => Ok(default),
        Some(n) if n >= 1 && n <= i64::from(u32::MAX) => Ok(n as u32),
        Some(n) => Err(cfg_err(format!("`{key}` must be a positive whole number (got {n})"))),
    }
}

fn bool_field(values: &ConfigValues, key: &str) -> Result<Option<bool>, SourceError> {
    match values.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "" => Ok(None),
            "true" | "yes" | "on" | "1" => Ok(Some(true)),
            "false" | "no" | "off" | "0" => Ok(Some(false)),
            _ => Err(cfg_err(format!("`{key}` must be true or false (got \"{s}\")"))),
        },
        Some(other) => Err(cfg_err(format!("`{key}` must be true or false (got {other})"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values(v: Value) -> ConfigValues {
        v.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    fn base() -> Value {
        json!({"host": "db", "port": 5432, "username": "u", "password": "p", "database": "d",
               "schema": "public", "tables": "*"})
    }

    #[test]
    fn parses_defaults() {
        let c = PostgresConfig::from_values(&values(base())).unwrap();
        assert_eq!(c.tables, TableSelection::All);
        assert_eq!(c.fetch_size, 50);
        assert_eq!(c.retry_count, 3);
        assert!(!c.ssl_enabled);
        assert!(!format!("{c:?}").contains("\"p\""));
    }

    #[test]
    fn parses_strings_and_lists() {
        let mut v = base();
        v["port"] = json!("6543");
        v["tables"] = json!(" b, a ,,a ");
        v["ssl_enabled"] = json!("false");
        let c = PostgresConfig::from_values(&values(v)).unwrap();
        assert_eq!(c.port, 6543);
        assert_eq!(c.tables, TableSelection::Listed(vec!["a".into(), "b".into()]));
    }

    #[test]
    fn errors_name_the_field() {
        let mut v = base();
        v["port"] = json!("abc");
        let e = PostgresConfig::from_values(&values(v)).unwrap_err().to_string();
        assert!(e.contains("`port`"), "{e}");
        let mut v = base();
        v["host"] = json!("");
        let e = PostgresConfig::from_values(&values(v)).unwrap_err().to_string();
        assert!(e.contains("`host` is required"), "{e}");
        let mut v = base();
        v["ssl_enabled"] = json!(true);
        v["ssl_ca"] = json!("not a pem");
        let e = PostgresConfig::from_values(&values(v)).unwrap_err().to_string();
        assert!(e.contains("`ssl_ca`"), "{e}");
    }
}
