//! Ferry's software development kit for Rust.
//!
//! - [`proto`]: the generated `ferry.v1` wire types and gRPC stubs. They stay
//!   at the edges: the control plane and agents convert them into their own
//!   domain types on receipt.
//! - [`source`]: the [`Source`] trait an agent implements for one kind of
//!   data source (configuration schema, validate + ping, stream documents
//!   with checkpoints, honour cancellation).
//! - [`runtime`]: everything else an agent needs: connect over mTLS,
//!   reconnect with backoff, heartbeats, flow control, job bookkeeping.
//! - [`metrics`]: the Prometheus endpoint (`metrics.listen`) and the agent
//!   runtime's metrics.

pub mod config_schema;
pub mod metrics;
pub mod rules;
pub mod runtime;
pub mod schema;
pub mod settings;
pub mod source;

pub use config_schema::{ConfigFieldSpec, ConfigValues};
pub use rules::{BasicRule, RuleError, SyncRules};
pub use schema::{DocumentSchema, FieldKind, FieldSpec};
pub use source::{
    DocOp, DocumentSender, IncrementalMode, Job, JobKind, Source, SourceCapabilities, SourceError,
    SyncStopped,
};

/// Generated protocol types (`ferry.v1`).
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("ferry.v1");

    /// Encoded `FileDescriptorSet` of every `ferry.v1` file, for gRPC
    /// server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ferry_v1_descriptor");
}

/// The protocol version this SDK speaks.
pub const PROTOCOL_VERSION: proto::ProtocolVersion = proto::ProtocolVersion::ProtocolVersion1;
