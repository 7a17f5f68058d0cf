//! The events behind a document, read back from the events stream on demand: a document's
//! lineage names the stream sequences it summarises (`first_seq..=last_seq`); the sales and
//! returns of its store, day and currency in that range are its source events. Nothing of them
//! is kept in memory.

use super::books::Answer;
use crate::bus::reading::Pending;
use crate::domain::codec::{self, Format};
use crate::domain::{Event, subject};
use async_nats::jetstream::{self, consumer};
use serde::Serialize;

/// Events per page at most.
pub const MAX_PAGE: usize = 500;

/// One source event of a document.
#[derive(Clone, Debug, Serialize)]
pub struct SourceEvent {
    /// Sequence in the events stream.
    pub stream_seq: u64,
    pub id: String,
    pub source: String,
    /// The producer's sequence (a till's transaction number).
    pub seq: u64,
    pub kind: &'static str,
    /// Lines' net (tax exclusive), tax, and tendered money, minor units; negative for returns.
    pub net: i64,
    pub tax: i64,
    pub tendered: i64,
    pub occurred_at_ms: i64,
}

/// A page of a document's source events.
#[derive(Clone, Debug, Serialize)]
pub struct LineagePage {
    pub document: String,
    pub first_seq: u64,
    pub last_seq: u64,
    /// Events the document counts.
    pub events: u64,
    pub items: Vec<SourceEvent>,
    /// Pass as `after` for the next page; absent on the last.
    pub next_after: Option<u64>,
}

/// Reads up to `limit` source events of `doc` with stream sequence above `after`.
pub async fn page(
    js: &jetstream::Context,
    events_stream: &str,
    doc: &Answer,
    after: u64,
    limit: usize,
) -> Result<LineagePage, String> {
    let limit = limit.clamp(1, MAX_PAGE);
    let lin = doc.lineage;
    let mut out = LineagePage {
        document: doc.document.clone(),
        first_seq: lin.first_seq,
        last_seq: lin.last_seq,
        events: lin.events,
        items: Vec::new(),
        next_after: None,
    };
    let start = after.saturating_add(1).max(lin.first_seq);
    if lin.events == 0 || start > lin.last_seq {
        return Ok(out);
    }
    let stream = js
        .get_stream(events_stream)
        .await
        .map_err(|e| format!("events stream: {e}"))?;
    let loc = doc.location.as_str();
    let config = consumer::pull::OrderedConfig {
        deliver_policy: consumer::DeliverPolicy::ByStartSequence {
            start_sequence: start,
        },
        filter_subjects: ["sale", "return"]
            .iter()
            .map(|k| format!("{}.*.{loc}.{k}", subject::ROOT))
            .collect(),
        ..Default::default()
    };
    // Matching messages from `start` on: the read stops there instead of waiting for more.
    let mut read = Pending::open(&stream, config, "the events stream").await?;
    while let Some(m) = read.next().await? {
        let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
        if seq > lin.last_seq {
            break;
        }
        let format = Format::from_content_type(
            m.headers
                .as_ref()
                .and_then(|h| h.get(codec::CONTENT_TYPE))
                .map(|v| v.as_str()),
        );
        let Ok(env) = codec::decode_envelope(format, &m.payload) else {
            continue;
        };
        let (day, cur, lines, tenders, sign) = match &env.event {
            Event::Sale(s) => (s.business_day, s.currency, &s.lines, &s.tenders, 1),
            Event::Return(r) => (r.business_day, r.currency, &r.lines, &r.tenders, -1),
            _ => continue,
        };
        if day != doc.business_day || cur != doc.currency {
            continue;
        }
        if out.items.len() == limit {
            out.next_after = out.items.last().map(|e| e.stream_seq);
            break;
        }
        out.items.push(SourceEvent {
            stream_seq: seq,
            id: env.id.to_string(),
            source: env.source.to_string(),
            seq: env.seq,
            kind: env.event.kind(),
            net: sign * lines.iter().map(|l| l.net()).sum::<i64>(),
            tax: sign * lines.iter().map(|l| l.tax()).sum::<i64>(),
            tendered: sign * tenders.iter().map(|t| t.amount).sum::<i64>(),
            occurred_at_ms: env.occurred_at_ms,
        });
    }
    Ok(out)
}
