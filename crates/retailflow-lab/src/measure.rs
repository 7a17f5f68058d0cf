//! Measuring a run: latency histograms, the per-second timeline, query load, peak memory.

use super::spec::{Queries, QueryMix};
use erp_sim::ErpSim;
use hdrhistogram::Histogram;
use retailflow::domain::subject;
use retailflow::supervise::pipeline::Pipeline;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Percentiles in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// A histogram of microseconds (1 µs to 10 min, 3 significant digits).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .expect("constant bounds are valid (low >= 1, high >= 2 * low, sigfig <= 5)")
}

pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let ms = |v: u64| v as f64 / 1000.0;
    Percentiles {
        count: h.len(),
        p50_ms: ms(h.value_at_quantile(0.50)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
    }
}

/// One second of the run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Point {
    /// Seconds since the trading load started.
    pub t: f64,
    pub published: u64,
    pub applied_events: u64,
    /// Events applied per second over the last interval.
    pub applied_rate: f64,
    /// Messages in the stream not yet applied.
    pub lag: i64,
    pub erp_requests: u64,
    pub erp_accepted: u64,
    pub erp_throttled: u64,
    pub postings_pending: i64,
    pub query_p50_ms: f64,
    pub query_p99_ms: f64,
    pub e2e_p99_ms: f64,
    pub rss_mb: f64,
}

/// Resident memory now and at its peak, in MB (Linux `/proc/self/status`).
pub fn rss_mb() -> (f64, f64) {
    status_rss_mb("/proc/self/status")
}

/// VmRSS and VmHWM in MB (MiB) from a `/proc/<pid>/status` file; zeros when unreadable.
pub fn status_rss_mb(path: &str) -> (f64, f64) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let field = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Histograms shared between the load tasks and the sampler; each has a whole-run and a
/// since-last-sample copy.
#[derive(Default)]
pub struct Recorders {
    pub query_http: Mutex<Option<Histogram<u64>>>,
    pub query_nats: Mutex<Option<Histogram<u64>>>,
    pub query_window: Mutex<Option<Histogram<u64>>>,
    /// Per query shape, indexed by [`Shape`].
    pub query_shape: [Mutex<Option<Histogram<u64>>>; 3],
    pub e2e: Mutex<Option<Histogram<u64>>>,
    pub e2e_window: Mutex<Option<Histogram<u64>>>,
    pub query_errors: std::sync::atomic::AtomicU64,
}

impl Recorders {
    /// Every answered query's latency, HTTP and NATS together.
    pub fn queries_answered(&self) -> Histogram<u64> {
        let mut all = snapshot(&self.query_http);
        let _ = all.add(snapshot(&self.query_nats));
        all
    }
}

pub fn record(h: &Mutex<Option<Histogram<u64>>>, micros: u64) {
    if let Ok(mut g) = h.lock() {
        let h = g.get_or_insert_with(histogram);
        let _ = h.record(micros.max(1));
    }
}

pub fn take(h: &Mutex<Option<Histogram<u64>>>) -> Histogram<u64> {
    h.lock()
        .ok()
        .and_then(|mut g| g.take())
        .unwrap_or_else(histogram)
}

pub fn snapshot(h: &Mutex<Option<Histogram<u64>>>) -> Histogram<u64> {
    h.lock()
        .ok()
        .and_then(|g| g.clone())
        .unwrap_or_else(histogram)
}

/// Runs [`query_load`] on its own thread and runtime, so the load generator's work never
/// queues behind the service's own tasks (it stands in for shoppers on other machines).
pub fn query_load_thread(
    http_base: String,
    nats_url: String,
    targets: Arc<QueryTargets>,
    load: Queries,
    rec: Arc<Recorders>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("query-load".into())
        .spawn(move || {
            // It stands in for shoppers' machines, which do not wait for this box's ingest:
            // it gets the API's scheduling, so its own waits for a core stay out of the
            // latencies it records.
            retailflow::supervise::threads::latency_thread(1);
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(error) => {
                    tracing::error!(%error, "query load runtime");
                    return;
                }
            };
            rt.block_on(async move {
                match async_nats::connect(retailflow::bus::servers(&nats_url)).await {
                    Ok(nats) => query_load(http_base, nats, targets, load, rec, stop).await,
                    Err(error) => tracing::error!(%error, "query load cannot reach NATS"),
                }
            });
        })
}

/// A minimal HTTP/1.1 keep-alive client: writes a request, reads one response. A load
/// generator must cost little, or it measures itself rather than the server.
struct Http1 {
    addr: String,
    conn: Option<tokio::io::BufReader<tokio::net::TcpStream>>,
}

