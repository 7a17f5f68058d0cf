//! ERP-endpoint actor: takes postings for one endpoint from the outbox and delivers them
//! within the endpoint's limits.
//!
//! The actor fetches only as many postings as it has free concurrency; each delivery runs as
//! its own task (waiting for the rate limiter, then the sink: an HTTP call or a PostgreSQL
//! transaction, see [`super::sink`]), answers JetStream for its
//! posting itself and then tells the actor it is done. The task holds the message, so the
//! answer does not depend on the actor still being there: a restarted actor's postings go
//! back to the outbox at once instead of waiting out the ack wait. The rate limiter lives
//! outside the actor, so a restarted actor keeps counting the same window.
//!
//! A 429 or a fault of the endpoint (see [`delivery`]) pauses every delivery through the
//! limiter; the task keeps its posting (with progress acks) and tries it again after the
//! pause, so an outage never dead-letters a document and never spends JetStream deliveries.
//! While paused, every slot is held by a waiting task, so nothing more is fetched: the rest
//! of the backlog waits in the outbox. The paused state is logged once when it starts and once
//! when it ends, and counted in `retailflow_erp_paused` and `erp_paused_endpoints`.

use super::delivery::{self, Outcome};
use super::postgres::status::{ImportStatus, StatusPoller};
use super::ratelimit::RateLimiter;
use super::sink::Sink;
use crate::config::{ErpEndpointConfig, RetryConfig};
use crate::deadletter::{DeadLetters, Letter, Reason};
use crate::domain::{codec, subject};
use crate::finance::books::DocStatus;
use crate::finance::journal::{answer_of, record};
use crate::shared::Flow;
use crate::telemetry::{EndpointMetrics, Metrics};
use async_nats::jetstream::{self, AckKind, consumer};
use futures::StreamExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use retailflow_core::aggregate::posting::PostingDoc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;

/// How long a fetched posting stays with this process without a word from it.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// How often a delivery in progress tells JetStream it still holds the posting.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

pub enum EndpointMsg {
    Tick,
    /// A delivery task answered JetStream for its posting; its slot is free.
    Delivered,
    /// Test hook: panic.
    #[cfg(feature = "lab")]
    Crash,
}

pub struct EndpointActor;

/// What an endpoint actor holds besides its own configuration and limiter: the postings
/// stream it consumes, the dead letters for refused postings, the metrics, the pipeline's flow.
#[derive(Clone)]
pub struct EndpointContext {
    /// Name of the postings stream (the outbox).
    pub postings: String,
    pub js: jetstream::Context,
    pub dead_letters: DeadLetters,
    pub metrics: Arc<Metrics>,
    pub flow: Arc<Flow>,
    /// Where a postgres endpoint hands the import statuses it reads back; without it, none
    /// are read.
    pub import_status: Option<tokio::sync::mpsc::Sender<ImportStatus>>,
}

pub struct EndpointArgs {
    pub ctx: EndpointContext,
    pub config: ErpEndpointConfig,
    /// Kept by the supervisor across restarts of this actor.
    pub limiter: Arc<Mutex<RateLimiter>>,
}

pub struct EndpointState {
    ctx: EndpointContext,
    cfg: ErpEndpointConfig,
    /// Also holds the endpoint's limiter and metrics, which the actor uses too.
    answer: Arc<Answer>,
    sink: Arc<Sink>,
    /// A postgres endpoint's import status read-back; stops with the actor.
    _status: Option<StatusPoller>,
    consumer: Option<consumer::PullConsumer>,
    in_flight: usize,
    tick_queued: bool,
    last_info: std::time::Instant,
}

/// Durable consumer name of an endpoint.
pub fn consumer_name(endpoint: &str) -> String {
    format!("erp-{endpoint}")
}

