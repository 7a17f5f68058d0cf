use super::*;
use std::collections::{BTreeMap, BTreeSet};

#[test]
fn render_is_prometheus_text() {
    let m = Metrics::new();
    m.events_applied.fetch_add(3, Relaxed);
    m.endpoint("erp").throttled_429.fetch_add(2, Relaxed);
    m.dead_letter("undecodable");
    let text = m.render();
    assert!(text.contains("retailflow_events_applied_total 3\n"));
    assert!(text.contains("retailflow_erp_throttled_total{endpoint=\"erp\"} 2\n"));
    assert!(text.contains("retailflow_dead_letters_by_reason_total{reason=\"undecodable\"} 1\n"));
    assert!(
        !text.contains("{}"),
        "an empty label set is written: {text}"
    );
    assert!(!text.contains("_total_total"), "{text}");
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let parts: Vec<&str> = line.rsplitn(2, ' ').collect();
        assert!(parts[0].parse::<i64>().is_ok(), "{line}");
    }
}

/// Every atomic that `/metrics` shows set to a distinct value, two endpoints, three
/// dead-letter reasons.
fn populated() -> Arc<Metrics> {
    let m = Metrics::new();
    let counters = [
        &m.events_received,
        &m.events_applied,
        &m.ops_applied,
        &m.duplicates_redelivered,
        &m.duplicates_resent,
        &m.dead_letters,
        &m.late_events,
        &m.gap_sequences,
        &m.barriers,
        &m.snapshots,
        &m.postings_formed,
        &m.postings_released,
        &m.actor_restarts,
        &m.ingest_paused,
        &m.last_applied_seq,
        &m.stream_last_seq,
        &m.negative_on_hand,
        &m.short_allocations,
        &m.queries,
        &m.reservations_granted,
        &m.reservations_rejected,
        &m.feed_messages,
        &m.auth_missing,
        &m.auth_invalid,
        &m.auth_forbidden,
        &m.token_reloads,
        &m.token_reload_failures,
        &m.http_connection_limit_hits,
        &m.http_header_timeouts,
        &m.http_idle_closed,
        &m.http_body_too_large,
        &m.http_tls_failures,
        &m.reservation_key_conflicts,
        &m.rejections_evicted,
        &m.reservation_queue_full,
        &m.reservation_keys,
        &m.reservation_keys_full,
        &m.nats_protocol_errors,
        &m.invalid_headers_kept,
        &m.ingest_panics,
        &m.dedupe_sources_evicted,
        &m.dedupe_gaps_dropped,
        &m.dead_letter_publish_failures,
        &m.snapshot_pending_postings,
        &m.snapshot_backpressure,
        &m.snapshot_failures,
        &m.erp_paused_endpoints,
        &m.snapshot_fallbacks,
        &m.leader,
        &m.leader_term,
        &m.leader_changes,
        &m.finance_days_dropped,
        &m.finance_records_undecodable,
        &m.redrives_applied,
        &m.redrives_refused,
        &m.reservation_timeouts,
    ];
    for (i, c) in counters.into_iter().enumerate() {
        c.store(101 + i as u64, Relaxed);
    }
    m.consumer_lag.store(-7, Relaxed);
    m.http_connections.store(12, Relaxed);
    for (i, name) in ["erp", "d365"].into_iter().enumerate() {
        let e = m.endpoint(name);
        let base = 1000 * (i as u64 + 1);
        for (j, c) in [
            &e.requests,
            &e.accepted,
            &e.replays,
            &e.throttled_429,
            &e.retries,
            &e.rejected,
            &e.pauses,
            &e.faults,
        ]
        .into_iter()
        .enumerate()
        {
            c.store(base + j as u64, Relaxed);
        }
        e.in_flight.store(base as i64 + 20, Relaxed);
        e.pending.store(-(base as i64) - 21, Relaxed);
        e.paused.store(i as i64, Relaxed);
    }
    m.dead_letter("undecodable");
    m.dead_letter("panic");
    m.dead_letter("panic");
    m.dead_letter("too_late");
    m
}

