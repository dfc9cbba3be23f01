//! The contract between an agent's source code and the runtime.
//!
//! A [`Source`] knows one kind of data source. The runtime calls
//! [`Source::validate`] when a user sets a connector's configuration (the
//! answer decides `connected` vs `error`) and [`Source::sync`] for every job
//! assigned to the agent. `sync` pushes documents into a [`DocumentSender`],
//! which batches them by bytes and count and waits whenever the control
//! plane has as many unacknowledged batches as the flow-control window
//! allows, or as many unacknowledged bytes as that window of full batches
//! (see [`FlowWindow`]): a source that simply awaits `send` runs exactly as
//! fast as Elasticsearch accepts documents, with memory bounded in bytes even
//! when single documents are larger than a batch.
//!
//! Checkpoints: after sending documents, a source may call
//! [`DocumentSender::checkpoint`] with an opaque position ("everything up to
//! here was handed over"). The runtime attaches the latest one to each batch;
//! the control plane persists the checkpoint of the last batch Elasticsearch
//! acknowledged, and a resumed attempt of the job receives it in
//! [`Job::resume_checkpoint`]. Documents between that checkpoint and the
//! failure are sent again; ids are deterministic, so they overwrite.
//!
//! Incremental jobs ([`JobKind::Incremental`]) send changes rather than
//! documents: [`DocumentSender::index`], [`DocumentSender::update`]
//! (partial), [`DocumentSender::delete`] and
//! [`DocumentSender::delete_matching`], each with a version (the change's
//! position, increasing per document). The control plane applies the
//! operations on one id in the order sent. Their checkpoints are JSON
//! objects; the checkpoint of the acknowledged prefix
//! ([`DocumentSender::acknowledged_checkpoint`]) is what the source may tell
//! its upstream is durable (PostgreSQL: the slot's confirmed flush LSN).
//!
//! The runtime refuses a job whose type the source does not declare in
//! [`Source::capabilities`] (or does not know): `sync` is never called for
//! it, and the job fails with `FAILURE_KIND_UNSUPPORTED`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config_schema::{ConfigFieldSpec, ConfigValues};
use crate::proto;
use crate::rules::{RuleError, SyncRules};

/// Kind of sync job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Full,
    Incremental,
    AccessControl,
}

/// What a source can do, announced per served connector in `Hello`
/// (`ServedConnector.capabilities`). The control plane never assigns a job
/// type missing here and writes the connector's `features` from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceCapabilities {
    pub job_kinds: Vec<JobKind>,
    pub basic_rules: bool,
    pub advanced_rules: bool,
}

impl Default for SourceCapabilities {
    /// Full syncs without sync rules: what a source that overrides neither
    /// [`Source::validate_rules`] nor [`Source::capabilities`] can do.
    fn default() -> Self {
        SourceCapabilities { job_kinds: vec![JobKind::Full], basic_rules: false, advanced_rules: false }
    }
}

impl SourceCapabilities {
    pub(crate) fn to_proto(&self) -> proto::SourceCapabilities {
        proto::SourceCapabilities {
            job_types: self.job_kinds.iter().map(|k| k.to_proto() as i32).collect(),
            basic_rules: self.basic_rules,
            advanced_rules: self.advanced_rules,
        }
    }
}

impl TryFrom<i32> for JobKind {
    type Error = String;

    /// Strict: an unknown or unspecified job type is an error, never a full
    /// sync (an old agent must not run a full sync for a job type it does
    /// not know).
    fn try_from(value: i32) -> Result<Self, Self::Error> {
        match proto::JobType::try_from(value) {
            Ok(proto::JobType::Full) => Ok(JobKind::Full),
            Ok(proto::JobType::Incremental) => Ok(JobKind::Incremental),
            Ok(proto::JobType::AccessControl) => Ok(JobKind::AccessControl),
            Ok(proto::JobType::Unspecified) => Err("the job has no job type".into()),
            Err(_) => Err(format!("job type {value} is unknown to this agent: upgrade the agent")),
        }
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JobKind::Full => "full",
            JobKind::Incremental => "incremental",
            JobKind::AccessControl => "access_control",
        })
    }
}

/// How an incremental job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncrementalMode {
    /// Apply what is there when the job starts, then return `Ok` (the job
    /// completes). Scheduled and on-demand incremental jobs.
    #[default]
    Drain,
    /// Stream changes until `job.cancel` fires.
    Continuous,
}

