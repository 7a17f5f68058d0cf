//! PostgreSQL interface tables as an ERP endpoint: each document is written in one transaction
//! (header and lines) into tables an ERP import job reads, and the statuses that job sets are
//! read back ([`status`]).
//!
//! The tables come from the migrations in `migrations/postgres/`, applied on the first
//! connection of every process under an advisory lock, so replicas starting at once migrate
//! one after the other and the later ones find nothing to do. A document whose header already
//! exists is not written again ([`write`]): a retry, a redelivery after a crash or two
//! replicas overlapping never duplicate a row.
//!
//! Connections are kept in a small idle list of at most `max_concurrent` clients, since at
//! most that many deliveries run at once; a client that failed in any way is dropped, never
//! reused.

pub mod status;
mod write;

use super::delivery::Outcome;
use crate::config::ErpEndpointConfig;
use retailflow_core::aggregate::posting::PostingDoc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio_postgres::{Client, NoTls};

pub use write::REFUSED_STATUS;

mod embedded {
    refinery::embed_migrations!("migrations/postgres");
}

/// Key of the session advisory lock held while migrating ("rf-migr").
const MIGRATION_LOCK: i64 = 0x0072_662d_6d69_6772;
/// refinery's own history table, named so it cannot meet an ERP's use of refinery.
const HISTORY_TABLE: &str = "rf_schema_history";

/// A delivery that did not happen, and whose fault it is.
#[derive(Debug)]
pub enum Fault {
    /// The database cannot take anything now (down, unreachable, a timeout, a missing table,
    /// a permission): the endpoint pauses.
    Unavailable(String),
    /// PostgreSQL refuses this document for what it holds (SQLSTATE class 22 or 23).
    Refused(String),
}

pub struct PgSink {
    endpoint: String,
    config: tokio_postgres::Config,
    timeout: Duration,
    idle: Mutex<Vec<Client>>,
    max_idle: usize,
    migrated: AtomicBool,
}

impl PgSink {
    /// The sink of a `kind = "postgres"` endpoint, its connection string read from `dsn_env`.
    pub fn from_env(cfg: &ErpEndpointConfig) -> Result<PgSink, String> {
        let dsn = std::env::var(&cfg.dsn_env)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| {
                format!(
                    "erp {:?}: the environment variable {} (dsn_env) is not set",
                    cfg.name, cfg.dsn_env
                )
            })?;
        PgSink::new(&cfg.name, &dsn, cfg.timeout, cfg.max_concurrent)
    }

    /// `timeout` bounds connecting and each document's write.
    pub fn new(
        endpoint: &str,
        dsn: &str,
        timeout: Duration,
        max_idle: usize,
    ) -> Result<PgSink, String> {
        let config = connection_config(dsn, timeout)
            .map_err(|e| format!("erp {endpoint:?}: the connection string in dsn_env: {e}"))?;
        Ok(PgSink {
            endpoint: endpoint.to_string(),
            config,
            timeout,
            idle: Mutex::new(Vec::new()),
            max_idle: max_idle.max(1),
            migrated: AtomicBool::new(false),
        })
    }

    /// One attempt at writing `doc`; an existing header is a replay.
    pub async fn deliver(&self, doc: &PostingDoc) -> Outcome {
        let prepared = match write::Prepared::of(doc) {
            Ok(p) => p,
            Err(message) => return refused(message),
        };
        let attempt = async {
            let mut client = self.client().await?;
            let written = write::write(&mut client, doc, &prepared).await;
            // A refused document leaves the connection sound; anything else may not.
            if !matches!(written, Err(Fault::Unavailable(_))) {
                self.give_back(client);
            }
            written
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(inserted)) => Outcome::Accepted { replay: !inserted },
            Ok(Err(Fault::Refused(message))) => refused(message),
            Ok(Err(Fault::Unavailable(reason))) => Outcome::Unavailable {
                status: None,
                reason,
            },
            Err(_) => Outcome::Unavailable {
                status: None,
                reason: format!("PostgreSQL did not answer within {:?}", self.timeout),
            },
        }
    }

    /// An idle client, or a new connection (migrated first, once per sink).
    async fn client(&self) -> Result<Client, Fault> {
        loop {
            let next = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            match next {
                Some(c) if !c.is_closed() => return Ok(c),
                Some(_) => continue,
                None => break,
            }
        }
        let client = connect(&self.config, &self.endpoint).await?;
        if self.migrated.load(Ordering::Acquire) {
            return Ok(client);
        }
        let client = migrate(client).await.map_err(Fault::Unavailable)?;
        self.migrated.store(true, Ordering::Release);
        Ok(client)
    }

    /// The connection settings, for the status read-back.
    pub fn connection(&self) -> &tokio_postgres::Config {
        &self.config
    }

    fn give_back(&self, client: Client) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.max_idle && !client.is_closed() {
            idle.push(client);
        }
    }
}

fn refused(message: String) -> Outcome {
    Outcome::Rejected {
        status: REFUSED_STATUS,
        message,
    }
}

/// Parses a connection string; `timeout` bounds connecting unless the string sets its own.
pub fn connection_config(dsn: &str, timeout: Duration) -> Result<tokio_postgres::Config, String> {
    let mut config: tokio_postgres::Config = dsn.parse().map_err(|e| format!("{e}"))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(timeout);
    }
    if config.get_application_name().is_none() {
        config.application_name("retailflow");
    }
    Ok(config)
}

/// Opens a connection; its I/O runs on a task of its own until the client is dropped.
pub(crate) async fn connect(
    config: &tokio_postgres::Config,
    endpoint: &str,
) -> Result<Client, Fault> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| Fault::Unavailable(format!("cannot connect to PostgreSQL: {e}")))?;
    let endpoint = endpoint.to_string();
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, %endpoint, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// Applies the embedded migrations under the advisory lock. Runs on a task of its own: the
/// migration library reads its history table with `unwrap`, and a history someone edited by
/// hand must pause the endpoint, not take a delivery task down.
pub async fn migrate(client: Client) -> Result<Client, String> {
    let run = tokio::spawn(async move {
        let mut client = client;
        let result = migrate_locked(&mut client).await;
        (client, result)
    });
    match run.await {
        Ok((client, Ok(()))) => Ok(client),
        Ok((_, Err(e))) => Err(e),
        Err(e) => Err(format!("migrating the interface tables failed: {e}")),
    }
}

async fn migrate_locked(client: &mut Client) -> Result<(), String> {
    let locking = |e: tokio_postgres::Error| format!("migration lock: {e}");
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(locking)?;
    let report = embedded::migrations::runner()
        .set_migration_table_name(HISTORY_TABLE)
        .run_async(client)
        .await;
    // Closing the session would release the lock too; unlocking keeps the client usable.
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(locking)?;
    match report {
        Ok(report) => {
            for m in report.applied_migrations() {
                tracing::info!(migration = %m, "PostgreSQL interface tables migrated");
            }
            Ok(())
        }
        Err(e) => Err(format!("migrating the interface tables: {e}")),
    }
}
