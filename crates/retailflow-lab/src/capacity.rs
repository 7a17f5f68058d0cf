//! `retailflow scenario capacity FILE`: how many availability queries one replica answers
//! against several, under the same client load. For each replica count the lab starts a
//! private 3-node nats-server cluster and that many `retailflow run` processes on it, loads the
//! same opening stock, keeps a trickle of till sales flowing, and then:
//!
//! 1. measures each replica's CPU while it only applies the trickle (what a replica costs
//!    before it answers anything);
//! 2. runs the same closed-loop shoppers for a fixed time: HTTP workers, each bound to one
//!    replica (worker `w` to replica `w mod n`), and NATS workers on the queue group. Each asks
//!    for one SKU's availability at every location and asks again as soon as it is answered.
//!
//! The report gives answered queries per second, latency percentiles, failures, and the CPU
//! every replica and the load generator used over the window. All processes share this
//! machine's cores, so the comparison shows what a replica costs and how the answers spread,
//! not what replicas on machines of their own would add.

use crate::memory_bench::{Child, location_name, opening_stock, sku_name, trickle, wait_applied};
use crate::publish::{envelope, load_context, publish_envelopes};
use hdrhistogram::Histogram;
use retailflow::bus::server::{NatsCluster, free_port};
use retailflow::config::Config;
use retailflow::domain::subject;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacitySpec {
    pub name: String,
    pub locations: usize,
    pub skus: usize,
    #[serde(default = "two")]
    pub shards: usize,
    /// The replica counts compared, each on a fresh cluster, in this order.
    pub replicas: Vec<usize>,
    /// Closed-loop HTTP shoppers (each bound to one replica) and NATS shoppers.
    pub http_workers: usize,
    pub nats_workers: usize,
    /// Till sales per second while measuring, so every replica is applying.
    pub trickle_rate: u64,
    /// Seconds of trickle only (the replicas' own cost), then of shoppers.
    pub idle_seconds: u64,
    pub load_seconds: u64,
    pub smoke: Option<CapacitySmoke>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacitySmoke {
    pub locations: usize,
    pub skus: usize,
    pub idle_seconds: u64,
    pub load_seconds: u64,
}

fn two() -> usize {
    2
}

impl CapacitySpec {
    pub fn load(path: &Path) -> anyhow::Result<CapacitySpec> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        let spec: CapacitySpec =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        anyhow::ensure!(
            spec.locations > 0 && spec.skus > 0 && spec.shards > 0,
            "locations, skus and shards must be above zero"
        );
        anyhow::ensure!(
            !spec.replicas.is_empty() && spec.replicas.iter().all(|&n| (1..=8).contains(&n)),
            "replicas lists replica counts from 1 to 8"
        );
        anyhow::ensure!(
            spec.http_workers + spec.nats_workers > 0 && spec.load_seconds > 0,
            "shoppers need workers and load_seconds"
        );
        Ok(spec)
    }

    pub fn smoke(&self) -> CapacitySpec {
        let mut s = self.clone();
        if let Some(m) = &self.smoke {
            s.name = format!("{}-smoke", self.name);
            s.locations = m.locations;
            s.skus = m.skus;
            s.idle_seconds = m.idle_seconds;
            s.load_seconds = m.load_seconds;
        }
        s
    }
}

/// One replica count's run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Step {
    pub replicas: usize,
    pub http_answered: u64,
    pub nats_answered: u64,
    pub failed: u64,
    pub failures: Vec<String>,
    pub http_per_second: f64,
    pub nats_per_second: f64,
    pub http_p50_ms: f64,
    pub http_p99_ms: f64,
    pub nats_p50_ms: f64,
    pub nats_p99_ms: f64,
    /// HTTP answers per replica (worker `w` asks replica `w mod n`).
    pub http_by_replica: Vec<u64>,
    /// Each replica's share of one core while it only applied the trickle.
    pub idle_core_share: Vec<f64>,
    /// Each replica's share of one core under the shoppers.
    pub load_core_share: Vec<f64>,
    /// The load generator's share of one core under the shoppers.
    pub generator_core_share: f64,
    /// Replicas' CPU milliseconds per 1,000 answered queries (their idle cost taken out).
    pub cpu_ms_per_1000: f64,
    /// Each replica's VmRSS at the end.
    pub rss_mb: Vec<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CapacityReport {
    pub name: String,
    pub cpus: usize,
    pub nats_server: String,
    pub positions: usize,
    pub http_workers: usize,
    pub nats_workers: usize,
    pub trickle_rate: u64,
    pub load_seconds: u64,
    pub steps: Vec<Step>,
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: &str) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; count fields after its closing parenthesis.
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // utime and stime are fields 14 and 15, the 12th and 13th after the name.
    (ticks(11) + ticks(12)) / hz
}

