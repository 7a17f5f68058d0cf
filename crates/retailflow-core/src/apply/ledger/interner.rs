//! Keys interned to dense `u32` indices, so the hot path hashes small integers and the state
//! is plain vectors.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::hash::Hash;

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

    /// Heap bytes of the key list and the index (keys' own heap data not followed).
    pub fn heap_bytes(&self) -> usize {
        let k = std::mem::size_of::<K>();
        self.items.capacity() * k + self.index.capacity() * (k + 4 + 1)
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
