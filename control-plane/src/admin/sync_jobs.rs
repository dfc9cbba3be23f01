//! `ferry.v1.SyncJobService`.

use std::sync::Arc;

use ferry_sdk::proto::{self, sync_job_service_server::SyncJobService};
use tonic::{Request, Response, Status};

use super::{convert, validate, watch};
use crate::app::App;
use crate::error::{Error, Result};
use crate::jobs::dispatcher::send_cancel;
use crate::jobs::state::JobStatus;
use crate::model::sync_job::JobConnector;
use crate::model::{now, ConnectorStatus, JobType, SyncJobDoc, TriggerMethod};
use crate::store::{Change, Versioned};

pub struct SyncJobs {
    app: Arc<App>,
}

impl SyncJobs {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    async fn create(&self, r: proto::CreateSyncJobRequest) -> Result<Versioned<SyncJobDoc>> {
        validate::connector_id("connector_id", &r.connector_id)?;
        let job_type = match proto::JobType::try_from(r.job_type) {
            Ok(proto::JobType::Unspecified) | Ok(proto::JobType::Full) => JobType::Full,
            Ok(proto::JobType::Incremental) => JobType::Incremental,
            Ok(proto::JobType::AccessControl) => JobType::AccessControl,
            Err(_) => {
                return Err(Error::invalid(
                    "job_type",
                    "use JOB_TYPE_FULL, JOB_TYPE_INCREMENTAL or JOB_TYPE_ACCESS_CONTROL",
                ))
            }
        };
        if r.continuous && job_type != JobType::Incremental {
            return Err(Error::invalid(
                "continuous",
                "only an incremental job (JOB_TYPE_INCREMENTAL) can be continuous",
            ));
        }
        if job_type != JobType::AccessControl {
            if let Some(stream) = open_continuous_job(&self.app, &r.connector_id).await? {
                return Err(Error::FailedPrecondition(format!(
                    "connector {:?} has a continuous incremental job ({stream}) keeping its index in step with the \
                     database, and one job per connector runs at a time: cancel it with CancelSyncJob first (the next \
                     incremental job continues from the connector's sync_cursor)",
                    r.connector_id
                )));
            }
        }
        create_job(&self.app, &r.connector_id, job_type, TriggerMethod::OnDemand, r.continuous).await
    }

    async fn get(&self, id: &str) -> Result<Versioned<SyncJobDoc>> {
        if id.is_empty() {
            return Err(Error::invalid("sync_job_id", "is required"));
        }
        self.app
            .stores
            .jobs
            .get(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("sync job {id:?} not found: list jobs with ListSyncJobs")))
    }

    async fn cancel(&self, id: &str) -> Result<Versioned<SyncJobDoc>> {
        if id.is_empty() {
            return Err(Error::invalid("sync_job_id", "is required"));
        }
        // Running here: tell the agent before writing `canceling`, so it stops
        // at once even when Elasticsearch is slow to take the write. (A job
        // running on another instance is relayed by that instance's progress
        // loop within seconds.)
        let mut told_agent = false;
        if let Some((session, run)) = self.app.registry.running(id) {
            if run.mark_cancel_sent() {
                send_cancel(&session, id, &run.lease_id, "canceled by the user");
            }
            told_agent = true;
        }
        let t = now();
        let (job, (lease, was_running)) = self
            .app
            .stores
            .jobs
            .update(id, |job| {
                match job.status {
                    JobStatus::Pending | JobStatus::Suspended => {
                        job.move_to(JobStatus::Canceled);
                        job.cancelation_requested_at = Some(t);
                        job.canceled_at = Some(t);
                        job.completed_at = Some(t);
                    }
                    JobStatus::InProgress => {
                        job.move_to(JobStatus::Canceling);
                        job.cancelation_requested_at = Some(t);
                    }
                    JobStatus::Canceling => return Ok(Change::Keep((None, false))),
                    // The agent we told stopped before this write landed
                    // (its finish recorded the cancel request: lifecycle::finish).
                    JobStatus::Canceled if told_agent => return Ok(Change::Keep((None, false))),
                    s => {
                        return Err(Error::FailedPrecondition(format!(
                            "sync job {id:?} is already {}; only pending or running jobs can be canceled",
                            s.as_str()
                        )))
                    }
                }
                // A pending job that ran before (released for resume) had
                // marked its connector `in_progress`.
                let was_running = job.status == JobStatus::Canceled && job.ferry.attempts > 0;
                Ok(Change::Write((job.ferry.lease_id.clone(), was_running)))
            })
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!("sync job {id:?} not found: list jobs with ListSyncJobs"))
            })?;
        // Claimed here since the check above: tell its agent now rather than
        // at the next progress tick.
        if let (Some(lease), Some((session, run))) = (lease, self.app.registry.running(id)) {
            if run.lease_id == lease && run.mark_cancel_sent() {
                send_cancel(&session, id, &lease, "canceled by the user");
            }
        }
        if was_running {
            crate::jobs::lifecycle::connector_sync_ended(
                &self.app,
                &job.doc.connector.id,
                job.doc.job_type,
                JobStatus::Canceled,
                None,
                job.doc.indexed_document_count,
                job.doc.deleted_document_count,
            )
            .await;
        }
        tracing::info!(job_id = id, "sync job cancel requested");
        Ok(job)
    }
}

