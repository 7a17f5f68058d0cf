//! The available-to-promise ledger of one SKU shard: positions per (location, sku), open order
//! allocations, transfers in flight, reservations, and inventory movements since the last
//! posting flush.
//!
//! Plain data and arithmetic, no I/O, no clocks: the shard actor owns one and feeds it ops in
//! stream order, so the same ops always give the same state. Keys are interned to `u32` so the
//! hot path is one or two hash lookups on small integers.
//!
//! This module holds [`Ledger`], its position queries and the op dispatch; each concern keeps
//! its state's methods in a room of its own:
//!
//! - `interner`: keys to dense indices ([`Interner`]).
//! - `cells`: the per-(location, sku) slot cell and its lookup.
//! - `movements`: the movement tally and its lineage ([`Ledger::take_movements`]).
//! - `sourcing`: locations, channels and the choice of fulfilment locations.
//! - `orders`: order allocations (placed, cancelled, fulfilled).
//! - `transfers`: stock in transit between locations.
//! - `reservations`: reservation decisions, their release, expiry and pruning.

use crate::apply::op::Op;
use crate::apply::paged::Paged;
use crate::apply::slots::{SlotTable, prefetch_ref};
use crate::domain::*;
use cells::{DIRTY, LOC_MASK, MOVED, NO_KEY, NO_SLOT, SlotCell, slot_key};
use movements::FIXED_REASONS;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use sourcing::Allocs;

mod cells;
mod interner;
mod movements;
mod orders;
mod reservations;
mod sourcing;
mod transfers;

pub use interner::Interner;
pub use movements::{Movement, MovementLine};
pub use reservations::{
    Decision, DecisionState, Reservation, ResvLimits, ResvState, request_fingerprint,
};
pub use sourcing::{ChannelInfo, LocationInfo};

/// Stock of one SKU at one location.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub on_hand: i64,
    pub reserved: i64,
    pub safety_stock: i64,
    pub in_transit: i64,
}

impl Position {
    /// on_hand - reserved - safety_stock; may be negative when facts outran stock.
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved - self.safety_stock
    }
}

/// Why an op was not applied. Only arithmetic overflow refuses a fact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("quantity overflow at location {loc} sku {sku}")]
    Overflow { loc: LocationId, sku: Sku },
}

/// Counted, never refused: facts that drove stock somewhere it should not be.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exceptions {
    /// An op took on_hand from zero or more to below zero.
    pub negative_on_hand: u64,
    /// An order was allocated beyond what was available.
    pub short_allocations: u64,
    /// Fulfilment or cancellation for an order this ledger never saw placed.
    pub unknown_orders: u64,
    /// TransferIn without a matching TransferOut (or more than was sent).
    pub unmatched_transfers: u64,
    /// Orders for a channel with no fulfilment locations.
    pub unsourced_orders: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Ledger {
    skus: Interner<Sku>,
    locs: Interner<LocationId>,
    reasons: Interner<ReasonCode>,
    /// Per slot: the cell, and its (sku, location) indices. Paged: a `Vec` doubling would
    /// hold up to as much unused capacity as positions (docs/ARCHITECTURE.md, "State and its
    /// size"); serialized as plain sequences all the same.
    cells: Paged<SlotCell>,
    slot_keys: Paged<(u32, u32)>,
    #[serde(skip)]
    slots: SlotTable,
    #[serde(skip)]
    dirty: Vec<u32>,
    /// Slots whose `moves` changed since the last flush.
    moved: Vec<u32>,
    #[serde(skip)]
    scratch: Vec<u32>,
    #[serde(skip)]
    scratch_keys: Vec<u64>,
    /// `take_movements`' working list, kept between flushes: made anew each flush, its pages
    /// (MBs at peak) were faulted in and zeroed by the kernel every barrier.
    #[serde(skip)]
    scratch_moves: Vec<(u32, u16, i64)>,

    /// Net movements since the last flush that do not live in a cell: adjustment reasons
    /// (open-ended, rare) and tallies too large for a cell's `i32`.
    extra_moves: FxHashMap<(u32, u16), i64>,
    orders: FxHashMap<(OrderId, u32), Allocs>,
    /// SKUs each open order holds here, so a whole-order cancel finds them without a scan.
    order_skus: FxHashMap<OrderId, SmallVec<[u32; 2]>>,
    transfers: FxHashMap<(TransferId, u32, u32), i64>,
    reservations: FxHashMap<ReservationId, Reservation>,
    #[serde(skip)]
    decisions: Vec<Decision>,
    locations: Vec<LocationInfo>,
    channels: FxHashMap<ChannelId, ChannelInfo>,
    #[serde(skip)]
    channels_changed: bool,
    /// Which stream range the movements since the last flush cover, per location index.
    move_lineage: Vec<crate::aggregate::posting::Lineage>,
    #[serde(skip)]
    cur_seq: u64,
    pub exceptions: Exceptions,
    /// Remembered rejections, oldest first, for the `max_rejected` cap (kept in the snapshot
    /// so a restored shard evicts in the same order as one that never stopped).
    #[serde(default)]
    rejected_order: std::collections::VecDeque<ReservationId>,
    #[serde(skip)]
    limits: ResvLimits,
    /// Rejections forgotten at the cap since the last `take_evicted`.
    #[serde(skip)]
    evicted: u64,
}

