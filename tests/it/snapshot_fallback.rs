//! A corrupt latest snapshot does not block start-up: recovery falls back to the newest older
//! kept snapshot, replays the stream from its sequence, and the numbers come out exact. A
//! snapshot store that fails while running holds ingest once too many postings wait for it,
//! and the retried snapshot ends the pause when the store is back.

use retailflow::domain::*;
use retailflow::supervise::pipeline::Pipeline;
use retailflow::testing::*;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

const STORES: [&str; 3] = ["S1", "S2", "S3"];
const SKUS: [&str; 4] = ["A", "B", "C", "D"];

fn sale(store: &str, sku: &str, qty: i64) -> Event {
    card_sale(store, sku, qty, 1_000)
}

/// Publishes events and keeps the oracle: on hand per (store, sku) is receipts minus sales.
struct Feed {
    seqs: BTreeMap<String, u64>,
    expected: BTreeMap<(String, String), i64>,
    last: u64,
}

impl Feed {
    async fn receipt(&mut self, js: &async_nats::jetstream::Context, st: &str, sku: &str, q: i64) {
        self.send(js, &format!("wms/{st}"), receipt(st, sku, q))
            .await;
        *self.expected.entry((st.into(), sku.into())).or_default() += q;
    }

    async fn sale(&mut self, js: &async_nats::jetstream::Context, st: &str, sku: &str, q: i64) {
        self.send(js, &format!("pos/{st}"), sale(st, sku, q)).await;
        *self.expected.entry((st.into(), sku.into())).or_default() -= q;
    }

    async fn send(&mut self, js: &async_nats::jetstream::Context, source: &str, e: Event) {
        let seq = self.seqs.entry(source.into()).or_default();
        *seq += 1;
        self.last = publish(js, &envelope(source, *seq, e), false, true).await;
    }
}

async fn snapshot(p: &Pipeline) -> u64 {
    let snap = p.barrier(false, true).await.expect("barrier");
    assert!(
        wait_until(Duration::from_secs(20), || async {
            p.coordinator_status()
                .await
                .is_some_and(|s| s.last_snapshot >= snap)
        })
        .await,
        "snapshot at {snap} written"
    );
    snap
}

