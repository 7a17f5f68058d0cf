//! The scenario report: `report.json`, a self-contained `report.html` with charts, `chart.png`,
//! and a summary on the terminal. Every threshold is checked and named when it fails.

use super::chart::{self, COLORS, Chart, Series};
use super::measure::{Percentiles, Point};
use super::spec::{Expect, Scenario};
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::path::Path;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Environment {
    pub cpus: usize,
    pub nats_server_version: String,
    /// `GOMAXPROCS` of the nats-server the run started (absent with `--target` or
    /// `--nats-url`: that server was not started here).
    #[serde(default)]
    pub nats_server_procs: Option<usize>,
    /// `GOGC` of the nats-server the run started (see `bus::server::SERVER_GOGC`).
    #[serde(default)]
    pub nats_server_gogc: Option<String>,
    /// Nice value of the nats-server the run started (see `bus::server::SERVER_NICE`).
    #[serde(default)]
    pub nats_server_nice: Option<i32>,
    pub build_profile: String,
    pub git_revision: String,
    pub host: String,
    pub started_at_unix_ms: i64,
}

impl Environment {
    /// `server`: the nats-server this run started, if it started one.
    pub fn here(
        nats_version: &str,
        server: Option<&retailflow::bus::server::NatsServer>,
    ) -> Environment {
        Environment {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            nats_server_version: nats_version.to_string(),
            nats_server_procs: server.map(|_| retailflow::bus::server::server_procs()),
            nats_server_gogc: server.map(|_| retailflow::bus::server::server_gogc()),
            nats_server_nice: server.and_then(|s| s.nice()),
            build_profile: if cfg!(debug_assertions) {
                "debug".into()
            } else {
                "release".into()
            },
            git_revision: git_revision(),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap_or_default()
                .trim()
                .to_string(),
            started_at_unix_ms: retailflow::snapshot::ticker::now_ms(),
        }
    }
}

