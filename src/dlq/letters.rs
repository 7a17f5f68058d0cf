//! Reading the dead-letter stream: one letter by its sequence, or a filtered page of them.

use crate::bus::reading::Pending;
use crate::deadletter::{H_ERROR, H_ORIGINAL_ID, H_REASON, H_SEQ, H_STAGE, H_SUBJECT};
use crate::domain::codec::{self, Format};
use crate::domain::subject;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer};
use retailflow_core::aggregate::posting::PostingDoc;
use serde::Serialize;
use std::time::{Duration, SystemTime};

/// Letters per page at most.
pub const MAX_PAGE: usize = 1000;
/// Letters one listing reads at most before it hands back a cursor, so that a selective
/// filter over a large stream answers in bounded time.
pub const MAX_SCANNED: u64 = 50_000;

/// One dead letter, as `dlq list` and `dlq show` give it.
#[derive(Clone, Debug, Serialize)]
pub struct DeadLetter {
    /// Sequence in the dead-letter stream: what `dlq show` and `dlq redrive` take.
    pub seq: u64,
    /// When it was stored (RFC 3339).
    pub at: String,
    pub stage: String,
    pub reason: String,
    pub error: String,
    /// Where the original was published.
    pub original_subject: String,
    /// The original's sequence in the events stream (letters of events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_seq: Option<u64>,
    /// The original's `Nats-Msg-Id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_id: Option<String>,
    /// The location it concerns, when the subject or the payload names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The event id or the document id, when the payload decodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The payload: JSON when it decodes as an event or a document, else its text (lossy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
    #[serde(skip)]
    pub raw: Raw,
}

/// What a re-drive sends back: the original's bytes and headers.
#[derive(Clone, Debug, Default)]
pub struct Raw {
    pub headers: HeaderMap,
    pub payload: bytes::Bytes,
}

/// Which letters a listing gives.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub stage: Option<String>,
    pub reason: Option<String>,
    /// Stored at or after this time.
    pub since: Option<SystemTime>,
    pub location: Option<String>,
    /// Only letters with a higher sequence (the cursor of the previous page).
    pub after: u64,
    pub limit: usize,
}

impl Filter {
    /// Whether the filter can be used: its stage and reason are plain words.
    pub fn check(&self) -> Result<(), String> {
        self.subject().map(|_| ())
    }

    /// The stream subject that selects stage and reason (a token that is not a plain word
    /// is refused, so a filter cannot widen itself with wildcards).
    fn subject(&self) -> Result<String, String> {
        let token = |t: &Option<String>, what: &str| match t.as_deref() {
            None | Some("") => Ok("*".to_string()),
            Some(w) if w.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => {
                Ok(w.to_string())
            }
            Some(w) => Err(format!("{what} {w:?} is not a word (letters, digits, _)")),
        };
        Ok(subject::dead_letter(
            &token(&self.stage, "stage")?,
            &token(&self.reason, "reason")?,
        ))
    }

    fn takes(&self, l: &DeadLetter) -> bool {
        self.location
            .as_deref()
            .is_none_or(|want| l.location.as_deref() == Some(want))
    }
}

/// A page of letters.
#[derive(Clone, Debug, Serialize)]
pub struct Page {
    pub items: Vec<DeadLetter>,
    /// Pass as `after` for the next page; absent when the stream has no more.
    pub next_after: Option<u64>,
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).map(|v| v.as_str().to_string())
}

fn rfc3339(unix_nanos: i128) -> String {
    let d = Duration::from_nanos(u64::try_from(unix_nanos.max(0)).unwrap_or(u64::MAX));
    humantime::format_rfc3339_millis(SystemTime::UNIX_EPOCH + d).to_string()
}

/// The letter stored at `seq` with these headers and payload.
pub fn letter(seq: u64, unix_nanos: i128, headers: HeaderMap, payload: bytes::Bytes) -> DeadLetter {
    let original_subject = header(&headers, H_SUBJECT).unwrap_or_default();
    let mut l = DeadLetter {
        seq,
        at: rfc3339(unix_nanos),
        stage: header(&headers, H_STAGE).unwrap_or_default(),
        reason: header(&headers, H_REASON).unwrap_or_default(),
        error: header(&headers, H_ERROR).unwrap_or_default(),
        stream_seq: header(&headers, H_SEQ).and_then(|s| s.parse().ok()),
        original_id: header(&headers, H_ORIGINAL_ID),
        location: None,
        id: None,
        payload: None,
        original_subject,
        raw: Raw { headers, payload },
    };
    describe(&mut l);
    l
}

