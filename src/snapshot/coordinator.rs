//! The coordinator collects every actor's part of a barrier, forms the posting documents,
//! makes the snapshot durable and only then releases the postings to the outbox.
//!
//! Barriers complete in stream order: an actor answers barrier S before S', so S' cannot be
//! complete while S is not.
//!
//! Only the leader writes snapshots and releases. A follower forms the very same documents
//! (same stream, same barriers, same ids) and holds them until the leader's release marker
//! (`released` in the snapshot pointers) passes their barrier; if the leader dies first, the
//! follower that takes over releases them after its first snapshot. A document released by
//! both is one message in the outbox (its id is the `Nats-Msg-Id`) and one booking at the ERP
//! (its id is the Idempotency-Key).

use super::context::SnapshotContext;
use super::store::SnapshotStore;
use crate::config::ErpEndpointConfig;
use crate::domain::LocationId;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use retailflow_core::aggregate::posting::{DocBody, Draft, Lineage, PostingDoc};
use retailflow_core::apply::ledger::MovementLine;
use retailflow_core::snapshot::format::{FORMAT_VERSION, IngestState, Snapshot};
use serde_bytes::ByteBuf;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

pub struct BarrierHeader {
    pub seq: u64,
    pub flush: bool,
    pub snapshot: bool,
    pub at_ms: i64,
    /// Store actors the barrier was sent to.
    pub stores: usize,
    pub ingest: Option<IngestState>,
}

pub struct ShardPart {
    pub shard: usize,
    pub seq: u64,
    pub movements: Vec<MovementLine>,
    pub lineage: Vec<(LocationId, Lineage)>,
    pub state: Option<Vec<u8>>,
}

pub struct StorePart {
    pub location: LocationId,
    pub seq: u64,
    pub drafts: Vec<Draft>,
    pub state: Option<Vec<u8>>,
}

pub enum CoordMsg {
    Expect(BarrierHeader),
    Shard(ShardPart),
    Store(StorePart),
    /// Publish what is unreleased now (after recovery, or when snapshots are off).
    Release,
    /// Reply with the last barrier made durable and released (tests, shutdown).
    Status(ractor::RpcReplyPort<CoordStatus>),
    /// Write the last failed snapshot again (sent by a timer while one is kept).
    RetrySnapshot,
}

#[derive(Clone, Debug, Default)]
pub struct CoordStatus {
    pub last_complete: u64,
    pub last_snapshot: u64,
    pub last_released: u64,
    pub unreleased: usize,
}

struct Pending {
    header: BarrierHeader,
    shards: Vec<Option<ShardPart>>,
    stores: Vec<StorePart>,
}

impl Pending {
    fn complete(&self) -> bool {
        self.shards.iter().all(Option::is_some) && self.stores.len() >= self.header.stores
    }
}

pub struct Coordinator;

pub struct CoordArgs {
    pub ctx: Arc<SnapshotContext>,
    pub snapshots: Option<SnapshotStore>,
    pub unreleased: Vec<PostingDoc>,
    /// The barrier the restored state comes from (0 for a fresh start).
    pub restored_seq: u64,
}

pub struct CoordState {
    ctx: Arc<SnapshotContext>,
    snapshots: Option<SnapshotStore>,
    pending: BTreeMap<u64, Pending>,
    unreleased: Vec<PostingDoc>,
    status: CoordStatus,
    /// Lowest barrier whose postings are in `unreleased` but not yet covered by a snapshot.
    unsnapshotted: bool,
    /// The newest snapshot that failed to write (its `unreleased` lent out, empty here) and how
    /// many of the first `unreleased` documents it covers. Rewritten on a timer: while the
    /// held postings stop ingest (`snapshot.max_pending_postings`), no barrier comes to take a
    /// new snapshot, so without the retry a store that recovers would not end the pause.
    retry: Option<(Snapshot, usize)>,
    /// A `RetrySnapshot` is on its way.
    retry_timer: bool,
}

