//! Running a scenario: bring up NATS, ERP simulators and the pipeline, publish, measure,
//! verify against the oracle, report.
//!
//! Two load modes. With no rate profile the whole trading load is published first while ingest
//! is held, then released: the time to drain that backlog gives the pipeline's drain rate, the
//! number compared with the raw JetStream ceiling. With a profile the pipeline runs live at the
//! profile's rates and publish-to-visible latency is measured.

use super::generate::Generator;
use super::measure::{self, E2eSamples, Percentiles, Point, Recorders};
use super::oracle::Oracle;
use super::publish::{self, Until};
use super::report::{Counts, Environment, Report};
use super::spec::Scenario;
use super::world::World;
use erp_sim::{ErpSim, ErpSimConfig, FaultMode};
use retailflow::config::{Config, ErpEndpointConfig};
use retailflow::post::ratelimit::RateLimit;
use retailflow::supervise::pipeline::Pipeline;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The service configuration a scenario runs with: defaults, the scenario's pipeline
/// settings, and one endpoint per ERP simulator URL.
pub fn pipeline_config(spec: &Scenario, nats_url: &str, erp_urls: &[String]) -> Config {
    let mut c = Config::default();
    c.nats.url = nats_url.to_string();
    c.shards.count = spec.pipeline.shards;
    c.ingest.batch = spec.pipeline.batch;
    c.ingest.credit = spec.pipeline.credit;
    c.ingest.reader = spec.pipeline.reader;
    c.barrier.interval = Duration::from_millis(250);
    c.barrier.flush_interval = spec.pipeline.flush_interval;
    c.snapshot.interval = spec.pipeline.snapshot_interval;
    c.snapshot.every_events = spec.pipeline.snapshot_every_events;
    c.api.http = "127.0.0.1:0".into();
    c.erp = spec
        .erp
        .iter()
        .zip(erp_urls)
        .map(|(e, url)| ErpEndpointConfig {
            name: e.name.clone(),
            url: url.clone(),
            rate: RateLimit {
                requests: e.requests,
                window: e.window,
                burst: e.burst,
            },
            max_concurrent: e.max_concurrent,
            retry: retailflow::config::RetryConfig {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(10),
            },
            ..ErpEndpointConfig::default()
        })
        .collect();
    c
}

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub smoke: bool,
    pub ceiling: bool,
    /// Where report.json, report.html and chart.png go.
    pub out: PathBuf,
    /// Use this NATS server instead of starting a private one.
    pub nats: Option<String>,
    /// Print a progress line every second.
    pub progress: bool,
    /// Longest wait for the ERP to take every posting after the load.
    pub settle_limit: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Run(String),
}

fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> RunError + '_ {
    move |e| RunError::Setup(format!("{what}: {e}"))
}

/// The ERP simulator settings for one endpoint of a scenario.
fn sim_config(spec: &Scenario, e: &super::spec::ErpSpec) -> ErpSimConfig {
    ErpSimConfig {
        listen: "127.0.0.1:0".into(),
        limit_requests: e.requests,
        limit_window: e.window,
        max_concurrent: e.max_concurrent,
        latency_min: Duration::from_millis(spec.faults.erp_latency_ms[0]),
        latency_max: Duration::from_millis(
            spec.faults.erp_latency_ms[1].max(spec.faults.erp_latency_ms[0]),
        ),
        error_rate_permille: spec.faults.erp_error_permille,
        reject_locations: spec.faults.erp_reject_locations.clone(),
    }
}

/// The scenario as run: its smoke version or itself.
pub(crate) fn version(spec: &Scenario, smoke: bool) -> Scenario {
    if smoke { spec.smoke() } else { spec.clone() }
}

/// One ERP simulator per endpoint of the scenario.
/// Nice value of the ERP simulators' threads: the ERP stands in for another machine and gets
/// the data path's share of the CPU, not the API's.
const SIM_NICE: i32 = 10;

