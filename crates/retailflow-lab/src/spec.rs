//! Scenario files: a world, a load profile, an event mix, faults, ERP endpoints, queries and
//! expectations. TOML, every field documented in `scenarios/README.md`, unknown fields
//! rejected.

use retailflow::config::{ReaderKind, duration};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// Everything generated follows from this seed.
    #[serde(default = "default_seed")]
    pub seed: u64,
    pub world: World,
    pub load: Load,
    #[serde(default)]
    pub mix: Mix,
    #[serde(default)]
    pub faults: Faults,
    #[serde(default)]
    pub erp: Vec<ErpSpec>,
    #[serde(default)]
    pub queries: Queries,
    #[serde(default)]
    pub pipeline: PipelineSpec,
    #[serde(default)]
    pub expect: Expect,
    /// Run on a 3-node NATS cluster with several replica processes, killing the leader, a
    /// NATS node and every replica in turn (`cluster-failover`).
    #[serde(default)]
    pub cluster: Option<ClusterSpec>,
    /// Several business days closed with Z reports, faults in them, reconciliation checked
    /// against an oracle of the faults (`month-end`).
    #[serde(default)]
    pub month_end: Option<MonthEndSpec>,
    /// A smaller version for the test suite; `--smoke` uses it.
    #[serde(default)]
    pub smoke: Option<Smoke>,
}

