//! Reservation idempotency keys, across all shards.
//!
//! A key is the reservation's id, and a shard remembers only the ids of its own SKUs, so
//! without this the same key sent for a SKU of another shard was decided again: a second
//! grant under the same id. Ingest reads every request in stream order, so it keeps the one
//! global map from key to the request it first came with, and turns a later request with the
//! same key but a different content into a refusal for the shard to report. The map is a
//! function of the stream prefix and travels in the snapshot with the dedupe state, so a
//! replay refuses the same requests. Plain data, no clock: pruning takes the barrier's time.

use crate::apply::ledger::request_fingerprint;
use crate::domain::{ReservationId, ReservationRequested};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReservationKeys {
    /// Key -> (fingerprint of its first request, that request's expiry).
    keys: FxHashMap<ReservationId, (u64, i64)>,
}

impl ReservationKeys {
    /// Whether `r` may go to its shard: a new key (now bound to `r`) or the same request
    /// again. `false`: the key is bound to another request.
    pub fn admit(&mut self, r: &ReservationRequested) -> bool {
        let fp = request_fingerprint(r);
        match self.keys.get(&r.reservation_id) {
            Some(&(bound, _)) => bound == fp,
            None => {
                self.keys
                    .insert(r.reservation_id.clone(), (fp, r.expires_at_ms));
                true
            }
        }
    }

    /// Forgets keys whose reservation expired more than `retain_ms` before `now_ms` (the
    /// time the barrier carries, as the shards prune theirs).
    pub fn prune(&mut self, now_ms: i64, retain_ms: i64) {
        self.keys
            .retain(|_, (_, expires)| expires.saturating_add(retain_ms) >= now_ms);
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{LocationId, Sku, Target};

    fn req(key: &str, sku: &str, qty: i64, expires: i64) -> ReservationRequested {
        ReservationRequested {
            reservation_id: ReservationId::from(key),
            sku: Sku::from(sku),
            qty,
            target: Target::Location(LocationId::from("DC1")),
            expires_at_ms: expires,
            allow_partial: false,
        }
    }

    #[test]
    fn a_key_is_bound_to_its_first_request_until_pruned() {
        let mut k = ReservationKeys::default();
        assert!(k.admit(&req("K", "A", 1, 100)));
        // The same request again (a retry computes a new expiry): admitted.
        assert!(k.admit(&req("K", "A", 1, 150)));
        assert!(!k.admit(&req("K", "B", 1, 100)), "another sku");
        assert!(!k.admit(&req("K", "A", 2, 100)), "another qty");
        let mut other_target = req("K", "A", 1, 100);
        other_target.target = Target::Location(LocationId::from("DC2"));
        assert!(!k.admit(&other_target), "another location");
        k.prune(150, 50);
        assert_eq!(
            k.len(),
            1,
            "expired at 100, kept 50 more: still there at 150"
        );
        k.prune(151, 50);
        assert!(k.is_empty());
        assert!(
            k.admit(&req("K", "B", 1, 300)),
            "a forgotten key binds anew"
        );
    }
}
