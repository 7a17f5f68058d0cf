//! Applying events to available-to-promise state: per-SKU operations and the ledger of one
//! shard (positions, orders and sourcing, transfers, reservations, the movement tally).

pub mod ledger;
pub mod op;
pub mod paged;
pub mod slots;
