//! Configuration: one TOML file, every field documented (docs/CONFIG.md, generated from the doc
//! comments here by `retailflow config --doc`), unknown fields rejected.
//! Secrets never live in the file: fields ending in `_env` name an environment variable.

use retailflow_core::aggregate::posting::DocKind;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;
pub mod doc;
mod erp_kind;
pub mod finance;
pub mod leader;
pub mod nats_url;
mod sources;
pub mod telemetry;
pub use {erp_kind::ErpKind, finance::FinanceConfig, leader::LeaderConfig};
pub use {sources::SourceConfig, telemetry::LogFormat, telemetry::TelemetryConfig};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub nats: NatsConfig,
    pub streams: StreamsConfig,
    pub ingest: IngestConfig,
    pub shards: ShardsConfig,
    pub barrier: BarrierConfig,
    pub snapshot: SnapshotConfig,
    pub api: ApiConfig,
    pub feed: FeedConfig,
    pub reservations: ReservationConfig,
    pub supervision: SupervisionConfig,
    pub runtime: RuntimeConfig,
    pub leader: LeaderConfig,
    pub finance: FinanceConfig,
    pub telemetry: TelemetryConfig,
    /// ERP endpoints postings are delivered to.
    pub erp: Vec<ErpEndpointConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            nats: NatsConfig::default(),
            streams: StreamsConfig::default(),
            ingest: IngestConfig::default(),
            shards: ShardsConfig::default(),
            barrier: BarrierConfig::default(),
            snapshot: SnapshotConfig::default(),
            api: ApiConfig::default(),
            feed: FeedConfig::default(),
            reservations: ReservationConfig::default(),
            supervision: SupervisionConfig::default(),
            runtime: RuntimeConfig::default(),
            leader: LeaderConfig::default(),
            finance: FinanceConfig::default(),
            telemetry: TelemetryConfig::default(),
            erp: vec![ErpEndpointConfig::default()],
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server address, or several separated by commas (`"10.0.0.1:4222,10.0.0.2:4222"`), each
    /// `[nats://|tls://]host[:port]` (credentials come from the `*_env` settings; any written
    /// into the URL are not used). Every connection tries the listed servers until one answers,
    /// so a start succeeds while some are down, and learns the cluster's other members from the
    /// server. `NATS_URL` in the environment overrides it.
    pub url: String,
    /// Environment variable holding a credentials file path (optional).
    pub creds_env: String,
    /// Environment variable holding a token (optional).
    pub token_env: String,
    /// Environment variable holding an nkey seed (`SU...`, optional); the server's nonce is
    /// signed with it, and the direct reader steps aside to `async-nats`.
    pub nkey_env: String,
    /// Environment variable holding a user name (optional; both or neither with `password_env`).
    pub user_env: String,
    /// Environment variable holding the user's password (with `user_env`).
    pub password_env: String,
    /// PEM file of the CA(s) that signed the server's certificate (empty: the system's roots).
    /// Setting it, or a client certificate, implies TLS.
    pub tls_ca: String,
    /// PEM client certificate for servers that verify clients (with `tls_key`); implies TLS.
    pub tls_cert: String,
    /// PEM key of the client certificate (with `tls_cert`).
    pub tls_key: String,
    /// Refuse to talk to the server without TLS (also implied by a `tls://` URL).
    pub tls_required: bool,
    /// Oldest nats-server accepted; older ones are refused (KV and consumer features need 2.10).
    pub min_server_version: String,
}

