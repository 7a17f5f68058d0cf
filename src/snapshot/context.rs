//! What the snapshot room holds: the barrier ticker and the coordinator read the configuration
//! (cadence, ERP endpoints, shard count), publish through JetStream, count in the metrics; the
//! ticker also watches how far the view has applied and pauses the flow for an ERP backlog.

use crate::config::Config;
use crate::shared::Flow;
use crate::telemetry::Metrics;
use crate::view::View;
use async_nats::jetstream;
use std::sync::Arc;

#[derive(Clone)]
pub struct SnapshotContext {
    pub config: Arc<Config>,
    pub js: jetstream::Context,
    pub metrics: Arc<Metrics>,
    pub view: Arc<View>,
    pub flow: Arc<Flow>,
}
