//! ERP-endpoint actor: takes postings for one endpoint from the outbox and delivers them
//! within the endpoint's limits.
//!
//! The actor fetches only as many postings as it has free concurrency; each delivery runs as
//! its own task (waiting for the rate limiter, then the HTTP call), answers JetStream for its
//! posting itself and then tells the actor it is done. The task holds the message, so the
//! answer does not depend on the actor still being there: a restarted actor's postings go
//! back to the outbox at once instead of waiting out the ack wait. Retries use JetStream
//! itself: a failed posting is NAKed with a delay, so it waits in the outbox, not in memory.
//! The rate limiter lives outside the actor, so a restarted actor keeps counting the same
//! window.

use super::delivery::{self, Outcome};
use super::ratelimit::RateLimiter;
use crate::aggregate::posting::PostingDoc;
use crate::config::{ErpEndpointConfig, RetryConfig};
use crate::domain::{codec, subject};
use crate::ingest::deadletter::{Letter, Reason};
use crate::supervise::shared::Shared;
use crate::telemetry::EndpointMetrics;
use async_nats::jetstream::{self, AckKind, consumer};
use futures::StreamExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a fetched posting stays with this process without a word from it.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// How often a delivery in progress tells JetStream it still holds the posting.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

pub enum EndpointMsg {
    Tick,
    /// A delivery task answered JetStream for its posting; its slot is free.
    Delivered,
    /// Test hook: panic.
    Crash,
}

pub struct EndpointActor;

pub struct EndpointArgs {
    pub shared: Arc<Shared>,
    pub config: ErpEndpointConfig,
    /// Kept by the supervisor across restarts of this actor.
    pub limiter: Arc<Mutex<RateLimiter>>,
}

pub struct EndpointState {
    shared: Arc<Shared>,
    cfg: ErpEndpointConfig,
    /// Also holds the endpoint's limiter and metrics, which the actor uses too.
    answer: Arc<Answer>,
    http: reqwest::Client,
    token: Option<String>,
    consumer: Option<consumer::PullConsumer>,
    in_flight: usize,
    tick_queued: bool,
    last_info: std::time::Instant,
}

/// Durable consumer name of an endpoint.
pub fn consumer_name(endpoint: &str) -> String {
    format!("erp-{endpoint}")
}

/// Waits until the shared limiter grants a request.
async fn acquire(limiter: &Mutex<RateLimiter>) {
    loop {
        let wait = match limiter.lock() {
            Ok(mut l) => match l.try_acquire(tokio::time::Instant::now()) {
                Ok(()) => return,
                Err(wait) => wait,
            },
            // A poisoned limiter means a delivery task panicked mid-update; waiting a little
            // and granting keeps the endpoint moving (the ERP still enforces its own limit).
            Err(_) => Duration::from_millis(50),
        };
        tokio::time::sleep(wait).await;
    }
}

/// What a delivery task needs to answer JetStream for its posting itself; shared by the
/// endpoint actor and its tasks, and rebuilt with the actor (the limiter and metrics it points
/// to outlive restarts).
struct Answer {
    shared: Arc<Shared>,
    name: String,
    retry: RetryConfig,
    limiter: Arc<Mutex<RateLimiter>>,
    metrics: Arc<EndpointMetrics>,
}

impl Answer {
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
        self.shared
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
        doc_id: &str,
        outcome: Outcome,
    ) -> Result<(), ActorProcessingErr> {
        let attempt = msg.info().map(|i| i.delivered.max(1) as u64).unwrap_or(1);
        let m = &self.metrics;
        match outcome {
            Outcome::Accepted { replay } => {
                m.accepted.fetch_add(1, Relaxed);
                if replay {
                    m.replays.fetch_add(1, Relaxed);
                }
                // If this ack is lost the posting comes back and the ERP answers it as a replay.
                if let Err(error) = msg.ack().await {
                    tracing::warn!(%error, doc = %doc_id, "ack of an accepted posting failed");
                }
            }
            Outcome::Throttled { retry_after } => {
                m.throttled_429.fetch_add(1, Relaxed);
                m.retries.fetch_add(1, Relaxed);
                if let Ok(mut l) = self.limiter.lock() {
                    l.pause_until(tokio::time::Instant::now() + retry_after);
                }
                let _ = msg.ack_with(AckKind::Nak(Some(retry_after))).await;
            }
            Outcome::Retry { reason } => {
                m.retries.fetch_add(1, Relaxed);
                let wait = delivery::backoff(attempt, self.retry.initial, self.retry.max);
                tracing::debug!(doc = %doc_id, %reason, attempt, ?wait, "posting will be retried");
                let _ = msg.ack_with(AckKind::Nak(Some(wait))).await;
            }
            Outcome::Rejected { status, message } => {
                m.rejected.fetch_add(1, Relaxed);
                tracing::warn!(endpoint = %self.name, doc = %doc_id, status, error = %message, "ERP rejected posting");
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
            .shared
            .js
            .get_stream(&self.shared.config.streams.postings)
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
        if self.shared.stopping.load(Relaxed) {
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
            let limiter = self.answer.limiter.clone();
            let http = self.http.clone();
            let url = self.cfg.url.clone();
            let token = self.token.clone();
            let timeout = self.cfg.timeout;
            let metrics = self.answer.metrics.clone();
            let me = myself.clone();
            let answer = self.answer.clone();
            let doc_id = doc.id.clone();
            tokio::spawn(async move {
                let work = async {
                    acquire(&limiter).await;
                    metrics.requests.fetch_add(1, Relaxed);
                    delivery::deliver(&http, &url, token.as_deref(), &doc, timeout).await
                };
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
                if let Err(error) = answer.settle(msg, &doc_id, outcome).await {
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

impl Actor for EndpointActor {
    type Msg = EndpointMsg;
    type State = EndpointState;
    type Arguments = EndpointArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<EndpointMsg>,
        args: EndpointArgs,
    ) -> Result<EndpointState, ActorProcessingErr> {
        let token = if args.config.token_env.is_empty() {
            None
        } else {
            std::env::var(&args.config.token_env)
                .ok()
                .filter(|t| !t.is_empty())
        };
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(args.config.max_concurrent)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        myself.send_message(EndpointMsg::Tick)?;
        let answer = Arc::new(Answer {
            shared: args.shared.clone(),
            name: args.config.name.clone(),
            retry: args.config.retry.clone(),
            limiter: args.limiter,
            metrics: args.shared.metrics.endpoint(&args.config.name),
        });
        Ok(EndpointState {
            answer,
            shared: args.shared,
            cfg: args.config,
            http,
            token,
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
