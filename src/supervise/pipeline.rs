//! A running retailflow: connects, prepares streams, recovers, learns whether it leads, starts
//! the supervisor, the barrier ticker, the expiry timer and the API servers; shuts all of it
//! down gracefully (a leader with a final barrier, then giving its lease up).

#[cfg(feature = "lab")]
use super::supervisor::CrashTarget;
use super::supervisor::{Supervisor, SupervisorArgs, SupervisorMsg};
use super::threads::OwnRuntime;
use super::wiring::Shared;
use crate::bus::{self, BusError};
use crate::config::Config;
use crate::query::auth::ApiAuth;
use crate::query::context::QueryContext;
use crate::query::http::{self, ApiState};
use crate::query::reserve::{self, Reservations};
use crate::snapshot::coordinator::{CoordMsg, CoordStatus};
use crate::snapshot::store::{SnapshotError, SnapshotStore};
use crate::snapshot::ticker::{self, BarrierPublisher};
use crate::telemetry::Metrics;
use ractor::{Actor, ActorRef};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Recovery(#[from] super::recovery::RecoveryError),
    #[error("the pipeline did not start: {0}")]
    Spawn(String),
    #[error("cannot listen on {addr}: {error}")]
    Listen { addr: String, error: std::io::Error },
    #[error(transparent)]
    Tokens(#[from] crate::query::auth::TokenFileError),
    #[error("HTTPS: {0}")]
    Tls(String),
}

pub struct Pipeline {
    pub shared: Arc<Shared>,
    supervisor: ActorRef<SupervisorMsg>,
    /// The supervisor actor's task; `None` once it has been seen to end (a finished
    /// `JoinHandle` must not be polled again).
    supervisor_task: Option<tokio::task::JoinHandle<()>>,
    fatal: tokio::sync::mpsc::UnboundedReceiver<String>,
    publisher: Arc<BarrierPublisher>,
    stop_after: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    http_addr: Option<SocketAddr>,
    http_stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub reservations: Arc<Reservations>,
    /// The HTTP API's tokens (re-read on SIGHUP, or by [`Pipeline::reload_tokens`]).
    auth: Arc<ApiAuth>,
    /// The data path's runtime; shut down in the background when the pipeline stops.
    runtime: Option<OwnRuntime>,
    /// The API's runtime (HTTP, NATS queries); likewise.
    api_runtime: Option<OwnRuntime>,
    /// Ends the lease loop (which then resigns); `None` when the lease is off.
    campaign: Option<Campaign>,
}

/// Distinguishes pipelines started in one process (their supervisors need distinct names).
static STARTED: AtomicU64 = AtomicU64::new(0);

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.shared.flow.stopping.store(true, Relaxed);
        if let Some(tx) = self.http_stop.take() {
            let _ = tx.send(());
        }
        self.supervisor.stop(None);
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if let Some((_, task)) = self.campaign.take() {
            task.abort();
        }
        self.runtime.take();
        self.api_runtime.take();
    }
}

/// The runtime of the API: latency threads (real-time priority when allowed).
fn api_runtime(cfg: &crate::config::RuntimeConfig) -> Result<OwnRuntime, StartError> {
    OwnRuntime::for_latency("retailflow-api", cfg.api_workers, cfg.api_realtime_priority)
        .map_err(|e| StartError::Spawn(format!("API runtime: {e}")))
}

/// The runtime of the data path: its own threads, at a lower CPU priority than the API's.
fn data_runtime(cfg: &crate::config::RuntimeConfig) -> Result<OwnRuntime, StartError> {
    let realtime = super::threads::realtime_allowed(cfg.api_realtime_priority);
    OwnRuntime::build("retailflow-data", cfg.data_workers, cfg.data_nice(realtime))
        .map_err(|e| StartError::Spawn(format!("data runtime: {e}")))
}