/// Locks the limiter. A panic while it was held cannot leave it worse than a pause that is
/// too long or too short, so a poisoned lock is taken over, never left to stop the endpoint
/// for good.
fn lock(limiter: &Mutex<RateLimiter>) -> MutexGuard<'_, RateLimiter> {
    limiter.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits until the shared limiter grants a request; `resumed` cuts a pause short when the
/// endpoint answers again.
async fn acquire(limiter: &Mutex<RateLimiter>, resumed: &Notify) {
    loop {
        let wait = match lock(limiter).try_acquire(tokio::time::Instant::now()) {
            Ok(()) => return,
            Err(wait) => wait,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = resumed.notified() => {}
        }
    }
}

/// What a delivery task needs to answer JetStream for its posting itself; shared by the
/// endpoint actor and its tasks, and rebuilt with the actor (the limiter and metrics it points
/// to outlive restarts).
struct Answer {
    ctx: EndpointContext,
    name: String,
    retry: RetryConfig,
    limiter: Arc<Mutex<RateLimiter>>,
    metrics: Arc<EndpointMetrics>,
    /// Woken when a paused endpoint answers again.
    resumed: Notify,
    /// A written document is only staged (an interface table): the ERP's import decides.
    staged: bool,
}

impl Answer {
    /// Delivers `doc` until the ERP accepts or refuses it, pausing the whole endpoint through
    /// the limiter on a 429 or an endpoint fault. Gives up only when the pipeline stops, with
    /// the last outcome (the caller NAKs it back to the outbox).
    async fn deliver(&self, sink: &Sink, doc: &PostingDoc) -> Outcome {
        loop {
            acquire(&self.limiter, &self.resumed).await;
            self.metrics.requests.fetch_add(1, Relaxed);
            let outcome = sink.deliver(doc).await;
            let now = tokio::time::Instant::now();
            match &outcome {
                Outcome::Accepted { .. } | Outcome::Rejected { .. } => {
                    self.resume();
                    return outcome;
                }
                Outcome::Throttled { retry_after } => {
                    self.metrics.throttled_429.fetch_add(1, Relaxed);
                    self.metrics.retries.fetch_add(1, Relaxed);
                    // Already clamped to retry.max; `pause_until` adds nothing unchecked.
                    if let Some(until) = now.checked_add(*retry_after) {
                        lock(&self.limiter).pause_until(until);
                    }
                }
                Outcome::Unavailable { status, reason } => {
                    self.metrics.retries.fetch_add(1, Relaxed);
                    self.metrics.faults.fetch_add(1, Relaxed);
                    let counted =
                        lock(&self.limiter).fault(now, self.retry.initial, self.retry.max);
                    if let Some((1, wait)) = counted {
                        self.metrics.paused.store(1, Relaxed);
                        self.metrics.pauses.fetch_add(1, Relaxed);
                        self.ctx.metrics.erp_paused_endpoints.fetch_add(1, Relaxed);
                        tracing::warn!(
                            endpoint = %self.name,
                            status = status.map_or_else(|| "none".to_string(), |s| s.to_string()),
                            %reason,
                            ?wait,
                            "ERP endpoint paused: it cannot take postings now; they wait in the outbox and are retried with backoff"
                        );
                    } else {
                        tracing::debug!(endpoint = %self.name, doc = %doc.id, %reason, "ERP endpoint still failing");
                    }
                }
            }
            if self.ctx.flow.stopping() {
                return outcome;
            }
        }
    }

    /// The ERP answered: ends a paused state, once.
    fn resume(&self) {
        let Some(failed) = lock(&self.limiter).healthy() else {
            return;
        };
        self.metrics.paused.store(0, Relaxed);
        // Paired with the increment above under the limiter's lock, so it cannot underflow.
        self.ctx.metrics.erp_paused_endpoints.fetch_sub(1, Relaxed);
        tracing::info!(endpoint = %self.name, failed_probes = failed, "ERP endpoint resumed: it answers again");
        self.resumed.notify_waiters();
    }

