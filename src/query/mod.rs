//! Availability and reservation API over HTTP and NATS request-reply, reading the view.

pub mod decisions;
