//! Reservations: a request becomes an event in the stream; the shard owning the SKU decides
//! when it applies that event, in stream order; the caller gets the decision. Expiry is an
//! event too, published by a timer, so replaying the stream reproduces every grant, rejection
//! and expiry (invariant 1).

use super::context::QueryContext;
use crate::domain::money::MAX_QTY;
use crate::domain::{
    ChannelId, Envelope, Event, EventId, LocationId, ReservationBatch, ReservationExpired,
    ReservationId, ReservationReleased, ReservationRequested, SCHEMA_VERSION, Sku, SourceId,
    Target, ids::check_token, subject,
};
use crate::shared::decisions::Want;
use crate::snapshot::ticker::now_ms;
use futures::StreamExt;
use retailflow_core::apply::ledger::{Decision, DecisionState, request_fingerprint};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveRequest {
    pub sku: String,
    pub qty: i64,
    /// Reserve at this location ...
    #[serde(default)]
    pub location: Option<String>,
    /// ... or for this channel, by its sourcing rule.
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// The caller's key; the same key always gets the first decision. Also the reservation id.
    pub idempotency_key: String,
    /// Grant what is there when less than `qty` is available.
    #[serde(default)]
    pub allow_partial: bool,
}

impl ReserveRequest {
    /// A `POST /v1/reservations` body (JSON); the error is the 400 message.
    pub fn from_body(body: &[u8]) -> Result<ReserveRequest, String> {
        serde_json::from_slice(body).map_err(|e| format!("request body: {e}"))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub location: String,
    pub qty: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveAnswer {
    pub reservation_id: String,
    pub sku: String,
    pub granted: bool,
    /// `active`, `rejected`, `released`, `expired` or `consumed` (taken over by an order).
    pub state: DecisionState,
    pub allocations: Vec<Allocation>,
    /// Granted units in total.
    pub qty: i64,
    /// For a rejection: what could have been had.
    pub available: i64,
    pub expires_at_ms: i64,
    /// Stream sequence of the request that decided it.
    pub decided_at: u64,
}

impl From<Decision> for ReserveAnswer {
    fn from(d: Decision) -> Self {
        ReserveAnswer {
            qty: d.allocations.iter().map(|a| a.1).sum(),
            reservation_id: d.reservation_id.to_string(),
            sku: d.sku.to_string(),
            granted: d.granted,
            state: d.state,
            allocations: d
                .allocations
                .into_iter()
                .map(|(l, q)| Allocation {
                    location: l.to_string(),
                    qty: q,
                })
                .collect(),
            available: d.available,
            expires_at_ms: d.expires_at_ms,
            decided_at: d.decided_at,
        }
    }
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReserveError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    /// The idempotency key is bound to another request (HTTP 409).
    #[error("{0}")]
    Conflict(String),
}

pub const KEY_REUSED: &str = "idempotency key reused with a different request";

fn key_reused() -> ReserveError {
    ReserveError::Conflict(KEY_REUSED.into())
}

/// Publishes events into the stream under one source id with its own sequence.
struct Publisher {
    /// The reservation front end's own connection: requests do not queue behind the data
    /// path's traffic.
    js: async_nats::jetstream::Context,
    source: SourceId,
    seq: AtomicU64,
    /// How long a publish the stream did not take is sent again (`reservations.
    /// decision_timeout`): on a cluster, a stream whose leader died takes no message until
    /// the others have elected a new one, a few seconds.
    patience: Duration,
    /// The events stream: a publish it did not take is sent again only while it exists.
    stream: String,
}

/// Pause before a publish the stream did not take is sent again.
const REPUBLISH_PAUSE: Duration = Duration::from_millis(200);

impl Publisher {
    /// Publishes `event` under this publisher's next sequence; its `Nats-Msg-Id` is the
    /// envelope's id unless `msg_id` names another.
    async fn publish(
        &self,
        token: &str,
        event: Event,
        msg_id: Option<&str>,
    ) -> Result<u64, ReserveError> {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let kind = event.kind();
        let env = Envelope {
            v: SCHEMA_VERSION,
            id: EventId::from(format!("{}/{seq}", self.source).as_str()),
            source: self.source.clone(),
            seq,
            occurred_at_ms: now_ms(),
            trace: None,
            event,
        };
        let payload = crate::domain::codec::encode_msgpack(&env)
            .map_err(|e| ReserveError::Unavailable(format!("encoding: {e}")))?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id.unwrap_or(env.id.as_str()));
        let subj = format!("{}.{token}.{kind}", subject::API_EVENTS);
        let payload = bytes::Bytes::from(payload);
        let started = std::time::Instant::now();
        loop {
            // The same message under the same id each time: the stream keeps one copy.
            match self.store(&subj, &headers, &payload).await {
                Ok(seq) => return Ok(seq),
                Err(e) if started.elapsed() + REPUBLISH_PAUSE >= self.patience => return Err(e),
                Err(e) if self.gone().await => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "reservation event not stored; sending it again");
                    tokio::time::sleep(REPUBLISH_PAUSE).await;
                }
            }
        }
    }

    /// JetStream says the events stream does not exist (deleted, or never created): sending
    /// again cannot help. A stream without a leader, or a cluster without a meta leader,
    /// does not answer that.
    async fn gone(&self) -> bool {
        use async_nats::jetstream::context::GetStreamErrorKind;
        let asked = tokio::time::timeout(Duration::from_secs(1), self.js.get_stream(&self.stream));
        match asked.await {
            Ok(Err(e)) => matches!(e.kind(), GetStreamErrorKind::JetStream(j)
                if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND),
            _ => false,
        }
    }

    /// One attempt: the stream sequence the message was stored at.
    async fn store(
        &self,
        subj: &str,
        headers: &async_nats::HeaderMap,
        payload: &bytes::Bytes,
    ) -> Result<u64, ReserveError> {
        let ack = self
            .js
            .publish_with_headers(subj.to_string(), headers.clone(), payload.clone())
            .await
            .map_err(|e| ReserveError::Unavailable(format!("cannot publish the request: {e}")))?
            .await
            .map_err(|e| {
                ReserveError::Unavailable(format!(
                    "the events stream did not store the request: {e}"
                ))
            })?;
        Ok(ack.sequence)
    }
}

