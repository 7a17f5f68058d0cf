//! End to end against a real nats-server: thousands of mixed events with duplicates, producer
//! re-sends, per-source reordering and a forced consumer rewind; ATP must equal a simple model
//! written here, independently of the ledger.

use retailflow::config::ReaderKind;
use retailflow::domain::*;
use retailflow::supervise::pipeline::Pipeline;
use retailflow::testing::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default, Clone, Copy, Debug, PartialEq)]
struct Pos {
    on_hand: i64,
    reserved: i64,
    safety: i64,
    in_transit: i64,
}

/// The independent model: positions keyed by (location, sku), orders and transfers by id.
#[derive(Default)]
struct Model {
    pos: BTreeMap<(String, String), Pos>,
    orders: HashMap<(String, String), (String, i64)>,
    transfers: HashMap<(String, String), i64>,
}

impl Model {
    fn at(&mut self, l: &str, s: &str) -> &mut Pos {
        self.pos.entry((l.to_string(), s.to_string())).or_default()
    }

    fn apply(&mut self, e: &Event) {
        match e {
            Event::Receipt(r) => {
                for l in &r.lines {
                    self.at(r.location.as_str(), l.sku.as_str()).on_hand += l.qty;
                }
            }
            Event::Sale(s) => {
                for l in &s.lines {
                    self.at(s.location.as_str(), l.sku.as_str()).on_hand -= l.qty;
                }
            }
            Event::Return(r) => {
                for l in &r.lines {
                    if l.restock != Some(false) {
                        self.at(r.location.as_str(), l.sku.as_str()).on_hand += l.qty;
                    }
                }
            }
            Event::Adjustment(a) => self.at(a.location.as_str(), a.sku.as_str()).on_hand += a.qty,
            Event::Count(c) => self.at(c.location.as_str(), c.sku.as_str()).on_hand = c.counted,
            Event::SafetyStockSet(s) => self.at(s.location.as_str(), s.sku.as_str()).safety = s.qty,
            Event::TransferOut(t) => {
                for l in &t.lines {
                    self.at(t.from.as_str(), l.sku.as_str()).on_hand -= l.qty;
                    self.at(t.to.as_str(), l.sku.as_str()).in_transit += l.qty;
                    *self
                        .transfers
                        .entry((t.transfer_id.to_string(), l.sku.to_string()))
                        .or_default() += l.qty;
                }
            }
            Event::TransferIn(t) => {
                for l in &t.lines {
                    let key = (t.transfer_id.to_string(), l.sku.to_string());
                    let open = self.transfers.get(&key).copied().unwrap_or(0);
                    let matched = open.min(l.qty);
                    self.transfers.insert(key, open - matched);
                    let p = self.at(t.to.as_str(), l.sku.as_str());
                    p.in_transit -= matched;
                    p.on_hand += l.qty;
                }
            }
            Event::OrderPlaced(o) => {
                let loc = o
                    .location
                    .as_ref()
                    .expect("test orders name their location")
                    .to_string();
                for l in &o.lines {
                    self.at(&loc, l.sku.as_str()).reserved += l.qty;
                    let e = self
                        .orders
                        .entry((o.order_id.to_string(), l.sku.to_string()))
                        .or_insert((loc.clone(), 0));
                    e.1 += l.qty;
                }
            }
            Event::OrderFulfilled(o) => {
                for l in &o.lines {
                    let key = (o.order_id.to_string(), l.sku.to_string());
                    if let Some((loc, open)) = self.orders.get(&key).cloned() {
                        let take = open.min(l.qty);
                        self.at(&loc, l.sku.as_str()).reserved -= take;
                        self.orders.insert(key, (loc, open - take));
                    }
                    self.at(o.location.as_str(), l.sku.as_str()).on_hand -= l.qty;
                }
            }
            Event::OrderCancelled(o) => {
                let keys: Vec<_> = self
                    .orders
                    .keys()
                    .filter(|(id, _)| id == o.order_id.as_str())
                    .cloned()
                    .collect();
                for key in keys {
                    let (loc, open) = self.orders.remove(&key).unwrap_or_default();
                    self.at(&loc, &key.1).reserved -= open;
                }
            }
            _ => {}
        }
    }
}