pub(crate) async fn start_sims(spec: &Scenario) -> Result<Vec<ErpSim>, RunError> {
    let mut sims = Vec::new();
    for e in &spec.erp {
        sims.push(
            ErpSim::start_isolated(sim_config(spec, e), SIM_NICE)
                .await
                .map_err(setup("ERP simulator"))?,
        );
    }
    Ok(sims)
}

/// Runs one scenario end to end and returns its report (also written to `opts.out`).
pub async fn run(spec: &Scenario, opts: &RunOptions) -> Result<Report, RunError> {
    let spec = version(spec, opts.smoke);
    let world = Arc::new(World::build(&spec).map_err(RunError::Setup)?);
    let nats = match &opts.nats {
        Some(url) => (url.clone(), None),
        None => {
            let s = tokio::task::spawn_blocking(retailflow::bus::server::NatsServer::start)
                .await
                .map_err(setup("starting nats-server"))?
                .map_err(setup("starting nats-server"))?;
            (s.url(), Some(s))
        }
    };
    let (nats_url, nats_server) = nats;
    let sims = Arc::new(start_sims(&spec).await?);
    let urls: Vec<String> = sims.iter().map(|s| s.postings_url()).collect();
    let cfg = pipeline_config(&spec, &nats_url, &urls);
    let client = retailflow::bus::connect(&cfg.nats, "retailflow-scenario")
        .await
        .map_err(setup("NATS"))?;
    let nats_version = client.server_info().version;
    drop(client);
    let pipeline = Arc::new(
        Pipeline::start_with(cfg.clone(), retailflow::telemetry::Metrics::new())
            .await
            .map_err(setup("pipeline"))?,
    );
    let http_base = format!(
        "http://{}",
        pipeline
            .http_addr()
            .ok_or_else(|| RunError::Setup("no HTTP API".into()))?
    );
    // Producers and queries get their own connection, as they would in production.
    let load_client = async_nats::connect(nats_url.as_str())
        .await
        .map_err(setup("NATS (load)"))?;
    let in_flight = spec.load.in_flight.max(1);
    let js = publish::load_context(load_client.clone(), in_flight);
    let mut generator = Generator::new(&spec, world.clone());
    let mut oracle = Oracle::default();
    // Setup: master data and opening stock, applied before anything is measured.
    let setup_pub = publish::setup(&js, &mut generator, &mut oracle, in_flight)
        .await
        .map_err(RunError::Run)?;
    if !pipeline
        .shared
        .view
        .wait_all(setup_pub.last_seq, Duration::from_secs(600))
        .await
    {
        return Err(RunError::Run(
            "setup events were not applied within 10 minutes".into(),
        ));
    }

    // Trading.
    let backlog_mode = spec.load.profile.is_empty();
    let rec = Arc::new(Recorders::default());
    let stop = Arc::new(AtomicBool::new(false));
    let published_count = Arc::new(AtomicU64::new(0));
    let points = Arc::new(Mutex::new(Vec::<Point>::new()));
    let start = Instant::now();
    let sampler = tokio::spawn(measure::sampler(
        pipeline.clone(),
        sims.clone(),
        rec.clone(),
        published_count.clone(),
        start,
        Duration::from_millis(500),
        points.clone(),
        stop.clone(),
    ));
    let targets = Arc::new(measure::QueryTargets {
        skus: world.skus.iter().map(|s| s.id.clone()).collect(),
        channels: world.channels.iter().map(|c| c.name.clone()).collect(),
        stores: world.locations[..world.stores].to_vec(),
    });
    // Queries run while events are applied: "during peak ingest". With a load profile that
    // is while they are published; in backlog mode, where nothing is applied while the backlog
    // is published, it is the drain.
    let stop_queries = Arc::new(AtomicBool::new(false));
    let start_queries = || {
        measure::query_load_thread(
            http_base.clone(),
            nats_url.clone(),
            targets.clone(),
            spec.queries.clone(),
            rec.clone(),
            stop_queries.clone(),
        )
        .map_err(setup("query load thread"))
    };
    let mut queries = None;
    let mut queries_started = Instant::now();
    if !backlog_mode {
        queries = Some(start_queries()?);
    }
    let samples = Arc::new(E2eSamples::default());
    let watcher = tokio::spawn(measure::e2e_watch(
        pipeline.shared.view.clone(),
        samples.clone(),
        rec.clone(),
        stop.clone(),
    ));
    let faults = schedule_faults(&spec, sims.clone(), start);
    let progress = opts.progress.then(|| {
        tokio::spawn(progress_line(
            pipeline.clone(),
            published_count.clone(),
            stop.clone(),
        ))
    });

    let first_trading_seq = setup_pub.last_seq + 1;
    let publish_times: Arc<Mutex<Vec<u32>>> = Arc::new(Mutex::new(Vec::new()));
    if backlog_mode {
        pipeline.shared.hold.store(true, Ordering::SeqCst);
    }
    let profile = spec.load.profile.clone();
    let pace = move |t: Duration| -> Option<f64> {
        let mut at = Duration::ZERO;
        for p in &profile {
            if t < at + p.length {
                let f = (t - at).as_secs_f64() / p.length.as_secs_f64().max(1e-9);
                return Some(p.from as f64 + (p.to as f64 - p.from as f64) * f);
            }
            at += p.length;
        }
        profile.last().map(|p| p.to as f64)
    };
    let mut n = 0u64;
    let times = publish_times.clone();
    let counter = published_count.clone();
    let sample_every = (spec.load.events / 20_000).max(1);
    let samples_in = samples.clone();
    let mut on_stored = move |seq: u64, at: Instant| {
        n += 1;
        counter.store(n, Ordering::Relaxed);
        if let Ok(mut t) = times.lock() {
            let idx = (seq - first_trading_seq) as usize;
            if t.len() <= idx {
                t.resize(idx + 1, u32::MAX);
            }
            t[idx] = at.duration_since(start).as_millis() as u32;
        }
        if !backlog_mode && n % sample_every == 0 {
            samples_in.push(seq, at);
        }
    };
    let pace_fn: &dyn Fn(Duration) -> Option<f64> = if backlog_mode { &|_| None } else { &pace };
    let trading = publish::publish(
        &js,
        &mut generator,
        &mut oracle,
        Until::End,
        in_flight,
        pace_fn,
        &mut on_stored,
        opts.ceiling,
    )
    .await
    .map_err(RunError::Run)?;
    let published_at = start.elapsed();
    let last_seq = trading.last_seq.max(setup_pub.last_seq);
    let drain_start = Instant::now();
    if backlog_mode {
        queries_started = Instant::now();
        queries = Some(start_queries()?);
    }
    pipeline.shared.hold.store(false, Ordering::SeqCst);
    let drain_limit = Duration::from_secs(3600);
    if !pipeline.shared.view.wait_all(last_seq, drain_limit).await {
        return Err(RunError::Run(format!(
            "the pipeline did not apply sequence {last_seq} within {drain_limit:?}"
        )));
    }
    let drained = drain_start.elapsed();
    let drained_at = start.elapsed();
    stop_queries.store(true, Ordering::SeqCst);
    let query_window = queries_started.elapsed();
    let settle_limit = opts.settle_limit.unwrap_or(Duration::from_secs(1800));
    let settle = retailflow::supervise::settle::settle(&pipeline, settle_limit).await;
    stop.store(true, Ordering::SeqCst);
    let _ = tokio::join!(sampler, watcher);
    if let Some(queries) = queries {
        let _ = tokio::task::spawn_blocking(move || queries.join()).await;
    }
    faults.abort();
    if let Some(p) = progress {
        let _ = p.await;
    }
    let (_, peak_rss) = measure::rss_mb();

    // Verification.
    let mut report = Report::new(&spec, opts.smoke);
    report.environment = Environment::here(&nats_version, nats_server.as_ref());
    verify_atp(&pipeline, &oracle, &mut report);
    verify_erp(&spec, &sims, &oracle, &mut report);
    verify_dead_letters(
        &pipeline.shared.js,
        &pipeline.shared.config.streams.dead_letters,
        &trading,
        &spec,
        &mut report,
    )
    .await;
    let m = &pipeline.shared.metrics;
    report.counts = Counts::of(&setup_pub, &trading);
    report.pipeline.duplicates_redelivered = m.duplicates_redelivered.load(Ordering::Relaxed);
    report.pipeline.duplicates_resent = m.duplicates_resent.load(Ordering::Relaxed);
    report.pipeline.dead_letters = m.dead_letters.load(Ordering::Relaxed);
    report.pipeline.late_events = m.late_events.load(Ordering::Relaxed);
    report.pipeline.barriers = m.barriers.load(Ordering::Relaxed);
    report.pipeline.snapshots = m.snapshots.load(Ordering::Relaxed);
    report.pipeline.restarts = pipeline.restarts().await;
    report.pipeline.negative_on_hand = m.negative_on_hand.load(Ordering::Relaxed);
    report.pipeline.feed_messages = m.feed_messages.load(Ordering::Relaxed);
    report.pipeline.peak_rss_mb = peak_rss;
    report.pipeline.mode = if backlog_mode {
        "backlog".into()
    } else {
        "live".into()
    };
    report.throughput.publish_rate =
        trading.stored as f64 / trading.elapsed.as_secs_f64().max(1e-9);
    report.throughput.published_s = published_at.as_secs_f64();
    if backlog_mode {
        report.throughput.drain_seconds = drained.as_secs_f64();
        report.throughput.drain_rate = trading.stored as f64 / drained.as_secs_f64().max(1e-9);
    } else {
        report.throughput.drain_seconds = drained_at.saturating_sub(published_at).as_secs_f64();
    }
    let pts = points.lock().map(|p| p.clone()).unwrap_or_default();
    let mut rates: Vec<f64> = pts
        .iter()
        .map(|p| p.applied_rate)
        .filter(|r| *r > 0.0)
        .collect();
    rates.sort_by(|a, b| a.total_cmp(b));
    report.throughput.peak_rate = rates.last().copied().unwrap_or(0.0);
    report.throughput.sustained_rate = rates.get(rates.len() / 2).copied().unwrap_or(0.0);
    report.latency.query_http = measure::percentiles(&measure::snapshot(&rec.query_http));
    report.latency.query_nats = measure::percentiles(&measure::snapshot(&rec.query_nats));
    let all = rec.queries_answered();
    report.latency.query_all = measure::percentiles(&all);
    report.latency.query_shapes = measure::Shape::EACH
        .iter()
        .map(|s| {
            let h = measure::snapshot(&rec.query_shape[*s as usize]);
            (s.name().to_string(), measure::percentiles(&h))
        })
        .filter(|(_, p)| p.count > 0)
        .collect();
    report.latency.query_errors = rec.query_errors.load(Ordering::Relaxed);
    report.latency.queries_per_s = all.len() as f64 / query_window.as_secs_f64().max(1e-9);
    report.latency.e2e = if backlog_mode {
        Percentiles::default()
    } else {
        measure::percentiles(&measure::snapshot(&rec.e2e))
    };
    report.latency.posting = posting_latency(&sims, &publish_times, first_trading_seq, start);
    report.erp = erp_summary(&spec, &sims);
    match &settle {
        Ok(d) => report.throughput.settle_s = d.as_secs_f64(),
        Err(e) => report.problems.push(format!("settling: {e}")),
    }
    report.timeline = pts;

    if opts.ceiling {
        // The pipeline stays up, caught up and idle, so the shoppers' queries during the
        // ceiling's drains are answered as they were during the pipeline's.
        let secrets = retailflow::bus::secrets(&cfg.nats);
        let direct = super::ceiling::Direct {
            url: &nats_url,
            token: secrets.token.as_deref(),
            batch: cfg.ingest.batch,
        };
        let under_load = || {
            let rec = Arc::new(Recorders::default());
            let stop = Arc::new(AtomicBool::new(false));
            let thread = measure::query_load_thread(
                http_base.clone(),
                nats_url.clone(),
                targets.clone(),
                spec.queries.clone(),
                rec.clone(),
                stop.clone(),
            );
            (rec, stop, thread)
        };
        let measured = async {
            let scratch = super::ceiling::Scratch::fill(&load_client, &trading.sizes).await?;
            let result = async {
                let (rec, stop_load, thread) = under_load();
                let thread = thread.map_err(|e| format!("query load thread: {e}"))?;
                let began = Instant::now();
                let loaded = scratch.drain_loaded(&direct).await;
                let window = began.elapsed();
                stop_load.store(true, Ordering::SeqCst);
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
                let loaded = loaded?;
                let answered = rec.queries_answered().len();
                let query_rate = answered as f64 / window.as_secs_f64().max(1e-9);
                let quiet = scratch.drain_quiet(&direct).await?;
                Ok::<_, String>(scratch.ceiling(&loaded, quiet, query_rate))
            }
            .await;
            scratch.delete().await;
            result
        }
        .await;
        match measured {
            Ok(c) => {
                report.ceiling = Some(super::report::Ceiling {
                    ratio: if backlog_mode && c.rate > 0.0 {
                        report.throughput.drain_rate / c.rate
                    } else {
                        0.0
                    },
                    ..c
                });
            }
            Err(e) => report.problems.push(format!("ceiling: {e}")),
        }
    }
    let pipeline =
        Arc::try_unwrap(pipeline).map_err(|_| RunError::Run("pipeline still shared".into()))?;
    pipeline.shutdown(Duration::from_secs(30)).await;
    for s in
        Arc::try_unwrap(sims).map_err(|_| RunError::Run("ERP simulators still shared".into()))?
    {
        s.shutdown().await;
    }
    drop(nats_server);
    report.check_expectations(&spec.expect);
    std::fs::create_dir_all(&opts.out)
        .map_err(|e| RunError::Run(format!("creating {}: {e}", opts.out.display())))?;
    report
        .write(&opts.out)
        .map_err(|e| RunError::Run(format!("writing the report to {}: {e}", opts.out.display())))?;
    Ok(report)
}

