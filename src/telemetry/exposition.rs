//! `/metrics` in the Prometheus text format (version 0.0.4), written by prometheus-client.
//!
//! The hot path keeps its plain atomics ([`Metrics`], [`EndpointMetrics`]). A scrape reads
//! them once into a [`Scrape`], a [`Collector`] that a registry with the `retailflow` prefix
//! hands to prometheus-client's text encoder. Names below carry neither that prefix nor,
//! for counters, the `_total` suffix: the encoder adds both (`reservation_keys_full` is
//! exported as `retailflow_reservation_keys_full_total`).

use super::{EndpointMetrics, Metrics};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::borrow::Cow;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

const PREFIX: &str = "retailflow";

/// Name, help text and atomic of a counter without labels.
type Counter = (&'static str, &'static str, fn(&Metrics) -> &AtomicU64);

/// Name, help text and reader of a gauge without labels.
type Gauge = (&'static str, &'static str, fn(&Metrics) -> i64);

/// Name, help text and atomic of a per-endpoint series (label `endpoint`).
enum EndpointSeries {
    Counter(
        &'static str,
        &'static str,
        fn(&EndpointMetrics) -> &AtomicU64,
    ),
    Gauge(
        &'static str,
        &'static str,
        fn(&EndpointMetrics) -> &AtomicI64,
    ),
}

const COUNTERS: &[Counter] = &[
    (
        "events_received",
        "Messages read from the events stream.",
        |m| &m.events_received,
    ),
    (
        "events_applied",
        "Events applied (after dedupe and validation).",
        |m| &m.events_applied,
    ),
    (
        "ops_applied",
        "Per-SKU operations applied by shards.",
        |m| &m.ops_applied,
    ),
    (
        "dead_letters",
        "Events and postings sent to the dead-letter stream.",
        |m| &m.dead_letters,
    ),
    (
        "late_events",
        "Events that arrived after their reorder window.",
        |m| &m.late_events,
    ),
    (
        "gap_sequences",
        "Per-source sequences skipped by a jump ahead.",
        |m| &m.gap_sequences,
    ),
    // Hostile input, parsers (issue 25, H1).
    (
        "nats_protocol_errors",
        "Direct-reader NATS protocol errors (oversized or malformed frames).",
        |m| &m.nats_protocol_errors,
    ),
    (
        "invalid_headers_kept",
        "Header lines async-nats refuses, kept escaped in dead letters.",
        |m| &m.invalid_headers_kept,
    ),
    ("barriers", "Barriers processed.", |m| &m.barriers),
    ("snapshots", "Snapshots made durable.", |m| &m.snapshots),
    (
        "postings_formed",
        "Posting documents formed at barriers.",
        |m| &m.postings_formed,
    ),
    (
        "postings_released",
        "Posting documents published to the outbox.",
        |m| &m.postings_released,
    ),
    (
        "actor_restarts",
        "Actors restarted by the supervisor.",
        |m| &m.actor_restarts,
    ),
    (
        "ingest_paused",
        "Times ingest paused for backpressure.",
        |m| &m.ingest_paused,
    ),
    (
        "negative_on_hand",
        "Facts that took on-hand below zero (exceptions).",
        |m| &m.negative_on_hand,
    ),
    (
        "short_allocations",
        "Orders allocated beyond availability (exceptions).",
        |m| &m.short_allocations,
    ),
    ("queries", "Availability queries answered.", |m| &m.queries),
    (
        "reservations_granted",
        "Reservation requests granted.",
        |m| &m.reservations_granted,
    ),
    (
        "reservations_rejected",
        "Reservation requests rejected.",
        |m| &m.reservations_rejected,
    ),
    (
        "feed_messages",
        "Availability change feed messages published.",
        |m| &m.feed_messages,
    ),
    // API trust boundary (H3).
    ("token_reloads", "API tokens file reloads.", |m| {
        &m.token_reloads
    }),
    (
        "token_reload_failures",
        "API tokens file reloads refused (old tokens kept).",
        |m| &m.token_reload_failures,
    ),
    (
        "http_connection_limit_hits",
        "New HTTP connections that waited for api.max_connections.",
        |m| &m.http_connection_limit_hits,
    ),
    (
        "http_header_timeouts",
        "HTTP connections closed by api.header_timeout.",
        |m| &m.http_header_timeouts,
    ),
    (
        "http_idle_closed",
        "HTTP connections closed by api.idle_timeout.",
        |m| &m.http_idle_closed,
    ),
    (
        "http_body_too_large",
        "HTTP requests answered 413 (api.max_body_bytes).",
        |m| &m.http_body_too_large,
    ),
    (
        "http_tls_failures",
        "TLS handshakes failed or timed out.",
        |m| &m.http_tls_failures,
    ),
    (
        "reservation_key_conflicts",
        "Reservation requests refused: idempotency key reused with a different request.",
        |m| &m.reservation_key_conflicts,
    ),
    (
        "rejections_evicted",
        "Remembered reservation rejections forgotten at reservations.max_rejected.",
        |m| &m.rejections_evicted,
    ),
    (
        "reservation_queue_full",
        "Reservation requests answered 503: publish queue full.",
        |m| &m.reservation_queue_full,
    ),
    (
        "reservation_keys_full",
        "Reservation requests under a new key answered 503: reservations.max_keys held.",
        |m| &m.reservation_keys_full,
    ),
    (
        "reservation_timeouts",
        "Reservation requests answered 503: no decision within reservations.decision_timeout.",
        |m| &m.reservation_timeouts,
    ),
    // Ingest resilience and health (issue 25, H2).
    (
        "ingest_panics",
        "Messages whose handling panicked; each was dead-lettered with reason panic.",
        |m| &m.ingest_panics,
    ),
    (
        "dedupe_sources_evicted",
        "Sources the dedupe table forgot (least recently seen) to stay under ingest.dedupe_sources.",
        |m| &m.dedupe_sources_evicted,
    ),
    (
        "dedupe_gaps_dropped",
        "Remembered per-source gaps dropped to stay under the gap bound.",
        |m| &m.dedupe_gaps_dropped,
    ),
    (
        "dead_letter_publish_failures",
        "Dead letters not stored after bounded retries.",
        |m| &m.dead_letter_publish_failures,
    ),
    (
        "snapshot_backpressure",
        "Times ingest paused because snapshot.max_pending_postings was reached.",
        |m| &m.snapshot_backpressure,
    ),
    (
        "snapshot_failures",
        "Snapshots that failed to be written.",
        |m| &m.snapshot_failures,
    ),
    (
        "leader_changes",
        "Times this replica started or stopped leading.",
        |m| &m.leader_changes,
    ),
    (
        "finance_days_dropped",
        "Store business days forgotten because a store kept more than 400 (the oldest first).",
        |m| &m.finance_days_dropped,
    ),
    (
        "finance_records_undecodable",
        "Records of the finance and audit streams (ERP answers, re-drives) that did not decode and were skipped.",
        |m| &m.finance_records_undecodable,
    ),
    (
        "redrives_applied",
        "Dead-lettered events brought back by a re-drive and applied.",
        |m| &m.redrives_applied,
    ),
    (
        "redrives_refused",
        "Re-driven events not applied because their dead letter had been re-driven before.",
        |m| &m.redrives_refused,
    ),
    (
        "snapshot_fallbacks",
        "Start-ups that skipped an unusable latest snapshot and used an older kept one.",
        |m| &m.snapshot_fallbacks,
    ),
];