/// Creates a pending job of `job_type` for the connector, with a snapshot of
/// the connector (configuration, filtering, pipeline, sync_cursor...).
/// `continuous`: an incremental job that streams until canceled.
/// The id of the connector's continuous incremental job that is not over
/// (pending, running, canceling or suspended), if any.
///
/// Why a full (or another incremental) sync is refused next to it rather
/// than queued: one job per connector runs at a time (the dispatcher), and a
/// continuous job ends only when canceled, so a queued job would wait
/// forever with no word why. Content-index writes of a full sync and a
/// stream never interleave; after the user cancels the stream, a full sync
/// runs, and the next incremental job replays from the connector's cursor
/// (changes the full sync already saw are re-applied in commit order per
/// document, which converges on the same documents).
async fn open_continuous_job(app: &App, connector_id: &str) -> Result<Option<String>> {
    let res = app
        .stores
        .jobs
        .search(&serde_json::json!({
            "size": 20,
            "query": {"bool": {"filter": [
                {"term": {"connector.id": connector_id}},
                {"term": {"job_type": "incremental"}},
                {"terms": {"status": ["pending", "in_progress", "canceling", "suspended"]}}
            ]}}
        }))
        .await?;
    Ok(res.hits.into_iter().find(|h| h.source.ferry.continuous).map(|h| h.id))
}

pub async fn create_job(
    app: &App,
    connector_id: &str,
    job_type: JobType,
    trigger: TriggerMethod,
    continuous: bool,
) -> Result<Versioned<SyncJobDoc>> {
    create_job_as(app, connector_id, job_type, trigger, continuous, None).await
}

