//! The availability change feed against a real nats-server: one coalesced message per SKU per
//! window carrying the latest state, channel availability included, reservations reflected,
//! and a reset when the view is rebuilt or a channel changes.

use futures::StreamExt;
use retailflow::domain::*;
use retailflow::query::feed::{AtpChanged, AtpReset};
use retailflow::supervise::pipeline::Pipeline;
use retailflow::testing::*;
use serde_json::json;
use std::time::Duration;

enum Feed {
    Changed(AtpChanged),
    Reset(AtpReset),
}

/// Reads feed messages until `done` says stop or `limit` passes; returns all it read.
async fn read_until(
    sub: &mut async_nats::Subscriber,
    limit: Duration,
    mut done: impl FnMut(&Feed) -> bool,
) -> Vec<Feed> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, sub.next()).await {
        let item = if msg.subject.as_str() == subject::ATP_RESET {
            Feed::Reset(serde_json::from_slice(&msg.payload).expect("reset body"))
        } else {
            let body: AtpChanged = serde_json::from_slice(&msg.payload).expect("changed body");
            assert_eq!(
                msg.subject.as_str(),
                subject::changed(&body.sku),
                "subject names the sku"
            );
            Feed::Changed(body)
        };
        let stop = done(&item);
        seen.push(item);
        if stop {
            break;
        }
    }
    seen
}

fn changes<'a>(seen: &'a [Feed], sku: &str) -> Vec<&'a AtpChanged> {
    seen.iter()
        .filter_map(|f| match f {
            Feed::Changed(c) if c.sku == sku => Some(c),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_announces_each_sku_once_per_window_with_its_latest_state() {
    let server = nats();
    let mut cfg = config(&server.url());
    cfg.feed.interval = Duration::from_millis(400);
    let nc = client(&server.url()).await;
    let mut sub = nc.subscribe("retail.v1.atp.>").await.unwrap();
    nc.flush().await.unwrap();
    let pipeline = Pipeline::start(cfg).await.expect("pipeline starts");
    let js = async_nats::jetstream::new(nc.clone());

    // A fresh view announces itself with a reset.
    let seen = read_until(
        &mut sub,
        Duration::from_secs(10),
        |f| matches!(f, Feed::Reset(r) if r.reason == "rebuilt"),
    )
    .await;
    assert!(
        matches!(seen.last(), Some(Feed::Reset(r)) if r.reason == "rebuilt"),
        "a start is announced as a reset"
    );

    // A channel appearing is a reset too.
    let mut seq = 0;
    let mut send = async |source: &str, e: Event| {
        seq += 1;
        publish(&js, &envelope(source, seq, e), false, true).await
    };
    for (loc, priority) in [("DC1", 1), ("DC2", 2)] {
        send(
            "mdm/test",
            Event::LocationUpsert(LocationUpsert {
                location: loc.into(),
                kind: LocationKind::Dc,
                channels: vec!["web".into()],
                priority,
            }),
        )
        .await;
    }
    let seen = read_until(
        &mut sub,
        Duration::from_secs(10),
        |f| matches!(f, Feed::Reset(r) if r.reason == "channels"),
    )
    .await;
    assert!(matches!(seen.last(), Some(Feed::Reset(r)) if r.reason == "channels"));

    // Fifty receipts of one unit in a burst, and one receipt of another SKU elsewhere.
    for _ in 0..50 {
        send("wms/DC1", receipt("DC1", "A", 1)).await;
    }
    let last = send("wms/DC2", receipt("DC2", "B", 7)).await;
    let (mut a_done, mut b_done) = (false, false);
    let mut seen = read_until(&mut sub, Duration::from_secs(10), |f| {
        if let Feed::Changed(c) = f {
            a_done |= c.sku == "A" && c.locations[0].on_hand == 50;
            b_done |= c.sku == "B";
        }
        a_done && b_done
    })
    .await;
    // Anything still coming for these SKUs would be a message too many.
    seen.extend(read_until(&mut sub, Duration::from_secs(1), |_| false).await);
    let a = changes(&seen, "A");
    let b = changes(&seen, "B");
    assert!(!a.is_empty() && !b.is_empty(), "both SKUs announced");
    assert!(
        a.len() < 10,
        "50 changes inside a few windows are coalesced ({} messages)",
        a.len()
    );
    let a_last = a.last().unwrap();
    assert_eq!(a_last.locations.len(), 1);
    assert_eq!(a_last.locations[0].location, "DC1");
    assert_eq!(a_last.locations[0].on_hand, 50, "latest state, not a delta");
    assert_eq!(a_last.channels.len(), 1);
    assert_eq!(
        (
            a_last.channels[0].channel.as_str(),
            a_last.channels[0].available
        ),
        ("web", 50)
    );
    let b_last = b.last().unwrap();
    assert_eq!(b_last.locations[0].on_hand, 7);
    assert!(
        b_last.as_of >= last,
        "the last event for B is reflected ({} < {last})",
        b_last.as_of
    );
    assert!(
        seen.iter().all(|f| matches!(f, Feed::Changed(_))),
        "no reset without a reason"
    );

    // A reservation changes reserved and availability, and is announced.
    let base = format!("http://{}", pipeline.http_addr().unwrap());
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/reservations"))
        .json(
            &json!({"sku": "A", "qty": 3, "channel": "web", "ttl_seconds": 600,
                      "idempotency_key": "cart-1"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let seen = read_until(
        &mut sub,
        Duration::from_secs(10),
        |f| matches!(f, Feed::Changed(c) if c.sku == "A"),
    )
    .await;
    let a = changes(&seen, "A");
    let p = &a.last().expect("the reservation is announced").locations[0];
    assert_eq!((p.on_hand, p.reserved, p.available), (50, 3, 47));
    assert_eq!(a.last().unwrap().channels[0].available, 47);
    assert!(
        changes(&seen, "B").is_empty(),
        "an unchanged SKU stays quiet"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_can_be_switched_off() {
    let server = nats();
    let mut cfg = config(&server.url());
    cfg.feed.enabled = false;
    let pipeline = Pipeline::start(cfg).await.expect("pipeline starts");
    let nc = client(&server.url()).await;
    let mut sub = nc.subscribe("retail.v1.atp.>").await.unwrap();
    nc.flush().await.unwrap();
    let js = async_nats::jetstream::new(nc.clone());
    let last = publish(
        &js,
        &envelope("wms/DC1", 1, receipt("DC1", "A", 5)),
        false,
        true,
    )
    .await;
    assert!(
        pipeline
            .shared
            .view
            .wait_all(last, Duration::from_secs(10))
            .await
    );
    let seen = read_until(&mut sub, Duration::from_secs(1), |_| false).await;
    assert!(seen.is_empty(), "nothing published with the feed off");
}