impl NatsConfig {
    /// Whether the connection uses TLS by configuration (a `tls://` URL also does).
    pub fn tls(&self) -> bool {
        self.tls_required
            || !self.tls_ca.is_empty()
            || !self.tls_cert.is_empty()
            || !self.tls_key.is_empty()
    }
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: "127.0.0.1:4222".into(),
            creds_env: "RETAILFLOW_NATS_CREDS".into(),
            token_env: "RETAILFLOW_NATS_TOKEN".into(),
            nkey_env: "RETAILFLOW_NATS_NKEY".into(),
            user_env: "RETAILFLOW_NATS_USER".into(),
            password_env: "RETAILFLOW_NATS_PASSWORD".into(),
            tls_ca: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_required: false,
            min_server_version: "2.10.0".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Storage {
    File,
    Memory,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamsConfig {
    /// Stream holding every retail event (the source of truth).
    pub events: String,
    /// Systems whose subjects `retail.v1.<system>.>` the events stream captures; `api` and `ctl`
    /// (retailflow's own) are always added, and `atp`, `dlq`, `postings` and `finance` are reserved.
    pub systems: Vec<String>,
    /// Outbox of posting documents.
    pub postings: String,
    /// Dead letters: bad events and rejected postings, with reasons.
    pub dead_letters: String,
    /// Where the streams keep their messages: `file` or `memory`.
    pub storage: Storage,
    /// Stream replicas (3 in a cluster).
    pub replicas: usize,
    /// JetStream's `Nats-Msg-Id` duplicate window.
    #[serde(with = "duration")]
    pub duplicate_window: Duration,
    /// How long events are kept; recovery needs every event after the latest snapshot.
    #[serde(with = "duration")]
    pub events_max_age: Duration,
    /// Postings outbox limit: new postings are refused beyond it; ingest pauses before that.
    pub postings_max_messages: i64,
    /// Most bytes the events stream keeps (oldest go first; recovery needs every event after the
    /// latest snapshot). An existing stream holding more than this stops startup.
    pub events_max_bytes: i64,
    /// Most bytes the dead-letter stream keeps (oldest letters go first).
    pub dead_letters_max_bytes: i64,
    /// Streams in other JetStream domains (stores on leaf nodes, docs/EDGE.md) that the events
    /// stream copies from. This list is the whole of the events stream's sources: one added
    /// here is added to the stream at the next start, one removed is removed.
    pub sources: Vec<SourceConfig>,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        StreamsConfig {
            events: "RETAIL_EVENTS".into(),
            systems: ["pos", "web", "mkt", "wms", "mdm", "erp"]
                .map(String::from)
                .to_vec(),
            postings: "RETAIL_POSTINGS".into(),
            dead_letters: "RETAIL_DLQ".into(),
            storage: Storage::File,
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            events_max_age: Duration::from_secs(14 * 24 * 3600),
            postings_max_messages: 1_000_000,
            events_max_bytes: 10 * 1024 * 1024 * 1024,
            dead_letters_max_bytes: 1024 * 1024 * 1024,
            sources: Vec::new(),
        }
    }
}

impl StreamsConfig {
    /// Subjects of the events stream, retailflow's own systems included.
    pub fn event_subjects(&self) -> Vec<String> {
        let mut systems: Vec<&str> = self.systems.iter().map(String::as_str).collect();
        for own in ["api", "ctl"] {
            if !systems.contains(&own) {
                systems.push(own);
            }
        }
        systems
            .iter()
            .map(|s| format!("{}.{s}.>", crate::domain::subject::ROOT))
            .collect()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Messages requested per pull.
    pub batch: usize,
    /// Most ops dispatched to actors but not yet applied; ingest stops pulling above it.
    pub credit: u64,
    /// Per-source reorder window: how far out of sequence a source's events may arrive.
    pub reorder_window: u64,
    /// How ingest reads the events stream: `direct` (a connection of its own, decoding in place;
    /// with TLS, an nkey or a credentials file it falls back to `async-nats`) or `async-nats`.
    pub reader: ReaderKind,
    /// Most sources the dedupe table remembers. Beyond it the least recently seen eighth is
    /// forgotten (`retailflow_dedupe_sources_evicted_total`) and a forgotten source starts
    /// afresh, its re-sends then recognised only by JetStream's duplicate window.
    pub dedupe_sources: usize,
    /// Largest step a known source's sequence may take past what was seen; a larger one is
    /// dead-lettered `sequence_jump` and the source's position is kept.
    pub max_sequence_jump: u64,
    /// `/healthz` answers 503 `stalled` when nothing was applied for this long while the
    /// stream holds more.
    #[serde(with = "duration")]
    pub stall_after: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            batch: 2000,
            credit: 100_000,
            reorder_window: 4096,
            reader: ReaderKind::Direct,
            dedupe_sources: retailflow_core::ingest::dedupe::DEFAULT_MAX_SOURCES,
            max_sequence_jump: retailflow_core::ingest::dedupe::DEFAULT_MAX_JUMP,
            stall_after: Duration::from_secs(30),
        }
    }
}

