//! The raw JetStream ceiling, measured in the same run: the same number of messages with the
//! same payload sizes and a `Nats-Msg-Id` header like the events carry, published to a scratch
//! stream, drained by an ordered consumer doing no work.
//!
//! The ordered consumer is read the fastest way this code knows: the direct pull reader
//! ingest itself uses (`bus::pull`), pulling the pipeline's batch size, checking only that
//! sequences come in order without a gap. Read through async-nats instead, the client's own
//! cost per message bounded the drain: once ingest read directly, the whole pipeline drained
//! faster than an async-nats ordered consumer doing nothing (ratios above 1). That drain is
//! still measured once and reported, as the figure a client built on async-nats would see.
//!
//! The drains run under the same shopper load the pipeline's drain ran under (the caller
//! starts it around [`Scratch::drain_loaded`]), so the ratio compares like with like: the
//! pipeline's work is the only difference. One more direct drain after the load has stopped
//! tells what the broker delivers on an otherwise quiet machine.
//!
//! The stream is drained [`DRAINS`] times, each by a new consumer from the first message, and
//! the ceiling is the median rate, so that one unlucky or lucky drain (a broker GC, a
//! neighbour on the host) does not set the ratio. It smooths noise within a run only: all
//! three drains share the run's machine state, and on one 2-core machine the ceilings of
//! separate runs of the same scenario still ranged from 225k to 304k msg/s. The report keeps
//! every drain's rate, in drain order.

use super::report::Ceiling;
use async_nats::jetstream::{self, consumer, consumer::pull::OrderedConfig, stream};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use retailflow::bus::pull::{self, Pull, PullOptions};
use std::time::{Duration, Instant};

pub const STREAM: &str = "RETAILFLOW_CEILING";

/// Where and how the direct drains connect and pull.
pub struct Direct<'a> {
    pub url: &'a str,
    pub token: Option<&'a str>,
    /// Messages per pull request: the pipeline's `ingest.batch`.
    pub batch: usize,
}

/// The scratch stream, filled and ready to drain.
pub struct Scratch {
    js: jetstream::Context,
    sizes: Vec<u32>,
    publish_s: f64,
}

/// What [`Scratch::drain_loaded`] measured.
pub struct Loaded {
    /// Seconds of each direct drain, in order.
    pub direct: Vec<f64>,
    /// Seconds of the drain through async-nats.
    pub through_async_nats: f64,
}

impl Scratch {
    /// Creates the scratch stream (replacing a leftover one) and publishes the messages.
    pub async fn fill(client: &async_nats::Client, sizes: &[u32]) -> Result<Scratch, String> {
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
        let scratch = Scratch {
            js,
            sizes: sizes.to_vec(),
            publish_s: 0.0,
        };
        match scratch.publish().await {
            Ok(publish_s) => Ok(Scratch {
                publish_s,
                ..scratch
            }),
            Err(e) => {
                scratch.delete().await;
                Err(e)
            }
        }
    }

    async fn publish(&self) -> Result<f64, String> {
        let sizes = &self.sizes;
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
            let ack = self
                .js
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
        Ok(publish_start.elapsed().as_secs_f64())
    }

    /// The drains that make the ceiling, [`DRAINS`] direct ones and one through async-nats;
    /// the caller runs its shopper load around this.
    pub async fn drain_loaded(&self, direct: &Direct<'_>) -> Result<Loaded, String> {
        let count = self.sizes.len();
        let mut drains = Vec::with_capacity(DRAINS);
        for _ in 0..DRAINS {
            drains.push(drain_direct(&self.js, direct, count).await?);
        }
        Ok(Loaded {
            direct: drains,
            through_async_nats: drain(&self.js, count).await?,
        })
    }

    /// One direct drain, for the quiet-machine figure.
    pub async fn drain_quiet(&self, direct: &Direct<'_>) -> Result<f64, String> {
        drain_direct(&self.js, direct, self.sizes.len()).await
    }

    /// The report's ceiling from the drains; `ratio` is left for the caller.
    pub fn ceiling(&self, loaded: &Loaded, quiet: f64, query_rate: f64) -> Ceiling {
        let count = self.sizes.len();
        let (seconds, rate) = median(&loaded.direct, count);
        Ceiling {
            messages: count as u64,
            bytes: self.sizes.iter().map(|s| u64::from(*s)).sum(),
            seconds,
            rate,
            publish_rate: count as f64 / self.publish_s.max(1e-9),
            ratio: 0.0,
            drain_rates: loaded.direct.iter().map(|d| rate_of(count, *d)).collect(),
            async_nats_rate: Some(rate_of(count, loaded.through_async_nats)),
            quiet_rate: Some(rate_of(count, quiet)),
            query_rate,
        }
    }

    /// Deletes the scratch stream: it is as large as the trading load.
    pub async fn delete(&self) {
        let _ = self.js.delete_stream(STREAM).await;
    }
}

/// Drains of the scratch stream per measurement; the ceiling is their median.
pub const DRAINS: usize = 3;

/// Reads all `count` messages of a new ordered consumer with the direct pull reader; returns
/// the seconds it took. The consumer is configured as async-nats configures its ordered ones
/// (ephemeral, no acks, one delivery, in memory); like them it fails on a sequence gap.
async fn drain_direct(
    js: &jetstream::Context,
    direct: &Direct<'_>,
    count: usize,
) -> Result<f64, String> {
    let consumer = js
        .get_stream(STREAM)
        .await
        .map_err(|e| e.to_string())?
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            max_deliver: 1,
            memory_storage: true,
            num_replicas: 1,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let name = consumer.cached_info().name.clone();
    let opts = PullOptions {
        batch: direct.batch.max(1),
        heartbeat: Duration::from_secs(1),
        expires: Duration::from_secs(10),
        name: "retailflow-ceiling".into(),
    };
    let mut pull = Pull::open(direct.url, direct.token, STREAM, &name, &opts)
        .await
        .map_err(|e| format!("direct pull: {e}"))?;
    let start = Instant::now();
    let mut got = 0usize;
    let mut gap = None;
    while got < count {
        let next = pull.next_batch(opts.batch, |m| {
            got += 1;
            let seq = pull::ack_seq(m.reply).map(|(s, _)| s);
            if seq != Some(got as u64) && gap.is_none() {
                gap = Some((got, seq));
            }
            std::hint::black_box(m.payload);
        });
        match tokio::time::timeout(Duration::from_secs(30), next).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("direct pull after {got} messages: {e}")),
            Err(_) => return Err(format!("ceiling drain stalled after {got} messages")),
        }
        if let Some((at, seq)) = gap {
            return Err(format!(
                "ordered drain out of order: message {at} had stream sequence {seq:?}"
            ));
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Reads all `count` messages with a new async-nats ordered consumer; returns the seconds it
/// took.
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