    async fn dead_letter(
        &self,
        msg: &jetstream::Message,
        what: &str,
        error: String,
        reason: Reason,
    ) -> Result<(), ActorProcessingErr> {
        let identity = msg
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.as_str().to_string())
            .unwrap_or_else(|| msg.subject.to_string());
        self.ctx
            .dead_letters
            .send(Letter {
                stage: "erp",
                reason,
                error: format!("{what}: {error}"),
                original_subject: msg.subject.to_string(),
                headers: msg.headers.clone(),
                payload: msg.payload.clone(),
                stream_seq: None,
                identity,
            })
            .await?;
        msg.ack()
            .await
            .map_err(|e| format!("ack after dead letter: {e}"))?;
        Ok(())
    }

    /// Answers JetStream for one delivered posting and counts the outcome.
    async fn settle(
        &self,
        msg: jetstream::Message,
        doc: &PostingDoc,
        outcome: Outcome,
    ) -> Result<(), ActorProcessingErr> {
        let doc_id = doc.id.as_str();
        let attempt = msg.info().map(|i| i.delivered.max(1) as u64).unwrap_or(1);
        let m = &self.metrics;
        match outcome {
            Outcome::Accepted { replay } => {
                m.accepted.fetch_add(1, Relaxed);
                if replay {
                    m.replays.fetch_add(1, Relaxed);
                }
                // The answer is recorded before the posting leaves the outbox: if recording
                // fails, the posting comes back and the ERP answers it as a replay.
                let status = if self.staged {
                    DocStatus::Staged
                } else {
                    DocStatus::Accepted
                };
                if let Some(a) = answer_of(doc, status, None) {
                    record(&self.ctx.js, &a)
                        .await
                        .map_err(|e| format!("recording the ERP's answer: {e}"))?;
                }
                // If this ack is lost the posting comes back and the ERP answers it as a replay.
                if let Err(error) = msg.ack().await {
                    tracing::warn!(%error, doc = %doc_id, "ack of an accepted posting failed");
                }
            }
            // Only when the pipeline stops during a pause: back to the outbox, for this
            // process or the next, after a short delay.
            Outcome::Throttled { retry_after: wait } => {
                let _ = msg.ack_with(AckKind::Nak(Some(wait))).await;
            }
            Outcome::Unavailable { reason, .. } => {
                let wait = delivery::backoff(attempt, self.retry.initial, self.retry.max);
                tracing::debug!(doc = %doc_id, %reason, attempt, ?wait, "posting returned to the outbox");
                let _ = msg.ack_with(AckKind::Nak(Some(wait))).await;
            }
            Outcome::Rejected { status, message } => {
                m.rejected.fetch_add(1, Relaxed);
                tracing::warn!(endpoint = %self.name, doc = %doc_id, status, error = %message, "ERP rejected posting");
                let answer = answer_of(
                    doc,
                    DocStatus::Rejected,
                    Some(format!("ERP answered {status}: {message}")),
                );
                if let Some(a) = answer {
                    record(&self.ctx.js, &a)
                        .await
                        .map_err(|e| format!("recording the ERP's answer: {e}"))?;
                }
                self.dead_letter(
                    &msg,
                    &format!("ERP answered {status}"),
                    message,
                    Reason::Rejected,
                )
                .await?;
            }
        }
        Ok(())
    }
}

impl EndpointState {
    async fn ensure_consumer(&mut self) -> Result<(), ActorProcessingErr> {
        if self.consumer.is_some() {
            return Ok(());
        }
        let stream = self
            .ctx
            .js
            .get_stream(&self.ctx.postings)
            .await
            .map_err(|e| format!("postings stream: {e}"))?;
        let name = consumer_name(&self.cfg.name);
        let c = stream
            .get_or_create_consumer(
                &name,
                consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: format!("{}.{}.>", subject::POSTINGS, self.cfg.name),
                    ack_policy: consumer::AckPolicy::Explicit,
                    // Short, so a posting held by a process that died is offered again soon;
                    // a live delivery keeps it with progress acks (PROGRESS_EVERY).
                    ack_wait: ACK_WAIT,
                    max_ack_pending: (self.cfg.max_concurrent as i64 * 4).max(64),
                    max_deliver: -1,
                    description: Some(format!(
                        "retailflow delivery to ERP endpoint {}",
                        self.cfg.name
                    )),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| format!("consumer {name}: {e}"))?;
        self.consumer = Some(c);
        Ok(())
    }

