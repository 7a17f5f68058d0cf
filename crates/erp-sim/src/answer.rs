//! What the simulator answers to a postings request, before it becomes an HTTP response.

use axum::http::StatusCode;
use std::time::Duration;

/// What the simulator answers to one postings request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    pub status: StatusCode,
    /// JSON text, kept as first sent so that a replay repeats it byte for byte.
    pub body: String,
    /// Whole seconds for the `Retry-After` header.
    pub retry_after: Option<u64>,
    /// A `Retry-After` value sent as given, instead of `retry_after` (a fault plan's; it may be
    /// an HTTP-date or a number no clock holds, as a broken ERP sends).
    pub retry_after_text: Option<String>,
    /// Whether this repeats an earlier answer (`Idempotent-Replayed: true`).
    pub replayed: bool,
}

impl Answer {
    pub fn new(status: StatusCode, body: serde_json::Value) -> Answer {
        Answer {
            status,
            body: body.to_string(),
            retry_after: None,
            retry_after_text: None,
            replayed: false,
        }
    }

    pub fn error(status: StatusCode, message: impl Into<String>) -> Answer {
        Answer::new(status, serde_json::json!({ "error": message.into() }))
    }

    pub fn retry_after(mut self, seconds: u64) -> Answer {
        self.retry_after = Some(seconds);
        self
    }

    pub fn retry_after_text(mut self, text: Option<String>) -> Answer {
        self.retry_after_text = text;
        self
    }
}

/// Rounds a wait up to the whole seconds a `Retry-After` header can carry; never 0, because
/// "retry after 0 s" invites the client to hammer.
pub(crate) fn whole_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}
