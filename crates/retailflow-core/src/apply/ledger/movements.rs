//! The movement tally: net on_hand movements per (location, sku, reason) since the last
//! posting flush, and the stream range they cover. Fixed reasons count in the slot cell; the
//! open-ended adjustment reasons and tallies too large for a cell spill into a map.

use super::{ApplyError, Ledger, add};
use crate::aggregate::posting::Lineage;
use crate::domain::LocationId;

pub use crate::aggregate::posting::MovementLine;

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

pub(super) const FIXED_REASONS: [&str; 7] = [
    "sale",
    "return",
    "receipt",
    "count",
    "transfer_out",
    "transfer_in",
    "fulfilment",
];

impl Ledger {
    /// Adds `delta` to on_hand and records the movement.
    #[inline]
    pub(super) fn move_on_hand(
        &mut self,
        slot: u32,
        delta: i64,
        reason: u16,
    ) -> Result<(), ApplyError> {
        let before = self.cells[slot as usize].pos.on_hand;
        let Some(after) = add(before, delta) else {
            return Err(self.overflow(slot));
        };
        let r = reason as usize;
        let spill = if r < FIXED_REASONS.len() {
            let c = &mut self.cells[slot as usize];
            if c.flag_moved() {
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

    /// Stream range of the movements since the last flush, per location; resets it.
    pub fn take_movement_lineage(&mut self) -> Vec<(LocationId, Lineage)> {
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
            c.clear_moved();
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
        self.scratch_moves = shrunk(raw, out.len());
        let moved = std::mem::take(&mut self.moved);
        self.moved = shrunk(moved, out.len());
        out
    }
}

/// `v` (emptied) with its capacity cut back to twice `used` when it holds more than four times
/// that. Flush after flush of a drain need about the same room, which is kept; one huge flush
/// (the opening stock of a whole chain touches every position) must not leave its working
/// lists allocated for good: at 16 bytes a line, tens of bytes per position.
fn shrunk<T>(mut v: Vec<T>, used: usize) -> Vec<T> {
    const KEEP: usize = 4096;
    v.clear();
    if v.capacity() > (4 * used).max(KEEP) {
        v.shrink_to((2 * used).max(KEEP));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::super::cells::SlotCell;
    use super::*;
    use crate::apply::op::Op;

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

    /// The opening stock of a chain moves every position in one flush; the flushes after it
    /// are small and must not keep that flush's working lists, nor the cells a doubling `Vec`
    /// would have kept spare.
    #[test]
    fn a_huge_flush_leaves_no_huge_lists_behind() {
        let n = 100_000u64;
        let mut g = Ledger::new();
        for i in 0..n {
            let sku = format!("S{i}");
            g.apply(
                i + 1,
                &Op::Receipt {
                    loc: "DC1".into(),
                    sku: sku.as_str().into(),
                    qty: 5,
                },
            )
            .unwrap();
        }
        assert_eq!(g.take_movements().len(), n as usize);
        g.apply(
            n + 1,
            &Op::Sale {
                loc: "DC1".into(),
                sku: "S1".into(),
                qty: 1,
            },
        )
        .unwrap();
        let m = g.take_movements();
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].sku.as_str(), m[0].qty), ("S1", -1));
        assert!(
            g.scratch_moves.capacity() <= 4096,
            "{}",
            g.scratch_moves.capacity()
        );
        assert!(g.moved.capacity() <= 4096, "{}", g.moved.capacity());
        // Cells: at most one page (4,096 cells) beyond what is used, plus the page table.
        let cells = g.footprint()[0].1;
        assert!(cells <= (n as usize + 4096) * 64 + 64 * 24, "{cells}");
        // The slot index: at most three quarters full, at most twice the room it needs.
        let index = g.footprint()[2].1;
        assert!(
            index <= (n as usize * 4 / 3 + 1).next_power_of_two() * 16,
            "{index}"
        );
    }
}
