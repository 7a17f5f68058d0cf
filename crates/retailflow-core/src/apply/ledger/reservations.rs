//! Reservations: the first decision per reservation id is remembered (retries get the same
//! answer, a reused key with another request is a conflict), held stock is given back on
//! release or expiry, and remembered rejections are capped and pruned.

use super::sourcing::Allocs;
use super::{ApplyError, Ledger};
use crate::domain::{LocationId, ReservationId, ReservationRequested, Sku, Target};
use serde::{Deserialize, Serialize};

/// State of a reservation id: the first decision is remembered so retries get the same answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResvState {
    Active,
    Rejected { available: i64 },
    Released,
    Expired,
    Consumed,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reservation {
    pub sku: u32,
    pub requested: i64,
    pub allocs: Allocs,
    pub expires_at_ms: i64,
    pub state: ResvState,
    /// Stream sequence of the request that created it.
    pub decided_at: u64,
    /// [`request_fingerprint`] of that request (0 in snapshots from before it was kept).
    #[serde(default)]
    pub request: u64,
}

/// What identifies a reservation request besides its key: the same key with another
/// fingerprint is another request and is refused. The expiry is left out (a retry computes a
/// new one). FNV-1a, written out so the value is stable across builds (it is snapshotted).
pub fn request_fingerprint(r: &ReservationRequested) -> u64 {
    fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }
    let mut h = fnv(0xcbf2_9ce4_8422_2325, r.sku.as_str().as_bytes());
    h = fnv(h, &[0xff]);
    h = fnv(h, &r.qty.to_le_bytes());
    h = match &r.target {
        Target::Location(l) => fnv(fnv(h, b"L"), l.as_str().as_bytes()),
        Target::Channel(c) => fnv(fnv(h, b"C"), c.as_str().as_bytes()),
    };
    h = fnv(h, &[r.allow_partial as u8]);
    // 0 means "unknown" in old snapshots; never produce it.
    h.max(1)
}

/// A decision's state, as the API reports it. Hand this on rather than its text: it serialises
/// as the snake_case name [`DecisionState::as_str`] gives (`"active"`, `"rejected"`, ...), so a
/// field of this type reads and writes the same JSON as a string field holding that name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionState {
    Active,
    Rejected,
    Released,
    Expired,
    /// Taken over by an order.
    Consumed,
    /// The key is bound to another request; nothing was decided for this one.
    Conflict,
}

impl DecisionState {
    /// Every state, in declaration order.
    pub const ALL: [DecisionState; 6] = [
        DecisionState::Active,
        DecisionState::Rejected,
        DecisionState::Released,
        DecisionState::Expired,
        DecisionState::Consumed,
        DecisionState::Conflict,
    ];

    /// The wire name (the serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionState::Active => "active",
            DecisionState::Rejected => "rejected",
            DecisionState::Released => "released",
            DecisionState::Expired => "expired",
            DecisionState::Consumed => "consumed",
            DecisionState::Conflict => "conflict",
        }
    }
}

impl std::fmt::Display for DecisionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of a reservation request as the API reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub reservation_id: ReservationId,
    pub sku: Sku,
    pub granted: bool,
    /// Granted quantities per location (empty when rejected).
    pub allocations: Vec<(LocationId, i64)>,
    /// What could have been had at the time of the decision.
    pub available: i64,
    pub expires_at_ms: i64,
    /// Stream sequence at which the decision was taken.
    pub decided_at: u64,
    /// Current state (a retry after release reports `released`).
    pub state: DecisionState,
    /// [`request_fingerprint`] of the request this answers (0: unknown), so a waiter for one
    /// request is not handed the answer to another under the same key.
    pub request: u64,
}

/// Bounds on remembered reservations (configuration, not state).
#[derive(Clone, Copy, Debug, Default)]
pub struct ResvLimits {
    /// Rejections remembered at most (0: no cap).
    pub max_rejected: usize,
    /// How long past its would-be expiry a rejection is remembered.
    pub retain_rejected_ms: i64,
}

impl Ledger {
    /// Reservation decisions taken since the last call.
    pub fn take_decisions(&mut self) -> Vec<Decision> {
        std::mem::take(&mut self.decisions)
    }

    /// Reservations still holding stock, with their expiry (for the expiry timer).
    pub fn active_reservations(&self) -> impl Iterator<Item = (&ReservationId, &Sku, i64)> {
        self.reservations
            .iter()
            .filter(|(_, r)| r.state == ResvState::Active)
            .map(|(id, r)| (id, self.skus.name(r.sku), r.expires_at_ms))
    }

    /// Looks up the decision recorded for a reservation id.
    pub fn reservation(&self, id: &ReservationId) -> Option<Decision> {
        self.reservations.get(id).map(|r| self.decision_of(id, r))
    }

    /// Answers a request whose key is bound to another request: nothing changes.
    pub(super) fn refuse(&mut self, seq: u64, r: &ReservationRequested) {
        self.decisions.push(Decision {
            reservation_id: r.reservation_id.clone(),
            sku: r.sku.clone(),
            granted: false,
            allocations: Vec::new(),
            available: 0,
            expires_at_ms: r.expires_at_ms,
            decided_at: seq,
            state: DecisionState::Conflict,
            request: request_fingerprint(r),
        });
    }

