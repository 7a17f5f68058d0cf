//! End to end with the ERP simulator on a real socket: sales, returns and stock movements over
//! two business days and two currencies, with duplicates, re-sends and a consumer rewind. The
//! ERP's accepted totals must equal totals computed here from the events, to the cent.

use erp_sim::{ErpSim, ErpSimConfig};
use retailflow::domain::*;
use retailflow::supervise::pipeline::Pipeline;
use retailflow::testing::*;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Default, Debug, PartialEq, Eq, Clone, Copy)]
struct Sales {
    sold: i64,
    returned: i64,
    sales_amount: i64,
    returns_amount: i64,
    tax: i64,
}

type SalesKey = (String, String, String, String, String); // location, day, currency, sku, tax code
type TenderKey = (String, String, String, String); // location, day, currency, tender

#[derive(Default)]
struct Books {
    sales: BTreeMap<SalesKey, Sales>,
    tenders: BTreeMap<TenderKey, (i64, i64)>,
    stock: BTreeMap<(String, String), i64>,
}

fn line(sku: &str, qty: i64, price: i64, discount: i64, code: &str, rate_pct: i64) -> ItemLine {
    let tax = (qty * price - discount) * rate_pct / 100;
    ItemLine {
        sku: sku.into(),
        qty,
        unit_price: price,
        discount,
        tax_code: code.into(),
        taxes: vec![TaxLine {
            code: code.into(),
            amount: tax,
        }],
        restock: None,
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erp_books_equal_the_tills_to_the_cent() {
    let server = nats();
    let sim = ErpSim::start(ErpSimConfig {
        listen: "127.0.0.1:0".into(),
        limit_requests: 40,
        limit_window: Duration::from_secs(2),
        max_concurrent: 4,
        latency_min: Duration::from_millis(1),
        latency_max: Duration::from_millis(10),
        error_rate_permille: 100,
        ..ErpSimConfig::default()
    })
    .await
    .unwrap();
    let mut cfg = config(&server.url());
    cfg.erp = vec![retailflow::config::ErpEndpointConfig {
        name: "erp".into(),
        url: sim.postings_url(),
        rate: retailflow::post::ratelimit::RateLimit {
            requests: 40,
            window: Duration::from_secs(2),
            burst: Some(10),
        },
        max_concurrent: 4,
        retry: retailflow::config::RetryConfig {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(500),
        },
        ..Default::default()
    }];
    let pipeline = Pipeline::start(cfg).await.expect("pipeline starts");
    let js = async_nats::jetstream::new(client(&server.url()).await);

    let days = ["2026-11-27", "2026-11-28"];
    let currencies = ["EUR", "CHF"];
    let stores = ["S1", "S2", "S3"];
    let skus = ["A", "B", "C", "D", "E", "F"];
    let mut books = Books::default();
    let mut envelopes = Vec::new();
    let mut x: u64 = 42;
    let mut rnd = |n: u64| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) % n
    };
    for store in stores {
        for sku in skus {
            envelopes.push(envelope(
                &format!("wms/{store}"),
                envelopes.len() as u64 + 1,
                Event::Receipt(Receipt {
                    location: store.into(),
                    lines: vec![QtyLine {
                        sku: sku.into(),
                        qty: 500,
                    }],
                    reference: None,
                }),
            ));
            *books.stock.entry((store.into(), sku.into())).or_default() += 500;
        }
    }
    let mut till_seq: BTreeMap<String, u64> = BTreeMap::new();
    for _ in 0..3000 {
        let store = stores[rnd(3) as usize];
        let day = days[rnd(2) as usize];
        let cur = currencies[rnd(2) as usize];
        let returning = rnd(10) == 0;
        let lines: Vec<ItemLine> = (0..1 + rnd(3))
            .map(|_| {
                let sku = skus[rnd(6) as usize];
                let (code, rate) = if sku < "D" { ("STD", 20) } else { ("RED", 5) };
                let qty = 1 + rnd(3) as i64;
                let price = 100 + rnd(5000) as i64;
                let discount = if rnd(4) == 0 { price / 10 } else { 0 };
                let mut l = line(sku, qty, price, discount, code, rate);
                if returning {
                    l.restock = Some(rnd(3) != 0);
                }
                l
            })
            .collect();
        let total: i64 = lines
            .iter()
            .map(|l| l.qty * l.unit_price - l.discount + l.taxes[0].amount)
            .sum();
        let tenders = if rnd(3) == 0 {
            vec![
                Tender {
                    kind: "cash".into(),
                    amount: total / 2,
                },
                Tender {
                    kind: "card".into(),
                    amount: total - total / 2,
                },
            ]
        } else {
            vec![Tender {
                kind: "card".into(),
                amount: total,
            }]
        };
        for l in &lines {
            let key = (
                store.to_string(),
                day.to_string(),
                cur.to_string(),
                l.sku.to_string(),
                l.tax_code.to_string(),
            );
            let s = books.sales.entry(key).or_default();
            let net = l.qty * l.unit_price - l.discount;
            let stock = books
                .stock
                .entry((store.into(), l.sku.to_string()))
                .or_default();
            if returning {
                s.returned += l.qty;
                s.returns_amount += net;
                s.tax -= l.taxes[0].amount;
                if l.restock != Some(false) {
                    *stock += l.qty;
                }
            } else {
                s.sold += l.qty;
                s.sales_amount += net;
                s.tax += l.taxes[0].amount;
                *stock -= l.qty;
            }
        }
        for t in &tenders {
            let e = books
                .tenders
                .entry((
                    store.to_string(),
                    day.to_string(),
                    cur.to_string(),
                    t.kind.to_string(),
                ))
                .or_default();
            if returning {
                e.1 += t.amount;
            } else {
                e.0 += t.amount;
            }
        }
        let till = format!("pos/{store}/t{}", 1 + rnd(2));
        let seq = till_seq.entry(till.clone()).or_default();
        *seq += 1;
        let day = BusinessDay::parse(day).unwrap();
        let currency = Currency::parse(cur).unwrap();
        let event = if returning {
            Event::Return(Return {
                location: store.into(),
                business_day: day,
                currency,
                lines,
                tenders,
                original_event_id: None,
            })
        } else {
            Event::Sale(Sale {
                location: store.into(),
                business_day: day,
                currency,
                lines,
                tenders,
            })
        };
        envelopes.push(envelope(&till, *seq, event));
    }

    for (i, env) in envelopes.iter().enumerate() {
        publish(&js, env, i % 5 == 0, true).await;
        if i % 97 == 0 && i > 0 {
            publish(&js, &envelopes[i - 1], false, false).await; // re-send after the window
        }
        if i % 600 == 0 {
            // Let barriers fall in between, so the books arrive in several postings.
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        if i == 2000 {
            pipeline.rewind(1000);
        }
    }
    let end = last_seq(&js, "RETAIL_EVENTS").await;
    assert!(
        pipeline
            .shared
            .view
            .wait_all(end, Duration::from_secs(60))
            .await,
        "everything applied"
    );
    retailflow::supervise::settle::settle(&pipeline, Duration::from_secs(120))
        .await
        .expect("every posting answered");

    let totals = sim.totals();
    let stats = sim.stats();
    assert_eq!(stats.duplicate_documents, 0, "no document booked twice");
    assert!(
        stats.max_in_window <= 40,
        "the ERP's window was never exceeded: {stats:?}"
    );
    assert!(stats.injected_errors > 0, "503s were injected and retried");
    assert!(
        totals.documents as usize > stores.len() * 2,
        "several flushes: {} documents",
        totals.documents
    );

    let mut erp_sales: BTreeMap<SalesKey, Sales> = BTreeMap::new();
    for s in &totals.sales {
        let key = (
            s.location.to_string(),
            opt(s.business_day),
            opt(s.currency),
            s.sku.to_string(),
            s.tax_code.to_string(),
        );
        let e = erp_sales.entry(key).or_default();
        e.sold += s.qty_sold;
        e.returned += s.qty_returned;
        e.sales_amount += s.sales_amount;
        e.returns_amount += s.returns_amount;
        e.tax += s.tax_amount;
    }
    assert_eq!(
        erp_sales, books.sales,
        "sales summary per store, day, currency, sku, tax code"
    );
    let mut erp_tenders: BTreeMap<TenderKey, (i64, i64)> = BTreeMap::new();
    for t in &totals.tenders {
        let e = erp_tenders
            .entry((
                t.location.to_string(),
                opt(t.business_day),
                opt(t.currency),
                t.tender.to_string(),
            ))
            .or_default();
        e.0 += t.paid;
        e.1 += t.refunded;
    }
    assert_eq!(erp_tenders, books.tenders, "tender summary");
    let mut erp_stock: BTreeMap<(String, String), i64> = BTreeMap::new();
    for m in &totals.inventory {
        *erp_stock
            .entry((m.location.to_string(), m.sku.to_string()))
            .or_default() += m.qty;
    }
    assert_eq!(
        erp_stock, books.stock,
        "inventory movements add up to the stock on hand"
    );
    pipeline.shutdown(Duration::from_secs(10)).await;
    sim.shutdown().await;
}
