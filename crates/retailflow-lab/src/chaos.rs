//! The chaos harness: a scenario run against retailflow as a separate process that is killed
//! with SIGKILL at random moments and started again, with nats-server killed and restarted
//! once the load is in, then stopped with SIGTERM (which must exit 0 within a bound). At the
//! end the books must be exact: ATP (read over HTTP) equals the oracle, ERP-accepted totals
//! equal the source, dead letters equal the poison injected, no document booked twice.
//!
//! Used by `retailflow scenario run FILE --chaos-kills N` and by `tests/chaos.rs`.

use crate::harness::{self, RunError, Stage, Trader, setup};
use crate::measure;
use crate::oracle::{Oracle, Stock};
use crate::publish::Published;
pub use crate::report::ChaosStats;
use crate::report::{Counts, Report};
use crate::spec::Scenario;
use crate::world::Rng;
use retailflow::bus::server::free_port;
use retailflow::config::Config;
use retailflow::post::endpoint::consumer_name;
use retailflow::query::model::{QueryRequest, QueryResponse};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::process::Child;
use tokio::sync::Mutex;

#[derive(Clone, Debug)]
pub struct ChaosOptions {
    /// SIGKILLs of the pipeline process (each followed by a restart).
    pub kills: u32,
    /// Time between a start and the next kill, drawn uniformly from this range.
    pub kill_gap: (Duration, Duration),
    /// SIGKILL + restart of nats-server after the load is published.
    pub nats_restarts: u32,
    /// The `retailflow` binary to run as the pipeline process.
    pub binary: PathBuf,
    pub smoke: bool,
    pub out: PathBuf,
    /// Longest wait for the final drain and for the ERP to take every posting.
    pub settle_limit: Duration,
    /// Longest a SIGTERM may take to exit.
    pub graceful_limit: Duration,
}

impl ChaosOptions {
    pub fn new(binary: PathBuf, kills: u32, out: PathBuf) -> ChaosOptions {
        ChaosOptions {
            kills,
            kill_gap: (Duration::from_millis(300), Duration::from_millis(2000)),
            nats_restarts: 1,
            binary,
            smoke: false,
            out,
            settle_limit: Duration::from_secs(600),
            graceful_limit: Duration::from_secs(40),
        }
    }
}

/// A `retailflow run` process and how it is started.
pub(crate) struct Proc {
    /// Prefix of its log files (one per start).
    pub(crate) name: String,
    pub(crate) binary: PathBuf,
    pub(crate) config: PathBuf,
    pub(crate) logs: PathBuf,
    pub(crate) starts: u32,
    pub(crate) child: Option<Child>,
}

impl Proc {
    pub(crate) fn start(&mut self) -> Result<(), RunError> {
        self.starts += 1;
        let log = self
            .logs
            .join(format!("{}-{:03}.log", self.name, self.starts));
        let file = std::fs::File::create(&log)
            .map_err(|e| RunError::Setup(format!("creating {}: {e}", log.display())))?;
        let child = tokio::process::Command::new(&self.binary)
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::from(file.try_clone().map_err(|e| {
                RunError::Setup(format!("log file {}: {e}", log.display()))
            })?))
            .stderr(Stdio::from(file))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| RunError::Setup(format!("starting {}: {e}", self.binary.display())))?;
        self.child = Some(child);
        Ok(())
    }

    pub(crate) async fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    /// SIGTERM and wait (bounded); the exit code, or None when it had to be killed.
    pub(crate) async fn terminate(&mut self, limit: Duration) -> Option<i32> {
        let mut c = self.child.take()?;
        if let Some(pid) = c.id() {
            // SAFETY: kill(2) on a pid we own; no memory is touched.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
        match tokio::time::timeout(limit, c.wait()).await {
            Ok(Ok(status)) => status.code(),
            _ => {
                let _ = c.start_kill();
                let _ = c.wait().await;
                None
            }
        }
    }
}

/// `GET /healthz` with a bound of half a second: the status and the body, whatever the
/// status; None when the pipeline does not answer.
pub(crate) async fn healthz(
    http: &reqwest::Client,
    base: &str,
) -> Option<(reqwest::StatusCode, serde_json::Value)> {
    let resp = http
        .get(format!("{base}/healthz"))
        .timeout(Duration::from_millis(500))
        .send()
        .await
        .ok()?;
    let status = resp.status();
    Some((status, resp.json().await.ok()?))
}

