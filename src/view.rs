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
use retailflow_core::apply::paged::Paged;
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use retailflow_core::apply::op::shard_of;

/// The view's location names. Each location gets a view-wide index the first time any shard
/// publishes a position there, so a position stores a 4-byte index instead of its 24-byte name;
/// a chain has thousands of locations and hundreds of millions of positions.
#[derive(Debug, Default)]
pub struct LocationNames {
    names: Vec<LocationId>,
    index: FxHashMap<LocationId, u32>,
}

impl LocationNames {
    pub fn name(&self, i: u32) -> &LocationId {
        &self.names[i as usize]
    }

    pub fn get(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    fn intern(&mut self, name: &LocationId) -> u32 {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(name.clone());
        self.index.insert(name.clone(), i);
        i
    }
}

#[derive(Debug, Default)]
pub struct CellData {
    /// Stream sequence of the batch that last wrote this cell.
    pub as_of: u64,
    /// Each position's location (its index in [`LocationNames`]), side by side with
    /// `positions`, in the order the shard first wrote them; a [`ViewWriter`] remembers each
    /// one's index, so an entry never moves. Two arrays rather than one of pairs: a pair would
    /// pad the 4-byte index to 8.
    locs: Vec<u32>,
    positions: Vec<Position>,
    /// Indexes into `locs` and `positions`, ordered by location name. A popular SKU has a
    /// position at hundreds of locations, and queries and the change feed look locations up
    /// by name: a binary search here instead of a scan of every entry.
    by_name: Vec<u32>,
}

impl CellData {
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Index of the position at `location`.
    fn find(&self, names: &LocationNames, location: &str) -> Option<usize> {
        self.by_name
            .binary_search_by(|&i| names.name(self.locs[i as usize]).as_str().cmp(location))
            .ok()
            .map(|k| self.by_name[k] as usize)
    }

    /// Adds a position at a location the cell does not hold yet; returns its index.
    fn insert(&mut self, names: &LocationNames, loc: u32, position: Position) -> usize {
        let i = self.positions.len();
        let name = names.name(loc);
        let at = self
            .by_name
            .partition_point(|&k| names.name(self.locs[k as usize]) < name);
        self.by_name.insert(at, i as u32);
        self.locs.push(loc);
        self.positions.push(position);
        i
    }
}

/// One SKU's positions as a reader sees them: the cell and the names to find them by.
#[derive(Clone, Copy)]
pub struct Cell<'a> {
    data: &'a CellData,
    names: &'a LocationNames,
}

