//! HTTP API (axum). Every error is JSON `{"error": "..."}` with a 4xx for bad input; nothing
//! answers 500 because of what a caller sent.

use super::auth::{ApiAuth, Refusal, Scope};
use super::context::QueryContext;
use super::finance::{self, FinanceState};
use super::listener;
use super::model::{self, QueryError, QueryRequest};
pub use super::reply::{error, json};
use super::reserve::{self, Reservations, ReserveError, ReserveRequest};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

#[derive(Clone)]
pub struct ApiState {
    pub ctx: Arc<QueryContext>,
    pub reservations: Arc<Reservations>,
    pub auth: Arc<ApiAuth>,
}

/// Routes grouped by the scope they need; `/healthz` is open. `admin` carries every scope and
/// alone reaches the dead-letter routes (which can send letters back into the pipeline).
pub fn router(state: ApiState) -> Router {
    let guarded = |scope: Scope, routes: Router<ApiState>| {
        routes.route_layer(middleware::from_fn_with_state(
            Guard {
                auth: state.auth.clone(),
                scope,
            },
            guard,
        ))
    };
    let queries = Router::new()
        .route("/v1/availability/query", post(query))
        .route("/v1/availability/{sku}", get(availability));
    let reservations = Router::new()
        .route("/v1/reservations", post(create_reservation))
        .route(
            "/v1/reservations/{id}",
            get(get_reservation).delete(release_reservation),
        );
    let metrics_route = Router::new().route("/metrics", get(metrics));
    let admin = Router::new()
        .route("/v1/dlq", get(super::dlq::list))
        .route("/v1/dlq/redrive", post(super::dlq::redrive))
        .route("/v1/dlq/{seq}", get(super::dlq::show));
    let finance = Router::new()
        .route("/v1/reconciliation", get(finance::list))
        .route(
            "/v1/reconciliation/{store}/{business_day}",
            get(finance::detail),
        )
        .route("/v1/documents/{id}/lineage", get(super::finance::lineage))
        .route("/ui", get(super::ui::overview))
        .route("/ui/", get(super::ui::overview))
        .route("/ui/day/{store}/{business_day}", get(super::ui::day))
        .route("/ui/lineage", get(super::ui::lineage));
    let body_limit = state.ctx.config.api.max_body_bytes;
    let metrics_for_413 = state.ctx.metrics.clone();
    Router::new()
        .merge(guarded(Scope::Query, queries))
        .merge(guarded(Scope::Reserve, reservations))
        .merge(guarded(Scope::Metrics, metrics_route))
        .merge(guarded(Scope::Finance, finance))
        .merge(guarded(Scope::Admin, admin))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .layer(middleware::map_response(move |r: Response| {
            let m = metrics_for_413.clone();
            async move {
                if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    m.http_body_too_large.fetch_add(1, Relaxed);
                }
                r
            }
        }))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

impl axum::extract::FromRef<ApiState> for super::dlq::DlqState {
    fn from_ref(st: &ApiState) -> super::dlq::DlqState {
        super::dlq::DlqState {
            js: st.ctx.js.clone(),
            config: st.ctx.config.clone(),
        }
    }
}

impl axum::extract::FromRef<ApiState> for FinanceState {
    fn from_ref(st: &ApiState) -> FinanceState {
        FinanceState {
            books: st.ctx.finance.clone(),
            js: st.ctx.js.clone(),
            events_stream: st.ctx.config.streams.events.clone(),
        }
    }
}

#[derive(Clone)]
struct Guard {
    auth: Arc<ApiAuth>,
    scope: Scope,
}

/// 401 with `WWW-Authenticate` without a valid token, 403 without the route's scope.
async fn guard(State(g): State<Guard>, req: Request, next: Next) -> Response {
    if !g.auth.enabled() {
        return next.run(req).await;
    }
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    match g.auth.check(header, g.scope) {
        Ok(()) => next.run(req).await,
        Err(Refusal::Forbidden) => error(
            StatusCode::FORBIDDEN,
            "this token does not carry the scope this route needs",
        ),
        Err(refusal) => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                if refusal == Refusal::Missing {
                    "an `Authorization: Bearer <token>` header is required"
                } else {
                    "the bearer token is not valid"
                },
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"retailflow\""),
            );
            r
        }
    }
}

fn query_error(e: QueryError) -> Response {
    match e {
        QueryError::BadRequest(m) => error(StatusCode::BAD_REQUEST, m),
        QueryError::NotReady => {
            let mut r = error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        QueryError::NotYet { at, .. } => json(
            StatusCode::GATEWAY_TIMEOUT,
            &serde_json::json!({ "error": e.to_string(), "as_of": at }),
        ),
    }
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such route; see docs/API.md for the API",
    )
}

