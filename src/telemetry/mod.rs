//! Counters and gauges, rendered in Prometheus text format on `GET /metrics`.
//!
//! Plain atomics: the hot path adds to a counter with one relaxed instruction and nothing
//! allocates per event.

use dashmap::DashMap;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Name, Prometheus type, help text and reader of one per-endpoint series.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&EndpointMetrics) -> i64,
);

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

    // --- Snapshot recovery (issue 25, H5). ---
    /// Start-ups that skipped an unusable latest snapshot and used an older kept one.
    pub snapshot_fallbacks: AtomicU64,
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

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP retailflow_{name} {help}");
            let _ = writeln!(out, "# TYPE retailflow_{name} counter");
            let _ = writeln!(out, "retailflow_{name} {v}");
        };
        counter(
            "events_received_total",
            "Messages read from the events stream.",
            self.events_received.load(Relaxed),
        );
        counter(
            "events_applied_total",
            "Events applied (after dedupe and validation).",
            self.events_applied.load(Relaxed),
        );
        counter(
            "ops_applied_total",
            "Per-SKU operations applied by shards.",
            self.ops_applied.load(Relaxed),
        );
        counter(
            "dead_letters_total",
            "Events and postings sent to the dead-letter stream.",
            self.dead_letters.load(Relaxed),
        );
        counter(
            "late_events_total",
            "Events that arrived after their reorder window.",
            self.late_events.load(Relaxed),
        );
        counter(
            "gap_sequences_total",
            "Per-source sequences skipped by a jump ahead.",
            self.gap_sequences.load(Relaxed),
        );
        // Hostile input, parsers (issue 25, H1).
        counter(
            "nats_protocol_errors_total",
            "Direct-reader NATS protocol errors (oversized or malformed frames).",
            self.nats_protocol_errors.load(Relaxed),
        );
        counter(
            "invalid_headers_kept_total",
            "Header lines async-nats refuses, kept escaped in dead letters.",
            self.invalid_headers_kept.load(Relaxed),
        );
        counter(
            "barriers_total",
            "Barriers processed.",
            self.barriers.load(Relaxed),
        );
        counter(
            "snapshots_total",
            "Snapshots made durable.",
            self.snapshots.load(Relaxed),
        );
        counter(
            "postings_formed_total",
            "Posting documents formed at barriers.",
            self.postings_formed.load(Relaxed),
        );
        counter(
            "postings_released_total",
            "Posting documents published to the outbox.",
            self.postings_released.load(Relaxed),
        );
        counter(
            "actor_restarts_total",
            "Actors restarted by the supervisor.",
            self.actor_restarts.load(Relaxed),
        );
        counter(
            "ingest_paused_total",
            "Times ingest paused for backpressure.",
            self.ingest_paused.load(Relaxed),
        );
        counter(
            "negative_on_hand_total",
            "Facts that took on-hand below zero (exceptions).",
            self.negative_on_hand.load(Relaxed),
        );
        counter(
            "short_allocations_total",
            "Orders allocated beyond availability (exceptions).",
            self.short_allocations.load(Relaxed),
        );
        counter(
            "queries_total",
            "Availability queries answered.",
            self.queries.load(Relaxed),
        );
        counter(
            "reservations_granted_total",
            "Reservation requests granted.",
            self.reservations_granted.load(Relaxed),
        );
        counter(
            "reservations_rejected_total",
            "Reservation requests rejected.",
            self.reservations_rejected.load(Relaxed),
        );
        counter(
            "feed_messages_total",
            "Availability change feed messages published.",
            self.feed_messages.load(Relaxed),
        );
        // API trust boundary (H3).
        for (kind, v) in [
            ("missing", &self.auth_missing),
            ("invalid", &self.auth_invalid),
            ("forbidden", &self.auth_forbidden),
        ] {
            if kind == "missing" {
                let _ = writeln!(
                    out,
                    "# HELP retailflow_auth_failures_total HTTP requests refused, by kind."
                );
                let _ = writeln!(out, "# TYPE retailflow_auth_failures_total counter");
            }
            let _ = writeln!(
                out,
                "retailflow_auth_failures_total{{kind=\"{kind}\"}} {}",
                v.load(Relaxed)
            );
        }
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP retailflow_{name} {help}");
            let _ = writeln!(out, "# TYPE retailflow_{name} counter");
            let _ = writeln!(out, "retailflow_{name} {v}");
        };
        for (name, help, v) in [
            (
                "token_reloads_total",
                "API tokens file reloads.",
                &self.token_reloads,
            ),
            (
                "token_reload_failures_total",
                "API tokens file reloads refused (old tokens kept).",
                &self.token_reload_failures,
            ),
            (
                "http_connection_limit_hits_total",
                "New HTTP connections that waited for api.max_connections.",
                &self.http_connection_limit_hits,
            ),
            (
                "http_header_timeouts_total",
                "HTTP connections closed by api.header_timeout.",
                &self.http_header_timeouts,
            ),
            (
                "http_idle_closed_total",
                "HTTP connections closed by api.idle_timeout.",
                &self.http_idle_closed,
            ),
            (
                "http_body_too_large_total",
                "HTTP requests answered 413 (api.max_body_bytes).",
                &self.http_body_too_large,
            ),
            (
                "http_tls_failures_total",
                "TLS handshakes failed or timed out.",
                &self.http_tls_failures,
            ),
            (
                "reservation_key_conflicts_total",
                "Reservation requests refused: idempotency key reused with a different request.",
                &self.reservation_key_conflicts,
            ),
            (
                "rejections_evicted_total",
                "Remembered reservation rejections forgotten at reservations.max_rejected.",
                &self.rejections_evicted,
            ),
            (
                "reservation_queue_full_total",
                "Reservation requests answered 503: publish queue full.",
                &self.reservation_queue_full,
            ),
            (
                "reservation_keys_full_total",
                "Reservation requests under a new key answered 503: reservations.max_keys held.",
                &self.reservation_keys_full,
            ),
        ] {
            counter(name, help, v.load(Relaxed));
        }
        let _ = writeln!(
            out,
            "# HELP retailflow_http_connections HTTP connections open.\n# TYPE retailflow_http_connections gauge\nretailflow_http_connections {}",
            self.http_connections.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP retailflow_duplicates_total Duplicates dropped, by layer."
        );
        let _ = writeln!(out, "# TYPE retailflow_duplicates_total counter");
        let _ = writeln!(
            out,
            "retailflow_duplicates_total{{layer=\"redelivery\"}} {}",
            self.duplicates_redelivered.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "retailflow_duplicates_total{{layer=\"resend\"}} {}",
            self.duplicates_resent.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP retailflow_dead_letters_by_reason_total Dead letters by reason."
        );
        let _ = writeln!(
            out,
            "# TYPE retailflow_dead_letters_by_reason_total counter"
        );
        let mut reasons: Vec<_> = self
            .dead_letter_reasons
            .iter()
            .map(|e| (e.key().clone(), *e.value()))
            .collect();
        reasons.sort();
        for (r, v) in reasons {
            let _ = writeln!(
                out,
                "retailflow_dead_letters_by_reason_total{{reason=\"{r}\"}} {v}"
            );
        }
        let gauge = |out: &mut String, name: &str, help: &str, v: i64| {
            let _ = writeln!(out, "# HELP retailflow_{name} {help}");
            let _ = writeln!(out, "# TYPE retailflow_{name} gauge");
            let _ = writeln!(out, "retailflow_{name} {v}");
        };
        gauge(
            &mut out,
            "consumer_lag",
            "Events in the stream not yet applied.",
            self.consumer_lag.load(Relaxed),
        );
        gauge(
            &mut out,
            "erp_paused_endpoints",
            "ERP endpoints currently paused by a fault that is not a document's.",
            self.erp_paused_endpoints.load(Relaxed) as i64,
        );
        gauge(
            &mut out,
            "reservation_keys",
            "Reservation idempotency keys held.",
            self.reservation_keys.load(Relaxed) as i64,
        );
        gauge(
            &mut out,
            "last_applied_seq",
            "Stream sequence applied by every shard.",
            self.last_applied_seq.load(Relaxed) as i64,
        );
        // Ingest resilience and health (issue 25, H2).
        for (name, help, v) in [
            (
                "ingest_panics_total",
                "Messages whose handling panicked; each was dead-lettered with reason panic.",
                &self.ingest_panics,
            ),
            (
                "dedupe_sources_evicted_total",
                "Sources the dedupe table forgot (least recently seen) to stay under ingest.dedupe_sources.",
                &self.dedupe_sources_evicted,
            ),
            (
                "dedupe_gaps_dropped_total",
                "Remembered per-source gaps dropped to stay under the gap bound.",
                &self.dedupe_gaps_dropped,
            ),
            (
                "dead_letter_publish_failures_total",
                "Dead letters not stored after bounded retries.",
                &self.dead_letter_publish_failures,
            ),
            (
                "snapshot_backpressure_total",
                "Times ingest paused because snapshot.max_pending_postings was reached.",
                &self.snapshot_backpressure,
            ),
            (
                "snapshot_failures_total",
                "Snapshots that failed to be written.",
                &self.snapshot_failures,
            ),
            (
                "snapshot_fallbacks_total",
                "Start-ups that skipped an unusable latest snapshot and used an older kept one.",
                &self.snapshot_fallbacks,
            ),
        ] {
            let _ = writeln!(out, "# HELP retailflow_{name} {help}");
            let _ = writeln!(out, "# TYPE retailflow_{name} counter");
            let _ = writeln!(out, "retailflow_{name} {}", v.load(Relaxed));
        }
        gauge(
            &mut out,
            "snapshot_pending_postings",
            "Posting documents waiting for a durable snapshot.",
            self.snapshot_pending_postings.load(Relaxed) as i64,
        );
        gauge(
            &mut out,
            "erp_paused_endpoints",
            "ERP endpoints currently paused.",
            self.erp_paused_endpoints.load(Relaxed) as i64,
        );
        gauge(
            &mut out,
            "stream_last_seq",
            "Last sequence of the events stream, as last learnt.",
            self.stream_last_seq.load(Relaxed) as i64,
        );
        let mut eps: Vec<_> = self
            .endpoints
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        eps.sort_by(|a, b| a.0.cmp(&b.0));
        let series: [Series; 11] = [
            (
                "erp_requests_total",
                "counter",
                "HTTP requests sent to the ERP.",
                |m| m.requests.load(Relaxed) as i64,
            ),
            (
                "erp_accepted_total",
                "counter",
                "Postings the ERP accepted.",
                |m| m.accepted.load(Relaxed) as i64,
            ),
            (
                "erp_replays_total",
                "counter",
                "Postings the ERP reported as idempotent replays.",
                |m| m.replays.load(Relaxed) as i64,
            ),
            (
                "erp_throttled_total",
                "counter",
                "429 answers from the ERP.",
                |m| m.throttled_429.load(Relaxed) as i64,
            ),
            (
                "erp_retries_total",
                "counter",
                "Deliveries tried again after a 429 or an endpoint fault.",
                |m| m.retries.load(Relaxed) as i64,
            ),
            (
                "erp_rejected_total",
                "counter",
                "Postings the ERP rejected (dead-lettered).",
                |m| m.rejected.load(Relaxed) as i64,
            ),
            ("erp_in_flight", "gauge", "Requests in flight.", |m| {
                m.in_flight.load(Relaxed)
            }),
            (
                "postings_pending",
                "gauge",
                "Postings waiting in the outbox for the endpoint.",
                |m| m.pending.load(Relaxed),
            ),
            // ERP endpoint faults (H4).
            (
                "erp_paused",
                "gauge",
                "1 while the endpoint is paused by a fault that is not a document's.",
                |m| m.paused.load(Relaxed),
            ),
            (
                "erp_pauses_total",
                "counter",
                "Times the endpoint went from healthy to paused.",
                |m| m.pauses.load(Relaxed) as i64,
            ),
            (
                "erp_faults_total",
                "counter",
                "Answers that paused the endpoint or kept it paused (401, 403, 5xx, timeouts).",
                |m| m.faults.load(Relaxed) as i64,
            ),
        ];
        for (name, kind, help, get) in series {
            let _ = writeln!(out, "# HELP retailflow_{name} {help}");
            let _ = writeln!(out, "# TYPE retailflow_{name} {kind}");
            for (ep, m) in &eps {
                let _ = writeln!(out, "retailflow_{name}{{endpoint=\"{ep}\"}} {}", get(m));
            }
        }
        out
    }
}

/// Installs the tracing subscriber: `RUST_LOG` or the given default filter.
pub fn init_logging(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests;