fn default_seed() -> u64 {
    1
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct World {
    pub stores: usize,
    pub dcs: usize,
    pub skus: usize,
    /// Zipf exponent of SKU popularity (1.0 is classic; higher concentrates demand).
    #[serde(default = "default_zipf")]
    pub zipf: f64,
    /// SKUs each store carries (the most popular ones, plus its own random tail).
    pub store_assortment: usize,
    /// Opening units per store position, inclusive range.
    #[serde(default = "default_store_stock")]
    pub store_stock: [i64; 2],
    /// Opening units per DC position, inclusive range.
    #[serde(default = "default_dc_stock")]
    pub dc_stock: [i64; 2],
    /// Safety stock per store position, inclusive range.
    #[serde(default)]
    pub safety_stock: [i64; 2],
    /// Unit prices in minor units, inclusive range.
    #[serde(default = "default_price")]
    pub price: [i64; 2],
    #[serde(default = "default_currency")]
    pub currency: String,
    #[serde(default = "default_day")]
    pub business_day: String,
    /// Tax codes with their rate in basis points; each SKU gets one.
    #[serde(default = "default_tax")]
    pub tax: Vec<TaxRate>,
    /// Channels and which locations fulfil them.
    #[serde(default = "default_channels")]
    pub channels: Vec<ChannelSpec>,
    /// Tills per store (each is a source with its own sequence).
    #[serde(default = "default_tills")]
    pub tills: usize,
}

fn default_zipf() -> f64 {
    1.0
}
fn default_store_stock() -> [i64; 2] {
    [5, 40]
}
fn default_dc_stock() -> [i64; 2] {
    [200, 2000]
}
fn default_price() -> [i64; 2] {
    [199, 9999]
}
fn default_currency() -> String {
    "USD".into()
}
fn default_day() -> String {
    "2026-11-27".into()
}
fn default_tax() -> Vec<TaxRate> {
    vec![
        TaxRate {
            code: "STD".into(),
            rate_bp: 825,
        },
        TaxRate {
            code: "FOOD".into(),
            rate_bp: 200,
        },
        TaxRate {
            code: "EXEMPT".into(),
            rate_bp: 0,
        },
    ]
}
fn default_channels() -> Vec<ChannelSpec> {
    vec![ChannelSpec {
        name: "web".into(),
        fulfilment: Fulfilment::Dcs,
    }]
}
fn default_tills() -> usize {
    4
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaxRate {
    pub code: String,
    pub rate_bp: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fulfilment {
    Dcs,
    Stores,
    All,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSpec {
    pub name: String,
    pub fulfilment: Fulfilment,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Trading events to generate after the opening stock.
    pub events: u64,
    /// Rate over time; empty means as fast as possible.
    #[serde(default)]
    pub profile: Vec<Phase>,
    /// Publishes allowed in flight (async publish with bounded acks).
    #[serde(default = "default_in_flight")]
    pub in_flight: usize,
}

fn default_in_flight() -> usize {
    4096
}

/// One phase of the load profile: the rate ramps linearly from `from` to `to` events/s.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub name: String,
    #[serde(with = "duration")]
    pub length: Duration,
    pub from: u64,
    pub to: u64,
}

/// Relative weights of trading event kinds.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mix {
    pub sale: u32,
    pub sale_return: u32,
    pub order: u32,
    pub fulfilment: u32,
    pub cancellation: u32,
    pub transfer: u32,
    pub receipt: u32,
    pub count: u32,
    pub adjustment: u32,
    /// Lines per sale, inclusive range.
    pub sale_lines: [u64; 2],
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            sale: 70,
            sale_return: 4,
            order: 10,
            fulfilment: 8,
            cancellation: 1,
            transfer: 2,
            receipt: 2,
            count: 1,
            adjustment: 2,
            sale_lines: [1, 4],
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Seconds after the trading load starts.
    #[serde(with = "duration")]
    pub at: Duration,
    #[serde(with = "duration")]
    pub length: Duration,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Share of events published twice with the same `Nats-Msg-Id` (JetStream drops them).
    pub duplicate_rate: f64,
    /// Share of events re-sent later without `Nats-Msg-Id` (retailflow's dedupe drops them).
    pub resend_rate: f64,
    /// Share of events whose per-source sequence is swapped with the next one's.
    pub reorder_rate: f64,
    /// Undecodable or invalid events injected (each must end in the dead letters).
    pub poison: u64,
    /// ERP answers 503 to everything in these windows.
    pub erp_outages: Vec<Window>,
    /// ERP answers 429 to everything in these windows.
    pub erp_throttle: Vec<Window>,
    /// Extra ERP latency per request, inclusive range in ms.
    pub erp_latency_ms: [u64; 2],
    /// ERP answers this share of first attempts with 503 (per mille).
    pub erp_error_permille: u32,
    /// Locations whose documents the ERP rejects with 400.
    pub erp_reject_locations: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErpSpec {
    pub name: String,
    pub requests: u32,
    #[serde(with = "duration")]
    pub window: Duration,
    #[serde(default)]
    pub burst: Option<u32>,
    pub max_concurrent: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Queries {
    /// Availability queries per second while the load runs (0: none).
    pub rate: u64,
    /// Share sent over HTTP; the rest over NATS request-reply.
    pub http_share: f64,
    /// Concurrent query workers.
    pub workers: usize,
    /// SKUs per query (1: single lookups).
    pub skus_per_query: usize,
    /// What the queries ask, by weight.
    pub mix: QueryMix,
    /// Stores named in each `stores` query.
    pub stores_per_query: usize,
}

/// What shoppers ask, by relative weight. `all`: one SKU at every location that holds it (a
/// store locator; the heaviest answer, ~100 bytes per location). `channel`: a channel's
/// availability (a product page: "ships from the web warehouses"), the channel's total and
/// its fulfilment locations. `stores`: a few named stores ("pick up near me").
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryMix {
    pub all: u32,
    pub channel: u32,
    pub stores: u32,
}

impl Default for QueryMix {
    fn default() -> Self {
        QueryMix {
            all: 1,
            channel: 0,
            stores: 0,
        }
    }
}

impl Default for Queries {
    fn default() -> Self {
        Queries {
            rate: 0,
            http_share: 0.8,
            workers: 16,
            skus_per_query: 1,
            mix: QueryMix::default(),
            stores_per_query: 5,
        }
    }
}

/// Pipeline settings for the run (the rest are the service defaults).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSpec {
    /// SKU shards (`shards.count`).
    pub shards: usize,
    /// Messages per pull and per ingest batch (`ingest.batch`).
    pub batch: usize,
    /// Work in flight before ingest waits (`ingest.credit`).
    pub credit: u64,
    /// Least time between flushing barriers (`barrier.flush_interval`).
    #[serde(with = "duration")]
    pub flush_interval: Duration,
    /// Time between snapshots (`snapshot.interval`).
    #[serde(with = "duration")]
    pub snapshot_interval: Duration,
    /// Most events between snapshot barriers (`snapshot.every_events`).
    pub snapshot_every_events: u64,
    /// How ingest reads the stream (`ingest.reader`): compare the two readers on one scenario.
    pub reader: ReaderKind,
}

impl Default for PipelineSpec {
    fn default() -> Self {
        PipelineSpec {
            shards: 2,
            batch: 2000,
            credit: 100_000,
            flush_interval: Duration::from_secs(2),
            snapshot_interval: Duration::from_secs(10),
            snapshot_every_events: 1_000_000,
            reader: ReaderKind::Direct,
        }
    }
}

/// Thresholds; `scenario run` exits non-zero naming each one that fails.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Expect {
    /// Pipeline drain rate over the ceiling's (needs `--ceiling`).
    pub min_drain_ratio: Option<f64>,
    pub max_query_p99_ms: Option<f64>,
    pub max_e2e_p99_ms: Option<f64>,
    pub min_throughput: Option<f64>,
    /// Seconds after the last event until every posting is accepted.
    pub max_settle_s: Option<f64>,
    /// Most ERP requests allowed beyond the configured limit in any window (0 = never).
    pub max_erp_over_limit: u64,
    pub max_peak_rss_mb: Option<f64>,
}

/// A failover run: replicas on a 3-node cluster, shoppers spread over them, and what is
/// killed when (times after the trading load starts).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// `retailflow run` processes, each with its own instance name and HTTP port.
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// `leader.lease` of every replica.
    #[serde(with = "duration", default = "default_lease")]
    pub lease: Duration,
    /// SIGKILL of the replica that leads.
    #[serde(with = "duration")]
    pub kill_leader_at: Duration,
    /// How long the killed leader stays down before it is started again.
    #[serde(with = "duration")]
    pub leader_down: Duration,
    /// SIGKILL of the NATS node that leads the events stream.
    #[serde(with = "duration")]
    pub kill_node_at: Duration,
    /// How long that node stays down before it is restarted on its store.
    #[serde(with = "duration")]
    pub node_down: Duration,
    /// A rolling upgrade: each replica in turn is stopped with SIGTERM and started again once
    /// the one before it has caught up.
    #[serde(with = "duration")]
    pub rolling_at: Duration,
    /// Units of the one SKU shoppers reserve (at the first DC); more are asked for than this.
    pub hot_stock: i64,
    /// Reservations per second, spread over the replicas.
    pub reserve_rate: u64,
    /// Goals the report checks.
    #[serde(default)]
    pub goals: FailoverGoals,
}

fn default_replicas() -> usize {
    3
}
fn default_lease() -> Duration {
    Duration::from_secs(3)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailoverGoals {
    /// Longest time from the leader's death to the next barrier and to the next posting.
    pub max_takeover_s: f64,
    /// Most failed queries and reservations (after the one retry), as a share of all.
    pub max_failed_share: f64,
    /// Longest time a live replica applies nothing while the stream holds more.
    pub max_apply_gap_s: f64,
}

impl Default for FailoverGoals {
    fn default() -> Self {
        FailoverGoals {
            max_takeover_s: 5.0,
            max_failed_share: 0.001,
            max_apply_gap_s: 5.0,
        }
    }
}

/// A month-end run: `days` business days from `world.business_day`, each closed by every store
/// with a Z report; `load.events` till transactions spread over the store days.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonthEndSpec {
    pub days: u32,
    /// `finance.close_grace` of the pipeline.
    #[serde(with = "duration")]
    pub close_grace: Duration,
    /// Share of store days whose Z report declares money the tills did not take.
    #[serde(default)]
    pub variance_rate: f64,
    /// Share of store days with a till transaction that never arrives.
    #[serde(default)]
    pub missing_rate: f64,
    /// Share of store days with transactions that arrive after the day closed.
    #[serde(default)]
    pub late_rate: f64,
    /// After this day's close the ERP stops refusing `faults.erp_reject_locations` and the
    /// refused documents are re-driven.
    #[serde(default = "one_day")]
    pub fix_after_day: u32,
    /// A PostgreSQL interface-table endpoint beside the HTTP one (a database of its own on
    /// the machine's PostgreSQL, or the server `RETAILFLOW_TEST_PG` names).
    #[serde(default)]
    pub postgres: bool,
    /// Longest time from a store day's Z report to its `accepted`, at the 99th percentile,
    /// leaving out the days of the refused location before the fix.
    #[serde(default)]
    pub max_accepted_p99_s: Option<f64>,
}

fn one_day() -> u32 {
    1
}

/// Overrides for the smoke version run in CI.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Smoke {
    pub stores: usize,
    pub skus: usize,
    pub store_assortment: usize,
    pub events: u64,
    #[serde(default)]
    pub poison: Option<u64>,
    /// Scales fault windows (outages, throttles) down; 1.0 keeps them.
    #[serde(default = "one")]
    pub time_scale: f64,
}