/// How ingest reads the events stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReaderKind {
    /// A connection of its own, messages decoded in place from the read buffer
    /// (`bus::pull`). Where the connection needs TLS or a credentials file, ingest reads
    /// through async-nats instead and logs so once.
    #[serde(rename = "direct")]
    Direct,
    /// The pipeline's async-nats connection and its pull consumer stream.
    #[serde(rename = "async-nats")]
    AsyncNats,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShardsConfig {
    /// SKU shards (`hash(sku) mod count`, 1 to 256). Changing it needs a fresh start.
    pub count: usize,
}

impl Default for ShardsConfig {
    fn default() -> Self {
        ShardsConfig { count: 4 }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BarrierConfig {
    /// How often the barrier ticker looks; while its last barrier is still ahead of ingest, the
    /// next waits until the stream grew `snapshot.every_events` past the last snapshot barrier.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Least time between two flushing barriers while the ERP keeps up.
    #[serde(with = "duration")]
    pub flush_interval: Duration,
    /// Postings waiting for an endpoint above which flushes are spaced out (doubling the
    /// interval each time), so documents grow instead of multiplying.
    pub backlog_slow: u64,
    /// Postings waiting above which ingest pauses until the ERP catches up.
    pub backlog_pause: u64,
}

impl Default for BarrierConfig {
    fn default() -> Self {
        BarrierConfig {
            interval: Duration::from_secs(1),
            flush_interval: Duration::from_secs(5),
            backlog_slow: 200,
            backlog_pause: 100_000,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// Object store bucket for snapshots; the KV bucket `<bucket>-ptr` points at the latest.
    pub bucket: String,
    /// Snapshot at least this often while events flow.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Snapshot also once this many events arrived since the last snapshot.
    pub every_events: u64,
    /// Complete snapshots kept; when the latest is missing or corrupt, startup replays from the
    /// newest older one that loads (`retailflow_snapshot_fallbacks_total`), or stops if none does.
    pub keep: usize,
    /// Whether snapshots are taken (off: postings leave at once, recovery replays everything).
    pub enabled: bool,
    /// While snapshots fail: posting documents formed but not released above which ingest
    /// pauses, as for an ERP backlog, until the failed snapshot (retried every `interval`, at
    /// most 5 s apart) is written (`retailflow_snapshot_pending_postings`). On a follower
    /// replica: documents held until the leader releases them, with the same pause.
    pub max_pending_postings: u64,
    /// `/healthz` answers 503 `failing` when snapshots have failed for this long.
    #[serde(with = "duration")]
    pub fail_after: Duration,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            bucket: "retailflow-snapshots".into(),
            interval: Duration::from_secs(30),
            every_events: 1_000_000,
            keep: 3,
            enabled: true,
            max_pending_postings: 100_000,
            fail_after: Duration::from_secs(120),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// HTTP listen address; empty disables HTTP.
    pub http: String,
    /// Whether to answer on the NATS request-reply subjects.
    pub nats: bool,
    /// Longest `min_as_of` wait a query may ask for (one deadline for the whole query).
    #[serde(with = "duration")]
    pub max_wait: Duration,
    /// File of bearer tokens, one a line: `<secret> <scope>[,<scope>...]`; scopes `query`,
    /// `reserve`, `metrics`, `admin` (all); `/healthz` stays open. Re-read on SIGHUP (a bad
    /// file keeps the old tokens). Empty: the HTTP API is open, with a warning.
    pub tokens_file: String,
    /// PEM certificate chain for HTTPS; with `tls_key`. Empty: plain HTTP.
    pub tls_cert: String,
    /// PEM private key for HTTPS; with `tls_cert`.
    pub tls_key: String,
    /// HTTP connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// A connection must send a whole request head (and finish a TLS handshake) within this.
    #[serde(with = "duration")]
    pub header_timeout: Duration,
    /// A connection with no traffic for this long is closed (keep it above `max_wait` and
    /// `reservations.decision_timeout`).
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// Largest request body; larger ones get 413 (a 100 x 100 batch query is about 10 KB).
    pub max_body_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            http: "127.0.0.1:8080".into(),
            nats: true,
            max_wait: Duration::from_secs(5),
            tokens_file: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_body_bytes: 64 * 1024,
        }
    }
}

/// The availability change feed (`retail.v1.atp.changed.<sku>`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedConfig {
    /// Whether to publish the availability change feed.
    pub enabled: bool,
    /// Coalescing window (at least 10ms): a SKU that changed any number of times within it is
    /// announced once, with its state at the end of the window.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Messages per second the feed aims to stay under (0: no aim, every window is
    /// `interval`). When a window published more than this rate allows, the next window is
    /// longer, up to `max_interval`: under a peak a SKU is coalesced over a longer window
    /// instead of the broker and every subscriber taking a message per change.
    pub max_rate: u64,
    /// Longest window, whatever the rate (an `interval` above it wins). A subscriber's copy
    /// lags the view by about this much plus the time to send the last window's messages.
    #[serde(with = "duration")]
    pub max_interval: Duration,
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            enabled: true,
            interval: Duration::from_millis(250),
            max_rate: 4000,
            max_interval: Duration::from_secs(1),
        }
    }
}