impl IncrementalMode {
    pub(crate) fn from_proto(value: i32) -> Self {
        match proto::IncrementalMode::try_from(value) {
            Ok(proto::IncrementalMode::Continuous) => IncrementalMode::Continuous,
            _ => IncrementalMode::Drain,
        }
    }
}

impl JobKind {
    pub(crate) fn to_proto(self) -> proto::JobType {
        match self {
            JobKind::Full => proto::JobType::Full,
            JobKind::Incremental => proto::JobType::Incremental,
            JobKind::AccessControl => proto::JobType::AccessControl,
        }
    }
}

/// One job as the source sees it.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub connector_id: String,
    pub kind: JobKind,
    pub index_name: String,
    pub config: ConfigValues,
    /// Position to resume from, as this source wrote it in an earlier attempt.
    pub resume_checkpoint: Option<Vec<u8>>,
    /// Canceled when the user cancels the job or the agent shuts down.
    pub cancel: CancellationToken,
    /// The connector's active sync rules.
    pub rules: SyncRules,
    /// Incremental jobs: drain and complete, or stream until canceled.
    pub mode: IncrementalMode,
    /// Incremental jobs: the connector's `sync_cursor` (a JSON object) when
    /// the job was created; `None` when the connector has none yet.
    pub sync_cursor: Option<Vec<u8>>,
}

impl Job {
    /// Where an incremental job starts: the checkpoint of an earlier attempt
    /// of this job if there is one, else the connector's cursor.
    pub fn start_position(&self) -> Option<&[u8]> {
        self.resume_checkpoint.as_deref().or(self.sync_cursor.as_deref())
    }
}

/// Why a sync stopped before the source finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SyncStopped {
    #[error("the job was canceled")]
    Canceled,
    #[error("the connection to the control plane was lost")]
    SessionLost,
}

/// A failure of the source, told to the user on the job and connector.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    /// The source cannot be reached or refused the credentials.
    #[error("{0}")]
    Unreachable(String),
    /// The configuration is wrong (missing table, bad value...).
    #[error("{0}")]
    Configuration(String),
    /// Anything else that went wrong while reading.
    #[error("{0}")]
    Internal(String),
    /// The job asks for something this source does not do.
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Stopped(#[from] SyncStopped),
}

impl SourceError {
    pub(crate) fn failure_kind(&self) -> proto::FailureKind {
        match self {
            SourceError::Unreachable(_) => proto::FailureKind::SourceUnreachable,
            SourceError::Configuration(_) => proto::FailureKind::Configuration,
            SourceError::Unsupported(_) => proto::FailureKind::Unsupported,
            SourceError::Internal(_) | SourceError::Stopped(_) => proto::FailureKind::Internal,
        }
    }
}

/// One kind of data source.
#[async_trait]
pub trait Source: Send + Sync + 'static {
    /// The `service_type` this source serves, e.g. `postgresql`.
    fn service_type(&self) -> &str;

    /// The configuration schema registered on the connector, key → field.
    fn configuration_schema(&self) -> Vec<(String, ConfigFieldSpec)>;

    /// What this source can do (job types, sync rules); sent to the control
    /// plane in `Hello`. Keep it consistent with [`Source::validate_rules`].
    fn capabilities(&self) -> SourceCapabilities {
        SourceCapabilities::default()
    }

    /// Check the values and reach the source (connect and ping). Errors are
    /// shown to the user, so say what to fix.
    async fn validate(&self, config: &ConfigValues) -> Result<(), SourceError>;

    /// Check draft sync rules against the source; no errors means valid.
    /// A source that applies no rules refuses every rule (the default).
    async fn validate_rules(&self, _config: &ConfigValues, rules: &SyncRules) -> Vec<RuleError> {
        let mut errors: Vec<RuleError> = rules
            .basic
            .iter()
            .map(|r| {
                RuleError::new(
                    &r.id,
                    format!("{} sources do not apply basic sync rules", self.service_type()),
                )
            })
            .collect();
        if !rules.advanced.is_null() {
            errors.push(RuleError::new(
                "advanced_snippet",
                format!("{} sources do not apply advanced sync rules", self.service_type()),
            ));
        }
        errors
    }

    /// Read the source and send every document. Return `Ok` only when all
    /// documents were sent; stop promptly when `job.cancel` fires.
    async fn sync(&self, job: &Job, out: &mut DocumentSender) -> Result<(), SourceError>;

    /// The connector was deleted: release what this source holds for it
    /// (PostgreSQL: its replication slot and publication). `config` holds
    /// the connector's last configuration values. Called at most once per
    /// notice; errors are logged. The default holds nothing.
    async fn release_connector(
        &self,
        _connector_id: &str,
        _config: &ConfigValues,
    ) -> Result<(), SourceError> {
        Ok(())
    }
}

