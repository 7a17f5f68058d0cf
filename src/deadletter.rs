//! Dead letters: bad events and rejected postings go to `retail.v1.dlq.<stage>.<reason>` with
//! the reason, the original subject and headers, and the original payload untouched.
//!
//! Headers added: `Retailflow-Stage`, `Retailflow-Reason` (machine word), `Retailflow-Error`
//! (human message), `Retailflow-Original-Subject`, `Retailflow-Stream-Seq` (when the letter
//! comes from the events stream). The letter's `Nats-Msg-Id` is derived from the original's
//! identity, so dead-lettering the same event again during a replay is deduplicated.

use crate::domain::subject;
use crate::telemetry::Metrics;
use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;
use std::sync::Arc;

pub const H_STAGE: &str = "Retailflow-Stage";
pub const H_REASON: &str = "Retailflow-Reason";
pub const H_ERROR: &str = "Retailflow-Error";
pub const H_SUBJECT: &str = "Retailflow-Original-Subject";
pub const H_SEQ: &str = "Retailflow-Stream-Seq";
pub const H_ORIGINAL_ID: &str = "Retailflow-Original-Msg-Id";
/// On an event re-driven from a dead letter: the events-stream sequence of the original.
/// Ingest applies such an event once per original, whatever its source sequence says.
pub const H_REDRIVE_OF: &str = "Retailflow-Redrive-Of";
/// On a re-driven message: the dead-letter stream sequence of the letter it came from.
pub const H_REDRIVE: &str = "Retailflow-Redrive";

/// Why something was dead-lettered. The word appears in the subject and in metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Not MessagePack / JSON, or not the envelope shape.
    Undecodable,
    /// Decoded, but a field is out of range or inconsistent.
    Invalid,
    /// Arrived after its source's reorder window had moved past it.
    Late,
    /// Applying it would overflow a quantity.
    Overflow,
    /// The ERP refused the posting (4xx).
    Rejected,
    /// Handling it panicked (a bug that this input reaches); the text is in the error.
    Panic,
    /// Its subject does not fit it: a kind only retailflow publishes on a producer subject,
    /// or a subject whose kind or system differs from the event's.
    Misplaced,
    /// Its source sequence jumped further ahead than `ingest.max_sequence_jump`.
    SequenceJump,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Undecodable => "undecodable",
            Reason::Invalid => "invalid",
            Reason::Late => "late",
            Reason::Overflow => "overflow",
            Reason::Rejected => "rejected",
            Reason::Panic => "panic",
            Reason::Misplaced => "misplaced",
            Reason::SequenceJump => "sequence_jump",
        }
    }
}

/// One dead letter to publish.
pub struct Letter {
    pub stage: &'static str,
    pub reason: Reason,
    pub error: String,
    pub original_subject: String,
    pub headers: Option<HeaderMap>,
    pub payload: Bytes,
    /// Stream sequence of the original, when it came from the events stream.
    pub stream_seq: Option<u64>,
    /// Stable identity of the original, used for the letter's `Nats-Msg-Id`.
    pub identity: String,
}

/// Text as a header value: async-nats refuses (panics on) CR and LF, so control characters
/// become spaces; at most 1000 characters.
fn header_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1000)
        .collect()
}

#[derive(Clone)]
pub struct DeadLetters {
    js: jetstream::Context,
    metrics: Arc<Metrics>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot publish dead letter: {0}")]
pub struct DeadLetterError(pub String);

impl DeadLetters {
    pub fn new(js: jetstream::Context, metrics: Arc<Metrics>) -> Self {
        DeadLetters { js, metrics }
    }

    /// Publishes and waits for JetStream to store it: a dead letter is never fire-and-forget.
    /// A failed attempt is retried a few times (the letter's `Nats-Msg-Id` makes a repeat
    /// harmless), each attempt bounded in time, so a caller is never held for ever; when
    /// every attempt failed the failure is counted and returned.
    pub async fn send(&self, letter: Letter) -> Result<(), DeadLetterError> {
        let (subject, headers, error) = letter_parts(&letter, &self.metrics);
        let mut backoff = SEND_BACKOFF;
        let mut attempt = 1;
        let ack = loop {
            let publish = async {
                self.js
                    .publish_with_headers(subject.clone(), headers.clone(), letter.payload.clone())
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())
            };
            let result = match tokio::time::timeout(SEND_TIMEOUT, publish).await {
                Ok(r) => r,
                Err(_) => Err(format!("no acknowledgement within {SEND_TIMEOUT:?}")),
            };
            match result {
                Ok(ack) => break ack,
                Err(e) if attempt >= SEND_ATTEMPTS => {
                    self.metrics
                        .dead_letter_publish_failures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Err(DeadLetterError(format!("{e} (after {attempt} attempts)")));
                }
                Err(e) => {
                    tracing::debug!(error = %e, attempt, "dead letter not stored yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
            }
        };
        if !ack.duplicate {
            self.metrics.dead_letter(letter.reason.as_str());
        }
        // Per event, so trace only; callers summarise at a visible level.
        tracing::trace!(
            stage = letter.stage,
            reason = letter.reason.as_str(),
            original_subject = %letter.original_subject,
            error = %error,
            "dead-lettered"
        );
        Ok(())
    }
}

/// Attempts to store one dead letter before giving up.
const SEND_ATTEMPTS: u32 = 5;
/// Bound on one attempt (publish and acknowledgement).
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// Wait before the second attempt, doubled after each.
const SEND_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// Subject, headers and the cleaned error text of a letter: the original headers (minus
/// JetStream's own) plus retailflow's, every value made safe for a header.
fn letter_parts(letter: &Letter, metrics: &Metrics) -> (String, HeaderMap, String) {
    let mut headers = HeaderMap::new();
    if let Some(orig) = &letter.headers {
        let invalid = orig.get_all(crate::bus::pull::H_INVALID_HEADER).count();
        metrics
            .invalid_headers_kept
            .fetch_add(invalid as u64, std::sync::atomic::Ordering::Relaxed);
        // `orig` holds only names and values async-nats accepted, so copying cannot panic.
        for (name, values) in orig.iter() {
            let n: &str = name.as_ref();
            if n.eq_ignore_ascii_case("Nats-Msg-Id") {
                for v in values {
                    headers.append(H_ORIGINAL_ID, v.as_str());
                }
            } else if !n.starts_with("Nats-") {
                for v in values {
                    headers.append(n, v.as_str());
                }
            }
        }
    }
    let error = header_text(&letter.error);
    headers.insert(H_STAGE, letter.stage);
    headers.insert(H_REASON, letter.reason.as_str());
    headers.insert(H_ERROR, error.as_str());
    headers.insert(H_SUBJECT, header_text(&letter.original_subject).as_str());
    if let Some(seq) = letter.stream_seq {
        headers.insert(H_SEQ, seq.to_string().as_str());
    }
    headers.insert(
        "Nats-Msg-Id",
        header_text(&format!("dlq/{}/{}", letter.stage, letter.identity)).as_str(),
    );
    (
        subject::dead_letter(letter.stage, letter.reason.as_str()),
        headers,
        error,
    )
}

#[cfg(test)]
mod header_tests {
    use super::*;

    #[test]
    fn text_from_the_network_is_a_valid_header_value() {
        let subject = "retail.v1.pos.S1\r.sale\n";
        let text = header_text(subject);
        assert_eq!(text, "retail.v1.pos.S1 .sale ");
        assert!(text.parse::<async_nats::HeaderValue>().is_ok());
        assert_eq!(header_text(&"é".repeat(2000)).chars().count(), 1000);
    }
}
