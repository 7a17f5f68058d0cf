//! Delivering postings to ERP endpoints: the outbox, rate limiting, HTTP delivery.

pub mod outbox;
pub mod ratelimit;
