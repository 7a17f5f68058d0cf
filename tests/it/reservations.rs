//! Reservations over the HTTP API against a real nats-server: a flash sale that must not
//! oversell, idempotent retries, release, expiry, channel sourcing, and a replay of the stream
//! into a fresh pipeline that reaches the same decisions.

use futures::StreamExt;
use retailflow::domain::*;
use retailflow::supervise::pipeline::Pipeline;
use retailflow::testing::*;
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::time::Duration;

fn dc(loc: &str, priority: u32) -> Event {
    Event::LocationUpsert(LocationUpsert {
        location: loc.into(),
        kind: LocationKind::Dc,
        channels: vec!["web".into()],
        priority,
    })
}

async fn reserve(http: &reqwest::Client, base: &str, body: Value) -> (u16, Value) {
    let resp = http
        .post(format!("{base}/v1/reservations"))
        .json(&body)
        .send()
        .await
        .expect("reserve request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn position(http: &reqwest::Client, base: &str, sku: &str, loc: &str) -> Value {
    let body: Value = http
        .get(format!("{base}/v1/availability/{sku}?location={loc}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["locations"][0].clone()
}

async fn applied(p: &Pipeline, seq: u64, secs: u64) {
    assert!(
        p.shared.view.wait_all(seq, Duration::from_secs(secs)).await,
        "sequence {seq} applied within {secs} s"
    );
}

async fn publish_all(js: &async_nats::jetstream::Context, events: Vec<(&str, Event)>) -> u64 {
    let mut last = 0;
    for (i, (source, e)) in events.into_iter().enumerate() {
        last = publish(js, &envelope(source, i as u64 + 1, e), false, true).await;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flash_sale_grants_exactly_the_stock_and_nothing_more() {
    let server = nats();
    let mut cfg = config(&server.url());
    cfg.reservations.decision_timeout = Duration::from_secs(30);
    let pipeline = Pipeline::start(cfg).await.expect("pipeline starts");
    let js = async_nats::jetstream::new(client(&server.url()).await);
    let last = publish_all(&js, vec![("wms/DC1", receipt("DC1", "HOT", 100))]).await;
    applied(&pipeline, last, 10).await;
    let base = format!("http://{}", pipeline.http_addr().unwrap());

    // 10,000 shoppers over 50 connections pools, all at once.
    let clients: Vec<reqwest::Client> = (0..50).map(|_| reqwest::Client::new()).collect();
    let answers: Vec<(u16, Value)> = futures::stream::iter(0..10_000usize)
        .map(|i| {
            let http = clients[i % clients.len()].clone();
            let base = base.clone();
            async move {
                let body = json!({"sku": "HOT", "qty": 1, "location": "DC1",
                                  "ttl_seconds": 600, "idempotency_key": format!("shopper-{i}")});
                loop {
                    let (status, v) = reserve(&http, &base, body.clone()).await;
                    // 503 means "no decision yet"; retrying with the same key is safe.
                    if status != 503 {
                        return (status, v);
                    }
                }
            }
        })
        .buffer_unordered(1_000)
        .collect()
        .await;
    let granted: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, v)| v)
        .collect();
    let rejected = answers.iter().filter(|(s, _)| *s == 409).count();
    assert_eq!(granted.len(), 100, "exactly the stock was granted");
    assert_eq!(rejected, 9_900, "everyone else was told no");
    assert!(
        granted
            .iter()
            .all(|v| v["qty"] == 1 && v["granted"] == true)
    );
    let pos = position(&http_client(), &base, "HOT", "DC1").await;
    assert_eq!(
        (&pos["on_hand"], &pos["reserved"], &pos["available"]),
        (&json!(100), &json!(100), &json!(0)),
        "{pos}"
    );

    // A retry gets the first decision, not a second reservation.
    let first = granted[0];
    let key = first["reservation_id"].as_str().unwrap().to_string();
    let (status, again) = reserve(
        &http_client(),
        &base,
        json!({"sku": "HOT", "qty": 1, "location": "DC1", "ttl_seconds": 600, "idempotency_key": key}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(again["decided_at"], first["decided_at"], "same decision");
    let rejected_key = answers
        .iter()
        .find(|(s, _)| *s == 409)
        .map(|(_, v)| v["reservation_id"].as_str().unwrap().to_string())
        .unwrap();
    let (status, _) = reserve(
        &http_client(),
        &base,
        json!({"sku": "HOT", "qty": 1, "location": "DC1", "idempotency_key": rejected_key}),
    )
    .await;
    assert_eq!(status, 409, "a rejection is remembered too");
    assert_eq!(
        position(&http_client(), &base, "HOT", "DC1").await["reserved"],
        100
    );

    // Release one: exactly one unit comes back and can be had again.
    let resp = http_client()
        .delete(format!("{base}/v1/reservations/{key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let pos = position(&http_client(), &base, "HOT", "DC1").await;
    assert_eq!(pos["available"], 1, "{pos}");
    let (status, _) = reserve(
        &http_client(),
        &base,
        json!({"sku": "HOT", "qty": 2, "location": "DC1", "idempotency_key": "late-1"}),
    )
    .await;
    assert_eq!(status, 409, "two are not there");
    let (status, v) = reserve(
        &http_client(),
        &base,
        json!({"sku": "HOT", "qty": 2, "location": "DC1", "idempotency_key": "late-2", "allow_partial": true}),
    )
    .await;
    assert_eq!((status, &v["qty"]), (201, &json!(1)), "partial grant: {v}");
    pipeline.shutdown(Duration::from_secs(10)).await;
}

async fn over_nats(nats: &async_nats::Client, subject: &str, body: String) -> Value {
    let reply = nats
        .request(subject.to_string(), body.into())
        .await
        .expect("an answer over NATS");
    serde_json::from_slice(&reply.payload).expect("a JSON answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_nats_decisions_come_back_and_bad_requests_and_a_lost_stream_get_clear_errors() {
    let server = nats();
    let cfg = config(&server.url());
    let stream = cfg.streams.events.clone();
    let pipeline = Pipeline::start(cfg).await.expect("pipeline starts");
    let nc = client(&server.url()).await;
    let js = async_nats::jetstream::new(nc.clone());
    let last = publish_all(&js, vec![("wms/DC1", receipt("DC1", "HOT", 3))]).await;
    applied(&pipeline, last, 10).await;

    // Five shoppers at once for three units: three yes, two no, whatever the order.
    let body = |key: &str, qty: i64| {
        json!({"sku": "HOT", "qty": qty, "location": "DC1", "idempotency_key": key}).to_string()
    };
    let answers: Vec<Value> = futures::future::join_all(
        (0..5).map(|i| over_nats(&nc, subject::ATP_RESERVE, body(&format!("n-{i}"), 1))),
    )
    .await;
    let granted: Vec<&Value> = answers.iter().filter(|v| v["granted"] == true).collect();
    assert_eq!(granted.len(), 3, "{answers:?}");
    assert!(
        answers
            .iter()
            .filter(|v| v["granted"] == false)
            .all(|v| v["state"] == "rejected" && v["available"] == 0),
        "{answers:?}"
    );
    // The same key again: the first decision, from the same stream sequence.
    let key = granted[0]["reservation_id"].as_str().unwrap();
    let again = over_nats(&nc, subject::ATP_RESERVE, body(key, 1)).await;
    assert_eq!(again["decided_at"], granted[0]["decided_at"], "{again}");
    assert_eq!(again["granted"], true);

    // Bad requests are told what is wrong, and nothing else changes.
    let v = over_nats(&nc, subject::ATP_RESERVE, "{not json".into()).await;
    assert!(v["error"].as_str().unwrap().starts_with("request: "), "{v}");
    let v = over_nats(&nc, subject::ATP_RESERVE, body("n-zero", 0)).await;
    assert!(v["error"].as_str().unwrap().contains("qty 0"), "{v}");
    let v = over_nats(
        &nc,
        subject::ATP_RELEASE,
        json!({"reservation_id": key}).to_string(),
    )
    .await;
    assert_eq!(v["state"], "released", "{v}");
    assert_eq!(
        pipeline.shared.view.read(&Sku::from("HOT")).0.unwrap()[0]
            .position
            .reserved,
        2
    );

    // With the events stream gone a request cannot be stored: the caller hears so at once
    // (well before the decision timeout), not a decision that was never made.
    js.delete_stream(&stream).await.expect("stream deleted");
    let asked = std::time::Instant::now();
    let v = over_nats(&nc, subject::ATP_RESERVE, body("n-lost", 1)).await;
    let error = v["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("cannot publish the request")
            || error.contains("the events stream did not store the request"),
        "{v}"
    );
    assert!(asked.elapsed() < pipeline.shared.config.reservations.decision_timeout);
    pipeline.shutdown(Duration::from_secs(5)).await;
}

fn http_client() -> reqwest::Client {
    reqwest::Client::new()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_channel_sourcing_and_replay_give_the_same_decisions() {
    let server = nats();
    let cfg = config(&server.url());
    let pipeline = Pipeline::start(cfg.clone()).await.expect("pipeline starts");
    let js = async_nats::jetstream::new(client(&server.url()).await);
    let last = publish_all(
        &js,
        vec![
            ("mdm/m", dc("DC1", 0)),
            ("mdm/m", dc("DC2", 1)),
            ("wms/DC1", receipt("DC1", "X", 3)),
            ("wms/DC2", receipt("DC2", "X", 10)),
        ],
    )
    .await;
    applied(&pipeline, last, 10).await;
    let base = format!("http://{}", pipeline.http_addr().unwrap());
    let http = http_client();

    // Priority rule, no split: DC1 (priority 0) cannot take 5, so the whole request goes to
    // DC2; 2 fit at DC1.
    let (s, v) = reserve(
        &http,
        &base,
        json!({"sku": "X", "qty": 5, "channel": "web", "idempotency_key": "c1"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s2, v2) = reserve(
        &http,
        &base,
        json!({"sku": "X", "qty": 2, "channel": "web", "idempotency_key": "c2"}),
    )
    .await;
    assert_eq!(s2, 201, "{v2}");
    let at = |v: &Value| {
        v["allocations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["location"].as_str().unwrap().to_string(),
                    a["qty"].as_i64().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    let first_alloc = at(&v);
    let second_alloc = at(&v2);
    assert_eq!(first_alloc.iter().map(|a| a.1).sum::<i64>(), 5);
    assert_eq!(first_alloc.len(), 1, "not split: {v}");
    assert_eq!(
        second_alloc,
        vec![("DC1".to_string(), 2)],
        "priority order: {v2}"
    );

    // A reservation with a one-second TTL expires by itself (an expiry event in the stream).
    let (s, v) = reserve(
        &http,
        &base,
        json!({"sku": "X", "qty": 1, "location": "DC1", "ttl_seconds": 1, "idempotency_key": "short"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(position(&http, &base, "X", "DC1").await["reserved"], 3);
    assert!(
        wait_until(Duration::from_secs(10), || async {
            position(&http, &base, "X", "DC1").await["reserved"] == 2
        })
        .await,
        "the short reservation expired"
    );
    let gone = http
        .get(format!("{base}/v1/reservations/short"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status().as_u16(), 404);

    // Replay: a fresh pipeline (no snapshot) reading the same stream reaches the same
    // positions, so grants, rejections and the expiry were decided from the stream alone.
    let end = last_seq(&js, "RETAIL_EVENTS").await;
    let before: Vec<Value> = vec![
        position(&http, &base, "X", "DC1").await,
        position(&http, &base, "X", "DC2").await,
    ];
    pipeline.shutdown(Duration::from_secs(10)).await;
    let mut again = cfg.clone();
    again.snapshot.bucket = "replay-check".into();
    let replayed = Pipeline::start(again)
        .await
        .expect("second pipeline starts");
    applied(&replayed, end, 20).await;
    let base2 = format!("http://{}", replayed.http_addr().unwrap());
    let after: Vec<Value> = vec![
        position(&http, &base2, "X", "DC1").await,
        position(&http, &base2, "X", "DC2").await,
    ];
    let strip = |v: &Vec<Value>| {
        v.iter()
            .map(|p| (p["on_hand"].clone(), p["reserved"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        strip(&after),
        strip(&before),
        "replay reproduces the decisions"
    );
    let c1 = http
        .get(format!("{base2}/v1/reservations/c1"))
        .send()
        .await
        .unwrap();
    let c1: Value = c1.json().await.unwrap();
    assert_eq!(at(&c1), first_alloc, "the same grant after replay: {c1}");
    replayed.shutdown(Duration::from_secs(10)).await;
}

/// Sends `n` one-unit requests for HOT at DC1 at once, keys `{prefix}-{i}`; returns
/// (status, answer) per key.
async fn wave(base: &str, prefix: &str, n: usize) -> Vec<(String, u16, Value)> {
    let http = http_client();
    futures::stream::iter(0..n)
        .map(|i| {
            let (http, base) = (http.clone(), base.to_string());
            let key = format!("{prefix}-{i}");
            async move {
                let body = json!({"sku": "HOT", "qty": 1, "location": "DC1",
                                  "ttl_seconds": 3600, "idempotency_key": key});
                loop {
                    let (status, v) = reserve(&http, &base, body.clone()).await;
                    if status != 503 {
                        return (key, status, v);
                    }
                }
            }
        })
        .buffer_unordered(200)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restoring_a_snapshot_and_replaying_reproduces_every_decision() {
    let server = nats();
    let mut cfg = config(&server.url());
    // Only the explicit snapshot below: the restart must replay what came after it.
    cfg.snapshot.interval = Duration::from_secs(3600);
    cfg.snapshot.every_events = 1_000_000_000;
    let pipeline = Pipeline::start(cfg.clone()).await.expect("pipeline starts");
    let js = async_nats::jetstream::new(client(&server.url()).await);
    let last = publish_all(&js, vec![("wms/DC1", receipt("DC1", "HOT", 150))]).await;
    applied(&pipeline, last, 10).await;
    let base = format!("http://{}", pipeline.http_addr().unwrap());

    let mut answers = wave(&base, "before", 100).await;
    let snap = pipeline.barrier(false, true).await.expect("barrier");
    assert!(
        wait_until(Duration::from_secs(20), || async {
            pipeline
                .coordinator_status()
                .await
                .is_some_and(|s| s.last_snapshot >= snap)
        })
        .await,
        "snapshot at {snap} written"
    );
    // After the snapshot: 100 shoppers for the 50 units left, in concurrent batches.
    answers.extend(wave(&base, "after", 100).await);
    let granted = answers.iter().filter(|(_, s, _)| *s == 201).count();
    assert_eq!(granted, 150, "the stock, no more");
    let end = last_seq(&js, "RETAIL_EVENTS").await;
    assert!(end > snap + 1, "events after the snapshot to replay");
    let mut pipeline = pipeline;
    pipeline.stop_now().await;
    drop(pipeline);

    // A new process: restores the snapshot, replays from snap + 1.
    let restarted = Pipeline::start(cfg).await.expect("restart");
    applied(&restarted, end, 20).await;
    let read = restarted
        .shared
        .metrics
        .events_received
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        read <= end - snap,
        "only the events after the snapshot were replayed ({read} read, {} after it)",
        end - snap
    );
    let base2 = format!("http://{}", restarted.http_addr().unwrap());
    let pos = position(&http_client(), &base2, "HOT", "DC1").await;
    assert_eq!(
        (&pos["on_hand"], &pos["reserved"]),
        (&json!(150), &json!(150))
    );
    // Every key, asked again, gets its first decision back: same outcome, same allocation,
    // decided at the same stream sequence.
    let again: std::collections::HashMap<String, (u16, Value)> =
        futures::stream::iter(answers.iter())
            .map(|(key, _, _)| {
                let base2 = base2.clone();
                async move {
                    let body = json!({"sku": "HOT", "qty": 1, "location": "DC1",
                                  "ttl_seconds": 3600, "idempotency_key": key});
                    let (s, v) = reserve(&http_client(), &base2, body).await;
                    (key.clone(), (s, v))
                }
            })
            .buffer_unordered(50)
            .collect()
            .await;
    for (key, status, first) in &answers {
        let (s, v) = &again[key];
        assert_eq!(s, status, "{key}: {first} then {v}");
        for field in ["granted", "state", "allocations", "decided_at"] {
            assert_eq!(v[field], first[field], "{key}.{field}: {first} then {v}");
        }
    }
    let pos = position(&http_client(), &base2, "HOT", "DC1").await;
    assert_eq!(
        pos["reserved"],
        json!(150),
        "asking again reserved nothing more"
    );
    restarted.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_stored_but_not_yet_decided_times_out_cleanly_and_a_retry_gets_its_decision() {
    let server = nats();
    let mut cfg = config(&server.url());
    cfg.reservations.decision_timeout = Duration::from_millis(400);
    let pipeline = Pipeline::start(cfg).await.expect("pipeline starts");
    let nc = client(&server.url()).await;
    let js = async_nats::jetstream::new(nc.clone());
    let last = publish_all(&js, vec![("wms/DC1", receipt("DC1", "HOT", 5))]).await;
    applied(&pipeline, last, 10).await;

    // Ingest holds off (a scenario's backlog switch): the request is stored in the stream but
    // no shard sees it before the caller's deadline. Ingest may be inside a read already, and
    // sees the switch once that read gives up (200 ms at most).
    let shared = &pipeline.shared;
    shared
        .flow
        .hold
        .store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let body =
        json!({"sku": "HOT", "qty": 2, "location": "DC1", "idempotency_key": "slow-1"}).to_string();
    let v = over_nats(&nc, subject::ATP_RESERVE, body.clone()).await;
    let error = v["error"].as_str().unwrap_or_default();
    assert!(error.contains("no decision within"), "{v}");
    assert!(error.contains("same idempotency_key"), "{v}");
    assert_eq!(
        shared.decisions.waiting(),
        0,
        "the timed-out caller's waiter is gone"
    );
    let timeouts = shared.metrics.reservation_timeouts.load(Ordering::Relaxed);
    assert_eq!(timeouts, 1, "the timeout is counted for the alert");

    // Ingest catches up; the stored request was decided once, and a retry hears that decision.
    shared
        .flow
        .hold
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let v = over_nats(&nc, subject::ATP_RESERVE, body).await;
    assert_eq!((&v["granted"], &v["qty"]), (&json!(true), &json!(2)), "{v}");
    let again = over_nats(
        &nc,
        subject::ATP_RESERVE,
        json!({"sku": "HOT", "qty": 2, "location": "DC1", "idempotency_key": "slow-1"}).to_string(),
    )
    .await;
    assert_eq!(again["decided_at"], v["decided_at"], "{again}");
    let held = shared.view.read(&Sku::from("HOT")).0.unwrap()[0]
        .position
        .reserved;
    assert_eq!(held, 2, "reserved once, not once per attempt");
    pipeline.shutdown(Duration::from_secs(5)).await;
}
