//! NATS: connecting (with a server version check), the streams retailflow needs, and a
//! private nats-server for the demo, scenarios and tests.

pub use nats_pull as pull;
pub mod lease;
pub mod reading;
#[cfg(feature = "lab")]
pub mod server;
pub mod streams;

use crate::config::NatsConfig;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect { url: String, message: String },
    #[error(
        "nats-server at {url} is version {found}; retailflow needs {minimum} or newer (JetStream KV and consumer features). Install a current nats-server (scripts/install-nats-server.sh) or point NATS_URL at one"
    )]
    TooOld {
        url: String,
        found: String,
        minimum: String,
    },
    #[error(
        "stream {stream} exists with a different configuration: {differences}. Fix the stream or the configuration; retailflow will not change an existing stream"
    )]
    StreamConflict { stream: String, differences: String },
    #[error("JetStream: {0}")]
    JetStream(String),
}

impl BusError {
    pub fn js(e: impl std::fmt::Display) -> BusError {
        BusError::JetStream(e.to_string())
    }
}

/// Parses `"2.10.4"` or `"v2.12.0-beta"` into (major, minor, patch).
pub fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let v = v.trim().trim_start_matches('v');
    let core = v.split(['-', '+']).next()?;
    let mut it = core.split('.').map(|p| p.parse::<u32>().ok());
    Some((
        it.next()??,
        it.next().flatten().unwrap_or(0),
        it.next().flatten().unwrap_or(0),
    ))
}

/// Whether `found` is at least `minimum`.
pub fn version_at_least(found: &str, minimum: &str) -> bool {
    match (parse_version(found), parse_version(minimum)) {
        (Some(f), Some(m)) => f >= m,
        _ => false,
    }
}

/// What the environment holds for NATS authentication (`nats.creds_env`, `nats.token_env`,
/// `nats.nkey_env`, `nats.user_env`/`nats.password_env`); an empty variable counts as unset.
/// Secrets come only from the environment, never from the configuration file.
pub struct Secrets {
    pub creds_file: Option<String>,
    pub token: Option<String>,
    pub nkey_seed: Option<String>,
    /// User and password, when both are set.
    pub user_password: Option<(String, String)>,
}

impl std::fmt::Debug for Secrets {
    // Never prints a secret, only which kinds are present.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("creds_file", &self.creds_file)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("nkey_seed", &self.nkey_seed.as_ref().map(|_| "***"))
            .field(
                "user",
                &self.user_password.as_ref().map(|(user, _)| user.as_str()),
            )
            .finish()
    }
}

pub fn secrets(cfg: &NatsConfig) -> Secrets {
    let var = |name: &str| {
        if name.is_empty() {
            return None;
        }
        std::env::var(name).ok().filter(|v| !v.is_empty())
    };
    Secrets {
        creds_file: var(&cfg.creds_env),
        token: var(&cfg.token_env),
        nkey_seed: var(&cfg.nkey_env),
        user_password: var(&cfg.user_env).zip(var(&cfg.password_env)),
    }
}

pub use nats_pull::{redact, servers};

/// The connect options for `cfg`: credentials from the environment, TLS from the file.
pub async fn options(cfg: &NatsConfig, name: &str) -> Result<async_nats::ConnectOptions, BusError> {
    let failed = |message: String| BusError::Connect {
        url: redact(&cfg.url),
        message,
    };
    let mut opts = async_nats::ConnectOptions::new()
        .name(name)
        .max_reconnects(None)
        .connection_timeout(CONNECT_TIMEOUT);
    let secrets = secrets(cfg);
    if let Some(path) = secrets.creds_file {
        opts = opts
            .credentials_file(&path)
            .await
            .map_err(|e| failed(format!("credentials file {path}: {e}")))?;
    }
    if let Some(token) = secrets.token {
        opts = opts.token(token);
    }
    if let Some(seed) = secrets.nkey_seed {
        opts = opts.nkey(seed);
    }
    if let Some((user, password)) = secrets.user_password {
        opts = opts.user_and_password(user, password);
    }
    if !cfg.tls_ca.is_empty() {
        opts = opts.add_root_certificates(cfg.tls_ca.clone().into());
    }
    if !cfg.tls_cert.is_empty() {
        opts = opts.add_client_certificate(cfg.tls_cert.clone().into(), cfg.tls_key.clone().into());
    }
    if cfg.tls() {
        opts = opts.require_tls(true);
    }
    Ok(opts)
}

