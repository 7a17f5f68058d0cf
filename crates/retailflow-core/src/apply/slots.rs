//! An open-addressing map from a (sku, location) key to a slot index, with prefetch.
//!
//! The ledger looks up one key per op in a table of up to millions of entries; nearly every
//! lookup is a cache miss. A general-purpose map cannot be asked to start loading the bucket of
//! a key it will be asked about shortly; this one can, so a batch resolves its keys with many
//! misses in flight at once.

const EMPTY: u64 = u64::MAX;

/// Entries a table needs for `n` keys: it is kept at most three quarters full. At half full
/// (as it was) the table took 32 to 64 bytes per position; linear probing at three quarters
/// still finds most keys in the first cache line (four entries per line), and lookups are of
/// keys that are present, which need (1 + 1/(1 - load)) / 2 probes on average: 2.5 at most.
#[inline]
fn fitting(n: usize) -> usize {
    n + n.div_ceil(3)
}

#[derive(Clone, Debug)]
pub struct SlotTable {
    /// (key, value) side by side: a probe touches one cache line.
    entries: Vec<(u64, u32)>,
    len: usize,
    shift: u32,
}

impl Default for SlotTable {
    fn default() -> Self {
        SlotTable::with_capacity(1024)
    }
}

#[inline(always)]
fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch is a hint and cannot fault; the pointer comes from a reference.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((r as *const T).cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

/// Starts loading `r` into cache (used for ledger slots too).
#[inline(always)]
pub fn prefetch_ref<T>(r: &T) {
    prefetch(r)
}

impl SlotTable {
    /// A table that holds `n` keys without growing.
    pub fn with_capacity(n: usize) -> SlotTable {
        let cap = fitting(n.max(12)).next_power_of_two();
        SlotTable {
            entries: vec![(EMPTY, 0); cap],
            len: 0,
            shift: 64 - cap.trailing_zeros(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Heap bytes of the table.
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<(u64, u32)>()
    }

    #[inline(always)]
    fn home(&self, key: u64) -> usize {
        // Fibonacci hashing: multiply, keep the top bits.
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// Starts loading the bucket `key` hashes to.
    #[inline(always)]
    pub fn prefetch(&self, key: u64) {
        prefetch(&self.entries[self.home(key)]);
    }

    #[inline]
    pub fn get(&self, key: u64) -> Option<u32> {
        let mask = self.entries.len() - 1;
        let mut i = self.home(key);
        loop {
            let (k, v) = self.entries[i];
            if k == key {
                return Some(v);
            }
            if k == EMPTY {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    /// Inserts a key that is not present yet.
    pub fn insert(&mut self, key: u64, value: u32) {
        debug_assert_ne!(key, EMPTY);
        if fitting(self.len + 1) > self.entries.len() {
            self.grow();
        }
        let mask = self.entries.len() - 1;
        let mut i = self.home(key);
        while self.entries[i].0 != EMPTY {
            i = (i + 1) & mask;
        }
        self.entries[i] = (key, value);
        self.len += 1;
    }

    fn grow(&mut self) {
        let mut bigger = SlotTable::with_capacity(self.entries.len() * 3 / 4 * 2);
        for &(k, v) in &self.entries {
            if k != EMPTY {
                bigger.insert(k, v);
            }
        }
        *self = bigger;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn behaves_like_a_map_through_growth() {
        let mut t = SlotTable::with_capacity(4);
        let mut m = HashMap::new();
        let mut x: u64 = 1;
        for i in 0..50_000u32 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = x >> 3;
            if m.contains_key(&key) {
                continue;
            }
            t.insert(key, i);
            m.insert(key, i);
        }
        assert_eq!(t.len(), m.len());
        for (k, v) in &m {
            assert_eq!(t.get(*k), Some(*v));
        }
        assert_eq!(t.get(12345), m.get(&12345).copied());
        // Keys that collide on their home bucket (same low bits after the multiply).
        let mut small = SlotTable::with_capacity(16);
        for k in 0..20u64 {
            small.insert(k << 40, k as u32);
        }
        for k in 0..20u64 {
            assert_eq!(small.get(k << 40), Some(k as u32));
        }
    }
}
