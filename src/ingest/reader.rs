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
/// or, with domain and account hash, two tokens more after `ACK` (and possibly a trailing
/// one).
pub fn ack_seq(reply: &str) -> Option<(u64, u64)> {
    // Called once per message: one pass over the bytes, noting where the first tokens end.
    let b = reply.as_bytes();
    let mut dots = [0usize; 11];
    let mut n = 0;
    for (i, &c) in b.iter().enumerate() {
        if c == b'.' {
            if n < dots.len() {
                dots[n] = i;
            }
            n += 1;
        }
    }
    let token = |k: usize| -> &[u8] {
        let start = if k == 0 { 0 } else { dots[k - 1] + 1 };
        let end = if k < n { dots[k] } else { b.len() };
        &b[start..end]
    };
    let (s, p) = match n + 1 {
        9 => (5, 8),
        t if t >= 11 => (7, 10),
        _ => return None,
    };
    Some((digits(token(s))?, digits(token(p))?))
}

/// A non-empty run of ASCII digits as a `u64`; `None` for anything else or an overflow.
fn digits(t: &[u8]) -> Option<u64> {
    if t.is_empty() {
        return None;
    }
    t.iter().try_fold(0u64, |acc, &c| {
        if c.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(c - b'0'))
        } else {
            None
        }
    })
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

#[cfg(test)]
mod tests {
    use super::ack_seq;

    #[test]
    fn the_sequence_and_pending_count_come_from_either_reply_form() {
        assert_eq!(
            ack_seq("$JS.ACK.RETAIL_EVENTS.c1.1.4711.4700.1764460800000000000.289"),
            Some((4711, 289))
        );
        // Domain and account hash before the stream, and a trailing token after pending.
        assert_eq!(
            ack_seq("$JS.ACK.hub.ACCHASH.RETAIL_EVENTS.c1.2.18.17.1764460800000000000.0.xyz"),
            Some((18, 0))
        );
        assert_eq!(
            ack_seq("$JS.ACK.hub.ACCHASH.RETAIL_EVENTS.c1.2.18.17.1764460800000000000.5"),
            Some((18, 5))
        );
    }

    #[test]
    fn anything_else_is_no_position() {
        for bad in [
            "",
            "_INBOX.abc",
            "$JS.ACK.S.c.1.2.3.4",
            "$JS.ACK.S.c.1.x2.3.4.5",
            "$JS.ACK.S.c.1..3.4.5",
            "$JS.ACK.S.c.1.2.3.4.-5",
            "$JS.ACK.S.c.1.99999999999999999999.3.4.5",
            "$JS.ACK.S.c.1.2.3.4.5.6",
        ] {
            assert_eq!(ack_seq(bad), None, "{bad}");
        }
    }
}
