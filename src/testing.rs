//! Test helpers shared by the service's and the lab's tests: a private nats-server per test, a
//! quick configuration, publishing helpers, the dead-letter reader. Behind the `lab` feature.

use crate::bus::server::NatsServer;
use crate::config::{Config, Storage};
use crate::domain::codec;
use crate::domain::*;
use std::time::Duration;

/// Starts a nats-server on a free port with its own store directory; killed on drop.
pub fn nats() -> NatsServer {
    NatsServer::start()
        .expect("nats-server >= 2.10 must be installed (scripts/install-nats-server.sh)")
}

/// A configuration for tests: fast barriers, HTTP on a free port, no ERP endpoint, no leader
/// election.
pub fn config(url: &str) -> Config {
    let mut c = Config::default();
    c.nats.url = url.to_string();
    c.streams.storage = Storage::File;
    c.shards.count = 3;
    c.barrier.interval = Duration::from_millis(100);
    c.barrier.flush_interval = Duration::from_millis(200);
    c.snapshot.interval = Duration::from_millis(500);
    c.api.http = "127.0.0.1:0".into();
    c.api.max_wait = Duration::from_secs(2);
    c.erp.clear();
    // One pipeline alone leads without a lease, so a test's timing never waits on a lease
    // round; the tests of replicas and of the cluster turn the election on.
    c.leader.elect = false;
    c
}

