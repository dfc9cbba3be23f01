//! Moving jobs through the state machine in Elasticsearch: claim, stats,
//! finish, release (resume later), lease expiry. Every write is a
//! read-modify-write under optimistic concurrency that first checks the
//! job is still held by the lease the caller knows (fencing).

use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use ferry_sdk::proto;

use crate::agents::registry::AgentSession;
use crate::app::App;
use crate::elasticsearch::index as es_index;
use crate::error::{Error, Result};
use crate::jobs::ingest::{JobRun, RunStats};
use crate::jobs::state::JobStatus;
use crate::model::{now, JobType, SyncJobDoc};
use crate::store::Change;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// How long a release waits for in-flight batches before abandoning them
/// (below the shutdown deadline).
pub const RELEASE_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// A job whose agent vanished this many times is failed instead of resumed.
pub const MAX_ATTEMPTS: u32 = 10;

/// Permanent document rejections tolerated before a job fails: more than
/// this many, or more than 10% of the documents processed.
pub const MAX_REJECTED_DOCUMENTS: u64 = 1_000;

/// Claims the pending job for `session` and sends it the assignment.
/// Returns false when the job was not claimable (someone else took it, it
/// is no longer pending, another job of the connector is running).
pub async fn claim_and_assign(app: &App, session: &Arc<AgentSession>, job_id: &str) -> Result<bool> {
    let lease_id = uuid::Uuid::new_v4().to_string();
    let claimed = app
        .stores
        .jobs
        .update(job_id, |job| {
            if !matches!(job.status, JobStatus::Pending | JobStatus::Suspended) {
                return Ok(Change::Keep(false));
            }
            let t = now();
            job.move_to(JobStatus::InProgress);
            job.started_at.get_or_insert(t);
            job.last_seen = Some(t);
            job.worker_hostname = Some(session.agent_id.clone());
            job.error = None;
            job.metadata.remove(crate::jobs::dispatcher::PENDING_REASON);
            job.ferry.lease_id = Some(lease_id.clone());
            job.ferry.agent_id = Some(session.agent_id.clone());
            job.ferry.control_plane = Some(app.instance_id.clone());
            job.ferry.attempts += 1;
            if job.ferry.sync_generation.is_none() {
                let created = job.created_at.unwrap_or(t);
                job.ferry.sync_generation = Some((created.unix_timestamp_nanos() / 1_000_000) as i64);
            }
            Ok(Change::Write(true))
        })
        .await?;
    let Some((job, true)) = claimed else { return Ok(false) };
    let doc = job.doc;
    connector_sync_started(app, &doc.connector.id, doc.job_type).await;
    let index = doc.connector.index_name.clone();
    if let Err(e) = es_index::ensure_index(&app.stores.es, &index).await {
        let msg = format!("cannot prepare index {index:?}: {e}");
        fail_job(app, job_id, &lease_id, &msg).await?;
        return Ok(true);
    }
    let carried = RunStats {
        indexed: doc.indexed_document_count.max(0) as u64,
        rejected: doc.ferry.rejected_document_count,
        bytes: (doc.indexed_document_volume.max(0) as u64) * 1024 * 1024,
        deleted: doc.deleted_document_count.max(0) as u64,
        missing: doc.metadata.get(MISSING_KEY).and_then(|v| v.as_u64()).unwrap_or_default(),
        checkpoint: doc.ferry.checkpoint.as_deref().and_then(|c| B64.decode(c).ok()),
        rejections: doc.ferry.rejections.clone(),
        ..Default::default()
    };
    let pipeline = match es_index::job_pipeline(&app.stores.es, &doc.connector.pipeline).await {
        Ok(p) => p,
        Err(msg) => {
            fail_job(app, job_id, &lease_id, &msg).await?;
            return Ok(true);
        }
    };
    let resume = carried.checkpoint.clone().unwrap_or_default();
    let run = Arc::new(JobRun::new(
        job_id.to_owned(),
        lease_id.clone(),
        doc.connector.id.clone(),
        index.clone(),
        doc.job_type == JobType::Full,
        doc.job_type == JobType::Incremental,
        doc.ferry.sync_generation.unwrap_or_default(),
        app.jobs.max_unacked_batches,
        app.jobs.max_batch_bytes,
        carried,
        pipeline.map(|name| (name, &doc.connector.pipeline)),
    ));
    session.jobs.lock().expect("jobs lock").insert(job_id.to_owned(), run);
    let values: std::collections::BTreeMap<_, _> = doc
        .connector
        .configuration
        .iter()
        .filter_map(|(k, e)| e.effective_value().map(|v| (k.clone(), v.clone())))
        .collect();
    let assign = proto::AssignJob {
        job_id: job_id.to_owned(),
        lease_id,
        connector_id: doc.connector.id.clone(),
        job_type: match doc.job_type {
            JobType::Full => proto::JobType::Full,
            JobType::Incremental => proto::JobType::Incremental,
            JobType::AccessControl => proto::JobType::AccessControl,
        } as i32,
        configuration: ferry_sdk::config_schema::values_to_proto(&values),
        index_name: index,
        resume_checkpoint: resume.clone(),
        flow_control: Some(app.flow_control()),
        filtering: doc.connector.active_filter().map(|f| crate::agents::filtering::to_sync_rules(&f)),
        sync_cursor: match &doc.connector.sync_cursor {
            v @ serde_json::Value::Object(_) => serde_json::to_vec(v).unwrap_or_default(),
            _ => Vec::new(),
        },
        incremental_mode: match (doc.job_type, doc.ferry.continuous) {
            (JobType::Incremental, true) => proto::IncrementalMode::Continuous,
            (JobType::Incremental, false) => proto::IncrementalMode::Drain,
            _ => proto::IncrementalMode::Unspecified,
        } as i32,
    };
    tracing::info!(job_id, agent_id = %session.agent_id, attempt = doc.ferry.attempts, resumed = !resume.is_empty(), "job assigned");
    crate::metrics::METRICS.jobs_assigned.inc();
    if !session.send(proto::control_message::Message::AssignJob(assign)) {
        // The session died between claim and send: put the job back.
        let run = session.jobs.lock().expect("jobs lock").remove(job_id);
        if let Some(run) = run {
            release(app, &run, "the agent disconnected before the job started").await?;
        }
    }
    Ok(true)
}

