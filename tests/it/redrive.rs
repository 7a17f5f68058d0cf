//! Dead-letter re-drive end to end: a late sale is listed, sent back over HTTP and applied
//! exactly once (a second re-drive is refused, a forged one and the till's own re-send are not
//! applied); a document the ERP refused is sent back with the CLI after the ERP-side fix and
//! accepted once. Every re-drive shows in the store day's reconciliation. The expected money
//! is the sum of the sales the test published.

use super::reconciliation::{DAY, FinanceRig, sale};
use retailflow::domain::*;
use retailflow::testing::*;
use serde_json::{Value, json};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

async fn get(url: &str) -> (u16, Value) {
    let r = reqwest::Client::new().get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post(url: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Waits until `probe` gives something `ok` takes; returns it.
async fn until(what: &str, probe: impl AsyncFn() -> Value, ok: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..300 {
        last = probe().await;
        if ok(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} never came: {last:#}");
}

async fn store_day(base: &str, store: &str) -> Value {
    let (_, v) = get(&format!("{base}/v1/reconciliation/{store}/{DAY}")).await;
    v["days"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_sale_is_redriven_over_http_and_applied_exactly_once() {
    let rig = FinanceRig::start(&[], Duration::from_secs(60)).await;
    let (base, js) = (rig.base.clone(), rig.js.clone());
    let till = "pos/S1/t1";
    let mut net = 0;
    // Sequence 9000 moves the till's window (4096) past 5: 5 arrives late, is dead-lettered.
    for seq in [1, 9000] {
        let (event, n, _, _) = sale("S1", seq);
        net += n;
        publish(&js, &envelope(till, seq, event), true, true).await;
    }
    let (late_event, late_net, _, _) = sale("S1", 5);
    let late = envelope(till, 5, late_event);
    let late_seq = publish(&js, &late, true, true).await;

    let listed = until(
        "the late letter",
        async || {
            get(&format!("{base}/v1/dlq?reason=late&location=S1"))
                .await
                .1
        },
        |v| v["items"].as_array().is_some_and(|a| a.len() == 1),
    )
    .await;
    let letter = &listed["items"][0];
    assert_eq!(letter["stage"], "ingest", "{listed:#}");
    assert_eq!(letter["stream_seq"], late_seq);
    assert_eq!(letter["id"], late.id.as_str());
    let seq = letter["seq"].as_u64().unwrap();
    let (status, shown) = get(&format!("{base}/v1/dlq/{seq}")).await;
    assert_eq!((status, &shown["reason"]), (200, &json!("late")));
    assert_eq!(shown["payload"]["seq"], 5);
    assert_eq!(get(&format!("{base}/v1/dlq/{}", seq + 1000)).await.0, 404);
    assert_eq!(get(&format!("{base}/v1/dlq?stage=a.b")).await.0, 400);
    assert_eq!(get(&format!("{base}/v1/dlq?colour=red")).await.0, 400);
    let (_, none) = get(&format!("{base}/v1/dlq?reason=late&location=S2")).await;
    assert_eq!(none["items"], json!([]));

    let day = until(
        "two sales applied",
        async || store_day(&base, "S1").await,
        |d| d["source"]["documents"] == 2,
    )
    .await;
    assert_eq!(day["source"]["sales"], net);

    let redrive = format!("{base}/v1/dlq/redrive");
    let (status, out) = post(&redrive, json!({ "letters": [seq], "by": "ops@hq" })).await;
    assert_eq!(status, 200, "{out:#}");
    assert_eq!(out["redriven"][0]["subject"], "retail.v1.pos.S1.sale");
    assert_eq!(out["failed"], json!([]));
    net += late_net;
    let day = until(
        "the re-driven sale applied",
        async || store_day(&base, "S1").await,
        |d| d["source"]["documents"] == 3,
    )
    .await;
    assert_eq!(day["source"]["sales"], net);

    // Asked twice: refused, and nothing is sent.
    let (_, again) = post(&redrive, json!({ "letters": [seq], "by": "ops@hq" })).await;
    let error = again["failed"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("re-driven already by ops@hq"), "{again:#}");
    let (status, _) = post(&redrive, json!({ "letters": [seq] })).await;
    assert_eq!(status, 400, "a re-drive says who asks");

    // A second copy of the re-drive under another message id, and the till's own re-send of
    // sequence 5: neither is applied.
    let m = &rig.pipeline.shared.metrics;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Retailflow-Redrive-Of", late_seq.to_string().as_str());
    headers.insert("Nats-Msg-Id", "a-second-copy");
    headers.insert("Content-Type", "application/json");
    let body = serde_json::to_vec(&late).unwrap();
    publish_raw(&js, "retail.v1.pos.S1.sale", headers, body).await;
    let mut resend = late.clone();
    resend.id = EventId::from("pos/S1/t1#5-resent");
    let resent_before = m.duplicates_resent.load(Relaxed);
    publish(&js, &resend, true, true).await;
    let settled = wait_until(Duration::from_secs(20), || async {
        m.redrives_refused.load(Relaxed) == 1 && m.duplicates_resent.load(Relaxed) > resent_before
    })
    .await;
    assert!(
        settled,
        "the copy is refused and the re-send counted as a duplicate"
    );
    assert_eq!(m.redrives_applied.load(Relaxed), 1);
    let day = store_day(&base, "S1").await;
    assert_eq!(day["source"]["documents"], 3, "{day:#}");
    assert_eq!(day["source"]["sales"], net);
    assert_eq!(day["redrive_count"], 1, "{day:#}");
    assert_eq!(day["redrives"][0]["by"], "ops@hq");
    assert_eq!(day["redrives"][0]["letter"], seq);
    let page = reqwest::get(format!("{base}/ui/day/S1/{DAY}"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("id=\"redrives\"") && page.contains("ops@hq"),
        "{page}"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_document_is_redriven_with_the_cli_after_the_erp_fix() {
    let rig = FinanceRig::start(&["S9"], Duration::from_secs(60)).await;
    let (base, js) = (rig.base.clone(), rig.js.clone());
    let mut net = 0;
    for seq in 1..=3 {
        let (event, n, _, _) = sale("S9", seq);
        net += n;
        publish(&js, &envelope("pos/S9/t1", seq, event), true, true).await;
    }
    let rejected = until(
        "the ERP's refusals",
        async || store_day(&base, "S9").await,
        |d| d["erp"][0]["rejected"]["sales"] == net,
    )
    .await;
    assert_eq!(rejected["erp"][0]["accepted"]["sales"], 0, "{rejected:#}");
    // Every document of the sales is formed and refused by now; let the last letters land.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let listed = until(
        "the refused documents' letters",
        async || get(&format!("{base}/v1/dlq?stage=erp")).await.1,
        |v| v["items"].as_array().is_some_and(|a| !a.is_empty()),
    )
    .await;
    let letters: Vec<u64> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["location"] == "S9")
    );
    // The day's own documents (sales, tenders, tax); an inventory document has no day.
    let of_the_day = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["payload"]["business_day"] == DAY)
        .count();
    assert!(of_the_day >= 1 && of_the_day <= letters.len(), "{listed:#}");

    // The ERP-side fix, then the re-drive from a terminal.
    let fix = format!("{}/api/v1/admin/reject-locations", rig.sim.base_url());
    assert_eq!(post(&fix, json!({ "locations": [] })).await.0, 200);
    let cli = |args: &[String]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_retailflow"))
            .arg("dlq")
            .args(args)
            .env("NATS_URL", rig._server.url())
            .output()
            .unwrap()
    };
    let list = cli(&[
        "list".into(),
        "--stage".into(),
        "erp".into(),
        "--json".into(),
    ]);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let page: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), letters.len());
    let mut args = vec!["redrive".to_string()];
    args.extend(letters.iter().map(u64::to_string));
    args.extend(["--by".into(), "finance-ci".into()]);
    let out = cli(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.matches("sent to retail.v1.postings.").count(),
        letters.len()
    );

    let day = until(
        "the re-driven documents accepted",
        async || store_day(&base, "S9").await,
        |d| d["erp"][0]["accepted"]["sales"] == net,
    )
    .await;
    assert_eq!(day["erp"][0]["rejected"]["sales"], 0, "{day:#}");
    assert_eq!(day["erp"][0]["rejected"]["documents"], 0);
    assert_eq!(day["redrive_count"], of_the_day, "{day:#}");
    assert!(
        day["redrives"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["by"] == "finance-ci")
    );
    // Every letter sent back was booked once, and nothing else was (S9 is the only store).
    let stats = until(
        "every re-driven document booked",
        async || get(&format!("{}/api/v1/stats", rig.sim.base_url())).await.1,
        |s| s["accepted"] == letters.len(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, after) = get(&format!("{}/api/v1/stats", rig.sim.base_url())).await;
    assert_eq!(after["accepted"], stats["accepted"], "{after:#}");

    // Asked again without --again: refused, nothing sent.
    let out = cli(&[
        "redrive".into(),
        letters[0].to_string(),
        "--by".into(),
        "x".into(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("re-driven already"));
    rig.stop().await;
}
