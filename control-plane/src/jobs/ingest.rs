//! The ingest path of one running job: agent batches → `_bulk` → acks.
//!
//! A [`JobRun`] exists while a job is assigned to an agent session on this
//! instance. Each `DocumentBatch` takes one permit of the job's window
//! (`max_unacked_batches`); an agent that sends more than the window is
//! violating flow control and loses its session. Batches are indexed
//! concurrently (several bulk requests in flight); a batch is acknowledged
//! only after Elasticsearch accepted or permanently rejected every document
//! in it, and only then does its permit return. So memory per job is bounded
//! by window × batch size on both sides, however large the table.
//!
//! The checkpoint persisted on the job is the one carried by the highest
//! batch sequence `n` such that every batch `1..=n` was acknowledged:
//! resuming from it never skips a document.
//!
//! Operations on one `_id` are applied in the order the agent sent them,
//! although batches run concurrently: a batch sharing an id with an earlier
//! batch still in flight waits for it ([`super::ordering`], which also says
//! why this and not external versions). Within a batch, a `delete_matching`
//! operation (`TRUNCATE`) splits the batch: the documents before it are
//! applied, then the index is refreshed and the matching documents deleted
//! (`_delete_by_query`, counted as deletes), then the rest.
//!
//! An `update` or `delete` of a document that is not there (404) is not a
//! failure: nothing was there to change. It is counted in the job's metadata
//! as `changes_to_missing_documents`. (For an `update` — a partial document,
//! which the PostgreSQL agent sends only when a row's unchanged TOAST columns
//! were not in the change — it means the row's document was never indexed
//! or was deleted; Elasticsearch merges a partial document into the stored
//! one recursively, so agents send whole rows otherwise.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_sdk::proto;
use rand::Rng as _;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ordering::{Keys, OrderGate};
use crate::elasticsearch::{BulkDoc, BulkIndexer, BulkOp, BulkOutcome, EsError};

/// Keep at most this many rejection reasons on the job document.
pub const MAX_REJECTIONS_KEPT: usize = 10;

/// How long one batch keeps being retried while Elasticsearch is overloaded
/// or unreachable (each round is a full `index_batch` with its own capped
/// exponential backoff) before the job fails. While a batch waits it holds
/// its flow-control permit, so the agent stops reading: an overloaded
/// cluster slows the sync down instead of failing it or filling memory.
pub const OVERLOAD_PATIENCE: Duration = Duration::from_secs(600);

/// Pause between two rounds of an overloaded batch (plus jitter).
const OVERLOAD_PAUSE: Duration = Duration::from_secs(15);

/// Largest checkpoint a batch may carry. Checkpoints are positions (a
/// primary key, an LSN); the persisted one is written to the job document
/// every 2 s, and up to a window of them are held until the acknowledged
/// prefix reaches them.
pub const MAX_CHECKPOINT_BYTES: usize = 64 * 1024;

/// A job running on this instance.
pub struct JobRun {
    pub job_id: String,
    pub lease_id: String,
    pub connector_id: String,
    pub index_name: String,
    pub full_sync: bool,
    /// An incremental job: its acknowledged checkpoint is the connector's
    /// `sync_cursor`.
    pub incremental: bool,
    /// Keeps operations on one `_id` in order across concurrent batches.
    order: OrderGate,
    /// The checkpoint last written to the connector's `sync_cursor`.
    pub cursor_written: Mutex<Option<Vec<u8>>>,
    /// `"_ferry_sync_generation":G`, plus Elastic's pipeline flags when the
    /// job's bulks name an ingest pipeline, spliced into every indexed document.
    extra_fields: Vec<u8>,
    window: Arc<Semaphore>,
    /// Sequence of the last batch taken (batches arrive 1, 2, 3... per lease).
    last_sequence: Mutex<u64>,
    /// Bytes (`id` + `source`) of the batches taken and not yet acknowledged.
    unacked_bytes: Arc<std::sync::atomic::AtomicU64>,
    /// The byte window: `max_unacked_batches × max_batch_bytes`.
    max_unacked_bytes: u64,
    /// In-flight bulk requests of this job.
    pub tracker: TaskTracker,
    /// Abandons the in-flight bulk requests (a canceled job does not wait
    /// for them: its counts are what Elasticsearch confirmed so far).
    pub abandon: CancellationToken,
    pub stats: Mutex<RunStats>,
    /// Set once the control plane asked the agent to stop.
    pub cancel_sent: AtomicBool,
    /// Set when the control plane itself must fail the job (Elasticsearch
    /// gave up); the agent is told to stop and the job ends in error.
    pub fatal: Mutex<Option<String>>,
    pub started: Instant,
    /// The connector's ingest pipeline (`pipeline.name`), when in use.
    pub pipeline: Option<String>,
    /// Facts from the agent's `JobProgress`, merged into the job's metadata
    /// by the progress loop.
    pub progress: Mutex<serde_json::Map<String, serde_json::Value>>,
}

