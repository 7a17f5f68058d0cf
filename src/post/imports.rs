//! The ERP's import verdicts on documents written to interface tables, turned into answers in
//! the finance stream: `imported` is accepted, `error` is rejected with the import job's
//! message. The staged answer the endpoint recorded when it wrote the document gives the
//! document's store, day and money.

use super::postgres::status::{Import, ImportStatus};
use crate::finance::books::{Books, DocStatus};
use crate::finance::journal::record;
use async_nats::jetstream;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a verdict waits for its document's staged answer to be read from the finance
/// stream (it is written before the document leaves the outbox, so this is only the reader's
/// lag), and how many times a record is tried.
const FIND_FOR: Duration = Duration::from_secs(30);
const RECORD_TRIES: u32 = 10;

/// Records every verdict that arrives on `verdicts` until the channel closes.
pub async fn run(
    mut verdicts: mpsc::Receiver<ImportStatus>,
    books: Arc<Books>,
    js: jetstream::Context,
) {
    while let Some(v) = verdicts.recv().await {
        if crate::finance::books::parse_id(&v.document_id).is_none() {
            // Inventory documents belong to no store day: reconciliation does not follow them.
            continue;
        }
        let started = tokio::time::Instant::now();
        let staged = loop {
            if let Some(a) = books.staged(&v.document_id) {
                break Some(a);
            }
            if started.elapsed() >= FIND_FOR {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let Some(mut a) = staged else {
            tracing::warn!(doc = %v.document_id, endpoint = %v.endpoint, "an import verdict for a document reconciliation does not hold as staged; not recorded");
            continue;
        };
        (a.status, a.message) = match v.status {
            Import::Imported => (DocStatus::Accepted, None),
            Import::Error(m) => (DocStatus::Rejected, Some(format!("ERP import: {m}"))),
        };
        a.at_ms = v
            .changed_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut tries = 0;
        while let Err(error) = record(&js, &a).await {
            tries += 1;
            if tries >= RECORD_TRIES {
                tracing::warn!(%error, doc = %a.document, "an import verdict could not be recorded; given up");
                break;
            }
            tokio::time::sleep(Duration::from_millis(200 << tries.min(5))).await;
        }
    }
}
