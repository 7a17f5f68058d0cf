//! Bad input never stops the line: every malformed or invalid event lands in the dead letters
//! with its reason, original subject, headers and payload, and everything else is applied.

use async_nats::HeaderMap;
use retailflow::domain::*;
use retailflow::supervise::pipeline::Pipeline;
use retailflow::testing::*;
use std::collections::BTreeMap;
use std::time::Duration;

fn receipt(source: &str, seq: u64, sku: &str, qty: i64) -> Envelope {
    envelope(
        source,
        seq,
        Event::Receipt(Receipt {
            location: "S1".into(),
            lines: vec![QtyLine {
                sku: sku.into(),
                qty,
            }],
            reference: None,
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_events_are_dead_lettered_and_the_rest_applied() {
    let server = nats();
    let mut cfg = config(&server.url());
    cfg.ingest.reorder_window = 64;
    let pipeline = Pipeline::start(cfg).await.expect("pipeline starts");
    let js = async_nats::jetstream::new(client(&server.url()).await);

    // (subject, payload, content type, expected reason)
    let mut bad: Vec<(String, Vec<u8>, Option<&str>, &str)> = Vec::new();
    bad.push((
        "retail.v1.pos.S1.sale".into(),
        vec![0xc1, 0x00, 0xff],
        None,
        "undecodable",
    ));
    bad.push((
        "retail.v1.pos.S1.sale".into(),
        b"{\"v\":1,".to_vec(),
        Some("application/json"),
        "undecodable",
    ));
    bad.push((
        "retail.v1.pos.S1.sale".into(),
        br#"{"v":1,"id":"x","source":"s","seq":1,"occurred_at_ms":0,"event":{"teleport":{}}}"#
            .to_vec(),
        Some("application/json"),
        "undecodable",
    ));
    let mut neg = receipt("wms/bad", 1, "A", 1);
    if let Event::Receipt(r) = &mut neg.event {
        r.lines[0].qty = -3;
    }
    bad.push((
        "retail.v1.wms.S1.receipt".into(),
        retailflow::domain::codec::encode_msgpack(&neg).unwrap(),
        None,
        "invalid",
    ));
    let mut dotted = receipt("wms/bad", 2, "A.B", 1);
    dotted.id = EventId::from("dotted");
    bad.push((
        "retail.v1.wms.S1.receipt".into(),
        serde_json::to_vec(&dotted).unwrap(),
        Some("application/json"),
        "invalid",
    ));
    let mut future = receipt("wms/bad", 3, "A", 1);
    future.v = 9;
    bad.push((
        "retail.v1.wms.S1.receipt".into(),
        retailflow::domain::codec::encode_msgpack(&future).unwrap(),
        None,
        "invalid",
    ));
    let unbalanced = envelope(
        "pos/S1/t9",
        1,
        Event::Sale(Sale {
            location: "S1".into(),
            business_day: BusinessDay::parse("2026-11-27").unwrap(),
            currency: Currency::parse("EUR").unwrap(),
            lines: vec![ItemLine {
                sku: "A".into(),
                qty: 1,
                unit_price: 100,
                discount: 0,
                tax_code: "STD".into(),
                taxes: vec![],
                restock: None,
            }],
            tenders: vec![Tender {
                kind: "card".into(),
                amount: 99,
            }],
        }),
    );
    bad.push((
        "retail.v1.pos.S1.sale".into(),
        retailflow::domain::codec::encode_msgpack(&unbalanced).unwrap(),
        None,
        "invalid",
    ));

    // Interleave 300 good receipts with the bad ones.
    let mut expected_on_hand: BTreeMap<String, i64> = BTreeMap::new();
    let mut bad_seqs = Vec::new();
    let mut bad_iter = bad.iter();
    for i in 1..=300u64 {
        let sku = format!("SKU{}", i % 7);
        publish(&js, &receipt("wms/S1", i, &sku, 2), i % 3 == 0, true).await;
        *expected_on_hand.entry(sku).or_default() += 2;
        if i % 40 == 0 {
            if let Some((subject, payload, ct, reason)) = bad_iter.next() {
                let mut h = HeaderMap::new();
                h.insert("X-Till", "till-7");
                if let Some(ct) = ct {
                    h.insert("Content-Type", *ct);
                }
                let seq = publish_raw(&js, subject, h, payload.clone()).await;
                bad_seqs.push((seq, *reason, subject.clone(), payload.clone()));
            }
        }
    }
    // A late arrival: source jumps far ahead (beyond the 64-wide window), then an old gap fills.
    publish(&js, &receipt("wms/late", 1, "L", 1), false, true).await;
    publish(&js, &receipt("wms/late", 500, "L", 1), false, true).await;
    let late_seq = publish(&js, &receipt("wms/late", 7, "L", 1), false, true).await;
    bad_seqs.push((late_seq, "late", "retail.v1.wms.S1.receipt".into(), vec![]));
    *expected_on_hand.entry("L".into()).or_default() += 2;

    let end = last_seq(&js, "RETAIL_EVENTS").await;
    assert!(
        pipeline
            .shared
            .view
            .wait_all(end, Duration::from_secs(30))
            .await
    );
    for (sku, qty) in &expected_on_hand {
        let p = pipeline
            .shared
            .view
            .read(&Sku::from(sku.as_str()))
            .0
            .unwrap()[0]
            .position;
        assert_eq!(p.on_hand, *qty, "{sku}");
    }

    // Read the dead letters back.
    let letters = dead_letters(&js, bad_seqs.len()).await;
    assert_eq!(
        letters.len(),
        bad_seqs.len(),
        "one dead letter per bad event"
    );
    for (seq, reason, subject, payload) in &bad_seqs {
        let m = &letters[seq];
        let h = m.headers.as_ref().unwrap();
        assert_eq!(
            h.get("Retailflow-Reason").unwrap().as_str(),
            *reason,
            "seq {seq}"
        );
        assert_eq!(
            h.get("Retailflow-Original-Subject").unwrap().as_str(),
            subject
        );
        assert!(!h.get("Retailflow-Error").unwrap().as_str().is_empty());
        assert!(
            m.subject
                .as_str()
                .starts_with(&format!("retail.v1.dlq.ingest.{reason}"))
        );
        if *reason != "late" {
            assert_eq!(
                h.get("X-Till").unwrap().as_str(),
                "till-7",
                "original headers kept"
            );
            assert_eq!(&m.payload[..], &payload[..], "payload kept byte for byte");
        }
    }
    let unbalanced_letter = letters.values().find(|m| {
        m.headers
            .as_ref()
            .unwrap()
            .get("Retailflow-Error")
            .unwrap()
            .as_str()
            .contains("does not balance")
    });
    assert!(
        unbalanced_letter.is_some(),
        "the error message says what is wrong"
    );
    pipeline.shutdown(Duration::from_secs(10)).await;
}
