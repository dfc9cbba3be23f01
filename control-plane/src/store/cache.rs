//! An in-memory copy of the connector documents, kept in line with a
//! constant number of Elasticsearch requests per cycle.
//!
//! Contract:
//! - Every [`REFRESH_EVERY`] (and when something on this instance changed a
//!   connector: `Registry::changed`), [`ConnectorCache::refresh`] runs one
//!   search for the ids and `_seq_no` of every connector (no `_source`) and
//!   one `_mget` of those whose `_seq_no` moved: two requests whatever the
//!   number of connectors (up to [`MAX_CONNECTORS`]; past that the search
//!   pages with `search_after`, one more request per [`MAX_CONNECTORS`]).
//! - Readers (agent sessions, the dispatcher, the scheduler) read from here
//!   instead of `GET`ting each connector. Writers still go through
//!   `DocStore::update` (optimistic concurrency on the real document) and
//!   [`ConnectorCache::put`] what they wrote, so the next cycle does not
//!   read it back.
//! - Changes are pushed, not polled: [`ConnectorCache::subscribe`] gives a
//!   `watch` receiver whose value (a counter) moves after every refresh
//!   that changed something. A watch holds one value, so a slow session
//!   never queues anything: it sees the latest state when it wakes.
//! - A document seen here may be up to one cycle old; decisions that must
//!   not act on stale data (claims, writes) re-read under optimistic
//!   concurrency as before.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use super::{Connectors, Versioned};
use crate::elasticsearch::{EsError, SeqNo};
use crate::error::Result;
use crate::model::ConnectorDoc;

/// How often the cache looks for changed connectors. Operator changes reach
/// agents within this (plus Elasticsearch's refresh on another replica).
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// Hits per search page (Elasticsearch's default `max_result_window`).
pub const MAX_CONNECTORS: usize = 10_000;
/// Documents per `_mget` (bounds one answer's size).
const MGET_CHUNK: usize = 1_000;

#[derive(Default)]
pub struct ConnectorCache {
    docs: RwLock<HashMap<String, Versioned<ConnectorDoc>>>,
    changes: watch::Sender<u64>,
}

/// True when `a` is a later version of one document than `b`.
fn newer(a: SeqNo, b: SeqNo) -> bool {
    (a.primary_term, a.seq_no) > (b.primary_term, b.seq_no)
}

impl ConnectorCache {
    pub fn get(&self, id: &str) -> Option<Versioned<ConnectorDoc>> {
        self.docs.read().expect("cache lock").get(id).cloned()
    }

