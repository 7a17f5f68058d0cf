//! Slot cells: everything the hot path touches for one (location, sku), one cache line each,
//! found through the slot table by a key of the interned sku and location indices.

use super::movements::FIXED_REASONS;
use super::{ApplyError, Ledger, Position, add};
use crate::domain::{LocationId, Sku};
use serde::{Deserialize, Serialize};

/// Tag bit: the slot is in `Ledger::dirty` (changed since the last `take_dirty`).
pub(super) const DIRTY: u32 = 1 << 30;
/// Tag bit: the slot is in `Ledger::moved` (its tally changed since the last flush).
pub(super) const MOVED: u32 = 1 << 31;
/// Tag bits holding the location index.
pub(super) const LOC_MASK: u32 = (1 << 30) - 1;

/// A slot index that stands for "no slot" in `apply_batch`'s working lists.
pub(super) const NO_SLOT: u32 = u32::MAX;
/// A slot key that stands for "no key" in `apply_batch`'s working lists.
pub(super) const NO_KEY: u64 = u64::MAX;

/// Everything the hot path touches for one (location, sku), packed into one 64-byte cache line
/// so an op costs a single miss: the position, the net movement per fixed reason since the
/// last flush (`i32`; a tally that would leave `i32` spills into `Ledger::extra_moves`), and
/// the location index with the dirty and moved flags in its top bits.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
#[repr(C, align(64))]
pub(super) struct SlotCell {
    pub(super) pos: Position,
    /// Left out of a snapshot when all zero, as it is for most cells: the tally only lives
    /// from one flush to the next. A cell without it reads back as zeros, and snapshots that
    /// carry it always (before this) read as they did.
    #[serde(default, skip_serializing_if = "no_moves")]
    pub(super) moves: [i32; FIXED_REASONS.len()],
    #[serde(skip)]
    pub(super) tag: u32,
}

fn no_moves(moves: &[i32; FIXED_REASONS.len()]) -> bool {
    moves.iter().all(|m| *m == 0)
}

impl SlotCell {
    #[inline]
    pub(super) fn loc(&self) -> usize {
        (self.tag & LOC_MASK) as usize
    }

    /// Sets the moved flag; true if it was not set yet.
    #[inline]
    pub(super) fn flag_moved(&mut self) -> bool {
        if self.tag & MOVED == 0 {
            self.tag |= MOVED;
            true
        } else {
            false
        }
    }

    #[inline]
    pub(super) fn clear_moved(&mut self) {
        self.tag &= !MOVED;
    }
}

#[inline]
pub(super) fn slot_key(sku: u32, loc: u32) -> u64 {
    (u64::from(sku) << 32) | u64::from(loc)
}

impl Ledger {
    #[inline]
    pub(super) fn mark(&mut self, slot: u32) {
        let c = &mut self.cells[slot as usize];
        if c.tag & DIRTY == 0 {
            c.tag |= DIRTY;
            self.dirty.push(slot);
        }
    }

    #[inline]
    pub(super) fn slot_of(&mut self, s: u32, l: u32) -> u32 {
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

    #[inline]
    pub(super) fn slot_for(&mut self, loc: &LocationId, sku: &Sku) -> u32 {
        let s = self.skus.intern(sku);
        let l = self.loc_idx(loc);
        self.slot_of(s, l)
    }

    #[inline]
    pub(super) fn add_reserved(&mut self, slot: u32, delta: i64) -> Result<(), ApplyError> {
        let p = &self.cells[slot as usize].pos;
        let r = add(p.reserved, delta).ok_or_else(|| self.overflow(slot))?;
        self.cells[slot as usize].pos.reserved = r;
        self.mark(slot);
        Ok(())
    }

    pub(super) fn overflow(&self, slot: u32) -> ApplyError {
        let (s, l) = self.slot_keys[slot as usize];
        ApplyError::Overflow {
            loc: self.locs.name(l).clone(),
            sku: self.skus.name(s).clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(moves: [i32; FIXED_REASONS.len()]) -> SlotCell {
        SlotCell {
            pos: Position {
                on_hand: 40,
                reserved: 2,
                safety_stock: 0,
                in_transit: 7,
            },
            moves,
            tag: 5,
        }
    }

    #[test]
    fn a_cell_without_movements_is_encoded_without_its_tally() {
        let quiet = cell([0; FIXED_REASONS.len()]);
        let mut moved = quiet;
        moved.moves[3] = -2;
        let quiet_bytes = rmp_serde::to_vec(&quiet).unwrap();
        let moved_bytes = rmp_serde::to_vec(&moved).unwrap();
        assert_eq!(
            moved_bytes.len() - quiet_bytes.len(),
            8,
            "[i32; 7] of small values"
        );
        for (c, bytes) in [(quiet, quiet_bytes), (moved, moved_bytes)] {
            let back: SlotCell = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!((back.pos, back.moves, back.tag), (c.pos, c.moves, 0));
        }
        // As every snapshot wrote it before: the tally always there, zeros included.
        let old = rmp_serde::to_vec(&(quiet.pos, [0i32; FIXED_REASONS.len()])).unwrap();
        let back: SlotCell = rmp_serde::from_slice(&old).unwrap();
        assert_eq!((back.pos, back.moves), (quiet.pos, quiet.moves));
    }
}
