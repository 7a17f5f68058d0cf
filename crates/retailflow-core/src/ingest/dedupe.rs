//! Per-source duplicate detection with bounded memory.
//!
//! JetStream's `Nats-Msg-Id` window drops quick re-sends; this catches the rest (re-sends after
//! the window, replays, redelivered messages). Per source it keeps a floor (every sequence at
//! or below it was seen) and a bitmap of the `window` sequences above the floor, so events may
//! arrive out of order within the window. When a sequence further ahead forces the window
//! forward, the unseen sequences it jumps over are remembered as gaps (a bounded list): a late
//! arrival inside a remembered gap is reported as `Late`, never mistaken for a duplicate.
//!
//! Bounds, because the source id and sequence come from the network:
//! - gaps: at most [`MAX_GAPS`] per source, on both paths that add one (a jump ahead and a late
//!   arrival splitting a gap). Beyond it the oldest gap is forgotten (counted in
//!   `gaps_dropped`); a late event that later falls into it is judged a duplicate: counted,
//!   never applied. At most once is kept; only the `late` review of that event is lost.
//! - sequence jumps: a known source whose sequence jumps more than `max_jump` past its floor
//!   gets [`Verdict::Jump`] (dead-lettered `sequence_jump`) and its floor does not move, so one
//!   spoofed `seq = u64::MAX` cannot silence a real till. A source's first sighting is taken
//!   as it comes (a till may be older than the stream).
//! - sources: at most `max_sources`. When a new source would pass it, the least recently seen
//!   eighth of the table is forgotten at once (amortised, no per-event bookkeeping beyond a
//!   counter). A forgotten source that comes back starts afresh: that is the horizon, beyond
//!   which only JetStream's duplicate window recognises its re-sends.

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
    /// Further ahead of the source's floor than `max_jump`: not applied, the floor stays.
    Jump,
}

/// How many skipped ranges a source remembers.
pub const MAX_GAPS: usize = 64;

/// Default for `ingest.dedupe_sources`.
pub const DEFAULT_MAX_SOURCES: usize = 100_000;
/// Default for `ingest.max_sequence_jump`.
pub const DEFAULT_MAX_JUMP: u64 = 1_000_000;

fn default_max_sources() -> usize {
    DEFAULT_MAX_SOURCES
}

