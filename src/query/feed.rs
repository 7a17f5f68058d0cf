//! The availability change feed. A shard marks the (location, sku) positions each batch
//! changed; one task wakes every `feed.interval` (longer under load, up to `feed.max_interval`:
//! see `FeedConfig::next_window`), takes what was marked and publishes each SKU
//! once on `retail.v1.atp.changed.<sku>`, with the changed locations' availability read from
//! the view at that moment. Ten changes to one position inside a window cost one message, and
//! the message carries the latest state of each position it names, never a delta, so a
//! subscriber that misses one is corrected by the next change of that position.
//!
//! The feed is core NATS (at most once). When every cached answer may be stale — the view was
//! rebuilt after a start or restart, a channel definition changed, or this replica just took
//! over as leader (its predecessor's last window may be lost) — the task publishes one message
//! on `retail.v1.atp.reset` instead, and caches drop what they hold. Only the leader publishes.

use super::context::QueryContext;
use super::model::{
    ChannelAvailability, LocationAvailability, Positions, channel_answer, loc_answer,
};
use crate::domain::{ChannelId, LocationId, Sku, subject};
use crate::view::{ChannelView, View};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Body of `retail.v1.atp.changed.<sku>` (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtpChanged {
    pub sku: String,
    /// Stream sequence the numbers reflect (at least).
    pub as_of: u64,
    /// The locations whose position changed in the window, each with its whole current state.
    pub locations: Vec<LocationAvailability>,
    /// Every channel with one of those locations among its fulfilment locations, computed over
    /// all of the channel's locations.
    pub channels: Vec<ChannelAvailability>,
}

/// Body of `retail.v1.atp.reset` (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtpReset {
    /// `rebuilt` (retailflow started or restarted and rebuilt its view) or `channels` (a
    /// channel's locations or buffer changed).
    pub reason: String,
    pub as_of: u64,
}

/// The feed message for one SKU and the locations that changed, read from the view now.
pub fn changed(
    view: &View,
    channels: &BTreeMap<ChannelId, ChannelView>,
    sku: &Sku,
    changed: &[LocationId],
) -> AtpChanged {
    view.with_entries(sku, |entries, as_of| {
        let positions = Positions::new(entries);
        let mut locations: Vec<LocationAvailability> = changed
            .iter()
            .map(|l| loc_answer(l.as_str(), positions.get(l.as_str())))
            .collect();
        locations.sort_by(|a, b| a.location.cmp(&b.location));
        let channels = channels
            .iter()
            .filter(|(_, cv)| cv.locations.iter().any(|l| changed.contains(l)))
            .map(|(c, cv)| channel_answer(c.as_str(), cv, &positions))
            .collect();
        AtpChanged {
            sku: sku.to_string(),
            as_of,
            locations,
            channels,
        }
    })
}

/// Writes the feed message for one SKU into `out` (cleared first): the JSON of [`changed`]'s
/// answer, written straight from the view without building it. A peak publishes thousands of
/// these a second from the data runtime, and the answer's strings (every location and
/// channel name, each channel's location list) were allocated only to be serialized.
/// `changed` is sorted here; it holds each location once.
pub fn encode_changed(
    out: &mut Vec<u8>,
    view: &View,
    channels: &BTreeMap<ChannelId, ChannelView>,
    sku: &Sku,
    changed: &mut [LocationId],
) {
    fn text(out: &mut Vec<u8>, s: &str) {
        // Quoted and escaped as serde_json does; writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
    fn number(out: &mut Vec<u8>, name: &str, n: i64) {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        let _ = serde_json::to_writer(&mut *out, &n);
    }
    out.clear();
    changed.sort_unstable();
    view.with_entries(sku, |entries, as_of| {
        let positions = Positions::new(entries);
        out.extend_from_slice(b"{\"sku\":");
        text(out, sku.as_str());
        out.extend_from_slice(b",\"as_of\":");
        let _ = serde_json::to_writer(&mut *out, &as_of);
        out.extend_from_slice(b",\"locations\":[");
        for (i, l) in changed.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let p = positions.get(l.as_str());
            out.extend_from_slice(b"{\"location\":");
            text(out, l.as_str());
            out.extend_from_slice(if p.is_some() {
                b",\"known\":true"
            } else {
                b",\"known\":false"
            });
            let p = p.copied().unwrap_or_default();
            number(out, "on_hand", p.on_hand);
            number(out, "reserved", p.reserved);
            number(out, "safety_stock", p.safety_stock);
            number(out, "in_transit", p.in_transit);
            number(out, "available", p.available());
            out.push(b'}');
        }
        out.extend_from_slice(b"],\"channels\":[");
        let mut first = true;
        for (c, cv) in channels
            .iter()
            .filter(|(_, cv)| cv.locations.iter().any(|l| changed.contains(l)))
        {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(b"{\"channel\":");
            text(out, c.as_str());
            let available = cv
                .locations
                .iter()
                .map(|l| {
                    positions
                        .get(l.as_str())
                        .map_or(0, |p| (p.available() - cv.buffer).max(0))
                })
                .sum();
            number(out, "available", available);
            number(out, "buffer", cv.buffer);
            out.extend_from_slice(b",\"locations\":[");
            for (i, l) in cv.locations.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                text(out, l.as_str());
            }
            out.extend_from_slice(b"]}");
        }
        out.extend_from_slice(b"]}");
    });
}

