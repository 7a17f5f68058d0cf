//! Envelope decoding: the fast MessagePack reader (`domain::fastpack`) against plain
//! `rmp_serde`, on the same realistic mix of trading envelopes, reported as events per second.
//!
//! `cargo bench -p retailflow-core --bench codec`
//!
//! The mix follows a trading day: mostly till sales of one to five lines, then returns,
//! receipts, stock corrections, transfers, orders and reservation traffic. The fast reader
//! declines the kinds it leaves to serde (master data, reservations, barriers); like
//! `codec::decode_envelope`, its side then decodes those with `rmp_serde`, so both sides turn
//! every message of the set into an `Envelope`.

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use retailflow_core::domain::codec::encode_msgpack;
use retailflow_core::domain::fastpack;
use retailflow_core::domain::*;

/// Envelopes in the set.
const ENVELOPES: u64 = 10_000;

/// A small deterministic generator (xorshift), so every run decodes the same bytes.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn sku(r: &mut Rng) -> Sku {
    Sku::from(format!("SKU-{:06}", r.below(50_000)).as_str())
}

fn store(r: &mut Rng) -> LocationId {
    LocationId::from(format!("S{:04}", r.below(300)).as_str())
}

fn dc(r: &mut Rng) -> LocationId {
    LocationId::from(format!("DC{}", 1 + r.below(3)).as_str())
}

fn qty_lines(r: &mut Rng, most: u64) -> Vec<QtyLine> {
    (0..1 + r.below(most))
        .map(|_| QtyLine {
            sku: sku(r),
            qty: 1 + r.below(24) as i64,
        })
        .collect()
}

/// Priced lines with their VAT and tenders that balance them, as a till sends them.
fn till_lines(r: &mut Rng, returning: bool) -> (Vec<ItemLine>, Vec<Tender>) {
    let mut total = 0;
    let lines: Vec<ItemLine> = (0..1 + r.below(5))
        .map(|_| {
            let qty = 1 + r.below(3) as i64;
            let unit_price = 99 + r.below(9_900) as i64;
            let discount = if r.below(5) == 0 { unit_price / 10 } else { 0 };
            let tax = (qty * unit_price - discount) / 5;
            total += qty * unit_price - discount + tax;
            ItemLine {
                sku: sku(r),
                qty,
                unit_price,
                discount,
                tax_code: "VAT20".into(),
                taxes: vec![TaxLine {
                    code: "VAT20".into(),
                    amount: tax,
                }],
                restock: returning.then_some(r.below(4) != 0),
            }
        })
        .collect();
    let tenders = if !returning && total > 2_000 && r.below(4) == 0 {
        vec![
            Tender {
                kind: "cash".into(),
                amount: 2_000,
            },
            Tender {
                kind: "card".into(),
                amount: total - 2_000,
            },
        ]
    } else {
        vec![Tender {
            kind: "card".into(),
            amount: total,
        }]
    };
    (lines, tenders)
}

fn reservation(r: &mut Rng, i: u64) -> ReservationRequested {
    ReservationRequested {
        reservation_id: ReservationId::from(format!("cart-{i:08}").as_str()),
        sku: sku(r),
        qty: 1 + r.below(3) as i64,
        target: if r.below(2) == 0 {
            Target::Channel("web".into())
        } else {
            Target::Location(store(r))
        },
        expires_at_ms: 1_795_771_743_000,
        allow_partial: r.below(4) == 0,
    }
}