/// CPU seconds of each pid since `from` (same order), over `wall` seconds, as a core share.
fn shares(pids: &[String], from: &[f64], wall: f64) -> Vec<f64> {
    pids.iter()
        .zip(from)
        .map(|(p, f)| (cpu_seconds(p) - f) / wall.max(1e-9))
        .collect()
}

/// What the shoppers counted.
#[derive(Default)]
struct Tally {
    http: Vec<u64>,
    nats: u64,
    failed: u64,
    failures: Vec<String>,
    http_ms: Option<Histogram<u64>>,
    nats_ms: Option<Histogram<u64>>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// One shopper: asks for a SKU (over HTTP at `base`, or over NATS when `base` is None) and
/// again as soon as it is answered, until `until`. Returns its own tally.
async fn shopper(
    http: reqwest::Client,
    nats: async_nats::Client,
    base: Option<(usize, String)>,
    skus: Arc<Vec<String>>,
    seed: u64,
    until: Instant,
    replicas: usize,
) -> Tally {
    let mut t = Tally {
        http: vec![0; replicas],
        ..Default::default()
    };
    let mut hist = histogram();
    let mut x = seed | 1;
    while Instant::now() < until {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let sku = &skus[(x % skus.len() as u64) as usize];
        let started = Instant::now();
        let outcome = match &base {
            Some((_, b)) => match http
                .get(format!("{b}/v1/availability/{sku}"))
                .timeout(Duration::from_secs(5))
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => {
                    r.bytes().await.map(|_| ()).map_err(|e| e.to_string())
                }
                Ok(r) => Err(format!("HTTP {}", r.status())),
                Err(e) => Err(e.to_string()),
            },
            None => {
                let body = serde_json::json!({ "skus": [sku] }).to_string();
                match tokio::time::timeout(
                    Duration::from_secs(5),
                    nats.request(subject::ATP_QUERY, body.into()),
                )
                .await
                {
                    Ok(Ok(m)) if !m.payload.starts_with(b"{\"error\"") => Ok(()),
                    Ok(Ok(m)) => Err(String::from_utf8_lossy(&m.payload).into_owned()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("no answer in 5 s".into()),
                }
            }
        };
        match outcome {
            Ok(()) => {
                let _ = hist.record(started.elapsed().as_micros().max(1) as u64);
                match &base {
                    Some((i, _)) => t.http[*i] += 1,
                    None => t.nats += 1,
                }
            }
            Err(e) => {
                t.failed += 1;
                if t.failures.len() < 4 {
                    t.failures.push(e);
                }
            }
        }
    }
    match base {
        Some(_) => t.http_ms = Some(hist),
        None => t.nats_ms = Some(hist),
    }
    t
}

fn merge(into: &mut Tally, t: Tally) {
    for (a, b) in into.http.iter_mut().zip(&t.http) {
        *a += b;
    }
    into.nats += t.nats;
    into.failed += t.failed;
    into.failures
        .extend(t.failures.into_iter().take(8 - into.failures.len().min(8)));
    for (mine, theirs) in [
        (&mut into.http_ms, t.http_ms),
        (&mut into.nats_ms, t.nats_ms),
    ] {
        if let Some(h) = theirs {
            mine.get_or_insert_with(histogram)
                .add(&h)
                .expect("same bounds");
        }
    }
}

fn percentile_ms(h: &Option<Histogram<u64>>, q: f64) -> f64 {
    h.as_ref()
        .filter(|h| !h.is_empty())
        .map(|h| h.value_at_quantile(q) as f64 / 1000.0)
        .unwrap_or(0.0)
}

/// The replicas' configuration: one per instance, on the cluster, written to `out`.
fn configs(
    spec: &CapacitySpec,
    url: &str,
    n: usize,
    out: &Path,
) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let mut cfg = Config::default();
    cfg.nats.url = url.to_string();
    cfg.streams.replicas = 3;
    cfg.leader.elect = true;
    // Followers take the leader's release marker from the snapshot store.
    cfg.snapshot.enabled = true;
    cfg.shards.count = spec.shards;
    cfg.erp.clear();
    let mut out_paths = Vec::new();
    for i in 0..n {
        let mut mine = cfg.clone();
        let port = free_port();
        mine.api.http = format!("127.0.0.1:{port}");
        mine.leader.instance = format!("r{}", i + 1);
        let path = out.join(format!("r{}.toml", i + 1));
        std::fs::write(&path, toml::to_string_pretty(&mine)?)?;
        out_paths.push((path, format!("http://127.0.0.1:{port}")));
    }
    Ok(out_paths)
}

