//! Micro-benchmarks of the hot paths, each reported as elements per second.
//!
//! `cargo bench --bench hot_paths` (all) or e.g. `cargo bench --bench hot_paths -- ledger`.

/// The allocator the `retailflow` binary ships with (see `src/main.rs`): glibc's malloc costs
/// the allocating paths differently. The binary also keeps freed memory for 30 s
/// (`memory::keep_freed_memory`); the benches keep mimalloc's default 1 s.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{
    BatchSize, BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main,
};
use retailflow::domain::codec::{self, Format};
use retailflow::domain::*;
use retailflow::post::ratelimit::{RateLimit, RateLimiter};
use retailflow::view::{View, ViewWriter, shard_of};
use retailflow_core::aggregate::posting::{DocBody, Lineage, MAX_LINES, PostingDoc, SalesLine};
use retailflow_core::aggregate::store::StoreAggregator;
use retailflow_core::apply::ledger::Ledger;
use retailflow_core::apply::op::{Op, ops_of};
use retailflow_core::ingest::dedupe::Dedupe;
use retailflow_core::ingest::route::Routed;
use retailflow_lab::generate::Generator;
use retailflow_lab::spec::Scenario;
use retailflow_lab::world::World;
use std::sync::Arc;
use std::time::Duration;

/// A Black-Friday-like world, smaller so setup stays quick.
fn scenario(events: u64) -> Scenario {
    let text = format!(
        r#"
        name = "bench"
        seed = 7
        [world]
        stores = 300
        dcs = 3
        skus = 50000
        store_assortment = 500
        safety_stock = [0, 0]
        [load]
        events = {events}
        "#
    );
    toml::from_str(&text).expect("bench scenario")
}

/// Setup and trading envelopes, in publication order.
fn envelopes(events: u64) -> Vec<Envelope> {
    let s = scenario(events);
    let world = Arc::new(World::build(&s).expect("world"));
    let mut g = Generator::new(&s, world);
    let mut out = Vec::new();
    while let Some((_, env)) = g.next_message() {
        out.extend(env);
    }
    out
}

fn ops(envs: &[Envelope]) -> Vec<(u64, Op)> {
    let mut out = Vec::new();
    for (i, e) in envs.iter().enumerate() {
        ops_of(&e.event, |op| out.push((i as u64 + 1, op)));
    }
    out
}

