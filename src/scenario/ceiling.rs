//! The raw JetStream ceiling, measured in the same run: the same number of messages with the
//! same payload sizes and a `Nats-Msg-Id` header like the events carry, published to a scratch
//! stream, drained by an ordered consumer doing no work.
//!
//! The stream is drained [`DRAINS`] times, each by a new consumer from the first message, and
//! the ceiling is the median rate, so that one unlucky or lucky drain (a broker GC, a
//! neighbour on the host) does not set the ratio. It smooths noise within a run only: all
//! three drains share the run's machine state, and on one 2-core machine the ceilings of
//! separate runs of the same scenario still ranged from 225k to 304k msg/s. The report keeps
//! every drain's rate, in drain order.

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
    let drained = async {
        let mut drains = Vec::with_capacity(DRAINS);
        for _ in 0..DRAINS {
            drains.push(drain(&js, sizes.len()).await?);
        }
        Ok::<_, String>(drains)
    }
    .await;
    // The scratch stream is as large as the trading load: it goes, whatever happened.
    let _ = js.delete_stream(STREAM).await;
    let drains = drained?;
    let (seconds, rate) = median(&drains, sizes.len());
    Ok(Ceiling {
        messages: sizes.len() as u64,
        bytes: sizes.iter().map(|s| u64::from(*s)).sum(),
        seconds,
        rate,
        publish_rate: sizes.len() as f64 / publish_s.max(1e-9),
        ratio: 0.0,
        drain_rates: drains.iter().map(|d| rate_of(sizes.len(), *d)).collect(),
    })
}

/// Drains of the scratch stream per measurement; the ceiling is their median.
pub const DRAINS: usize = 3;

/// Reads all `count` messages with a new ordered consumer; returns the seconds it took.
async fn drain(js: &jetstream::Context, count: usize) -> Result<f64, String> {
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
    while got < count {
        match tokio::time::timeout(Duration::from_secs(30), messages.next()).await {
            Ok(Some(Ok(m))) => {
                std::hint::black_box(&m.payload);
                got += 1;
            }
            Ok(Some(Err(e))) => return Err(format!("ordered consumer: {e}")),
            _ => return Err(format!("ceiling drain stalled after {got} messages")),
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

/// The median drain (by time, so by rate too) and its rate.
fn median(seconds: &[f64], count: usize) -> (f64, f64) {
    let mut sorted = seconds.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
    (mid, rate_of(count, mid))
}

/// Messages per second of a drain of `count` messages that took `seconds`.
fn rate_of(count: usize, seconds: f64) -> f64 {
    count as f64 / seconds.max(1e-9)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_ceiling_is_the_middle_drain() {
        // 1,000 messages in 4 s, 5 s and 2 s: 250, 200 and 500 msg/s; the middle is 250.
        assert_eq!(super::median(&[4.0, 5.0, 2.0], 1000), (4.0, 250.0));
        assert_eq!(super::median(&[3.0], 600), (3.0, 200.0));
        // Ties and equal drains.
        assert_eq!(super::median(&[2.0, 4.0, 2.0], 100), (2.0, 50.0));
        assert_eq!(super::median(&[5.0, 5.0, 5.0], 100), (5.0, 20.0));
    }
}