/// A reservation request waiting to be published, and who to tell how that went.
struct Pending {
    request: ReservationRequested,
    token: String,
    published: tokio::sync::oneshot::Sender<Result<(), ReserveError>>,
}

/// Batches in flight to the stream at once.
const BATCHES_IN_FLIGHT: usize = 4;
/// Largest batch the API forms (the event allows more).
const BATCH_LIMIT: usize = 256;

/// Publishes reservation requests: whatever arrived while the previous batches were being
/// stored goes out as one `reservation_batch` event (a lone request as a plain
/// `reservation_requested`). Under light load every request leaves at once; under heavy load
/// the stream takes one message per batch instead of one per request. The batches in flight
/// are awaited in this task, not a task each: a batch costs no spawn and no extra wake-up.
async fn batcher(publisher: Arc<Publisher>, mut rx: tokio::sync::mpsc::Receiver<Pending>) {
    let mut in_flight = futures::stream::FuturesUnordered::new();
    loop {
        let first = tokio::select! {
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => continue,
            p = rx.recv(), if in_flight.len() < BATCHES_IN_FLIGHT => match p {
                Some(p) => p,
                None => break,
            },
        };
        let mut batch = vec![first];
        while batch.len() < BATCH_LIMIT {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        in_flight.push(publish_batch(publisher.clone(), batch));
    }
    // The senders are gone; the batches already out still get their word.
    while in_flight.next().await.is_some() {}
}

/// Publishes one batch and tells each of its requests how that went.
async fn publish_batch(publisher: Arc<Publisher>, batch: Vec<Pending>) {
    let result = if batch.len() == 1 {
        let p = &batch[0];
        let event = Event::ReservationRequested(p.request.clone());
        publisher.publish(&p.token, event, None).await
    } else {
        let requests = batch.iter().map(|p| p.request.clone()).collect();
        let event = Event::ReservationBatch(ReservationBatch { requests });
        publisher.publish("many", event, None).await
    };
    for p in batch {
        let _ = p.published.send(result.clone().map(|_| ()));
    }
}

/// Publishes reservation events and waits for their decisions.
pub struct Reservations {
    ctx: Arc<QueryContext>,
    publisher: Arc<Publisher>,
    /// Bounded by `reservations.max_queued`: a full queue answers 503 instead of growing.
    requests: tokio::sync::mpsc::Sender<Pending>,
}

impl Reservations {
    /// `role` distinguishes publishers (`api`, `expiry`) so each has its own sequence space.
    /// Must be called inside a Tokio runtime: it starts the request batcher there.
    pub fn new(
        ctx: Arc<QueryContext>,
        js: async_nats::jetstream::Context,
        role: &str,
    ) -> Reservations {
        let source = format!("{role}/{}-{}", now_ms(), std::process::id());
        let publisher = Arc::new(Publisher {
            js,
            source: SourceId::from(source.as_str()),
            seq: AtomicU64::new(0),
            patience: ctx.config.reservations.decision_timeout,
            stream: ctx.config.streams.events.clone(),
        });
        let (requests, rx) = tokio::sync::mpsc::channel(ctx.config.reservations.max_queued.max(1));
        tokio::spawn(batcher(publisher.clone(), rx));
        Reservations {
            ctx,
            publisher,
            requests,
        }
    }

    async fn publish(&self, token: &str, event: Event) -> Result<u64, ReserveError> {
        self.publisher.publish(token, event, None).await
    }

    /// Publishes the expiry of reservation `id` (what the leader's expiry timer does once it
    /// is due). Its `Nats-Msg-Id` is the reservation's, so whoever sends it, the stream keeps
    /// one within its duplicate window. Returns the stream sequence (that of the first copy for
    /// a duplicate).
    pub async fn expire(&self, id: &ReservationId, sku: &Sku) -> Result<u64, ReserveError> {
        let event = Event::ReservationExpired(ReservationExpired {
            reservation_id: id.clone(),
            sku: sku.clone(),
        });
        // Whichever replica leads sends the expiry; two leaders at once (a lease is not a
        // lock) send it under the same id, and the stream keeps one.
        let msg_id = format!("expire/{id}");
        self.publisher
            .publish(sku.as_str(), event, Some(&msg_id))
            .await
    }

    async fn decide(
        &self,
        id: &ReservationId,
        token: &str,
        event: Event,
    ) -> Result<ReserveAnswer, ReserveError> {
        let decision = self.ctx.decisions.wait(id, Want::Outcome);
        self.publish(token, event).await?;
        let submitted = Submitted {
            ctx: self.ctx.clone(),
            decision,
            stored: None,
        };
        submitted.answer().await
    }

    pub fn check(
        &self,
        req: &ReserveRequest,
    ) -> Result<(ReservationId, Target, String, i64), ReserveError> {
        let bad = |m: String| Err(ReserveError::BadRequest(m));
        check_token("sku", &req.sku).map_err(|e| ReserveError::BadRequest(e.to_string()))?;
        if req.idempotency_key.is_empty() || req.idempotency_key.len() > 64 {
            return bad("idempotency_key: 1 to 64 characters are required".into());
        }
        if req.qty <= 0 || req.qty > MAX_QTY {
            return bad(format!("qty {} must be between 1 and {MAX_QTY}", req.qty));
        }
        let (target, token) = match (&req.location, &req.channel) {
            (Some(l), None) => {
                check_token("location", l).map_err(|e| ReserveError::BadRequest(e.to_string()))?;
                (Target::Location(LocationId::from(l.as_str())), l.clone())
            }
            (None, Some(c)) => {
                check_token("channel", c).map_err(|e| ReserveError::BadRequest(e.to_string()))?;
                if !self
                    .ctx
                    .view
                    .channels()
                    .contains_key(&ChannelId::from(c.as_str()))
                {
                    return bad(format!("unknown channel {c:?}"));
                }
                (Target::Channel(ChannelId::from(c.as_str())), c.clone())
            }
            _ => return bad("give exactly one of location or channel".into()),
        };
        let cfg = &self.ctx.config.reservations;
        let ttl = req
            .ttl_seconds
            .map(Duration::from_secs)
            .unwrap_or(cfg.default_ttl);
        if ttl.is_zero() || ttl > cfg.max_ttl {
            return bad(format!(
                "ttl_seconds must be between 1 and {}",
                cfg.max_ttl.as_secs()
            ));
        }
        let expires = now_ms() + ttl.as_millis() as i64;
        Ok((
            ReservationId::from(req.idempotency_key.as_str()),
            target,
            token,
            expires,
        ))
    }

    /// Checks `req` and queues it for the stream at once, without waiting: the caller awaits
    /// the returned [`Submitted`] for the decision. A front end that reads requests in a loop
    /// calls this inline, so a request is on its way to the stream before any task is spawned.
    pub fn submit(&self, req: ReserveRequest) -> Result<Submitted, ReserveError> {
        let (id, target, token, expires_at_ms) = self.check(&req)?;
        let request = ReservationRequested {
            reservation_id: id.clone(),
            sku: Sku::from(req.sku.as_str()),
            qty: req.qty,
            target,
            expires_at_ms,
            allow_partial: req.allow_partial,
        };
        let fp = request_fingerprint(&request);
        // Early answer when this replica already holds the key for another request; the
        // shards and ingest enforce the same in stream order whatever this says.
        if let Some((_, d)) = self.ctx.active.get(&id) {
            if d.request != 0 && d.request != fp {
                self.ctx
                    .metrics
                    .reservation_key_conflicts
                    .fetch_add(1, Ordering::Relaxed);
                return Err(key_reused());
            }
        }
        // A new key while `max_keys` are held: turned away before it reaches the stream (a
        // key this replica holds active is a retry and goes on). The count is ingest's, so
        // requests published but not yet applied can still take the map past the bound.
        let max_keys = self.ctx.config.reservations.max_keys as u64;
        let metrics = &self.ctx.metrics;
        if max_keys > 0
            && metrics.reservation_keys.load(Ordering::Relaxed) >= max_keys
            && self.ctx.active.get(&id).is_none()
        {
            metrics
                .reservation_keys_full
                .fetch_add(1, Ordering::Relaxed);
            return Err(ReserveError::Unavailable(format!(
                "{max_keys} reservation keys are held (reservations.max_keys); retry when reservations expire"
            )));
        }
        // A slot first, then the waiter: a full queue leaves nothing behind.
        let slot = self.requests.try_reserve().map_err(|e| match e {
            tokio::sync::mpsc::error::TrySendError::Full(()) => {
                self.ctx
                    .metrics
                    .reservation_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                ReserveError::Unavailable(
                    "too many reservation requests queued; retry shortly with the same idempotency_key".into(),
                )
            }
            tokio::sync::mpsc::error::TrySendError::Closed(()) => publisher_stopped(),
        })?;
        let decision = self.ctx.decisions.wait(&id, Want::Request(fp));
        let (published, stored) = tokio::sync::oneshot::channel();
        slot.send(Pending {
            request,
            token,
            published,
        });
        Ok(Submitted {
            ctx: self.ctx.clone(),
            decision,
            stored: Some(stored),
        })
    }

    pub async fn reserve(&self, req: ReserveRequest) -> Result<ReserveAnswer, ReserveError> {
        self.submit(req)?.answer().await
    }

    pub async fn release(&self, id: &str) -> Result<ReserveAnswer, ReserveError> {
        let rid = ReservationId::from(id);
        let Some((sku, _)) = self.ctx.active.get(&rid) else {
            return Err(ReserveError::NotFound(format!(
                "reservation {id:?} is not active (unknown, already released, expired or consumed)"
            )));
        };
        let event = Event::ReservationReleased(ReservationReleased {
            reservation_id: rid.clone(),
            sku: sku.clone(),
        });
        self.decide(&rid, sku.as_str(), event).await
    }

    pub fn get(&self, id: &str) -> Option<ReserveAnswer> {
        self.ctx
            .active
            .get(&ReservationId::from(id))
            .map(|(_, d)| d.into())
    }
}

fn publisher_stopped() -> ReserveError {
    ReserveError::Unavailable("the request publisher stopped".into())
}

/// A request on its way: its decision, and (when the batcher publishes it) word of whether
/// the stream took it.
pub struct Submitted {
    ctx: Arc<QueryContext>,
    decision: tokio::sync::oneshot::Receiver<Decision>,
    stored: Option<tokio::sync::oneshot::Receiver<Result<(), ReserveError>>>,
}

impl Submitted {
    /// The decision, as soon as the shard has made it. The decision alone is enough: a shard
    /// decides only what it read from the stream, so a decided request is stored, and its
    /// publish acknowledgement (which often arrives later) adds nothing. A failed publish is
    /// answered at once.
    pub async fn answer(self) -> Result<ReserveAnswer, ReserveError> {
        let Submitted {
            ctx,
            mut decision,
            mut stored,
        } = self;
        let timeout = ctx.config.reservations.decision_timeout;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut storing = stored.is_some();
        loop {
            tokio::select! {
                biased;
                d = &mut decision => match d {
                    Ok(d) if d.state == DecisionState::Conflict => return Err(key_reused()),
                    Ok(d) => return Ok(d.into()),
                    // Only a pipeline going away drops a waiter unanswered.
                    Err(_) => return Err(ReserveError::Unavailable(
                        "retailflow stopped before deciding; retrying with the same idempotency_key is safe".into(),
                    )),
                },
                s = async { stored.as_mut().expect("checked by storing").await }, if storing => match s {
                    Ok(Ok(())) => storing = false,
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Err(publisher_stopped()),
                },
                _ = &mut deadline => break,
            }
        }
        // Closed first, so the sweep takes this caller's own waiter too.
        drop(decision);
        ctx.decisions.forget_closed();
        ctx.metrics
            .reservation_timeouts
            .fetch_add(1, Ordering::Relaxed);
        Err(no_decision(timeout))
    }
}

fn no_decision(timeout: Duration) -> ReserveError {
    ReserveError::Unavailable(format!(
        "no decision within {timeout:?} (retailflow may be catching up); retrying with the same idempotency_key is safe"
    ))
}

/// Runs the expiry timer until `stopping`.
pub async fn expiry_loop(ctx: Arc<QueryContext>) {
    let r = Reservations::new(ctx.clone(), ctx.js.clone(), "expiry");
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut recently: std::collections::HashMap<ReservationId, std::time::Instant> =
        Default::default();
    loop {
        tick.tick().await;
        if ctx.flow.stopping() {
            return;
        }
        if !ctx.leader.leads() {
            recently.clear();
            continue;
        }
        // An expiry event takes a moment to be applied; do not publish it twice meanwhile.
        recently.retain(|_, t| t.elapsed() < Duration::from_secs(5));
        let due: Vec<_> = ctx
            .active
            .due(now_ms(), 1000)
            .into_iter()
            .filter(|(id, _)| !recently.contains_key(id))
            .collect();
        for (id, sku) in due {
            match r.expire(&id, &sku).await {
                Ok(_) => {
                    recently.insert(id, std::time::Instant::now());
                }
                Err(error) => {
                    tracing::warn!(%error, reservation = %id, "expiry not published; retried next tick");
                    break;
                }
            }
        }
    }
}