fn default_max_jump() -> u64 {
    DEFAULT_MAX_JUMP
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct SourceState {
    /// Every sequence <= floor has been seen or skipped as a gap.
    floor: u64,
    /// Bit i set: floor + 1 + i was seen.
    bits: Vec<u64>,
    /// Skipped ranges (inclusive) below the floor, oldest first.
    gaps: Vec<(u64, u64)>,
    /// The table's clock when this source last had a new event (LRU order). Snapshots from
    /// before this field read as 0: least recently seen.
    #[serde(default)]
    last_seen: u64,
}

impl SourceState {
    fn new(words: usize) -> Self {
        SourceState {
            floor: 0,
            bits: vec![0; words],
            gaps: Vec::new(),
            last_seen: 0,
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
    /// Remembered gaps forgotten to stay under [`MAX_GAPS`].
    #[serde(default)]
    pub gaps_dropped: u64,
    /// Sources forgotten to stay under `max_sources`.
    #[serde(default)]
    pub sources_evicted: u64,
    /// Events refused for jumping further than `max_jump`.
    #[serde(default)]
    pub jumps: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Dedupe {
    window_words: usize,
    sources: FxHashMap<SourceId, SourceState>,
    pub stats: DedupeStats,
    /// Counts new events; stamps `last_seen`.
    #[serde(default)]
    clock: u64,
    /// Configuration, not state: set after a restore by [`Dedupe::set_bounds`].
    #[serde(skip, default = "default_max_sources")]
    max_sources: usize,
    #[serde(skip, default = "default_max_jump")]
    max_jump: u64,
    /// Stream sequences of dead-lettered events already brought back by a re-drive, newest
    /// last, at most [`MAX_REDRIVEN`]: a second re-drive of the same letter is not applied.
    #[serde(default)]
    redriven: std::collections::VecDeque<u64>,
}

/// Re-driven letters remembered by the dedupe table (the oldest is forgotten beyond it; the
/// audit stream still refuses a second re-drive of one letter).
pub const MAX_REDRIVEN: usize = 100_000;

impl Dedupe {
    /// `window` is rounded up to a multiple of 64 sequences.
    pub fn new(window: u64) -> Self {
        Dedupe {
            window_words: window.div_ceil(64).max(1) as usize,
            sources: FxHashMap::default(),
            stats: DedupeStats::default(),
            clock: 0,
            max_sources: DEFAULT_MAX_SOURCES,
            max_jump: DEFAULT_MAX_JUMP,
            redriven: std::collections::VecDeque::new(),
        }
    }

    /// A re-drive of the event dead-lettered at stream sequence `of`: true the first time,
    /// false when that letter was re-driven before (so it is not applied twice).
    pub fn redrive(&mut self, of: u64) -> bool {
        if self.redriven.contains(&of) {
            return false;
        }
        if self.redriven.len() >= MAX_REDRIVEN {
            self.redriven.pop_front();
        }
        self.redriven.push_back(of);
        true
    }

    /// Sets the bounds (`ingest.dedupe_sources`, `ingest.max_sequence_jump`); zero is taken
    /// as one / as no jump beyond the window.
    pub fn set_bounds(&mut self, max_sources: usize, max_jump: u64) {
        self.max_sources = max_sources.max(1);
        self.max_jump = max_jump;
    }

    pub fn max_jump(&self) -> u64 {
        self.max_jump
    }

    /// Forgets the least recently seen eighth of the sources (at least one). Runs once per
    /// `max_sources / 8` new sources, so its cost per event stays constant.
    fn evict(&mut self) {
        let n = (self.sources.len() / 8).max(1);
        let mut seen: Vec<u64> = self.sources.values().map(|s| s.last_seen).collect();
        let (_, &mut cut, _) = seen.select_nth_unstable(n - 1);
        let before = self.sources.len();
        // Ties at the cut may take a few more than n: still the least recently seen.
        self.sources.retain(|_, s| s.last_seen > cut);
        self.stats.sources_evicted += (before - self.sources.len()) as u64;
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
        if !self.sources.contains_key(source) && self.sources.len() >= self.max_sources {
            self.evict();
        }
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
                // A split adds a gap: the bound holds here too, or late arrivals one by one
                // (3, 5, 7, ... inside one huge gap) grow the list and each scan of it.
                if state.gaps.len() > MAX_GAPS {
                    let excess = state.gaps.len() - MAX_GAPS;
                    state.gaps.drain(..excess);
                    self.stats.gaps_dropped += excess as u64;
                }
                self.stats.late += 1;
                return Verdict::Late;
            }
            self.stats.duplicates += 1;
            return Verdict::Duplicate;
        }
        // A known source (anything seen, or a floor) may not leap: a spoofed huge sequence
        // would otherwise lift the floor over every real event to come.
        if seq - state.floor > width.saturating_add(self.max_jump)
            && (state.floor > 0 || state.bits.iter().any(|&w| w != 0))
        {
            self.stats.jumps += 1;
            return Verdict::Jump;
        }
        self.clock += 1;
        state.last_seen = self.clock;
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
                self.stats.gaps_dropped += excess as u64;
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
    fn a_letter_is_redriven_once_and_survives_a_snapshot() {
        let mut d = Dedupe::new(64);
        assert!(d.redrive(41));
        assert!(d.redrive(7));
        assert!(!d.redrive(41));
        let bytes = rmp_serde::to_vec(&d).unwrap();
        let mut back: Dedupe = rmp_serde::from_slice(&bytes).unwrap();
        assert!(!back.redrive(7));
        assert!(back.redrive(8));
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
    fn late_arrivals_splitting_one_huge_gap_stay_bounded() {
        // seq 1, 2^40, then 3, 5, 7, ...: each late arrival splits the one gap in two.
        let mut d = Dedupe::new(64);
        d.set_bounds(DEFAULT_MAX_SOURCES, u64::MAX);
        let s = SourceId::from("pos/s1/t1");
        assert_eq!(d.check(&s, 1), Verdict::New);
        assert_eq!(d.check(&s, 1 << 40), Verdict::New);
        for seq in (3..20_000u64).step_by(2) {
            assert_eq!(d.check(&s, seq), Verdict::Late, "seq {seq}");
            assert!(d.sources[&s].gaps.len() <= MAX_GAPS);
        }
        let late = (3..20_000u64).step_by(2).count() as u64;
        assert_eq!(d.stats.late, late);
        // Every split beyond the bound forgot exactly one (the oldest) gap.
        assert_eq!(d.stats.gaps_dropped, late + 1 - MAX_GAPS as u64);
        // A sequence in a forgotten gap is a counted duplicate, never applied; one in a
        // remembered gap is still late.
        assert_eq!(d.check(&s, 2), Verdict::Duplicate);
        assert_eq!(d.check(&s, 1 << 39), Verdict::Late);
    }

    #[test]
    fn a_spoofed_huge_sequence_does_not_silence_a_known_source() {
        let mut d = Dedupe::new(64);
        d.set_bounds(DEFAULT_MAX_SOURCES, 1_000_000);
        let till = SourceId::from("pos/s0042/t03");
        for seq in 1..=10 {
            assert_eq!(d.check(&till, seq), Verdict::New);
        }
        assert_eq!(d.check(&till, u64::MAX), Verdict::Jump);
        assert_eq!(d.check(&till, 10 + 64 + 1_000_001), Verdict::Jump);
        assert_eq!(d.floor(&till), Some(10));
        // The real till goes on.
        assert_eq!(d.check(&till, 11), Verdict::New);
        // A jump inside the bound still moves the window, as before.
        assert_eq!(d.check(&till, 11 + 64 + 1_000_000), Verdict::New);
        assert_eq!(d.stats.jumps, 2);
        // A source's first sighting is taken as it comes.
        assert_eq!(
            d.check(&SourceId::from("pos/s1/t9"), 5_000_000),
            Verdict::New
        );
    }

    #[test]
    fn the_source_table_forgets_the_least_recently_seen() {
        let mut d = Dedupe::new(64);
        d.set_bounds(80, DEFAULT_MAX_JUMP);
        let src = |i: u32| SourceId::from(format!("pos/s{i}").as_str());
        for i in 0..80 {
            assert_eq!(d.check(&src(i), 1), Verdict::New);
        }
        // Source 0 stays busy; the others go quiet.
        assert_eq!(d.check(&src(0), 2), Verdict::New);
        // A flood of new (spoofed) sources.
        for i in 1000..1300 {
            d.check(&src(i), 1);
            assert!(d.sources() <= 80);
        }
        assert!(d.stats.sources_evicted >= 300 - 80);
        assert_eq!(
            d.stats.sources_evicted as usize + d.sources(),
            81 + 300 - 1,
            "every source either kept or counted as evicted"
        );
        // The quiet ones went first: source 1 was forgotten and starts afresh.
        assert_eq!(d.floor(&src(1)), None);
        assert_eq!(d.check(&src(1), 1), Verdict::New);
    }

    #[test]
    fn snapshots_from_before_the_bounds_still_load() {
        // The dedupe state as the previous build encoded it (positional MessagePack, no
        // last_seen, clock or new stats): the same shapes minus the new fields.
        #[derive(Serialize)]
        struct OldSource {
            floor: u64,
            bits: Vec<u64>,
            gaps: Vec<(u64, u64)>,
        }
        #[derive(Serialize)]
        struct OldStats {
            duplicates: u64,
            late: u64,
            gap_sequences: u64,
        }
        #[derive(Serialize)]
        struct Old {
            window_words: usize,
            sources: std::collections::HashMap<String, OldSource>,
            stats: OldStats,
        }
        let old = Old {
            window_words: 1,
            sources: [(
                "pos/s1".to_string(),
                OldSource {
                    floor: 7,
                    bits: vec![0],
                    gaps: vec![(2, 3)],
                },
            )]
            .into(),
            stats: OldStats {
                duplicates: 1,
                late: 0,
                gap_sequences: 2,
            },
        };
        let bytes = rmp_serde::to_vec(&old).unwrap();
        let mut d: Dedupe = rmp_serde::from_slice(&bytes).expect("old snapshot loads");
        let s = SourceId::from("pos/s1");
        assert_eq!(d.floor(&s), Some(7));
        assert_eq!(d.check(&s, 2), Verdict::Late);
        assert_eq!(d.check(&s, 5), Verdict::Duplicate);
        assert_eq!(d.check(&s, 8), Verdict::New);
        assert_eq!(d.max_jump(), DEFAULT_MAX_JUMP);
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
