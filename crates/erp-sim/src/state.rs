//! The request flow, without HTTP: [`SimState`] holds every rule's state and takes a postings
//! request through the rules in order (fault mode, concurrency cap, sliding window, replay,
//! refused location, injected error, latency, booking), counting each answer. The rules
//! themselves live in their own modules: `faults`, `concurrency`, `window`, `idempotency`,
//! `injection`, `books`, `stats`.
//!
//! Time is passed in, so every rule is tested with made-up instants. Everything mutable sits
//! behind one std `Mutex` (nothing awaits while holding it) except the in-flight counts, which
//! are atomic because a slot is given back in `Drop`, also when a client hangs up mid-request.

use crate::answer::Answer;
use crate::books::{Books, Totals};
use crate::concurrency::{InFlight, Slots};
use crate::config::ErpSimConfig;
use crate::faults::{Fault, FaultMode, FaultPlan, FaultStatus};
use crate::idempotency::Idempotency;
use crate::injection::{injects_error, latency};
use crate::stats::{Counters, Stats, Timeline};
use crate::window::SlidingWindow;
use axum::http::StatusCode;
use retailflow_core::aggregate::posting::PostingDoc;
use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The outcome of screening a parsed document before its latency.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Screened {
    /// Answer now: a replay, a refusal or an injected error.
    Done(Answer),
    /// Wait this long, then `commit`.
    Proceed { latency: Duration },
}

/// What the lock guards.
#[derive(Debug)]
struct Inner {
    fault: Fault,
    window: SlidingWindow,
    idempotency: Idempotency,
    books: Books,
    counters: Counters,
    timeline: Timeline,
    erp_refs: u64,
    /// (last source sequence in the document's lineage, instant accepted), for measuring how
    /// long events take to reach the ERP.
    acceptances: Vec<(u64, Instant)>,
}

impl Inner {
    fn throttle(&mut self, now: Instant, answer: Answer) -> Answer {
        self.counters.throttled += 1;
        self.timeline.at(now).throttled += 1;
        answer
    }

    /// The answer remembered under `key`, marked as a replay and counted.
    fn replay(&mut self, key: &str) -> Option<Answer> {
        let answer = self.idempotency.replay(key)?;
        self.counters.replays += 1;
        Some(answer)
    }
}

/// The simulated ERP.
#[derive(Debug)]
pub(crate) struct SimState {
    config: ErpSimConfig,
    /// Changed at run time through `/api/v1/admin/reject-locations` (the ERP-side fix).
    reject_locations: std::sync::RwLock<HashSet<String>>,
    slots: Slots,
    inner: Mutex<Inner>,
}

