//! Typed access to the connector and sync job documents in Elasticsearch.
//!
//! The control plane holds no state of its own: every decision reads these
//! documents and every change writes them back under optimistic concurrency
//! (`if_seq_no` + `if_primary_term`). [`DocStore::update`] is the one
//! read-modify-write loop: it re-reads and re-applies the change when
//! another writer got there first.

pub mod cache;
pub mod indices;

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::elasticsearch::{Concurrency, EsClient, EsError, Refresh, SearchResult, SeqNo};
use crate::error::{Error, Result};
use crate::model::{ConnectorDoc, SyncJobDoc, CONNECTORS_INDEX, SYNC_JOBS_INDEX};

/// A document with its concurrency token.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    pub id: String,
    pub doc: T,
    pub seq_no: SeqNo,
}

/// What an update closure decided.
pub enum Change<R> {
    /// Write the modified document, then return `R`.
    Write(R),
    /// Leave the document as it is and return `R`.
    Keep(R),
}

/// How many times a read-modify-write is retried after losing a race.
const MAX_CONFLICT_RETRIES: usize = 20;

pub struct DocStore<T> {
    es: EsClient,
    index: &'static str,
    _doc: PhantomData<fn() -> T>,
}

impl<T> Clone for DocStore<T> {
    fn clone(&self) -> Self {
        Self { es: self.es.clone(), index: self.index, _doc: PhantomData }
    }
}

pub type Connectors = DocStore<ConnectorDoc>;
pub type SyncJobs = DocStore<SyncJobDoc>;

impl<T: Serialize + DeserializeOwned + Send + Sync> DocStore<T> {
    pub fn new(es: EsClient, index: &'static str) -> Self {
        Self { es, index, _doc: PhantomData }
    }

    pub fn index(&self) -> &'static str {
        self.index
    }

    pub async fn get(&self, id: &str) -> Result<Option<Versioned<T>>> {
        match self.es.get_doc::<T>(self.index, id).await {
            Ok(Some(d)) => Ok(Some(Versioned { id: d.id, doc: d.source, seq_no: d.seq_no })),
            Ok(None) => Ok(None),
            // The index does not exist yet: no document either.
            Err(EsError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates the document; `Aborted` if the id is taken.
    pub async fn create(&self, id: &str, doc: &T) -> Result<SeqNo> {
        match self.es.put_doc(self.index, id, doc, Concurrency::Create, Refresh::True).await {
            Ok(w) => Ok(w.seq_no),
            Err(EsError::Conflict { .. }) => Err(Error::Aborted(format!("{id} already exists"))),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the document if it is still at `seq_no`.
    pub async fn replace(&self, id: &str, doc: &T, seq_no: SeqNo) -> Result<std::result::Result<SeqNo, ()>> {
        match self.es.put_doc(self.index, id, doc, Concurrency::IfMatch(seq_no), Refresh::True).await {
            Ok(w) => Ok(Ok(w.seq_no)),
            Err(EsError::Conflict { .. }) => Ok(Err(())),
            Err(e) => Err(e.into()),
        }
    }

    /// Read-modify-write under optimistic concurrency. `f` may run several
    /// times (once per lost race) and must decide from the document alone.
    /// `None` when the document does not exist.
    pub async fn update<R>(
        &self,
        id: &str,
        mut f: impl FnMut(&mut T) -> Result<Change<R>>,
    ) -> Result<Option<(Versioned<T>, R)>> {
        for _ in 0..MAX_CONFLICT_RETRIES {
            let Some(mut current) = self.get(id).await? else { return Ok(None) };
            match f(&mut current.doc)? {
                Change::Keep(r) => return Ok(Some((current, r))),
                Change::Write(r) => match self.replace(id, &current.doc, current.seq_no).await? {
                    Ok(seq_no) => {
                        current.seq_no = seq_no;
                        return Ok(Some((current, r)));
                    }
                    Err(()) => continue,
                },
            }
        }
        Err(Error::Aborted(format!(
            "{}/{id} kept changing under concurrent writers; retry the request",
            self.index
        )))
    }

    pub async fn search(&self, body: &serde_json::Value) -> Result<SearchResult<T>> {
        match self.es.search::<T>(self.index, body).await {
            Ok(r) => Ok(r),
            Err(EsError::NotFound { .. }) => Ok(SearchResult { total: 0, hits: vec![] }),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the documents matching `query` (the query itself, e.g.
    /// `{"term": {...}}`; the client wraps it in `{"query": ...}`). A missing
    /// index has nothing to delete.
    pub async fn delete_by_query(&self, query: &serde_json::Value) -> Result<u64> {
        match self.es.delete_by_query(self.index, query).await {
            Ok(n) => Ok(n),
            Err(EsError::NotFound { .. }) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }
}

/// Both stores over one client.
#[derive(Clone)]
pub struct Stores {
    pub es: EsClient,
    pub connectors: Connectors,
    pub jobs: SyncJobs,
}

impl Stores {
    pub fn new(es: EsClient) -> Self {
        Self {
            connectors: DocStore::new(es.clone(), CONNECTORS_INDEX),
            jobs: DocStore::new(es.clone(), SYNC_JOBS_INDEX),
            es,
        }
    }
}