fn schedule_faults(
    spec: &Scenario,
    sims: Arc<Vec<ErpSim>>,
    start: Instant,
) -> tokio::task::JoinHandle<()> {
    let mut plan: Vec<(Duration, FaultMode, Duration)> = Vec::new();
    for w in &spec.faults.erp_outages {
        plan.push((w.at, FaultMode::Outage, w.length));
    }
    for w in &spec.faults.erp_throttle {
        plan.push((w.at, FaultMode::Throttle, w.length));
    }
    plan.sort_by_key(|p| p.0);
    tokio::spawn(async move {
        for (at, mode, length) in plan {
            tokio::time::sleep_until(tokio::time::Instant::from_std(start + at)).await;
            tracing::warn!(?mode, ?length, "scenario: ERP fault window begins");
            for s in sims.iter() {
                s.set_fault(mode, Some(length));
            }
        }
    })
}

async fn progress_line(pipeline: Arc<Pipeline>, published: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let m = pipeline.shared.metrics.clone();
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let applied = m.events_applied.load(Ordering::Relaxed);
        let lag = m.stream_last_seq.load(Ordering::Relaxed) as i64
            - pipeline.shared.view.applied_all() as i64;
        let rate = applied as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let eta = if rate > 0.0 {
            lag.max(0) as f64 / rate
        } else {
            0.0
        };
        let ms = |a: &AtomicU64| a.load(Ordering::Relaxed) / 1000;
        eprint!(
            "\r  {:>6.0}s  published {:>10}  applied {:>10}  lag {:>9}  ETA {:>5.0}s  busy ms: {}  ingest waited ms: messages {} credit {}   ",
            started.elapsed().as_secs_f64(),
            published.load(Ordering::Relaxed),
            applied,
            lag.max(0),
            eta,
            retailflow::telemetry::STAGES
                .iter()
                .zip(&m.busy_us)
                .map(|(n, v)| format!("{n} {}", ms(v)))
                .collect::<Vec<_>>()
                .join(" "),
            ms(&m.ingest_wait_messages_us),
            ms(&m.ingest_wait_credit_us),
        );
    }
    eprintln!();
}

