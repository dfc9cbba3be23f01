//! Scheduled syncs.
//!
//! Each connector has a schedule per job type (`scheduling.full`,
//! `scheduling.incremental`, `scheduling.access_control` — the last only
//! when `features.document_level_security` is enabled): a Quartz cron
//! expression in UTC. Unlike
//! Elastic's service, the seconds field is honoured: `*/10 * * * * ?` runs
//! every ten seconds.
//!
//! Every control plane runs this loop. A run is due when the schedule has a
//! fire time after the connector's `last_sync_scheduled_at`
//! (`last_incremental_sync_scheduled_at`, `last_access_control_sync_scheduled_at`)
//! that is not in the future. The
//! A run is created *before* its claim, under an id derived from the
//! connector, the job type and the fire time ([`scheduled_job_id`]) with
//! `op_type=create`; only then is the field moved forward with an
//! optimistic-concurrency write (`DocStore::update`). So the job and the
//! claim are one recoverable step: every instance that sees the run due
//! computes the same id, the first creation wins and the others get a
//! conflict, and an instance that dies between creating and claiming leaves
//! the run due for the next instance (or its own restart), which finds the
//! job already there and only claims. A scheduled run is neither lost nor
//! created twice. A due run is skipped (and the field still moved) while a
//! job of the connector is pending or running: a slow sync does not pile up
//! scheduled ones behind it.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::error::{Error, Result};
use crate::model::{now, ConnectorDoc, ConnectorStatus, JobType, Timestamp, TriggerMethod};
use crate::store::Change;

/// How often schedules are checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// A parsed Quartz cron expression (UTC).
#[derive(Debug, Clone)]
pub struct Interval(cron::Schedule);

impl Interval {
    /// Parses `sec min hour day-of-month month day-of-week [year]`, as
    /// Quartz and Elastic's connectors write it (`?` = no specific value;
    /// day-of-week 1-7 is SUN-SAT, or SUN..SAT).
    pub fn parse(expr: &str) -> std::result::Result<Interval, String> {
        let fields = expr.split_whitespace().count();
        if !(6..=7).contains(&fields) {
            return Err(format!(
                "{expr:?} has {fields} fields; a Quartz cron expression has 6 or 7: \
                 seconds minutes hours day-of-month month day-of-week [year], e.g. \"0 */15 * * * ?\""
            ));
        }
        cron::Schedule::from_str(expr).map(Interval).map_err(|e| {
            format!("{expr:?} is not a valid Quartz cron expression: {}", inclusive_bound(&e.to_string()))
        })
    }

    /// The first fire time strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let after = chrono::DateTime::<chrono::Utc>::from_timestamp(t.unix_timestamp(), t.nanosecond())?;
        let next = self.0.after(&after).next()?;
        time::OffsetDateTime::from_unix_timestamp_nanos(next.timestamp_nanos_opt()? as i128).ok()
    }
}

/// The schedule of `job_type` on a connector, when enabled and valid.
pub fn schedule_of(c: &ConnectorDoc, job_type: JobType) -> Option<Interval> {
    let entry = c.scheduling.get(job_type.as_str())?;
    if entry.get("enabled").and_then(|e| e.as_bool()) != Some(true) {
        return None;
    }
    Interval::parse(entry.get("interval")?.as_str()?).ok()
}

/// `last_*_scheduled_at` of a connector for `job_type`.
pub fn last_scheduled(c: &mut ConnectorDoc, job_type: JobType) -> &mut Option<Timestamp> {
    match job_type {
        JobType::Incremental => &mut c.last_incremental_sync_scheduled_at,
        JobType::AccessControl => &mut c.last_access_control_sync_scheduled_at,
        JobType::Full => &mut c.last_sync_scheduled_at,
    }
}

/// True when a run of `schedule` fell between `last` and `now`.
pub fn is_due(schedule: &Interval, last: Option<Timestamp>, now: Timestamp) -> bool {
    match last {
        // Never scheduled: the first fire time from now on.
        None => true,
        Some(last) => schedule.next_after(last).is_some_and(|next| next <= now),
    }
}

pub async fn run_scheduler(app: Arc<App>) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = schedule_once(&app).await {
            tracing::warn!("checking sync schedules failed: {e}");
        }
    }
}

