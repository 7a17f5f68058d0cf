//! The ingest actor: the one reader of the events stream.
//!
//! It pulls with an ephemeral consumer that starts right after the restored snapshot's
//! sequence and never acks (the snapshot is the offset, see invariant 3). Each pull handles a
//! batch: decode, validate, dedupe, route; then one message per destination actor. A pull only
//! starts while the work in flight is under the credit limit, so a slow shard makes ingest
//! wait and the backlog stays in JetStream.

use super::context::IngestContext;
use super::reader::{Decoded, Reader};
use crate::aggregate::actor::{StoreActor, StoreArgs, StoreMsg};
use crate::apply::shard::ShardMsg;
use crate::deadletter::{Letter, Reason};
use crate::domain::{Envelope, Event, LocationId};
use crate::shared::members::Members;
use crate::snapshot::coordinator::{BarrierHeader, CoordMsg};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use retailflow_core::aggregate::store::StoreAggregator;
use retailflow_core::ingest::dedupe::{Dedupe, Verdict};
use retailflow_core::ingest::keys::ReservationKeys;
use retailflow_core::ingest::route::Routed;
use retailflow_core::snapshot::format::IngestState as IngestSnapshot;
use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::time::Duration;

/// Store events may wait in ingest for up to this many batches' worth (see `dispatch`).
const STORE_HOLD_BATCHES: u64 = 4;

pub enum IngestMsg {
    Pull,
    /// Test hook: recreate the consumer from an earlier sequence, as after a consumer restart;
    /// everything re-read must be recognised as a redelivery.
    #[cfg(feature = "lab")]
    Rewind(u64),
    /// Test hook: panic.
    #[cfg(feature = "lab")]
    Crash,
}

pub struct IngestActor;

pub struct IngestArgs {
    pub ctx: Arc<IngestContext>,
    pub dedupe: Dedupe,
    pub keys: ReservationKeys,
    /// The restored snapshot's sequence; consumption starts after it.
    pub from_seq: u64,
    pub shards: Vec<ActorRef<ShardMsg>>,
    pub stores: FxHashMap<LocationId, ActorRef<StoreMsg>>,
    pub coordinator: ActorRef<CoordMsg>,
    /// Where store actors are linked (the root supervisor).
    pub supervisor: ActorCell,
    /// Stop after this sequence (graceful shutdown); 0 = never.
    pub stop_after: Arc<std::sync::atomic::AtomicU64>,
    /// Pipeline generation, to keep actor names unique across restarts.
    pub generation: u64,
    /// The generation's actors; a store actor spawned here joins it.
    pub members: Members,
}

pub struct IngestState {
    ctx: Arc<IngestContext>,
    dedupe: Dedupe,
    /// Reservation keys across all shards (see `ingest::keys`).
    keys: ReservationKeys,
    last_seq: u64,
    consume_from: u64,
    reader: Option<Reader>,
    shards: Vec<ActorRef<ShardMsg>>,
    stores: FxHashMap<LocationId, ActorRef<StoreMsg>>,
    coordinator: ActorRef<CoordMsg>,
    supervisor: ActorCell,
    routed: Routed,
    letters: Vec<Letter>,
    stop_after: Arc<std::sync::atomic::AtomicU64>,
    generation: u64,
    members: Members,
    letters_unlogged: u64,
    letters_logged: std::time::Instant,
    /// Messages the stream held after the last one read: while more are coming, store events
    /// wait here for a larger message per store.
    pending: u64,
    /// When recent messages panicked (see `count_panic`).
    panics: std::collections::VecDeque<std::time::Instant>,
}

/// What handling one message leaves for the async part of the actor.
enum Step {
    /// Go on (or not, at the stop sequence) after this stream sequence.
    Next(u64),
    /// A message without a position: nothing to record.
    Skip,
    /// A barrier at this sequence: everything before it is routed.
    Barrier {
        seq: u64,
        flush: bool,
        snapshot: bool,
        at_ms: i64,
    },
}

