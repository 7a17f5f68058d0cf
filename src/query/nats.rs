//! The same API over NATS request-reply, JSON in and out. Errors answer `{"error": "..."}`.
//!
//! - `retail.v1.atp.query`: a `QueryRequest`, answered with a `QueryResponse`.
//! - `retail.v1.atp.reserve`: a `ReserveRequest`, answered with a `ReserveAnswer`.
//! - `retail.v1.atp.release`: `{"reservation_id": "..."}`, answered with a `ReserveAnswer`.
//!
//! Responders join the queue group `retailflow`, so several instances share the load. Queries
//! are answered on the API's connection and runtime (latency threads); reservations and
//! releases on a connection of their own on the data runtime, where their decisions are made
//! ([`QUERY_SUBJECTS`], [`RESERVE_SUBJECTS`]).

use super::context::QueryContext;
use super::model::{self, QueryRequest};
use super::reserve::{Reservations, ReserveError, ReserveRequest};
use crate::domain::subject;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseRequest {
    reservation_id: String,
}

fn encode<T: Serialize>(r: Result<T, String>) -> bytes::Bytes {
    let v = match r {
        Ok(v) => serde_json::to_vec(&v),
        Err(e) => serde_json::to_vec(&serde_json::json!({ "error": e })),
    };
    v.unwrap_or_else(|_| b"{\"error\":\"encoding failed\"}".to_vec())
        .into()
}

/// A reservation's answer; a reused key answers `{"error": ..., "code": 409}` like HTTP.
fn encode_reserve(r: Result<super::reserve::ReserveAnswer, ReserveError>) -> bytes::Bytes {
    match r {
        Err(ReserveError::Conflict(m)) => {
            serde_json::to_vec(&serde_json::json!({ "error": m, "code": 409 }))
                .unwrap_or_else(|_| b"{\"error\":\"encoding failed\"}".to_vec())
                .into()
        }
        other => encode(other.map_err(|e| e.to_string())),
    }
}

/// Queries (reservations and releases are taken in [`serve`]'s loop).
async fn handle(ctx: &Arc<QueryContext>, subj: &str, payload: &[u8]) -> bytes::Bytes {
    match subj {
        subject::ATP_QUERY => {
            ctx.metrics.queries.fetch_add(1, Relaxed);
            let req: QueryRequest = match serde_json::from_slice(payload) {
                Ok(r) => r,
                Err(e) => return encode::<()>(Err(format!("request: {e}"))),
            };
            encode(
                model::answer(&ctx.view, &req, ctx.config.api.max_wait)
                    .await
                    .map_err(|e| e.to_string()),
            )
        }
        other => encode::<()>(Err(format!("no handler for {other}"))),
    }
}

async fn release(reservations: &Reservations, payload: &[u8]) -> bytes::Bytes {
    let req: ReleaseRequest = match serde_json::from_slice(payload) {
        Ok(r) => r,
        Err(e) => return encode::<()>(Err(format!("request: {e}"))),
    };
    encode(
        reservations
            .release(&req.reservation_id)
            .await
            .map_err(|e| e.to_string()),
    )
}

async fn send_reply(client: &async_nats::Client, reply: async_nats::Subject, answer: bytes::Bytes) {
    if let Err(error) = client.publish(reply, answer).await {
        tracing::debug!(%error, "reply not sent");
    }
}

/// Answered from the view at once: served by the API's latency threads.
pub const QUERY_SUBJECTS: &[&str] = &[subject::ATP_QUERY];
/// Answered once a shard has decided: served on the data runtime.
pub const RESERVE_SUBJECTS: &[&str] = &[subject::ATP_RESERVE, subject::ATP_RELEASE];

/// An answer on its way: where it goes and, once ready, what it says.
type Answering = std::pin::Pin<
    Box<dyn std::future::Future<Output = (async_nats::Subject, bytes::Bytes)> + Send>,
>;

/// Subscribes responders for `subjects` on `client` once the view holds the restored state,
/// answered by one task of the runtime that polls the returned future. Until then this
/// replica is not in the queue group, so the requests go to the replicas that can answer
/// them. Queries run on tasks of their own (each is CPU work on the view). Reservations and
/// releases wait for a shard's decision: their waits are gathered in that task instead of a
/// task each, so a shard batch deciding a hundred requests wakes one task once, not a hundred
/// tasks, and their replies leave together.
pub async fn serve(
    ctx: Arc<QueryContext>,
    reservations: Arc<Reservations>,
    client: async_nats::Client,
    subjects: &[&str],
) -> Result<tokio::task::JoinHandle<()>, async_nats::SubscribeError> {
    while !ctx.view.is_ready() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mut subs = Vec::new();
    for s in subjects {
        subs.push(
            client
                .queue_subscribe(s.to_string(), "retailflow".to_string())
                .await?,
        );
    }
    let mut all = futures::stream::select_all(subs);
    Ok(tokio::spawn(async move {
        let mut waiting = futures::stream::FuturesUnordered::<Answering>::new();
        loop {
            let msg = tokio::select! {
                // Answers first: each one frees a caller to send its next request.
                biased;
                Some((reply, answer)) = waiting.next(), if !waiting.is_empty() => {
                    send_reply(&client, reply, answer).await;
                    continue;
                }
                msg = all.next() => match msg {
                    Some(msg) => msg,
                    None => break,
                },
            };
            let Some(reply) = msg.reply.clone() else {
                continue;
            };
            match msg.subject.as_str() {
                subject::ATP_RESERVE => {
                    // Queued for the stream here, in the subscriber's loop, before any wait.
                    let submitted = match serde_json::from_slice::<ReserveRequest>(&msg.payload) {
                        Ok(req) => reservations.submit(req),
                        Err(e) => Err(ReserveError::BadRequest(format!("request: {e}"))),
                    };
                    match submitted {
                        Ok(s) => waiting.push(Box::pin(async move {
                            (reply, encode_reserve(s.answer().await))
                        })),
                        Err(e) => send_reply(&client, reply, encode_reserve(Err(e))).await,
                    }
                }
                subject::ATP_RELEASE => {
                    let reservations = reservations.clone();
                    waiting.push(Box::pin(async move {
                        (reply, release(&reservations, &msg.payload).await)
                    }));
                }
                _ => {
                    let (ctx, client) = (ctx.clone(), client.clone());
                    tokio::spawn(async move {
                        let answer = handle(&ctx, msg.subject.as_str(), &msg.payload).await;
                        send_reply(&client, reply, answer).await;
                    });
                }
            }
        }
        // The subscriptions ended; callers already waiting still get their answers.
        while let Some((reply, answer)) = waiting.next().await {
            send_reply(&client, reply, answer).await;
        }
    }))
}