fn one() -> f64 {
    1.0
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, SpecError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| SpecError::Read {
            path: p.clone(),
            error,
        })?;
        let s: Scenario = toml::from_str(&text).map_err(|e| SpecError::Parse {
            path: p.clone(),
            message: e.to_string(),
        })?;
        s.check()
            .map_err(|message| SpecError::Invalid { path: p, message })?;
        Ok(s)
    }

    pub fn check(&self) -> Result<(), String> {
        let w = &self.world;
        if w.stores == 0 || w.skus == 0 {
            return Err("world.stores and world.skus must be positive".into());
        }
        if w.store_assortment == 0 || w.store_assortment > w.skus {
            return Err("world.store_assortment must be between 1 and world.skus".into());
        }
        if w.tax.is_empty() {
            return Err("world.tax needs at least one tax code".into());
        }
        if w.channels
            .iter()
            .any(|c| c.fulfilment != Fulfilment::Stores)
            && w.dcs == 0
        {
            return Err("a channel fulfilled by DCs needs world.dcs > 0".into());
        }
        retailflow::domain::Currency::parse(&w.currency)?;
        retailflow::domain::BusinessDay::parse(&w.business_day)?;
        for r in [
            self.faults.duplicate_rate,
            self.faults.resend_rate,
            self.faults.reorder_rate,
        ] {
            if !(0.0..=0.5).contains(&r) {
                return Err("fault rates must be between 0 and 0.5".into());
            }
        }
        if self.pipeline.shards == 0 {
            return Err("pipeline.shards must be positive".into());
        }
        let q = &self.queries;
        if q.rate > 0 {
            if q.mix.all + q.mix.channel + q.mix.stores == 0 {
                return Err("queries.mix: at least one weight must be positive".into());
            }
            if q.mix.channel > 0 && w.channels.is_empty() {
                return Err("queries.mix.channel needs a channel in world.channels".into());
            }
            if q.mix.stores > 0
                && !(1..=retailflow::query::model::MAX_LOCATIONS).contains(&q.stores_per_query)
            {
                return Err(format!(
                    "queries.stores_per_query must be between 1 and {}",
                    retailflow::query::model::MAX_LOCATIONS
                ));
            }
        }
        if let Some(m) = &self.month_end {
            if m.days == 0 || m.fix_after_day == 0 || m.fix_after_day >= m.days {
                return Err("month_end: days > fix_after_day >= 1".into());
            }
            let rates = [m.variance_rate, m.missing_rate, m.late_rate];
            if rates.iter().any(|r| !(0.0..=0.2).contains(r)) {
                return Err("month_end: fault rates must be between 0 and 0.2".into());
            }
            if self.erp.is_empty() {
                return Err("month_end needs an [[erp]] endpoint".into());
            }
        }
        if let Some(c) = &self.cluster {
            if c.replicas < 2 {
                return Err(
                    "cluster.replicas must be at least 2 (one to kill, one to take over)".into(),
                );
            }
            if w.dcs == 0 || c.hot_stock <= 0 {
                return Err("cluster.hot_stock needs world.dcs > 0 and a positive stock".into());
            }
            if !(c.kill_leader_at < c.kill_node_at && c.kill_node_at < c.rolling_at) {
                return Err("cluster: kill_leader_at < kill_node_at < rolling_at".into());
            }
        }
        Ok(())
    }

    /// The smoke version: small world, few events, fault windows scaled down.
    pub fn smoke(&self) -> Scenario {
        let mut s = self.clone();
        if let Some(sm) = &self.smoke {
            s.world.stores = sm.stores;
            s.world.skus = sm.skus;
            s.world.store_assortment = sm.store_assortment.min(sm.skus);
            s.load.events = sm.events;
            if let Some(p) = sm.poison {
                s.faults.poison = p;
            }
            let scale = |d: Duration| Duration::from_secs_f64(d.as_secs_f64() * sm.time_scale);
            for w in s
                .faults
                .erp_outages
                .iter_mut()
                .chain(s.faults.erp_throttle.iter_mut())
            {
                w.at = scale(w.at);
                w.length = scale(w.length);
            }
            if let Some(c) = &mut s.cluster {
                for d in [
                    &mut c.kill_leader_at,
                    &mut c.leader_down,
                    &mut c.kill_node_at,
                    &mut c.node_down,
                    &mut c.rolling_at,
                ] {
                    *d = scale(*d);
                }
                c.reserve_rate = c.reserve_rate.min(50);
            }
            if let Some(m) = &mut s.month_end {
                m.max_accepted_p99_s = None;
            }
            s.load.profile.clear();
            s.queries.rate = s.queries.rate.min(200);
            // Speed thresholds belong to the full run; the bounds that do not depend on the
            // machine's speed stay.
            s.expect = Expect {
                max_erp_over_limit: self.expect.max_erp_over_limit,
                max_peak_rss_mb: self.expect.max_peak_rss_mb,
                ..Expect::default()
            };
        }
        s.name = format!("{} (smoke)", self.name);
        s
    }
}