/// Runs one replica count on a fresh cluster.
async fn step(
    spec: &CapacitySpec,
    n: usize,
    binary: &Path,
    out: &Path,
) -> anyhow::Result<(Step, String)> {
    let out = out.join(format!("replicas-{n}"));
    std::fs::create_dir_all(&out)?;
    let cluster = NatsCluster::start(Duration::from_secs(60))
        .await
        .map_err(|e| anyhow::anyhow!("NATS cluster: {e}"))?;
    let url = cluster.url();
    let replicas = configs(spec, &url, n, &out)?;
    let http = reqwest::Client::new();
    let children = (replicas.iter().enumerate())
        .map(|(i, (cfg, _))| Child::start(binary, cfg, &out.join(format!("r{}.log", i + 1))))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let nats = async_nats::connect(retailflow::bus::servers(&url)).await?;
    let version = nats.server_info().version;
    let js = load_context(nats.clone(), 2_000);
    let systems = Config::default().streams.systems;
    let locs: Vec<String> = (0..spec.locations).map(location_name).collect();
    let skus: Vec<String> = (0..spec.skus).map(sku_name).collect();
    // The first replica creates the streams; the stock goes in once it answers.
    wait_applied(&http, &replicas[0].1, 0, Duration::from_secs(120)).await?;
    let mut seq = 0;
    let stock = opening_stock(&locs, &skus).map(|e| {
        seq += 1;
        envelope("wms/opening", seq, e)
    });
    let last = publish_envelopes(&js, &systems, stock).await?;
    for (_, base) in &replicas {
        wait_applied(&http, base, last, Duration::from_secs(600)).await?;
    }

    let seconds = spec.idle_seconds + spec.load_seconds + 1;
    let trickling = {
        let (js, systems, locs, skus) = (js.clone(), systems.clone(), locs.clone(), skus.clone());
        let rate = spec.trickle_rate;
        tokio::spawn(async move { trickle(&js, &systems, &locs, &skus, rate, seconds).await })
    };
    let pids: Vec<String> = children.iter().map(|c| c.pid.to_string()).collect();
    let cpu = |pids: &[String]| pids.iter().map(|p| cpu_seconds(p)).collect::<Vec<_>>();

    let idle_from = (cpu(&pids), Instant::now());
    tokio::time::sleep(Duration::from_secs(spec.idle_seconds)).await;
    let idle = shares(&pids, &idle_from.0, idle_from.1.elapsed().as_secs_f64());

    let me = vec![std::process::id().to_string()];
    let load_from = (cpu(&pids), cpu(&me), Instant::now());
    let until = Instant::now() + Duration::from_secs(spec.load_seconds);
    let skus = Arc::new(skus);
    let mut tasks = Vec::new();
    for w in 0..spec.http_workers + spec.nats_workers {
        let base = (w < spec.http_workers).then(|| (w % n, replicas[w % n].1.clone()));
        let seed = 0x5eed ^ ((w as u64 + 1) << 20);
        tasks.push(tokio::spawn(shopper(
            http.clone(),
            nats.clone(),
            base,
            skus.clone(),
            seed,
            until,
            n,
        )));
    }
    let mut tally = Tally {
        http: vec![0; n],
        ..Default::default()
    };
    for t in tasks {
        merge(&mut tally, t.await?);
    }
    let wall = load_from.2.elapsed().as_secs_f64();
    let load = shares(&pids, &load_from.0, wall);
    let generator = shares(&me, &load_from.1, wall)[0];
    // A trickle that failed would leave the replicas idle: no report then.
    trickling.await??;

    let rss_mb = children
        .iter()
        .map(|c| crate::memory_bench::process_rss_mb(c.pid).0)
        .collect();
    for c in children {
        c.stop().await;
    }
    drop(cluster);

    let answered = tally.http.iter().sum::<u64>() + tally.nats;
    let busy: f64 = load
        .iter()
        .zip(&idle)
        .map(|(l, i)| (l - i).max(0.0))
        .sum::<f64>()
        * wall;
    let s = Step {
        replicas: n,
        http_answered: tally.http.iter().sum(),
        nats_answered: tally.nats,
        failed: tally.failed,
        failures: tally.failures.clone(),
        http_per_second: tally.http.iter().sum::<u64>() as f64 / wall,
        nats_per_second: tally.nats as f64 / wall,
        http_p50_ms: percentile_ms(&tally.http_ms, 0.5),
        http_p99_ms: percentile_ms(&tally.http_ms, 0.99),
        nats_p50_ms: percentile_ms(&tally.nats_ms, 0.5),
        nats_p99_ms: percentile_ms(&tally.nats_ms, 0.99),
        http_by_replica: tally.http.clone(),
        idle_core_share: idle,
        load_core_share: load,
        generator_core_share: generator,
        cpu_ms_per_1000: busy * 1000.0 / (answered.max(1) as f64 / 1000.0),
        rss_mb,
    };
    Ok((s, version))
}

