//! Creating `.elastic-connectors` and `.elastic-connectors-sync-jobs` where
//! they do not exist yet — as Elastic's service does on each distribution.
//!
//! On Elasticsearch these names are aliases of system indices
//! (`.elastic-connectors-v1`, `.elastic-connectors-sync-jobs-v1`) whose
//! mappings and alias come from Elasticsearch's own descriptors. We never
//! create the alias names as plain indices with a mapping of ours there:
//! like Elastic's Python service (`ESManagementClient.ensure_exists` on
//! `CONCRETE_CONNECTORS_INDEX` / `CONCRETE_JOBS_INDEX`) we create the
//! concrete `-v1` index with an empty body and let the server apply its
//! mapping and alias. Ferry queries only fields Elastic's mapping indexes
//! (`connector.id`, `status`, `job_type`, `last_seen`, `created_at`,
//! `index_name`, `deleted`); its own `ferry.*` bookkeeping is stored, never
//! queried.
//!
//! On OpenSearch (no Connector API) they are ordinary indices that we
//! create, with mappings that make the fields we query sortable and
//! filterable and keep free-form objects (configuration values of every
//! type) out of the mapping.
//!
//! Ferry's own indices (`.ferry-agents`, `.ferry-enrollment-tokens`,
//! `.ferry-revoked-agents`) are created *hidden* on both distributions:
//! Elasticsearch 8 deprecates dot-prefixed names for anything but hidden and
//! system indices, and hidden ones stay out of `*` searches and Kibana lists.
//! Indices an earlier Ferry created visible keep working (Ferry addresses
//! them by name); `PUT <index>/_settings {"index.hidden": true}` hides them.

use serde_json::json;

use crate::elasticsearch::{Distribution, EsClient};
use crate::error::Result;
use crate::model::{CONNECTORS_INDEX, SYNC_JOBS_INDEX};

fn connectors_mapping() -> serde_json::Value {
    json!({
        "mappings": {
            "dynamic": false,
            "properties": {
                "name": {"type": "keyword"},
                "index_name": {"type": "keyword"},
                "service_type": {"type": "keyword"},
                "status": {"type": "keyword"},
                "deleted": {"type": "boolean"},
                "last_seen": {"type": "date"},
                "configuration": {"type": "object", "enabled": false},
                "filtering": {"type": "object", "enabled": false}
            }
        }
    })
}

fn jobs_mapping() -> serde_json::Value {
    json!({
        "mappings": {
            "dynamic": false,
            "properties": {
                "connector": {"properties": {
                    "id": {"type": "keyword"},
                    "configuration": {"type": "object", "enabled": false},
                    "filtering": {"type": "object", "enabled": false}
                }},
                "status": {"type": "keyword"},
                "job_type": {"type": "keyword"},
                "trigger_method": {"type": "keyword"},
                "worker_hostname": {"type": "keyword"},
                "created_at": {"type": "date"},
                "started_at": {"type": "date"},
                "last_seen": {"type": "date"},
                "completed_at": {"type": "date"},
                "metadata": {"type": "object", "enabled": false},
                "ferry": {"properties": {
                    "agent_id": {"type": "keyword"},
                    "lease_id": {"type": "keyword"},
                    "control_plane": {"type": "keyword"}
                }}
            }
        }
    })
}

/// Live agent sessions (the fleet view across replicas).
pub const AGENTS_INDEX: &str = ".ferry-agents";

/// Settings of Ferry's own indices: hidden, so that a dot-prefixed name is
/// allowed without Elasticsearch 8's deprecation warning ("index names
/// starting with a dot are reserved for hidden indices and system indices")
/// and never refused by a later major; kept out of `*` searches and Kibana's
/// index lists. `0-1` replicas keep a single-node cluster green, as system
/// indices do.
fn ferry_index_settings() -> serde_json::Value {
    json!({"index": {"hidden": true, "auto_expand_replicas": "0-1"}})
}

