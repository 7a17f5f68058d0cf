//! The ingest actor: the one reader of the events stream.
//!
//! It pulls with an ephemeral consumer that starts right after the restored snapshot's
//! sequence and never acks (the snapshot is the offset, see invariant 3). Each pull handles a
//! batch: decode, validate, dedupe, route; then one message per destination actor. A pull only
//! starts while the work in flight is under the credit limit, so a slow shard makes ingest
//! wait and the backlog stays in JetStream.

use super::deadletter::{Letter, Reason};
use super::dedupe::{Dedupe, Verdict};
use super::route::Routed;
use crate::aggregate::actor::{StoreActor, StoreArgs, StoreMsg};
use crate::aggregate::store::StoreAggregator;
use crate::apply::shard::ShardMsg;
use crate::domain::codec::{self, Format};
use crate::domain::{Event, LocationId};
use crate::snapshot::coordinator::{BarrierHeader, CoordMsg};
use crate::snapshot::format::IngestState as IngestSnapshot;
use crate::supervise::shared::Shared;
use async_nats::jetstream::{self, consumer};
use futures::{FutureExt, StreamExt};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::time::Duration;

pub enum IngestMsg {
    Pull,
    /// Test hook: recreate the consumer from an earlier sequence, as after a consumer restart;
    /// everything re-read must be recognised as a redelivery.
    Rewind(u64),
    /// Test hook: panic.
    Crash,
}

pub struct IngestActor;

pub struct IngestArgs {
    pub shared: Arc<Shared>,
    pub dedupe: Dedupe,
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
}

pub struct IngestState {
    shared: Arc<Shared>,
    dedupe: Dedupe,
    last_seq: u64,
    consume_from: u64,
    messages: Option<consumer::pull::Stream>,
    shards: Vec<ActorRef<ShardMsg>>,
    stores: FxHashMap<LocationId, ActorRef<StoreMsg>>,
    coordinator: ActorRef<CoordMsg>,
    supervisor: ActorCell,
    routed: Routed,
    letters: Vec<Letter>,
    stop_after: Arc<std::sync::atomic::AtomicU64>,
    events_stream: String,
    generation: u64,
}

/// Stream sequence and pending count from a JetStream reply subject, without the date parsing
/// `Message::info` does. `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`
/// or, with domain and account hash, two tokens more after `ACK`.
pub fn ack_seq(reply: &str) -> Option<(u64, u64)> {
    let tokens: Vec<&str> = reply.split('.').collect();
    let (s, p) = match tokens.len() {
        9 => (5, 8),
        n if n >= 11 => (7, 10),
        _ => return None,
    };
    Some((tokens[s].parse().ok()?, tokens[p].parse().ok()?))
}

