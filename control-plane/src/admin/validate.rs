//! Input checks for the admin API. Each error names the request field and
//! says what a valid value looks like.

use crate::error::{Error, Result};

pub fn connector_id(field: &str, id: &str) -> Result<()> {
    if id.trim().is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if id.len() > 512 {
        return Err(Error::invalid(field, "must be at most 512 bytes"));
    }
    if id.starts_with('_') || id.contains('/') || id.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not start with '_' or contain '/' or control characters"));
    }
    Ok(())
}

/// Elasticsearch's index name rules, plus: no leading '.', so a connector
/// can never write into system or hidden indices.
pub fn index_name(field: &str, name: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::invalid(field, format!("{name:?} is not a valid index name: {why}")));
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 255 {
        return bad("it is longer than 255 bytes");
    }
    if name != name.to_lowercase() {
        return bad("it must be lower case");
    }
    if let Some(c) = name.chars().find(|c| "\\/*?\"<>| ,#:".contains(*c)) {
        return bad(&format!("it contains {c:?}; use letters, digits, '-' and '_'"));
    }
    if name.starts_with(['-', '_', '+', '.']) {
        return bad("it must not start with '-', '_', '+' or '.'");
    }
    Ok(())
}

/// Coerces a user value to the schema's `type`, accepting the forms people
/// type in grpcurl (a port as 5432 or "5432", a list as ["a","b"] or "a,b").
pub fn coerce(key: &str, kind: &str, v: serde_json::Value) -> Result<serde_json::Value> {
    use serde_json::Value;
    let field = format!("values.{key}");
    Ok(match (kind, v) {
        (_, Value::Null) => Value::Null,
        ("int", Value::Number(n)) if n.is_i64() || n.as_f64().map(|f| f.fract() == 0.0).unwrap_or(false) => {
            Value::from(n.as_i64().unwrap_or_else(|| n.as_f64().unwrap_or_default() as i64))
        }
        ("int", Value::String(s)) if s.trim().is_empty() => Value::Null,
        ("int", Value::String(s)) => Value::from(
            s.trim()
                .parse::<i64>()
                .map_err(|_| Error::invalid(&field, format!("must be a whole number, got {s:?}")))?,
        ),
        ("int", other) => return Err(Error::invalid(&field, format!("must be a whole number, got {other}"))),
        ("bool", Value::Bool(b)) => Value::Bool(b),
        ("bool", Value::String(s)) if s == "true" || s == "false" => Value::Bool(s == "true"),
        ("bool", other) => return Err(Error::invalid(&field, format!("must be true or false, got {other}"))),
        ("list", Value::Array(a)) => Value::Array(a),
        ("list", Value::String(s)) => Value::String(s),
        ("list", other) => {
            return Err(Error::invalid(
                &field,
                format!("must be a list or a comma-separated string, got {other}"),
            ))
        }
        (_, Value::String(s)) => Value::String(s),
        (_, Value::Number(n)) => Value::String(n.to_string()),
        (_, Value::Bool(b)) => Value::String(b.to_string()),
        (_, other) => return Err(Error::invalid(&field, format!("must be text, got {other}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_follow_elasticsearch_rules() {
        assert!(index_name("index_name", "music").is_ok());
        assert!(index_name("index_name", "search-music_2").is_ok());
        for bad in ["Music", "a b", "a/b", "_x", ".elastic-connectors", "", "a:b", "a#b"] {
            let e = index_name("index_name", bad).unwrap_err();
            assert!(e.to_string().starts_with("index_name:"), "{e}");
        }
    }

    #[test]
    fn values_are_coerced_to_the_schema_type() {
        assert_eq!(coerce("port", "int", serde_json::json!(5432)).unwrap(), serde_json::json!(5432));
        assert_eq!(coerce("port", "int", serde_json::json!("5432")).unwrap(), serde_json::json!(5432));
        assert!(coerce("port", "int", serde_json::json!("x"))
            .unwrap_err()
            .to_string()
            .contains("values.port"));
        assert_eq!(coerce("ssl", "bool", serde_json::json!("true")).unwrap(), serde_json::json!(true));
        assert_eq!(coerce("host", "str", serde_json::json!(1)).unwrap(), serde_json::json!("1"));
    }
}
