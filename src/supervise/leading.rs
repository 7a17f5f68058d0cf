//! The lease loop of a replica: one round when the pipeline starts (so it knows whether it
//! leads before anything runs), then a round every quarter lease until shutdown, each outcome
//! recorded in the pipeline's `Leadership` and its metrics; a change of role is passed to the
//! supervisor, which starts or stops ERP delivery.

use super::supervisor::SupervisorMsg;
use crate::bus::lease::{Lease, LeaseConfig, Role};
use crate::bus::{self, BusError};
use crate::config::Config;
use crate::shared::leader::Leadership;
use crate::telemetry::Metrics;
use ractor::ActorRef;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tokio::sync::watch;

/// Opens the lease bucket and plays the first round.
pub async fn open(
    js: &async_nats::jetstream::Context,
    config: &Config,
    leadership: &Leadership,
    metrics: &Metrics,
) -> Result<Lease, BusError> {
    let cfg = LeaseConfig {
        bucket: config.leader.bucket.clone(),
        key: config.streams.events.clone(),
        instance: leadership.instance().to_string(),
        lease: config.leader.lease,
        replicas: config.streams.replicas,
        storage: bus::streams::storage(config.streams.storage),
    };
    let mut lease = Lease::open(js, &cfg).await?;
    let role = lease.round().await;
    record(leadership, metrics, &role);
    match &role {
        Role::Leader { term } => tracing::info!(term, "this replica leads"),
        Role::Follower { leader } => {
            tracing::info!(
                leader = leader.as_deref().unwrap_or("nobody yet"),
                "this replica follows"
            )
        }
    }
    Ok(lease)
}

fn record(leadership: &Leadership, metrics: &Metrics, role: &Role) -> bool {
    let changed = match role {
        Role::Leader { term } => leadership.set(true, *term, None),
        Role::Follower { leader } => leadership.set(false, 0, leader.clone()),
    };
    let leads = leadership.leads();
    metrics.leader.store(leads as u64, Relaxed);
    metrics.leader_term.store(leadership.term(), Relaxed);
    if changed {
        metrics.leader_changes.fetch_add(1, Relaxed);
    }
    changed
}

/// Plays rounds until `stop`, then gives the lease up.
pub async fn campaign(
    mut lease: Lease,
    leadership: Arc<Leadership>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(lease.interval()) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
        let role = lease.round().await;
        if record(&leadership, &metrics, &role) {
            tracing::warn!(?role, "leadership changed");
        }
    }
    lease.resign().await;
    record(&leadership, &metrics, &Role::Follower { leader: None });
}

/// Tells the supervisor whenever this replica starts or stops leading (whatever changed it:
/// the lease, or the lab forcing it).
pub async fn forward(leadership: Arc<Leadership>, supervisor: ActorRef<SupervisorMsg>) {
    let mut changes = leadership.watch();
    // The current role first: it may have changed since the supervisor started. Telling the
    // supervisor its role again changes nothing.
    let mut last = None;
    loop {
        let leads = *changes.borrow_and_update();
        if last != Some(leads) {
            last = Some(leads);
            if supervisor
                .send_message(SupervisorMsg::Leading(leads))
                .is_err()
            {
                return;
            }
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}
