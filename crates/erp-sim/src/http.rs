//! The simulator's HTTP routes. Handlers only translate between HTTP and [`SimState`]; every
//! rule lives behind it.

use crate::answer::Answer;
use crate::faults::{FaultMode, FaultPlan};
use crate::state::{Screened, SimState};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use retailflow_core::aggregate::posting::PostingDoc;
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// axum's 2 MB default would refuse a large document with a 413 before the simulator saw it.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

const IDEMPOTENCY_KEY: &str = "idempotency-key";
const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

pub(crate) fn router(sim: Arc<SimState>) -> Router {
    Router::new()
        .route("/api/v1/postings", post(postings))
        .route("/api/v1/totals", get(totals))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/admin/fault", post(fault))
        .route("/api/v1/admin/reject-locations", post(reject_locations))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(sim)
}

/// The body is taken as bytes, not `Json<PostingDoc>`, so that a bad body is counted, answered
/// in the simulator's own error shape and never reaches an axum rejection.
async fn postings(State(sim): State<Arc<SimState>>, headers: HeaderMap, body: Bytes) -> Response {
    // Held until the answer is built, latency included: that is what "in flight" means.
    let _slot = match sim.admit(Instant::now()) {
        Ok(slot) => slot,
        Err(answer) => return respond(answer),
    };
    let key = match idempotency_key(&headers) {
        Ok(key) => key,
        Err(message) => return respond(sim.bad_request(message)),
    };
    // Before parsing: a key already answered gets that answer whatever the body now says.
    if let Some(answer) = sim.replay(key) {
        return respond(answer);
    }
    // A document written by hand may put `lines` before `kind`; the streaming reader needs
    // `kind` first, so such a body is read through serde_json's Value, whose keys are sorted.
    let parsed = serde_json::from_slice(&body).or_else(|_| {
        serde_json::from_slice::<serde_json::Value>(&body).and_then(serde_json::from_value)
    });
    let doc: PostingDoc = match parsed {
        Ok(doc) => doc,
        Err(error) => {
            return respond(sim.bad_request(format!("invalid posting document: {error}")));
        }
    };
    match sim.screen(key, &doc) {
        Screened::Done(answer) => respond(answer),
        Screened::Proceed { latency } => {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            respond(sim.commit(key, &doc, Instant::now()))
        }
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<&str, &'static str> {
    let value = headers
        .get(IDEMPOTENCY_KEY)
        .ok_or("Idempotency-Key header is required")?;
    let key = value
        .to_str()
        .map_err(|_| "Idempotency-Key header must be visible ASCII")?
        .trim();
    if key.is_empty() {
        return Err("Idempotency-Key header is required");
    }
    Ok(key)
}

fn respond(answer: Answer) -> Response {
    let mut response = (
        answer.status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        answer.body,
    )
        .into_response();
    let headers = response.headers_mut();
    let text = answer
        .retry_after_text
        .as_deref()
        .and_then(|t| HeaderValue::from_str(t).ok());
    if let Some(value) = text {
        headers.insert(header::RETRY_AFTER, value);
    } else if let Some(seconds) = answer.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if answer.replayed {
        headers.insert(REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

async fn totals(State(sim): State<Arc<SimState>>) -> Response {
    Json(sim.totals()).into_response()
}

async fn stats(State(sim): State<Arc<SimState>>) -> Response {
    Json(sim.stats()).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRequest {
    mode: FaultMode,
    /// How long the mode lasts; absent: until set back to normal.
    #[serde(default)]
    seconds: Option<u64>,
    /// How many postings requests the mode answers before it reverts to normal.
    #[serde(default)]
    requests: Option<u64>,
    /// `Retry-After` sent with the fault's answers, as given (any text a header may hold).
    #[serde(default)]
    retry_after: Option<String>,
}

#[derive(Deserialize)]
struct RejectLocations {
    locations: Vec<String>,
}

/// Replaces the refused locations: `{"locations": []}` is the ERP-side master-data fix.
async fn reject_locations(State(sim): State<Arc<SimState>>, body: Bytes) -> Response {
    match serde_json::from_slice::<RejectLocations>(&body) {
        Ok(req) => {
            let now = sim.set_reject_locations(req.locations);
            tracing::info!(locations = ?now, "ERP simulator refused locations set");
            Json(serde_json::json!({ "reject_locations": now })).into_response()
        }
        Err(error) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "error": format!("invalid request: {error}") })),
        )
            .into_response(),
    }
}

async fn fault(State(sim): State<Arc<SimState>>, body: Bytes) -> Response {
    match serde_json::from_slice::<FaultRequest>(&body) {
        Ok(req) => {
            let status = sim.play(
                FaultPlan {
                    mode: req.mode,
                    lasts: req.seconds.map(Duration::from_secs),
                    requests: req.requests,
                    retry_after: req.retry_after,
                },
                Instant::now(),
            );
            tracing::info!(mode = ?status.mode, seconds = ?req.seconds, requests = ?req.requests, "ERP simulator fault mode set");
            Json(status).into_response()
        }
        Err(error) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "error": format!("invalid fault request: {error}") })),
        )
            .into_response(),
    }
}
