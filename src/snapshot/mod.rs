//! Barrier snapshots: the coordinator that collects every actor's part of a barrier, the
//! snapshot format and its durable store.

pub use retailflow_core::snapshot::format;
pub mod coordinator;
pub mod store;
pub mod ticker;
