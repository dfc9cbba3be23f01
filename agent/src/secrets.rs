//! Secrets that never leave the agent's network: a connector configuration
//! value may be a reference the agent resolves when it uses the value —
//! `env:NAME` (an environment variable of the agent process) or
//! `file:/absolute/path` (a file's content, one trailing newline dropped,
//! e.g. a Docker or Kubernetes secret). The control plane and Elasticsearch
//! only ever hold the reference.
//!
//! Contract: only string values of exactly that shape are references
//! (`NAME` is `[A-Za-z_][A-Za-z0-9_]*`; the path is absolute). A reference
//! that does not resolve is a configuration error naming the key and what
//! to set, so the connector shows it on validation, as a wrong password
//! would.

use std::collections::BTreeMap;

use ferry_sdk::{ConfigValues, SourceError};
use serde_json::Value;

/// Where references are looked up: the process, or a map in tests.
#[derive(Debug, Clone, Default)]
pub enum SecretEnv {
    #[default]
    Process,
    Map(BTreeMap<String, String>),
}

impl SecretEnv {
    fn var(&self, name: &str) -> Option<String> {
        match self {
            SecretEnv::Process => std::env::var(name).ok(),
            SecretEnv::Map(m) => m.get(name).cloned(),
        }
    }
}

/// A reference, if `s` is one.
enum Reference<'a> {
    Env(&'a str),
    File(&'a str),
}

fn reference(s: &str) -> Option<Reference<'_>> {
    if let Some(name) = s.strip_prefix("env:") {
        let mut chars = name.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Some(Reference::Env(name));
        }
    }
    if let Some(path) = s.strip_prefix("file:") {
        if path.starts_with('/') {
            return Some(Reference::File(path));
        }
    }
    None
}

/// `values` with every reference replaced by what it names.
pub fn resolve(values: &ConfigValues, env: &SecretEnv) -> Result<ConfigValues, SourceError> {
    let mut out = values.clone();
    for (key, value) in out.iter_mut() {
        let Value::String(s) = value else { continue };
        let resolved = match reference(s.trim()) {
            None => continue,
            Some(Reference::Env(name)) => env.var(name).ok_or_else(|| {
                SourceError::Configuration(format!(
                    "`{key}` refers to the environment variable {name}, which is not set for the agent: \
                     set {name} in the agent's environment (or give the value itself)"
                ))
            })?,
            Some(Reference::File(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    SourceError::Configuration(format!(
                        "`{key}` refers to the file {path}, which the agent cannot read ({e}): \
                         mount the secret there, readable by the agent's user"
                    ))
                })?;
                text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text).to_owned()
            }
        };
        *value = Value::String(resolved);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values(v: Value) -> ConfigValues {
        v.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    #[test]
    fn env_and_file_references_resolve_and_others_stay() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pg");
        std::fs::write(&file, "from-file\n").unwrap();
        let env = SecretEnv::Map([("PG_PASSWORD".to_owned(), "from-env".to_owned())].into());
        let v = values(json!({
            "password": "env:PG_PASSWORD", "ssl_ca": format!("file:{}", file.display()),
            "username": "env:not a name", "host": "file:relative", "port": 5432
        }));
        let r = resolve(&v, &env).unwrap();
        assert_eq!(r["password"], "from-env");
        assert_eq!(r["ssl_ca"], "from-file");
        assert_eq!(r["username"], "env:not a name");
        assert_eq!(r["host"], "file:relative");
        assert_eq!(r["port"], 5432);
    }

    #[test]
    fn unresolved_references_name_the_key() {
        let env = SecretEnv::Map(BTreeMap::new());
        let e = resolve(&values(json!({"password": "env:PG_PASSWORD"})), &env).unwrap_err().to_string();
        assert!(e.contains("`password`") && e.contains("PG_PASSWORD") && e.contains("not set"), "{e}");
        let e = resolve(&values(json!({"password": "file:/nonexistent/pg"})), &env).unwrap_err().to_string();
        assert!(e.contains("`password`") && e.contains("/nonexistent/pg"), "{e}");
    }
}
