//! Creating `.elastic-connectors` and `.elastic-connectors-sync-jobs` where
//! they do not exist yet.
//!
//! On Elasticsearch with the Connector API these are system indices behind
//! aliases, created by Elasticsearch itself; we only check they answer. On
//! OpenSearch (no Connector API) they are ordinary indices that we create,
//! with mappings that make the fields we query sortable and filterable and
//! keep free-form objects (configuration values of every type) out of the
//! mapping.

use serde_json::json;

use crate::elasticsearch::EsClient;
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

/// Makes sure both state indices exist.
pub async fn ensure_state_indices(es: &EsClient) -> Result<()> {
    for (index, body) in [(CONNECTORS_INDEX, connectors_mapping()), (SYNC_JOBS_INDEX, jobs_mapping())] {
        if !es.index_exists(index).await? {
            es.create_index(index, &body).await?;
            tracing::info!(index, "created state index");
        }
    }
    Ok(())
}