fn item(sku: &str, qty: i64, price: i64) -> ItemLine {
    taxed_line(sku, qty, price)
}

/// Events in publication order, each tagged with its source.
fn generate(n: usize, seed: u64) -> Vec<(String, Event)> {
    let mut rng = Rng(seed);
    let stores = ["S1", "S2", "S3", "S4"];
    let dcs = ["DC1", "DC2"];
    let skus: Vec<String> = (0..40).map(|i| format!("SKU-{i:03}")).collect();
    let day = BusinessDay::parse("2026-11-27").unwrap();
    let eur = Currency::parse("EUR").unwrap();
    let mut out = Vec::new();
    for (i, dc) in dcs.iter().enumerate() {
        out.push((
            "mdm/master".to_string(),
            Event::LocationUpsert(LocationUpsert {
                location: (*dc).into(),
                kind: LocationKind::Dc,
                channels: vec!["web".into()],
                priority: i as u32,
            }),
        ));
    }
    for loc in stores.iter().chain(dcs.iter()) {
        for s in &skus {
            out.push((
                format!("wms/{loc}"),
                Event::Receipt(Receipt {
                    location: (*loc).into(),
                    lines: vec![QtyLine {
                        sku: s.as_str().into(),
                        qty: 50 + rng.below(50) as i64,
                    }],
                    reference: None,
                }),
            ));
        }
    }
    let mut open_orders: Vec<(String, String, String, i64)> = Vec::new();
    let mut open_transfers: Vec<(String, String, String, String, i64)> = Vec::new();
    let mut order_no = 0;
    let mut transfer_no = 0;
    while out.len() < n {
        let sku = skus[rng.below(skus.len() as u64) as usize].clone();
        let store = stores[rng.below(4) as usize];
        let dc = dcs[rng.below(2) as usize];
        let (source, event) = match rng.below(100) {
            0..=39 => {
                let lines: Vec<ItemLine> = (0..1 + rng.below(3))
                    .map(|_| {
                        item(
                            skus[rng.below(40) as usize].as_str(),
                            1 + rng.below(3) as i64,
                            100 + rng.below(900) as i64,
                        )
                    })
                    .collect();
                let total: i64 = lines.iter().map(|l| l.net() + l.tax()).sum();
                (
                    format!("pos/{store}/t{}", 1 + rng.below(2)),
                    Event::Sale(Sale {
                        location: store.into(),
                        business_day: day,
                        currency: eur,
                        lines,
                        tenders: vec![Tender {
                            kind: if rng.below(2) == 0 {
                                "card".into()
                            } else {
                                "cash".into()
                            },
                            amount: total,
                        }],
                    }),
                )
            }
            40..=44 => {
                let mut l = item(&sku, 1, 250);
                l.restock = Some(rng.below(4) != 0);
                let total = l.net() + l.tax();
                (
                    format!("pos/{store}/t1"),
                    Event::Return(Return {
                        location: store.into(),
                        business_day: day,
                        currency: eur,
                        lines: vec![l],
                        tenders: vec![Tender {
                            kind: "card".into(),
                            amount: total,
                        }],
                        original_event_id: None,
                    }),
                )
            }
            45..=54 => {
                order_no += 1;
                let qty = 1 + rng.below(3) as i64;
                let id = format!("O{order_no}");
                open_orders.push((id.clone(), dc.to_string(), sku.clone(), qty));
                (
                    "web/shop".to_string(),
                    Event::OrderPlaced(OrderPlaced {
                        order_id: id.as_str().into(),
                        channel: "web".into(),
                        location: Some(dc.into()),
                        lines: vec![QtyLine {
                            sku: sku.as_str().into(),
                            qty,
                        }],
                        reservation_id: None,
                    }),
                )
            }
            55..=62 if !open_orders.is_empty() => {
                let (id, loc, s, qty) =
                    open_orders.swap_remove(rng.below(open_orders.len() as u64) as usize);
                (
                    format!("wms/{loc}"),
                    Event::OrderFulfilled(OrderFulfilled {
                        order_id: id.as_str().into(),
                        location: loc.as_str().into(),
                        lines: vec![QtyLine {
                            sku: s.as_str().into(),
                            qty,
                        }],
                    }),
                )
            }
            63..=65 if !open_orders.is_empty() => {
                let (id, ..) =
                    open_orders.swap_remove(rng.below(open_orders.len() as u64) as usize);
                (
                    "web/shop".to_string(),
                    Event::OrderCancelled(OrderCancelled {
                        order_id: id.as_str().into(),
                        lines: None,
                    }),
                )
            }
            66..=72 => {
                transfer_no += 1;
                let id = format!("T{transfer_no}");
                let qty = 1 + rng.below(5) as i64;
                open_transfers.push((
                    id.clone(),
                    dc.to_string(),
                    store.to_string(),
                    sku.clone(),
                    qty,
                ));
                (
                    format!("wms/{dc}"),
                    Event::TransferOut(Transfer {
                        transfer_id: id.as_str().into(),
                        from: dc.into(),
                        to: store.into(),
                        lines: vec![QtyLine {
                            sku: sku.as_str().into(),
                            qty,
                        }],
                    }),
                )
            }
            73..=78 if !open_transfers.is_empty() => {
                let (id, from, to, s, qty) =
                    open_transfers.swap_remove(rng.below(open_transfers.len() as u64) as usize);
                (
                    format!("wms/{to}"),
                    Event::TransferIn(Transfer {
                        transfer_id: id.as_str().into(),
                        from: from.as_str().into(),
                        to: to.as_str().into(),
                        lines: vec![QtyLine {
                            sku: s.as_str().into(),
                            qty,
                        }],
                    }),
                )
            }
            79..=83 => (
                format!("wms/{store}"),
                Event::Count(Count {
                    location: store.into(),
                    sku: sku.as_str().into(),
                    counted: rng.below(80) as i64,
                }),
            ),
            84..=89 => (
                format!("wms/{store}"),
                Event::Adjustment(Adjustment {
                    location: store.into(),
                    sku: sku.as_str().into(),
                    qty: rng.below(7) as i64 - 4,
                    reason: if rng.below(2) == 0 {
                        "damage".into()
                    } else {
                        "found".into()
                    },
                }),
            )
                .clone(),
            _ => (
                "mdm/master".to_string(),
                Event::SafetyStockSet(SafetyStockSet {
                    location: store.into(),
                    sku: sku.as_str().into(),
                    qty: rng.below(5) as i64,
                }),
            ),
        };
        if let Event::Adjustment(a) = &event {
            if a.qty == 0 {
                continue;
            }
        }
        out.push((source, event));
    }
    out
}

