//! `retailflow scenario reserve FILE`: reservation throughput and latency, retailflow against
//! the way many shops do it — a conditional `UPDATE` on PostgreSQL — in one run, side by side,
//! with each side's durability settings in the report.
//!
//! Both sides get the same requests in the same order: one unit each, on one hot SKU and
//! spread over many SKUs. Both sides are checked against the same simple oracle (a SKU grants
//! `min(stock, requests for it)` units), so neither can win by overselling.

use crate::harness;
use crate::publish::envelope;
use futures::StreamExt;
use hdrhistogram::Histogram;
use retailflow::config::Config;
use retailflow::domain::{Event, QtyLine, Receipt, Sku, subject};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveSpec {
    pub name: String,
    /// retailflow: reservation requests in flight at once.
    pub concurrency: usize,
    /// retailflow: connections the requests are spread over.
    pub connections: usize,
    /// retailflow: `http` (`POST /v1/reservations`) or `nats` (request-reply on
    /// `retail.v1.atp.reserve`).
    pub transport: Transport,
    /// retailflow: SKU shards.
    #[serde(default = "default_shards")]
    pub shards: usize,
    pub hot: Hot,
    pub spread: Spread,
    pub postgres: PgSpec,
    pub expect: ReserveExpect,
    #[serde(default)]
    pub smoke: Option<ReserveSmoke>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    Http,
    Nats,
}

fn default_shards() -> usize {
    4
}

/// Every request is for the same SKU.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hot {
    pub requests: usize,
    /// Units on hand at the start.
    pub units: i64,
}

/// Requests are spread uniformly (by a fixed pseudo-random sequence) over `skus` SKUs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spread {
    pub skus: usize,
    pub units_per_sku: i64,
    pub requests: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgSpec {
    /// libpq-style connection string; `RETAILFLOW_BENCH_PG` overrides it.
    pub url: String,
    /// Connections in the pool; each runs one statement at a time.
    pub connections: usize,
    /// One run per value, in order; the first is the baseline the expectations compare with.
    pub synchronous_commit: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveExpect {
    /// retailflow's hot-SKU throughput at least this many times the baseline's.
    pub hot_speedup: f64,
    /// retailflow's reserve p99 at most this, on both workloads (milliseconds).
    pub p99_ms: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveSmoke {
    pub hot_requests: usize,
    pub spread_requests: usize,
    pub spread_skus: usize,
}

impl ReserveSpec {
    pub fn load(path: &Path) -> anyhow::Result<ReserveSpec> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let spec: ReserveSpec =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        spec.check()?;
        Ok(spec)
    }

    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.concurrency > 0 && self.connections > 0 && self.postgres.connections > 0,
            "concurrency, connections and postgres.connections must be positive"
        );
        anyhow::ensure!(
            self.spread.skus > 0 && self.hot.units >= 0 && self.spread.units_per_sku >= 0,
            "spread.skus must be positive and stock not negative"
        );
        anyhow::ensure!(
            !self.postgres.synchronous_commit.is_empty(),
            "postgres.synchronous_commit needs at least one value (e.g. [\"on\"])"
        );
        for v in &self.postgres.synchronous_commit {
            anyhow::ensure!(
                matches!(
                    v.as_str(),
                    "on" | "off" | "local" | "remote_write" | "remote_apply"
                ),
                "postgres.synchronous_commit {v:?} is not a PostgreSQL value"
            );
        }
        Ok(())
    }

    /// The small version CI runs.
    pub fn smoke(&self) -> ReserveSpec {
        let mut s = self.clone();
        if let Some(sm) = &self.smoke {
            s.hot.requests = sm.hot_requests;
            s.hot.units = s.hot.units.min(sm.hot_requests as i64 / 2);
            s.spread.requests = sm.spread_requests;
            s.spread.skus = sm.spread_skus;
        }
        s
    }
}

/// One workload's requests: the SKU index of each (0 is the hot SKU's own table).
#[derive(Clone)]
struct Workload {
    name: &'static str,
    skus: Vec<String>,
    units: i64,
    requests: Vec<u32>,
}

