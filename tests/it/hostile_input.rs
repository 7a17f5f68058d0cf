//! Hostile input never stops the line: messages that panicked the reader, and events published
//! on subjects that do not fit them, end in the dead letters with a reason, and the next event
//! is applied.

use retailflow::domain::*;
use retailflow::supervise::pipeline::Pipeline;
use retailflow::testing::*;
use std::time::Duration;

fn header<'a>(m: &'a async_nats::jetstream::Message, name: &str) -> &'a str {
    m.headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str())
        .unwrap_or("")
}

fn on_hand(p: &Pipeline, sku: &str) -> Option<i64> {
    p.shared
        .view
        .read(&Sku::from(sku))
        .0
        .and_then(|v| v.first().map(|e| e.position.on_hand))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_poison_and_a_bare_cr_are_dead_lettered_and_the_next_receipt_applies() {
    let server = nats();
    let pipeline = Pipeline::start(config(&server.url()))
        .await
        .expect("pipeline starts");
    let js = async_nats::jetstream::new(client(&server.url()).await);
    let before = last_seq(&js, "RETAIL_EVENTS").await;

    // A header name with a space, then a header value with a bare CR; both with a payload
    // that is not MessagePack, so each needs a dead letter carrying its headers.
    hpub_raw(
        &server.url(),
        &[
            (
                "retail.v1.pos.S1.sale",
                b"NATS/1.0\r\nX Y: 1\r\n\r\n",
                &[0xc1, 0x00, 0xff],
            ),
            (
                "retail.v1.pos.S1.sale",
                b"NATS/1.0\r\nX-Note: a\rb\r\n\r\n",
                &[0xc1, 0x01],
            ),
        ],
    )
    .await;
    let stored = last_seq(&js, "RETAIL_EVENTS").await;
    assert_eq!(stored, before + 2, "nats-server stored both as sent");

    let good = publish(
        &js,
        &envelope("wms/DC1", 1, receipt("DC1", "AFTER-POISON", 7)),
        false,
        true,
    )
    .await;
    assert!(
        pipeline
            .shared
            .view
            .wait_all(good, Duration::from_secs(3))
            .await,
        "the receipt after the poison is applied within seconds"
    );
    assert_eq!(on_hand(&pipeline, "AFTER-POISON"), Some(7));

    let letters = dead_letters(&js, 2).await;
    for seq in [before + 1, before + 2] {
        let m = letters
            .get(&seq)
            .unwrap_or_else(|| panic!("a dead letter for stream sequence {seq}: {letters:?}"));
        assert_eq!(header(m, "Retailflow-Reason"), "undecodable", "seq {seq}");
        assert_eq!(
            header(m, "Retailflow-Original-Subject"),
            "retail.v1.pos.S1.sale"
        );
        assert!(!header(m, "Retailflow-Error").is_empty());
    }
    assert_eq!(&letters[&(before + 1)].payload[..], &[0xc1, 0x00, 0xff]);
    pipeline.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_on_subjects_that_do_not_fit_them_are_misplaced_not_applied() {
    let server = nats();
    let pipeline = Pipeline::start(config(&server.url()))
        .await
        .expect("pipeline starts");
    let js = async_nats::jetstream::new(client(&server.url()).await);
    let raw = |env: &Envelope| codec::encode_msgpack(env).unwrap();
    let id = |s: &str| {
        async_nats::HeaderMap::from_iter([("Nats-Msg-Id".parse().unwrap(), s.parse().unwrap())])
    };

    // retailflow's own kinds from a producer, on a producer subject.
    let barrier = envelope(
        "pos/S1/t1",
        1,
        Event::Barrier(Barrier {
            flush: true,
            snapshot: true,
        }),
    );
    let reserve = envelope(
        "pos/S1/t1",
        2,
        Event::ReservationRequested(ReservationRequested {
            reservation_id: ReservationId::from("R-HOSTILE"),
            sku: Sku::from("HOSTILE"),
            qty: 1,
            target: Target::Location(LocationId::from("DC1")),
            expires_at_ms: i64::MAX,
            allow_partial: false,
        }),
    );
    // A receipt whose subject names another kind, and one from a source of another system.
    let wrong_kind = envelope("wms/DC1", 1, receipt("DC1", "HOSTILE", 5));
    let wrong_system = envelope("pos/S1/t2", 1, receipt("DC1", "HOSTILE", 5));
    let cases = [
        ("retail.v1.pos.S1.barrier", &barrier, "barrier"),
        (
            "retail.v1.pos.S1.reservation_requested",
            &reserve,
            "reservation_requested",
        ),
        ("retail.v1.wms.DC1.sale", &wrong_kind, "kind"),
        ("retail.v1.wms.DC1.receipt", &wrong_system, "system"),
    ];
    let mut seqs = Vec::new();
    for (subject, env, _) in &cases {
        seqs.push(publish_raw(&js, subject, id(env.id.as_str()), raw(env)).await);
    }
    // Stock for the SKU the reservation asks for, then a receipt that fits its subject.
    let good = publish(
        &js,
        &envelope("wms/DC1", 2, receipt("DC1", "HOSTILE", 3)),
        false,
        true,
    )
    .await;
    assert!(
        pipeline
            .shared
            .view
            .wait_all(good, Duration::from_secs(5))
            .await
    );
    let p = pipeline.shared.view.read(&Sku::from("HOSTILE")).0.unwrap()[0].position;
    assert_eq!(p.on_hand, 3, "only the fitting receipt applied");
    assert_eq!(p.reserved, 0, "the producer's reservation was not applied");

    let letters = dead_letters(&js, cases.len()).await;
    for ((subject, _, says), seq) in cases.iter().zip(&seqs) {
        let m = letters
            .get(seq)
            .unwrap_or_else(|| panic!("a dead letter for {subject}"));
        assert_eq!(header(m, "Retailflow-Reason"), "misplaced", "{subject}");
        assert_eq!(header(m, "Retailflow-Original-Subject"), *subject);
        assert!(
            header(m, "Retailflow-Error").contains(says),
            "{subject}: {}",
            header(m, "Retailflow-Error")
        );
        assert!(
            m.subject
                .as_str()
                .starts_with("retail.v1.dlq.ingest.misplaced")
        );
    }
    pipeline.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_refused_lines_of_one_event_are_two_dead_letters() {
    use retailflow_core::apply::ledger::Ledger;
    use retailflow_core::apply::op::Op;
    let server = nats();
    let cfg = config(&server.url());
    let js = async_nats::jetstream::new(client(&server.url()).await);
    retailflow::bus::streams::ensure(&js, &cfg.streams)
        .await
        .expect("streams");

    // Two SKUs at the top of i64 (no event can get there, so the ledger is set up directly),
    // then one event (stream sequence 2) receiving one more of each: both lines overflow.
    let mut ledger = Ledger::new();
    for sku in ["A", "B"] {
        ledger
            .apply(
                1,
                &Op::Adjust {
                    loc: LocationId::from("S1"),
                    sku: Sku::from(sku),
                    qty: i64::MAX,
                    reason: ReasonCode::from("found"),
                },
            )
            .unwrap();
    }
    let receipt = |sku: &str| Op::Receipt {
        loc: LocationId::from("S1"),
        sku: Sku::from(sku),
        qty: 1,
    };
    let ops = vec![(2, receipt("A")), (2, receipt("B"))];
    let letters = retailflow::apply::shard::apply_ops(&mut ledger, 0, &ops);
    assert_eq!(letters.len(), 2, "both lines refused");

    let metrics = retailflow::telemetry::Metrics::new();
    let dl = retailflow::deadletter::DeadLetters::new(js.clone(), metrics.clone());
    for letter in letters {
        dl.send(letter).await.expect("stored");
    }
    let stored = last_seq(&js, "RETAIL_DLQ").await;
    assert_eq!(
        stored, 2,
        "JetStream kept both letters (none dropped as a duplicate)"
    );
    assert_eq!(
        metrics
            .dead_letters
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_byte_limits_are_set_on_existing_streams_or_refused_with_a_reason() {
    let server = nats();
    let mut cfg = config(&server.url());
    let js = async_nats::jetstream::new(client(&server.url()).await);
    // Streams as an older build made them: no byte limit.
    for mut want in retailflow::bus::streams::desired(&cfg.streams) {
        want.max_bytes = -1;
        js.create_stream(want).await.expect("create");
    }
    retailflow::bus::streams::ensure(&js, &cfg.streams)
        .await
        .expect("an existing stream below the limit gets it");
    for (name, want) in [
        ("RETAIL_EVENTS", cfg.streams.events_max_bytes),
        ("RETAIL_DLQ", cfg.streams.dead_letters_max_bytes),
    ] {
        let mut s = js.get_stream(name).await.unwrap();
        assert_eq!(s.info().await.unwrap().config.max_bytes, want, "{name}");
    }
    assert_eq!(cfg.streams.events_max_bytes, 10 * 1024 * 1024 * 1024);
    assert_eq!(cfg.streams.dead_letters_max_bytes, 1024 * 1024 * 1024);

    // A limit below what the stream holds would delete events: refused, saying why.
    publish(
        &js,
        &envelope("wms/DC1", 1, receipt("DC1", "A", 1)),
        false,
        true,
    )
    .await;
    cfg.streams.events_max_bytes = 10;
    let err = retailflow::bus::streams::ensure(&js, &cfg.streams)
        .await
        .expect_err("a limit below the stored bytes is refused");
    assert!(err.to_string().contains("max_bytes"), "{err}");
}

async fn healthz(base: &str) -> (u16, serde_json::Value) {
    let r = reqwest::get(format!("{base}/healthz")).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_reports_a_stall_with_its_lag_and_a_paused_endpoint_as_degraded() {
    let server = nats();
    let mut cfg = config(&server.url());
    cfg.ingest.stall_after = Duration::from_secs(1);
    let pipeline = Pipeline::start(cfg).await.expect("pipeline starts");
    let base = format!("http://{}", pipeline.http_addr().unwrap());
    let js = async_nats::jetstream::new(client(&server.url()).await);
    let first = publish(
        &js,
        &envelope("wms/DC1", 1, receipt("DC1", "H", 1)),
        false,
        true,
    )
    .await;
    assert!(
        pipeline
            .shared
            .view
            .wait_all(first, Duration::from_secs(5))
            .await
    );
    assert!(
        wait_until(Duration::from_secs(5), || async {
            let (code, body) = healthz(&base).await;
            code == 200 && body["status"] == "ok"
        })
        .await,
        "healthy while ingest keeps up"
    );

    // Ingest held (the test hook): events wait in the stream and nothing is applied.
    pipeline
        .shared
        .flow
        .hold
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let mut last = 0;
    let mut seq = 2;
    while seq <= 4 {
        last = publish(
            &js,
            &envelope("wms/DC1", seq, receipt("DC1", "H", 1)),
            false,
            true,
        )
        .await;
        seq += 1;
    }
    // A pull already on its way when the hold was set may still carry these in; then the
    // stream holds nothing unapplied, and one more receipt (which the hold does keep out)
    // makes the backlog the stall is about.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut stalled = false;
    while std::time::Instant::now() < deadline {
        if healthz(&base).await.0 == 503 {
            stalled = true;
            break;
        }
        if pipeline.shared.view.applied_all() >= last {
            last = publish(
                &js,
                &envelope("wms/DC1", seq, receipt("DC1", "H", 1)),
                false,
                true,
            )
            .await;
            seq += 1;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(stalled, "a stall is reported");
    let applied = pipeline.shared.view.applied_all();
    let (_, body) = healthz(&base).await;
    assert_eq!(body["status"], "stalled", "{body}");
    // lag = stream's last sequence (as the ticker last learnt it) - applied: at least our
    // three held receipts, at most what the stream holds now (barriers land there too).
    let (lag, as_of) = (
        body["lag"].as_u64().unwrap(),
        body["as_of"].as_u64().unwrap(),
    );
    assert_eq!(as_of, applied, "nothing applied while held: {body}");
    assert!(lag >= last - applied, "{body}");
    assert!(
        lag <= last_seq(&js, "RETAIL_EVENTS").await - applied,
        "{body}"
    );
    assert!(
        body["reasons"][0]
            .as_str()
            .unwrap()
            .contains("not advanced"),
        "{body}"
    );

    // Released: it catches up and health comes back.
    pipeline
        .shared
        .flow
        .hold
        .store(false, std::sync::atomic::Ordering::Relaxed);
    assert!(
        pipeline
            .shared
            .view
            .wait_all(last, Duration::from_secs(5))
            .await
    );
    assert!(
        wait_until(Duration::from_secs(5), || async {
            healthz(&base).await.0 == 200
        })
        .await,
        "healthy again after catching up"
    );

    // An ERP endpoint paused (the delivery side moves this gauge): degraded, still 200.
    pipeline
        .shared
        .metrics
        .erp_paused_endpoints
        .store(1, std::sync::atomic::Ordering::Relaxed);
    let (code, body) = healthz(&base).await;
    assert_eq!(
        (code, body["status"].as_str()),
        (200, Some("degraded")),
        "{body}"
    );
    assert!(
        body["reasons"][0]
            .as_str()
            .unwrap()
            .contains("erp endpoint paused")
    );
    pipeline.shutdown(Duration::from_secs(10)).await;
}
