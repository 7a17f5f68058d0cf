//! Barrier snapshots: the coordinator that collects every actor's part of a barrier, the
//! snapshot format and its durable store.

pub mod context;
pub mod coordinator;
pub mod store;
pub mod ticker;
