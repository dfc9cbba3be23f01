//! The documents the control plane keeps in Elasticsearch, shaped as
//! Elastic's Connector Protocol defines them (`.elastic-connectors`,
//! `.elastic-connectors-sync-jobs`). Fields the control plane does not know
//! are kept (`extra`) so that read-modify-write never drops what Kibana or
//! another writer put there. Ferry's own bookkeeping lives under `ferry`.

pub mod connector;
pub mod sync_job;

pub use connector::{ConfigEntry, ConnectorDoc, ConnectorStatus};
pub use sync_job::{JobStatus, JobType, SyncJobDoc, TriggerMethod};

/// Index (alias on Elasticsearch) of connector documents.
pub const CONNECTORS_INDEX: &str = ".elastic-connectors";
/// Index (alias on Elasticsearch) of sync job documents.
pub const SYNC_JOBS_INDEX: &str = ".elastic-connectors-sync-jobs";

pub type Timestamp = time::OffsetDateTime;

pub fn now() -> Timestamp {
    // Millisecond precision, as Elasticsearch stores dates.
    let t = time::OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000).unwrap_or(t)
}

pub fn to_proto_ts(t: &Option<Timestamp>) -> Option<prost_types::Timestamp> {
    t.map(|t| prost_types::Timestamp { seconds: t.unix_timestamp(), nanos: t.nanosecond() as i32 })
}
