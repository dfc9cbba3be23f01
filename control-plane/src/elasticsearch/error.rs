//! The one error type of the Elasticsearch door.
//!
//! Messages say what failed and what the operator can check. They never carry credentials: the
//! client refuses URLs with user info, auth headers are marked sensitive, and response bodies are
//! reduced to Elasticsearch's `error.type` / `error.reason`.

use std::error::Error as _;

/// Everything that can go wrong talking to Elasticsearch / OpenSearch.
#[derive(Debug, thiserror::Error)]
pub enum EsError {
    /// The client configuration is unusable (bad URL, unreadable CA file, ...).
    #[error("invalid elasticsearch configuration: {0}")]
    Config(String),

    /// Connection refused, DNS failure, TLS failure, timeout: no HTTP answer at all.
    #[error(
        "cannot reach Elasticsearch at {url}: {detail}; check elasticsearch.host, that the cluster \
         is up and reachable from this host, and for https the CA (elasticsearch.ca)"
    )]
    Transport { url: String, detail: String, timeout: bool },

    /// 401 / 403.
    #[error(
        "Elasticsearch at {url} refused the request ({status}: {reason}); check \
         elasticsearch.api_key or elasticsearch.username and elasticsearch.password, and the privileges they grant"
    )]
    Auth { url: String, status: u16, reason: String },

    /// 409: optimistic concurrency (`if_seq_no`/`if_primary_term`) or `op_type=create` lost.
    #[error("version conflict on {index}/{id}: {reason}")]
    Conflict { index: String, id: String, reason: String },

    /// 404 for an index or a document the operation needs (e.g. `_update` of a missing doc).
    #[error("not found ({error_type}) at {path}: {reason}")]
    NotFound { path: String, error_type: String, reason: String },

    /// Any other non-success status, with the reason from Elasticsearch's error body.
    #[error("Elasticsearch answered {status} to {method} {path}: {error_type}: {reason}")]
    Status { status: u16, method: String, path: String, error_type: String, reason: String },

    /// The answer was not what the API documents.
    #[error("cannot decode Elasticsearch's answer to {path}: {detail}")]
    Decode { path: String, detail: String },

    /// The cluster's distribution/version is not one Ferry supports.
    #[error("{0}")]
    Unsupported(String),

    /// A bulk batch still had retryable failures (429/5xx/transport) after every retry.
    #[error(
        "bulk indexing into {index} gave up after {attempts} attempts with {pending} documents \
         still rejected (last: {last}); the cluster is overloaded or unavailable"
    )]
    RetriesExhausted { index: String, attempts: u32, pending: usize, last: String },
}

impl EsError {
    /// Whether retrying the same request later may succeed (transport trouble, 429, 502-504).
    pub fn is_retryable(&self) -> bool {
        match self {
            EsError::Transport { .. } => true,
            EsError::Status { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            _ => false,
        }
    }

    pub(crate) fn transport(url: &str, err: &reqwest::Error) -> Self {
        EsError::Transport { url: url.to_string(), detail: error_chain(err), timeout: err.is_timeout() }
    }
}

/// `reqwest::Error`'s Display is shallow ("error sending request"): walk the source chain so the
/// operator sees "Connection refused" or the TLS problem. The URL is stripped (we print our own).
fn error_chain(err: &reqwest::Error) -> String {
    let mut out = String::new();
    let mut msg = err.to_string();
    // reqwest appends " for url (...)"; we report the URL ourselves.
    if let Some(pos) = msg.find(" for url (") {
        msg.truncate(pos);
    }
    out.push_str(&msg);
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The `error` part of an Elasticsearch error body: `{"error":{"type":..,"reason":..},"status":..}`
/// (very old versions and some proxies send `"error":"text"`; anything else is summarised).
pub(crate) fn parse_error_body(body: &[u8]) -> (String, String) {
    #[derive(serde::Deserialize)]
    struct Body {
        error: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(Body { error: Some(serde_json::Value::Object(map)) }) => {
            let get = |k: &str| map.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
            (get("type"), get("reason"))
        }
        Ok(Body { error: Some(serde_json::Value::String(s)) }) => (String::new(), s),
        _ => {
            // Not JSON (a proxy's HTML page?): keep a short, printable prefix.
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
            (String::new(), text.split_whitespace().collect::<Vec<_>>().join(" "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_shapes() {
        let (t, r) = parse_error_body(
            br#"{"error":{"root_cause":[],"type":"index_not_found_exception","reason":"no such index [x]"},"status":404}"#,
        );
        assert_eq!(t, "index_not_found_exception");
        assert_eq!(r, "no such index [x]");
        let (t, r) = parse_error_body(br#"{"error":"plain text"}"#);
        assert_eq!((t.as_str(), r.as_str()), ("", "plain text"));
        let (_, r) = parse_error_body(b"<html>\n<body>Bad gateway</body></html>");
        assert_eq!(r, "<html> <body>Bad gateway</body></html>");
    }

    #[test]
    fn retryable() {
        let s = |status| EsError::Status {
            status,
            method: "POST".into(),
            path: "/_bulk".into(),
            error_type: String::new(),
            reason: String::new(),
        };
        assert!(s(429).is_retryable());
        assert!(s(503).is_retryable());
        assert!(!s(400).is_retryable());
        assert!(!s(500).is_retryable());
    }
}
