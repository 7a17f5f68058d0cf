//! Request rate limiting for one ERP endpoint.
//!
//! Two rules hold together:
//! - a sliding-window log: never more than `requests` grants in any `window` (this is how
//!   Dataverse service protection and Business Central count, so it is the hard guarantee);
//! - a token bucket (GCRA form) with rate `requests / window` and capacity `burst`, which
//!   spreads requests out instead of spending a whole window's allowance in the first second.
//!
//! A `Retry-After` from the ERP pauses all grants until it has passed. Time is passed in, so the
//! limiter is tested with tokio's paused clock.
//!
//! The ERP counts a request when it arrives, we when we send it; network time differs from one
//! request to the next, so a request sent exactly one window after the oldest could arrive
//! while the ERP still counts that oldest one. The window is therefore kept slightly longer
//! than the ERP's (1%, at most one second).

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed in any window.
    pub requests: u32,
    /// Length of the sliding window, e.g. `"300s"`.
    #[serde(with = "crate::config::duration")]
    pub window: Duration,
    /// Token bucket capacity: how many requests may go back to back. Defaults to 10% of
    /// `requests` (at least 1).
    #[serde(default)]
    pub burst: Option<u32>,
}

impl RateLimit {
    pub fn burst(&self) -> u32 {
        self.burst
            .unwrap_or((self.requests / 10).max(1))
            .clamp(1, self.requests.max(1))
    }
}

#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    /// Instants of the grants inside the current window, oldest first.
    log: VecDeque<Instant>,
    /// GCRA theoretical arrival time.
    tat: Option<Instant>,
    paused_until: Option<Instant>,
    pub granted: u64,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        RateLimiter {
            log: VecDeque::with_capacity(limit.requests as usize),
            limit,
            tat: None,
            paused_until: None,
            granted: 0,
        }
    }

    pub fn limit(&self) -> &RateLimit {
        &self.limit
    }

    fn interval(&self) -> Duration {
        self.window() / self.limit.requests.max(1)
    }

    /// The ERP's window plus the safety margin.
    fn window(&self) -> Duration {
        self.limit.window + (self.limit.window / 100).min(Duration::from_secs(1))
    }

    /// Grants one request now, or says how long to wait before asking again.
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Duration> {
        if let Some(until) = self.paused_until {
            if now < until {
                return Err(until - now);
            }
            self.paused_until = None;
        }
        let window = self.window();
        while let Some(&oldest) = self.log.front() {
            if oldest + window <= now {
                self.log.pop_front();
            } else {
                break;
            }
        }
        let mut wait = Duration::ZERO;
        if self.log.len() >= self.limit.requests as usize {
            if let Some(&oldest) = self.log.front() {
                wait = wait.max(oldest + window - now);
            }
        }
        let t = self.interval();
        let tolerance = t * (self.limit.burst() - 1);
        let tat = self.tat.unwrap_or(now).max(now);
        if let Some(earliest) = tat.checked_sub(tolerance) {
            if earliest > now {
                wait = wait.max(earliest - now);
            }
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        self.tat = Some(tat + t);
        self.log.push_back(now);
        self.granted += 1;
        Ok(())
    }

    /// Honours an ERP's `Retry-After`: nothing is granted before `until`.
    pub fn pause_until(&mut self, until: Instant) {
        self.paused_until = Some(self.paused_until.map_or(until, |u| u.max(until)));
    }

    /// Grants inside the window ending now.
    pub fn in_window(&mut self, now: Instant) -> usize {
        let window = self.window();
        while let Some(&oldest) = self.log.front() {
            if oldest + window <= now {
                self.log.pop_front();
            } else {
                break;
            }
        }
        self.log.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(requests: u32, window_s: u64, burst: Option<u32>) -> RateLimit {
        RateLimit {
            requests,
            window: Duration::from_secs(window_s),
            burst,
        }
    }

    /// Runs a greedy client for `run` and returns the grant instants.
    async fn greedy(l: &mut RateLimiter, run: Duration) -> Vec<Instant> {
        let start = Instant::now();
        let mut grants = Vec::new();
        while Instant::now() - start < run {
            match l.try_acquire(Instant::now()) {
                Ok(()) => grants.push(Instant::now()),
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
        grants
    }

    /// Independent check: slide over every grant and count the grants in the window that
    /// starts there.
    fn max_in_any_window(grants: &[Instant], window: Duration) -> usize {
        let mut best = 0;
        let mut j = 0;
        for i in 0..grants.len() {
            while j < grants.len() && grants[j] < grants[i] + window {
                j += 1;
            }
            best = best.max(j - i);
        }
        best
    }

    #[tokio::test(start_paused = true)]
    async fn never_exceeds_the_sliding_window_even_with_full_burst() {
        let lim = limit(600, 60, Some(600));
        let mut l = RateLimiter::new(lim.clone());
        let grants = greedy(&mut l, Duration::from_secs(600)).await;
        assert!(max_in_any_window(&grants, lim.window) <= 600);
        // Ten minutes at 10/s, plus the first burst.
        assert!(
            grants.len() >= 6000 && grants.len() <= 6600,
            "{}",
            grants.len()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dataverse_shape_is_paced_not_front_loaded() {
        let lim = limit(6000, 300, None);
        let mut l = RateLimiter::new(lim.clone());
        let grants = greedy(&mut l, Duration::from_secs(10)).await;
        // Burst of 600, then 20/s for the remaining ~10 s.
        assert!(
            grants.len() >= 600 && grants.len() <= 600 + 201,
            "{}",
            grants.len()
        );
        assert!(max_in_any_window(&grants, Duration::from_secs(300)) <= 6000);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_pauses_everything() {
        let mut l = RateLimiter::new(limit(100, 1, Some(100)));
        let now = Instant::now();
        l.pause_until(now + Duration::from_secs(5));
        assert_eq!(l.try_acquire(now), Err(Duration::from_secs(5)));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(l.try_acquire(Instant::now()), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn business_central_shape_600_per_minute() {
        let lim = limit(600, 60, Some(5));
        let mut l = RateLimiter::new(lim.clone());
        let grants = greedy(&mut l, Duration::from_secs(180)).await;
        assert!(max_in_any_window(&grants, lim.window) <= 600);
        assert!(max_in_any_window(&grants, Duration::from_secs(1)) <= 5 + 10);
        // 10/s less the 1% safety margin on the window: about 1,782 in 180 s.
        assert!(grants.len() >= 1775, "{}", grants.len());
    }
}
