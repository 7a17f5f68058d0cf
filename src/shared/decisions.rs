//! Hand-off of reservation decisions from shard actors to the API callers waiting for them.
//!
//! The API registers a waiter under the reservation id before it publishes the request event;
//! the owning shard completes every waiter of that id when it applies the event.

use crate::domain::ReservationId;
use dashmap::DashMap;
use retailflow_core::apply::ledger::{Decision, DecisionState};
use tokio::sync::oneshot;

/// Which decisions under an id a waiter takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// The answer to this request (its fingerprint): two requests under one key each get
    /// their own answer, the first its decision and the other its conflict.
    Request(u64),
    /// Whatever happens to the reservation (a release), but not a conflict of another request.
    Outcome,
}

impl Want {
    fn takes(self, d: &Decision) -> bool {
        match self {
            Want::Request(fp) => d.request == fp || d.request == 0,
            Want::Outcome => d.state != DecisionState::Conflict,
        }
    }
}

type Waiter = (Want, oneshot::Sender<Decision>);

#[derive(Default)]
pub struct Decisions {
    waiters: DashMap<ReservationId, Vec<Waiter>>,
}

impl Decisions {
    pub fn wait(&self, id: &ReservationId, want: Want) -> oneshot::Receiver<Decision> {
        let (tx, rx) = oneshot::channel();
        self.waiters.entry(id.clone()).or_default().push((want, tx));
        rx
    }

    pub fn complete(&self, decision: &Decision) {
        let id = &decision.reservation_id;
        let Some(mut waiters) = self.waiters.get_mut(id) else {
            return;
        };
        let mut i = 0;
        while i < waiters.len() {
            if waiters[i].0.takes(decision) {
                let (_, tx) = waiters.swap_remove(i);
                let _ = tx.send(decision.clone());
            } else {
                i += 1;
            }
        }
        let empty = waiters.is_empty();
        drop(waiters);
        if empty {
            self.waiters.remove_if(id, |_, v| v.is_empty());
        }
    }

    /// Drops waiters whose caller gave up.
    pub fn forget_closed(&self) {
        self.waiters.retain(|_, v| {
            v.retain(|(_, tx)| !tx.is_closed());
            !v.is_empty()
        });
    }

    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }
}

/// Reservations currently holding stock, as the shards report them: lets the API find the sku
/// of a reservation id (to route a release) and lets the expiry timer find what is due.
#[derive(Default)]
pub struct ActiveReservations {
    by_id: DashMap<ReservationId, (crate::domain::Sku, i64, Decision)>,
    by_expiry: std::sync::Mutex<std::collections::BTreeSet<(i64, ReservationId)>>,
}

impl ActiveReservations {
    /// Shard side: records the current state of a reservation.
    pub fn update(&self, d: &Decision) {
        if d.state == DecisionState::Active {
            self.by_id.insert(
                d.reservation_id.clone(),
                (d.sku.clone(), d.expires_at_ms, d.clone()),
            );
            if let Ok(mut e) = self.by_expiry.lock() {
                e.insert((d.expires_at_ms, d.reservation_id.clone()));
            }
        } else if let Some((_, (_, exp, _))) = self.by_id.remove(&d.reservation_id) {
            if let Ok(mut e) = self.by_expiry.lock() {
                e.remove(&(exp, d.reservation_id.clone()));
            }
        }
    }

    pub fn get(&self, id: &ReservationId) -> Option<(crate::domain::Sku, Decision)> {
        self.by_id.get(id).map(|e| (e.0.clone(), e.2.clone()))
    }

    /// Reservations whose expiry is at or before `now_ms`, oldest first, at most `limit`.
    pub fn due(&self, now_ms: i64, limit: usize) -> Vec<(ReservationId, crate::domain::Sku)> {
        let Ok(e) = self.by_expiry.lock() else {
            return Vec::new();
        };
        e.iter()
            .take_while(|(t, _)| *t <= now_ms)
            .take(limit)
            .filter_map(|(_, id)| self.by_id.get(id).map(|v| (id.clone(), v.0.clone())))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn clear(&self) {
        self.by_id.clear();
        if let Ok(mut e) = self.by_expiry.lock() {
            e.clear();
        }
    }
}