/// Addresses drafts to every endpoint that takes their kind and location.
pub fn address(drafts: Vec<Draft>, endpoints: &[ErpEndpointConfig], seq: u64) -> Vec<PostingDoc> {
    let mut out = Vec::new();
    for d in drafts {
        let kind = d.body.kind();
        for e in endpoints {
            let takes_kind = e.documents.contains(&kind);
            let takes_loc =
                e.locations.is_empty() || e.locations.iter().any(|l| l == d.location.as_str());
            if takes_kind && takes_loc {
                out.extend(PostingDoc::address(d.clone(), &e.name, seq));
            }
        }
    }
    out
}

/// Merges every shard's movements into one inventory document per location.
pub fn movement_drafts(parts: &mut [Option<ShardPart>]) -> Vec<Draft> {
    // Each location's lines are counted first, so that its document's vector is allocated
    // once: grown a line at a time, the flush of a backlog (about a million lines) spent most
    // of its time reallocating and faulting in fresh pages. A shard sends its lines grouped by
    // location, so both passes touch the map once per run of one location, not once per line;
    // lines in any other order come out the same, only slower.
    let mut counts: BTreeMap<LocationId, usize> = BTreeMap::new();
    for p in parts.iter().flatten() {
        for run in p.movements.chunk_by(|a, b| a.location == b.location) {
            *counts.entry(run[0].location.clone()).or_default() += run.len();
        }
    }
    let mut by_loc: BTreeMap<LocationId, (Vec<MovementLine>, Lineage)> = counts
        .into_iter()
        .map(|(l, n)| (l, (Vec::with_capacity(n), Lineage::default())))
        .collect();
    for p in parts.iter_mut().flatten() {
        let mut lines = std::mem::take(&mut p.movements).into_iter().peekable();
        while let Some(first) = lines.next() {
            let doc = &mut by_loc.entry(first.location.clone()).or_default().0;
            let location = first.location.clone();
            doc.push(first);
            while let Some(m) = lines.next_if(|m| m.location == location) {
                doc.push(m);
            }
        }
        for (loc, lin) in p.lineage.drain(..) {
            let e = &mut by_loc.entry(loc).or_default().1;
            if e.events == 0 {
                *e = lin;
            } else if lin.events > 0 {
                e.first_seq = e.first_seq.min(lin.first_seq);
                e.last_seq = e.last_seq.max(lin.last_seq);
                e.events += lin.events;
            }
        }
    }
    by_loc
        .into_iter()
        .filter(|(_, (lines, _))| !lines.is_empty())
        // Lines keep the shards' order (shard index, then each ledger's deterministic order).
        .map(|(location, (lines, lineage))| Draft {
            location,
            business_day: None,
            currency: None,
            part: 0,
            lineage,
            body: DocBody::InventoryMovements(lines),
            final_doc: false,
            corrects: None,
        })
        .collect()
}