/// A job's flow-control window as the agent keeps it: at most
/// `max_unacked_batches` batches **and** at most `max_unacked_batches ×
/// max_batch_bytes` bytes sent and not yet acknowledged.
///
/// The control plane only counts batches, and batches are cut at
/// `max_batch_bytes`, so for ordinary rows the byte budget never binds. It
/// binds when single documents are larger than a batch (a 16 MB row travels
/// alone in a 16 MB batch): counting batches alone would let 8 of them be in
/// flight, 128 MB held by the agent and again by the control plane. With the
/// byte budget such a batch waits until enough earlier ones are
/// acknowledged; one larger than the whole budget waits until nothing else
/// is in flight and then travels alone, so a big document slows the sync
/// down for its own bytes but neither fails it nor multiplies memory.
pub(crate) struct FlowWindow {
    batches: Semaphore,
    batch_capacity: u32,
    /// In KiB, so any budget fits the semaphore's `u32` permits.
    kib: Semaphore,
    kib_capacity: u32,
    /// KiB held by each unacknowledged batch, by sequence.
    held: Mutex<HashMap<u64, u32>>,
    /// Which batches are acknowledged, to follow the acknowledged prefix.
    prefix: Mutex<AckPrefix>,
    /// The checkpoint of the acknowledged prefix (`None` before the first).
    acked: watch::Sender<Option<Vec<u8>>>,
}

/// The contiguous acknowledged prefix of a job's batches: `upto` is the
/// highest `n` with batches `1..=n` all acknowledged; `pending` the
/// checkpoints of batches acknowledged out of order, or sent and not yet
/// acknowledged (by sequence; empty = no new position).
#[derive(Default)]
struct AckPrefix {
    upto: u64,
    sent: BTreeMap<u64, Vec<u8>>,
    acked_ahead: std::collections::BTreeSet<u64>,
}

impl FlowWindow {
    pub(crate) fn new(flow: &proto::FlowControl) -> Self {
        let batch_capacity = flow.max_unacked_batches.max(1);
        let batch_bytes = u64::from(flow.max_batch_bytes.max(1024));
        let kib_capacity =
            (u64::from(batch_capacity) * batch_bytes).div_ceil(1024).min(u64::from(u32::MAX >> 4)) as u32;
        Self {
            batches: Semaphore::new(batch_capacity as usize),
            batch_capacity,
            kib: Semaphore::new(kib_capacity as usize),
            kib_capacity,
            held: Mutex::new(HashMap::new()),
            prefix: Mutex::new(AckPrefix::default()),
            acked: watch::channel(None).0,
        }
    }

    /// Remembers the checkpoint batch `sequence` carries, for the prefix.
    fn sent(&self, sequence: u64, checkpoint: &[u8]) {
        self.prefix.lock().expect("ack prefix lock").sent.insert(sequence, checkpoint.to_vec());
    }

    /// Batch `sequence` is acknowledged: advance the prefix and publish its
    /// checkpoint when that moved.
    fn advance(&self, sequence: u64) {
        let mut guard = self.prefix.lock().expect("ack prefix lock");
        let p = &mut *guard;
        if sequence <= p.upto {
            return;
        }
        p.acked_ahead.insert(sequence);
        let mut latest = None;
        while p.acked_ahead.remove(&(p.upto + 1)) {
            p.upto += 1;
            if let Some(c) = p.sent.remove(&p.upto).filter(|c| !c.is_empty()) {
                latest = Some(c);
            }
        }
        drop(guard);
        if let Some(c) = latest {
            self.acked.send_replace(Some(c));
        }
    }

    /// Waits for room for one batch of `bytes` and holds it for `sequence`
    /// until [`FlowWindow::release`]. Dropped half-way (the job was
    /// canceled), it may keep a batch's room: the window ends with its job.
    async fn acquire(&self, sequence: u64, bytes: usize) -> Result<(), SyncStopped> {
        let kib = (bytes.div_ceil(1024) as u64).clamp(1, u64::from(self.kib_capacity)) as u32;
        self.batches.acquire().await.map_err(|_| SyncStopped::SessionLost)?.forget();
        self.kib.acquire_many(kib).await.map_err(|_| SyncStopped::SessionLost)?.forget();
        self.held.lock().expect("flow window lock").insert(sequence, kib);
        Ok(())
    }

