//! A 3-node NATS cluster: connections take a list of servers and start while some are down;
//! the direct reader learns the cluster's members from INFO and reconnects to one it was not
//! given; a pipeline on replicated streams loses the node its reader is connected to (a crash,
//! then a graceful restart of another) and its availability still equals the sum of what was
//! published.
//!
//! A crashed node that led a stream costs a Raft election (nats-server waits 4 to 9 s before
//! it campaigns, not configurable); that is most of these tests' time.

use async_nats::jetstream::{self, consumer, stream};
use futures::TryStreamExt;
use retailflow::bus::pull::{Pull, PullError, PullOptions, Seeds};
use retailflow::bus::server::{NatsCluster, free_port};
use retailflow::domain::*;
use retailflow::supervise::pipeline::Pipeline;
use retailflow::testing::*;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

const STARTED_WITHIN: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_skips_a_dead_server_in_the_list() {
    let server = nats();
    let dead = free_port();
    let mut cfg = config("").nats;
    cfg.url = format!("127.0.0.1:{dead},{}", server.url());
    // async-nats shuffles the list: a few connects put the dead server first at least once
    // (1 in 32 that none does, which still passes: the point is that none fails).
    for _ in 0..5 {
        let started = Instant::now();
        let client = retailflow::bus::connect(&cfg, "cluster-test")
            .await
            .expect("connects to the live server");
        assert!(started.elapsed() < Duration::from_secs(5));
        client.flush().await.expect("usable");
    }
}

#[test]
fn the_cluster_configuration_files_are_valid() {
    for n in 1..=3 {
        assert_server_config_valid(&format!("cluster/n{n}.conf"));
    }
}

fn pull_options() -> PullOptions {
    PullOptions {
        batch: 50,
        heartbeat: Duration::from_secs(1),
        expires: Duration::from_secs(5),
        name: "cluster-test".into(),
    }
}

async fn ephemeral_consumer(js: &jetstream::Context, stream: &str) -> String {
    let s = js.get_stream(stream).await.expect("stream");
    s.create_consumer(consumer::pull::Config {
        ack_policy: consumer::AckPolicy::None,
        ..Default::default()
    })
    .await
    .expect("consumer")
    .cached_info()
    .name
    .clone()
}

