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
