//! What the simulator counts: answers by outcome, and requests per wall-clock second.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;

/// Counts of one wall-clock second, numbered from the simulator's start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelinePoint {
    pub second: u64,
    pub requests: u64,
    pub accepted: u64,
    pub throttled: u64,
}

/// How the simulator has been used. Each answered postings request lands in exactly one of
/// `accepted`, `replays`, `rejected` (400), `throttled` (429), `injected_errors` (503) and
/// `unauthorized` (401); a request whose client hangs up during its latency is in `requests`
/// only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub requests: u64,
    pub accepted: u64,
    pub replays: u64,
    pub rejected: u64,
    pub throttled: u64,
    /// 503s from `error_rate_permille` and from outage mode.
    pub injected_errors: u64,
    /// 401s from unauthorized mode.
    #[serde(default)]
    pub unauthorized: u64,
    /// Documents accepted again under a different idempotency key: double bookings.
    pub duplicate_documents: u64,
    /// 429s because the sliding window was full (a client that respects the limit causes none).
    #[serde(default)]
    pub throttled_window: u64,
    /// 429s because too many requests were in flight.
    #[serde(default)]
    pub throttled_concurrency: u64,
    pub max_in_flight: usize,
    pub max_in_window: usize,
    pub limit_requests: u32,
    pub limit_window_s: u64,
    pub max_concurrent: usize,
    /// Only seconds in which something happened, in order.
    pub timeline: Vec<TimelinePoint>,
}

/// Answers by outcome, counted as they are given.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub throttled_window: u64,
    pub throttled_concurrency: u64,
    pub requests: u64,
    pub accepted: u64,
    pub replays: u64,
    pub rejected: u64,
    pub throttled: u64,
    pub injected_errors: u64,
    pub unauthorized: u64,
    pub duplicate_documents: u64,
}

/// Counts per wall-clock second, numbered from the simulator's start. Sparse: an idle hour
/// costs nothing.
#[derive(Debug)]
pub(crate) struct Timeline {
    started: Instant,
    seconds: BTreeMap<u64, TimelinePoint>,
}

impl Timeline {
    pub fn new(started: Instant) -> Timeline {
        Timeline {
            started,
            seconds: BTreeMap::new(),
        }
    }

    /// The counts of the second `now` falls in.
    pub fn at(&mut self, now: Instant) -> &mut TimelinePoint {
        let second = now.saturating_duration_since(self.started).as_secs();
        self.seconds.entry(second).or_insert_with(|| TimelinePoint {
            second,
            ..TimelinePoint::default()
        })
    }

    /// The seconds in which something happened, in order.
    pub fn points(&self) -> Vec<TimelinePoint> {
        self.seconds.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::secs;

    #[test]
    fn the_timeline_keeps_only_busy_seconds_in_order() {
        let t0 = Instant::now();
        let mut timeline = Timeline::new(t0);
        timeline.at(t0 + secs(61.5)).requests += 1;
        timeline.at(t0 + secs(0.2)).requests += 1;
        timeline.at(t0 + secs(0.9)).accepted += 1;
        let seconds: Vec<(u64, u64, u64)> = timeline
            .points()
            .iter()
            .map(|p| (p.second, p.requests, p.accepted))
            .collect();
        assert_eq!(seconds, [(0, 1, 1), (61, 1, 0)]);
    }
}