/// Assigns per-source sequences in publication order, then swaps neighbours within a source
/// so sequences arrive out of order (inside the reorder window).
fn sequence(events: Vec<(String, Event)>, seed: u64) -> Vec<Envelope> {
    let mut rng = Rng(seed);
    let mut by_source: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, (s, _)) in events.iter().enumerate() {
        by_source.entry(s.clone()).or_default().push(i);
    }
    let mut seqs = vec![0u64; events.len()];
    for idx in by_source.values() {
        let mut numbers: Vec<u64> = (1..=idx.len() as u64).collect();
        for k in (1..numbers.len()).step_by(2) {
            if rng.below(3) == 0 {
                numbers.swap(k - 1, k);
            }
        }
        for (pos, &i) in idx.iter().enumerate() {
            seqs[i] = numbers[pos];
        }
    }
    events
        .into_iter()
        .zip(seqs)
        .map(|((source, event), seq)| envelope(&source, seq, event))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atp_equals_an_independent_model_despite_duplicates_resends_and_redeliveries() {
    atp_equals_the_model(ReaderKind::Direct).await;
}

/// The same through the async-nats reader, which ingest falls back to where the direct one
/// cannot connect (TLS, credentials files).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_async_nats_reader_gives_the_same_atp() {
    atp_equals_the_model(ReaderKind::AsyncNats).await;
}

