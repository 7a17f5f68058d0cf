//! The availability view: what queries read, without ever going through an actor mailbox.
//!
//! Each SKU has a cell holding its positions at every location and the stream sequence of the
//! last batch that wrote it. Each shard publishes a watermark: every event up to it that
//! belongs to the shard is applied and visible. A reader takes the watermark first, then the
//! cell; the answer reflects at least `max(watermark, cell.as_of)`. Shards write a cell only
//! at the end of a batch, so a reader never sees half an op.

use crate::domain::{ChannelId, LocationId, Sku, SourcingRule};
use dashmap::DashMap;
use retailflow_core::apply::ledger::{ChannelInfo, Position};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use retailflow_core::apply::op::shard_of;

#[derive(Debug, Default)]
pub struct CellData {
    /// Stream sequence of the batch that last wrote this cell.
    pub as_of: u64,
    /// Positions in the order the shard first wrote them; a [`ViewWriter`] remembers each
    /// one's index, so an entry never moves.
    entries: Vec<(LocationId, Position)>,
    /// Indexes into `entries`, ordered by location id. A popular SKU has a position at
    /// hundreds of locations, and queries and the change feed look locations up by name: a
    /// binary search here instead of a scan of every entry.
    by_name: Vec<u32>,
}

impl CellData {
    /// The positions, in no particular order.
    pub fn entries(&self) -> &[(LocationId, Position)] {
        &self.entries
    }

    /// Index in [`CellData::entries`] of the position at `location`.
    pub fn find(&self, location: &str) -> Option<usize> {
        self.by_name
            .binary_search_by(|&i| self.entries[i as usize].0.as_str().cmp(location))
            .ok()
            .map(|k| self.by_name[k] as usize)
    }

    /// The positions ordered by location id.
    pub fn sorted(&self) -> impl Iterator<Item = &(LocationId, Position)> {
        self.by_name.iter().map(|&i| &self.entries[i as usize])
    }

    /// Adds a position at a location the cell does not hold yet; returns its index.
    pub(crate) fn insert(&mut self, location: LocationId, position: Position) -> usize {
        let i = self.entries.len();
        let at = self
            .by_name
            .partition_point(|&k| self.entries[k as usize].0 < location);
        self.by_name.insert(at, i as u32);
        self.entries.push((location, position));
        i
    }
}

#[derive(Debug, Default)]
pub struct SkuCell {
    pub data: RwLock<CellData>,
}

#[derive(Clone, Debug)]
pub struct ChannelView {
    pub rule: SourcingRule,
    pub allow_split: bool,
    pub buffer: i64,
    pub locations: Vec<LocationId>,
}

pub struct ShardMark {
    applied: AtomicU64,
    tx: tokio::sync::watch::Sender<u64>,
}

pub struct View {
    /// False while the pipeline restores state; queries answer 503 then.
    ready: std::sync::atomic::AtomicBool,
    /// Counts the times the view became ready (each start or restart of a generation).
    ready_epoch: AtomicU64,
    cells: DashMap<Sku, Arc<SkuCell>>,
    marks: Vec<ShardMark>,
    channels: RwLock<Arc<BTreeMap<ChannelId, ChannelView>>>,
}

/// One location's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocAnswer {
    pub location: LocationId,
    pub position: Position,
}

impl View {
    pub fn new(shards: usize) -> Arc<View> {
        Arc::new(View {
            ready: std::sync::atomic::AtomicBool::new(false),
            ready_epoch: AtomicU64::new(0),
            cells: DashMap::new(),
            marks: (0..shards)
                .map(|_| ShardMark {
                    applied: AtomicU64::new(0),
                    tx: tokio::sync::watch::channel(0).0,
                })
                .collect(),
            channels: RwLock::new(Arc::new(BTreeMap::new())),
        })
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self, ready: bool) {
        if ready {
            self.ready_epoch.fetch_add(1, Ordering::AcqRel);
        }
        self.ready.store(ready, Ordering::Release);
    }