/// Connects to the test server, retrying for a few seconds (it may still be starting).
pub async fn client(url: &str) -> async_nats::Client {
    let mut tries = 0;
    loop {
        match async_nats::connect(crate::bus::servers(url)).await {
            Ok(c) => return c,
            Err(error) if tries < 50 => {
                tries += 1;
                tracing::debug!(%error, "test nats-server not reachable yet");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("connect to the test nats-server {url}: {error}"),
        }
    }
}

/// Publishes an envelope as MessagePack (or JSON) to its subject, with `Nats-Msg-Id` unless
/// `with_id` is false (a producer re-sending after JetStream's duplicate window).
pub async fn publish(
    js: &async_nats::jetstream::Context,
    env: &Envelope,
    json: bool,
    with_id: bool,
) -> u64 {
    let subject = env.subject(
        &["pos".into(), "web".into(), "wms".into(), "mdm".into()],
        "pos",
    );
    let mut headers = async_nats::HeaderMap::new();
    if with_id {
        headers.insert("Nats-Msg-Id", env.id.as_str());
    }
    let payload = if json {
        headers.insert(codec::CONTENT_TYPE, codec::JSON);
        serde_json::to_vec(env).unwrap()
    } else {
        codec::encode_msgpack(env).unwrap()
    };
    publish_raw(js, &subject, headers, payload).await
}

pub async fn publish_raw(
    js: &async_nats::jetstream::Context,
    subject: &str,
    headers: async_nats::HeaderMap,
    payload: Vec<u8>,
) -> u64 {
    js.publish_with_headers(subject.to_string(), headers, payload.into())
        .await
        .expect("publish")
        .await
        .expect("stored")
        .sequence
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
pub async fn wait_until<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Last sequence of a stream.
pub async fn last_seq(js: &async_nats::jetstream::Context, stream: &str) -> u64 {
    let mut s = js.get_stream(stream).await.expect("stream");
    s.info().await.expect("info").state.last_sequence
}

/// A receipt of `qty` units of one SKU at a location.
pub fn receipt(loc: &str, sku: &str, qty: i64) -> Event {
    Event::Receipt(Receipt {
        location: loc.into(),
        lines: vec![QtyLine {
            sku: sku.into(),
            qty,
        }],
        reference: None,
    })
}

pub fn envelope(source: &str, seq: u64, event: Event) -> Envelope {
    Envelope::new(source, seq, 1_795_770_000_000 + seq as i64, event)
}

/// Publishes `(subject, header block, payload)` with `HPUB` on a plain TCP connection: no
/// client library would build these headers, but nats-server stores and redelivers them as
/// sent. Returns once the server answered the PING after them without an error.
pub async fn hpub_raw(url: &str, messages: &[(&str, &[u8], &[u8])]) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let sock = tokio::net::TcpStream::connect(url.trim_start_matches("nats://"))
        .await
        .expect("connect");
    let mut sock = BufReader::new(sock);
    let mut line = String::new();
    sock.read_line(&mut line).await.expect("INFO");
    assert!(line.starts_with("INFO"), "{line}");
    let mut out =
        b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"protocol\":1}\r\n"
            .to_vec();
    for (subject, headers, payload) in messages {
        out.extend_from_slice(
            format!(
                "HPUB {subject} {} {}\r\n",
                headers.len(),
                headers.len() + payload.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(headers);
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"PING\r\n");
    sock.get_mut().write_all(&out).await.expect("write");
    let answered = async {
        loop {
            line.clear();
            sock.read_line(&mut line).await.expect("PONG");
            assert!(!line.starts_with("-ERR"), "server refused: {line}");
            assert!(!line.is_empty(), "server closed the connection");
            if line.starts_with("PONG") {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), answered)
        .await
        .expect("PONG in time");
}

/// Every dead letter so far (waiting up to 10 s for `want` of them), by the stream sequence
/// of its original.
pub async fn dead_letters(
    js: &async_nats::jetstream::Context,
    want: usize,
) -> std::collections::BTreeMap<u64, async_nats::jetstream::Message> {
    use futures::StreamExt;
    let mut letters = std::collections::BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while letters.len() < want && tokio::time::Instant::now() < deadline {
        let stream = js.get_stream("RETAIL_DLQ").await.unwrap();
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
            .await
            .unwrap();
        let mut msgs = consumer
            .fetch()
            .max_messages(100)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .unwrap();
        while let Some(Ok(m)) = msgs.next().await {
            let seq: u64 = m
                .headers
                .as_ref()
                .and_then(|h| h.get("Retailflow-Stream-Seq"))
                .and_then(|v| v.as_str().parse().ok())
                .unwrap_or(0);
            letters.insert(seq, m);
        }
    }
    letters
}

/// Asserts that the nats-server configuration file `nats/<relative>` in this repository is
/// valid (`nats-server -t -c`), naming the file and the server's complaint when it is not.
pub fn assert_server_config_valid(relative: &str) {
    let binary = crate::bus::server::find_binary().expect("nats-server");
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("nats")
        .join(relative);
    let out = std::process::Command::new(&binary)
        .arg("-t")
        .arg("-c")
        .arg(&file)
        .output()
        .expect("nats-server runs");
    assert!(
        out.status.success(),
        "{}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A sale line taxed 20% (`VAT20`, rounded down), without discount.
pub fn taxed_line(sku: &str, qty: i64, price: i64) -> ItemLine {
    ItemLine {
        sku: sku.into(),
        qty,
        unit_price: price,
        discount: 0,
        tax_code: "VAT20".into(),
        taxes: vec![TaxLine {
            code: "VAT20".into(),
            amount: qty * price / 5,
        }],
        restock: None,
    }
}

/// A card sale of one line on 2026-11-27 in EUR, taxed 20% (`VAT20`, rounded down).
pub fn card_sale(store: &str, sku: &str, qty: i64, price: i64) -> Event {
    let tax = qty * price / 5;
    Event::Sale(Sale {
        location: store.into(),
        business_day: BusinessDay::parse("2026-11-27").expect("a valid day"),
        currency: Currency::parse("EUR").expect("a valid currency"),
        lines: vec![taxed_line(sku, qty, price)],
        tenders: vec![Tender {
            kind: "card".into(),
            amount: qty * price + tax,
        }],
    })
}

/// An ERP endpoint named `erp` at `url` that tests can drive hard: 200 requests per 2 s, 8 at
/// once, quick retries.
pub fn erp_endpoint(url: String) -> crate::config::ErpEndpointConfig {
    crate::config::ErpEndpointConfig {
        name: "erp".into(),
        url,
        rate: crate::post::ratelimit::RateLimit {
            requests: 200,
            window: Duration::from_secs(2),
            burst: Some(20),
        },
        max_concurrent: 8,
        retry: crate::config::RetryConfig {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(500),
        },
        ..Default::default()
    }
}