/// A cached connector, named as the search hits this loop used to read.
struct Hit {
    id: String,
    source: ConnectorDoc,
}

async fn schedule_once(app: &App) -> Result<()> {
    // From the connector cache: no request unless a run is due.
    let connectors = app.connector_cache.all();
    let t = now();
    for hit in connectors.into_iter().filter(|c| !c.doc.deleted) {
        let hit = Hit { id: hit.id, source: hit.doc };
        for job_type in [JobType::Full, JobType::Incremental, JobType::AccessControl] {
            let mut c = hit.source.clone();
            // As Elastic's service: access-control syncs only for sources
            // with document-level security.
            if job_type == JobType::AccessControl
                && c.features.pointer("/document_level_security/enabled")
                    != Some(&serde_json::Value::Bool(true))
            {
                continue;
            }
            let Some(schedule) = schedule_of(&c, job_type) else { continue };
            let observed = *last_scheduled(&mut c, job_type);
            if observed.is_none() {
                // First sight of this schedule: start counting from now.
                claim(app, &hit.id, job_type, observed, t).await?;
                continue;
            }
            if !is_due(&schedule, observed, t) {
                continue;
            }
            if !matches!(
                c.status,
                ConnectorStatus::Configured | ConnectorStatus::Connected | ConnectorStatus::Error
            ) {
                continue;
            }
            let Some(fire) = observed.and_then(|o| schedule.next_after(o)) else { continue };
            let job_id = scheduled_job_id(&hit.id, job_type, fire);
            if connector_has_open_job(app, &hit.id, &job_id).await? {
                if claim(app, &hit.id, job_type, observed, t).await? {
                    tracing::info!(connector_id = %hit.id, job_type = job_type.as_str(),
                        "scheduled sync skipped: a sync of this connector is still pending or running");
                }
                continue;
            }
            match crate::admin::sync_jobs::create_job_as(
                app,
                &hit.id,
                job_type,
                TriggerMethod::Scheduled,
                false,
                Some(job_id.clone()),
            )
            .await
            {
                Ok(job) => {
                    tracing::info!(connector_id = %hit.id, job_id = %job.id, job_type = job_type.as_str(), "scheduled sync created")
                }
                // Created by another instance, or by this one before a crash.
                Err(Error::Aborted(_)) => {}
                Err(e) => {
                    // Not claimed: the run stays due and is tried again.
                    tracing::warn!(connector_id = %hit.id, "creating a scheduled sync failed: {e}");
                    continue;
                }
            }
            claim(app, &hit.id, job_type, observed, t).await?;
        }
    }
    Ok(())
}