/// Fills in location, id and a readable payload from what the letter carries.
fn describe(l: &mut DeadLetter) {
    let bytes = &l.raw.payload;
    let format = Format::from_content_type(header(&l.raw.headers, codec::CONTENT_TYPE).as_deref());
    if l.original_subject.starts_with(subject::POSTINGS) {
        if let Ok(doc) = codec::decode::<PostingDoc>(format, bytes) {
            l.location = Some(doc.location.to_string());
            l.id = Some(doc.id.to_string());
            l.payload = serde_json::to_value(&doc).ok();
        }
    } else {
        // retail.v1.<system>.<location>.<kind>
        l.location = l.original_subject.split('.').nth(3).map(str::to_string);
        if let Ok(env) = codec::decode_envelope(format, bytes) {
            l.id = Some(env.id.to_string());
            l.payload = serde_json::to_value(&env).ok();
        }
    }
    if l.payload.is_none() {
        l.payload = Some(match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(_) => serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned()),
        });
    }
}

/// The letter at `seq`, or `None` when the stream has none there.
pub async fn show(
    js: &jetstream::Context,
    stream: &str,
    seq: u64,
) -> Result<Option<DeadLetter>, String> {
    let s = js
        .get_stream_no_info(stream)
        .await
        .map_err(|e| format!("dead-letter stream {stream}: {e}"))?;
    match s.get_raw_message(seq).await {
        Ok(m) => Ok(Some(letter(
            m.sequence,
            m.time.unix_timestamp_nanos(),
            m.headers,
            m.payload,
        ))),
        Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(format!("dead letter {seq}: {e}")),
    }
}

/// Up to `filter.limit` letters that pass `filter`, oldest first.
pub async fn list(js: &jetstream::Context, stream: &str, filter: &Filter) -> Result<Page, String> {
    let limit = filter.limit.clamp(1, MAX_PAGE);
    let s = js
        .get_stream(stream)
        .await
        .map_err(|e| format!("dead-letter stream {stream}: {e}"))?;
    let deliver_policy = match filter.since {
        Some(t) if filter.after == 0 => consumer::DeliverPolicy::ByStartTime {
            start_time: time_of(t)?,
        },
        _ => consumer::DeliverPolicy::ByStartSequence {
            start_sequence: filter.after.saturating_add(1),
        },
    };
    let config = consumer::pull::OrderedConfig {
        deliver_policy,
        filter_subject: filter.subject()?,
        ..Default::default()
    };
    let mut read = Pending::open(&s, config, "the dead-letter stream").await?;
    let mut page = Page {
        items: Vec::new(),
        next_after: None,
    };
    let mut scanned = 0;
    while let Some(m) = read.next().await? {
        scanned += 1;
        let info = m.info().map_err(|e| e.to_string())?;
        let (seq, at) = (info.stream_sequence, info.published.unix_timestamp_nanos());
        if filter.since.is_some_and(|t| at < nanos(t)) {
            continue;
        }
        let headers = m.headers.clone().unwrap_or_default();
        let l = letter(seq, at, headers, m.payload.clone());
        if filter.takes(&l) {
            page.items.push(l);
        }
        if read.left() > 0 && (page.items.len() == limit || scanned >= MAX_SCANNED) {
            page.next_after = Some(seq);
            break;
        }
    }
    Ok(page)
}

fn nanos(t: SystemTime) -> i128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

fn time_of(t: SystemTime) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos(t)).map_err(|e| e.to_string())
}

/// A `since` as the CLI and the API take it: an RFC 3339 time, or a span back from now
/// (`90m`, `2d`).
pub fn parse_since(text: &str) -> Result<SystemTime, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(t);
    }
    let span = humantime::parse_duration(text).map_err(|_| {
        format!("since {text:?}: give an RFC 3339 time (2026-12-01T08:00:00Z) or a span (90m, 2d)")
    })?;
    SystemTime::now()
        .checked_sub(span)
        .ok_or_else(|| format!("since {text:?} is before the epoch"))
}