/// Job metadata key: updates and deletes of documents that were not there.
pub const MISSING_KEY: &str = "changes_to_missing_documents";

/// Writes the run's progress to the job document (counts, checkpoint, the
/// agent's progress facts in `metadata`). For an incremental job the
/// acknowledged checkpoint is also the cursor: the job's
/// `connector.sync_cursor` and, when it moved, the connector's
/// `sync_cursor`. Returns what the document says should happen next.
pub async fn flush_stats(app: &App, run: &JobRun) -> Result<FlushResult> {
    let r = flush_job(app, run).await?;
    if run.incremental && r != FlushResult::LeaseLost {
        write_cursor(app, run).await?;
    }
    Ok(r)
}

/// The checkpoint as a cursor: a JSON object, or nothing.
fn cursor_of(checkpoint: &[u8]) -> Option<serde_json::Value> {
    match serde_json::from_slice(checkpoint) {
        Ok(v @ serde_json::Value::Object(_)) => Some(v),
        _ => None,
    }
}

/// Copies the run's acknowledged checkpoint to the connector's `sync_cursor`
/// when it changed since the last write.
async fn write_cursor(app: &App, run: &JobRun) -> Result<()> {
    let Some(checkpoint) = run.stats.lock().expect("stats lock").checkpoint.clone() else { return Ok(()) };
    if run.cursor_written.lock().expect("cursor lock").as_ref() == Some(&checkpoint) {
        return Ok(());
    }
    let Some(cursor) = cursor_of(&checkpoint) else {
        tracing::warn!(job_id = %run.job_id, "the incremental job's checkpoint is not a JSON object; the connector's sync_cursor is left as it is");
        *run.cursor_written.lock().expect("cursor lock") = Some(checkpoint);
        return Ok(());
    };
    app.stores
        .connectors
        .update(&run.connector_id, |c| {
            if c.deleted || c.sync_cursor == cursor {
                return Ok(Change::Keep(()));
            }
            c.sync_cursor = cursor.clone();
            Ok(Change::Write(()))
        })
        .await?;
    *run.cursor_written.lock().expect("cursor lock") = Some(checkpoint);
    Ok(())
}

