//! A JetStream pull subscription on a connection of its own, read in place.
//!
//! Ingest reads one stream, as fast as the server can send it. Through async-nats every
//! message costs a trip through the client's connection task: two subjects copied out, a
//! header map built, the message queued to the subscription and woken, then a JetStream
//! wrapper with a cloned context. That was a fifth of the data threads' CPU in a black-friday
//! drain. Here one task owns a TCP connection, parses the protocol from its read buffer, and
//! hands each message to the caller as slices of that buffer: the caller decodes the event
//! straight from the bytes the server sent, and nothing is allocated per message.
//!
//! What it speaks: `INFO`; `CONNECT` with no credentials, a token (`nats.token_env`) or a user
//! and password (`nats.user_env`/`nats.password_env`), as the pipeline's other connections;
//! `PING`/`PONG`; `SUB`; `PUB` of pull requests to `$JS.API.CONSUMER.MSG.NEXT`; `MSG`, `HMSG` and the JetStream status messages
//! (100 idle heartbeat, 404, 408, 409, 503). It does not speak TLS, nkeys or credentials files:
//! [`Unsupported`](PullError::Unsupported) says so, and the caller reads through async-nats
//! instead. It does not reconnect: an error ends the subscription and the caller opens a new
//! consumer after the last sequence it received.
//!
//! In a cluster it learns the members' client addresses from every `INFO` (`info`, bounded
//! and checked), and [`Seeds`] turns the configured and the learned addresses into the order
//! for the next connection, starting after the one that just ended. A server in lame duck
//! mode ends the subscription with [`PullError::LameDuck`] before it closes the connection.
//!
//! Pull requests keep between one and two batches asked for: after the caller takes a batch,
//! another is requested, so the server always has a request to fill while the caller decodes.

mod conn;
mod info;
mod proto;
mod seeds;
#[cfg(test)]
mod tests;

pub use conn::*;
pub use info::*;
pub use proto::*;
pub use seeds::*;

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The connection needs something this reader does not speak (TLS, a credentials file).
    #[error("{0}")]
    Unsupported(String),
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("NATS connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("NATS protocol: {0}")]
    Protocol(String),
    #[error("server error: {0}")]
    Server(String),
    /// The consumer is gone or refuses our requests; open a new one.
    #[error("consumer: {0}")]
    Consumer(String),
    #[error("nothing from the server for {0:?}, not even a heartbeat")]
    Stalled(Duration),
    #[error("the server closed the connection")]
    Closed,
    /// The server is shutting down gracefully (lame duck mode); reconnect elsewhere.
    #[error("the server at {0} is shutting down (lame duck mode)")]
    LameDuck(String),
}

/// One server address from `nats.url`: a comma-separated list, each
/// `[scheme://][userinfo@]host[:port]`. async-nats 0.51 ignores credentials written into the
/// URL, and so does this reader: they come from `nats.token_env` for every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub host_port: String,
    pub tls: bool,
}

/// The entries of a comma-separated server list, trimmed, empty ones left out: what every
/// connection is given (async-nats takes them as a `Vec<&str>`; one pass of its connect tries
/// each in turn).
pub fn servers(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

pub fn addresses(url: &str) -> Vec<Address> {
    servers(url)
        .into_iter()
        .map(|s| {
            let (scheme, rest) = match s.split_once("://") {
                Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
                None => (String::from("nats"), s),
            };
            let rest = rest.trim_end_matches('/');
            let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            let has_port = match host.rsplit_once(':') {
                Some((_, port)) => !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()),
                None => false,
            };
            let host_port = if has_port {
                host.to_string()
            } else {
                format!("{host}:4222")
            };
            Address {
                host_port,
                tls: scheme == "tls",
            }
        })
        .collect()
}
/// `url` with the password (or a lone token) of every `userinfo@` replaced by `***`, for logs
/// and errors: `nats://user:pass@host` becomes `nats://user:***@host`.
pub fn redact(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let (scheme, rest) = match one.split_once("://") {
                Some((scheme, rest)) => (Some(scheme), rest),
                None => (None, one),
            };
            let shown = match rest.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{user}:***@{host}"),
                    None => format!("***@{host}"),
                },
                None => rest.to_string(),
            };
            match scheme {
                Some(scheme) => format!("{scheme}://{shown}"),
                None => shown,
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}
