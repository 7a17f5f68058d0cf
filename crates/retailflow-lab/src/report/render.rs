//! The report as read by people: a summary on the terminal and a self-contained HTML page.

use super::Report;
use crate::chart;
use crate::measure::Percentiles;
use std::fmt::Write;

impl Report {
    /// The report's figures as (label, value), in the order the summary and the page show them.
    fn rows(&self) -> Vec<(String, String)> {
        let mut r = self.load_rows();
        r.extend(self.latency_rows());
        r.extend(self.erp_rows());
        r.extend(self.process_rows());
        r.extend(self.failover_rows());
        r.extend(self.month_end_rows());
        r
    }

    /// The load and how fast it went through: mode, events, publish, drain, ceiling, applied.
    fn load_rows(&self) -> Vec<(String, String)> {
        let t = &self.throughput;
        let mut r = vec![
            ("mode".into(), self.pipeline.mode.clone()),
            (
                "events".into(),
                format!(
                    "{} setup + {} trading; {} duplicates, {} re-sends, {} poison; {:.1} MB",
                    self.counts.setup_events,
                    self.counts.trading_events,
                    self.counts.duplicates,
                    self.counts.resends,
                    self.counts.poison,
                    self.counts.bytes as f64 / 1e6
                ),
            ),
            (
                "publish rate".into(),
                format!("{:.0} msg/s", t.publish_rate),
            ),
        ];
        if t.drain_rate > 0.0 {
            r.push((
                "drain rate".into(),
                format!("{:.0} msg/s ({:.1} s)", t.drain_rate, t.drain_seconds),
            ));
        }
        if let Some(c) = &self.ceiling {
            r.push((
                "JetStream ceiling".into(),
                format!(
                    "{:.0} msg/s ({}ordered consumer read directly, no work, same count and sizes, {:.0} queries/s); ratio {:.3}",
                    c.rate,
                    spread(&c.drain_rates),
                    c.query_rate,
                    c.ratio
                ),
            ));
            r.push((
                "  for reference".into(),
                format!(
                    "through async-nats {}; direct without queries {}",
                    c.async_nats_rate
                        .map_or("-".into(), |r| format!("{r:.0} msg/s")),
                    c.quiet_rate.map_or("-".into(), |r| format!(
                        "{r:.0} msg/s (drain / that {:.3})",
                        t.drain_rate / r.max(1e-9)
                    )),
                ),
            ));
        }
        if t.peak_rate > 0.0 {
            r.push((
                "applied rate".into(),
                format!(
                    "sustained {:.0}/s, peak {:.0}/s",
                    t.sustained_rate, t.peak_rate
                ),
            ));
        }
        r
    }

    /// Latencies: publish to visible, the queries (by transport and shape), event to ERP.
    fn latency_rows(&self) -> Vec<(String, String)> {
        let l = &self.latency;
        let p = percentiles;
        let mut r = Vec::new();
        if l.e2e.count > 0 {
            r.push(("publish to visible".into(), p(&l.e2e)));
        }
        if l.query_all.count > 0 || l.query_errors > 0 {
            r.push((
                format!(
                    "queries ({:.0}/s, {} errors)",
                    l.queries_per_s, l.query_errors
                ),
                p(&l.query_all),
            ));
            r.push(("  over HTTP".into(), p(&l.query_http)));
            r.push(("  over NATS".into(), p(&l.query_nats)));
        }
        if l.query_shapes.len() > 1 {
            for (shape, q) in &l.query_shapes {
                r.push((format!("  {shape}"), p(q)));
            }
        }
        if l.posting.count > 0 {
            r.push(("event to ERP accepted".into(), p(&l.posting)));
        }
        r
    }

    /// Each ERP endpoint's traffic, and when the ERP had taken everything.
    fn erp_rows(&self) -> Vec<(String, String)> {
        let mut r = Vec::new();
        for e in &self.erp {
            r.push((
                format!("ERP {}", e.endpoint),
                format!(
                    "{} requests, {} accepted, {} replays, {} throttled ({} window), {} rejected, {} 503s; peak {} in window (limit {} per {:.0} s), {} in flight (limit {})",
                    e.requests,
                    e.accepted,
                    e.replays,
                    e.throttled,
                    e.over_limit,
                    e.rejected,
                    e.injected_errors,
                    e.max_in_window,
                    e.limit_requests,
                    e.limit_window_s,
                    e.max_in_flight,
                    e.max_concurrent
                ),
            ));
        }
        if self.month_end.is_some() {
            return r; // its own figures say when each store day was accepted
        }
        r.push((
            "ERP settled".into(),
            format!(
                "{:.1} s after the last event was applied",
                self.throughput.settle_s
            ),
        ));
        r
    }