/// The commit the run was built from, `+dirty` with uncommitted changes to tracked files.
pub fn git_revision() -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match run(&["rev-parse", "--short=12", "HEAD"]) {
        Some(rev) => {
            let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty { format!("{rev}+dirty") } else { rev }
        }
        None => "unknown".into(),
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Counts {
    pub setup_events: u64,
    pub trading_events: u64,
    pub duplicates: u64,
    pub resends: u64,
    pub poison: u64,
    /// Trading messages JetStream stored (events, re-sends, poison; not same-id duplicates).
    pub stored_messages: u64,
    pub bytes: u64,
}

impl Counts {
    pub fn of(setup: &super::publish::Published, trading: &super::publish::Published) -> Counts {
        Counts {
            setup_events: setup.events,
            trading_events: trading.events,
            duplicates: trading.duplicates,
            resends: trading.resends,
            poison: trading.poison,
            stored_messages: trading.stored,
            bytes: trading.bytes,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Throughput {
    pub publish_rate: f64,
    pub published_s: f64,
    /// Backlog mode: stored trading messages / time to drain them.
    pub drain_rate: f64,
    pub drain_seconds: f64,
    /// Median and best of the per-interval applied-event rates.
    pub sustained_rate: f64,
    pub peak_rate: f64,
    /// From the end of the load until the ERP answered every posting.
    pub settle_s: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Ceiling {
    pub messages: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// Messages per second an ordered consumer doing no work drained.
    pub rate: f64,
    pub publish_rate: f64,
    /// Pipeline drain rate / ceiling rate.
    pub ratio: f64,
    /// Every drain's rate; `rate` is their median (reports older than this field have none).
    #[serde(default)]
    pub drain_rates: Vec<f64>,
    /// One more drain through async-nats' ordered consumer, for reference (not in the ratio).
    /// Reports from before the direct reader measured the ceiling that way and have none.
    #[serde(default)]
    pub async_nats_rate: Option<f64>,
    /// A direct drain after the shopper load stopped: the broker on a quiet machine.
    #[serde(default)]
    pub quiet_rate: Option<f64>,
    /// Availability queries per second answered while the ceiling's drains ran (the same
    /// load as during the pipeline's drain; 0 when the scenario has none).
    #[serde(default)]
    pub query_rate: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Latency {
    /// Publish to visible in the view (live mode only).
    pub e2e: Percentiles,
    pub query_http: Percentiles,
    pub query_nats: Percentiles,
    pub query_all: Percentiles,
    /// Per query shape (`queries.mix`): shape name and its latencies.
    #[serde(default)]
    pub query_shapes: Vec<(String, Percentiles)>,
    pub query_errors: u64,
    pub queries_per_s: f64,
    /// Event published to the ERP accepting the document that covers it.
    pub posting: Percentiles,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ErpSummary {
    pub endpoint: String,
    pub limit_requests: u32,
    pub limit_window_s: f64,
    pub max_concurrent: usize,
    pub requests: u64,
    pub accepted: u64,
    pub replays: u64,
    pub throttled: u64,
    pub rejected: u64,
    pub injected_errors: u64,
    pub max_in_window: u64,
    pub max_in_flight: u64,
    /// 429s the simulator gave because the window was full (the limiter should prevent all).
    pub over_limit: u64,
    pub duplicate_documents: u64,
    /// (second, requests, accepted, throttled)
    pub timeline: Vec<(u64, u64, u64, u64)>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PipelineStats {
    pub mode: String,
    pub duplicates_redelivered: u64,
    pub duplicates_resent: u64,
    pub dead_letters: u64,
    pub late_events: u64,
    pub barriers: u64,
    pub snapshots: u64,
    pub restarts: u64,
    pub negative_on_hand: u64,
    /// Availability change feed messages published over the whole run.
    #[serde(default)]
    pub feed_messages: u64,
    pub peak_rss_mb: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Verification {
    pub atp_checked: u64,
    pub atp_mismatches: u64,
    pub erp_sales_checked: u64,
    pub erp_tenders_checked: u64,
    pub erp_inventory_checked: u64,
    pub erp_mismatches: u64,
    pub dead_letters_expected: u64,
    pub dead_letters_found: u64,
    pub erp_rejections: u64,
    pub erp_rejections_expected: bool,
    pub duplicate_documents: u64,
    pub examples: Vec<String>,
}

impl Verification {
    pub fn exact(&self) -> bool {
        self.atp_mismatches == 0
            && self.erp_mismatches == 0
            && self.dead_letters_found == self.dead_letters_expected
            && self.duplicate_documents == 0
            && (self.erp_rejections > 0) == self.erp_rejections_expected
            && self.atp_checked > 0
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub threshold: String,
    pub actual: String,
    pub passed: bool,
}

/// What the chaos run did to the pipeline, in the report.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ChaosStats {
    pub kills: u32,
    /// Starts that became healthy (answered /healthz with 200) before the next kill.
    pub healthy_starts: u32,
    /// Longest time from a start to healthy, in seconds.
    pub max_time_to_healthy_s: f64,
    pub nats_restarts: u32,
    /// Exit code of the SIGTERM'd process (0 = graceful).
    pub sigterm_exit_code: Option<i32>,
    pub sigterm_exit_s: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub smoke: bool,
    pub environment: Environment,
    pub counts: Counts,
    pub throughput: Throughput,
    pub ceiling: Option<Ceiling>,
    pub latency: Latency,
    pub erp: Vec<ErpSummary>,
    pub pipeline: PipelineStats,
    pub verification: Verification,
    pub checks: Vec<Check>,
    pub problems: Vec<String>,
    pub passed: bool,
    /// Set by a chaos run (`--chaos-kills`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chaos: Option<ChaosStats>,
    pub timeline: Vec<Point>,
}

impl Report {
    pub fn new(spec: &Scenario, smoke: bool) -> Report {
        Report {
            scenario: spec.name.clone(),
            smoke,
            ..Default::default()
        }
    }

    pub(crate) fn check(&mut self, name: &str, threshold: String, actual: String, passed: bool) {
        self.checks.push(Check {
            name: name.into(),
            threshold,
            actual,
            passed,
        });
    }

    /// Verification first, then every threshold the scenario sets.
    pub fn check_expectations(&mut self, e: &Expect) {
        let v = self.verification.clone();
        self.check(
            "atp equals the oracle",
            "0 mismatches".into(),
            format!("{} of {} positions differ", v.atp_mismatches, v.atp_checked),
            v.atp_mismatches == 0 && v.atp_checked > 0,
        );
        self.check(
            "ERP books equal the source",
            "0 mismatches".into(),
            format!(
                "{} differences over {} sales keys, {} tender keys, {} stock keys",
                v.erp_mismatches,
                v.erp_sales_checked,
                v.erp_tenders_checked,
                v.erp_inventory_checked
            ),
            v.erp_mismatches == 0,
        );
        self.check(
            "dead letters equal the poison injected",
            format!("{}", v.dead_letters_expected),
            format!("{}", v.dead_letters_found),
            v.dead_letters_found == v.dead_letters_expected,
        );
        self.check(
            "no document booked twice",
            "0".into(),
            format!("{}", v.duplicate_documents),
            v.duplicate_documents == 0,
        );
        if v.erp_rejections_expected {
            self.check(
                "ERP rejections dead-lettered",
                "> 0".into(),
                format!("{}", v.erp_rejections),
                v.erp_rejections > 0,
            );
        }
        let over: u64 = self.erp.iter().map(|x| x.over_limit).sum();
        self.check(
            "ERP window never exceeded (429s for a full window)",
            format!("<= {}", e.max_erp_over_limit),
            format!("{over}"),
            over <= e.max_erp_over_limit,
        );
        let l = &self.latency;
        if l.query_all.count > 0 || l.query_errors > 0 {
            let errors = l.query_errors;
            self.check(
                "availability queries answered",
                "0 errors".into(),
                format!("{errors} errors of {}", l.query_all.count + errors),
                errors == 0,
            );
        }
        if let Some(min) = e.min_drain_ratio {
            let ratio = self.ceiling.as_ref().map(|c| c.ratio);
            self.check(
                "drain rate / ceiling",
                format!(">= {min:.2}"),
                ratio.map_or("not measured (run with --ceiling)".into(), |r| {
                    format!("{r:.3}")
                }),
                ratio.is_some_and(|r| r >= min),
            );
        }
        if let Some(max) = e.max_query_p99_ms {
            let p = self.latency.query_all.p99_ms;
            self.check(
                "availability query p99",
                format!("<= {max} ms"),
                format!("{p:.3} ms over {} queries", self.latency.query_all.count),
                p <= max && self.latency.query_all.count > 0,
            );
        }
        if let Some(max) = e.max_e2e_p99_ms {
            let p = self.latency.e2e.p99_ms;
            self.check(
                "publish-to-visible p99",
                format!("<= {max} ms"),
                format!("{p:.2} ms"),
                p <= max && self.latency.e2e.count > 0,
            );
        }
        if let Some(min) = e.min_throughput {
            let t = self
                .throughput
                .drain_rate
                .max(self.throughput.sustained_rate);
            self.check(
                "throughput",
                format!(">= {min:.0}/s"),
                format!("{t:.0}/s"),
                t >= min,
            );
        }
        if let Some(max) = e.max_settle_s {
            let s = self.throughput.settle_s;
            self.check(
                "ERP settled after the load",
                format!("<= {max} s"),
                format!("{s:.1} s"),
                s <= max,
            );
        }
        if let Some(max) = e.max_peak_rss_mb {
            let m = self.pipeline.peak_rss_mb;
            self.check(
                "peak RSS",
                format!("<= {max} MB"),
                format!("{m:.0} MB"),
                m <= max,
            );
        }
        self.passed = self.checks.iter().all(|c| c.passed) && self.problems.is_empty();
    }

    pub fn failed_checks(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.passed).collect()
    }

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
            },
            Chart {
                title: "consumer lag".into(),
                x_label: "seconds".into(),
                y_label: "messages".into(),
                series: vec![series("consumer lag (messages)", 1, &|p| p.lag as f64)],
                reference: None,
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
            });
            charts.push(Chart {
                title: format!("ERP {}: requests per second", e.endpoint),
                x_label: "seconds since the simulator started".into(),
                y_label: "requests/s".into(),
                series: vec![requests, per_second(1, &|p| p.2), per_second(2, &|p| p.3)],
                reference: None,
            });
        }
        charts
    }

    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("report.json"), json)?;
        std::fs::write(dir.join("report.html"), self.html())?;
        if let Some(main) = self.charts().first() {
            let png = chart::png(main, 1000, 420).map_err(std::io::Error::other)?;
            std::fs::write(dir.join("chart.png"), png)?;
        }
        Ok(())
    }

    fn rows(&self) -> Vec<(String, String)> {
        let l = &self.latency;
        let t = &self.throughput;
        let p = |x: &Percentiles| {
            format!(
                "p50 {:.3} / p99 {:.3} / p99.9 {:.3} / max {:.3} ms (n={})",
                x.p50_ms, x.p99_ms, x.p999_ms, x.max_ms, x.count
            )
        };
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
        r.push((
            "applied rate".into(),
            format!(
                "sustained {:.0}/s, peak {:.0}/s",
                t.sustained_rate, t.peak_rate
            ),
        ));
        if l.e2e.count > 0 {
            r.push(("publish to visible".into(), p(&l.e2e)));
        }
        r.push((
            format!(
                "queries ({:.0}/s, {} errors)",
                l.queries_per_s, l.query_errors
            ),
            p(&l.query_all),
        ));
        r.push(("  over HTTP".into(), p(&l.query_http)));
        r.push(("  over NATS".into(), p(&l.query_nats)));
        if l.query_shapes.len() > 1 {
            for (shape, q) in &l.query_shapes {
                r.push((format!("  {shape}"), p(q)));
            }
        }
        r.push(("event to ERP accepted".into(), p(&l.posting)));
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
        r.push((
            "ERP settled".into(),
            format!("{:.1} s after the last event was applied", t.settle_s),
        ));
        let s = &self.pipeline;
        r.push((
            "pipeline".into(),
            format!(
                "{} re-sends and {} redeliveries dropped, {} dead letters, {} late, {} barriers, {} snapshots, {} restarts, {} negative-stock exceptions, {} change-feed messages",
                s.duplicates_resent, s.duplicates_redelivered, s.dead_letters, s.late_events, s.barriers, s.snapshots, s.restarts, s.negative_on_hand, s.feed_messages
            ),
        ));
        r.push((
            "peak RSS (whole process)".into(),
            format!("{:.0} MB", s.peak_rss_mb),
        ));
        let e = &self.environment;
        r.push((
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
        ));
        r
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
