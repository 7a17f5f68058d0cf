//! The scenario report: `report.json`, a self-contained `report.html` with charts, `chart.png`,
//! and a summary on the terminal. Every threshold is checked and named when it fails.

mod charts;
mod failover;
mod month_end;
mod render;

pub use failover::{FailoverPoint, FailoverStats, Mark, Requests, Takeover};
pub use month_end::MonthEndStats;

use crate::chart;
use crate::measure::{Percentiles, Point};
use crate::spec::{Expect, Scenario};
use serde::{Deserialize, Serialize};
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
    pub fn of(setup: &crate::publish::Published, trading: &crate::publish::Published) -> Counts {
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
    /// Set by a failover run (a scenario with `[cluster]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverStats>,
    /// Set by a month-end run (a scenario with `[month_end]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub month_end: Option<MonthEndStats>,
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
}
