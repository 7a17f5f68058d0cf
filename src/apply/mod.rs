//! Applying events to available-to-promise state: per-SKU ops, the ledger, shard actors and
//! the concurrent view that queries read.

pub mod ledger;
pub mod op;
pub mod shard;
pub mod slots;
pub mod view;
