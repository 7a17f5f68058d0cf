//! Publishing generated messages with a bounded number of acks in flight, optionally paced.
//! JetStream stores a connection's publishes in the order they were sent, so the stream order
//! is the generator's order, which is the order the oracle applies.

use super::generate::{Generator, OutKind, Outgoing};
use super::oracle::Oracle;
use async_nats::jetstream;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Default)]
pub struct Published {
    pub messages: u64,
    pub events: u64,
    pub duplicates: u64,
    pub resends: u64,
    pub poison: u64,
    /// Stored as new by JetStream (duplicates with the same `Nats-Msg-Id` are not).
    pub stored: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub bytes: u64,
    /// Payload sizes of stored messages, for the ceiling run.
    pub sizes: Vec<u32>,
    pub elapsed: Duration,
}

/// Sampling hook: called with (stream sequence, publish instant) for every stored message.
pub type OnStored<'a> = &'a mut dyn FnMut(u64, Instant);

/// Where a publish loop stops.
pub enum Until {
    /// Until the setup messages are out.
    SetupDone,
    /// Until the generator is exhausted.
    End,
}

/// Rate in events/s at `t` since start (None: as fast as possible).
///
/// `in_flight` must stay below the JetStream context's own in-flight limit (5,000 by default;
/// see `ContextBuilder::max_ack_inflight`).
pub type Pace<'a> = &'a dyn Fn(Duration) -> Option<f64>;

#[allow(clippy::too_many_arguments)]
pub async fn publish(
    js: &jetstream::Context,
    generator: &mut Generator,
    oracle: &mut Oracle,
    until: Until,
    in_flight: usize,
    pace: Pace<'_>,
    on_stored: OnStored<'_>,
    keep_sizes: bool,
) -> Result<Published, String> {
    let start = Instant::now();
    let mut out = Published::default();
    let mut acks = FuturesOrdered::new();
    let mut sent_at: std::collections::VecDeque<(Instant, u32)> = Default::default();
    let mut credit = 0.0f64;
    let mut last = Instant::now();
    let mut settle = |r: Result<jetstream::publish::PublishAck, _>,
                      at: Instant,
                      size: u32,
                      out: &mut Published|
     -> Result<(), String> {
        let ack: jetstream::publish::PublishAck =
            r.map_err(|e: jetstream::context::PublishError| e.to_string())?;
        if !ack.duplicate {
            out.stored += 1;
            if out.first_seq == 0 {
                out.first_seq = ack.sequence;
            }
            out.last_seq = ack.sequence;
            if keep_sizes {
                out.sizes.push(size);
            }
            on_stored(ack.sequence, at);
        }
        Ok(())
    };
    loop {
        if matches!(until, Until::SetupDone) && generator.setup_len() == 0 {
            break;
        }
        if let Some(rate) = pace(start.elapsed()) {
            // Token pacing: sleep until a message is due.
            let now = Instant::now();
            credit =
                (credit + now.duration_since(last).as_secs_f64() * rate).min(rate.max(1.0) * 0.05);
            last = now;
            if credit < 1.0 {
                let wait = Duration::from_secs_f64((1.0 - credit) / rate.max(1.0));
                // Settle acks while waiting: a sample's sequence is only known from its ack, and
                // the publish-to-visible clock must not include time the ack sat unread.
                let sleep = tokio::time::sleep(wait.max(Duration::from_micros(200)));
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        Some(r) = acks.next(), if !acks.is_empty() => {
                            if let Some((at, size)) = sent_at.pop_front() {
                                settle(r, at, size, &mut out)?;
                            }
                        }
                    }
                }
                continue;
            }
            credit -= 1.0;
        }
        let Some((msg, env)) = generator.next_message() else {
            break;
        };
        if let Some(env) = &env {
            oracle.apply(&env.event);
        }
        let Outgoing {
            subject,
            headers,
            payload,
            kind,
        } = msg;
        match kind {
            OutKind::Event | OutKind::Setup => out.events += 1,
            OutKind::Duplicate => out.duplicates += 1,
            OutKind::Resend => out.resends += 1,
            OutKind::Poison => out.poison += 1,
        }
        out.messages += 1;
        out.bytes += payload.len() as u64;
        let size = payload.len() as u32;
        let ack = js
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|e| e.to_string())?;
        acks.push_back(std::future::IntoFuture::into_future(ack));
        sent_at.push_back((Instant::now(), size));
        // Acks already in: settle them now, for the same reason.
        while let Some(Some(r)) = acks.next().now_or_never() {
            if let Some((at, size)) = sent_at.pop_front() {
                settle(r, at, size, &mut out)?;
            }
        }
        while acks.len() >= in_flight {
            if let (Some(r), Some((at, size))) = (acks.next().await, sent_at.pop_front()) {
                settle(r, at, size, &mut out)?;
            }
        }
    }
    while let (Some(r), Some((at, size))) = (acks.next().await, sent_at.pop_front()) {
        settle(r, at, size, &mut out)?;
    }
    out.elapsed = start.elapsed();
    Ok(out)
}

/// A JetStream context for a load generator publishing with `in_flight` acks outstanding: the
/// context's own in-flight limit must exceed ours, or publishing waits for acks nobody polls.
pub fn load_context(client: async_nats::Client, in_flight: usize) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .max_ack_inflight(in_flight.max(1) * 2)
        .build(client)
}

/// Publishes the generator's setup (master data, opening stock) as fast as acks allow.
pub async fn setup(
    js: &jetstream::Context,
    generator: &mut Generator,
    oracle: &mut Oracle,
    in_flight: usize,
) -> Result<Published, String> {
    let mut none = |_: u64, _: Instant| {};
    publish(
        js,
        generator,
        oracle,
        Until::SetupDone,
        in_flight,
        &|_| None,
        &mut none,
        false,
    )
    .await
}

/// An envelope from `source` with its own sequence number, stamped now.
pub fn envelope(
    source: &str,
    seq: u64,
    event: retailflow::domain::Event,
) -> retailflow::domain::Envelope {
    retailflow::domain::Envelope::new(source, seq, retailflow::snapshot::ticker::now_ms(), event)
}

/// Publishes envelopes with up to 2,000 acks outstanding; returns the last stream sequence.
pub async fn publish_envelopes(
    js: &async_nats::jetstream::Context,
    systems: &[String],
    envelopes: impl Iterator<Item = retailflow::domain::Envelope>,
) -> anyhow::Result<u64> {
    let mut acks = FuturesOrdered::new();
    let mut last = 0;
    for env in envelopes {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", env.id.as_str());
        let payload = retailflow::domain::codec::encode_msgpack(&env)?;
        let ack = js
            .publish_with_headers(env.subject(systems, "pos"), headers, payload.into())
            .await?;
        acks.push_back(std::future::IntoFuture::into_future(ack));
        while acks.len() >= 2_000 {
            if let Some(a) = acks.next().await {
                last = a?.sequence;
            }
        }
    }
    while let Some(a) = acks.next().await {
        last = a?.sequence;
    }
    Ok(last)
}