    async fn refresh_pending(&mut self) {
        if self.last_info.elapsed() < Duration::from_millis(500) {
            return;
        }
        self.last_info = std::time::Instant::now();
        if let Some(c) = &self.consumer {
            if let Ok(info) = c.get_info().await {
                let pending = info.num_pending as i64 + info.num_ack_pending as i64;
                self.answer.metrics.pending.store(pending, Relaxed);
            }
        }
    }

    async fn tick(&mut self, myself: &ActorRef<EndpointMsg>) -> Result<(), ActorProcessingErr> {
        self.tick_queued = false;
        if self.ctx.flow.stopping() {
            return Ok(());
        }
        self.ensure_consumer().await?;
        self.refresh_pending().await;
        let free = self.cfg.max_concurrent.saturating_sub(self.in_flight);
        if free == 0 {
            return Ok(());
        }
        let Some(c) = &self.consumer else {
            return Ok(());
        };
        let fetched = c
            .fetch()
            .max_messages(free.min(256))
            .expires(Duration::from_millis(500))
            .messages()
            .await;
        let mut batch = match fetched {
            Ok(b) => b,
            Err(error) => {
                tracing::warn!(%error, endpoint = %self.cfg.name, "outbox fetch failed");
                self.consumer = None;
                self.schedule(myself, Duration::from_millis(500));
                return Ok(());
            }
        };
        let mut got = 0;
        while let Some(m) = batch.next().await {
            let msg = match m {
                Ok(m) => m,
                Err(error) => {
                    tracing::warn!(%error, endpoint = %self.cfg.name, "outbox fetch error");
                    break;
                }
            };
            got += 1;
            let doc: PostingDoc = match codec::decode(codec::Format::MsgPack, &msg.payload) {
                Ok(d) => d,
                Err(e) => {
                    self.answer
                        .dead_letter(
                            &msg,
                            "undecodable posting",
                            e.to_string(),
                            Reason::Undecodable,
                        )
                        .await?;
                    continue;
                }
            };
            self.in_flight += 1;
            self.answer.metrics.in_flight.fetch_add(1, Relaxed);
            let sink = self.sink.clone();
            let me = myself.clone();
            let answer = self.answer.clone();
            let doc_id = doc.id.clone();
            tokio::spawn(async move {
                let work = answer.deliver(&sink, &doc);
                tokio::pin!(work);
                let mut beat = tokio::time::interval_at(
                    tokio::time::Instant::now() + PROGRESS_EVERY,
                    PROGRESS_EVERY,
                );
                let outcome = loop {
                    tokio::select! {
                        o = &mut work => break o,
                        _ = beat.tick() => {
                            // Still working on it (waiting for the limiter or the ERP).
                            let _ = msg.ack_with(AckKind::Progress).await;
                        }
                    }
                };
                if let Err(error) = answer.settle(msg, &doc, outcome).await {
                    tracing::warn!(%error, doc = %doc_id, "posting not settled; JetStream offers it again after the ack wait");
                }
                // A restarted actor no longer counts this task; nothing to tell it then.
                let _ = me.send_message(EndpointMsg::Delivered);
            });
        }
        if got > 0 || self.in_flight == 0 {
            self.schedule(myself, Duration::ZERO);
        }
        Ok(())
    }

    fn schedule(&mut self, myself: &ActorRef<EndpointMsg>, after: Duration) {
        if self.tick_queued {
            return;
        }
        self.tick_queued = true;
        if after.is_zero() {
            let _ = myself.send_message(EndpointMsg::Tick);
        } else {
            myself.send_after(after, || EndpointMsg::Tick);
        }
    }
}

