//! Where an endpoint's documents go: an HTTP API or PostgreSQL interface tables. Both answer
//! with the same [`Outcome`], so the endpoint actor paces, pauses and dead-letters them alike.

use super::delivery::{self, Outcome};
use super::postgres::PgSink;
use crate::config::{ErpEndpointConfig, ErpKind, RetryConfig};
use retailflow_core::aggregate::posting::PostingDoc;
use std::time::Duration;

pub enum Sink {
    Http(HttpSink),
    // Boxed: a connection configuration is several times the size of an HTTP client handle.
    Postgres(Box<PgSink>),
}

/// A POST per document (see [`delivery`]).
pub struct HttpSink {
    client: reqwest::Client,
    url: String,
    token: Option<String>,
    timeout: Duration,
    retry: RetryConfig,
}

impl Sink {
    /// Reads the endpoint's secret from the environment; connects nothing yet, so a sink is
    /// made while its ERP is down (the first delivery finds out and the endpoint pauses).
    pub fn new(cfg: &ErpEndpointConfig) -> Result<Sink, String> {
        match cfg.kind {
            ErpKind::Http => {
                let token = if cfg.token_env.is_empty() {
                    None
                } else {
                    std::env::var(&cfg.token_env).ok().filter(|t| !t.is_empty())
                };
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(cfg.max_concurrent)
                    .build()
                    .map_err(|e| format!("HTTP client: {e}"))?;
                Ok(Sink::Http(HttpSink {
                    client,
                    url: cfg.url.clone(),
                    token,
                    timeout: cfg.timeout,
                    retry: cfg.retry.clone(),
                }))
            }
            ErpKind::Postgres => PgSink::from_env(cfg).map(|p| Sink::Postgres(Box::new(p))),
        }
    }

    /// One attempt at delivering `doc`.
    pub async fn deliver(&self, doc: &PostingDoc) -> Outcome {
        match self {
            Sink::Http(h) => {
                delivery::deliver(
                    &h.client,
                    &h.url,
                    h.token.as_deref(),
                    doc,
                    h.timeout,
                    &h.retry,
                )
                .await
            }
            Sink::Postgres(p) => p.deliver(doc).await,
        }
    }
}
