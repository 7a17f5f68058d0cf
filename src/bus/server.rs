//! A private nats-server with JetStream: started on a free loopback port with its own store
//! directory, killed when dropped. Used by `demo`, `scenario run` and the tests; a 3-node
//! cluster of them for the failover tests ([`NatsCluster`]); a hub and store leaf nodes with
//! JetStream domains of their own, and a TCP proxy to cut the link between them, for the edge
//! tests ([`NatsHub`], [`NatsLeaf`], [`TcpProxy`]).

mod cluster;
mod edge;
mod proxy;
pub use cluster::{CLUSTER_NAME, NODES, NatsCluster};
pub use edge::{LINK_DENY, NatsHub, NatsLeaf};
pub use proxy::TcpProxy;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Pinned nats-server release installed by `scripts/install-nats-server.sh`.
pub const PINNED_VERSION: &str = "2.14.6";

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "no nats-server >= 2.10 found: set RETAILFLOW_NATS_SERVER, or run scripts/install-nats-server.sh (installs {PINNED_VERSION} into .tools/)"
    )]
    NotFound,
    #[error("cannot start {binary}: {message}")]
    Start { binary: String, message: String },
    #[error("nats-server did not accept connections on port {port} within {waited:?}; log: {log}")]
    NotReady {
        port: u16,
        waited: Duration,
        log: String,
    },
}

fn version_of(binary: &Path) -> Option<String> {
    let out = Command::new(binary).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "nats-server: v2.14.6"
    text.split_whitespace()
        .last()
        .map(|v| v.trim_start_matches('v').to_string())
}

/// Finds a nats-server binary new enough for retailflow: `$RETAILFLOW_NATS_SERVER`, the
/// project's `.tools/` install, then `nats-server` on `PATH`.
pub fn find_binary() -> Result<PathBuf, ServerError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(p) = std::env::var("RETAILFLOW_NATS_SERVER") {
        if !p.is_empty() {
            candidates.push(PathBuf::from(p));
        }
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    candidates.push(manifest.join(".tools/nats-server/bin/nats-server"));
    if let Ok(cwd) = std::env::current_dir() {
        candidates.push(cwd.join(".tools/nats-server/bin/nats-server"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            candidates.push(dir.join("nats-server"));
        }
    }
    for c in candidates {
        if c.is_file() {
            if let Some(v) = version_of(&c) {
                if super::version_at_least(&v, "2.10.0") {
                    return Ok(c);
                }
            }
        }
    }
    Err(ServerError::NotFound)
}

/// Asks the OS for a free loopback port.
/// Whether the peer sends NATS's `INFO` greeting within half a second.
fn greets_like_nats(mut conn: std::net::TcpStream) -> bool {
    use std::io::Read;
    let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 4];
    conn.read_exact(&mut buf).is_ok() && &buf == b"INFO"
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    store: PathBuf,
    /// Kept so the directory lives as long as the server (and is removed after).
    _tmp: Option<tempfile::TempDir>,
    child: Option<Child>,
    log: PathBuf,
    extra_args: Vec<String>,
}

