//! Counters and gauges, rendered in Prometheus text format on `GET /metrics`.
//!
//! Plain atomics: the hot path adds to a counter with one relaxed instruction and nothing
//! allocates per event. A scrape reads them and prometheus-client writes the text
//! (`exposition.rs`).

use dashmap::DashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

mod exposition;

#[derive(Default, Debug)]
pub struct EndpointMetrics {
    pub requests: AtomicU64,
    pub accepted: AtomicU64,
    pub replays: AtomicU64,
    pub throttled_429: AtomicU64,
    pub retries: AtomicU64,
    pub rejected: AtomicU64,
    pub in_flight: AtomicI64,
    pub pending: AtomicI64,
    // ERP endpoint faults (H4): an endpoint that is down or refuses our credentials pauses.
    /// 1 while the endpoint is paused by a fault that is not a document's, else 0.
    pub paused: AtomicI64,
    /// Times the endpoint went from healthy to paused.
    pub pauses: AtomicU64,
    /// Answers that paused the endpoint or kept it paused (401, 403, 5xx, timeouts, ...).
    pub faults: AtomicU64,
}

/// Kinds of worker whose busy time is counted.
#[derive(Clone, Copy, Debug)]
pub enum Stage {
    Reader = 0,
    Ingest = 1,
    Shard = 2,
    Store = 3,
    Coordinator = 4,
}

pub const STAGES: [&str; 5] = ["reader", "ingest", "shard", "store", "coordinator"];

#[derive(Default, Debug)]
pub struct Metrics {
    pub events_received: AtomicU64,
    pub events_applied: AtomicU64,
    pub ops_applied: AtomicU64,
    /// Dropped by the stream-sequence check (redelivery after a consumer restart).
    pub duplicates_redelivered: AtomicU64,
    /// Dropped by the per-source check (producer re-send or replay).
    pub duplicates_resent: AtomicU64,
    pub dead_letters: AtomicU64,
    pub late_events: AtomicU64,
    pub gap_sequences: AtomicU64,
    pub barriers: AtomicU64,
    pub snapshots: AtomicU64,
    pub postings_formed: AtomicU64,
    pub postings_released: AtomicU64,
    pub actor_restarts: AtomicU64,
    pub ingest_paused: AtomicU64,
    pub consumer_lag: AtomicI64,
    /// Where ingest spends its time, in microseconds: waiting for credit (actors behind),
    /// waiting for messages (stream drained or server slow), processing.
    pub ingest_wait_credit_us: AtomicU64,
    pub ingest_wait_messages_us: AtomicU64,
    pub ingest_busy_us: AtomicU64,
    /// Time spent handling messages, per kind of worker (see [`Stage`]), in microseconds.
    pub busy_us: [AtomicU64; 5],
    pub last_applied_seq: AtomicU64,
    pub stream_last_seq: AtomicU64,
    pub negative_on_hand: AtomicU64,
    pub short_allocations: AtomicU64,
    pub queries: AtomicU64,
    pub reservations_granted: AtomicU64,
    pub reservations_rejected: AtomicU64,
    /// Messages published on the availability change feed (changes and resets).
    pub feed_messages: AtomicU64,
    // --- API trust boundary (issue 25, H3): tokens, HTTP bounds, reservation bounds ---
    /// HTTP requests refused for want of a bearer token (401).
    pub auth_missing: AtomicU64,
    /// HTTP requests refused for an unknown token (401).
    pub auth_invalid: AtomicU64,
    /// HTTP requests refused because the token lacks the route's scope (403).
    pub auth_forbidden: AtomicU64,
    pub token_reloads: AtomicU64,
    pub token_reload_failures: AtomicU64,
    /// HTTP connections open now.
    pub http_connections: AtomicI64,
    /// Times a new connection had to wait because `api.max_connections` were open.
    pub http_connection_limit_hits: AtomicU64,
    /// Connections closed for not sending a request head within `api.header_timeout`.
    pub http_header_timeouts: AtomicU64,
    /// Connections closed after `api.idle_timeout` without traffic.
    pub http_idle_closed: AtomicU64,
    /// Requests answered 413 (body over `api.max_body_bytes`).
    pub http_body_too_large: AtomicU64,
    /// TLS handshakes that failed or timed out.
    pub http_tls_failures: AtomicU64,
    /// Reservation requests refused: idempotency key reused with a different request.
    pub reservation_key_conflicts: AtomicU64,
    /// Remembered rejections forgotten early because a shard held `reservations.max_rejected`.
    pub rejections_evicted: AtomicU64,
    /// Reservation requests answered 503 because the publish queue was full.
    pub reservation_queue_full: AtomicU64,
    /// Idempotency keys ingest holds (a gauge, set as ingest admits and prunes them).
    pub reservation_keys: AtomicU64,
    /// Reservation requests under a new key answered 503: `reservations.max_keys` held.
    pub reservation_keys_full: AtomicU64,
    /// Reservation requests answered 503: no decision within `reservations.decision_timeout`.
    pub reservation_timeouts: AtomicU64,
    // --- end H3 ---
    pub endpoints: DashMap<String, Arc<EndpointMetrics>>,
    pub dead_letter_reasons: DashMap<String, u64>,

