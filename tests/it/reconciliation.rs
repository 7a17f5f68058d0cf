//! Business-day close and reconciliation end to end, with the ERP simulator on a socket: one
//! store whose Z report matches, one with a lost till transaction and a cash variance, one the
//! ERP rejects, and a late sale after a close. The expected totals and exceptions are worked
//! out here from the events, by plain sums.

use erp_sim::{ErpSim, ErpSimConfig};
use retailflow::domain::*;
use retailflow::supervise::pipeline::Pipeline;
use retailflow::testing::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

pub const DAY: &str = "2026-11-27";

/// What the test knows of a store's day: the sum of the lines' net, tax per code, money per
/// tender.
#[derive(Default)]
struct Oracle {
    sales: i64,
    taxes: BTreeMap<String, i64>,
    tenders: BTreeMap<String, i64>,
}

pub fn sale(store: &str, n: u64) -> (Event, i64, i64, &'static str) {
    let qty = 1 + (n % 3) as i64;
    let price = 250 + 10 * n as i64;
    let kind = if n % 2 == 0 { "card" } else { "cash" };
    let tax = qty * price / 5;
    let event = Event::Sale(Sale {
        location: store.into(),
        business_day: BusinessDay::parse(DAY).unwrap(),
        currency: Currency::parse("EUR").unwrap(),
        lines: vec![taxed_line("SKU-1", qty, price)],
        tenders: vec![Tender {
            kind: kind.into(),
            amount: qty * price + tax,
        }],
    });
    (event, qty * price, tax, kind)
}

/// Publishes sale `n` of `till` (its sequence) and books it in the oracle.
async fn sell(
    js: &async_nats::jetstream::Context,
    oracle: &mut Oracle,
    store: &str,
    till: &str,
    seq: u64,
) {
    let event = book(oracle, store, seq);
    publish(js, &envelope(till, seq, event), false, true).await;
}

/// Books sale `seq` of a till of `store` in the oracle and returns its event.
fn book(oracle: &mut Oracle, store: &str, seq: u64) -> Event {
    let (event, net, tax, kind) = sale(store, seq);
    oracle.sales += net;
    *oracle.taxes.entry("VAT20".into()).or_default() += tax;
    *oracle.tenders.entry(kind.into()).or_default() += net + tax;
    event
}

fn day_closed(store: &str, tills: &[(&str, u64, u64)], o: &Oracle, cash_extra: i64) -> Event {
    Event::DayClosed(DayClosed {
        location: store.into(),
        business_day: BusinessDay::parse(DAY).unwrap(),
        currency: Currency::parse("EUR").unwrap(),
        tills: tills
            .iter()
            .map(|(t, last, n)| TillClose {
                till: SourceId::from(*t),
                last_seq: *last,
                transactions: *n,
            })
            .collect(),
        tenders: o
            .tenders
            .iter()
            .map(|(k, v)| Tender {
                kind: k.as_str().into(),
                amount: v + if k == "cash" { cash_extra } else { 0 },
            })
            .collect(),
        taxes: o
            .taxes
            .iter()
            .map(|(k, v)| TaxLine {
                code: k.as_str().into(),
                amount: *v,
            })
            .collect(),
    })
}