/// The (location, sku) a simple op touches; `None` for ops that touch several or none.
#[inline]
fn primary_target(op: &Op) -> Option<(&LocationId, &Sku)> {
    match op {
        Op::Sale { loc, sku, .. }
        | Op::Receipt { loc, sku, .. }
        | Op::Adjust { loc, sku, .. }
        | Op::Count { loc, sku, .. }
        | Op::SafetyStock { loc, sku, .. }
        | Op::Return {
            loc,
            sku,
            restock: true,
            ..
        } => Some((loc, sku)),
        _ => None,
    }
}

#[inline]
fn add(a: i64, b: i64) -> Option<i64> {
    a.checked_add(b)
}

impl Ledger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds indices after deserialisation (snapshots store only the dense vectors).
    pub fn reindex(&mut self) {
        self.skus.reindex();
        self.locs.reindex();
        self.reasons.reindex();
        self.slots = SlotTable::with_capacity(self.slot_keys.len());
        for (i, &(s, l)) in self.slot_keys.iter().enumerate() {
            self.slots.insert(slot_key(s, l), i as u32);
        }
        for (c, &(_, l)) in self.cells.iter_mut().zip(self.slot_keys.iter()) {
            c.tag = l & LOC_MASK;
        }
        for &slot in &self.moved {
            self.cells[slot as usize].tag |= MOVED;
        }
        self.dirty.clear();
        // Everything is new to a fresh view.
        for slot in 0..self.cells.len() as u32 {
            self.mark(slot);
        }
        self.channels_changed = true;
    }

    pub fn position_count(&self) -> usize {
        self.cells.len()
    }

    pub fn position(&self, loc: &LocationId, sku: &Sku) -> Option<Position> {
        let s = self.skus.get(sku)?;
        let l = self.locs.get(loc)?;
        self.slots
            .get(slot_key(s, l))
            .map(|i| self.cells[i as usize].pos)
    }

    /// Every position with its names, for checks and snapshots.
    pub fn positions(&self) -> impl Iterator<Item = (&LocationId, &Sku, &Position)> {
        self.slot_keys
            .iter()
            .zip(self.cells.iter())
            .map(|(&(s, l), c)| (self.locs.name(l), self.skus.name(s), &c.pos))
    }

    pub fn sku_name(&self, i: u32) -> &Sku {
        self.skus.name(i)
    }

    pub fn loc_name(&self, i: u32) -> &LocationId {
        self.locs.name(i)
    }

    /// (sku index, location index, position) of a slot.
    pub fn slot(&self, slot: u32) -> (u32, u32, &Position) {
        let (s, l) = self.slot_keys[slot as usize];
        (s, l, &self.cells[slot as usize].pos)
    }

    /// Slots changed since the last call, each once.
    pub fn take_dirty(&mut self) -> Vec<u32> {
        for &s in &self.dirty {
            self.cells[s as usize].tag &= !DIRTY;
        }
        std::mem::take(&mut self.dirty)
    }

    /// Applies one op. `seq` is the op's stream sequence (kept on reservation decisions).
    pub fn apply(&mut self, seq: u64, op: &Op) -> Result<(), ApplyError> {
        match self.primary_slot(op) {
            Some(slot) => self.apply_at(seq, op, slot),
            None => self.apply_other(seq, op),
        }
    }

    /// Applies ops in order, reporting refused ones to `refused`. Resolves every op's slot
    /// first and prefetches the slot a few ops ahead: the lookups are independent, so the CPU
    /// overlaps their cache misses instead of waiting for each in turn.
    pub fn apply_batch(
        &mut self,
        ops: &[(u64, Op)],
        mut refused: impl FnMut(u64, &Op, ApplyError),
    ) {
        const AHEAD: usize = 8;
        let mut keys = std::mem::take(&mut self.scratch_keys);
        let mut slots = std::mem::take(&mut self.scratch);
        keys.clear();
        slots.clear();
        // Lines of one event share their location: remember the last one.
        let mut last_loc: Option<(&LocationId, u32)> = None;
        // `cur_seq` follows every phase, so a panic anywhere in the batch names its event.
        for (seq, op) in ops {
            self.cur_seq = *seq;
            keys.push(match primary_target(op) {
                Some((loc, sku)) => {
                    let l = match last_loc {
                        Some((name, i)) if name == loc => i,
                        _ => {
                            let i = self.loc_idx(loc);
                            last_loc = Some((loc, i));
                            i
                        }
                    };
                    slot_key(self.skus.intern(sku), l)
                }
                None => NO_KEY,
            });
        }
        for i in 0..keys.len() {
            if let Some(&k) = keys.get(i + AHEAD) {
                if k != NO_KEY {
                    self.slots.prefetch(k);
                }
            }
            self.cur_seq = ops[i].0;
            slots.push(match keys[i] {
                NO_KEY => NO_SLOT,
                k => self.slot_of((k >> 32) as u32, k as u32),
            });
        }
        for (i, (seq, op)) in ops.iter().enumerate() {
            if let Some(&ahead) = slots.get(i + AHEAD) {
                if ahead != NO_SLOT {
                    prefetch_ref(&self.cells[ahead as usize]);
                }
            }
            let r = match slots[i] {
                NO_SLOT => self.apply_other(*seq, op),
                slot => self.apply_at(*seq, op, slot),
            };
            if let Err(e) = r {
                refused(*seq, op, e);
            }
        }
        self.scratch = slots;
        self.scratch_keys = keys;
    }

    /// The stream sequence of the op being (or last) applied: after a panic in `apply_batch`,
    /// the event that caused it.
    pub fn applying_seq(&self) -> u64 {
        self.cur_seq
    }

    /// The one position a simple op touches (creating it), or `None` for the others.
    fn primary_slot(&mut self, op: &Op) -> Option<u32> {
        let (loc, sku) = primary_target(op)?;
        Some(self.slot_for(loc, sku))
    }

    /// Applies a simple op to its slot.
    fn apply_at(&mut self, seq: u64, op: &Op, slot: u32) -> Result<(), ApplyError> {
        self.cur_seq = seq;
        match op {
            Op::Sale { qty, .. } => self.move_on_hand(slot, -qty, Movement::Sale as u16),
            Op::Return { qty, .. } => self.move_on_hand(slot, *qty, Movement::Return as u16),
            Op::Receipt { qty, .. } => self.move_on_hand(slot, *qty, Movement::Receipt as u16),
            Op::Adjust { qty, reason, .. } => {
                let r = FIXED_REASONS.len() as u16 + self.reasons.intern(reason) as u16;
                self.move_on_hand(slot, *qty, r)
            }
            Op::Count { counted, .. } => {
                let delta = counted - self.cells[slot as usize].pos.on_hand;
                if delta != 0 {
                    self.move_on_hand(slot, delta, Movement::Count as u16)
                } else {
                    Ok(())
                }
            }
            Op::SafetyStock { qty, .. } => {
                self.cells[slot as usize].pos.safety_stock = *qty;
                self.mark(slot);
                Ok(())
            }
            _ => self.apply_other(seq, op),
        }
    }
    /// Ops that touch several positions or none: transfers, orders, master data, reservations.
    fn apply_other(&mut self, seq: u64, op: &Op) -> Result<(), ApplyError> {
        self.cur_seq = seq;
        match op {
            Op::Return { restock: false, .. } => Ok(()),
            Op::TransferOut {
                transfer,
                from,
                to,
                sku,
                qty,
            } => self.transfer_out(transfer, from, to, sku, *qty),
            Op::TransferIn {
                transfer,
                to,
                sku,
                qty,
                ..
            } => self.transfer_in(transfer, to, sku, *qty),
            Op::OrderPlaced {
                order,
                channel,
                loc,
                sku,
                qty,
                reservation,
            } => self.order_placed(
                seq,
                order,
                channel,
                loc.as_ref(),
                sku,
                *qty,
                reservation.as_ref(),
            ),
            Op::OrderCancelled { order, sku, qty } => {
                self.order_cancelled(order, sku.as_ref(), *qty)
            }
            Op::OrderFulfilled {
                order,
                loc,
                sku,
                qty,
            } => self.order_fulfilled(order, loc, sku, *qty),
            Op::Location(u) => {
                self.location_upsert(u);
                Ok(())
            }
            Op::Channel(c) => {
                self.channel_upsert(c);
                Ok(())
            }
            Op::Reserve(r) => self.reserve(seq, r),
            Op::Refuse(r) => {
                self.refuse(seq, r);
                Ok(())
            }
            Op::Release { reservation, .. } => {
                self.end_reservation(reservation, ResvState::Released)
            }
            Op::Expire { reservation, .. } => self.end_reservation(reservation, ResvState::Expired),
            Op::Sale { .. }
            | Op::Return { .. }
            | Op::Receipt { .. }
            | Op::Adjust { .. }
            | Op::Count { .. }
            | Op::SafetyStock { .. } => match self.primary_slot(op) {
                Some(slot) => self.apply_at(seq, op, slot),
                None => Ok(()),
            },
        }
    }

    /// Heap bytes each structure holds (capacity times element size; a hash map counted by its
    /// capacity with one control byte per entry), for the lab's memory breakdown. An estimate
    /// of what the allocator holds, not a measurement: names and other indirect heap data are
    /// not followed.
    pub fn footprint(&self) -> Vec<(&'static str, usize)> {
        use std::mem::size_of;
        fn vec<T>(v: &Vec<T>) -> usize {
            v.capacity() * size_of::<T>()
        }
        fn map<K, V, S>(m: &std::collections::HashMap<K, V, S>) -> usize {
            m.capacity() * (size_of::<(K, V)>() + 1)
        }
        vec![
            ("ledger.cells", self.cells.heap_bytes()),
            ("ledger.slot_keys", self.slot_keys.heap_bytes()),
            ("ledger.slots (index)", self.slots.heap_bytes()),
            (
                "ledger.dirty+moved+scratch",
                vec(&self.dirty)
                    + vec(&self.moved)
                    + vec(&self.scratch)
                    + vec(&self.scratch_keys)
                    + vec(&self.scratch_moves),
            ),
            (
                "ledger.interners",
                self.skus.heap_bytes() + self.locs.heap_bytes() + self.reasons.heap_bytes(),
            ),
            (
                "ledger.orders+transfers+reservations",
                map(&self.orders)
                    + map(&self.order_skus)
                    + map(&self.transfers)
                    + map(&self.reservations)
                    + map(&self.extra_moves),
            ),
        ]
    }

    /// Number of open order lines, in-flight transfers and remembered reservations.
    pub fn open_counts(&self) -> (usize, usize, usize) {
        (
            self.orders.len(),
            self.transfers.len(),
            self.reservations.len(),
        )
    }
}

#[cfg(test)]
mod tests;