/// [`create_job`] with a chosen id (`None`: a random one). The document is
/// created with `op_type=create`: an id that exists already is
/// `Error::Aborted` and nothing is written (the scheduler relies on this to
/// create each scheduled run exactly once, see `jobs::scheduler`).
pub async fn create_job_as(
    app: &App,
    connector_id: &str,
    job_type: JobType,
    trigger: TriggerMethod,
    continuous: bool,
    id: Option<String>,
) -> Result<Versioned<SyncJobDoc>> {
    let connector = match app.stores.connectors.get(connector_id).await? {
        Some(c) if !c.doc.deleted => c,
        _ => {
            return Err(Error::NotFound(format!(
                "connector {:?} not found: create it with PutConnector first",
                connector_id
            )))
        }
    };
    let c = &connector.doc;
    let index_name = c.index_name.clone().ok_or_else(|| {
        Error::FailedPrecondition(format!(
            "connector {:?} has no index_name: set it with PutConnector",
            connector_id
        ))
    })?;
    match c.status {
        ConnectorStatus::Configured | ConnectorStatus::Connected | ConnectorStatus::Error => {}
        s => {
            return Err(Error::FailedPrecondition(format!(
                "connector {:?} is {}: {}",
                connector_id,
                s.as_str(),
                if s == ConnectorStatus::Created {
                    "start an agent that serves it, then set its configuration with UpdateConfiguration"
                } else {
                    "set its configuration with UpdateConfiguration first"
                }
            )))
        }
    }
    let t = now();
    let doc = SyncJobDoc {
        connector: JobConnector {
            id: connector.id.clone(),
            configuration: c.configuration.clone(),
            filtering: crate::model::sync_job::job_filtering(&c.filtering),
            index_name: crate::model::sync_job::job_index_name(job_type, &index_name),
            language: c.language.clone(),
            pipeline: c.pipeline.clone(),
            service_type: c.service_type.clone(),
            sync_cursor: c.sync_cursor.clone(),
            extra: Default::default(),
        },
        job_type,
        trigger_method: trigger,
        status: JobStatus::Pending,
        created_at: Some(t),
        last_seen: Some(t),
        total_document_count: Some(0),
        ferry: crate::model::sync_job::JobFerry { continuous, ..Default::default() },
        ..Default::default()
    };
    let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..20].to_owned());
    let seq_no = app.stores.jobs.create(&id, &doc).await?;
    tracing::info!(job_id = %id, connector_id = %connector.id, job_type = job_type.as_str(), "sync job created");
    app.registry.changed.notify_waiters();
    Ok(Versioned { id, doc, seq_no })
}

/// `view`: true for SYNC_JOB_VIEW_FULL; the default is the summary.
fn full_view(view: i32) -> Result<bool> {
    match proto::SyncJobView::try_from(view) {
        Ok(proto::SyncJobView::Full) => Ok(true),
        Ok(_) => Ok(false),
        Err(_) => Err(Error::invalid("view", "use SYNC_JOB_VIEW_SUMMARY or SYNC_JOB_VIEW_FULL")),
    }
}

#[tonic::async_trait]
impl SyncJobService for SyncJobs {
    type WatchSyncJobStream = watch::WatchStream<proto::WatchSyncJobResponse>;

    async fn watch_sync_job(
        &self,
        request: Request<proto::WatchSyncJobRequest>,
    ) -> Result<Response<Self::WatchSyncJobStream>, Status> {
        let r = request.into_inner();
        let full = full_view(r.view)?;
        if r.sync_job_id.is_empty() {
            return Err(Error::invalid("sync_job_id", "is required").into());
        }
        let me = SyncJobs { app: self.app.clone() };
        let id = r.sync_job_id;
        let stream = watch::start(format!("sync job {id:?}"), move || {
            let (me, id) = (SyncJobs { app: me.app.clone() }, id.clone());
            async move {
                let job = me.get(&id).await?;
                let message = convert::sync_job_view(&job.id, &job.doc, full);
                let key = proto::SyncJob { last_seen: None, ..message.clone() };
                Ok(watch::Snapshot {
                    message: proto::WatchSyncJobResponse { sync_job: Some(message) },
                    key: proto::WatchSyncJobResponse { sync_job: Some(key) },
                    last: job.doc.status.is_terminal(),
                })
            }
        })
        .await?;
        Ok(Response::new(stream))
    }

    async fn create_sync_job(
        &self,
        request: Request<proto::CreateSyncJobRequest>,
    ) -> Result<Response<proto::CreateSyncJobResponse>, Status> {
        let job = self.create(request.into_inner()).await?;
        Ok(Response::new(proto::CreateSyncJobResponse { sync_job: Some(convert::sync_job(&job)) }))
    }

