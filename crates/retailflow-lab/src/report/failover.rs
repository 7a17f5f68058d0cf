//! What a failover run (`cluster-failover`) did and measured: the kills and restarts, how
//! soon side effects resumed after the leader died, what the shoppers saw, how long each live
//! replica went without applying anything; with its own charts.

use super::Report;
use crate::chart::{COLORS, Chart, Series};
use serde::{Deserialize, Serialize};

/// A moment of the run, drawn as a vertical line on the charts.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Mark {
    /// Seconds since the trading load started.
    pub t: f64,
    pub label: String,
}

/// Requests of one kind sent by the shoppers.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Requests {
    pub sent: u64,
    /// Answered only by the second replica asked (HTTP) after the first failed.
    pub retried: u64,
    /// Not answered even after the retry (or, over NATS, not answered at all).
    pub failed: u64,
    /// A few of the failures, for the reader.
    pub examples: Vec<String>,
}

/// The leader's death and what followed it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Takeover {
    pub killed: String,
    pub killed_at_s: f64,
    /// The replica that led afterwards.
    pub new_leader: String,
    /// Seconds from the kill to the next barrier in the stream.
    pub barrier_after_s: Option<f64>,
    /// Seconds from the kill to the next posting released to the outbox.
    pub posting_after_s: Option<f64>,
}

/// One second of the run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FailoverPoint {
    pub t: f64,
    /// The events stream's last sequence.
    pub stream_last: u64,
    /// Applied sequence per replica; None while it does not answer.
    pub applied: Vec<Option<u64>>,
    /// Queries and reservations answered (after a retry at most) and failed in that second.
    pub answered: u64,
    pub failed: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FailoverStats {
    pub replicas: Vec<String>,
    pub nats_nodes: usize,
    pub marks: Vec<Mark>,
    pub takeover: Option<Takeover>,
    /// Seconds the killed NATS node took to start again (its client port answering).
    pub node_restart_s: Option<f64>,
    /// Seconds each step of the rolling restart took, SIGTERM to caught up.
    pub rolling_s: Vec<f64>,
    /// Exit codes of the rolling restart's SIGTERMs (0 = graceful).
    pub rolling_exit_codes: Vec<Option<i32>>,
    pub http_queries: Requests,
    pub nats_queries: Requests,
    pub reservations: Requests,
    pub granted: u64,
    pub rejected: u64,
    pub hot_stock: i64,
    /// Units of the hot SKU each replica shows reserved at the end.
    pub hot_reserved: Vec<i64>,
    /// Longest time each replica, while it answered, applied nothing with the stream ahead.
    pub max_apply_gap_s: Vec<f64>,
    /// ATP mismatches against the oracle per replica (the report's verification sums them).
    pub atp_mismatches: Vec<u64>,
    pub timeline: Vec<FailoverPoint>,
}

impl FailoverStats {
    /// Failed queries and reservations over all sent.
    pub fn failed_share(&self) -> f64 {
        let kinds = [&self.http_queries, &self.nats_queries, &self.reservations];
        let sent: u64 = kinds.iter().map(|r| r.sent).sum();
        let failed: u64 = kinds.iter().map(|r| r.failed).sum();
        if sent == 0 {
            return 1.0;
        }
        failed as f64 / sent as f64
    }

    pub fn charts(&self) -> Vec<Chart> {
        let t = |p: &FailoverPoint| p.t;
        let mut applied = vec![Series::new(
            "stream last sequence",
            (150, 150, 150),
            self.timeline
                .iter()
                .map(|p| (t(p), p.stream_last as f64))
                .collect(),
        )];
        applied[0].width = 5.0;
        for (i, name) in self.replicas.iter().enumerate() {
            applied.push(Series::new(
                &format!("{name} applied"),
                COLORS[i % COLORS.len()],
                self.timeline
                    .iter()
                    .map(|p| {
                        let v = p.applied.get(i).copied().flatten();
                        (t(p), v.map_or(f64::NAN, |v| v as f64))
                    })
                    .collect(),
            ));
        }
        vec![
            Chart {
                title: "applied sequence per replica (a gap: the replica did not answer)".into(),
                x_label: "seconds".into(),
                y_label: "stream sequence".into(),
                series: applied,
                reference: None,
                markers: Vec::new(),
            },
            Chart {
                title: "shopper queries and reservations per second".into(),
                x_label: "seconds".into(),
                y_label: "requests/s".into(),
                series: vec![
                    Series::new(
                        "answered",
                        COLORS[2],
                        self.timeline
                            .iter()
                            .map(|p| (t(p), p.answered as f64))
                            .collect(),
                    ),
                    Series::new(
                        "failed",
                        COLORS[1],
                        self.timeline
                            .iter()
                            .map(|p| (t(p), p.failed as f64))
                            .collect(),
                    ),
                ],
                reference: None,
                markers: Vec::new(),
            },
        ]
    }
}

/// Seconds with `places` decimals, joined by `sep`.
fn seconds(values: &[f64], places: usize, sep: &str) -> String {
    let shown: Vec<String> = values.iter().map(|s| format!("{s:.places$}")).collect();
    shown.join(sep)
}

fn requests(r: &Requests) -> String {
    format!(
        "{} sent, {} answered on the retry, {} failed",
        r.sent, r.retried, r.failed
    )
}

impl Report {
    /// The failover run's figures for the summary and the page.
    pub(super) fn failover_rows(&self) -> Vec<(String, String)> {
        let Some(f) = &self.failover else {
            return Vec::new();
        };
        let secs = |v: Option<f64>| v.map_or("none".to_string(), |v| format!("{v:.2} s"));
        let mut r = vec![(
            "cluster".into(),
            format!(
                "{} NATS nodes, replicas {}",
                f.nats_nodes,
                f.replicas.join(", ")
            ),
        )];
        if let Some(k) = &f.takeover {
            r.push((
                "leader killed".into(),
                format!(
                    "{} at {:.1} s; {} leads; next barrier after {}, next posting after {}",
                    k.killed,
                    k.killed_at_s,
                    k.new_leader,
                    secs(k.barrier_after_s),
                    secs(k.posting_after_s)
                ),
            ));
        }
        r.push(("NATS node restarted in".into(), secs(f.node_restart_s)));
        r.push((
            "rolling restart".into(),
            format!(
                "{} (seconds per replica, SIGTERM to caught up); exit codes {:?}",
                seconds(&f.rolling_s, 1, ", "),
                f.rolling_exit_codes
            ),
        ));
        r.push(("HTTP queries".into(), requests(&f.http_queries)));
        r.push(("NATS queries".into(), requests(&f.nats_queries)));
        r.push((
            "reservations".into(),
            format!(
                "{}; {} granted, {} rejected of {} units; reserved per replica {:?}",
                requests(&f.reservations),
                f.granted,
                f.rejected,
                f.hot_stock,
                f.hot_reserved
            ),
        ));
        r.push((
            "longest apply gap".into(),
            format!("{} s per replica", seconds(&f.max_apply_gap_s, 2, " / ")),
        ));
        r
    }

    /// The failover charts, and the kills drawn on every chart whose time axis is the run's.
    pub(super) fn mark_failover(&self, charts: &mut Vec<Chart>) {
        let Some(f) = &self.failover else {
            return;
        };
        charts.splice(0..0, f.charts());
        let marks: Vec<(f64, String)> = f.marks.iter().map(|m| (m.t, m.label.clone())).collect();
        for c in charts.iter_mut().filter(|c| c.x_label == "seconds") {
            c.markers = marks.clone();
        }
    }
}
