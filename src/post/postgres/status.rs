//! Reading back what the ERP's import job did with the documents: every change of a header's
//! `import_status` to `imported` or `error` is handed on once as an [`ImportStatus`].
//!
//! A trigger numbers every change of status (`status_seq`, from a sequence); the read-back
//! takes the changes whose number it has not copied into `status_reported` yet, oldest first
//! and at most a batch at a time, hands them on, and then copies the number, only where it is
//! still the one it read. So a change is never missed because the import job's transaction
//! committed late (no clock or high-water mark decides what was seen), a change made again
//! while it was being handed on is handed on again, and one made back to `new` is passed over.
//! A crash between handing on and copying hands the same changes on again: at least once.

use super::{Fault, connect, migrate};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio_postgres::Client;

/// Changes read per query at most.
pub const BATCH: i64 = 1000;

/// What the ERP's import job made of one document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportStatus {
    pub endpoint: String,
    pub document_id: String,
    pub status: Import,
    /// When the status changed (set by the trigger, in the database's clock).
    pub changed_at: SystemTime,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Import {
    Imported,
    /// The import job's message (at most 2,000 characters of it).
    Error(String),
}

const UNREPORTED: &str = "SELECT document_id, import_status, left(import_message, 2000), \
     (extract(epoch FROM status_changed_at) * 1000000)::int8, status_seq \
     FROM rf_document \
     WHERE status_seq IS DISTINCT FROM status_reported AND endpoint = $1 \
     ORDER BY status_seq LIMIT $2";

const REPORTED: &str = "UPDATE rf_document d SET status_reported = s.seq \
     FROM unnest($1::text[], $2::int8[]) AS s(id, seq) \
     WHERE d.document_id = s.id AND d.status_seq = s.seq";

/// Hands on the changes not reported yet (at most `limit`) and marks them reported. Returns
/// how many rows it read (a full `limit` means there may be more), or `None` when `out` is
/// closed.
pub async fn poll_once(
    client: &Client,
    endpoint: &str,
    limit: i64,
    out: &mpsc::Sender<ImportStatus>,
) -> Result<Option<usize>, Fault> {
    let rows = client
        .query(UNREPORTED, &[&endpoint, &limit])
        .await
        .map_err(super::write::fault)?;
    let (mut ids, mut seqs) = (
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
    );
    for row in &rows {
        let read = || -> Result<_, tokio_postgres::Error> {
            Ok((
                row.try_get::<_, String>(0)?,
                row.try_get::<_, String>(1)?,
                row.try_get::<_, Option<String>>(2)?,
                row.try_get::<_, Option<i64>>(3)?,
                row.try_get::<_, i64>(4)?,
            ))
        };
        let (id, status, message, micros, seq) = read().map_err(super::write::fault)?;
        let status = match status.as_str() {
            "imported" => Some(Import::Imported),
            "error" => Some(Import::Error(message.unwrap_or_default())),
            // Back to `new` (to be imported again): nothing to report yet.
            _ => None,
        };
        if let Some(status) = status {
            let changed_at = micros
                .and_then(|m| u64::try_from(m).ok())
                .and_then(|m| SystemTime::UNIX_EPOCH.checked_add(Duration::from_micros(m)))
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let change = ImportStatus {
                endpoint: endpoint.to_string(),
                document_id: id.clone(),
                status,
                changed_at,
            };
            if out.send(change).await.is_err() {
                return Ok(None);
            }
        }
        ids.push(id);
        seqs.push(seq);
    }
    if !ids.is_empty() {
        client
            .execute(REPORTED, &[&ids, &seqs])
            .await
            .map_err(super::write::fault)?;
    }
    Ok(Some(rows.len()))
}

/// The read-back task of one postgres endpoint; stops when dropped or when its receiver is.
pub struct StatusPoller {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StatusPoller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StatusPoller {
    /// Polls every `every` (at once again after a full batch), connecting (and migrating) as
    /// needed; a failed poll is logged and tried again at the next interval, on a new
    /// connection.
    pub fn spawn(
        endpoint: String,
        config: tokio_postgres::Config,
        every: Duration,
        out: mpsc::Sender<ImportStatus>,
    ) -> StatusPoller {
        let task = tokio::spawn(async move {
            let mut client: Option<Client> = None;
            let mut failing = false;
            loop {
                let polled = match client.take() {
                    Some(c) => Ok(c),
                    None => match connect(&config, &endpoint).await {
                        Ok(c) => migrate(c).await.map_err(Fault::Unavailable),
                        Err(e) => Err(e),
                    },
                };
                let result = match polled {
                    Ok(c) => {
                        let r = poll_once(&c, &endpoint, BATCH, &out).await;
                        if r.is_ok() {
                            client = Some(c);
                        }
                        r
                    }
                    Err(e) => Err(e),
                };
                let full = match result {
                    Ok(None) => return,
                    Ok(Some(n)) => {
                        if failing {
                            tracing::info!(%endpoint, "import status read-back works again");
                            failing = false;
                        }
                        n as i64 >= BATCH
                    }
                    Err(fault) => {
                        if !failing {
                            tracing::warn!(%endpoint, ?fault, "import status read-back failed; trying again");
                            failing = true;
                        }
                        false
                    }
                };
                if !full {
                    tokio::time::sleep(every).await;
                }
            }
        });
        StatusPoller { task }
    }
}