/// Runs every replica count of the spec in turn; `binary` is the `retailflow` to start.
pub async fn run(spec: &CapacitySpec, binary: &Path, out: &Path) -> anyhow::Result<CapacityReport> {
    std::fs::create_dir_all(out)?;
    let mut steps = Vec::new();
    let mut version = String::new();
    for &n in &spec.replicas {
        let (s, v) = step(spec, n, binary, out).await?;
        version = v;
        steps.push(s);
    }
    let report = CapacityReport {
        name: spec.name.clone(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        nats_server: version,
        positions: spec.locations * spec.skus,
        http_workers: spec.http_workers,
        nats_workers: spec.nats_workers,
        trickle_rate: spec.trickle_rate,
        load_seconds: spec.load_seconds,
        steps,
    };
    std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    Ok(report)
}

/// The printed summary: one line per replica count.
pub fn summary(r: &CapacityReport, out: &Path) -> String {
    let mut s = format!(
        "{}: {} positions; {} HTTP + {} NATS closed-loop shoppers for {} s; trickle {} sales/s; {} CPUs, nats-server {}\n",
        r.name,
        r.positions,
        r.http_workers,
        r.nats_workers,
        r.load_seconds,
        r.trickle_rate,
        r.cpus,
        r.nats_server
    );
    let pct = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{:.0}%", x * 100.0))
            .collect::<Vec<_>>()
            .join("/")
    };
    for st in &r.steps {
        s.push_str(&format!(
            "  {} replica(s): {:.0} HTTP/s (p50 {:.2} ms, p99 {:.2} ms) + {:.0} NATS/s (p50 {:.2} ms, p99 {:.2} ms), {} failed; HTTP per replica {:?}\n    core share per replica: idle {} / under load {}; load generator {:.0}%; {:.0} replica CPU ms per 1,000 answers; RSS {} MB\n",
            st.replicas,
            st.http_per_second,
            st.http_p50_ms,
            st.http_p99_ms,
            st.nats_per_second,
            st.nats_p50_ms,
            st.nats_p99_ms,
            st.failed,
            st.http_by_replica,
            pct(&st.idle_core_share),
            pct(&st.load_core_share),
            st.generator_core_share * 100.0,
            st.cpu_ms_per_1000,
            st.rss_mb
                .iter()
                .map(|m| format!("{m:.0}"))
                .collect::<Vec<_>>()
                .join("/"),
        ));
        for f in &st.failures {
            s.push_str(&format!("    failure: {f}\n"));
        }
    }
    s.push_str(&format!("report: {}\n", out.join("report.json").display()));
    s
}
