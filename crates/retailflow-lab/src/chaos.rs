//! The chaos harness: a scenario run against retailflow as a separate process that is killed
//! with SIGKILL at random moments and started again, with nats-server killed and restarted
//! once the load is in, then stopped with SIGTERM (which must exit 0 within a bound). At the
//! end the books must be exact: ATP (read over HTTP) equals the oracle, ERP-accepted totals
//! equal the source, dead letters equal the poison injected, no document booked twice.
//!
//! Used by `retailflow scenario run FILE --chaos-kills N` and by `tests/chaos.rs`.

use super::generate::Generator;
use super::measure;
use super::oracle::{Oracle, Stock};
use super::publish::{self, Until};
pub use super::report::ChaosStats;
use super::report::{Counts, Environment, Report};
use super::run::{
    RunError, erp_summary, pipeline_config, start_sims, verify_dead_letters, verify_erp, version,
};
use super::spec::Scenario;
use super::world::{Rng, World};
use retailflow::bus::server::{NatsServer, free_port};
use retailflow::post::endpoint::consumer_name;
use retailflow::query::model::{QueryRequest, QueryResponse};
use std::collections::BTreeMap;
use std::path::PathBuf;
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

/// The pipeline process and how it is started.
struct Proc {
    binary: PathBuf,
    config: PathBuf,
    logs: PathBuf,
    starts: u32,
    child: Option<Child>,
}

