//! `retailflow scenario memory FILE`: resident memory per (location, sku) position of a large
//! chain in steady state.
//!
//! The pipeline runs as a `retailflow run` process of its own (the shipped binary: mimalloc,
//! its purge delay, no lab code in its heap), so the number read is that process's
//! `/proc/<pid>/status` VmRSS and nothing of the load generator's. Every location receives
//! every SKU as opening stock, a modest trickle of one-unit sales follows, and while the
//! pipeline is caught up the resident size is sampled for a while: the report gives the last
//! sample, the range over the window, the peak (VmHWM, which includes loading and snapshots),
//! and bytes per position. A sample of SKUs is then read back over HTTP and checked position by
//! position against the opening stock minus what the trickle sold.

use crate::harness;
use crate::publish::{envelope, load_context, publish_envelopes};
use retailflow::config::Config;
use retailflow::domain::Event;
use retailflow::query::model::{MAX_SKUS, QueryRequest, QueryResponse};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A memory scenario file (see scenarios/large-chain.toml).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemorySpec {
    pub name: String,
    /// Locations; each holds every SKU, so positions = locations x skus.
    pub locations: usize,
    pub skus: usize,
    #[serde(default = "two")]
    pub shards: usize,
    /// One-unit sales per second after the opening stock is applied.
    #[serde(default = "trickle_rate")]
    pub trickle_rate: u64,
    #[serde(default = "trickle_seconds")]
    pub trickle_seconds: u64,
    /// How long the resident size is sampled (20 reads a second): the last seconds of the
    /// trickle. Sampled while events still flow, because the allocator returns freed memory
    /// to the system only as the threads that freed it allocate again.
    #[serde(default = "sample_seconds")]
    pub sample_seconds: u64,
    /// The pipeline's snapshot interval, in seconds.
    #[serde(default = "snapshot_seconds")]
    pub snapshot_seconds: u64,
    /// SKUs read back over HTTP and checked at every location.
    #[serde(default = "check_skus")]
    pub check_skus: usize,
    #[serde(default)]
    pub expect: MemoryExpect,
    pub smoke: Option<MemorySmoke>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryExpect {
    /// Positions one GiB of the process's steady resident size holds, at least.
    pub min_positions_per_gib: Option<f64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemorySmoke {
    pub locations: usize,
    pub skus: usize,
    pub trickle_seconds: u64,
    pub sample_seconds: u64,
}

fn two() -> usize {
    2
}
fn trickle_rate() -> u64 {
    1_000
}
fn trickle_seconds() -> u64 {
    120
}
fn sample_seconds() -> u64 {
    60
}
fn snapshot_seconds() -> u64 {
    30
}
fn check_skus() -> usize {
    200
}

impl MemorySpec {
    pub fn load(path: &Path) -> anyhow::Result<MemorySpec> {
        let text = std::fs::read_to_string(path)?;
        let spec: MemorySpec = toml::from_str(&text)?;
        anyhow::ensure!(
            spec.locations > 0 && spec.skus > 0 && spec.shards > 0,
            "locations, skus and shards must be above zero"
        );
        Ok(spec)
    }

    /// The smoke version: the smaller world and windows, no thresholds.
    pub fn smoke(&self) -> MemorySpec {
        let mut s = self.clone();
        if let Some(m) = &self.smoke {
            s.locations = m.locations;
            s.skus = m.skus;
            s.trickle_seconds = m.trickle_seconds;
            s.sample_seconds = m.sample_seconds;
        }
        s.expect = MemoryExpect::default();
        s
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct MemoryReport {
    pub name: String,
    /// What was measured, in words.
    pub measured: String,
    pub cpus: usize,
    pub nats_server: String,
    pub positions: usize,
    pub locations: usize,
    pub skus: usize,
    pub shards: usize,
    /// VmRSS of the retailflow process once it answered /healthz, before any event.
    pub idle_rss_mb: f64,
    /// VmRSS right after the opening stock was applied.
    pub loaded_rss_mb: f64,
    /// The sampling window's highest VmRSS (what the machine must have), its mean and lowest.
    pub steady_rss_mb: f64,
    pub steady_mean_rss_mb: f64,
    pub steady_min_rss_mb: f64,
    /// Every sample of the window: each second's highest of its reads, 20 a second.
    pub samples_mb: Vec<f64>,
    /// VmHWM at the end: the peak, loading and snapshots included.
    pub peak_rss_mb: f64,
    /// `steady_rss_mb` (the window's highest) over the positions, and (that - idle) over them.
    pub bytes_per_position: f64,
    pub bytes_per_position_above_idle: f64,
    /// 1 GiB over `bytes_per_position`.
    pub positions_per_gib: f64,
    pub load_seconds: f64,
    pub trickle_events: u64,
    pub snapshots: u64,
    pub positions_checked: u64,
    pub failures: Vec<String>,
}

const OPENING: i64 = 1_000;

pub(crate) fn location_name(i: usize) -> String {
    format!("S{i:05}")
}

pub(crate) fn sku_name(i: usize) -> String {
    format!("SKU-{i:07}")
}

/// The `retailflow` process under measurement.
pub(crate) struct Child {
    child: tokio::process::Child,
    pub(crate) pid: u32,
}

/// `(VmRSS, VmHWM)` of a process in MB (MiB), from `/proc/<pid>/status`.
pub fn process_rss_mb(pid: u32) -> (f64, f64) {
    crate::measure::status_rss_mb(&format!("/proc/{pid}/status"))
}

impl Child {
    pub(crate) fn start(binary: &Path, cfg: &Path, log: &Path) -> anyhow::Result<Child> {
        let file = std::fs::File::create(log)?;
        let child = tokio::process::Command::new(binary)
            .arg("run")
            .arg("--config")
            .arg(cfg)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {}: {e}", binary.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow::anyhow!("retailflow exited at once"))?;
        Ok(Child { child, pid })
    }

    /// Starts the process and waits (up to 60 s) until it answers `/healthz`.
    async fn start_healthy(
        binary: &Path,
        cfg: &Path,
        out: &Path,
        http: &reqwest::Client,
        base: &str,
    ) -> anyhow::Result<Child> {
        let log = out.join("pipeline.log");
        let child = Child::start(binary, cfg, &log)?;
        let started = Instant::now();
        while as_of(http, base).await.is_none() {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "retailflow did not answer /healthz within 60 s; see {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(child)
    }

    pub(crate) async fn stop(mut self) {
        // SAFETY: kill(2) on the pid of a child we own; no memory is touched.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}

/// `GET /healthz`'s `as_of`, when it answers 200.
pub(crate) async fn as_of(http: &reqwest::Client, base: &str) -> Option<u64> {
    crate::chaos::healthy(http, base).await
}

pub(crate) async fn wait_applied(
    http: &reqwest::Client,
    base: &str,
    seq: u64,
    limit: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if as_of(http, base).await.is_some_and(|a| a >= seq) {
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed() < limit,
            "retailflow did not apply sequence {seq} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `retailflow` binary beside this one (`target/release/retailflow`).
pub fn sibling_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let dir = me
        .parent()
        .ok_or_else(|| anyhow::anyhow!("no directory for {}", me.display()))?;
    let bin = dir.join("retailflow");
    anyhow::ensure!(
        bin.exists(),
        "{} not found; build it with `cargo build --release`",
        bin.display()
    );
    Ok(bin)
}

fn config(spec: &MemorySpec, nats_url: String, http: &str) -> Config {
    let mut cfg = Config::default();
    cfg.nats.url = nats_url;
    cfg.api.http = http.to_string();
    cfg.api.nats = false;
    cfg.shards.count = spec.shards;
    cfg.erp.clear();
    cfg.snapshot.interval = Duration::from_secs(spec.snapshot_seconds);
    cfg
}

/// Opening stock: every location receives [`OPENING`] units of every SKU.
pub(crate) fn opening_stock<'a>(
    locs: &'a [String],
    skus: &'a [String],
) -> impl Iterator<Item = Event> + 'a {
    crate::recovery_bench::opening_stock(locs, skus, OPENING)
}

/// One-unit sales at `rate` per second for `seconds`, at positions chosen by a fixed
/// xorshift; returns the last stream sequence and the units sold per (location, sku) index.
pub(crate) async fn trickle(
    js: &async_nats::jetstream::Context,
    systems: &[String],
    locs: &[String],
    skus: &[String],
    rate: u64,
    seconds: u64,
) -> anyhow::Result<Trickled> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut sold: HashMap<(usize, usize), i64> = HashMap::new();
    let mut last = 0;
    let mut events = 0u64;
    // Each till is a source with its own gapless sequence.
    let mut next = vec![0u64; locs.len()];
    let tick = Duration::from_millis(100);
    let per_tick = (rate / 10).max(1);
    let start = Instant::now();
    for t in 0..seconds * 10 {
        let mut batch = Vec::with_capacity(per_tick as usize);
        for _ in 0..per_tick {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let l = (x % locs.len() as u64) as usize;
            let s = ((x >> 24) % skus.len() as u64) as usize;
            *sold.entry((l, s)).or_default() += 1;
            events += 1;
            next[l] += 1;
            batch.push(envelope(
                &format!("pos/{}", locs[l]),
                next[l],
                crate::recovery_bench::sale(&locs[l], &skus[s]),
            ));
        }
        last = publish_envelopes(js, systems, batch.into_iter()).await?;
        let due = start + tick * (t as u32 + 1);
        tokio::time::sleep_until(due.into()).await;
    }
    Ok((last, sold, events))
}

/// How often the resident size is read while sampling.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// Runs the trickle and samples the process's VmRSS every [`SAMPLE_EVERY`] over its last
/// `sample_seconds`, one sample (the highest read) per second. Returns the samples and what [`trickle`] returns.
async fn trickle_sampled(
    spec: &MemorySpec,
    js: &async_nats::jetstream::Context,
    systems: &[String],
    locs: &[String],
    skus: &[String],
    pid: u32,
) -> anyhow::Result<(Vec<f64>, Trickled)> {
    let trickling = {
        let (js, systems) = (js.clone(), systems.to_vec());
        let (locs, skus) = (locs.to_vec(), skus.to_vec());
        let (rate, seconds) = (spec.trickle_rate, spec.trickle_seconds);
        tokio::spawn(async move { trickle(&js, &systems, &locs, &skus, rate, seconds).await })
    };
    let start = Instant::now();
    let sample_from = spec.trickle_seconds.saturating_sub(spec.sample_seconds);
    tokio::time::sleep(Duration::from_secs(sample_from)).await;
    let mut samples = Vec::new();
    while !trickling.is_finished() || samples.is_empty() {
        // A snapshot's buffers live for half a second or so: read often enough to see them,
        // keep each second's highest.
        let second = Instant::now();
        let mut highest = 0.0f64;
        while second.elapsed() < Duration::from_secs(1) {
            highest = highest.max(process_rss_mb(pid).0);
            tokio::time::sleep(SAMPLE_EVERY).await;
        }
        samples.push(highest);
    }
    let trickled = trickling.await??;
    anyhow::ensure!(
        start.elapsed() < Duration::from_secs(spec.trickle_seconds) * 2,
        "the trickle took {:?} to publish, planned {} s: the machine is too busy to measure a steady state",
        start.elapsed(),
        spec.trickle_seconds
    );
    Ok((samples, trickled))
}

/// The trickle's last stream sequence, units sold per (location, sku) index, and events.
type Trickled = (u64, HashMap<(usize, usize), i64>, u64);

/// Reads `count` SKUs spread over the catalogue back over HTTP and checks each one's positions
/// at every location. Returns the positions checked.
async fn check_positions(
    http: &reqwest::Client,
    base: &str,
    locs: &[String],
    skus: &[String],
    sold: &HashMap<(usize, usize), i64>,
    count: usize,
    failures: &mut Vec<String>,
) -> anyhow::Result<u64> {
    let count = count.clamp(1, skus.len());
    let step = skus.len() / count;
    // The spread sample, plus every SKU the trickle sold (up to `count` of them).
    let mut picked: Vec<usize> = (0..count).map(|i| i * step).collect();
    picked.extend(sold.keys().map(|&(_, s)| s).take(count));
    picked.sort_unstable();
    picked.dedup();
    let loc_index: HashMap<&str, usize> = locs
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let mut checked = 0;
    for chunk in picked.chunks(MAX_SKUS) {
        let req = QueryRequest {
            skus: chunk.iter().map(|&s| skus[s].clone()).collect(),
            ..Default::default()
        };
        let resp = http
            .post(format!("{base}/v1/availability/query"))
            .json(&req)
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "availability query answered {}",
            resp.status()
        );
        let answer: QueryResponse = resp.json().await?;
        for (&s, result) in chunk.iter().zip(&answer.results) {
            if result.locations.len() != locs.len() {
                failures.push(format!(
                    "{} has {} positions, expected {}",
                    skus[s],
                    result.locations.len(),
                    locs.len()
                ));
            }
            for l in &result.locations {
                checked += 1;
                let Some(&li) = loc_index.get(l.location.as_str()) else {
                    failures.push(format!("{} at unknown location {}", skus[s], l.location));
                    continue;
                };
                let want = OPENING - sold.get(&(li, s)).copied().unwrap_or(0);
                if l.on_hand != want && failures.len() < 20 {
                    failures.push(format!(
                        "{} at {}: on hand {}, expected {want}",
                        skus[s], l.location, l.on_hand
                    ));
                }
            }
        }
    }
    Ok(checked)
}

/// Runs the memory scenario; `binary` is the `retailflow` executable to measure.
pub async fn run(spec: &MemorySpec, binary: &Path, out: &Path) -> anyhow::Result<MemoryReport> {
    std::fs::create_dir_all(out)?;
    let server = harness::private_server().await?;
    let port = retailflow::bus::server::free_port();
    let http_addr = format!("127.0.0.1:{port}");
    let base = format!("http://{http_addr}");
    let cfg = config(spec, server.url(), &http_addr);
    let cfg_path = out.join("pipeline.toml");
    std::fs::write(&cfg_path, toml::to_string_pretty(&cfg)?)?;
    let systems = cfg.streams.systems.clone();

    let locs: Vec<String> = (0..spec.locations).map(location_name).collect();
    let skus: Vec<String> = (0..spec.skus).map(sku_name).collect();
    let positions = locs.len() * skus.len();

    let client = async_nats::connect(server.url()).await?;
    let nats_server = client.server_info().version;
    let js = load_context(client, 2_000);
    let http = reqwest::Client::new();

    let child = Child::start_healthy(binary, &cfg_path, out, &http, &base).await?;
    let (idle, _) = process_rss_mb(child.pid);

    let load_start = Instant::now();
    let mut seq = 0;
    let receipts = opening_stock(&locs, &skus).map(|e| {
        seq += 1;
        envelope("wms/opening", seq, e)
    });
    let last = publish_envelopes(&js, &systems, receipts).await?;
    wait_applied(&http, &base, last, Duration::from_secs(1800)).await?;
    let load_seconds = load_start.elapsed().as_secs_f64();
    let (loaded, _) = process_rss_mb(child.pid);

    let (samples, (last, sold, trickle_events)) =
        trickle_sampled(spec, &js, &systems, &locs, &skus, child.pid).await?;
    wait_applied(&http, &base, last, Duration::from_secs(600)).await?;
    let (_, peak) = process_rss_mb(child.pid);
    let steady = samples.iter().copied().fold(0.0, f64::max);
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    let mut failures = Vec::new();
    let positions_checked = check_positions(
        &http,
        &base,
        &locs,
        &skus,
        &sold,
        spec.check_skus,
        &mut failures,
    )
    .await?;
    let snapshots = snapshot_count(&http, &base).await;
    child.stop().await;

    let bytes = steady * 1024.0 * 1024.0;
    let per_position = bytes / positions as f64;
    let positions_per_gib = (1u64 << 30) as f64 / per_position.max(1e-9);
    if let Some(min) = spec.expect.min_positions_per_gib {
        if positions_per_gib < min {
            failures.push(format!(
                "{positions_per_gib:.0} positions per GiB, expected at least {min:.0}"
            ));
        }
    }
    let report = MemoryReport {
        name: spec.name.clone(),
        measured: "VmRSS of the `retailflow run` process (its own process, not the lab's)".into(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        nats_server,
        positions,
        locations: spec.locations,
        skus: spec.skus,
        shards: spec.shards,
        idle_rss_mb: idle,
        loaded_rss_mb: loaded,
        steady_rss_mb: steady,
        steady_mean_rss_mb: mean,
        steady_min_rss_mb: samples.iter().copied().fold(f64::INFINITY, f64::min),
        samples_mb: samples,
        peak_rss_mb: peak,
        bytes_per_position: per_position,
        bytes_per_position_above_idle: (steady - idle) * 1024.0 * 1024.0 / positions as f64,
        positions_per_gib,
        load_seconds,
        trickle_events,
        snapshots,
        positions_checked,
        failures,
    };
    std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    Ok(report)
}

/// `retailflow_snapshots_total` from `/metrics`, or 0 when it cannot be read.
async fn snapshot_count(http: &reqwest::Client, base: &str) -> u64 {
    let Ok(resp) = http.get(format!("{base}/metrics")).send().await else {
        return 0;
    };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("retailflow_snapshots_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

pub fn summary(r: &MemoryReport, out: &Path) -> String {
    let mut s = format!(
        "{}: {} positions ({} locations x {} SKUs, {} shards; {} CPUs, nats-server {})\n  measured: {}\n  RSS idle {:.0} MB, loaded {:.0} MB, steady {:.0} MB (highest of {} samples; mean {:.0}, lowest {:.0}), peak {:.0} MB\n  {:.1} bytes per position ({:.1} above idle): {:.2} M positions per GiB\n  opening stock applied in {:.1} s; {} trickle events; {} snapshots; {} positions checked\n",
        r.name,
        r.positions,
        r.locations,
        r.skus,
        r.shards,
        r.cpus,
        r.nats_server,
        r.measured,
        r.idle_rss_mb,
        r.loaded_rss_mb,
        r.steady_rss_mb,
        r.samples_mb.len(),
        r.steady_mean_rss_mb,
        r.steady_min_rss_mb,
        r.peak_rss_mb,
        r.bytes_per_position,
        r.bytes_per_position_above_idle,
        r.positions_per_gib / 1e6,
        r.load_seconds,
        r.trickle_events,
        r.snapshots,
        r.positions_checked,
    );
    if r.failures.is_empty() {
        s.push_str("PASS\n");
    }
    for f in &r.failures {
        s.push_str(&format!("FAIL: {f}\n"));
    }
    s.push_str(&format!("report: {}\n", out.join("report.json").display()));
    s
}

/// Where the bytes go: the chain of `spec` built in this process without NATS or actors (one
/// ledger per shard fed the opening stock in batches, published into a view as the shards do,
/// movements taken as the first flush and a later small one would), then each structure's
/// heap bytes by arithmetic ([`Ledger::footprint`], [`View::footprint`]) and this process's
/// VmRSS growth while building.
/// The lab allocates through the system allocator, the service through mimalloc, so the RSS
/// growth here is a cross-check of the arithmetic, not the service's figure.
///
/// [`Ledger::footprint`]: retailflow_core::apply::ledger::Ledger::footprint
/// [`View::footprint`]: retailflow::view::View::footprint
pub fn breakdown(spec: &MemorySpec) -> String {
    use retailflow::view::{View, ViewWriter, shard_of};
    use retailflow_core::apply::ledger::Ledger;
    use retailflow_core::apply::op::{Op, ops_of};
    let locs: Vec<String> = (0..spec.locations).map(location_name).collect();
    let skus: Vec<String> = (0..spec.skus).map(sku_name).collect();
    let positions = locs.len() * skus.len();
    let (before, _) = crate::measure::rss_mb();
    let view = View::new(spec.shards);
    let mut ledgers: Vec<Ledger> = (0..spec.shards).map(|_| Ledger::new()).collect();
    let mut writers: Vec<ViewWriter> = (0..spec.shards).map(|_| ViewWriter::default()).collect();
    let mut batches: Vec<Vec<(u64, Op)>> = vec![Vec::new(); spec.shards];
    for (seq, event) in opening_stock(&locs, &skus).enumerate() {
        let seq = seq as u64 + 1;
        ops_of(&event, |op| {
            if let Op::Receipt { sku, .. } = &op {
                let shard = shard_of(sku.as_str(), spec.shards);
                batches[shard].push((seq, op));
            }
        });
        for (i, batch) in batches.iter_mut().enumerate() {
            ledgers[i].apply_batch(batch, |_, _, e| panic!("opening stock refused: {e}"));
            batch.clear();
            let dirty = ledgers[i].take_dirty();
            writers[i].publish(&view, &ledgers[i], &dirty, seq);
        }
    }
    // The opening stock's flush, then a flush of a trickle's size, as in a steady state.
    for (i, l) in ledgers.iter_mut().enumerate() {
        drop(l.take_movements());
        let Some(own) = skus.iter().find(|s| shard_of(s, spec.shards) == i) else {
            continue;
        };
        let sale = Op::Sale {
            loc: locs[0].as_str().into(),
            sku: own.as_str().into(),
            qty: 1,
        };
        let _ = l.apply(u64::MAX, &sale);
        drop(l.take_movements());
        drop(l.take_dirty());
    }
    let (after, _) = crate::measure::rss_mb();
    let mut rows: Vec<(&'static str, usize)> = Vec::new();
    for l in &ledgers {
        for (name, bytes) in l.footprint() {
            match rows.iter_mut().find(|(n, _)| *n == name) {
                Some(r) => r.1 += bytes,
                None => rows.push((name, bytes)),
            }
        }
    }
    rows.push((
        "shard view writers",
        writers.iter().map(|w| w.heap_bytes()).sum(),
    ));
    rows.extend(view.footprint());
    let total: usize = rows.iter().map(|r| r.1).sum();
    let mut s = format!(
        "{} positions ({} locations x {} SKUs, {} shards), heap bytes by structure:\n",
        positions, spec.locations, spec.skus, spec.shards
    );
    for (name, bytes) in &rows {
        s.push_str(&format!(
            "  {name:<40} {:>12} bytes  {:>7.1} per position\n",
            bytes,
            *bytes as f64 / positions as f64
        ));
    }
    s.push_str(&format!(
        "  {:<40} {:>12} bytes  {:>7.1} per position\n",
        "total",
        total,
        total as f64 / positions as f64
    ));
    s.push_str(&format!(
        "  this process's VmRSS grew by {:.0} MB ({:.1} bytes per position; system allocator)\n",
        after - before,
        (after - before) * 1024.0 * 1024.0 / positions as f64
    ));
    drop(view);
    s
}