async fn flush_job(app: &App, run: &JobRun) -> Result<FlushResult> {
    let dps = {
        let mut s = run.stats.lock().expect("stats lock");
        let now_i = Instant::now();
        let dps = match s.last_flush {
            Some(t) if now_i > t => {
                (s.indexed - s.indexed_at_last_flush.min(s.indexed)) as f64 / (now_i - t).as_secs_f64()
            }
            _ => 0.0,
        };
        s.last_flush = Some(now_i);
        s.indexed_at_last_flush = s.indexed;
        dps
    };
    let r = app
        .stores
        .jobs
        .update(&run.job_id, |job| {
            if job.ferry.lease_id.as_deref() != Some(run.lease_id.as_str()) || job.status.is_terminal() {
                return Ok(Change::Keep(FlushResult::LeaseLost));
            }
            // The counts are read on every attempt of this optimistic
            // update, not once before it: the progress loop and finish()
            // flush concurrently, and a retry that wrote a snapshot taken
            // before the other writer's would move the counts backwards
            // (a job completed with 19,500 of 20,000 documents counted).
            // Each successful write then carries counts at least as recent
            // as the version it replaced.
            let s = run.stats.lock().expect("stats lock");
            job.indexed_document_count = s.indexed as i64;
            job.indexed_document_volume = (s.bytes / (1024 * 1024)) as i64;
            job.last_seen = Some(now());
            job.ferry.checkpoint = s.checkpoint.as_ref().map(|c| B64.encode(c));
            job.deleted_document_count = s.deleted as i64;
            if s.missing > 0 {
                job.metadata.insert(MISSING_KEY.into(), serde_json::json!(s.missing));
            }
            if run.incremental {
                if let Some(cursor) = s.checkpoint.as_deref().and_then(cursor_of) {
                    job.connector.sync_cursor = cursor;
                }
            }
            for (k, v) in run.progress.lock().expect("progress lock").iter() {
                job.metadata.insert(k.clone(), v.clone());
            }
            job.ferry.rejected_document_count = s.rejected;
            job.ferry.rejections = s.rejections.clone();
            job.ferry.docs_per_second = (dps * 10.0).round() / 10.0;
            set_attempt_count(job, s.received_this_attempt);
            drop(s);
            let next = if job.status == JobStatus::Canceling {
                FlushResult::CancelRequested
            } else {
                FlushResult::Continue
            };
            Ok(Change::Write(next))
        })
        .await?;
    Ok(r.map(|(_, r)| r).unwrap_or(FlushResult::LeaseLost))
}