impl Proc {
    fn start(&mut self) -> Result<(), RunError> {
        self.starts += 1;
        let log = self.logs.join(format!("pipeline-{:03}.log", self.starts));
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

    async fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    /// SIGTERM and wait (bounded); the exit code, or None when it had to be killed.
    async fn terminate(&mut self, limit: Duration) -> Option<i32> {
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

/// `GET /healthz`: Some(as_of) when the pipeline answers 200.
async fn healthy(http: &reqwest::Client, base: &str) -> Option<u64> {
    let resp = http
        .get(format!("{base}/healthz"))
        .timeout(Duration::from_millis(500))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let body: serde_json::Value = resp.json().await.ok()?;
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
async fn outbox_backlog(
    js: &async_nats::jetstream::Context,
    cfg: &retailflow::config::Config,
) -> Result<u64, String> {
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
async fn verify_atp_http(
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

/// Runs `spec` against a separately started pipeline process under chaos.
pub async fn run(spec: &Scenario, opts: &ChaosOptions) -> Result<Report, RunError> {
    let spec = version(spec, opts.smoke);
    let world = Arc::new(World::build(&spec).map_err(RunError::Setup)?);
    let mut nats = tokio::task::spawn_blocking(NatsServer::start)
        .await
        .map_err(|e| RunError::Setup(format!("starting nats-server: {e}")))?
        .map_err(|e| RunError::Setup(format!("starting nats-server: {e}")))?;
    let sims = start_sims(&spec).await?;
    let urls: Vec<String> = sims.iter().map(|s| s.postings_url()).collect();
    let mut cfg = pipeline_config(&spec, &nats.url(), &urls);
    let port = free_port();
    cfg.api.http = format!("127.0.0.1:{port}");
    cfg.snapshot.enabled = true;
    cfg.snapshot.interval = Duration::from_secs(1);
    let base = format!("http://127.0.0.1:{port}");
    std::fs::create_dir_all(opts.out.join("logs"))
        .map_err(|e| RunError::Setup(format!("creating {}: {e}", opts.out.display())))?;
    let cfg_path = opts.out.join("pipeline.toml");
    let text = toml::to_string_pretty(&cfg)
        .map_err(|e| RunError::Setup(format!("writing the pipeline config: {e}")))?;
    std::fs::write(&cfg_path, text)
        .map_err(|e| RunError::Setup(format!("writing {}: {e}", cfg_path.display())))?;

    let proc = Arc::new(Mutex::new(Proc {
        binary: opts.binary.clone(),
        config: cfg_path,
        logs: opts.out.join("logs"),
        starts: 0,
        child: None,
    }));
    proc.lock().await.start()?;
    let http = reqwest::Client::new();
    let start = Instant::now();
    while healthy(&http, &base).await.is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            return Err(RunError::Setup(format!(
                "the pipeline process did not become healthy within 60 s; see {}",
                opts.out.join("logs").display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let client = async_nats::connect(nats.url())
        .await
        .map_err(|e| RunError::Setup(format!("NATS: {e}")))?;
    let nats_version = client.server_info().version;
    let in_flight = spec.load.in_flight.max(1);
    let js = publish::load_context(client.clone(), in_flight);
    let mut generator = Generator::new(&spec, world.clone());
    let mut oracle = Oracle::default();
    let setup_pub = publish::setup(&js, &mut generator, &mut oracle, in_flight)
        .await
        .map_err(RunError::Run)?;

    // Spread the trading load over the time the kills take, so kills land mid-stream.
    let stats = Arc::new(Mutex::new(ChaosStats::default()));
    let killing = tokio::spawn(killer(
        proc.clone(),
        opts.clone(),
        spec.seed,
        base.clone(),
        stats.clone(),
    ));
    let mean_gap = (opts.kill_gap.0 + opts.kill_gap.1) / 2;
    let span = (mean_gap * opts.kills).max(Duration::from_secs(1));
    let rate = (generator.trading_total() as f64 / span.as_secs_f64()).max(100.0);
    let published = Arc::new(AtomicU64::new(0));
    let counter = published.clone();
    let mut count = move |_: u64, _: Instant| {
        counter.fetch_add(1, Ordering::Relaxed);
    };
    let trading = publish::publish(
        &js,
        &mut generator,
        &mut oracle,
        Until::End,
        in_flight,
        &|_| Some(rate),
        &mut count,
        false,
    )
    .await
    .map_err(RunError::Run)?;
    let last_seq = trading.last_seq.max(setup_pub.last_seq);
    killing
        .await
        .map_err(|e| RunError::Run(format!("chaos killer: {e}")))??;

    let mut report = Report::new(&spec, opts.smoke);
    report.environment = Environment::here(&nats_version, Some(&nats));
    report.counts = Counts::of(&setup_pub, &trading);

    // nats-server dies mid-drain; the pipeline must reconnect and carry on.
    for _ in 0..opts.nats_restarts {
        tokio::time::sleep(Duration::from_millis(500)).await;
        tracing::info!("chaos: SIGKILL nats-server, restarting it on the same store");
        let restarted = tokio::task::block_in_place(|| nats.restart());
        restarted.map_err(|e| RunError::Run(format!("restarting nats-server: {e}")))?;
        stats.lock().await.nats_restarts += 1;
    }

    wait_applied(&http, &base, last_seq, opts.settle_limit)
        .await
        .map_err(RunError::Run)?;
    // Graceful stop: final barrier, snapshot, release, exit 0.
    let stopping = Instant::now();
    let code = proc.lock().await.terminate(opts.graceful_limit).await;
    {
        let mut s = stats.lock().await;
        s.sigterm_exit_code = code;
        s.sigterm_exit_s = stopping.elapsed().as_secs_f64();
    }
    // One more start delivers what the shutdown released.
    proc.lock().await.start()?;
    wait_applied(&http, &base, last_seq, opts.settle_limit)
        .await
        .map_err(RunError::Run)?;
    let settle_start = Instant::now();
    let settled = loop {
        match outbox_backlog(&js, &cfg).await {
            Ok(0) => break Ok(settle_start.elapsed()),
            r if settle_start.elapsed() > opts.settle_limit => {
                break Err(format!(
                    "ERP backlog not drained within {:?}: {r:?}",
                    opts.settle_limit
                ));
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    match settled {
        Ok(d) => report.throughput.settle_s = d.as_secs_f64(),
        Err(e) => report.problems.push(e),
    }

    if let Err(e) = verify_atp_http(&http, &base, &oracle, &mut report).await {
        report.problems.push(e);
    }
    verify_erp(&spec, &sims, &oracle, &mut report);
    verify_dead_letters(&js, &cfg.streams.dead_letters, &trading, &spec, &mut report).await;
    report.erp = erp_summary(&spec, &sims);
    let final_code = proc.lock().await.terminate(opts.graceful_limit).await;
    let (_, peak_rss) = measure::rss_mb();
    report.pipeline.peak_rss_mb = peak_rss;
    let s = stats.lock().await.clone();
    let mut expect = spec.expect.clone();
    expect.min_drain_ratio = None;
    expect.max_query_p99_ms = None;
    expect.max_e2e_p99_ms = None;
    expect.min_throughput = None;
    expect.max_settle_s = None;
    report.check_expectations(&expect);
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
    report.chaos = Some(s);
    for sim in sims {
        sim.shutdown().await;
    }
    drop(client);
    drop(nats);
    report
        .write(&opts.out)
        .map_err(|e| RunError::Run(format!("writing the report to {}: {e}", opts.out.display())))?;
    Ok(report)
}

/// The `retailflow` binary next to the running one (for the CLI: itself).
pub fn own_binary() -> Result<PathBuf, RunError> {
    std::env::current_exe().map_err(|e| RunError::Setup(format!("locating retailflow: {e}")))
}