impl Workload {
    fn hot(h: &Hot) -> Workload {
        Workload {
            name: "hot",
            skus: vec!["HOT".into()],
            units: h.units,
            requests: vec![0; h.requests],
        }
    }

    fn spread(s: &Spread) -> Workload {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let requests = (0..s.requests)
            .map(|_| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((x >> 33) % s.skus as u64) as u32
            })
            .collect();
        Workload {
            name: "spread",
            skus: (0..s.skus).map(|i| format!("S-{i}")).collect(),
            units: s.units_per_sku,
            requests,
        }
    }

    /// The oracle: with one unit per request and nothing released, a SKU grants
    /// `min(stock, requests for it)`.
    fn expected_grants(&self) -> u64 {
        let mut asked = vec![0i64; self.skus.len()];
        for &r in &self.requests {
            asked[r as usize] += 1;
        }
        asked.iter().map(|&a| a.min(self.units) as u64).sum()
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct SideResult {
    pub system: String,
    pub workload: String,
    pub durability: String,
    pub requests: u64,
    pub granted: u64,
    pub rejected: u64,
    pub expected_grants: u64,
    /// Requests answered with an error and retried with the same key (retailflow only).
    pub retries: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Stock check after the run: what the system holds equals what it granted.
    pub consistent: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReserveReport {
    pub name: String,
    pub cpus: usize,
    pub nats_server: String,
    pub postgres_server: String,
    pub concurrency: usize,
    pub transport: Transport,
    pub postgres_connections: usize,
    pub results: Vec<SideResult>,
    pub hot_speedup: f64,
    pub failures: Vec<String>,
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// What one side measured on one workload.
struct Tally {
    latency: Histogram<u64>,
    granted: u64,
    retries: u64,
    elapsed: Duration,
    consistent: bool,
}

fn result(system: &str, w: &Workload, durability: &str, t: Tally) -> SideResult {
    let n = w.requests.len() as u64;
    let h = &t.latency;
    SideResult {
        system: system.into(),
        workload: w.name.into(),
        durability: durability.into(),
        requests: n,
        granted: t.granted,
        rejected: n - t.granted,
        expected_grants: w.expected_grants(),
        retries: t.retries,
        seconds: t.elapsed.as_secs_f64(),
        per_second: n as f64 / t.elapsed.as_secs_f64().max(1e-9),
        p50_ms: ms(h, 0.5),
        p99_ms: ms(h, 0.99),
        p999_ms: ms(h, 0.999),
        max_ms: h.max() as f64 / 1000.0,
        consistent: t.consistent,
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// Runs `load` on a thread of its own with a single-threaded runtime, and waits for its result.
/// The load generator stands in for shoppers' machines: on one thread its sends, wake-ups and
/// replies stay on one core without cross-thread hand-offs, so it takes as little CPU from the
/// system under test as it can. Both sides are driven this way.
async fn on_load_thread<T, F, Fut>(load: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("reserve-load".into())
        .spawn(move || {
            retailflow::supervise::threads::short_slice();
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(load()));
            let _ = tx.send(result);
        })?;
    rx.await
        .map_err(|_| anyhow::anyhow!("the load generator's thread died"))?
}

/// Runs the comparison and writes `report.json` into `out`.
pub async fn run(spec: &ReserveSpec, smoke: bool, out: &Path) -> anyhow::Result<ReserveReport> {
    let spec = if smoke { spec.smoke() } else { spec.clone() };
    let workloads = [Workload::hot(&spec.hot), Workload::spread(&spec.spread)];
    let mut results = Vec::new();

    let server = harness::private_server().await?;
    let (nats_version, rf) = retailflow_side(&spec, &server.url(), &workloads).await?;
    results.extend(rf);
    drop(server);

    let url = std::env::var("RETAILFLOW_BENCH_PG").unwrap_or_else(|_| spec.postgres.url.clone());
    let mut pg_version = String::new();
    for setting in &spec.postgres.synchronous_commit {
        let (version, r) = postgres_side(&spec, &url, setting, &workloads).await?;
        pg_version = version;
        results.extend(r);
    }

    let find = |system: &str, workload: &str, durability_prefix: &str| {
        results
            .iter()
            .find(|r| {
                r.system == system
                    && r.workload == workload
                    && r.durability.starts_with(durability_prefix)
            })
            .cloned()
    };
    let baseline = format!("synchronous_commit={}", spec.postgres.synchronous_commit[0]);
    let rf_hot = find("retailflow", "hot", "");
    let pg_hot = find("postgresql", "hot", &baseline);
    let hot_speedup = match (&rf_hot, &pg_hot) {
        (Some(a), Some(b)) => a.per_second / b.per_second.max(1e-9),
        _ => 0.0,
    };
    let mut failures = Vec::new();
    for r in &results {
        if r.granted != r.expected_grants {
            failures.push(format!(
                "{} {} ({}): granted {} units, the oracle says {}",
                r.system, r.workload, r.durability, r.granted, r.expected_grants
            ));
        }
        if !r.consistent {
            failures.push(format!(
                "{} {} ({}): stock held does not match the grants",
                r.system, r.workload, r.durability
            ));
        }
        if r.system == "retailflow" && r.p99_ms > spec.expect.p99_ms {
            failures.push(format!(
                "retailflow {}: reserve p99 {:.2} ms > {} ms",
                r.workload, r.p99_ms, spec.expect.p99_ms
            ));
        }
    }
    if hot_speedup < spec.expect.hot_speedup {
        failures.push(format!(
            "hot SKU: retailflow {:.0}/s is {hot_speedup:.1}x PostgreSQL ({baseline}), expected at least {}x",
            rf_hot.map(|r| r.per_second).unwrap_or(0.0),
            spec.expect.hot_speedup
        ));
    }
    let report = ReserveReport {
        name: spec.name.clone(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        nats_server: nats_version,
        postgres_server: pg_version,
        concurrency: spec.concurrency,
        transport: spec.transport,
        postgres_connections: spec.postgres.connections,
        results,
        hot_speedup,
        failures,
    };
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    Ok(report)
}

/// A terminal table of the report.
pub fn summary(r: &ReserveReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} ({} CPUs, nats-server {}, PostgreSQL {}; retailflow {} in flight over {:?}, PostgreSQL {} connections)",
        r.name,
        r.cpus,
        r.nats_server,
        r.postgres_server,
        r.concurrency,
        r.transport,
        r.postgres_connections
    );
    let _ = writeln!(
        s,
        "{:<11} {:<7} {:>8} {:>8} {:>8} {:>10} {:>8} {:>8} {:>8}  durability",
        "system", "load", "requests", "granted", "oracle", "per s", "p50 ms", "p99 ms", "max ms"
    );
    for x in &r.results {
        let _ = writeln!(
            s,
            "{:<11} {:<7} {:>8} {:>8} {:>8} {:>10.0} {:>8.2} {:>8.2} {:>8.2}  {}",
            x.system,
            x.workload,
            x.requests,
            x.granted,
            x.expected_grants,
            x.per_second,
            x.p50_ms,
            x.p99_ms,
            x.max_ms,
            x.durability
        );
    }
    let _ = writeln!(
        s,
        "hot SKU: retailflow is {:.1}x the PostgreSQL baseline",
        r.hot_speedup
    );
    if r.failures.is_empty() {
        let _ = writeln!(s, "PASS");
    } else {
        for f in &r.failures {
            let _ = writeln!(s, "FAIL: {f}");
        }
    }
    s
}

async fn retailflow_side(
    spec: &ReserveSpec,
    url: &str,
    workloads: &[Workload],
) -> anyhow::Result<(String, Vec<SideResult>)> {
    let mut cfg = Config::default();
    cfg.nats.url = url.to_string();
    cfg.api.http = "127.0.0.1:0".into();
    cfg.shards.count = spec.shards;
    cfg.erp.clear();
    cfg.reservations.decision_timeout = Duration::from_secs(30);
    let systems = cfg.streams.systems.clone();
    let pipeline = harness::start_pipeline(cfg).await?;
    let base = format!("{}/v1/reservations", harness::http_base(&pipeline)?);
    // Setting up; the load itself comes from the load generator's own connections.
    let setup = async_nats::connect(retailflow::bus::servers(url)).await?;
    let version = setup.server_info().version;
    let js = async_nats::jetstream::new(setup.clone());
    // Opening stock, 500 SKUs per receipt.
    let receipts = workloads.iter().flat_map(|w| {
        w.skus.chunks(500).map(move |chunk| {
            Event::Receipt(Receipt {
                location: "DC1".into(),
                lines: chunk
                    .iter()
                    .map(|s| QtyLine {
                        sku: s.as_str().into(),
                        qty: w.units,
                    })
                    .collect(),
                reference: None,
            })
        })
    });
    let receipts = receipts
        .enumerate()
        .map(|(i, e)| envelope("wms/DC1", i as u64 + 1, e));
    let late = "opening stock was not applied within 2 minutes";
    harness::setup_stock(
        &js,
        &systems,
        receipts,
        &pipeline,
        Duration::from_secs(120),
        late,
    )
    .await?;
    let durability = "JetStream file storage, 1 replica, nats-server default sync (acked once written to the OS, fsync every 2 min); decision applied before the answer".to_string();
    let mut results = Vec::new();
    for w in workloads {
        let load = on_load_thread({
            let (url, base, spec, w) = (url.to_string(), base.clone(), spec.clone(), w.clone());
            move || retailflow_load(url, base, spec, w)
        });
        let (answers, elapsed) = load.await?;
        let mut h = histogram();
        let mut granted = 0;
        let mut retries = 0;
        for (g, us, r) in &answers {
            h.saturating_record(*us);
            granted += u64::from(*g);
            retries += r;
        }
        // What the view holds: reserved units equal the grants, and nothing below zero.
        let mut reserved = 0;
        let mut negative = false;
        for s in &w.skus {
            let (cells, _) = pipeline.shared.view.read(&Sku::from(s.as_str()));
            for a in cells.unwrap_or_default() {
                reserved += a.position.reserved;
                negative |= a.position.available() < 0;
            }
        }
        let consistent = reserved == granted as i64 && !negative;
        let tally = Tally {
            latency: h,
            granted,
            retries,
            elapsed,
            consistent,
        };
        results.push(result("retailflow", w, &durability, tally));
    }
    pipeline.shutdown(Duration::from_secs(10)).await;
    Ok((version, results))
}

/// The retailflow side's load generator: `spec.connections` clients of its own, requests
/// `spec.concurrency` at a time; per request whether it was granted, its latency in µs and
/// how often it was retried.
async fn retailflow_load(
    url: String,
    base: String,
    spec: ReserveSpec,
    w: Workload,
) -> anyhow::Result<(Vec<(bool, u64, u64)>, Duration)> {
    let (transport, connections, concurrency) =
        (spec.transport, spec.connections, spec.concurrency);
    let mut clients = Vec::new();
    let mut https = Vec::new();
    for _ in 0..connections {
        clients.push(async_nats::connect(retailflow::bus::servers(&url)).await?);
        https.push(reqwest::Client::new());
    }
    let started = Instant::now();
    let answers: Vec<(bool, u64, u64)> = futures::stream::iter(w.requests.iter().enumerate())
        .map(|(i, &sku)| {
            let client = clients[i % clients.len()].clone();
            let http = https[i % https.len()].clone();
            let base = base.clone();
            let body = serde_json::json!({
                "sku": w.skus[sku as usize], "qty": 1, "location": "DC1",
                "ttl_seconds": 3600, "idempotency_key": format!("{}-{i}", w.name),
            })
            .to_string();
            async move {
                let t = Instant::now();
                let mut retries = 0;
                loop {
                    let reply: Option<bytes::Bytes> = match transport {
                        Transport::Nats => client
                            .request(subject::ATP_RESERVE, body.clone().into())
                            .await
                            .ok()
                            .map(|m| m.payload),
                        Transport::Http => match http
                            .post(&base)
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()
                            .await
                        {
                            Ok(r) => r.bytes().await.ok(),
                            Err(_) => None,
                        },
                    };
                    let granted = reply.and_then(|payload| {
                        let v: serde_json::Value = serde_json::from_slice(&payload).ok()?;
                        v.get("granted").and_then(|g| g.as_bool())
                    });
                    // No decision (an error answer): the same key is safe to retry.
                    if let Some(g) = granted {
                        return (g, t.elapsed().as_micros() as u64, retries);
                    }
                    retries += 1;
                    if retries > 20 {
                        return (false, t.elapsed().as_micros() as u64, retries);
                    }
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    Ok((answers, started.elapsed()))
}

pub(crate) async fn pg_connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| anyhow::anyhow!("PostgreSQL at {url:?}: {e}"))?;
    tokio::spawn(async move {
        if let Err(error) = conn.await {
            tracing::warn!(%error, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// The PostgreSQL side's load generator: a pool of `connections` of its own, each taking the
/// next request as soon as its previous `UPDATE` returned. Gives the latencies, the units
/// granted and the time taken.
async fn postgres_load(
    url: String,
    setting: String,
    table: String,
    connections: usize,
    w: Workload,
) -> anyhow::Result<(Histogram<u64>, u64, Duration)> {
    let mut pool = Vec::new();
    for _ in 0..connections {
        let c = pg_connect(&url).await?;
        c.batch_execute(&format!("SET synchronous_commit = {setting}"))
            .await?;
        let stmt = c
            .prepare(&format!(
                "UPDATE {table} SET available = available - $2 WHERE sku = $1 AND available >= $2"
            ))
            .await?;
        pool.push((c, stmt));
    }
    let next = Arc::new(AtomicUsize::new(0));
    let w = Arc::new(w);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (c, stmt) in pool {
        let (next, w) = (next.clone(), w.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            let mut granted = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&sku) = w.requests.get(i) else { break };
                let t = Instant::now();
                let n = c
                    .execute(&stmt, &[&w.skus[sku as usize], &1i64])
                    .await
                    .map_err(|e| anyhow::anyhow!("UPDATE: {e}"))?;
                h.saturating_record(t.elapsed().as_micros() as u64);
                granted += n;
            }
            Ok::<_, anyhow::Error>((h, granted))
        }));
    }
    let mut h = histogram();
    let mut granted = 0;
    for t in tasks {
        let (th, g) = t.await??;
        h.add(th)?;
        granted += g;
    }
    Ok((h, granted, started.elapsed()))
}

async fn postgres_side(
    spec: &ReserveSpec,
    url: &str,
    setting: &str,
    workloads: &[Workload],
) -> anyhow::Result<(String, Vec<SideResult>)> {
    let admin = pg_connect(url).await?;
    let show = |name: &'static str| {
        let admin = &admin;
        async move {
            admin
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .map(|r| r.get::<_, String>(0))
                .unwrap_or_else(|_| "?".into())
        }
    };
    let version = show("server_version").await;
    let durability = format!(
        "synchronous_commit={setting}, fsync={}, wal_sync_method={}, logged table, one autocommit UPDATE per request",
        show("fsync").await,
        show("wal_sync_method").await
    );
    let table = format!("retailflow_reserve_bench_{}", std::process::id());
    let mut results = Vec::new();
    for w in workloads {
        admin
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {table};
                 CREATE TABLE {table} (sku text PRIMARY KEY, available bigint NOT NULL);"
            ))
            .await?;
        admin
            .execute(
                &format!("INSERT INTO {table} SELECT unnest($1::text[]), $2"),
                &[&w.skus, &w.units],
            )
            .await?;
        admin.batch_execute(&format!("ANALYZE {table}")).await?;
        let load = on_load_thread({
            let (url, setting, table) = (url.to_string(), setting.to_string(), table.clone());
            let (connections, w) = (spec.postgres.connections, w.clone());
            move || postgres_load(url, setting, table, connections, w)
        });
        let (h, granted, elapsed) = load.await?;
        let row = admin
            .query_one(
                &format!(
                    "SELECT coalesce(sum($1 - available), 0)::bigint, coalesce(min(available), 0) FROM {table}"
                ),
                &[&w.units],
            )
            .await?;
        let (taken, min): (i64, i64) = (row.get(0), row.get(1));
        let consistent = taken == granted as i64 && min >= 0;
        let tally = Tally {
            latency: h,
            granted,
            retries: 0,
            elapsed,
            consistent,
        };
        results.push(result("postgresql", w, &durability, tally));
    }
    admin
        .batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
        .await?;
    Ok((version, results))
}
