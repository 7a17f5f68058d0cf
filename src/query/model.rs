//! Availability questions and answers, shared by the HTTP and NATS front ends. Answers are
//! computed from the view alone; nothing here goes through an actor.

use crate::domain::{ChannelId, Sku, ids::check_token};
use crate::view::{Cell, ChannelView, View};
use retailflow_core::apply::ledger::Position;
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub const MAX_SKUS: usize = 100;
pub const MAX_LOCATIONS: usize = 100;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    pub skus: Vec<String>,
    /// Only these locations (unknown ones answer zero). Empty: every location holding the sku,
    /// or the channel's fulfilment locations when `channel` is given.
    #[serde(default)]
    pub locations: Vec<String>,
    /// Also answer network availability for this channel.
    #[serde(default)]
    pub channel: Option<String>,
    /// Read-your-writes: wait (bounded) until the view has applied this stream sequence.
    #[serde(default)]
    pub min_as_of: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocationAvailability {
    pub location: String,
    pub known: bool,
    pub on_hand: i64,
    pub reserved: i64,
    pub safety_stock: i64,
    pub in_transit: i64,
    /// on_hand - reserved - safety_stock; negative when facts outran stock.
    pub available: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelAvailability {
    pub channel: String,
    /// Sum over the channel's locations of max(0, available - buffer): never below zero.
    pub available: i64,
    pub buffer: i64,
    pub locations: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuAvailability {
    pub sku: String,
    /// False when retailflow has never seen this sku: every number is then zero.
    pub known: bool,
    /// Stream sequence this answer reflects (at least).
    pub as_of: u64,
    pub locations: Vec<LocationAvailability>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<ChannelAvailability>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryResponse {
    /// The lowest `as_of` of the results.
    pub as_of: u64,
    pub results: Vec<SkuAvailability>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("{0}")]
    BadRequest(String),
    #[error("retailflow is restoring its state; retry shortly")]
    NotReady,
    #[error("the view has not applied sequence {wanted} within {waited:?} (it is at {at})")]
    NotYet {
        wanted: u64,
        at: u64,
        waited: Duration,
    },
}

impl QueryRequest {
    /// `GET /v1/availability/{sku}?location=..&channel=..&min_as_of=..` as a request; the
    /// error is the 400 message. Pure, so the fuzz target calls exactly what the handler does.
    pub fn from_availability(sku: String, query: &str) -> Result<QueryRequest, String> {
        let mut req = QueryRequest {
            skus: vec![sku],
            ..Default::default()
        };
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "location" => req.locations.push(v.into_owned()),
                "channel" => req.channel = Some(v.into_owned()),
                "min_as_of" => match v.parse() {
                    Ok(n) => req.min_as_of = Some(n),
                    Err(_) => return Err(format!("min_as_of {v:?} is not a sequence number")),
                },
                other => {
                    return Err(format!(
                        "unknown parameter {other:?}; use location, channel, min_as_of"
                    ));
                }
            }
        }
        Ok(req)
    }

    /// A `POST /v1/availability` body (JSON); the error is the 400 message.
    pub fn from_body(body: &[u8]) -> Result<QueryRequest, String> {
        serde_json::from_slice(body).map_err(|e| format!("request body: {e}"))
    }

    pub fn check(&self) -> Result<(), QueryError> {
        let bad = |m: String| Err(QueryError::BadRequest(m));
        if self.skus.is_empty() {
            return bad("skus: at least one sku is required".into());
        }
        if self.skus.len() > MAX_SKUS {
            return bad(format!(
                "skus: at most {MAX_SKUS} per request ({} given)",
                self.skus.len()
            ));
        }
        if self.locations.len() > MAX_LOCATIONS {
            return bad(format!(
                "locations: at most {MAX_LOCATIONS} per request ({} given)",
                self.locations.len()
            ));
        }
        for s in &self.skus {
            check_token("sku", s).map_err(|e| QueryError::BadRequest(e.to_string()))?;
        }
        for l in &self.locations {
            check_token("location", l).map_err(|e| QueryError::BadRequest(e.to_string()))?;
        }
        if let Some(c) = &self.channel {
            check_token("channel", c).map_err(|e| QueryError::BadRequest(e.to_string()))?;
        }
        Ok(())
    }
}

/// One SKU's positions as the view holds them, looked up by location name (a binary search
/// in the cell's name order).
pub(crate) struct Positions<'a> {
    cell: Option<Cell<'a>>,
}

impl<'a> Positions<'a> {
    pub(crate) fn new(cell: Option<Cell<'a>>) -> Positions<'a> {
        Positions { cell }
    }

    pub(crate) fn get(&self, location: &str) -> Option<&'a Position> {
        self.cell?.get(location)
    }

