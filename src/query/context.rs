//! What the front ends hold: the view they answer from, the reservation decisions they wait
//! for, the change feed they publish, the NATS client and JetStream they answer and publish
//! through, the configuration of the API, the metrics, and the pipeline's flow (to stop with
//! it and to report a pause).

use crate::config::Config;
use crate::shared::Flow;
use crate::shared::changes::ChangeFeed;
use crate::shared::decisions::{ActiveReservations, Decisions};
use crate::shared::leader::Leadership;
use crate::telemetry::Metrics;
use crate::view::View;
use async_nats::jetstream;
use std::sync::Arc;

pub struct QueryContext {
    pub config: Arc<Config>,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub metrics: Arc<Metrics>,
    pub view: Arc<View>,
    pub flow: Arc<Flow>,
    pub decisions: Arc<Decisions>,
    pub active: Arc<ActiveReservations>,
    pub feed: Arc<ChangeFeed>,
    /// Reservation expiry and the change feed are the leader's.
    pub leader: Arc<Leadership>,
    /// Store days and the ERP's answers (reconciliation).
    pub finance: Arc<crate::finance::books::Books>,
}
