//! Ferry's control plane.
//!
//! - [`elasticsearch`]: the only door to Elasticsearch (client, bulk path,
//!   version handshake, index management).
//! - [`model`] and [`store`]: connector and sync job documents, kept in
//!   Elasticsearch under optimistic concurrency. The control plane holds no
//!   other state.
//! - [`agents`]: the mTLS session endpoint agents dial into, and connector
//!   registration (schemas, `last_seen`, configuration checks).
//! - [`jobs`]: the job state machine, the dispatcher, the ingest path.
//! - [`admin`]: the operators' gRPC API.
//! - [`server`]: wiring, listeners, ordered shutdown.
//! - [`metrics`]: Prometheus metrics (`metrics.listen`).
//! - [`pki`]: development certificates (`ferry-control-plane certs`).
//! - [`enrollment`]: one-time tokens → agent certificates; revocation.

pub mod admin;
pub mod agents;
pub mod app;
pub mod config;
pub mod elasticsearch;
pub mod enrollment;
pub mod error;
pub mod jobs;
pub mod metrics;
pub mod model;
pub mod pki;
pub mod server;
pub mod store;
