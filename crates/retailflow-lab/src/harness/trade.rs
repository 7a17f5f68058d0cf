//! Setting up and trading: what the producers publish, with the oracle watching.

use super::{RunError, Stage};
use crate::generate::Generator;
use crate::oracle::Oracle;
use crate::publish::{self, OnStored, Pace, Published, Until};
use async_nats::jetstream;
use retailflow::domain::Envelope;
use retailflow::supervise::pipeline::Pipeline;
use std::time::Duration;

/// The producers of a scenario: their own connection, the generator, and the oracle that sees
/// every event they publish.
pub struct Trader {
    pub js: jetstream::Context,
    /// Acks outstanding at most.
    pub in_flight: usize,
    pub generator: Generator,
    pub oracle: Oracle,
    /// What the setup published.
    pub setup: Published,
}

impl Trader {
    /// Publishes the scenario's master data and opening stock over `client` as fast as acks
    /// allow. Whoever runs the pipeline waits for it to be applied.
    pub async fn setup(stage: &Stage, client: async_nats::Client) -> Result<Trader, RunError> {
        let in_flight = stage.spec.load.in_flight.max(1);
        let js = publish::load_context(client, in_flight);
        let mut generator = Generator::new(&stage.spec, stage.world.clone());
        let mut oracle = Oracle::default();
        let setup = publish::setup(&js, &mut generator, &mut oracle, in_flight)
            .await
            .map_err(RunError::Run)?;
        Ok(Trader {
            js,
            in_flight,
            generator,
            oracle,
            setup,
        })
    }

    /// Publishes the trading load to its end at `pace`; `on_stored` sees every stored message
    /// and `keep_sizes` keeps their sizes (for the ceiling).
    pub async fn trade(
        &mut self,
        pace: Pace<'_>,
        on_stored: OnStored<'_>,
        keep_sizes: bool,
    ) -> Result<Published, RunError> {
        publish::publish(
            &self.js,
            &mut self.generator,
            &mut self.oracle,
            Until::End,
            self.in_flight,
            pace,
            on_stored,
            keep_sizes,
        )
        .await
        .map_err(RunError::Run)
    }
}

/// Publishes setup envelopes (opening stock) and waits until the pipeline has applied them;
/// `late` is the error when it has not within `limit`. Returns the last stream sequence.
pub async fn setup_stock(
    js: &jetstream::Context,
    systems: &[String],
    envelopes: impl Iterator<Item = Envelope>,
    pipeline: &Pipeline,
    limit: Duration,
    late: &str,
) -> anyhow::Result<u64> {
    let last = publish::publish_envelopes(js, systems, envelopes).await?;
    anyhow::ensure!(pipeline.shared.view.wait_all(last, limit).await, "{late}");
    Ok(last)
}
