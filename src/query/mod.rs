//! Availability and reservation API over HTTP and NATS request-reply, reading the view; the
//! reconciliation routes for finance.

pub mod auth;
pub mod context;
pub mod dlq;
pub mod feed;
pub mod finance;
pub mod http;
pub mod listener;
pub mod model;
pub mod nats;
pub mod reply;
pub mod reserve;
pub mod ui;
