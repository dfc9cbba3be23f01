//! The configuration schema registered on PostgreSQL connectors: the same
//! keys, labels and order as Elastic's PostgreSQL connector, so Kibana's
//! Connectors page and existing connector documents work unchanged.

use ferry_sdk::ConfigFieldSpec;
use serde_json::json;

use super::config::{DEFAULT_FETCH_SIZE, DEFAULT_RETRY_COUNT};

/// Key → field, in display order.
pub fn configuration_schema() -> Vec<(String, ConfigFieldSpec)> {
    let mut tables =
        ConfigFieldSpec::textarea("Comma-separated list of tables", 7).optional(json!("*")).tooltip(
            "Table names of the schema, or * for every table. Tables without a primary key are skipped.",
        );
    // Elastic types this field as `list` (a comma-separated string or an array).
    tables.kind = "list";
    vec![
        ("host".to_owned(), ConfigFieldSpec::text("Host", 1)),
        ("port".to_owned(), ConfigFieldSpec::int("Port", 2)),
        ("username".to_owned(), ConfigFieldSpec::text("Username", 3)),
        ("password".to_owned(), ConfigFieldSpec::text("Password", 4).sensitive()),
        ("database".to_owned(), ConfigFieldSpec::text("Database", 5)),
        ("schema".to_owned(), ConfigFieldSpec::text("Schema", 6)),
        ("tables".to_owned(), tables),
        (
            "fetch_size".to_owned(),
            ConfigFieldSpec::int("Rows fetched per request", 8)
                .optional(json!(DEFAULT_FETCH_SIZE))
                .advanced()
                .tooltip("Kept for compatibility: Ferry streams rows and sizes batches by bytes."),
        ),
        (
            "retry_count".to_owned(),
            ConfigFieldSpec::int("Retries per request", 9).optional(json!(DEFAULT_RETRY_COUNT)).advanced(),
        ),
        ("ssl_enabled".to_owned(), ConfigFieldSpec::toggle("Enable SSL verification", 10)),
        (
            "ssl_ca".to_owned(),
            // Elastic shows this only when ssl_enabled is on (`depends_on`);
            // the SDK's field spec has no depends_on yet, so it is optional.
            ConfigFieldSpec::textarea("SSL certificate", 11).optional(json!("")).tooltip(
                "PEM certificate of the CA that signed the server's certificate (used when SSL is enabled).",
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_order_match_elastic() {
        let s = configuration_schema();
        let keys: Vec<&str> = s.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "host",
                "port",
                "username",
                "password",
                "database",
                "schema",
                "tables",
                "fetch_size",
                "retry_count",
                "ssl_enabled",
                "ssl_ca"
            ]
        );
        for (i, (_, f)) in s.iter().enumerate() {
            assert_eq!(f.order, i as i32 + 1);
        }
        assert!(s[3].1.sensitive);
    }
}