    pub(super) fn reserve(&mut self, seq: u64, r: &ReservationRequested) -> Result<(), ApplyError> {
        let fp = request_fingerprint(r);
        if let Some(existing) = self.reservations.get(&r.reservation_id) {
            if existing.request != 0 && existing.request != fp {
                self.refuse(seq, r);
                return Ok(());
            }
            // Same key again: the first decision stands.
            let d = self.decision_of(&r.reservation_id, existing);
            self.decisions.push(d);
            return Ok(());
        }
        let Some(s) = self.skus.get(&r.sku) else {
            // A SKU this shard never saw has nothing to reserve. Answered without interning
            // it or remembering the rejection: requests must not grow the ledger for good.
            self.decisions.push(Decision {
                reservation_id: r.reservation_id.clone(),
                sku: r.sku.clone(),
                granted: false,
                allocations: Vec::new(),
                available: 0,
                expires_at_ms: r.expires_at_ms,
                decided_at: seq,
                state: DecisionState::Rejected,
                request: fp,
            });
            return Ok(());
        };
        let (allocs, total) = self.source(s, &r.target, r.qty, r.allow_partial, false);
        let state = if allocs.is_empty() {
            ResvState::Rejected { available: total }
        } else {
            ResvState::Active
        };
        for &(l, q) in &allocs {
            let slot = self.slot_of(s, l);
            self.add_reserved(slot, q)?;
        }
        let rec = Reservation {
            sku: s,
            requested: r.qty,
            allocs,
            expires_at_ms: r.expires_at_ms,
            state,
            decided_at: seq,
            request: fp,
        };
        let mut d = self.decision_of(&r.reservation_id, &rec);
        d.available = total;
        self.decisions.push(d);
        if matches!(rec.state, ResvState::Rejected { .. }) {
            self.rejected_order.push_back(r.reservation_id.clone());
            let cap = self.limits.max_rejected;
            while cap > 0 && self.rejected_order.len() > cap {
                let Some(old) = self.rejected_order.pop_front() else {
                    break;
                };
                if matches!(
                    self.reservations.get(&old).map(|o| &o.state),
                    Some(ResvState::Rejected { .. })
                ) {
                    self.reservations.remove(&old);
                    self.evicted += 1;
                }
            }
        }
        self.reservations.insert(r.reservation_id.clone(), rec);
        Ok(())
    }

    /// Sets the bounds on remembered reservations.
    pub fn set_limits(&mut self, limits: ResvLimits) {
        self.limits = limits;
    }

    /// Rejections forgotten at the cap since the last call.
    pub fn take_evicted(&mut self) -> u64 {
        std::mem::take(&mut self.evicted)
    }

    pub(super) fn end_reservation(
        &mut self,
        id: &ReservationId,
        end: ResvState,
    ) -> Result<(), ApplyError> {
        let Some(r) = self.reservations.get(id) else {
            return Ok(());
        };
        if r.state != ResvState::Active {
            return Ok(());
        }
        let (s, allocs) = (r.sku, r.allocs.clone());
        for (l, q) in allocs {
            let slot = self.slot_of(s, l);
            self.add_reserved(slot, -q)?;
        }
        if let Some(r) = self.reservations.get_mut(id) {
            r.state = end;
        }
        let d = self.reservations.get(id).map(|r| self.decision_of(id, r));
        self.decisions.extend(d);
        Ok(())
    }

    /// Forgets finished reservations whose expiry lies more than `retain_ms` before `now_ms`
    /// (a time carried by the stream, so pruning is deterministic).
    /// Rejections use the shorter `limits.retain_rejected_ms`.
    pub fn prune_reservations(&mut self, now_ms: i64, retain_ms: i64) {
        let retain_rejected = self.limits.retain_rejected_ms;
        self.reservations.retain(|_, r| match r.state {
            ResvState::Active => true,
            ResvState::Rejected { .. } => r.expires_at_ms.saturating_add(retain_rejected) >= now_ms,
            _ => r.expires_at_ms.saturating_add(retain_ms) >= now_ms,
        });
        let reservations = &self.reservations;
        self.rejected_order.retain(|id| {
            matches!(
                reservations.get(id).map(|r| &r.state),
                Some(ResvState::Rejected { .. })
            )
        });
    }

    fn decision_of(&self, id: &ReservationId, r: &Reservation) -> Decision {
        let (granted, available, state) = match &r.state {
            ResvState::Rejected { available } => (false, *available, DecisionState::Rejected),
            ResvState::Active => (true, 0, DecisionState::Active),
            ResvState::Released => (true, 0, DecisionState::Released),
            ResvState::Expired => (true, 0, DecisionState::Expired),
            ResvState::Consumed => (true, 0, DecisionState::Consumed),
        };
        Decision {
            reservation_id: id.clone(),
            sku: self.skus.name(r.sku).clone(),
            granted,
            allocations: r
                .allocs
                .iter()
                .map(|&(l, q)| (self.locs.name(l).clone(), q))
                .collect(),
            available,
            expires_at_ms: r.expires_at_ms,
            decided_at: r.decided_at,
            state,
            request: r.request,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_states_travel_under_their_names() {
        for s in DecisionState::ALL {
            let json = serde_json::to_value(s).unwrap();
            assert_eq!(json, serde_json::Value::from(s.as_str()), "{s:?}");
            assert_eq!(s.to_string(), s.as_str());
            let back: DecisionState = serde_json::from_value(json).unwrap();
            assert_eq!(back, s);
            let packed = rmp_serde::to_vec_named(&s).unwrap();
            assert_eq!(
                rmp_serde::from_slice::<String>(&packed).unwrap(),
                s.as_str()
            );
        }
    }
}
