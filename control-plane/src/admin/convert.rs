//! Domain documents → wire types for the admin API, with redaction:
//! sensitive configuration values never leave the control plane.

use std::collections::BTreeMap;

use ferry_sdk::config_schema::{json_to_struct, json_to_value, value_to_json, REDACTED};
use ferry_sdk::proto;

use crate::model::{
    to_proto_ts, ConfigEntry, ConnectorDoc, ConnectorStatus, JobStatus, JobType, SyncJobDoc, TriggerMethod,
};
use crate::store::Versioned;

fn opt_value(v: &serde_json::Value) -> Option<prost_types::Value> {
    (!v.is_null()).then(|| json_to_value(v))
}

/// Schema entry from an agent's Hello.
pub fn config_entry_from_proto(f: &proto::ConfigField) -> ConfigEntry {
    ConfigEntry {
        label: f.label.clone(),
        kind: f.r#type.clone(),
        display: f.display.clone(),
        sensitive: f.sensitive,
        required: f.required,
        order: f.order,
        tooltip: (!f.tooltip.is_empty()).then(|| f.tooltip.clone()),
        options: f
            .options
            .iter()
            .map(|o| serde_json::json!({"label": o.label, "value": o.value.as_ref().map(value_to_json)}))
            .collect(),
        depends_on: f
            .depends_on
            .iter()
            .map(|d| serde_json::json!({"field": d.field, "value": d.value.as_ref().map(value_to_json)}))
            .collect(),
        validations: f
            .validations
            .iter()
            .map(|v| serde_json::json!({"type": v.r#type, "constraint": v.constraint.as_ref().map(value_to_json)}))
            .collect(),
        ui_restrictions: f.ui_restrictions.clone(),
        value: serde_json::Value::Null,
        default_value: f.default_value.as_ref().map(value_to_json).unwrap_or(serde_json::Value::Null),
        extra: Default::default(),
    }
}

pub fn config_field(e: &ConfigEntry) -> proto::ConfigField {
    let value = if e.sensitive && !crate::model::connector::is_empty_value(&e.value) {
        serde_json::Value::String(REDACTED.into())
    } else {
        e.value.clone()
    };
    let get = |v: &serde_json::Value, k: &str| v.get(k).map(json_to_value);
    proto::ConfigField {
        label: e.label.clone(),
        r#type: e.kind.clone(),
        display: e.display.clone(),
        sensitive: e.sensitive,
        required: e.required,
        order: e.order,
        tooltip: e.tooltip.clone().unwrap_or_default(),
        options: e
            .options
            .iter()
            .map(|o| proto::ConfigOption {
                label: o.get("label").and_then(|l| l.as_str()).unwrap_or_default().to_owned(),
                value: get(o, "value"),
            })
            .collect(),
        depends_on: e
            .depends_on
            .iter()
            .map(|d| proto::ConfigDependency {
                field: d.get("field").and_then(|l| l.as_str()).unwrap_or_default().to_owned(),
                value: get(d, "value"),
            })
            .collect(),
        validations: e
            .validations
            .iter()
            .map(|v| proto::ConfigValidation {
                r#type: v.get("type").and_then(|l| l.as_str()).unwrap_or_default().to_owned(),
                constraint: get(v, "constraint"),
            })
            .collect(),
        ui_restrictions: e.ui_restrictions.clone(),
        value: opt_value(&value),
        default_value: opt_value(&e.default_value),
    }
}

fn configuration(c: &BTreeMap<String, ConfigEntry>) -> std::collections::HashMap<String, proto::ConfigField> {
    c.iter().map(|(k, e)| (k.clone(), config_field(e))).collect()
}

pub fn connector_status(s: ConnectorStatus) -> proto::ConnectorStatus {
    match s {
        ConnectorStatus::Created => proto::ConnectorStatus::Created,
        ConnectorStatus::NeedsConfiguration => proto::ConnectorStatus::NeedsConfiguration,
        ConnectorStatus::Configured => proto::ConnectorStatus::Configured,
        ConnectorStatus::Connected => proto::ConnectorStatus::Connected,
        ConnectorStatus::Error => proto::ConnectorStatus::Error,
    }
}

pub fn sync_status(s: JobStatus) -> proto::SyncStatus {
    match s {
        JobStatus::Pending => proto::SyncStatus::Pending,
        JobStatus::InProgress => proto::SyncStatus::InProgress,
        JobStatus::Canceling => proto::SyncStatus::Canceling,
        JobStatus::Canceled => proto::SyncStatus::Canceled,
        JobStatus::Suspended => proto::SyncStatus::Suspended,
        JobStatus::Completed => proto::SyncStatus::Completed,
        JobStatus::Error => proto::SyncStatus::Error,
    }
}

pub fn sync_status_from_proto(s: i32) -> Option<JobStatus> {
    Some(match proto::SyncStatus::try_from(s).ok()? {
        proto::SyncStatus::Unspecified => return None,
        proto::SyncStatus::Pending => JobStatus::Pending,
        proto::SyncStatus::InProgress => JobStatus::InProgress,
        proto::SyncStatus::Canceling => JobStatus::Canceling,
        proto::SyncStatus::Canceled => JobStatus::Canceled,
        proto::SyncStatus::Suspended => JobStatus::Suspended,
        proto::SyncStatus::Completed => JobStatus::Completed,
        proto::SyncStatus::Error => JobStatus::Error,
    })
}

pub fn job_type(t: JobType) -> proto::JobType {
    match t {
        JobType::Full => proto::JobType::Full,
        JobType::Incremental => proto::JobType::Incremental,
        JobType::AccessControl => proto::JobType::AccessControl,
    }
}

pub fn connector(v: &Versioned<ConnectorDoc>) -> proto::Connector {
    let c = &v.doc;
    proto::Connector {
        id: v.id.clone(),
        name: c.name.clone().unwrap_or_default(),
        description: c.description.clone().unwrap_or_default(),
        index_name: c.index_name.clone().unwrap_or_default(),
        service_type: c.service_type.clone().unwrap_or_default(),
        language: c.language.clone().unwrap_or_default(),
        is_native: c.is_native,
        status: connector_status(c.status) as i32,
        error: c.error.clone().unwrap_or_default(),
        last_seen: to_proto_ts(&c.last_seen),
        configuration: configuration(&c.configuration),
        last_sync_status: c.last_sync_status.map(|s| sync_status(s) as i32).unwrap_or_default(),
        last_sync_error: c.last_sync_error.clone().unwrap_or_default(),
        last_synced: to_proto_ts(&c.last_synced),
        last_indexed_document_count: c.last_indexed_document_count.unwrap_or_default(),
        last_deleted_document_count: c.last_deleted_document_count.unwrap_or_default(),
        sync_cursor: c.sync_cursor.as_object().map(json_to_struct),
        deleted: c.deleted,
        api_key_id: c.api_key_id.clone().unwrap_or_default(),
        scheduling: Some(super::settings::scheduling_to_proto(&c.scheduling)),
        filtering: super::settings::filtering_to_proto(&c.filtering),
        pipeline: Some(super::settings::pipeline_to_proto(&c.pipeline)),
        last_sync_scheduled_at: to_proto_ts(&c.last_sync_scheduled_at),
        last_incremental_sync_scheduled_at: to_proto_ts(&c.last_incremental_sync_scheduled_at),
        allowed_agents: c.ferry.allowed_agents.clone(),
        refused_agents: c
            .ferry
            .refused_agents
            .iter()
            .map(|r| proto::RefusedAgent {
                agent_id: r.agent_id.clone(),
                reason: r.reason.clone(),
                at: to_proto_ts(&r.at),
            })
            .collect(),
    }
}

pub fn sync_job(v: &Versioned<SyncJobDoc>) -> proto::SyncJob {
    sync_job_from(&v.id, &v.doc)
}

/// Everything (`SYNC_JOB_VIEW_FULL`).
pub fn sync_job_from(id: &str, j: &SyncJobDoc) -> proto::SyncJob {
    sync_job_view(id, j, true)
}

/// `full: false` is `SYNC_JOB_VIEW_SUMMARY`: the connector without its
/// configuration, filtering and pipeline.
pub fn sync_job_view(id: &str, j: &SyncJobDoc, full: bool) -> proto::SyncJob {
    let mut metadata = j.metadata.clone();
    // Ferry's own progress facts, for operators reading the job.
    metadata.insert("attempts".into(), j.ferry.attempts.into());
    metadata.insert("documents_per_attempt".into(), serde_json::json!(j.ferry.documents_per_attempt));
    metadata.insert("docs_per_second".into(), serde_json::json!(j.ferry.docs_per_second));
    metadata.insert("rejected_document_count".into(), j.ferry.rejected_document_count.into());
    if j.job_type == JobType::Incremental {
        metadata.insert("continuous".into(), j.ferry.continuous.into());
    }
    if !j.ferry.rejections.is_empty() {
        metadata.insert("rejections".into(), serde_json::Value::Array(j.ferry.rejections.clone()));
    }
    proto::SyncJob {
        id: id.to_owned(),
        connector_id: j.connector.id.clone(),
        job_type: job_type(j.job_type) as i32,
        trigger_method: match j.trigger_method {
            TriggerMethod::OnDemand => proto::TriggerMethod::OnDemand,
            TriggerMethod::Scheduled => proto::TriggerMethod::Scheduled,
        } as i32,
        status: sync_status(j.status) as i32,
        error: j.error.clone().unwrap_or_default(),
        created_at: to_proto_ts(&j.created_at),
        started_at: to_proto_ts(&j.started_at),
        last_seen: to_proto_ts(&j.last_seen),
        completed_at: to_proto_ts(&j.completed_at),
        cancelation_requested_at: to_proto_ts(&j.cancelation_requested_at),
        canceled_at: to_proto_ts(&j.canceled_at),
        indexed_document_count: j.indexed_document_count,
        indexed_document_volume: j.indexed_document_volume,
        deleted_document_count: j.deleted_document_count,
        total_document_count: j.total_document_count.unwrap_or_default(),
        worker_hostname: j.worker_hostname.clone().unwrap_or_default(),
        metadata: Some(json_to_struct(&metadata)),
        docs_per_second: j.ferry.docs_per_second,
        connector: Some(proto::SyncJobConnector {
            id: j.connector.id.clone(),
            index_name: j.connector.index_name.clone(),
            service_type: j.connector.service_type.clone().unwrap_or_default(),
            language: j.connector.language.clone().unwrap_or_default(),
            configuration: if full { configuration(&j.connector.configuration) } else { Default::default() },
            filtering: if full {
                super::settings::filtering_to_proto(&j.connector.filtering_as_list())
            } else {
                vec![]
            },
            pipeline: full.then(|| super::settings::pipeline_to_proto(&j.connector.pipeline)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_values_are_redacted() {
        let e = ConfigEntry { sensitive: true, value: "hunter2".into(), ..Default::default() };
        let f = config_field(&e);
        assert_eq!(f.value.map(|v| value_to_json(&v)), Some(serde_json::json!(REDACTED)));
        let e = ConfigEntry { sensitive: false, value: "db".into(), ..Default::default() };
        assert_eq!(config_field(&e).value.map(|v| value_to_json(&v)), Some(serde_json::json!("db")));
    }
}