    // Hostile input, parsers (issue 25, H1).
    /// The direct reader met bytes that are not the NATS protocol (a message size beyond
    /// `bus::pull::MAX_MESSAGE`, a broken line) and reopened its consumer.
    pub nats_protocol_errors: AtomicU64,
    /// Header lines async-nats cannot hold, kept escaped in `Retailflow-Invalid-Header` of a
    /// dead letter.
    pub invalid_headers_kept: AtomicU64,

    // --- Ingest resilience and health (issue 25, H2): panics, dedupe bounds, dead-letter
    // publishing, snapshot backlog, the paused-endpoint hook healthz reads. ---
    /// Messages whose handling panicked (dead-lettered with reason `panic`).
    pub ingest_panics: AtomicU64,
    /// Sources the dedupe table forgot to stay under `ingest.dedupe_sources`.
    pub dedupe_sources_evicted: AtomicU64,
    /// Remembered gaps dropped to stay under the per-source gap bound.
    pub dedupe_gaps_dropped: AtomicU64,
    /// Dead letters that could not be published after bounded retries.
    pub dead_letter_publish_failures: AtomicU64,
    /// Posting documents formed but not yet released because no snapshot was durable.
    pub snapshot_pending_postings: AtomicU64,
    /// Times ingest paused because `snapshot.max_pending_postings` was reached.
    pub snapshot_backpressure: AtomicU64,
    /// Snapshots that failed to be written.
    pub snapshot_failures: AtomicU64,
    /// ERP endpoints currently paused (the ERP answers as if it were down or misconfigured);
    /// the delivery side moves it, `/healthz` reports `degraded` while it is above zero.
    pub erp_paused_endpoints: AtomicU64,
    /// Unix ms when ingest was last seen making progress (applied moved, or nothing to do);
    /// set by the barrier ticker each tick, read by `/healthz`.
    pub ingest_progress_at_ms: AtomicU64,
    /// Unix ms of the first snapshot failure since the last success; 0 while snapshots work.
    pub snapshot_failing_since_ms: AtomicU64,
    /// 1 while this replica leads (performs the side effects), else 0.
    pub leader: AtomicU64,
    /// The lease revision this replica leads under (0 while it follows).
    pub leader_term: AtomicU64,
    /// Times this replica started or stopped leading.
    pub leader_changes: AtomicU64,

    // --- Snapshot recovery (issue 25, H5). ---
    /// Start-ups that skipped an unusable latest snapshot and used an older kept one.
    pub snapshot_fallbacks: AtomicU64,
    /// Store days forgotten because a store kept more than its most (oldest first).
    pub finance_days_dropped: AtomicU64,
    /// Records of the finance and audit streams that did not decode (skipped).
    pub finance_records_undecodable: AtomicU64,
    /// Dead letters brought back by a re-drive and applied.
    pub redrives_applied: AtomicU64,
    /// Re-drives not applied: their letter had been brought back before.
    pub redrives_refused: AtomicU64,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    pub fn endpoint(&self, name: &str) -> Arc<EndpointMetrics> {
        self.endpoints
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(EndpointMetrics::default()))
            .clone()
    }

    /// Adds the time since `start` to a stage's busy counter.
    pub fn busy(&self, stage: Stage, start: std::time::Instant) {
        self.busy_us[stage as usize].fetch_add(start.elapsed().as_micros() as u64, Relaxed);
    }

    pub fn dead_letter(&self, reason: &str) {
        self.dead_letters.fetch_add(1, Relaxed);
        *self
            .dead_letter_reasons
            .entry(reason.to_string())
            .or_insert(0) += 1;
    }

    /// Prometheus text exposition (format 0.0.4), read from the atomics now (see
    /// `exposition.rs`).
    pub fn render(&self) -> String {
        exposition::render(self)
    }
}

/// Installs the tracing subscriber: `RUST_LOG` or the given default filter, lines of text or
/// of JSON.
pub fn init_logging(default: &str, format: crate::config::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = match format {
        crate::config::LogFormat::Text => logs.try_init(),
        crate::config::LogFormat::Json => logs.json().try_init(),
    };
}

#[cfg(test)]
mod tests;
