//! Two loops that keep jobs moving on this instance.
//!
//! - The dispatcher hands `pending` jobs to connected agents that serve the
//!   job's connector and have room (`max_concurrent_jobs`), one running job
//!   per connector at a time (two full syncs of one index would delete each
//!   other's documents). Claims are optimistic-concurrency writes, so with
//!   several control planes exactly one wins. It also expires leases of jobs
//!   whose holder went silent.
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

async fn dispatch_once(app: &App) -> Result<()> {
    if app.registry.all().is_empty() || app.shutdown.is_cancelled() {
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
    for hit in pending.hits {
        let connector_id = hit.source.connector.id.clone();
        if !connectors.contains_key(&connector_id) {
            let doc = app.stores.connectors.get(&connector_id).await?.map(|c| c.doc);
            connectors.insert(connector_id.clone(), doc);
        }
        let Some(Some(connector)) = connectors.get(&connector_id) else { continue };
        // Only agents allowed to serve the connector get its jobs.
        let Some(session) = app.registry.serving(&connector_id).into_iter().find(|s| {
            s.has_capacity() && authz::verdict(connector, &s.agent_id, app.require_binding).may_serve()
        }) else {
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
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for session in app.registry.all() {
            let runs: Vec<_> = session.jobs.lock().expect("jobs lock").values().cloned().collect();
            for run in runs {
                match lifecycle::flush_stats(&app, &run).await {
                    Ok(FlushResult::Continue) => {}
                    Ok(FlushResult::CancelRequested) => {
                        if run.mark_cancel_sent() {
                            send_cancel(&session, &run.job_id, &run.lease_id, "canceled by the user").await;
                        }
                    }
                    Ok(FlushResult::LeaseLost) => {
                        tracing::warn!(job_id = %run.job_id, agent_id = %session.agent_id, "job no longer held by this lease; stopping the agent's attempt");
                        send_cancel(
                            &session,
                            &run.job_id,
                            &run.lease_id,
                            "the job was taken over or ended elsewhere",
                        )
                        .await;
                        session.jobs.lock().expect("jobs lock").remove(&run.job_id);
                    }
                    Err(e) => tracing::warn!(job_id = %run.job_id, "writing job progress failed: {e}"),
                }
            }
        }
    }
}

pub async fn send_cancel(
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
    session.send(proto::control_message::Message::CancelJob(msg)).await;
}
