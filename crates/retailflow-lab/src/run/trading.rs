//! The trading window of a run: the load published (at the profile's pace, or as a backlog
//! while ingest is held), the pipeline draining it, the ERP settling, and what measures all that
//! meanwhile: the sampler, the shoppers' queries, the publish-to-visible watcher, the ERP fault
//! schedule and the progress line.

use super::{Live, RunError, RunOptions};
use crate::harness::{self, Stage, Trader, setup};
use crate::measure::{self, E2eSamples, Point, QueryTargets, Recorders};
use crate::publish::Published;
use crate::spec::{Queries, Scenario};
use erp_sim::{ErpSim, FaultMode};
use retailflow::supervise::pipeline::Pipeline;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// What the trading window measured.
pub(super) struct Traded {
    pub trading: Published,
    /// Backlog mode (no rate profile): published while ingest was held, then drained.
    pub backlog: bool,
    /// When the trading load began: the timeline's zero.
    pub start: Instant,
    pub first_seq: u64,
    pub published_at: Duration,
    /// From the release of the backlog until the last event was applied.
    pub drained: Duration,
    pub drained_at: Duration,
    /// How long the queries ran.
    pub query_window: Duration,
    pub settle: Result<Duration, String>,
    pub peak_rss: f64,
    pub rec: Arc<Recorders>,
    pub points: Arc<Mutex<Vec<Point>>>,
    /// Milliseconds from `start` to each trading message's publication, by sequence.
    pub publish_times: Arc<Mutex<Vec<u32>>>,
    /// The shoppers' queries, stopped; the ceiling starts another such load.
    pub queries: QueryLoad,
}

/// Publishes the trading load, lets the pipeline drain it and the ERP settle, measuring.
pub(super) async fn trade(
    stage: &Stage,
    live: &Live,
    trader: &mut Trader,
    opts: &RunOptions,
) -> Result<Traded, RunError> {
    let backlog = stage.spec.load.profile.is_empty();
    let meters = Meters::start(stage, live);
    // Queries run while events are applied: "during peak ingest". With a load profile that
    // is while they are published; in backlog mode, where nothing is applied while the backlog
    // is published, it is the drain.
    let mut queries = QueryLoad::new(stage, live, meters.rec.clone());
    if !backlog {
        queries.start()?;
    }
    let watchers = meters.watch(stage, live, opts.progress);

    let first_seq = trader.setup.last_seq + 1;
    let publish_times: Arc<Mutex<Vec<u32>>> = Arc::new(Mutex::new(Vec::new()));
    if backlog {
        live.pipeline.shared.flow.hold.store(true, Ordering::SeqCst);
    }
    let stamps = Stamps {
        times: publish_times.clone(),
        first_seq,
        backlog,
    };
    let trading = publish(
        &stage.spec,
        trader,
        &meters,
        &watchers,
        stamps,
        opts.ceiling,
    )
    .await?;
    let published_at = meters.start.elapsed();
    let last_seq = trading.last_seq.max(trader.setup.last_seq);
    let drain_start = Instant::now();
    if backlog {
        queries.start()?;
    }
    live.pipeline
        .shared
        .flow
        .hold
        .store(false, Ordering::SeqCst);
    let drain_limit = Duration::from_secs(3600);
    harness::applied(&live.pipeline, last_seq, drain_limit, || {
        format!("the pipeline did not apply sequence {last_seq} within {drain_limit:?}")
    })
    .await?;
    let drained = drain_start.elapsed();
    let drained_at = meters.start.elapsed();
    let query_window = queries.stop();
    let settle_limit = opts.settle_limit.unwrap_or(Duration::from_secs(1800));
    let settle = retailflow::supervise::settle::settle(&live.pipeline, settle_limit).await;
    let (start, rec, points) = (meters.start, meters.rec.clone(), meters.points.clone());
    meters.stop(watchers, &mut queries).await;
    let (_, peak_rss) = measure::rss_mb();
    Ok(Traded {
        trading,
        backlog,
        start,
        first_seq,
        published_at,
        drained,
        drained_at,
        query_window,
        settle,
        peak_rss,
        rec,
        points,
        publish_times,
        queries,
    })
}

/// Where each stored trading message's publication time goes.
struct Stamps {
    times: Arc<Mutex<Vec<u32>>>,
    first_seq: u64,
    backlog: bool,
}

/// Publishes the trading load: at the profile's rates, or as fast as acks allow for a backlog.
/// Every stored message is counted and its publication time kept; live, one in
/// `events / 20,000` is sampled for publish-to-visible latency.
async fn publish(
    spec: &Scenario,
    trader: &mut Trader,
    meters: &Meters,
    watchers: &Watchers,
    stamps: Stamps,
    keep_sizes: bool,
) -> Result<Published, RunError> {
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
    let Stamps {
        times,
        first_seq,
        backlog,
    } = stamps;
    let mut n = 0u64;
    let counter = meters.published.clone();
    let start = meters.start;
    let sample_every = (spec.load.events / 20_000).max(1);
    let samples_in = watchers.samples.clone();
    let mut on_stored = move |seq: u64, at: Instant| {
        n += 1;
        counter.store(n, Ordering::Relaxed);
        if let Ok(mut t) = times.lock() {
            let idx = (seq - first_seq) as usize;
            if t.len() <= idx {
                t.resize(idx + 1, u32::MAX);
            }
            t[idx] = at.duration_since(start).as_millis() as u32;
        }
        if !backlog && n % sample_every == 0 {
            samples_in.push(seq, at);
        }
    };
    let pace_fn: &dyn Fn(Duration) -> Option<f64> = if backlog { &|_| None } else { &pace };
    trader.trade(pace_fn, &mut on_stored, keep_sizes).await
}

