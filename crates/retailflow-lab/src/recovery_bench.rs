//! `retailflow scenario recovery`: how long a restart takes with a big state and a long tail.
//!
//! Builds `positions` (location, sku) positions, snapshots them, stops retailflow, publishes
//! `events` more events while it is down, then starts it again and times the two parts of
//! coming back: restoring the snapshot (until the API answers) and replaying the tail (until
//! the view has applied the last event). The state reached is checked against simple sums.

use crate::harness;
use crate::publish::{envelope, publish_envelopes};
use retailflow::config::Config;
use retailflow::domain::{
    BusinessDay, Currency, Event, ItemLine, QtyLine, Receipt, Sale, Sku, TaxLine, Tender,
};
use retailflow::supervise::pipeline::Pipeline;
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, clap::Args)]
pub struct RecoveryArgs {
    /// (location, sku) positions in the snapshot: `locations` x (positions / locations) SKUs.
    #[arg(long, default_value_t = 1_000_000)]
    pub positions: usize,
    /// Locations the positions are spread over.
    #[arg(long, default_value_t = 100)]
    pub locations: usize,
    /// Events published while retailflow is down, replayed on start.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// The bound to check, in seconds (restore plus replay).
    #[arg(long, default_value_t = 10.0)]
    pub expect_seconds: f64,
    /// SKU shards.
    #[arg(long, default_value_t = 4)]
    pub shards: usize,
    /// Directory for report.json.
    #[arg(long, default_value = "out/recovery")]
    pub out: std::path::PathBuf,
}

#[derive(Clone, Debug, Serialize)]
pub struct RecoveryReport {
    pub cpus: usize,
    pub nats_server: String,
    pub positions: usize,
    pub events: usize,
    pub snapshot_seq: u64,
    pub last_seq: u64,
    /// From `Pipeline::start` until it returned: snapshot loaded, actors started, API up.
    pub restore_seconds: f64,
    /// From then until the view had applied the last event.
    pub replay_seconds: f64,
    pub total_seconds: f64,
    pub replay_events_per_second: f64,
    pub positions_after: usize,
    pub on_hand_after: i64,
    pub on_hand_expected: i64,
    pub failures: Vec<String>,
}

const OPENING: i64 = 1_000;

/// A one-line, one-unit till sale.
pub(crate) fn sale(location: &str, sku: &str) -> Event {
    Event::Sale(Sale {
        location: location.into(),
        business_day: BusinessDay::parse("2026-11-27").expect("valid day"),
        currency: Currency::parse("EUR").expect("valid currency"),
        lines: vec![ItemLine {
            sku: sku.into(),
            qty: 1,
            unit_price: 1_000,
            discount: 0,
            tax_code: "VAT20".into(),
            taxes: vec![TaxLine {
                code: "VAT20".into(),
                amount: 200,
            }],
            restock: None,
        }],
        tenders: vec![Tender {
            kind: "card".into(),
            amount: 1_200,
        }],
    })
}

/// The configuration: no HTTP or NATS API, no ERP, and no periodic snapshot (only the one
/// taken below, so the restart replays everything published after it).
fn config(args: &RecoveryArgs, nats_url: String) -> Config {
    let mut cfg = Config::default();
    cfg.nats.url = nats_url;
    cfg.api.http = String::new();
    cfg.api.nats = false;
    cfg.shards.count = args.shards;
    cfg.erp.clear();
    // Only the snapshot taken below: the restart replays everything published after it.
    cfg.snapshot.interval = Duration::from_secs(24 * 3600);
    cfg
}

/// Opening stock: every location receives `qty` of every SKU, 500 lines a receipt.
pub(crate) fn opening_stock<'a>(
    locs: &'a [String],
    skus: &'a [String],
    qty: i64,
) -> impl Iterator<Item = Event> + 'a {
    locs.iter().flat_map(move |l| {
        skus.chunks(500).map(move |chunk| {
            Event::Receipt(Receipt {
                location: l.as_str().into(),
                lines: chunk
                    .iter()
                    .map(|s| QtyLine {
                        sku: s.as_str().into(),
                        qty,
                    })
                    .collect(),
                reference: None,
            })
        })
    })
}

