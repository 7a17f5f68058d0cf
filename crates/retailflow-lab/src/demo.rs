//! `retailflow demo`: brings up NATS, the ERP simulator and the pipeline on this machine, trades
//! one small day, asks for availability through the HTTP API, and prints what the ERP accepted
//! next to what the tills reported.

use crate::generate::Generator;
use crate::harness::pipeline_config;
use crate::oracle::Oracle;
use crate::publish::{self, Until};
use crate::spec::Scenario;
use crate::world::World;
use anyhow::{Context, Result, bail};
use erp_sim::{ErpSim, ErpSimConfig};
use retailflow::bus::server::{NatsSource, existing_or_private};
use retailflow::supervise::pipeline::Pipeline;
use retailflow::supervise::settle;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// The demo's world, compiled in so the demo runs from any directory.
const DEMO: &str = include_str!("../../../scenarios/demo.toml");

#[derive(clap::Args)]
pub struct DemoArgs {
    /// HTTP API address (a free port is used when this one is taken).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: String,
    /// Keep everything running after the demo, for trying the API by hand.
    #[arg(long)]
    pub keep_running: bool,
}

fn money(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", minor.abs() / 100, minor.abs() % 100)
}

/// What the demo runs: NATS, the ERP simulator, the pipeline with its HTTP API.
struct Running {
    nats: NatsSource,
    sim: ErpSim,
    /// The producers' connection.
    client: async_nats::Client,
    pipeline: Pipeline,
    http: SocketAddr,
}

impl Running {
    /// Starts NATS (the one already running, or a private one), the ERP simulator and the
    /// pipeline, saying what each is.
    async fn start(spec: &Scenario, args: &DemoArgs) -> Result<Running> {
        let nats = existing_or_private("RETAIL_EVENTS").await?;
        println!("NATS: {}", nats.why);
        let sim = ErpSim::start(ErpSimConfig {
            listen: "127.0.0.1:0".into(),
            ..ErpSimConfig::default()
        })
        .await?;
        println!(
            "ERP simulator: {} (Dataverse-like limits: 6000 requests / 300 s, 52 concurrent)",
            sim.postings_url()
        );

        let mut cfg = pipeline_config(spec, &nats.url, &[sim.postings_url()]);
        cfg.api.http = if std::net::TcpListener::bind(&args.http).is_ok() {
            args.http.clone()
        } else {
            "127.0.0.1:0".into()
        };
        let client = retailflow::bus::connect(&cfg.nats, "retailflow-demo").await?;
        let pipeline = Pipeline::start_with(cfg, retailflow::telemetry::Metrics::new()).await?;
        let http = pipeline.http_addr().context("HTTP API address")?;
        println!("retailflow: HTTP API on http://{http}\n");
        Ok(Running {
            nats,
            sim,
            client,
            pipeline,
            http,
        })
    }

    /// Publishes the day (setup and trading), waits until it is applied and the ERP settled,
    /// and says what happened; the oracle's books of it.
    async fn trade(&self, spec: &Scenario, world: &Arc<World>) -> Result<Oracle> {
        let js = async_nats::jetstream::new(self.client.clone());
        let mut generator = Generator::new(spec, world.clone());
        let mut oracle = Oracle::default();
        let mut ignore = |_: u64, _: std::time::Instant| {};
        let published = publish::publish(
            &js,
            &mut generator,
            &mut oracle,
            Until::End,
            512,
            &|_| None,
            &mut ignore,
            false,
        )
        .await
        .map_err(anyhow::Error::msg)?;
        println!(
            "published {} messages: {} events, {} duplicates (same Nats-Msg-Id), {} re-sends (no id), {} poison",
            published.messages,
            published.events,
            published.duplicates,
            published.resends,
            published.poison
        );
        let pipeline = &self.pipeline;
        if !settle::applied(pipeline, published.last_seq, Duration::from_secs(60)).await {
            bail!("the pipeline did not apply everything within 60 s");
        }
        let settle_time = settle::settle(pipeline, Duration::from_secs(60))
            .await
            .map_err(anyhow::Error::msg)?;
        let m = &pipeline.shared.metrics;
        println!(
            "applied {} events; dropped {} re-sends and {} redeliveries; {} dead letters; ERP settled {:.1} s after the last event\n",
            m.events_applied.load(Relaxed),
            m.duplicates_resent.load(Relaxed),
            m.duplicates_redelivered.load(Relaxed),
            m.dead_letters.load(Relaxed),
            settle_time.as_secs_f64()
        );
        Ok(oracle)
    }