async fn atp_equals_the_model(reader: ReaderKind) {
    let server = nats();
    let mut cfg = config(&server.url());
    cfg.snapshot.enabled = false;
    cfg.ingest.reader = reader;
    let pipeline = Pipeline::start(cfg).await.expect("pipeline starts");
    let js = async_nats::jetstream::new(client(&server.url()).await);

    let envelopes = sequence(generate(4000, 0x5eed), 7);
    let mut model = Model::default();
    for e in &envelopes {
        model.apply(&e.event);
    }

    let mut rng = Rng(99);
    let mut resent_without_id = 0u64;
    let mut resent_with_id = 0u64;
    for (i, env) in envelopes.iter().enumerate() {
        publish(&js, env, i % 7 == 0, true).await;
        // Producer re-sends: inside JetStream's window (same Nats-Msg-Id: the server drops it)
        // and after it (no id: only retailflow's per-source check can catch it).
        if i > 10 && rng.below(20) == 0 {
            let earlier = &envelopes[i - 1 - rng.below(10) as usize];
            publish(&js, earlier, false, true).await;
            resent_with_id += 1;
        }
        if i > 10 && rng.below(20) == 0 {
            let earlier = &envelopes[i - 1 - rng.below(10) as usize];
            publish(&js, earlier, false, false).await;
            resent_without_id += 1;
        }
        if i == envelopes.len() / 2 {
            // A consumer restart: everything already read arrives again.
            let seq = last_seq(&js, "RETAIL_EVENTS").await;
            pipeline.rewind(seq.saturating_sub(800));
        }
    }
    let end = last_seq(&js, "RETAIL_EVENTS").await;
    let view = pipeline.shared.view.clone();
    assert!(
        wait_until(Duration::from_secs(60), || {
            let v = view.clone();
            async move { v.applied_all() >= end }
        })
        .await,
        "pipeline applied everything (at {} of {end})",
        view.applied_all()
    );

    let mut checked = 0;
    for ((loc, sku), want) in &model.pos {
        let (answers, _) = view.read(&Sku::from(sku.as_str()));
        let got = answers
            .unwrap_or_default()
            .into_iter()
            .find(|a| a.location.as_str() == loc)
            .map(|a| a.position)
            .unwrap_or_default();
        assert_eq!(
            (got.on_hand, got.reserved, got.safety_stock, got.in_transit),
            (want.on_hand, want.reserved, want.safety, want.in_transit),
            "position {loc}/{sku}"
        );
        checked += 1;
    }
    assert!(checked > 200, "checked {checked} positions");

    let m = &pipeline.shared.metrics;
    assert_eq!(
        m.duplicates_resent.load(Relaxed),
        resent_without_id,
        "re-sends without id caught by per-source dedupe"
    );
    assert!(
        m.duplicates_redelivered.load(Relaxed) >= 700,
        "rewind re-read counted as redeliveries"
    );
    assert_eq!(
        m.events_applied.load(Relaxed) as usize,
        envelopes.len() + barrier_count(m)
    );
    assert_eq!(m.dead_letters.load(Relaxed), 0);
    assert!(resent_with_id > 0);

    // The same through the HTTP API: one position, exact.
    let addr = pipeline.http_addr().unwrap();
    let ((loc, sku), want) = model.pos.iter().next().unwrap();
    let url = format!("http://{addr}/v1/availability/{sku}?location={loc}");
    let body: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert_eq!(body["locations"][0]["on_hand"], want.on_hand, "{body}");
    assert_eq!(
        body["locations"][0]["available"],
        want.on_hand - want.reserved - want.safety
    );
    assert!(body["as_of"].as_u64().unwrap() >= end);
    pipeline.shutdown(Duration::from_secs(10)).await;
}

/// Barriers are events too; the ticker publishes them while the test runs.
fn barrier_count(m: &retailflow::telemetry::Metrics) -> usize {
    m.barriers.load(Relaxed) as usize
}