/// One exposition read back: the type and help of each family, the value of each series.
#[derive(Debug, Default, PartialEq)]
struct Exposition {
    types: BTreeMap<String, String>,
    helps: BTreeMap<String, String>,
    /// (name, sorted labels) -> value.
    samples: BTreeMap<(String, Vec<(String, String)>), i64>,
    /// Families whose `# TYPE` line or a series came more than once.
    repeated: BTreeSet<String>,
}

fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> = text
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').expect(pair);
            let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
            (k.to_string(), v.expect(pair).to_string())
        })
        .collect();
    labels.sort();
    labels
}

/// Reads Prometheus text format 0.0.4 (the label values here hold no `,` or `"`). A sample
/// must belong to a family whose `# TYPE` came before it, under exactly the sample's name.
fn parse(text: &str) -> Exposition {
    let mut e = Exposition::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect(line);
            e.helps.entry(name.into()).or_insert_with(|| help.into());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect(line);
            if e.types.insert(name.into(), kind.into()).is_some() {
                e.repeated.insert(name.into());
            }
        } else {
            assert!(!line.starts_with('#'), "unexpected comment: {line}");
            let (series, value) = line.rsplit_once(' ').expect(line);
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').expect(line))),
                None => (series, Vec::new()),
            };
            assert!(
                e.types.contains_key(name),
                "sample of a family without # TYPE: {line}"
            );
            let value = value.parse().unwrap_or_else(|_| panic!("{line}"));
            if let Some(old) = e.samples.insert((name.into(), labels), value) {
                assert_eq!(old, value, "series given twice with two values: {line}");
                e.repeated.insert(name.into());
            }
        }
    }
    e
}

/// What `render` wrote for [`populated`] when it was written by hand (before
/// prometheus-client): the reference for names, types, labels, values and help texts.
const HAND_WRITTEN: &str = include_str!("render_before.prom");

#[test]
fn render_matches_the_hand_written_exposition() {
    let before = parse(HAND_WRITTEN);
    let now = parse(&populated().render());
    assert_eq!(now.types, before.types, "families or types differ");
    assert_eq!(now.samples, before.samples, "series or values differ");
    assert_eq!(now.helps, before.helps, "help texts differ");
    // The hand-written text declared retailflow_erp_paused_endpoints twice.
    assert_eq!(
        before.repeated,
        BTreeSet::from(["retailflow_erp_paused_endpoints".to_string()])
    );
    assert!(
        now.repeated.is_empty(),
        "declared twice: {:?}",
        now.repeated
    );
}