impl IngestState {
    async fn ensure_consumer(&mut self) -> Result<(), ActorProcessingErr> {
        if self.messages.is_some() {
            return Ok(());
        }
        let stream = self
            .shared
            .js
            .get_stream(&self.events_stream)
            .await
            .map_err(|e| format!("events stream {}: {e}", self.events_stream))?;
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: self.consume_from.max(1),
                },
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(60),
                memory_storage: true,
                description: Some(
                    "retailflow ingest (ephemeral, the snapshot is the offset)".into(),
                ),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("creating the ingest consumer: {e}"))?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(self.shared.config.ingest.batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| format!("starting the ingest pull: {e}"))?;
        self.messages = Some(messages);
        tracing::info!(from = self.consume_from.max(1), "ingest consumer started");
        Ok(())
    }

    /// Handles one message; returns false when ingest must stop here (graceful shutdown).
    async fn handle_message(
        &mut self,
        msg: jetstream::Message,
    ) -> Result<bool, ActorProcessingErr> {
        let m = self.shared.metrics.clone();
        let reply = msg.reply.as_ref().map(|r| r.as_str()).unwrap_or("");
        let Some((seq, pending)) = ack_seq(reply) else {
            tracing::warn!(reply, "message without a JetStream reply subject; skipped");
            return Ok(true);
        };
        m.consumer_lag.store(pending as i64, Relaxed);
        if seq <= self.last_seq {
            m.duplicates_redelivered.fetch_add(1, Relaxed);
            return Ok(true);
        }
        self.last_seq = seq;
        m.events_received.fetch_add(1, Relaxed);
        let content_type = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(codec::CONTENT_TYPE))
            .map(|v| v.as_str());
        let format = Format::from_content_type(content_type);
        let envelope = match codec::decode_envelope(format, &msg.payload) {
            Ok(e) => e,
            Err(e) => {
                self.dead_letter(&msg, seq, Reason::Undecodable, e.to_string());
                return Ok(self.go_on(seq));
            }
        };
        if let Err(e) = envelope.validate() {
            let error = format!("{} event {}: {e}", envelope.event.kind(), envelope.id);
            self.dead_letter(&msg, seq, Reason::Invalid, error);
            return Ok(self.go_on(seq));
        }
        match self.dedupe.check(&envelope.source, envelope.seq) {
            Verdict::New => {}
            Verdict::Duplicate => {
                m.duplicates_resent.fetch_add(1, Relaxed);
                return Ok(self.go_on(seq));
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
                self.dead_letter(&msg, seq, Reason::Late, error);
                return Ok(self.go_on(seq));
            }
        }
        m.events_applied.fetch_add(1, Relaxed);
        match envelope.event {
            Event::Barrier(b) => {
                self.dispatch(seq).await?;
                self.flush_letters().await?;
                self.barrier(seq, b.flush, b.snapshot, envelope.occurred_at_ms)?;
            }
            event => self.routed.route(seq, event),
        }
        Ok(self.go_on(seq))
    }

    fn go_on(&self, seq: u64) -> bool {
        let stop_after = self.stop_after.load(SeqCst);
        stop_after == 0 || seq < stop_after
    }

    fn dead_letter(&mut self, msg: &jetstream::Message, seq: u64, reason: Reason, error: String) {
        self.letters.push(Letter {
            stage: "ingest",
            reason,
            error,
            original_subject: msg.subject.to_string(),
            headers: msg.headers.clone(),
            payload: msg.payload.clone(),
            stream_seq: Some(seq),
            identity: seq.to_string(),
        });
    }

    /// Publishes the batch's dead letters and waits until JetStream stored them. A failure here
    /// fails the actor: the supervisor restarts from the last snapshot, so the bad events are
    /// read (and dead-lettered) again rather than lost.
    async fn flush_letters(&mut self) -> Result<(), ActorProcessingErr> {
        for letter in self.letters.drain(..) {
            self.shared.dead_letters.send(letter).await?;
        }
        Ok(())
    }

    async fn store(&mut self, loc: &LocationId) -> Result<ActorRef<StoreMsg>, ActorProcessingErr> {
        if let Some(r) = self.stores.get(loc) {
            return Ok(r.clone());
        }
        let (r, _) = Actor::spawn_linked(
            Some(format!("store-{loc}-{}", self.generation)),
            StoreActor,
            StoreArgs {
                shared: self.shared.clone(),
                aggregator: StoreAggregator::new(loc.clone()),
            },
            self.supervisor.clone(),
        )
        .await?;
        self.stores.insert(loc.clone(), r.clone());
        Ok(r)
    }

    /// Sends the routed batch to its actors; `end_seq` is the last sequence it covers.
    async fn dispatch(&mut self, end_seq: u64) -> Result<(), ActorProcessingErr> {
        let routed = self.routed.take();
        self.shared.credits.take(routed.work);
        for (i, ops) in routed.shard_ops.into_iter().enumerate() {
            let work = ops.len() as u64;
            // A send only fails when the shard is gone; the supervisor is restarting us then.
            self.shards[i].send_message(ShardMsg::Batch { ops, end_seq, work })?;
        }
        for (loc, events) in routed.stores {
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
        let snapshot = snapshot && self.shared.config.snapshot.enabled;
        let ingest = snapshot.then(|| IngestSnapshot {
            dedupe: self.dedupe.clone(),
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
                flush,
                snapshot,
                reply: self.coordinator.clone(),
            })?;
        }
        Ok(())
    }

    /// One pull: up to a batch of messages, whatever is ready once the first arrived.
    async fn pull(&mut self) -> Result<bool, ActorProcessingErr> {
        let limit = self.shared.config.ingest.credit;
        self.shared.credits.wait_below(limit).await;
        if self.shared.paused.load(Relaxed) {
            self.shared.metrics.ingest_paused.fetch_add(1, Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
            return Ok(true);
        }
        self.ensure_consumer().await?;
        let batch = self.shared.config.ingest.batch;
        let Some(messages) = self.messages.as_mut() else {
            return Ok(true);
        };
        let first = match tokio::time::timeout(Duration::from_millis(200), messages.next()).await {
            Err(_) => return Ok(true),
            Ok(None) => {
                self.messages = None;
                self.consume_from = self.last_seq + 1;
                return Ok(true);
            }
            Ok(Some(Err(error))) => {
                tracing::warn!(%error, "ingest pull failed; recreating the consumer");
                self.messages = None;
                self.consume_from = self.last_seq + 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Ok(true);
            }
            Ok(Some(Ok(m))) => m,
        };
        let mut msgs = Vec::with_capacity(batch);
        msgs.push(first);
        while msgs.len() < batch {
            match messages.next().now_or_never() {
                Some(Some(Ok(m))) => msgs.push(m),
                _ => break,
            }
        }
        let mut go_on = true;
        for msg in msgs {
            if !self.handle_message(msg).await? {
                go_on = false;
                break;
            }
        }
        let end = self.last_seq;
        self.dispatch(end).await?;
        self.flush_letters().await?;
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
        Ok(IngestState {
            events_stream: args.shared.config.streams.events.clone(),
            shared: args.shared,
            dedupe: args.dedupe,
            last_seq: args.from_seq,
            consume_from: args.from_seq + 1,
            messages: None,
            shards: args.shards,
            stores: args.stores,
            coordinator: args.coordinator,
            supervisor: args.supervisor,
            routed: Routed::new(shards),
            letters: Vec::new(),
            stop_after: args.stop_after,
            generation: args.generation,
        })
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
            IngestMsg::Rewind(to) => {
                state.messages = None;
                state.consume_from = to.max(1);
            }
            IngestMsg::Crash => panic!("ingest crash requested (test hook)"),
        }
        Ok(())
    }
}