/// The sampler: one point of the timeline every 500 ms from the start of trading.
struct Meters {
    rec: Arc<Recorders>,
    stop: Arc<AtomicBool>,
    published: Arc<AtomicU64>,
    points: Arc<Mutex<Vec<Point>>>,
    start: Instant,
    sampler: JoinHandle<()>,
}

/// What watches the run beside the sampler: publish-to-visible, ERP faults, progress.
struct Watchers {
    samples: Arc<E2eSamples>,
    watcher: JoinHandle<()>,
    faults: JoinHandle<()>,
    progress: Option<JoinHandle<()>>,
}

impl Meters {
    /// Starts the clock and the sampler.
    fn start(stage: &Stage, live: &Live) -> Meters {
        let rec = Arc::new(Recorders::default());
        let stop = Arc::new(AtomicBool::new(false));
        let published = Arc::new(AtomicU64::new(0));
        let points = Arc::new(Mutex::new(Vec::<Point>::new()));
        let start = Instant::now();
        let sampler = tokio::spawn(measure::sampler(
            live.pipeline.clone(),
            stage.sims.clone(),
            rec.clone(),
            published.clone(),
            start,
            Duration::from_millis(500),
            points.clone(),
            stop.clone(),
        ));
        Meters {
            rec,
            stop,
            published,
            points,
            start,
            sampler,
        }
    }

    /// Starts the publish-to-visible watcher, the ERP fault schedule and (with `progress`)
    /// the progress line.
    fn watch(&self, stage: &Stage, live: &Live, progress: bool) -> Watchers {
        let samples = Arc::new(E2eSamples::default());
        let watcher = tokio::spawn(measure::e2e_watch(
            live.pipeline.shared.view.clone(),
            samples.clone(),
            self.rec.clone(),
            self.stop.clone(),
        ));
        let faults = schedule_faults(&stage.spec, stage.sims.clone(), self.start);
        let progress = progress.then(|| {
            tokio::spawn(progress_line(
                live.pipeline.clone(),
                self.published.clone(),
                self.stop.clone(),
            ))
        });
        Watchers {
            samples,
            watcher,
            faults,
            progress,
        }
    }

    /// Stops the sampler and the watchers, and waits for them and for the query thread.
    async fn stop(self, watchers: Watchers, queries: &mut QueryLoad) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = tokio::join!(self.sampler, watchers.watcher);
        queries.join().await;
        watchers.faults.abort();
        if let Some(p) = watchers.progress {
            let _ = p.await;
        }
    }
}

/// The shoppers' availability queries, on a thread of their own, and when they began.
pub(super) struct QueryLoad {
    http_base: String,
    nats_url: String,
    targets: Arc<QueryTargets>,
    load: Queries,
    rec: Arc<Recorders>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    started: Instant,
}

impl QueryLoad {
    fn new(stage: &Stage, live: &Live, rec: Arc<Recorders>) -> QueryLoad {
        let world = &stage.world;
        let targets = Arc::new(QueryTargets {
            skus: world.skus.iter().map(|s| s.id.clone()).collect(),
            channels: world.channels.iter().map(|c| c.name.clone()).collect(),
            stores: world.locations[..world.stores].to_vec(),
        });
        QueryLoad {
            http_base: live.http_base.clone(),
            nats_url: stage.bus.url.clone(),
            targets,
            load: stage.spec.queries.clone(),
            rec,
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
            started: Instant::now(),
        }
    }

    /// Starts the queries; their window begins now.
    fn start(&mut self) -> Result<(), RunError> {
        self.started = Instant::now();
        let thread = self.spawn(self.rec.clone(), self.stop.clone());
        self.thread = Some(thread.map_err(setup("query load thread"))?);
        Ok(())
    }

    /// A query load like this one, recording into `rec` until `stop`.
    pub(super) fn spawn(
        &self,
        rec: Arc<Recorders>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        measure::query_load_thread(
            self.http_base.clone(),
            self.nats_url.clone(),
            self.targets.clone(),
            self.load.clone(),
            rec,
            stop,
        )
    }

    /// Tells the queries to stop; how long they ran.
    fn stop(&self) -> Duration {
        self.stop.store(true, Ordering::SeqCst);
        self.started.elapsed()
    }

    async fn join(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

fn schedule_faults(spec: &Scenario, sims: Arc<Vec<ErpSim>>, start: Instant) -> JoinHandle<()> {
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