/// A NATS connection named `name`, driven by the runtime `rt`.
async fn connect_on(
    rt: &tokio::runtime::Handle,
    cfg: &crate::config::NatsConfig,
    name: &'static str,
) -> Result<async_nats::Client, StartError> {
    let cfg = cfg.clone();
    Ok(rt
        .spawn(async move { bus::connect(&cfg, name).await })
        .await
        .map_err(|e| StartError::Spawn(e.to_string()))??)
}

/// How long start-up keeps asking JetStream again when a request times out or fails. A cluster
/// that has just formed, or is electing a leader for a stream, answers after a few seconds;
/// replicas starting together race to create the same streams and buckets.
const START_PATIENCE: Duration = Duration::from_secs(30);

/// Runs `attempt` until it succeeds, fails for a reason that waiting cannot cure, or
/// `START_PATIENCE` has passed (then the last error is returned).
async fn patiently<T, E, F, Fut>(what: &str, retry: fn(&E) -> bool, mut attempt: F) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let start = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(250);
    loop {
        match attempt().await {
            Err(error) if retry(&error) && start.elapsed() + pause < START_PATIENCE => {
                tracing::warn!(%error, "{what}: asking again in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(4));
            }
            done => return done,
        }
    }
}

fn bus_retry(e: &BusError) -> bool {
    matches!(e, BusError::JetStream(_))
}

fn snapshot_retry(e: &SnapshotError) -> bool {
    matches!(e, SnapshotError::Storage(_))
}

/// The streams, created or checked, and the snapshot store (when snapshots are on).
async fn storage(shared: &Shared) -> Result<Option<SnapshotStore>, StartError> {
    let config = &shared.config;
    patiently("creating the streams", bus_retry, || {
        bus::streams::ensure(&shared.js, &config.streams)
    })
    .await?;
    let (storage, replicas) = (config.streams.storage, config.streams.replicas);
    let records = [
        crate::finance::journal::desired(&config.finance, storage, replicas),
        crate::dlq::audit::desired(&config.finance, storage, replicas),
    ];
    for want in records {
        patiently(
            "creating the finance and audit streams",
            bus_retry,
            || async {
                crate::finance::journal::ensure(&shared.js, want.clone())
                    .await
                    .map_err(BusError::JetStream)
            },
        )
        .await?;
    }
    if !config.snapshot.enabled {
        return Ok(None);
    }
    let store = patiently("opening the snapshot store", snapshot_retry, || {
        SnapshotStore::open(
            &shared.js,
            &config.snapshot,
            config.streams.storage,
            config.streams.replicas,
        )
    })
    .await?;
    Ok(Some(store))
}

/// The lease loop (when `leader.elect`), after a first round, so the pipeline knows whether it
/// leads before anything starts. It runs on the API's connection and runtime: renewals must not
/// queue behind ingest.
async fn campaign(
    shared: &Arc<Shared>,
    api: &tokio::runtime::Handle,
    api_client: &async_nats::Client,
) -> Result<Option<Campaign>, StartError> {
    if !shared.config.leader.elect {
        shared.metrics.leader.store(1, Relaxed);
        return Ok(None);
    }
    let api_js = async_nats::jetstream::new(api_client.clone());
    let for_lease = shared.clone();
    let lease = api
        .spawn(async move {
            let s = &for_lease;
            patiently("opening the leader lease", bus_retry, || {
                super::leading::open(&api_js, &s.config, &s.leadership, &s.metrics)
            })
            .await
        })
        .await
        .map_err(|e| StartError::Spawn(e.to_string()))??;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = api.spawn(super::leading::campaign(
        lease,
        shared.leadership.clone(),
        shared.metrics.clone(),
        stopped,
    ));
    Ok(Some((stop, task)))
}

/// Ends the lease loop (which then resigns) and its task.
type Campaign = (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
);

