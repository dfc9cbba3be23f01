//! Layered settings: a YAML file, then the environment on top.
//!
//! The rule, for every Ferry binary: a key's environment variable is `FERRY_`
//! followed by its path in the YAML file, upper-cased, with `__` between the
//! levels; list items are addressed by their index. So `elasticsearch.host`
//! is `FERRY_ELASTICSEARCH__HOST` and `connectors[0].connector_id` is
//! `FERRY_CONNECTORS__0__CONNECTOR_ID`. Values are read as YAML scalars
//! (`5432` is a number, `true` a boolean, anything else a string).
//!
//! The environment is passed in as a map so tests never mutate the process.

use std::collections::BTreeMap;

use serde_json::Value;

/// Reads the YAML configuration file into a JSON tree (an empty object when
/// there is no file, or the file is empty), ready for [`overlay_env`].
pub fn read_yaml_file(path: Option<&std::path::Path>) -> Result<Value, String> {
    let doc = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read config file {}: {e}", p.display()))?;
            serde_yaml_ng::from_str::<Value>(&text)
                .map_err(|e| format!("config file {} is not valid YAML: {e}", p.display()))?
        }
        None => Value::Null,
    };
    Ok(if doc.is_null() { Value::Object(Default::default()) } else { doc })
}

/// Prefix of every Ferry environment variable.
pub const ENV_PREFIX: &str = "FERRY_";

/// `FERRY_` variables that are read by the process itself, not
/// configuration keys: the overlay leaves them alone so they never reach
/// the typed (unknown-keys-refused) configuration. `FERRY_LOG` is the
/// tracing filter (`debug`, `ferry_agent=trace,info`).
pub const PROCESS_ENV: &[&str] = &["FERRY_LOG"];

/// Applies `FERRY_A__B__C=value` entries onto `doc` (a JSON tree made from
/// the YAML file). Unknown keys are not an error here: the typed
/// deserialization that follows rejects them with the key's name.
pub fn overlay_env(doc: &mut Value, env: &BTreeMap<String, String>, skip: &[&str]) {
    for (name, raw) in env {
        let Some(path) = name.strip_prefix(ENV_PREFIX) else { continue };
        if path.is_empty() || skip.contains(&name.as_str()) || PROCESS_ENV.contains(&name.as_str()) {
            continue;
        }
        let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
        set_path(doc, &parts, parse_scalar(raw));
    }
}

/// Reads a value the way YAML would read a plain scalar.
pub fn parse_scalar(raw: &str) -> Value {
    match raw {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        "null" | "~" => return Value::Null,
        _ => {}
    }
    if let Ok(i) = raw.parse::<i64>() {
        return Value::from(i);
    }
    if let Ok(f) = raw.parse::<f64>() {
        if f.is_finite() {
            return Value::from(f);
        }
    }
    Value::String(raw.to_owned())
}

fn set_path(doc: &mut Value, parts: &[String], value: Value) {
    let Some((head, rest)) = parts.split_first() else {
        *doc = value;
        return;
    };
    if let Ok(index) = head.parse::<usize>() {
        if !doc.is_array() {
            *doc = Value::Array(vec![]);
        }
        let arr = doc.as_array_mut().expect("just made an array");
        while arr.len() <= index {
            arr.push(Value::Object(Default::default()));
        }
        set_path(&mut arr[index], rest, value);
    } else {
        if !doc.is_object() {
            *doc = Value::Object(Default::default());
        }
        let obj = doc.as_object_mut().expect("just made an object");
        set_path(obj.entry(head.clone()).or_insert(Value::Null), rest, value);
    }
}

/// The process environment as a map.
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

/// Short environment variables every Ferry agent reads, whatever its
/// language: they are how the conformance suite and container platforms
/// hand an agent its connection. They win over the file and over the
/// `FERRY_A__B` form.
pub const AGENT_ENV_ALIASES: &[(&str, &[&str])] = &[
    ("FERRY_CONTROL_PLANE_URL", &["control_plane", "url"]),
    ("FERRY_TLS_CA", &["control_plane", "tls", "ca"]),
    ("FERRY_TLS_CERT", &["control_plane", "tls", "cert"]),
    ("FERRY_TLS_KEY", &["control_plane", "tls", "key"]),
    ("FERRY_CONNECTOR_ID", &["connectors", "0", "connector_id"]),
];

/// Applies the `FERRY_A__B` rule, then [`AGENT_ENV_ALIASES`].
pub fn overlay_agent_env(doc: &mut Value, env: &BTreeMap<String, String>) {
    let aliases: Vec<&str> = AGENT_ENV_ALIASES.iter().map(|(k, _)| *k).collect();
    overlay_env(doc, env, &aliases);
    for (name, path) in AGENT_ENV_ALIASES {
        if let Some(v) = env.get(*name) {
            let parts: Vec<String> = path.iter().map(|p| p.to_string()).collect();
            set_path(doc, &parts, Value::String(v.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_nested_keys_and_list_items() {
        let mut doc = serde_json::json!({"elasticsearch": {"host": "http://a:9200"}, "connectors": [{"connector_id": "x"}]});
        let env: BTreeMap<String, String> = [
            ("FERRY_ELASTICSEARCH__HOST", "http://b:9200"),
            ("FERRY_ELASTICSEARCH__API_KEY", "secret"),
            ("FERRY_CONNECTORS__0__SERVICE_TYPE", "postgresql"),
            ("FERRY_CONNECTORS__1__CONNECTOR_ID", "y"),
            ("FERRY_AGENTS__LISTEN", "0.0.0.0:50051"),
            ("FERRY_MAX_CONCURRENT_JOBS", "4"),
            ("FERRY_LOG", "debug"),
            ("HOME", "/root"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        overlay_env(&mut doc, &env, &[]);
        assert_eq!(
            doc,
            serde_json::json!({
                "elasticsearch": {"host": "http://b:9200", "api_key": "secret"},
                "connectors": [{"connector_id": "x", "service_type": "postgresql"}, {"connector_id": "y"}],
                "agents": {"listen": "0.0.0.0:50051"},
                "max_concurrent_jobs": 4
            })
        );
    }
}
