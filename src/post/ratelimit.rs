//! Request rate limiting for one ERP endpoint.
//!
//! Two rules hold together:
//! - a sliding-window log: never more than `requests` grants in any `window` (this is how
//!   Dataverse service protection and Business Central count, so it is the hard guarantee);
//! - a token bucket (GCRA form) with rate `requests / window` and capacity `burst`, which
//!   spreads requests out instead of spending a whole window's allowance in the first second.
//!
//! A `Retry-After` from the ERP pauses all grants until it has passed. So does a fault of the
//! endpoint itself (an expired token, an ERP that is down): then grants stop for a backoff that
//! doubles with each failed probe, and after each pause a single request goes out as the probe;
//! its success ends the paused state. Time is passed in, so the limiter is tested with tokio's
//! paused clock. Every instant is computed with `checked_add`: a duration from the network
//! must not be able to panic the clock while the limiter's lock is held.
//!
//! The ERP counts a request when it arrives, we when we send it; network time differs from one
//! request to the next, so a request sent exactly one window after the oldest could arrive
//! while the ERP still counts that oldest one. The window is therefore kept slightly longer
//! than the ERP's (1%, at most one second).

use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

pub use crate::config::RateLimit;

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
    /// Consecutive failed probes of an endpoint fault; 0 while the endpoint is healthy.
    faults: u32,
    /// A probe was granted in the paused state and its answer has not come back.
    probing: bool,
    /// The current fault backoff: how long the others wait for a probe's answer.
    hold: Duration,
    pub granted: u64,
}

/// How far away "never" is for an instant that would overflow: far beyond any `retry.max`.
const FAR: Duration = Duration::from_secs(365 * 24 * 3600);

