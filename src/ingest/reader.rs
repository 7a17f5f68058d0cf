//! The reader: pulls from the events stream and decodes, ahead of the ingest actor.
//!
//! Decoding needs no state, so it runs in its own task while the actor deduplicates and routes
//! the previous batch: the two stages overlap on different cores. The channel between them
//! holds a few batches at most, so a slow actor stops the reader and the backlog stays in
//! JetStream.

use super::deadletter::Reason;
use crate::domain::Envelope;
use crate::domain::codec::{self, Format};
use crate::supervise::shared::Shared;
use async_nats::jetstream::{self, consumer};
use futures::{FutureExt, StreamExt};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::mpsc;

/// What is kept of a message that could not be used: enough to dead-letter it.
pub struct Bad {
    pub reason: Reason,
    pub error: String,
    pub subject: String,
    pub headers: Option<async_nats::HeaderMap>,
    pub payload: bytes::Bytes,
}

/// A message decoded and validated, ready for dedupe and routing. The NATS message itself is
/// dropped here (it is large); only a bad one keeps what its dead letter needs.
pub struct Decoded {
    /// Stream sequence and messages pending after it, from the reply subject.
    pub position: Option<(u64, u64)>,
    pub envelope: Result<Envelope, Box<Bad>>,
}

/// Stream sequence and pending count from a JetStream reply subject, without the date parsing
/// `Message::info` does. `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`
/// or, with domain and account hash, two tokens more after `ACK`.
pub fn ack_seq(reply: &str) -> Option<(u64, u64)> {
    // Called once per message: keep the tokens on the stack.
    let tokens: smallvec::SmallVec<[&str; 14]> = reply.split('.').collect();
    let (s, p) = match tokens.len() {
        9 => (5, 8),
        n if n >= 11 => (7, 10),
        _ => return None,
    };
    Some((tokens[s].parse().ok()?, tokens[p].parse().ok()?))
}

pub fn decode(msg: jetstream::Message) -> Decoded {
    let position = msg.reply.as_ref().and_then(|r| ack_seq(r.as_str()));
    // A name built from a `&str` allocates on every lookup; a static one does not.
    const CONTENT_TYPE: async_nats::HeaderName =
        async_nats::HeaderName::from_static(codec::CONTENT_TYPE);
    let content_type = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(CONTENT_TYPE))
        .map(|v| v.as_str());
    let format = Format::from_content_type(content_type);
    let failed = match codec::decode_envelope(format, &msg.payload) {
        Ok(e) => match e.validate() {
            Ok(()) => {
                return Decoded {
                    position,
                    envelope: Ok(e),
                };
            }
            Err(err) => (
                Reason::Invalid,
                format!("{} event {}: {err}", e.event.kind(), e.id),
            ),
        },
        Err(e) => (Reason::Undecodable, e.to_string()),
    };
    let msg = msg.message;
    Decoded {
        position,
        envelope: Err(Box::new(Bad {
            reason: failed.0,
            error: failed.1,
            subject: msg.subject.to_string(),
            headers: msg.headers,
            payload: msg.payload,
        })),
    }
}

pub type Batch = Vec<Decoded>;

/// Batches waiting between reader and actor.
const QUEUED_BATCHES: usize = 3;

pub struct Reader {
    pub batches: mpsc::Receiver<Batch>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn open(shared: &Shared, from: u64) -> Result<consumer::pull::Stream, String> {
    let name = &shared.config.streams.events;
    let stream = shared
        .js
        .get_stream(name)
        .await
        .map_err(|e| format!("events stream {name}: {e}"))?;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from.max(1),
            },
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(60),
            memory_storage: true,
            description: Some("retailflow ingest (ephemeral, the snapshot is the offset)".into()),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("creating the ingest consumer: {e}"))?;
    consumer
        .stream()
        .max_messages_per_batch(shared.config.ingest.batch)
        // Short: a consumer lost with a restarted server is noticed (two missed heartbeats)
        // and recreated within seconds.
        .heartbeat(Duration::from_secs(1))
        .expires(Duration::from_secs(10))
        .messages()
        .await
        .map_err(|e| format!("starting the ingest pull: {e}"))
}

impl Reader {
    /// Starts reading at stream sequence `from`.
    pub fn start(shared: Arc<Shared>, from: u64) -> Reader {
        let (tx, batches) = mpsc::channel(QUEUED_BATCHES);
        let task = tokio::spawn(run(shared, from, tx));
        Reader { batches, task }
    }
}

async fn run(shared: Arc<Shared>, mut from: u64, tx: mpsc::Sender<Batch>) {
    let batch = shared.config.ingest.batch.max(1);
    let m = shared.metrics.clone();
    // One buffer for every batch's raw messages: a fresh one each time (hundreds of KB at the
    // default batch) had its pages faulted in and zeroed by the kernel on every batch.
    let mut msgs = Vec::with_capacity(batch);
    loop {
        let mut messages = match open(&shared, from).await {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(%error, from, "ingest reader cannot start; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        tracing::info!(from, "ingest consumer started");
        loop {
            let t = std::time::Instant::now();
            let first = messages.next().await;
            m.ingest_wait_messages_us
                .fetch_add(t.elapsed().as_micros() as u64, Relaxed);
            let first = match first {
                Some(Ok(msg)) => msg,
                Some(Err(error)) => {
                    tracing::warn!(%error, from, "ingest pull failed; recreating the consumer");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
                None => break,
            };
            let started = std::time::Instant::now();
            msgs.push(first);
            while msgs.len() < batch {
                match messages.next().now_or_never() {
                    Some(Some(Ok(msg))) => msgs.push(msg),
                    _ => break,
                }
            }
            let decoded: Batch = msgs.drain(..).map(decode).collect();
            if let Some((seq, _)) = decoded.iter().rev().find_map(|d| d.position) {
                from = seq + 1;
            }
            m.busy(crate::telemetry::Stage::Reader, started);
            if tx.send(decoded).await.is_err() {
                return; // the actor is gone
            }
        }
    }
}
