//! Hand-off of reservation decisions from shard actors to the API callers waiting for them.
//!
//! The API registers a waiter under the reservation id before it publishes the request event;
//! the owning shard completes every waiter of that id when it applies the event.

use crate::apply::ledger::Decision;
use crate::domain::ReservationId;
use dashmap::DashMap;
use tokio::sync::oneshot;

#[derive(Default)]
pub struct Decisions {
    waiters: DashMap<ReservationId, Vec<oneshot::Sender<Decision>>>,
}

impl Decisions {
    pub fn wait(&self, id: &ReservationId) -> oneshot::Receiver<Decision> {
        let (tx, rx) = oneshot::channel();
        self.waiters.entry(id.clone()).or_default().push(tx);
        rx
    }

    pub fn complete(&self, decision: &Decision) {
        if let Some((_, senders)) = self.waiters.remove(&decision.reservation_id) {
            for tx in senders {
                let _ = tx.send(decision.clone());
            }
        }
    }

    /// Drops waiters whose caller gave up.
    pub fn forget_closed(&self) {
        self.waiters.retain(|_, v| {
            v.retain(|tx| !tx.is_closed());
            !v.is_empty()
        });
    }

    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }
}
