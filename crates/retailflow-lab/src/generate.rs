//! The load generator: a seeded, streaming sequence of messages to publish. Each trading event
//! is also handed to the oracle; duplicates, re-sends and poison are marked so the oracle and
//! the verification know what to expect of them.

use super::spec::Scenario;
use super::world::{Rng, World};
use async_nats::HeaderMap;
use bytes::Bytes;
use retailflow::domain::codec::{self, CONTENT_TYPE, JSON};
use retailflow::domain::*;
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutKind {
    /// Master data and opening stock, published before the trading load.
    Setup,
    /// A trading event.
    Event,
    /// The same message again with the same `Nats-Msg-Id` (JetStream drops it).
    Duplicate,
    /// An earlier event re-sent without `Nats-Msg-Id` (retailflow's dedupe drops it).
    Resend,
    /// Undecodable or invalid: must end in the dead letters.
    Poison,
}

#[derive(Clone, Debug)]
pub struct Outgoing {
    pub subject: String,
    pub headers: HeaderMap,
    pub payload: Bytes,
    pub kind: OutKind,
}

/// Systems the generator's sources use (`retail.v1.<system>...`).
pub const SYSTEMS: [&str; 4] = ["pos", "web", "wms", "mdm"];

struct Source {
    name: SourceId,
    next: u64,
    /// A sequence number kept back for the next event (the previous one took `next + 1`).
    reserved: Option<u64>,
}

pub struct Generator {
    world: Arc<World>,
    rng: Rng,
    scenario: Scenario,
    sources: Vec<Source>,
    source_index: HashMap<String, usize>,
    setup: VecDeque<(String, Event)>,
    trading_left: u64,
    trading_total: u64,
    poison_left: u64,
    poison_every: u64,
    since_poison: u64,
    open_orders: Vec<(u64, usize, usize, i64)>,
    open_transfers: Vec<(u64, usize, usize, usize, i64)>,
    next_order: u64,
    next_transfer: u64,
    recent: VecDeque<Outgoing>,
    /// Recently sold (store, sku): replenishment transfers follow demand.
    sold: VecDeque<(usize, usize)>,
    extra: VecDeque<Outgoing>,
    weights: Vec<(u32, Kind)>,
    systems: Vec<String>,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Sale,
    Return,
    Order,
    Fulfil,
    Cancel,
    Transfer,
    Receipt,
    Count,
    Adjust,
}

impl Generator {
    pub fn new(scenario: &Scenario, world: Arc<World>) -> Generator {
        let m = &scenario.mix;
        let weights = vec![
            (m.sale, Kind::Sale),
            (m.sale_return, Kind::Return),
            (m.order, Kind::Order),
            (m.fulfilment, Kind::Fulfil),
            (m.cancellation, Kind::Cancel),
            (m.transfer, Kind::Transfer),
            (m.receipt, Kind::Receipt),
            (m.count, Kind::Count),
            (m.adjustment, Kind::Adjust),
        ];
        let poison = scenario.faults.poison;
        let mut g = Generator {
            rng: Rng::new(scenario.seed),
            scenario: scenario.clone(),
            sources: Vec::new(),
            source_index: HashMap::new(),
            setup: VecDeque::new(),
            trading_left: scenario.load.events,
            trading_total: scenario.load.events,
            poison_left: poison,
            poison_every: if poison == 0 {
                u64::MAX
            } else {
                (scenario.load.events / (poison + 1)).max(1)
            },
            since_poison: 0,
            open_orders: Vec::new(),
            open_transfers: Vec::new(),
            next_order: 0,
            next_transfer: 0,
            recent: VecDeque::with_capacity(256),
            sold: VecDeque::with_capacity(1024),
            extra: VecDeque::new(),
            weights,
            systems: SYSTEMS.iter().map(|s| s.to_string()).collect(),
            world,
        };
        g.plan_setup();
        g
    }

    pub fn world(&self) -> &Arc<World> {
        &self.world
    }

    /// Setup messages (master data, opening stock) still to come.
    pub fn setup_len(&self) -> usize {
        self.setup.len()
    }

    pub fn trading_total(&self) -> u64 {
        self.trading_total
    }

