//! The sync job document.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ConfigEntry, Timestamp};
pub use crate::jobs::state::JobStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum JobType {
    #[default]
    Full,
    Incremental,
    AccessControl,
}

impl JobType {
    pub fn as_str(self) -> &'static str {
        match self {
            JobType::Full => "full",
            JobType::Incremental => "incremental",
            JobType::AccessControl => "access_control",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TriggerMethod {
    #[default]
    OnDemand,
    Scheduled,
}

/// The connector as it was when the job was created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct JobConnector {
    pub id: String,
    pub configuration: std::collections::BTreeMap<String, ConfigEntry>,
    pub filtering: Value,
    pub index_name: String,
    pub language: Option<String>,
    pub pipeline: Value,
    pub service_type: Option<String>,
    pub sync_cursor: Value,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

impl JobConnector {
    /// The job's active filter `{rules, advanced_snippet, validation}`, read
    /// from either shape a job document may carry: Elastic's (the filter
    /// object itself, written by Elastic's Python service, Elasticsearch's
    /// `POST _connector/_sync_job`, Kibana's Sync button, and Ferry) or the
    /// connector's `[{domain, active, draft}]` list (jobs written by Ferry
    /// before it wrote Elastic's shape). `None` when there is none.
    pub fn active_filter(&self) -> Option<Value> {
        active_filter_of(&self.filtering)
    }

    /// The snapshot's filter as a one-domain list, for the API's
    /// `filtering` (same shape as the connector's).
    pub fn filtering_as_list(&self) -> Value {
        match self.active_filter() {
            Some(f) => serde_json::json!([{"domain": DEFAULT_DOMAIN, "active": f}]),
            None => serde_json::json!([]),
        }
    }
}

const DEFAULT_DOMAIN: &str = "DEFAULT";

fn active_filter_of(filtering: &Value) -> Option<Value> {
    match filtering {
        Value::Array(domains) => domains
            .iter()
            .find(|d| d.get("domain").and_then(Value::as_str) == Some(DEFAULT_DOMAIN))
            .or_else(|| domains.first())
            .and_then(|d| d.get("active"))
            .filter(|a| a.is_object())
            .cloned(),
        Value::Object(o) if o.contains_key("rules") || o.contains_key("advanced_snippet") => {
            Some(filtering.clone())
        }
        _ => None,
    }
}

/// The `connector.filtering` Elastic writes into a new job from the
/// connector's `filtering` list: the DEFAULT domain's `active` filter
/// (Python `Filtering.get_active_filter().transform_filtering()`), or
/// `{"advanced_snippet": {}, "rules": []}` when the connector has none.
pub fn job_filtering(connector_filtering: &Value) -> Value {
    active_filter_of(connector_filtering)
        .filter(|f| f.as_object().is_some_and(|o| !o.is_empty()))
        .unwrap_or_else(|| serde_json::json!({"advanced_snippet": {}, "rules": []}))
}

/// Prefix of the index an access-control job writes (Elastic's
/// `ACCESS_CONTROL_INDEX_PREFIX`).
pub const ACCESS_CONTROL_INDEX_PREFIX: &str = ".search-acl-filter-";

/// The index a job of `job_type` writes, as Elastic records it in the job's
/// `connector.index_name`: content jobs the connector's index,
/// access-control jobs `.search-acl-filter-{index}`.
pub fn job_index_name(job_type: JobType, connector_index: &str) -> String {
    match job_type {
        JobType::AccessControl => format!("{ACCESS_CONTROL_INDEX_PREFIX}{connector_index}"),
        JobType::Full | JobType::Incremental => connector_index.to_owned(),
    }
}

/// Ferry's bookkeeping on a job: who holds it, where to resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct JobFerry {
    /// Fences the current attempt; a new claim makes a new lease.
    pub lease_id: Option<String>,
    /// The agent holding the lease (its certificate identity).
    pub agent_id: Option<String>,
    /// The control plane instance serving that agent.
    pub control_plane: Option<String>,
    /// Stamped on every document this job writes; see
    /// `elasticsearch::index::delete_stale`.
    pub sync_generation: Option<i64>,
    /// Base64 of the agent's opaque checkpoint after the last batch
    /// Elasticsearch acknowledged.
    pub checkpoint: Option<String>,
    /// Attempts so far (1 for a job that never had to resume).
    pub attempts: u32,
    /// Documents read by each attempt, newest last (proof of resume).
    pub documents_per_attempt: Vec<u64>,
    /// Documents Elasticsearch rejected for good.
    pub rejected_document_count: u64,
    /// The first few rejections, with reasons.
    pub rejections: Vec<Value>,
    /// Documents per second over the last stats period.
    pub docs_per_second: f64,
    /// Incremental jobs: stream until canceled (`true`) or apply what is
    /// there and complete (`false`, the scheduler's runs).
    pub continuous: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct SyncJobDoc {
    pub connector: JobConnector,
    pub job_type: JobType,
    pub trigger_method: TriggerMethod,
    pub status: JobStatus,
    pub error: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub created_at: Option<Timestamp>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<Timestamp>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_seen: Option<Timestamp>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub completed_at: Option<Timestamp>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub cancelation_requested_at: Option<Timestamp>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub canceled_at: Option<Timestamp>,
    pub indexed_document_count: i64,
    pub indexed_document_volume: i64,
    pub deleted_document_count: i64,
    pub total_document_count: Option<i64>,
    pub worker_hostname: Option<String>,
    pub metadata: serde_json::Map<String, Value>,
    pub ferry: JobFerry,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

impl SyncJobDoc {
    /// Moves to `to` if the state machine allows it.
    pub fn move_to(&mut self, to: JobStatus) -> bool {
        if self.status.can_move_to(to) {
            self.status = to;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rule(id: &str) -> Value {
        json!({"id": id, "policy": "include", "field": "genre", "rule": "equals", "value": "Rock", "order": 0})
    }

    #[test]
    fn elastic_shaped_job_filtering_is_read() {
        // As Elastic's Python service and Elasticsearch's Connector API write it.
        let job: SyncJobDoc = serde_json::from_value(json!({
            "connector": {"id": "c1", "index_name": "music", "filtering": {
                "rules": [rule("r1")],
                "advanced_snippet": {"value": {}, "created_at": "2024-01-01T00:00:00Z"},
                "validation": {"state": "valid", "errors": []}
            }},
            "status": "pending", "job_type": "full", "trigger_method": "on_demand"
        }))
        .unwrap();
        let f = job.connector.active_filter().unwrap();
        assert_eq!(f["rules"][0]["id"], "r1");
        assert_eq!(job.connector.filtering_as_list()[0]["active"]["rules"][0]["id"], "r1");
    }

    #[test]
    fn list_shaped_job_filtering_is_read() {
        let c = JobConnector {
            filtering: json!([
                {"domain": "OTHER", "active": {"rules": [rule("x")]}},
                {"domain": "DEFAULT", "active": {"rules": [rule("r2")], "advanced_snippet": {}}, "draft": {"rules": []}}
            ]),
            ..Default::default()
        };
        assert_eq!(c.active_filter().unwrap()["rules"][0]["id"], "r2");
    }

    #[test]
    fn no_filtering_reads_as_none_and_jobs_get_elastic_empty_filter() {
        let c = JobConnector::default();
        assert!(c.active_filter().is_none());
        assert_eq!(job_filtering(&Value::Null), json!({"advanced_snippet": {}, "rules": []}));
        assert_eq!(job_filtering(&json!([])), json!({"advanced_snippet": {}, "rules": []}));
    }

    #[test]
    fn access_control_jobs_write_elastics_acl_index() {
        assert_eq!(job_index_name(JobType::Full, "music"), "music");
        assert_eq!(job_index_name(JobType::Incremental, "music"), "music");
        assert_eq!(job_index_name(JobType::AccessControl, "music"), ".search-acl-filter-music");
    }

    #[test]
    fn jobs_get_the_connectors_active_filter() {
        let active = json!({"rules": [rule("r3")], "advanced_snippet": {"value": [{"tables": ["t"], "query": "SELECT 1"}]}, "validation": {"state": "valid", "errors": []}});
        let connector = json!([{"domain": "DEFAULT", "active": active, "draft": {"rules": []}}]);
        assert_eq!(job_filtering(&connector), active);
    }
}
