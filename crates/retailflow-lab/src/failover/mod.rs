//! Failover, measured: a scenario with a `[cluster]` section runs on a private 3-node
//! nats-server cluster with several `retailflow run` replicas, trading load published at a
//! steady rate and shoppers querying and reserving on every replica. During the run the leader
//! is killed with SIGKILL (and later started again), the NATS node that leads the events stream
//! is killed and restarted, and every replica is restarted in turn (a rolling upgrade). The
//! report says how soon the barriers and the postings came back, what the shoppers lost, how
//! long any live replica stopped applying, and whether every replica's ATP, the ERP's books and
//! the hot SKU's reservations came out exact. The kills are marked on its charts.
//!
//! Used by `retailflow scenario run FILE` when FILE has `[cluster]`
//! (`scenarios/cluster-failover.toml`).

mod schedule;
mod shoppers;
mod watch;

use crate::chaos::{Proc, exactness, settle, verify_atp_http};
use crate::harness::{self, RunError, Stage, Trader, setup};
use crate::publish::{envelope, publish_envelopes};
use crate::report::{FailoverStats, Report};
use crate::spec::{ClusterSpec, Scenario};
use retailflow::bus::server::{NatsCluster, free_port};
use retailflow::config::Config;
use schedule::{Done, Schedule};
use shoppers::{Plan, Shoppers};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use watch::Watch;

/// The SKU shoppers reserve: one the trading load never touches.
pub const HOT_SKU: &str = "FAILOVER-HOT";

#[derive(Clone, Debug)]
pub struct FailoverOptions {
    /// The `retailflow` binary each replica runs.
    pub binary: PathBuf,
    pub smoke: bool,
    pub out: PathBuf,
    /// Longest wait for the replicas to apply everything and the ERP to take every posting.
    pub settle_limit: Duration,
    /// Longest a SIGTERM may take to exit.
    pub graceful_limit: Duration,
}

impl FailoverOptions {
    pub fn new(binary: PathBuf, out: PathBuf) -> FailoverOptions {
        FailoverOptions {
            binary,
            smoke: false,
            out,
            settle_limit: Duration::from_secs(600),
            graceful_limit: Duration::from_secs(40),
        }
    }
}

/// Every replica's configuration: the scenario's, on the cluster with 3 stream replicas, an
/// instance name and an HTTP port of its own, written to `out/<name>.toml`. Returns the
/// processes (not started), their HTTP bases and the shared configuration.
fn configure(
    stage: &Stage,
    c: &ClusterSpec,
    opts: &FailoverOptions,
) -> Result<(Vec<Proc>, Vec<String>, Config), RunError> {
    let mut cfg = stage.pipeline_config();
    cfg.streams.replicas = 3;
    cfg.leader.elect = true;
    cfg.leader.lease = c.lease;
    cfg.snapshot.enabled = true;
    let logs = opts.out.join("logs");
    std::fs::create_dir_all(&logs)
        .map_err(|e| RunError::Setup(format!("creating {}: {e}", logs.display())))?;
    let (mut procs, mut bases) = (Vec::new(), Vec::new());
    for i in 0..c.replicas {
        let name = format!("r{}", i + 1);
        let mut mine = cfg.clone();
        let port = free_port();
        mine.api.http = format!("127.0.0.1:{port}");
        mine.leader.instance = name.clone();
        let path = opts.out.join(format!("{name}.toml"));
        let text = toml::to_string_pretty(&mine)
            .map_err(|e| RunError::Setup(format!("writing {name}'s config: {e}")))?;
        std::fs::write(&path, text)
            .map_err(|e| RunError::Setup(format!("writing {}: {e}", path.display())))?;
        bases.push(format!("http://127.0.0.1:{port}"));
        procs.push(Proc {
            name,
            binary: opts.binary.clone(),
            config: path,
            logs: logs.clone(),
            starts: 0,
            child: None,
        });
    }
    Ok((procs, bases, cfg))
}

