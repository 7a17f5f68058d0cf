//! Orders: allocations held per (order, sku), taking over a reservation when the order names
//! one, sourcing the rest; consumed by fulfilment, given back by cancellation.

use super::movements::Movement;
use super::reservations::ResvState;
use super::sourcing::Allocs;
use super::{ApplyError, Ledger};
use crate::domain::{ChannelId, LocationId, OrderId, ReservationId, Sku, Target};

impl Ledger {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn order_placed(
        &mut self,
        seq: u64,
        order: &OrderId,
        channel: &ChannelId,
        loc: Option<&LocationId>,
        sku: &Sku,
        qty: i64,
        reservation: Option<&ReservationId>,
    ) -> Result<(), ApplyError> {
        let _ = seq;
        let s = self.skus.intern(sku);
        if let Some(l) = loc {
            self.loc_idx(l);
        }
        let mut allocs = Allocs::new();
        let mut need = qty;
        if let Some(rid) = reservation {
            if let Some(r) = self.reservations.get_mut(rid) {
                if r.state == ResvState::Active && r.sku == s {
                    r.state = ResvState::Consumed;
                    allocs = r.allocs.clone();
                    need -= allocs.iter().map(|a| a.1).sum::<i64>();
                }
            }
            // Ordered less than reserved: give the excess back, last allocation first.
            while need < 0 {
                let Some(last) = allocs.last_mut() else { break };
                let give = last.1.min(-need);
                last.1 -= give;
                need += give;
                let slot = self.slot_of(s, last.0);
                self.add_reserved(slot, -give)?;
                if last.1 == 0 {
                    allocs.pop();
                }
            }
        }
        if need > 0 {
            // An order naming its location reserves there: no sourcing decision to make.
            let more = match loc {
                Some(l) => {
                    let mut one = Allocs::new();
                    one.push((self.loc_idx(l), need));
                    one
                }
                None => {
                    self.source(s, &Target::Channel(channel.clone()), need, false, true)
                        .0
                }
            };
            if more.is_empty() {
                self.exceptions.unsourced_orders += 1;
            }
            for (l, q) in more {
                let slot = self.slot_of(s, l);
                if self.cells[slot as usize].pos.available().max(0) < q {
                    self.exceptions.short_allocations += 1;
                }
                self.add_reserved(slot, q)?;
                match allocs.iter_mut().find(|a| a.0 == l) {
                    Some(a) => a.1 += q,
                    None => allocs.push((l, q)),
                }
            }
        }
        let key = (order.clone(), s);
        match self.orders.get_mut(&key) {
            Some(existing) => {
                for (l, q) in allocs {
                    match existing.iter_mut().find(|a| a.0 == l) {
                        Some(a) => a.1 += q,
                        None => existing.push((l, q)),
                    }
                }
            }
            None => {
                if !allocs.is_empty() {
                    self.orders.insert(key, allocs);
                    self.index_order(order, s);
                }
            }
        }
        Ok(())
    }
    /// `Op::OrderCancelled`: gives back one line's allocation, or (`sku: None`) everything the
    /// order holds here.
    #[inline]
    pub(super) fn order_cancelled(
        &mut self,
        order: &OrderId,
        sku: Option<&Sku>,
        qty: i64,
    ) -> Result<(), ApplyError> {
        match sku {
            Some(sku) => {
                let s = self.skus.intern(sku);
                self.release_order(order, s, Some(qty))?;
            }
            None => {
                // Broadcast to every shard: most hold nothing of this order, which is
                // not an exception.
                let mut skus = self.order_skus.get(order).cloned().unwrap_or_default();
                skus.sort_unstable();
                skus.dedup();
                for s in skus {
                    self.release_order(order, s, None)?;
                }
            }
        }
        Ok(())
    }

    /// `Op::OrderFulfilled`: consumes the order's allocation and takes the stock out.
    #[inline]
    pub(super) fn order_fulfilled(
        &mut self,
        order: &OrderId,
        loc: &LocationId,
        sku: &Sku,
        qty: i64,
    ) -> Result<(), ApplyError> {
        let slot = self.slot_for(loc, sku);
        let (s, l) = self.slot_keys[slot as usize];
        let key = (order.clone(), s);
        match self.orders.remove(&key) {
            Some(mut allocs) => {
                // Consume the reservation, preferring the shipping location.
                allocs.sort_by_key(|&(al, _)| if al == l { 0 } else { 1 });
                let mut left = qty;
                for a in allocs.iter_mut() {
                    let take = a.1.min(left);
                    if take > 0 {
                        let aslot = self.slot_of(s, a.0);
                        self.add_reserved(aslot, -take)?;
                        a.1 -= take;
                        left -= take;
                    }
                }
                allocs.retain(|a| a.1 > 0);
                if allocs.is_empty() {
                    self.unindex_order(order, s);
                } else {
                    self.orders.insert(key, allocs);
                }
            }
            None => self.exceptions.unknown_orders += 1,
        }
        self.move_on_hand(slot, -qty, Movement::Fulfilment as u16)
    }

    /// Records that `order` holds sku `s` here.
    fn index_order(&mut self, order: &OrderId, s: u32) {
        let v = self.order_skus.entry(order.clone()).or_default();
        if !v.contains(&s) {
            v.push(s);
        }
    }

    /// Forgets that `order` holds sku `s` here (its allocation is gone).
    fn unindex_order(&mut self, order: &OrderId, s: u32) {
        if let Some(v) = self.order_skus.get_mut(order) {
            v.retain(|x| *x != s);
            if v.is_empty() {
                self.order_skus.remove(order);
            }
        }
    }

    fn release_order(
        &mut self,
        order: &OrderId,
        s: u32,
        qty: Option<i64>,
    ) -> Result<(), ApplyError> {
        let key = (order.clone(), s);
        let Some(mut allocs) = self.orders.remove(&key) else {
            self.exceptions.unknown_orders += 1;
            return Ok(());
        };
        let mut left = qty.unwrap_or(i64::MAX);
        while left > 0 {
            let Some(last) = allocs.last_mut() else { break };
            let give = last.1.min(left);
            last.1 -= give;
            left -= give;
            let slot = self.slot_of(s, last.0);
            self.add_reserved(slot, -give)?;
            if last.1 == 0 {
                allocs.pop();
            }
        }
        if allocs.is_empty() {
            self.unindex_order(order, s);
        } else {
            self.orders.insert(key, allocs);
        }
        Ok(())
    }
}
