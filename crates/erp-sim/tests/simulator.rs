//! The ERP simulator over a real socket: what a client of `POST /api/v1/postings` sees.
//!
//! Documents are written here as plain JSON and expected totals are summed here from that
//! JSON, so the simulator's own folding is checked, not reused.

use erp_sim::{ErpSim, ErpSimConfig, FaultMode, Stats, Totals};
use futures::future::join_all;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

async fn start(config: ErpSimConfig) -> (ErpSim, Client) {
    let sim = ErpSim::start(ErpSimConfig {
        listen: "127.0.0.1:0".into(),
        ..config
    })
    .await
    .expect("simulator starts on a free port");
    (sim, Client::new())
}

/// A sales summary; each line is `(sku, qty_sold, sales_amount)`.
fn sales_doc(id: &str, location: &str, lines: &[(&str, i64, i64)]) -> Value {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(sku, qty, amount)| {
            json!({
                "sku": sku, "tax_code": "VAT20", "qty_sold": qty, "qty_returned": 0,
                "sales_amount": amount, "returns_amount": 0, "discount_amount": 0,
                "tax_amount": amount / 5,
            })
        })
        .collect();
    json!({
        "id": id, "endpoint": "erp-main", "location": location,
        "business_day": "2026-11-27", "currency": "EUR", "barrier_seq": 100, "part": 0,
        "lineage": {"events": 3, "first_seq": 1, "last_seq": 3},
        "kind": "sales_summary", "lines": lines,
    })
}

/// Sales amount per (location, sku), summed straight from the documents' JSON.
fn expected_sales(docs: &[&Value]) -> BTreeMap<(String, String), i64> {
    let mut sums = BTreeMap::new();
    for doc in docs {
        let location = doc["location"].as_str().unwrap().to_string();
        for line in doc["lines"].as_array().unwrap() {
            let sku = line["sku"].as_str().unwrap().to_string();
            *sums.entry((location.clone(), sku)).or_insert(0) +=
                line["sales_amount"].as_i64().unwrap();
        }
    }
    sums
}

fn booked_sales(totals: &Totals) -> BTreeMap<(String, String), i64> {
    totals
        .sales
        .iter()
        .map(|r| ((r.location.to_string(), r.sku.to_string()), r.sales_amount))
        .collect()
}

async fn post(client: &Client, sim: &ErpSim, key: Option<&str>, body: &str) -> reqwest::Response {
    let mut req = client
        .post(sim.postings_url())
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    req.send().await.expect("simulator answers")
}

