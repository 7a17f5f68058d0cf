//! The direct pull reader (`bus::pull`) against a real nats-server: every message arrives once,
//! in stream order, byte for byte, across batches, buffer growth and expired pull requests;
//! a token is sent and a wrong one is a clear error; TLS is left to async-nats; a lost server or consumer ends the
//! pull with an error instead of a hang.

use async_nats::jetstream::{self, consumer, stream};
use retailflow::bus::pull::{self, Pull, PullError, PullOptions};
use retailflow::bus::server::NatsServer;
use retailflow::testing::*;
use std::time::Duration;

const STREAM: &str = "PULLTEST";

fn options(batch: usize) -> PullOptions {
    PullOptions {
        batch,
        heartbeat: Duration::from_millis(500),
        expires: Duration::from_secs(2),
        name: "pull-test".into(),
    }
}

async fn stream_and_consumer(js: &jetstream::Context) -> String {
    let s = js
        .create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec!["pt.>".into()],
            ..Default::default()
        })
        .await
        .expect("stream");
    let c = s
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .expect("consumer");
    c.cached_info().name.clone()
}

/// What the test published, to compare with what the reader hands over.
#[derive(Debug, PartialEq, Clone)]
struct Sent {
    seq: u64,
    subject: String,
    id: Option<String>,
    content_type: Option<String>,
    payload: Vec<u8>,
}

fn got(m: pull::Raw<'_>) -> Sent {
    let text = |v: &[u8]| String::from_utf8(v.to_vec()).expect("utf-8 header");
    Sent {
        seq: pull::ack_seq(m.reply).expect("JetStream reply subject").0,
        subject: String::from_utf8(m.subject.to_vec()).expect("utf-8 subject"),
        id: pull::header(m.headers, "Nats-Msg-Id").map(text),
        content_type: pull::header(m.headers, "Content-Type").map(text),
        payload: m.payload.to_vec(),
    }
}

/// Reads until `want` messages arrived or `limit` passed.
async fn read(pull: &mut Pull, batch: usize, want: usize, limit: Duration) -> Vec<Sent> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while out.len() < want {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let n = tokio::time::timeout(left, pull.next_batch(batch, |m| out.push(got(m))))
            .await
            .expect("messages within the limit")
            .expect("pull goes on");
        assert!(n >= 1 && n <= batch, "a batch of {n}");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_arrives_once_in_order_byte_for_byte() {
    let server = nats();
    let js = jetstream::new(client(&server.url()).await);
    let name = stream_and_consumer(&js).await;

    let mut sent = Vec::new();
    for i in 0..3000u64 {
        // Mostly small events; now and then an empty one, and a few larger than the reader's
        // 1 MiB buffer would hold twice, so it must move and grow it.
        let size = match i {
            _ if i % 997 == 5 => 900_000,
            _ if i % 101 == 0 => 0,
            _ => 20 + (i * 37 % 600) as usize,
        };
        let payload: Vec<u8> = (0..size).map(|k| (k as u64 * 7 + i) as u8).collect();
        let subject = format!("pt.s{}.sale", i % 13);
        let mut headers = async_nats::HeaderMap::new();
        let id = (i % 5 != 0).then(|| format!("src/{}#{i}", i % 13));
        if let Some(id) = &id {
            headers.insert("Nats-Msg-Id", id.as_str());
        }
        let content_type = (i % 7 == 0).then(|| "application/json".to_string());
        if let Some(ct) = &content_type {
            headers.insert("Content-Type", ct.as_str());
        }
        let ack = if id.is_none() && content_type.is_none() {
            // No headers at all: the server delivers a plain MSG.
            js.publish(subject.clone(), payload.clone().into()).await
        } else {
            js.publish_with_headers(subject.clone(), headers, payload.clone().into())
                .await
        }
        .expect("publish")
        .await
        .expect("stored");
        sent.push(Sent {
            seq: ack.sequence,
            subject,
            id,
            content_type,
            payload,
        });
    }

    let mut pull = Pull::open(&server.url(), None, STREAM, &name, &options(100))
        .await
        .expect("direct pull opens");
    let received = read(&mut pull, 100, sent.len(), Duration::from_secs(60)).await;
    assert_eq!(received.len(), sent.len());
    for (g, s) in received.iter().zip(&sent) {
        assert_eq!(g, s, "message {}", s.seq);
    }

    // Idle for longer than a pull request lives: requests expire (408) and are renewed, so a
    // message published afterwards still arrives.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ack = js
        .publish("pt.late", "after the pause".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    let late = read(&mut pull, 100, 1, Duration::from_secs(10)).await;
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].seq, ack.sequence);
    assert_eq!(late[0].payload, b"after the pause");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_sent_and_a_wrong_one_is_a_clear_error() {
    let server = NatsServer::start_with(&["--auth", "t0ken"]).expect("server");
    let client = async_nats::ConnectOptions::with_token("t0ken".into())
        .connect(server.url())
        .await
        .expect("async-nats connects with the token");
    let js = jetstream::new(client);
    let name = stream_and_consumer(&js).await;
    let mut pull = Pull::open(&server.url(), Some("t0ken"), STREAM, &name, &options(10))
        .await
        .expect("the token is accepted");
    js.publish("pt.x", "hello".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    let got = read(&mut pull, 10, 1, Duration::from_secs(10)).await;
    assert_eq!(got[0].payload, b"hello");

    for token in [None, Some("wrong")] {
        let err = Pull::open(&server.url(), token, STREAM, &name, &options(10))
            .await
            .err()
            .expect("refused");
        assert!(
            err.to_string().to_lowercase().contains("authorization"),
            "{token:?}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_left_to_async_nats() {
    let err = Pull::open("tls://127.0.0.1:1", None, STREAM, "c", &options(10))
        .await
        .err()
        .expect("not spoken here");
    assert!(matches!(err, PullError::Unsupported(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_server_or_consumer_ends_the_pull_with_an_error() {
    let mut server = nats();
    let js = jetstream::new(client(&server.url()).await);
    let name = stream_and_consumer(&js).await;
    let mut pull = Pull::open(&server.url(), None, STREAM, &name, &options(10))
        .await
        .expect("opens");

    // The consumer deleted under it: the server says so, or the heartbeats stop.
    let s = js.get_stream(STREAM).await.expect("stream");
    s.delete_consumer(&name).await.expect("deleted");
    let err = tokio::time::timeout(Duration::from_secs(10), pull.next_batch(10, |_| {}))
        .await
        .expect("an answer, not a hang")
        .expect_err("the pull ends");
    assert!(
        matches!(err, PullError::Consumer(_) | PullError::Stalled(_)),
        "{err}"
    );

    let name = s
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("consumer")
        .cached_info()
        .name
        .clone();
    let mut pull = Pull::open(&server.url(), None, STREAM, &name, &options(10))
        .await
        .expect("opens");
    server.kill();
    let err = tokio::time::timeout(Duration::from_secs(10), pull.next_batch(10, |_| {}))
        .await
        .expect("an answer, not a hang")
        .expect_err("the pull ends");
    assert!(
        matches!(
            err,
            PullError::Closed | PullError::Io(_) | PullError::Stalled(_)
        ),
        "{err}"
    );
}
