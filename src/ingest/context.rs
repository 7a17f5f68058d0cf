//! What ingest holds: the configuration (it reads the stream, dedupes, prunes keys and cuts
//! barriers by it), JetStream for its consumer, the metrics, the pipeline's flow, the dead
//! letters, and the store context it hands to the store actors it starts.

use crate::aggregate::actor::StoreContext;
use crate::config::Config;
use crate::deadletter::DeadLetters;
use crate::shared::Flow;
use crate::telemetry::Metrics;
use async_nats::jetstream;
use std::sync::Arc;

pub struct IngestContext {
    /// Appended to actor and consumer names: several pipelines may run in one process.
    pub tag: String,
    pub config: Arc<Config>,
    pub js: jetstream::Context,
    pub metrics: Arc<Metrics>,
    pub flow: Arc<Flow>,
    pub dead_letters: DeadLetters,
    /// For the store actors ingest starts on a store's first event.
    pub store: StoreContext,
}
