//! The connector document and its status machine.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{JobStatus, JobType, Timestamp};

/// `status` of a connector. Moves only along the Connector Protocol's
/// allowed transitions ([`ConnectorStatus::can_move_to`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ConnectorStatus {
    #[default]
    Created,
    NeedsConfiguration,
    Configured,
    Connected,
    Error,
}

impl ConnectorStatus {
    pub fn can_move_to(self, to: ConnectorStatus) -> bool {
        use ConnectorStatus::*;
        self == to
            || matches!(
                (self, to),
                (Created, NeedsConfiguration | Error)
                    | (NeedsConfiguration, Configured | Error)
                    | (Configured, NeedsConfiguration | Connected | Error)
                    | (Connected, Configured | Error)
                    | (Error, Connected | Configured)
            )
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectorStatus::Created => "created",
            ConnectorStatus::NeedsConfiguration => "needs_configuration",
            ConnectorStatus::Configured => "configured",
            ConnectorStatus::Connected => "connected",
            ConnectorStatus::Error => "error",
        }
    }
}

/// One configuration entry: schema written by the serving agent, `value`
/// by the user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ConfigEntry {
    pub label: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub display: String,
    pub sensitive: bool,
    pub required: bool,
    pub order: i32,
    pub tooltip: Option<String>,
    pub options: Vec<Value>,
    pub depends_on: Vec<Value>,
    pub validations: Vec<Value>,
    pub ui_restrictions: Vec<String>,
    pub value: Value,
    pub default_value: Value,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

impl ConfigEntry {
    /// The value in force: `value`, or `default_value` when the value is
    /// empty and the field is optional.
    pub fn effective_value(&self) -> Option<&Value> {
        if !is_empty_value(&self.value) {
            Some(&self.value)
        } else if !self.required && !self.default_value.is_null() {
            Some(&self.default_value)
        } else {
            None
        }
    }
}

pub fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// What a source supports, as the connector's `features` says it to Kibana
/// (which shows sync-rule editors and job types from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    pub basic_rules: bool,
    pub advanced_rules: bool,
    pub incremental_sync: bool,
    pub document_level_security: bool,
}

impl Features {
    pub fn from_capabilities(c: &ferry_sdk::proto::SourceCapabilities) -> Self {
        use ferry_sdk::proto::JobType;
        let has = |t: JobType| c.job_types.contains(&(t as i32));
        Features {
            basic_rules: c.basic_rules,
            advanced_rules: c.advanced_rules,
            incremental_sync: has(JobType::Incremental),
            document_level_security: has(JobType::AccessControl),
        }
    }

    /// Writes these into a connector's `features`, keeping keys Ferry does
    /// not manage (Elastic's service likewise rewrites `features` from the
    /// source when they differ, at every start). Idempotent.
    pub fn write_into(&self, features: &mut Value) {
        if !features.is_object() {
            *features = serde_json::json!({});
        }
        let set = |v: &mut Value, path: &[&str], on: bool| {
            let mut cur = v;
            for k in path {
                if !cur.get(*k).is_some_and(Value::is_object) {
                    cur[*k] = serde_json::json!({});
                }
                cur = &mut cur[*k];
            }
            cur["enabled"] = Value::Bool(on);
        };
        set(features, &["sync_rules", "basic"], self.basic_rules);
        set(features, &["sync_rules", "advanced"], self.advanced_rules);
        set(features, &["incremental_sync"], self.incremental_sync);
        set(features, &["document_level_security"], self.document_level_security);
    }
}

/// Ferry's bookkeeping on a connector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ConnectorFerry {
    /// Hash of the configuration values an agent last validated
    /// successfully; a change of values means a new check.
    pub validated_revision: Option<String>,
    /// Agent ids allowed to serve the connector; empty = unbound (see
    /// `agents::authz`).
    pub allowed_agents: Vec<String>,
    /// Agents refused for this connector, newest last (at most
    /// `agents::authz::MAX_REFUSED_KEPT`).
    pub refused_agents: Vec<RefusedAgent>,
    /// The job holding the connector's run slot (`jobs::slot`).
    pub running_job: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub running_job_since: Option<Timestamp>,
}

