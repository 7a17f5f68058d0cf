//! A store on a leaf node: the store's nats-server has a JetStream domain of its own, its tills
//! publish into a local stream there, and the hub's events stream sources from it through a
//! TCP proxy that can cut the link. While the link is down the store keeps selling into its
//! local stream; when it returns, every sale reaches the hub once and in its till's order, and
//! the pipeline's availability and the ERP's books equal what a plain count of the sales says.
//!
//! The outage lasts `RETAILFLOW_EDGE_CUT_SECS` seconds (30 unless set).

use async_nats::jetstream::{self, consumer, stream};
use erp_sim::{ErpSim, ErpSimConfig};
use futures::StreamExt;
use retailflow::bus::server::{NatsHub, NatsLeaf, TcpProxy, free_port};
use retailflow::config::SourceConfig;
use retailflow::domain::*;
use retailflow::supervise::pipeline::Pipeline;
use retailflow::testing::*;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

const DOMAIN: &str = "s0042";
const LOCATION: &str = "S0042";
const SKUS: [&str; 5] = ["A", "B", "C", "D", "E"];
const TILLS: [&str; 2] = ["pos/S0042/t1", "pos/S0042/t2"];
const DAY: &str = "2026-12-07";
/// Sales during the second, flapping outage.
const SECOND_OUTAGE: u64 = 2000;

