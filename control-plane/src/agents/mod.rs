//! The agents side: the mTLS `AgentService/Session` endpoint, identities
//! from certificates, the registry of live sessions, and the registration
//! of connectors (schemas, configuration checks, `last_seen`).

pub mod authz;
pub mod filtering;
pub mod identity;
pub mod registration;
pub mod registry;
pub mod schema;
pub mod service;
pub mod tls;
