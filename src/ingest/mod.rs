//! Ingest: pull from the events stream, decode, validate, deduplicate, route to actors, with
//! credit-based flow control and dead letters for bad input.

pub mod actor;
pub mod context;
pub mod reader;