/// What `FrontEnds::start` needs from the start-up in progress.
struct FrontEndArgs<'a> {
    shared: &'a Arc<Shared>,
    query: &'a Arc<QueryContext>,
    reservations: &'a Arc<Reservations>,
    auth: &'a Arc<ApiAuth>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    api: &'a tokio::runtime::Handle,
    data: &'a tokio::runtime::Handle,
    api_client: &'a async_nats::Client,
    resv_client: &'a async_nats::Client,
}

/// The API's front ends: HTTP (with TLS and token reload on SIGHUP) on the API runtime, the
/// NATS request-reply responders on the runtime of their connection.
struct FrontEnds {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    http_addr: Option<SocketAddr>,
    http_stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FrontEnds {
    async fn start(a: FrontEndArgs<'_>) -> Result<FrontEnds, StartError> {
        let mut front = FrontEnds {
            tasks: Vec::new(),
            http_addr: None,
            http_stop: None,
        };
        if !a.shared.config.api.http.is_empty() {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let state = ApiState {
                ctx: a.query.clone(),
                reservations: a.reservations.clone(),
                auth: a.auth.clone(),
            };
            let listen = a.shared.config.api.http.clone();
            let (addr, task) = a
                .api
                .spawn(async move {
                    http::serve(state, &listen, a.tls, async {
                        let _ = rx.await;
                    })
                    .await
                })
                .await
                .map_err(|e| StartError::Spawn(e.to_string()))?
                .map_err(|error| StartError::Listen {
                    addr: a.shared.config.api.http.clone(),
                    error,
                })?;
            tracing::info!(%addr, "HTTP API listening");
            front.http_addr = Some(addr);
            front.http_stop = Some(tx);
            front.tasks.push(task);
        }
        #[cfg(unix)]
        if a.auth.enabled() {
            let for_hup = a.auth.clone();
            let t = a
                .api
                .spawn(async move { crate::query::auth::reload_on_sighup(for_hup) })
                .await
                .map_err(|e| StartError::Spawn(e.to_string()))?
                .map_err(|e| StartError::Spawn(format!("SIGHUP handler: {e}")))?;
            front.tasks.push(t);
        }
        if a.shared.config.api.nats {
            use crate::query::nats::{QUERY_SUBJECTS, RESERVE_SUBJECTS, serve};
            for (rt, client, subjects) in [
                (a.api, a.api_client, QUERY_SUBJECTS),
                (a.data, a.resv_client, RESERVE_SUBJECTS),
            ] {
                let serving = serve(
                    a.query.clone(),
                    a.reservations.clone(),
                    client.clone(),
                    subjects,
                );
                let t = rt
                    .spawn(serving)
                    .await
                    .map_err(|e| StartError::Spawn(e.to_string()))?
                    .map_err(|e| StartError::Bus(BusError::JetStream(e.to_string())))?;
                front.tasks.push(t);
            }
        }
        Ok(front)
    }
}

impl Pipeline {
    /// Connects to NATS (refusing servers that are too old) and starts everything.
    pub async fn start(config: Config) -> Result<Pipeline, StartError> {
        Self::start_with(config, Metrics::new()).await
    }