impl CoordState {
    async fn finish(&mut self, mut p: Pending) {
        let seq = p.header.seq;
        let mut drafts = Vec::new();
        let mut stores: Vec<StorePart> = std::mem::take(&mut p.stores);
        stores.sort_by(|a, b| a.location.cmp(&b.location));
        for s in stores.iter_mut() {
            drafts.append(&mut s.drafts);
        }
        drafts.extend(movement_drafts(&mut p.shards));
        let docs = address(drafts, &self.ctx.config.erp, seq);
        self.ctx
            .metrics
            .postings_formed
            .fetch_add(docs.len() as u64, Relaxed);
        if !docs.is_empty() {
            self.unsnapshotted = true;
        }
        self.unreleased.extend(docs);
        self.status.last_complete = seq;
        self.ctx.metrics.barriers.fetch_add(1, Relaxed);

        let leads = self.ctx.leader.leads();
        match (&self.snapshots, p.header.snapshot) {
            (Some(store), _) if !leads => {
                let store = store.clone();
                self.follow(&store, seq).await;
            }
            (None, _) if !leads => {
                // Without snapshots there is no release marker to follow: a follower keeps
                // nothing (documented: replicas need snapshots).
                self.unreleased.clear();
                self.status.last_released = seq;
            }
            (Some(store), true) => {
                let mut snap = Snapshot {
                    format: FORMAT_VERSION,
                    seq,
                    taken_at_ms: p.header.at_ms,
                    ingest: ByteBuf::from(
                        p.header
                            .ingest
                            .as_ref()
                            .map(|i| {
                                retailflow_core::snapshot::format::encode_part(i)
                                    .unwrap_or_default()
                            })
                            .unwrap_or_default(),
                    ),
                    shards: p
                        .shards
                        .iter_mut()
                        .map(|s| {
                            ByteBuf::from(
                                s.as_mut().and_then(|s| s.state.take()).unwrap_or_default(),
                            )
                        })
                        .collect(),
                    stores: stores
                        .iter_mut()
                        .map(|s| {
                            (
                                s.location.clone(),
                                ByteBuf::from(s.state.take().unwrap_or_default()),
                            )
                        })
                        .collect(),
                    // Lent to the snapshot for the write and taken back after it.
                    unreleased: std::mem::take(&mut self.unreleased),
                };
                let started = std::time::Instant::now();
                let written = store.write(&snap).await;
                self.unreleased = std::mem::take(&mut snap.unreleased);
                match written {
                    Ok(ptr) => {
                        drop(snap);
                        crate::memory::hand_back();
                        self.retry = None;
                        self.ctx.metrics.snapshots.fetch_add(1, Relaxed);
                        self.ctx.metrics.snapshot_failing_since_ms.store(0, Relaxed);
                        self.status.last_snapshot = seq;
                        self.unsnapshotted = false;
                        tracing::info!(
                            seq,
                            bytes = ptr.bytes,
                            ms = started.elapsed().as_millis() as u64,
                            "snapshot durable"
                        );
                        self.release(seq).await;
                    }
                    Err(error) => {
                        let m = &self.ctx.metrics;
                        m.snapshot_failures.fetch_add(1, Relaxed);
                        let now = crate::snapshot::ticker::now_ms().max(1) as u64;
                        let _ = m
                            .snapshot_failing_since_ms
                            .compare_exchange(0, now, Relaxed, Relaxed);
                        tracing::error!(%error, seq, "snapshot failed; postings stay unreleased until it is written");
                        self.retry = Some((snap, self.unreleased.len()));
                    }
                }
            }
            (None, _) => self.release(seq).await,
            (Some(_), false) => {}
        }
        self.count_pending();
    }

    fn count_pending(&self) {
        self.ctx
            .metrics
            .snapshot_pending_postings
            .store(self.unreleased.len() as u64, Relaxed);
    }

    /// Writes the kept failed snapshot again; on success releases the documents it covers
    /// (those formed after it wait for a snapshot of their own).
    async fn retry_snapshot(&mut self) {
        let (Some((mut snap, covered)), Some(store)) = (self.retry.take(), &self.snapshots) else {
            return;
        };
        let rest = self
            .unreleased
            .split_off(covered.min(self.unreleased.len()));
        snap.unreleased = std::mem::take(&mut self.unreleased);
        let written = store.write(&snap).await;
        self.unreleased = std::mem::take(&mut snap.unreleased);
        let m = &self.ctx.metrics;
        match written {
            Ok(_) => {
                let seq = snap.seq;
                drop(snap);
                crate::memory::hand_back();
                m.snapshots.fetch_add(1, Relaxed);
                m.snapshot_failing_since_ms.store(0, Relaxed);
                self.status.last_snapshot = self.status.last_snapshot.max(seq);
                self.unsnapshotted = !rest.is_empty();
                tracing::info!(seq, "snapshot written on retry");
                self.release(seq).await;
            }
            Err(error) => {
                m.snapshot_failures.fetch_add(1, Relaxed);
                tracing::warn!(%error, seq = snap.seq, "snapshot retry failed");
                self.retry = Some((snap, covered));
            }
        }
        self.unreleased.extend(rest);
        self.count_pending();
    }