/// Opening stock of the hot SKU at the first DC, from a source of its own.
async fn hot_stock(
    trader: &Trader,
    cfg: &Config,
    location: &str,
    units: i64,
) -> Result<u64, RunError> {
    let receipt = retailflow::testing::receipt(location, HOT_SKU, units);
    let env = envelope("wms/failover-stock", 1, receipt);
    publish_envelopes(&trader.js, &cfg.streams.systems, std::iter::once(env))
        .await
        .map_err(|e| RunError::Setup(format!("hot SKU stock: {e}")))
}

/// What the shoppers do: the scenario's query rate split over HTTP and NATS, and the
/// cluster's reservation rate, on every replica.
fn plan(stage: &Stage, c: &ClusterSpec, bases: &[String], location: &str) -> Plan {
    let q = &stage.spec.queries;
    let http_rate = (q.rate as f64 * q.http_share).round() as u64;
    Plan {
        bases: bases.to_vec(),
        skus: stage.world.skus.iter().map(|s| s.id.clone()).collect(),
        channel: stage
            .world
            .channels
            .first()
            .map(|ch| ch.name.clone())
            .unwrap_or_default(),
        hot_sku: HOT_SKU.into(),
        hot_location: location.into(),
        http_rate,
        nats_rate: q.rate.saturating_sub(http_rate),
        reserve_rate: c.reserve_rate,
        workers: q.workers.max(3),
        seed: stage.spec.seed,
    }
}

