//! The audit stream: one record per re-drive (which letter, where it went, who asked, when),
//! on `retail.v1.audit.redrive.<dead-letter sequence>`. A letter's latest record is found by
//! its subject, which is how a second re-drive of the same letter is refused. Every replica
//! reads the stream into its reconciliation books, where a store day lists its re-drives.

use crate::config::{FinanceConfig, Storage};
use crate::domain::subject;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use serde::{Deserialize, Serialize};

/// One re-drive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redrive {
    /// The letter's sequence in the dead-letter stream.
    pub letter: u64,
    pub stage: String,
    pub reason: String,
    /// The event id or document id it carried, when it decoded.
    #[serde(default)]
    pub id: Option<String>,
    /// The original's sequence in the events stream (letters of events).
    #[serde(default)]
    pub stream_seq: Option<u64>,
    #[serde(default)]
    pub location: Option<String>,
    /// The business day it belongs to (`YYYY-MM-DD`), for a sale, return, Z report or
    /// document of one.
    #[serde(default)]
    pub business_day: Option<String>,
    /// Where it was published again, and the sequence it got there.
    pub subject: String,
    pub republished_seq: u64,
    /// JetStream had it already (the same re-drive within its duplicate window).
    #[serde(default)]
    pub duplicate: bool,
    /// Who asked: the CLI's `--by` (default: the user), or the API caller's `by`.
    pub by: String,
    /// Unix milliseconds.
    pub at_ms: i64,
}

/// The audit stream's configuration.
pub fn desired(cfg: &FinanceConfig, storage: Storage, replicas: usize) -> stream::Config {
    stream::Config {
        name: cfg.audit_stream.clone(),
        description: Some("retailflow: audit records (dead-letter re-drives)".into()),
        subjects: vec![format!("{}.>", subject::AUDIT_REDRIVE)],
        retention: stream::RetentionPolicy::Limits,
        max_age: cfg.max_age,
        storage: crate::bus::streams::storage(storage),
        num_replicas: replicas,
        ..Default::default()
    }
}

fn subject_of(letter: u64) -> String {
    format!("{}.{letter}", subject::AUDIT_REDRIVE)
}

/// Writes one record and waits until JetStream stored it.
pub async fn record(js: &jetstream::Context, r: &Redrive) -> Result<(), String> {
    let payload = serde_json::to_vec(r).map_err(|e| e.to_string())?;
    let mut headers = HeaderMap::new();
    headers.insert(
        crate::domain::codec::CONTENT_TYPE,
        crate::domain::codec::JSON,
    );
    js.publish_with_headers(subject_of(r.letter), headers, payload.into())
        .await
        .map_err(|e| e.to_string())?
        .await
        .map(|_| ())
        .map_err(|e| format!("audit record of re-drive {}: {e}", r.letter))
}

/// The latest re-drive of `letter`, if it was ever re-driven.
pub async fn find(
    js: &jetstream::Context,
    stream_name: &str,
    letter: u64,
) -> Result<Option<Redrive>, String> {
    let s = js
        .get_stream_no_info(stream_name)
        .await
        .map_err(|e| format!("audit stream {stream_name}: {e}"))?;
    match s.get_last_raw_message_by_subject(&subject_of(letter)).await {
        Ok(m) => serde_json::from_slice(&m.payload)
            .map(Some)
            .map_err(|e| format!("audit record of letter {letter}: {e}")),
        Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
            Ok(None)
        }
        Err(e) => Err(format!("audit stream {stream_name}: {e}")),
    }
}