    async fn get_sync_job(
        &self,
        request: Request<proto::GetSyncJobRequest>,
    ) -> Result<Response<proto::GetSyncJobResponse>, Status> {
        let r = request.into_inner();
        let full = full_view(r.view)?;
        let job = self.get(&r.sync_job_id).await?;
        Ok(Response::new(proto::GetSyncJobResponse {
            sync_job: Some(convert::sync_job_view(&job.id, &job.doc, full)),
        }))
    }

    async fn list_sync_jobs(
        &self,
        request: Request<proto::ListSyncJobsRequest>,
    ) -> Result<Response<proto::ListSyncJobsResponse>, Status> {
        let r = request.into_inner();
        let full = full_view(r.view)?;
        let mut filter = vec![];
        if !r.connector_id.is_empty() {
            filter.push(serde_json::json!({"term": {"connector.id": r.connector_id}}));
        }
        if let Some(s) = convert::sync_status_from_proto(r.status) {
            filter.push(serde_json::json!({"term": {"status": s.as_str()}}));
        }
        if r.job_type != 0 {
            let t = match proto::JobType::try_from(r.job_type) {
                Ok(proto::JobType::Full) => "full",
                Ok(proto::JobType::Incremental) => "incremental",
                Ok(proto::JobType::AccessControl) => "access_control",
                _ => return Err(Error::invalid("job_type", "unknown job type").into()),
            };
            filter.push(serde_json::json!({"term": {"job_type": t}}));
        }
        let size = super::page::size(r.size);
        let after = super::page::decode(&r.page_token)?;
        // Newest first; connector.id breaks ties of jobs created in one
        // millisecond (jobs of one connector are not created that fast).
        let mut body = serde_json::json!({
            // One more than asked: tells whether a next page exists.
            "size": size + 1, "track_total_hits": true,
            "query": {"bool": {"filter": filter}},
            "sort": [{"created_at": {"order": "desc"}}, {"connector.id": {"order": "asc"}}]
        });
        match after {
            Some(a) => body["search_after"] = serde_json::Value::Array(a),
            None => body["from"] = serde_json::json!(r.from.max(0)),
        }
        let res = self.app.stores.jobs.search(&body).await?;
        let mut res = res;
        let next_page_token = super::page::take_page(&mut res.hits, size);
        let sync_jobs = res.hits.iter().map(|h| convert::sync_job_view(&h.id, &h.source, full)).collect();
        Ok(Response::new(proto::ListSyncJobsResponse { sync_jobs, count: res.total as i64, next_page_token }))
    }

    async fn cancel_sync_job(
        &self,
        request: Request<proto::CancelSyncJobRequest>,
    ) -> Result<Response<proto::CancelSyncJobResponse>, Status> {
        let job = self.cancel(&request.into_inner().sync_job_id).await?;
        Ok(Response::new(proto::CancelSyncJobResponse { sync_job: Some(convert::sync_job(&job)) }))
    }

    async fn delete_sync_job(
        &self,
        request: Request<proto::DeleteSyncJobRequest>,
    ) -> Result<Response<proto::DeleteSyncJobResponse>, Status> {
        let id = request.into_inner().sync_job_id;
        let job = self.get(&id).await?;
        if matches!(job.doc.status, JobStatus::InProgress | JobStatus::Canceling) {
            return Err(Error::FailedPrecondition(format!(
                "sync job {id:?} is {}: cancel it with CancelSyncJob and delete it once it is canceled",
                job.doc.status.as_str()
            ))
            .into());
        }
        // A pending job deleted here could be claimed concurrently; the
        // claim then finds no document and gives up.
        let deleted = self
            .app
            .stores
            .es
            .delete_doc(self.app.stores.jobs.index(), &id, crate::elasticsearch::Refresh::True)
            .await
            .map_err(Error::from)?;
        tracing::info!(job_id = %id, deleted, "sync job deleted");
        Ok(Response::new(proto::DeleteSyncJobResponse { acknowledged: deleted }))
    }
}