/// `GET /healthz`: Some(as_of) when the pipeline answers 200.
pub(crate) async fn healthy(http: &reqwest::Client, base: &str) -> Option<u64> {
    let (status, body) = healthz(http, base).await?;
    if !status.is_success() {
        return None;
    }
    body["as_of"].as_u64()
}

async fn wait_applied(
    http: &reqwest::Client,
    base: &str,
    seq: u64,
    limit: Duration,
) -> Result<(), String> {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < limit {
        last = healthy(http, base).await;
        if last.is_some_and(|a| a >= seq) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "the pipeline did not apply sequence {seq} within {limit:?} (last answer: {last:?})"
    ))
}

/// Postings not yet answered by the ERP, read from the outbox consumers.
async fn outbox_backlog(js: &async_nats::jetstream::Context, cfg: &Config) -> Result<u64, String> {
    let stream = js
        .get_stream(&cfg.streams.postings)
        .await
        .map_err(|e| e.to_string())?;
    let mut total = 0;
    for e in &cfg.erp {
        let info = stream
            .consumer_info(consumer_name(&e.name))
            .await
            .map_err(|err| format!("outbox consumer of {}: {err}", e.name))?;
        total += info.num_pending + info.num_ack_pending as u64;
    }
    Ok(total)
}

/// ATP per (location, sku) read over the HTTP API, compared with the oracle.
pub(crate) async fn verify_atp_http(
    http: &reqwest::Client,
    base: &str,
    oracle: &Oracle,
    report: &mut Report,
) -> Result<(), String> {
    let mut by_sku: BTreeMap<&str, Vec<(&str, &Stock)>> = BTreeMap::new();
    for ((loc, sku), st) in &oracle.stock {
        by_sku.entry(sku).or_default().push((loc, st));
    }
    let skus: Vec<&str> = by_sku.keys().copied().collect();
    let v = &mut report.verification;
    for chunk in skus.chunks(retailflow::query::model::MAX_SKUS) {
        let req = QueryRequest {
            skus: chunk.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let resp = http
            .post(format!("{base}/v1/availability/query"))
            .json(&req)
            .send()
            .await
            .map_err(|e| format!("availability query: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("availability query answered {}", resp.status()));
        }
        let answer: QueryResponse = resp
            .json()
            .await
            .map_err(|e| format!("availability answer: {e}"))?;
        for result in &answer.results {
            for (loc, want) in &by_sku[result.sku.as_str()] {
                v.atp_checked += 1;
                let got = result
                    .locations
                    .iter()
                    .find(|l| l.location == *loc)
                    .map(|l| (l.on_hand, l.reserved, l.safety_stock, l.in_transit))
                    .unwrap_or_default();
                let want4 = (
                    want.on_hand,
                    want.reserved,
                    want.safety_stock,
                    want.in_transit,
                );
                if got != want4 {
                    v.atp_mismatches += 1;
                    if v.examples.len() < 10 {
                        v.examples.push(format!(
                            "ATP {loc}/{}: expected (on_hand, reserved, safety, in_transit) {want4:?}, got {got:?}",
                            result.sku
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Kills and restarts the pipeline process `kills` times at random moments; records how
/// quickly each start became healthy.
async fn killer(
    proc: Arc<Mutex<Proc>>,
    opts: ChaosOptions,
    seed: u64,
    base: String,
    stats: Arc<Mutex<ChaosStats>>,
) -> Result<(), RunError> {
    let http = reqwest::Client::new();
    let mut rng = Rng::new(seed ^ 0xc4a0_5eed);
    let (lo, hi) = opts.kill_gap;
    for _ in 0..opts.kills {
        let gap = lo + (hi.saturating_sub(lo)).mul_f64(rng.unit());
        let started = Instant::now();
        let mut became_healthy = None;
        while started.elapsed() < gap {
            if became_healthy.is_none() && healthy(&http, &base).await.is_some() {
                became_healthy = Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let mut p = proc.lock().await;
        p.kill9().await;
        {
            let mut s = stats.lock().await;
            s.kills += 1;
            if let Some(t) = became_healthy {
                s.healthy_starts += 1;
                s.max_time_to_healthy_s = s.max_time_to_healthy_s.max(t.as_secs_f64());
            }
        }
        let kills = stats.lock().await.kills;
        tracing::info!(kill = kills, "chaos: SIGKILL, restarting");
        p.start()?;
    }
    Ok(())
}

/// The pipeline process's configuration: the scenario's, with an HTTP port of its own and a
/// snapshot every second, written to `out/pipeline.toml` (logs go to `out/logs`). Returns the
/// configuration, its file and the HTTP API's base URL.
fn configure(stage: &Stage, out: &Path) -> Result<(Config, PathBuf, String), RunError> {
    let mut cfg = stage.pipeline_config();
    let port = free_port();
    cfg.api.http = format!("127.0.0.1:{port}");
    cfg.snapshot.enabled = true;
    cfg.snapshot.interval = Duration::from_secs(1);
    let base = format!("http://127.0.0.1:{port}");
    std::fs::create_dir_all(out.join("logs"))
        .map_err(|e| RunError::Setup(format!("creating {}: {e}", out.display())))?;
    let cfg_path = out.join("pipeline.toml");
    let text = toml::to_string_pretty(&cfg)
        .map_err(|e| RunError::Setup(format!("writing the pipeline config: {e}")))?;
    std::fs::write(&cfg_path, text)
        .map_err(|e| RunError::Setup(format!("writing {}: {e}", cfg_path.display())))?;
    Ok((cfg, cfg_path, base))
}

/// Waits (up to 60 s) for the first start of the pipeline process to answer /healthz.
pub(crate) async fn first_healthy(
    http: &reqwest::Client,
    base: &str,
    out: &Path,
) -> Result<(), RunError> {
    let start = Instant::now();
    while healthy(http, base).await.is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            return Err(RunError::Setup(format!(
                "the pipeline process did not become healthy within 60 s; see {}",
                out.join("logs").display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Publishes the trading load while the killer SIGKILLs and restarts the pipeline process,
/// spread over the time the kills take so that they land mid-stream.
async fn trade_under_kills(
    stage: &Stage,
    trader: &mut Trader,
    proc: &Arc<Mutex<Proc>>,
    opts: &ChaosOptions,
    base: &str,
    stats: &Arc<Mutex<ChaosStats>>,
) -> Result<Published, RunError> {
    let killing = tokio::spawn(killer(
        proc.clone(),
        opts.clone(),
        stage.spec.seed,
        base.to_string(),
        stats.clone(),
    ));
    let mean_gap = (opts.kill_gap.0 + opts.kill_gap.1) / 2;
    let span = (mean_gap * opts.kills).max(Duration::from_secs(1));
    let rate = (trader.generator.trading_total() as f64 / span.as_secs_f64()).max(100.0);
    let published = Arc::new(AtomicU64::new(0));
    let counter = published.clone();
    let mut count = move |_: u64, _: Instant| {
        counter.fetch_add(1, Ordering::Relaxed);
    };
    let trading = trader.trade(&|_| Some(rate), &mut count, false).await?;
    killing
        .await
        .map_err(|e| RunError::Run(format!("chaos killer: {e}")))??;
    Ok(trading)
}

/// Kills nats-server mid-drain `opts.nats_restarts` times and starts it again on the same
/// store; the pipeline must reconnect and carry on.
async fn restart_nats(
    stage: &mut Stage,
    opts: &ChaosOptions,
    stats: &Mutex<ChaosStats>,
) -> Result<(), RunError> {
    for _ in 0..opts.nats_restarts {
        tokio::time::sleep(Duration::from_millis(500)).await;
        tracing::info!("chaos: SIGKILL nats-server, restarting it on the same store");
        let restarted = tokio::task::block_in_place(|| stage.bus.restart());
        restarted.map_err(|e| RunError::Run(format!("restarting nats-server: {e}")))?;
        stats.lock().await.nats_restarts += 1;
    }
    Ok(())
}

/// Once the load is applied: a graceful stop (final barrier, snapshot, release, exit 0),
/// timed, then one more start, which delivers what the shutdown released.
async fn stop_and_start_again(
    proc: &Mutex<Proc>,
    http: &reqwest::Client,
    base: &str,
    last_seq: u64,
    opts: &ChaosOptions,
    stats: &Mutex<ChaosStats>,
) -> Result<(), RunError> {
    wait_applied(http, base, last_seq, opts.settle_limit)
        .await
        .map_err(RunError::Run)?;
    let stopping = Instant::now();
    let code = proc.lock().await.terminate(opts.graceful_limit).await;
    {
        let mut s = stats.lock().await;
        s.sigterm_exit_code = code;
        s.sigterm_exit_s = stopping.elapsed().as_secs_f64();
    }
    proc.lock().await.start()?;
    wait_applied(http, base, last_seq, opts.settle_limit)
        .await
        .map_err(RunError::Run)
}

/// Waits until the ERP has answered every posting (the outbox consumers have nothing pending);
/// how long that took.
pub(crate) async fn settle(
    js: &async_nats::jetstream::Context,
    cfg: &Config,
    limit: Duration,
) -> Result<Duration, String> {
    let settle_start = Instant::now();
    loop {
        match outbox_backlog(js, cfg).await {
            Ok(0) => break Ok(settle_start.elapsed()),
            r if settle_start.elapsed() > limit => {
                break Err(format!("ERP backlog not drained within {limit:?}: {r:?}"));
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The scenario's expectations that hold whatever is killed: exactness, not speed.
pub(crate) fn exactness(spec: &Scenario) -> crate::spec::Expect {
    let mut expect = spec.expect.clone();
    expect.min_drain_ratio = None;
    expect.max_query_p99_ms = None;
    expect.max_e2e_p99_ms = None;
    expect.min_throughput = None;
    expect.max_settle_s = None;
    expect
}

/// The scenario's expectations that hold under chaos (not its speed), and what chaos did.
fn check(
    report: &mut Report,
    spec: &Scenario,
    opts: &ChaosOptions,
    s: &ChaosStats,
    final_code: Option<i32>,
) {
    report.check_expectations(&exactness(spec));
    report.check(
        "pipeline killed with SIGKILL and restarted",
        format!("{}", opts.kills),
        format!(
            "{} ({} starts healthy before the next kill)",
            s.kills, s.healthy_starts
        ),
        s.kills == opts.kills,
    );
    report.check(
        "nats-server killed and restarted",
        format!("{}", opts.nats_restarts),
        format!("{}", s.nats_restarts),
        s.nats_restarts == opts.nats_restarts,
    );
    report.check(
        "SIGTERM exits 0 in time",
        format!("exit 0 within {:?}", opts.graceful_limit),
        format!("{:?} after {:.1} s", s.sigterm_exit_code, s.sigterm_exit_s),
        s.sigterm_exit_code == Some(0),
    );
    report.check(
        "final SIGTERM exits 0",
        "exit 0".into(),
        format!("{final_code:?}"),
        final_code == Some(0),
    );
    report.passed = report.checks.iter().all(|c| c.passed) && report.problems.is_empty();
}

/// Runs `spec` against a separately started pipeline process under chaos.
pub async fn run(spec: &Scenario, opts: &ChaosOptions) -> Result<Report, RunError> {
    let mut stage = Stage::start(spec, opts.smoke, None).await?;
    let (cfg, cfg_path, base) = configure(&stage, &opts.out)?;
    let proc = Arc::new(Mutex::new(Proc {
        name: "pipeline".into(),
        binary: opts.binary.clone(),
        config: cfg_path,
        logs: opts.out.join("logs"),
        starts: 0,
        child: None,
    }));
    proc.lock().await.start()?;
    let http = reqwest::Client::new();
    first_healthy(&http, &base, &opts.out).await?;

    let client = async_nats::connect(retailflow::bus::servers(&stage.bus.url))
        .await
        .map_err(setup("NATS"))?;
    let nats_version = client.server_info().version;
    let mut trader = Trader::setup(&stage, client.clone()).await?;
    let stats = Arc::new(Mutex::new(ChaosStats::default()));
    let trading = trade_under_kills(&stage, &mut trader, &proc, opts, &base, &stats).await?;
    let last_seq = trading.last_seq.max(trader.setup.last_seq);

    let mut report = harness::report(&stage, opts.smoke, &nats_version);
    report.counts = Counts::of(&trader.setup, &trading);
    restart_nats(&mut stage, opts, &stats).await?;
    stop_and_start_again(&proc, &http, &base, last_seq, opts, &stats).await?;
    match settle(&trader.js, &cfg, opts.settle_limit).await {
        Ok(d) => report.throughput.settle_s = d.as_secs_f64(),
        Err(e) => report.problems.push(e),
    }

    if let Err(e) = verify_atp_http(&http, &base, &trader.oracle, &mut report).await {
        report.problems.push(e);
    }
    let spec = &stage.spec;
    harness::verify_erp(spec, &stage.sims, &trader.oracle, &mut report);
    let dead_letters = &cfg.streams.dead_letters;
    harness::verify_dead_letters(&trader.js, dead_letters, &trading, spec, &mut report).await;
    report.erp = harness::erp_summary(spec, &stage.sims);
    let final_code = proc.lock().await.terminate(opts.graceful_limit).await;
    let (_, peak_rss) = measure::rss_mb();
    report.pipeline.peak_rss_mb = peak_rss;
    let s = stats.lock().await.clone();
    check(&mut report, spec, opts, &s, final_code);
    report.chaos = Some(s);
    drop(client);
    stage.stop().await?;
    harness::write_report(&report, &opts.out)?;
    Ok(report)
}