/// Families `/metrics` must show, their type and label names, written out independently of
/// the code that renders them: a family that disappears or changes type fails here.
const EXPECTED: &[(&str, &str, &[&str])] = &[
    ("retailflow_events_received_total", "counter", &[]),
    ("retailflow_events_applied_total", "counter", &[]),
    ("retailflow_ops_applied_total", "counter", &[]),
    ("retailflow_dead_letters_total", "counter", &[]),
    ("retailflow_late_events_total", "counter", &[]),
    ("retailflow_gap_sequences_total", "counter", &[]),
    ("retailflow_nats_protocol_errors_total", "counter", &[]),
    ("retailflow_invalid_headers_kept_total", "counter", &[]),
    ("retailflow_barriers_total", "counter", &[]),
    ("retailflow_snapshots_total", "counter", &[]),
    ("retailflow_postings_formed_total", "counter", &[]),
    ("retailflow_postings_released_total", "counter", &[]),
    ("retailflow_actor_restarts_total", "counter", &[]),
    ("retailflow_ingest_paused_total", "counter", &[]),
    ("retailflow_negative_on_hand_total", "counter", &[]),
    ("retailflow_short_allocations_total", "counter", &[]),
    ("retailflow_queries_total", "counter", &[]),
    ("retailflow_reservations_granted_total", "counter", &[]),
    ("retailflow_reservations_rejected_total", "counter", &[]),
    ("retailflow_feed_messages_total", "counter", &[]),
    ("retailflow_auth_failures_total", "counter", &["kind"]),
    ("retailflow_token_reloads_total", "counter", &[]),
    ("retailflow_token_reload_failures_total", "counter", &[]),
    (
        "retailflow_http_connection_limit_hits_total",
        "counter",
        &[],
    ),
    ("retailflow_http_header_timeouts_total", "counter", &[]),
    ("retailflow_http_idle_closed_total", "counter", &[]),
    ("retailflow_http_body_too_large_total", "counter", &[]),
    ("retailflow_http_tls_failures_total", "counter", &[]),
    ("retailflow_reservation_key_conflicts_total", "counter", &[]),
    ("retailflow_rejections_evicted_total", "counter", &[]),
    ("retailflow_reservation_queue_full_total", "counter", &[]),
    ("retailflow_reservation_keys_full_total", "counter", &[]),
    ("retailflow_reservation_timeouts_total", "counter", &[]),
    ("retailflow_http_connections", "gauge", &[]),
    ("retailflow_duplicates_total", "counter", &["layer"]),
    (
        "retailflow_dead_letters_by_reason_total",
        "counter",
        &["reason"],
    ),
    ("retailflow_consumer_lag", "gauge", &[]),
    ("retailflow_erp_paused_endpoints", "gauge", &[]),
    ("retailflow_reservation_keys", "gauge", &[]),
    ("retailflow_last_applied_seq", "gauge", &[]),
    ("retailflow_ingest_panics_total", "counter", &[]),
    ("retailflow_dedupe_sources_evicted_total", "counter", &[]),
    ("retailflow_dedupe_gaps_dropped_total", "counter", &[]),
    (
        "retailflow_dead_letter_publish_failures_total",
        "counter",
        &[],
    ),
    ("retailflow_snapshot_backpressure_total", "counter", &[]),
    ("retailflow_snapshot_failures_total", "counter", &[]),
    ("retailflow_snapshot_fallbacks_total", "counter", &[]),
    ("retailflow_finance_days_dropped_total", "counter", &[]),
    (
        "retailflow_finance_records_undecodable_total",
        "counter",
        &[],
    ),
    ("retailflow_redrives_applied_total", "counter", &[]),
    ("retailflow_redrives_refused_total", "counter", &[]),
    ("retailflow_snapshot_pending_postings", "gauge", &[]),
    ("retailflow_stream_last_seq", "gauge", &[]),
    ("retailflow_leader", "gauge", &[]),
    ("retailflow_leader_term", "gauge", &[]),
    ("retailflow_leader_changes_total", "counter", &[]),
    ("retailflow_erp_requests_total", "counter", &["endpoint"]),
    ("retailflow_erp_accepted_total", "counter", &["endpoint"]),
    ("retailflow_erp_replays_total", "counter", &["endpoint"]),
    ("retailflow_erp_throttled_total", "counter", &["endpoint"]),
    ("retailflow_erp_retries_total", "counter", &["endpoint"]),
    ("retailflow_erp_rejected_total", "counter", &["endpoint"]),
    ("retailflow_erp_in_flight", "gauge", &["endpoint"]),
    ("retailflow_postings_pending", "gauge", &["endpoint"]),
    ("retailflow_erp_paused", "gauge", &["endpoint"]),
    ("retailflow_erp_pauses_total", "counter", &["endpoint"]),
    ("retailflow_erp_faults_total", "counter", &["endpoint"]),
];

#[test]
fn every_expected_family_is_rendered_with_its_type_and_labels() {
    let now = parse(&populated().render());
    let expected: BTreeMap<String, String> = EXPECTED
        .iter()
        .map(|(name, kind, _)| (name.to_string(), kind.to_string()))
        .collect();
    assert_eq!(expected.len(), EXPECTED.len(), "a family listed twice");
    assert_eq!(now.types, expected);
    for (name, _, labels) in EXPECTED {
        assert!(now.helps.contains_key(*name), "{name} has no # HELP");
        let series: Vec<_> = now.samples.keys().filter(|(n, _)| n == name).collect();
        assert!(!series.is_empty(), "{name} has no series");
        for (_, have) in series {
            let keys: Vec<&str> = have.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(keys, *labels, "{name}");
        }
    }
}