/// Moves `last_*_scheduled_at` from `observed` to `t`; true if this call
/// did it (false when another writer moved it first).
async fn claim(
    app: &App,
    connector_id: &str,
    job_type: JobType,
    observed: Option<Timestamp>,
    t: Timestamp,
) -> Result<bool> {
    let won = app
        .stores
        .connectors
        .update(connector_id, |c| {
            let last = last_scheduled(c, job_type);
            if *last != observed {
                return Ok(Change::Keep(false));
            }
            *last = Some(t);
            Ok(Change::Write(true))
        })
        .await?;
    match won {
        Some((written, true)) => {
            // Seen at once by the next check (no second claim attempt).
            app.connector_cache.put(written);
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// A job of the connector other than `except` (the run being scheduled,
/// which may exist already) is pending or running.
async fn connector_has_open_job(app: &App, connector_id: &str, except: &str) -> Result<bool> {
    let open = app
        .stores
        .jobs
        .search(&serde_json::json!({
            "size": 1,
            "query": {"bool": {
                "filter": [
                    {"term": {"connector.id": connector_id}},
                    {"terms": {"status": ["pending", "in_progress", "canceling"]}}
                ],
                "must_not": [{"ids": {"values": [except]}}]
            }}
        }))
        .await?;
    Ok(!open.hits.is_empty())
}

/// The id of the scheduled run of `job_type` on `connector_id` that fires
/// at `fire`: the same on every instance, so creating it twice conflicts.
pub fn scheduled_job_id(connector_id: &str, job_type: JobType, fire: Timestamp) -> String {
    use md5::{Digest, Md5};
    let key = format!("{connector_id}\0{}\0{}", job_type.as_str(), fire.unix_timestamp_nanos());
    format!("s{}", &hex::encode(Md5::digest(key.as_bytes()))[..19])
}

/// Validates a schedule entry's interval for the admin API.
pub fn validate_interval(field: &str, expr: &str) -> Result<Interval> {
    Interval::parse(expr).map_err(|e| Error::invalid(field, e))
}

/// The cron crate says "Hours must be less than 23" for 25 although 23 is
/// allowed: its bound is inclusive, so say "at most".
fn inclusive_bound(message: &str) -> String {
    message.replace(" must be less than ", " must be at most ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
    }

    #[test]
    fn quartz_expressions_keep_seconds() {
        let every10 = Interval::parse("*/10 * * * * ?").unwrap();
        assert_eq!(every10.next_after(at("2026-01-01T00:00:01Z")), Some(at("2026-01-01T00:00:10Z")));
        assert_eq!(every10.next_after(at("2026-01-01T00:00:10Z")), Some(at("2026-01-01T00:00:20Z")));
        let daily = Interval::parse("0 0 0 * * ?").unwrap();
        assert_eq!(daily.next_after(at("2026-01-01T12:00:00Z")), Some(at("2026-01-02T00:00:00Z")));
        // Day-of-week as Quartz: 2 = Monday; 2026-01-05 is a Monday.
        let mondays = Interval::parse("0 30 8 ? * 2").unwrap();
        assert_eq!(mondays.next_after(at("2026-01-01T00:00:00Z")), Some(at("2026-01-05T08:30:00Z")));
        let with_year = Interval::parse("0 0 12 1 1 ? 2027").unwrap();
        assert_eq!(with_year.next_after(at("2026-01-01T00:00:00Z")), Some(at("2027-01-01T12:00:00Z")));
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        let e = Interval::parse("*/5 * * * *").unwrap_err();
        assert!(e.contains("5 fields") && e.contains("seconds"), "{e}");
        let e = Interval::parse("61 * * * * ?").unwrap_err();
        assert!(e.contains("not a valid Quartz cron expression"), "{e}");
        let e = Interval::parse("0 0 25 * * ?").unwrap_err();
        assert!(e.contains("Hours must be at most 23") && e.contains("'25'"), "{e}");
        Interval::parse("59 59 23 31 12 ?").expect("the bounds themselves are valid");
        let e = validate_interval("scheduling.full.interval", "nope").unwrap_err();
        assert!(e.to_string().starts_with("scheduling.full.interval:"), "{e}");
    }

    #[test]
    fn due_when_a_fire_time_passed_since_the_last_run() {
        let every5 = Interval::parse("*/5 * * * * ?").unwrap();
        let last = Some(at("2026-01-01T00:00:05Z"));
        assert!(!is_due(&every5, last, at("2026-01-01T00:00:09Z")));
        assert!(is_due(&every5, last, at("2026-01-01T00:00:10Z")));
        assert!(is_due(&every5, None, at("2026-01-01T00:00:09Z")));
    }

    #[test]
    fn a_scheduled_run_has_one_id_everywhere() {
        let t = at("2026-01-01T00:00:10Z");
        let a = scheduled_job_id("shop", JobType::Full, t);
        assert_eq!(a, scheduled_job_id("shop", JobType::Full, t), "deterministic");
        assert_eq!(a.len(), 20);
        assert_ne!(a, scheduled_job_id("shop", JobType::Incremental, t));
        assert_ne!(a, scheduled_job_id("shop", JobType::Full, at("2026-01-01T00:00:20Z")));
        assert_ne!(a, scheduled_job_id("shop2", JobType::Full, t));
    }

    #[test]
    fn only_enabled_valid_schedules_count() {
        let mut c =
            ConnectorDoc::new("n".into(), String::new(), "i".into(), "postgresql".into(), String::new());
        assert!(schedule_of(&c, JobType::Full).is_none());
        c.scheduling["full"] = serde_json::json!({"enabled": true, "interval": "*/5 * * * * ?"});
        assert!(schedule_of(&c, JobType::Full).is_some());
        assert!(schedule_of(&c, JobType::Incremental).is_none());
        c.scheduling["full"]["interval"] = serde_json::json!("bad");
        assert!(schedule_of(&c, JobType::Full).is_none());
    }
}
