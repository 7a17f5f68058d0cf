//! Capture a range of the events stream to a file and replay it under another prefix: same
//! messages, same order, paced.

use futures::StreamExt;
use retailflow::domain::*;
use retailflow::testing::*;
use retailflow_lab::capture::{CaptureArgs, ReplayArgs, capture, read, replay};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_then_replay_keeps_order_and_pace() {
    let server = nats();
    let js = async_nats::jetstream::new(client(&server.url()).await);
    retailflow::bus::streams::ensure(&js, &retailflow::config::StreamsConfig::default())
        .await
        .unwrap();
    let mut seqs = Vec::new();
    for i in 1..=60u64 {
        let e = envelope(
            &format!("wms/S{}", i % 3),
            i,
            Event::Receipt(Receipt {
                location: format!("S{}", i % 3).as_str().into(),
                lines: vec![QtyLine {
                    sku: "A".into(),
                    qty: i as i64,
                }],
                reference: None,
            }),
        );
        seqs.push(publish(&js, &e, i % 2 == 0, true).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cap.bin");
    capture(CaptureArgs {
        out: file.clone(),
        nats: Some(server.url()),
        stream: "RETAIL_EVENTS".into(),
        from_seq: Some(seqs[10]),
        to_seq: Some(seqs[49]),
        since: None,
        until: None,
    })
    .await
    .unwrap();
    let (header, records) = read(&file).unwrap();
    assert_eq!(header.messages, 40);
    assert_eq!(records.first().unwrap().seq, seqs[10]);
    assert_eq!(records.last().unwrap().seq, seqs[49]);
    let span_ms = records.last().unwrap().stored_ms - records.first().unwrap().stored_ms;
    assert!(span_ms >= 300, "captured span {span_ms} ms");

    let started = Instant::now();
    replay(ReplayArgs {
        file: file.clone(),
        speed: "2x".into(),
        nats: Some(server.url()),
        subject_prefix: Some("replay.v1".into()),
        stream: Some("REPLAY".into()),
        strip_msg_id: false,
    })
    .await
    .unwrap();
    // Paced at twice the original speed: it cannot finish much sooner than half the span.
    assert!(
        started.elapsed().as_millis() as i64 >= span_ms * 4 / 10,
        "replay was not paced"
    );

    let stream = js.get_stream("REPLAY").await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut msgs = consumer.messages().await.unwrap();
    for r in &records {
        let m = tokio::time::timeout(Duration::from_secs(5), msgs.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            m.subject.as_str(),
            r.subject.replacen("retail.v1", "replay.v1", 1)
        );
        assert_eq!(&m.payload[..], &r.payload[..]);
        let h = m.headers.as_ref().unwrap();
        assert_eq!(
            h.get("Nats-Msg-Id").map(|v| v.as_str().to_string()),
            r.headers
                .iter()
                .find(|(k, _)| k == "Nats-Msg-Id")
                .map(|(_, v)| v.clone())
        );
    }
}
