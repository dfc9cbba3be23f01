//! One running job per connector, across control planes.
//!
//! Two full syncs of one index would delete each other's documents, so a
//! connector runs one job at a time. A search for running jobs cannot
//! guarantee that with several control planes (two dispatchers can both
//! find none, then claim two different jobs — the replicas test caught it),
//! so the connector document carries a run slot, `ferry.running_job`, taken
//! with compare-and-set *before* the job is claimed and given back when the
//! job finishes, fails, is released or its lease expires.
//!
//! A slot whose holder is not running is stale and may be taken over: the
//! holder finished, vanished, or is `pending` for longer than
//! [`CLAIM_GRACE`] (a control plane died between taking the slot and
//! claiming the job). A holder `pending` for less than that may be in the
//! middle of its claim on another instance, so the slot is respected.

use crate::app::App;
use crate::error::Result;
use crate::jobs::state::JobStatus;
use crate::model::now;
use crate::store::Change;

/// How long a slot held by a `pending` job is respected.
pub const CLAIM_GRACE: time::Duration = time::Duration::seconds(30);

enum Seen {
    Ours,
    HeldBy(String, Option<crate::model::Timestamp>),
}

/// Takes the connector's run slot for `job_id`; false when another job
/// holds it (or the connector is gone).
pub async fn take(app: &App, connector_id: &str, job_id: &str) -> Result<bool> {
    for _ in 0..3 {
        let seen = app
            .stores
            .connectors
            .update(connector_id, |c| match &c.ferry.running_job {
                Some(j) if j == job_id => Ok(Change::Keep(Seen::Ours)),
                Some(j) => Ok(Change::Keep(Seen::HeldBy(j.clone(), c.ferry.running_job_since))),
                None => {
                    c.ferry.running_job = Some(job_id.to_owned());
                    c.ferry.running_job_since = Some(now());
                    Ok(Change::Write(Seen::Ours))
                }
            })
            .await?;
        let (holder, since) = match seen {
            None => return Ok(false),
            Some((_, Seen::Ours)) => return Ok(true),
            Some((_, Seen::HeldBy(h, since))) => (h, since),
        };
        let holder_status = app.stores.jobs.get(&holder).await?.map(|j| j.doc.status);
        let stale = match holder_status {
            Some(JobStatus::InProgress | JobStatus::Canceling) => false,
            Some(JobStatus::Pending) => since.is_none_or(|t| now() - t > CLAIM_GRACE),
            _ => true,
        };
        if !stale {
            return Ok(false);
        }
        // Take it over only if it still names the stale holder (another
        // instance may be doing the same).
        let took = app
            .stores
            .connectors
            .update(connector_id, |c| {
                if c.ferry.running_job.as_deref() != Some(holder.as_str()) {
                    return Ok(Change::Keep(()));
                }
                tracing::info!(connector_id, stale_holder = %holder, job_id, "taking over a stale run slot");
                c.ferry.running_job = None;
                c.ferry.running_job_since = None;
                Ok(Change::Write(()))
            })
            .await?;
        if took.is_none() {
            return Ok(false);
        }
    }
    Ok(false)
}

/// Gives the slot back if `job_id` holds it.
pub async fn give_back(app: &App, connector_id: &str, job_id: &str) {
    let r = app
        .stores
        .connectors
        .update(connector_id, |c| {
            if c.ferry.running_job.as_deref() != Some(job_id) {
                return Ok(Change::Keep(()));
            }
            c.ferry.running_job = None;
            c.ferry.running_job_since = None;
            Ok(Change::Write(()))
        })
        .await;
    if let Err(e) = r {
        // Harmless: a slot whose holder is not running is taken over.
        tracing::warn!(connector_id, job_id, "giving back the connector's run slot failed: {e}");
    }
}

/// After a claim attempt that did not happen: gives the slot back unless
/// the job is running anyway (claimed by another instance, which then holds
/// the slot under the same job id).
pub async fn give_back_unless_running(app: &App, connector_id: &str, job_id: &str) -> Result<()> {
    let status = app.stores.jobs.get(job_id).await?.map(|j| j.doc.status);
    if !matches!(status, Some(JobStatus::InProgress | JobStatus::Canceling)) {
        give_back(app, connector_id, job_id).await;
    }
    Ok(())
}
