//! The available-to-promise ledger of one SKU shard: positions per (location, sku), open order
//! allocations, transfers in flight, reservations, and inventory movements since the last
//! posting flush.
//!
//! Plain data and arithmetic, no I/O, no clocks: the shard actor owns one and feeds it ops in
//! stream order, so the same ops always give the same state. Keys are interned to `u32` so the
//! hot path is one or two hash lookups on small integers.

use super::op::Op;
use crate::domain::*;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::hash::Hash;

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

/// Interns keys to dense indices in first-seen order (deterministic for a given op order).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Interner<K: Eq + Hash + Clone> {
    items: Vec<K>,
    #[serde(skip)]
    index: FxHashMap<K, u32>,
}

impl<K: Eq + Hash + Clone> Interner<K> {
    pub fn get(&self, key: &K) -> Option<u32> {
        self.index.get(key).copied()
    }

    pub fn intern(&mut self, key: &K) -> u32 {
        if let Some(&i) = self.index.get(key) {
            return i;
        }
        let i = self.items.len() as u32;
        self.items.push(key.clone());
        self.index.insert(key.clone(), i);
        i
    }

    pub fn name(&self, i: u32) -> &K {
        &self.items[i as usize]
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Rebuilds the lookup index after deserialisation.
    pub fn reindex(&mut self) {
        self.index = self
            .items
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), i as u32))
            .collect();
    }
}

/// Movement reasons with fixed codes; adjustment reasons are interned after them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Movement {
    Sale = 0,
    Return = 1,
    Receipt = 2,
    Count = 3,
    TransferOut = 4,
    TransferIn = 5,
    Fulfilment = 6,
}

const FIXED_REASONS: [&str; 7] = [
    "sale",
    "return",
    "receipt",
    "count",
    "transfer_out",
    "transfer_in",
    "fulfilment",
];

pub use crate::aggregate::posting::MovementLine;