    /// A follower's part at a barrier: drop the documents the leader has released.
    async fn follow(&mut self, store: &SnapshotStore, seq: u64) {
        match store.released().await {
            Ok(released) => {
                self.unreleased.retain(|d| d.barrier_seq > released);
                self.status.last_released = released.min(seq);
            }
            Err(error) => {
                tracing::debug!(%error, seq, "follower: release marker not read; documents kept")
            }
        }
        self.status.unreleased = self.unreleased.len();
    }

    async fn release(&mut self, seq: u64) {
        if !self.ctx.leader.leads() {
            return;
        }
        if self.unreleased.is_empty() {
            self.status.last_released = seq;
            return;
        }
        match crate::post::outbox::publish(&self.ctx.js, &self.unreleased).await {
            Ok(fresh) => {
                self.ctx
                    .metrics
                    .postings_released
                    .fetch_add(fresh as u64, Relaxed);
                self.unreleased.clear();
                self.status.last_released = seq;
                if let Some(store) = &self.snapshots {
                    if let Err(error) = store.mark_released(seq).await {
                        tracing::warn!(%error, seq, "could not record the release; a restart publishes again (deduplicated)");
                    }
                }
            }
            Err(error) => {
                // Nothing is lost: the documents stay here (and in the snapshot) and are
                // published again, deduplicated by id, at the next barrier.
                tracing::warn!(%error, seq, "outbox publish failed; will retry");
            }
        }
        self.status.unreleased = self.unreleased.len();
        self.count_pending();
    }
}