impl SimState {
    pub fn new(config: ErpSimConfig, started: Instant) -> SimState {
        SimState {
            reject_locations: std::sync::RwLock::new(
                config.reject_locations.iter().cloned().collect(),
            ),
            slots: Slots::new(config.max_concurrent),
            inner: Mutex::new(Inner {
                fault: Fault::default(),
                window: SlidingWindow::new(config.limit_requests, config.limit_window),
                idempotency: Idempotency::default(),
                acceptances: Vec::new(),
                books: Books::default(),
                counters: Counters::default(),
                timeline: Timeline::new(started),
                erp_refs: 0,
            }),
            config,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding the lock (sums are checked), so a poisoned lock still
        // guards consistent state; carrying on beats failing every later request.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The gates every postings request passes first, in order: fault mode, concurrency cap,
    /// sliding window. The request is counted whatever happens.
    pub fn admit(&self, now: Instant) -> Result<InFlight<'_>, Answer> {
        let mut inner = self.lock();
        inner.counters.requests += 1;
        inner.timeline.at(now).requests += 1;

        if let Some((mode, answer)) = inner.fault.answer(now) {
            return Err(match mode {
                FaultMode::Throttle => inner.throttle(now, answer),
                FaultMode::Unauthorized => {
                    inner.counters.unauthorized += 1;
                    answer
                }
                // Normal mode gives no answer.
                FaultMode::Outage | FaultMode::Normal => {
                    inner.counters.injected_errors += 1;
                    answer
                }
            });
        }

        // Held from here on: a refusal below gives the slot back as `slot` drops.
        let Some(slot) = self.slots.take() else {
            let answer = Answer::error(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many concurrent requests (at most {})",
                    self.config.max_concurrent
                ),
            )
            .retry_after(1);
            inner.counters.throttled_concurrency += 1;
            return Err(inner.throttle(now, answer));
        };

        if let Err(retry) = inner.window.try_admit(now) {
            let answer = Answer::error(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "rate limit exceeded: {} requests in {} s",
                    self.config.limit_requests,
                    self.config.limit_window.as_secs_f64()
                ),
            )
            .retry_after(retry);
            inner.counters.throttled_window += 1;
            return Err(inner.throttle(now, answer));
        }
        Ok(slot)
    }

    /// A request refused before it names a document (no key, unreadable body). Not remembered:
    /// the client may send a corrected body under the same key.
    pub fn bad_request(&self, message: impl Into<String>) -> Answer {
        self.lock().counters.rejected += 1;
        Answer::error(StatusCode::BAD_REQUEST, message)
    }

    /// The earlier answer under `key`, marked as a replay.
    pub fn replay(&self, key: &str) -> Option<Answer> {
        self.lock().replay(key)
    }

    /// The checks that need the document, in order: replay, refused location, injected error.
    pub fn screen(&self, key: &str, doc: &PostingDoc) -> Screened {
        let mut inner = self.lock();
        // Asked again because another request under the same key may have finished since.
        if let Some(answer) = inner.replay(key) {
            return Screened::Done(answer);
        }
        if self.blocked(doc.location.as_str()) {
            inner.counters.rejected += 1;
            // Not remembered: once the master data is fixed, the same document under the
            // same key goes through (a re-drive).
            return Screened::Done(Answer::error(
                StatusCode::BAD_REQUEST,
                format!(
                    "location {} is blocked for posting (simulated master-data error)",
                    doc.location
                ),
            ));
        }
        let attempt = inner.idempotency.attempt(key);
        if injects_error(key, attempt, self.config.error_rate_permille) {
            inner.counters.injected_errors += 1;
            return Screened::Done(Answer::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "transient error (simulated), retry later",
            ));
        }
        Screened::Proceed {
            latency: self.latency_for(key),
        }
    }

    fn blocked(&self, location: &str) -> bool {
        self.reject_locations
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(location)
    }

    /// Replaces the locations whose documents are refused (an empty list fixes them all);
    /// returns the new list, sorted.
    pub fn set_reject_locations(&self, locations: Vec<String>) -> Vec<String> {
        let mut set = self
            .reject_locations
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *set = locations.into_iter().collect();
        let mut list: Vec<String> = set.iter().cloned().collect();
        list.sort();
        list
    }

    /// Where in `latency_min..=latency_max` the answer to `key` lands.
    pub fn latency_for(&self, key: &str) -> Duration {
        latency(key, self.config.latency_min, self.config.latency_max)
    }

    /// Books the document and answers 201, unless a request under the same key was answered
    /// while this one waited out its latency; then that answer is replayed, so two concurrent
    /// sends of one key never book twice.
    pub fn commit(&self, key: &str, doc: &PostingDoc, now: Instant) -> Answer {
        let mut inner = self.lock();
        if let Some(answer) = inner.replay(key) {
            return answer;
        }
        if inner.books.fold(doc).is_err() {
            inner.counters.rejected += 1;
            let answer = Answer::error(
                StatusCode::BAD_REQUEST,
                format!(
                    "document {} would overflow an ERP total (i64 minor units)",
                    doc.id
                ),
            );
            return inner.idempotency.remember(key, answer);
        }
        if !inner.idempotency.first_acceptance(&doc.id) {
            inner.counters.duplicate_documents += 1;
            tracing::warn!(document = %doc.id, key, "ERP simulator booked a document twice");
        }
        inner.counters.accepted += 1;
        inner.acceptances.push((doc.lineage.last_seq, now));
        inner.timeline.at(now).accepted += 1;
        inner.erp_refs += 1;
        let answer = Answer::new(
            StatusCode::CREATED,
            serde_json::json!({
                "status": "accepted",
                "document": doc.id,
                "erp_ref": format!("ERP-{}", inner.erp_refs),
            }),
        );
        inner.idempotency.remember(key, answer)
    }

    /// Switches the fault mode, for `for_` or until switched again.
    pub fn set_fault(&self, mode: FaultMode, for_: Option<Duration>, now: Instant) -> FaultStatus {
        self.play(
            FaultPlan {
                mode,
                lasts: for_,
                ..FaultPlan::default()
            },
            now,
        )
    }

    /// Plays a fault plan from `now`.
    pub fn play(&self, plan: FaultPlan, now: Instant) -> FaultStatus {
        let mut inner = self.lock();
        inner.fault = Fault::start(plan, now);
        inner.fault.status(now)
    }

    pub fn fault(&self, now: Instant) -> FaultStatus {
        self.lock().fault.status(now)
    }

    pub fn totals(&self) -> Totals {
        self.lock().books.totals()
    }

    /// Every acceptance so far: (last stream sequence the document covers, when accepted).
    pub fn acceptances(&self) -> Vec<(u64, Instant)> {
        self.lock().acceptances.clone()
    }

    pub fn stats(&self) -> Stats {
        let inner = self.lock();
        let c = &inner.counters;
        Stats {
            throttled_window: c.throttled_window,
            throttled_concurrency: c.throttled_concurrency,
            requests: c.requests,
            accepted: c.accepted,
            replays: c.replays,
            rejected: c.rejected,
            throttled: c.throttled,
            injected_errors: c.injected_errors,
            unauthorized: c.unauthorized,
            duplicate_documents: c.duplicate_documents,
            max_in_flight: self.slots.max_in_flight(),
            max_in_window: inner.window.max_seen(),
            limit_requests: self.config.limit_requests,
            limit_window_s: self.config.limit_window.as_secs(),
            max_concurrent: self.config.max_concurrent,
            timeline: inner.timeline.points(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{doc, sale, secs};
    use retailflow_core::aggregate::posting::DocBody;

    fn sim(config: ErpSimConfig) -> (SimState, Instant) {
        let t0 = Instant::now();
        (SimState::new(config, t0), t0)
    }

    /// Admits, screens and commits one document the way the HTTP handler does.
    fn post(s: &SimState, key: &str, d: &PostingDoc, now: Instant) -> Answer {
        let _slot = match s.admit(now) {
            Ok(slot) => slot,
            Err(answer) => return answer,
        };
        if let Some(answer) = s.replay(key) {
            return answer;
        }
        match s.screen(key, d) {
            Screened::Done(answer) => answer,
            Screened::Proceed { .. } => s.commit(key, d, now),
        }
    }

    #[test]
    fn window_limit_answers_429_with_retry_after_and_counts() {
        let (s, t0) = sim(ErpSimConfig {
            limit_requests: 2,
            limit_window: Duration::from_secs(60),
            ..ErpSimConfig::default()
        });
        let d = doc("d", "S1", DocBody::SalesSummary(vec![sale("A", 1, 100)]));
        assert_eq!(post(&s, "k1", &d, t0).status, StatusCode::CREATED);
        assert_eq!(
            post(&s, "k2", &d, t0 + secs(20.0)).status,
            StatusCode::CREATED
        );
        let refused = post(&s, "k3", &d, t0 + secs(30.0));
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.retry_after, Some(30));
        // Replays count against the window too: they are requests like any other.
        let replay = post(&s, "k1", &d, t0 + secs(61.0));
        assert_eq!(replay.status, StatusCode::CREATED);
        assert!(replay.replayed);
        let st = s.stats();
        assert_eq!(
            (st.requests, st.accepted, st.throttled, st.replays),
            (4, 2, 1, 1)
        );
        assert_eq!(st.max_in_window, 2);
        let busiest: Vec<(u64, u64, u64, u64)> = st
            .timeline
            .iter()
            .map(|p| (p.second, p.requests, p.accepted, p.throttled))
            .collect();
        assert_eq!(
            busiest,
            [(0, 1, 1, 0), (20, 1, 1, 0), (30, 1, 0, 1), (61, 1, 0, 0)]
        );
    }

    #[test]
    fn concurrency_cap_refuses_with_retry_after_1_and_frees_slots_on_drop() {
        let (s, t0) = sim(ErpSimConfig {
            max_concurrent: 2,
            ..ErpSimConfig::default()
        });
        let a = s.admit(t0).unwrap();
        let _b = s.admit(t0).unwrap();
        let refused = s.admit(t0).err().unwrap();
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.retry_after, Some(1));
        drop(a);
        assert!(s.admit(t0).is_ok());
        let st = s.stats();
        assert_eq!(st.max_in_flight, 2);
        assert_eq!(st.throttled, 1);
        // The refused request never entered the window.
        assert_eq!(st.max_in_window, 3);
    }

    #[test]
    fn a_replay_repeats_the_answer_and_books_nothing() {
        let (s, t0) = sim(ErpSimConfig::default());
        let d = doc("d1", "S1", DocBody::SalesSummary(vec![sale("A", 2, 500)]));
        let first = post(&s, "k", &d, t0);
        assert_eq!(first.status, StatusCode::CREATED);
        assert!(!first.replayed);
        let body: serde_json::Value = serde_json::from_str(&first.body).unwrap();
        assert_eq!(body["status"], "accepted");
        assert_eq!(body["document"], "d1");
        assert_eq!(body["erp_ref"], "ERP-1");
        let totals = s.totals();

        let again = post(&s, "k", &d, t0 + secs(1.0));
        assert_eq!(again.status, first.status);
        assert_eq!(again.body, first.body);
        assert!(again.replayed);
        assert_eq!(s.totals(), totals);
        let st = s.stats();
        assert_eq!((st.accepted, st.replays, st.duplicate_documents), (1, 1, 0));
    }

    #[test]
    fn a_commit_that_finds_its_key_answered_replays_instead_of_booking() {
        let (s, t0) = sim(ErpSimConfig::default());
        let d = doc("d1", "S1", DocBody::SalesSummary(vec![sale("A", 1, 100)]));
        // Two sends of one key both pass screening before either commits.
        assert!(matches!(s.screen("k", &d), Screened::Proceed { .. }));
        assert!(matches!(s.screen("k", &d), Screened::Proceed { .. }));
        let first = s.commit("k", &d, t0);
        let second = s.commit("k", &d, t0);
        assert!(!first.replayed && second.replayed);
        assert_eq!(first.body, second.body);
        assert_eq!(s.totals().documents, 1);
        assert_eq!(s.stats().duplicate_documents, 0);
    }

    #[test]
    fn the_same_document_under_a_new_key_is_booked_again_and_flagged() {
        let (s, t0) = sim(ErpSimConfig::default());
        let d = doc("d1", "S1", DocBody::SalesSummary(vec![sale("A", 2, 700)]));
        assert_eq!(post(&s, "k1", &d, t0).status, StatusCode::CREATED);
        let second = post(&s, "k2", &d, t0);
        assert_eq!(second.status, StatusCode::CREATED);
        assert!(!second.replayed);
        assert!(second.body.contains("ERP-2"), "{}", second.body);
        let st = s.stats();
        assert_eq!((st.accepted, st.duplicate_documents), (2, 1));
        let t = s.totals();
        assert_eq!(t.documents, 2);
        assert_eq!(t.sales[0].sales_amount, 1400, "a naive ERP double-books");
    }

    #[test]
    fn refused_locations_answer_400_until_the_master_data_is_fixed() {
        let (s, t0) = sim(ErpSimConfig {
            reject_locations: vec!["S9".into()],
            ..ErpSimConfig::default()
        });
        let d = doc("d9", "S9", DocBody::SalesSummary(vec![sale("A", 1, 100)]));
        let first = post(&s, "k", &d, t0);
        assert_eq!(first.status, StatusCode::BAD_REQUEST);
        let body: serde_json::Value = serde_json::from_str(&first.body).unwrap();
        assert_eq!(
            body["error"],
            "location S9 is blocked for posting (simulated master-data error)"
        );
        let again = post(&s, "k", &d, t0);
        assert_eq!(
            (again.status, &again.body, again.replayed),
            (first.status, &first.body, false)
        );
        assert_eq!(s.totals().documents, 0);
        assert!(s.set_reject_locations(Vec::new()).is_empty());
        let fixed = post(&s, "k", &d, t0);
        assert_eq!(fixed.status, StatusCode::CREATED);
        let st = s.stats();
        assert_eq!((st.rejected, st.replays, st.accepted), (2, 0, 1));
        assert_eq!(s.totals().documents, 1);
    }

    #[test]
    fn injected_errors_are_deterministic_and_a_retry_gets_through() {
        let config = ErpSimConfig {
            error_rate_permille: 500,
            ..ErpSimConfig::default()
        };
        let (a, t0) = sim(config.clone());
        let (b, _) = sim(config);
        let mut first_failed = 0;
        for i in 0..40 {
            let key = format!("key-{i}");
            let d = doc(&key, "S1", DocBody::SalesSummary(vec![sale("A", 1, 10)]));
            let mut tries = Vec::new();
            loop {
                let from_a = post(&a, &key, &d, t0);
                let from_b = post(&b, &key, &d, t0);
                assert_eq!(
                    from_a.status, from_b.status,
                    "same key, same attempt, same fate"
                );
                tries.push(from_a.status);
                if from_a.status == StatusCode::CREATED {
                    break;
                }
                assert_eq!(from_a.status, StatusCode::SERVICE_UNAVAILABLE);
                assert!(tries.len() < 30, "{key} never got through");
            }
            if tries.len() > 1 {
                first_failed += 1;
            }
            // Once accepted, the key replays; it is never drawn again.
            assert!(post(&a, &key, &d, t0).replayed);
        }
        assert!(
            (8..=32).contains(&first_failed),
            "{first_failed} of 40 failed at first"
        );
        let st = a.stats();
        assert_eq!(st.accepted, 40);
        assert_eq!(a.totals().documents, 40);
        assert!(st.injected_errors >= first_failed);

        // The share of first attempts that fail follows the setting.
        let share = (0..2000)
            .filter(|i| injects_error(&format!("doc-{i}"), 1, 100))
            .count();
        assert!((140..=260).contains(&share), "{share} of 2000 at 10%");
        assert!((0..100).all(|i| !injects_error(&format!("x{i}"), 1, 0)));
        assert!((0..100).all(|i| injects_error(&format!("x{i}"), 1, 1000)));
    }

    #[test]
    fn latency_is_fixed_per_key_and_inside_the_range() {
        let (s, _) = sim(ErpSimConfig {
            latency_min: Duration::from_millis(10),
            latency_max: Duration::from_millis(50),
            ..ErpSimConfig::default()
        });
        let all: Vec<Duration> = (0..200).map(|i| s.latency_for(&format!("k{i}"))).collect();
        assert!(
            all.iter()
                .all(|l| (Duration::from_millis(10)..=Duration::from_millis(50)).contains(l))
        );
        assert_eq!(s.latency_for("k7"), all[7]);
        assert!(all.iter().any(|l| *l < Duration::from_millis(20)));
        assert!(all.iter().any(|l| *l > Duration::from_millis(40)));
    }

    #[test]
    fn faults_answer_every_request_and_run_out() {
        let (s, t0) = sim(ErpSimConfig::default());
        let d = doc("d", "S1", DocBody::SalesSummary(vec![sale("A", 1, 100)]));
        let status = s.set_fault(FaultMode::Outage, Some(Duration::from_secs(10)), t0);
        assert_eq!(status.remaining_s, Some(10));
        assert_eq!(
            post(&s, "k", &d, t0 + secs(1.0)).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        // 503 is not remembered, so the same key succeeds once the outage is over.
        assert_eq!(
            post(&s, "k", &d, t0 + secs(10.0)).status,
            StatusCode::CREATED
        );
        assert_eq!(s.fault(t0 + secs(10.0)).mode, FaultMode::Normal);

        s.set_fault(
            FaultMode::Throttle,
            Some(Duration::from_secs(30)),
            t0 + secs(20.0),
        );
        let storm = post(&s, "k2", &d, t0 + secs(25.5));
        assert_eq!(storm.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(storm.retry_after, Some(25));
        s.set_fault(FaultMode::Throttle, None, t0 + secs(26.0));
        assert_eq!(post(&s, "k2", &d, t0 + secs(99.0)).retry_after, Some(1));
        s.set_fault(
            FaultMode::Normal,
            Some(Duration::from_secs(5)),
            t0 + secs(100.0),
        );
        assert_eq!(s.fault(t0 + secs(100.0)).remaining_s, None);
        assert_eq!(
            post(&s, "k2", &d, t0 + secs(100.0)).status,
            StatusCode::CREATED
        );

        let st = s.stats();
        assert_eq!((st.injected_errors, st.throttled, st.accepted), (1, 2, 2));
        // Faulted requests never reached the window.
        assert_eq!(st.max_in_window, 2);
    }

    #[test]
    fn an_overflowing_document_is_refused_and_books_nothing() {
        let (s, t0) = sim(ErpSimConfig::default());
        let d = doc(
            "d1",
            "S1",
            DocBody::SalesSummary(vec![sale("A", 1, i64::MAX - 10)]),
        );
        assert_eq!(post(&s, "k1", &d, t0).status, StatusCode::CREATED);
        let before = s.totals();
        // The first line alone would fit; the second pushes A past i64.
        let d2 = doc(
            "d2",
            "S1",
            DocBody::SalesSummary(vec![sale("B", 1, 5), sale("A", 1, 100)]),
        );
        let answer = post(&s, "k2", &d2, t0);
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert!(answer.body.contains("overflow"), "{}", answer.body);
        assert_eq!(s.totals(), before);
        assert!(post(&s, "k2", &d2, t0).replayed);
    }
}
