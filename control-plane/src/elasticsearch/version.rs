//! Version handshake: which clusters Ferry talks to.
//!
//! Ferry uses only REST APIs that exist with the same shape in Elasticsearch 8.x/9.x and
//! OpenSearch 2.x/3.x (`_bulk`, `_search` with `seq_no_primary_term`, `if_seq_no` OCC,
//! `_update`, `_delete_by_query`). Older majors differ in ways we do not test (mapping types in
//! 6.x, the `_doc` transition in 7.x, OpenSearch 1.x's 7.10 heritage), so they are refused at
//! startup with a message rather than failing later on some request.

use super::client::EsClient;
use super::error::EsError;

/// Which product answered `GET /`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    Elasticsearch,
    OpenSearch,
}

impl std::fmt::Display for Distribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Distribution::Elasticsearch => "Elasticsearch",
            Distribution::OpenSearch => "OpenSearch",
        })
    }
}

/// A supported cluster version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerVersion {
    pub distribution: Distribution,
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    /// `version.number` as reported (may carry a suffix such as `-SNAPSHOT`).
    pub number: String,
}

impl std::fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.distribution, self.number)
    }
}

const SUPPORTED: &str = "Ferry needs Elasticsearch 8.x or 9.x, or OpenSearch 2.x or 3.x";

/// Pure check of `version.distribution` (absent on Elasticsearch, `"opensearch"` on OpenSearch)
/// and `version.number`.
pub fn check_version(distribution: Option<&str>, number: &str) -> Result<ServerVersion, EsError> {
    let distribution = match distribution.map(str::to_ascii_lowercase).as_deref() {
        // Elasticsearch does not send `distribution` (it has `build_flavor` instead).
        None | Some("") | Some("elasticsearch") => Distribution::Elasticsearch,
        Some("opensearch") => Distribution::OpenSearch,
        Some(other) => {
            return Err(EsError::Unsupported(format!(
                "the cluster reports distribution {other:?} version {number}, which is not supported: {SUPPORTED}"
            )))
        }
    };
    let (major, minor, patch) = parse_number(number).ok_or_else(|| {
        EsError::Unsupported(format!(
            "{distribution} reports version {number:?}, which is not a version number: {SUPPORTED}"
        ))
    })?;
    let supported = match distribution {
        Distribution::Elasticsearch => matches!(major, 8 | 9),
        Distribution::OpenSearch => matches!(major, 2 | 3),
    };
    if !supported {
        return Err(EsError::Unsupported(format!("{distribution} {number} is not supported: {SUPPORTED}")));
    }
    Ok(ServerVersion { distribution, major, minor, patch, number: number.to_string() })
}

/// `8.15.2`, `9.0.0-SNAPSHOT`, `3.0.0-alpha1`; minor and patch default to 0.
fn parse_number(number: &str) -> Option<(u32, u32, u32)> {
    let core = number.trim().split(['-', '+']).next()?;
    let mut parts = core.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |p| p.parse().ok())?;
    let patch = parts.next().map_or(Some(0), |p| p.parse().ok())?;
    Some((major, minor, patch))
}

/// `GET /` and [`check_version`]. Call once at startup, before anything else touches the cluster.
///
/// osmem-server (the in-memory test server) answers as `distribution: "opensearch"`,
/// `number: "3.8.0"` — a plain OpenSearch 3.x, accepted by the normal rule with no special case
/// (it also sends `X-Elastic-Product: Elasticsearch`, which we deliberately do not look at: the
/// body is the documented source of truth on both products).
pub async fn handshake(client: &EsClient) -> Result<ServerVersion, EsError> {
    let info = client.info().await?;
    check_version(info.version.distribution.as_deref(), &info.version.number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted() {
        for (d, n) in [
            (None, "8.0.0"),
            (None, "8.19.3"),
            (None, "9.1.0"),
            (None, "9.0.0-SNAPSHOT"),
            (Some("opensearch"), "2.19.1"),
            (Some("opensearch"), "3.8.0"),
            (Some("OpenSearch"), "3.0.0-alpha1"),
        ] {
            let v = check_version(d, n).unwrap_or_else(|e| panic!("{d:?} {n}: {e}"));
            assert_eq!(v.number, n);
        }
        let v = check_version(None, "8.15.2").unwrap();
        assert_eq!((v.distribution, v.major, v.minor, v.patch), (Distribution::Elasticsearch, 8, 15, 2));
    }

    #[test]
    fn refused_with_clear_messages() {
        let e = check_version(None, "7.17.0").unwrap_err().to_string();
        assert_eq!(e, "Elasticsearch 7.17.0 is not supported: Ferry needs Elasticsearch 8.x or 9.x, or OpenSearch 2.x or 3.x");
        let e = check_version(Some("opensearch"), "1.3.19").unwrap_err().to_string();
        assert!(e.starts_with("OpenSearch 1.3.19 is not supported"), "{e}");
        assert!(check_version(None, "10.0.0").is_err());
        assert!(check_version(Some("opensearch"), "4.0.0").is_err());
        let e = check_version(Some("zincsearch"), "0.4").unwrap_err().to_string();
        assert!(e.contains("\"zincsearch\""), "{e}");
        let e = check_version(None, "banana").unwrap_err().to_string();
        assert!(e.contains("not a version number"), "{e}");
    }
}