impl Http1 {
    async fn get(&mut self, path: &str) -> std::io::Result<u16> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        if self.conn.is_none() {
            let tcp = tokio::net::TcpStream::connect(&self.addr).await?;
            tcp.set_nodelay(true)?;
            self.conn = Some(tokio::io::BufReader::new(tcp));
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(std::io::ErrorKind::NotConnected.into());
        };
        let req = format!("GET {path} HTTP/1.1\r\nHost: retailflow\r\n\r\n");
        let result: std::io::Result<u16> = async {
            conn.get_mut().write_all(req.as_bytes()).await?;
            let mut line = String::new();
            conn.read_line(&mut line).await?;
            let status: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let mut length = 0usize;
            loop {
                line.clear();
                if conn.read_line(&mut line).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                if let Some((k, v)) = l.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0u8; length];
            conn.read_exact(&mut body).await?;
            Ok(status)
        }
        .await;
        if result.is_err() {
            self.conn = None;
        }
        result
    }
}

/// What the query load picks from.
pub struct QueryTargets {
    /// SKU ids, most popular first.
    pub skus: Vec<String>,
    pub channels: Vec<String>,
    pub stores: Vec<String>,
}

/// The kinds of availability question (see [`crate::spec::QueryMix`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    All = 0,
    Channel = 1,
    Stores = 2,
}

impl Shape {
    pub const EACH: [Shape; 3] = [Shape::All, Shape::Channel, Shape::Stores];

    pub fn name(self) -> &'static str {
        match self {
            Shape::All => "all locations",
            Shape::Channel => "channel",
            Shape::Stores => "named stores",
        }
    }

    fn pick(mix: &QueryMix, rng: &mut super::world::Rng) -> Shape {
        let total = (mix.all + mix.channel + mix.stores).max(1) as u64;
        let r = rng.below(total);
        if r < mix.all as u64 {
            Shape::All
        } else if r < (mix.all + mix.channel) as u64 {
            Shape::Channel
        } else {
            Shape::Stores
        }
    }
}

/// One availability question, as an HTTP path (single SKU), an HTTP/NATS JSON body, or both.
struct Question {
    path: Option<String>,
    body: serde_json::Value,
}

fn question(
    shape: Shape,
    skus: &[&str],
    targets: &QueryTargets,
    stores: usize,
    rng: &mut super::world::Rng,
) -> Question {
    let mut body = serde_json::json!({ "skus": skus });
    let mut params: Vec<String> = Vec::new();
    match shape {
        Shape::All => {}
        Shape::Channel => {
            let c = &targets.channels[rng.below(targets.channels.len() as u64) as usize];
            body["channel"] = c.as_str().into();
            params.push(format!("channel={c}"));
        }
        Shape::Stores => {
            let picked: Vec<&str> = (0..stores)
                .map(|_| targets.stores[rng.below(targets.stores.len() as u64) as usize].as_str())
                .collect();
            params.extend(picked.iter().map(|l| format!("location={l}")));
            body["locations"] = picked.into();
        }
    }
    let path = (skus.len() == 1).then(|| {
        if params.is_empty() {
            format!("/v1/availability/{}", skus[0])
        } else {
            format!("/v1/availability/{}?{}", skus[0], params.join("&"))
        }
    });
    Question { path, body }
}

