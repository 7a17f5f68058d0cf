//! The pure half of ingest: deduplication by stream sequence and by source, the reservation
//! keys seen, and routing of an event to the shards and stores it concerns.

pub mod dedupe;
pub mod keys;
pub mod route;
