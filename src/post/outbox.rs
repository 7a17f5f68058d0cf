//! Publishing posting documents into the outbox stream. The document id is the
//! `Nats-Msg-Id`, so publishing the same document again (after a crash) is dropped by
//! JetStream inside its duplicate window and by the ERP's idempotency key after it.

use crate::domain::subject;
use async_nats::HeaderMap;
use async_nats::jetstream;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use retailflow_core::aggregate::posting::PostingDoc;

#[derive(Debug, thiserror::Error)]
#[error("outbox publish failed after {published} of {total} documents: {message}")]
pub struct OutboxError {
    pub published: usize,
    pub total: usize,
    pub message: String,
}

/// Publishes every document and waits until JetStream stored each one. Returns how many were
/// new (not duplicates).
pub async fn publish(js: &jetstream::Context, docs: &[PostingDoc]) -> Result<usize, OutboxError> {
    let total = docs.len();
    let mut fresh = 0;
    let mut acks = FuturesOrdered::new();
    let fail = |published: usize, message: String| OutboxError {
        published,
        total,
        message,
    };
    let mut done = 0;
    for doc in docs {
        let payload =
            crate::domain::codec::encode_msgpack(doc).map_err(|e| fail(done, e.to_string()))?;
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", doc.id.as_str());
        headers.insert(
            crate::domain::codec::CONTENT_TYPE,
            crate::domain::codec::MSGPACK,
        );
        let subj = subject::posting(&doc.endpoint, doc.body.kind().as_str());
        let ack = js
            .publish_with_headers(subj, headers, payload.into())
            .await
            .map_err(|e| fail(done, e.to_string()))?;
        acks.push_back(std::future::IntoFuture::into_future(ack));
        if acks.len() >= 256 {
            if let Some(r) = acks.next().await {
                let a = r.map_err(|e| fail(done, e.to_string()))?;
                done += 1;
                fresh += usize::from(!a.duplicate);
            }
        }
    }
    while let Some(r) = acks.next().await {
        let a = r.map_err(|e| fail(done, e.to_string()))?;
        done += 1;
        fresh += usize::from(!a.duplicate);
    }
    Ok(fresh)
}
