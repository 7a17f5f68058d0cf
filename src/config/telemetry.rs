//! How retailflow reports on itself: the `[telemetry]` section.

use serde::{Deserialize, Serialize};

/// Logs. Metrics are always served at `GET /metrics`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `"text"` (one readable line per event) or `"json"` (one JSON object per line, with
    /// `timestamp`, `level`, `fields` and `span`, for a log shipper). `RUST_LOG` sets what is
    /// logged in both.
    pub log_format: LogFormat,
}

/// The shape of log lines on standard output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}
