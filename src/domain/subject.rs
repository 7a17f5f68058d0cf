//! The subject scheme. Events: `retail.v1.<system>.<location>.<kind>`, where `system` is one of
//! the systems the events stream captures (see [`crate::config::StreamsConfig`]). Everything
//! else retailflow publishes lives under names no events stream captures.

/// Prefix of every subject.
pub const ROOT: &str = "retail.v1";
/// Availability queries (request-reply, JSON).
pub const ATP_QUERY: &str = "retail.v1.atp.query";
/// Reservation requests (request-reply, JSON).
pub const ATP_RESERVE: &str = "retail.v1.atp.reserve";
/// Reservation releases (request-reply, JSON).
pub const ATP_RELEASE: &str = "retail.v1.atp.release";
/// Prefix of the availability change feed: `retail.v1.atp.changed.<sku>`.
pub const ATP_CHANGED: &str = "retail.v1.atp.changed";
/// Published when every cached availability answer may be stale (retailflow restarted and
/// replayed, or a channel definition changed): caches drop what they hold.
pub const ATP_RESET: &str = "retail.v1.atp.reset";
/// Prefix of dead letters: `retail.v1.dlq.<stage>.<reason>`.
pub const DLQ: &str = "retail.v1.dlq";
/// Prefix of the postings outbox: `retail.v1.postings.<endpoint>.<document kind>`.
pub const POSTINGS: &str = "retail.v1.postings";
/// Barriers published by retailflow into its own events stream.
pub const BARRIER: &str = "retail.v1.ctl.all.barrier";
/// Reservation requests and releases published by the API into the events stream.
pub const API_EVENTS: &str = "retail.v1.api";

/// `retail.v1.<system>.<location>.<kind>`.
pub fn event(system: &str, location: &str, kind: &str) -> String {
    format!("{ROOT}.{system}.{location}.{kind}")
}

pub fn dead_letter(stage: &str, reason: &str) -> String {
    format!("{DLQ}.{stage}.{reason}")
}

pub fn posting(endpoint: &str, kind: &str) -> String {
    format!("{POSTINGS}.{endpoint}.{kind}")
}

pub fn changed(sku: &str) -> String {
    format!("{ATP_CHANGED}.{sku}")
}
