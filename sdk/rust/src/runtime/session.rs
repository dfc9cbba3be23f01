//! One session: a single `AgentService/Session` stream from Hello to loss.
//!
//! Inbound messages are handled in order on one task; long work (config
//! checks, jobs) runs in spawned tasks that talk back through the bounded
//! outbound queue. Acknowledgements return flow-control permits to the job
//! they belong to, and only if they carry the job's current lease.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::connect::{Dialer, MAX_MESSAGE_BYTES};
use super::AgentSettings;
use crate::config_schema::{values_from_proto, ConfigValues};
use crate::proto::{self, agent_message::Message as Out, control_message::Message as In};
use crate::source::{
    DocumentSender, FlowWindow, IncrementalMode, Job, JobKind, Source, SourceError, SyncStopped,
};

/// How a session ended.
pub(super) enum End {
    Shutdown,
    Lost(String),
}

/// Outbound queue depth: batches are bounded by the flow-control window
/// already, this only absorbs bursts of small messages.
const OUTBOUND_QUEUE: usize = 64;

struct RunningJob {
    lease_id: String,
    cancel: CancellationToken,
    window: Arc<FlowWindow>,
}

pub(super) async fn run(
    settings: &AgentSettings,
    dialer: &Dialer,
    sources: Arc<Vec<Arc<dyn Source>>>,
    shutdown: CancellationToken,
) -> End {
    let channel = tokio::select! {
        _ = shutdown.cancelled() => return End::Shutdown,
        c = dialer.connect() => match c {
            Ok(c) => c,
            Err(e) => return End::Lost(format!("cannot connect: {}", error_chain(&e))),
        },
    };
    let mut client = proto::agent_service_client::AgentServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    if let Some(encoding) = settings.compression.encoding() {
        client = client.send_compressed(encoding);
    }
    let (tx, rx) = mpsc::channel::<proto::AgentMessage>(OUTBOUND_QUEUE);
    let hello = proto::Hello {
        protocol_version: crate::PROTOCOL_VERSION as i32,
        agent_version: settings.agent_version.clone(),
        hostname: hostname(),
        connectors: settings
            .connectors
            .iter()
            .map(|c| {
                let source = sources.iter().find(|s| s.service_type() == c.service_type);
                proto::ServedConnector {
                    connector_id: c.connector_id.clone(),
                    service_type: c.service_type.clone(),
                    configuration_schema: source
                        .map(|s| {
                            s.configuration_schema().into_iter().map(|(k, f)| (k, f.to_proto())).collect()
                        })
                        .unwrap_or_default(),
                    capabilities: source.map(|s| s.capabilities().to_proto()),
                }
            })
            .collect(),
        max_concurrent_jobs: settings.max_concurrent_jobs.max(1),
    };
    // Cannot fail: the receiver is alive and the queue empty.
    let _ = tx.send(proto::AgentMessage { message: Some(Out::Hello(hello)) }).await;
    let response = tokio::select! {
        _ = shutdown.cancelled() => return End::Shutdown,
        r = client.session(ReceiverStream::new(rx)) => r,
    };
    let mut inbound = match response {
        Ok(r) => r.into_inner(),
        Err(status) => return End::Lost(describe_status(&status)),
    };
    let welcome = match inbound.message().await {
        Ok(Some(proto::ControlMessage { message: Some(In::Welcome(w)) })) => w,
        Ok(Some(other)) => return End::Lost(format!("expected Welcome, got {other:?}")),
        Ok(None) => return End::Lost("the control plane closed the session before Welcome".into()),
        Err(status) => return End::Lost(describe_status(&status)),
    };
    tracing::info!(agent_id = %welcome.agent_id, session_id = %welcome.session_id, "connected to the control plane");
    crate::metrics::AGENT.connected.set(1);
    let _connected = ConnectedGauge;

    let session_token = shutdown.child_token();
    let mut jobs: HashMap<String, RunningJob> = HashMap::new();
    let mut tasks: JoinSet<Option<String>> = JoinSet::new();
    let heartbeat_every = Duration::from_millis(u64::from(welcome.heartbeat_interval_ms.clamp(200, 60_000)));
    let mut heartbeat = tokio::time::interval(heartbeat_every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let end = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break End::Shutdown,
            _ = heartbeat.tick() => {
                let running_job_ids = jobs.keys().cloned().collect();
                let msg = proto::AgentMessage { message: Some(Out::Heartbeat(proto::Heartbeat { running_job_ids })) };
                if tx.send(msg).await.is_err() {
                    break End::Lost("outbound stream closed".into());
                }
            }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(Some(job_id)) = done {
                    jobs.remove(&job_id);
                }
            }
            msg = inbound.message() => {
                let msg = match msg {
                    Ok(Some(proto::ControlMessage { message: Some(m) })) => m,
                    Ok(Some(_)) => continue,
                    Ok(None) => break End::Lost("the control plane closed the session".into()),
                    Err(status) => break End::Lost(describe_status(&status)),
                };
                match msg {
                    In::Welcome(_) => tracing::warn!("ignoring a second Welcome"),
                    In::ValidateConfiguration(v) => {
                        let Some(source) = source_for(&sources, settings, &v.connector_id) else {
                            tracing::warn!(connector_id = %v.connector_id, "asked to validate a connector this agent does not serve");
                            continue;
                        };
                        let tx = tx.clone();
                        let token = session_token.clone();
                        tasks.spawn(async move {
                            let values: ConfigValues = values_from_proto(&v.values);
                            let result = tokio::select! {
                                _ = token.cancelled() => return None,
                                r = source.validate(&values) => r,
                            };
                            if let Err(e) = &result {
                                tracing::warn!(connector_id = %v.connector_id, "configuration check failed: {e}");
                            }
                            let msg = proto::ValidationResult {
                                connector_id: v.connector_id,
                                revision: v.revision,
                                ok: result.is_ok(),
                                error: result.err().map(|e| e.to_string()).unwrap_or_default(),
                            };
                            let _ = tx.send(proto::AgentMessage { message: Some(Out::ValidationResult(msg)) }).await;
                            None
                        });
                    }
                    In::ValidateFiltering(v) => {
                        let Some(source) = source_for(&sources, settings, &v.connector_id) else {
                            tracing::warn!(connector_id = %v.connector_id, "asked to validate sync rules of a connector this agent does not serve");
                            continue;
                        };
                        let tx = tx.clone();
                        let token = session_token.clone();
                        tasks.spawn(async move {
                            let values: ConfigValues = values_from_proto(&v.configuration);
                            let rules = crate::rules::SyncRules::from_proto(v.rules.as_ref());
                            let errors = tokio::select! {
                                _ = token.cancelled() => return None,
                                r = source.validate_rules(&values, &rules) => r,
                            };
                            tracing::info!(connector_id = %v.connector_id, errors = errors.len(), "sync rules checked");
                            let msg = proto::FilteringResult {
                                connector_id: v.connector_id,
                                revision: v.revision,
                                errors: errors
                                    .into_iter()
                                    .map(|e| proto::FilteringValidationError { ids: e.ids, messages: vec![e.message] })
                                    .collect(),
                            };
                            let _ = tx.send(proto::AgentMessage { message: Some(Out::FilteringResult(msg)) }).await;
                            None
                        });
                    }
                    In::AssignJob(a) => {
                        let Some(source) = source_for(&sources, settings, &a.connector_id) else {
                            tracing::warn!(connector_id = %a.connector_id, job_id = %a.job_id, "assigned a job for a connector this agent does not serve");
                            continue;
                        };
                        if jobs.contains_key(&a.job_id) {
                            tracing::warn!(job_id = %a.job_id, "job assigned twice in one session; ignoring the second");
                            continue;
                        }
                        let flow = a.flow_control.or(welcome.flow_control).unwrap_or_default();
                        let window = Arc::new(FlowWindow::new(&flow));
                        let cancel = session_token.child_token();
                        jobs.insert(a.job_id.clone(), RunningJob { lease_id: a.lease_id.clone(), cancel: cancel.clone(), window: window.clone() });
                        tasks.spawn(run_job(source, a, flow, window, cancel, session_token.clone(), tx.clone()));
                    }
                    In::BatchAck(ack) => match jobs.get(&ack.job_id) {
                        Some(job) if job.lease_id == ack.lease_id => {
                            crate::metrics::AGENT.batches_acknowledged.inc();
                            if !job.window.release(ack.sequence) {
                                tracing::debug!(job_id = %ack.job_id, sequence = ack.sequence, "ack for a batch not in flight");
                            }
                        }
                        _ => tracing::debug!(job_id = %ack.job_id, "ack for a job not running here"),
                    },
                    In::CancelJob(c) => {
                        if let Some(job) = jobs.get(&c.job_id) {
                            tracing::info!(job_id = %c.job_id, reason = %c.reason, "canceling job");
                            job.cancel.cancel();
                        }
                    }
                    In::ReleaseConnector(r) => {
                        let Some(source) = source_for(&sources, settings, &r.connector_id) else {
                            tracing::warn!(connector_id = %r.connector_id, "asked to release a connector this agent does not serve");
                            continue;
                        };
                        let token = session_token.clone();
                        tasks.spawn(async move {
                            tracing::info!(connector_id = %r.connector_id, "the connector was deleted; releasing what the source holds for it");
                            let values: ConfigValues = values_from_proto(&r.configuration);
                            // Bounded: a source that hangs must not keep the task forever.
                            let result = tokio::select! {
                                _ = token.cancelled() => return None,
                                r = tokio::time::timeout(Duration::from_secs(60), source.release_connector(&r.connector_id, &values)) => r,
                            };
                            match result {
                                Ok(Ok(())) => tracing::info!(connector_id = %r.connector_id, "connector released"),
                                Ok(Err(e)) => tracing::error!(connector_id = %r.connector_id, "could not release the deleted connector's resources on the source: {e}"),
                                Err(_) => tracing::error!(connector_id = %r.connector_id, "releasing the deleted connector's resources took over 60 s; gave up"),
                            }
                            None
                        });
                    }
                    In::ConnectorRefused(r) => {
                        tracing::error!(connector_id = %r.connector_id, "the control plane refuses this agent for the connector: {}", r.reason);
                    }
                }
            }
        }
    };
    // Stop every job of this session. Their unacknowledged batches are
    // re-read by the next attempt, which resumes from the last acknowledged
    // checkpoint.
    session_token.cancel();
    drop(tx);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain).await.is_err() {
        tracing::warn!("jobs did not stop within 10 s of the session ending");
    }
    end
}

