//! Server-streaming watches (`WatchSyncJob`, `WatchConnector`) by polling.
//!
//! Contract: the first message is the document now (or the call fails with
//! its status, e.g. NOT_FOUND, before any message); then the document is
//! read from Elasticsearch every [`POLL_INTERVAL`] (each read bounded by
//! [`POLL_DEADLINE`]) and sent when it differs from the last one sent
//! (ignoring heartbeat-only fields, see [`Snapshot::key`]). The stream ends
//! after a message marked `last` (a job that ended), when the client goes
//! away (the poller stops at once), with DEADLINE_EXCEEDED after
//! [`MAX_STREAM`], or with the store's error after [`MAX_FAILURES`]
//! consecutive failed reads. At most [`MAX_WATCHERS`] streams run per
//! process; beyond that a watch fails with RESOURCE_EXHAUSTED.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tonic::Status;

use crate::error::Result;

pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
pub const POLL_DEADLINE: Duration = Duration::from_secs(10);
pub const MAX_STREAM: Duration = Duration::from_secs(3600);
pub const MAX_FAILURES: u32 = 20;
pub const MAX_WATCHERS: usize = 64;

static WATCHERS: Semaphore = Semaphore::const_new(MAX_WATCHERS);

pub type WatchStream<M> = Pin<Box<dyn Stream<Item = std::result::Result<M, Status>> + Send>>;

/// One read of the watched document.
pub struct Snapshot<M> {
    pub message: M,
    /// What decides "changed": the message without fields that move on
    /// every heartbeat (`last_seen`).
    pub key: M,
    /// Nothing will change any more (the job ended, the connector was deleted).
    pub last: bool,
}

/// Starts a watch of `what` (for messages) reading with `poll`.
pub async fn start<M, F, Fut>(what: String, mut poll: F) -> std::result::Result<WatchStream<M>, Status>
where
    M: PartialEq + Send + 'static,
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<Snapshot<M>>> + Send,
{
    let permit = WATCHERS.try_acquire().map_err(|_| {
        Status::resource_exhausted(format!(
            "{MAX_WATCHERS} watches are open on this control plane: close one, or poll with Get instead"
        ))
    })?;
    let first = read(&mut poll).await?;
    let (tx, rx) = mpsc::channel(2);
    let last = first.last;
    let mut key = first.key;
    // Room for two: cannot fail.
    let _ = tx.try_send(Ok(first.message));
    if !last {
        tokio::spawn(async move {
            let _permit = permit;
            let end = Instant::now() + MAX_STREAM;
            let mut failures = 0;
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(POLL_INTERVAL) => {}
                }
                if Instant::now() >= end {
                    let _ = tx
                        .send(Err(Status::deadline_exceeded(format!(
                            "watched {what} for {} s: watch again to go on",
                            MAX_STREAM.as_secs()
                        ))))
                        .await;
                    return;
                }
                match read(&mut poll).await {
                    Ok(s) => {
                        failures = 0;
                        if s.key == key && !s.last {
                            continue;
                        }
                        key = s.key;
                        // A client that stops reading holds the stream until the deadline.
                        match tokio::time::timeout_at(end, tx.send(Ok(s.message))).await {
                            Ok(Ok(())) if !s.last => {}
                            _ => return,
                        }
                    }
                    Err(e) if e.code() == tonic::Code::NotFound => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::debug!(what = %what, error = %e.message(), failures, "watch read failed");
                        if failures >= MAX_FAILURES {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    }
                }
            }
        });
    }
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

async fn read<M, F, Fut>(poll: &mut F) -> std::result::Result<Snapshot<M>, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Snapshot<M>>>,
{
    match tokio::time::timeout(POLL_DEADLINE, poll()).await {
        Ok(r) => r.map_err(Status::from),
        Err(_) => Err(Status::unavailable(format!(
            "Elasticsearch did not answer within {} s",
            POLL_DEADLINE.as_secs()
        ))),
    }
}