fn cut_for() -> Duration {
    let secs = std::env::var("RETAILFLOW_EDGE_CUT_SECS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

/// What the tills sold, counted the plainest way.
#[derive(Default, Debug)]
struct Oracle {
    /// (sku) -> (units sold, net amount, tax)
    sales: BTreeMap<String, (i64, i64, i64)>,
    /// Card payments.
    paid: i64,
    /// (sku) -> units on hand: receipts less sales.
    stock: BTreeMap<String, i64>,
}

/// The store's tills: numbered sales from two tills, and the envelopes they sent.
struct Tills {
    next: [u64; 2],
    rnd: u64,
    sent: Vec<Envelope>,
}

impl Tills {
    fn new() -> Tills {
        Tills {
            next: [0, 0],
            rnd: 7,
            sent: Vec::new(),
        }
    }

    fn random(&mut self, n: u64) -> u64 {
        self.rnd = self
            .rnd
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.rnd >> 33) % n
    }

    /// The next sale, added to `oracle`.
    fn sale(&mut self, oracle: &mut Oracle) -> Envelope {
        let till = self.random(2) as usize;
        self.next[till] += 1;
        let lines: Vec<ItemLine> = (0..1 + self.random(2))
            .map(|_| {
                let sku = SKUS[self.random(5) as usize];
                let qty = 1 + self.random(3) as i64;
                let price = 100 + self.random(4900) as i64;
                let tax = qty * price / 5;
                ItemLine {
                    sku: sku.into(),
                    qty,
                    unit_price: price,
                    discount: 0,
                    tax_code: "STD".into(),
                    taxes: vec![TaxLine {
                        code: "STD".into(),
                        amount: tax,
                    }],
                    restock: None,
                }
            })
            .collect();
        let mut total = 0;
        for l in &lines {
            let net = l.qty * l.unit_price;
            let e = oracle.sales.entry(l.sku.to_string()).or_default();
            e.0 += l.qty;
            e.1 += net;
            e.2 += l.taxes[0].amount;
            *oracle.stock.entry(l.sku.to_string()).or_default() -= l.qty;
            total += net + l.taxes[0].amount;
        }
        oracle.paid += total;
        let env = envelope(
            TILLS[till],
            self.next[till],
            Event::Sale(Sale {
                location: LOCATION.into(),
                business_day: BusinessDay::parse(DAY).expect("a date"),
                currency: Currency::parse("EUR").expect("a currency"),
                lines,
                tenders: vec![Tender {
                    kind: "card".into(),
                    amount: total,
                }],
            }),
        );
        self.sent.push(env.clone());
        env
    }
}

/// Publishes `env` into the store's local stream as a till does: MessagePack on its subject,
/// `Nats-Msg-Id` = event id unless `with_id` is false. True when the store called it a
/// duplicate.
async fn till_publish(store: &jetstream::Context, env: &Envelope, with_id: bool) -> bool {
    let mut headers = async_nats::HeaderMap::new();
    if with_id {
        headers.insert("Nats-Msg-Id", env.id.as_str());
    }
    let payload = codec::encode_msgpack(env).expect("encodes");
    store
        .publish_with_headers(env.subject(&["pos".into()], "pos"), headers, payload.into())
        .await
        .expect("the store takes the sale")
        .await
        .expect("the store's stream stored it")
        .duplicate
}

/// Messages on `retail.v1.pos.>` in the hub's events stream.
async fn store_events_at_hub(hub: &jetstream::Context) -> u64 {
    let Ok(stream) = hub.get_stream("RETAIL_EVENTS").await else {
        return 0;
    };
    match stream.info_with_subjects("retail.v1.pos.>").await {
        Ok(mut info) => {
            let mut n = 0;
            while let Some(Ok((_, count))) = info.next().await {
                n += count as u64;
            }
            n
        }
        Err(_) => 0,
    }
}

/// Waits until the hub holds `want` store events and the pipeline applied all of the events
/// stream; false if not within `limit`.
async fn caught_up(
    pipeline: &Pipeline,
    hub: &jetstream::Context,
    want: u64,
    limit: Duration,
) -> bool {
    let deadline = Instant::now() + limit;
    while store_events_at_hub(hub).await < want {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let end = last_seq(hub, "RETAIL_EVENTS").await;
    pipeline
        .shared
        .view
        .wait_all(end, deadline.saturating_duration_since(Instant::now()))
        .await
}

/// Every message of the hub's events stream on `filter`, in stream order.
async fn read_stream(hub: &jetstream::Context, filter: &str) -> Vec<async_nats::Message> {
    let stream = hub.get_stream("RETAIL_EVENTS").await.expect("stream");
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            filter_subject: filter.into(),
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut out = Vec::new();
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(500)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .expect("fetch");
        let before = out.len();
        while let Some(Ok(m)) = batch.next().await {
            out.push(m.message);
        }
        if out.len() == before {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_sells_through_a_wan_outage_and_the_books_come_out_exact() {
    let cut = cut_for();
    let sim = ErpSim::start(ErpSimConfig {
        listen: "127.0.0.1:0".into(),
        ..ErpSimConfig::default()
    })
    .await
    .expect("erp-sim");
    // The proxy first: the hub advertises it as its leaf address.
    let leaf_port = free_port();
    let proxy = TcpProxy::start(([127, 0, 0, 1], leaf_port).into())
        .await
        .expect("proxy");
    let hub = NatsHub::start("hub", leaf_port, Some(proxy.addr())).expect("hub");
    let leaf = NatsLeaf::start(DOMAIN, proxy.addr()).expect("store leaf");
    assert!(
        leaf.wait_linked(true, Duration::from_secs(15)).await,
        "the store linked to the hub"
    );

    // The store's local stream: what its tills publish, kept while the link is down.
    let store = jetstream::new(client(&leaf.url()).await);
    store
        .create_stream(stream::Config {
            name: "STORE".into(),
            subjects: vec!["retail.v1.pos.>".into(), "retail.v1.ctl.>".into()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .expect("the store's stream");

    let mut cfg = config(&hub.url());
    cfg.streams.sources = vec![SourceConfig {
        domain: DOMAIN.into(),
        stream: "STORE".into(),
    }];
    cfg.erp = vec![retailflow::config::ErpEndpointConfig {
        name: "erp".into(),
        url: sim.postings_url(),
        ..Default::default()
    }];
    let pipeline = Pipeline::start(cfg).await.expect("pipeline starts");
    let js = jetstream::new(client(&hub.url()).await);

    // Stock arrives at the hub as usual.
    let mut oracle = Oracle::default();
    for (i, sku) in SKUS.iter().enumerate() {
        publish(
            &js,
            &envelope("wms/S0042", i as u64 + 1, receipt(LOCATION, sku, 100_000)),
            false,
            true,
        )
        .await;
        *oracle.stock.entry(sku.to_string()).or_default() += 100_000;
    }

    // Link up: sales flow through.
    let mut tills = Tills::new();
    for _ in 0..200 {
        let env = tills.sale(&mut oracle);
        till_publish(&store, &env, true).await;
    }
    assert!(
        caught_up(&pipeline, &js, 200, Duration::from_secs(30)).await,
        "sales at the store reach the pipeline"
    );

    // The WAN goes down; the store keeps selling.
    proxy.cut();
    assert!(
        leaf.wait_linked(false, Duration::from_secs(10)).await,
        "the store noticed the cut"
    );
    let at_hub = store_events_at_hub(&js).await;
    let started = Instant::now();
    let mut during = 0u64;
    while started.elapsed() < cut {
        for _ in 0..10 {
            let env = tills.sale(&mut oracle);
            till_publish(&store, &env, true).await;
            during += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        store_events_at_hub(&js).await,
        at_hub,
        "nothing crossed the cut link"
    );
    assert!(!leaf.linked().await, "still cut");
    assert_eq!(
        hub.leaf_connections().await,
        0,
        "the hub holds no link either"
    );

    // The link returns: time until the pipeline applied everything the store sold.
    let total = tills.sent.len() as u64;
    proxy.restore();
    let restored = Instant::now();
    assert!(
        leaf.wait_linked(true, Duration::from_secs(15)).await,
        "the store linked again"
    );
    let linked = restored.elapsed();
    // The hub's source retries on a timer that grows while the store is away (nats-server's
    // own backoff): the first sale arrives on its next attempt.
    assert!(
        wait_until(Duration::from_secs(180), || async {
            store_events_at_hub(&js).await > at_hub
        })
        .await,
        "the hub's source resumed"
    );
    let resumed = restored.elapsed();
    assert!(
        caught_up(&pipeline, &js, total, Duration::from_secs(120)).await,
        "caught up after the link returned"
    );
    let applied = restored.elapsed();
    println!(
        "edge catch-up: {during} sales sold during a {:.0} s outage; after the link returned: linked {:.2} s, source resumed {:.2} s, all applied {:.2} s ({:.2} s from the first arrival; {total} store events in all)",
        cut.as_secs_f64(),
        linked.as_secs_f64(),
        resumed.as_secs_f64(),
        applied.as_secs_f64(),
        (applied - resumed).as_secs_f64(),
    );

    // A second outage, cut again as soon as the first of its sales arrived: the hub's source
    // resumes from where it stopped, not from the start, and not twice.
    proxy.cut();
    assert!(leaf.wait_linked(false, Duration::from_secs(10)).await);
    for _ in 0..SECOND_OUTAGE {
        let env = tills.sale(&mut oracle);
        till_publish(&store, &env, true).await;
    }
    let before = store_events_at_hub(&js).await;
    proxy.restore();
    let flapped = wait_until(Duration::from_secs(60), || async {
        store_events_at_hub(&js).await > before
    })
    .await;
    assert!(flapped, "the second outage's sales started to arrive");
    proxy.cut();
    let mid = store_events_at_hub(&js).await;
    for _ in 0..100 {
        let env = tills.sale(&mut oracle);
        till_publish(&store, &env, true).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.restore();
    println!(
        "second outage: cut again with {} of {SECOND_OUTAGE} sales across",
        mid - before
    );

    // Re-sends. Within the store's duplicate window the store's stream drops them itself; a
    // re-send without its Nats-Msg-Id (a till that lost track) is stored and sourced again,
    // and ingest's per-source dedupe drops it.
    for env in &tills.sent[..20] {
        assert!(
            till_publish(&store, env, true).await,
            "the store's stream drops a quick re-send"
        );
    }
    for env in &tills.sent[100..120] {
        assert!(!till_publish(&store, env, false).await);
    }
    // Something no producer may send: a barrier, on retailflow's own subject. The hub's
    // source takes only producers' subjects.
    let forged = envelope(
        "pos/S0042/t1",
        1,
        Event::Barrier(Barrier {
            flush: true,
            snapshot: true,
        }),
    );
    store
        .publish(
            "retail.v1.ctl.all.barrier",
            codec::encode_msgpack(&forged).expect("encodes").into(),
        )
        .await
        .expect("publish")
        .await
        .expect("stored at the store");

    let total = tills.sent.len() as u64;
    assert!(
        caught_up(&pipeline, &js, total + 20, Duration::from_secs(120)).await,
        "everything, re-sends included, reached the pipeline"
    );
    retailflow::supervise::settle::settle(&pipeline, Duration::from_secs(120))
        .await
        .expect("every posting answered");

    // Once and in order: every sale of the store at the hub, each till's in its order; the
    // 20 re-sends after them; nothing of retailflow's own from the store.
    let messages = read_stream(&js, "retail.v1.pos.>").await;
    assert_eq!(messages.len() as u64, total + 20);
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    let mut repeats = 0;
    for m in &messages {
        let env = codec::decode_envelope(codec::Format::MsgPack, &m.payload).expect("decodes");
        let last = seen.entry(env.source.to_string()).or_default();
        if env.seq == *last + 1 {
            *last = env.seq;
            let id = m.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id"));
            assert_eq!(
                id.map(|v| v.as_str()),
                Some(env.id.as_str()),
                "Nats-Msg-Id travelled with the sale"
            );
        } else {
            assert!(
                env.seq <= *last,
                "{} seq {} after {last}",
                env.source,
                env.seq
            );
            repeats += 1;
        }
    }
    assert_eq!(repeats, 20, "only the re-sends came twice");
    let sold: u64 = seen.values().sum();
    assert_eq!(sold, total, "every sale arrived");
    let ctl = read_stream(&js, "retail.v1.ctl.>").await;
    assert!(
        ctl.iter().all(|m| {
            codec::decode_envelope(codec::Format::MsgPack, &m.payload)
                .map(|e| !e.source.to_string().starts_with("pos/"))
                .unwrap_or(true)
        }),
        "the store's forged barrier stayed at the store"
    );

    let metrics = &pipeline.shared.metrics;
    assert_eq!(
        metrics.duplicates_resent.load(Relaxed),
        20,
        "re-sends dropped"
    );
    assert_eq!(
        metrics.dead_letters.load(Relaxed),
        0,
        "nothing dead-lettered"
    );

    // Availability at the store.
    for sku in SKUS {
        let (answers, _) = pipeline.shared.view.read(&Sku::from(sku));
        let on_hand = answers
            .unwrap_or_default()
            .iter()
            .find(|a| a.location.as_str() == LOCATION)
            .map(|a| a.position.on_hand);
        assert_eq!(on_hand, oracle.stock.get(sku).copied(), "on hand of {sku}");
    }

    // The ERP's books.
    let totals = sim.totals();
    assert_eq!(
        sim.stats().duplicate_documents,
        0,
        "no document booked twice"
    );
    let mut sales: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for s in &totals.sales {
        assert_eq!(s.location.as_str(), LOCATION);
        let e = sales.entry(s.sku.to_string()).or_default();
        e.0 += s.qty_sold;
        e.1 += s.sales_amount;
        e.2 += s.tax_amount;
    }
    assert_eq!(sales, oracle.sales, "sales summary per sku");
    let paid: i64 = totals.tenders.iter().map(|t| t.paid).sum();
    assert_eq!(paid, oracle.paid, "card payments");
    let mut stock: BTreeMap<String, i64> = BTreeMap::new();
    for m in &totals.inventory {
        *stock.entry(m.sku.to_string()).or_default() += m.qty;
    }
    assert_eq!(
        stock, oracle.stock,
        "inventory movements add up to the stock"
    );

    pipeline.shutdown(Duration::from_secs(10)).await;
    sim.shutdown().await;
}

#[test]
fn the_edge_configuration_files_are_valid() {
    assert_server_config_valid("edge/hub.conf");
    assert_server_config_valid("edge/store.conf");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("nats/edge");
    let store = std::fs::read_to_string(dir.join("store.conf")).expect("store.conf");
    let denied = format!("deny_exports: [\"{}\"]", retailflow::bus::server::LINK_DENY);
    assert!(
        store.contains(&denied),
        "store.conf keeps retailflow's subjects off the link, as the test fixture does"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_added_to_the_configuration_is_added_to_the_existing_events_stream() {
    let hub = NatsHub::start("hub", 0, None).expect("hub");
    let leaf = NatsLeaf::start(DOMAIN, hub.leaf_addr()).expect("store leaf");
    assert!(leaf.wait_linked(true, Duration::from_secs(15)).await);
    let store = jetstream::new(client(&leaf.url()).await);
    store
        .create_stream(stream::Config {
            name: "STORE".into(),
            subjects: vec!["retail.v1.pos.>".into()],
            ..Default::default()
        })
        .await
        .expect("the store's stream");
    let js = jetstream::new(client(&hub.url()).await);

    // async-nats's own convenience, `Source::domain`, goes to the server as a field of its
    // own; the pinned server refuses it, hence `external.api` (bus::streams::sources).
    let refused = js
        .create_stream(stream::Config {
            name: "CONVENIENCE".into(),
            sources: Some(vec![stream::Source {
                name: "STORE".into(),
                domain: Some(DOMAIN.into()),
                ..Default::default()
            }]),
            ..Default::default()
        })
        .await;
    let error = refused
        .expect_err("the pinned server refuses `domain`")
        .to_string();
    assert!(error.contains("unknown field \"domain\""), "{error}");

    let mut cfg = config(&hub.url()).streams;
    retailflow::bus::streams::ensure(&js, &cfg)
        .await
        .expect("created without sources");
    let mut events = js.get_stream("RETAIL_EVENTS").await.expect("stream");
    assert!(events.info().await.expect("info").config.sources.is_none());

    cfg.sources = vec![SourceConfig {
        domain: DOMAIN.into(),
        stream: "STORE".into(),
    }];
    retailflow::bus::streams::ensure(&js, &cfg)
        .await
        .expect("the source is added in place");
    let info = events.info().await.expect("info");
    let sources = info.config.sources.clone().unwrap_or_default();
    assert_eq!(sources.len(), 1);
    assert_eq!(sources[0].name, "STORE");
    assert_eq!(
        sources[0].external.as_ref().map(|e| e.api_prefix.as_str()),
        Some("$JS.s0042.API")
    );
    // Starting again with the same configuration changes nothing.
    retailflow::bus::streams::ensure(&js, &cfg)
        .await
        .expect("unchanged");

    let mut oracle = Oracle::default();
    let env = Tills::new().sale(&mut oracle);
    till_publish(&store, &env, true).await;
    assert!(
        wait_until(Duration::from_secs(30), || async {
            store_events_at_hub(&js).await == 1
        })
        .await,
        "the store's sale reached the hub through the added source"
    );

    cfg.sources.clear();
    retailflow::bus::streams::ensure(&js, &cfg)
        .await
        .expect("the source is removed in place");
    let info = events.info().await.expect("info");
    assert!(
        info.config.sources.as_ref().is_none_or(Vec::is_empty),
        "no source left"
    );
    assert_eq!(info.state.messages, 1, "what it sourced stays");
}
