//! NATS: connecting (with a server version check), the streams retailflow needs, and a
//! private nats-server for the demo, scenarios and tests.

pub mod pull;
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

/// What the environment holds for NATS authentication (`nats.creds_env`, `nats.token_env`);
/// an empty variable counts as unset.
pub struct Secrets {
    pub creds_file: Option<String>,
    pub token: Option<String>,
}

pub fn secrets(cfg: &NatsConfig) -> Secrets {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    Secrets {
        creds_file: var(&cfg.creds_env),
        token: var(&cfg.token_env),
    }
}

/// Connects and refuses servers older than the configured minimum.
pub async fn connect(cfg: &NatsConfig, name: &str) -> Result<async_nats::Client, BusError> {
    let url = cfg.url.clone();
    let mut opts = async_nats::ConnectOptions::new()
        .name(name)
        .max_reconnects(None)
        .connection_timeout(std::time::Duration::from_secs(5));
    let secrets = secrets(cfg);
    if let Some(path) = secrets.creds_file {
        opts = opts
            .credentials_file(&path)
            .await
            .map_err(|e| BusError::Connect {
                url: url.clone(),
                message: format!("credentials file {path}: {e}"),
            })?;
    }
    if let Some(token) = secrets.token {
        opts = opts.token(token);
    }
    let connect = opts.connect(url.as_str());
    let client = tokio::time::timeout(std::time::Duration::from_secs(10), connect)
        .await
        .map_err(|_| BusError::Connect {
            url: url.clone(),
            message: "no answer within 10 s".into(),
        })?
        .map_err(|e| BusError::Connect {
            url: url.clone(),
            message: e.to_string(),
        })?;
    check_version(&client, &url, &cfg.min_server_version)?;
    Ok(client)
}

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
}