/// Bounds of what `JobProgress` may put on a job: the job document must
/// not grow with a chatty agent.
pub const MAX_PROGRESS_KEYS: usize = 32;
pub const MAX_PROGRESS_VALUE_BYTES: usize = 1024;

#[derive(Debug, Default)]
pub struct RunStats {
    /// Counts carried over from earlier attempts plus this one.
    pub indexed: u64,
    pub rejected: u64,
    /// Documents deleted (delete items and `delete_matching`).
    pub deleted: u64,
    /// Updates and deletes of documents that were not there.
    pub missing: u64,
    pub bytes: u64,
    /// Documents received by this attempt.
    pub received_this_attempt: u64,
    /// Highest sequence such that every batch up to it is acknowledged.
    pub acked_through: u64,
    /// Acknowledged batches above `acked_through`, with their checkpoints.
    pub(crate) acked_out_of_order: BTreeMap<u64, Vec<u8>>,
    /// Checkpoint of batch `acked_through`.
    pub checkpoint: Option<Vec<u8>>,
    pub rejections: Vec<serde_json::Value>,
    /// For docs/s: indexed count at the last stats flush.
    pub indexed_at_last_flush: u64,
    pub last_flush: Option<Instant>,
}

impl RunStats {
    fn acknowledge(&mut self, sequence: u64, checkpoint: Vec<u8>) {
        self.acked_out_of_order.insert(sequence, checkpoint);
        while let Some(cp) = self.acked_out_of_order.remove(&(self.acked_through + 1)) {
            self.acked_through += 1;
            if !cp.is_empty() {
                self.checkpoint = Some(cp);
            }
        }
    }
}

/// Returns a batch's bytes to the byte window when the batch is done
/// (acknowledged, failed or abandoned).
struct UnackedBytes {
    counter: Arc<std::sync::atomic::AtomicU64>,
    bytes: u64,
}

impl Drop for UnackedBytes {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

fn bulk_op(op: i32) -> BulkOp {
    match proto::DocumentOp::try_from(op) {
        Ok(proto::DocumentOp::Update) => BulkOp::Update,
        Ok(proto::DocumentOp::Delete) => BulkOp::Delete,
        _ => BulkOp::Index,
    }
}

/// A batch cut at its `delete_matching` operations, in order.
enum Segment {
    Bulk(Vec<BulkDoc>),
    /// The operation's source: `{"field": value, ...}`.
    DeleteMatching(bytes::Bytes),
}

fn segments(documents: Vec<proto::Document>) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut run = Vec::new();
    for d in documents {
        if d.op == proto::DocumentOp::DeleteMatching as i32 {
            if !run.is_empty() {
                out.push(Segment::Bulk(std::mem::take(&mut run)));
            }
            out.push(Segment::DeleteMatching(d.source));
        } else {
            run.push(BulkDoc { op: bulk_op(d.op), id: d.id, source: d.source });
        }
    }
    if !run.is_empty() || out.is_empty() {
        out.push(Segment::Bulk(run));
    }
    out
}

/// Why a batch was not taken.
#[derive(Debug, thiserror::Error)]
pub enum BatchRefused {
    /// Ends the session (`sdk/PROTOCOL.md` §5).
    #[error("the agent exceeded its flow-control window of {0} unacknowledged batches")]
    WindowExceeded(u32),
    /// Ends the run in error: what the agent sent cannot be kept bounded.
    #[error("{0}")]
    Violation(String),
}

