//! Publishing generated messages with a bounded number of acks in flight, optionally paced.
//! JetStream stores a connection's publishes in the order they were sent, so the stream order
//! is the generator's order, which is the order the oracle applies. A publish whose ack fails
//! (the stream's leader died and a cluster is electing another) is sent again with the same
//! `Nats-Msg-Id`, as a producer should, for up to [`REPUBLISH_FOR`]; it then lands later in
//! the stream than its neighbours, which per-source ordering in retailflow absorbs.

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

/// How long a publish whose ack failed is tried again before the run gives up.
pub const REPUBLISH_FOR: Duration = Duration::from_secs(60);

/// A message in flight: kept until its ack comes, to be sent again if the ack fails.
struct InFlight {
    at: Instant,
    subject: String,
    headers: async_nats::HeaderMap,
    payload: bytes::Bytes,
    /// The event, when the oracle applies events in stream order (see [`Oracle::holds`]).
    event: Option<retailflow::domain::Event>,
}

type Ack = futures::future::BoxFuture<
    'static,
    Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
>;

/// Sends `m`; its ack to come. One that could not even be sent (the connection's buffer is
/// full) is an ack that failed, so [`confirmed`] sends it again.
async fn send(js: &jetstream::Context, m: &InFlight) -> Ack {
    let sent = js
        .publish_with_headers(m.subject.clone(), m.headers.clone(), m.payload.clone())
        .await;
    match sent {
        Ok(ack) => std::future::IntoFuture::into_future(ack).boxed(),
        Err(e) => {
            let kind = jetstream::context::PublishErrorKind::Other;
            let e = jetstream::context::PublishError::with_source(kind, e);
            futures::future::ready(Err(e)).boxed()
        }
    }
}

/// The ack of a message, sending it again while acks fail, for up to [`REPUBLISH_FOR`].
/// Returns the ack and whether it came from a repeat (whose `duplicate` then means that an
/// earlier attempt was stored after all).
async fn confirmed(
    js: &jetstream::Context,
    first: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
    m: &InFlight,
) -> Result<(jetstream::publish::PublishAck, bool), String> {
    let mut error = match first {
        Ok(ack) => return Ok((ack, false)),
        Err(e) => e.to_string(),
    };
    let until = Instant::now() + REPUBLISH_FOR;
    let mut sent_at = m.at;
    while Instant::now() < until {
        // An attempt that failed at once (no stream leader yet) waits a little before the
        // next; one that failed by timing out is sent again straight away.
        let pause = Duration::from_millis(250).saturating_sub(sent_at.elapsed());
        tokio::time::sleep(pause).await;
        sent_at = Instant::now();
        let sent = js
            .publish_with_headers(m.subject.clone(), m.headers.clone(), m.payload.clone())
            .await;
        match sent {
            Ok(ack) => match ack.await {
                Ok(ack) => return Ok((ack, true)),
                Err(e) => error = e.to_string(),
            },
            Err(e) => error = e.to_string(),
        }
    }
    Err(format!(
        "publishing to {} failed for {REPUBLISH_FOR:?}: {error}",
        m.subject
    ))
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
    let mut sent_at: std::collections::VecDeque<InFlight> = Default::default();
    let mut credit = 0.0f64;
    let mut last = Instant::now();
    let mut settle = |(ack, repeated): (jetstream::publish::PublishAck, bool),
                      m: InFlight,
                      out: &mut Published,
                      oracle: &mut Oracle| {
        // A repeat's duplicate was stored by an earlier attempt: it counts as stored.
        if !ack.duplicate || repeated {
            if let Some(e) = m.event {
                oracle.stored(ack.sequence, e);
            }
            out.stored += 1;
            if out.first_seq == 0 {
                out.first_seq = ack.sequence;
            }
            out.last_seq = out.last_seq.max(ack.sequence);
            if keep_sizes {
                out.sizes.push(m.payload.len() as u32);
            }
            on_stored(ack.sequence, m.at);
        }
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
                            if let Some(m) = sent_at.pop_front() {
                                settle(confirmed(js, r, &m).await?, m, &mut out, oracle);
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
        let mut event = None;
        if let Some(env) = env {
            if oracle.holds() {
                event = Some(env.event);
            } else {
                oracle.apply(&env.event);
            }
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
        let m = InFlight {
            at: Instant::now(),
            subject,
            headers,
            payload,
            event,
        };
        acks.push_back(send(js, &m).await);
        sent_at.push_back(m);
        // Acks already in: settle them now, for the same reason.
        while let Some(Some(r)) = acks.next().now_or_never() {
            if let Some(m) = sent_at.pop_front() {
                settle(confirmed(js, r, &m).await?, m, &mut out, oracle);
            }
        }
        while acks.len() >= in_flight {
            if let (Some(r), Some(m)) = (acks.next().await, sent_at.pop_front()) {
                settle(confirmed(js, r, &m).await?, m, &mut out, oracle);
            }
        }
    }
    while let (Some(r), Some(m)) = (acks.next().await, sent_at.pop_front()) {
        settle(confirmed(js, r, &m).await?, m, &mut out, oracle);
    }
    oracle.apply_held();
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
