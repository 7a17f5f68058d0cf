//! The reader: pulls from the events stream and decodes, ahead of the ingest actor.
//!
//! Decoding needs no state, so it runs in its own task while the actor deduplicates and routes
//! the previous batch: the two stages overlap on different cores. The channel between them
//! holds a few batches at most, so a slow actor stops the reader and the backlog stays in
//! JetStream.
//!
//! By default (`ingest.reader = "direct"`) the reader owns a NATS connection of its own
//! (`bus::pull`) and decodes each event from the bytes in its read buffer. Where that
//! connection cannot be made the way `nats.url` asks (TLS, an nkey, a credentials file), or with
//! `ingest.reader = "async-nats"`, it reads through the pipeline's async-nats client instead.
//! Both give the actor the same [`Decoded`] batches.

use super::context::IngestContext;
use crate::bus::pull::{self, Pull, PullError, PullOptions};
use crate::config::ReaderKind;
use crate::deadletter::Reason;
use crate::domain::Envelope;
use crate::domain::codec::{self, Format};
use crate::domain::subject;
use async_nats::jetstream::{self, consumer};
use futures::{FutureExt, StreamExt};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
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
    /// From a `Retailflow-Redrive-Of` header: the stream sequence of the dead-lettered event
    /// this message brings back (`retailflow dlq redrive`).
    pub redrive_of: Option<u64>,
}

/// Decodes and validates one payload; `keep` gives what a dead letter needs, and is called
/// only for a bad message.
fn decode_payload(
    position: Option<(u64, u64)>,
    content_type: Option<&str>,
    subject: &[u8],
    payload: &[u8],
    keep: impl FnOnce() -> (String, Option<async_nats::HeaderMap>, bytes::Bytes),
) -> Decoded {
    let format = Format::from_content_type(content_type);
    let (reason, error) = match codec::decode_envelope(format, payload) {
        Ok(e) => match e.validate() {
            Ok(()) => match subject::check_binding(subject, &e) {
                Ok(()) => {
                    return Decoded {
                        position,
                        envelope: Ok(e),
                        redrive_of: None,
                    };
                }
                Err(err) => (
                    Reason::Misplaced,
                    format!("{} event {}: {err}", e.event.kind(), e.id),
                ),
            },
            Err(err) => (
                Reason::Invalid,
                format!("{} event {}: {err}", e.event.kind(), e.id),
            ),
        },
        Err(e) => (Reason::Undecodable, e.to_string()),
    };
    let (subject, headers, payload) = keep();
    Decoded {
        position,
        envelope: Err(Box::new(Bad {
            reason,
            error,
            subject,
            headers,
            payload,
        })),
        redrive_of: None,
    }
}

/// A message read through async-nats.
pub fn decode(msg: jetstream::Message) -> Decoded {
    let position = msg.reply.as_ref().and_then(|r| pull::ack_seq(r.as_bytes()));
    // A name built from a `&str` allocates on every lookup; a static one does not.
    const CONTENT_TYPE: async_nats::HeaderName =
        async_nats::HeaderName::from_static(codec::CONTENT_TYPE);
    let content_type = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(CONTENT_TYPE))
        .map(|v| v.as_str());
    let redrive_of = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(crate::deadletter::H_REDRIVE_OF))
        .and_then(|v| v.as_str().trim().parse().ok());
    let mut decoded = decode_payload(
        position,
        content_type,
        msg.subject.as_bytes(),
        &msg.payload,
        || {
            let msg = msg.message.clone();
            (msg.subject.to_string(), msg.headers, msg.payload)
        },
    );
    decoded.redrive_of = redrive_of;
    decoded
}

