//! The finance stream: one record per ERP answer about a document (accepted or rejected, with
//! the ERP's reason and the document's money), on `retail.v1.finance.outcome.<endpoint>`.
//!
//! The endpoint that delivered the document writes the record before it lets the document go
//! from the outbox, so an answer is never lost between the two; a record written twice (a
//! crash between the two steps, a re-delivery) carries the same `Nats-Msg-Id` and is counted
//! once by the reader anyway. Every replica reads the stream in order into its [`Books`].

use super::books::{Answer, Books, DocStatus};
use crate::config::{FinanceConfig, Storage};
use crate::domain::subject;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use retailflow_core::aggregate::day::Money;
use retailflow_core::aggregate::posting::PostingDoc;
use std::sync::Arc;
use std::time::Duration;

/// The finance stream's configuration.
pub fn desired(cfg: &FinanceConfig, storage: Storage, replicas: usize) -> stream::Config {
    stream::Config {
        name: cfg.stream.clone(),
        description: Some("retailflow: the ERP's answer per posting document".into()),
        subjects: vec![format!("{}.>", subject::FINANCE_OUTCOME)],
        retention: stream::RetentionPolicy::Limits,
        max_age: cfg.max_age,
        storage: crate::bus::streams::storage(storage),
        num_replicas: replicas,
        duplicate_window: Duration::from_secs(600),
        ..Default::default()
    }
}

/// Creates a finance record stream (the ERP's answers, the audit) when it is missing.
pub async fn ensure(js: &jetstream::Context, want: stream::Config) -> Result<(), String> {
    js.get_or_create_stream(want.clone())
        .await
        .map(|_| ())
        .map_err(|e| format!("stream {}: {e}", want.name))
}

/// The record of the ERP's answer about `doc`; `None` for documents of no business day
/// (inventory movements), which reconciliation does not follow.
pub fn answer_of(doc: &PostingDoc, status: DocStatus, message: Option<String>) -> Option<Answer> {
    let (Some(day), Some(cur)) = (doc.business_day, doc.currency) else {
        return None;
    };
    let mut money = Money::default();
    money.add_body(&doc.body);
    Some(Answer {
        document: doc.id.clone(),
        endpoint: doc.endpoint.clone(),
        location: doc.location.clone(),
        business_day: day,
        currency: cur,
        kind: doc.body.kind(),
        barrier_seq: doc.barrier_seq,
        lineage: doc.lineage,
        final_doc: doc.final_doc,
        corrects: doc.corrects,
        status,
        message,
        money,
        at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
    })
}

/// Writes one answer and waits until JetStream stored it.
pub async fn record(js: &jetstream::Context, a: &Answer) -> Result<(), String> {
    let payload = serde_json::to_vec(a).map_err(|e| e.to_string())?;
    let mut headers = HeaderMap::new();
    let status = a.status.as_str();
    headers.insert("Nats-Msg-Id", format!("{status}/{}", a.document).as_str());
    headers.insert(
        crate::domain::codec::CONTENT_TYPE,
        crate::domain::codec::JSON,
    );
    let subj = format!("{}.{}", subject::FINANCE_OUTCOME, a.endpoint);
    js.publish_with_headers(subj, headers, payload.into())
        .await
        .map_err(|e| e.to_string())?
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Which record stream a follower reads into the books.
#[derive(Clone, Copy, Debug)]
pub enum Journal {
    /// The finance stream: the ERP's answers.
    Answers,
    /// The audit stream: dead-letter re-drives.
    Audit,
}

impl Journal {
    fn position(self, books: &Books) -> u64 {
        match self {
            Journal::Answers => books.journal_seq(),
            Journal::Audit => books.audit_seq(),
        }
    }

    fn take(self, books: &Books, seq: u64, payload: &[u8]) -> Result<(), serde_json::Error> {
        match self {
            Journal::Answers => books.answer(seq, serde_json::from_slice(payload)?),
            Journal::Audit => books.redrive(seq, serde_json::from_slice(payload)?),
        }
        Ok(())
    }
}

/// Reads a record stream into `books` from where they stand, for ever; reconnects after a
/// failure with a pause. A record that does not decode is skipped and counted.
pub async fn follow(
    js: jetstream::Context,
    stream_name: String,
    journal: Journal,
    books: Arc<Books>,
    metrics: Arc<crate::telemetry::Metrics>,
) {
    loop {
        if let Err(error) = read(&js, &stream_name, journal, &books, &metrics).await {
            tracing::warn!(%error, stream = %stream_name, "reading a finance record stream; trying again");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn read(
    js: &jetstream::Context,
    name: &str,
    journal: Journal,
    books: &Books,
    metrics: &crate::telemetry::Metrics,
) -> Result<(), String> {
    let stream = js.get_stream(name).await.map_err(|e| e.to_string())?;
    let deliver_policy = match journal.position(books) {
        0 => consumer::DeliverPolicy::All,
        seq => consumer::DeliverPolicy::ByStartSequence {
            start_sequence: seq + 1,
        },
    };
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| e.to_string())?;
        let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
        if let Err(error) = journal.take(books, seq, &m.payload) {
            metrics
                .finance_records_undecodable
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(%error, seq, stream = name, "finance record not understood; skipped");
        }
    }
    Ok(())
}
