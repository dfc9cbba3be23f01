//! The agents connected to this control plane instance, and what each one
//! is doing. Only in memory: it describes live sessions, and everything that
//! must outlive them is in Elasticsearch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
    pub outbound: Outbound,
    /// Fires when the session ends (either side).
    pub closed: CancellationToken,
    pub jobs: Mutex<HashMap<String, Arc<JobRun>>>,
    pub state: Mutex<SessionState>,
}

#[derive(Default)]
pub struct SessionState {
    pub last_heartbeat: Option<Timestamp>,
    /// connector id → revision whose check this session asked for or answered.
    pub validations: HashMap<String, ValidationState>,
    /// connector id → when this session last wrote `last_seen`.
    pub last_seen_written: HashMap<String, std::time::Instant>,
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

    pub fn running_jobs(&self) -> usize {
        self.jobs.lock().expect("jobs lock").len()
    }

    pub fn has_capacity(&self) -> bool {
        self.running_jobs() < self.max_concurrent_jobs
    }

    /// Queues a message; false when the session is gone.
    pub async fn send(&self, msg: proto::control_message::Message) -> bool {
        self.outbound.send(Ok(proto::ControlMessage { message: Some(msg) })).await.is_ok()
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
