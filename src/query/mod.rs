//! Availability and reservation API over HTTP and NATS request-reply, reading the view.

pub mod auth;
pub mod context;
pub mod feed;
pub mod http;
pub mod listener;
pub mod model;
pub mod nats;
pub mod reserve;
