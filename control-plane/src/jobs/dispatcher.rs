//! Two loops that keep jobs moving on this instance.
//!
//! - The dispatcher hands `pending` jobs to connected agents that serve the
//!   job's connector and have room (`max_concurrent_jobs`), one running job
//!   per connector at a time (two full syncs of one index would delete each
//!   other's documents). Claims are optimistic-concurrency writes, so with
//!   several control planes exactly one wins. It also expires leases of jobs
//!   whose holder went silent.
//!   A pending job that no agent can take says why in
//!   `metadata.pending_reason` ([`PENDING_REASON`]): no connected agent (of
//!   any replica, from the fleet records) offers its connector, or only
//!   agents refused for it do. The key is removed once an allowed agent
//!   offers the connector and when the job is claimed.
//! - The progress loop writes each running job's stats every
//!   [`PROGRESS_EVERY`], renewing its lease (`last_seen`), and relays
//!   cancellation requests and lost leases to the agent.

use std::sync::Arc;
use std::time::Duration;

use ferry_sdk::proto;

use crate::agents::authz;
use crate::app::App;
use crate::error::Result;
use crate::jobs::lifecycle::{self, FlushResult};
use crate::jobs::slot;
use crate::store::Change;

/// How often running jobs' stats and leases are written.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(2);

pub async fn run_dispatcher(app: Arc<App>) {
    let mut tick = tokio::time::interval(app.jobs.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_expiry = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = tick.tick() => {}
            _ = app.registry.changed.notified() => {}
        }
        if let Err(e) = dispatch_once(&app).await {
            tracing::warn!("dispatching jobs failed: {e}");
        }
        if last_expiry.elapsed() >= Duration::from_secs(5) {
            last_expiry = std::time::Instant::now();
            if let Err(e) = lifecycle::expire_leases(&app).await {
                tracing::warn!("expiring job leases failed: {e}");
            }
        }
    }
}

/// The job metadata key saying why a pending job is not served.
pub const PENDING_REASON: &str = "pending_reason";

async fn dispatch_once(app: &App) -> Result<()> {
    if app.shutdown.is_cancelled() {
        return Ok(());
    }
    let pending = app
        .stores
        .jobs
        .search(&serde_json::json!({
            "size": 100,
            // `suspended`: left by Elastic's service when it stopped mid-sync;
            // it resumes them as pending work, and so do we.
            "query": {"terms": {"status": ["pending", "suspended"]}},
            "sort": [{"created_at": {"order": "asc"}}]
        }))
        .await?;
    let mut connectors = std::collections::HashMap::new();
    // Every replica's agents, read once per pass and only when needed.
    let mut fleet: Option<Vec<crate::admin::fleet::AgentRecord>> = None;
    for hit in pending.hits {
        let connector_id = hit.source.connector.id.clone();
        if !connectors.contains_key(&connector_id) {
            // The cached copy (at most one refresh old) is enough to choose
            // an agent: the claim below is what is checked under concurrency.
            let doc = match app.connector_cache.get(&connector_id) {
                Some(c) => Some(c.doc),
                None => app.stores.connectors.get(&connector_id).await?.map(|c| c.doc),
            };
            connectors.insert(connector_id.clone(), doc);
        }
        let Some(Some(connector)) = connectors.get(&connector_id) else { continue };
        // Only agents allowed to serve the connector get its jobs (the same
        // rules as registration: binding, service_type, refusals).
        let Some(session) = app
            .registry
            .serving(&connector_id)
            .into_iter()
            .find(|s| s.has_capacity() && s.may_serve(&connector_id, connector, app.require_binding))
        else {
            if fleet.is_none() {
                fleet = Some(crate::admin::fleet::fleet(app).await?);
            }
            let reason = pending_reason(app, connector, &connector_id, fleet.as_deref().unwrap_or_default());
            let current = hit.source.metadata.get(PENDING_REASON).and_then(|v| v.as_str());
            if current != reason.as_deref() {
                explain_pending(app, &hit.id, reason).await?;
            }
            continue;
        };
        if connector_busy(app, &connector_id, &hit.id).await? {
            continue;
        }
        // The search above is only a cheap filter; the run slot is the guarantee.
        if !slot::take(app, &connector_id, &hit.id).await? {
            continue;
        }
        let claimed = match lifecycle::claim_and_assign(app, &session, &hit.id).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(job_id = %hit.id, "claiming job failed: {e}");
                false
            }
        };
        if !claimed {
            slot::give_back_unless_running(app, &connector_id, &hit.id).await?;
        }
    }
    Ok(())
}