async fn availability(
    State(st): State<ApiState>,
    Path(sku): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let req = match QueryRequest::from_availability(sku, q.as_deref().unwrap_or_default()) {
        Ok(r) => r,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    st.ctx.metrics.queries.fetch_add(1, Relaxed);
    match model::answer(&st.ctx.view, &req, st.ctx.config.api.max_wait).await {
        Ok(mut r) => match r.results.pop() {
            Some(one) => json(StatusCode::OK, &one),
            None => error(StatusCode::BAD_REQUEST, "no sku"),
        },
        Err(e) => query_error(e),
    }
}

async fn query(State(st): State<ApiState>, body: Bytes) -> Response {
    let req = match QueryRequest::from_body(&body) {
        Ok(r) => r,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    st.ctx.metrics.queries.fetch_add(1, Relaxed);
    match model::answer(&st.ctx.view, &req, st.ctx.config.api.max_wait).await {
        Ok(r) => json(StatusCode::OK, &r),
        Err(e) => query_error(e),
    }
}

fn reserve_error(e: ReserveError) -> Response {
    match e {
        ReserveError::BadRequest(m) => error(StatusCode::BAD_REQUEST, m),
        ReserveError::NotFound(m) => error(StatusCode::NOT_FOUND, m),
        ReserveError::Conflict(m) => error(StatusCode::CONFLICT, m),
        ReserveError::Unavailable(m) => {
            let mut r = error(StatusCode::SERVICE_UNAVAILABLE, m);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
    }
}

async fn create_reservation(State(st): State<ApiState>, body: Bytes) -> Response {
    let req = match ReserveRequest::from_body(&body) {
        Ok(r) => r,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    match st.reservations.reserve(req).await {
        Ok(answer) => {
            let status = if answer.granted {
                StatusCode::CREATED
            } else {
                StatusCode::CONFLICT
            };
            json(status, &answer)
        }
        Err(e) => reserve_error(e),
    }
}

async fn release_reservation(State(st): State<ApiState>, Path(id): Path<String>) -> Response {
    match st.reservations.release(&id).await {
        Ok(answer) => json(StatusCode::OK, &answer),
        Err(e) => reserve_error(e),
    }
}

async fn get_reservation(State(st): State<ApiState>, Path(id): Path<String>) -> Response {
    match st.reservations.get(&id) {
        Some(answer) => json(StatusCode::OK, &answer),
        None => error(
            StatusCode::NOT_FOUND,
            format!("reservation {id:?} is not active"),
        ),
    }
}

/// The truth about the pipeline: `lag` is the events stream's last sequence (learnt by the
/// barrier ticker's stream-info call each `barrier.interval`) minus what every shard applied.
/// 503 while recovering, when ingest has not advanced for `ingest.stall_after` with lag, or
/// when snapshots have failed for `snapshot.fail_after`; 200 `degraded` while an ERP endpoint
/// is paused. `reasons` says why.
async fn healthz(State(st): State<ApiState>) -> Response {
    let ctx = &st.ctx;
    let m = &ctx.metrics;
    let cfg = &ctx.config;
    let ready = ctx.view.is_ready();
    let applied = ctx.view.applied_all();
    let lag = m.stream_last_seq.load(Relaxed).saturating_sub(applied);
    let now = crate::snapshot::ticker::now_ms().max(0) as u64;
    let mut reasons: Vec<String> = Vec::new();
    let mut status = if ready { "ok" } else { "recovering" };
    let idle_ms = now.saturating_sub(m.ingest_progress_at_ms.load(Relaxed));
    if ready && lag > 0 && idle_ms > cfg.ingest.stall_after.as_millis() as u64 {
        status = "stalled";
        reasons.push(format!(
            "ingest has not advanced for {} s with {lag} events waiting",
            idle_ms / 1000
        ));
    }
    let failing_since = m.snapshot_failing_since_ms.load(Relaxed);
    if failing_since > 0 {
        let failing_ms = now.saturating_sub(failing_since);
        if failing_ms > cfg.snapshot.fail_after.as_millis() as u64 {
            if status == "ok" {
                status = "failing";
            }
            reasons.push(format!("snapshots have failed for {} s", failing_ms / 1000));
        }
    }
    let paused = m.erp_paused_endpoints.load(Relaxed);
    if paused > 0 {
        if status == "ok" {
            status = "degraded";
        }
        reasons.push(format!("erp endpoint paused ({paused})"));
    }
    let body = serde_json::json!({
        "status": status,
        "reasons": reasons,
        "as_of": applied,
        "lag": lag,
        "paused_for_erp_backlog": ctx.flow.paused.load(Relaxed),
        "instance": ctx.leader.instance(),
        "leads": ctx.leader.leads(),
        "leader": ctx.leader.leader(),
    });
    json(
        if matches!(status, "ok" | "degraded") {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        &body,
    )
}

async fn metrics(State(st): State<ApiState>) -> Response {
    let m = &st.ctx.metrics;
    m.last_applied_seq.store(st.ctx.view.applied_all(), Relaxed);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        m.render(),
    )
        .into_response()
}

/// Binds and serves until `shutdown` resolves, with the bounds of `api.*` and HTTPS when
/// `tls` is given ([`super::listener`]). Returns the bound address.
pub async fn serve(
    state: ApiState,
    listen: &str,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let bounds = listener::Bounds::of(&state.ctx.config.api);
    let metrics = state.ctx.metrics.clone();
    let app = router(state);
    let task = tokio::spawn(listener::run(listener, app, tls, bounds, metrics, shutdown));
    Ok((addr, task))
}

pub use listener::tls_acceptor;
pub use reserve::ReserveAnswer;
