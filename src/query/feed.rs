//! The availability change feed. A shard marks the (location, sku) positions each batch
//! changed; one task wakes every `feed.interval`, takes what was marked and publishes each SKU
//! once on `retail.v1.atp.changed.<sku>`, with the changed locations' availability read from
//! the view at that moment. Ten changes to one position inside a window cost one message, and
//! the message carries the latest state of each position it names, never a delta, so a
//! subscriber that misses one is corrected by the next change of that position.
//!
//! The feed is core NATS (at most once). When every cached answer may be stale — the view was
//! rebuilt after a start or restart, or a channel definition changed — the task publishes one
//! message on `retail.v1.atp.reset` instead, and caches drop what they hold.

use super::model::{
    ChannelAvailability, LocationAvailability, Positions, channel_answer, loc_answer,
};
use crate::apply::view::{ChannelView, View};
use crate::domain::{ChannelId, LocationId, Sku, subject};
use crate::supervise::shared::Shared;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// (location, sku) positions changed since the last publication, by SKU.
#[derive(Default)]
pub struct ChangeFeed {
    enabled: bool,
    pending: Mutex<FxHashMap<Sku, SmallVec<[LocationId; 2]>>>,
    channels_changed: AtomicBool,
}

impl ChangeFeed {
    pub fn new(enabled: bool) -> ChangeFeed {
        ChangeFeed {
            enabled,
            ..ChangeFeed::default()
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Shard side: these positions changed.
    pub fn mark<'a>(&self, changed: impl IntoIterator<Item = (&'a Sku, &'a LocationId)>) {
        if let Ok(mut map) = self.pending.lock() {
            for (sku, loc) in changed {
                match map.get_mut(sku) {
                    Some(locs) => {
                        if !locs.contains(loc) {
                            locs.push(loc.clone());
                        }
                    }
                    None => {
                        map.insert(sku.clone(), smallvec::smallvec![loc.clone()]);
                    }
                }
            }
        }
    }

    /// Shard side: the channel table changed.
    pub fn mark_channels(&self) {
        self.channels_changed.store(true, Ordering::Release);
    }

    fn take(&self) -> FxHashMap<Sku, SmallVec<[LocationId; 2]>> {
        self.pending
            .lock()
            .map(|mut map| std::mem::take(&mut *map))
            .unwrap_or_default()
    }
}

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
        let positions = Positions::new(entries.unwrap_or_default(), changed.len());
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

/// Publishes the feed until the pipeline stops.
pub async fn run(shared: Arc<Shared>) {
    let feed = &shared.feed;
    if !feed.enabled() {
        return;
    }
    let mut tick = tokio::time::interval(shared.config.feed.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut epoch = 0;
    loop {
        tick.tick().await;
        if shared.stopping.load(Ordering::Relaxed) {
            return;
        }
        let view = &shared.view;
        if !view.is_ready() {
            continue;
        }
        let now_epoch = view.ready_epoch();
        let channels = feed.channels_changed.swap(false, Ordering::AcqRel);
        if now_epoch != epoch || channels {
            let reason = if now_epoch != epoch {
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
            send(&shared, subject::ATP_RESET.to_string(), &body).await;
            continue;
        }
        let channels = view.channels();
        for (sku, locs) in feed.take() {
            let body = changed(view, &channels, &sku, &locs);
            send(&shared, subject::changed(sku.as_str()), &body).await;
        }
    }
}

async fn send<T: Serialize>(shared: &Shared, subject: String, body: &T) {
    let bytes = match serde_json::to_vec(body) {
        Ok(b) => b,
        Err(error) => {
            tracing::error!(%error, subject, "change feed message not encoded");
            return;
        }
    };
    match shared.client.publish(subject, bytes.into()).await {
        Ok(()) => {
            shared
                .metrics
                .feed_messages
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Err(error) => tracing::warn!(%error, "change feed message not published"),
    }
}