fn set_attempt_count(job: &mut SyncJobDoc, received: u64) {
    let attempts = job.ferry.attempts.max(1) as usize;
    job.ferry.documents_per_attempt.resize(attempts, 0);
    job.ferry.documents_per_attempt[attempts - 1] = received;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushResult {
    Continue,
    CancelRequested,
    /// Another attempt holds the job now, or it ended: stop this run.
    LeaseLost,
}

/// Ends the run after the agent's JobFinished (all its batches are
/// acknowledged or drained by now).
pub async fn finish(app: &App, run: &JobRun, finished: &proto::JobFinished) -> Result<()> {
    use proto::job_finished::Outcome;
    if matches!(finished.outcome, Some(Outcome::Canceled(_))) {
        // Canceled: stop within seconds, counting only what was confirmed.
        run.abandon_in_flight();
    }
    run.drain().await;
    flush_stats(app, run).await?;
    let (indexed, rejected, first_rejection, applied_deletes) = {
        let s = run.stats.lock().expect("stats lock");
        (s.indexed, s.rejected, s.rejections.first().cloned(), s.deleted)
    };
    let too_many_rejected =
        rejected > MAX_REJECTED_DOCUMENTS || (rejected > 0 && rejected * 10 > indexed + rejected);
    let fatal = run.fatal();
    let metadata =
        finished.metadata.as_ref().map(ferry_sdk::config_schema::struct_to_json).unwrap_or_default();
    enum End {
        Completed,
        Canceled,
        Failed(String),
    }
    let end = match (&finished.outcome, fatal) {
        (_, Some(reason)) => End::Failed(reason),
        (Some(Outcome::Completed(_)), None) if too_many_rejected => End::Failed(format!(
                "Elasticsearch rejected {rejected} documents (more than {MAX_REJECTED_DOCUMENTS} or 10% of {}); first: {}. \
                 Fix the index mapping or the data, then sync again",
                indexed + rejected,
                first_rejection.map(|r| r.to_string()).unwrap_or_default()
            )),
        (Some(Outcome::Completed(_)), None) => End::Completed,
        (Some(Outcome::Canceled(_)), None) => End::Canceled,
        (Some(Outcome::Failed(f)), None) => End::Failed(f.message.clone()),
        (None, None) => End::Failed("the agent ended the job without an outcome".into()),
    };
    // Deletes of vanished rows only after a complete full sync: any other
    // ending has not seen every row.
    let mut deleted = 0u64;
    let mut total = None;
    let mut end = end;
    if matches!(end, End::Completed) && run.full_sync {
        let generation = {
            let job = app.stores.jobs.get(&run.job_id).await?;
            job.and_then(|j| j.doc.ferry.sync_generation).unwrap_or_default()
        };
        match es_index::delete_stale(&app.stores.es, &run.index_name, generation).await {
            Ok(n) => deleted = n,
            Err(e) => end = End::Failed(format!("removing documents of vanished rows failed: {e}")),
        }
    }
    // Every ending reports the index's document count, as Elastic's
    // `_sync_done` does (Kibana shows it next to the job).
    match es_index::count(&app.stores.es, &run.index_name).await {
        Ok(n) => total = Some(n as i64),
        Err(e) => tracing::warn!(job_id = %run.job_id, "cannot count the index after the sync: {e}"),
    }
    let t = now();
    let updated = app
        .stores
        .jobs
        .update(&run.job_id, |job| {
            if job.ferry.lease_id.as_deref() != Some(run.lease_id.as_str()) || job.status.is_terminal() {
                return Ok(Change::Keep(None));
            }
            for (k, v) in &metadata {
                job.metadata.insert(k.clone(), v.clone());
            }
            job.last_seen = Some(t);
            job.total_document_count = total.or(job.total_document_count);
            job.deleted_document_count = (applied_deletes + deleted) as i64;
            let status = match &end {
                End::Completed => JobStatus::Completed,
                End::Canceled => JobStatus::Canceled,
                End::Failed(..) => JobStatus::Error,
            };
            if job.status == JobStatus::InProgress && status == JobStatus::Canceled {
                job.move_to(JobStatus::Canceling);
            }
            if !job.move_to(status) {
                return Err(Error::Internal(format!(
                    "job {} cannot move from {:?} to {status:?}",
                    run.job_id, job.status
                )));
            }
            match &end {
                End::Completed => job.completed_at = Some(t),
                End::Canceled => {
                    // An agent only ends a job canceled when asked to; the
                    // admin call that asked may not have written yet.
                    job.cancelation_requested_at.get_or_insert(t);
                    job.canceled_at = Some(t);
                    job.completed_at = Some(t);
                }
                End::Failed(msg) => {
                    job.error = Some(msg.clone());
                    job.completed_at = Some(t);
                }
            }
            Ok(Change::Write(Some((job.status, job.indexed_document_count, job.error.clone(), job.job_type))))
        })
        .await?;
    let Some((_, Some((status, indexed_count, error, job_type)))) = updated else { return Ok(()) };
    super::slot::give_back(app, &run.connector_id, &run.job_id).await;
    tracing::info!(job_id = %run.job_id, status = status.as_str(), indexed = indexed_count, deleted, "job finished");
    crate::metrics::METRICS
        .jobs_finished
        .get_or_create(&crate::metrics::label("status", status.as_str()))
        .inc();
    let deleted_total = (applied_deletes + deleted) as i64;
    connector_sync_ended(app, &run.connector_id, job_type, status, error, indexed_count, deleted_total).await;
    Ok(())
}

/// Connector bookkeeping when a job is claimed ([`ConnectorDoc::sync_started`]).
/// A failure is logged, not returned: the job runs either way.
///
/// [`ConnectorDoc::sync_started`]: crate::model::ConnectorDoc::sync_started
async fn connector_sync_started(app: &App, connector_id: &str, job_type: JobType) {
    let r = app
        .stores
        .connectors
        .update(connector_id, |c| {
            if c.deleted {
                return Ok(Change::Keep(()));
            }
            c.sync_started(job_type);
            Ok(Change::Write(()))
        })
        .await;
    if let Err(e) = r {
        tracing::warn!(connector_id, "recording the sync start on the connector failed: {e}");
    }
}

/// Connector bookkeeping when a claimed job ended, whichever way
/// ([`ConnectorDoc::sync_ended`]). A failure is logged: the job document,
/// already written, is the record.
///
/// [`ConnectorDoc::sync_ended`]: crate::model::ConnectorDoc::sync_ended
pub async fn connector_sync_ended(
    app: &App,
    connector_id: &str,
    job_type: JobType,
    status: JobStatus,
    error: Option<String>,
    indexed: i64,
    deleted: i64,
) {
    let t = now();
    let r = app
        .stores
        .connectors
        .update(connector_id, |c| {
            if c.deleted {
                return Ok(Change::Keep(()));
            }
            c.sync_ended(job_type, status, error.as_deref(), indexed, deleted, t);
            Ok(Change::Write(()))
        })
        .await;
    if let Err(e) = r {
        tracing::warn!(connector_id, "recording the sync end on the connector failed: {e}");
    }
}

/// The run's session is gone: hand the job back (`pending`, checkpoint kept)
/// so the next available agent resumes it.
pub async fn release(app: &App, run: &JobRun, why: &str) -> Result<()> {
    run.drain_or_abandon(RELEASE_GRACE).await;
    flush_stats(app, run).await?;
    let t = now();
    let ended = app
        .stores
        .jobs
        .update(&run.job_id, |job| {
            if job.ferry.lease_id.as_deref() != Some(run.lease_id.as_str()) {
                return Ok(Change::Keep(None));
            }
            release_doc(job, why, t);
            Ok(Change::Write(ended_summary(job)))
        })
        .await?;
    super::slot::give_back(app, &run.connector_id, &run.job_id).await;
    if let Some((_, Some(e))) = ended {
        connector_sync_ended(app, &run.connector_id, e.job_type, e.status, e.error, e.indexed, e.deleted)
            .await;
    }
    tracing::info!(job_id = %run.job_id, "job released for resume: {why}");
    crate::metrics::METRICS.jobs_released.inc();
    Ok(())
}

/// What the connector needs to know about a job that just became terminal.
struct Ended {
    job_type: JobType,
    status: JobStatus,
    error: Option<String>,
    indexed: i64,
    deleted: i64,
}

fn ended_summary(job: &SyncJobDoc) -> Option<Ended> {
    job.status.is_terminal().then(|| Ended {
        job_type: job.job_type,
        status: job.status,
        error: job.error.clone(),
        indexed: job.indexed_document_count,
        deleted: job.deleted_document_count,
    })
}

fn release_doc(job: &mut SyncJobDoc, why: &str, t: crate::model::Timestamp) {
    let agent = job.ferry.agent_id.clone().unwrap_or_default();
    job.ferry.lease_id = None;
    job.ferry.agent_id = None;
    job.ferry.control_plane = None;
    match job.status {
        JobStatus::Canceling => {
            job.move_to(JobStatus::Canceled);
            job.canceled_at = Some(t);
            job.completed_at = Some(t);
        }
        JobStatus::InProgress if job.ferry.attempts >= MAX_ATTEMPTS => {
            job.move_to(JobStatus::Error);
            job.completed_at = Some(t);
            job.error = Some(format!(
                "gave up after {MAX_ATTEMPTS} attempts; the last one on agent {agent:?} ended at {t}: {why}"
            ));
        }
        JobStatus::InProgress => {
            job.move_to(JobStatus::Pending);
            job.worker_hostname = None;
            job.metadata.insert(
                "ferry_last_interruption".into(),
                serde_json::json!({"agent": agent, "at": t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(), "reason": why}),
            );
        }
        _ => {}
    }
}

/// Fails a job this instance holds.
pub async fn fail_job(app: &App, job_id: &str, lease_id: &str, message: &str) -> Result<()> {
    let t = now();
    let updated = app
        .stores
        .jobs
        .update(job_id, |job| {
            if job.ferry.lease_id.as_deref() != Some(lease_id) || job.status.is_terminal() {
                return Ok(Change::Keep(None));
            }
            job.move_to(JobStatus::Error);
            job.error = Some(message.to_owned());
            job.completed_at = Some(t);
            Ok(Change::Write(ended_summary(job).map(|e| (job.connector.id.clone(), e))))
        })
        .await?;
    if let Some((_, Some((connector_id, e)))) = updated {
        super::slot::give_back(app, &connector_id, job_id).await;
        crate::metrics::METRICS.jobs_finished.get_or_create(&crate::metrics::label("status", "error")).inc();
        connector_sync_ended(app, &connector_id, e.job_type, e.status, e.error, e.indexed, e.deleted).await;
    }
    Ok(())
}

/// Jobs whose holder stopped refreshing `last_seen` for the lease timeout
/// (its control plane died, or lost Elasticsearch) are released for resume.
pub async fn expire_leases(app: &App) -> Result<()> {
    let cutoff = now() - app.jobs.lease_timeout;
    let cutoff_s = cutoff.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let res = app
        .stores
        .jobs
        .search(&serde_json::json!({
            "size": 100,
            "seq_no_primary_term": true,
            "query": {"bool": {"filter": [
                {"terms": {"status": ["in_progress", "canceling"]}},
                {"range": {"last_seen": {"lt": cutoff_s}}}
            ]}}
        }))
        .await?;
    for hit in res.hits {
        let job_id = hit.id.clone();
        if app.registry.running(&job_id).is_some() {
            continue;
        }
        let t = now();
        let expired = app
            .stores
            .jobs
            .update(&job_id, |job| {
                let stale = job.last_seen.map(|s| s < cutoff).unwrap_or(true);
                if !stale || !matches!(job.status, JobStatus::InProgress | JobStatus::Canceling) {
                    return Ok(Change::Keep(None));
                }
                let why = format!(
                    "no word from agent {:?} since {} (lease of {} s expired)",
                    job.ferry.agent_id.clone().unwrap_or_default(),
                    job.last_seen.map(|s| s.to_string()).unwrap_or_default(),
                    app.jobs.lease_timeout.as_secs()
                );
                tracing::warn!(job_id = %job_id, "{why}");
                release_doc(job, &why, t);
                Ok(Change::Write(Some((job.connector.id.clone(), ended_summary(job)))))
            })
            .await?;
        if let Some((_, Some((connector_id, ended)))) = expired {
            super::slot::give_back(app, &connector_id, &job_id).await;
            if let Some(e) = ended {
                connector_sync_ended(app, &connector_id, e.job_type, e.status, e.error, e.indexed, e.deleted)
                    .await;
            }
        }
    }
    Ok(())
}
