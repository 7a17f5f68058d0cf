//! Running a scenario: bring up NATS, ERP simulators and the pipeline, publish, measure,
//! verify against the oracle, report.

use super::spec::Scenario;
use crate::config::{Config, ErpEndpointConfig};
use crate::post::ratelimit::RateLimit;

/// The service configuration a scenario runs with: defaults, the scenario's pipeline
/// settings, and one endpoint per ERP simulator URL.
pub fn pipeline_config(spec: &Scenario, nats_url: &str, erp_urls: &[String]) -> Config {
    let mut c = Config::default();
    c.nats.url = nats_url.to_string();
    c.shards.count = spec.pipeline.shards;
    c.ingest.batch = spec.pipeline.batch;
    c.ingest.credit = spec.pipeline.credit;
    c.barrier.interval = std::time::Duration::from_millis(250);
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
            ..ErpEndpointConfig::default()
        })
        .collect();
    c
}
