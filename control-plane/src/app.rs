//! Shared state of one control plane instance.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::agents::registry::Registry;
use crate::config::JobSettings;
use crate::elasticsearch::BulkIndexer;
use crate::store::Stores;

pub struct App {
    pub stores: Stores,
    /// Connectors as last read (see `store::cache`): what sessions, the
    /// dispatcher and the scheduler read instead of one GET each.
    pub connector_cache: Arc<crate::store::cache::ConnectorCache>,
    /// Connectors whose `last_seen` is due now (batched, see `registration`).
    pub last_seen: crate::agents::registration::LastSeenQueue,
    pub bulk: BulkIndexer,
    pub registry: Arc<Registry>,
    pub jobs: JobSettings,
    /// `agents.require_binding`: unbound connectors are served by nobody.
    pub require_binding: bool,
    /// `agents.send_timeout_s`: how long one message to an agent may wait
    /// for the agent to read its stream before the session is closed.
    pub send_timeout: std::time::Duration,
    /// Identifies this instance in job documents (`ferry.control_plane`).
    pub instance_id: String,
    /// Signs enrollment certificates; `None`: enrollment not configured.
    pub enrollment: Option<Arc<crate::enrollment::Signer>>,
    /// Revoked agent ids (cached, see `enrollment`).
    pub revoked: Arc<crate::enrollment::Revoked>,
    /// Fires when the process begins shutting down.
    pub shutdown: CancellationToken,
}

impl App {
    pub fn flow_control(&self) -> ferry_sdk::proto::FlowControl {
        ferry_sdk::proto::FlowControl {
            max_unacked_batches: self.jobs.max_unacked_batches,
            max_batch_bytes: self.jobs.max_batch_bytes,
            max_batch_documents: self.jobs.max_batch_documents,
        }
    }
}
