//! `ferry.v1.AgentService/Session`: one long-lived stream per agent.
//!
//! The agent's identity comes from its verified client certificate. The
//! first message must be `Hello` (within [`HELLO_TIMEOUT`]); the control
//! plane answers `Welcome` with the flow-control limits, registers the
//! session and serves it until either side ends it. When a session ends,
//! the jobs it was running are handed back as `pending` with their last
//! acknowledged checkpoint, to be resumed by the next available agent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_sdk::proto::{self, agent_message::Message as In, control_message::Message as Out};
use futures::FutureExt as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::identity::agent_id_from_cert;
use super::registry::{AgentSession, Offer, SessionState, OUTBOUND_QUEUE};
use crate::app::App;
use crate::jobs::dispatcher::send_cancel;
use crate::jobs::ingest::{BatchRefused, JobRun};
use crate::jobs::lifecycle;
use crate::model::{now, ConfigEntry};

pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

pub struct AgentService {
    app: Arc<App>,
}

impl AgentService {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl proto::agent_service_server::AgentService for AgentService {
    type SessionStream = ReceiverStream<Result<proto::ControlMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<proto::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let certs = request
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("no client certificate: agents must connect with mTLS"))?;
        let first = certs.first().ok_or_else(|| Status::unauthenticated("empty client certificate chain"))?;
        let agent_id = agent_id_from_cert(first.as_ref()).map_err(Status::unauthenticated)?;
        if self.app.revoked.contains(&agent_id) {
            tracing::warn!(agent_id = %agent_id, "session refused: the agent is revoked");
            return Err(Status::permission_denied(format!(
                "agent {agent_id:?} is revoked (FleetService/RevokeAgent): its sessions are refused"
            )));
        }
        let address = request.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        // How the agent compresses its stream (`grpc-encoding`), for the log.
        let compression = request
            .metadata()
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("identity")
            .to_owned();
        if self.app.shutdown.is_cancelled() {
            return Err(Status::unavailable(
                "the control plane is shutting down; reconnect to another instance",
            ));
        }
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(proto::AgentMessage { message: Some(In::Hello(h)) }))) => h,
            Ok(Ok(_)) => {
                return Err(Status::invalid_argument("the first message of a session must be Hello"))
            }
            Ok(Err(s)) => return Err(s),
            Err(_) => return Err(Status::deadline_exceeded("no Hello within 10 s of connecting")),
        };
        let offers = validate_hello(&hello)?;
        let (tx, queue) = mpsc::channel(OUTBOUND_QUEUE);
        // The stream itself holds one message: the writer task waits on it
        // (with the send deadline), nobody else does.
        let (wire, rx) = mpsc::channel(1);
        let session = Arc::new(AgentSession {
            session_id: uuid::Uuid::new_v4().to_string(),
            agent_id: agent_id.clone(),
            agent_version: hello.agent_version.clone(),
            hostname: hello.hostname.clone(),
            address,
            connected_at: now(),
            offers,
            max_concurrent_jobs: hello.max_concurrent_jobs.clamp(1, 64) as usize,
            outbound: tx,
            closed: CancellationToken::new(),
            close_reason: Mutex::new(None),
            jobs: Mutex::new(Default::default()),
            state: Mutex::new(SessionState { last_heartbeat: Some(now()), ..Default::default() }),
        });
        let welcome = proto::Welcome {
            protocol_version: ferry_sdk::PROTOCOL_VERSION as i32,
            agent_id: agent_id.clone(),
            session_id: session.session_id.clone(),
            heartbeat_interval_ms: HEARTBEAT_INTERVAL.as_millis() as u32,
            flow_control: Some(self.app.flow_control()),
        };
        session.send(Out::Welcome(welcome));
        tracing::info!(
            agent_id = %agent_id, session_id = %session.session_id, address = %session.address,
            version = %session.agent_version, compression = %compression,
            connectors = ?session.offers.iter().map(|o| o.connector_id.as_str()).collect::<Vec<_>>(),
            "agent connected"
        );
        self.app.registry.insert(session.clone());
        let app = self.app.clone();
        tokio::spawn(super::registry::forward(session.clone(), queue, wire, app.send_timeout));
        tokio::spawn(super::registration::run(app.clone(), session.clone()));
        tokio::spawn(serve(app, session, inbound));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn validate_hello(hello: &proto::Hello) -> Result<Vec<Offer>, Status> {
    let v = hello.protocol_version;
    if v < 1 || v > ferry_sdk::PROTOCOL_VERSION as i32 {
        return Err(Status::failed_precondition(format!(
            "protocol version {v} is not supported: this control plane speaks versions 1 to {}; upgrade the control plane",
            ferry_sdk::PROTOCOL_VERSION as i32
        )));
    }
    if hello.connectors.is_empty() {
        return Err(Status::invalid_argument(
            "Hello lists no connectors: configure at least one connector_id",
        ));
    }
    hello
        .connectors
        .iter()
        .map(|c| {
            if c.connector_id.is_empty() || c.connector_id.len() > 512 {
                return Err(Status::invalid_argument("connector_id must be 1 to 512 bytes"));
            }
            if c.service_type.is_empty() {
                return Err(Status::invalid_argument(format!(
                    "connector {:?} has no service_type",
                    c.connector_id
                )));
            }
            let schema = c
                .configuration_schema
                .iter()
                .map(|(k, f)| (k.clone(), crate::admin::convert::config_entry_from_proto(f)))
                .collect::<std::collections::BTreeMap<String, ConfigEntry>>();
            Ok(Offer {
                connector_id: c.connector_id.clone(),
                service_type: c.service_type.clone(),
                schema,
                features: c.capabilities.as_ref().map(crate::model::connector::Features::from_capabilities),
            })
        })
        .collect()
}