async fn applied(p: &Pipeline, seq: u64) {
    assert!(
        p.shared.view.wait_all(seq, Duration::from_secs(20)).await,
        "sequence {seq} applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_latest_snapshot_falls_back_to_an_older_kept_one() {
    let server = nats();
    let mut cfg = config(&server.url());
    // Only the explicit snapshots below.
    cfg.snapshot.interval = Duration::from_secs(3600);
    cfg.snapshot.every_events = 1_000_000_000;
    let pipeline = Pipeline::start(cfg.clone()).await.expect("pipeline starts");
    let js = async_nats::jetstream::new(client(&server.url()).await);
    let mut feed = Feed {
        seqs: BTreeMap::new(),
        expected: BTreeMap::new(),
        last: 0,
    };

    for (i, st) in STORES.iter().enumerate() {
        for (j, sku) in SKUS.iter().enumerate() {
            feed.receipt(&js, st, sku, 100 + (i * 10 + j) as i64).await;
        }
    }
    applied(&pipeline, feed.last).await;
    let older = snapshot(&pipeline).await;

    // Between the snapshots: sales and a restock, which the fallback must replay.
    for (i, st) in STORES.iter().enumerate() {
        for (j, sku) in SKUS.iter().enumerate() {
            feed.sale(&js, st, sku, 1 + ((i + j) % 3) as i64).await;
        }
        feed.receipt(&js, st, "A", 7).await;
    }
    applied(&pipeline, feed.last).await;
    let latest = snapshot(&pipeline).await;
    assert!(latest > older);

    // After the latest: more sales, replayed either way.
    for st in STORES {
        feed.sale(&js, st, "B", 2).await;
    }
    applied(&pipeline, feed.last).await;
    let end = last_seq(&js, "RETAIL_EVENTS").await;
    let mut pipeline = pipeline;
    pipeline.stop_now().await;
    drop(pipeline);

    // Damage the latest snapshot in place: same object name, garbage bytes.
    let kv = js
        .get_key_value(format!("{}-ptr", cfg.snapshot.bucket))
        .await
        .expect("pointer bucket");
    let ptr: serde_json::Value =
        serde_json::from_slice(&kv.get("latest").await.unwrap().expect("pointer")).unwrap();
    assert_eq!(
        ptr["seq"],
        serde_json::json!(latest),
        "the pointer names the latest"
    );
    let name = ptr["object"].as_str().unwrap().to_string();
    let objects = js
        .get_object_store(&cfg.snapshot.bucket)
        .await
        .expect("object store");
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 13) as u8).collect();
    objects
        .put(name.as_str(), &mut garbage.as_slice())
        .await
        .expect("overwrite the latest snapshot");

    let restarted = Pipeline::start(cfg)
        .await
        .expect("starts from the older kept snapshot");
    applied(&restarted, end).await;
    let m = &restarted.shared.metrics;
    assert_eq!(
        m.snapshot_fallbacks.load(Relaxed),
        1,
        "one fallback counted"
    );
    assert!(
        m.render().contains("retailflow_snapshot_fallbacks_total 1"),
        "the fallback is rendered"
    );
    let read = m.events_received.load(Relaxed);
    assert!(
        read > end - latest,
        "replayed from the older snapshot at {older}, not the latest at {latest} ({read} read)"
    );

    let http = reqwest::Client::new();
    let base = format!("http://{}", restarted.http_addr().unwrap());
    for ((st, sku), want) in &feed.expected {
        let body: serde_json::Value = http
            .get(format!("{base}/v1/availability/{sku}?location={st}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let loc = &body["locations"][0];
        assert_eq!(
            loc["on_hand"],
            serde_json::json!(want),
            "{st}/{sku}: {body}"
        );
        assert_eq!(
            loc["available"],
            serde_json::json!(want),
            "{st}/{sku}: {body}"
        );
    }
    restarted.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_snapshot_store_pauses_ingest_at_the_bound_until_the_retry_succeeds() {
    use erp_sim::{ErpSim, ErpSimConfig};
    let server = nats();
    let sim = ErpSim::start(ErpSimConfig {
        listen: "127.0.0.1:0".into(),
        ..ErpSimConfig::default()
    })
    .await
    .unwrap();
    let mut cfg = config(&server.url());
    cfg.snapshot.max_pending_postings = 2;
    cfg.erp = vec![retailflow::config::ErpEndpointConfig {
        name: "erp".into(),
        url: sim.postings_url(),
        ..Default::default()
    }];
    let pipeline = Pipeline::start(cfg.clone()).await.expect("pipeline starts");
    let js = async_nats::jetstream::new(client(&server.url()).await);
    let mut feed = Feed {
        seqs: BTreeMap::new(),
        expected: BTreeMap::new(),
        last: 0,
    };
    for st in STORES {
        feed.receipt(&js, st, "A", 50).await;
    }
    applied(&pipeline, feed.last).await;
    snapshot(&pipeline).await;

    // The store goes away: every snapshot from now on fails.
    js.delete_object_store(&cfg.snapshot.bucket)
        .await
        .expect("object store deleted");
    for st in STORES {
        feed.sale(&js, st, "A", 3).await;
    }
    let m = &pipeline.shared.metrics;
    assert!(
        wait_until(Duration::from_secs(20), || async {
            pipeline.shared.flow.paused.load(Relaxed) && m.snapshot_backpressure.load(Relaxed) >= 1
        })
        .await,
        "ingest paused: {} postings pending, {} snapshot failures",
        m.snapshot_pending_postings.load(Relaxed),
        m.snapshot_failures.load(Relaxed)
    );
    assert!(m.snapshot_pending_postings.load(Relaxed) > 2);
    // Ingest stops at its next batch boundary: a read already waiting when the pause began
    // may still take one batch. Once ingest has counted a paused step it reads nothing more.
    let seen = m.ingest_paused.load(Relaxed);
    assert!(
        wait_until(Duration::from_secs(10), || async {
            m.ingest_paused.load(Relaxed) > seen
        })
        .await,
        "ingest saw the pause"
    );
    feed.receipt(&js, "S1", "B", 5).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        pipeline.shared.view.applied_all() < feed.last,
        "nothing is applied while the postings wait for a snapshot"
    );

    // The store is back: the retried snapshot is written, the postings go out, ingest resumes.
    js.create_object_store(async_nats::jetstream::object_store::Config {
        bucket: cfg.snapshot.bucket.clone(),
        ..Default::default()
    })
    .await
    .expect("object store recreated");
    applied(&pipeline, feed.last).await;
    assert!(!pipeline.shared.flow.paused.load(Relaxed));
    for ((st, sku), want) in &feed.expected {
        let (answers, _) = pipeline.shared.view.read(&Sku::from(sku.as_str()));
        let got = answers
            .unwrap_or_default()
            .into_iter()
            .find(|a| a.location.as_str() == st)
            .map(|a| a.position.on_hand);
        assert_eq!(got, Some(*want), "on hand {st}/{sku}");
    }
    retailflow::supervise::settle::settle(&pipeline, Duration::from_secs(20))
        .await
        .expect("every posting answered by the ERP");
    let booked: i64 = sim.totals().sales.iter().map(|s| s.qty_sold).sum();
    assert_eq!(
        booked, 9,
        "the three held sales reach the ERP once the store is back"
    );
    pipeline.shutdown(Duration::from_secs(10)).await;
    sim.shutdown().await;
}