async fn post_doc(client: &Client, sim: &ErpSim, key: &str, doc: &Value) -> reqwest::Response {
    post(client, sim, Some(key), &doc.to_string()).await
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn error_of(resp: reqwest::Response) -> String {
    let body: Value = resp.json().await.expect("error bodies are JSON");
    body["error"].as_str().expect("an error field").to_string()
}

#[tokio::test]
async fn an_accepted_document_is_replayed_under_its_key_and_booked_once() {
    let (sim, client) = start(ErpSimConfig::default()).await;
    let doc = sales_doc(
        "erp-main/sales/S1/1",
        "S1",
        &[("SKU-1", 2, 1998), ("SKU-2", 1, 450)],
    );

    let first = post_doc(&client, &sim, "key-1", &doc).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(header(&first, "idempotent-replayed"), None);
    let first_body = first.text().await.unwrap();
    let parsed: Value = serde_json::from_str(&first_body).unwrap();
    assert_eq!(parsed["status"], "accepted");
    assert_eq!(parsed["document"], "erp-main/sales/S1/1");
    assert!(parsed["erp_ref"].as_str().unwrap().starts_with("ERP-"));

    let booked: Totals = client
        .get(format!("{}/api/v1/totals", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(booked.documents, 1);
    assert_eq!(booked_sales(&booked), expected_sales(&[&doc]));

    let again = post_doc(&client, &sim, "key-1", &doc).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(header(&again, "idempotent-replayed"), Some("true"));
    assert_eq!(again.text().await.unwrap(), first_body);
    assert_eq!(sim.totals(), booked, "a replay books nothing");

    // The key decides, not the body: even an unreadable body under it gets the replay.
    let garbled = post(&client, &sim, Some("key-1"), "{not json").await;
    assert_eq!(garbled.status(), StatusCode::CREATED);
    assert_eq!(header(&garbled, "idempotent-replayed"), Some("true"));
    assert_eq!(garbled.text().await.unwrap(), first_body);

    let stats: Stats = client
        .get(format!("{}/api/v1/stats", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((stats.requests, stats.accepted, stats.replays), (3, 1, 2));
    assert_eq!(stats.duplicate_documents, 0);
    assert_eq!(stats, sim.stats(), "HTTP and the handle report the same");

    let health = client
        .get(format!("{}/healthz", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.text().await.unwrap(), "ok");
    sim.shutdown().await;
}

#[tokio::test]
async fn the_same_document_under_a_new_key_is_booked_twice_and_counted() {
    let (sim, client) = start(ErpSimConfig::default()).await;
    let doc = sales_doc("erp-main/sales/S1/7", "S1", &[("SKU-1", 1, 700)]);
    assert_eq!(
        post_doc(&client, &sim, "a", &doc).await.status(),
        StatusCode::CREATED
    );
    let second = post_doc(&client, &sim, "b", &doc).await;
    assert_eq!(second.status(), StatusCode::CREATED);
    assert_eq!(header(&second, "idempotent-replayed"), None);

    assert_eq!(sim.stats().duplicate_documents, 1);
    let totals = sim.totals();
    assert_eq!(totals.documents, 2);
    assert_eq!(booked_sales(&totals), expected_sales(&[&doc, &doc]));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_request_without_idempotency_key_is_refused() {
    let (sim, client) = start(ErpSimConfig::default()).await;
    let doc = sales_doc("d", "S1", &[("SKU-1", 1, 100)]);
    let resp = post(&client, &sim, None, &doc.to_string()).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_of(resp).await, "Idempotency-Key header is required");
    assert_eq!(sim.totals().documents, 0);
    assert_eq!(sim.stats().rejected, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn malformed_documents_get_400_with_the_parser_message() {
    let (sim, client) = start(ErpSimConfig::default()).await;

    let truncated = post(&client, &sim, Some("k1"), r#"{"id": "d1", "loc"#).await;
    assert_eq!(truncated.status(), StatusCode::BAD_REQUEST);
    let message = error_of(truncated).await;
    assert!(message.contains("EOF"), "{message}");

    let mut doc = sales_doc("d2", "S1", &[("SKU-1", 1, 100)]);
    doc.as_object_mut().unwrap().remove("barrier_seq");
    let incomplete = post_doc(&client, &sim, "k2", &doc).await;
    assert_eq!(incomplete.status(), StatusCode::BAD_REQUEST);
    let message = error_of(incomplete).await;
    assert!(message.contains("barrier_seq"), "{message}");

    // Not remembered: the corrected body goes through under the same key.
    let fixed = sales_doc("d2", "S1", &[("SKU-1", 1, 100)]);
    assert_eq!(
        post_doc(&client, &sim, "k2", &fixed).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(sim.stats().rejected, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_blocked_location_is_refused_until_the_master_data_is_fixed() {
    let (sim, client) = start(ErpSimConfig {
        reject_locations: vec!["S9".into()],
        ..ErpSimConfig::default()
    })
    .await;
    let blocked = sales_doc("d9", "S9", &[("SKU-1", 1, 100)]);
    let open = sales_doc("d1", "S1", &[("SKU-1", 3, 300)]);

    let refused = post_doc(&client, &sim, "k9", &blocked).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let first_body = refused.text().await.unwrap();
    let error: Value = serde_json::from_str(&first_body).unwrap();
    assert_eq!(
        error["error"],
        "location S9 is blocked for posting (simulated master-data error)"
    );

    let again = post_doc(&client, &sim, "k9", &blocked).await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        header(&again, "idempotent-replayed"),
        None,
        "not remembered"
    );
    assert_eq!(again.text().await.unwrap(), first_body);

    assert_eq!(
        post_doc(&client, &sim, "k1", &open).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(booked_sales(&sim.totals()), expected_sales(&[&open]));
    // The ERP-side fix: the same document under the same key is booked now, once.
    let fixed = client
        .post(format!("{}/api/v1/admin/reject-locations", sim.base_url()))
        .body(r#"{"locations":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(fixed.status(), StatusCode::OK);
    assert_eq!(
        post_doc(&client, &sim, "k9", &blocked).await.status(),
        StatusCode::CREATED
    );
    let replay = post_doc(&client, &sim, "k9", &blocked).await;
    assert_eq!(header(&replay, "idempotent-replayed"), Some("true"));
    assert_eq!(
        booked_sales(&sim.totals()),
        expected_sales(&[&open, &blocked])
    );
    let stats = sim.stats();
    assert_eq!((stats.rejected, stats.replays, stats.accepted), (2, 1, 2));
    sim.shutdown().await;
}

#[tokio::test]
async fn the_sixth_request_in_the_window_gets_429_with_retry_after() {
    let (sim, client) = start(ErpSimConfig {
        limit_requests: 5,
        limit_window: Duration::from_secs(60),
        ..ErpSimConfig::default()
    })
    .await;
    for i in 0..5 {
        let doc = sales_doc(&format!("d{i}"), "S1", &[("SKU-1", 1, 100)]);
        let resp = post_doc(&client, &sim, &format!("k{i}"), &doc).await;
        assert_eq!(resp.status(), StatusCode::CREATED, "request {i}");
    }
    let doc = sales_doc("d5", "S1", &[("SKU-1", 1, 100)]);
    let sixth = post_doc(&client, &sim, "k5", &doc).await;
    assert_eq!(sixth.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = header(&sixth, "retry-after")
        .expect("a Retry-After header")
        .parse()
        .expect("whole seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");

    // The window comes before replay: an already answered key is throttled as well.
    let replay = post_doc(&client, &sim, "k0", &sales_doc("d0", "S1", &[])).await;
    assert_eq!(replay.status(), StatusCode::TOO_MANY_REQUESTS);

    let stats = sim.stats();
    assert_eq!((stats.accepted, stats.throttled), (5, 2));
    assert_eq!(stats.max_in_window, 5);
    assert_eq!(sim.totals().documents, 5);
    sim.shutdown().await;
}

#[tokio::test]
async fn requests_beyond_max_concurrent_get_429() {
    let (sim, client) = start(ErpSimConfig {
        max_concurrent: 2,
        latency_min: Duration::from_millis(300),
        latency_max: Duration::from_millis(300),
        ..ErpSimConfig::default()
    })
    .await;
    let docs: Vec<Value> = (0..6)
        .map(|i| sales_doc(&format!("d{i}"), "S1", &[("SKU-1", 1, 100)]))
        .collect();
    let answers = join_all(docs.iter().enumerate().map(|(i, doc)| {
        let client = client.clone();
        let sim = &sim;
        async move {
            let resp = post_doc(&client, sim, &format!("k{i}"), doc).await;
            (
                resp.status(),
                header(&resp, "retry-after").map(String::from),
            )
        }
    }))
    .await;

    let created = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    let throttled: Vec<&Option<String>> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .map(|(_, retry)| retry)
        .collect();
    assert!(created >= 2, "{answers:?}");
    assert!(!throttled.is_empty(), "{answers:?}");
    assert_eq!(created + throttled.len(), 6, "{answers:?}");
    assert!(
        throttled.iter().all(|r| r.as_deref() == Some("1")),
        "{answers:?}"
    );
    let stats = sim.stats();
    assert_eq!(stats.max_in_flight, 2);
    assert_eq!(stats.throttled as usize, throttled.len());
    assert_eq!(sim.totals().documents as usize, created);
    sim.shutdown().await;
}

#[tokio::test]
async fn an_outage_answers_503_until_set_back_to_normal() {
    let (sim, client) = start(ErpSimConfig::default()).await;
    let admin = format!("{}/api/v1/admin/fault", sim.base_url());
    let doc = sales_doc("d1", "S1", &[("SKU-1", 1, 100)]);

    let set = client
        .post(&admin)
        .json(&json!({"mode": "outage"}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), StatusCode::OK);
    let status: Value = set.json().await.unwrap();
    assert_eq!(status["mode"], "outage");
    assert_eq!(
        post_doc(&client, &sim, "k1", &doc).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(sim.totals().documents, 0);

    let bad = client
        .post(&admin)
        .json(&json!({"mode": "sideways"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        sim.fault().mode,
        FaultMode::Outage,
        "a bad request changes nothing"
    );

    let back = client
        .post(&admin)
        .json(&json!({"mode": "normal"}))
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), StatusCode::OK);
    // The 503 was not remembered, so the same key now goes through.
    assert_eq!(
        post_doc(&client, &sim, "k1", &doc).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(booked_sales(&sim.totals()), expected_sales(&[&doc]));
    let stats = sim.stats();
    assert_eq!((stats.injected_errors, stats.accepted), (1, 1));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_timed_429_storm_announces_how_long_it_lasts() {
    let (sim, client) = start(ErpSimConfig::default()).await;
    sim.set_fault(FaultMode::Throttle, Some(Duration::from_secs(30)));
    let doc = sales_doc("d1", "S1", &[("SKU-1", 1, 100)]);
    let resp = post_doc(&client, &sim, "k1", &doc).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = header(&resp, "retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "Retry-After {retry}");
    assert_eq!(sim.fault().mode, FaultMode::Throttle);
    assert_eq!(sim.stats().throttled, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_document_written_with_lines_before_kind_is_booked_like_any_other() {
    let (sim, client) = start(ErpSimConfig::default()).await;
    let doc = sales_doc("erp-main/sales/S3/1", "S3", &[("SKU-9", 4, 2000)]);
    // Hand-written text, `lines` first: the order a person or another tool may choose.
    let obj = doc.as_object().unwrap();
    let mut parts = vec![format!("\"lines\":{}", obj["lines"])];
    parts.extend(
        obj.iter()
            .filter(|(k, _)| k.as_str() != "lines")
            .map(|(k, v)| format!("{}:{v}", Value::from(k.as_str()))),
    );
    let text = format!("{{{}}}", parts.join(","));
    assert!(text.starts_with("{\"lines\""));
    let resp = post(&client, &sim, Some("key-lines-first"), &text).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(booked_sales(&sim.totals()), expected_sales(&[&doc]));
    sim.shutdown().await;
}

#[tokio::test]
async fn an_expired_token_answers_401_for_as_many_requests_as_planned() {
    let (sim, client) = start(ErpSimConfig::default()).await;
    let admin = sim.postings_url().replace("/postings", "/admin/fault");
    let set = client
        .post(&admin)
        .json(
            &json!({"mode": "unauthorized", "requests": 2, "retry_after": "99999999999999999999"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), StatusCode::OK);
    let doc = sales_doc("d1", "S1", &[("SKU-1", 1, 100)]);
    for _ in 0..2 {
        let resp = post_doc(&client, &sim, "k1", &doc).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(header(&resp, "retry-after"), Some("99999999999999999999"));
    }
    assert_eq!(
        post_doc(&client, &sim, "k1", &doc).await.status(),
        StatusCode::CREATED,
        "the 401 was not remembered and the plan ran out"
    );
    let stats = sim.stats();
    assert_eq!((stats.unauthorized, stats.accepted), (2, 1));
    assert_eq!(sim.fault().mode, FaultMode::Normal);
    sim.shutdown().await;
}