/// Reads until `want` messages arrived or `limit` passed; returns how many.
async fn read_n(pull: &mut Pull, want: usize, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    let mut got = 0;
    while got < want && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), pull.next_batch(50, |_| {})).await {
            Ok(Ok(n)) => got += n,
            other => panic!("reading after {got}: {other:?}"),
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_direct_reader_learns_the_cluster_and_reconnects_to_a_member_it_was_not_given() {
    let cluster = NatsCluster::start(STARTED_WITHIN).await.expect("cluster");
    let js = jetstream::new(client(&cluster.url()).await);
    js.create_stream(stream::Config {
        name: "LEARN".into(),
        subjects: vec!["learn.>".into()],
        num_replicas: 3,
        storage: stream::StorageType::Memory,
        ..Default::default()
    })
    .await
    .expect("R3 stream");
    for i in 0..20 {
        js.publish(format!("learn.{i}"), "x".into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    // Given only node 0 (after a dead port).
    let given = format!("127.0.0.1:{},{}", free_port(), cluster.node(0).url());
    let mut seeds = Seeds::new(&given);
    let name = ephemeral_consumer(&js, "LEARN").await;
    let mut pull = Pull::open_from(
        &seeds.order(),
        Default::default(),
        "LEARN",
        &name,
        &pull_options(),
    )
    .await
    .expect("opens on node 0");
    let ports: Vec<u16> = (0..3).map(|i| cluster.node(i).port()).collect();
    let node = |i: usize| format!("127.0.0.1:{}", ports[i]);
    assert_eq!(pull.address(), node(0));
    assert_eq!(read_n(&mut pull, 20, Duration::from_secs(10)).await, 20);
    let mut learned = pull.connect_urls().to_vec();
    learned.sort();
    let mut all: Vec<String> = (0..3).map(node).collect();
    all.sort();
    assert_eq!(learned, all, "INFO named every member");

    // A graceful restart: node 0 hands over its leaderships and tells its clients, with
    // the other members' addresses. The reader leaves before the server closes it.
    cluster.lame_duck(0).expect("lame duck mode");
    let err = tokio::time::timeout(Duration::from_secs(10), pull.next_batch(50, |_| {}))
        .await
        .expect("an answer, not a hang")
        .expect_err("the reader leaves");
    assert!(matches!(err, PullError::LameDuck(_)), "{err}");
    let mut others = pull.connect_urls().to_vec();
    others.sort();
    let mut want = vec![node(1), node(2)];
    want.sort();
    assert_eq!(others, want, "the announcement leaves node 0 out");
    seeds.remember(&pull);
    let order: Vec<String> = seeds.order().into_iter().map(|a| a.host_port).collect();
    assert_eq!(order.last(), Some(&node(0)), "the node it left goes last");
    assert!(
        order[0] == node(1) || order[0] == node(2),
        "the next attempt starts on a learned member: {order:?}"
    );

    // The consumer may have lived on node 0; JetStream (through async-nats, which fails over
    // by itself) makes a new one, and the reader finds a node nobody configured.
    let reopened = async {
        loop {
            let attempt = async {
                let name = ephemeral_consumer(&js, "LEARN").await;
                Pull::open_from(
                    &seeds.order(),
                    Default::default(),
                    "LEARN",
                    &name,
                    &pull_options(),
                )
                .await
            };
            match attempt.await {
                Ok(p) => return p,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    };
    let mut pull = tokio::time::timeout(Duration::from_secs(20), reopened)
        .await
        .expect("reopened within 20 s");
    assert!(
        pull.address() == node(1) || pull.address() == node(2),
        "on a learned member: {}",
        pull.address()
    );
    assert_eq!(read_n(&mut pull, 20, Duration::from_secs(10)).await, 20);
}

/// Publishes `env` until the stream acknowledges it: while a node is down the stream may be
/// electing a leader. The same `Nats-Msg-Id` each time, so a retry of a stored event is
/// dropped by JetStream (and, beyond its window, by ingest's dedupe).
async fn publish_until_stored(js: &jetstream::Context, env: &Envelope) {
    let subject = env.subject(&["wms".into()], "wms");
    let payload = codec::encode_msgpack(env).expect("encodes");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", env.id.as_str());
        let attempt = async {
            js.publish_with_headers(subject.clone(), headers, payload.clone().into())
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
        };
        // A publish while the stream has no leader is answered "no responders" at once or not
        // at all; ask again soon rather than wait out the client's timeout.
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(_)) => return,
            Ok(Err(error)) => assert!(Instant::now() < deadline, "publish: {error}"),
            Err(_) => assert!(Instant::now() < deadline, "publish: no ack"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const STORES: [&str; 3] = ["S1", "S2", "S3"];
const SKUS: [&str; 5] = ["A", "B", "C", "D", "E"];

/// Publishes `n` receipts from one source and adds them to `oracle`.
async fn receipts(
    js: &jetstream::Context,
    seq: &mut u64,
    n: u64,
    oracle: &mut BTreeMap<(String, String), i64>,
) {
    for _ in 0..n {
        *seq += 1;
        let store = STORES[(*seq % 3) as usize];
        let sku = SKUS[(*seq / 3 % 5) as usize];
        let qty = 1 + (*seq % 7) as i64;
        *oracle.entry((store.into(), sku.into())).or_default() += qty;
        publish_until_stored(js, &envelope("wms/DC", *seq, receipt(store, sku, qty))).await;
    }
}

/// Whether the pipeline applied everything the events stream holds, within 30 s.
async fn applied(pipeline: &Pipeline, js: &jetstream::Context) -> bool {
    // The stream's last sequence, asked again while a leader is being elected.
    let mut end = None;
    for _ in 0..30 {
        let last = async {
            let mut stream = js.get_stream("RETAIL_EVENTS").await.ok()?;
            Some(stream.info().await.ok()?.state.last_sequence)
        };
        if let Ok(Some(last)) = tokio::time::timeout(Duration::from_secs(2), last).await {
            end = Some(last);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let Some(end) = end else {
        return false;
    };
    pipeline
        .shared
        .view
        .wait_all(end, Duration::from_secs(30))
        .await
}

fn on_hand(pipeline: &Pipeline) -> BTreeMap<(String, String), i64> {
    let mut got = BTreeMap::new();
    for sku in SKUS {
        let (answers, _) = pipeline.shared.view.read(&Sku::from(sku));
        for a in answers.unwrap_or_default() {
            got.insert(
                (a.location.to_string(), sku.to_string()),
                a.position.on_hand,
            );
        }
    }
    got
}

/// The node the pipeline's direct reader is connected to.
async fn readers_node(cluster: &NatsCluster) -> usize {
    cluster
        .node_with_connection("retailflow-ingest")
        .await
        .expect("the direct reader is connected to a node")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_survives_losing_the_node_it_reads_from() {
    let mut cluster = NatsCluster::start(STARTED_WITHIN).await.expect("cluster");
    let mut cfg = config(&format!("127.0.0.1:{},{}", free_port(), cluster.url()));
    cfg.streams.replicas = 3;
    cfg.snapshot.enabled = true;
    cfg.leader.elect = true;
    let mut pipeline = Pipeline::start(cfg)
        .await
        .expect("starts with a dead server listed first");
    let js = jetstream::new(client(&cluster.url()).await);
    let (mut seq, mut oracle) = (0u64, BTreeMap::new());

    receipts(&js, &mut seq, 200, &mut oracle).await;
    assert!(applied(&pipeline, &js).await, "the first events applied");
    assert_eq!(on_hand(&pipeline), oracle);
    // The streams (events, postings, dead letters, finance, audit), the snapshot object
    // store, its pointer bucket and the leader lease: three copies each.
    let streams: Vec<stream::Info> = js.streams().try_collect().await.expect("streams");
    assert_eq!(
        streams.len(),
        8,
        "{:?}",
        streams.iter().map(|s| &s.config.name).collect::<Vec<_>>()
    );
    for s in &streams {
        assert_eq!(s.config.num_replicas, 3, "{}", s.config.name);
    }

    // A crash of the reader's node.
    let first = readers_node(&cluster).await;
    cluster.kill(first);
    receipts(&js, &mut seq, 150, &mut oracle).await;
    assert!(
        applied(&pipeline, &js).await,
        "applied after node {first} crashed"
    );
    let second = readers_node(&cluster).await;
    assert_ne!(second, first, "the reader moved off the crashed node");
    assert_eq!(on_hand(&pipeline), oracle);

    // Back on its store; then the node the reader moved to restarts gracefully.
    cluster.restart(first).expect("node restarts on its store");
    assert!(
        cluster.wait_streams_current(Duration::from_secs(30)).await,
        "the restarted node caught up"
    );
    cluster.lame_duck(second).expect("lame duck mode");
    receipts(&js, &mut seq, 150, &mut oracle).await;
    assert!(
        applied(&pipeline, &js).await,
        "applied after node {second} left"
    );
    // Messages still reach it through node {second} until the server announces lame duck
    // mode, after handing over its leaderships; then the reader leaves at once.
    assert!(
        wait_until(Duration::from_secs(15), || async {
            cluster
                .node_with_connection("retailflow-ingest")
                .await
                .is_some_and(|n| n != second)
        })
        .await,
        "the reader left node {second} in lame duck mode"
    );
    receipts(&js, &mut seq, 50, &mut oracle).await;
    assert!(
        applied(&pipeline, &js).await,
        "applied after the reader moved"
    );

    assert_eq!(
        on_hand(&pipeline),
        oracle,
        "availability equals the receipts published, none lost or applied twice"
    );
    let letters = pipeline.shared.metrics.dead_letters.load(Relaxed);
    assert_eq!(letters, 0, "no event dead-lettered");
    // Not the graceful shutdown: its final snapshot would wait for the object store's
    // streams to elect leaders again, which other tests need not pay for.
    pipeline.stop_now().await;
}