    fn plan_setup(&mut self) {
        let w = self.world.clone();
        let ws = &self.scenario.world;
        for (i, loc) in w.locations.iter().enumerate() {
            let channels = w
                .channels
                .iter()
                .filter(|c| c.locations.contains(&i))
                .map(|c| ChannelId::from(c.name.as_str()))
                .collect();
            self.setup.push_back((
                "mdm/master".into(),
                Event::LocationUpsert(LocationUpsert {
                    location: loc.as_str().into(),
                    kind: if w.is_store(i) {
                        LocationKind::Store
                    } else {
                        LocationKind::Dc
                    },
                    channels,
                    priority: i as u32,
                }),
            ));
        }
        for (i, loc) in w.locations.iter().enumerate() {
            let (n, range) = if w.is_store(i) {
                (w.assortment, ws.store_stock)
            } else {
                (w.skus.len(), ws.dc_stock)
            };
            for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
                let lines = chunk
                    .iter()
                    .map(|&s| QtyLine {
                        sku: w.skus[s].id.as_str().into(),
                        qty: self.rng.range(range[0], range[1]).max(1),
                    })
                    .collect();
                self.setup.push_back((
                    format!("wms/{loc}"),
                    Event::Receipt(Receipt {
                        location: loc.as_str().into(),
                        lines,
                        reference: Some("opening".into()),
                    }),
                ));
            }
            if w.is_store(i) && ws.safety_stock[1] > 0 {
                for s in 0..w.assortment.min(100) {
                    let qty = self.rng.range(ws.safety_stock[0], ws.safety_stock[1]);
                    self.setup.push_back((
                        "mdm/master".into(),
                        Event::SafetyStockSet(SafetyStockSet {
                            location: loc.as_str().into(),
                            sku: w.skus[s].id.as_str().into(),
                            qty,
                        }),
                    ));
                }
            }
        }
    }

    fn source(&mut self, name: &str) -> usize {
        if let Some(&i) = self.source_index.get(name) {
            return i;
        }
        let i = self.sources.len();
        self.sources.push(Source {
            name: SourceId::from(name),
            next: 1,
            reserved: None,
        });
        self.source_index.insert(name.to_string(), i);
        i
    }

    /// Next per-source sequence; with `swap`, this event takes the one after next and the
    /// next event of the source gets the skipped one (out-of-order arrival).
    fn seq(&mut self, src: usize, swap: bool) -> u64 {
        let s = &mut self.sources[src];
        if let Some(r) = s.reserved.take() {
            return r;
        }
        if swap {
            let mine = s.next + 1;
            s.reserved = Some(s.next);
            s.next += 2;
            mine
        } else {
            let mine = s.next;
            s.next += 1;
            mine
        }
    }

    fn envelope(&mut self, source: &str, event: Event, swap: bool) -> Envelope {
        let src = self.source(source);
        let seq = self.seq(src, swap);
        let at = 1_795_737_600_000 + (self.trading_total - self.trading_left) as i64;
        Envelope::new(self.sources[src].name.as_str(), seq, at, event)
    }

    fn encode(&mut self, env: &Envelope, kind: OutKind) -> Outgoing {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", env.id.as_str());
        // A small share of producers speak JSON.
        let payload = if self.rng.below(100) == 0 {
            headers.insert(CONTENT_TYPE, JSON);
            serde_json::to_vec(env).unwrap_or_default()
        } else {
            codec::encode_msgpack(env).unwrap_or_default()
        };
        Outgoing {
            subject: env.subject(&self.systems, "pos"),
            headers,
            payload: payload.into(),
            kind,
        }
    }

    fn pick_kind(&mut self) -> Kind {
        let total: u32 = self.weights.iter().map(|w| w.0).sum();
        let mut x = self.rng.below(total.max(1) as u64) as u32;
        for &(w, k) in &self.weights {
            if x < w {
                return k;
            }
            x -= w;
        }
        Kind::Sale
    }

    fn line(&mut self, sku: usize, qty: i64) -> ItemLine {
        item_line(&self.world, &mut self.rng, sku, qty)
    }

    fn tenders(&mut self, total: i64) -> Vec<Tender> {
        tenders(&mut self.rng, total)
    }

    fn trading_event(&mut self) -> (String, Event) {
        let w = self.world.clone();
        let store = self.rng.below(w.stores.max(1) as u64) as usize;
        let dcs = w.dcs();
        loop {
            let kind = self.pick_kind();
            let made = match kind {
                Kind::Sale => Some(self.sale(&w, store)),
                Kind::Return => Some(self.sale_return(&w, store)),
                Kind::Order if !w.channels.is_empty() => self.order(&w),
                Kind::Fulfil | Kind::Cancel if !self.open_orders.is_empty() => {
                    Some(self.close_order(&w, kind))
                }
                Kind::Transfer if !dcs.is_empty() => Some(self.transfer(&w, dcs.clone(), store)),
                Kind::Receipt if !dcs.is_empty() => Some(self.receipt(&w, dcs.clone())),
                Kind::Count => Some(self.count(&w, store)),
                Kind::Adjust => Some(self.adjust(&w, store)),
                _ => None,
            };
            if let Some(made) = made {
                return made;
            }
        }
    }

    /// A sale at `store`: a few lines, drawn by popularity, and its tenders.
    fn sale(&mut self, w: &World, store: usize) -> (String, Event) {
        let store_name = &w.locations[store];
        let [lo, hi] = self.scenario.mix.sale_lines;
        let n = self.rng.range(lo.max(1) as i64, hi.max(lo).max(1) as i64);
        let mut lines = Vec::new();
        for _ in 0..n {
            let sku = w.store_zipf.sample(&mut self.rng);
            let qty = if self.rng.below(5) == 0 { 2 } else { 1 };
            lines.push(self.line(sku, qty));
            if self.sold.len() == 1024 {
                self.sold.pop_front();
            }
            self.sold.push_back((store, sku));
        }
        let total: i64 = lines.iter().map(|l| l.net() + l.tax()).sum();
        let tenders = self.tenders(total);
        let till = 1 + self.rng.below(w.tills as u64);
        (
            format!("pos/{store_name}/t{till}"),
            Event::Sale(Sale {
                location: store_name.as_str().into(),
                business_day: w.day,
                currency: w.currency,
                lines,
                tenders,
            }),
        )
    }

    /// A return of one unit at `store`, restocked or not.
    fn sale_return(&mut self, w: &World, store: usize) -> (String, Event) {
        let store_name = &w.locations[store];
        let ret = unit_return(w, &mut self.rng, store, w.day);
        let till = 1 + self.rng.below(w.tills as u64);
        (format!("pos/{store_name}/t{till}"), Event::Return(ret))
    }

    /// A web order on one of the channel's locations; None when the channel has none.
    fn order(&mut self, w: &World) -> Option<(String, Event)> {
        let ch = self.rng.below(w.channels.len() as u64) as usize;
        let locs = &w.channels[ch].locations;
        if locs.is_empty() {
            return None;
        }
        let loc = locs[self.rng.below(locs.len() as u64) as usize];
        let sku = if w.is_store(loc) {
            w.store_zipf.sample(&mut self.rng)
        } else {
            w.web_zipf.sample(&mut self.rng)
        };
        let qty = 1 + self.rng.below(2) as i64;
        self.next_order += 1;
        let id = self.next_order;
        self.open_orders.push((id, loc, sku, qty));
        let channel = w.channels[ch].name.clone();
        Some((
            format!("web/{channel}"),
            Event::OrderPlaced(OrderPlaced {
                order_id: format!("O{id}").as_str().into(),
                channel: channel.as_str().into(),
                location: Some(w.locations[loc].as_str().into()),
                lines: vec![QtyLine {
                    sku: w.skus[sku].id.as_str().into(),
                    qty,
                }],
                reservation_id: None,
            }),
        ))
    }

    /// An open order fulfilled or cancelled (`kind`).
    fn close_order(&mut self, w: &World, kind: Kind) -> (String, Event) {
        let i = self.rng.below(self.open_orders.len() as u64) as usize;
        let (id, loc, sku, qty) = self.open_orders.swap_remove(i);
        if matches!(kind, Kind::Fulfil) {
            return (
                format!("wms/{}", w.locations[loc]),
                Event::OrderFulfilled(OrderFulfilled {
                    order_id: format!("O{id}").as_str().into(),
                    location: w.locations[loc].as_str().into(),
                    lines: vec![QtyLine {
                        sku: w.skus[sku].id.as_str().into(),
                        qty,
                    }],
                }),
            );
        }
        (
            "web/cancellations".into(),
            Event::OrderCancelled(OrderCancelled {
                order_id: format!("O{id}").as_str().into(),
                lines: None,
            }),
        )
    }

    /// A transfer from a DC: an open one arriving, or a new one replenishing a recent sale.
    fn transfer(&mut self, w: &World, dcs: Range<usize>, store: usize) -> (String, Event) {
        if !self.open_transfers.is_empty() && self.rng.below(2) == 0 {
            let i = self.rng.below(self.open_transfers.len() as u64) as usize;
            let (id, from, to, sku, qty) = self.open_transfers.swap_remove(i);
            return (
                format!("wms/{}", w.locations[to]),
                Event::TransferIn(Transfer {
                    transfer_id: format!("T{id}").as_str().into(),
                    from: w.locations[from].as_str().into(),
                    to: w.locations[to].as_str().into(),
                    lines: vec![QtyLine {
                        sku: w.skus[sku].id.as_str().into(),
                        qty,
                    }],
                }),
            );
        }
        let from = dcs.start + self.rng.below(dcs.len() as u64) as usize;
        // Replenish what sold recently, where it sold.
        let (to, sku) = if self.sold.is_empty() {
            (store, w.store_zipf.sample(&mut self.rng))
        } else {
            self.sold[self.rng.below(self.sold.len() as u64) as usize]
        };
        let qty = 10 + self.rng.below(21) as i64;
        self.next_transfer += 1;
        let id = self.next_transfer;
        self.open_transfers.push((id, from, to, sku, qty));
        let store_name = w.locations[to].clone();
        (
            format!("wms/{}", w.locations[from]),
            Event::TransferOut(Transfer {
                transfer_id: format!("T{id}").as_str().into(),
                from: w.locations[from].as_str().into(),
                to: store_name.as_str().into(),
                lines: vec![QtyLine {
                    sku: w.skus[sku].id.as_str().into(),
                    qty,
                }],
            }),
        )
    }

    /// Goods received at a DC.
    fn receipt(&mut self, w: &World, dcs: Range<usize>) -> (String, Event) {
        let dc = dcs.start + self.rng.below(dcs.len() as u64) as usize;
        let n = 1 + self.rng.below(10);
        let lines = (0..n)
            .map(|_| QtyLine {
                sku: w.skus[w.web_zipf.sample(&mut self.rng)].id.as_str().into(),
                qty: 10 + self.rng.below(50) as i64,
            })
            .collect();
        (
            format!("wms/{}", w.locations[dc]),
            Event::Receipt(Receipt {
                location: w.locations[dc].as_str().into(),
                lines,
                reference: None,
            }),
        )
    }

    /// A stock count at `store`.
    fn count(&mut self, w: &World, store: usize) -> (String, Event) {
        let store_name = &w.locations[store];
        let sku = w.store_zipf.sample(&mut self.rng);
        (
            format!("wms/{store_name}"),
            Event::Count(Count {
                location: store_name.as_str().into(),
                sku: w.skus[sku].id.as_str().into(),
                counted: self.rng.range(0, 40),
            }),
        )
    }

    /// A stock adjustment at `store` (damage, shrink, found).
    fn adjust(&mut self, w: &World, store: usize) -> (String, Event) {
        let store_name = &w.locations[store];
        let sku = w.store_zipf.sample(&mut self.rng);
        let mut qty = self.rng.range(-3, 3);
        if qty == 0 {
            qty = -1;
        }
        let reason = ["damage", "shrink", "found"][self.rng.below(3) as usize];
        (
            format!("wms/{store_name}"),
            Event::Adjustment(Adjustment {
                location: store_name.as_str().into(),
                sku: w.skus[sku].id.as_str().into(),
                qty,
                reason: reason.into(),
            }),
        )
    }

    fn poison(&mut self) -> Outgoing {
        let n = self.poison_left;
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("poison-{n}").as_str());
        let (subject, payload): (String, Vec<u8>) = match n % 4 {
            0 => (
                "retail.v1.pos.S0001.sale".into(),
                vec![0xc1, 0xff, 0x00, 0x13, 0x37],
            ),
            1 => {
                headers.insert(CONTENT_TYPE, JSON);
                (
                    "retail.v1.pos.S0001.sale".into(),
                    b"{\"v\":1,\"id\":\"broken\"".to_vec(),
                )
            }
            2 => {
                // Well-formed but invalid: a negative quantity.
                let env = Envelope {
                    v: SCHEMA_VERSION,
                    id: EventId::from(format!("poison-{n}").as_str()),
                    source: SourceId::from(format!("poison/{n}").as_str()),
                    seq: 1,
                    occurred_at_ms: 0,
                    trace: None,
                    event: Event::Receipt(Receipt {
                        location: "DC1".into(),
                        lines: vec![QtyLine {
                            sku: "SKU-000000".into(),
                            qty: -5,
                        }],
                        reference: None,
                    }),
                };
                (
                    "retail.v1.wms.DC1.receipt".into(),
                    codec::encode_msgpack(&env).unwrap_or_default(),
                )
            }
            _ => {
                // A sale whose tenders do not add up.
                let mut line = self.line(0, 1);
                line.taxes.clear();
                let env = Envelope {
                    v: SCHEMA_VERSION,
                    id: EventId::from(format!("poison-{n}").as_str()),
                    source: SourceId::from(format!("poison/{n}").as_str()),
                    seq: 1,
                    occurred_at_ms: 0,
                    trace: None,
                    event: Event::Sale(Sale {
                        location: "S0001".into(),
                        business_day: self.world.day,
                        currency: self.world.currency,
                        tenders: vec![Tender {
                            kind: "card".into(),
                            amount: line.net() + 1,
                        }],
                        lines: vec![line],
                    }),
                };
                (
                    "retail.v1.pos.S0001.sale".into(),
                    codec::encode_msgpack(&env).unwrap_or_default(),
                )
            }
        };
        self.poison_left -= 1;
        Outgoing {
            subject,
            headers,
            payload: payload.into(),
            kind: OutKind::Poison,
        }
    }

    /// The next message, with the envelope the oracle must apply (setup and trading events).
    pub fn next_message(&mut self) -> Option<(Outgoing, Option<Envelope>)> {
        if let Some(x) = self.extra.pop_front() {
            return Some((x, None));
        }
        if let Some((source, event)) = self.setup.pop_front() {
            let env = self.envelope(&source, event, false);
            let out = self.encode(&env, OutKind::Setup);
            return Some((out, Some(env)));
        }
        if self.trading_left == 0 {
            if self.poison_left > 0 {
                return Some((self.poison(), None));
            }
            return None;
        }
        self.since_poison += 1;
        if self.poison_left > 0 && self.since_poison >= self.poison_every {
            self.since_poison = 0;
            return Some((self.poison(), None));
        }
        let (source, event) = self.trading_event();
        let f = self.scenario.faults.clone();
        let swap = self.rng.chance(f.reorder_rate);
        let env = self.envelope(&source, event, swap);
        let out = self.encode(&env, OutKind::Event);
        self.trading_left -= 1;
        if !self.recent.is_empty() {
            if self.rng.chance(f.duplicate_rate) {
                let i = self.rng.below(self.recent.len() as u64) as usize;
                let mut d = self.recent[i].clone();
                d.kind = OutKind::Duplicate;
                self.extra.push_back(d);
            }
            if self.rng.chance(f.resend_rate) {
                let i = self.rng.below(self.recent.len() as u64) as usize;
                let mut d = self.recent[i].clone();
                d.headers = HeaderMap::new();
                if let Some(ct) = self.recent[i].headers.get(CONTENT_TYPE) {
                    d.headers.insert(CONTENT_TYPE, ct.as_str());
                }
                d.kind = OutKind::Resend;
                self.extra.push_back(d);
            }
        }
        if self.recent.len() == 256 {
            self.recent.pop_front();
        }
        self.recent.push_back(out.clone());
        Some((out, Some(env)))
    }
}

