//! The raw JetStream ceiling, measured in the same run: the same number of messages with the
//! same payload sizes and a `Nats-Msg-Id` header like the events carry, published to a scratch
//! stream, drained by an ordered consumer doing no work.

use super::report::Ceiling;
use async_nats::jetstream::{self, consumer::pull::OrderedConfig, stream};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use std::time::{Duration, Instant};

pub const STREAM: &str = "RETAILFLOW_CEILING";

pub async fn measure(client: &async_nats::Client, sizes: &[u32]) -> Result<Ceiling, String> {
    let js = jetstream::new(client.clone());
    let _ = js.delete_stream(STREAM).await;
    js.create_stream(stream::Config {
        name: STREAM.into(),
        subjects: vec!["retailflow.ceiling.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("creating {STREAM}: {e}"))?;
    let largest = sizes.iter().copied().max().unwrap_or(0) as usize;
    // Incompressible-looking filler; content does not matter, sizes do.
    let filler: Vec<u8> = (0..largest.max(1)).map(|i| (i * 131 % 251) as u8).collect();
    let bytes = bytes::Bytes::from(filler);
    let mut acks = FuturesOrdered::new();
    let publish_start = Instant::now();
    for (i, &size) in sizes.iter().enumerate() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            "Nats-Msg-Id",
            format!("pos/S{:04}/t1#{i}", i % 300).as_str(),
        );
        let ack = js
            .publish_with_headers(
                format!("retailflow.ceiling.s{}", i % 64),
                headers,
                bytes.slice(0..size as usize),
            )
            .await
            .map_err(|e| e.to_string())?;
        acks.push_back(std::future::IntoFuture::into_future(ack));
        if acks.len() >= 4096 {
            if let Some(r) = acks.next().await {
                r.map_err(|e| e.to_string())?;
            }
        }
    }
    while let Some(r) = acks.next().await {
        r.map_err(|e| e.to_string())?;
    }
    let publish_s = publish_start.elapsed().as_secs_f64();
    let consumer = js
        .get_stream(STREAM)
        .await
        .map_err(|e| e.to_string())?
        .create_consumer(OrderedConfig::default())
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut got = 0usize;
    while got < sizes.len() {
        match tokio::time::timeout(Duration::from_secs(30), messages.next()).await {
            Ok(Some(Ok(m))) => {
                std::hint::black_box(&m.payload);
                got += 1;
            }
            Ok(Some(Err(e))) => return Err(format!("ordered consumer: {e}")),
            _ => return Err(format!("ceiling drain stalled after {got} messages")),
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let _ = js.delete_stream(STREAM).await;
    Ok(Ceiling {
        messages: sizes.len() as u64,
        bytes: sizes.iter().map(|s| u64::from(*s)).sum(),
        seconds,
        rate: sizes.len() as f64 / seconds.max(1e-9),
        publish_rate: sizes.len() as f64 / publish_s.max(1e-9),
        ratio: 0.0,
    })
}
