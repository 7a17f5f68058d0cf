//! Replicas on one stream: one leads by lease and the other follows; a follower takes over
//! when the leader dies; and two replicas that both lead at once (forced: a lease is not a
//! lock) still leave the ERP's books exact, with no document booked twice and every
//! reservation expired once.

use erp_sim::{ErpSim, ErpSimConfig};
use retailflow::config::Config;
use retailflow::domain::*;
use retailflow::query::reserve::ReserveRequest;
use retailflow::supervise::pipeline::Pipeline;
use retailflow::testing::*;
use std::collections::BTreeMap;
use std::time::Duration;

const STORES: [&str; 3] = ["S1", "S2", "S3"];
const SKUS: [&str; 5] = ["A", "B", "C", "D", "E"];

/// A trading day and what it must leave behind, computed here by plain sums.
struct Day {
    envelopes: Vec<Envelope>,
    /// (store, sku) -> (units sold, net amount).
    sales: BTreeMap<(String, String), (i64, i64)>,
    /// (store, sku) -> units on hand.
    stock: BTreeMap<(String, String), i64>,
}

fn trading_day(sales: usize) -> Day {
    let mut day = Day {
        envelopes: Vec::new(),
        sales: BTreeMap::new(),
        stock: BTreeMap::new(),
    };
    for (i, (store, sku)) in STORES
        .iter()
        .flat_map(|s| SKUS.iter().map(move |k| (*s, *k)))
        .enumerate()
    {
        day.envelopes.push(envelope(
            &format!("wms/{store}"),
            i as u64 + 1,
            receipt(store, sku, 10_000),
        ));
        day.stock.insert((store.into(), sku.into()), 10_000);
    }
    let mut x: u64 = 7;
    let mut rnd = |n: u64| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) % n
    };
    let mut till_seq: BTreeMap<String, u64> = BTreeMap::new();
    for _ in 0..sales {
        let store = STORES[rnd(3) as usize];
        let sku = SKUS[rnd(5) as usize];
        let qty = 1 + rnd(3) as i64;
        let price = 100 + rnd(900) as i64;
        let till = format!("pos/{store}/t{}", 1 + rnd(2));
        let seq = till_seq.entry(till.clone()).or_default();
        *seq += 1;
        let sale = card_sale(store, sku, qty, price);
        day.envelopes.push(envelope(&till, *seq, sale));
        let e = day.sales.entry((store.into(), sku.into())).or_default();
        e.0 += qty;
        e.1 += qty * price;
        *day.stock.get_mut(&(store.into(), sku.into())).unwrap() -= qty;
    }
    day
}

async fn erp() -> ErpSim {
    ErpSim::start(ErpSimConfig {
        listen: "127.0.0.1:0".into(),
        limit_requests: 200,
        limit_window: Duration::from_secs(2),
        max_concurrent: 8,
        ..ErpSimConfig::default()
    })
    .await
    .unwrap()
}

fn replica(url: &str, instance: &str, sim: &ErpSim) -> Config {
    let mut cfg = config(url);
    cfg.leader.elect = true;
    cfg.leader.instance = instance.into();
    cfg.leader.lease = Duration::from_secs(2);
    cfg.erp = vec![erp_endpoint(sim.postings_url())];
    cfg
}

/// Replicas `a` and `b`, started in that order.
async fn two_replicas(url: &str, sim: &ErpSim) -> (Pipeline, Pipeline) {
    let a = Pipeline::start(replica(url, "a", sim))
        .await
        .expect("replica a starts");
    let b = Pipeline::start(replica(url, "b", sim))
        .await
        .expect("replica b starts");
    (a, b)
}