    /// How many times the view became ready; a change means it was rebuilt.
    pub fn ready_epoch(&self) -> u64 {
        self.ready_epoch.load(Ordering::Acquire)
    }

    /// Forgets everything before a restore: restored shards republish their state at `seq`.
    pub fn reset(&self, seq: u64) {
        self.set_ready(false);
        self.cells.clear();
        for s in 0..self.marks.len() {
            self.set_applied(s, seq);
        }
    }

    pub fn shards(&self) -> usize {
        self.marks.len()
    }

    /// The cell for a SKU, created empty on first use (shard side).
    pub fn cell(&self, sku: &Sku) -> Arc<SkuCell> {
        if let Some(c) = self.cells.get(sku) {
            return c.clone();
        }
        self.cells.entry(sku.clone()).or_default().clone()
    }

    pub fn sku_count(&self) -> usize {
        self.cells.len()
    }

    /// Shard side: everything up to `seq` for this shard is visible.
    pub fn set_applied(&self, shard: usize, seq: u64) {
        let m = &self.marks[shard];
        m.applied.store(seq, Ordering::Release);
        m.tx.send_replace(seq);
    }

    pub fn applied(&self, shard: usize) -> u64 {
        self.marks[shard].applied.load(Ordering::Acquire)
    }

    /// Lowest watermark over all shards: the sequence the whole view reflects.
    pub fn applied_all(&self) -> u64 {
        (0..self.marks.len())
            .map(|s| self.applied(s))
            .min()
            .unwrap_or(0)
    }

    /// Shard side: replaces the channel table.
    pub fn set_channels(&self, table: Vec<(ChannelId, ChannelInfo, Vec<LocationId>)>) {
        let map = table
            .into_iter()
            .map(|(c, info, locations)| {
                (
                    c,
                    ChannelView {
                        rule: info.rule,
                        allow_split: info.allow_split,
                        buffer: info.buffer,
                        locations,
                    },
                )
            })
            .collect();
        if let Ok(mut guard) = self.channels.write() {
            *guard = Arc::new(map);
        }
    }

    pub fn channel(&self, c: &ChannelId) -> Option<ChannelView> {
        self.channels.read().ok()?.get(c).cloned()
    }

    pub fn channels(&self) -> Arc<BTreeMap<ChannelId, ChannelView>> {
        self.channels.read().map(|g| g.clone()).unwrap_or_default()
    }

    /// Reads one SKU: its known positions and the sequence they reflect. `None` when the SKU
    /// was never seen.
    pub fn read(&self, sku: &Sku) -> (Option<Vec<LocAnswer>>, u64) {
        self.with_entries(sku, |entries, as_of| {
            let answers = entries.map(|e| {
                e.entries()
                    .iter()
                    .map(|(l, p)| LocAnswer {
                        location: l.clone(),
                        position: *p,
                    })
                    .collect()
            });
            (answers, as_of)
        })
    }

    /// Runs `f` over one SKU's positions (`None` when the SKU was never seen) and the sequence
    /// they reflect, without copying them. The SKU's cell is read-locked while `f` runs, so `f`
    /// must be short: its shard waits to publish that cell.
    pub fn with_entries<R>(&self, sku: &Sku, f: impl FnOnce(Option<&CellData>, u64) -> R) -> R {
        let shard = shard_of(sku.as_str(), self.marks.len());
        let mark = self.applied(shard);
        let Some(cell) = self.cells.get(sku).map(|c| c.clone()) else {
            return f(None, mark);
        };
        let Ok(data) = cell.data.read() else {
            return f(None, mark);
        };
        let as_of = mark.max(data.as_of);
        f(Some(&data), as_of)
    }

    /// Waits until the shard owning `sku` has applied `seq`, at most `limit`. Returns whether
    /// it got there.
    pub async fn wait_for(&self, sku: &Sku, seq: u64, limit: Duration) -> bool {
        let shard = shard_of(sku.as_str(), self.marks.len());
        self.wait_shard(shard, seq, limit).await
    }