const GAUGES: &[Gauge] = &[
    ("http_connections", "HTTP connections open.", |m| {
        m.http_connections.load(Relaxed)
    }),
    (
        "consumer_lag",
        "Events in the stream not yet applied.",
        |m| m.consumer_lag.load(Relaxed),
    ),
    (
        "erp_paused_endpoints",
        "ERP endpoints currently paused by a fault that is not a document's.",
        |m| m.erp_paused_endpoints.load(Relaxed) as i64,
    ),
    (
        "reservation_keys",
        "Reservation idempotency keys held.",
        |m| m.reservation_keys.load(Relaxed) as i64,
    ),
    (
        "last_applied_seq",
        "Stream sequence applied by every shard.",
        |m| m.last_applied_seq.load(Relaxed) as i64,
    ),
    (
        "snapshot_pending_postings",
        "Posting documents waiting for a durable snapshot.",
        |m| m.snapshot_pending_postings.load(Relaxed) as i64,
    ),
    (
        "stream_last_seq",
        "Last sequence of the events stream, as last learnt.",
        |m| m.stream_last_seq.load(Relaxed) as i64,
    ),
    (
        "leader",
        "1 while this replica leads (publishes barriers, snapshots, releases, delivers).",
        |m| m.leader.load(Relaxed) as i64,
    ),
    (
        "leader_term",
        "The lease revision this replica leads under (0 while it follows).",
        |m| m.leader_term.load(Relaxed) as i64,
    ),
];

const ENDPOINT_SERIES: &[EndpointSeries] = &[
    EndpointSeries::Counter("erp_requests", "HTTP requests sent to the ERP.", |e| {
        &e.requests
    }),
    EndpointSeries::Counter("erp_accepted", "Postings the ERP accepted.", |e| {
        &e.accepted
    }),
    EndpointSeries::Counter(
        "erp_replays",
        "Postings the ERP reported as idempotent replays.",
        |e| &e.replays,
    ),
    EndpointSeries::Counter("erp_throttled", "429 answers from the ERP.", |e| {
        &e.throttled_429
    }),
    EndpointSeries::Counter(
        "erp_retries",
        "Deliveries tried again after a 429 or an endpoint fault.",
        |e| &e.retries,
    ),
    EndpointSeries::Counter(
        "erp_rejected",
        "Postings the ERP rejected (dead-lettered).",
        |e| &e.rejected,
    ),
    EndpointSeries::Gauge("erp_in_flight", "Requests in flight.", |e| &e.in_flight),
    EndpointSeries::Gauge(
        "postings_pending",
        "Postings waiting in the outbox for the endpoint.",
        |e| &e.pending,
    ),
    // ERP endpoint faults (H4).
    EndpointSeries::Gauge(
        "erp_paused",
        "1 while the endpoint is paused by a fault that is not a document's.",
        |e| &e.paused,
    ),
    EndpointSeries::Counter(
        "erp_pauses",
        "Times the endpoint went from healthy to paused.",
        |e| &e.pauses,
    ),
    EndpointSeries::Counter(
        "erp_faults",
        "Answers that paused the endpoint or kept it paused (401, 403, 5xx, timeouts).",
        |e| &e.faults,
    ),
];