impl FeedConfig {
    /// How long the next window lasts, given how many messages the last one published.
    pub fn next_window(&self, published: u64) -> Duration {
        if self.max_rate == 0 {
            return self.interval;
        }
        let wanted = Duration::from_secs_f64(published as f64 / self.max_rate as f64);
        wanted.clamp(self.interval, self.max_interval.max(self.interval))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReservationConfig {
    /// TTL used when a request gives none.
    #[serde(with = "duration")]
    pub default_ttl: Duration,
    /// Longest TTL accepted.
    #[serde(with = "duration")]
    pub max_ttl: Duration,
    /// How long a finished reservation id is remembered for idempotent retries.
    #[serde(with = "duration")]
    pub remember: Duration,
    /// How long the API waits for a decision before answering 503 (a retry is safe); as long
    /// again it keeps sending a request the events stream cannot store yet (a cluster
    /// electing the stream's leader).
    #[serde(with = "duration")]
    pub decision_timeout: Duration,
    /// How long past its would-be expiry a rejection is remembered for retries (granted
    /// reservations keep `remember`).
    #[serde(with = "duration")]
    pub remember_rejected: Duration,
    /// Rejections remembered per shard; beyond it the oldest is forgotten (0: no cap).
    pub max_rejected: usize,
    /// Reservation requests queued for publishing; beyond it the API answers 503 (`Retry-After`).
    pub max_queued: usize,
    /// Idempotency keys held at once (each until its reservation expired `remember` ago);
    /// beyond it a request under a new key answers 503 until expiries free some (0: no cap).
    pub max_keys: usize,
}

impl Default for ReservationConfig {
    fn default() -> Self {
        ReservationConfig {
            default_ttl: Duration::from_secs(900),
            max_ttl: Duration::from_secs(7 * 24 * 3600),
            remember: Duration::from_secs(24 * 3600),
            decision_timeout: Duration::from_secs(5),
            remember_rejected: Duration::ZERO,
            max_rejected: 100_000,
            max_queued: 10_000,
            max_keys: 1_000_000,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisionConfig {
    /// Restarts tolerated within `within` before the process exits.
    pub max_restarts: u32,
    /// The window `max_restarts` counts in.
    #[serde(with = "duration")]
    pub within: Duration,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        SupervisionConfig {
            max_restarts: 5,
            within: Duration::from_secs(60),
        }
    }
}

/// Threads. The data path (ingest, shards, stores, delivery, and the NATS reservation
/// responders) and the API (HTTP, NATS queries) run on runtimes of their own. The data path's
/// threads get a lower CPU priority and the API's a real-time one, so a query that arrives
/// while ingest is busy is scheduled first: reads never wait for writes, not even for a core.
/// A reservation waits for its shard's decision anyway, so its NATS front end runs with the
/// shards.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Worker threads of the data path: ingest, shards, stores, posting (0: one per core).
    pub data_workers: usize,
    /// Nice value of the data-path threads (0 to 19; 0 disables). Unset: 0 when the API's threads
    /// get their real-time priority (a query takes a core ahead of ingest whatever its nice
    /// value), 10 when they do not (their short slices then need ingest to yield).
    pub data_nice: Option<i32>,
    /// Worker threads of the HTTP API and the NATS queries (0: one per core). One is plenty
    /// for thousands of queries a second and never wakes a second thread to steal work.
    pub api_workers: usize,
    /// `SCHED_RR` priority of the API threads (1 to 99; 0: normal policy with short slices).
    /// Needs root, `CAP_SYS_NICE` or `RLIMIT_RTPRIO` (systemd: `LimitRTPRIO=1`); without them
    /// the API falls back to short slices and says so once in the log.
    pub api_realtime_priority: i32,
}

impl RuntimeConfig {
    /// The data path's nice value, given whether the API's threads get real-time priority.
    pub fn data_nice(&self, api_realtime: bool) -> i32 {
        self.data_nice.unwrap_or(if api_realtime { 0 } else { 10 })
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            data_workers: 0,
            data_nice: None,
            api_workers: 1,
            api_realtime_priority: 1,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// First pause of a failing endpoint (doubled per failed probe), and the floor of `Retry-After`.
    #[serde(with = "duration")]
    pub initial: Duration,
    /// Longest pause, and the most a `Retry-After` (seconds or HTTP-date) is clamped to.
    #[serde(with = "duration")]
    pub max: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ErpEndpointConfig {
    /// Name; part of posting ids and subjects, so keep it stable.
    pub name: String,
    /// How documents reach the ERP: `"http"` (one POST per document to `url`) or `"postgres"`
    /// (one transaction per document into the interface tables of the database `dsn_env`
    /// names; see docs/ERP.md).
    pub kind: ErpKind,
    /// Where documents are POSTed (kind `"http"`; not used by `"postgres"`).
    pub url: String,
    /// Document kinds this endpoint takes.
    pub documents: Vec<DocKind>,
    /// Only documents of these locations (empty: all).
    pub locations: Vec<String>,
    pub rate: RateLimit,
    /// Requests in flight at most.
    pub max_concurrent: usize,
    /// Longest wait for one request's answer (kind `"postgres"`: for connecting, and for
    /// writing one document).
    #[serde(with = "duration")]
    pub timeout: Duration,
    pub retry: RetryConfig,
    /// Environment variable holding a bearer token (optional; kind `"http"`).
    pub token_env: String,
    /// Environment variable holding the PostgreSQL connection string (kind `"postgres"`,
    /// required), as `host=db port=5432 user=retailflow dbname=erp` or a `postgresql://` URL.
    /// The connection is not encrypted: keep the database on a trusted network or a local socket.
    pub dsn_env: String,
    /// How often the import statuses the ERP's import job sets are read back (kind `"postgres"`).
    #[serde(with = "duration")]
    pub status_poll: Duration,
}

impl Default for ErpEndpointConfig {
    fn default() -> Self {
        ErpEndpointConfig {
            name: "erp-main".into(),
            kind: ErpKind::Http,
            url: "http://127.0.0.1:8090/api/v1/postings".into(),
            documents: DocKind::ALL.to_vec(),
            locations: vec![],
            rate: RateLimit {
                requests: 6000,
                window: Duration::from_secs(300),
                burst: None,
            },
            max_concurrent: 52,
            timeout: Duration::from_secs(10),
            retry: RetryConfig::default(),
            token_env: String::new(),
            dsn_env: String::new(),
            status_poll: Duration::from_secs(5),
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut config = Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })?;
        if let Ok(url) = std::env::var("NATS_URL") {
            if !url.is_empty() {
                nats_url::check(&url)
                    .map_err(|e| ConfigError::Invalid(format!("NATS_URL: {e}")))?;
                config.nats.url = url;
            }
        }
        erp_kind::check_env(&config.erp).map_err(ConfigError::Invalid)?;
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<config>".into(),
            message: e.to_string(),
        })?;
        config.check()?;
        Ok(config)
    }

    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.shards.count == 0 || self.shards.count > 256 {
            return bad(format!(
                "shards.count {} must be 1..=256",
                self.shards.count
            ));
        }
        if self.feed.enabled && self.feed.interval < Duration::from_millis(10) {
            return bad(format!(
                "feed.interval {:?} is too short (at least 10ms)",
                self.feed.interval
            ));
        }
        nats_url::check(&self.nats.url).map_err(ConfigError::Invalid)?;
        self.leader.check().map_err(ConfigError::Invalid)?;
        if self.nats.tls_cert.is_empty() != self.nats.tls_key.is_empty() {
            return bad("nats.tls_cert and nats.tls_key go together: set both or neither".into());
        }
        if self.ingest.batch == 0 || self.ingest.credit == 0 {
            return bad("ingest.batch and ingest.credit must be positive".into());
        }
        let mut names = std::collections::HashSet::new();
        for e in &self.erp {
            crate::domain::ids::check_token("erp.name", &e.name)
                .map_err(|err| ConfigError::Invalid(err.to_string()))?;
            if !names.insert(&e.name) {
                return bad(format!("erp endpoint {:?} is configured twice", e.name));
            }
            if e.rate.requests == 0 || e.rate.window.is_zero() || e.max_concurrent == 0 {
                return bad(format!(
                    "erp {:?}: rate.requests, rate.window and max_concurrent must be positive",
                    e.name
                ));
            }
            erp_kind::check(e).map_err(ConfigError::Invalid)?;
        }
        if self.streams.events_max_bytes <= 0 || self.streams.dead_letters_max_bytes <= 0 {
            return bad(
                "streams.events_max_bytes and streams.dead_letters_max_bytes must be positive: a stream without a byte limit grows until the disk is full".into(),
            );
        }
        for s in &self.streams.systems {
            crate::domain::ids::check_token("streams.systems", s)
                .map_err(|err| ConfigError::Invalid(err.to_string()))?;
            if matches!(s.as_str(), "atp" | "dlq" | "postings" | "finance") {
                return bad(format!(
                    "streams.systems may not contain {s:?}: retailflow uses retail.v1.{s} itself"
                ));
            }
        }
        sources::check(&self.streams.sources).map_err(ConfigError::Invalid)?;
        Ok(())
    }
}

/// An ERP endpoint's rate limit: a sliding window and a token bucket (see `post::ratelimit`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed in any window.
    pub requests: u32,
    /// Length of the sliding window, e.g. `"300s"`.
    #[serde(with = "duration")]
    pub window: Duration,
    /// Token bucket capacity: how many requests may go back to back. Defaults to 10% of
    /// `requests` (at least 1).
    #[serde(default)]
    pub burst: Option<u32>,
}

