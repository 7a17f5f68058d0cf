//! The parts of one running pipeline, as the wiring holds them, and the narrow context each
//! actor and front end is given. Only `supervise` sees all of them: a shard gets what a shard
//! uses (`ShardContext`), a store actor what it uses (`StoreContext`), and so on, so no room
//! below reaches into another's state through a shared bag.

use crate::aggregate::actor::StoreContext;
use crate::apply::shard::ShardContext;
use crate::config::Config;
use crate::deadletter::DeadLetters;
use crate::ingest::context::IngestContext;
use crate::post::endpoint::EndpointContext;
use crate::post::postgres::status::ImportStatus;
use crate::query::context::QueryContext;
use crate::shared::Flow;
use crate::shared::changes::ChangeFeed;
use crate::shared::decisions::{ActiveReservations, Decisions};
use crate::shared::leader::Leadership;
use crate::snapshot::context::SnapshotContext;
use crate::telemetry::Metrics;
use crate::view::View;
use async_nats::jetstream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Shared {
    /// Appended to actor names: ractor's registry is per process, and a test process may run
    /// several pipelines.
    pub tag: String,
    pub config: Arc<Config>,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub metrics: Arc<Metrics>,
    pub view: Arc<View>,
    /// Credits, pause, stop, poisoned events (and the lab's hooks).
    pub flow: Arc<Flow>,
    pub decisions: Arc<Decisions>,
    pub active: Arc<ActiveReservations>,
    /// SKUs changed since the change feed last published.
    pub feed: Arc<ChangeFeed>,
    pub dead_letters: DeadLetters,
    /// Whether this replica performs the side effects.
    pub leadership: Arc<Leadership>,
    /// Store days and the ERP's answers, for reconciliation.
    pub finance: Arc<crate::finance::books::Books>,
    /// Import verdicts of `postgres` endpoints, and their receiver until the task that records
    /// them takes it.
    pub imports: (
        tokio::sync::mpsc::Sender<ImportStatus>,
        std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<ImportStatus>>>,
    ),
}

impl Shared {
    pub fn new(
        config: Arc<Config>,
        client: async_nats::Client,
        metrics: Arc<Metrics>,
    ) -> Arc<Shared> {
        static STARTED: AtomicU64 = AtomicU64::new(0);
        let js = jetstream::new(client.clone());
        Arc::new(Shared {
            tag: format!("@{}", STARTED.fetch_add(1, Ordering::Relaxed)),
            view: View::new(config.shards.count),
            feed: Arc::new(ChangeFeed::new(config.feed.enabled)),
            dead_letters: DeadLetters::new(js.clone(), metrics.clone()),
            flow: Arc::new(Flow::default()),
            decisions: Arc::new(Decisions::default()),
            active: Arc::new(ActiveReservations::default()),
            leadership: Arc::new(Leadership::new(
                config.leader.instance_name(),
                config.leader.elect,
            )),
            imports: {
                let (tx, rx) = tokio::sync::mpsc::channel(1024);
                (tx, std::sync::Mutex::new(Some(rx)))
            },
            finance: Arc::new(crate::finance::books::Books::new(
                &config.erp,
                config.finance.max_listed_documents,
            )),
            config,
            client,
            js,
            metrics,
        })
    }

    pub fn shard(&self) -> ShardContext {
        ShardContext {
            flow: self.flow.clone(),
            metrics: self.metrics.clone(),
            view: self.view.clone(),
            feed: self.feed.clone(),
            decisions: self.decisions.clone(),
            active: self.active.clone(),
            dead_letters: self.dead_letters.clone(),
            reservations: self.config.reservations.clone(),
        }
    }

    pub fn store(&self) -> StoreContext {
        StoreContext {
            flow: self.flow.clone(),
            metrics: self.metrics.clone(),
            finance: self.finance.clone(),
            close_grace_ms: i64::try_from(self.config.finance.close_grace.as_millis())
                .unwrap_or(i64::MAX),
        }
    }

    pub fn ingest(&self) -> Arc<IngestContext> {
        Arc::new(IngestContext {
            tag: self.tag.clone(),
            config: self.config.clone(),
            js: self.js.clone(),
            metrics: self.metrics.clone(),
            flow: self.flow.clone(),
            dead_letters: self.dead_letters.clone(),
            store: self.store(),
        })
    }

    pub fn endpoint(&self) -> EndpointContext {
        EndpointContext {
            postings: self.config.streams.postings.clone(),
            js: self.js.clone(),
            dead_letters: self.dead_letters.clone(),
            metrics: self.metrics.clone(),
            flow: self.flow.clone(),
            // The ERP's import verdicts go to reconciliation (`post::imports`).
            import_status: Some(self.imports.0.clone()),
        }
    }

    pub fn snapshot(&self) -> Arc<SnapshotContext> {
        Arc::new(SnapshotContext {
            config: self.config.clone(),
            js: self.js.clone(),
            metrics: self.metrics.clone(),
            view: self.view.clone(),
            flow: self.flow.clone(),
            leader: self.leadership.clone(),
        })
    }

    pub fn query(&self) -> Arc<QueryContext> {
        Arc::new(QueryContext {
            config: self.config.clone(),
            client: self.client.clone(),
            js: self.js.clone(),
            metrics: self.metrics.clone(),
            view: self.view.clone(),
            flow: self.flow.clone(),
            decisions: self.decisions.clone(),
            active: self.active.clone(),
            feed: self.feed.clone(),
            leader: self.leadership.clone(),
            finance: self.finance.clone(),
        })
    }
}
