//! Applying events to available-to-promise state: per-SKU ops, the ledger, shard actors and
//! the concurrent view that queries read.

pub mod shard;