pub mod duration;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_path_yields_to_the_api_only_when_the_api_is_not_real_time() {
        let unset = Config::parse("").unwrap().runtime;
        assert_eq!(unset.data_nice(true), 0);
        assert_eq!(unset.data_nice(false), 10);
        let set = Config::parse("[runtime]\ndata_nice = 7\n").unwrap().runtime;
        assert_eq!(set.data_nice(true), 7);
        assert_eq!(set.data_nice(false), 7);
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_name() {
        let err = Config::parse("[ingest]\nbatchsize = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("batchsize"), "{err}");
    }

    #[test]
    fn a_full_example_parses() {
        let c = Config::parse(
            r#"
            [nats]
            url = "127.0.0.1:4333"
            [shards]
            count = 8
            [[erp]]
            name = "d365"
            url = "http://127.0.0.1:9000/api/v1/postings"
            documents = ["sales_summary", "tender_summary"]
            max_concurrent = 52
            rate = { requests = 6000, window = "300s" }
            "#,
        )
        .unwrap();
        assert_eq!(c.shards.count, 8);
        assert_eq!(c.erp[0].rate.burst(), 600);
        assert_eq!(c.erp[0].documents.len(), 2);
        assert!(
            c.streams
                .event_subjects()
                .contains(&"retail.v1.ctl.>".to_string())
        );
    }

    #[test]
    fn reserved_systems_are_refused() {
        let err = Config::parse("[streams]\nsystems = [\"pos\", \"atp\"]\n").unwrap_err();
        assert!(err.to_string().contains("atp"));
    }

    #[test]
    fn the_feed_window_stretches_with_its_rate_and_stops_at_the_maximum() {
        let f = FeedConfig::default();
        assert_eq!(f.next_window(0), Duration::from_millis(250));
        // 4,000 a second allows 1,000 in a 250 ms window.
        assert_eq!(f.next_window(1000), Duration::from_millis(250));
        assert_eq!(f.next_window(2400), Duration::from_millis(600));
        assert_eq!(f.next_window(40_000), Duration::from_secs(1));
        let off = FeedConfig {
            max_rate: 0,
            ..FeedConfig::default()
        };
        assert_eq!(off.next_window(40_000), Duration::from_millis(250));
        // A config written before max_interval existed keeps its longer interval.
        let old = Config::parse("[feed]\ninterval = \"2s\"\n").unwrap();
        assert_eq!(old.feed.next_window(40_000), Duration::from_secs(2));
    }
}
