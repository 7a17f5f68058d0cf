//! The scenario oracle: what ATP and the ERP's books must be after the run, computed with a
//! deliberately plain model that shares no code with the ledger or the aggregator. It sees every
//! event exactly once, in publication order (duplicates never reach it).

use retailflow::domain::*;
use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stock {
    pub on_hand: i64,
    pub reserved: i64,
    pub safety_stock: i64,
    pub in_transit: i64,
}

/// Sales per (location, sku, tax code) for the one business day and currency of a scenario.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SalesTotal {
    pub qty_sold: i64,
    pub qty_returned: i64,
    pub sales_amount: i64,
    pub returns_amount: i64,
    pub tax_amount: i64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TenderTotal {
    pub paid: i64,
    pub refunded: i64,
}

#[derive(Default)]
pub struct Oracle {
    pub stock: HashMap<(String, String), Stock>,
    pub sales: BTreeMap<(String, String, String), SalesTotal>,
    pub tenders: BTreeMap<(String, String), TenderTotal>,
    orders: HashMap<(String, String), (String, i64)>,
    order_skus: HashMap<String, Vec<String>>,
    transfers: HashMap<(String, String), i64>,
    pub events: u64,
    /// Events held back with their stream sequence, to be applied in stream order.
    held: Option<Vec<(u64, Event)>>,
}

impl Oracle {
    /// From now on events are applied in the order the stream stored them, not the order
    /// they were generated: where a producer had to publish again (a cluster node died under
    /// it), the two differ, and what retailflow applies is the stream's order.
    pub fn hold_for_stream_order(&mut self) {
        self.held.get_or_insert_with(Vec::new);
    }

    pub fn holds(&self) -> bool {
        self.held.is_some()
    }

    /// `e` was stored at stream sequence `seq` (when holding; applied at once otherwise).
    pub fn stored(&mut self, seq: u64, e: Event) {
        match &mut self.held {
            Some(held) => held.push((seq, e)),
            None => self.apply(&e),
        }
    }

    /// Applies the held events in stream order.
    pub fn apply_held(&mut self) {
        let Some(mut held) = self.held.take() else {
            return;
        };
        held.sort_by_key(|(seq, _)| *seq);
        for (_, e) in held.drain(..) {
            self.apply(&e);
        }
        self.held = Some(held);
    }

    fn at(&mut self, loc: &LocationId, sku: &Sku) -> &mut Stock {
        self.stock
            .entry((loc.to_string(), sku.to_string()))
            .or_default()
    }

    pub fn apply(&mut self, e: &Event) {
        self.events += 1;
        match e {
            Event::Receipt(r) => {
                for l in &r.lines {
                    self.at(&r.location, &l.sku).on_hand += l.qty;
                }
            }
            Event::Sale(s) => self.sale(s),
            Event::Return(r) => self.sale_return(r),
            Event::Adjustment(a) => self.at(&a.location, &a.sku).on_hand += a.qty,
            Event::Count(c) => self.at(&c.location, &c.sku).on_hand = c.counted,
            Event::SafetyStockSet(s) => self.at(&s.location, &s.sku).safety_stock = s.qty,
            Event::TransferOut(t) => self.transfer_out(t),
            Event::TransferIn(t) => self.transfer_in(t),
            Event::OrderPlaced(o) => self.order_placed(o),
            Event::OrderFulfilled(o) => self.order_fulfilled(o),
            Event::OrderCancelled(o) => self.order_cancelled(o),
            _ => {}
        }
    }

    fn sale(&mut self, s: &Sale) {
        for l in &s.lines {
            self.at(&s.location, &l.sku).on_hand -= l.qty;
            let t = self
                .sales
                .entry((
                    s.location.to_string(),
                    l.sku.to_string(),
                    l.tax_code.to_string(),
                ))
                .or_default();
            t.qty_sold += l.qty;
            t.sales_amount += l.qty * l.unit_price - l.discount;
            t.tax_amount += l.taxes.iter().map(|x| x.amount).sum::<i64>();
        }
        for t in &s.tenders {
            self.tenders
                .entry((s.location.to_string(), t.kind.to_string()))
                .or_default()
                .paid += t.amount;
        }
    }

    fn sale_return(&mut self, r: &Return) {
        for l in &r.lines {
            if l.restock.unwrap_or(true) {
                self.at(&r.location, &l.sku).on_hand += l.qty;
            }
            let t = self
                .sales
                .entry((
                    r.location.to_string(),
                    l.sku.to_string(),
                    l.tax_code.to_string(),
                ))
                .or_default();
            t.qty_returned += l.qty;
            t.returns_amount += l.qty * l.unit_price - l.discount;
            t.tax_amount -= l.taxes.iter().map(|x| x.amount).sum::<i64>();
        }
        for t in &r.tenders {
            self.tenders
                .entry((r.location.to_string(), t.kind.to_string()))
                .or_default()
                .refunded += t.amount;
        }
    }

    fn transfer_out(&mut self, t: &Transfer) {
        for l in &t.lines {
            self.at(&t.from, &l.sku).on_hand -= l.qty;
            self.at(&t.to, &l.sku).in_transit += l.qty;
            *self
                .transfers
                .entry((t.transfer_id.to_string(), l.sku.to_string()))
                .or_default() += l.qty;
        }
    }

    fn transfer_in(&mut self, t: &Transfer) {
        for l in &t.lines {
            let key = (t.transfer_id.to_string(), l.sku.to_string());
            let open = self.transfers.remove(&key).unwrap_or(0);
            let matched = open.min(l.qty);
            if open > matched {
                self.transfers.insert(key, open - matched);
            }
            let s = self.at(&t.to, &l.sku);
            s.in_transit -= matched;
            s.on_hand += l.qty;
        }
    }

    fn order_placed(&mut self, o: &OrderPlaced) {
        // Scenario orders always name their location.
        if let Some(loc) = &o.location {
            for l in &o.lines {
                self.at(loc, &l.sku).reserved += l.qty;
                self.orders
                    .entry((o.order_id.to_string(), l.sku.to_string()))
                    .or_insert((loc.to_string(), 0))
                    .1 += l.qty;
                self.order_skus
                    .entry(o.order_id.to_string())
                    .or_default()
                    .push(l.sku.to_string());
            }
        }
    }

    fn order_fulfilled(&mut self, o: &OrderFulfilled) {
        for l in &o.lines {
            let key = (o.order_id.to_string(), l.sku.to_string());
            if let Some((loc, open)) = self.orders.remove(&key) {
                let take = open.min(l.qty);
                self.at(&LocationId::from(loc.as_str()), &l.sku).reserved -= take;
                if open > take {
                    self.orders.insert(key, (loc, open - take));
                }
            }
            self.at(&o.location, &l.sku).on_hand -= l.qty;
        }
    }

    fn order_cancelled(&mut self, o: &OrderCancelled) {
        for sku in self
            .order_skus
            .remove(o.order_id.as_str())
            .unwrap_or_default()
        {
            let k = (o.order_id.to_string(), sku);
            if let Some((loc, open)) = self.orders.remove(&k) {
                self.at(&LocationId::from(loc.as_str()), &Sku::from(k.1.as_str()))
                    .reserved -= open;
            }
        }
    }
}
