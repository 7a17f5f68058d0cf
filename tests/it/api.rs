//! The availability API over HTTP and NATS: answers, unknown SKUs, and a clear 4xx for every
//! kind of bad request.

use retailflow::domain::*;
use retailflow::supervise::pipeline::Pipeline;
use retailflow::testing::*;
use serde_json::{Value, json};
use std::time::Duration;

async fn started() -> (retailflow::bus::server::NatsServer, Pipeline, String) {
    let server = nats();
    let mut cfg = config(&server.url());
    cfg.api.max_wait = Duration::from_millis(300);
    let pipeline = Pipeline::start(cfg).await.expect("pipeline starts");
    let js = async_nats::jetstream::new(client(&server.url()).await);
    let events = [
        Event::LocationUpsert(LocationUpsert {
            location: "DC1".into(),
            kind: LocationKind::Dc,
            channels: vec!["web".into()],
            priority: 1,
        }),
        Event::LocationUpsert(LocationUpsert {
            location: "DC2".into(),
            kind: LocationKind::Dc,
            channels: vec!["web".into()],
            priority: 2,
        }),
        Event::Receipt(Receipt {
            location: "DC1".into(),
            lines: vec![QtyLine {
                sku: "A".into(),
                qty: 10,
            }],
            reference: None,
        }),
        Event::Receipt(Receipt {
            location: "DC2".into(),
            lines: vec![QtyLine {
                sku: "A".into(),
                qty: 3,
            }],
            reference: None,
        }),
        Event::SafetyStockSet(SafetyStockSet {
            location: "DC2".into(),
            sku: "A".into(),
            qty: 5,
        }),
    ];
    for (i, e) in events.into_iter().enumerate() {
        publish(&js, &envelope("mdm/test", i as u64 + 1, e), false, true).await;
    }
    let end = last_seq(&js, "RETAIL_EVENTS").await;
    assert!(
        pipeline
            .shared
            .view
            .wait_all(end, Duration::from_secs(10))
            .await
    );
    let base = format!("http://{}", pipeline.http_addr().unwrap());
    (server, pipeline, base)
}

async fn get(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post(url: &str, body: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_answers_and_refuses_clearly() {
    let (server, pipeline, base) = started().await;

    let (s, body) = get(&format!("{base}/v1/availability/A?channel=web")).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["known"], true);
    // DC1: 10 available; DC2: 3 on hand less 5 safety is -2, advertised as zero.
    assert_eq!(body["channel"]["available"], 10);
    let dc2 = body["locations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["location"] == "DC2")
        .unwrap();
    assert_eq!(dc2["available"], -2);
    assert!(body["as_of"].as_u64().unwrap() >= 5);

    let (s, body) = get(&format!("{base}/v1/availability/NOPE?location=DC1")).await;
    assert_eq!(s, 200);
    assert_eq!(body["known"], false);
    assert_eq!(body["locations"][0]["on_hand"], 0);
    assert_eq!(body["locations"][0]["known"], false);

    for (url, needle) in [
        (format!("{base}/v1/availability/A%2EB"), "contains '.'"),
        (
            format!("{base}/v1/availability/A?colour=red"),
            "unknown parameter",
        ),
        (
            format!("{base}/v1/availability/A?min_as_of=soon"),
            "min_as_of",
        ),
        (
            format!("{base}/v1/availability/A?channel=teleport"),
            "unknown channel",
        ),
    ] {
        let (s, body) = get(&url).await;
        assert_eq!(s, 400, "{url}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(needle),
            "{url}: {body}"
        );
    }

    let (s, body) = post(
        &format!("{base}/v1/availability/query"),
        r#"{"skus":["A","NOPE"],"locations":["DC1"]}"#,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["results"][0]["locations"][0]["available"], 10);
    assert_eq!(body["results"][1]["known"], false);

    let many: Vec<String> = (0..101).map(|i| format!("S{i}")).collect();
    for (payload, needle) in [
        ("{\"skus\":[\"A\"".to_string(), "request body"),
        (
            r#"{"skus":["A"],"colour":"red"}"#.to_string(),
            "unknown field",
        ),
        (r#"{"skus":[]}"#.to_string(), "at least one"),
        (json!({ "skus": many }).to_string(), "at most 100"),
    ] {
        let (s, body) = post(&format!("{base}/v1/availability/query"), &payload).await;
        assert_eq!(s, 400, "{payload}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(needle),
            "{payload}: {body}"
        );
    }

    // Read-your-writes: a sequence far ahead times out with 504 and the current as_of.
    let (s, body) = get(&format!("{base}/v1/availability/A?min_as_of=999999")).await;
    assert_eq!(s, 504, "{body}");
    assert!(body["as_of"].as_u64().is_some());

    let (s, _) = get(&format!("{base}/nowhere")).await;
    assert_eq!(s, 404);
    let (s, body) = get(&format!("{base}/healthz")).await;
    assert_eq!((s, body["status"].as_str()), (200, Some("ok")));
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("retailflow_events_applied_total"));
    assert!(metrics.contains("retailflow_consumer_lag"));

    // The same over NATS request-reply.
    let nc = client(&server.url()).await;
    let reply = nc
        .request(
            "retail.v1.atp.query",
            r#"{"skus":["A"],"channel":"web"}"#.into(),
        )
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(body["results"][0]["channel"]["available"], 10);
    let reply = nc
        .request("retail.v1.atp.query", "{nope".into())
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("request"),
        "{body}"
    );
    pipeline.shutdown(Duration::from_secs(5)).await;
}

/// Threads of this process whose name starts with `prefix`, with their scheduling policy.
fn threads_named(prefix: &str) -> Vec<(i32, i32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let path = entry.expect("task entry").path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !name.trim_end().starts_with(prefix) {
            continue;
        }
        let tid: i32 = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse().ok())
            .expect("numeric task id");
        // SAFETY: reads another thread's scheduling policy; a thread that exited answers -1.
        let policy = unsafe { libc::sched_getscheduler(tid) };
        found.push((tid, policy));
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_from_its_own_real_time_threads_and_ingest_stays_normal() {
    let (_server, pipeline, base) = started().await;
    let (status, _) = get(&format!("{base}/v1/availability/SKU-1")).await;
    assert_eq!(status, 200);
    // Whether this process may use a real-time policy at all (root, CAP_SYS_NICE, rlimit).
    let allowed = std::thread::spawn(|| retailflow::supervise::threads::realtime(1).is_ok())
        .join()
        .unwrap();
    // Other tests in this binary run pipelines of their own at the same time.
    let api: Vec<_> = threads_named("retailflow-api")
        .into_iter()
        .filter(|&(_, p)| p >= 0)
        .collect();
    assert!(!api.is_empty(), "no API threads");
    let want = if allowed {
        libc::SCHED_RR
    } else {
        libc::SCHED_OTHER
    };
    assert!(api.iter().all(|&(_, p)| p == want), "{api:?}");
    let data: Vec<_> = threads_named("retailflow-data")
        .into_iter()
        .filter(|&(_, p)| p >= 0)
        .collect();
    assert!(!data.is_empty(), "no data threads");
    assert!(
        data.iter().all(|&(_, p)| p == libc::SCHED_OTHER),
        "{data:?}"
    );
    pipeline.shutdown(Duration::from_secs(10)).await;
}
