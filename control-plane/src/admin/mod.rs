//! The admin API for operators (grpcurl is the console): connectors and
//! sync jobs, with gRPC server reflection (v1 and v1alpha, so grpcurl of any
//! age can list and describe services) and `grpc.health.v1`.

pub mod connectors;
pub mod convert;
pub mod elsewhere;
pub mod fleet;
pub mod identity;
pub mod page;
pub mod settings;
pub mod sync_jobs;
pub mod validate;
pub mod watch;
