//! Store actor: one per store, started on first sight; owns that store's aggregator.

use crate::shared::Flow;
use crate::snapshot::coordinator::{CoordMsg, StorePart};
use crate::telemetry::Metrics;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use retailflow_core::aggregate::store::StoreAggregator;
use retailflow_core::ingest::route::StoreEvent;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

pub enum StoreMsg {
    Events {
        events: Vec<StoreEvent>,
        work: u64,
    },
    Barrier {
        seq: u64,
        /// The barrier's time (ms), from the stream: closing grace is measured in it.
        at_ms: i64,
        flush: bool,
        snapshot: bool,
        reply: ActorRef<CoordMsg>,
    },
    /// Test hook: panic while handling this message.
    #[cfg(feature = "lab")]
    Crash,
}

pub struct StoreActor;

/// What a store actor holds besides its aggregator: the pipeline's flow (to give back the
/// credit of what it folded, and to name an event that panicked it) and the metrics.
#[derive(Clone)]
pub struct StoreContext {
    pub flow: Arc<Flow>,
    pub metrics: Arc<Metrics>,
    /// Where the store's days are shown to finance (reconciliation).
    pub finance: Arc<crate::finance::books::Books>,
    /// `finance.close_grace` in milliseconds.
    pub close_grace_ms: i64,
}

pub struct StoreArgs {
    pub ctx: StoreContext,
    pub aggregator: StoreAggregator,
}

pub struct StoreState {
    ctx: StoreContext,
    agg: StoreAggregator,
    /// The aggregator's `days_dropped` already counted in the metrics.
    days_dropped: u64,
}

impl Actor for StoreActor {
    type Msg = StoreMsg;
    type State = StoreState;
    type Arguments = StoreArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<StoreMsg>,
        args: StoreArgs,
    ) -> Result<StoreState, ActorProcessingErr> {
        let mut agg = args.aggregator;
        let days = agg.all_days();
        args.ctx.finance.update(agg.location(), days);
        Ok(StoreState {
            ctx: args.ctx,
            days_dropped: agg.days_dropped,
            agg,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<StoreMsg>,
        msg: StoreMsg,
        state: &mut StoreState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            StoreMsg::Events { events, work } => {
                let started = std::time::Instant::now();
                #[cfg(feature = "lab")]
                let hook = state.ctx.flow.panic_hooks.store.load(Relaxed);
                let mut at = 0;
                // As in the shards: a panic names its event, which replay dead-letters.
                let added = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    for e in &events {
                        at = e.seq;
                        #[cfg(feature = "lab")]
                        if e.seq == hook {
                            panic!("test hook: panic aggregating stream sequence {}", e.seq);
                        }
                        if let Some(close) = &e.close {
                            state.agg.declare(e.seq, close);
                            continue;
                        }
                        state.agg.add(
                            e.seq,
                            e.till.as_ref(),
                            e.business_day,
                            e.currency,
                            &e.lines,
                            &e.tenders,
                            e.returning,
                        );
                    }
                }));
                if let Err(panic) = added {
                    let store = format_args!("store {}", state.agg.location());
                    return Err(state
                        .ctx
                        .flow
                        .poisoned
                        .fail(at, "aggregate", store, &*panic));
                }
                state.ctx.flow.credits.give_back(work);
                state
                    .ctx
                    .metrics
                    .busy(crate::telemetry::Stage::Store, started);
            }
            StoreMsg::Barrier {
                seq,
                at_ms,
                flush,
                snapshot,
                reply,
            } => {
                let grace = state.ctx.close_grace_ms;
                let drafts = state.agg.barrier(seq, at_ms, flush, grace);
                // New events show at flushes; a Z report or a close at once.
                let days = state.agg.days_changed(flush);
                state.ctx.finance.update(state.agg.location(), days);
                let dropped = state.agg.days_dropped;
                if dropped > state.days_dropped {
                    state
                        .ctx
                        .metrics
                        .finance_days_dropped
                        .fetch_add(dropped - state.days_dropped, Relaxed);
                    state.days_dropped = dropped;
                }
                let bytes = if snapshot {
                    Some(retailflow_core::snapshot::format::encode_part(&state.agg)?)
                } else {
                    None
                };
                reply.send_message(CoordMsg::Store(StorePart {
                    location: state.agg.location().clone(),
                    seq,
                    drafts,
                    state: bytes,
                }))?;
            }
            #[cfg(feature = "lab")]
            StoreMsg::Crash => panic!("store {} crash requested (test hook)", state.agg.location()),
        }
        Ok(())
    }
}