fn ledger_apply(c: &mut Criterion) {
    let envs = envelopes(400_000);
    let all = ops(&envs);
    // Warm state: the world's positions and most of the trading applied; measured are the ops
    // of the last 100,000 trading events on that ledger.
    let events = 100_000u64;
    let first_measured = envs.len() as u64 - events + 1;
    let split = all.partition_point(|(seq, _)| *seq < first_measured);
    let mut warm = Ledger::new();
    for (seq, op) in &all[..split] {
        let _ = warm.apply(*seq, op);
    }
    warm.take_dirty();
    warm.take_movements();
    let measured = &all[split..];
    let mut g = c.benchmark_group("ledger");
    g.sample_size(20);
    for (unit, n) in [("ops", measured.len() as u64), ("events", events)] {
        g.throughput(Throughput::Elements(n));
        g.bench_function(BenchmarkId::new("apply", unit), |b| {
            b.iter_batched(
                || warm.clone(),
                |mut l| {
                    l.apply_batch(measured, |_, _, _| {});
                    black_box(l.take_dirty().len());
                    // Returned so that freeing it is not timed.
                    l
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn decode(c: &mut Criterion) {
    let envs = envelopes(20_000);
    let trading: Vec<&Envelope> = envs.iter().rev().take(10_000).collect();
    let mp: Vec<Vec<u8>> = trading
        .iter()
        .map(|e| codec::encode_msgpack(e).unwrap())
        .collect();
    let js: Vec<Vec<u8>> = trading
        .iter()
        .map(|e| serde_json::to_vec(e).unwrap())
        .collect();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(mp.len() as u64));
    for (name, format, payloads) in [
        ("msgpack", Format::MsgPack, &mp),
        ("json", Format::Json, &js),
    ] {
        g.bench_with_input(BenchmarkId::new("envelope", name), payloads, |b, p| {
            b.iter(|| {
                for bytes in p {
                    black_box(codec::decode_envelope(format, bytes).unwrap());
                }
            })
        });
    }
    g.finish();
}

fn aggregation(c: &mut Criterion) {
    let envs = envelopes(50_000);
    let sales: Vec<&Sale> = envs
        .iter()
        .filter_map(|e| match &e.event {
            Event::Sale(s) => Some(s),
            _ => None,
        })
        .collect();
    let mut g = c.benchmark_group("aggregate");
    g.throughput(Throughput::Elements(sales.len() as u64));
    // Each sale from one of eight tills per store, in sequence: the day's completeness check
    // runs as in the pipeline.
    let tills: Vec<(SourceId, u64)> = (0..sales.len())
        .map(|i| {
            (
                SourceId::from(format!("pos/t{}", i % 8).as_str()),
                1 + i as u64 / 8,
            )
        })
        .collect();
    g.bench_function("store_add_sales", |b| {
        b.iter(|| {
            let mut aggs: std::collections::HashMap<&str, StoreAggregator> = Default::default();
            for (i, s) in sales.iter().enumerate() {
                aggs.entry(s.location.as_str())
                    .or_insert_with(|| StoreAggregator::new(s.location.clone()))
                    .add(
                        i as u64,
                        Some(&tills[i]),
                        s.business_day,
                        s.currency,
                        &s.lines,
                        &s.tenders,
                        false,
                    );
            }
            black_box(aggs.len())
        })
    });
    // A full page (1,000 lines) of a sales summary, as the endpoint actor reads it from the
    // outbox (MessagePack) and the ERP simulator reads it off the wire (JSON).
    let doc = PostingDoc {
        id: "erp/sales_summary/S0001/2026-11-27/USD/1000/0/1".into(),
        endpoint: "erp".into(),
        location: "S0001".into(),
        business_day: None,
        currency: None,
        barrier_seq: 1000,
        part: 0,
        page: 1,
        pages: 1,
        lineage: Lineage::default(),
        final_doc: false,
        corrects: None,
        body: DocBody::SalesSummary(
            (0..MAX_LINES)
                .map(|i| SalesLine {
                    sku: format!("SKU-{i:06}").as_str().into(),
                    tax_code: "STD".into(),
                    qty_sold: 3,
                    qty_returned: 0,
                    sales_amount: 5997,
                    returns_amount: 0,
                    discount_amount: 0,
                    tax_amount: 480,
                })
                .collect(),
        ),
    };
    let mp = rmp_serde::to_vec_named(&doc).expect("encodes");
    let json = serde_json::to_vec(&doc).expect("encodes");
    g.throughput(Throughput::Elements(MAX_LINES as u64));
    g.bench_function("posting_doc_decode_msgpack", |b| {
        b.iter(|| black_box(rmp_serde::from_slice::<PostingDoc>(&mp).expect("decodes")))
    });
    g.bench_function("posting_doc_decode_json", |b| {
        b.iter(|| black_box(serde_json::from_slice::<PostingDoc>(&json).expect("decodes")))
    });
    g.finish();
}

fn rate_limiter(c: &mut Criterion) {
    let mut g = c.benchmark_group("rate_limiter");
    g.throughput(Throughput::Elements(1));
    g.bench_function("try_acquire", |b| {
        let mut l = RateLimiter::new(RateLimit {
            requests: u32::MAX / 2,
            window: Duration::from_secs(1),
            burst: Some(u32::MAX / 2),
        });
        b.iter(|| black_box(l.try_acquire(tokio::time::Instant::now())))
    });
    g.finish();
}

fn view_lookup(c: &mut Criterion) {
    let envs = envelopes(100_000);
    let view = View::new(1);
    let mut ledger = Ledger::new();
    let mut writer = ViewWriter::default();
    for (seq, op) in ops(&envs) {
        let _ = ledger.apply(seq, &op);
    }
    let dirty = ledger.take_dirty();
    writer.publish(&view, &ledger, &dirty, 1);
    view.set_applied(0, 1);
    let skus: Vec<Sku> = (0..10_000)
        .map(|i| Sku::from(format!("SKU-{:06}", (i * 7) % 50_000).as_str()))
        .collect();
    let mut g = c.benchmark_group("view");
    g.throughput(Throughput::Elements(skus.len() as u64));
    g.bench_function("read_sku_all_locations", |b| {
        b.iter(|| {
            for s in &skus {
                black_box(view.read(s));
            }
        })
    });
    g.finish();
}

/// Everything ingest and the actors do per event, minus NATS and mailboxes: decode, validate,
/// dedupe, route, apply to the ledgers, fold into the store aggregators.
fn pipeline_cpu(c: &mut Criterion) {
    let envs = envelopes(150_000);
    let split = envs.len() - 100_000;
    let payloads: Vec<Vec<u8>> = envs[split..]
        .iter()
        .map(|e| codec::encode_msgpack(e).unwrap())
        .collect();
    let shards = 2;
    let mut warm_ledgers: Vec<Ledger> = (0..shards).map(|_| Ledger::new()).collect();
    let mut warm_dedupe = Dedupe::new(4096);
    for (i, e) in envs[..split].iter().enumerate() {
        warm_dedupe.check(&e.source, e.seq);
        ops_of(&e.event, |op| match op.sku() {
            Some(s) => {
                let _ = warm_ledgers[shard_of(s.as_str(), shards)].apply(i as u64, &op);
            }
            None => {
                for l in warm_ledgers.iter_mut() {
                    let _ = l.apply(i as u64, &op);
                }
            }
        });
    }
    let mut g = c.benchmark_group("pipeline_cpu");
    g.throughput(Throughput::Elements(payloads.len() as u64));
    g.sample_size(10);
    g.bench_function("decode_dedupe_route_apply", |b| {
        b.iter_batched(
            || (warm_ledgers.clone(), warm_dedupe.clone()),
            |(mut ledgers, mut dedupe)| {
                let mut stores: std::collections::HashMap<LocationId, StoreAggregator> =
                    Default::default();
                let mut routed = Routed::new(shards);
                for (i, p) in payloads.iter().enumerate() {
                    let e = codec::decode_envelope(Format::MsgPack, p).unwrap();
                    e.validate().unwrap();
                    dedupe.check(&e.source, e.seq);
                    routed.route(i as u64, e.event);
                    if routed.events >= 2000 {
                        let batch = routed.take();
                        for (s, ops) in batch.shard_ops.iter().enumerate() {
                            for (seq, op) in ops {
                                let _ = ledgers[s].apply(*seq, op);
                            }
                            black_box(ledgers[s].take_dirty());
                        }
                        for (loc, evs) in batch.stores {
                            let a = stores
                                .entry(loc.clone())
                                .or_insert_with(|| StoreAggregator::new(loc));
                            for e in &evs {
                                a.add(
                                    e.seq,
                                    e.till.as_ref(),
                                    e.business_day,
                                    e.currency,
                                    &e.lines,
                                    &e.tenders,
                                    e.returning,
                                );
                            }
                        }
                    }
                }
                black_box(stores.len())
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(
    benches,
    ledger_apply,
    decode,
    aggregation,
    rate_limiter,
    view_lookup,
    pipeline_cpu
);
criterion_main!(benches);
