//! `DocumentSchema` from agents: the typed fields of the documents that follow.
//!
//! Contracts:
//! - Applied before the session's next message is read (the serve loop awaits it), so the
//!   batches that follow are indexed under the fields it added. Bounded by [`SCHEMA_DEADLINE`]:
//!   past it (or on any Elasticsearch error) the job goes on untyped for those fields, with a
//!   warning on the job.
//! - Only an index Ferry created typed (`_meta.ferry.typed`) is changed, and only by adding fields
//!   ([`crate::elasticsearch::mapping::additions`]). A field already mapped with another type is
//!   reported on the job's metadata (`mapping_conflicts`, with the fix), never changed.

use std::sync::Arc;
use std::time::Duration;

use ferry_sdk::{proto, FieldKind, FieldSpec};
use serde_json::{json, Value};

use super::registry::AgentSession;
use crate::app::App;
use crate::elasticsearch::mapping::{additions, TypedIndex};

/// How long one schema may take to apply (one GET and one PUT of the mapping).
pub const SCHEMA_DEADLINE: Duration = Duration::from_secs(30);

/// The fields of a `DocumentSchema` (fields of kinds this control plane does not know are left
/// to dynamic mapping).
pub fn fields_from_proto(s: &proto::DocumentSchema) -> Vec<FieldSpec> {
    s.fields
        .iter()
        .filter_map(|f| {
            FieldKind::from_proto(f).map(|kind| FieldSpec {
                name: f.name.clone(),
                kind,
                array: f.array,
                source_type: f.source_type.clone(),
            })
        })
        .collect()
}

/// Adds the fields to the job's content index when Ferry created it typed.
pub async fn on_schema(app: &Arc<App>, session: &Arc<AgentSession>, s: proto::DocumentSchema) {
    let run = session.jobs.lock().expect("jobs lock").get(&s.job_id).cloned();
    let Some(run) = run.filter(|r| r.lease_id == s.lease_id) else {
        tracing::debug!(job_id = %s.job_id, "schema for a job this session does not hold; ignored");
        return;
    };
    let fields = fields_from_proto(&s);
    let es = &app.stores.es;
    let index = run.index_name.clone();
    let apply = async {
        let mapping = es.get_mapping(&index).await?;
        let Some(typed) = TypedIndex::from_mapping(&mapping) else {
            return Ok::<_, crate::elasticsearch::EsError>((0, Vec::new()));
        };
        let (add, conflicts) = additions(&typed, &fields);
        let added = add.len();
        if !add.is_empty() {
            es.put_mapping(&index, &json!({ "properties": add })).await?;
        }
        Ok((added, conflicts))
    };
    let warn = |msg: String| {
        tracing::warn!(job_id = %run.job_id, index = %index, "{msg}");
        let mut facts = serde_json::Map::new();
        facts.insert("mapping_warning".to_owned(), Value::String(msg));
        run.merge_progress(facts);
    };
    match tokio::time::timeout(SCHEMA_DEADLINE, apply).await {
        Err(_) => warn(format!(
            "mapping the fields of {} took over {}s; they are left to dynamic mapping",
            s.source,
            SCHEMA_DEADLINE.as_secs()
        )),
        Ok(Err(e)) => {
            warn(format!("mapping the fields of {} failed ({e}); they are left to dynamic mapping", s.source))
        }
        Ok(Ok((added, conflicts))) => {
            tracing::debug!(job_id = %run.job_id, index = %index, source = %s.source, added, "typed fields mapped");
            if !conflicts.is_empty() {
                let mut all = run
                    .progress
                    .lock()
                    .expect("progress lock")
                    .get("mapping_conflicts")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for c in &conflicts {
                    tracing::warn!(job_id = %run.job_id, index = %index, "{c}");
                    all.push(Value::String(c.to_string()));
                }
                all.truncate(20);
                let mut facts = serde_json::Map::new();
                facts.insert("mapping_conflicts".to_owned(), Value::Array(all));
                run.merge_progress(facts);
            }
        }
    }
}
