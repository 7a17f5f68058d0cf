//! The root supervisor and its restart policy.
//!
//! ractor reports a failed child; what to do is ours to decide:
//! - a failed ingest, shard, store or coordinator restarts the whole pipeline generation from
//!   the latest durable snapshot plus replay. All of them restart together because they share
//!   barriers in flight; restoring one alone would mix states of different sequences.
//! - a failed ERP-endpoint actor is restarted alone; its work waits in the outbox and its rate
//!   limiter is kept by the supervisor, so a restart does not reset the window.
//! - ERP-endpoint actors run only while this replica leads: they start when it becomes leader
//!   and stop (their work stays in the outbox) when it stops leading.
//! - more than `max_restarts` within `within` escalates: the supervisor reports a fatal error
//!   to its owner (the process exits with a clear message) instead of looping.

use super::recovery::{self, Restored};
use super::wiring::Shared;
use crate::aggregate::actor::{StoreActor, StoreArgs, StoreMsg};
#[cfg(feature = "lab")]
use crate::apply::shard::ShardMsg;
use crate::apply::shard::{ShardActor, ShardArgs};
use crate::ingest::actor::{IngestActor, IngestArgs, IngestMsg};
use crate::post::endpoint::{EndpointActor, EndpointArgs, EndpointMsg};
use crate::post::ratelimit::RateLimiter;
use crate::shared::members::Members;
use crate::snapshot::coordinator::{CoordArgs, CoordMsg, Coordinator};
use crate::snapshot::store::SnapshotStore;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use rustc_hash::FxHashMap;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Which actor a test wants to fail.
#[cfg(feature = "lab")]
#[derive(Clone, Debug)]
pub enum CrashTarget {
    Ingest,
    Shard(usize),
    AnyStore,
    Endpoint(String),
}

pub enum SupervisorMsg {
    /// Test hook: make an actor panic.
    #[cfg(feature = "lab")]
    Crash(CrashTarget),
    /// Test hook: make ingest re-read from an earlier sequence.
    #[cfg(feature = "lab")]
    Rewind(u64),
    Coordinator(ractor::RpcReplyPort<Option<ActorRef<CoordMsg>>>),
    Restarts(ractor::RpcReplyPort<u64>),
    /// This replica started or stopped leading.
    Leading(bool),
}

pub struct Supervisor;

pub struct SupervisorArgs {
    pub shared: Arc<Shared>,
    pub snapshots: Option<SnapshotStore>,
    /// State for the first generation (recovered by the caller).
    pub restored: Option<Restored>,
    pub fatal: tokio::sync::mpsc::UnboundedSender<String>,
    pub stop_after: Arc<AtomicU64>,
}

struct Generation {
    ingest: ActorRef<IngestMsg>,
    /// Kept for the crash hook.
    #[cfg(feature = "lab")]
    shards: Vec<ActorRef<ShardMsg>>,
    coordinator: ActorRef<CoordMsg>,
}

pub struct SupervisorState {
    shared: Arc<Shared>,
    snapshots: Option<SnapshotStore>,
    fatal: tokio::sync::mpsc::UnboundedSender<String>,
    stop_after: Arc<AtomicU64>,
    generation: u64,
    current: Option<Generation>,
    /// Endpoint actors by id, and their (persistent) limiters by name.
    endpoints: HashMap<ActorId, String>,
    endpoint_refs: HashMap<String, ActorRef<EndpointMsg>>,
    limiters: HashMap<String, Arc<Mutex<RateLimiter>>>,
    /// The current generation's pipeline actors (coordinator, shards, stores, ingest). A
    /// supervision event from any other pipeline actor echoes a generation already torn
    /// down and restarts nothing (see `members`).
    members: Members,
    restarts: VecDeque<Instant>,
    total_restarts: u64,
    first: Option<Restored>,
}