/// One trading event, by the shares of a busy day.
fn event(r: &mut Rng, i: u64) -> Event {
    let day = BusinessDay::parse("2026-11-27").expect("day");
    let eur = Currency::parse("EUR").expect("currency");
    let order = |i: u64| OrderId::from(format!("web-{i:08}").as_str());
    match r.below(100) {
        0..=69 => {
            let (lines, tenders) = till_lines(r, false);
            Event::Sale(Sale {
                location: store(r),
                business_day: day,
                currency: eur,
                lines,
                tenders,
            })
        }
        70..=73 => {
            let (lines, tenders) = till_lines(r, true);
            Event::Return(Return {
                location: store(r),
                business_day: day,
                currency: eur,
                lines,
                tenders,
                original_event_id: (r.below(2) == 0).then(|| EventId::from("pos-s0042-t03-11")),
            })
        }
        74..=77 => Event::Receipt(Receipt {
            location: store(r),
            lines: qty_lines(r, 8),
            reference: Some(format!("PO-{i}").as_str().into()),
        }),
        78..=79 => Event::Adjustment(Adjustment {
            location: store(r),
            sku: sku(r),
            qty: -(1 + r.below(3) as i64),
            reason: "damaged".into(),
        }),
        80..=81 => Event::Count(Count {
            location: store(r),
            sku: sku(r),
            counted: r.below(40) as i64,
        }),
        82..=84 => {
            let t = Transfer {
                transfer_id: TransferId::from(format!("TR-{}", i / 2).as_str()),
                from: dc(r),
                to: store(r),
                lines: qty_lines(r, 6),
            };
            if r.below(2) == 0 {
                Event::TransferOut(t)
            } else {
                Event::TransferIn(t)
            }
        }
        85..=88 => Event::OrderPlaced(OrderPlaced {
            order_id: order(i),
            channel: "web".into(),
            location: (r.below(3) == 0).then(|| dc(r)),
            lines: qty_lines(r, 3),
            reservation_id: None,
        }),
        89..=91 => Event::OrderFulfilled(OrderFulfilled {
            order_id: order(i.saturating_sub(1)),
            location: dc(r),
            lines: qty_lines(r, 3),
        }),
        92 => Event::OrderCancelled(OrderCancelled {
            order_id: order(i.saturating_sub(2)),
            lines: None,
        }),
        93 => Event::SafetyStockSet(SafetyStockSet {
            location: store(r),
            sku: sku(r),
            qty: 2,
        }),
        94..=97 => Event::ReservationRequested(reservation(r, i)),
        _ => Event::ReservationReleased(ReservationReleased {
            reservation_id: ReservationId::from(
                format!("cart-{:08}", i.saturating_sub(1)).as_str(),
            ),
            sku: sku(r),
        }),
    }
}

/// The set: valid envelopes of the mix, MessagePack with named fields as producers send it.
fn payloads() -> Vec<Vec<u8>> {
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    (1..=ENVELOPES)
        .map(|seq| {
            let till = r.below(40);
            let env = Envelope {
                v: SCHEMA_VERSION,
                id: EventId::from(format!("pos-s{till:04}-t01-{seq}").as_str()),
                source: SourceId::from(format!("pos/s{till:04}/t01").as_str()),
                seq,
                occurred_at_ms: 1_795_770_843_000 + seq as i64,
                trace: (r.below(2) == 0).then(|| format!("{:016x}", seq * 7919).into()),
                event: event(&mut r, seq),
            };
            env.validate().expect("the bench set is valid");
            encode_msgpack(&env).expect("encode")
        })
        .collect()
}

fn serde_decode(bytes: &[u8]) -> Envelope {
    rmp_serde::from_slice(bytes).expect("serde decodes the set")
}

fn decode(c: &mut Criterion) {
    let set = payloads();
    let declined = set
        .iter()
        .filter(|b| fastpack::decode_envelope(b).is_err())
        .count();
    for b in &set {
        let fast = fastpack::decode_envelope(b).unwrap_or_else(|_| serde_decode(b));
        assert_eq!(fast, serde_decode(b), "both sides decode alike");
    }
    let bytes: usize = set.iter().map(Vec::len).sum();
    eprintln!(
        "codec bench: {} envelopes, {} bytes on average, {declined} left to serde by the fast reader",
        set.len(),
        bytes / set.len()
    );
    let mut g = c.benchmark_group("decode_envelope");
    g.throughput(Throughput::Elements(set.len() as u64));
    g.bench_function("fastpack", |b| {
        b.iter(|| {
            for bytes in &set {
                let e = match fastpack::decode_envelope(black_box(bytes)) {
                    Ok(e) => e,
                    Err(fastpack::Decline) => serde_decode(bytes),
                };
                black_box(e);
            }
        })
    });
    g.bench_function("rmp_serde", |b| {
        b.iter(|| {
            for bytes in &set {
                black_box(serde_decode(black_box(bytes)));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