    /// Every cached connector (deleted ones included), in no order.
    pub fn all(&self) -> Vec<Versioned<ConnectorDoc>> {
        self.docs.read().expect("cache lock").values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.docs.read().expect("cache lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves after every change; sessions wait on it instead of polling.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn bump(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Records a version this instance wrote (or read under concurrency
    /// control); an older one than the cached version is ignored.
    pub fn put(&self, v: Versioned<ConnectorDoc>) {
        let mut docs = self.docs.write().expect("cache lock");
        let changed = match docs.get(&v.id) {
            Some(old) if !newer(v.seq_no, old.seq_no) => false,
            _ => {
                docs.insert(v.id.clone(), v);
                true
            }
        };
        drop(docs);
        if changed {
            self.bump();
        }
    }

    /// Sets `last_seen` on a cached connector after a write of only that
    /// field landed at `seq_no` (see `registration::run_last_seen`).
    pub fn set_last_seen(&self, id: &str, at: crate::model::Timestamp, seq_no: SeqNo) {
        let mut docs = self.docs.write().expect("cache lock");
        if let Some(v) = docs.get_mut(id) {
            if newer(seq_no, v.seq_no) {
                v.doc.last_seen = Some(at);
                v.seq_no = seq_no;
            }
        }
    }

    /// One cycle: ids and versions of every connector, then the changed
    /// documents. Returns how many documents changed (or disappeared).
    pub async fn refresh(&self, store: &Connectors) -> Result<usize> {
        let mut seen: HashMap<String, SeqNo> = HashMap::new();
        // One page is the common case and needs no sort. Past MAX_CONNECTORS
        // the pages sort by (name, index_name) (indexed keywords on both
        // distributions) and continue with `search_after`.
        let mut sorted = false;
        let mut after: Option<Vec<serde_json::Value>> = None;
        loop {
            let mut body = serde_json::json!({
                "_source": false,
                "size": MAX_CONNECTORS,
                "query": {"match_all": {}},
            });
            if sorted {
                body["sort"] =
                    serde_json::json!([{"name": {"order": "asc"}}, {"index_name": {"order": "asc"}}]);
            }
            if let Some(a) = &after {
                body["search_after"] = serde_json::Value::Array(a.clone());
            }
            let page = store.es_search_versions(&body).await?;
            let n = page.hits.len();
            let last_sort = page.hits.last().and_then(|h| h.sort.clone());
            for h in page.hits {
                if let Some(s) = h.seq_no() {
                    seen.insert(h.id, s);
                }
            }
            if n < MAX_CONNECTORS || (page.total as usize) <= seen.len() {
                break;
            }
            if !sorted {
                sorted = true;
                seen.clear();
                continue;
            }
            match last_sort {
                Some(s) => after = Some(s),
                None => break,
            }
        }
        let (stale, gone): (Vec<String>, Vec<String>) = {
            let docs = self.docs.read().expect("cache lock");
            let stale = seen
                .iter()
                .filter(|(id, s)| docs.get(*id).is_none_or(|v| newer(**s, v.seq_no)))
                .map(|(id, _)| id.clone())
                .collect();
            let gone = docs.keys().filter(|id| !seen.contains_key(*id)).cloned().collect();
            (stale, gone)
        };
        let mut changed = 0;
        for chunk in stale.chunks(MGET_CHUNK) {
            let got = store.es_mget(chunk).await?;
            let mut docs = self.docs.write().expect("cache lock");
            for d in got {
                let fresh = docs.get(&d.id).is_none_or(|v| newer(d.seq_no, v.seq_no));
                if fresh {
                    changed += 1;
                    docs.insert(d.id.clone(), Versioned { id: d.id, doc: d.source, seq_no: d.seq_no });
                }
            }
        }
        if !gone.is_empty() {
            let mut docs = self.docs.write().expect("cache lock");
            for id in &gone {
                if docs.remove(id).is_some() {
                    changed += 1;
                }
            }
        }
        if changed > 0 {
            self.bump();
        }
        Ok(changed)
    }
}

/// Keeps the cache in line: every [`REFRESH_EVERY`], and soon after this
/// instance changed something (`Registry::changed`).
pub async fn run_refresh(app: Arc<crate::app::App>) {
    let mut tick = tokio::time::interval(REFRESH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = tick.tick() => {}
            _ = app.registry.changed.notified() => {
                // Let a burst of changes settle into one cycle.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if let Err(e) = app.connector_cache.refresh(&app.stores.connectors).await {
            tracing::warn!(
                "reading changed connectors failed (retrying in {} s): {e}",
                REFRESH_EVERY.as_secs()
            );
        }
    }
}

impl Connectors {
    async fn es_search_versions(
        &self,
        body: &serde_json::Value,
    ) -> Result<crate::elasticsearch::SearchResult<Option<serde::de::IgnoredAny>>> {
        match self.es.search::<Option<serde::de::IgnoredAny>>(self.index, body).await {
            Ok(r) => Ok(r),
            Err(EsError::NotFound { .. }) => {
                Ok(crate::elasticsearch::SearchResult { total: 0, hits: vec![] })
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn es_mget(&self, ids: &[String]) -> Result<Vec<crate::elasticsearch::VersionedDoc<ConnectorDoc>>> {
        match self.es.mget::<ConnectorDoc>(self.index, ids).await {
            Ok(r) => Ok(r),
            Err(EsError::NotFound { .. }) => Ok(vec![]),
            Err(e) => Err(e.into()),
        }
    }
}
