//! The snapshot format: everything ingest, the shards and the stores hold at a barrier.

pub mod format;
