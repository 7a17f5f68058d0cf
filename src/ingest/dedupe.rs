//! Per-source duplicate detection with bounded memory.
//!
//! JetStream's `Nats-Msg-Id` window drops quick re-sends; this catches the rest (re-sends after
//! the window, replays, redelivered messages). Per source it keeps a floor (every sequence at
//! or below it was seen) and a bitmap of the `window` sequences above the floor, so events may
//! arrive out of order within the window. When a sequence further ahead forces the window
//! forward, the unseen sequences it jumps over are remembered as gaps (a bounded list): a late
//! arrival inside a remembered gap is reported as `Late`, never mistaken for a duplicate.

use crate::domain::SourceId;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// First sighting: apply it.
    New,
    /// Seen before: count it, do not apply.
    Duplicate,
    /// Older than the reorder window and inside a gap that was skipped: it was never applied,
    /// but applying it now would break per-source order. Dead-lettered for review.
    Late,
}

/// How many skipped ranges a source remembers.
const MAX_GAPS: usize = 64;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct SourceState {
    /// Every sequence <= floor has been seen or skipped as a gap.
    floor: u64,
    /// Bit i set: floor + 1 + i was seen.
    bits: Vec<u64>,
    /// Skipped ranges (inclusive) below the floor, oldest first.
    gaps: Vec<(u64, u64)>,
}

impl SourceState {
    fn new(words: usize) -> Self {
        SourceState {
            floor: 0,
            bits: vec![0; words],
            gaps: Vec::new(),
        }
    }

    fn test(&self, offset: u64) -> bool {
        self.bits[(offset / 64) as usize] & (1 << (offset % 64)) != 0
    }

    fn set(&mut self, offset: u64) {
        self.bits[(offset / 64) as usize] |= 1 << (offset % 64);
    }

    /// Moves the floor up by `n`, shifting the bitmap.
    fn shift(&mut self, n: u64) {
        let width = self.bits.len() as u64 * 64;
        if n >= width {
            self.bits.iter_mut().for_each(|w| *w = 0);
        } else {
            let words = (n / 64) as usize;
            let bits = (n % 64) as u32;
            let len = self.bits.len();
            for i in 0..len {
                let lo = self.bits.get(i + words).copied().unwrap_or(0);
                let hi = self.bits.get(i + words + 1).copied().unwrap_or(0);
                self.bits[i] = if bits == 0 {
                    lo
                } else {
                    (lo >> bits) | (hi << (64 - bits))
                };
            }
        }
        self.floor += n;
    }

    /// Advances the floor over every seen sequence directly above it.
    fn settle(&mut self) {
        let mut n = 0u64;
        for &w in &self.bits {
            if w == u64::MAX {
                n += 64;
            } else {
                n += u64::from(w.trailing_ones());
                break;
            }
        }
        if n > 0 {
            self.shift(n);
        }
    }
}

/// Counters a dedupe table keeps about what it saw.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupeStats {
    pub duplicates: u64,
    pub late: u64,
    /// Sequences skipped because a source jumped further ahead than the window.
    pub gap_sequences: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Dedupe {
    window_words: usize,
    sources: FxHashMap<SourceId, SourceState>,
    pub stats: DedupeStats,
}

impl Dedupe {
    /// `window` is rounded up to a multiple of 64 sequences.
    pub fn new(window: u64) -> Self {
        Dedupe {
            window_words: window.div_ceil(64).max(1) as usize,
            sources: FxHashMap::default(),
            stats: DedupeStats::default(),
        }
    }

    pub fn window(&self) -> u64 {
        self.window_words as u64 * 64
    }

    pub fn sources(&self) -> usize {
        self.sources.len()
    }

    /// Highest sequence known seen for `source` without a hole below it.
    pub fn floor(&self, source: &SourceId) -> Option<u64> {
        self.sources.get(source).map(|s| s.floor)
    }

