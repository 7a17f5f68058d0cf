//! Locations and channels (master data) and sourcing: which fulfilment locations cover a
//! quantity of a SKU for a channel or a location, by the channel's rule.

use super::Ledger;
use super::cells::slot_key;
use crate::domain::{ChannelId, ChannelUpsert, LocationId, LocationKind, LocationUpsert};
use crate::domain::{SourcingRule, Target};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// Allocations: (location index, quantity).
pub(super) type Allocs = SmallVec<[(u32, i64); 2]>;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LocationInfo {
    pub kind: Option<LocationKind>,
    pub priority: u32,
    pub channels: Vec<ChannelId>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChannelInfo {
    pub rule: SourcingRule,
    pub allow_split: bool,
    pub buffer: i64,
    /// Fulfilment locations, ordered by (priority, location id).
    pub locations: Vec<u32>,
}

impl Default for ChannelInfo {
    fn default() -> Self {
        ChannelInfo {
            rule: SourcingRule::Priority,
            allow_split: false,
            buffer: 0,
            locations: Vec::new(),
        }
    }
}

impl Ledger {
    #[inline]
    pub(super) fn loc_idx(&mut self, loc: &LocationId) -> u32 {
        let i = self.locs.intern(loc);
        if self.locations.len() <= i as usize {
            self.locations
                .resize(i as usize + 1, LocationInfo::default());
        }
        i
    }

    /// The channel table if it changed since the last call (names resolved).
    pub fn take_channels_if_changed(
        &mut self,
    ) -> Option<Vec<(ChannelId, ChannelInfo, Vec<LocationId>)>> {
        if !self.channels_changed {
            return None;
        }
        self.channels_changed = false;
        let mut out: Vec<_> = self
            .channels
            .iter()
            .map(|(c, info)| {
                let names = info
                    .locations
                    .iter()
                    .map(|&l| self.locs.name(l).clone())
                    .collect();
                (c.clone(), info.clone(), names)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Some(out)
    }

    /// `Op::Location`: records the location and moves it into the channels it now serves.
    #[inline]
    pub(super) fn location_upsert(&mut self, u: &LocationUpsert) {
        let l = self.loc_idx(&u.location);
        self.locations[l as usize] = LocationInfo {
            kind: Some(u.kind),
            priority: u.priority,
            channels: u.channels.clone(),
        };
        for info in self.channels.values_mut() {
            info.locations.retain(|&x| x != l);
        }
        for c in &u.channels {
            self.channels
                .entry(c.clone())
                .or_default()
                .locations
                .push(l);
        }
        self.sort_channels();
    }

    /// `Op::Channel`: the channel's sourcing rule, split permission and buffer.
    #[inline]
    pub(super) fn channel_upsert(&mut self, c: &ChannelUpsert) {
        let info = self.channels.entry(c.channel.clone()).or_default();
        info.rule = c.rule;
        info.allow_split = c.allow_split;
        info.buffer = c.buffer;
        self.channels_changed = true;
    }

    fn sort_channels(&mut self) {
        let locations = &self.locations;
        let locs = &self.locs;
        for info in self.channels.values_mut() {
            info.locations.sort_by(|&a, &b| {
                let pa = locations[a as usize].priority;
                let pb = locations[b as usize].priority;
                pa.cmp(&pb).then_with(|| locs.name(a).cmp(locs.name(b)))
            });
        }
        self.channels_changed = true;
    }

    /// Available for a channel at one location: never below zero, less the channel's buffer.
    fn sellable(&self, s: u32, l: u32, buffer: i64) -> i64 {
        match self.slots.get(slot_key(s, l)) {
            Some(slot) => (self.cells[slot as usize].pos.available() - buffer).max(0),
            None => 0,
        }
    }

    /// Picks locations for `qty` of sku `s`: returns the allocations and the total sellable.
    /// `must_fill` (orders, which are facts) puts any shortfall on the first candidate.
    pub(super) fn source(
        &self,
        s: u32,
        target: &Target,
        qty: i64,
        allow_partial: bool,
        must_fill: bool,
    ) -> (Allocs, i64) {
        let (mut candidates, rule, split, buffer): (Vec<u32>, SourcingRule, bool, i64) =
            match target {
                Target::Location(loc) => match self.locs.get(loc) {
                    Some(l) => (vec![l], SourcingRule::Priority, false, 0),
                    None => (vec![], SourcingRule::Priority, false, 0),
                },
                Target::Channel(c) => match self.channels.get(c) {
                    Some(info) => (
                        info.locations.clone(),
                        info.rule,
                        info.allow_split,
                        info.buffer,
                    ),
                    None => (vec![], SourcingRule::Priority, false, 0),
                },
            };
        let sellable: Vec<i64> = candidates
            .iter()
            .map(|&l| self.sellable(s, l, buffer))
            .collect();
        let total: i64 = sellable.iter().sum();
        if rule == SourcingRule::MostAvailable {
            // Stable sort keeps priority order among equals.
            let mut pairs: Vec<(u32, i64)> = candidates
                .iter()
                .copied()
                .zip(sellable.iter().copied())
                .collect();
            pairs.sort_by_key(|p| std::cmp::Reverse(p.1));
            candidates = pairs.iter().map(|p| p.0).collect();
        }
        let sell = |l: u32| self.sellable(s, l, buffer);
        let mut allocs = Allocs::new();
        if let Some(&l) = candidates.iter().find(|&&l| sell(l) >= qty) {
            allocs.push((l, qty));
            return (allocs, total);
        }
        if split {
            let mut left = qty;
            for &l in &candidates {
                let take = sell(l).min(left);
                if take > 0 {
                    allocs.push((l, take));
                    left -= take;
                }
            }
            if left > 0 && must_fill {
                match allocs.first_mut() {
                    Some(a) => a.1 += left,
                    None => {
                        if let Some(&l) = candidates.first() {
                            allocs.push((l, left));
                        }
                    }
                }
            } else if left > 0 && !allow_partial {
                allocs.clear();
            }
            return (allocs, total);
        }
        if must_fill {
            if let Some(&l) = candidates.first() {
                allocs.push((l, qty));
            }
        } else if allow_partial {
            if let Some(&l) = candidates
                .iter()
                .max_by_key(|&&l| (sell(l), std::cmp::Reverse(l)))
            {
                let take = sell(l);
                if take > 0 {
                    allocs.push((l, take));
                }
            }
        }
        (allocs, total)
    }
}