    /// Availability of the first SKUs through the real API.
    async fn show_availability(&self, world: &World) -> Result<()> {
        let http = self.http;
        println!("-- availability (GET /v1/availability/{{sku}}?channel=web&location=...) --");
        let http_client = reqwest::Client::new();
        let every_location: String = world
            .locations
            .iter()
            .map(|l| format!("&location={l}"))
            .collect();
        for sku in world.skus.iter().take(4) {
            let url = format!(
                "http://{http}/v1/availability/{}?channel=web{every_location}",
                sku.id
            );
            let body: serde_json::Value = http_client.get(&url).send().await?.json().await?;
            let web = body["channel"]["available"].as_i64().unwrap_or(0);
            println!("{}  web: {web:>4}  (as_of {})", sku.id, body["as_of"]);
            for l in body["locations"].as_array().into_iter().flatten() {
                println!(
                    "    {:<6} on_hand {:>4}  reserved {:>3}  safety {:>2}  in_transit {:>3}  available {:>4}",
                    l["location"].as_str().unwrap_or(""),
                    l["on_hand"],
                    l["reserved"],
                    l["safety_stock"],
                    l["in_transit"],
                    l["available"]
                );
            }
        }
        let all_loc_url = format!("http://{http}/v1/availability/{}", world.skus[0].id);
        println!("try: curl -s '{all_loc_url}'\n");
        Ok(())
    }

    async fn stop(self) {
        self.pipeline.shutdown(Duration::from_secs(10)).await;
        self.sim.shutdown().await;
        drop(self.nats);
    }
}

/// The ERP's books against the tills, per store; whether every store matches.
fn compare_books(sim: &ErpSim, oracle: &Oracle) -> bool {
    let totals = sim.totals();
    let stats = sim.stats();
    println!(
        "-- ERP: {} documents accepted, {} requests, {} replays, {} throttled, peak {} requests in a window (limit {}) --",
        totals.documents,
        stats.requests,
        stats.replays,
        stats.throttled,
        stats.max_in_window,
        stats.limit_requests
    );
    let mut erp_sales: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for s in &totals.sales {
        let e = erp_sales.entry(s.location.to_string()).or_default();
        e.0 += s.sales_amount - s.returns_amount;
        e.1 += s.tax_amount;
    }
    let mut erp_tenders: BTreeMap<String, i64> = BTreeMap::new();
    for t in &totals.tenders {
        *erp_tenders.entry(t.location.to_string()).or_default() += t.paid - t.refunded;
    }
    let mut src_sales: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for ((loc, _, _), t) in &oracle.sales {
        let e = src_sales.entry(loc.clone()).or_default();
        e.0 += t.sales_amount - t.returns_amount;
        e.1 += t.tax_amount;
    }
    let mut src_tenders: BTreeMap<String, i64> = BTreeMap::new();
    for ((loc, _), t) in &oracle.tenders {
        *src_tenders.entry(loc.clone()).or_default() += t.paid - t.refunded;
    }
    let mut all_match = true;
    println!(
        "{:<7} {:>14} {:>14} {:>12} {:>12} {:>14} {:>14}",
        "store", "net sales (ERP)", "(tills)", "tax (ERP)", "(tills)", "tenders (ERP)", "(tills)"
    );
    for (loc, (net, tax)) in &src_sales {
        let (enet, etax) = erp_sales.get(loc).copied().unwrap_or_default();
        let (et, st) = (
            erp_tenders.get(loc).copied().unwrap_or(0),
            src_tenders.get(loc).copied().unwrap_or(0),
        );
        let ok = enet == *net && etax == *tax && et == st;
        all_match &= ok;
        println!(
            "{loc:<7} {:>15} {:>14} {:>12} {:>12} {:>14} {:>14}  {}",
            money(enet),
            money(*net),
            money(etax),
            money(*tax),
            money(et),
            money(st),
            if ok { "match" } else { "MISMATCH" }
        );
    }
    all_match
}

pub async fn run(args: DemoArgs) -> Result<ExitCode> {
    let spec: Scenario = toml::from_str(DEMO).context("the built-in demo scenario")?;
    spec.check().map_err(anyhow::Error::msg)?;
    let world = Arc::new(World::build(&spec).map_err(anyhow::Error::msg)?);

    println!(
        "== retailflow demo: {} stores, {} DC, web shop, {} SKUs, {} trading events\n",
        spec.world.stores, spec.world.dcs, spec.world.skus, spec.load.events
    );
    let running = Running::start(&spec, &args).await?;
    let oracle = running.trade(&spec, &world).await?;
    running.show_availability(&world).await?;
    let all_match = compare_books(&running.sim, &oracle);
    println!(
        "\ncurrency {}, business day {}; amounts net of discounts and returns",
        world.currency, world.day
    );
    if args.keep_running {
        let http = running.http;
        println!(
            "\nstill running; try the API:\n  curl -s http://{http}/v1/availability/{}?channel=web\n  curl -s http://{http}/metrics\nctrl-c to stop",
            world.skus[0].id
        );
        tokio::signal::ctrl_c().await?;
    }
    running.stop().await;
    if all_match {
        println!("\nthe ERP's books equal the tills' totals to the cent.");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("\nthe ERP's books differ from the tills' totals (see MISMATCH above).");
        Ok(ExitCode::FAILURE)
    }
}
