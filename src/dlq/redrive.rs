//! Sending a dead letter back where it came from, once its cause is fixed.
//!
//! - An event's letter goes back to its original subject with its original payload, event id
//!   and headers, plus `Retailflow-Redrive-Of: <its events-stream sequence>`. Ingest applies
//!   such a message once per original sequence whatever the source's order says (the original
//!   was never applied: it was dead-lettered), and remembers that it did in its snapshot, so a
//!   second re-drive of the same letter is counted and dropped, never applied.
//! - A document the ERP refused goes back to its outbox subject; the endpoint delivers it again
//!   under the same document id, which the ERP dedupes on.
//!
//! Each re-drive is written to the audit stream after JetStream stored the message; a letter
//! that has a record is refused unless the caller asks again on purpose.

use super::audit::{self, Redrive};
use super::letters::{self, DeadLetter};
use crate::config::Config;
use crate::deadletter::{H_REDRIVE, H_REDRIVE_OF};
use crate::domain::subject;
use async_nats::HeaderMap;
use async_nats::jetstream;

#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    #[error("no dead letter {0}")]
    NotFound(u64),
    #[error("dead letter {letter} cannot be re-driven: {why}")]
    NotRedrivable { letter: u64, why: String },
    #[error(
        "dead letter {letter} was re-driven already by {by} (to {subject} as sequence {seq}); ask again on purpose to send it once more",
        letter = .0.letter, by = .0.by, subject = .0.subject, seq = .0.republished_seq
    )]
    Already(Box<Redrive>),
    /// The request itself is wrong (no `by`, a filter that is not one).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Bus(String),
}

/// Letters to send back: by sequence, and those a filter finds (at most its limit).
pub struct Batch<'a> {
    pub letters: Vec<u64>,
    pub filter: Option<&'a letters::Filter>,
    pub by: &'a str,
    pub again: bool,
}

/// Each letter of `batch` and what became of it, in order. A request without `by`, an invalid
/// filter or one that finds nothing with no letters named is refused whole; a fault of the bus
/// ends the batch after the letter it hit.
pub async fn redrive_batch(
    js: &jetstream::Context,
    cfg: &Config,
    batch: Batch<'_>,
) -> Result<Vec<(u64, Result<Redrive, RedriveError>)>, RedriveError> {
    let mut seqs = batch.letters;
    if batch.by.trim().is_empty() {
        return Err(no_by());
    }
    if let Some(f) = batch.filter {
        f.check().map_err(RedriveError::Invalid)?;
        let page = letters::list(js, &cfg.streams.dead_letters, f)
            .await
            .map_err(RedriveError::Bus)?;
        seqs.extend(page.items.iter().map(|l| l.seq));
    }
    if seqs.is_empty() {
        return Err(RedriveError::Invalid(
            "name the letters to re-drive, or a filter that finds some".into(),
        ));
    }
    let mut out = Vec::with_capacity(seqs.len());
    for seq in seqs {
        let r = redrive(js, cfg, seq, batch.by, batch.again).await;
        let stop = matches!(r, Err(RedriveError::Bus(_)));
        out.push((seq, r));
        if stop {
            break;
        }
    }
    Ok(out)
}

fn no_by() -> RedriveError {
    RedriveError::Invalid("a re-drive needs a `by`: who asks".into())
}

/// Most characters of the `by` a re-drive records.
pub const MAX_BY: usize = 200;

/// Where a letter goes and with which headers.
struct Plan {
    subject: String,
    headers: HeaderMap,
}

/// Copies the original's headers, leaving out the letter's own (`Retailflow-*`) and
/// JetStream's (`Nats-*`).
fn original_headers(l: &DeadLetter) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, values) in l.raw.headers.iter() {
        let n: &str = name.as_ref();
        let lower = n.to_ascii_lowercase();
        if lower.starts_with("retailflow-") || lower.starts_with("nats-") {
            continue;
        }
        for v in values {
            out.append(n, v.as_str());
        }
    }
    out
}

fn plan(l: &DeadLetter) -> Result<Plan, String> {
    let subj = l.original_subject.as_str();
    let mut headers = original_headers(l);
    headers.insert(H_REDRIVE, l.seq.to_string().as_str());
    if l.stage == "erp" {
        if !subj.starts_with(&format!("{}.", subject::POSTINGS)) {
            return Err(format!("its subject {subj:?} is not an outbox subject"));
        }
        let id = l
            .original_id
            .clone()
            .or_else(|| l.id.clone())
            .ok_or("it names no document")?;
        headers.insert("Nats-Msg-Id", format!("{id}/redrive/{}", l.seq).as_str());
        return Ok(Plan {
            subject: subj.to_string(),
            headers,
        });
    }
    let Some(seq) = l.stream_seq else {
        return Err("it is not an event from the events stream".into());
    };
    let own = [subject::DLQ, subject::POSTINGS, subject::BARRIER];
    let is_event = subj.starts_with(&format!("{}.", subject::ROOT))
        && !own.iter().any(|p| subj.starts_with(p));
    if !is_event || subj.contains(['*', '>', ' ']) {
        return Err(format!(
            "it carries no event subject (stage {}, {subj:?})",
            l.stage
        ));
    }
    headers.insert(H_REDRIVE_OF, seq.to_string().as_str());
    headers.insert("Nats-Msg-Id", format!("redrive/{seq}").as_str());
    Ok(Plan {
        subject: subj.to_string(),
        headers,
    })
}