/// Why no agent can take a job of `connector` (None: one could, it is
/// busy or connected to another replica).
fn pending_reason(
    app: &App,
    connector: &crate::model::ConnectorDoc,
    connector_id: &str,
    fleet: &[crate::admin::fleet::AgentRecord],
) -> Option<String> {
    let offering: Vec<&crate::admin::fleet::AgentRecord> =
        fleet.iter().filter(|a| a.connectors.iter().any(|c| c == connector_id)).collect();
    if offering.is_empty() {
        let service_type = connector.service_type.as_deref().unwrap_or("<service type>");
        return Some(format!(
            "no connected agent serves connector {connector_id:?}: start an agent whose configuration lists it \
             (connectors: [{{connector_id: {connector_id}, service_type: {service_type}}}]); \
             FleetService/ListAgents shows the agents connected now"
        ));
    }
    let mut refused = Vec::new();
    for a in &offering {
        match authz::verdict(connector, &a.agent_id, app.require_binding) {
            authz::Verdict::Refused(why) => refused.push((a.agent_id.as_str(), why)),
            _ => return None,
        }
    }
    let ids: Vec<&str> = refused.iter().map(|(id, _)| *id).collect();
    let why = refused.first().map(|(_, why)| why.as_str()).unwrap_or_default();
    Some(format!(
        "only agents not allowed to serve connector {connector_id:?} offer it ({}): {why}",
        ids.join(", ")
    ))
}

/// Records (or clears) why a pending job waits.
async fn explain_pending(app: &App, job_id: &str, reason: Option<String>) -> Result<()> {
    app.stores
        .jobs
        .update(job_id, |job| {
            if !matches!(job.status, crate::model::JobStatus::Pending | crate::model::JobStatus::Suspended) {
                return Ok(Change::Keep(()));
            }
            let current = job.metadata.get(PENDING_REASON).and_then(|v| v.as_str());
            if current == reason.as_deref() {
                return Ok(Change::Keep(()));
            }
            match &reason {
                Some(r) => job.metadata.insert(PENDING_REASON.into(), r.clone().into()),
                None => job.metadata.remove(PENDING_REASON),
            };
            Ok(Change::Write(()))
        })
        .await?;
    Ok(())
}

/// Another job of this connector is running.
async fn connector_busy(app: &App, connector_id: &str, except_job: &str) -> Result<bool> {
    let running = app
        .stores
        .jobs
        .search(&serde_json::json!({
            "size": 1,
            "query": {"bool": {
                "filter": [
                    {"term": {"connector.id": connector_id}},
                    {"terms": {"status": ["in_progress", "canceling"]}}
                ],
                "must_not": [{"ids": {"values": [except_job]}}]
            }}
        }))
        .await?;
    Ok(!running.hits.is_empty())
}

pub async fn run_progress(app: Arc<App>) {
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When each running job last had a progress line in the log.
    let mut logged: std::collections::HashMap<String, std::time::Instant> = Default::default();
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut running = std::collections::HashSet::new();
        for session in app.registry.all() {
            let runs: Vec<_> = session.jobs.lock().expect("jobs lock").values().cloned().collect();
            for run in runs {
                running.insert(run.job_id.clone());
                match lifecycle::flush_stats(&app, &run).await {
                    Ok(FlushResult::Continue) => {
                        let last = logged.entry(run.job_id.clone()).or_insert(run.started);
                        if last.elapsed() >= app.jobs.progress_log_every {
                            *last = std::time::Instant::now();
                            log_progress(&run, &session.agent_id);
                        }
                    }
                    Ok(FlushResult::CancelRequested) => {
                        if run.mark_cancel_sent() {
                            send_cancel(&session, &run.job_id, &run.lease_id, "canceled by the user");
                        }
                    }
                    Ok(FlushResult::LeaseLost) => {
                        tracing::warn!(job_id = %run.job_id, agent_id = %session.agent_id, "job no longer held by this lease; stopping the agent's attempt");
                        send_cancel(
                            &session,
                            &run.job_id,
                            &run.lease_id,
                            "the job was taken over or ended elsewhere",
                        );
                        session.jobs.lock().expect("jobs lock").remove(&run.job_id);
                    }
                    Err(e) => tracing::warn!(job_id = %run.job_id, "writing job progress failed: {e}"),
                }
            }
        }
        logged.retain(|id, _| running.contains(id));
    }
}

/// One progress line of a long job (every `jobs.progress_log_s`), so an
/// operator reading the log sees it move.
fn log_progress(run: &crate::jobs::ingest::JobRun, agent_id: &str) {
    let (indexed, deleted, rejected, bytes) = {
        let s = run.stats.lock().expect("stats lock");
        (s.indexed, s.deleted, s.rejected, s.bytes)
    };
    let secs = run.started.elapsed().as_secs_f64().max(0.001);
    tracing::info!(
        job_id = %run.job_id, connector_id = %run.connector_id, agent_id, indexed, deleted, rejected,
        mb = bytes / (1024 * 1024), docs_per_s = (indexed as f64 / secs).round() as u64,
        running_s = secs.round() as u64,
        "sync job progress: {indexed} documents indexed"
    );
}

/// Queues `CancelJob` for the agent (never waits for it: see `agents::registry`).
pub fn send_cancel(
    session: &crate::agents::registry::AgentSession,
    job_id: &str,
    lease_id: &str,
    reason: &str,
) {
    let msg = proto::CancelJob {
        job_id: job_id.to_owned(),
        lease_id: lease_id.to_owned(),
        reason: reason.to_owned(),
    };
    session.send(proto::control_message::Message::CancelJob(msg));
}