/// An agent that offered a connector it may not serve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct RefusedAgent {
    pub agent_id: String,
    pub reason: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ConnectorDoc {
    pub name: Option<String>,
    pub description: Option<String>,
    pub index_name: Option<String>,
    pub service_type: Option<String>,
    pub language: Option<String>,
    pub is_native: bool,
    pub api_key_id: Option<String>,
    pub api_key_secret_id: Option<String>,
    pub status: ConnectorStatus,
    pub error: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_seen: Option<Timestamp>,
    pub configuration: BTreeMap<String, ConfigEntry>,
    pub custom_scheduling: Value,
    pub filtering: Value,
    pub scheduling: Value,
    pub pipeline: Value,
    pub features: Value,
    pub sync_cursor: Value,
    pub last_sync_status: Option<JobStatus>,
    pub last_sync_error: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_synced: Option<Timestamp>,
    pub last_indexed_document_count: Option<i64>,
    pub last_deleted_document_count: Option<i64>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_sync_scheduled_at: Option<Timestamp>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_incremental_sync_scheduled_at: Option<Timestamp>,
    /// Access-control syncs keep their own bookkeeping, as in Elastic's
    /// `Connector.sync_starts` / `sync_done`.
    pub last_access_control_sync_status: Option<JobStatus>,
    pub last_access_control_sync_error: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_access_control_sync_scheduled_at: Option<Timestamp>,
    pub deleted: bool,
    pub ferry: ConnectorFerry,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

impl ConnectorDoc {
    /// A new connector as Elastic's Connector API creates one.
    pub fn new(
        name: String,
        description: String,
        index_name: String,
        service_type: String,
        language: String,
    ) -> Self {
        let opt = |s: String| (!s.is_empty()).then_some(s);
        ConnectorDoc {
            name: Some(name),
            description: opt(description),
            index_name: opt(index_name),
            service_type: opt(service_type),
            language: opt(language),
            status: ConnectorStatus::Created,
            filtering: serde_json::json!([{
                "domain": "DEFAULT",
                "active": {"rules": [default_rule()], "advanced_snippet": {"value": {}}, "validation": {"state": "valid", "errors": []}},
                "draft": {"rules": [default_rule()], "advanced_snippet": {"value": {}}, "validation": {"state": "valid", "errors": []}}
            }]),
            scheduling: serde_json::json!({
                "full": {"enabled": false, "interval": "0 0 0 * * ?"},
                "incremental": {"enabled": false, "interval": "0 0 0 * * ?"},
                "access_control": {"enabled": false, "interval": "0 0 0 * * ?"}
            }),
            // Elastic's defaults: Python `PIPELINE_DEFAULT`, Kibana's
            // `DEFAULT_PIPELINE_VALUES`.
            pipeline: serde_json::json!({
                "name": "search-default-ingestion",
                "extract_binary_content": true,
                "reduce_whitespace": true,
                "run_ml_inference": true
            }),
            features: serde_json::json!({
                "sync_rules": {"basic": {"enabled": true}, "advanced": {"enabled": true}},
                "incremental_sync": {"enabled": false},
                "document_level_security": {"enabled": false}
            }),
            custom_scheduling: serde_json::json!({}),
            ..Default::default()
        }
    }

    /// A sync of `job_type` was claimed: `last_sync_status` (or
    /// `last_access_control_sync_status`) becomes `in_progress` with its
    /// error cleared, as Elastic's `Connector.sync_starts` writes it (Elastic
    /// uses it as a cross-instance lock; Kibana shows it).
    pub fn sync_started(&mut self, job_type: JobType) {
        match job_type {
            JobType::AccessControl => {
                self.last_access_control_sync_status = Some(JobStatus::InProgress);
                self.last_access_control_sync_error = None;
            }
            JobType::Full | JobType::Incremental => {
                self.last_sync_status = Some(JobStatus::InProgress);
                self.last_sync_error = None;
            }
        }
    }

    /// A sync of `job_type` ended with `status` (terminal or suspended), as
    /// Elastic's `Connector.sync_done` writes it: `last_synced`, the
    /// per-type last status and error, the counts, and the connector's own
    /// `status`: `error` with `error` set when the job failed, `connected`
    /// with `error` cleared otherwise (moves the protocol forbids are not
    /// made, e.g. a connector still `needs_configuration` stays so).
    pub fn sync_ended(
        &mut self,
        job_type: JobType,
        status: JobStatus,
        error: Option<&str>,
        indexed: i64,
        deleted: i64,
        at: Timestamp,
    ) {
        let error = match (status, error) {
            (JobStatus::Error, None) => Some("unknown error".to_owned()),
            (_, e) => e.map(str::to_owned),
        };
        match job_type {
            JobType::AccessControl => {
                self.last_access_control_sync_status = Some(status);
                self.last_access_control_sync_error = error.clone();
            }
            JobType::Full | JobType::Incremental => {
                self.last_sync_status = Some(status);
                self.last_sync_error = error.clone();
            }
        }
        self.last_synced = Some(at);
        self.last_indexed_document_count = Some(indexed);
        self.last_deleted_document_count = Some(deleted);
        if status == JobStatus::Error {
            if self.move_to(ConnectorStatus::Error) {
                self.error = error;
            }
        } else if self.move_to(ConnectorStatus::Connected) {
            self.error = None;
        }
    }

    /// Moves to `to` if the protocol allows it; otherwise leaves the status.
    pub fn move_to(&mut self, to: ConnectorStatus) -> bool {
        if self.status.can_move_to(to) {
            self.status = to;
            true
        } else {
            false
        }
    }

    /// Effective configuration values, key → value.
    pub fn config_values(&self) -> BTreeMap<String, Value> {
        self.configuration
            .iter()
            .filter_map(|(k, e)| e.effective_value().map(|v| (k.clone(), v.clone())))
            .collect()
    }

    /// Required keys that have no value yet.
    pub fn missing_required(&self) -> Vec<String> {
        self.configuration
            .iter()
            .filter(|(_, e)| e.required && e.effective_value().is_none())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// A stable hash of the configuration values in force.
    pub fn config_revision(&self) -> String {
        use md5::{Digest, Md5};
        let canonical = serde_json::to_vec(&self.config_values()).unwrap_or_default();
        hex::encode(Md5::digest(&canonical))
    }
}

fn default_rule() -> Value {
    let now = time::OffsetDateTime::UNIX_EPOCH
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    serde_json::json!({
        "id": "DEFAULT", "policy": "include", "field": "_", "rule": "regex", "value": ".*",
        "order": 0, "created_at": now, "updated_at": now
    })
}

#[cfg(test)]
mod tests {
    use super::ConnectorStatus::*;
    use super::*;

    #[test]
    fn only_protocol_moves_are_allowed() {
        assert!(Created.can_move_to(NeedsConfiguration));
        assert!(NeedsConfiguration.can_move_to(Configured));
        assert!(Configured.can_move_to(Connected));
        assert!(Connected.can_move_to(Error));
        assert!(Error.can_move_to(Connected));
        assert!(!Created.can_move_to(Connected));
        assert!(!NeedsConfiguration.can_move_to(Connected));
        assert!(!Error.can_move_to(NeedsConfiguration));
    }

    #[test]
    fn document_round_trips_and_keeps_unknown_fields() {
        let raw = serde_json::json!({
            "name": "Music", "index_name": "music", "service_type": "postgresql", "status": "needs_configuration",
            "configuration": {"host": {"label": "Host", "type": "str", "required": true, "value": "db", "kibana_only": 1}},
            "some_future_field": {"a": 1}
        });
        let doc: ConnectorDoc = serde_json::from_value(raw).unwrap();
        assert_eq!(doc.status, NeedsConfiguration);
        assert_eq!(doc.config_values()["host"], "db");
        let back = serde_json::to_value(&doc).unwrap();
        assert_eq!(back["some_future_field"]["a"], 1);
        assert_eq!(back["configuration"]["host"]["kibana_only"], 1);
    }

    #[test]
    fn a_sync_marks_the_connector_as_elastics_service_does() {
        let t = crate::model::now();
        let mut c = ConnectorDoc { status: Connected, ..Default::default() };
        c.sync_started(JobType::Full);
        assert_eq!(c.last_sync_status, Some(JobStatus::InProgress));
        assert_eq!(c.last_access_control_sync_status, None);
        c.sync_ended(JobType::Full, JobStatus::Error, Some("source gone"), 3, 0, t);
        assert_eq!((c.status, c.error.as_deref()), (Error, Some("source gone")));
        assert_eq!(c.last_sync_status, Some(JobStatus::Error));
        assert_eq!(c.last_sync_error.as_deref(), Some("source gone"));
        assert_eq!((c.last_indexed_document_count, c.last_synced), (Some(3), Some(t)));
        c.sync_started(JobType::Full);
        assert_eq!((c.last_sync_status, c.last_sync_error.as_deref()), (Some(JobStatus::InProgress), None));
        c.sync_ended(JobType::Full, JobStatus::Completed, None, 5, 1, t);
        assert_eq!((c.status, c.error.as_deref()), (Connected, None));
        assert_eq!(c.last_deleted_document_count, Some(1));
        // A failure without a message still says something, as Elastic's "unknown error".
        c.sync_ended(JobType::Full, JobStatus::Error, None, 0, 0, t);
        assert_eq!(c.error.as_deref(), Some("unknown error"));
    }

    #[test]
    fn access_control_syncs_keep_their_own_fields() {
        let t = crate::model::now();
        let mut c = ConnectorDoc {
            status: Configured,
            last_sync_status: Some(JobStatus::Completed),
            ..Default::default()
        };
        c.sync_started(JobType::AccessControl);
        assert_eq!(c.last_access_control_sync_status, Some(JobStatus::InProgress));
        assert_eq!(c.last_sync_status, Some(JobStatus::Completed));
        c.sync_ended(JobType::AccessControl, JobStatus::Canceled, None, 0, 0, t);
        assert_eq!(c.last_access_control_sync_status, Some(JobStatus::Canceled));
        assert_eq!(c.status, Connected);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["last_access_control_sync_status"], "canceled");
        assert!(v.as_object().unwrap().contains_key("sync_cursor"));
        assert!(v.as_object().unwrap().contains_key("last_access_control_sync_scheduled_at"));
    }

    #[test]
    fn features_follow_the_agents_capabilities_and_keep_other_keys() {
        use ferry_sdk::proto::{JobType as P, SourceCapabilities};
        let caps = SourceCapabilities {
            job_types: vec![P::Full as i32, P::Incremental as i32],
            basic_rules: true,
            advanced_rules: false,
        };
        let mut v = serde_json::json!({"native_connector_api_keys": {"enabled": true}, "sync_rules": {"basic": {"enabled": false}}});
        Features::from_capabilities(&caps).write_into(&mut v);
        assert_eq!(v["sync_rules"]["basic"]["enabled"], true);
        assert_eq!(v["sync_rules"]["advanced"]["enabled"], false);
        assert_eq!(v["incremental_sync"]["enabled"], true);
        assert_eq!(v["document_level_security"]["enabled"], false);
        assert_eq!(v["native_connector_api_keys"]["enabled"], true);
        let before = v.clone();
        Features::from_capabilities(&caps).write_into(&mut v);
        assert_eq!(v, before);
    }
}
