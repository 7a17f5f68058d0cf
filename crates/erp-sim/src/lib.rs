//! A simulated ERP endpoint, so that retailflow's delivery can be tested and benchmarked
//! against something that pushes back the way a real one does.
//!
//! It is a real HTTP server on a socket, shaped after Dynamics 365 / Dataverse service
//! protection:
//!
//! - a sliding window of `limit_requests` per `limit_window` and a cap of `max_concurrent`
//!   requests in flight, both answered with 429 and a `Retry-After`;
//! - idempotency: an `Idempotency-Key` already answered (201 or 400) gets the original answer
//!   again with `Idempotent-Replayed: true` and books nothing;
//! - refused locations (400, like a store missing from master data), deterministic injected
//!   503s that a retry can get past, and per-key latency;
//! - fault modes switched at run time: an outage (every request 503), a 429 storm or an expired
//!   token (every request 401), for a time or a number of requests, optionally with a
//!   `Retry-After` of any text.
//!
//! What it booked is summed per key, and a document id accepted twice under different keys
//! is counted in `duplicate_documents`: a naive ERP double-books, and that is the bug the
//! tests look for.
//!
//! Routes:
//!
//! | route | answer |
//! |---|---|
//! | `POST /api/v1/postings` | 201 `{"status":"accepted","document":<id>,"erp_ref":"ERP-<n>"}`, 400, 401, 429, 503 |
//! | `GET /api/v1/totals` | [`Totals`] |
//! | `GET /api/v1/stats` | [`Stats`] |
//! | `POST /api/v1/admin/fault` | body `{"mode":"normal"\|"outage"\|"throttle"\|"unauthorized","seconds":30,"requests":1,"retry_after":"120"}` (all but `mode` optional), answers [`FaultStatus`] |
//! | `GET /healthz` | `ok` |
//!
//! A postings request passes these checks in order, and the first that answers wins: fault
//! mode, concurrency, window, `Idempotency-Key` present, replay, readable body, refused
//! location, injected error, latency, accept.
//!
//! ```no_run
//! # async fn demo() -> Result<(), erp_sim::ErpSimError> {
//! use erp_sim::{ErpSim, ErpSimConfig};
//! let sim = ErpSim::start(ErpSimConfig {
//!     listen: "127.0.0.1:0".into(),
//!     ..ErpSimConfig::default()
//! })
//! .await?;
//! // Point an endpoint's `url` at `sim.postings_url()`, run, then compare `sim.totals()`.
//! sim.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Inside, `http` only translates between HTTP and `state`, which takes each request through
//! the checks; each rule is a module of its own: `faults`, `concurrency`, `window`,
//! `idempotency`, `injection` (injected errors and latency), `books` (what was booked, summed
//! per key) and `stats` (what was counted). `config` holds the settings and `cli` runs the
//! standalone server.

mod answer;
mod books;
pub mod cli;
mod concurrency;
mod config;
mod faults;
#[cfg(test)]
mod fixtures;
mod http;
mod idempotency;
mod injection;
mod state;
mod stats;
mod window;

pub use books::{InventoryTotal, SalesTotal, TaxTotal, TenderTotal, Totals};
pub use config::ErpSimConfig;
pub use faults::{FaultMode, FaultPlan, FaultStatus};
pub use stats::{Stats, TimelinePoint};