    pub async fn wait_shard(&self, shard: usize, seq: u64, limit: Duration) -> bool {
        if self.applied(shard) >= seq {
            return true;
        }
        let mut rx = self.marks[shard].tx.subscribe();
        let fut = rx.wait_for(|v| *v >= seq);
        matches!(tokio::time::timeout(limit, fut).await, Ok(Ok(_)))
    }

    /// Waits until every shard has applied `seq`.
    pub async fn wait_all(&self, seq: u64, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        for s in 0..self.marks.len() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !self.wait_shard(s, seq, left).await {
                return false;
            }
        }
        true
    }
}

/// Shard-side writer: remembers each SKU's cell and each slot's index inside it, so a batch
/// publishes its dirty slots without touching the concurrent map.
#[derive(Default)]
pub struct ViewWriter {
    cells: Vec<Option<Arc<SkuCell>>>,
    slot_index: Vec<u32>,
}

impl ViewWriter {
    /// Publishes the given slots of `ledger` at sequence `seq`.
    pub fn publish(
        &mut self,
        view: &View,
        ledger: &retailflow_core::apply::ledger::Ledger,
        slots: &[u32],
        seq: u64,
    ) {
        const NONE: u32 = u32::MAX;
        for &slot in slots {
            let (s, l, pos) = ledger.slot(slot);
            let si = s as usize;
            if self.cells.len() <= si {
                self.cells.resize(si + 1, None);
            }
            let cell = self.cells[si]
                .get_or_insert_with(|| view.cell(ledger.sku_name(s)))
                .clone();
            if self.slot_index.len() <= slot as usize {
                self.slot_index.resize(slot as usize + 1, NONE);
            }
            let Ok(mut data) = cell.data.write() else {
                continue;
            };
            let idx = self.slot_index[slot as usize];
            if idx == NONE {
                let loc = ledger.loc_name(l);
                // A restarted shard finds the cell already holding this location.
                let i = match data.find(loc.as_str()) {
                    Some(i) => i,
                    None => data.insert(loc.clone(), *pos),
                };
                self.slot_index[slot as usize] = i as u32;
                data.entries[i].1 = *pos;
            } else {
                data.entries[idx as usize].1 = *pos;
            }
            data.as_of = data.as_of.max(seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_finds_each_location_by_name_and_lists_them_in_name_order() {
        let mut cell = CellData::default();
        let mut names: Vec<String> = Vec::new();
        // Locations arrive in no order; each keeps the index it got.
        for i in 0..300u32 {
            let name = format!("L{:05}", (i * 7919) % 1000);
            let index = cell.insert(
                LocationId::new(name.as_str()),
                Position {
                    on_hand: i64::from(i),
                    ..Default::default()
                },
            );
            assert_eq!(index, i as usize);
            names.push(name);
        }
        for (i, name) in names.iter().enumerate() {
            let found = cell.find(name).expect("an inserted location is found");
            assert_eq!(found, i);
            assert_eq!(cell.entries()[found].1.on_hand, i as i64);
        }
        assert_eq!(cell.find("L99999"), None);
        assert_eq!(cell.find(""), None);
        let listed: Vec<&str> = cell.sorted().map(|(l, _)| l.as_str()).collect();
        let mut want: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
        want.sort();
        assert_eq!(listed, want);
    }

    #[test]
    fn shard_hash_is_stable() {
        // FNV-1a of "SKU-1" computed by hand-checked reference implementation.
        let mut counts = [0usize; 4];
        for i in 0..10_000 {
            counts[shard_of(&format!("SKU-{i}"), 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 2000), "{counts:?}");
        assert_eq!(
            shard_of("a", 1_000_003),
            (0xaf63dc4c8601ec8c_u64 % 1_000_003) as usize
        );
    }

    #[tokio::test]
    async fn waiting_for_a_sequence() {
        let view = View::new(2);
        let sku = Sku::from("A");
        assert!(!view.wait_for(&sku, 5, Duration::from_millis(10)).await);
        let v2 = view.clone();
        let shard = shard_of("A", 2);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            v2.set_applied(shard, 7);
        });
        assert!(view.wait_for(&sku, 5, Duration::from_secs(5)).await);
    }
}