/// Ferry's own state indices (fleet sessions, enrollment), the same on both
/// distributions: hidden indices with a mapping of the fields Ferry queries.
fn ferry_indices() -> [(&'static str, serde_json::Value); 3] {
    let index = |properties: serde_json::Value| json!({"settings": ferry_index_settings(), "mappings": {"dynamic": false, "properties": properties}});
    [
        (
            AGENTS_INDEX,
            index(json!({
                "agent_id": {"type": "keyword"},
                "session_id": {"type": "keyword"},
                "control_plane": {"type": "keyword"},
                "connectors": {"type": "keyword"},
                "expires_at_ms": {"type": "long"}
            })),
        ),
        (
            crate::enrollment::TOKENS_INDEX,
            index(json!({
                "agent_id": {"type": "keyword"},
                "created_at_ms": {"type": "long"},
                "expires_at_ms": {"type": "long"},
                "used_at_ms": {"type": "long"},
                "revoked": {"type": "boolean"}
            })),
        ),
        (
            crate::enrollment::REVOKED_INDEX,
            index(json!({
                "agent_id": {"type": "keyword"},
                "revoked_at_ms": {"type": "long"}
            })),
        ),
    ]
}

/// What to create for a state index (`alias`) that does not exist yet.
#[derive(Debug, PartialEq)]
pub enum Creation {
    /// Elasticsearch: the concrete system index, empty body.
    Concrete(&'static str),
    /// OpenSearch: the index itself, with Ferry's mapping.
    Plain(&'static str, serde_json::Value),
}

/// The creation plan for both state indices on `distribution`.
pub fn plan(distribution: Distribution) -> Vec<(&'static str, Creation)> {
    match distribution {
        Distribution::Elasticsearch => vec![
            (CONNECTORS_INDEX, Creation::Concrete(".elastic-connectors-v1")),
            (SYNC_JOBS_INDEX, Creation::Concrete(".elastic-connectors-sync-jobs-v1")),
        ],
        Distribution::OpenSearch => vec![
            (CONNECTORS_INDEX, Creation::Plain(CONNECTORS_INDEX, connectors_mapping())),
            (SYNC_JOBS_INDEX, Creation::Plain(SYNC_JOBS_INDEX, jobs_mapping())),
        ],
    }
}

/// Makes sure the state indices exist: the two connector indices (as
/// [`plan`] says) and Ferry's own hidden indices ([`ferry_indices`], the same
/// on both distributions).
pub async fn ensure_state_indices(es: &EsClient, distribution: Distribution) -> Result<()> {
    for (index, body) in ferry_indices() {
        if !es.index_exists(index).await? {
            es.create_index(index, &body).await?;
            tracing::info!(index, "created state index");
        }
    }
    for (name, creation) in plan(distribution) {
        if es.index_exists(name).await? {
            continue;
        }
        match creation {
            Creation::Concrete(index) => {
                es.create_index(index, &json!({})).await?;
                tracing::info!(
                    index,
                    alias = name,
                    "created state index (Elasticsearch applies its mapping and alias)"
                );
            }
            Creation::Plain(index, body) => {
                es.create_index(index, &body).await?;
                tracing::info!(index, "created state index");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elasticsearch_gets_elastics_concrete_indices_without_our_mapping() {
        let p = plan(Distribution::Elasticsearch);
        assert_eq!(p[0], (CONNECTORS_INDEX, Creation::Concrete(".elastic-connectors-v1")));
        assert_eq!(p[1], (SYNC_JOBS_INDEX, Creation::Concrete(".elastic-connectors-sync-jobs-v1")));
    }

    #[test]
    fn ferrys_own_indices_are_hidden() {
        for (name, body) in ferry_indices() {
            assert!(name.starts_with(".ferry-"), "{name}");
            assert_eq!(body["settings"]["index"]["hidden"], true, "{name}");
        }
    }

    #[test]
    fn opensearch_gets_plain_indices_with_ferrys_mapping() {
        let p = plan(Distribution::OpenSearch);
        assert!(matches!(&p[0].1, Creation::Plain(CONNECTORS_INDEX, m) if m["mappings"]["dynamic"] == false));
        assert!(matches!(&p[1].1, Creation::Plain(SYNC_JOBS_INDEX, _)));
    }
}