/// Go scheduler slots (`GOMAXPROCS`) of a server started here: `GOMAXPROCS` from the
/// environment when set, otherwise four per core. Go's default of one per core suits a broker
/// with the machine to itself. Here it shares the cores with the pipeline, and a request whose
/// socket turns readable while every slot is busy delivering to the ingest consumer waits
/// until one comes free: up to Go's 10 ms preemption tick. That was the NATS query tail
/// during a black-friday drain (p99 10–14 ms). With spare slots, one of them is parked on the
/// socket poller and the kernel interleaves its thread with the busy ones (p99 5–8 ms).
pub fn server_procs() -> usize {
    std::env::var("GOMAXPROCS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| {
            4 * std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}

/// Garbage-collection target (`GOGC`) of a server started here: `GOGC` from the environment
/// when set, otherwise [`SERVER_GOGC`].
pub fn server_gogc() -> String {
    gogc_from(std::env::var("GOGC").ok().as_deref())
}

/// The `GOGC` a server gets given the environment's value: that value trimmed, or
/// [`SERVER_GOGC`] when it is absent or blank. Go itself judges the value (`off` included).
fn gogc_from(env: Option<&str>) -> String {
    env.map(str::trim)
        .filter(|v| !v.is_empty())
        .map_or_else(|| SERVER_GOGC.to_string(), str::to_string)
}

/// `GOGC` for a server started here when the environment sets none. With Go's default of
/// 100, a black-friday drain (2,000,000 messages) saw the server collect about every 12 s. Each
/// mark phase lasted 0.2-0.55 s, with Go's idle-priority mark workers on every scheduling slot
/// Go thought idle; the spare slots of [`server_procs`] are many, but the machine's two cores
/// were not idle. Each of those phases fell within a second of a half-second dip in ingest and
/// a spike in query latency (`GODEBUG=gctrace=1` against the run's per-second timeline). Four
/// times the default collects a quarter as often; the price is a larger heap, about five times
/// the live data instead of two (the server's live heap was 250-350 MB in that run).
pub const SERVER_GOGC: u32 = 400;

/// Nice value asked for a server started here. It shares the cores with the pipeline, and
/// everything waits on it: ingest for its next messages, a NATS query twice. At the default 0
/// its threads queue behind the ingest threads' long slices. At -5 they take a core sooner
/// when they wake (black-friday drain with queries: NATS query p99 4–5 ms -> 2.7 ms, and the
/// drain did not slow). Lowering a nice value needs root or `CAP_SYS_NICE`; without them
/// the server keeps 0 ([`NatsServer::nice`] tells which).
pub const SERVER_NICE: i32 = -5;

impl NatsServer {
    /// Starts a server on a free port with a fresh temporary store directory.
    pub fn start() -> Result<NatsServer, ServerError> {
        Self::start_with(&[])
    }

    /// As [`NatsServer::start`], with extra command-line arguments (e.g. `-c nats/file.conf`).
    pub fn start_with(extra_args: &[&str]) -> Result<NatsServer, ServerError> {
        Self::start_on(free_port(), extra_args)
    }

    /// As [`NatsServer::start_with`], on client port `port`.
    fn start_on(port: u16, extra_args: &[&str]) -> Result<NatsServer, ServerError> {
        Self::start_configured(port, None, extra_args)
    }

    /// As [`NatsServer::start_on`], with a configuration file holding `config` (written into
    /// the server's temporary directory). The command line's port, `-js` and store directory
    /// win over the file's.
    fn start_configured(
        port: u16,
        config: Option<&str>,
        extra_args: &[&str],
    ) -> Result<NatsServer, ServerError> {
        let binary = find_binary()?;
        let failed = |message: String| ServerError::Start {
            binary: binary.display().to_string(),
            message,
        };
        let tmp = tempfile::Builder::new()
            .prefix("retailflow-nats-")
            .tempdir()
            .map_err(|e| failed(format!("temp dir: {e}")))?;
        let store = tmp.path().join("jetstream");
        let log = tmp.path().join("nats-server.log");
        let mut args: Vec<String> = Vec::new();
        if let Some(text) = config {
            let file = tmp.path().join("server.conf");
            std::fs::write(&file, text).map_err(|e| failed(format!("config file: {e}")))?;
            args.push("-c".into());
            args.push(file.display().to_string());
        }
        args.extend(extra_args.iter().map(|s| s.to_string()));
        let mut server = NatsServer {
            binary,
            port,
            store,
            _tmp: Some(tmp),
            child: None,
            log,
            extra_args: args,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), ServerError> {
        let log = std::fs::File::create(&self.log).map_err(|e| ServerError::Start {
            binary: self.binary.display().to_string(),
            message: format!("log file: {e}"),
        })?;
        let mut cmd = Command::new(&self.binary);
        // SAFETY: the closure runs in the forked child before exec and makes one system call,
        // which is async-signal-safe; its failure is ignored (the server keeps nice 0).
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::setpriority(libc::PRIO_PROCESS, 0, SERVER_NICE);
                Ok(())
            });
        }
        let child = cmd
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .args(&self.extra_args)
            .env("GOMAXPROCS", server_procs().to_string())
            .env("GOGC", server_gogc())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| ServerError::Start {
                binary: self.binary.display().to_string(),
                message: e.to_string(),
            })?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(20))
    }

    fn wait_ready(&self, limit: Duration) -> Result<(), ServerError> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(conn) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                // A connect to a local port nobody listens on yet can succeed by connecting the
                // socket to itself (the kernel picked that port as the source port). Only a
                // server greeting with INFO counts. JetStream readiness is awaited by the
                // client's first request.
                if greets_like_nats(conn) {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(ServerError::NotReady {
            port: self.port,
            waited: limit,
            log: std::fs::read_to_string(&self.log).unwrap_or_default(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server process's nice value, read from `/proc` (None when it is not running).
    pub fn nice(&self) -> Option<i32> {
        let pid = self.child.as_ref()?.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces; the
        // nice value is field 19 of stat(5), the 17th after the name.
        let rest = &stat[stat.rfind(')')? + 1..];
        rest.split_whitespace().nth(16)?.parse().ok()
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn store_dir(&self) -> &Path {
        &self.store
    }

    pub fn version(&self) -> String {
        version_of(&self.binary).unwrap_or_else(|| "unknown".into())
    }

    /// SIGKILL, no shutdown: what a crashed server looks like.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Lame duck mode (`--signal ldm`): the server hands its Raft leaderships to others,
    /// stops JetStream, tells its clients (an `INFO` with `ldm`), waits a grace period, closes
    /// them over the next minutes and exits. What a graceful restart of a node looks like.
    pub fn lame_duck(&self) -> Result<(), ServerError> {
        let failed = |message: String| ServerError::Start {
            binary: self.binary.display().to_string(),
            message,
        };
        let pid = self
            .child
            .as_ref()
            .ok_or_else(|| failed("the server is not running".into()))?
            .id();
        let status = Command::new(&self.binary)
            .args(["--signal", &format!("ldm={pid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| failed(format!("--signal ldm: {e}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(failed(format!("--signal ldm={pid}: {status}")))
        }
    }

    /// Starts the server again on the same port and store directory.
    pub fn restart(&mut self) -> Result<(), ServerError> {
        self.kill();
        self.spawn()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where the demo and scenarios get NATS from.
pub struct NatsSource {
    pub url: String,
    /// Set when a private server was started (kept alive as long as this value).
    pub private: Option<NatsServer>,
    /// Why this source was chosen, for the console.
    pub why: String,
}

/// Uses `$NATS_URL` or 127.0.0.1:4222 when it answers, is recent enough and does not already
/// hold retailflow's events stream (so a demo never mixes with real data); otherwise starts a
/// private nats-server.
pub async fn existing_or_private(events_stream: &str) -> Result<NatsSource, ServerError> {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "127.0.0.1:4222".into());
    let why = match tokio::time::timeout(
        Duration::from_secs(2),
        async_nats::connect(super::servers(&url)),
    )
    .await
    {
        Ok(Ok(client)) => {
            let version = client.server_info().version;
            if !super::version_at_least(&version, "2.10.0") {
                format!("the server at {url} is {version}, older than 2.10")
            } else {
                let js = async_nats::jetstream::new(client);
                match js.get_stream(events_stream).await {
                    Ok(_) => format!(
                        "{url} already holds stream {events_stream}; not mixing demo data into it"
                    ),
                    Err(_) => {
                        return Ok(NatsSource {
                            why: format!("using nats-server {version} at {url}"),
                            url,
                            private: None,
                        });
                    }
                }
            }
        }
        _ => format!("nothing answers at {url}"),
    };
    let server = tokio::task::spawn_blocking(NatsServer::start)
        .await
        .map_err(|e| ServerError::Start {
            binary: "nats-server".into(),
            message: e.to_string(),
        })??;
    Ok(NatsSource {
        why: format!(
            "{why}; started a private nats-server {} at {}",
            server.version(),
            server.url()
        ),
        url: server.url(),
        private: Some(server),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_started_here_runs_at_the_broker_nice_value_when_allowed() {
        // Whether this process may lower a nice value, tried on a thread of its own.
        let allowed = std::thread::spawn(|| {
            // SAFETY: changes the calling thread's nice value only.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, SERVER_NICE) == 0 }
        })
        .join()
        .unwrap();
        let server = NatsServer::start().expect("nats-server starts");
        let want = if allowed { SERVER_NICE } else { 0 };
        assert_eq!(server.nice(), Some(want));
    }

    #[test]
    fn the_environment_s_gogc_wins_and_a_blank_one_counts_as_unset() {
        assert_eq!(gogc_from(None), "400");
        assert_eq!(gogc_from(Some("")), "400");
        assert_eq!(gogc_from(Some("  ")), "400");
        assert_eq!(gogc_from(Some("100")), "100");
        assert_eq!(gogc_from(Some(" off\n")), "off");
    }

    #[test]
    fn a_server_started_here_gets_the_go_runtime_settings() {
        let server = NatsServer::start().expect("nats-server starts");
        let pid = server.child.as_ref().expect("running").id();
        let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ readable");
        let vars: Vec<String> = environ
            .split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        let value = |name: &str| {
            vars.iter()
                .find_map(|v| v.strip_prefix(&format!("{name}=")).map(str::to_string))
        };
        assert_eq!(value("GOGC"), Some(server_gogc()));
        assert_eq!(value("GOMAXPROCS"), Some(server_procs().to_string()));
        if std::env::var_os("GOGC").is_none() {
            assert_eq!(server_gogc(), SERVER_GOGC.to_string());
        }
    }
}
