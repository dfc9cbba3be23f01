//! Per-document ordering of a job's concurrent batches.
//!
//! A job's batches are indexed concurrently (up to `max_unacked_batches`
//! bulk requests in flight), so two batches that both change one `_id` could
//! land in either order. The contract (`sdk/PROTOCOL.md`, `agent.proto`) is
//! that operations on one `_id` are applied in the order the agent sent them.
//! [`OrderGate`] keeps it: when a batch arrives (batches arrive in sequence
//! order, one stream per session), it is registered with the ids it touches;
//! a batch whose ids overlap a batch registered earlier and still in flight
//! waits until that batch is done before it is sent. Batches with disjoint
//! ids (every full sync, most of a change stream) keep running concurrently.
//! A batch holding a `delete_matching` operation ([`Keys::All`]) touches
//! every document: it waits for every earlier batch and every later batch
//! waits for it.
//!
//! Why not external versions (`version_type=external` with the change's
//! LSN, which the protocol carries in `Document.version`)? Elasticsearch
//! would then reject every write without a higher version: the writes of
//! Elastic's own tools and of users to the same index (which carry internal
//! versions) would conflict, and partial `update` items (unchanged TOAST
//! columns) cannot carry an external version at all. Per-id ordering keeps
//! plain `index`/`update`/`delete` items, so partial updates work and the
//! index stays writable by everybody else. Its cost is a hash set of the
//! ids per in-flight batch (bounded by the flow-control window) and, for
//! hot rows, less concurrency exactly where order matters.
//!
//! A waiting batch holds its flow-control permit, so the agent's window is
//! not exceeded by waiting batches; there is no cycle (a batch only waits
//! for earlier ones).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// What one batch touches.
#[derive(Debug)]
pub enum Keys {
    Ids(HashSet<String>),
    /// Every document of the index (`delete_matching`).
    All,
}

impl Keys {
    fn overlaps(&self, other: &Keys) -> bool {
        match (self, other) {
            (Keys::All, _) | (_, Keys::All) => true,
            (Keys::Ids(a), Keys::Ids(b)) => {
                let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
                small.iter().any(|id| large.contains(id))
            }
        }
    }
}

struct Entry {
    sequence: u64,
    keys: Keys,
    done: CancellationToken,
}

/// The in-flight batches of one job run.
#[derive(Default, Clone)]
pub struct OrderGate {
    inflight: Arc<Mutex<Vec<Entry>>>,
}

/// A registered batch. [`Ticket::ready`] waits for the earlier overlapping
/// batches; dropping the ticket (the batch was applied, failed or was
/// abandoned) releases the batches waiting for it.
pub struct Ticket {
    gate: OrderGate,
    sequence: u64,
    done: CancellationToken,
    waits: Vec<CancellationToken>,
}

impl OrderGate {
    /// Registers batch `sequence`; call in arrival order.
    pub fn enter(&self, sequence: u64, keys: Keys) -> Ticket {
        let mut inflight = self.inflight.lock().expect("order gate lock");
        let waits = inflight.iter().filter(|e| e.keys.overlaps(&keys)).map(|e| e.done.clone()).collect();
        let done = CancellationToken::new();
        inflight.push(Entry { sequence, keys, done: done.clone() });
        Ticket { gate: self.clone(), sequence, done, waits }
    }

    /// Batches registered and not yet done.
    pub fn in_flight(&self) -> usize {
        self.inflight.lock().expect("order gate lock").len()
    }
}

impl Ticket {
    /// How many earlier batches this one waits for (before `ready`).
    pub fn waits_for(&self) -> usize {
        self.waits.len()
    }

    /// Resolves once every earlier batch sharing an id with this one is done.
    pub async fn ready(&mut self) {
        for w in std::mem::take(&mut self.waits) {
            w.cancelled().await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.gate.inflight.lock().expect("order gate lock").retain(|e| e.sequence != self.sequence);
        self.done.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ids(v: &[&str]) -> Keys {
        Keys::Ids(v.iter().map(|s| s.to_string()).collect())
    }

    #[tokio::test]
    async fn a_batch_waits_only_for_earlier_batches_sharing_an_id() {
        let gate = OrderGate::default();
        let one = gate.enter(1, ids(&["a", "b"]));
        let two = gate.enter(2, ids(&["c"]));
        let mut three = gate.enter(3, ids(&["b", "d"]));
        assert_eq!(two.waits_for(), 0);
        assert_eq!(three.waits_for(), 1);
        // Three is not ready while one is in flight...
        assert!(tokio::time::timeout(Duration::from_millis(50), three.ready()).await.is_err());
        // ...and two finishing does not release it.
        drop(two);
        let mut three_again = gate.enter(4, ids(&["b"]));
        assert_eq!(three_again.waits_for(), 2, "waits for one and three");
        drop(one);
        tokio::time::timeout(Duration::from_secs(1), three.ready()).await.expect("three runs after one");
        assert!(tokio::time::timeout(Duration::from_millis(50), three_again.ready()).await.is_err());
        drop(three);
        tokio::time::timeout(Duration::from_secs(1), three_again.ready()).await.expect("four after three");
        drop(three_again);
        assert_eq!(gate.in_flight(), 0);
    }

    #[tokio::test]
    async fn delete_matching_is_a_barrier_both_ways() {
        let gate = OrderGate::default();
        let one = gate.enter(1, ids(&["a"]));
        let two = gate.enter(2, ids(&["b"]));
        let mut barrier = gate.enter(3, Keys::All);
        let mut after = gate.enter(4, ids(&["z"]));
        assert_eq!(barrier.waits_for(), 2);
        assert_eq!(after.waits_for(), 1, "a later batch waits for the delete_matching batch");
        drop(one);
        drop(two);
        tokio::time::timeout(Duration::from_secs(1), barrier.ready()).await.unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(50), after.ready()).await.is_err());
        drop(barrier);
        tokio::time::timeout(Duration::from_secs(1), after.ready()).await.unwrap();
    }

    /// Many batches changing one id, finishing in whatever order the
    /// scheduler picks: they are applied strictly in sequence.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_updates_of_one_id_apply_in_sequence() {
        let gate = OrderGate::default();
        let applied = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for seq in 1..=300u64 {
            let mut ticket = gate.enter(seq, ids(&["hot", &format!("cold-{seq}")]));
            let applied = applied.clone();
            tasks.push(tokio::spawn(async move {
                // Later batches are "faster": without the gate they would win.
                tokio::time::sleep(Duration::from_micros(300 - seq)).await;
                ticket.ready().await;
                applied.lock().unwrap().push(seq);
                drop(ticket);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let applied = applied.lock().unwrap().clone();
        assert_eq!(applied, (1..=300).collect::<Vec<_>>());
    }
}
