//! ERP faults that are not a document's fault (an expired token, a broken `Retry-After`) pause
//! the endpoint; they never dead-letter a document. The ERP simulator is a real HTTP server
//! and the pipeline a real one against a private nats-server.

use erp_sim::{ErpSim, ErpSimConfig};
use retailflow::domain::*;
use retailflow::supervise::pipeline::Pipeline;
use retailflow::testing::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

fn sale(store: &str, sku: &str, qty: i64, price: i64) -> Event {
    Event::Sale(Sale {
        location: store.into(),
        business_day: BusinessDay::parse("2026-11-27").unwrap(),
        currency: Currency::parse("EUR").unwrap(),
        lines: vec![ItemLine {
            sku: sku.into(),
            qty,
            unit_price: price,
            discount: 0,
            tax_code: "STD".into(),
            taxes: vec![TaxLine {
                code: "STD".into(),
                amount: 0,
            }],
            restock: None,
        }],
        tenders: vec![Tender {
            kind: "card".into(),
            amount: qty * price,
        }],
    })
}

/// Sets the simulator's fault plan over its admin route.
async fn fault(http: &reqwest::Client, sim: &ErpSim, plan: serde_json::Value) {
    let url = sim.postings_url().replace("/postings", "/admin/fault");
    let resp = http
        .post(url)
        .json(&plan)
        .send()
        .await
        .expect("admin route");
    assert!(resp.status().is_success(), "{plan}: {}", resp.status());
}

/// Runs the ERP through 401s for a while (when `expired_token`), then `throttles` single 429s
/// with the given `Retry-After` values, then normal service. Every document must be booked
/// and none dead-lettered.
async fn run(expired_token: bool, throttles: &[&str]) {
    let server = nats();
    let sim = ErpSim::start(ErpSimConfig {
        listen: "127.0.0.1:0".into(),
        ..ErpSimConfig::default()
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let throttle = |text: &str| json!({"mode": "throttle", "requests": 1, "retry_after": text});
    if expired_token {
        // The token "expires" before the first posting arrives and stays expired until told.
        fault(&http, &sim, json!({"mode": "unauthorized"})).await;
    } else if let Some(first) = throttles.first() {
        fault(&http, &sim, throttle(first)).await;
    }
    let mut cfg = config(&server.url());
    cfg.erp = vec![retailflow::config::ErpEndpointConfig {
        name: "erp".into(),
        url: sim.postings_url(),
        max_concurrent: 4,
        retry: retailflow::config::RetryConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(800),
        },
        ..Default::default()
    }];
    let pipeline = Pipeline::start(cfg).await.expect("pipeline starts");
    let js = async_nats::jetstream::new(client(&server.url()).await);

    let mut expected: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut seq = 0;
    for round in 0..3 {
        for store in ["S1", "S2", "S3"] {
            for (i, sku) in ["A", "B"].iter().enumerate() {
                seq += 1;
                let qty = 1 + (round + i as i64) % 3;
                let env = envelope(&format!("pos/{store}/t1"), seq, sale(store, sku, qty, 250));
                publish(&js, &env, false, true).await;
                *expected.entry((store.into(), sku.to_string())).or_default() += qty * 250;
            }
        }
        // Barriers fall in between, so postings are formed and refused in several rounds.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let metrics = pipeline.shared.metrics.clone();
    let endpoint = metrics.endpoint("erp");
    let dead_letters = || async {
        js.get_stream("RETAIL_DLQ")
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .messages
    };
    if expired_token {
        assert!(
            wait_until(Duration::from_secs(20), || async {
                sim.stats().unauthorized >= 3
            })
            .await,
            "the ERP answered 401s: {:?}",
            sim.stats()
        );
        // Let the pause run through a few probes.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(sim.totals().documents, 0, "nothing booked while 401");
        assert_eq!(
            endpoint.rejected.load(Relaxed),
            0,
            "no document rejected for a 401"
        );
        assert_eq!(
            dead_letters().await,
            0,
            "no document dead-lettered for a 401"
        );
        assert_eq!(endpoint.paused.load(Relaxed), 1, "the endpoint is paused");
        assert_eq!(metrics.erp_paused_endpoints.load(Relaxed), 1);
    }
    let first = usize::from(!expired_token);
    for (i, text) in throttles.iter().enumerate() {
        if i >= first {
            fault(&http, &sim, throttle(text)).await;
        }
        assert!(
            wait_until(Duration::from_secs(20), || async {
                sim.stats().throttled > i as u64
            })
            .await,
            "the 429 with Retry-After {text} was answered"
        );
    }
    if expired_token && throttles.is_empty() {
        fault(&http, &sim, json!({"mode": "normal"})).await;
    }

    let end = last_seq(&js, "RETAIL_EVENTS").await;
    assert!(
        pipeline
            .shared
            .view
            .wait_all(end, Duration::from_secs(30))
            .await
    );
    retailflow::supervise::settle::settle(&pipeline, Duration::from_secs(60))
        .await
        .expect("every posting answered within a minute");

    let booked: BTreeMap<(String, String), i64> = sim
        .totals()
        .sales
        .iter()
        .map(|s| ((s.location.to_string(), s.sku.to_string()), s.sales_amount))
        .fold(BTreeMap::new(), |mut m, (k, v)| {
            *m.entry(k).or_default() += v;
            m
        });
    assert_eq!(booked, expected, "every sale booked once");
    let stats = sim.stats();
    assert_eq!(stats.duplicate_documents, 0);
    assert_eq!(stats.rejected, 0);
    assert_eq!(stats.throttled, throttles.len() as u64);
    assert_eq!(dead_letters().await, 0, "nothing dead-lettered");
    assert_eq!(endpoint.rejected.load(Relaxed), 0);
    assert_eq!(endpoint.pauses.load(Relaxed) >= 1, expired_token);
    assert_eq!(endpoint.paused.load(Relaxed), 0, "resumed");
    assert_eq!(metrics.erp_paused_endpoints.load(Relaxed), 0);
    pipeline.shutdown(Duration::from_secs(10)).await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erp_answering_401_then_a_429_beyond_any_clock_books_every_document() {
    run(true, &["99999999999999999999"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_beyond_the_clock_neither_panics_nor_stops_the_endpoint() {
    run(false, &["10000000000000000000"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_of_a_year_is_clamped_to_retry_max() {
    run(false, &["31536000"]).await;
}