impl IngestState {
    /// Handles one decoded message; returns false when ingest must stop here (graceful
    /// shutdown).
    ///
    /// The synchronous part runs under `catch_unwind` (free unless something unwinds): a
    /// panic on one message dead-letters that message, with the panic text, instead of
    /// failing the actor, whose restart would read the same message and panic again.
    async fn handle_message(&mut self, decoded: Decoded) -> Result<bool, ActorProcessingErr> {
        let position = decoded.position;
        let reader_panic = matches!(&decoded.envelope, Err(bad) if bad.reason == Reason::Panic);
        let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.step(decoded)));
        if reader_panic {
            self.count_panic("a message panicked the reader")?;
        }
        match step {
            Ok(Step::Next(seq)) => Ok(self.go_on(seq)),
            Ok(Step::Skip) => Ok(true),
            Ok(Step::Barrier {
                seq,
                flush,
                snapshot,
                at_ms,
            }) => {
                self.dispatch(seq, true).await?;
                self.flush_letters().await?;
                self.barrier(seq, flush, snapshot, at_ms)?;
                Ok(self.go_on(seq))
            }
            Err(panic) => {
                let text = crate::shared::panic_text(&*panic).to_string();
                let Some((seq, _)) = position else {
                    return Err(format!("panic on a message without a position: {text}").into());
                };
                // Whatever this event had routed so far must not go out half.
                self.routed.forget(seq);
                self.last_seq = self.last_seq.max(seq);
                self.letters.push(Letter {
                    stage: "ingest",
                    reason: Reason::Panic,
                    error: format!(
                        "panic while handling stream sequence {seq}: {text}; the original is still in the events stream at that sequence"
                    ),
                    original_subject: String::new(),
                    headers: None,
                    payload: bytes::Bytes::new(),
                    stream_seq: Some(seq),
                    identity: seq.to_string(),
                });
                self.count_panic(&text)?;
                Ok(self.go_on(seq))
            }
        }
    }

    /// Counts a message that panicked. A few are dead-lettered and the line goes on; more
    /// than `supervision.max_restarts` within `supervision.within` fail the actor, so the
    /// supervisor's restart policy escalates as it does for any other repeated failure.
    fn count_panic(&mut self, what: &str) -> Result<(), ActorProcessingErr> {
        let cfg = &self.ctx.config.supervision;
        let now = std::time::Instant::now();
        while self
            .panics
            .front()
            .is_some_and(|t| now.duration_since(*t) > cfg.within)
        {
            self.panics.pop_front();
        }
        self.panics.push_back(now);
        self.ctx.metrics.ingest_panics.fetch_add(1, Relaxed);
        if self.panics.len() as u32 > cfg.max_restarts {
            return Err(format!(
                "{} messages panicked within {:?}; last: {what}",
                self.panics.len(),
                cfg.within
            )
            .into());
        }
        Ok(())
    }

    /// Decode result -> stream-sequence check -> dedupe -> route; no awaiting.
    fn step(&mut self, decoded: Decoded) -> Step {
        let m = self.ctx.metrics.clone();
        let Some((seq, pending)) = decoded.position else {
            tracing::warn!("message without a JetStream reply subject; skipped");
            return Step::Skip;
        };
        m.consumer_lag.store(pending as i64, Relaxed);
        self.pending = pending;
        if seq <= self.last_seq {
            m.duplicates_redelivered.fetch_add(1, Relaxed);
            return Step::Skip;
        }
        self.last_seq = seq;
        m.events_received.fetch_add(1, Relaxed);
        let redrive_of = decoded.redrive_of;
        let envelope = match decoded.envelope {
            Ok(e) => e,
            Err(bad) => {
                let bad = *bad;
                self.letters.push(Letter {
                    stage: "ingest",
                    reason: bad.reason,
                    error: bad.error,
                    original_subject: bad.subject,
                    headers: bad.headers,
                    payload: bad.payload,
                    stream_seq: Some(seq),
                    identity: seq.to_string(),
                });
                return Step::Next(seq);
            }
        };
        if let Some(of) = redrive_of {
            // A dead letter brought back: never applied at `of`, so the source's order and
            // sequence do not decide; only whether this letter came back before does.
            if of >= seq || !self.dedupe.redrive(of) {
                m.redrives_refused.fetch_add(1, Relaxed);
                tracing::warn!(event = %envelope.id, of, seq, "re-drive of a letter already re-driven (or of no earlier message); not applied");
                return Step::Next(seq);
            }
            m.redrives_applied.fetch_add(1, Relaxed);
            // Marks the source sequence seen, so a producer's own re-send is not applied too.
            self.dedupe.check(&envelope.source, envelope.seq);
        } else {
            if let Some(step) = self.check_source(seq, &envelope) {
                return step;
            }
        }
        if let Some((stage, text)) = self.ctx.flow.poisoned.get(seq) {
            let error = format!(
                "event {} (stream sequence {seq}) panicked the {stage} stage: {text}; not applied anywhere (no shard and no store keeps any of it), so the line goes on",
                envelope.id
            );
            self.letter_from_envelope(seq, &envelope, stage, Reason::Panic, error);
            return Step::Next(seq);
        }
        m.events_applied.fetch_add(1, Relaxed);
        match envelope.event {
            Event::Barrier(b) => Step::Barrier {
                seq,
                flush: b.flush,
                snapshot: b.snapshot,
                at_ms: envelope.occurred_at_ms,
            },
            Event::ReservationRequested(r) => {
                if self.keys.admit(&r) {
                    self.routed.route(seq, Event::ReservationRequested(r));
                } else {
                    self.routed.refuse(seq, r);
                }
                self.count_keys();
                Step::Next(seq)
            }
            Event::ReservationBatch(mut b) => {
                let keys = &mut self.keys;
                let mut refused = Vec::new();
                b.requests.retain(|r| {
                    let ok = keys.admit(r);
                    if !ok {
                        refused.push(r.clone());
                    }
                    ok
                });
                if !b.requests.is_empty() {
                    self.routed.route(seq, Event::ReservationBatch(b));
                }
                for r in refused {
                    self.routed.refuse(seq, r);
                }
                self.count_keys();
                Step::Next(seq)
            }
            event => {
                let till = Some((envelope.source, envelope.seq));
                self.routed.route_from(seq, till, event);
                Step::Next(seq)
            }
        }
    }

    /// Publishes how many idempotency keys are held, for `/metrics` and for the API's
    /// `reservations.max_keys` check.
    fn count_keys(&self) {
        self.ctx
            .metrics
            .reservation_keys
            .store(self.keys.len() as u64, Relaxed);
    }

    /// A dead letter for an event whose original bytes are gone by now: it carries the
    /// event re-encoded.
    /// The per-source verdict: `None` to go on with a new event, else the step that ends it
    /// (a duplicate counted, a late or jumping event dead-lettered).
    fn check_source(&mut self, seq: u64, envelope: &Envelope) -> Option<Step> {
        let m = &self.ctx.metrics;
        match self.dedupe.check(&envelope.source, envelope.seq) {
            Verdict::New => None,
            Verdict::Duplicate => {
                m.duplicates_resent.fetch_add(1, Relaxed);
                Some(Step::Next(seq))
            }
            Verdict::Late => {
                m.late_events.fetch_add(1, Relaxed);
                let error = format!(
                    "event {} seq {} from {} arrived after its source moved more than {} sequences ahead; not applied: review it and publish it again under a new sequence",
                    envelope.id,
                    envelope.seq,
                    envelope.source,
                    self.dedupe.window()
                );
                self.letter_from_envelope(seq, envelope, "ingest", Reason::Late, error);
                Some(Step::Next(seq))
            }
            Verdict::Jump => {
                let error = format!(
                    "event {} seq {} from {}: the source's sequence jumps more than {} past what was seen ({}); not applied and the source's position kept, so a forged sequence cannot silence the real producer",
                    envelope.id,
                    envelope.seq,
                    envelope.source,
                    self.dedupe.max_jump(),
                    self.dedupe.floor(&envelope.source).unwrap_or(0)
                );
                self.letter_from_envelope(seq, envelope, "ingest", Reason::SequenceJump, error);
                Some(Step::Next(seq))
            }
        }
    }

    fn letter_from_envelope(
        &mut self,
        seq: u64,
        envelope: &Envelope,
        stage: &'static str,
        reason: Reason,
        error: String,
    ) {
        let payload = crate::domain::codec::encode_msgpack(envelope).unwrap_or_default();
        self.letters.push(Letter {
            stage,
            reason,
            error,
            original_subject: envelope.subject(&self.ctx.config.streams.systems, "pos"),
            headers: None,
            payload: payload.into(),
            stream_seq: Some(seq),
            identity: seq.to_string(),
        });
    }

    fn go_on(&self, seq: u64) -> bool {
        let stop_after = self.stop_after.load(SeqCst);
        stop_after == 0 || seq < stop_after
    }

    /// Publishes the batch's dead letters and waits until JetStream stored them. A failure here
    /// fails the actor: the supervisor restarts from the last snapshot, so the bad events are
    /// read (and dead-lettered) again rather than lost.
    async fn flush_letters(&mut self) -> Result<(), ActorProcessingErr> {
        if self.letters.is_empty() {
            return Ok(());
        }
        let n = self.letters.len() as u64;
        let first = format!(
            "{} ({})",
            self.letters[0].error, self.letters[0].original_subject
        );
        for letter in self.letters.drain(..) {
            self.ctx.dead_letters.send(letter).await?;
        }
        // At most one line per 10 s, with the count since the last one: never a line per event.
        self.letters_unlogged += n;
        if self.letters_logged.elapsed() >= Duration::from_secs(10) {
            tracing::warn!(
                count = self.letters_unlogged,
                example = %first,
                "dead-lettered bad events; everything else was applied"
            );
            self.letters_unlogged = 0;
            self.letters_logged = std::time::Instant::now();
        }
        Ok(())
    }

    async fn store(&mut self, loc: &LocationId) -> Result<ActorRef<StoreMsg>, ActorProcessingErr> {
        if let Some(r) = self.stores.get(loc) {
            return Ok(r.clone());
        }
        let (r, _) = Actor::spawn_linked(
            Some(format!("store-{loc}-{}{}", self.generation, self.ctx.tag)),
            StoreActor,
            StoreArgs {
                ctx: self.ctx.store.clone(),
                aggregator: StoreAggregator::new(loc.clone()),
            },
            self.supervisor.clone(),
        )
        .await?;
        if !self.members.join(self.generation, r.get_id()) {
            // Our generation was torn down while the store started; it must not outlive it.
            r.get_cell().kill();
            return Err("this pipeline generation was stopped".into());
        }
        self.stores.insert(loc.clone(), r.clone());
        Ok(r)
    }

    /// Sends the routed shard ops to their shards; `end_seq` is the last sequence they cover.
    /// Store events go too when `stores` is set, or once enough of them wait.
    ///
    /// Store aggregates are read only at barriers, so their events may wait for later batches:
    /// a batch of 1,000 events touches about 270 of 300 stores, and one message per store per
    /// batch cost more in actor wake-ups than in folding its two or three sales. Whatever
    /// waits goes out before a barrier, when ingest stops, and once the stream has nothing
    /// more.
    async fn dispatch(&mut self, end_seq: u64, stores: bool) -> Result<(), ActorProcessingErr> {
        let (shard_ops, work) = self.routed.take_shard_ops();
        self.ctx.flow.credits.take(work);
        for (i, ops) in shard_ops.into_iter().enumerate() {
            let work = ops.len() as u64;
            // A send only fails when the shard is gone; the supervisor is restarting us then.
            self.shards[i].send_message(ShardMsg::Batch { ops, end_seq, work })?;
        }
        let hold = STORE_HOLD_BATCHES * self.ctx.config.ingest.batch as u64;
        if !stores && self.routed.store_work < hold {
            return Ok(());
        }
        let (by_store, work) = self.routed.take_store_events();
        self.ctx.flow.credits.take(work);
        for (loc, events) in by_store {
            let work = events.len() as u64;
            let store = self.store(&loc).await?;
            store.send_message(StoreMsg::Events { events, work })?;
        }
        Ok(())
    }

    fn barrier(
        &mut self,
        seq: u64,
        flush: bool,
        snapshot: bool,
        at_ms: i64,
    ) -> Result<(), ActorProcessingErr> {
        let snapshot = snapshot && self.ctx.config.snapshot.enabled;
        // As the shards prune their reservations at this barrier, with its time.
        let remember = self.ctx.config.reservations.remember.as_millis();
        self.keys
            .prune(at_ms, i64::try_from(remember).unwrap_or(i64::MAX));
        self.count_keys();
        let ingest = snapshot.then(|| IngestSnapshot {
            dedupe: self.dedupe.clone(),
            keys: self.keys.clone(),
        });
        self.coordinator
            .send_message(CoordMsg::Expect(BarrierHeader {
                seq,
                flush,
                snapshot,
                at_ms,
                stores: self.stores.len(),
                ingest,
            }))?;
        for shard in &self.shards {
            shard.send_message(ShardMsg::Barrier {
                seq,
                flush,
                snapshot,
                now_ms: Some(at_ms),
                reply: self.coordinator.clone(),
            })?;
        }
        for store in self.stores.values() {
            store.send_message(StoreMsg::Barrier {
                seq,
                at_ms,
                flush,
                snapshot,
                reply: self.coordinator.clone(),
            })?;
        }
        Ok(())
    }

    /// One step: the next decoded batch from the reader, deduplicated, routed, dispatched.
    async fn pull(&mut self) -> Result<bool, ActorProcessingErr> {
        let limit = self.ctx.config.ingest.credit;
        let m = self.ctx.metrics.clone();
        let t = std::time::Instant::now();
        self.ctx.flow.credits.wait_below(limit).await;
        m.ingest_wait_credit_us
            .fetch_add(t.elapsed().as_micros() as u64, Relaxed);
        if self.ctx.flow.paused.load(Relaxed) {
            self.ctx.metrics.ingest_paused.fetch_add(1, Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
            return Ok(true);
        }
        #[cfg(feature = "lab")]
        if self.ctx.flow.hold.load(Relaxed) {
            tokio::time::sleep(Duration::from_millis(5)).await;
            return Ok(true);
        }
        let reader = match &mut self.reader {
            Some(r) => r,
            None => self
                .reader
                .insert(Reader::start(self.ctx.clone(), self.consume_from)),
        };
        let batch =
            match tokio::time::timeout(Duration::from_millis(200), reader.batches.recv()).await {
                Err(_) => {
                    // Nothing came: whatever store events wait go now.
                    if self.routed.store_work > 0 {
                        self.dispatch(self.last_seq, true).await?;
                    }
                    return Ok(true);
                }
                Ok(None) => {
                    // The reader ended: it gave up (its credentials are refused), or it was
                    // stopped; start over after what we have.
                    if let Some(fatal) = reader.failure().await {
                        return Err(fatal.into());
                    }
                    self.reader = None;
                    self.consume_from = self.last_seq + 1;
                    return Ok(true);
                }
                Ok(Some(b)) => b,
            };
        let busy = std::time::Instant::now();
        let mut go_on = true;
        for d in batch {
            if !self.handle_message(d).await? {
                go_on = false;
                break;
            }
        }
        let end = self.last_seq;
        // Store events wait while the stream holds more (see `dispatch`).
        let stores = !go_on || self.pending == 0;
        self.dispatch(end, stores).await?;
        self.flush_letters().await?;
        // The dedupe table's own counters, once per batch (they travel with its snapshot).
        let stats = &self.dedupe.stats;
        m.gap_sequences.store(stats.gap_sequences, Relaxed);
        m.dedupe_gaps_dropped.store(stats.gaps_dropped, Relaxed);
        m.dedupe_sources_evicted
            .store(stats.sources_evicted, Relaxed);
        m.ingest_busy_us
            .fetch_add(busy.elapsed().as_micros() as u64, Relaxed);
        m.busy(crate::telemetry::Stage::Ingest, busy);
        Ok(go_on)
    }
}