    /// The control plane acknowledged batch `sequence`: its room comes back.
    /// True when the batch was in flight (an unknown or repeated ack frees
    /// nothing).
    pub(crate) fn release(&self, sequence: u64) -> bool {
        let Some(kib) = self.held.lock().expect("flow window lock").remove(&sequence) else {
            return false;
        };
        self.advance(sequence);
        self.kib.add_permits(kib as usize);
        self.batches.add_permits(1);
        true
    }

    /// Waits until every batch sent was acknowledged.
    async fn wait_idle(&self) -> Result<(), SyncStopped> {
        let b = self.batches.acquire_many(self.batch_capacity).await.map_err(|_| SyncStopped::SessionLost)?;
        let k = self.kib.acquire_many(self.kib_capacity).await.map_err(|_| SyncStopped::SessionLost)?;
        drop((b, k));
        Ok(())
    }
}

/// Batches documents into `DocumentBatch` messages under flow control.
pub struct DocumentSender {
    job_id: String,
    lease_id: String,
    outbound: mpsc::Sender<proto::AgentMessage>,
    window: Arc<FlowWindow>,
    max_batch_bytes: usize,
    max_batch_documents: usize,
    batch: Vec<proto::Document>,
    batch_bytes: usize,
    checkpoint: Vec<u8>,
    last_sequence: u64,
    cancel: CancellationToken,
    documents_sent: u64,
    oversized: u64,
    metadata: serde_json::Map<String, serde_json::Value>,
    /// Progress facts not yet sent, and when the last JobProgress left.
    progress: serde_json::Map<String, serde_json::Value>,
    progress_sent: Option<Instant>,
    /// For the progress line logged every [`PROGRESS_LOG_EVERY`].
    started: Instant,
    progress_logged: Instant,
}

/// How the control plane applies one document of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocOp {
    /// Full replace: `source` is the whole document.
    Index,
    /// Partial update: `source` holds only the changed fields.
    Update,
    /// Delete by id (`source` is ignored).
    Delete,
    /// Delete every document whose fields equal those of `source` (a JSON
    /// object), after every operation sent before it (TRUNCATE).
    DeleteMatching,
}

impl DocOp {
    fn to_proto(self) -> proto::DocumentOp {
        match self {
            DocOp::Index => proto::DocumentOp::Index,
            DocOp::Update => proto::DocumentOp::Update,
            DocOp::Delete => proto::DocumentOp::Delete,
            DocOp::DeleteMatching => proto::DocumentOp::DeleteMatching,
        }
    }
}

/// A long job logs a progress line this often (documents sent, docs/s).
const PROGRESS_LOG_EVERY: Duration = Duration::from_secs(30);

/// JobProgress messages are sent at most this often per job.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// Largest document (id + source) the runtime sends: one protocol message
/// is at most 64 MiB; 1 MiB is left for the batch's other fields.
pub const MAX_DOCUMENT_BYTES: usize = crate::runtime::MAX_MESSAGE_BYTES - 1024 * 1024;

