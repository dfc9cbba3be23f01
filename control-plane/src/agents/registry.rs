//! The agents connected to this control plane instance, and what each one
//! is doing. Only in memory: it describes live sessions, and everything that
//! must outlive them is in Elasticsearch.
//!
//! Sending to an agent never waits for it. [`AgentSession::send`] puts the
//! message on the session's bounded outbound queue ([`OUTBOUND_QUEUE`]) and
//! returns; the session's own writer task ([`forward`]) moves it onto the
//! gRPC stream. An agent that stops reading its stream (its HTTP/2 window
//! fills) stalls only that writer: when one message waits longer than the
//! send deadline (`agents.send_timeout_s`), or the queue is full, the
//! session is closed (its jobs are handed back by the serve loop). The
//! dispatcher, the progress loop, lease expiry and admin calls such as
//! `CancelSyncJob` therefore never wait on one agent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_sdk::proto;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::jobs::ingest::JobRun;
use crate::model::{ConfigEntry, Timestamp};

/// One connector an agent offered to serve.
#[derive(Debug, Clone)]
pub struct Offer {
    pub connector_id: String,
    pub service_type: String,
    pub schema: std::collections::BTreeMap<String, ConfigEntry>,
    /// What the agent's source supports (`None`: an agent too old to say).
    pub features: Option<crate::model::connector::Features>,
}

pub type Outbound = mpsc::Sender<Result<proto::ControlMessage, tonic::Status>>;

/// Messages queued for one agent, not yet taken by its stream. A healthy
/// agent reads them within milliseconds; what one session can have pending
/// without the agent reading (acks within its windows, a check per
/// connector, assignments and cancels) stays well below this.
pub const OUTBOUND_QUEUE: usize = 1024;

/// A live agent session.
pub struct AgentSession {
    pub session_id: String,
    pub agent_id: String,
    pub agent_version: String,
    pub hostname: String,
    pub address: String,
    pub connected_at: Timestamp,
    pub offers: Vec<Offer>,
    pub max_concurrent_jobs: usize,
    /// The bounded outbound queue (see the module docs); use [`AgentSession::send`].
    pub outbound: Outbound,
    /// Fires when the session ends (either side).
    pub closed: CancellationToken,
    /// Why the control plane closed the session, when it did.
    pub close_reason: Mutex<Option<String>>,
    pub jobs: Mutex<HashMap<String, Arc<JobRun>>>,
    pub state: Mutex<SessionState>,
}

#[derive(Default)]
pub struct SessionState {
    pub last_heartbeat: Option<Timestamp>,
    /// connector id → revision whose check this session asked for or answered.
    pub validations: HashMap<String, ValidationState>,
    pub refused: std::collections::HashSet<String>,
    /// connector id → draft sync rules revision this session was asked to check.
    pub filtering_checks: HashMap<String, (String, std::time::Instant)>,
    /// Unbound connectors this session was warned about (once each).
    pub warned_unbound: std::collections::HashSet<String>,
}

#[derive(Debug, Clone)]
pub struct ValidationState {
    pub revision: String,
    pub answered: bool,
    pub at: std::time::Instant,
}

impl AgentSession {
    pub fn serves(&self, connector_id: &str) -> bool {
        self.offers.iter().any(|o| o.connector_id == connector_id)
    }

    /// May this session run the connector's jobs and receive its
    /// configuration? Every refusal rule of registration applies: the
    /// binding (`authz::verdict`), the service_type of the offer, and a
    /// refusal this session was told about and not lifted since.
    pub fn may_serve(
        &self,
        connector_id: &str,
        connector: &crate::model::ConnectorDoc,
        require_binding: bool,
    ) -> bool {
        let Some(offer) = self.offers.iter().find(|o| o.connector_id == connector_id) else { return false };
        !connector.deleted
            && super::authz::verdict(connector, &self.agent_id, require_binding).may_serve()
            && super::authz::service_type_refusal(connector, &self.agent_id, &offer.service_type).is_none()
            && !self.state.lock().expect("state lock").refused.contains(connector_id)
    }

    pub fn running_jobs(&self) -> usize {
        self.jobs.lock().expect("jobs lock").len()
    }

    pub fn has_capacity(&self) -> bool {
        self.running_jobs() < self.max_concurrent_jobs
    }

