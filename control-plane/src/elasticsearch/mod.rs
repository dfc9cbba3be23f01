//! The control plane's only door to Elasticsearch (or OpenSearch).
//!
//! Contracts:
//! - Only the standard REST API, in the subset that Elasticsearch 8.x/9.x and OpenSearch 2.x/3.x
//!   share; [`version::handshake`] refuses anything else at startup.
//! - Every request carries `X-elastic-product-origin: connectors`.
//! - One error type, [`EsError`]: a 409 is always [`EsError::Conflict`] (optimistic concurrency
//!   lost: re-read and retry), 401/403 [`EsError::Auth`], no answer [`EsError::Transport`].
//!   Credentials never appear in errors or logs.
//! - Writes take a [`Refresh`] so callers that need read-your-writes say so explicitly.
//! - [`bulk::BulkIndexer`] never reports success for a document Elasticsearch did not accept:
//!   items are parsed one by one, 429/5xx items are retried with backoff, the rest are counted.
//! - Vanished documents are deleted by generation ([`index::delete_stale`]), not by remembering ids.

pub mod bulk;
pub mod client;
pub mod error;
pub mod index;
pub mod mapping;
pub mod version;

pub use bulk::{BulkConfig, BulkDoc, BulkIndexer, BulkOp, BulkOutcome, ItemFailure};
pub use client::{
    ClusterInfo, Concurrency, EsAuth, EsClient, EsClientConfig, Hit, Refresh, SearchResult, SeqNo,
    VersionedDoc, WriteResult,
};
pub use error::EsError;
pub use version::{check_version, handshake, Distribution, ServerVersion};
