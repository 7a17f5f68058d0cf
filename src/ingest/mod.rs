//! Ingest: pull from the events stream, decode, validate, deduplicate, route to actors, with
//! credit-based flow control and dead letters for bad input.

pub use retailflow_core::ingest::{dedupe, keys, route};
pub mod actor;
pub mod deadletter;
pub mod reader;