impl Actor for IngestActor {
    type Msg = IngestMsg;
    type State = IngestState;
    type Arguments = IngestArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<IngestMsg>,
        args: IngestArgs,
    ) -> Result<IngestState, ActorProcessingErr> {
        myself.send_message(IngestMsg::Pull)?;
        let shards = args.shards.len();
        let mut dedupe = args.dedupe;
        let ingest = &args.ctx.config.ingest;
        dedupe.set_bounds(ingest.dedupe_sources, ingest.max_sequence_jump);
        let state = IngestState {
            ctx: args.ctx,
            dedupe,
            keys: args.keys,
            last_seq: args.from_seq,
            consume_from: args.from_seq + 1,
            reader: None,
            shards: args.shards,
            stores: args.stores,
            coordinator: args.coordinator,
            supervisor: args.supervisor,
            routed: Routed::new(shards),
            letters: Vec::new(),
            stop_after: args.stop_after,
            generation: args.generation,
            members: args.members,
            letters_unlogged: 0,
            letters_logged: std::time::Instant::now() - Duration::from_secs(60),
            pending: 0,
            panics: std::collections::VecDeque::new(),
        };
        // Keys restored from a snapshot count from the start, not from the first request.
        state.count_keys();
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<IngestMsg>,
        msg: IngestMsg,
        state: &mut IngestState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            IngestMsg::Pull => {
                if state.pull().await? {
                    myself.send_message(IngestMsg::Pull)?;
                } else {
                    tracing::info!(seq = state.last_seq, "ingest reached its stop sequence");
                }
            }
            #[cfg(feature = "lab")]
            IngestMsg::Rewind(to) => {
                state.reader = None;
                state.consume_from = to.max(1);
            }
            #[cfg(feature = "lab")]
            IngestMsg::Crash => panic!("ingest crash requested (test hook)"),
        }
        Ok(())
    }
}