async fn serve(app: Arc<App>, session: Arc<AgentSession>, mut inbound: Streaming<proto::AgentMessage>) {
    let reason = loop {
        let msg = tokio::select! {
            _ = app.shutdown.cancelled() => break "the control plane is shutting down".to_owned(),
            _ = session.closed.cancelled() => break session
                .close_reason
                .lock()
                .expect("close reason lock")
                .clone()
                .unwrap_or_else(|| "the session was closed".to_owned()),
            m = inbound.message() => m,
        };
        let msg = match msg {
            Ok(Some(proto::AgentMessage { message: Some(m) })) => m,
            Ok(Some(_)) => continue,
            Ok(None) => break "the agent closed the session".to_owned(),
            Err(status) => break format!("the stream broke: {}", status.message()),
        };
        match msg {
            In::Hello(_) => tracing::warn!(agent_id = %session.agent_id, "ignoring a second Hello"),
            In::Heartbeat(_) => session.state.lock().expect("state lock").last_heartbeat = Some(now()),
            In::ValidationResult(r) => {
                tokio::spawn(super::registration::on_validation_result(app.clone(), session.clone(), r));
            }
            In::FilteringResult(r) => {
                tokio::spawn(super::filtering::on_result(app.clone(), session.clone(), r));
            }
            In::Batch(batch) => {
                if let Err(reason) = on_batch(&app, &session, batch).await {
                    session.send_status(Status::resource_exhausted(reason.clone()));
                    break reason;
                }
            }
            In::Progress(p) => on_progress(&session, p),
            In::Schema(s) => super::schema::on_schema(&app, &session, s).await,
            In::JobFinished(f) => {
                let run = session.jobs.lock().expect("jobs lock").get(&f.job_id).cloned();
                match run {
                    Some(run) if run.lease_id == f.lease_id => {
                        let app = app.clone();
                        let session = session.clone();
                        tokio::spawn(async move {
                            if let Err(e) = lifecycle::finish(&app, &run, &f).await {
                                tracing::error!(job_id = %run.job_id, "finishing the job failed: {e}");
                            }
                            session.jobs.lock().expect("jobs lock").remove(&run.job_id);
                            app.registry.changed.notify_waiters();
                        });
                    }
                    _ => {
                        tracing::warn!(agent_id = %session.agent_id, job_id = %f.job_id, "JobFinished for a job this session does not hold (stale lease?); ignored")
                    }
                }
            }
        }
    };
    tracing::info!(agent_id = %session.agent_id, session_id = %session.session_id, "agent session ended: {reason}");
    session.closed.cancel();
    // The runs stay in the session (and the session in the registry) while
    // they are released: in-flight bulk requests finish first, and meanwhile
    // the progress loop keeps renewing their leases and lease expiry leaves
    // them alone.
    let runs: Vec<_> = session.jobs.lock().expect("jobs lock").values().cloned().collect();
    for run in runs {
        let why = format!("agent {:?} disconnected: {reason}", session.agent_id);
        if let Err(e) = lifecycle::release(&app, &run, &why).await {
            tracing::warn!(job_id = %run.job_id, "releasing the job failed (its lease will expire): {e}");
        }
        session.jobs.lock().expect("jobs lock").remove(&run.job_id);
    }
    // Removed only now: shutdown waits for the registry to empty, so a
    // SIGTERM leaves every job handed back before the process exits.
    app.registry.remove(&session.session_id);
    app.registry.changed.notify_waiters();
}

