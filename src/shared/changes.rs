//! The change-feed marks: the (location, SKU) positions each shard changed since the feed
//! publisher last took them (the publisher is `query::feed`).

use crate::domain::{LocationId, Sku};
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// (location, sku) positions changed since the last publication, by SKU.
#[derive(Default)]
pub struct ChangeFeed {
    enabled: bool,
    pending: Mutex<Pending>,
    pub(crate) channels_changed: AtomicBool,
}

#[derive(Default)]
struct Pending {
    by_sku: FxHashMap<Sku, SmallVec<[LocationId; 2]>>,
    /// How many times the publisher has taken `by_sku`; a shard's [`Marked`] is valid for one
    /// value of it.
    taken: u64,
}

/// A shard's memory of the ledger slots it marked since the publisher last took the pending
/// map. A popular SKU changes at hundreds of locations inside one window; without it, every
/// mark would scan the SKU's list of changed locations by name.
#[derive(Default)]
pub struct Marked {
    taken: u64,
    bits: Vec<u64>,
}

impl Marked {
    /// True when `slot` was not marked yet in this window (and now is).
    fn first(&mut self, slot: u32) -> bool {
        let (word, bit) = ((slot / 64) as usize, 1u64 << (slot % 64));
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        let fresh = self.bits[word] & bit == 0;
        self.bits[word] |= bit;
        fresh
    }
}

impl ChangeFeed {
    pub fn new(enabled: bool) -> ChangeFeed {
        ChangeFeed {
            enabled,
            ..ChangeFeed::default()
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Shard side: these ledger slots changed; `name` gives a slot's (sku, location). A slot
    /// names one position, and one shard owns each SKU, so a slot already in `marked` is
    /// already pending and costs nothing more. `marked` starts over whenever the publisher has
    /// taken the map since; both happen under the same lock, so a mark is never lost between
    /// a take and the reset of `marked`.
    pub fn mark<'a>(
        &self,
        marked: &mut Marked,
        slots: &[u32],
        name: impl Fn(u32) -> (&'a Sku, &'a LocationId),
    ) {
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        if marked.taken != pending.taken {
            marked.taken = pending.taken;
            marked.bits.fill(0);
        }
        for &slot in slots {
            if !marked.first(slot) {
                continue;
            }
            let (sku, loc) = name(slot);
            match pending.by_sku.get_mut(sku) {
                Some(locs) => locs.push(loc.clone()),
                None => {
                    pending
                        .by_sku
                        .insert(sku.clone(), smallvec::smallvec![loc.clone()]);
                }
            }
        }
    }

    /// Shard side: the channel table changed.
    pub fn mark_channels(&self) {
        self.channels_changed.store(true, Ordering::Release);
    }

    pub(crate) fn take(&self) -> FxHashMap<Sku, SmallVec<[LocationId; 2]>> {
        self.pending
            .lock()
            .map(|mut pending| {
                pending.taken += 1;
                // The next window starts at this one's size: grown from empty, the map rehashed
                // into fresh memory several times a window, each time faulting it in.
                let size = pending.by_sku.len();
                std::mem::replace(
                    &mut pending.by_sku,
                    FxHashMap::with_capacity_and_hasher(size, Default::default()),
                )
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_is_pending_once_per_window_and_again_after_a_take() {
        let feed = ChangeFeed::new(true);
        let names: Vec<(Sku, LocationId)> = [("A", "S1"), ("A", "S2"), ("B", "S1")]
            .iter()
            .map(|(s, l)| (Sku::new(*s), LocationId::new(*l)))
            .collect();
        let name = |slot: u32| {
            let (s, l) = &names[slot as usize];
            (s, l)
        };
        let sorted = |m: FxHashMap<Sku, SmallVec<[LocationId; 2]>>| {
            let mut v: Vec<(String, Vec<String>)> = m
                .into_iter()
                .map(|(s, ls)| (s.to_string(), ls.iter().map(|l| l.to_string()).collect()))
                .collect();
            v.sort();
            v
        };
        let mut marked = Marked::default();
        feed.mark(&mut marked, &[0, 1], name);
        feed.mark(&mut marked, &[1, 0, 2], name);
        feed.mark(&mut marked, &[2], name);
        assert_eq!(
            sorted(feed.take()),
            vec![
                ("A".into(), vec!["S1".into(), "S2".into()]),
                ("B".into(), vec!["S1".into()]),
            ]
        );
        assert!(feed.take().is_empty());
        // A new window: the same slot is news again.
        feed.mark(&mut marked, &[1], name);
        feed.mark(&mut marked, &[1], name);
        assert_eq!(sorted(feed.take()), vec![("A".into(), vec!["S2".into()])]);
        // Another shard keeps its own memory; its slot numbers are its own.
        let mut other = Marked::default();
        feed.mark(&mut marked, &[0], name);
        feed.mark(&mut other, &[2], name);
        assert_eq!(
            sorted(feed.take()),
            vec![
                ("A".into(), vec!["S1".into()]),
                ("B".into(), vec!["S1".into()]),
            ]
        );
    }
}
