//! The report's charts: throughput, lag, query latency, postings waiting, and per ERP endpoint
//! its sliding window against the limit and its requests per second.

use super::Report;
use crate::chart::{COLORS, Chart, Series};
use crate::measure::Point;

impl Report {
    pub fn charts(&self) -> Vec<Chart> {
        let t: Vec<f64> = self.timeline.iter().map(|p| p.t).collect();
        let series = |name: &str, i: usize, f: &dyn Fn(&Point) -> f64| {
            Series::new(
                name,
                COLORS[i],
                t.iter().copied().zip(self.timeline.iter().map(f)).collect(),
            )
        };
        // An interval without queries has no latency: a gap, not 0 ms.
        let measured = |v: f64| if v > 0.0 { v } else { f64::NAN };
        let mut latency = vec![
            series("query p50", 2, &|p| measured(p.query_p50_ms)),
            series("query p99", 3, &|p| measured(p.query_p99_ms)),
        ];
        // A backlog run measures no publish-to-visible latency; an empty series would only
        // add a legend entry over a line hidden on the axis.
        if self.timeline.iter().any(|p| p.e2e_p99_ms > 0.0) {
            latency.push(series("publish-to-visible p99", 4, &|p| {
                measured(p.e2e_p99_ms)
            }));
        }
        // Rates and the backlog have scales a hundred times apart: one chart each, or the rate
        // line lies flat along the axis.
        let mut charts = vec![
            Chart {
                title: format!("{}: throughput", self.scenario),
                x_label: "seconds".into(),
                y_label: "events/s".into(),
                series: vec![series("applied events/s", 0, &|p| p.applied_rate)],
                reference: self
                    .ceiling
                    .as_ref()
                    .map(|c| (c.rate, format!("JetStream ceiling {:.0}/s", c.rate))),
                markers: Vec::new(),
            },
            Chart {
                title: "consumer lag".into(),
                x_label: "seconds".into(),
                y_label: "messages".into(),
                series: vec![series("consumer lag (messages)", 1, &|p| p.lag as f64)],
                reference: None,
                markers: Vec::new(),
            },
        ];
        // A run without queries (and not live) has no latency to draw.
        if latency.iter().any(|se| se.runs().next().is_some()) {
            charts.push(Chart {
                title: "query latency per interval".into(),
                x_label: "seconds".into(),
                y_label: "ms".into(),
                series: latency,
                reference: None,
                markers: Vec::new(),
            });
        }
        charts.push(Chart {
            title: "postings waiting for the ERP".into(),
            x_label: "seconds".into(),
            y_label: "documents".into(),
            series: vec![series("postings pending", 0, &|p| {
                p.postings_pending as f64
            })],
            reference: None,
            markers: Vec::new(),
        });
        for e in &self.erp {
            // The simulator records only the seconds in which something happened; an idle
            // stretch must read as zeros, not as a line drawn across it.
            let timeline = every_second(&e.timeline);
            let per_second = |i: usize, f: &ErpPick| {
                Series::new(
                    ["requests/s", "accepted/s", "429s/s"][i],
                    COLORS[i],
                    timeline.iter().map(|p| (p.0 as f64, f(p) as f64)).collect(),
                )
            };
            // Requests equal accepted whenever nothing is refused: drawn wide underneath, the
            // requests line still shows.
            let mut requests = per_second(0, &|p| p.1);
            requests.width = 5.0;
            // The limit is a count per sliding window, so this chart plots the window's count,
            // not a per-second average of the limit. It counts every request sent, refused ones
            // too, so it is an upper bound of what the ERP's window held; the simulator's own
            // peak of admitted requests is in the title.
            charts.push(Chart {
                title: format!(
                    "ERP {}: requests sent in the sliding window (peak admitted: {})",
                    e.endpoint, e.max_in_window
                ),
                x_label: "seconds since the simulator started".into(),
                y_label: "requests".into(),
                series: vec![Series::new(
                    &format!("requests sent in the last {:.0} s", e.limit_window_s),
                    COLORS[0],
                    window_counts(&timeline, e.limit_window_s),
                )],
                reference: Some((
                    e.limit_requests as f64,
                    format!("limit {} per {:.0} s", e.limit_requests, e.limit_window_s),
                )),
                markers: Vec::new(),
            });
            charts.push(Chart {
                title: format!("ERP {}: requests per second", e.endpoint),
                x_label: "seconds since the simulator started".into(),
                y_label: "requests/s".into(),
                series: vec![requests, per_second(1, &|p| p.2), per_second(2, &|p| p.3)],
                reference: None,
                markers: Vec::new(),
            });
        }
        // A run whose pipeline is a process of its own (chaos, failover) samples no timeline:
        // its charts would be empty.
        if self.timeline.is_empty() {
            charts.retain(|c| c.x_label != "seconds");
        }
        self.mark_failover(&mut charts);
        charts
    }
}