impl<'a> Cell<'a> {
    /// The position at `location`, if the SKU has one there.
    pub fn get(&self, location: &str) -> Option<&'a Position> {
        let data = self.data;
        data.find(self.names, location).map(|i| &data.positions[i])
    }

    /// The positions ordered by location name.
    pub fn sorted(&self) -> impl Iterator<Item = (&'a LocationId, &'a Position)> + use<'a> {
        let (data, names) = (self.data, self.names);
        data.by_name.iter().map(move |&i| {
            let i = i as usize;
            (names.name(data.locs[i]), &data.positions[i])
        })
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
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
    /// Taken before a cell's lock, never after: readers read-lock it, then the cell; a shard
    /// write-locks it only to add a location, holding no cell.
    names: RwLock<LocationNames>,
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
            names: RwLock::new(LocationNames::default()),
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
                e.sorted()
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
    pub fn with_entries<R>(&self, sku: &Sku, f: impl FnOnce(Option<Cell<'_>>, u64) -> R) -> R {
        let shard = shard_of(sku.as_str(), self.marks.len());
        let mark = self.applied(shard);
        let Some(cell) = self.cells.get(sku).map(|c| c.clone()) else {
            return f(None, mark);
        };
        let Ok(names) = self.names.read() else {
            return f(None, mark);
        };
        let Ok(data) = cell.data.read() else {
            return f(None, mark);
        };
        let as_of = mark.max(data.as_of);
        f(
            Some(Cell {
                data: &data,
                names: &names,
            }),
            as_of,
        )
    }

    /// Puts a position straight into a SKU's cell, as a shard's writer would: for tests of
    /// the readers.
    #[cfg(test)]
    pub(crate) fn put(&self, sku: &Sku, location: &LocationId, position: Position) {
        let loc = self.names.write().unwrap().intern(location);
        let names = self.names.read().unwrap();
        let cell = self.cell(sku);
        let mut data = cell.data.write().unwrap();
        match data.find(&names, location.as_str()) {
            Some(i) => data.positions[i] = position,
            None => {
                data.insert(&names, loc, position);
            }
        }
    }

    /// Heap bytes the view holds (capacities times element sizes), for the lab's memory
    /// breakdown: the concurrent map, the per-SKU cells, and each cell's positions and name
    /// order. An estimate; SKU names longer than their inline size are not followed.
    pub fn footprint(&self) -> Vec<(&'static str, usize)> {
        use std::mem::size_of;
        let (mut entries, mut by_name) = (0, 0);
        for c in self.cells.iter() {
            if let Ok(d) = c.value().data.read() {
                entries += d.locs.capacity() * size_of::<u32>()
                    + d.positions.capacity() * size_of::<Position>();
                by_name += d.by_name.capacity() * size_of::<u32>();
            }
        }
        let names = self.names.read().map_or(0, |n| {
            n.names.capacity() * size_of::<LocationId>()
                + n.index.capacity() * (size_of::<(LocationId, u32)>() + 1)
        });
        let n = self.cells.len();
        vec![
            (
                "view.map (sku -> cell)",
                self.cells.capacity() * (size_of::<(Sku, Arc<SkuCell>)>() + 1),
            ),
            ("view.cells (Arc<SkuCell>)", n * (16 + size_of::<SkuCell>())),
            ("view.entries (location index, position)", entries),
            ("view.by_name", by_name),
            ("view.location names", names),
        ]
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

/// Shard-side writer: remembers each SKU's cell, each slot's index inside it and each ledger
/// location's view-wide index, so a batch publishes its dirty slots without touching the
/// concurrent map or the names.
#[derive(Default)]
pub struct ViewWriter {
    cells: Vec<Option<Arc<SkuCell>>>,
    /// Per ledger slot; paged, as the ledger's own arrays, so it holds no doubling slack.
    slot_index: Paged<u32>,
    /// Per ledger location index: its index in the view's [`LocationNames`].
    locs: Vec<u32>,
}

const NONE: u32 = u32::MAX;

impl ViewWriter {
    /// Heap bytes of the writer's own indexes.
    pub fn heap_bytes(&self) -> usize {
        self.cells.capacity() * std::mem::size_of::<Option<Arc<SkuCell>>>()
            + self.slot_index.heap_bytes()
            + self.locs.capacity() * std::mem::size_of::<u32>()
    }

    /// The view-wide index of ledger location `l`, named on first use.
    fn location(
        &mut self,
        view: &View,
        ledger: &retailflow_core::apply::ledger::Ledger,
        l: u32,
    ) -> u32 {
        let li = l as usize;
        if self.locs.len() <= li {
            self.locs.resize(li + 1, NONE);
        }
        if self.locs[li] == NONE {
            if let Ok(mut names) = view.names.write() {
                self.locs[li] = names.intern(ledger.loc_name(l));
            }
        }
        self.locs[li]
    }

    /// Publishes the given slots of `ledger` at sequence `seq`.
    pub fn publish(
        &mut self,
        view: &View,
        ledger: &retailflow_core::apply::ledger::Ledger,
        slots: &[u32],
        seq: u64,
    ) {
        // Name every location new to this writer first: that takes the names' write lock,
        // which must not wait while this thread holds their read lock below.
        for &slot in slots {
            if self
                .slot_index
                .get(slot as usize)
                .is_none_or(|&i| i == NONE)
            {
                let (_, l, _) = ledger.slot(slot);
                self.location(view, ledger, l);
            }
        }
        let Ok(names) = view.names.read() else {
            return;
        };
        for &slot in slots {
            let (s, l, pos) = ledger.slot(slot);
            let si = s as usize;
            if self.cells.len() <= si {
                self.cells.resize(si + 1, None);
            }
            let cell = self.cells[si]
                .get_or_insert_with(|| view.cell(ledger.sku_name(s)))
                .clone();
            self.slot_index.extend_to(slot as usize + 1, NONE);
            let Ok(mut data) = cell.data.write() else {
                continue;
            };
            let idx = self.slot_index[slot as usize];
            if idx == NONE {
                let loc = self.locs.get(l as usize).copied().unwrap_or(NONE);
                if loc == NONE {
                    continue;
                }
                // A restarted shard finds the cell already holding this location.
                let i = match data.find(&names, ledger.loc_name(l).as_str()) {
                    Some(i) => i,
                    None => data.insert(&names, loc, *pos),
                };
                self.slot_index[slot as usize] = i as u32;
                data.positions[i] = *pos;
            } else {
                data.positions[idx as usize] = *pos;
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
        let mut data = CellData::default();
        let mut table = LocationNames::default();
        let mut names: Vec<String> = Vec::new();
        // Other SKUs named locations first, so view indexes and cell indexes differ.
        for i in 0..50u32 {
            table.intern(&LocationId::new(format!("M{i:03}")));
        }
        // Locations arrive in no order; each keeps the index it got.
        for i in 0..300u32 {
            let name = format!("L{:05}", (i * 7919) % 1000);
            let loc = table.intern(&LocationId::new(name.as_str()));
            let index = data.insert(
                &table,
                loc,
                Position {
                    on_hand: i64::from(i),
                    ..Default::default()
                },
            );
            assert_eq!(index, i as usize);
            names.push(name);
        }
        let cell = Cell {
            data: &data,
            names: &table,
        };
        for (i, name) in names.iter().enumerate() {
            assert_eq!(data.find(&table, name), Some(i));
            assert_eq!(cell.get(name).map(|p| p.on_hand), Some(i as i64));
        }
        assert_eq!(cell.get("L99999"), None);
        assert_eq!(cell.get("M001"), None);
        assert_eq!(cell.get(""), None);
        assert_eq!(cell.len(), 300);
        let listed: Vec<&str> = cell.sorted().map(|(l, _)| l.as_str()).collect();
        let mut want: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
        want.sort();
        assert_eq!(listed, want);
    }

    /// Two shards whose ledgers numbered the same locations differently publish into one view;
    /// a restarted shard's fresh writer finds the positions already there instead of adding
    /// them twice. Checked against a plain map of what was applied.
    #[test]
    fn shards_share_location_names_and_a_restarted_writer_finds_its_positions() {
        use retailflow_core::apply::ledger::Ledger;
        use retailflow_core::apply::op::Op;
        use std::collections::BTreeMap;
        let view = View::new(2);
        let mut ledgers = [Ledger::new(), Ledger::new()];
        let mut writers = [ViewWriter::default(), ViewWriter::default()];
        let mut want: BTreeMap<(String, String), i64> = BTreeMap::new();
        let mut seq = 0;
        for round in 0..3i64 {
            for i in 0..40usize {
                // Shard 1 meets the locations in the opposite order to shard 0.
                let loc = format!("S{:02}", if i % 2 == 0 { i % 7 } else { 6 - i % 7 });
                let sku = format!("SKU-{i}");
                let shard = shard_of(&sku, 2);
                seq += 1;
                let qty = 10 + round + i as i64;
                ledgers[shard]
                    .apply(
                        seq,
                        &Op::Receipt {
                            loc: loc.as_str().into(),
                            sku: sku.as_str().into(),
                            qty,
                        },
                    )
                    .unwrap();
                *want.entry((sku, loc)).or_default() += qty;
            }
            for s in 0..2 {
                let dirty = ledgers[s].take_dirty();
                writers[s].publish(&view, &ledgers[s], &dirty, seq);
            }
            if round == 1 {
                // Shard 0 restarts: its ledger comes back with every slot dirty.
                writers[0] = ViewWriter::default();
                ledgers[0].reindex();
            }
        }
        let mut got: BTreeMap<(String, String), i64> = BTreeMap::new();
        for i in 0..40usize {
            let sku = format!("SKU-{i}");
            let (answers, _) = view.read(&Sku::from(sku.as_str()));
            for a in answers.unwrap_or_default() {
                let old = got.insert((sku.clone(), a.location.to_string()), a.position.on_hand);
                assert_eq!(old, None, "{sku} at {} listed twice", a.location);
            }
        }
        assert_eq!(got, want);
        assert_eq!(view.names.read().unwrap().len(), 7);
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