async fn get(url: &str, csv: bool) -> (u16, String) {
    let mut req = reqwest::Client::new().get(url);
    if csv {
        req = req.header("Accept", "text/csv");
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn store_day(base: &str, store: &str) -> Value {
    let (status, body) = get(&format!("{base}/v1/reconciliation/{store}/{DAY}"), false).await;
    if status == 404 {
        return Value::Null; // nothing applied for the store yet
    }
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["days"][0].clone()
}

/// Waits until the store day's `field` reads `want`; returns the day.
async fn until(base: &str, store: &str, field: &str, want: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..300 {
        last = store_day(base, store).await;
        if last[field] == want {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{store}: {field} never became {want}: {last:#}");
}

/// A pipeline with the ERP simulator (refusing the documents of `reject`) and a closing grace,
/// as the finance tests run it.
pub struct FinanceRig {
    pub _server: retailflow::bus::server::NatsServer,
    pub sim: ErpSim,
    pub pipeline: Pipeline,
    /// `http://<addr>` of the pipeline's API.
    pub base: String,
    pub js: async_nats::jetstream::Context,
}

impl FinanceRig {
    pub async fn start(reject: &[&str], close_grace: Duration) -> FinanceRig {
        let server = nats();
        let sim = ErpSim::start(ErpSimConfig {
            listen: "127.0.0.1:0".into(),
            reject_locations: reject.iter().map(|s| s.to_string()).collect(),
            ..ErpSimConfig::default()
        })
        .await
        .unwrap();
        let mut cfg = config(&server.url());
        cfg.erp = vec![erp_endpoint(sim.postings_url())];
        cfg.finance.close_grace = close_grace;
        let pipeline = Pipeline::start(cfg).await.expect("pipeline starts");
        let base = format!("http://{}", pipeline.http_addr().unwrap());
        let js = async_nats::jetstream::new(client(&server.url()).await);
        FinanceRig {
            _server: server,
            sim,
            pipeline,
            base,
            js,
        }
    }

    pub async fn stop(self) {
        self.pipeline.shutdown(Duration::from_secs(10)).await;
        self.sim.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_day_is_reconciled_with_its_exceptions_and_corrections() {
    let rig = FinanceRig::start(&["S9"], Duration::from_secs(2)).await;
    let (base, js) = (rig.base.clone(), rig.js.clone());

    // S1: two tills, every transaction arrives, the Z report matches.
    let mut s1 = Oracle::default();
    for seq in 1..=5 {
        sell(&js, &mut s1, "S1", "pos/S1/t1", seq).await;
    }
    for seq in 1..=2 {
        sell(&js, &mut s1, "S1", "pos/S1/t2", seq).await;
    }
    // S2: transaction 3 of its till never arrives; the till counted 100 more cash.
    let mut s2 = Oracle::default();
    for seq in [1, 2, 4, 5] {
        sell(&js, &mut s2, "S2", "pos/S2/t1", seq).await;
    }
    // S3: its till's third sale is held up until after the close.
    let mut s3 = Oracle::default();
    for seq in 1..=2 {
        sell(&js, &mut s3, "S3", "pos/S3/t1", seq).await;
    }
    let held_up = book(&mut s3, "S3", 3);
    // S9: the ERP refuses its documents.
    let mut s9 = Oracle::default();
    sell(&js, &mut s9, "S9", "pos/S9/t1", 1).await;

    let last_of_t2 = book(&mut s1, "S1", 3);
    let closes = [
        (
            "S1",
            day_closed("S1", &[("pos/S1/t1", 5, 5), ("pos/S1/t2", 3, 3)], &s1, 0),
        ),
        ("S2", day_closed("S2", &[("pos/S2/t1", 5, 5)], &s2, 100)),
        ("S9", day_closed("S9", &[("pos/S9/t1", 1, 1)], &s9, 0)),
        ("S3", day_closed("S3", &[("pos/S3/t1", 3, 3)], &s3, 0)),
    ];
    for (i, (store, close)) in closes.into_iter().enumerate() {
        let env = envelope(&format!("pos/{store}/bo"), 1 + i as u64, close);
        publish(&js, &env, true, true).await;
    }
    // Till 2's last sale arrives after the Z report, within the grace: it is the day's own
    // and goes into the final documents.
    publish(&js, &envelope("pos/S1/t2", 3, last_of_t2), false, true).await;

    // S1 closes, every document is accepted, nothing is wrong.
    let d1 = until(&base, "S1", "state", "accepted").await;
    assert_eq!(d1["status"], "balanced", "{d1:#}");
    assert_eq!(d1["exception_count"], 0);
    let erp = &d1["erp"][0];
    assert_eq!(erp["accepted"]["sales"], s1.sales, "{d1:#}");
    assert_eq!(erp["accepted"]["tenders"]["cash"], s1.tenders["cash"]);
    assert_eq!(erp["accepted"]["taxes"]["VAT20"], s1.taxes["VAT20"]);
    assert_eq!(d1["declared"]["sales"], s1.sales);
    assert_eq!(d1["source"]["documents"], 8, "8 events applied");
    assert!(
        d1["documents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["final"] == true),
        "the day's last documents are final: {d1:#}"
    );

    // S2: the missing transaction and the cash variance, nothing else.
    let d2 = until(&base, "S2", "state", "accepted").await;
    assert_eq!(d2["status"], "missing_transactions");
    let exceptions = d2["exceptions"].as_array().unwrap();
    assert_eq!(exceptions.len(), 2, "{d2:#}");
    assert_eq!(exceptions[0]["kind"], "missing_transactions");
    assert_eq!(exceptions[0]["till"], "pos/S2/t1");
    assert_eq!(exceptions[0]["ranges"], serde_json::json!([[3, 3]]));
    assert_eq!(exceptions[1]["kind"], "tender_variance");
    assert_eq!(exceptions[1]["tender"], "cash");
    assert_eq!(exceptions[1]["difference"], 100);

    // S9: rejected by the ERP, with its reason.
    let d9 = until(&base, "S9", "status", "rejected").await;
    let rejected = &d9["erp"][0]["rejected"];
    assert_eq!(rejected["sales"], s9.sales, "{d9:#}");
    let docs = d9["documents"].as_array().unwrap();
    assert!(
        docs.iter().any(|d| d["status"] == "rejected"
            && d["message"].as_str().is_some_and(|m| m.contains("400"))),
        "{d9:#}"
    );

    // Filters and CSV.
    let (_, body) = get(
        &format!("{base}/v1/reconciliation?business_day={DAY}&status=missing_transactions"),
        false,
    )
    .await;
    let listed: Value = serde_json::from_str(&body).unwrap();
    let stores: Vec<&str> = listed["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["store"].as_str().unwrap())
        .collect();
    assert_eq!(stores, ["S2", "S3"]);
    let (status, csv) = get(
        &format!("{base}/v1/reconciliation?business_day={DAY}"),
        true,
    )
    .await;
    assert_eq!(status, 200);
    let rows: Vec<&str> = csv.lines().collect();
    assert!(rows[0].starts_with("business_day,store,currency,state,status"));
    assert_eq!(rows.len(), 5, "a header and four store days: {csv}");
    assert!(rows[2].starts_with(&format!("{DAY},S2,EUR,accepted,missing_transactions,2,")));
    let (status, body) = get(&format!("{base}/v1/reconciliation?status=odd"), false).await;
    assert_eq!(status, 400, "{body}");

    // Lineage: the events behind S1's sales document, read back from the stream.
    let sales_doc = d1["documents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "sales_summary")
        .expect("a sales document")
        .clone();
    let id = sales_doc["document"].as_str().unwrap().replace('/', "%2F");
    let (status, body) = get(&format!("{base}/v1/documents/{id}/lineage?limit=3"), false).await;
    assert_eq!(status, 200, "{body}");
    let mut page: Value = serde_json::from_str(&body).unwrap();
    let mut items = Vec::new();
    loop {
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        let Some(after) = page["next_after"].as_u64() else {
            break;
        };
        let (_, body) = get(
            &format!("{base}/v1/documents/{id}/lineage?limit=3&after={after}"),
            false,
        )
        .await;
        page = serde_json::from_str(&body).unwrap();
    }
    assert_eq!(
        items.len() as u64,
        sales_doc["lineage"]["events"].as_u64().unwrap()
    );
    let net: i64 = items.iter().map(|e| e["net"].as_i64().unwrap()).sum();
    assert_eq!(net, sales_doc["money"]["sales"].as_i64().unwrap());
    assert!(
        items
            .iter()
            .all(|e| e["source"].as_str().unwrap().starts_with("pos/S1/"))
    );

    // S3 closes with its third sale missing; it arrives late, fills the gap and is posted as
    // a correction naming the close: the books then equal the Z report.
    let d3 = until(&base, "S3", "state", "accepted").await;
    assert_eq!(d3["status"], "missing_transactions", "{d3:#}");
    let closed_at = d3["closed_at"].as_u64().unwrap();
    publish(&js, &envelope("pos/S3/t1", 3, held_up), false, true).await;
    let mut late = until(&base, "S3", "status", "late_correction").await;
    for _ in 0..100 {
        if late["state"] == "accepted" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        late = store_day(&base, "S3").await;
    }
    assert_eq!(late["late_events"], 1);
    let exceptions = late["exceptions"].as_array().unwrap();
    assert_eq!(
        exceptions.len(),
        1,
        "the gap is filled, no variance: {late:#}"
    );
    assert_eq!(exceptions[0]["kind"], "late_correction");
    assert_eq!(late["erp"][0]["accepted"]["sales"], s3.sales, "{late:#}");
    assert_eq!(late["declared"]["sales"], s3.sales);
    assert!(
        late["documents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["corrects"] == closed_at),
        "{late:#}"
    );
    rig.stop().await;
}