type ErpPick = dyn Fn(&(u64, u64, u64, u64)) -> u64;

/// An ERP timeline (second, requests, accepted, 429s) with every second from its first to its
/// last, the missing ones as zeros.
fn every_second(timeline: &[(u64, u64, u64, u64)]) -> Vec<(u64, u64, u64, u64)> {
    let mut sorted = timeline.to_vec();
    sorted.sort_by_key(|p| p.0);
    let mut out: Vec<(u64, u64, u64, u64)> = Vec::with_capacity(sorted.len());
    for p in sorted {
        if let Some(last) = out.last() {
            for s in last.0 + 1..p.0 {
                out.push((s, 0, 0, 0));
            }
        }
        out.push(p);
    }
    out
}

/// For each second of an ERP timeline (second, requests, ...), the requests sent in the window
/// that ends there: `(t - window, t]`, the span the ERP's limit counts.
fn window_counts(timeline: &[(u64, u64, u64, u64)], window_s: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(timeline.len());
    let mut first = 0;
    let mut sum = 0u64;
    for (i, p) in timeline.iter().enumerate() {
        sum += p.1;
        while first < i && p.0.saturating_sub(timeline[first].0) as f64 >= window_s {
            sum -= timeline[first].1;
            first += 1;
        }
        out.push((p.0 as f64, sum as f64));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_count_sums_the_seconds_the_limit_counts() {
        // (second, requests, accepted, 429s); seconds 3..=9 sent nothing and are absent.
        let tl = [
            (0, 5, 5, 0),
            (1, 7, 7, 0),
            (2, 1, 1, 0),
            (10, 4, 4, 0),
            (12, 2, 2, 0),
            (13, 1, 1, 0),
        ];
        let got: Vec<f64> = window_counts(&tl, 3.0).iter().map(|p| p.1).collect();
        // By hand: window (t-3, t] holds seconds t-2..=t; at 13, second 10 (exactly 3 back)
        // is out.
        assert_eq!(got, vec![5.0, 12.0, 13.0, 4.0, 6.0, 3.0]);
        let whole: Vec<f64> = window_counts(&tl, 300.0).iter().map(|p| p.1).collect();
        assert_eq!(whole, vec![5.0, 12.0, 13.0, 17.0, 19.0, 20.0]);
    }

    #[test]
    fn idle_seconds_of_an_erp_timeline_become_zeros() {
        let tl = [(7, 3, 3, 0), (4, 1, 0, 1), (5, 2, 2, 0)];
        assert_eq!(
            every_second(&tl),
            vec![(4, 1, 0, 1), (5, 2, 2, 0), (6, 0, 0, 0), (7, 3, 3, 0)]
        );
        assert!(every_second(&[]).is_empty());
    }

    fn point(t: f64, rate: f64, lag: i64, q99: f64) -> Point {
        Point {
            t,
            applied_rate: rate,
            lag,
            query_p50_ms: q99 / 4.0,
            query_p99_ms: q99,
            ..Default::default()
        }
    }

    #[test]
    fn backlog_charts_keep_rate_and_lag_apart_and_leave_unmeasured_intervals_empty() {
        let r = Report {
            scenario: "bf".into(),
            timeline: vec![
                point(0.0, 0.0, 2_000_000, 0.0),
                point(1.0, 120_000.0, 1_880_000, 0.8),
                point(2.0, 130_000.0, 1_750_000, 0.7),
            ],
            ..Default::default()
        };
        let charts = r.charts();
        let throughput = &charts[0];
        assert_eq!(throughput.series.len(), 1);
        assert_eq!(throughput.series[0].name, "applied events/s");
        assert!(charts[1].series[0].name.contains("lag"));
        let latency = &charts[2];
        // No publish-to-visible samples in a backlog run: no such series.
        assert_eq!(latency.series.len(), 2);
        // The first interval had no queries: a gap, not a zero.
        assert!(latency.series[1].points[0].1.is_nan());
        assert_eq!(latency.series[1].points[1].1, 0.8);
    }
}