/// Merges a running job's progress facts into what the progress loop
/// writes to the job's metadata (bounded: see `JobRun::merge_progress`).
fn on_progress(session: &AgentSession, p: proto::JobProgress) {
    let run = session.jobs.lock().expect("jobs lock").get(&p.job_id).cloned();
    match run.filter(|r| r.lease_id == p.lease_id) {
        Some(run) => {
            let facts = p.metadata.as_ref().map(ferry_sdk::config_schema::struct_to_json).unwrap_or_default();
            run.merge_progress(facts);
        }
        None => tracing::debug!(job_id = %p.job_id, "progress for a job this session does not hold; ignored"),
    }
}

/// Takes one batch. An error ends the session (protocol violation).
async fn on_batch(
    app: &Arc<App>,
    session: &Arc<AgentSession>,
    batch: proto::DocumentBatch,
) -> Result<(), String> {
    let run = session.jobs.lock().expect("jobs lock").get(&batch.job_id).cloned();
    let Some(run) = run.filter(|r| r.lease_id == batch.lease_id) else {
        // Fencing: a batch from an attempt that no longer holds the job.
        tracing::warn!(agent_id = %session.agent_id, job_id = %batch.job_id, "dropping a batch with a stale or unknown lease");
        return Ok(());
    };
    let s = session.clone();
    let r = run.clone();
    let window = app.jobs.max_unacked_batches;
    let accepted = run.accept(batch, &app.bulk, window, move |result| {
        async move {
            match result {
                Ok(ack) => {
                    s.send(Out::BatchAck(ack));
                }
                Err(e) => {
                    let reason = format!("Elasticsearch did not accept a batch: {e}");
                    tracing::error!(job_id = %r.job_id, "{reason}");
                    r.set_fatal(reason.clone());
                    if r.mark_cancel_sent() {
                        send_cancel(&s, &r.job_id, &r.lease_id, &reason);
                    }
                }
            }
        }
        .boxed()
    });
    match accepted {
        Ok(()) => Ok(()),
        Err(e @ BatchRefused::WindowExceeded(_)) => Err(e.to_string()),
        Err(BatchRefused::Violation(reason)) => {
            end_run(app, session, &run, &reason).await;
            Ok(())
        }
    }
}

/// Ends a run in error because of what its agent sent: its in-flight
/// batches are dropped (memory back at once), the job fails with `reason`,
/// and the agent is told to stop. Its later batches carry a lease this
/// session no longer holds and are dropped; the session goes on.
async fn end_run(app: &Arc<App>, session: &Arc<AgentSession>, run: &Arc<JobRun>, reason: &str) {
    tracing::error!(job_id = %run.job_id, agent_id = %session.agent_id, "{reason}");
    run.set_fatal(reason.to_owned());
    run.abandon_in_flight();
    session.jobs.lock().expect("jobs lock").remove(&run.job_id);
    if run.mark_cancel_sent() {
        send_cancel(session, &run.job_id, &run.lease_id, reason);
    }
    if let Err(e) = lifecycle::fail_job(app, &run.job_id, &run.lease_id, reason).await {
        tracing::warn!(job_id = %run.job_id, "failing the job failed (its lease will expire): {e}");
    }
    app.registry.changed.notify_waiters();
}