/// A message read by the direct reader, still in its read buffer.
///
/// Every byte here came from the network. A panic anywhere in decoding it (a parser bug a
/// hostile message reaches) is caught and the message becomes a `panic` dead letter, so the
/// reader goes on with the next one instead of dying and re-reading the same message for
/// ever. `catch_unwind` costs nothing on the path that does not unwind.
pub fn decode_raw(m: pull::Raw<'_>) -> Decoded {
    match std::panic::catch_unwind(|| decode_raw_unguarded(m)) {
        Ok(d) => d,
        Err(panic) => {
            // Nothing more of the message is trusted: no headers, the position only if
            // reading it does not panic too.
            let position = std::panic::catch_unwind(|| pull::ack_seq(m.reply))
                .ok()
                .flatten();
            Decoded {
                position,
                envelope: Err(Box::new(Bad {
                    reason: Reason::Panic,
                    error: format!(
                        "panic while decoding: {}",
                        crate::shared::panic_text(&*panic)
                    ),
                    subject: String::from_utf8_lossy(m.subject).into_owned(),
                    headers: None,
                    payload: bytes::Bytes::copy_from_slice(m.payload),
                })),
                redrive_of: None,
            }
        }
    }
}

fn decode_raw_unguarded(m: pull::Raw<'_>) -> Decoded {
    let position = pull::ack_seq(m.reply);
    let (content_type, redrive_of) = pull::headers2(
        m.headers,
        codec::CONTENT_TYPE,
        crate::deadletter::H_REDRIVE_OF,
    );
    let content_type = content_type.and_then(|v| std::str::from_utf8(v).ok());
    let mut decoded = decode_payload(position, content_type, m.subject, m.payload, || {
        (
            String::from_utf8_lossy(m.subject).into_owned(),
            None,
            bytes::Bytes::copy_from_slice(m.payload),
        )
    });
    decoded.redrive_of = redrive_of
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse().ok());
    // The headers are rebuilt only for a dead letter; `header_map` keeps what the map cannot
    // hold escaped, so it cannot fail the letter.
    if let Err(bad) = &mut decoded.envelope {
        bad.headers = pull::header_map(m.headers);
    }
    decoded
}

pub type Batch = Vec<Decoded>;

/// Batches waiting between reader and actor.
const QUEUED_BATCHES: usize = 3;

/// Idle heartbeat asked of the server: a consumer lost with a restarted server is noticed
/// (two missed heartbeats) and recreated within seconds.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Lifetime of one pull request.
const EXPIRES: Duration = Duration::from_secs(10);
/// Refusals of the direct reader's credentials in a row before the reader gives up: a wrong
/// or revoked password is not cured by asking again every 200 ms.
const MAX_AUTH_FAILURES: u32 = 5;

pub struct Reader {
    pub batches: mpsc::Receiver<Batch>,
    /// Ends with why the reader gave up for good, if it did.
    task: tokio::task::JoinHandle<Option<String>>,
}

