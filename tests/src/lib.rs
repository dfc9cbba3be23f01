//! Test harness for Ferry's integration tests: throwaway real components
//! (PostgreSQL cluster, osmem-server, certificates) and the real binaries.
//!
//! Every piece cleans up after itself on drop.

pub mod certs;
pub mod faults;
pub mod netcut;
pub mod netns;
pub mod osmem;
pub mod postgres;
pub mod process;
pub mod scenario;