/// Writes `m` in the Prometheus text format.
pub(super) fn render(m: &Metrics) -> String {
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register_collector(Box::new(Scrape::read(m)));
    let mut out = String::with_capacity(16 * 1024);
    prometheus_text::encode(&mut out, &registry).expect("writing to a String does not fail");
    out
}

/// One sample's value.
#[derive(Clone, Copy, Debug)]
enum Value {
    Counter(u64),
    Gauge(i64),
}

impl Value {
    fn encode(self, encoder: MetricEncoder) -> std::fmt::Result {
        match self {
            Value::Counter(v) => ConstCounter::new(v).encode(encoder),
            Value::Gauge(v) => ConstGauge::new(v).encode(encoder),
        }
    }
}

/// The series of one family.
#[derive(Debug)]
enum Series {
    /// One series without labels.
    One(Value),
    /// One series per value of the label named first (possibly none).
    By(&'static str, Vec<(Cow<'static, str>, Value)>),
}

/// One metric family as read at scrape time.
#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    metric_type: MetricType,
    series: Series,
}

/// Everything `/metrics` shows, read from the atomics at one scrape.
#[derive(Debug)]
struct Scrape(Vec<Family>);

impl Scrape {
    fn read(m: &Metrics) -> Scrape {
        let counter = |name, help, series| Family {
            name,
            help,
            metric_type: MetricType::Counter,
            series,
        };
        let mut families = Vec::with_capacity(COUNTERS.len() + GAUGES.len() + 16);
        families.extend(COUNTERS.iter().map(|&(name, help, get)| {
            counter(
                name,
                help,
                Series::One(Value::Counter(get(m).load(Relaxed))),
            )
        }));
        let by = |label, series: &[(&'static str, &AtomicU64)]| {
            let series = series
                .iter()
                .map(|&(v, a)| (Cow::Borrowed(v), Value::Counter(a.load(Relaxed))))
                .collect();
            Series::By(label, series)
        };
        families.push(counter(
            "auth_failures",
            "HTTP requests refused, by kind.",
            by(
                "kind",
                &[
                    ("missing", &m.auth_missing),
                    ("invalid", &m.auth_invalid),
                    ("forbidden", &m.auth_forbidden),
                ],
            ),
        ));
        families.push(counter(
            "duplicates",
            "Duplicates dropped, by layer.",
            by(
                "layer",
                &[
                    ("redelivery", &m.duplicates_redelivered),
                    ("resend", &m.duplicates_resent),
                ],
            ),
        ));
        let mut reasons: Vec<_> = m
            .dead_letter_reasons
            .iter()
            .map(|e| {
                (
                    Cow::<str>::Owned(e.key().clone()),
                    Value::Counter(*e.value()),
                )
            })
            .collect();
        reasons.sort_by(|a, b| a.0.cmp(&b.0));
        families.push(counter(
            "dead_letters_by_reason",
            "Dead letters by reason.",
            Series::By("reason", reasons),
        ));
        families.extend(GAUGES.iter().map(|&(name, help, get)| Family {
            name,
            help,
            metric_type: MetricType::Gauge,
            series: Series::One(Value::Gauge(get(m))),
        }));
        let mut endpoints: Vec<_> = m
            .endpoints
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        endpoints.sort_by(|a, b| a.0.cmp(&b.0));
        families.extend(ENDPOINT_SERIES.iter().map(|s| {
            let (name, help, metric_type) = match *s {
                EndpointSeries::Counter(name, help, _) => (name, help, MetricType::Counter),
                EndpointSeries::Gauge(name, help, _) => (name, help, MetricType::Gauge),
            };
            let series = endpoints
                .iter()
                .map(|(endpoint, e)| {
                    let value = match *s {
                        EndpointSeries::Counter(_, _, get) => Value::Counter(get(e).load(Relaxed)),
                        EndpointSeries::Gauge(_, _, get) => Value::Gauge(get(e).load(Relaxed)),
                    };
                    (Cow::Owned(endpoint.clone()), value)
                })
                .collect();
            Family {
                name,
                help,
                metric_type,
                series: Series::By("endpoint", series),
            }
        }));
        Scrape(families)
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        for family in &self.0 {
            let mut metric =
                encoder.encode_descriptor(family.name, family.help, None, family.metric_type)?;
            match &family.series {
                Series::One(value) => value.encode(metric)?,
                Series::By(label, series) => {
                    for (label_value, value) in series {
                        value.encode(metric.encode_family(&[(*label, label_value.as_ref())])?)?;
                    }
                }
            }
        }
        Ok(())
    }
}
