//! Sync jobs: the state machine, the dispatcher that hands pending jobs to
//! agents, and the ingest path that turns an agent's batches into bulk
//! requests and acknowledgements.

pub mod dispatcher;
pub mod ingest;
pub mod lifecycle;
pub mod ordering;
pub mod scheduler;
pub mod slot;
pub mod state;