impl Actor for Coordinator {
    type Msg = CoordMsg;
    type State = CoordState;
    type Arguments = CoordArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<CoordMsg>,
        args: CoordArgs,
    ) -> Result<CoordState, ActorProcessingErr> {
        if !args.unreleased.is_empty() {
            myself.send_message(CoordMsg::Release)?;
        }
        Ok(CoordState {
            ctx: args.ctx,
            snapshots: args.snapshots,
            pending: BTreeMap::new(),
            unreleased: args.unreleased,
            status: CoordStatus {
                last_complete: args.restored_seq,
                last_snapshot: args.restored_seq,
                last_released: 0,
                unreleased: 0,
            },
            unsnapshotted: false,
            retry: None,
            retry_timer: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<CoordMsg>,
        msg: CoordMsg,
        state: &mut CoordState,
    ) -> Result<(), ActorProcessingErr> {
        let handled = state.handle(msg).await;
        if state.retry.is_some() && !state.retry_timer {
            state.retry_timer = true;
            let every = state
                .ctx
                .config
                .snapshot
                .interval
                .min(std::time::Duration::from_secs(5));
            myself.send_after(every, || CoordMsg::RetrySnapshot);
        }
        handled
    }
}

impl CoordState {
    async fn handle(&mut self, msg: CoordMsg) -> Result<(), ActorProcessingErr> {
        let state = self;
        let seq = match msg {
            CoordMsg::Expect(header) => {
                let shards = state.ctx.config.shards.count;
                let seq = header.seq;
                state.pending.insert(
                    seq,
                    Pending {
                        header,
                        shards: (0..shards).map(|_| None).collect(),
                        stores: Vec::new(),
                    },
                );
                seq
            }
            CoordMsg::Shard(part) => {
                let seq = part.seq;
                let Some(p) = state.pending.get_mut(&seq) else {
                    return Err(format!(
                        "shard {} answered barrier {seq}, which was never announced",
                        part.shard
                    )
                    .into());
                };
                let i = part.shard;
                p.shards[i] = Some(part);
                seq
            }
            CoordMsg::Store(part) => {
                let seq = part.seq;
                let Some(p) = state.pending.get_mut(&seq) else {
                    return Err(format!(
                        "store {} answered barrier {seq}, which was never announced",
                        part.location
                    )
                    .into());
                };
                p.stores.push(part);
                seq
            }
            CoordMsg::Release => {
                let seq = state.status.last_complete;
                state.release(seq).await;
                return Ok(());
            }
            CoordMsg::Status(reply) => {
                let mut s = state.status.clone();
                s.unreleased = state.unreleased.len();
                let _ = reply.send(s);
                return Ok(());
            }
            CoordMsg::RetrySnapshot => {
                state.retry_timer = false;
                state.retry_snapshot().await;
                return Ok(());
            }
        };
        if state.pending.get(&seq).is_some_and(Pending::complete) {
            if let Some(p) = state.pending.remove(&seq) {
                let started = std::time::Instant::now();
                state.finish(p).await;
                state
                    .ctx
                    .metrics
                    .busy(crate::telemetry::Stage::Coordinator, started);
            }
        }
        Ok(())
    }
}

/// Groups documents by endpoint, for reporting.
pub fn count_by_endpoint(docs: &[PostingDoc]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for d in docs {
        *m.entry(d.endpoint.clone()).or_insert(0) += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(location: &str, sku: &str, qty: i64) -> MovementLine {
        MovementLine {
            location: LocationId::new(location),
            sku: crate::domain::Sku::new(sku),
            reason: "sale".into(),
            qty,
        }
    }

    fn part(shard: usize, movements: Vec<MovementLine>) -> Option<ShardPart> {
        Some(ShardPart {
            shard,
            seq: 9,
            movements,
            lineage: Vec::new(),
            state: None,
        })
    }

    fn lineage(events: u64, first_seq: u64, last_seq: u64) -> Lineage {
        Lineage {
            events,
            first_seq,
            last_seq,
        }
    }

    #[test]
    fn movements_become_one_document_per_location_with_every_line_in_shard_order() {
        let shard0 = vec![
            line("S1", "A", -1),
            line("S1", "B", -2),
            line("DC1", "A", 5),
            // Not grouped: S1 again after another location.
            line("S1", "C", -3),
        ];
        let shard1 = vec![line("S2", "D", -4), line("S1", "E", -5)];
        let mut parts = vec![part(0, shard0), None, part(2, shard1)];
        // S1 was touched by both shards: its lineage spans both.
        parts[0].as_mut().unwrap().lineage = vec![
            (LocationId::new("S1"), lineage(3, 10, 40)),
            (LocationId::new("DC1"), lineage(1, 20, 20)),
        ];
        parts[2].as_mut().unwrap().lineage = vec![
            (LocationId::new("S1"), lineage(1, 5, 30)),
            (LocationId::new("S2"), lineage(1, 50, 50)),
            // A shard that folded nothing for a location leaves its span alone.
            (LocationId::new("DC1"), lineage(0, 0, 0)),
        ];
        type Doc = (String, Vec<(String, i64)>, (u64, u64, u64));
        let got: Vec<Doc> = movement_drafts(&mut parts)
            .into_iter()
            .map(|d| match d.body {
                DocBody::InventoryMovements(lines) => (
                    d.location.to_string(),
                    lines.iter().map(|l| (l.sku.to_string(), l.qty)).collect(),
                    (d.lineage.events, d.lineage.first_seq, d.lineage.last_seq),
                ),
                other => panic!("unexpected body {other:?}"),
            })
            .collect();
        let l = |sku: &str, q: i64| (sku.to_string(), q);
        // Written out by hand: documents in location-name order, lines in shard order.
        let want: Vec<Doc> = vec![
            ("DC1".into(), vec![l("A", 5)], (1, 20, 20)),
            (
                "S1".into(),
                vec![l("A", -1), l("B", -2), l("C", -3), l("E", -5)],
                (4, 5, 40),
            ),
            ("S2".into(), vec![l("D", -4)], (1, 50, 50)),
        ];
        assert_eq!(got, want);
        assert!(parts.iter().flatten().all(|p| p.movements.is_empty()));
    }
}
