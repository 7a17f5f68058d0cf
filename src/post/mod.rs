//! Delivering postings to ERP endpoints: the outbox, rate limiting, the sinks (HTTP delivery,
//! PostgreSQL interface tables).

pub mod delivery;
pub mod endpoint;
pub mod imports;
pub mod outbox;
pub mod postgres;
pub mod ratelimit;
pub mod sink;