use state::SimState;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long `shutdown` waits for open connections before cutting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ErpSimError {
    #[error("invalid ERP simulator configuration: {0}")]
    Invalid(String),
    #[error("ERP simulator cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// A running simulator. Dropping it stops the server too, without waiting.
pub struct ErpSim {
    addr: SocketAddr,
    sim: Arc<SimState>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    /// The simulator's own threads, when it has them (see `start_isolated`).
    runtime: Option<OwnRuntime>,
}

impl ErpSim {
    /// Binds `config.listen` and serves on a spawned task of the calling runtime.
    pub async fn start(config: ErpSimConfig) -> Result<ErpSim, ErpSimError> {
        Self::start_on(config, tokio::runtime::Handle::current()).await
    }

    /// Like `start`, but serves on a thread of its own at nice value `nice`. Booking a page of
    /// postings is CPU work of several milliseconds; on a shared runtime it would hold up the
    /// tasks queued behind it, availability queries included. An ERP is somebody else's
    /// machine: when it has to share one with retailflow (a scenario), it must not take the
    /// CPU from what is measured either.
    pub async fn start_isolated(config: ErpSimConfig, nice: i32) -> Result<ErpSim, ErpSimError> {
        let runtime = OwnRuntime::build(nice).map_err(|source| ErpSimError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
        let mut sim = Self::start_on(config, runtime.handle()).await?;
        sim.runtime = Some(runtime);
        Ok(sim)
    }

    async fn start_on(
        config: ErpSimConfig,
        runtime: tokio::runtime::Handle,
    ) -> Result<ErpSim, ErpSimError> {
        config.check().map_err(ErpSimError::Invalid)?;
        let bind_error = |source| ErpSimError::Bind {
            addr: config.listen.clone(),
            source,
        };
        // Bound inside the serving runtime, whose reactor then owns the socket.
        let listen = config.listen.clone();
        let listener = runtime
            .spawn(async move { tokio::net::TcpListener::bind(listen).await })
            .await
            .map_err(|e| bind_error(std::io::Error::other(e)))?
            .map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let sim = Arc::new(SimState::new(config, Instant::now()));
        let app = http::router(sim.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = runtime.spawn(async move {
            let serving = axum::serve(listener, app).with_graceful_shutdown(async {
                // A dropped sender stops the server as well.
                let _ = stopped.await;
            });
            if let Err(error) = serving.await {
                tracing::warn!(%error, %addr, "ERP simulator stopped with an error");
            }
        });
        tracing::info!(%addr, "ERP simulator listening");
        Ok(ErpSim {
            addr,
            sim,
            stop: Some(stop),
            server: Some(server),
            runtime: None,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where documents are POSTed.
    pub fn postings_url(&self) -> String {
        format!("{}/api/v1/postings", self.base_url())
    }

    /// The same data as `GET /api/v1/totals`.
    pub fn totals(&self) -> Totals {
        self.sim.totals()
    }

    /// The same data as `GET /api/v1/stats`.
    pub fn stats(&self) -> Stats {
        self.sim.stats()
    }

    /// Every acceptance so far: (last stream sequence the document covers, when accepted).
    pub fn acceptances(&self) -> Vec<(u64, Instant)> {
        self.sim.acceptances()
    }

    /// Switches the fault mode for `for_`, or until switched again when `None`.
    pub fn set_fault(&self, mode: FaultMode, for_: Option<Duration>) {
        self.sim.set_fault(mode, for_, Instant::now());
    }

    /// Plays a fault plan from now.
    pub fn play(&self, plan: FaultPlan) -> FaultStatus {
        self.sim.play(plan, Instant::now())
    }

    /// The fault mode in force now.
    pub fn fault(&self) -> FaultStatus {
        self.sim.fault(Instant::now())
    }

    /// Stops accepting connections, lets requests in progress finish for up to
    /// `SHUTDOWN_GRACE`, then cuts whatever is left.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut server) = self.server.take() {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut server)
                .await
                .is_err()
            {
                server.abort();
            }
        }
    }
}

impl Drop for ErpSim {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// One thread of the simulator's own, at a lower priority. Dropped, it shuts down in the
/// background: a runtime dropped inside async code would block.
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl OwnRuntime {
    fn build(nice: i32) -> std::io::Result<OwnRuntime> {
        let nice = nice.clamp(0, 19);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name("erp-sim")
            .on_thread_start(move || lower_priority(nice))
            .build()?;
        Ok(OwnRuntime(Some(runtime)))
    }

    fn handle(&self) -> tokio::runtime::Handle {
        self.0
            .as_ref()
            .expect("runtime present until dropped")
            .handle()
            .clone()
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Lowers the calling thread's scheduling priority to `nice` (0 leaves it alone).
fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    if nice > 0 {
        // SAFETY: setpriority on the calling thread's id; failing leaves the priority as it was.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, nice);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}
