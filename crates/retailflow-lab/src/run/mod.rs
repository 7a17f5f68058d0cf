//! Running a scenario: bring up NATS, ERP simulators and the pipeline, publish, measure,
//! verify against the oracle, report.
//!
//! Two load modes. With no rate profile the whole trading load is published first while ingest
//! is held, then released: the time to drain that backlog gives the pipeline's drain rate, the
//! number compared with the raw JetStream ceiling. With a profile the pipeline runs live at the
//! profile's rates and publish-to-visible latency is measured.

mod trading;

use crate::ceiling::{Direct, Scratch};
use crate::harness::{self, Stage, Trader, setup};
use crate::measure::{self, Percentiles, Recorders};
use crate::report::{Ceiling, Counts, Report};
use crate::spec::Scenario;
use erp_sim::ErpSim;
use retailflow::config::Config;
use retailflow::supervise::pipeline::Pipeline;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trading::Traded;

pub use crate::harness::RunError;

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

/// The pipeline running in this process, and how to reach it.
struct Live {
    cfg: Config,
    nats_version: String,
    /// Shared with the tasks that watch it during the trading window.
    pipeline: Arc<Pipeline>,
    http_base: String,
}

impl Live {
    /// Starts the pipeline on the stage with the scenario's configuration.
    async fn start(stage: &Stage) -> Result<Live, RunError> {
        let cfg = stage.pipeline_config();
        let client = retailflow::bus::connect(&cfg.nats, "retailflow-scenario")
            .await
            .map_err(setup("NATS"))?;
        let nats_version = client.server_info().version;
        drop(client);
        let pipeline = Arc::new(harness::start_pipeline(cfg.clone()).await?);
        let http_base = harness::http_base(&pipeline)?;
        Ok(Live {
            cfg,
            nats_version,
            pipeline,
            http_base,
        })
    }

    async fn stop(self) -> Result<(), RunError> {
        let pipeline = Arc::try_unwrap(self.pipeline)
            .map_err(|_| RunError::Run("pipeline still shared".into()))?;
        pipeline.shutdown(Duration::from_secs(30)).await;
        Ok(())
    }
}

/// Runs one scenario end to end and returns its report (also written to `opts.out`).
pub async fn run(spec: &Scenario, opts: &RunOptions) -> Result<Report, RunError> {
    let stage = Stage::start(spec, opts.smoke, opts.nats.as_deref()).await?;
    let live = Live::start(&stage).await?;
    // Producers and queries get their own connection, as they would in production.
    let load_client = async_nats::connect(retailflow::bus::servers(&stage.bus.url))
        .await
        .map_err(setup("NATS (load)"))?;
    // Setup: master data and opening stock, applied before anything is measured.
    let mut trader = Trader::setup(&stage, load_client.clone()).await?;
    harness::applied(
        &live.pipeline,
        trader.setup.last_seq,
        Duration::from_secs(600),
        || "setup events were not applied within 10 minutes".into(),
    )
    .await?;
    let traded = trading::trade(&stage, &live, &mut trader, opts).await?;

    let mut report = harness::report(&stage, opts.smoke, &live.nats_version);
    verify(&mut report, &stage, &live, &trader, &traded).await;
    fill(&mut report, &stage, &live, &trader, &traded).await;
    if opts.ceiling {
        ceiling(&mut report, &stage, &live, &load_client, &traded).await;
    }
    let expect = stage.spec.expect.clone();
    live.stop().await?;
    stage.stop().await?;
    report.check_expectations(&expect);
    harness::write_report(&report, &opts.out)?;
    Ok(report)
}

/// ATP, the ERP's books and the dead letters against the oracle.
async fn verify(report: &mut Report, stage: &Stage, live: &Live, trader: &Trader, t: &Traded) {
    harness::verify_atp(&live.pipeline, &trader.oracle, report);
    harness::verify_erp(&stage.spec, &stage.sims, &trader.oracle, report);
    harness::verify_dead_letters(
        &live.pipeline.shared.js,
        &live.pipeline.shared.config.streams.dead_letters,
        &t.trading,
        &stage.spec,
        report,
    )
    .await;
}

