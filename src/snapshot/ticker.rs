//! Publishing barriers into the events stream.
//!
//! Where barriers fall is decided by wall-clock time here, but the decision enters the system
//! only as an event in the stream; replaying the stream finds the same barriers and so forms
//! the same postings with the same ids (invariant 1).
//!
//! The ticker also applies ERP backpressure: while postings pile up for an endpoint it spaces
//! flushes out (documents grow rather than multiply), and above the pause threshold it stops
//! ingest until the backlog drains.

use crate::domain::{Barrier, Envelope, Event, EventId, SCHEMA_VERSION, SourceId, subject};
use crate::supervise::shared::Shared;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
#[error("cannot publish a barrier: {0}")]
pub struct BarrierError(String);

/// Publishes barrier events under a source unique to this process.
pub struct BarrierPublisher {
    shared: Arc<Shared>,
    source: SourceId,
    seq: AtomicU64,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl BarrierPublisher {
    pub fn new(shared: Arc<Shared>) -> Self {
        // Unique per process start: barriers of an earlier run never collide with ours.
        let boot = format!("ctl/{}-{}", now_ms(), std::process::id());
        BarrierPublisher {
            shared,
            source: SourceId::from(boot.as_str()),
            seq: AtomicU64::new(0),
        }
    }

    /// Publishes one barrier and returns its stream sequence.
    pub async fn publish(&self, flush: bool, snapshot: bool) -> Result<u64, BarrierError> {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let env = Envelope {
            v: SCHEMA_VERSION,
            id: EventId::from(format!("{}/{seq}", self.source).as_str()),
            source: self.source.clone(),
            seq,
            occurred_at_ms: now_ms(),
            trace: None,
            event: Event::Barrier(Barrier { flush, snapshot }),
        };
        let payload =
            crate::domain::codec::encode_msgpack(&env).map_err(|e| BarrierError(e.to_string()))?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", env.id.as_str());
        let ack = self
            .shared
            .js
            .publish_with_headers(subject::BARRIER, headers, payload.into())
            .await
            .map_err(|e| BarrierError(e.to_string()))?
            .await
            .map_err(|e| BarrierError(e.to_string()))?;
        Ok(ack.sequence)
    }
}

/// Total postings waiting for all endpoints.
fn backlog(shared: &Shared) -> u64 {
    shared
        .metrics
        .endpoints
        .iter()
        .map(|e| e.value().pending.load(Relaxed).max(0) as u64)
        .sum()
}

/// Runs until the pipeline stops: decides when to publish barriers and whether ingest pauses.
pub async fn run(shared: Arc<Shared>, publisher: Arc<BarrierPublisher>) {
    let cfg = shared.config.clone();
    let mut stream = match shared.js.get_stream(&cfg.streams.events).await {
        Ok(s) => s,
        Err(error) => {
            tracing::error!(%error, "barrier ticker cannot see the events stream");
            return;
        }
    };
    let base_flush = cfg.barrier.flush_interval;
    let mut flush_every = base_flush;
    let mut last_flush = Instant::now();
    let mut last_snapshot = Instant::now();
    let mut flush_barrier_seq = 0u64;
    let mut snapshot_barrier_seq = 0u64;
    let mut snapshot_from_seq = 0u64;
    let mut interval = tokio::time::interval(cfg.barrier.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if shared.stopping.load(Relaxed) {
            return;
        }
        // Backpressure from the ERP side.
        let pending = backlog(&shared);
        let pause = pending > cfg.barrier.backlog_pause;
        if shared.paused.swap(pause, Relaxed) != pause {
            tracing::warn!(pending, paused = pause, "ERP backlog changed ingest state");
        }
        flush_every = if pending > cfg.barrier.backlog_slow {
            (flush_every * 2).min(base_flush * 64)
        } else {
            base_flush
        };

        let last_seq = match stream.info().await {
            Ok(info) => info.state.last_sequence,
            Err(error) => {
                tracing::warn!(%error, "barrier ticker: stream info failed");
                continue;
            }
        };
        shared.metrics.stream_last_seq.store(last_seq, Relaxed);
        let flush = last_seq > flush_barrier_seq && last_flush.elapsed() >= flush_every;
        let snapshot = cfg.snapshot.enabled
            && last_seq > snapshot_barrier_seq
            && (last_snapshot.elapsed() >= cfg.snapshot.interval
                || last_seq.saturating_sub(snapshot_from_seq) >= cfg.snapshot.every_events);
        if !flush && !snapshot {
            continue;
        }
        match publisher.publish(flush, snapshot).await {
            Ok(seq) => {
                if flush {
                    last_flush = Instant::now();
                    flush_barrier_seq = seq;
                }
                if snapshot {
                    last_snapshot = Instant::now();
                    snapshot_barrier_seq = seq;
                    snapshot_from_seq = seq;
                }
            }
            Err(error) => tracing::warn!(%error, "barrier not published; next tick retries"),
        }
    }
}