/// The business day a letter's event or document belongs to, when it names one.
fn business_day(l: &DeadLetter) -> Option<String> {
    let p = l.payload.as_ref()?;
    let day = p.get("business_day").or_else(|| {
        p.get("event")?
            .as_object()?
            .values()
            .find_map(|body| body.get("business_day"))
    })?;
    day.as_str().map(str::to_string)
}

/// Sends letter `seq` back and records it; `again` sends a letter that was re-driven before.
pub async fn redrive(
    js: &jetstream::Context,
    cfg: &Config,
    seq: u64,
    by: &str,
    again: bool,
) -> Result<Redrive, RedriveError> {
    let by: String = by
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_BY)
        .collect();
    if by.trim().is_empty() {
        return Err(no_by());
    }
    let letter = letters::show(js, &cfg.streams.dead_letters, seq)
        .await
        .map_err(RedriveError::Bus)?
        .ok_or(RedriveError::NotFound(seq))?;
    let plan = plan(&letter).map_err(|why| RedriveError::NotRedrivable { letter: seq, why })?;
    let audit_stream = &cfg.finance.audit_stream;
    if !again {
        if let Some(before) = audit::find(js, audit_stream, seq)
            .await
            .map_err(RedriveError::Bus)?
        {
            return Err(RedriveError::Already(Box::new(before)));
        }
    }
    let ack = js
        .publish_with_headers(
            plan.subject.clone(),
            plan.headers,
            letter.raw.payload.clone(),
        )
        .await
        .map_err(|e| RedriveError::Bus(format!("publishing letter {seq} again: {e}")))?
        .await
        .map_err(|e| RedriveError::Bus(format!("publishing letter {seq} again: {e}")))?;
    let record = Redrive {
        letter: seq,
        stage: letter.stage.clone(),
        reason: letter.reason.clone(),
        id: letter.id.clone(),
        stream_seq: letter.stream_seq,
        location: letter.location.clone(),
        business_day: business_day(&letter),
        subject: plan.subject,
        republished_seq: ack.sequence,
        duplicate: ack.duplicate,
        by,
        at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
    };
    audit::record(js, &record).await.map_err(|e| {
        RedriveError::Bus(format!(
            "letter {seq} was published again (sequence {}) but its audit record failed: {e}",
            ack.sequence
        ))
    })?;
    tracing::info!(letter = seq, subject = %record.subject, by = %record.by, "dead letter re-driven");
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlq::letters::letter;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.insert(*n, *v);
        }
        h
    }

    #[test]
    fn an_event_letter_goes_back_to_its_subject_marked_with_its_sequence() {
        let h = headers(&[
            ("Retailflow-Stage", "ingest"),
            ("Retailflow-Reason", "invalid"),
            ("Retailflow-Original-Subject", "retail.v1.pos.S1.sale"),
            ("Retailflow-Stream-Seq", "77"),
            ("Retailflow-Original-Msg-Id", "pos/S1/t1#9"),
            ("Content-Type", "application/json"),
            ("X-Till", "t1"),
        ]);
        let l = letter(5, 0, h, bytes::Bytes::from_static(b"{}"));
        let p = plan(&l).unwrap();
        assert_eq!(p.subject, "retail.v1.pos.S1.sale");
        let get = |n: &str| p.headers.get(n).map(|v| v.as_str().to_string());
        assert_eq!(get(H_REDRIVE_OF).as_deref(), Some("77"));
        assert_eq!(get(H_REDRIVE).as_deref(), Some("5"));
        assert_eq!(get("Nats-Msg-Id").as_deref(), Some("redrive/77"));
        assert_eq!(get("Content-Type").as_deref(), Some("application/json"));
        assert_eq!(get("X-Till").as_deref(), Some("t1"));
        assert_eq!(get("Retailflow-Reason"), None);
        assert_eq!(l.location.as_deref(), Some("S1"));
    }

    #[test]
    fn letters_that_are_not_events_or_documents_are_refused() {
        let overflow = letter(
            6,
            0,
            headers(&[
                ("Retailflow-Stage", "apply"),
                ("Retailflow-Reason", "overflow"),
                ("Retailflow-Stream-Seq", "9"),
            ]),
            bytes::Bytes::from_static(b"Receive { .. }"),
        );
        assert!(plan(&overflow).is_err());
        let no_seq = letter(
            7,
            0,
            headers(&[("Retailflow-Original-Subject", "retail.v1.pos.S1.sale")]),
            bytes::Bytes::new(),
        );
        assert!(plan(&no_seq).is_err());
        let wild = letter(
            8,
            0,
            headers(&[
                ("Retailflow-Original-Subject", "retail.v1.pos.>"),
                ("Retailflow-Stream-Seq", "9"),
            ]),
            bytes::Bytes::new(),
        );
        assert!(plan(&wild).is_err());
    }
}