    pub async fn start_with(config: Config, metrics: Arc<Metrics>) -> Result<Pipeline, StartError> {
        // First, so a bad tokens file or certificate stops the start before anything runs.
        let auth = Arc::new(ApiAuth::load(&config.api.tokens_file, metrics.clone())?);
        let tls = http::tls_acceptor(&config.api).map_err(StartError::Tls)?;
        let runtime = data_runtime(&config.runtime)?;
        let data = runtime.handle();
        let api_rt = api_runtime(&config.runtime)?;
        let api = api_rt.handle();
        // Each runtime drives its own connections: the data path's and the reservation front
        // end's on the data runtime, the API's on the API runtime.
        let client = connect_on(&data, &config.nats, "retailflow").await?;
        let api_client = connect_on(&api, &config.nats, "retailflow-api").await?;
        let resv_client = connect_on(&data, &config.nats, "retailflow-reserve").await?;
        let config = Arc::new(config);
        let shared = Shared::new(config.clone(), client, metrics);
        let snapshots = storage(&shared).await?;
        let campaign = campaign(&shared, &api, &api_client).await?;
        // Recover before anything runs, so a refusal (retention gap, stream behind the snapshot)
        // is returned to the caller with its reason.
        let restored = super::recovery::restore(&shared, snapshots.as_ref()).await?;
        let (fatal_tx, fatal) = tokio::sync::mpsc::unbounded_channel();
        let stop_after = Arc::new(AtomicU64::new(0));
        let args = SupervisorArgs {
            shared: shared.clone(),
            snapshots,
            restored: Some(restored),
            fatal: fatal_tx,
            stop_after: stop_after.clone(),
        };
        let name = format!(
            "retailflow-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, SeqCst)
        );
        let (supervisor, supervisor_task) = data
            .spawn(async move { Actor::spawn(Some(name), Supervisor, args).await })
            .await
            .map_err(|e| StartError::Spawn(e.to_string()))?
            .map_err(|e| StartError::Spawn(e.to_string()))?;
        let forward = super::leading::forward(shared.leadership.clone(), supervisor.clone());
        let snapshot_ctx = shared.snapshot();
        let query = shared.query();
        let publisher = Arc::new(BarrierPublisher::new(snapshot_ctx.clone()));
        // Reservations are decided by the shards; their front end (the NATS responders and the
        // request batcher) runs on the same runtime, so a decision wakes its caller on the
        // thread that made it instead of waking a thread of another runtime. Made there, so the
        // batcher runs there too.
        let resv_js = async_nats::jetstream::new(resv_client.clone());
        let for_resv = query.clone();
        let reservations = data
            .spawn(async move { Arc::new(Reservations::new(for_resv, resv_js, "api")) })
            .await
            .map_err(|e| StartError::Spawn(e.to_string()))?;
        let mut tasks = vec![
            data.spawn(ticker::run(snapshot_ctx, publisher.clone())),
            data.spawn(reserve::expiry_loop(query.clone())),
            data.spawn(crate::query::feed::run(query.clone())),
            data.spawn(forward),
            api.spawn(crate::finance::journal::follow(
                async_nats::jetstream::new(api_client.clone()),
                config.finance.stream.clone(),
                crate::finance::journal::Journal::Answers,
                shared.finance.clone(),
                shared.metrics.clone(),
            )),
            api.spawn(crate::finance::journal::follow(
                async_nats::jetstream::new(api_client.clone()),
                config.finance.audit_stream.clone(),
                crate::finance::journal::Journal::Audit,
                shared.finance.clone(),
                shared.metrics.clone(),
            )),
        ];
        let verdicts = shared
            .imports
            .1
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(verdicts) = verdicts {
            tasks.push(api.spawn(crate::post::imports::run(
                verdicts,
                shared.finance.clone(),
                async_nats::jetstream::new(api_client.clone()),
            )));
        }
        let front = FrontEnds::start(FrontEndArgs {
            shared: &shared,
            query: &query,
            reservations: &reservations,
            auth: &auth,
            tls,
            api: &api,
            data: &data,
            api_client: &api_client,
            resv_client: &resv_client,
        })
        .await?;
        tasks.extend(front.tasks);
        let (http_addr, http_stop) = (front.http_addr, front.http_stop);
        Ok(Pipeline {
            shared,
            supervisor,
            supervisor_task: Some(supervisor_task),
            fatal,
            publisher,
            stop_after,
            tasks,
            http_addr,
            http_stop,
            reservations,
            auth,
            runtime: Some(runtime),
            api_runtime: Some(api_rt),
            campaign,
        })
    }

