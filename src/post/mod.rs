//! Delivering postings to ERP endpoints: the outbox, rate limiting, HTTP delivery.

pub mod delivery;
pub mod endpoint;
pub mod outbox;
pub mod postgres;
pub mod ratelimit;
pub mod sink;