    /// Judges `seq` from `source` and records it when new.
    pub fn check(&mut self, source: &SourceId, seq: u64) -> Verdict {
        let words = self.window_words;
        let state = match self.sources.get_mut(source) {
            Some(s) => s,
            None => self
                .sources
                .entry(source.clone())
                .or_insert_with(|| SourceState::new(words)),
        };
        let width = words as u64 * 64;
        if seq <= state.floor {
            if let Some(i) = state.gaps.iter().position(|&(a, b)| a <= seq && seq <= b) {
                // Never seen: it fell into a skipped gap. Split the gap so a second copy of
                // this late event is then judged a duplicate.
                let (a, b) = state.gaps.remove(i);
                if seq > a {
                    state.gaps.insert(i, (a, seq - 1));
                }
                if seq < b {
                    let at = if seq > a { i + 1 } else { i };
                    state.gaps.insert(at, (seq + 1, b));
                }
                self.stats.late += 1;
                return Verdict::Late;
            }
            self.stats.duplicates += 1;
            return Verdict::Duplicate;
        }
        let mut offset = seq - state.floor - 1;
        if offset >= width {
            // Jump: slide the window so seq is its last slot; unseen slots become gaps.
            let n = offset - width + 1;
            let mut skipped_from = None;
            let mut skipped = 0u64;
            for i in 0..n.min(width) {
                let s = state.floor + 1 + i;
                if !state.test(i) {
                    skipped += 1;
                    if skipped_from.is_none() {
                        skipped_from = Some(s);
                    }
                } else if let Some(from) = skipped_from.take() {
                    state.gaps.push((from, s - 1));
                }
            }
            let end = state.floor + n;
            if n > width {
                skipped += n - width;
                if skipped_from.is_none() {
                    skipped_from = Some(state.floor + width + 1);
                }
            }
            if let Some(from) = skipped_from {
                state.gaps.push((from, end));
            }
            if state.gaps.len() > MAX_GAPS {
                let excess = state.gaps.len() - MAX_GAPS;
                state.gaps.drain(..excess);
            }
            self.stats.gap_sequences += skipped;
            state.shift(n);
            offset = seq - state.floor - 1;
        }
        if state.test(offset) {
            self.stats.duplicates += 1;
            return Verdict::Duplicate;
        }
        state.set(offset);
        state.settle();
        Verdict::New
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The obvious, unbounded model: a set of everything seen.
    fn oracle(seen: &mut std::collections::HashSet<u64>, seq: u64) -> bool {
        seen.insert(seq)
    }

    #[test]
    fn in_order_then_repeats() {
        let mut d = Dedupe::new(64);
        let s = SourceId::from("pos/1");
        for i in 1..=200 {
            assert_eq!(d.check(&s, i), Verdict::New);
        }
        assert_eq!(d.floor(&s), Some(200));
        for i in [1, 100, 200] {
            assert_eq!(d.check(&s, i), Verdict::Duplicate);
        }
        assert_eq!(d.stats.duplicates, 3);
    }

    #[test]
    fn reordering_inside_the_window_matches_a_set() {
        let mut d = Dedupe::new(128);
        let s = SourceId::from("web/1");
        let mut seen = std::collections::HashSet::new();
        // A deterministic shuffle within blocks of 100 plus re-sends.
        let mut x: u64 = 12345;
        let mut order = Vec::new();
        for block in 0..50u64 {
            let mut v: Vec<u64> = (block * 100 + 1..=block * 100 + 100).collect();
            for i in (1..v.len()).rev() {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                v.swap(i, (x >> 33) as usize % (i + 1));
            }
            order.extend(v.iter().copied());
            order.extend(v.iter().take(10).copied());
        }
        for seq in order {
            let expect = oracle(&mut seen, seq);
            let got = d.check(&s, seq);
            assert_eq!(got == Verdict::New, expect, "seq {seq}");
        }
        assert_eq!(d.floor(&s), Some(5000));
        assert_eq!(d.stats.duplicates, 500);
    }

    #[test]
    fn a_jump_leaves_gaps_and_late_arrivals_are_not_called_duplicates() {
        let mut d = Dedupe::new(64);
        let s = SourceId::from("wms/1");
        assert_eq!(d.check(&s, 1), Verdict::New);
        assert_eq!(d.check(&s, 3), Verdict::New);
        // 1000 is far beyond the window: 2 and 4..=936 become gaps.
        assert_eq!(d.check(&s, 1000), Verdict::New);
        assert_eq!(d.stats.gap_sequences, 1 + (936 - 4 + 1));
        assert_eq!(d.check(&s, 2), Verdict::Late);
        assert_eq!(
            d.check(&s, 2),
            Verdict::Duplicate,
            "a second copy is a duplicate"
        );
        assert_eq!(d.check(&s, 3), Verdict::Duplicate);
        assert_eq!(d.check(&s, 500), Verdict::Late);
        assert_eq!(d.check(&s, 501), Verdict::Late);
        assert_eq!(d.check(&s, 500), Verdict::Duplicate);
        // Inside the window but not yet seen.
        assert_eq!(d.check(&s, 990), Verdict::New);
        assert_eq!(d.check(&s, 990), Verdict::Duplicate);
    }

    #[test]
    fn sources_are_independent() {
        let mut d = Dedupe::new(64);
        assert_eq!(d.check(&SourceId::from("a"), 1), Verdict::New);
        assert_eq!(d.check(&SourceId::from("b"), 1), Verdict::New);
        assert_eq!(d.check(&SourceId::from("a"), 1), Verdict::Duplicate);
        assert_eq!(d.sources(), 2);
    }

    #[test]
    fn bitmap_shift_across_word_boundaries() {
        let mut d = Dedupe::new(256);
        let s = SourceId::from("x");
        let mut seen = std::collections::HashSet::new();
        // Leave 1 missing so the floor stays at 0, then fill far ahead.
        for seq in (2..=250).step_by(3) {
            assert_eq!(d.check(&s, seq) == Verdict::New, oracle(&mut seen, seq));
        }
        for seq in 2..=250 {
            assert_eq!(
                d.check(&s, seq) == Verdict::New,
                oracle(&mut seen, seq),
                "seq {seq}"
            );
        }
        assert_eq!(d.floor(&s), Some(0));
        assert_eq!(d.check(&s, 1), Verdict::New);
        assert_eq!(d.floor(&s), Some(250));
    }
}