    /// Whether this replica performs the side effects now.
    pub fn leads(&self) -> bool {
        self.shared.leadership.leads()
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Re-reads `api.tokens_file` (what SIGHUP does). A bad file keeps the tokens in force.
    pub fn reload_tokens(&self) -> Result<usize, crate::query::auth::TokenFileError> {
        self.auth.reload()
    }

    /// Resolves when the supervisor gives up (restart intensity exceeded or recovery refused).
    ///
    /// The supervisor queues its reason before it stops, so the reason is read first
    /// (`biased`): an unbiased select picks at random once both are ready and could answer
    /// "supervisor stopped" for a pipeline that gave up for a reason.
    pub async fn fatal(&mut self) -> String {
        const STOPPED: &str = "supervisor stopped";
        let Some(task) = self.supervisor_task.as_mut() else {
            return self.fatal.try_recv().unwrap_or_else(|_| STOPPED.into());
        };
        tokio::select! {
            biased;
            m = self.fatal.recv() => m.unwrap_or_else(|| STOPPED.into()),
            _ = task => {
                self.supervisor_task = None;
                self.fatal.try_recv().unwrap_or_else(|_| STOPPED.into())
            }
        }
    }

    /// Publishes a barrier now (tests and shutdown); returns its stream sequence.
    pub async fn barrier(&self, flush: bool, snapshot: bool) -> Result<u64, ticker::BarrierError> {
        self.publisher.publish(flush, snapshot).await
    }

    pub async fn coordinator_status(&self) -> Option<CoordStatus> {
        let coord: Option<ActorRef<CoordMsg>> =
            ractor::call!(self.supervisor, SupervisorMsg::Coordinator).ok()?;
        ractor::call!(coord?, CoordMsg::Status).ok()
    }

    pub async fn restarts(&self) -> u64 {
        ractor::call!(self.supervisor, SupervisorMsg::Restarts).unwrap_or(0)
    }

    /// Test hook: make an actor panic.
    #[cfg(feature = "lab")]
    pub fn crash(&self, target: CrashTarget) {
        let _ = self.supervisor.send_message(SupervisorMsg::Crash(target));
    }

    /// Test hook: make ingest re-read from `seq` (as after a consumer restart).
    #[cfg(feature = "lab")]
    pub fn rewind(&self, seq: u64) {
        let _ = self.supervisor.send_message(SupervisorMsg::Rewind(seq));
    }

    /// Waits until a barrier at or after `seq` completed and its postings were released.
    pub async fn wait_released(&self, seq: u64, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if let Some(s) = self.coordinator_status().await {
                if s.last_released >= seq && s.unreleased == 0 {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Graceful shutdown: a final flushing, snapshotting barrier; ingest stops at it; wait
    /// (bounded) until its postings are released; stop everything; give the lease up. A
    /// follower has nothing to release: it stops at once (and is always clean).
    pub async fn shutdown(mut self, limit: Duration) -> bool {
        if !self.leads() {
            self.stop_now().await;
            return true;
        }
        let mut clean = false;
        match self.publisher.publish(true, true).await {
            Ok(seq) => {
                self.stop_after.store(seq, SeqCst);
                clean = self.wait_released(seq, limit).await;
                if !clean {
                    tracing::warn!(
                        seq,
                        "shutdown: final barrier not released in time; the next start replays from the last snapshot"
                    );
                }
            }
            Err(error) => tracing::warn!(%error, "shutdown without a final barrier"),
        }
        self.stop_now().await;
        clean
    }

    /// Stops without a final barrier (what a crash would leave, minus the crash), giving the
    /// lease up so that another replica takes over at once.
    pub async fn stop_now(&mut self) {
        self.shared.flow.stopping.store(true, Relaxed);
        if let Some((stop, task)) = self.campaign.take() {
            let _ = stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        if let Some(tx) = self.http_stop.take() {
            let _ = tx.send(());
        }
        self.supervisor.stop_children(None);
        self.supervisor.stop(None);
        if let Some(task) = self.supervisor_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        for t in self.tasks.drain(..) {
            t.abort();
        }
        self.runtime.take();
        self.api_runtime.take();
    }
}