/// Units of the hot SKU each replica shows reserved (None where it did not answer).
async fn hot_reserved(http: &reqwest::Client, bases: &[String], location: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for base in bases {
        let url = format!("{base}/v1/availability/{HOT_SKU}?location={location}");
        let body: Option<serde_json::Value> = match http.get(url).send().await {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        out.push(
            body.and_then(|b| b["locations"][0]["reserved"].as_i64())
                .unwrap_or(-1),
        );
    }
    out
}

/// Waits until the leader has released the postings of every event up to `seq` (its release
/// marker in the snapshot pointer bucket has passed it): only then can the ERP's backlog tell
/// that everything was delivered.
async fn released(
    js: &async_nats::jetstream::Context,
    cfg: &Config,
    seq: u64,
    limit: Duration,
) -> Result<(), String> {
    let bucket = format!("{}-ptr", cfg.snapshot.bucket);
    let until = Instant::now() + limit;
    let mut last = None;
    while Instant::now() < until {
        if let Ok(kv) = js.get_key_value(&bucket).await
            && let Ok(Some(v)) = kv.get("released").await
        {
            last = std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse::<u64>().ok());
            if last.is_some_and(|r| r >= seq) {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "postings up to sequence {seq} not released within {limit:?} (released: {last:?})"
    ))
}

/// Every replica's ATP against the oracle; the mismatches per replica.
async fn verify_replicas(
    http: &reqwest::Client,
    bases: &[String],
    trader: &Trader,
    report: &mut Report,
) -> Vec<u64> {
    let mut per = Vec::new();
    for (i, base) in bases.iter().enumerate() {
        let before = report.verification.atp_mismatches;
        if let Err(e) = verify_atp_http(http, base, &trader.oracle, report).await {
            report.problems.push(format!("r{}: {e}", i + 1));
        }
        per.push(report.verification.atp_mismatches - before);
    }
    per
}

/// The ERP's books and the dead letters against what was published.
async fn verify_books(
    stage: &Stage,
    cfg: &Config,
    trader: &Trader,
    trading: &crate::publish::Published,
    report: &mut Report,
) {
    let spec = &stage.spec;
    harness::verify_erp(spec, &stage.sims, &trader.oracle, report);
    let dead_letters = &cfg.streams.dead_letters;
    harness::verify_dead_letters(&trader.js, dead_letters, trading, spec, report).await;
    report.erp = harness::erp_summary(spec, &stage.sims);
}

/// The goals of the run, checked after exactness.
fn check(report: &mut Report, c: &ClusterSpec, f: &FailoverStats) {
    let g = &c.goals;
    let within = |v: Option<f64>| v.is_some_and(|v| v <= g.max_takeover_s);
    let secs = |v: Option<f64>| v.map_or("none".into(), |v| format!("{v:.2} s"));
    let k = f.takeover.clone().unwrap_or_default();
    report.check(
        "leader killed: next barrier",
        format!("<= {} s", g.max_takeover_s),
        secs(k.barrier_after_s),
        within(k.barrier_after_s),
    );
    report.check(
        "leader killed: next released posting",
        format!("<= {} s", g.max_takeover_s),
        secs(k.posting_after_s),
        within(k.posting_after_s),
    );
    let share = f.failed_share();
    report.check(
        "failed queries and reservations (after one retry)",
        format!("<= {:.2} %", g.max_failed_share * 100.0),
        format!("{:.3} %", share * 100.0),
        share <= g.max_failed_share,
    );
    let gap = f.max_apply_gap_s.iter().copied().fold(0.0, f64::max);
    report.check(
        "longest apply gap on a live replica",
        format!("<= {} s", g.max_apply_gap_s),
        format!("{gap:.2} s"),
        gap <= g.max_apply_gap_s,
    );
    report.check(
        "ATP equals the oracle on every replica",
        "0 on each".into(),
        format!("{:?}", f.atp_mismatches),
        f.atp_mismatches.iter().all(|m| *m == 0) && f.atp_mismatches.len() == f.replicas.len(),
    );
    // Every grant a shopper saw is reserved on every replica, and no more than the stock; a
    // reservation whose answer was lost may be reserved without a grant seen.
    let lost = f.reservations.failed as i64;
    let granted = f.granted as i64;
    report.check(
        "no oversell: reserved = grants seen, <= stock, on every replica",
        format!("{granted}..={} of {}", granted + lost, f.hot_stock),
        format!("{:?}", f.hot_reserved),
        granted <= f.hot_stock
            && f.hot_reserved
                .iter()
                .all(|r| (granted..=granted + lost).contains(r) && *r <= f.hot_stock),
    );
    report.check(
        "rolling restart: every SIGTERM exits 0",
        format!("{} x 0", f.replicas.len()),
        format!("{:?}", f.rolling_exit_codes),
        f.rolling_exit_codes.len() == f.replicas.len()
            && f.rolling_exit_codes.iter().all(|c| *c == Some(0)),
    );
    report.passed = report.checks.iter().all(|c| c.passed) && report.problems.is_empty();
}

/// Starts every replica and waits until each answers.
async fn start_replicas(
    procs: &[Mutex<Proc>],
    bases: &[String],
    out: &Path,
) -> Result<(), RunError> {
    for p in procs {
        p.lock().await.start()?;
    }
    let http = reqwest::Client::new();
    for base in bases {
        crate::chaos::first_healthy(&http, base, out).await?;
    }
    Ok(())
}

/// Runs a `[cluster]` scenario; see the module's documentation.
pub async fn run(spec: &Scenario, opts: &FailoverOptions) -> Result<Report, RunError> {
    let cluster = NatsCluster::start(Duration::from_secs(60))
        .await
        .map_err(setup("NATS cluster"))?;
    let url = cluster.url();
    let stage = Stage::start(spec, opts.smoke, Some(&url)).await?;
    let c = (stage.spec.cluster.clone())
        .ok_or_else(|| RunError::Setup("the scenario has no [cluster]".into()))?;
    let (procs, bases, cfg) = configure(&stage, &c, opts)?;
    let procs: Vec<Mutex<Proc>> = procs.into_iter().map(Mutex::new).collect();
    start_replicas(&procs, &bases, &opts.out).await?;

    let client = async_nats::connect(retailflow::bus::servers(&url))
        .await
        .map_err(setup("NATS"))?;
    let nats_version = client.server_info().version;
    let watch = Watch::new(bases.clone());
    let js = async_nats::jetstream::new(client.clone());
    let watching = tokio::spawn(watch.clone().run(js.clone(), cfg.streams.events.clone()));
    let listening = tokio::spawn(watch.clone().listen(client.clone()));
    let mut trader = Trader::setup(&stage, client.clone()).await?;
    let location = stage.world.locations[stage.world.stores].clone();
    let stocked = hot_stock(&trader, &cfg, &location, c.hot_stock).await?;
    for i in 0..bases.len() {
        if !watch.caught_up(i, stocked, Duration::from_secs(120)).await {
            return Err(RunError::Run(format!("r{} did not apply the setup", i + 1)));
        }
    }

    let shoppers = Shoppers::new(
        plan(&stage, &c, &bases, &location),
        client.clone(),
        watch.clone(),
    );
    let shopping = shoppers.spawn();
    let procs = Arc::new(procs);
    let sched = Schedule {
        watch: watch.clone(),
        procs: procs.clone(),
        cluster: Arc::new(Mutex::new(cluster)),
        js: js.clone(),
        events: cfg.streams.events.clone(),
        spec: c.clone(),
        graceful_limit: opts.graceful_limit,
        start: Instant::now(),
    };
    let span = c.rolling_at + Duration::from_secs(8 * c.replicas as u64);
    let rate = (trader.generator.trading_total() as f64 / span.as_secs_f64()).max(100.0);
    let cluster = sched.cluster.clone();
    let scheduled = tokio::spawn(sched.run());
    trader.oracle.hold_for_stream_order();
    let mut count = |_: u64, _: Instant| {};
    let trading = trader.trade(&|_| Some(rate), &mut count, false).await?;
    let done: Done = scheduled
        .await
        .map_err(|e| RunError::Run(format!("failover schedule: {e}")))??;
    shoppers.stop();
    for s in shopping {
        let _ = s.await;
    }

    let mut report = harness::report(&stage, opts.smoke, &nats_version);
    report.counts = crate::report::Counts::of(&trader.setup, &trading);
    let last_seq = trading.last_seq.max(stocked);
    for (i, _) in bases.iter().enumerate() {
        if !watch.caught_up(i, last_seq, opts.settle_limit).await {
            report
                .problems
                .push(format!("r{} did not apply sequence {last_seq}", i + 1));
        }
    }
    if let Err(e) = released(&js, &cfg, last_seq, opts.settle_limit).await {
        report.problems.push(e);
    }
    match settle(&trader.js, &cfg, opts.settle_limit).await {
        Ok(d) => report.throughput.settle_s = d.as_secs_f64(),
        Err(e) => report.problems.push(e),
    }
    let http = reqwest::Client::new();
    let atp_mismatches = verify_replicas(&http, &bases, &trader, &mut report).await;
    verify_books(&stage, &cfg, &trader, &trading, &mut report).await;
    let hot = hot_reserved(&http, &bases, &location).await;
    for p in procs.iter() {
        p.lock().await.terminate(opts.graceful_limit).await;
    }
    watch.stop();
    let _ = (watching.await, listening.await);

    let t = &shoppers.tally;
    let stats = FailoverStats {
        replicas: (1..=bases.len()).map(|i| format!("r{i}")).collect(),
        nats_nodes: retailflow::bus::server::NODES,
        takeover: done.takeover(&watch),
        marks: done.marks,
        node_restart_s: done.node_restart_s,
        rolling_s: done.rolling_s,
        rolling_exit_codes: done.rolling_exit_codes,
        http_queries: shoppers.take(&t.http),
        nats_queries: shoppers.take(&t.nats),
        reservations: shoppers.take(&t.reservations),
        granted: t.granted.load(std::sync::atomic::Ordering::Relaxed),
        rejected: t.rejected.load(std::sync::atomic::Ordering::Relaxed),
        hot_stock: c.hot_stock,
        hot_reserved: hot,
        max_apply_gap_s: watch.max_gaps(),
        atp_mismatches,
        timeline: watch.timeline(),
    };
    report.check_expectations(&exactness(&stage.spec));
    check(&mut report, &c, &stats);
    report.failover = Some(stats);
    drop(client);
    stage.stop().await?;
    drop(cluster);
    harness::write_report(&report, &opts.out)?;
    Ok(report)
}
