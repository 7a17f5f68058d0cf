//! Supervision: panics injected into shard, store, ingest and ERP-endpoint actors are restarted
//! from the latest snapshot plus replay, and the numbers come out exact; a restart storm ends
//! in a clear fatal error instead of a loop.

mod common;

use common::*;
use retailflow::domain::*;
use retailflow::erp_sim::{ErpSim, ErpSimConfig};
use retailflow::supervise::pipeline::Pipeline;
use retailflow::supervise::supervisor::CrashTarget;
use std::collections::BTreeMap;
use std::time::Duration;

const STORES: [&str; 3] = ["S1", "S2", "S3"];
const SKUS: [&str; 8] = ["A", "B", "C", "D", "E", "F", "G", "H"];

fn sale(store: &str, sku: &str, qty: i64) -> Event {
    let price = 1_000;
    let tax = qty * price / 5;
    Event::Sale(Sale {
        location: store.into(),
        business_day: BusinessDay::parse("2026-11-27").unwrap(),
        currency: Currency::parse("EUR").unwrap(),
        lines: vec![ItemLine {
            sku: sku.into(),
            qty,
            unit_price: price,
            discount: 0,
            tax_code: "VAT20".into(),
            taxes: vec![TaxLine {
                code: "VAT20".into(),
                amount: tax,
            }],
            restock: None,
        }],
        tenders: vec![Tender {
            kind: "card".into(),
            amount: qty * price + tax,
        }],
    })
}

fn sim_config() -> ErpSimConfig {
    ErpSimConfig {
        listen: "127.0.0.1:0".into(),
        limit_requests: 200,
        limit_window: Duration::from_secs(2),
        max_concurrent: 8,
        ..ErpSimConfig::default()
    }
}

fn endpoint(url: String) -> retailflow::config::ErpEndpointConfig {
    retailflow::config::ErpEndpointConfig {
        name: "erp".into(),
        url,
        rate: retailflow::post::ratelimit::RateLimit {
            requests: 200,
            window: Duration::from_secs(2),
            burst: Some(20),
        },
        max_concurrent: 8,
        retry: retailflow::config::RetryConfig {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(500),
        },
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_actors_are_restarted_and_the_numbers_stay_exact() {
    let server = nats();
    let sim = ErpSim::start(sim_config()).await.unwrap();
    let mut cfg = config(&server.url());
    cfg.snapshot.enabled = true;
    cfg.supervision.max_restarts = 20;
    cfg.erp = vec![endpoint(sim.postings_url())];
    let pipeline = Pipeline::start(cfg).await.expect("pipeline starts");
    let js = async_nats::jetstream::new(client(&server.url()).await);

    // The expectation, kept by hand: on hand per (store, sku) and units sold.
    let mut on_hand: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut sold: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut seq = 0u64;
    let mut x: u64 = 7;
    let mut rnd = |n: u64| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) % n
    };
    let crashes = [
        CrashTarget::Shard(0),
        CrashTarget::AnyStore,
        CrashTarget::Ingest,
        CrashTarget::Endpoint("erp".into()),
        CrashTarget::Shard(2),
    ];
    for (round, target) in crashes.iter().enumerate() {
        for i in 0..600 {
            let store = STORES[rnd(3) as usize];
            let sku = SKUS[rnd(8) as usize];
            let event = if i % 4 == 0 {
                let q = 1 + rnd(20) as i64;
                *on_hand.entry((store.into(), sku.into())).or_default() += q;
                receipt(store, sku, q)
            } else {
                let q = 1 + rnd(3) as i64;
                *on_hand.entry((store.into(), sku.into())).or_default() -= q;
                *sold.entry((store.into(), sku.into())).or_default() += q;
                sale(store, sku, q)
            };
            seq += 1;
            publish(
                &js,
                &envelope(&format!("pos/{store}"), seq, event),
                false,
                true,
            )
            .await;
            if i == 300 {
                // Mid-stream: a snapshot exists by now (interval 500 ms) and work is in flight.
                tokio::time::sleep(Duration::from_millis(600)).await;
                pipeline.crash(target.clone());
            }
        }
        let before = round as u64 + 1;
        assert!(
            wait_until(Duration::from_secs(30), || async {
                pipeline.restarts().await >= before
            })
            .await,
            "restart {before} after crashing {target:?} was counted"
        );
    }

    let end = last_seq(&js, "RETAIL_EVENTS").await;
    assert!(
        pipeline
            .shared
            .view
            .wait_all(end, Duration::from_secs(60))
            .await,
        "everything applied after the restarts"
    );
    for ((store, sku), want) in &on_hand {
        let (answers, _) = pipeline.shared.view.read(&Sku::from(sku.as_str()));
        let got = answers
            .unwrap_or_default()
            .into_iter()
            .find(|a| a.location.as_str() == store)
            .map(|a| a.position.on_hand)
            .unwrap_or_default();
        assert_eq!(got, *want, "on hand {store}/{sku}");
    }

    // Well under the outbox's 30 s ack wait: postings the crashed endpoint actor had in
    // flight are handed back at once, not after JetStream gives up on them.
    retailflow::scenario::settle::settle(&pipeline, Duration::from_secs(20))
        .await
        .expect("every posting answered by the ERP");
    let mut booked: BTreeMap<(String, String), i64> = BTreeMap::new();
    for s in &sim.totals().sales {
        *booked
            .entry((s.location.to_string(), s.sku.to_string()))
            .or_default() += s.qty_sold;
    }
    assert_eq!(booked, sold, "ERP books equal the tills after the restarts");
    assert_eq!(
        sim.stats().duplicate_documents,
        0,
        "no document booked twice"
    );
    assert_eq!(pipeline.restarts().await, crashes.len() as u64);
    pipeline.shutdown(Duration::from_secs(10)).await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_storm_escalates_to_a_fatal_error() {
    let server = nats();
    let mut cfg = config(&server.url());
    cfg.supervision.max_restarts = 2;
    cfg.supervision.within = Duration::from_secs(120);
    let mut pipeline = Pipeline::start(cfg).await.expect("pipeline starts");
    let js = async_nats::jetstream::new(client(&server.url()).await);
    publish(
        &js,
        &envelope("wms/S1", 1, receipt("S1", "A", 5)),
        false,
        true,
    )
    .await;

    for n in 1..=2u64 {
        pipeline.crash(CrashTarget::Shard(1));
        assert!(
            wait_until(Duration::from_secs(30), || async {
                pipeline.restarts().await >= n
            })
            .await,
            "restart {n} happened"
        );
    }
    // The third failure inside the window is one too many.
    pipeline.crash(CrashTarget::Shard(1));
    assert!(
        wait_until(Duration::from_secs(30), || async {
            pipeline.coordinator_status().await.is_none()
        })
        .await,
        "the supervisor gives up instead of looping"
    );
    // Asked only after the supervisor is gone, when its reason and its end are both
    // ready: the answer is still the reason, and stopping afterwards is clean.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reason = tokio::time::timeout(Duration::from_secs(5), pipeline.fatal())
        .await
        .expect("a pipeline that gave up answers at once");
    assert!(
        reason.contains("restart"),
        "the fatal error says why: {reason}"
    );
    let again = tokio::time::timeout(Duration::from_secs(5), pipeline.fatal())
        .await
        .expect("asking twice does not hang");
    assert_eq!(again, "supervisor stopped", "the reason is given once");
    pipeline.stop_now().await;
}
