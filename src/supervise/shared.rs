//! What every actor of one pipeline shares: configuration, NATS handles, metrics, the view,
//! the credit counter that bounds work in flight.

use crate::apply::view::View;
use crate::config::Config;
use crate::ingest::deadletter::DeadLetters;
use crate::query::decisions::{ActiveReservations, Decisions};
use crate::query::feed::ChangeFeed;
use crate::telemetry::Metrics;
use async_nats::jetstream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::Notify;

/// Work dispatched to actors but not yet applied. Ingest adds, actors subtract; ingest stops
/// pulling while the balance is above the configured credit.
#[derive(Default)]
pub struct Credits {
    in_flight: AtomicU64,
    freed: Notify,
}

impl Credits {
    pub fn take(&self, n: u64) {
        self.in_flight.fetch_add(n, Ordering::AcqRel);
    }

    pub fn give_back(&self, n: u64) {
        self.in_flight.fetch_sub(n, Ordering::AcqRel);
        self.freed.notify_waiters();
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Waits until at most `limit` is in flight (re-checking at least every 50 ms).
    pub async fn wait_below(&self, limit: u64) {
        while self.in_flight() > limit {
            let notified = self.freed.notified();
            if self.in_flight() <= limit {
                break;
            }
            let _ = tokio::time::timeout(std::time::Duration::from_millis(50), notified).await;
        }
    }

    pub fn reset(&self) {
        self.in_flight.store(0, Ordering::Release);
        self.freed.notify_waiters();
    }
}

pub struct Shared {
    /// Appended to actor names: ractor's registry is per process, and a test process may run
    /// several pipelines.
    pub tag: String,
    pub config: Arc<Config>,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub metrics: Arc<Metrics>,
    pub view: Arc<View>,
    pub credits: Credits,
    /// Set while the ERP backlog is above `barrier.backlog_pause`.
    pub paused: AtomicBool,
    /// Set by a scenario that wants a backlog to build before ingest drains it.
    pub hold: AtomicBool,
    pub decisions: Arc<Decisions>,
    pub active: Arc<ActiveReservations>,
    /// SKUs changed since the change feed last published.
    pub feed: ChangeFeed,
    pub dead_letters: DeadLetters,
    /// Set once a shutdown was requested; actors stop taking new work.
    pub stopping: AtomicBool,
}

impl Shared {
    pub fn new(
        config: Arc<Config>,
        client: async_nats::Client,
        metrics: Arc<Metrics>,
    ) -> Arc<Shared> {
        let js = jetstream::new(client.clone());
        let view = View::new(config.shards.count);
        static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Arc::new(Shared {
            tag: format!(
                "@{}",
                STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
            feed: ChangeFeed::new(config.feed.enabled),
            dead_letters: DeadLetters::new(js.clone(), metrics.clone()),
            config,
            client,
            js,
            metrics,
            view,
            credits: Credits::default(),
            paused: AtomicBool::new(false),
            hold: AtomicBool::new(false),
            decisions: Arc::new(Decisions::default()),
            active: Arc::new(ActiveReservations::default()),
            stopping: AtomicBool::new(false),
        })
    }
}