fn source_for(
    sources: &[Arc<dyn Source>],
    settings: &AgentSettings,
    connector_id: &str,
) -> Option<Arc<dyn Source>> {
    let c = settings.connectors.iter().find(|c| c.connector_id == connector_id)?;
    sources.iter().find(|s| s.service_type() == c.service_type).cloned()
}

async fn run_job(
    source: Arc<dyn Source>,
    assignment: proto::AssignJob,
    flow: proto::FlowControl,
    window: Arc<FlowWindow>,
    cancel: CancellationToken,
    session_token: CancellationToken,
    tx: mpsc::Sender<proto::AgentMessage>,
) -> Option<String> {
    // Strict: a job type this agent does not know, or its source does not
    // declare, is refused before the source sees it — never run as a full
    // sync (that would, for an incremental job, re-read everything and then
    // let the control plane treat it as a change stream).
    let kind = JobKind::try_from(assignment.job_type).and_then(|k| {
        if source.capabilities().job_kinds.contains(&k) {
            Ok(k)
        } else {
            Err(format!("this agent's {} source does not run {k} syncs", source.service_type()))
        }
    });
    let kind = match kind {
        Ok(k) => k,
        Err(reason) => {
            tracing::warn!(job_id = %assignment.job_id, "refusing job: {reason}");
            if !session_token.is_cancelled() {
                let finished = proto::JobFinished {
                    job_id: assignment.job_id.clone(),
                    lease_id: assignment.lease_id,
                    last_sequence: 0,
                    outcome: Some(proto::job_finished::Outcome::Failed(proto::JobFailed {
                        kind: proto::FailureKind::Unsupported as i32,
                        message: reason,
                    })),
                    metadata: None,
                };
                let _ = tx.send(proto::AgentMessage { message: Some(Out::JobFinished(finished)) }).await;
            }
            return Some(assignment.job_id);
        }
    };
    let job = Job {
        id: assignment.job_id.clone(),
        connector_id: assignment.connector_id.clone(),
        kind,
        mode: IncrementalMode::from_proto(assignment.incremental_mode),
        sync_cursor: (!assignment.sync_cursor.is_empty()).then(|| assignment.sync_cursor.clone()),
        index_name: assignment.index_name.clone(),
        config: values_from_proto(&assignment.configuration),
        resume_checkpoint: (!assignment.resume_checkpoint.is_empty())
            .then(|| assignment.resume_checkpoint.clone()),
        cancel: cancel.clone(),
        rules: crate::rules::SyncRules::from_proto(assignment.filtering.as_ref()),
    };
    tracing::info!(job_id = %job.id, connector_id = %job.connector_id, resumed = job.resume_checkpoint.is_some(), "job started");
    let mut out = DocumentSender::new(
        job.id.clone(),
        assignment.lease_id.clone(),
        tx.clone(),
        window,
        &flow,
        cancel.clone(),
    );
    crate::metrics::AGENT.jobs_running.inc();
    let result = source.sync(&job, &mut out).await;
    crate::metrics::AGENT.jobs_running.dec();
    let result = match result {
        Ok(()) => out.finish().await.map(|_| ()).map_err(SourceError::from),
        Err(e) => Err(e),
    };
    if session_token.is_cancelled() {
        // The session is gone: nobody can hear the outcome. The control plane
        // resumes the job from its checkpoint.
        tracing::info!(job_id = %job.id, "job stopped with the session");
        return Some(job.id);
    }
    let outcome = match &result {
        Ok(()) => proto::job_finished::Outcome::Completed(proto::JobCompleted {}),
        Err(SourceError::Stopped(SyncStopped::Canceled)) => {
            proto::job_finished::Outcome::Canceled(proto::JobCanceled {})
        }
        Err(e) => proto::job_finished::Outcome::Failed(proto::JobFailed {
            kind: e.failure_kind() as i32,
            message: e.to_string(),
        }),
    };
    let outcome_label = match &outcome {
        proto::job_finished::Outcome::Completed(_) => "completed",
        proto::job_finished::Outcome::Canceled(_) => "canceled",
        proto::job_finished::Outcome::Failed(_) => "failed",
    };
    crate::metrics::AGENT.jobs_finished.get_or_create(&vec![("outcome", outcome_label.to_owned())]).inc();
    match &result {
        Ok(()) => tracing::info!(job_id = %job.id, documents = out.documents_sent(), "job completed"),
        Err(e) => tracing::warn!(job_id = %job.id, documents = out.documents_sent(), "job ended: {e}"),
    }
    let finished = proto::JobFinished {
        job_id: job.id.clone(),
        lease_id: assignment.lease_id,
        last_sequence: out.last_sequence(),
        outcome: Some(outcome),
        metadata: Some(crate::config_schema::json_to_struct(&out.take_metadata())),
    };
    let _ = tx.send(proto::AgentMessage { message: Some(Out::JobFinished(finished)) }).await;
    Some(job.id)
}

/// Sets `ferry_agent_connected` back to 0 however the session ends.
struct ConnectedGauge;

impl Drop for ConnectedGauge {
    fn drop(&mut self) {
        crate::metrics::AGENT.connected.set(0);
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_owned()))
        .unwrap_or_default()
}

fn describe_status(status: &tonic::Status) -> String {
    let mut s = format!("{:?}: {}", status.code(), status.message());
    if let Some(src) = std::error::Error::source(status) {
        s.push_str(&format!(" ({})", error_chain(src)));
    }
    s
}

pub(super) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        // Wrappers often repeat their source's text (tonic does for a
        // connector's io::Error): say it once.
        let text = c.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}