/// Availability queries at a fixed total rate, over HTTP and NATS, until `stop`.
pub async fn query_load(
    http_base: String,
    nats: async_nats::Client,
    targets: Arc<QueryTargets>,
    load: Queries,
    rec: Arc<Recorders>,
    stop: Arc<AtomicBool>,
) {
    let Queries {
        rate,
        http_share,
        workers,
        skus_per_query: per_query,
        mix,
        stores_per_query,
    } = load;
    if rate == 0 || targets.skus.is_empty() {
        return;
    }
    let workers = workers.max(1);
    let per_worker = Duration::from_secs_f64(workers as f64 / rate as f64);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(workers)
        .build()
        .unwrap_or_default();
    let addr = http_base.trim_start_matches("http://").to_string();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let http = http.clone();
        let mut get = Http1 {
            addr: addr.clone(),
            conn: None,
        };
        let nats = nats.clone();
        let targets = targets.clone();
        let rec = rec.clone();
        let stop = stop.clone();
        let base = http_base.clone();
        let mix = mix.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = super::world::Rng::new(0xC0FFEE + w as u64);
            // Workers take turns: all ticking together would send bursts of `workers`
            // queries at once, which shoppers do not do, and measure the bursts' queueing.
            let offset = per_worker.mul_f64(w as f64 / workers as f64);
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + offset, per_worker);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let skus = &targets.skus;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let pick: Vec<&str> = (0..per_query.max(1))
                    .map(|_| {
                        // Skewed towards popular SKUs, like shoppers.
                        let i = (rng.unit().powi(3) * skus.len() as f64) as usize;
                        skus[i.min(skus.len() - 1)].as_str()
                    })
                    .collect();
                let shape = Shape::pick(&mix, &mut rng);
                let q = question(shape, &pick, &targets, stores_per_query, &mut rng);
                let started = Instant::now();
                let use_http = rng.unit() < http_share;
                let ok = if use_http {
                    if let Some(path) = &q.path {
                        matches!(get.get(path).await, Ok(200))
                    } else {
                        match http
                            .post(format!("{base}/v1/availability/query"))
                            .json(&q.body)
                            .send()
                            .await
                        {
                            Ok(resp) => resp.status().is_success() && resp.bytes().await.is_ok(),
                            Err(_) => false,
                        }
                    }
                } else {
                    let body = q.body.to_string();
                    matches!(
                        tokio::time::timeout(
                            Duration::from_secs(5),
                            nats.request(subject::ATP_QUERY, body.into())
                        )
                        .await,
                        Ok(Ok(_))
                    )
                };
                let micros = started.elapsed().as_micros() as u64;
                if !ok {
                    rec.query_errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                record(
                    if use_http {
                        &rec.query_http
                    } else {
                        &rec.query_nats
                    },
                    micros,
                );
                record(&rec.query_shape[shape as usize], micros);
                record(&rec.query_window, micros);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Publish instants of sampled sequences; a watcher turns them into publish-to-visible latency.
#[derive(Default)]
pub struct E2eSamples {
    pending: Mutex<std::collections::VecDeque<(u64, Instant)>>,
}

impl E2eSamples {
    pub fn push(&self, seq: u64, at: Instant) {
        if let Ok(mut p) = self.pending.lock() {
            p.push_back((seq, at));
        }
    }

    /// Moves every sample the view has applied into the histograms.
    pub fn settle(&self, applied: u64, rec: &Recorders) {
        let now = Instant::now();
        let Ok(mut p) = self.pending.lock() else {
            return;
        };
        while let Some(&(seq, at)) = p.front() {
            if seq > applied {
                break;
            }
            p.pop_front();
            let micros = now.duration_since(at).as_micros() as u64;
            record(&rec.e2e, micros);
            record(&rec.e2e_window, micros);
        }
    }
}

/// Polls the view every millisecond for sampled events becoming visible.
pub async fn e2e_watch(
    pipeline_view: Arc<retailflow::view::View>,
    samples: Arc<E2eSamples>,
    rec: Arc<Recorders>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        samples.settle(pipeline_view.applied_all(), &rec);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Samples the run once per `every` into `points`.
#[allow(clippy::too_many_arguments)]
pub async fn sampler(
    pipeline: Arc<Pipeline>,
    sims: Arc<Vec<ErpSim>>,
    rec: Arc<Recorders>,
    published: Arc<std::sync::atomic::AtomicU64>,
    start: Instant,
    every: Duration,
    points: Arc<Mutex<Vec<Point>>>,
    stop: Arc<AtomicBool>,
) {
    let m = pipeline.shared.metrics.clone();
    let mut last_applied = m.events_applied.load(Ordering::Relaxed);
    let mut last_t = Instant::now();
    let mut tick = tokio::time::interval(every);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let applied = m.events_applied.load(Ordering::Relaxed);
        let now = Instant::now();
        let rate =
            (applied - last_applied) as f64 / now.duration_since(last_t).as_secs_f64().max(1e-3);
        last_applied = applied;
        last_t = now;
        let stream_last = m.stream_last_seq.load(Ordering::Relaxed) as i64;
        let applied_seq = pipeline.shared.view.applied_all() as i64;
        let (mut req, mut acc, mut thr) = (0, 0, 0);
        for s in sims.iter() {
            let st = s.stats();
            req += st.requests;
            acc += st.accepted;
            thr += st.throttled;
        }
        let pending: i64 = m
            .endpoints
            .iter()
            .map(|e| e.value().pending.load(Ordering::Relaxed))
            .sum();
        let q = take(&rec.query_window);
        let e = take(&rec.e2e_window);
        let (rss, _) = rss_mb();
        let point = Point {
            t: now.duration_since(start).as_secs_f64(),
            published: published.load(Ordering::Relaxed),
            applied_events: applied,
            applied_rate: rate,
            lag: (stream_last - applied_seq).max(0),
            erp_requests: req,
            erp_accepted: acc,
            erp_throttled: thr,
            postings_pending: pending,
            query_p50_ms: if q.is_empty() {
                0.0
            } else {
                q.value_at_quantile(0.5) as f64 / 1000.0
            },
            query_p99_ms: if q.is_empty() {
                0.0
            } else {
                q.value_at_quantile(0.99) as f64 / 1000.0
            },
            e2e_p99_ms: if e.is_empty() {
                0.0
            } else {
                e.value_at_quantile(0.99) as f64 / 1000.0
            },
            rss_mb: rss,
        };
        if let Ok(mut p) = points.lock() {
            p.push(point);
        }
    }
}