fn verify_atp(pipeline: &Pipeline, oracle: &Oracle, report: &mut Report) {
    let view = &pipeline.shared.view;
    let mut by_sku: BTreeMap<&str, Vec<(&str, &super::oracle::Stock)>> = BTreeMap::new();
    for ((loc, sku), st) in &oracle.stock {
        by_sku
            .entry(sku.as_str())
            .or_default()
            .push((loc.as_str(), st));
    }
    let v = &mut report.verification;
    for (sku, locs) in by_sku {
        let (answers, _) = view.read(&retailflow::domain::Sku::from(sku));
        let answers = answers.unwrap_or_default();
        for (loc, want) in locs {
            v.atp_checked += 1;
            let got = answers
                .iter()
                .find(|a| a.location.as_str() == loc)
                .map(|a| a.position)
                .unwrap_or_default();
            let same = got.on_hand == want.on_hand
                && got.reserved == want.reserved
                && got.safety_stock == want.safety_stock
                && got.in_transit == want.in_transit;
            if !same {
                v.atp_mismatches += 1;
                if v.examples.len() < 10 {
                    v.examples
                        .push(format!("ATP {loc}/{sku}: expected {want:?}, got {got:?}"));
                }
            }
        }
    }
}

pub(crate) fn verify_erp(spec: &Scenario, sims: &[ErpSim], oracle: &Oracle, report: &mut Report) {
    let rejected: std::collections::HashSet<&str> = spec
        .faults
        .erp_reject_locations
        .iter()
        .map(String::as_str)
        .collect();
    let v = &mut report.verification;
    if sims.is_empty() {
        return;
    }
    // Each endpoint takes every document kind by default; check the first one's books.
    let totals = sims[0].totals();
    let mut sales: BTreeMap<(String, String, String), super::oracle::SalesTotal> = BTreeMap::new();
    for s in &totals.sales {
        let e = sales
            .entry((
                s.location.to_string(),
                s.sku.to_string(),
                s.tax_code.to_string(),
            ))
            .or_default();
        e.qty_sold += s.qty_sold;
        e.qty_returned += s.qty_returned;
        e.sales_amount += s.sales_amount;
        e.returns_amount += s.returns_amount;
        e.tax_amount += s.tax_amount;
    }
    for (key, want) in &oracle.sales {
        if rejected.contains(key.0.as_str()) {
            continue;
        }
        v.erp_sales_checked += 1;
        let got = sales.remove(key).unwrap_or_default();
        if got != *want {
            v.erp_mismatches += 1;
            if v.examples.len() < 20 {
                v.examples
                    .push(format!("ERP sales {key:?}: expected {want:?}, got {got:?}"));
            }
        }
    }
    for (key, extra) in sales {
        v.erp_mismatches += 1;
        if v.examples.len() < 20 {
            v.examples.push(format!(
                "ERP sales {key:?} booked but never sold: {extra:?}"
            ));
        }
    }
    let mut tenders: BTreeMap<(String, String), super::oracle::TenderTotal> = BTreeMap::new();
    for t in &totals.tenders {
        let e = tenders
            .entry((t.location.to_string(), t.tender.to_string()))
            .or_default();
        e.paid += t.paid;
        e.refunded += t.refunded;
    }
    for (key, want) in &oracle.tenders {
        if rejected.contains(key.0.as_str()) {
            continue;
        }
        v.erp_tenders_checked += 1;
        if tenders.get(key).copied().unwrap_or_default() != *want {
            v.erp_mismatches += 1;
            if v.examples.len() < 20 {
                v.examples.push(format!(
                    "ERP tenders {key:?}: expected {want:?}, got {:?}",
                    tenders.get(key)
                ));
            }
        }
    }
    // Every stock change is a movement, so the movements of a position add up to its on hand.
    let mut stock: BTreeMap<(String, String), i64> = BTreeMap::new();
    for m in &totals.inventory {
        *stock
            .entry((m.location.to_string(), m.sku.to_string()))
            .or_default() += m.qty;
    }
    for ((loc, sku), want) in &oracle.stock {
        if rejected.contains(loc.as_str()) {
            continue;
        }
        v.erp_inventory_checked += 1;
        let got = stock.get(&(loc.clone(), sku.clone())).copied().unwrap_or(0);
        if got != want.on_hand {
            v.erp_mismatches += 1;
            if v.examples.len() < 20 {
                v.examples.push(format!(
                    "ERP inventory {loc}/{sku}: movements add to {got}, on hand is {}",
                    want.on_hand
                ));
            }
        }
    }
    v.duplicate_documents = sims.iter().map(|s| s.stats().duplicate_documents).sum();
}

