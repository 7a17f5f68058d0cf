//! The sliding rate-limit window: at most `limit_requests` postings requests in any
//! `limit_window`, as Dataverse service protection counts them.

use crate::answer::whole_seconds;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Sliding-window log: at most `limit` requests in any `window`.
#[derive(Debug)]
pub(crate) struct SlidingWindow {
    limit: usize,
    window: Duration,
    /// Arrival instants of the requests still inside the window, oldest first.
    log: VecDeque<Instant>,
    max_seen: usize,
}

impl SlidingWindow {
    pub fn new(limit: u32, window: Duration) -> SlidingWindow {
        SlidingWindow {
            limit: limit as usize,
            window,
            log: VecDeque::new(),
            max_seen: 0,
        }
    }

    /// Records a request arriving at `now`, or refuses it with the whole seconds until the
    /// oldest request leaves the window. Refused requests are not recorded, so a client that
    /// waits for the `Retry-After` it was given does get through.
    pub fn try_admit(&mut self, now: Instant) -> Result<(), u64> {
        while let Some(&oldest) = self.log.front() {
            if oldest + self.window <= now {
                self.log.pop_front();
            } else {
                break;
            }
        }
        if self.log.len() >= self.limit {
            let wait = self.log.front().map_or(Duration::ZERO, |&oldest| {
                (oldest + self.window).saturating_duration_since(now)
            });
            return Err(whole_seconds(wait));
        }
        // Callers read the clock before taking the lock, so instants can arrive a hair out of
        // order; clamping keeps the log sorted, which the pruning above relies on.
        let at = self.log.back().map_or(now, |&last| last.max(now));
        self.log.push_back(at);
        self.max_seen = self.max_seen.max(self.log.len());
        Ok(())
    }

    /// The most requests the window has held at once.
    pub fn max_seen(&self) -> usize {
        self.max_seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::secs;

    #[test]
    fn window_refuses_when_full_and_says_when_the_oldest_leaves() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(3, Duration::from_secs(10));
        for s in [0.0, 1.0, 2.0] {
            assert_eq!(w.try_admit(t0 + secs(s)), Ok(()));
        }
        // Oldest arrived at 0 s and leaves at 10 s: 7.5 s rounds up to 8.
        assert_eq!(w.try_admit(t0 + secs(2.5)), Err(8));
        // Half a second short still asks for a whole one, never 0.
        assert_eq!(w.try_admit(t0 + secs(9.5)), Err(1));
        // Refusals were not recorded: at 10 s exactly one slot is free again.
        assert_eq!(w.try_admit(t0 + secs(10.0)), Ok(()));
        assert_eq!(w.try_admit(t0 + secs(10.0)), Err(1));
        assert_eq!(w.max_seen, 3);
        assert_eq!(whole_seconds(Duration::ZERO), 1);
        assert_eq!(whole_seconds(Duration::from_secs(4)), 4);
        assert_eq!(whole_seconds(secs(4.001)), 5);
    }
}