/// Opening stock (every location holds every SKU) applied and snapshotted, then the pipeline
/// stopped; the snapshot's sequence.
async fn snapshot_stock(
    cfg: &Config,
    js: &async_nats::jetstream::Context,
    locs: &[String],
    skus: &[String],
) -> anyhow::Result<u64> {
    let pipeline = harness::start_pipeline(cfg.clone()).await?;
    let mut seq = 0;
    let receipts = opening_stock(locs, skus, OPENING);
    let receipts = receipts.map(|e| {
        seq += 1;
        envelope("wms/bench", seq, e)
    });
    let systems = &cfg.streams.systems;
    let late = "opening stock not applied within 10 minutes";
    harness::setup_stock(
        js,
        systems,
        receipts,
        &pipeline,
        Duration::from_secs(600),
        late,
    )
    .await?;
    let snapshot_seq = pipeline
        .barrier(false, true)
        .await
        .map_err(|e| anyhow::anyhow!("barrier: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = pipeline
            .coordinator_status()
            .await
            .is_some_and(|s| s.last_snapshot >= snapshot_seq);
        if done {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "snapshot not written within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut pipeline = pipeline;
    pipeline.stop_now().await;
    drop(pipeline);
    Ok(snapshot_seq)
}

/// The tail: `events` one-unit sales spread over every position, published while retailflow is
/// down. Returns the last stream sequence and the units sold.
async fn publish_tail(
    js: &async_nats::jetstream::Context,
    systems: &[String],
    locs: &[String],
    skus: &[String],
    events: usize,
) -> anyhow::Result<(u64, i64)> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut sold = 0i64;
    let sales = (0..events).map(|i| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let loc = &locs[(x % locs.len() as u64) as usize];
        let sku = &skus[((x >> 20) % skus.len() as u64) as usize];
        sold += 1;
        envelope(&format!("pos/{loc}"), i as u64 + 1, sale(loc, sku))
    });
    let last_seq = publish_envelopes(js, systems, sales).await?;
    Ok((last_seq, sold))
}

/// Positions the pipeline holds for `skus`, and their units on hand.
fn holdings(pipeline: &Pipeline, skus: &[String]) -> (usize, i64) {
    let mut positions_after = 0;
    let mut on_hand_after = 0;
    for s in skus {
        let (cells, _) = pipeline.shared.view.read(&Sku::from(s.as_str()));
        for a in cells.unwrap_or_default() {
            positions_after += 1;
            on_hand_after += a.position.on_hand;
        }
    }
    (positions_after, on_hand_after)
}

pub async fn run(args: &RecoveryArgs) -> anyhow::Result<RecoveryReport> {
    anyhow::ensure!(
        args.locations > 0 && args.positions >= args.locations,
        "--positions must be at least --locations (> 0)"
    );
    let server = harness::private_server().await?;
    let cfg = config(args, server.url());
    let systems = cfg.streams.systems.clone();
    let skus_per_loc = args.positions / args.locations;
    let locs: Vec<String> = (0..args.locations).map(|i| format!("L{i:04}")).collect();
    let skus: Vec<String> = (0..skus_per_loc).map(|i| format!("SKU-{i:07}")).collect();
    let positions = locs.len() * skus.len();

    let client = async_nats::connect(server.url()).await?;
    let nats_server = client.server_info().version;
    let js = crate::publish::load_context(client, 2_000);
    let snapshot_seq = snapshot_stock(&cfg, &js, &locs, &skus).await?;
    let (last_seq, sold) = publish_tail(&js, &systems, &locs, &skus, args.events).await?;

    // The restart being measured.
    let started = Instant::now();
    let restarted = Pipeline::start(cfg)
        .await
        .map_err(|e| anyhow::anyhow!("restart: {e}"))?;
    let restored = started.elapsed();
    let caught_up = restarted
        .shared
        .view
        .wait_all(last_seq, Duration::from_secs(600))
        .await;
    let total = started.elapsed();
    anyhow::ensure!(caught_up, "replay did not finish within 10 minutes");

    let (positions_after, on_hand_after) = holdings(&restarted, &skus);
    let on_hand_expected = positions as i64 * OPENING - sold;
    let replay = total - restored;
    let mut failures = Vec::new();
    if positions_after != positions {
        failures.push(format!(
            "{positions_after} positions after the restart, {positions} before"
        ));
    }
    if on_hand_after != on_hand_expected {
        failures.push(format!(
            "on hand {on_hand_after} after the restart, expected {on_hand_expected}"
        ));
    }
    if total.as_secs_f64() > args.expect_seconds {
        failures.push(format!(
            "restore + replay took {:.2} s, more than {} s",
            total.as_secs_f64(),
            args.expect_seconds
        ));
    }
    restarted.shutdown(Duration::from_secs(30)).await;
    let report = RecoveryReport {
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        nats_server,
        positions,
        events: args.events,
        snapshot_seq,
        last_seq,
        restore_seconds: restored.as_secs_f64(),
        replay_seconds: replay.as_secs_f64(),
        total_seconds: total.as_secs_f64(),
        replay_events_per_second: args.events as f64 / replay.as_secs_f64().max(1e-9),
        positions_after,
        on_hand_after,
        on_hand_expected,
        failures,
    };
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("report.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    Ok(report)
}

pub fn summary(r: &RecoveryReport, out: &Path) -> String {
    let mut s = format!(
        "recovery of {} positions + {} events of replay ({} CPUs, nats-server {}):\n  restore {:.2} s, replay {:.2} s ({:.0} events/s), total {:.2} s\n  positions {} (was {}), on hand {} (expected {})\n",
        r.positions,
        r.events,
        r.cpus,
        r.nats_server,
        r.restore_seconds,
        r.replay_seconds,
        r.replay_events_per_second,
        r.total_seconds,
        r.positions_after,
        r.positions,
        r.on_hand_after,
        r.on_hand_expected
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