pub(crate) async fn verify_dead_letters(
    js: &async_nats::jetstream::Context,
    stream_name: &str,
    trading: &publish::Published,
    spec: &Scenario,
    report: &mut Report,
) {
    use futures::StreamExt;
    let v = &mut report.verification;
    v.dead_letters_expected = trading.poison;
    let Ok(mut stream) = js.get_stream(stream_name).await else {
        v.examples.push("dead-letter stream missing".into());
        return;
    };
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            filter_subject: format!("{}.ingest.>", retailflow::domain::subject::DLQ),
            ..Default::default()
        })
        .await;
    let mut seqs = std::collections::BTreeSet::new();
    if let Ok(c) = consumer {
        if let Ok(mut msgs) = c.stream().max_messages_per_batch(1000).messages().await {
            while let Ok(Some(Ok(m))) =
                tokio::time::timeout(Duration::from_millis(500), msgs.next()).await
            {
                if let Some(s) = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(retailflow::ingest::deadletter::H_SEQ))
                {
                    seqs.insert(s.as_str().to_string());
                }
                let _ = m.ack().await;
            }
        }
    }
    v.dead_letters_found = seqs.len() as u64;
    v.erp_rejections_expected = !spec.faults.erp_reject_locations.is_empty();
    // Rejected postings are dead letters of the `erp` stage.
    if let Ok(info) = stream.info().await.map(|i| i.state.messages) {
        v.erp_rejections = info.saturating_sub(seqs.len() as u64);
    }
}