impl SupervisorState {
    /// Records a restart; returns false when the intensity limit is exceeded.
    fn allow_restart(&mut self) -> bool {
        let now = Instant::now();
        let within = self.shared.config.supervision.within;
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > within)
        {
            self.restarts.pop_front();
        }
        self.restarts.push_back(now);
        self.total_restarts += 1;
        self.shared.metrics.actor_restarts.fetch_add(1, Relaxed);
        self.restarts.len() as u32 <= self.shared.config.supervision.max_restarts
    }

    async fn start_pipeline(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let restored = recovery::restore(&self.shared, self.snapshots.as_ref()).await?;
        self.spawn_generation(myself, restored).await
    }

    async fn spawn_generation(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        restored: Restored,
    ) -> Result<(), ActorProcessingErr> {
        self.generation += 1;
        let g = self.generation;
        let shared = self.shared.clone();
        let cell = myself.get_cell();
        shared.view.reset(restored.seq);
        shared.active.clear();
        shared.flow.credits.reset();
        self.members.begin(g);
        let (coordinator, _) = Actor::spawn_linked(
            Some(format!("coordinator-g{g}{}", shared.tag)),
            Coordinator,
            CoordArgs {
                ctx: shared.snapshot(),
                snapshots: self.snapshots.clone(),
                unreleased: restored.unreleased,
                restored_seq: restored.seq,
            },
            cell.clone(),
        )
        .await?;
        self.members.join(g, coordinator.get_id());
        let mut shards = Vec::new();
        let shard_ctx = shared.shard();
        for (index, ledger) in restored.ledgers.into_iter().enumerate() {
            let (s, _) = Actor::spawn_linked(
                Some(format!("shard-{index}-g{g}{}", shared.tag)),
                ShardActor,
                ShardArgs {
                    index,
                    ctx: shard_ctx.clone(),
                    ledger,
                    from_seq: restored.seq,
                },
                cell.clone(),
            )
            .await?;
            self.members.join(g, s.get_id());
            shards.push(s);
        }
        let mut stores: FxHashMap<_, ActorRef<StoreMsg>> = FxHashMap::default();
        for (loc, aggregator) in restored.stores {
            let (s, _) = Actor::spawn_linked(
                Some(format!("store-{loc}-{g}{}", shared.tag)),
                StoreActor,
                StoreArgs {
                    ctx: shared.store(),
                    aggregator,
                },
                cell.clone(),
            )
            .await?;
            self.members.join(g, s.get_id());
            stores.insert(loc, s);
        }
        shared.view.set_ready(true);
        let (ingest, _) = Actor::spawn_linked(
            Some(format!("ingest-g{g}{}", shared.tag)),
            IngestActor,
            IngestArgs {
                ctx: shared.ingest(),
                dedupe: restored.dedupe,
                keys: restored.keys,
                from_seq: restored.seq,
                shards: shards.clone(),
                stores,
                coordinator: coordinator.clone(),
                supervisor: cell,
                stop_after: self.stop_after.clone(),
                generation: g,
                members: self.members.clone(),
            },
            myself.get_cell(),
        )
        .await?;
        self.members.join(g, ingest.get_id());
        self.current = Some(Generation {
            ingest,
            #[cfg(feature = "lab")]
            shards,
            coordinator,
        });
        Ok(())
    }

    /// Stops every pipeline actor of the current generation (ingest first, so nothing new is
    /// dispatched) and waits for them.
    async fn stop_pipeline(&mut self, myself: &ActorRef<SupervisorMsg>) {
        if let Some(g) = self.current.take() {
            g.ingest.get_cell().kill();
        }
        self.members.end();
        for child in myself.get_children() {
            if !self.endpoints.contains_key(&child.get_id()) {
                let _ = child
                    .kill_and_wait(Some(std::time::Duration::from_secs(5)))
                    .await;
            }
        }
    }

    async fn spawn_endpoint(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        name: &str,
    ) -> Result<(), ActorProcessingErr> {
        let Some(cfg) = self
            .shared
            .config
            .erp
            .iter()
            .find(|e| e.name == name)
            .cloned()
        else {
            return Ok(());
        };
        let limiter = self
            .limiters
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(Mutex::new(RateLimiter::new(cfg.rate.clone()))))
            .clone();
        let (r, _) = Actor::spawn_linked(
            Some(format!(
                "erp-{name}-{}{}",
                self.total_restarts, self.shared.tag
            )),
            EndpointActor,
            EndpointArgs {
                ctx: self.shared.endpoint(),
                config: cfg,
                limiter,
            },
            myself.get_cell(),
        )
        .await?;
        self.endpoints.insert(r.get_id(), name.to_string());
        self.endpoint_refs.insert(name.to_string(), r);
        Ok(())
    }

    /// Starts every endpoint actor that is not running.
    async fn start_endpoints(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let names: Vec<String> = self
            .shared
            .config
            .erp
            .iter()
            .map(|e| e.name.clone())
            .filter(|n| !self.endpoint_refs.contains_key(n))
            .collect();
        for name in names {
            self.spawn_endpoint(myself, &name).await?;
        }
        Ok(())
    }

    /// Stops every endpoint actor; forgotten first, so their ends restart nothing. Their rate
    /// limiters are kept for when this replica leads again.
    fn stop_endpoints(&mut self) {
        self.endpoints.clear();
        for (name, actor) in self.endpoint_refs.drain() {
            tracing::info!(endpoint = %name, "no longer leading: ERP delivery stops here");
            actor.stop(Some("no longer leading".into()));
        }
    }

    fn escalate(&self, myself: &ActorRef<SupervisorMsg>, why: String) {
        let limit = self.shared.config.supervision.max_restarts;
        let within = self.shared.config.supervision.within;
        let msg = format!(
            "giving up: more than {limit} restarts within {within:?}; last failure: {why}. The stream and the last snapshot are intact; fix the cause and start again"
        );
        tracing::error!(error = %msg, "supervisor escalates");
        let _ = self.fatal.send(msg);
        myself.stop(Some("restart intensity exceeded".into()));
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(SupervisorState {
            shared: args.shared,
            snapshots: args.snapshots,
            fatal: args.fatal,
            stop_after: args.stop_after,
            generation: 0,
            current: None,
            endpoints: HashMap::new(),
            endpoint_refs: HashMap::new(),
            limiters: HashMap::new(),
            members: Members::default(),
            restarts: VecDeque::new(),
            total_restarts: 0,
            first: args.restored,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match state.first.take() {
            Some(restored) => state.spawn_generation(&myself, restored).await?,
            None => state.start_pipeline(&myself).await?,
        }
        if state.shared.leadership.leads() {
            state.start_endpoints(&myself).await?;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            #[cfg(feature = "lab")]
            SupervisorMsg::Crash(target) => {
                let Some(g) = &state.current else {
                    return Ok(());
                };
                match target {
                    CrashTarget::Ingest => {
                        let _ = g.ingest.send_message(IngestMsg::Crash);
                    }
                    CrashTarget::Shard(i) => {
                        if let Some(s) = g.shards.get(i) {
                            let _ = s.send_message(ShardMsg::Crash);
                        }
                    }
                    CrashTarget::AnyStore => {
                        for child in myself.get_children() {
                            if child.get_name().is_some_and(|n| n.starts_with("store-")) {
                                let _ = child.send_message(StoreMsg::Crash);
                                break;
                            }
                        }
                    }
                    CrashTarget::Endpoint(name) => {
                        if let Some(e) = state.endpoint_refs.get(&name) {
                            let _ = e.send_message(EndpointMsg::Crash);
                        }
                    }
                }
            }
            #[cfg(feature = "lab")]
            SupervisorMsg::Rewind(seq) => {
                if let Some(g) = &state.current {
                    let _ = g.ingest.send_message(IngestMsg::Rewind(seq));
                }
            }
            SupervisorMsg::Coordinator(reply) => {
                let _ = reply.send(state.current.as_ref().map(|g| g.coordinator.clone()));
            }
            SupervisorMsg::Restarts(reply) => {
                let _ = reply.send(state.total_restarts);
            }
            SupervisorMsg::Leading(true) => state.start_endpoints(&myself).await?,
            SupervisorMsg::Leading(false) => state.stop_endpoints(),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match event {
            SupervisionEvent::ActorFailed(cell, error) => (cell, error.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                // Ingest stopping at its stop sequence is the graceful path.
                if cell.get_name().is_some_and(|n| n.starts_with("ingest-"))
                    && state.stop_after.load(Relaxed) != 0
                {
                    return Ok(());
                }
                (
                    cell,
                    format!("stopped unexpectedly ({})", reason.unwrap_or_default()),
                )
            }
            _ => return Ok(()),
        };
        let id = cell.get_id();
        if state.shared.flow.stopping() {
            return Ok(());
        }
        if !state.endpoints.contains_key(&id) && !state.members.contains(&id) {
            tracing::debug!(actor = ?cell.get_name(), error = %why, "an actor of a retired generation ended");
            return Ok(());
        }
        let name = cell.get_name().unwrap_or_else(|| id.to_string());
        tracing::error!(actor = %name, error = %why, "actor failed");
        if !state.allow_restart() {
            state.escalate(&myself, format!("{name}: {why}"));
            return Ok(());
        }
        if let Some(endpoint) = state.endpoints.remove(&id) {
            state.endpoint_refs.remove(&endpoint);
            if state.shared.leadership.leads() {
                tracing::warn!(endpoint = %endpoint, "restarting ERP endpoint actor");
                state.spawn_endpoint(&myself, &endpoint).await?;
            }
            return Ok(());
        }
        tracing::warn!(actor = %name, "restarting the pipeline from the latest snapshot");
        state.stop_pipeline(&myself).await;
        if let Err(error) = state.start_pipeline(&myself).await {
            state.escalate(&myself, format!("restart failed: {error}"));
        }
        Ok(())
    }
}
