//! Routing: one decoded event becomes per-shard ops and, for sales and returns, one store
//! event. Batches are built here and dispatched as one actor message per destination.

use crate::apply::op::shard_of;
use crate::apply::op::{Op, ops_of};
use crate::domain::*;
use rustc_hash::FxHashMap;

/// What a store aggregator needs of a sale or return.
#[derive(Clone, Debug)]
pub struct StoreEvent {
    pub seq: u64,
    /// The producer (a till) and its sequence, for the day's completeness check.
    pub till: Option<(SourceId, u64)>,
    /// Set for a `day_closed`, whose lines and tenders are empty.
    pub close: Option<Box<DayClosed>>,
    pub business_day: BusinessDay,
    pub currency: Currency,
    pub lines: Vec<ItemLine>,
    pub tenders: Vec<Tender>,
    pub returning: bool,
}

pub struct Routed {
    pub shard_ops: Vec<Vec<(u64, Op)>>,
    pub stores: FxHashMap<LocationId, Vec<StoreEvent>>,
    /// Ops (a broadcast op once per shard): the credit the shard ops take.
    pub shard_work: u64,
    /// Store events: the credit they take.
    pub store_work: u64,
    pub events: u64,
}

impl Routed {
    pub fn new(shards: usize) -> Self {
        Routed {
            shard_ops: (0..shards).map(|_| Vec::new()).collect(),
            stores: FxHashMap::default(),
            shard_work: 0,
            store_work: 0,
            events: 0,
        }
    }

    /// Ops plus store events: the credit the whole batch takes.
    pub fn work(&self) -> u64 {
        self.shard_work + self.store_work
    }

    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// Splits `event` (already validated and deduplicated) into this batch.
    pub fn route(&mut self, seq: u64, event: Event) {
        self.route_from(seq, None, event)
    }

    /// As [`Routed::route`], naming the producer and its sequence (kept per store and day to
    /// find missing till transactions).
    pub fn route_from(&mut self, seq: u64, till: Option<(SourceId, u64)>, event: Event) {
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
            Event::DayClosed(d) => {
                self.stores
                    .entry(d.location.clone())
                    .or_default()
                    .push(StoreEvent {
                        seq,
                        till: None,
                        business_day: d.business_day,
                        currency: d.currency,
                        close: Some(Box::new(d)),
                        lines: Vec::new(),
                        tenders: Vec::new(),
                        returning: false,
                    });
                self.store_work += 1;
                None
            }
            _ => None,
        };
        if let Some((loc, business_day, currency, lines, tenders, returning)) = store {
            self.stores.entry(loc).or_default().push(StoreEvent {
                seq,
                till,
                close: None,
                business_day,
                currency,
                lines,
                tenders,
                returning,
            });
            // Counted after the push: an event that panicked half-way counts nothing (see
            // `forget`).
            self.store_work += 1;
        }
        self.shard_work += work;
        self.events += 1;
    }

    /// Drops whatever `route(seq, ..)` pushed before it panicked, so a half-routed event
    /// never reaches a shard. Its work was not counted yet (counters move last).
    pub fn forget(&mut self, seq: u64) {
        for ops in &mut self.shard_ops {
            while ops.last().is_some_and(|(s, _)| *s == seq) {
                ops.pop();
            }
        }
        for events in self.stores.values_mut() {
            if events.last().is_some_and(|e| e.seq == seq) {
                events.pop();
            }
        }
    }

    /// Routes a reservation request whose key is bound to another request: its shard answers
    /// it with a conflict and changes nothing.
    pub fn refuse(&mut self, seq: u64, r: ReservationRequested) {
        let s = shard_of(r.sku.as_str(), self.shard_ops.len());
        self.shard_ops[s].push((seq, Op::Refuse(std::sync::Arc::new(r))));
        self.shard_work += 1;
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
            shard_work: 0,
            store_work: 0,
            events: 0,
        };
        std::mem::replace(self, next)
    }

    /// Takes the shard ops and their credit, leaving the store events where they are.
    pub fn take_shard_ops(&mut self) -> (Vec<Vec<(u64, Op)>>, u64) {
        let next = self
            .shard_ops
            .iter()
            .map(|v| Vec::with_capacity(v.len()))
            .collect();
        self.events = 0;
        (
            std::mem::replace(&mut self.shard_ops, next),
            std::mem::take(&mut self.shard_work),
        )
    }

    /// Takes the store events and their credit.
    pub fn take_store_events(&mut self) -> (FxHashMap<LocationId, Vec<StoreEvent>>, u64) {
        let next = FxHashMap::with_capacity_and_hasher(self.stores.len(), Default::default());
        (
            std::mem::replace(&mut self.stores, next),
            std::mem::take(&mut self.store_work),
        )
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
        assert_eq!((r.shard_work, r.store_work, r.work()), (1, 1, 2));
    }

    #[test]
    fn shard_ops_can_leave_while_store_events_wait() {
        let mut r = Routed::new(2);
        r.route(1, sale(1).event);
        r.route(2, sale(2).event);
        let (ops, work) = r.take_shard_ops();
        assert_eq!((ops.iter().map(Vec::len).sum::<usize>(), work), (2, 2));
        assert!(r.shard_ops.iter().all(Vec::is_empty));
        assert_eq!((r.shard_work, r.store_work), (0, 2));
        r.route(3, sale(3).event);
        let (stores, work) = r.take_store_events();
        let seqs: Vec<u64> = stores[&LocationId::from("S1")]
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!((seqs, work), (vec![1, 2, 3], 3));
        assert!(r.stores.is_empty());
        assert_eq!((r.shard_work, r.store_work), (1, 0));
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
        assert_eq!((r.shard_work, r.store_work), (4, 0));
    }
}