/// Starts a postgres endpoint's import status read-back when someone takes the statuses.
fn status_poller(
    cfg: &ErpEndpointConfig,
    sink: &Sink,
    ctx: &EndpointContext,
) -> Option<StatusPoller> {
    let (Sink::Postgres(pg), Some(out)) = (sink, &ctx.import_status) else {
        return None;
    };
    Some(StatusPoller::spawn(
        cfg.name.clone(),
        pg.connection().clone(),
        cfg.status_poll,
        out.clone(),
    ))
}

impl Actor for EndpointActor {
    type Msg = EndpointMsg;
    type State = EndpointState;
    type Arguments = EndpointArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<EndpointMsg>,
        args: EndpointArgs,
    ) -> Result<EndpointState, ActorProcessingErr> {
        let sink = Arc::new(Sink::new(&args.config)?);
        let status = status_poller(&args.config, &sink, &args.ctx);
        myself.send_message(EndpointMsg::Tick)?;
        let answer = Arc::new(Answer {
            ctx: args.ctx.clone(),
            name: args.config.name.clone(),
            retry: args.config.retry.clone(),
            limiter: args.limiter,
            metrics: args.ctx.metrics.endpoint(&args.config.name),
            resumed: Notify::new(),
            staged: args.config.kind == crate::config::ErpKind::Postgres,
        });
        Ok(EndpointState {
            answer,
            ctx: args.ctx,
            cfg: args.config,
            sink,
            _status: status,
            consumer: None,
            in_flight: 0,
            tick_queued: true,
            last_info: std::time::Instant::now() - Duration::from_secs(1),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<EndpointMsg>,
        msg: EndpointMsg,
        state: &mut EndpointState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            EndpointMsg::Tick => state.tick(&myself).await?,
            EndpointMsg::Delivered => {
                state.in_flight = state.in_flight.saturating_sub(1);
                state.answer.metrics.in_flight.fetch_sub(1, Relaxed);
                state.schedule(&myself, Duration::ZERO);
            }
            #[cfg(feature = "lab")]
            EndpointMsg::Crash => panic!("endpoint {} crash requested (test hook)", state.cfg.name),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<EndpointMsg>,
        state: &mut EndpointState,
    ) -> Result<(), ActorProcessingErr> {
        state.answer.metrics.in_flight.store(0, Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::post::ratelimit::RateLimit;

    #[tokio::test(start_paused = true)]
    async fn a_limiter_poisoned_by_a_panic_still_grants() {
        let limiter = Arc::new(Mutex::new(RateLimiter::new(RateLimit {
            requests: 10,
            window: Duration::from_secs(1),
            burst: Some(10),
        })));
        let held = limiter.clone();
        let panicked = std::thread::spawn(move || {
            let _guard = held.lock();
            panic!("a panic while the limiter is held");
        })
        .join();
        assert!(panicked.is_err());
        assert!(limiter.is_poisoned());
        let granted =
            tokio::time::timeout(Duration::from_secs(5), acquire(&limiter, &Notify::new())).await;
        assert!(granted.is_ok(), "a poisoned limiter never granted again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_resumed_endpoint_wakes_its_waiting_deliveries_at_once() {
        let limiter = Mutex::new(RateLimiter::new(RateLimit {
            requests: 100,
            window: Duration::from_secs(1),
            burst: Some(100),
        }));
        let resumed = Notify::new();
        let start = tokio::time::Instant::now();
        lock(&limiter).fault(start, Duration::from_secs(30), Duration::from_secs(30));
        let waiting = acquire(&limiter, &resumed);
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), &mut waiting)
                .await
                .is_err()
        );
        assert_eq!(lock(&limiter).healthy(), Some(1));
        resumed.notify_waiters();
        waiting.await;
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }
}
