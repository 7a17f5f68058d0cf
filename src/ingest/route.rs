//! Routing: one decoded event becomes per-shard ops and, for sales and returns, one store
//! event. Batches are built here and dispatched as one actor message per destination.

use crate::apply::op::{Op, ops_of};
use crate::apply::view::shard_of;
use crate::domain::*;
use rustc_hash::FxHashMap;

/// What a store aggregator needs of a sale or return.
#[derive(Clone, Debug)]
pub struct StoreEvent {
    pub seq: u64,
    pub business_day: BusinessDay,
    pub currency: Currency,
    pub lines: Vec<ItemLine>,
    pub tenders: Vec<Tender>,
    pub returning: bool,
}

pub struct Routed {
    pub shard_ops: Vec<Vec<(u64, Op)>>,
    pub stores: FxHashMap<LocationId, Vec<StoreEvent>>,
    /// Ops plus store events: the credit this batch takes.
    pub work: u64,
    pub events: u64,
}

impl Routed {
    pub fn new(shards: usize) -> Self {
        Routed {
            shard_ops: (0..shards).map(|_| Vec::new()).collect(),
            stores: FxHashMap::default(),
            work: 0,
            events: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// Splits `event` (already validated and deduplicated) into this batch.
    pub fn route(&mut self, seq: u64, event: Event) {
        let shards = self.shard_ops.len();
        let mut work = 0;
        ops_of(&event, |op| {
            work += 1;
            match op.sku() {
                Some(sku) => {
                    let s = shard_of(sku.as_str(), shards);
                    self.shard_ops[s].push((seq, op));
                }
                None => {
                    for s in 0..shards {
                        self.shard_ops[s].push((seq, op.clone()));
                    }
                    work += shards as u64 - 1;
                }
            }
        });
        let store = match event {
            Event::Sale(s) => Some((
                s.location,
                s.business_day,
                s.currency,
                s.lines,
                s.tenders,
                false,
            )),
            Event::Return(r) => Some((
                r.location,
                r.business_day,
                r.currency,
                r.lines,
                r.tenders,
                true,
            )),
            _ => None,
        };
        if let Some((loc, business_day, currency, lines, tenders, returning)) = store {
            work += 1;
            self.stores.entry(loc).or_default().push(StoreEvent {
                seq,
                business_day,
                currency,
                lines,
                tenders,
                returning,
            });
        }
        self.work += work;
        self.events += 1;
    }

    /// Takes the batch, leaving an empty one of the same shape, sized like this one (batches
    /// are alike, so the vectors rarely grow).
    pub fn take(&mut self) -> Routed {
        let next = Routed {
            shard_ops: self
                .shard_ops
                .iter()
                .map(|v| Vec::with_capacity(v.len()))
                .collect(),
            stores: FxHashMap::with_capacity_and_hasher(self.stores.len(), Default::default()),
            work: 0,
            events: 0,
        };
        std::mem::replace(self, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::tests::sale;

    #[test]
    fn a_sale_goes_to_its_shard_and_its_store() {
        let mut r = Routed::new(3);
        r.route(5, sale(1).event);
        let s = shard_of("A", 3);
        assert_eq!(r.shard_ops[s].len(), 1);
        assert_eq!(r.shard_ops.iter().map(Vec::len).sum::<usize>(), 1);
        assert_eq!(r.stores[&LocationId::from("S1")][0].seq, 5);
        assert_eq!(r.work, 2);
    }

    #[test]
    fn master_data_is_broadcast() {
        let mut r = Routed::new(4);
        r.route(
            1,
            Event::LocationUpsert(LocationUpsert {
                location: "DC1".into(),
                kind: LocationKind::Dc,
                channels: vec!["web".into()],
                priority: 1,
            }),
        );
        assert!(r.shard_ops.iter().all(|ops| ops.len() == 1));
        assert_eq!(r.work, 4);
    }
}
