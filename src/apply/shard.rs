//! SKU-shard actor: the single writer of the ledger for the SKUs that hash to it.

use crate::config::ReservationConfig;
use crate::deadletter::{DeadLetters, Letter, Reason};
use crate::shared::Flow;
use crate::shared::changes::ChangeFeed;
use crate::shared::decisions::{ActiveReservations, Decisions};
use crate::snapshot::coordinator::{CoordMsg, ShardPart};
use crate::telemetry::{Metrics, Stage};
use crate::view::{View, ViewWriter};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use retailflow_core::apply::ledger::{DecisionState, Ledger, ResvLimits};
use retailflow_core::apply::op::Op;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

pub enum ShardMsg {
    /// Ops in stream order; `end_seq` is the last stream sequence the batch covers (the shard
    /// may have no op at that sequence), `work` the credit to give back.
    Batch {
        ops: Vec<(u64, Op)>,
        end_seq: u64,
        work: u64,
    },
    /// Cut here: reply with movements (when flushing) and state (when snapshotting).
    Barrier {
        seq: u64,
        flush: bool,
        snapshot: bool,
        now_ms: Option<i64>,
        reply: ActorRef<CoordMsg>,
    },
    /// Test hook: panic while handling this message (supervision tests).
    #[cfg(feature = "lab")]
    Crash,
}

pub struct ShardActor;

/// What a shard holds besides its ledger: where it publishes what it applied (the view, the
/// change feed, the reservation decisions), what it counts, where a refused op goes, the
/// pipeline's flow, and its reservation limits.
#[derive(Clone)]
pub struct ShardContext {
    pub flow: Arc<Flow>,
    pub metrics: Arc<Metrics>,
    pub view: Arc<View>,
    pub feed: Arc<ChangeFeed>,
    pub decisions: Arc<Decisions>,
    pub active: Arc<ActiveReservations>,
    pub dead_letters: DeadLetters,
    pub reservations: ReservationConfig,
}

pub struct ShardArgs {
    pub index: usize,
    pub ctx: ShardContext,
    pub ledger: Ledger,
    /// Stream sequence the restored ledger reflects.
    pub from_seq: u64,
}

pub struct ShardState {
    index: usize,
    ctx: ShardContext,
    ledger: Ledger,
    writer: ViewWriter,
    /// Slots already handed to the change feed in its current window.
    marked: crate::shared::changes::Marked,
    /// Exceptions already reported to metrics.
    reported: retailflow_core::apply::ledger::Exceptions,
    /// Size of the last snapshot part: the next one is encoded into a buffer that large and a
    /// little more, instead of one grown by doubling (each step copies the part again and
    /// leaves the smaller buffer behind, together about as much again as the part).
    last_part: usize,
}

impl ShardState {
    fn publish(&mut self, seq: u64) {
        let dirty = self.ledger.take_dirty();
        self.writer
            .publish(&self.ctx.view, &self.ledger, &dirty, seq);
        let feed = &self.ctx.feed;
        if feed.enabled() && !dirty.is_empty() && self.ctx.view.is_ready() {
            let ledger = &self.ledger;
            feed.mark(&mut self.marked, &dirty, |slot| {
                let (s, l, _) = ledger.slot(slot);
                (ledger.sku_name(s), ledger.loc_name(l))
            });
        }
        if let Some(channels) = self.ledger.take_channels_if_changed() {
            if self.index == 0 {
                self.ctx.view.set_channels(channels);
                feed.mark_channels();
            }
        }
        let m = &self.ctx.metrics;
        for d in self.ledger.take_decisions() {
            match d.state {
                DecisionState::Rejected => {
                    m.reservations_rejected.fetch_add(1, Relaxed);
                }
                DecisionState::Active => {
                    m.reservations_granted.fetch_add(1, Relaxed);
                }
                DecisionState::Conflict => {
                    m.reservation_key_conflicts.fetch_add(1, Relaxed);
                }
                _ => {}
            }
            // A conflict answers the refused request only; the key's reservation is untouched.
            if d.state != DecisionState::Conflict {
                self.ctx.active.update(&d);
            }
            self.ctx.decisions.complete(&d);
        }
        let evicted = self.ledger.take_evicted();
        if evicted > 0 {
            m.rejections_evicted.fetch_add(evicted, Relaxed);
        }
        self.ctx.view.set_applied(self.index, seq);
        let e = &self.ledger.exceptions;
        let m = &self.ctx.metrics;
        m.negative_on_hand
            .fetch_add(e.negative_on_hand - self.reported.negative_on_hand, Relaxed);
        m.short_allocations.fetch_add(
            e.short_allocations - self.reported.short_allocations,
            Relaxed,
        );
        self.reported = e.clone();
    }
}