type Allocs = SmallVec<[(u32, i64); 2]>;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LocationInfo {
    pub kind: Option<LocationKind>,
    pub priority: u32,
    pub channels: Vec<ChannelId>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChannelInfo {
    pub rule: SourcingRule,
    pub allow_split: bool,
    pub buffer: i64,
    /// Fulfilment locations, ordered by (priority, location id).
    pub locations: Vec<u32>,
}

impl Default for ChannelInfo {
    fn default() -> Self {
        ChannelInfo {
            rule: SourcingRule::Priority,
            allow_split: false,
            buffer: 0,
            locations: Vec::new(),
        }
    }
}

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

/// A decision's state, as the API reports it.
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

const DIRTY: u32 = 1 << 30;
const MOVED: u32 = 1 << 31;
const LOC_MASK: u32 = (1 << 30) - 1;

/// Everything the hot path touches for one (location, sku), packed into one 64-byte cache line
/// so an op costs a single miss: the position, the net movement per fixed reason since the
/// last flush (`i32`; a tally that would leave `i32` spills into `Ledger::extra_moves`), and
/// the location index with the dirty and moved flags in its top bits.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
#[repr(C, align(64))]
struct SlotCell {
    pos: Position,
    moves: [i32; FIXED_REASONS.len()],
    #[serde(skip)]
    tag: u32,
}

impl SlotCell {
    fn loc(&self) -> usize {
        (self.tag & LOC_MASK) as usize
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Ledger {
    skus: Interner<Sku>,
    locs: Interner<LocationId>,
    reasons: Interner<ReasonCode>,
    cells: Vec<SlotCell>,
    slot_keys: Vec<(u32, u32)>,
    #[serde(skip)]
    slots: super::slots::SlotTable,
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

/// Bounds on remembered reservations (configuration, not state).
#[derive(Clone, Copy, Debug, Default)]
pub struct ResvLimits {
    /// Rejections remembered at most (0: no cap).
    pub max_rejected: usize,
    /// How long past its would-be expiry a rejection is remembered.
    pub retain_rejected_ms: i64,
}

const NO_SLOT: u32 = u32::MAX;
const NO_KEY: u64 = u64::MAX;

/// The (location, sku) a simple op touches; `None` for ops that touch several or none.
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

fn slot_key(sku: u32, loc: u32) -> u64 {
    (u64::from(sku) << 32) | u64::from(loc)
}

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
        self.slots = super::slots::SlotTable::with_capacity(self.slot_keys.len());
        for (i, &(s, l)) in self.slot_keys.iter().enumerate() {
            self.slots.insert(slot_key(s, l), i as u32);
        }
        for (c, &(_, l)) in self.cells.iter_mut().zip(&self.slot_keys) {
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
            .zip(&self.cells)
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

    /// Reservation decisions taken since the last call.
    pub fn take_decisions(&mut self) -> Vec<Decision> {
        std::mem::take(&mut self.decisions)
    }

    /// The channel table if it changed since the last call (names resolved).
    pub fn take_channels_if_changed(
        &mut self,
    ) -> Option<Vec<(ChannelId, ChannelInfo, Vec<LocationId>)>> {
        if !self.channels_changed {
            return None;
        }
        self.channels_changed = false;
        let mut out: Vec<_> = self
            .channels
            .iter()
            .map(|(c, info)| {
                let names = info
                    .locations
                    .iter()
                    .map(|&l| self.locs.name(l).clone())
                    .collect();
                (c.clone(), info.clone(), names)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Some(out)
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

    fn mark(&mut self, slot: u32) {
        let c = &mut self.cells[slot as usize];
        if c.tag & DIRTY == 0 {
            c.tag |= DIRTY;
            self.dirty.push(slot);
        }
    }

    fn slot_of(&mut self, s: u32, l: u32) -> u32 {
        if let Some(i) = self.slots.get(slot_key(s, l)) {
            return i;
        }
        let i = self.cells.len() as u32;
        self.cells.push(SlotCell {
            tag: l & LOC_MASK,
            ..SlotCell::default()
        });
        self.slot_keys.push((s, l));
        self.slots.insert(slot_key(s, l), i);
        i
    }

    fn loc_idx(&mut self, loc: &LocationId) -> u32 {
        let i = self.locs.intern(loc);
        if self.locations.len() <= i as usize {
            self.locations
                .resize(i as usize + 1, LocationInfo::default());
        }
        i
    }

    /// Adds `delta` to on_hand and records the movement.
    fn move_on_hand(&mut self, slot: u32, delta: i64, reason: u16) -> Result<(), ApplyError> {
        let before = self.cells[slot as usize].pos.on_hand;
        let Some(after) = add(before, delta) else {
            return Err(self.overflow(slot));
        };
        let r = reason as usize;
        let spill = if r < FIXED_REASONS.len() {
            let c = &mut self.cells[slot as usize];
            if c.tag & MOVED == 0 {
                c.tag |= MOVED;
                self.moved.push(slot);
            }
            match i32::try_from(i64::from(c.moves[r]) + delta) {
                Ok(m) => {
                    c.moves[r] = m;
                    0
                }
                Err(_) => delta,
            }
        } else {
            delta
        };
        if spill != 0 {
            let m = self.extra_moves.get(&(slot, reason)).copied().unwrap_or(0);
            let Some(m) = add(m, spill) else {
                return Err(self.overflow(slot));
            };
            self.extra_moves.insert((slot, reason), m);
        }
        self.cells[slot as usize].pos.on_hand = after;
        if before >= 0 && after < 0 {
            self.exceptions.negative_on_hand += 1;
        }
        self.mark(slot);
        let seq = self.cur_seq;
        let loc = self.cells[slot as usize].loc();
        if loc >= self.move_lineage.len() {
            self.move_lineage.resize(loc + 1, Default::default());
        }
        let lin = &mut self.move_lineage[loc];
        if lin.events == 0 || lin.last_seq != seq {
            lin.add(seq);
        }
        Ok(())
    }

    fn add_reserved(&mut self, slot: u32, delta: i64) -> Result<(), ApplyError> {
        let p = &self.cells[slot as usize].pos;
        let r = add(p.reserved, delta).ok_or_else(|| self.overflow(slot))?;
        self.cells[slot as usize].pos.reserved = r;
        self.mark(slot);
        Ok(())
    }

    fn overflow(&self, slot: u32) -> ApplyError {
        let (s, l) = self.slot_keys[slot as usize];
        ApplyError::Overflow {
            loc: self.locs.name(l).clone(),
            sku: self.skus.name(s).clone(),
        }
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
                    super::slots::prefetch_ref(&self.cells[ahead as usize]);
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
            } => {
                let from_slot = self.slot_for(from, sku);
                let to_slot = self.slot_for(to, sku);
                let (s, l) = self.slot_keys[to_slot as usize];
                let key = (transfer.clone(), s, l);
                let outstanding = self.transfers.get(&key).copied().unwrap_or(0);
                let outstanding = add(outstanding, *qty).ok_or_else(|| self.overflow(to_slot))?;
                let in_transit = add(self.cells[to_slot as usize].pos.in_transit, *qty)
                    .ok_or_else(|| self.overflow(to_slot))?;
                self.move_on_hand(from_slot, -qty, Movement::TransferOut as u16)?;
                self.cells[to_slot as usize].pos.in_transit = in_transit;
                self.transfers.insert(key, outstanding);
                self.mark(to_slot);
                Ok(())
            }
            Op::TransferIn {
                transfer,
                to,
                sku,
                qty,
                ..
            } => {
                let to_slot = self.slot_for(to, sku);
                let (s, l) = self.slot_keys[to_slot as usize];
                let key = (transfer.clone(), s, l);
                let outstanding = self.transfers.get(&key).copied().unwrap_or(0);
                let matched = outstanding.min(*qty);
                if matched < *qty {
                    self.exceptions.unmatched_transfers += 1;
                }
                self.move_on_hand(to_slot, *qty, Movement::TransferIn as u16)?;
                self.cells[to_slot as usize].pos.in_transit -= matched;
                if outstanding - matched > 0 {
                    self.transfers.insert(key, outstanding - matched);
                } else {
                    self.transfers.remove(&key);
                }
                Ok(())
            }
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
                match sku {
                    Some(sku) => {
                        let s = self.skus.intern(sku);
                        self.release_order(order, s, Some(*qty))?;
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
            Op::OrderFulfilled {
                order,
                loc,
                sku,
                qty,
            } => {
                let slot = self.slot_for(loc, sku);
                let (s, l) = self.slot_keys[slot as usize];
                let key = (order.clone(), s);
                match self.orders.remove(&key) {
                    Some(mut allocs) => {
                        // Consume the reservation, preferring the shipping location.
                        allocs.sort_by_key(|&(al, _)| if al == l { 0 } else { 1 });
                        let mut left = *qty;
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
            Op::Location(u) => {
                let l = self.loc_idx(&u.location);
                self.locations[l as usize] = LocationInfo {
                    kind: Some(u.kind),
                    priority: u.priority,
                    channels: u.channels.clone(),
                };
                for info in self.channels.values_mut() {
                    info.locations.retain(|&x| x != l);
                }
                for c in &u.channels {
                    self.channels
                        .entry(c.clone())
                        .or_default()
                        .locations
                        .push(l);
                }
                self.sort_channels();
                Ok(())
            }
            Op::Channel(c) => {
                let info = self.channels.entry(c.channel.clone()).or_default();
                info.rule = c.rule;
                info.allow_split = c.allow_split;
                info.buffer = c.buffer;
                self.channels_changed = true;
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

    fn slot_for(&mut self, loc: &LocationId, sku: &Sku) -> u32 {
        let s = self.skus.intern(sku);
        let l = self.loc_idx(loc);
        self.slot_of(s, l)
    }

    fn sort_channels(&mut self) {
        let locations = &self.locations;
        let locs = &self.locs;
        for info in self.channels.values_mut() {
            info.locations.sort_by(|&a, &b| {
                let pa = locations[a as usize].priority;
                let pb = locations[b as usize].priority;
                pa.cmp(&pb).then_with(|| locs.name(a).cmp(locs.name(b)))
            });
        }
        self.channels_changed = true;
    }

    /// Available for a channel at one location: never below zero, less the channel's buffer.
    fn sellable(&self, s: u32, l: u32, buffer: i64) -> i64 {
        match self.slots.get(slot_key(s, l)) {
            Some(slot) => (self.cells[slot as usize].pos.available() - buffer).max(0),
            None => 0,
        }
    }

    /// Picks locations for `qty` of sku `s`: returns the allocations and the total sellable.
    /// `must_fill` (orders, which are facts) puts any shortfall on the first candidate.
    fn source(
        &self,
        s: u32,
        target: &Target,
        qty: i64,
        allow_partial: bool,
        must_fill: bool,
    ) -> (Allocs, i64) {
        let (mut candidates, rule, split, buffer): (Vec<u32>, SourcingRule, bool, i64) =
            match target {
                Target::Location(loc) => match self.locs.get(loc) {
                    Some(l) => (vec![l], SourcingRule::Priority, false, 0),
                    None => (vec![], SourcingRule::Priority, false, 0),
                },
                Target::Channel(c) => match self.channels.get(c) {
                    Some(info) => (
                        info.locations.clone(),
                        info.rule,
                        info.allow_split,
                        info.buffer,
                    ),
                    None => (vec![], SourcingRule::Priority, false, 0),
                },
            };
        let sellable: Vec<i64> = candidates
            .iter()
            .map(|&l| self.sellable(s, l, buffer))
            .collect();
        let total: i64 = sellable.iter().sum();
        if rule == SourcingRule::MostAvailable {
            // Stable sort keeps priority order among equals.
            let mut pairs: Vec<(u32, i64)> = candidates
                .iter()
                .copied()
                .zip(sellable.iter().copied())
                .collect();
            pairs.sort_by_key(|p| std::cmp::Reverse(p.1));
            candidates = pairs.iter().map(|p| p.0).collect();
        }
        let sell = |l: u32| self.sellable(s, l, buffer);
        let mut allocs = Allocs::new();
        if let Some(&l) = candidates.iter().find(|&&l| sell(l) >= qty) {
            allocs.push((l, qty));
            return (allocs, total);
        }
        if split {
            let mut left = qty;
            for &l in &candidates {
                let take = sell(l).min(left);
                if take > 0 {
                    allocs.push((l, take));
                    left -= take;
                }
            }
            if left > 0 && must_fill {
                match allocs.first_mut() {
                    Some(a) => a.1 += left,
                    None => {
                        if let Some(&l) = candidates.first() {
                            allocs.push((l, left));
                        }
                    }
                }
            } else if left > 0 && !allow_partial {
                allocs.clear();
            }
            return (allocs, total);
        }
        if must_fill {
            if let Some(&l) = candidates.first() {
                allocs.push((l, qty));
            }
        } else if allow_partial {
            if let Some(&l) = candidates
                .iter()
                .max_by_key(|&&l| (sell(l), std::cmp::Reverse(l)))
            {
                let take = sell(l);
                if take > 0 {
                    allocs.push((l, take));
                }
            }
        }
        (allocs, total)
    }

    #[allow(clippy::too_many_arguments)]
    fn order_placed(
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

    /// Answers a request whose key is bound to another request: nothing changes.
    fn refuse(&mut self, seq: u64, r: &ReservationRequested) {
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

    fn reserve(&mut self, seq: u64, r: &ReservationRequested) -> Result<(), ApplyError> {
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

    fn end_reservation(&mut self, id: &ReservationId, end: ResvState) -> Result<(), ApplyError> {
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

    /// Stream range of the movements since the last flush, per location; resets it.
    pub fn take_movement_lineage(
        &mut self,
    ) -> Vec<(LocationId, crate::aggregate::posting::Lineage)> {
        let mut out: Vec<_> = self
            .move_lineage
            .iter_mut()
            .enumerate()
            .filter(|(_, lin)| lin.events > 0)
            .map(|(l, lin)| (self.locs.name(l as u32).clone(), std::mem::take(lin)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Net movements since the last flush, sorted, zero lines dropped; resets the tally.
    pub fn take_movements(&mut self) -> Vec<MovementLine> {
        let mut raw = std::mem::take(&mut self.scratch_moves);
        raw.clear();
        raw.reserve(self.moved.len() * 2 + self.extra_moves.len());
        for slot in self.moved.drain(..) {
            let c = &mut self.cells[slot as usize];
            c.tag &= !MOVED;
            for (r, q) in std::mem::take(&mut c.moves).iter().enumerate() {
                if *q != 0 {
                    raw.push((slot, r as u16, i64::from(*q)));
                }
            }
        }
        raw.extend(self.extra_moves.drain().map(|((slot, r), q)| (slot, r, q)));
        // A spilled tally appears twice (cell and map): add them up. Totals fit `i64` because
        // every part did and the ledger refused what would not.
        // Order by (location, sku, reason) indices: deterministic (interning follows the
        // stream) and far cheaper than comparing names.
        let keys = &self.slot_keys;
        raw.sort_unstable_by_key(|&(slot, r, _)| {
            let (s, l) = keys[slot as usize];
            (l, s, r, slot)
        });
        raw.dedup_by(|b, a| {
            if (a.0, a.1) == (b.0, b.1) {
                a.2 = a.2.saturating_add(b.2);
                true
            } else {
                false
            }
        });
        let mut out: Vec<MovementLine> = Vec::with_capacity(raw.len());
        out.extend(
            raw.drain(..)
                .filter(|&(_, _, q)| q != 0)
                .map(|(slot, reason, qty)| {
                    let (s, l) = self.slot_keys[slot as usize];
                    let reason = match FIXED_REASONS.get(reason as usize) {
                        Some(r) => compact_str::CompactString::const_new(r),
                        None => compact_str::format_compact!(
                            "adjustment:{}",
                            self.reasons
                                .name(u32::from(reason) - FIXED_REASONS.len() as u32)
                        ),
                    };
                    MovementLine {
                        location: self.locs.name(l).clone(),
                        sku: self.skus.name(s).clone(),
                        reason,
                        qty,
                    }
                }),
        );
        self.scratch_moves = raw;
        out
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
mod tests {
    use super::*;

    fn loc(s: &str) -> LocationId {
        LocationId::from(s)
    }
    fn sku(s: &str) -> Sku {
        Sku::from(s)
    }
    fn receipt(l: &str, s: &str, qty: i64) -> Op {
        Op::Receipt {
            loc: loc(l),
            sku: sku(s),
            qty,
        }
    }
    fn pos(ledger: &Ledger, l: &str, s: &str) -> Position {
        ledger.position(&loc(l), &sku(s)).unwrap_or_default()
    }

    #[test]
    fn sales_receipts_returns_and_counts() {
        let mut g = Ledger::new();
        g.apply(1, &receipt("S1", "A", 10)).unwrap();
        g.apply(
            2,
            &Op::Sale {
                loc: loc("S1"),
                sku: sku("A"),
                qty: 3,
            },
        )
        .unwrap();
        g.apply(
            3,
            &Op::Return {
                loc: loc("S1"),
                sku: sku("A"),
                qty: 1,
                restock: true,
            },
        )
        .unwrap();
        g.apply(
            4,
            &Op::Return {
                loc: loc("S1"),
                sku: sku("A"),
                qty: 5,
                restock: false,
            },
        )
        .unwrap();
        assert_eq!(pos(&g, "S1", "A").on_hand, 8);
        g.apply(
            5,
            &Op::Count {
                loc: loc("S1"),
                sku: sku("A"),
                counted: 6,
            },
        )
        .unwrap();
        assert_eq!(pos(&g, "S1", "A").on_hand, 6);
        let moves = g.take_movements();
        let get = |r: &str| moves.iter().find(|m| m.reason == r).map(|m| m.qty);
        assert_eq!(get("receipt"), Some(10));
        assert_eq!(get("sale"), Some(-3));
        assert_eq!(get("return"), Some(1));
        assert_eq!(get("count"), Some(-2));
        assert!(g.take_movements().is_empty(), "movements reset after take");
        // The next flush (its working list reused) holds only what moved since.
        g.apply(6, &receipt("S1", "A", 4)).unwrap();
        g.apply(7, &receipt("S2", "B", 2)).unwrap();
        let again: Vec<(String, String, String, i64)> = g
            .take_movements()
            .into_iter()
            .map(|m| {
                (
                    m.location.to_string(),
                    m.sku.to_string(),
                    m.reason.to_string(),
                    m.qty,
                )
            })
            .collect();
        assert_eq!(
            again,
            vec![
                ("S1".into(), "A".into(), "receipt".into(), 4),
                ("S2".into(), "B".into(), "receipt".into(), 2),
            ]
        );
    }

    #[test]
    fn facts_drive_stock_negative_and_are_counted() {
        let mut g = Ledger::new();
        g.apply(1, &receipt("S1", "A", 1)).unwrap();
        g.apply(
            2,
            &Op::Sale {
                loc: loc("S1"),
                sku: sku("A"),
                qty: 4,
            },
        )
        .unwrap();
        assert_eq!(pos(&g, "S1", "A").on_hand, -3);
        assert_eq!(g.exceptions.negative_on_hand, 1);
        g.apply(
            3,
            &Op::Sale {
                loc: loc("S1"),
                sku: sku("A"),
                qty: 1,
            },
        )
        .unwrap();
        assert_eq!(
            g.exceptions.negative_on_hand, 1,
            "only the crossing is counted"
        );
    }

    #[test]
    fn safety_stock_reduces_available() {
        let mut g = Ledger::new();
        g.apply(1, &receipt("S1", "A", 10)).unwrap();
        g.apply(
            2,
            &Op::SafetyStock {
                loc: loc("S1"),
                sku: sku("A"),
                qty: 4,
            },
        )
        .unwrap();
        assert_eq!(pos(&g, "S1", "A").available(), 6);
    }

    #[test]
    fn transfers_move_stock_through_in_transit() {
        let mut g = Ledger::new();
        g.apply(1, &receipt("DC1", "A", 10)).unwrap();
        let t = TransferId::from("T1");
        g.apply(
            2,
            &Op::TransferOut {
                transfer: t.clone(),
                from: loc("DC1"),
                to: loc("S1"),
                sku: sku("A"),
                qty: 4,
            },
        )
        .unwrap();
        assert_eq!(pos(&g, "DC1", "A").on_hand, 6);
        assert_eq!(pos(&g, "S1", "A").in_transit, 4);
        g.apply(
            3,
            &Op::TransferIn {
                transfer: t.clone(),
                from: loc("DC1"),
                to: loc("S1"),
                sku: sku("A"),
                qty: 3,
            },
        )
        .unwrap();
        assert_eq!(pos(&g, "S1", "A").in_transit, 1);
        assert_eq!(pos(&g, "S1", "A").on_hand, 3);
        // Arriving more than was sent: on hand takes all, in transit only what was open.
        g.apply(
            4,
            &Op::TransferIn {
                transfer: t,
                from: loc("DC1"),
                to: loc("S1"),
                sku: sku("A"),
                qty: 2,
            },
        )
        .unwrap();
        assert_eq!(pos(&g, "S1", "A").in_transit, 0);
        assert_eq!(pos(&g, "S1", "A").on_hand, 5);
        assert_eq!(g.exceptions.unmatched_transfers, 1);
    }

    fn place(order: &str, l: Option<&str>, s: &str, qty: i64) -> Op {
        Op::OrderPlaced {
            order: OrderId::from(order),
            channel: ChannelId::from("web"),
            loc: l.map(loc),
            sku: sku(s),
            qty,
            reservation: None,
        }
    }

    #[test]
    fn order_lifecycle_reserves_consumes_and_releases() {
        let mut g = Ledger::new();
        g.apply(1, &receipt("DC1", "A", 10)).unwrap();
        g.apply(2, &place("O1", Some("DC1"), "A", 4)).unwrap();
        assert_eq!(
            pos(&g, "DC1", "A"),
            Position {
                on_hand: 10,
                reserved: 4,
                safety_stock: 0,
                in_transit: 0
            }
        );
        g.apply(
            3,
            &Op::OrderFulfilled {
                order: OrderId::from("O1"),
                loc: loc("DC1"),
                sku: sku("A"),
                qty: 3,
            },
        )
        .unwrap();
        assert_eq!(pos(&g, "DC1", "A").on_hand, 7);
        assert_eq!(pos(&g, "DC1", "A").reserved, 1);
        g.apply(
            4,
            &Op::OrderCancelled {
                order: OrderId::from("O1"),
                sku: None,
                qty: 0,
            },
        )
        .unwrap();
        assert_eq!(pos(&g, "DC1", "A").reserved, 0);
        assert_eq!(g.open_counts().0, 0);
        g.apply(
            5,
            &Op::OrderFulfilled {
                order: OrderId::from("O9"),
                loc: loc("DC1"),
                sku: sku("A"),
                qty: 1,
            },
        )
        .unwrap();
        assert_eq!(g.exceptions.unknown_orders, 1);
        assert_eq!(pos(&g, "DC1", "A").on_hand, 6);
    }

    fn location(l: &str, priority: u32, channels: &[&str]) -> Op {
        Op::Location(std::sync::Arc::new(LocationUpsert {
            location: loc(l),
            kind: LocationKind::Dc,
            channels: channels.iter().map(|c| ChannelId::from(*c)).collect(),
            priority,
        }))
    }

    #[test]
    fn channel_orders_follow_priority_and_go_short_on_the_first_location() {
        let mut g = Ledger::new();
        g.apply(1, &location("DC2", 2, &["web"])).unwrap();
        g.apply(2, &location("DC1", 1, &["web"])).unwrap();
        g.apply(3, &receipt("DC1", "A", 2)).unwrap();
        g.apply(4, &receipt("DC2", "A", 5)).unwrap();
        g.apply(5, &place("O1", None, "A", 2)).unwrap();
        assert_eq!(pos(&g, "DC1", "A").reserved, 2, "DC1 has priority");
        g.apply(6, &place("O2", None, "A", 3)).unwrap();
        assert_eq!(
            pos(&g, "DC2", "A").reserved,
            3,
            "DC1 is exhausted, DC2 covers"
        );
        g.apply(7, &place("O3", None, "A", 9)).unwrap();
        assert_eq!(
            pos(&g, "DC1", "A").reserved,
            11,
            "nobody covers: first location goes short"
        );
        assert_eq!(g.exceptions.short_allocations, 1);
    }

    fn reserve(id: &str, s: &str, qty: i64, target: Target, partial: bool) -> Op {
        Op::Reserve(std::sync::Arc::new(ReservationRequested {
            reservation_id: ReservationId::from(id),
            sku: sku(s),
            qty,
            target,
            expires_at_ms: 1000,
            allow_partial: partial,
        }))
    }

    #[test]
    fn a_reservation_for_an_unknown_sku_is_rejected_without_growing_the_ledger() {
        let mut g = Ledger::new();
        g.apply(1, &receipt("S1", "A", 5)).unwrap();
        let at = Target::Location(loc("S1"));
        for i in 0..100 {
            g.apply(
                2 + i,
                &reserve(&format!("R{i}"), &format!("NOPE{i}"), 1, at.clone(), false),
            )
            .unwrap();
        }
        let d = g.take_decisions();
        assert_eq!(d.len(), 100);
        assert!(
            d.iter()
                .all(|d| d.state == DecisionState::Rejected && !d.granted)
        );
        assert_eq!(g.skus.len(), 1, "unknown skus were interned");
        assert_eq!(g.open_counts().2, 0, "their rejections were remembered");
    }

    #[test]
    fn a_key_reused_for_another_request_on_one_shard_is_a_conflict_that_changes_nothing() {
        let mut g = Ledger::new();
        g.apply(1, &receipt("S1", "A", 5)).unwrap();
        g.apply(1, &receipt("S1", "B", 5)).unwrap();
        let at = Target::Location(loc("S1"));
        g.apply(2, &reserve("K", "A", 1, at.clone(), false))
            .unwrap();
        g.apply(3, &reserve("K", "B", 1, at.clone(), false))
            .unwrap();
        g.apply(4, &reserve("K", "A", 2, at.clone(), false))
            .unwrap();
        g.apply(5, &reserve("K", "A", 1, at.clone(), false))
            .unwrap();
        let states: Vec<_> = g.take_decisions().iter().map(|d| d.state).collect();
        use DecisionState::*;
        assert_eq!(states, [Active, Conflict, Conflict, Active]);
        assert_eq!(pos(&g, "S1", "A").reserved, 1);
        assert_eq!(pos(&g, "S1", "B").reserved, 0);
        assert_eq!(
            g.reservation(&ReservationId::from("K")).unwrap().sku,
            sku("A")
        );
    }

    #[test]
    fn remembered_rejections_are_capped_oldest_first_and_pruned_early() {
        let mut g = Ledger::new();
        g.set_limits(ResvLimits {
            max_rejected: 3,
            retain_rejected_ms: 0,
        });
        g.apply(1, &receipt("S1", "A", 1)).unwrap();
        let at = Target::Location(loc("S1"));
        g.apply(2, &reserve("G", "A", 1, at.clone(), false))
            .unwrap();
        for i in 0..5 {
            g.apply(3 + i, &reserve(&format!("X{i}"), "A", 1, at.clone(), false))
                .unwrap();
        }
        assert_eq!(g.take_evicted(), 2);
        let remembered = |g: &Ledger, id: &str| g.reservation(&ReservationId::from(id)).is_some();
        assert!(!remembered(&g, "X0") && !remembered(&g, "X1"));
        assert!(remembered(&g, "X2") && remembered(&g, "X4") && remembered(&g, "G"));
        // The grant keeps the day; rejections go once their would-be expiry has passed.
        g.prune_reservations(10_001, 86_400_000);
        assert!(remembered(&g, "G"));
        assert!(!remembered(&g, "X2") && !remembered(&g, "X4"));
    }

    #[test]
    fn reservations_never_exceed_available_and_are_idempotent() {
        let mut g = Ledger::new();
        g.apply(1, &receipt("S1", "A", 5)).unwrap();
        let at = Target::Location(loc("S1"));
        g.apply(2, &reserve("R1", "A", 3, at.clone(), false))
            .unwrap();
        g.apply(3, &reserve("R2", "A", 3, at.clone(), false))
            .unwrap();
        g.apply(4, &reserve("R3", "A", 3, at.clone(), true))
            .unwrap();
        g.apply(5, &reserve("R1", "A", 3, at.clone(), false))
            .unwrap();
        let d = g.take_decisions();
        assert!(d[0].granted && d[0].allocations == vec![(loc("S1"), 3)]);
        assert!(!d[1].granted && d[1].available == 2);
        assert!(
            d[2].granted && d[2].allocations == vec![(loc("S1"), 2)],
            "partial takes the rest"
        );
        assert_eq!(d[3].decided_at, 2, "retry returns the first decision");
        assert_eq!(pos(&g, "S1", "A").reserved, 5);
        g.apply(
            6,
            &Op::Release {
                reservation: ReservationId::from("R1"),
                sku: sku("A"),
            },
        )
        .unwrap();
        g.apply(
            7,
            &Op::Expire {
                reservation: ReservationId::from("R3"),
                sku: sku("A"),
            },
        )
        .unwrap();
        g.apply(
            8,
            &Op::Expire {
                reservation: ReservationId::from("R3"),
                sku: sku("A"),
            },
        )
        .unwrap();
        assert_eq!(pos(&g, "S1", "A").reserved, 0);
        assert_eq!(
            g.reservation(&ReservationId::from("R3")).unwrap().state,
            DecisionState::Expired
        );
    }

    #[test]
    fn an_order_takes_over_its_reservation() {
        let mut g = Ledger::new();
        g.apply(1, &receipt("S1", "A", 5)).unwrap();
        g.apply(
            2,
            &reserve("R1", "A", 3, Target::Location(loc("S1")), false),
        )
        .unwrap();
        g.apply(
            3,
            &Op::OrderPlaced {
                order: OrderId::from("O1"),
                channel: ChannelId::from("web"),
                loc: None,
                sku: sku("A"),
                qty: 2,
                reservation: Some(ReservationId::from("R1")),
            },
        )
        .unwrap();
        assert_eq!(
            pos(&g, "S1", "A").reserved,
            2,
            "excess of the reservation is given back"
        );
        assert_eq!(
            g.reservation(&ReservationId::from("R1")).unwrap().state,
            DecisionState::Consumed
        );
        g.apply(
            4,
            &Op::OrderFulfilled {
                order: OrderId::from("O1"),
                loc: loc("S1"),
                sku: sku("A"),
                qty: 2,
            },
        )
        .unwrap();
        assert_eq!(
            pos(&g, "S1", "A"),
            Position {
                on_hand: 3,
                reserved: 0,
                safety_stock: 0,
                in_transit: 0
            }
        );
    }

    #[test]
    fn overflow_is_an_error_and_changes_nothing() {
        let mut g = Ledger::new();
        g.apply(
            1,
            &Op::Adjust {
                loc: loc("S1"),
                sku: sku("A"),
                qty: i64::MAX,
                reason: ReasonCode::from("found"),
            },
        )
        .unwrap();
        let err = g.apply(2, &receipt("S1", "A", 1)).unwrap_err();
        assert!(matches!(err, ApplyError::Overflow { .. }));
        assert_eq!(pos(&g, "S1", "A").on_hand, i64::MAX);
    }

    #[test]
    fn snapshot_round_trip_preserves_state() {
        let mut g = Ledger::new();
        g.apply(1, &location("DC1", 1, &["web"])).unwrap();
        g.apply(2, &receipt("DC1", "A", 10)).unwrap();
        g.apply(3, &place("O1", None, "A", 4)).unwrap();
        let bytes = rmp_serde::to_vec_named(&g).unwrap();
        let mut h: Ledger = rmp_serde::from_slice(&bytes).unwrap();
        h.reindex();
        assert_eq!(pos(&h, "DC1", "A"), pos(&g, "DC1", "A"));
        h.apply(
            4,
            &Op::OrderCancelled {
                order: OrderId::from("O1"),
                sku: None,
                qty: 0,
            },
        )
        .unwrap();
        assert_eq!(pos(&h, "DC1", "A").reserved, 0);
        h.apply(5, &place("O2", None, "A", 1)).unwrap();
        assert_eq!(pos(&h, "DC1", "A").reserved, 1, "channel table survived");
    }
}

#[cfg(test)]
mod spill_tests {
    use super::*;

    #[test]
    fn movement_tallies_beyond_i32_spill_and_add_up() {
        let mut g = Ledger::new();
        for seq in 1..=3 {
            g.apply(
                seq,
                &Op::Receipt {
                    loc: "DC1".into(),
                    sku: "A".into(),
                    qty: 1_000_000_000,
                },
            )
            .unwrap();
        }
        g.apply(
            4,
            &Op::Sale {
                loc: "DC1".into(),
                sku: "A".into(),
                qty: 7,
            },
        )
        .unwrap();
        let m = g.take_movements();
        let get = |r: &str| m.iter().find(|l| l.reason == r).map(|l| l.qty);
        assert_eq!(get("receipt"), Some(3_000_000_000));
        assert_eq!(get("sale"), Some(-7));
        assert_eq!(std::mem::size_of::<SlotCell>(), 64);
    }
}
