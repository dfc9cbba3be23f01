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

fn enrollment_mappings() -> [(&'static str, serde_json::Value); 2] {
    [
        (
            crate::enrollment::TOKENS_INDEX,
            json!({"mappings": {"dynamic": false, "properties": {
                "agent_id": {"type": "keyword"},
                "created_at_ms": {"type": "long"},
                "expires_at_ms": {"type": "long"},
                "used_at_ms": {"type": "long"},
                "revoked": {"type": "boolean"}
            }}}),
        ),
        (
            crate::enrollment::REVOKED_INDEX,
            json!({"mappings": {"dynamic": false, "properties": {
                "agent_id": {"type": "keyword"},
                "revoked_at_ms": {"type": "long"}
            }}}),
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
/// [`plan`] says) and Ferry's own enrollment indices (ordinary indices on
/// both distributions).
pub async fn ensure_state_indices(es: &EsClient, distribution: Distribution) -> Result<()> {
    for (index, body) in enrollment_mappings() {
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
    fn opensearch_gets_plain_indices_with_ferrys_mapping() {
        let p = plan(Distribution::OpenSearch);
        assert!(matches!(&p[0].1, Creation::Plain(CONNECTORS_INDEX, m) if m["mappings"]["dynamic"] == false));
        assert!(matches!(&p[1].1, Creation::Plain(SYNC_JOBS_INDEX, _)));
    }
}