/// Publishes `envelopes`, pausing now and then so that barriers fall in between.
async fn publish_all(js: &async_nats::jetstream::Context, envelopes: &[Envelope]) {
    for (i, env) in envelopes.iter().enumerate() {
        publish(js, env, false, true).await;
        if i % 300 == 299 {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
}

async fn applied_everything(js: &async_nats::jetstream::Context, pipeline: &Pipeline) {
    let end = last_seq(js, "RETAIL_EVENTS").await;
    assert!(
        pipeline
            .shared
            .view
            .wait_all(end, Duration::from_secs(60))
            .await,
        "applied up to {end} (at {})",
        pipeline.shared.view.applied_all()
    );
}

/// On-hand per position as `pipeline` answers it equals the oracle's stock.
fn assert_atp(pipeline: &Pipeline, day: &Day, who: &str) {
    for ((store, sku), want) in &day.stock {
        let (answers, _) = pipeline.shared.view.read(&Sku::from(sku.as_str()));
        let got = answers
            .unwrap_or_default()
            .into_iter()
            .find(|a| a.location.as_str() == store)
            .map(|a| (a.position.on_hand, a.position.reserved));
        assert_eq!(
            got,
            Some((*want, 0)),
            "{who}: on hand, reserved at {store}/{sku}"
        );
    }
}

/// The ERP's accepted sales and stock movements equal the oracle's, and nothing was booked
/// twice.
fn assert_books(sim: &ErpSim, day: &Day) {
    let stats = sim.stats();
    assert_eq!(stats.duplicate_documents, 0, "no document booked twice");
    let totals = sim.totals();
    let mut sales: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    for s in &totals.sales {
        let e = sales
            .entry((s.location.to_string(), s.sku.to_string()))
            .or_default();
        e.0 += s.qty_sold;
        e.1 += s.sales_amount;
    }
    assert_eq!(sales, day.sales, "sales per store and sku");
    let mut stock: BTreeMap<(String, String), i64> = BTreeMap::new();
    for m in &totals.inventory {
        *stock
            .entry((m.location.to_string(), m.sku.to_string()))
            .or_default() += m.qty;
    }
    assert_eq!(
        stock, day.stock,
        "stock movements add up to what is on hand"
    );
}

/// Waits until the ERP has answered every posting in the outbox.
async fn erp_caught_up(pipeline: &Pipeline) {
    assert!(
        wait_until(Duration::from_secs(60), || async {
            matches!(
                retailflow::supervise::settle::erp_backlog(pipeline).await,
                Ok(0)
            )
        })
        .await,
        "the ERP answered every posting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_leaders_at_once_keep_the_books_exact_and_expire_each_reservation_once() {
    let server = nats();
    let sim = erp().await;
    let (a, b) = two_replicas(&server.url(), &sim).await;
    assert!(a.leads(), "the first replica takes the free lease");
    assert!(!b.leads(), "the second follows");
    // What a lease cannot exclude (a paused process, clocks): b believes it leads as well.
    b.shared.leadership.force();
    assert!(a.leads() && b.leads(), "two leaders");

    let js = async_nats::jetstream::new(client(&server.url()).await);
    let day = trading_day(1500);
    publish_all(&js, &day.envelopes[..900]).await;
    // Reservations on both, left to expire: both leaders' expiry loops see them due.
    let mut reserved = 0;
    for (i, p) in [&a, &b].into_iter().enumerate() {
        for (n, sku) in SKUS.iter().take(4).enumerate() {
            let answer = p
                .reservations
                .reserve(ReserveRequest {
                    sku: (*sku).into(),
                    qty: 2,
                    location: Some(STORES[i].into()),
                    channel: None,
                    ttl_seconds: Some(1),
                    idempotency_key: format!("cart-{i}-{n}"),
                    allow_partial: false,
                })
                .await
                .expect("reservation decided");
            assert!(answer.granted, "{answer:?}");
            reserved += 1;
        }
    }
    publish_all(&js, &day.envelopes[900..]).await;
    assert!(
        wait_until(Duration::from_secs(20), || async {
            a.shared.active.is_empty() && b.shared.active.is_empty()
        })
        .await,
        "every reservation expired on both"
    );
    for p in [&a, &b] {
        retailflow::supervise::settle::settle(p, Duration::from_secs(60))
            .await
            .expect("a leader releases its postings");
    }
    applied_everything(&js, &a).await;
    applied_everything(&js, &b).await;
    erp_caught_up(&a).await;

    assert_books(&sim, &day);
    assert_atp(&a, &day, "a");
    assert_atp(&b, &day, "b");
    for (who, p) in [("a", &a), ("b", &b)] {
        let m = &p.shared.metrics;
        assert!(
            m.snapshots.load(std::sync::atomic::Ordering::Relaxed) > 0,
            "{who} acted as a leader: it wrote snapshots"
        );
    }
    // Each expiry was sent by whichever leader saw it due first; the stream kept one per
    // reservation.
    let expiries = count_subject(&js, "retail.v1.api.*.reservation_expired").await;
    assert_eq!(expiries, reserved, "one expiry event per reservation");
    // And when both send the same expiry, the stream keeps the first: a reservation on a
    // fresh SKU position, expired by both replicas at once.
    let answer = a
        .reservations
        .reserve(ReserveRequest {
            sku: "E".into(),
            qty: 1,
            location: Some("S1".into()),
            channel: None,
            ttl_seconds: Some(3600),
            idempotency_key: "cart-both".into(),
            allow_partial: false,
        })
        .await
        .expect("reservation decided");
    assert!(answer.granted);
    let (id, sku) = (ReservationId::from("cart-both"), Sku::from("E"));
    let (first, second) = tokio::join!(
        a.reservations.expire(&id, &sku),
        b.reservations.expire(&id, &sku)
    );
    assert_eq!(first.unwrap(), second.unwrap(), "one message, one sequence");
    assert_eq!(
        count_subject(&js, "retail.v1.api.*.reservation_expired").await,
        reserved + 1
    );
    drop(b);
    a.shutdown(Duration::from_secs(10)).await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_takes_over_when_the_leader_dies_and_the_books_stay_exact() {
    let server = nats();
    let sim = erp().await;
    let (a, b) = two_replicas(&server.url(), &sim).await;
    assert!(a.leads() && !b.leads());
    let js = async_nats::jetstream::new(client(&server.url()).await);
    let day = trading_day(1500);
    publish_all(&js, &day.envelopes[..800]).await;
    applied_everything(&js, &b).await;
    // The follower answers queries like the leader.
    assert_eq!(
        b.shared.view.read(&Sku::from("A")).0,
        a.shared.view.read(&Sku::from("A")).0
    );

    // The leader dies without a word: no final barrier, no resignation.
    let died = std::time::Instant::now();
    drop(a);
    publish_all(&js, &day.envelopes[800..]).await;
    assert!(
        wait_until(Duration::from_secs(10), || async { b.leads() }).await,
        "the follower took over"
    );
    let took = died.elapsed();
    assert!(
        took >= Duration::from_millis(1300),
        "the lease was taken before it could have run out ({took:?})"
    );
    retailflow::supervise::settle::settle(&b, Duration::from_secs(60))
        .await
        .expect("the new leader releases and delivers");
    applied_everything(&js, &b).await;
    erp_caught_up(&b).await;
    assert_books(&sim, &day);
    assert_atp(&b, &day, "b");
    b.shutdown(Duration::from_secs(10)).await;
    sim.shutdown().await;
}

/// Messages in the events stream on `filter`.
async fn count_subject(js: &async_nats::jetstream::Context, filter: &str) -> usize {
    use futures::StreamExt;
    let stream = js.get_stream("RETAIL_EVENTS").await.expect("stream");
    let info = stream
        .info_with_subjects(filter)
        .await
        .expect("subjects")
        .collect::<Vec<_>>()
        .await;
    info.into_iter()
        .map(|r| r.map(|(_, n)| n).unwrap_or(0))
        .sum()
}