/// A line of `qty` units of `sku` at its price, a tenth off one time in ten, taxed at its code.
pub fn item_line(w: &World, rng: &mut Rng, sku: usize, qty: i64) -> ItemLine {
    let info = &w.skus[sku];
    let gross = qty * info.price;
    let discount = if rng.below(10) == 0 { gross / 10 } else { 0 };
    let (code, rate) = &w.tax[info.tax];
    let tax = (gross - discount) * rate / 10_000;
    ItemLine {
        sku: info.id.as_str().into(),
        qty,
        unit_price: info.price,
        discount,
        tax_code: code.as_str().into(),
        taxes: vec![TaxLine {
            code: code.as_str().into(),
            amount: tax,
        }],
        restock: None,
    }
}

/// A return of one unit of a popular SKU at `store`, refunded to the card, restocked four
/// times in five.
pub fn unit_return(w: &World, rng: &mut Rng, store: usize, day: BusinessDay) -> Return {
    let sku = w.store_zipf.sample(rng);
    let mut line = item_line(w, rng, sku, 1);
    line.restock = Some(rng.below(5) != 0);
    let total = line.net() + line.tax();
    Return {
        location: w.locations[store].as_str().into(),
        business_day: day,
        currency: w.currency,
        lines: vec![line],
        tenders: vec![Tender {
            kind: "card".into(),
            amount: total,
        }],
        original_event_id: None,
    }
}

/// How a shopper pays `total`: card mostly, cash often, now and then a gift card and a card.
pub fn tenders(rng: &mut Rng, total: i64) -> Vec<Tender> {
    let tender = |kind: &str, amount: i64| Tender {
        kind: kind.into(),
        amount,
    };
    match rng.below(10) {
        0..=6 => vec![tender("card", total)],
        7 | 8 => vec![tender("cash", total)],
        _ => {
            let gift = total / 3;
            vec![tender("gift_card", gift), tender("card", total - gift)]
        }
    }
}
