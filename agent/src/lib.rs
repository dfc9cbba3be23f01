//! Ferry's PostgreSQL agent as a library: the binary in `main.rs` wires the
//! configuration to the SDK runtime; integration tests use the pieces.

pub mod config;
pub mod postgres;
pub mod secrets;