impl Reader {
    /// After `batches` closed: why the reader stopped, if it gave up (the ingest actor then
    /// fails, and supervision restarts it or escalates).
    pub async fn failure(&mut self) -> Option<String> {
        (&mut self.task).await.ok().flatten()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An ephemeral consumer of the events stream from `from`, acking nothing (the snapshot is
/// the offset).
async fn consumer(ctx: &IngestContext, from: u64) -> Result<consumer::PullConsumer, String> {
    let name = &ctx.config.streams.events;
    // Bounded like the create below: a request sent to a node just as it died is never
    // answered, and the client's own timeout would leave ingest idle for seconds.
    let stream = tokio::time::timeout(CREATE_CONSUMER_WITHIN, ctx.js.get_stream(name))
        .await
        .map_err(|_| format!("events stream {name}: no answer within {CREATE_CONSUMER_WITHIN:?}"))?
        .map_err(|e| format!("events stream {name}: {e}"))?;
    let create = stream.create_consumer(consumer::pull::Config {
        deliver_policy: consumer::DeliverPolicy::ByStartSequence {
            start_sequence: from.max(1),
        },
        ack_policy: consumer::AckPolicy::None,
        inactive_threshold: Duration::from_secs(60),
        memory_storage: true,
        description: Some("retailflow ingest (ephemeral, the snapshot is the offset)".into()),
        ..Default::default()
    });
    tokio::time::timeout(CREATE_CONSUMER_WITHIN, create)
        .await
        .map_err(|_| {
            format!("creating the ingest consumer: no answer within {CREATE_CONSUMER_WITHIN:?}")
        })?
        .map_err(|e| format!("creating the ingest consumer: {e}"))
}

/// How long looking up the stream or creating a consumer may take before it is asked again.
/// In a cluster the request goes to the JetStream meta leader; one lost with a crashed node is
/// never answered, and waiting out the client's own timeout added seconds to every failover.
const CREATE_CONSUMER_WITHIN: Duration = Duration::from_secs(3);

impl Reader {
    /// Starts reading at stream sequence `from`.
    pub fn start(ctx: Arc<IngestContext>, from: u64) -> Reader {
        let (tx, batches) = mpsc::channel(QUEUED_BATCHES);
        let task = tokio::spawn(run(ctx, from, tx));
        Reader { batches, task }
    }
}

/// Why one consumer's reading ended.
enum End {
    /// The actor is gone: stop.
    Gone,
    /// Open a new consumer after the last message read.
    Again(String),
    /// The direct reader cannot serve this connection; read through async-nats.
    Unsupported(String),
    /// The server refused the reader's credentials.
    Auth(String),
}

async fn run(ctx: Arc<IngestContext>, mut from: u64, tx: mpsc::Sender<Batch>) -> Option<String> {
    let mut kind = ctx.config.ingest.reader;
    let mut auth_failures = 0u32;
    // The direct reader's addresses: `nats.url` plus what the cluster announced.
    let mut seeds = pull::Seeds::new(&ctx.config.nats.url);
    loop {
        let consumer = match consumer(&ctx, from).await {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(%error, from, "ingest reader cannot start; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let end = match kind {
            ReaderKind::Direct => read_direct(&ctx, &consumer, &mut from, &tx, &mut seeds).await,
            ReaderKind::AsyncNats => read_async_nats(&ctx, &consumer, &mut from, &tx).await,
        };
        if !matches!(end, End::Auth(_)) {
            auth_failures = 0;
        }
        match end {
            End::Gone => return None,
            End::Auth(error) => {
                auth_failures += 1;
                if auth_failures >= MAX_AUTH_FAILURES {
                    let url = crate::bus::redact(&ctx.config.nats.url);
                    let fatal = format!(
                        "the NATS server at {url} refused the ingest reader's credentials {auth_failures} times in a row ({error}); check nats.user_env/nats.password_env/nats.token_env"
                    );
                    tracing::error!(%fatal, "ingest reader gives up");
                    return Some(fatal);
                }
                let wait = Duration::from_millis(200 << auth_failures.min(5));
                tracing::warn!(%error, attempt = auth_failures, ?wait, "NATS refused the ingest reader's credentials; trying again");
                tokio::time::sleep(wait).await;
            }
            End::Again(error) => {
                tracing::warn!(%error, from, "ingest pull failed; recreating the consumer");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            End::Unsupported(what) => {
                tracing::info!(
                    needs = %what,
                    "the direct ingest reader does not speak this; reading through async-nats"
                );
                kind = ReaderKind::AsyncNats;
            }
        }
    }
}

/// Hands a decoded batch to the actor and notes where the next consumer would start.
async fn deliver(
    ctx: &IngestContext,
    decoded: Batch,
    started: Instant,
    from: &mut u64,
    tx: &mpsc::Sender<Batch>,
) -> bool {
    if let Some((seq, _)) = decoded.iter().rev().find_map(|d| d.position) {
        *from = seq + 1;
    }
    ctx.metrics.busy(crate::telemetry::Stage::Reader, started);
    tx.send(decoded).await.is_ok()
}

async fn read_direct(
    ctx: &IngestContext,
    consumer: &consumer::PullConsumer,
    from: &mut u64,
    tx: &mpsc::Sender<Batch>,
    seeds: &mut pull::Seeds,
) -> End {
    let batch = ctx.config.ingest.batch.max(1);
    let opts = PullOptions {
        batch,
        heartbeat: HEARTBEAT,
        expires: EXPIRES,
        name: format!("retailflow-ingest{}", ctx.tag),
    };
    let secrets = crate::bus::secrets(&ctx.config.nats);
    if let Some(path) = secrets.creds_file {
        return End::Unsupported(format!("a credentials file ({path})"));
    }
    if secrets.nkey_seed.is_some() {
        return End::Unsupported("an nkey (nats.nkey_env)".into());
    }
    if ctx.config.nats.tls() {
        return End::Unsupported("TLS (nats.tls_*)".into());
    }
    let name = consumer.cached_info().name.clone();
    let stream = &ctx.config.streams.events;
    let credentials = pull::Credentials {
        token: secrets.token.as_deref(),
        user_password: secrets
            .user_password
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str())),
    };
    let mut pull = match Pull::open_from(&seeds.order(), credentials, stream, &name, &opts).await {
        Ok(p) => p,
        Err(PullError::Unsupported(what)) => return End::Unsupported(what),
        Err(PullError::Server(e)) if pull::is_auth_error(&e) => return End::Auth(e),
        Err(e) => return End::Again(e.to_string()),
    };
    let server = pull.address().to_string();
    tracing::info!(from = *from, reader = "direct", %server, "ingest consumer started");
    let m = ctx.metrics.clone();
    loop {
        let mut decoded: Batch = Vec::with_capacity(batch);
        let asked = Instant::now();
        let mut started = asked;
        let got = pull
            .next_batch(batch, |raw| {
                if decoded.is_empty() {
                    started = Instant::now();
                }
                decoded.push(decode_raw(raw));
            })
            .await;
        if let Err(e) = got {
            if matches!(e, PullError::Protocol(_)) {
                m.nats_protocol_errors.fetch_add(1, Relaxed);
            }
            seeds.remember(&pull);
            return End::Again(e.to_string());
        }
        m.ingest_wait_messages_us
            .fetch_add((started - asked).as_micros() as u64, Relaxed);
        if !deliver(ctx, decoded, started, from, tx).await {
            return End::Gone;
        }
    }
}

async fn read_async_nats(
    ctx: &IngestContext,
    consumer: &consumer::PullConsumer,
    from: &mut u64,
    tx: &mpsc::Sender<Batch>,
) -> End {
    let batch = ctx.config.ingest.batch.max(1);
    let mut messages = match consumer
        .stream()
        .max_messages_per_batch(batch)
        .heartbeat(HEARTBEAT)
        .expires(EXPIRES)
        .messages()
        .await
    {
        Ok(s) => s,
        Err(e) => return End::Again(format!("starting the ingest pull: {e}")),
    };
    tracing::info!(
        from = *from,
        reader = "async-nats",
        "ingest consumer started"
    );
    let m = ctx.metrics.clone();
    // One buffer for every batch's raw messages: a fresh one each time (hundreds of KB at the
    // default batch) had its pages faulted in and zeroed by the kernel on every batch.
    let mut msgs = Vec::with_capacity(batch);
    loop {
        let t = Instant::now();
        let first = messages.next().await;
        m.ingest_wait_messages_us
            .fetch_add(t.elapsed().as_micros() as u64, Relaxed);
        let first = match first {
            Some(Ok(msg)) => msg,
            Some(Err(error)) => return End::Again(error.to_string()),
            None => return End::Again("the pull stream ended".into()),
        };
        let started = Instant::now();
        msgs.push(first);
        while msgs.len() < batch {
            match messages.next().now_or_never() {
                Some(Some(Ok(msg))) => msgs.push(msg),
                _ => break,
            }
        }
        let decoded: Batch = msgs.drain(..).map(decode).collect();
        if !deliver(ctx, decoded, started, from, tx).await {
            return End::Gone;
        }
    }
}