/// Publishes the feed until the pipeline stops.
pub async fn run(ctx: Arc<QueryContext>) {
    let feed = &ctx.feed;
    if !feed.enabled() {
        return;
    }
    let cfg = &ctx.config.feed;
    let mut window = cfg.interval;
    let mut epoch = 0;
    let mut led = ctx.leader.leads();
    loop {
        tokio::time::sleep(window).await;
        window = cfg.interval;
        if ctx.flow.stopping() {
            return;
        }
        let view = &ctx.view;
        if !view.is_ready() {
            continue;
        }
        if !ctx.leader.leads() {
            // The leader publishes; what changed here is dropped, not kept for later.
            led = false;
            drop(feed.take());
            continue;
        }
        let now_epoch = view.ready_epoch();
        let channels = feed.channels_changed.swap(false, Ordering::AcqRel);
        // A new leader cannot know what its predecessor published last: caches start over.
        let took_over = !std::mem::replace(&mut led, true);
        if now_epoch != epoch || channels || took_over {
            let reason = if took_over {
                "leader"
            } else if now_epoch != epoch {
                "rebuilt"
            } else {
                "channels"
            };
            epoch = now_epoch;
            // Caches start over, so what was marked before is moot.
            drop(feed.take());
            let body = AtpReset {
                reason: reason.into(),
                as_of: view.applied_all(),
            };
            send(&ctx, subject::ATP_RESET.to_string(), &body).await;
            continue;
        }
        let channels = view.channels();
        let mut published = 0;
        let mut buf = Vec::with_capacity(1024);
        for (sku, mut locs) in feed.take() {
            encode_changed(&mut buf, view, &channels, &sku, &mut locs);
            let bytes = bytes::Bytes::copy_from_slice(&buf);
            publish(&ctx, subject::changed(sku.as_str()), bytes).await;
            published += 1;
        }
        window = cfg.next_window(published);
    }
}

async fn send<T: Serialize>(ctx: &QueryContext, subject: String, body: &T) {
    match serde_json::to_vec(body) {
        Ok(b) => publish(ctx, subject, b.into()).await,
        Err(error) => tracing::error!(%error, subject, "change feed message not encoded"),
    }
}

async fn publish(ctx: &QueryContext, subject: String, bytes: bytes::Bytes) {
    match ctx.client.publish(subject, bytes).await {
        Ok(()) => {
            ctx.metrics
                .feed_messages
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Err(error) => tracing::warn!(%error, "change feed message not published"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_message_is_the_serialized_answer() {
        use retailflow_core::apply::ledger::{ChannelInfo, Position};
        let view = View::new(1);
        let sku = Sku::new("SKU-1");
        // Inserted out of name order, as a shard meets them.
        let held = ["S2", "DC1", "S\"1", "DC2"];
        for (i, l) in held.iter().enumerate() {
            let i = i as i64;
            view.put(
                &sku,
                &LocationId::new(*l),
                Position {
                    on_hand: 10 * i - 5,
                    reserved: i,
                    safety_stock: 1,
                    in_transit: 3 * i,
                },
            );
        }
        view.set_applied(0, 42);
        let dcs: Vec<LocationId> = ["DC1", "DC2"].map(LocationId::new).to_vec();
        let info = |buffer| ChannelInfo {
            buffer,
            ..Default::default()
        };
        view.set_channels(vec![
            (ChannelId::new("web"), info(2), dcs.clone()),
            (ChannelId::new("app"), info(0), vec![dcs[1].clone()]),
            (
                ChannelId::new("stores"),
                info(0),
                vec![LocationId::new("S2")],
            ),
        ]);
        let channels = view.channels();
        let mut buf = vec![b'x'; 3];
        for changed_names in [
            vec!["S2"],
            vec!["DC2", "S\"1", "DC1"],
            vec!["nowhere", "DC1"],
            vec![],
        ] {
            let mut locs: Vec<LocationId> =
                changed_names.iter().map(|l| LocationId::new(*l)).collect();
            let expected = serde_json::to_vec(&changed(&view, &channels, &sku, &locs)).unwrap();
            encode_changed(&mut buf, &view, &channels, &sku, &mut locs);
            assert_eq!(
                String::from_utf8(buf.clone()).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
        // A SKU the view has never seen.
        let unknown = Sku::new("SKU-9");
        let mut locs = vec![LocationId::new("DC1")];
        let expected = serde_json::to_vec(&changed(&view, &channels, &unknown, &locs)).unwrap();
        encode_changed(&mut buf, &view, &channels, &unknown, &mut locs);
        assert_eq!(buf, expected);
    }
}
