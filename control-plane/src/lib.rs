//! Ferry control plane library.

pub mod elasticsearch;