impl DocumentSender {
    pub(crate) fn new(
        job_id: String,
        lease_id: String,
        outbound: mpsc::Sender<proto::AgentMessage>,
        window: Arc<FlowWindow>,
        flow: &proto::FlowControl,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            job_id,
            lease_id,
            outbound,
            window,
            max_batch_bytes: (flow.max_batch_bytes as usize).max(1024),
            max_batch_documents: (flow.max_batch_documents as usize).max(1),
            batch: Vec::new(),
            batch_bytes: 0,
            checkpoint: Vec::new(),
            last_sequence: 0,
            cancel,
            documents_sent: 0,
            oversized: 0,
            metadata: serde_json::Map::new(),
            progress: serde_json::Map::new(),
            progress_sent: None,
            started: Instant::now(),
            progress_logged: Instant::now(),
        }
    }

    /// Queue one document. `source` must be one JSON object without
    /// newlines. Waits while the flow-control window is full.
    ///
    /// A document too big for one protocol message ([`MAX_DOCUMENT_BYTES`])
    /// is not sent: it is logged and reported on the job's metadata
    /// (`oversized_documents`: count and the first ids), and the sync goes on.
    pub async fn send(&mut self, id: String, source: Vec<u8>) -> Result<(), SyncStopped> {
        self.send_op(DocOp::Index, id, source, 0).await
    }

    /// Incremental jobs: replace document `id` with `source`. `version`
    /// orders the changes of one id (PostgreSQL: the WAL LSN); 0 = none.
    pub async fn index(&mut self, id: String, source: Vec<u8>, version: u64) -> Result<(), SyncStopped> {
        self.send_op(DocOp::Index, id, source, version).await
    }

    /// Incremental jobs: set the fields of `fields` (a JSON object holding
    /// only the changed fields) on document `id`; the others keep their value.
    pub async fn update(&mut self, id: String, fields: Vec<u8>, version: u64) -> Result<(), SyncStopped> {
        self.send_op(DocOp::Update, id, fields, version).await
    }

    /// Incremental jobs: delete document `id` (a missing one is not an error).
    pub async fn delete(&mut self, id: String, version: u64) -> Result<(), SyncStopped> {
        self.send_op(DocOp::Delete, id, Vec::new(), version).await
    }

    /// Incremental jobs: delete every document of the index whose fields
    /// equal those of `fields` (a JSON object, e.g. the `table`, `schema` and
    /// `database` of a truncated table), after every operation sent before.
    /// It travels in a batch of its own.
    pub async fn delete_matching(&mut self, fields: Vec<u8>) -> Result<(), SyncStopped> {
        self.flush().await?;
        self.send_op(DocOp::DeleteMatching, String::new(), fields, 0).await?;
        self.flush().await
    }

    /// Queue one operation (see [`DocOp`]); waits while the window is full.
    pub async fn send_op(
        &mut self,
        op: DocOp,
        id: String,
        source: Vec<u8>,
        version: u64,
    ) -> Result<(), SyncStopped> {
        let size = id.len() + source.len();
        if size > MAX_DOCUMENT_BYTES {
            tracing::warn!(job_id = %self.job_id, document_id = %id, bytes = size,
                "document larger than the {MAX_DOCUMENT_BYTES}-byte protocol limit; not sent (reported on the job)");
            self.oversized += 1;
            let entry = self
                .metadata
                .entry("oversized_documents")
                .or_insert_with(|| serde_json::json!({"count": 0, "first_ids": []}));
            entry["count"] = self.oversized.into();
            if let Some(ids) = entry["first_ids"].as_array_mut() {
                if ids.len() < 10 {
                    ids.push(id.into());
                }
            }
            return Ok(());
        }
        if !self.batch.is_empty()
            && (self.batch_bytes + size > self.max_batch_bytes
                || self.batch.len() >= self.max_batch_documents)
        {
            self.flush().await?;
        }
        self.batch_bytes += size;
        let op = if op == DocOp::Index { proto::DocumentOp::Unspecified } else { op.to_proto() };
        self.batch.push(proto::Document { id, source: source.into(), op: op as i32, version });
        self.documents_sent += 1;
        Ok(())
    }

    /// Record the position that covers every document sent so far.
    pub fn checkpoint(&mut self, position: Vec<u8>) {
        self.checkpoint = position;
    }

    /// Merge `facts` into the job's metadata while it runs (lag, changes
    /// applied, rows read...). Sent as `JobProgress` at most once per second:
    /// call it as often as you like, the latest values win; facts not sent
    /// yet go out with the next call after the interval, or at the end of
    /// the job in `JobFinished`.
    pub async fn progress(
        &mut self,
        facts: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), SyncStopped> {
        self.progress.extend(facts);
        if self.progress.is_empty() || self.progress_sent.is_some_and(|t| t.elapsed() < PROGRESS_INTERVAL) {
            return Ok(());
        }
        self.progress_sent = Some(Instant::now());
        let facts = std::mem::take(&mut self.progress);
        let msg = proto::AgentMessage {
            message: Some(proto::agent_message::Message::Progress(proto::JobProgress {
                job_id: self.job_id.clone(),
                lease_id: self.lease_id.clone(),
                metadata: Some(crate::config_schema::json_to_struct(&facts)),
            })),
        };
        self.metadata.extend(facts);
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(SyncStopped::Canceled),
            r = self.outbound.send(msg) => r.map_err(|_| SyncStopped::SessionLost),
        }
    }

    /// Describe the fields of the documents about to be sent (one call per
    /// table or query, before its first document): the control plane maps
    /// them when it created the content index. Optional; cheap to repeat.
    pub async fn describe(&mut self, schema: &crate::DocumentSchema) -> Result<(), SyncStopped> {
        let msg = proto::AgentMessage {
            message: Some(proto::agent_message::Message::Schema(proto::DocumentSchema {
                job_id: self.job_id.clone(),
                lease_id: self.lease_id.clone(),
                source: schema.source.clone(),
                fields: schema.fields.iter().map(crate::FieldSpec::to_proto).collect(),
            })),
        };
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(SyncStopped::Canceled),
            r = self.outbound.send(msg) => r.map_err(|_| SyncStopped::SessionLost),
        }
    }

    /// Flush the open batch and wait until every batch sent so far is
    /// acknowledged (then [`DocumentSender::acknowledged_checkpoint`] is the
    /// latest checkpoint given).
    pub async fn barrier(&mut self) -> Result<(), SyncStopped> {
        self.finish().await.map(|_| ())
    }

    /// The checkpoint of the longest prefix of batches that are all
    /// acknowledged (the latest non-empty one among them); `None` before the
    /// first. Everything up to it is applied in Elasticsearch.
    pub fn acknowledged_checkpoint(&self) -> Option<Vec<u8>> {
        self.window.acked.borrow().clone()
    }

    /// [`DocumentSender::acknowledged_checkpoint`] as a channel that changes
    /// whenever the acknowledged prefix advances.
    pub fn acknowledged_checkpoints(&self) -> watch::Receiver<Option<Vec<u8>>> {
        self.window.acked.subscribe()
    }

    /// Add a fact to the job's metadata (rows read, tables skipped...).
    pub fn set_metadata(&mut self, key: &str, value: serde_json::Value) {
        self.metadata.insert(key.to_owned(), value);
    }

    /// True once the job is canceled.
    pub fn is_canceled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Documents handed to `send` so far.
    pub fn documents_sent(&self) -> u64 {
        self.documents_sent
    }

    /// Send the current batch (if any) once the window has room.
    pub async fn flush(&mut self) -> Result<(), SyncStopped> {
        if self.batch.is_empty() {
            return Ok(());
        }
        // The room comes back when the control plane acknowledges the batch.
        let sequence = self.last_sequence + 1;
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => return Err(SyncStopped::Canceled),
            r = self.window.acquire(sequence, self.batch_bytes) => r?,
        };
        self.last_sequence = sequence;
        self.window.sent(sequence, &self.checkpoint);
        let len = self.batch.len();
        let batch = proto::DocumentBatch {
            job_id: self.job_id.clone(),
            lease_id: self.lease_id.clone(),
            sequence: self.last_sequence,
            // The next batch will be about as long: no regrowing from empty.
            documents: std::mem::replace(&mut self.batch, Vec::with_capacity(len)),
            checkpoint: self.checkpoint.clone(),
        };
        let m = &*crate::metrics::AGENT;
        m.batches_sent.inc();
        m.documents_sent.inc_by(len as u64);
        m.bytes_sent.inc_by(self.batch_bytes as u64);
        self.batch_bytes = 0;
        if self.progress_logged.elapsed() >= PROGRESS_LOG_EVERY {
            self.progress_logged = Instant::now();
            let secs = self.started.elapsed().as_secs_f64().max(0.001);
            tracing::info!(
                job_id = %self.job_id, documents = self.documents_sent, batches = self.last_sequence,
                docs_per_s = (self.documents_sent as f64 / secs).round() as u64, running_s = secs.round() as u64,
                "sync job progress: {} documents sent", self.documents_sent
            );
        }
        let msg = proto::AgentMessage { message: Some(proto::agent_message::Message::Batch(batch)) };
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(SyncStopped::Canceled),
            r = self.outbound.send(msg) => r.map_err(|_| SyncStopped::SessionLost),
        }
    }

    /// Flush and wait until every batch sent was acknowledged.
    pub(crate) async fn finish(&mut self) -> Result<u64, SyncStopped> {
        self.flush().await?;
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => return Err(SyncStopped::Canceled),
            r = self.window.wait_idle() => r?,
        };
        Ok(self.last_sequence)
    }

    pub(crate) fn last_sequence(&self) -> u64 {
        self.last_sequence
    }

    pub(crate) fn take_metadata(&mut self) -> serde_json::Map<String, serde_json::Value> {
        let progress = std::mem::take(&mut self.progress);
        self.metadata.extend(progress);
        std::mem::take(&mut self.metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn oversized_documents_are_reported_not_sent() {
        let (tx, mut rx) = mpsc::channel(8);
        let flow =
            proto::FlowControl { max_unacked_batches: 4, max_batch_bytes: 1 << 20, max_batch_documents: 10 };
        let mut out = DocumentSender::new(
            "job".into(),
            "lease".into(),
            tx,
            Arc::new(FlowWindow::new(&flow)),
            &flow,
            CancellationToken::new(),
        );
        out.send("small".into(), b"{}".to_vec()).await.unwrap();
        out.send("huge".into(), vec![b'x'; MAX_DOCUMENT_BYTES + 1]).await.unwrap();
        out.flush().await.unwrap();
        let Some(proto::AgentMessage { message: Some(proto::agent_message::Message::Batch(b)) }) =
            rx.recv().await
        else {
            panic!("no batch")
        };
        assert_eq!(b.documents.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["small"]);
        let meta = out.take_metadata();
        assert_eq!(meta["oversized_documents"], serde_json::json!({"count": 1, "first_ids": ["huge"]}));
    }

    fn batch_of(msg: Option<proto::AgentMessage>) -> proto::DocumentBatch {
        match msg {
            Some(proto::AgentMessage { message: Some(proto::agent_message::Message::Batch(b)) }) => b,
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    /// Incremental ops travel with their op and version; the acknowledged
    /// checkpoint follows the contiguous acknowledged prefix, never what
    /// was only sent.
    #[tokio::test]
    async fn ops_and_acknowledged_checkpoint() {
        let (tx, mut rx) = mpsc::channel(64);
        let flow =
            proto::FlowControl { max_unacked_batches: 8, max_batch_bytes: 1 << 20, max_batch_documents: 2 };
        let window = Arc::new(FlowWindow::new(&flow));
        let mut out = DocumentSender::new(
            "job".into(),
            "lease".into(),
            tx,
            window.clone(),
            &flow,
            CancellationToken::new(),
        );
        let mut acked = out.acknowledged_checkpoints();
        out.update("a".into(), br#"{"x":1}"#.to_vec(), 10).await.unwrap();
        out.delete("b".into(), 11).await.unwrap();
        out.checkpoint(b"{\"lsn\":11}".to_vec());
        out.index("c".into(), b"{}".to_vec(), 12).await.unwrap(); // closes batch 1
        out.checkpoint(b"{\"lsn\":12}".to_vec());
        out.delete_matching(br#"{"table":"t"}"#.to_vec()).await.unwrap(); // batch 2 [c], batch 3 [dm]
        let b1 = batch_of(rx.recv().await);
        let ops: Vec<_> = b1.documents.iter().map(|d| (d.id.as_str(), d.op, d.version)).collect();
        assert_eq!(
            ops,
            [("a", proto::DocumentOp::Update as i32, 10), ("b", proto::DocumentOp::Delete as i32, 11)]
        );
        assert_eq!(b1.checkpoint, b"{\"lsn\":11}");
        let b2 = batch_of(rx.recv().await);
        assert_eq!((b2.documents[0].op, b2.documents[0].version), (0, 12), "index travels as UNSPECIFIED");
        let b3 = batch_of(rx.recv().await);
        assert_eq!(b3.documents.len(), 1);
        assert_eq!(b3.documents[0].op, proto::DocumentOp::DeleteMatching as i32);
        assert_eq!(out.acknowledged_checkpoint(), None);
        // Batch 2 acknowledged first: nothing is durable until batch 1 is.
        window.release(2);
        assert_eq!(out.acknowledged_checkpoint(), None);
        window.release(1);
        assert_eq!(out.acknowledged_checkpoint().as_deref(), Some(&b"{\"lsn\":12}"[..]));
        assert!(acked.has_changed().unwrap());
        assert_eq!(acked.borrow_and_update().as_deref(), Some(&b"{\"lsn\":12}"[..]));
        let mut barrier = Box::pin(out.barrier());
        assert!(tokio::time::timeout(std::time::Duration::from_millis(50), &mut barrier).await.is_err());
        window.release(3);
        barrier.await.unwrap();
    }

    #[test]
    fn job_kinds_are_strict() {
        assert_eq!(JobKind::try_from(proto::JobType::Incremental as i32), Ok(JobKind::Incremental));
        assert!(JobKind::try_from(proto::JobType::Unspecified as i32).is_err());
        assert!(JobKind::try_from(99).unwrap_err().contains("unknown"));
    }

    #[tokio::test]
    async fn progress_is_rate_limited_and_ends_in_metadata() {
        let (tx, mut rx) = mpsc::channel(8);
        let flow =
            proto::FlowControl { max_unacked_batches: 2, max_batch_bytes: 1 << 20, max_batch_documents: 10 };
        let mut out = DocumentSender::new(
            "job".into(),
            "lease".into(),
            tx,
            Arc::new(FlowWindow::new(&flow)),
            &flow,
            CancellationToken::new(),
        );
        let fact = |n: u64| serde_json::Map::from_iter([("changes_applied".to_string(), n.into())]);
        out.progress(fact(1)).await.unwrap();
        out.progress(fact(2)).await.unwrap();
        match rx.try_recv() {
            Ok(proto::AgentMessage { message: Some(proto::agent_message::Message::Progress(p)) }) => {
                assert_eq!(p.job_id, "job");
                assert_eq!(crate::config_schema::struct_to_json(&p.metadata.unwrap())["changes_applied"], 1);
            }
            other => panic!("expected progress, got {other:?}"),
        }
        assert!(rx.try_recv().is_err(), "a second report within 1 s is held back");
        assert_eq!(out.take_metadata()["changes_applied"], 2, "the latest value reaches JobFinished");
    }

    /// Documents larger than a batch travel alone, and the window holds at
    /// most `max_unacked_batches × max_batch_bytes` unacknowledged bytes
    /// (here 4 × 64 KiB), not 4 such batches.
    #[tokio::test]
    async fn window_bounds_unacknowledged_bytes() {
        let (tx, mut rx) = mpsc::channel(64);
        let flow = proto::FlowControl {
            max_unacked_batches: 4,
            max_batch_bytes: 64 * 1024,
            max_batch_documents: 1000,
        };
        let window = Arc::new(FlowWindow::new(&flow));
        let mut out = DocumentSender::new(
            "job".into(),
            "lease".into(),
            tx,
            window.clone(),
            &flow,
            CancellationToken::new(),
        );
        let small = || br#"{"a":1}"#.to_vec();
        let big = |kib: usize| {
            let mut v = br#"{"t":""#.to_vec();
            v.resize(kib * 1024, b'x');
            v.extend_from_slice(br#""}"#);
            v
        };
        // small, a 100 KiB document (closes the small batch, travels alone),
        // small: two batches sent, the third is being filled.
        out.send("s1".into(), small()).await.unwrap();
        out.send("b1".into(), big(100)).await.unwrap();
        out.send("s2".into(), small()).await.unwrap();
        let ids = |b: &proto::DocumentBatch| b.documents.iter().map(|d| d.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&batch_of(rx.recv().await)), ["s1"]);
        let b = batch_of(rx.recv().await);
        assert_eq!((ids(&b), b.sequence), (vec!["b1".to_string()], 2));
        // 1 + 101 KiB held of 256: a 200 KiB document must wait for an ack
        // although only two of the four batches are in flight.
        out.send("b2".into(), big(200)).await.unwrap(); // sends [s2] (1 KiB)
        assert_eq!(ids(&batch_of(rx.recv().await)), ["s2"]);
        let mut flushing = Box::pin(out.flush());
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(100), &mut flushing).await.is_err(),
            "a 200 KiB batch must not be sent with 103 KiB of 256 unacknowledged"
        );
        assert!(window.release(2)); // the ack of b1
        flushing.await.unwrap();
        assert_eq!(ids(&batch_of(rx.recv().await)), ["b2"]);
        assert!(!window.release(2), "a repeated ack frees nothing");
        // Bigger than the whole budget: sent alone once everything else is acked.
        out.send("huge".into(), big(400)).await.unwrap();
        let mut flushing = Box::pin(out.flush());
        assert!(tokio::time::timeout(std::time::Duration::from_millis(100), &mut flushing).await.is_err());
        for seq in [1, 3, 4] {
            assert!(window.release(seq));
        }
        flushing.await.unwrap();
        assert_eq!(ids(&batch_of(rx.recv().await)), ["huge"]);
        let mut finishing = Box::pin(out.finish());
        assert!(tokio::time::timeout(std::time::Duration::from_millis(100), &mut finishing).await.is_err());
        assert!(window.release(5));
        assert_eq!(finishing.await.unwrap(), 5);
    }
}