    /// Queues a message without waiting; false when the session is gone.
    /// A full queue means the agent stopped reading: the session is closed.
    pub fn send(&self, msg: proto::control_message::Message) -> bool {
        self.push(Ok(proto::ControlMessage { message: Some(msg) }))
    }

    /// Queues the status that ends the stream (best effort, no waiting).
    pub fn send_status(&self, status: tonic::Status) {
        let _ = self.outbound.try_send(Err(status));
    }

    fn push(&self, item: Result<proto::ControlMessage, tonic::Status>) -> bool {
        if self.closed.is_cancelled() {
            return false;
        }
        match self.outbound.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close(format!(
                    "the agent stopped reading its stream: {OUTBOUND_QUEUE} messages are waiting for it"
                ));
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Ends the session from the control plane's side; the serve loop then
    /// hands its jobs back. The first reason wins.
    pub fn close(&self, reason: String) {
        {
            let mut r = self.close_reason.lock().expect("close reason lock");
            if r.is_none() {
                tracing::warn!(agent_id = %self.agent_id, session_id = %self.session_id, "closing the agent session: {reason}");
                *r = Some(reason);
            }
        }
        self.closed.cancel();
    }
}

/// The session's writer: moves queued messages onto the gRPC stream, each
/// within `deadline`, until the session closes or the stream is gone.
/// A message the stream does not take in time closes the session.
pub async fn forward(
    session: Arc<AgentSession>,
    mut queue: mpsc::Receiver<Result<proto::ControlMessage, tonic::Status>>,
    wire: Outbound,
    deadline: Duration,
) {
    loop {
        let item = tokio::select! {
            biased;
            _ = session.closed.cancelled() => {
                // Whatever is already queued (the status that ends the
                // stream, typically) goes out if the stream has room now.
                while let Ok(item) = queue.try_recv() {
                    if wire.try_send(item).is_err() {
                        break;
                    }
                }
                return;
            }
            item = queue.recv() => match item {
                Some(item) => item,
                None => return,
            },
        };
        let ends_stream = item.is_err();
        match tokio::time::timeout(deadline, wire.send(item)).await {
            Ok(Ok(())) if !ends_stream => {}
            Ok(Ok(())) => return,
            Ok(Err(_)) => {
                session.close("the stream to the agent is gone".into());
                return;
            }
            Err(_) => {
                session.close(format!(
                    "the agent did not read its stream for {} s (agents.send_timeout_s)",
                    deadline.as_secs()
                ));
                return;
            }
        }
    }
}

#[derive(Default)]
pub struct Registry {
    sessions: Mutex<HashMap<String, Arc<AgentSession>>>,
    /// Wakes the dispatcher and reconcilers when something changed
    /// (a new agent, a new job, a configuration update).
    pub changed: Notify,
}

impl Registry {
    pub fn insert(&self, s: Arc<AgentSession>) {
        let mut sessions = self.sessions.lock().expect("registry lock");
        sessions.insert(s.session_id.clone(), s);
        crate::metrics::METRICS.agents_connected.set(sessions.len() as i64);
        drop(sessions);
        self.changed.notify_waiters();
    }

    pub fn remove(&self, session_id: &str) {
        let mut sessions = self.sessions.lock().expect("registry lock");
        sessions.remove(session_id);
        crate::metrics::METRICS.agents_connected.set(sessions.len() as i64);
    }

    pub fn all(&self) -> Vec<Arc<AgentSession>> {
        let mut v: Vec<_> = self.sessions.lock().expect("registry lock").values().cloned().collect();
        v.sort_by(|a, b| a.agent_id.cmp(&b.agent_id).then(a.session_id.cmp(&b.session_id)));
        v
    }

    /// Sessions that serve `connector_id`, least busy first.
    pub fn serving(&self, connector_id: &str) -> Vec<Arc<AgentSession>> {
        let mut v: Vec<_> =
            self.all().into_iter().filter(|s| s.serves(connector_id) && !s.closed.is_cancelled()).collect();
        v.sort_by_key(|s| s.running_jobs());
        v
    }

    /// The session running `job_id` on this instance, if any.
    pub fn running(&self, job_id: &str) -> Option<(Arc<AgentSession>, Arc<JobRun>)> {
        self.all().into_iter().find_map(|s| {
            let run = s.jobs.lock().expect("jobs lock").get(job_id).cloned();
            run.map(|r| (s, r))
        })
    }
}