    /// The pipeline's own counters, its memory, and where it ran.
    fn process_rows(&self) -> Vec<(String, String)> {
        let s = &self.pipeline;
        let e = &self.environment;
        vec![
            (
                "pipeline".into(),
                format!(
                    "{} re-sends and {} redeliveries dropped, {} dead letters, {} late, {} barriers, {} snapshots, {} restarts, {} negative-stock exceptions, {} change-feed messages",
                    s.duplicates_resent,
                    s.duplicates_redelivered,
                    s.dead_letters,
                    s.late_events,
                    s.barriers,
                    s.snapshots,
                    s.restarts,
                    s.negative_on_hand,
                    s.feed_messages
                ),
            ),
            (
                "peak RSS (whole process)".into(),
                format!("{:.0} MB", s.peak_rss_mb),
            ),
            (
                "environment".into(),
                format!(
                    "{} CPUs, nats-server {}{}, {} build, revision {}",
                    e.cpus,
                    e.nats_server_version,
                    e.nats_server_procs
                        .map(|n| format!(
                            " (started here: GOMAXPROCS {n}, GOGC {}, nice {})",
                            e.nats_server_gogc.as_deref().unwrap_or("unknown"),
                            e.nats_server_nice
                                .map(|v| v.to_string())
                                .unwrap_or_else(|| "unknown".into())
                        ))
                        .unwrap_or_default(),
                    e.build_profile,
                    e.git_revision
                ),
            ),
        ]
    }

    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "scenario {}{}",
            self.scenario,
            if self.passed { ": PASSED" } else { ": FAILED" }
        );
        for (k, v) in self.rows() {
            let _ = writeln!(s, "  {k:<26} {v}");
        }
        let _ = writeln!(s, "  checks:");
        for c in &self.checks {
            let _ = writeln!(
                s,
                "    [{}] {} (want {}, got {})",
                if c.passed { "ok" } else { "FAIL" },
                c.name,
                c.threshold,
                c.actual
            );
        }
        for p in &self.problems {
            let _ = writeln!(s, "  problem: {p}");
        }
        for e in &self.verification.examples {
            let _ = writeln!(s, "  mismatch: {e}");
        }
        s
    }

    pub fn html(&self) -> String {
        let mut h = String::new();
        let _ = write!(
            h,
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>retailflow scenario {}</title><style>body{{font-family:sans-serif;margin:24px;max-width:1100px}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}.ok{{color:#2a7}}.fail{{color:#c22;font-weight:bold}}</style></head><body>",
            esc(&self.scenario)
        );
        let _ = write!(
            h,
            "<h1>{} <span class=\"{}\">{}</span></h1>",
            esc(&self.scenario),
            if self.passed { "ok" } else { "fail" },
            if self.passed { "passed" } else { "FAILED" }
        );
        h.push_str("<table>");
        for (k, v) in self.rows() {
            let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(&k), esc(&v));
        }
        h.push_str("</table><h2>Checks</h2><table><tr><th>check</th><th>want</th><th>got</th><th></th></tr>");
        for c in &self.checks {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
                esc(&c.name),
                esc(&c.threshold),
                esc(&c.actual),
                if c.passed { "ok" } else { "fail" },
                if c.passed { "ok" } else { "FAIL" }
            );
        }
        h.push_str("</table>");
        for p in self.problems.iter().chain(&self.verification.examples) {
            let _ = write!(h, "<p class=\"fail\">{}</p>", esc(p));
        }
        h.push_str("<h2>Charts</h2>");
        for c in self.charts() {
            h.push_str(&chart::svg(&c, 1000, 360));
            h.push_str("<br>");
        }
        h.push_str("</body></html>\n");
        h
    }
}

/// One row's latencies.
fn percentiles(x: &Percentiles) -> String {
    format!(
        "p50 {:.3} / p99 {:.3} / p99.9 {:.3} / max {:.3} ms (n={})",
        x.p50_ms, x.p99_ms, x.p999_ms, x.max_ms, x.count
    )
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// "median of N drains, lowest-highest; " for a ceiling measured more than once.
fn spread(rates: &[f64]) -> String {
    let lo = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = rates.iter().copied().fold(0.0, f64::max);
    if rates.len() > 1 {
        format!("median of {} drains, {lo:.0}-{hi:.0}; ", rates.len())
    } else {
        String::new()
    }
}