/// The report's counts, pipeline counters, rates, latencies, ERP traffic and timeline.
async fn fill(report: &mut Report, stage: &Stage, live: &Live, trader: &Trader, t: &Traded) {
    report.counts = Counts::of(&trader.setup, &t.trading);
    harness::pipeline_counters(&live.pipeline, &mut report.pipeline).await;
    let p = &mut report.pipeline;
    p.peak_rss_mb = t.peak_rss;
    p.mode = if t.backlog {
        "backlog".into()
    } else {
        "live".into()
    };
    let pts = t.points.lock().map(|p| p.clone()).unwrap_or_default();
    throughput(report, t, &pts);
    latency(report, t);
    report.latency.posting = posting_latency(&stage.sims, &t.publish_times, t.first_seq, t.start);
    report.erp = harness::erp_summary(&stage.spec, &stage.sims);
    match &t.settle {
        Ok(d) => report.throughput.settle_s = d.as_secs_f64(),
        Err(e) => report.problems.push(format!("settling: {e}")),
    }
    report.timeline = pts;
}

/// Publish and drain rates, and the applied rate's median and peak over the timeline.
fn throughput(report: &mut Report, t: &Traded, pts: &[measure::Point]) {
    let trading = &t.trading;
    report.throughput.publish_rate =
        trading.stored as f64 / trading.elapsed.as_secs_f64().max(1e-9);
    report.throughput.published_s = t.published_at.as_secs_f64();
    if t.backlog {
        report.throughput.drain_seconds = t.drained.as_secs_f64();
        report.throughput.drain_rate = trading.stored as f64 / t.drained.as_secs_f64().max(1e-9);
    } else {
        report.throughput.drain_seconds = t.drained_at.saturating_sub(t.published_at).as_secs_f64();
    }
    let mut rates: Vec<f64> = pts
        .iter()
        .map(|p| p.applied_rate)
        .filter(|r| *r > 0.0)
        .collect();
    rates.sort_by(|a, b| a.total_cmp(b));
    report.throughput.peak_rate = rates.last().copied().unwrap_or(0.0);
    report.throughput.sustained_rate = rates.get(rates.len() / 2).copied().unwrap_or(0.0);
}

/// Query latencies (by transport and shape), errors and rate; publish-to-visible when live.
fn latency(report: &mut Report, t: &Traded) {
    let rec = &t.rec;
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
    report.latency.queries_per_s = all.len() as f64 / t.query_window.as_secs_f64().max(1e-9);
    report.latency.e2e = if t.backlog {
        Percentiles::default()
    } else {
        measure::percentiles(&measure::snapshot(&rec.e2e))
    };
}

/// The raw JetStream ceiling for the same messages, drained under the same shopper load, and
/// (in backlog mode) the pipeline's drain rate as a ratio of it.
async fn ceiling(
    report: &mut Report,
    stage: &Stage,
    live: &Live,
    load_client: &async_nats::Client,
    t: &Traded,
) {
    // The pipeline stays up, caught up and idle, so the shoppers' queries during the
    // ceiling's drains are answered as they were during the pipeline's.
    let secrets = retailflow::bus::secrets(&live.cfg.nats);
    let direct = Direct {
        url: &stage.bus.url,
        token: secrets.token.as_deref(),
        batch: live.cfg.ingest.batch,
    };
    let measured = async {
        let scratch = Scratch::fill(load_client, &t.trading.sizes).await?;
        let result = async {
            let rec = Arc::new(Recorders::default());
            let stop_load = Arc::new(AtomicBool::new(false));
            let thread = t.queries.spawn(rec.clone(), stop_load.clone());
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
            report.ceiling = Some(Ceiling {
                ratio: if t.backlog && c.rate > 0.0 {
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

/// From an event's publication to the ERP accepting the document that covers it.
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