/// Applies one batch of ops to `ledger` (shard `index`) and returns a dead letter per refused
/// op. Each letter's identity is (stream sequence, shard, the op's place among its event's ops
/// on this shard): two refused lines of one event are two letters, and a replay names them
/// the same, so JetStream drops only true repeats.
pub fn apply_ops(ledger: &mut Ledger, index: usize, ops: &[(u64, Op)]) -> Vec<Letter> {
    let mut letters = Vec::new();
    ledger.apply_batch(ops, |seq, op, error| {
        // Refusals are rare, so finding the op's place costs nothing on the usual path. An
        // event's ops reach a shard in one batch (ingest routes an event whole).
        let line = ops
            .iter()
            .position(|(_, o)| std::ptr::eq(o, op))
            .map_or(0, |at| ops[..at].iter().filter(|(s, _)| *s == seq).count());
        // Only arithmetic overflow refuses a fact; the rest of the batch goes on.
        letters.push(Letter {
            stage: "apply",
            reason: Reason::Overflow,
            error: error.to_string(),
            original_subject: String::new(),
            headers: None,
            payload: format!("{op:?}").into(),
            stream_seq: Some(seq),
            identity: format!("{seq}/{index}/{line}"),
        })
    });
    letters
}

impl Actor for ShardActor {
    type Msg = ShardMsg;
    type State = ShardState;
    type Arguments = ShardArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ShardMsg>,
        args: ShardArgs,
    ) -> Result<ShardState, ActorProcessingErr> {
        let mut ledger = args.ledger;
        ledger.reindex();
        let resv = &args.ctx.reservations;
        ledger.set_limits(ResvLimits {
            max_rejected: resv.max_rejected,
            retain_rejected_ms: i64::try_from(resv.remember_rejected.as_millis())
                .unwrap_or(i64::MAX),
        });
        let reported = ledger.exceptions.clone();
        for (id, _, _) in ledger.active_reservations() {
            if let Some(d) = ledger.reservation(id) {
                args.ctx.active.update(&d);
            }
        }
        let mut state = ShardState {
            index: args.index,
            ctx: args.ctx,
            ledger,
            writer: ViewWriter::default(),
            marked: Default::default(),
            reported,
            last_part: 0,
        };
        state.publish(args.from_seq);
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<ShardMsg>,
        msg: ShardMsg,
        state: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ShardMsg::Batch { ops, end_seq, work } => {
                let started = std::time::Instant::now();
                let n = ops.len() as u64;
                #[cfg(feature = "lab")]
                let hit = {
                    let hook = state.ctx.flow.panic_hooks.shard.load(Relaxed);
                    (hook != 0 && ops.iter().any(|(s, _)| *s == hook)).then_some(hook)
                };
                // Free unless something unwinds. A panic names the event it was applying; the
                // shard fails (its ledger may hold half an op) and on replay ingest
                // dead-letters that event instead of routing it again.
                let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    #[cfg(feature = "lab")]
                    if let Some(seq) = hit {
                        panic!("test hook: panic applying stream sequence {seq}");
                    }
                    apply_ops(&mut state.ledger, state.index, &ops)
                }));
                let letters = match applied {
                    Ok(letters) => letters,
                    Err(panic) => {
                        #[cfg(feature = "lab")]
                        let seq = hit.unwrap_or_else(|| state.ledger.applying_seq());
                        #[cfg(not(feature = "lab"))]
                        let seq = state.ledger.applying_seq();
                        let shard = format_args!("shard {}", state.index);
                        return Err(state.ctx.flow.poisoned.fail(seq, "apply", shard, &*panic));
                    }
                };
                for letter in letters {
                    // Awaited, with bounded retries inside `send`: the shard waits for the
                    // letter to be stored, but never for ever.
                    let seq = letter.stream_seq.unwrap_or(0);
                    if let Err(error) = state.ctx.dead_letters.send(letter).await {
                        tracing::error!(%error, seq, "dead letter for a refused op was not stored");
                    }
                }
                state.publish(end_seq);
                state.ctx.metrics.ops_applied.fetch_add(n, Relaxed);
                state.ctx.flow.credits.give_back(work);
                state.ctx.metrics.busy(Stage::Shard, started);
            }
            ShardMsg::Barrier {
                seq,
                flush,
                snapshot,
                now_ms,
                reply,
            } => {
                if let Some(now) = now_ms {
                    let remember = state.ctx.reservations.remember.as_millis() as i64;
                    state.ledger.prune_reservations(now, remember);
                }
                let (movements, lineage) = if flush {
                    (
                        state.ledger.take_movements(),
                        state.ledger.take_movement_lineage(),
                    )
                } else {
                    (Vec::new(), Vec::new())
                };
                let state_bytes = if snapshot {
                    let room = state.last_part + state.last_part / 16;
                    let part = retailflow_core::snapshot::format::encode_part_into(
                        Vec::with_capacity(room),
                        &state.ledger,
                    )?;
                    state.last_part = part.len();
                    Some(part)
                } else {
                    None
                };
                reply.send_message(CoordMsg::Shard(ShardPart {
                    shard: state.index,
                    seq,
                    movements,
                    lineage,
                    state: state_bytes,
                }))?;
            }
            #[cfg(feature = "lab")]
            ShardMsg::Crash => panic!("shard {} crash requested (test hook)", state.index),
        }
        Ok(())
    }
}