fn later(now: Instant, by: Duration) -> Instant {
    now.checked_add(by)
        .or_else(|| now.checked_add(FAR))
        .unwrap_or(now)
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        RateLimiter {
            log: VecDeque::with_capacity(limit.requests as usize),
            limit,
            tat: None,
            paused_until: None,
            faults: 0,
            probing: false,
            hold: Duration::ZERO,
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
        self.limit
            .window
            .saturating_add((self.limit.window / 100).min(Duration::from_secs(1)))
    }

    /// Drops the grants that left the window ending at `now`.
    fn expire(&mut self, now: Instant) {
        let window = self.window();
        while let Some(&oldest) = self.log.front() {
            if later(oldest, window) <= now {
                self.log.pop_front();
            } else {
                break;
            }
        }
    }

    /// Grants one request now, or says how long to wait before asking again.
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Duration> {
        if let Some(until) = self.paused_until {
            if now < until {
                return Err(until - now);
            }
            self.paused_until = None;
        }
        self.expire(now);
        let window = self.window();
        let mut wait = Duration::ZERO;
        if self.log.len() >= self.limit.requests as usize {
            if let Some(&oldest) = self.log.front() {
                wait = wait.max(later(oldest, window).saturating_duration_since(now));
            }
        }
        let t = self.interval();
        let tolerance = t.saturating_mul(self.limit.burst() - 1);
        let tat = self.tat.unwrap_or(now).max(now);
        if let Some(earliest) = tat.checked_sub(tolerance) {
            if earliest > now {
                wait = wait.max(earliest - now);
            }
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        if self.faults > 0 {
            // Paused for a fault: this grant is the probe. The others wait for its answer, or
            // for another backoff if the answer never comes (its task died).
            self.probing = true;
            self.paused_until = Some(later(now, self.hold));
        }
        self.tat = Some(later(tat, t));
        self.log.push_back(now);
        self.granted += 1;
        Ok(())
    }

    /// The endpoint failed for a reason of its own, not the document's. Starts or lengthens the
    /// paused state: nothing is granted for `backoff(faults)`, then one probe. Answers to
    /// requests sent before the pause began do not lengthen it (fifty requests in flight when
    /// a token expires are one failure, not fifty). Returns the consecutive failures and the
    /// pause when this answer counted; `faults == 1` means the endpoint has just been paused.
    pub fn fault(
        &mut self,
        now: Instant,
        initial: Duration,
        max: Duration,
    ) -> Option<(u32, Duration)> {
        if self.faults > 0 && !self.probing {
            return None;
        }
        self.probing = false;
        self.faults = self.faults.saturating_add(1);
        let wait = super::delivery::backoff(u64::from(self.faults), initial, max);
        self.hold = wait;
        self.pause_until(later(now, wait));
        Some((self.faults, wait))
    }

    /// The endpoint answered (accepted or refused a document): ends the paused state. Returns
    /// the consecutive failures when it was paused.
    pub fn healthy(&mut self) -> Option<u32> {
        if self.faults == 0 {
            return None;
        }
        let failed = self.faults;
        self.faults = 0;
        self.probing = false;
        self.paused_until = None;
        Some(failed)
    }

    /// Whether the endpoint is paused for a fault of its own.
    pub fn is_faulted(&self) -> bool {
        self.faults > 0
    }

    /// Honours an ERP's `Retry-After`: nothing is granted before `until`.
    pub fn pause_until(&mut self, until: Instant) {
        self.paused_until = Some(self.paused_until.map_or(until, |u| u.max(until)));
    }

    /// Grants inside the window ending now.
    pub fn in_window(&mut self, now: Instant) -> usize {
        self.expire(now);
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

    #[tokio::test(start_paused = true)]
    async fn an_endpoint_fault_pauses_then_probes_once_with_doubling_backoff() {
        let (initial, max) = (Duration::from_millis(200), Duration::from_secs(1));
        let mut l = RateLimiter::new(limit(1000, 1, Some(1000)));
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(l.try_acquire(t0), Ok(()));
        }
        // Five requests in flight all come back 401: one failure.
        assert_eq!(l.fault(t0, initial, max), Some((1, initial)));
        for _ in 0..4 {
            assert_eq!(l.fault(t0, initial, max), None);
        }
        assert!(l.is_faulted());
        assert_eq!(l.try_acquire(t0), Err(initial));
        tokio::time::advance(initial).await;
        let t1 = Instant::now();
        assert_eq!(l.try_acquire(t1), Ok(()), "the probe");
        assert!(l.try_acquire(t1).is_err(), "only one probe at a time");
        assert_eq!(l.fault(t1, initial, max), Some((2, 2 * initial)));
        // The backoff doubles up to `max` and stays there.
        let mut now = t1;
        let mut waits = Vec::new();
        for _ in 0..6 {
            let Err(wait) = l.try_acquire(now) else {
                panic!("granted while paused")
            };
            now += wait;
            assert_eq!(l.try_acquire(now), Ok(()));
            waits.push(l.fault(now, initial, max).map(|(_, w)| w));
        }
        let ms = |m| Some(Duration::from_millis(m));
        assert_eq!(
            waits,
            [ms(800), ms(1000), ms(1000), ms(1000), ms(1000), ms(1000)]
        );
        // The probe's success ends the pause at once.
        let wait = l.try_acquire(now).unwrap_err();
        now += wait;
        assert_eq!(l.try_acquire(now), Ok(()));
        assert_eq!(l.healthy(), Some(8));
        assert!(!l.is_faulted());
        assert_eq!(l.try_acquire(now), Ok(()));
        assert_eq!(l.try_acquire(now), Ok(()));
        assert_eq!(l.healthy(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_whose_answer_never_comes_lets_another_go_after_the_backoff() {
        let (initial, max) = (Duration::from_millis(200), Duration::from_secs(1));
        let mut l = RateLimiter::new(limit(1000, 1, Some(1000)));
        let now = Instant::now();
        l.fault(now, initial, max);
        let t = now + initial;
        assert_eq!(l.try_acquire(t), Ok(()));
        assert_eq!(l.try_acquire(t), Err(initial));
        assert_eq!(l.try_acquire(t + initial), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_and_windows_beyond_the_clock_do_not_panic() {
        let mut l = RateLimiter::new(RateLimit {
            requests: 1,
            window: Duration::MAX,
            burst: None,
        });
        let now = Instant::now();
        assert_eq!(l.try_acquire(now), Ok(()));
        assert!(l.try_acquire(now).is_err());
        assert_eq!(l.in_window(now), 1);
        let mut p = RateLimiter::new(limit(10, 1, None));
        p.pause_until(later(now, Duration::MAX));
        assert!(p.try_acquire(now).is_err());
        assert_eq!(
            p.fault(now, Duration::MAX, Duration::MAX).map(|f| f.0),
            Some(1)
        );
    }
}
