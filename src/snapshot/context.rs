//! What the snapshot room holds: the barrier ticker and the coordinator read the configuration
//! (cadence, ERP endpoints, shard count), publish through JetStream, count in the metrics; the
//! ticker also watches how far the view has applied and pauses the flow for an ERP backlog.
//! Only the leader publishes barriers, writes snapshots and releases postings; a follower forms
//! the same documents and holds them until the leader's release marker passes them.

use crate::config::Config;
use crate::shared::Flow;
use crate::shared::leader::Leadership;
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
    /// Barriers, snapshots and releases are the leader's.
    pub leader: Arc<Leadership>,
}
