//! Starting a scenario: the message bus, the ERP simulators, the pipeline.

use super::{RunError, setup};
use crate::spec::{ErpSpec, Scenario};
use crate::world::World;
use erp_sim::{ErpSim, ErpSimConfig};
use retailflow::bus::server::NatsServer;
use retailflow::config::{Config, ErpEndpointConfig};
use retailflow::post::ratelimit::RateLimit;
use retailflow::supervise::pipeline::Pipeline;
use std::sync::Arc;
use std::time::Duration;

/// Starts a private nats-server (its store in a temporary directory; stopped and removed when
/// dropped). Starting it blocks, so it runs on the blocking pool.
pub async fn private_server() -> Result<NatsServer, RunError> {
    tokio::task::spawn_blocking(NatsServer::start)
        .await
        .map_err(setup("starting nats-server"))?
        .map_err(setup("starting nats-server"))
}

/// The NATS server a scenario runs on: one it was given, or a private one started for it.
pub struct Bus {
    pub url: String,
    /// The nats-server started here, if the scenario was not given one.
    pub server: Option<NatsServer>,
}

impl Bus {
    /// The server at `given`, or a private one.
    pub async fn start(given: Option<&str>) -> Result<Bus, RunError> {
        match given {
            Some(url) => Ok(Bus {
                url: url.to_string(),
                server: None,
            }),
            None => {
                let server = private_server().await?;
                Ok(Bus {
                    url: server.url(),
                    server: Some(server),
                })
            }
        }
    }

    /// Kills the private nats-server and starts it again on the same store.
    pub fn restart(&mut self) -> Result<(), String> {
        match &mut self.server {
            Some(server) => server.restart().map_err(|e| e.to_string()),
            None => Err("no nats-server was started here".into()),
        }
    }
}

/// Nice value of the ERP simulators' threads: the ERP stands in for another machine and gets
/// the data path's share of the CPU, not the API's.
const SIM_NICE: i32 = 10;

/// The ERP simulator settings for one endpoint of a scenario.
fn sim_config(spec: &Scenario, e: &ErpSpec) -> ErpSimConfig {
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

/// One ERP simulator per endpoint of the scenario.
async fn start_sims(spec: &Scenario) -> Result<Vec<ErpSim>, RunError> {
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

/// Starts the pipeline in this process.
pub async fn start_pipeline(cfg: Config) -> Result<Pipeline, RunError> {
    Pipeline::start(cfg).await.map_err(setup("pipeline"))
}

/// `http://address` of the pipeline's HTTP API.
pub fn http_base(pipeline: &Pipeline) -> Result<String, RunError> {
    Ok(format!(
        "http://{}",
        pipeline
            .http_addr()
            .ok_or_else(|| RunError::Setup("no HTTP API".into()))?
    ))
}

/// What a scenario runs on before the pipeline starts: the scenario as run, its world, the
/// message bus and the ERP simulators.
pub struct Stage {
    /// The scenario as run: its smoke version or itself.
    pub spec: Scenario,
    pub world: Arc<World>,
    pub bus: Bus,
    /// Shared with whatever watches them during the run; [`Stage::stop`] needs them back.
    pub sims: Arc<Vec<ErpSim>>,
}

impl Stage {
    /// Builds the world of `spec` (its smoke version with `smoke`) and starts the message bus
    /// (the one at `nats`, or a private nats-server) and the ERP simulators.
    pub async fn start(
        spec: &Scenario,
        smoke: bool,
        nats: Option<&str>,
    ) -> Result<Stage, RunError> {
        let spec = if smoke { spec.smoke() } else { spec.clone() };
        let world = Arc::new(World::build(&spec).map_err(RunError::Setup)?);
        let bus = Bus::start(nats).await?;
        let sims = Arc::new(start_sims(&spec).await?);
        Ok(Stage {
            spec,
            world,
            bus,
            sims,
        })
    }

    /// The pipeline's configuration for this stage: its bus, one endpoint per simulator.
    pub fn pipeline_config(&self) -> Config {
        let urls: Vec<String> = self.sims.iter().map(|s| s.postings_url()).collect();
        pipeline_config(&self.spec, &self.bus.url, &urls)
    }

    /// Shuts the ERP simulators down, then stops the private nats-server.
    pub async fn stop(self) -> Result<(), RunError> {
        let sims = Arc::try_unwrap(self.sims)
            .map_err(|_| RunError::Run("ERP simulators still shared".into()))?;
        for s in sims {
            s.shutdown().await;
        }
        drop(self.bus);
        Ok(())
    }
}
