//! Messages whose header block async-nats refuses (a name with a space, a value with a bare
//! CR) and a MessagePack array claiming 2^32-1 lines, published as a raw client can: each is
//! dead-lettered with its headers kept, and a receipt published after them is applied.

use retailflow::domain::*;
use retailflow::supervise::pipeline::Pipeline;
use retailflow::testing::*;
use std::collections::BTreeMap;
use std::time::Duration;

/// `%XX` back to bytes.
fn unescape(v: &str) -> Vec<u8> {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap(), 16).unwrap(),
            );
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_poison_is_dead_lettered_and_the_line_goes_on() {
    let server = nats();
    let pipeline = Pipeline::start(config(&server.url()))
        .await
        .expect("pipeline starts");
    let js = async_nats::jetstream::new(client(&server.url()).await);

    // A sale whose `lines` array header claims 2^32-1 lines.
    let sale = envelope(
        "pos/S1/t1",
        1,
        Event::Sale(Sale {
            location: "S1".into(),
            business_day: BusinessDay::parse("2026-11-27").unwrap(),
            currency: Currency::parse("EUR").unwrap(),
            lines: vec![],
            tenders: vec![],
        }),
    );
    let mut huge = codec::encode_msgpack(&sale).unwrap();
    let at = huge.windows(6).position(|w| w == b"\xa5lines").unwrap() + 6;
    assert_eq!(huge[at], 0x90, "an empty fixarray");
    huge.splice(at..at + 1, *b"\xdd\xff\xff\xff\xff");

    let bad_lines: [&[u8]; 3] = [b"X Y: 1", b"A: x\ry", b"Ok: fine"];
    let mut messages = Vec::new();
    for (i, bad) in bad_lines.iter().enumerate() {
        let mut h = b"NATS/1.0\r\nX-Till: till-7\r\n".to_vec();
        h.extend_from_slice(bad);
        h.extend_from_slice(b"\r\n\r\n");
        let payload = if i == 2 {
            huge.clone()
        } else {
            vec![0xc1, 0x00, 0xff]
        };
        messages.push(("retail.v1.pos.S1.sale", h, payload));
    }
    let frames: Vec<(&str, &[u8], &[u8])> = messages
        .iter()
        .map(|(s, h, p)| (*s, h.as_slice(), p.as_slice()))
        .collect();
    hpub_raw(&server.url(), &frames).await;

    publish(
        &js,
        &envelope("wms/S1", 1, receipt("S1", "AFTER", 5)),
        false,
        true,
    )
    .await;
    let end = last_seq(&js, "RETAIL_EVENTS").await;
    assert_eq!(end, 4);
    // On bb9e878 the reader panicked in async-nats on the first message, for ever.
    assert!(
        pipeline
            .shared
            .view
            .wait_all(end, Duration::from_secs(20))
            .await,
        "the receipt after the poison was never applied"
    );
    let p = pipeline.shared.view.read(&Sku::from("AFTER")).0.unwrap()[0].position;
    assert_eq!(p.on_hand, 5);

    let letters: BTreeMap<u64, async_nats::HeaderMap> = dead_letters(&js, 3)
        .await
        .into_iter()
        .map(|(seq, m)| (seq, m.headers.clone().unwrap()))
        .collect();
    assert_eq!(letters.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    for (i, bad) in bad_lines.iter().enumerate() {
        let h = &letters[&(i as u64 + 1)];
        assert_eq!(h.get("Retailflow-Reason").unwrap().as_str(), "undecodable");
        assert_eq!(h.get("X-Till").unwrap().as_str(), "till-7");
        let kept: Vec<Vec<u8>> = h
            .get_all("Retailflow-Invalid-Header")
            .map(|v| unescape(v.as_str()))
            .collect();
        if i == 2 {
            assert!(kept.is_empty());
            assert_eq!(h.get("Ok").unwrap().as_str(), "fine");
        } else {
            assert_eq!(kept, vec![bad.to_vec()], "message {}", i + 1);
        }
    }
    assert_eq!(
        pipeline
            .shared
            .metrics
            .invalid_headers_kept
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    pipeline.shutdown(Duration::from_secs(10)).await;
}
