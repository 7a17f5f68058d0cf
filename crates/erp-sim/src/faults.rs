//! Fault modes switched at run time: an outage, a 429 storm or an expired token, for a time or
//! a number of requests. A fault answers every postings request before any other rule looks
//! at it.

use crate::answer::{Answer, whole_seconds};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Failure the simulator is told to play, whatever the requests look like.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultMode {
    #[default]
    Normal,
    /// Every postings request answers 503.
    Outage,
    /// Every postings request answers 429 (a "429 storm").
    Throttle,
    /// Every postings request answers 401, as when the ERP's token has expired.
    Unauthorized,
}

/// A fault to play: the mode, and optionally how long, for how many requests and with which
/// `Retry-After` text. It ends at whichever limit comes first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultPlan {
    pub mode: FaultMode,
    /// How long the mode lasts; `None`: until changed (or `requests` ran out).
    pub lasts: Option<Duration>,
    /// How many postings requests it answers; `None`: any number.
    pub requests: Option<u64>,
    /// `Retry-After` sent with every answer of the fault, as given.
    pub retry_after: Option<String>,
}

/// The fault mode in force, as `POST /api/v1/admin/fault` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultStatus {
    pub mode: FaultMode,
    /// Whole seconds until the mode reverts to normal; `None` while it lasts until changed.
    pub remaining_s: Option<u64>,
}

/// The fault in force.
#[derive(Debug, Default)]
pub(crate) struct Fault {
    mode: FaultMode,
    until: Option<Instant>,
    /// Requests the fault still answers.
    requests_left: Option<u64>,
    retry_after: Option<String>,
}

impl Fault {
    /// `plan`, played from `now`.
    pub fn start(plan: FaultPlan, now: Instant) -> Fault {
        match plan.mode {
            FaultMode::Normal => Fault::default(),
            // A length no clock holds is "until changed".
            mode => Fault {
                mode,
                until: plan.lasts.and_then(|d| now.checked_add(d)),
                requests_left: plan.requests,
                retry_after: plan.retry_after,
            },
        }
    }

    /// The mode at `now` and how long it still lasts; a timed fault that has run out reverts
    /// to normal here, so no timer task is needed.
    fn current(&mut self, now: Instant) -> (FaultMode, Option<Duration>) {
        if self.until.is_some_and(|until| now >= until) || self.requests_left == Some(0) {
            *self = Fault::default();
        }
        (
            self.mode,
            self.until.map(|until| until.saturating_duration_since(now)),
        )
    }

    pub fn status(&mut self, now: Instant) -> FaultStatus {
        let (mode, left) = self.current(now);
        FaultStatus {
            mode,
            remaining_s: left.map(whole_seconds),
        }
    }

    /// What the fault answers a postings request arriving at `now`, with the mode that
    /// answers it; `None` in normal mode. The request counts against the plan's `requests`.
    pub fn answer(&mut self, now: Instant) -> Option<(FaultMode, Answer)> {
        let (mode, left) = self.current(now);
        let answer = match mode {
            FaultMode::Normal => return None,
            FaultMode::Outage => Answer::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "service unavailable (simulated outage)",
            ),
            FaultMode::Unauthorized => Answer::error(
                StatusCode::UNAUTHORIZED,
                "the access token has expired (simulated)",
            ),
            // An open-ended storm has no end to announce; 1 s keeps the client probing.
            FaultMode::Throttle => Answer::error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate limit exceeded (simulated throttling)",
            )
            .retry_after(left.map_or(1, whole_seconds)),
        };
        if let Some(n) = self.requests_left.as_mut() {
            *n = n.saturating_sub(1);
        }
        Some((mode, answer.retry_after_text(self.retry_after.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::secs;

    #[test]
    fn a_plan_of_n_requests_answers_n_then_reverts() {
        let t0 = Instant::now();
        let mut fault = Fault::start(
            FaultPlan {
                mode: FaultMode::Unauthorized,
                requests: Some(2),
                retry_after: Some("Wed, 21 Oct 2015 07:28:00 GMT".into()),
                ..FaultPlan::default()
            },
            t0,
        );
        for _ in 0..2 {
            let (mode, answer) = fault.answer(t0).expect("the plan answers");
            assert_eq!(mode, FaultMode::Unauthorized);
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
            assert_eq!(
                answer.retry_after_text.as_deref(),
                Some("Wed, 21 Oct 2015 07:28:00 GMT")
            );
        }
        assert_eq!(fault.answer(t0), None);
        assert_eq!(fault.status(t0).mode, FaultMode::Normal);
    }

    #[test]
    fn a_timed_storm_announces_what_is_left_and_reverts_on_time() {
        let t0 = Instant::now();
        let mut fault = Fault::start(
            FaultPlan {
                mode: FaultMode::Throttle,
                lasts: Some(Duration::from_secs(30)),
                ..FaultPlan::default()
            },
            t0,
        );
        let (_, answer) = fault.answer(t0 + secs(4.5)).expect("the storm answers");
        assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(answer.retry_after, Some(26));
        assert_eq!(fault.status(t0 + secs(29.5)).remaining_s, Some(1));
        assert_eq!(fault.answer(t0 + secs(30.0)), None);
    }

    #[test]
    fn a_length_no_clock_holds_lasts_until_changed() {
        let t0 = Instant::now();
        let mut fault = Fault::start(
            FaultPlan {
                mode: FaultMode::Outage,
                lasts: Some(Duration::MAX),
                ..FaultPlan::default()
            },
            t0,
        );
        let status = fault.status(t0);
        assert_eq!((status.mode, status.remaining_s), (FaultMode::Outage, None));
    }
}
