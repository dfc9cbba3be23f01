//! [`ChangeSink`] over the SDK's [`DocumentSender`]: how an incremental job
//! reaches the control plane.
//!
//! Contracts:
//! - Each [`Change`] becomes one operation with the change's WAL position
//!   as its version (index, partial update, delete); TRUNCATE's
//!   delete-matching travels in a batch of its own, after everything sent
//!   before it. Snapshot rows go out as plain documents (no version).
//! - Checkpoints are [`super::Cursor`] bytes; the control plane stores the
//!   acknowledged one as the connector's `sync_cursor`.
//! - [`ChangeSink::acknowledged`] is the checkpoint of the acknowledged
//!   prefix of batches ([`DocumentSender::acknowledged_checkpoint`]): the
//!   stream confirms `confirmed_flush_lsn` only up to it, so PostgreSQL
//!   keeps every change Elasticsearch has not applied yet.
//! - Progress facts go out as `JobProgress` (the SDK sends at most one a
//!   second; the latest values win).

use async_trait::async_trait;
use ferry_sdk::{DocumentSender, SyncStopped};
use serde_json::Value;

use super::{Change, ChangeSink};
use crate::postgres::DocumentSink;

/// An incremental job's changes into a [`DocumentSender`].
pub struct SenderSink<'a> {
    out: &'a mut DocumentSender,
}

impl<'a> SenderSink<'a> {
    pub fn new(out: &'a mut DocumentSender) -> Self {
        Self { out }
    }
}

#[async_trait]
impl DocumentSink for SenderSink<'_> {
    async fn send(&mut self, id: String, source: Vec<u8>) -> Result<(), SyncStopped> {
        self.out.send(id, source).await
    }
    fn checkpoint(&mut self, position: Vec<u8>) {
        self.out.checkpoint(position)
    }
    fn set_metadata(&mut self, key: &str, value: Value) {
        self.out.set_metadata(key, value)
    }
    async fn describe(&mut self, schema: &ferry_sdk::DocumentSchema) -> Result<(), SyncStopped> {
        self.out.describe(schema).await
    }
}

#[async_trait]
impl ChangeSink for SenderSink<'_> {
    async fn apply(&mut self, change: Change, version: u64) -> Result<(), SyncStopped> {
        match change {
            Change::Index { id, source } => self.out.index(id, source, version).await,
            Change::Update { id, source } => self.out.update(id, source, version).await,
            Change::Delete { id } => self.out.delete(id, version).await,
            Change::DeleteMatching { fields } => self.out.delete_matching(fields).await,
        }
    }
    async fn flush(&mut self) -> Result<(), SyncStopped> {
        self.out.flush().await
    }
    async fn barrier(&mut self) -> Result<(), SyncStopped> {
        self.out.barrier().await
    }
    fn acknowledged(&mut self) -> Option<Vec<u8>> {
        self.out.acknowledged_checkpoint()
    }
    async fn progress(&mut self, metadata: serde_json::Map<String, Value>) -> Result<(), SyncStopped> {
        self.out.progress(metadata).await
    }
}
