//! Dead letters over HTTP, `admin` scope: `GET /v1/dlq` (a filtered page), `GET /v1/dlq/{seq}`
//! (one letter) and `POST /v1/dlq/redrive` (send letters back, each recorded in the audit
//! stream). The same operations as `retailflow dlq`.

use super::finance::params;
use super::reply::{error, json};
use crate::config::Config;
use crate::dlq::letters::{self, Filter};
use crate::dlq::redrive::{self, RedriveError};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Clone)]
pub struct DlqState {
    pub js: async_nats::jetstream::Context,
    pub config: Arc<Config>,
}

/// Default page size of a listing.
const DEFAULT_LIMIT: usize = 100;
/// Letters one re-drive request sends at most.
pub const MAX_REDRIVE: usize = 1000;

/// The listing's filters from a query string (`stage`, `reason`, `since`, `location`,
/// `after`, `limit`); the message of a 400 when one is wrong.
pub fn filter(q: Option<&str>) -> Result<Filter, String> {
    let mut f = Filter {
        limit: DEFAULT_LIMIT,
        ..Filter::default()
    };
    for (k, v) in params(q) {
        if v.is_empty() {
            continue;
        }
        match k.as_str() {
            "stage" => f.stage = Some(v),
            "reason" => f.reason = Some(v),
            "location" => f.location = Some(v),
            "since" => f.since = Some(letters::parse_since(&v)?),
            "after" => {
                f.after = v
                    .parse()
                    .map_err(|_| format!("after {v:?}: not a sequence"))?
            }
            "limit" => {
                f.limit = v
                    .parse()
                    .map_err(|_| format!("limit {v:?}: not a number"))?;
            }
            other => {
                return Err(format!(
                    "unknown parameter {other:?}; filters are stage, reason, since, location, after, limit"
                ));
            }
        }
    }
    Ok(f)
}

/// `GET /v1/dlq?stage=&reason=&since=&location=&after=&limit=`
pub async fn list(State(st): State<DlqState>, RawQuery(q): RawQuery) -> Response {
    let f = match filter(q.as_deref()).and_then(|f| f.check().map(|()| f)) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match letters::list(&st.js, &st.config.streams.dead_letters, &f).await {
        Ok(page) => json(StatusCode::OK, &page),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// `GET /v1/dlq/{seq}`
pub async fn show(State(st): State<DlqState>, Path(seq): Path<String>) -> Response {
    let Ok(seq) = seq.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{seq:?} is not a sequence"),
        );
    };
    match letters::show(&st.js, &st.config.streams.dead_letters, seq).await {
        Ok(Some(l)) => json(StatusCode::OK, &l),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no dead letter {seq}")),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// Body of `POST /v1/dlq/redrive`: letters by sequence, or a filter; who asks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    #[serde(default)]
    pub letters: Vec<u64>,
    /// The same filters as the listing, as a query string (`stage=ingest&reason=late`).
    #[serde(default)]
    pub filter: Option<String>,
    pub by: String,
    /// Send letters that were re-driven before once more.
    #[serde(default)]
    pub again: bool,
}

/// `POST /v1/dlq/redrive`: 200 with every letter's outcome (`redriven`, `failed`).
pub async fn redrive(State(st): State<DlqState>, body: axum::body::Bytes) -> Response {
    let req: RedriveRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid request: {e}")),
    };
    // At most MAX_REDRIVE in all: the named letters, then what the filter finds.
    let room = MAX_REDRIVE.saturating_sub(req.letters.len());
    let filter = match req.filter.as_deref().map(|q| filter(Some(q))).transpose() {
        Ok(f) => f.map(|f| Filter {
            limit: f.limit.min(room),
            ..f
        }),
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    if req.letters.len() > MAX_REDRIVE || filter.as_ref().is_some_and(|f| f.limit == 0) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("name 1 to {MAX_REDRIVE} letters (`letters`, or a `filter` that finds some)"),
        );
    }
    let batch = redrive::Batch {
        letters: req.letters,
        filter: filter.as_ref(),
        by: &req.by,
        again: req.again,
    };
    let outcomes = match redrive::redrive_batch(&st.js, &st.config, batch).await {
        Ok(o) => o,
        Err(e @ RedriveError::Invalid(_)) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let mut redriven = Vec::new();
    let mut failed = Vec::new();
    for (seq, outcome) in outcomes {
        match outcome {
            Ok(r) => redriven.push(r),
            Err(e) => failed.push(serde_json::json!({ "letter": seq, "error": e.to_string() })),
        }
    }
    json(
        StatusCode::OK,
        &serde_json::json!({ "redriven": redriven, "failed": failed }),
    )
}