fn posting_latency(
    sims: &[ErpSim],
    times: &Mutex<Vec<u32>>,
    first_seq: u64,
    start: Instant,
) -> Percentiles {
    let Ok(times) = times.lock() else {
        return Percentiles::default();
    };
    let mut h = measure::histogram();
    for s in sims {
        for (last_seq, accepted) in s.acceptances() {
            let Some(idx) = last_seq.checked_sub(first_seq) else {
                continue;
            };
            if let Some(&ms) = times.get(idx as usize) {
                if ms != u32::MAX {
                    let accepted_ms = accepted.saturating_duration_since(start).as_millis() as i64;
                    let micros = (accepted_ms - i64::from(ms)).max(0) as u64 * 1000;
                    let _ = h.record(micros.max(1));
                }
            }
        }
    }
    measure::percentiles(&h)
}

pub(crate) fn erp_summary(spec: &Scenario, sims: &[ErpSim]) -> Vec<super::report::ErpSummary> {
    spec.erp
        .iter()
        .zip(sims)
        .map(|(e, s)| {
            let st = s.stats();
            super::report::ErpSummary {
                endpoint: e.name.clone(),
                limit_requests: e.requests,
                limit_window_s: e.window.as_secs_f64(),
                max_concurrent: e.max_concurrent,
                requests: st.requests,
                accepted: st.accepted,
                replays: st.replays,
                throttled: st.throttled,
                rejected: st.rejected,
                injected_errors: st.injected_errors,
                max_in_window: st.max_in_window as u64,
                max_in_flight: st.max_in_flight as u64,
                over_limit: st.throttled_window,
                duplicate_documents: st.duplicate_documents,
                timeline: st
                    .timeline
                    .iter()
                    .map(|p| (p.second, p.requests, p.accepted, p.throttled))
                    .collect(),
            }
        })
        .collect()
}