    /// Every location's answer, sorted by location.
    pub(crate) fn all(&self) -> Vec<LocationAvailability> {
        self.cell
            .map(|cell| {
                cell.sorted()
                    .map(|(l, p)| loc_answer(l.as_str(), Some(p)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A channel's network availability for one SKU, from that SKU's positions.
pub(crate) fn channel_answer(
    name: &str,
    cv: &ChannelView,
    positions: &Positions<'_>,
) -> ChannelAvailability {
    ChannelAvailability {
        channel: name.to_string(),
        available: cv
            .locations
            .iter()
            .map(|l| {
                positions
                    .get(l.as_str())
                    .map(|p| (p.available() - cv.buffer).max(0))
                    .unwrap_or(0)
            })
            .sum(),
        buffer: cv.buffer,
        locations: cv.locations.iter().map(|l| l.to_string()).collect(),
    }
}

pub(crate) fn loc_answer(location: &str, p: Option<&Position>) -> LocationAvailability {
    let known = p.is_some();
    let p = p.copied().unwrap_or_default();
    LocationAvailability {
        location: location.to_string(),
        known,
        on_hand: p.on_hand,
        reserved: p.reserved,
        safety_stock: p.safety_stock,
        in_transit: p.in_transit,
        available: p.available(),
    }
}

/// Answers a query from the view.
pub async fn answer(
    view: &View,
    req: &QueryRequest,
    max_wait: Duration,
) -> Result<QueryResponse, QueryError> {
    req.check()?;
    if !view.is_ready() {
        return Err(QueryError::NotReady);
    }
    if let Some(seq) = req.min_as_of {
        // One deadline for the whole query: a batch of 100 skus must not wait 100 times.
        let deadline = tokio::time::Instant::now() + max_wait;
        for s in &req.skus {
            let sku = Sku::from(s.as_str());
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !view.wait_for(&sku, seq, left).await {
                let at = view.read(&sku).1;
                return Err(QueryError::NotYet {
                    wanted: seq,
                    at,
                    waited: max_wait,
                });
            }
        }
    }
    let channel = match &req.channel {
        Some(c) => match view.channel(&ChannelId::from(c.as_str())) {
            Some(cv) => Some((c.clone(), cv)),
            None => {
                let known: Vec<String> = view.channels().keys().map(|k| k.to_string()).collect();
                return Err(QueryError::BadRequest(format!(
                    "unknown channel {c:?}; known channels: {known:?} (channels come from location_upsert events)"
                )));
            }
        },
        None => None,
    };
    let mut results = Vec::with_capacity(req.skus.len());
    for s in &req.skus {
        let sku = Sku::from(s.as_str());
        let answer = view.with_entries(&sku, |entries, as_of| {
            let known = entries.is_some();
            let positions = Positions::new(entries);
            let locations = if !req.locations.is_empty() {
                req.locations
                    .iter()
                    .map(|l| loc_answer(l, positions.get(l)))
                    .collect()
            } else if let Some((_, cv)) = &channel {
                cv.locations
                    .iter()
                    .map(|l| loc_answer(l.as_str(), positions.get(l.as_str())))
                    .collect()
            } else {
                positions.all()
            };
            SkuAvailability {
                sku: s.clone(),
                known,
                as_of,
                locations,
                channel: channel
                    .as_ref()
                    .map(|(name, cv)| channel_answer(name, cv, &positions)),
            }
        });
        results.push(answer);
    }
    let as_of = results.iter().map(|r| r.as_of).min().unwrap_or(0);
    Ok(QueryResponse { as_of, results })
}

#[cfg(test)]
mod deadline_tests {
    use super::*;
    use crate::view::{View, shard_of};

    /// Skus of `n` different shards.
    fn one_per_shard(n: usize) -> Vec<String> {
        let mut out: Vec<(usize, String)> = Vec::new();
        for i in 0.. {
            let sku = format!("S{i}");
            let s = shard_of(&sku, n);
            if !out.iter().any(|(o, _)| *o == s) {
                out.push((s, sku));
            }
            if out.len() == n {
                break;
            }
        }
        out.into_iter().map(|(_, s)| s).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn min_as_of_waits_one_deadline_for_the_whole_query() {
        let view = View::new(4);
        view.set_ready(true);
        let skus = one_per_shard(4);
        // Each shard catches up 1.5 s after the one before: each wait alone is within 2 s,
        // all of them together are not.
        let setter = view.clone();
        let order: Vec<usize> = skus.iter().map(|s| shard_of(s, 4)).collect();
        tokio::spawn(async move {
            for shard in order {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                setter.set_applied(shard, 10);
            }
        });
        let req = QueryRequest {
            skus,
            min_as_of: Some(10),
            ..Default::default()
        };
        let max_wait = Duration::from_secs(2);
        let started = tokio::time::Instant::now();
        let r = answer(&view, &req, max_wait).await;
        assert!(matches!(r, Err(QueryError::NotYet { .. })), "{r:?}");
        // Paused time: the clock moved exactly as far as the query slept.
        assert_eq!(started.elapsed(), max_wait);
    }
}
