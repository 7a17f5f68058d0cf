//! Publishing barriers into the events stream.
//!
//! Where barriers fall is decided by wall-clock time here, but the decision enters the system
//! only as an event in the stream; replaying the stream finds the same barriers and so forms
//! the same postings with the same ids (invariant 1).
//!
//! The ticker also applies ERP backpressure: while postings pile up for an endpoint it spaces
//! flushes out (documents grow rather than multiply), and above the pause threshold it stops
//! ingest until the backlog drains.

use super::context::SnapshotContext;
use crate::domain::{Barrier, Envelope, Event, EventId, SCHEMA_VERSION, SourceId, subject};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
#[error("cannot publish a barrier: {0}")]
pub struct BarrierError(String);

/// Publishes barrier events under a source unique to this process.
pub struct BarrierPublisher {
    ctx: Arc<SnapshotContext>,
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
    pub fn new(ctx: Arc<SnapshotContext>) -> Self {
        // Unique per process start: barriers of an earlier run never collide with ours.
        let boot = format!("ctl/{}-{}", now_ms(), std::process::id());
        BarrierPublisher {
            ctx,
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
            .ctx
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
fn backlog(ctx: &SnapshotContext) -> u64 {
    ctx.metrics
        .endpoints
        .iter()
        .map(|e| e.value().pending.load(Relaxed).max(0) as u64)
        .sum()
}

/// When barriers fall: the ticker's policy as a plain struct, with the clock passed in.
///
/// A barrier still ahead of ingest flushes and snapshots when ingest reaches it. While the
/// pipeline is behind (a backlog after an outage, a peak it cannot keep up with, a pause for the
/// ERP) more barriers behind it would only repeat that work where throughput matters most:
/// every snapshot serialises the whole state, every flush turns every touched bucket into
/// drafts. So while a barrier is pending the next one waits, unless the stream has grown by
/// `every_events` past the last snapshot barrier (past the pending barrier when snapshots are
/// off). That keeps snapshot barriers at most `every_events` apart in the stream, so the
/// replay after a crash stays bounded by the event cap; the time-based snapshot waits.
#[derive(Debug)]
pub struct Cadence {
    flush_every: Duration,
    base_flush: Duration,
    snapshot_interval: Duration,
    every_events: u64,
    snapshots: bool,
    last_flush: Instant,
    last_snapshot: Instant,
    flush_barrier_seq: u64,
    snapshot_barrier_seq: u64,
    /// Sequence of the last barrier published here.
    pending: u64,
    /// This replica just became the leader: cut a barrier (a snapshot, when they are on) now,
    /// so the postings its predecessor left unreleased go out without waiting an interval.
    urgent: bool,
}

impl Cadence {
    pub fn new(cfg: &crate::config::Config, now: Instant) -> Cadence {
        Cadence {
            flush_every: cfg.barrier.flush_interval,
            base_flush: cfg.barrier.flush_interval,
            snapshot_interval: cfg.snapshot.interval,
            every_events: cfg.snapshot.every_events.max(1),
            snapshots: cfg.snapshot.enabled,
            last_flush: now,
            last_snapshot: now,
            flush_barrier_seq: 0,
            snapshot_barrier_seq: 0,
            pending: 0,
            urgent: false,
        }
    }

    /// This replica has just taken over the side effects.
    pub fn lead_now(&mut self) {
        self.urgent = true;
    }

    /// Flushes are spaced out (doubling) while the ERP falls behind, back to normal once it
    /// keeps up.
    pub fn erp_slow(&mut self, slow: bool) {
        self.flush_every = if slow {
            (self.flush_every * 2).min(self.base_flush * 64)
        } else {
            self.base_flush
        };
    }

    /// Whether to publish a barrier now, and of which kind: `(flush, snapshot)`. `last_seq` is
    /// the stream's last sequence, `applied` the sequence the whole view reflects.
    pub fn due(&self, now: Instant, last_seq: u64, applied: u64) -> Option<(bool, bool)> {
        if self.urgent {
            return Some((true, self.snapshots));
        }
        let behind = applied < self.pending;
        let since = if self.snapshots {
            self.snapshot_barrier_seq
        } else {
            self.pending
        };
        if behind && last_seq.saturating_sub(since) < self.every_events {
            return None;
        }
        let flush = last_seq > self.flush_barrier_seq
            && now.duration_since(self.last_flush) >= self.flush_every;
        let snapshot = self.snapshots
            && last_seq > self.snapshot_barrier_seq
            && (now.duration_since(self.last_snapshot) >= self.snapshot_interval
                || last_seq.saturating_sub(self.snapshot_barrier_seq) >= self.every_events);
        (flush || snapshot).then_some((flush, snapshot))
    }

    /// A barrier was stored at `seq`.
    pub fn published(&mut self, seq: u64, flush: bool, snapshot: bool, now: Instant) {
        self.pending = self.pending.max(seq);
        self.urgent = false;
        if flush {
            self.last_flush = now;
            self.flush_barrier_seq = seq;
        }
        if snapshot {
            self.last_snapshot = now;
            self.snapshot_barrier_seq = seq;
        }
    }
}

/// How long the ticker waits for the events stream's info before it tries again next tick.
const STREAM_INFO_WITHIN: Duration = Duration::from_secs(2);

/// Runs until the pipeline stops: decides when to publish barriers and whether ingest pauses.
/// A follower only watches progress and pauses: barriers are the leader's.
pub async fn run(ctx: Arc<SnapshotContext>, publisher: Arc<BarrierPublisher>) {
    let cfg = ctx.config.clone();
    let mut stream = match ctx.js.get_stream(&cfg.streams.events).await {
        Ok(s) => s,
        Err(error) => {
            tracing::error!(%error, "barrier ticker cannot see the events stream");
            return;
        }
    };
    let mut cadence = Cadence::new(&cfg, Instant::now());
    let mut applied_before = ctx.view.applied_all();
    ctx.metrics
        .ingest_progress_at_ms
        .store(now_ms().max(0) as u64, Relaxed);
    let mut led = ctx.leader.leads();
    let mut interval = tokio::time::interval(cfg.barrier.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if ctx.flow.stopping() {
            return;
        }
        let leads = ctx.leader.leads();
        // Backpressure from the ERP side (only the leader delivers).
        let pending = if leads { backlog(&ctx) } else { 0 };
        // Postings held while snapshots fail count like an ERP backlog: beyond the bound
        // ingest pauses, so a failing snapshot store cannot fill memory. The coordinator
        // retries the failed snapshot on its own timer, so the pause ends once the store
        // takes it. (While snapshots succeed the pause never applies: it would stop the very
        // barrier that releases the postings.) A follower holds the postings its leader has not
        // released yet, under the same bound: a leader that stops releasing (an ERP outage
        // pauses its ingest) stops this replica at the same bound too.
        let unsnapshotted = ctx.metrics.snapshot_pending_postings.load(Relaxed);
        let failing = ctx.metrics.snapshot_failing_since_ms.load(Relaxed) > 0;
        let held = (failing || !leads) && unsnapshotted > cfg.snapshot.max_pending_postings;
        if held && !ctx.flow.paused.load(Relaxed) {
            ctx.metrics.snapshot_backpressure.fetch_add(1, Relaxed);
        }
        let pause = pending > cfg.barrier.backlog_pause || held;
        if ctx.flow.paused.swap(pause, Relaxed) != pause {
            tracing::warn!(pending, paused = pause, "ERP backlog changed ingest state");
        }
        cadence.erp_slow(pending > cfg.barrier.backlog_slow);

        // Bounded: a request lost with a NATS node that died is never answered, and the
        // client's own timeout would hold the barriers (and, while leading, the releases)
        // for seconds.
        let last_seq = match tokio::time::timeout(STREAM_INFO_WITHIN, stream.info()).await {
            Ok(Ok(info)) => info.state.last_sequence,
            Ok(Err(error)) => {
                tracing::warn!(%error, "barrier ticker: stream info failed");
                continue;
            }
            Err(_) => {
                tracing::warn!("barrier ticker: no stream info within {STREAM_INFO_WITHIN:?}");
                continue;
            }
        };
        ctx.metrics.stream_last_seq.store(last_seq, Relaxed);
        // Progress for `/healthz`: the applied sequence moved, or there is nothing to apply.
        let applied = ctx.view.applied_all();
        if applied != applied_before || applied >= last_seq {
            applied_before = applied;
            ctx.metrics
                .ingest_progress_at_ms
                .store(now_ms().max(0) as u64, Relaxed);
        }
        if !leads {
            led = false;
            continue;
        }
        if !led {
            led = true;
            cadence.lead_now();
        }
        let Some((flush, snapshot)) = cadence.due(Instant::now(), last_seq, ctx.view.applied_all())
        else {
            continue;
        };
        match publisher.publish(flush, snapshot).await {
            Ok(seq) => cadence.published(seq, flush, snapshot, Instant::now()),
            Err(error) => tracing::warn!(%error, "barrier not published; next tick retries"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cadence(now: Instant) -> Cadence {
        let mut cfg = crate::config::Config::default();
        cfg.barrier.flush_interval = Duration::from_secs(5);
        cfg.snapshot.interval = Duration::from_secs(30);
        cfg.snapshot.every_events = 1000;
        Cadence::new(&cfg, now)
    }

    #[test]
    fn flushes_and_snapshots_follow_their_intervals_while_ingest_keeps_up() {
        let t0 = Instant::now();
        let mut c = cadence(t0);
        assert_eq!(c.due(t0 + Duration::from_secs(4), 100, 100), None);
        let t = t0 + Duration::from_secs(5);
        assert_eq!(c.due(t, 100, 100), Some((true, false)));
        c.published(101, true, false, t);
        // Applied in time: the next flush is due after the interval again.
        assert_eq!(c.due(t + Duration::from_secs(1), 150, 150), None);
        let t = t + Duration::from_secs(5);
        assert_eq!(c.due(t, 200, 200), Some((true, false)));
        c.published(201, true, false, t);
        let t = t0 + Duration::from_secs(30);
        assert_eq!(c.due(t, 300, 300), Some((true, true)));
        // Nothing new since the last barrier: nothing to cut.
        c.published(301, true, true, t);
        assert_eq!(c.due(t + Duration::from_secs(60), 301, 301), None);
    }

    #[test]
    fn a_barrier_ahead_of_ingest_holds_back_the_next_until_a_snapshots_worth_of_events() {
        let t0 = Instant::now();
        let mut c = cadence(t0);
        let t = t0 + Duration::from_secs(30);
        assert_eq!(c.due(t, 500, 100), Some((true, true)));
        c.published(501, true, true, t);
        // Ingest is at 120, the barrier at 501: intervals pass, nothing more is published.
        let later = t + Duration::from_secs(120);
        assert_eq!(c.due(later, 1400, 120), None);
        // The stream grew by every_events past the pending barrier: bound the replay.
        assert_eq!(c.due(later, 1501, 120), Some((true, true)));
        c.published(1502, true, true, later);
        // Once ingest passed the pending barrier, the intervals rule again.
        let later = later + Duration::from_secs(30);
        assert_eq!(c.due(later, 1600, 1502), Some((true, true)));
    }

    #[test]
    fn behind_a_pending_flush_the_event_cap_counts_from_the_last_snapshot() {
        let t0 = Instant::now();
        let mut c = cadence(t0);
        let t = t0 + Duration::from_secs(30);
        c.published(100, true, true, t);
        // A flush-only barrier late in the snapshot's span; ingest falls behind it.
        let t = t + Duration::from_secs(5);
        assert_eq!(c.due(t, 900, 100), Some((true, false)));
        c.published(901, true, false, t);
        let later = t + Duration::from_secs(5);
        assert_eq!(c.due(later, 1099, 500), None);
        // every_events past the snapshot barrier at 100, not past the flush at 901.
        assert_eq!(c.due(later, 1100, 500), Some((true, true)));
    }

    #[test]
    fn a_new_leader_cuts_a_snapshot_barrier_at_once_and_then_keeps_the_intervals() {
        let t0 = Instant::now();
        let mut c = cadence(t0);
        assert_eq!(c.due(t0 + Duration::from_secs(1), 10, 10), None);
        c.lead_now();
        // Even behind its last barrier and with nothing new in the stream.
        assert_eq!(
            c.due(t0 + Duration::from_secs(1), 10, 3),
            Some((true, true))
        );
        c.published(11, true, true, t0 + Duration::from_secs(1));
        assert_eq!(c.due(t0 + Duration::from_secs(2), 20, 20), None);
    }

    #[test]
    fn a_slow_erp_spaces_flushes_out_and_a_recovered_one_restores_them() {
        let t0 = Instant::now();
        let mut c = cadence(t0);
        c.erp_slow(true);
        assert_eq!(c.due(t0 + Duration::from_secs(5), 10, 10), None);
        assert_eq!(
            c.due(t0 + Duration::from_secs(10), 10, 10),
            Some((true, false))
        );
        c.erp_slow(false);
        assert_eq!(
            c.due(t0 + Duration::from_secs(5), 10, 10),
            Some((true, false))
        );
    }
}