/// Connects to the first server of `nats.url` that answers and refuses servers older than the
/// configured minimum.
///
/// `nats.url` may list several servers. async-nats tries them all in one pass (shuffled, as
/// it does on every reconnect), so a start succeeds while some are down; once connected it
/// also knows the cluster's other members from the server's `INFO`, and reconnects to any
/// live one.
pub async fn connect(cfg: &NatsConfig, name: &str) -> Result<async_nats::Client, BusError> {
    let url = redact(&cfg.url);
    let list = servers(&cfg.url);
    if list.is_empty() {
        return Err(BusError::Connect {
            url,
            message: "nats.url names no server".into(),
        });
    }
    // Each server may take up to the connection timeout (5 s) before the next is tried.
    let limit = CONNECT_TIMEOUT * u32::try_from(list.len()).unwrap_or(u32::MAX).max(1)
        + std::time::Duration::from_secs(5);
    let several = list.len() > 1;
    let connect = options(cfg, name).await?.connect(list);
    let client = tokio::time::timeout(limit, connect)
        .await
        .map_err(|_| BusError::Connect {
            url: url.clone(),
            message: format!("no answer within {limit:?}"),
        })?
        .map_err(|e| BusError::Connect {
            url: url.clone(),
            message: if several {
                format!("none of the servers answered; the last error: {e}")
            } else {
                e.to_string()
            },
        })?;
    check_version(&client, &url, &cfg.min_server_version)?;
    Ok(client)
}

/// How long one server may take to answer a connection attempt.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub fn check_version(
    client: &async_nats::Client,
    url: &str,
    minimum: &str,
) -> Result<(), BusError> {
    let found = client.server_info().version;
    if version_at_least(&found, minimum) {
        Ok(())
    } else {
        Err(BusError::TooOld {
            url: url.to_string(),
            found,
            minimum: minimum.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(version_at_least("2.10.0", "2.10.0"));
        assert!(version_at_least("2.14.6", "2.10.0"));
        assert!(version_at_least("v2.10.12-RC.1", "2.10.0"));
        assert!(!version_at_least("2.9.10", "2.10.0"));
        assert!(!version_at_least("garbage", "2.10.0"));
    }

    #[test]
    fn urls_in_errors_never_show_a_password_or_token() {
        assert_eq!(
            redact("nats://user:pass@host:4222"),
            "nats://user:***@host:4222"
        );
        assert_eq!(redact("s3cret@h4:4333"), "***@h4:4333");
        assert_eq!(
            redact("tls://a:b@h1,nats://h2:4222,u:p:q@h3"),
            "tls://a:***@h1,nats://h2:4222,u:***@h3"
        );
        assert_eq!(redact("127.0.0.1:4222"), "127.0.0.1:4222");
        let error = BusError::Connect {
            url: redact("nats://ingest:hunter2@127.0.0.1:1"),
            message: "refused".into(),
        };
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[tokio::test]
    async fn a_connect_error_does_not_print_the_password_of_the_url() {
        let cfg = NatsConfig {
            // Nothing listens on port 1.
            url: "nats://ingest:hunter2@127.0.0.1:1".into(),
            ..NatsConfig::default()
        };
        let error = connect(&cfg, "test").await.unwrap_err().to_string();
        assert!(!error.contains("hunter2"), "{error}");
        assert!(error.contains("ingest:***@127.0.0.1:1"), "{error}");
    }

    #[tokio::test]
    async fn when_no_server_of_the_list_answers_the_error_names_the_list() {
        let cfg = NatsConfig {
            // Nothing listens on ports 1 and 2.
            url: "nats://ingest:hunter2@127.0.0.1:1, 127.0.0.1:2".into(),
            ..NatsConfig::default()
        };
        let started = std::time::Instant::now();
        let error = connect(&cfg, "test").await.unwrap_err().to_string();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "one pass"
        );
        assert!(!error.contains("hunter2"), "{error}");
        assert!(
            error.contains("ingest:***@127.0.0.1:1, 127.0.0.1:2"),
            "{error}"
        );
        assert!(error.contains("none of the servers answered"), "{error}");
        let none = NatsConfig {
            url: " , ".into(),
            ..NatsConfig::default()
        };
        let error = connect(&none, "test").await.unwrap_err().to_string();
        assert!(error.contains("names no server"), "{error}");
    }
}