impl JobRun {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        job_id: String,
        lease_id: String,
        connector_id: String,
        index_name: String,
        full_sync: bool,
        incremental: bool,
        generation: i64,
        window: u32,
        max_batch_bytes: u32,
        carried: RunStats,
        pipeline: Option<(String, &serde_json::Value)>,
    ) -> Self {
        let mut extra_fields = crate::elasticsearch::index::generation_fragment(generation);
        if let Some((_, settings)) = &pipeline {
            extra_fields.push(b',');
            extra_fields.extend(crate::elasticsearch::index::pipeline_fragment(settings));
        }
        Self {
            job_id,
            lease_id,
            connector_id,
            index_name,
            full_sync,
            incremental,
            order: OrderGate::default(),
            cursor_written: Mutex::new(None),
            extra_fields,
            window: Arc::new(Semaphore::new(window as usize)),
            last_sequence: Mutex::new(0),
            unacked_bytes: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            max_unacked_bytes: u64::from(window) * u64::from(max_batch_bytes),
            tracker: TaskTracker::new(),
            abandon: CancellationToken::new(),
            stats: Mutex::new(carried),
            cancel_sent: AtomicBool::new(false),
            fatal: Mutex::new(None),
            started: Instant::now(),
            pipeline: pipeline.map(|(name, _)| name),
            progress: Mutex::new(serde_json::Map::new()),
        }
    }

    /// Merges progress facts, keeping at most [`MAX_PROGRESS_KEYS`] keys and
    /// dropping values larger than [`MAX_PROGRESS_VALUE_BYTES`] (logged).
    pub fn merge_progress(&self, facts: serde_json::Map<String, serde_json::Value>) {
        let mut p = self.progress.lock().expect("progress lock");
        for (k, v) in facts {
            let size = k.len() + serde_json::to_vec(&v).map(|b| b.len()).unwrap_or(usize::MAX);
            if size > MAX_PROGRESS_VALUE_BYTES || (!p.contains_key(&k) && p.len() >= MAX_PROGRESS_KEYS) {
                tracing::debug!(job_id = %self.job_id, key = %k, "progress fact dropped (too large or too many keys)");
                continue;
            }
            p.insert(k, v);
        }
    }

    /// Takes a batch: indexes it in the background and sends the ack
    /// through `ack` when Elasticsearch is done with it.
    pub fn accept(
        self: &Arc<Self>,
        batch: proto::DocumentBatch,
        bulk: &BulkIndexer,
        window_size: u32,
        on_done: impl FnOnce(Result<proto::BatchAck, EsError>) -> futures::future::BoxFuture<'static, ()>
            + Send
            + 'static,
    ) -> Result<(), BatchRefused> {
        let bytes = self.admit(&batch)?;
        let permit =
            self.window.clone().try_acquire_owned().map_err(|_| BatchRefused::WindowExceeded(window_size))?;
        *self.last_sequence.lock().expect("sequence lock") = batch.sequence;
        self.unacked_bytes.fetch_add(bytes, Ordering::SeqCst);
        let unacked = UnackedBytes { counter: self.unacked_bytes.clone(), bytes };
        let run = self.clone();
        let bulk = bulk.with_pipeline(self.pipeline.clone());
        // Registered here, in arrival (= sequence) order, not in the task.
        let keys = if batch.documents.iter().any(|d| d.op == proto::DocumentOp::DeleteMatching as i32) {
            Keys::All
        } else {
            Keys::Ids(batch.documents.iter().map(|d| d.id.clone()).collect())
        };
        let mut ticket = self.order.enter(batch.sequence, keys);
        self.tracker.spawn(async move {
            let proto::DocumentBatch { sequence, documents, checkpoint, .. } = batch;
            let segments = segments(documents);
            let _inflight = crate::metrics::InflightBatch::new(
                segments
                    .iter()
                    .map(|s| match s {
                        Segment::Bulk(docs) => docs.iter().map(|d| d.source.len()).sum(),
                        Segment::DeleteMatching(f) => f.len(),
                    })
                    .sum(),
            );
            let received = segments
                .iter()
                .map(|s| match s {
                    Segment::Bulk(docs) => docs.len() as u64,
                    Segment::DeleteMatching(_) => 1,
                })
                .sum::<u64>();
            if ticket.waits_for() > 0 {
                tracing::trace!(job_id = %run.job_id, sequence, waits_for = ticket.waits_for(), "batch waits for earlier batches with the same ids");
            }
            tokio::select! {
                _ = run.abandon.cancelled() => return,
                _ = ticket.ready() => {}
            }
            let Some(result) = run.apply(&bulk, &segments, sequence).await else {
                // Abandoned: no ack, no stats; the permit goes with the run.
                return;
            };
            // Later batches with the same ids may go now.
            drop(ticket);
            let result = result.map(|outcome| {
                let mut s = run.stats.lock().expect("stats lock");
                s.indexed += outcome.written;
                s.rejected += outcome.failed;
                s.bytes += outcome.bytes;
                s.deleted += outcome.deleted;
                s.missing += outcome.missing;
                s.received_this_attempt += received;
                for f in outcome.failures {
                    if s.rejections.len() < MAX_REJECTIONS_KEPT {
                        s.rejections.push(serde_json::json!({
                            "id": f.id, "status": f.status, "type": f.error_type, "reason": f.reason
                        }));
                    }
                }
                s.acknowledge(sequence, checkpoint);
                proto::BatchAck {
                    job_id: run.job_id.clone(),
                    lease_id: run.lease_id.clone(),
                    sequence,
                    indexed: outcome.indexed as u32,
                    failed: outcome.failed as u32,
                }
            });
            // The permit goes back before the ack leaves: the agent may send
            // its next batch the moment it reads the ack, and that batch must
            // find room in the window (or the agent would be cut off for a
            // flow-control violation it did not commit).
            drop(unacked);
            drop(permit);
            on_done(result).await;
        });
        Ok(())
    }

    /// The checks that keep what a run holds bounded whatever the agent
    /// sends; returns the batch's bytes. Sequences must be 1, 2, 3... without
    /// gaps (so at most a window of acknowledged batches wait for a lower
    /// one), checkpoints at most [`MAX_CHECKPOINT_BYTES`], and the bytes
    /// unacknowledged within the announced byte window (`max_unacked_batches
    /// × max_batch_bytes`; a bigger batch only when nothing else is
    /// unacknowledged).
    fn admit(&self, batch: &proto::DocumentBatch) -> Result<u64, BatchRefused> {
        let expected = *self.last_sequence.lock().expect("sequence lock") + 1;
        if batch.sequence != expected {
            return Err(BatchRefused::Violation(format!(
                "the agent sent batch sequence {} where {expected} was due: sequences are 1, 2, 3... per \
                 lease, without gaps (sdk/PROTOCOL.md §4); the run is ended",
                batch.sequence
            )));
        }
        if batch.checkpoint.len() > MAX_CHECKPOINT_BYTES {
            return Err(BatchRefused::Violation(format!(
                "the agent sent a checkpoint of {} bytes with batch {}: at most {MAX_CHECKPOINT_BYTES} bytes \
                 are kept; the run is ended",
                batch.checkpoint.len(),
                batch.sequence
            )));
        }
        let bytes: u64 = batch.documents.iter().map(|d| (d.id.len() + d.source.len()) as u64).sum();
        let unacked = self.unacked_bytes.load(Ordering::SeqCst);
        if unacked > 0 && unacked + bytes > self.max_unacked_bytes {
            return Err(BatchRefused::Violation(format!(
                "the agent exceeded its flow-control byte window: batch {} of {bytes} bytes sent with {unacked} \
                 bytes unacknowledged (window: {} bytes = max_unacked_batches × max_batch_bytes; a larger \
                 batch may only be sent alone, sdk/PROTOCOL.md §5); the run is ended",
                batch.sequence, self.max_unacked_bytes
            )));
        }
        Ok(bytes)
    }

    /// Applies a batch's segments in order. `None` when the run was abandoned.
    async fn apply(
        &self,
        bulk: &BulkIndexer,
        segments: &[Segment],
        sequence: u64,
    ) -> Option<Result<BulkOutcome, EsError>> {
        let mut total = BulkOutcome::default();
        for segment in segments {
            match segment {
                Segment::Bulk(docs) => match self.index_patiently(bulk, docs, sequence).await? {
                    Ok(o) => {
                        total.indexed += o.indexed;
                        total.written += o.written;
                        total.deleted += o.deleted;
                        total.missing += o.missing;
                        total.failed += o.failed;
                        total.bytes += o.bytes;
                        for f in o.failures {
                            if total.failures.len() < crate::elasticsearch::bulk::MAX_KEPT_FAILURES {
                                total.failures.push(f);
                            }
                        }
                    }
                    Err(e) => return Some(Err(e)),
                },
                Segment::DeleteMatching(fields) => {
                    let r = tokio::select! {
                        _ = self.abandon.cancelled() => return None,
                        r = self.delete_matching(bulk, fields) => r,
                    };
                    match r {
                        Ok(n) => {
                            total.indexed += 1;
                            total.deleted += n;
                        }
                        Err(e) => return Some(Err(e)),
                    }
                }
            }
        }
        Some(Ok(total))
    }

    /// One `delete_matching` operation (`TRUNCATE`): refresh, then delete
    /// the documents whose fields equal `fields`.
    async fn delete_matching(&self, bulk: &BulkIndexer, fields: &[u8]) -> Result<u64, EsError> {
        let fields: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(fields).map_err(|e| {
                EsError::Config(format!("a delete_matching operation's source is not a JSON object: {e}"))
            })?;
        let n =
            crate::elasticsearch::index::delete_matching(bulk.client(), &self.index_name, &fields).await?;
        tracing::info!(job_id = %self.job_id, fields = %serde_json::Value::Object(fields), deleted = n, "delete_matching applied");
        Ok(n)
    }

    /// Indexes one batch, retrying it for up to [`OVERLOAD_PATIENCE`] while
    /// Elasticsearch stays overloaded. `None` when the run was abandoned.
    async fn index_patiently(
        &self,
        bulk: &BulkIndexer,
        docs: &[BulkDoc],
        sequence: u64,
    ) -> Option<Result<crate::elasticsearch::BulkOutcome, EsError>> {
        let since = Instant::now();
        let mut round = 0u32;
        loop {
            let result = tokio::select! {
                _ = self.abandon.cancelled() => return None,
                r = bulk.index_batch(&self.index_name, docs, &self.extra_fields) => r,
            };
            match result {
                Err(e @ EsError::RetriesExhausted { .. }) if since.elapsed() < OVERLOAD_PATIENCE => {
                    round += 1;
                    let pause = OVERLOAD_PAUSE + Duration::from_millis(rand::rng().random_range(0..5_000));
                    tracing::warn!(
                        job_id = %self.job_id, sequence, round, retry_in_s = pause.as_secs(),
                        "Elasticsearch is overloaded; holding the batch (the agent waits) and retrying it: {e}"
                    );
                    tokio::select! {
                        _ = self.abandon.cancelled() => return None,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
                other => return Some(other),
            }
        }
    }

    /// Records a failure that ends the job in error once the agent stopped.
    pub fn set_fatal(&self, reason: String) {
        let mut f = self.fatal.lock().expect("fatal lock");
        if f.is_none() {
            *f = Some(reason);
        }
    }

    pub fn fatal(&self) -> Option<String> {
        self.fatal.lock().expect("fatal lock").clone()
    }

    /// Marks the cancel as sent; true the first time.
    pub fn mark_cancel_sent(&self) -> bool {
        !self.cancel_sent.swap(true, Ordering::SeqCst)
    }

    /// Drops the in-flight bulk requests without acknowledging them.
    pub fn abandon_in_flight(&self) {
        self.abandon.cancel();
    }

    /// Waits until every in-flight bulk request of this job finished.
    pub async fn drain(&self) {
        self.tracker.close();
        self.tracker.wait().await;
        self.tracker.reopen();
    }

    /// Lets in-flight batches finish (so their acks advance the checkpoint)
    /// for up to `grace`, then abandons the rest (a batch held back by an
    /// overloaded Elasticsearch must not hold up a release or a shutdown).
    pub async fn drain_or_abandon(&self, grace: Duration) {
        if tokio::time::timeout(grace, self.drain()).await.is_err() {
            tracing::warn!(job_id = %self.job_id, "in-flight batches did not finish within {} s; abandoning them (they are re-read on resume)", grace.as_secs());
            self.abandon.cancel();
            self.drain().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spliced(run: &JobRun) -> serde_json::Value {
        serde_json::from_slice(&[b"{", run.extra_fields.as_slice(), b"}"].concat()).expect("valid fragment")
    }

    #[test]
    fn documents_carry_elastics_pipeline_flags_only_when_a_pipeline_runs() {
        let settings = serde_json::json!({"name": "search-default-ingestion", "extract_binary_content": true,
            "reduce_whitespace": false, "run_ml_inference": true});
        let with = run_with(Some(("search-default-ingestion".into(), &settings)));
        assert_eq!(with.pipeline.as_deref(), Some("search-default-ingestion"));
        assert_eq!(
            spliced(&with),
            serde_json::json!({"_ferry_sync_generation": 1, "_extract_binary_content": true,
                "_reduce_whitespace": false, "_run_ml_inference": true})
        );
        let without = run_with(None);
        assert_eq!(without.pipeline, None);
        assert_eq!(spliced(&without), serde_json::json!({"_ferry_sync_generation": 1}));
    }

    fn run() -> JobRun {
        run_with(None)
    }

    /// A full-sync run of generation 1 with a 2-batch window, using `pipeline`.
    fn run_with(pipeline: Option<(String, &serde_json::Value)>) -> JobRun {
        JobRun::new(
            "j".into(),
            "l".into(),
            "c".into(),
            "i".into(),
            true,
            false,
            1,
            2,
            100,
            RunStats::default(),
            pipeline,
        )
    }

    fn batch(sequence: u64, bytes: usize, checkpoint: usize) -> proto::DocumentBatch {
        proto::DocumentBatch {
            sequence,
            documents: vec![proto::Document {
                id: "x".into(),
                source: vec![b'a'; bytes - 1].into(),
                ..Default::default()
            }],
            checkpoint: vec![b'c'; checkpoint],
            ..Default::default()
        }
    }

    #[test]
    fn admission_keeps_a_run_bounded() {
        let r = run();
        assert!(
            matches!(r.admit(&batch(2, 10, 0)), Err(BatchRefused::Violation(m)) if m.contains("2 where 1"))
        );
        assert!(
            matches!(r.admit(&batch(1, 10, MAX_CHECKPOINT_BYTES + 1)), Err(BatchRefused::Violation(m)) if m.contains("checkpoint"))
        );
        // Byte window 2 × 100: one batch over it alone is fine...
        assert_eq!(r.admit(&batch(1, 500, 0)).unwrap(), 500);
        // ...but not next to unacknowledged bytes.
        r.unacked_bytes.store(150, Ordering::SeqCst);
        *r.last_sequence.lock().unwrap() = 1;
        assert_eq!(r.admit(&batch(2, 50, 0)).unwrap(), 50);
        assert!(
            matches!(r.admit(&batch(2, 51, 0)), Err(BatchRefused::Violation(m)) if m.contains("byte window"))
        );
    }

    #[test]
    fn checkpoint_follows_the_contiguous_acked_prefix() {
        let mut s = RunStats::default();
        s.acknowledge(2, b"two".to_vec());
        assert_eq!(s.acked_through, 0);
        assert_eq!(s.checkpoint, None);
        s.acknowledge(1, b"one".to_vec());
        assert_eq!(s.acked_through, 2);
        assert_eq!(s.checkpoint.as_deref(), Some(&b"two"[..]));
        s.acknowledge(4, b"four".to_vec());
        assert_eq!(s.acked_through, 2);
        s.acknowledge(3, vec![]);
        assert_eq!(s.acked_through, 4);
        assert_eq!(s.checkpoint.as_deref(), Some(&b"four"[..]));
    }
}
