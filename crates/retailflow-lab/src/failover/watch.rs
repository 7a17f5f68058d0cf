//! Watching a failover run from outside the replicas: every replica's `/healthz` ten times a
//! second, the events stream's last sequence, the barriers and postings as they pass on the
//! wire, and once a second a point of the timeline.

use crate::report::FailoverPoint;
use retailflow::domain::subject;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the watcher last saw of one replica.
#[derive(Clone, Debug, Default)]
struct Seen {
    /// Counted: the run has not stopped or killed it on purpose.
    tracked: bool,
    /// Bumped whenever it is stopped or started: a probe sent before is not about this life.
    epoch: u64,
    /// Answered the last probe.
    up: bool,
    as_of: u64,
    leads: bool,
    /// When it last applied something (or had nothing to apply).
    progress_at: Option<Instant>,
    max_gap: Duration,
}

pub struct Watch {
    pub start: Instant,
    bases: Vec<String>,
    seen: Mutex<Vec<Seen>>,
    stream_last: AtomicU64,
    barriers: Mutex<Vec<Instant>>,
    postings: Mutex<Vec<Instant>>,
    timeline: Mutex<Vec<FailoverPoint>>,
    /// Shopper requests answered and failed, counted by the shoppers.
    pub answered: AtomicU64,
    pub failed: AtomicU64,
    stop: AtomicBool,
}

/// `/healthz` of one replica, whatever its status code: (applied sequence, leads).
async fn probe(http: &reqwest::Client, base: &str) -> Option<(u64, bool)> {
    let (_, body) = crate::chaos::healthz(http, base).await?;
    Some((body["as_of"].as_u64()?, body["leads"].as_bool()?))
}

/// The stream's last sequence, asked of JetStream with a bound of a second.
pub async fn last_seq(js: &async_nats::jetstream::Context, events: &str) -> Option<u64> {
    let asked = async {
        let mut stream = js.get_stream(events).await.ok()?;
        stream.info().await.ok().map(|i| i.state.last_sequence)
    };
    tokio::time::timeout(Duration::from_secs(1), asked)
        .await
        .ok()
        .flatten()
}

impl Watch {
    pub fn new(bases: Vec<String>) -> Arc<Watch> {
        let seen = vec![
            Seen {
                tracked: true,
                ..Seen::default()
            };
            bases.len()
        ];
        Arc::new(Watch {
            start: Instant::now(),
            bases,
            seen: Mutex::new(seen),
            stream_last: AtomicU64::new(0),
            barriers: Mutex::new(Vec::new()),
            postings: Mutex::new(Vec::new()),
            timeline: Mutex::new(Vec::new()),
            answered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        })
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Vec<Seen>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Seconds since the trading load started.
    pub fn t(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.start).as_secs_f64()
    }

    /// The run is about to stop replica `i` on purpose: its silence is not a gap.
    pub fn untrack(&self, i: usize) {
        let mut s = self.seen();
        s[i].tracked = false;
        s[i].up = false;
        s[i].epoch += 1;
    }

    /// Replica `i` was started again: counted from its first answer on.
    pub fn track(&self, i: usize) {
        let mut s = self.seen();
        s[i].tracked = true;
        s[i].up = false;
        s[i].epoch += 1;
    }

    /// The replica that says it leads, among those answering.
    pub fn leader(&self) -> Option<usize> {
        self.seen().iter().position(|s| s.up && s.leads)
    }

    pub fn stream_last(&self) -> u64 {
        self.stream_last.load(Relaxed)
    }

    /// Waits until replica `i` answers having applied `seq`; false after `limit`.
    pub async fn caught_up(&self, i: usize, seq: u64, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            let s = self.seen()[i].clone();
            if s.up && s.as_of >= seq {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Seconds from `at` to the first barrier and to the first posting seen after it.
    pub fn next_after(&self, at: Instant) -> (Option<f64>, Option<f64>) {
        let first = |v: &Mutex<Vec<Instant>>| {
            let v = v.lock().unwrap_or_else(|e| e.into_inner());
            v.iter()
                .find(|t| **t > at)
                .map(|t| t.duration_since(at).as_secs_f64())
        };
        (first(&self.barriers), first(&self.postings))
    }

    pub fn max_gaps(&self) -> Vec<f64> {
        self.seen()
            .iter()
            .map(|s| s.max_gap.as_secs_f64())
            .collect()
    }

    pub fn timeline(&self) -> Vec<FailoverPoint> {
        self.timeline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn stop(&self) {
        self.stop.store(true, Relaxed);
    }

    /// One probe of every replica.
    async fn poll(&self, http: &reqwest::Client) {
        let epochs: Vec<u64> = self.seen().iter().map(|s| s.epoch).collect();
        let probes =
            futures::future::join_all(self.bases.iter().map(|b| probe(http, b.as_str()))).await;
        let now = Instant::now();
        let last = self.stream_last();
        let mut seen = self.seen();
        for ((s, p), epoch) in seen.iter_mut().zip(probes).zip(epochs) {
            if s.epoch != epoch {
                continue;
            }
            let Some((as_of, leads)) = p.filter(|_| s.tracked) else {
                s.up = false;
                continue;
            };
            if !s.up {
                // Back (or first seen): it is counted from here.
                s.up = true;
                s.as_of = as_of;
                s.progress_at = Some(now);
            }
            if as_of > s.as_of || as_of >= last {
                s.progress_at = Some(now);
            } else if let Some(at) = s.progress_at {
                s.max_gap = s.max_gap.max(now.duration_since(at));
            }
            s.as_of = as_of;
            s.leads = leads;
        }
    }

    /// Probes until stopped; a timeline point every second. The stream's last sequence is
    /// followed by a task of its own, so that a NATS node's death, which can hold a JetStream
    /// request for seconds, never stops the probes.
    pub async fn run(self: Arc<Watch>, js: async_nats::jetstream::Context, events: String) {
        let following = tokio::spawn(self.clone().follow_stream(js, events));
        let http = reqwest::Client::new();
        let mut next_point = Instant::now() + Duration::from_secs(1);
        let (mut answered, mut failed) = (0, 0);
        while !self.stop.load(Relaxed) {
            self.poll(&http).await;
            if Instant::now() >= next_point {
                next_point += Duration::from_secs(1);
                let a = self.answered.load(Relaxed);
                let f = self.failed.load(Relaxed);
                let point = FailoverPoint {
                    t: self.t(Instant::now()),
                    stream_last: self.stream_last(),
                    applied: self
                        .seen()
                        .iter()
                        .map(|s| s.up.then_some(s.as_of))
                        .collect(),
                    answered: a - answered,
                    failed: f - failed,
                };
                (answered, failed) = (a, f);
                self.timeline
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(point);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = following.await;
    }

    /// Keeps [`Watch::stream_last`] current, every 100 ms, until stopped.
    async fn follow_stream(self: Arc<Watch>, js: async_nats::jetstream::Context, events: String) {
        while !self.stop.load(Relaxed) {
            if let Some(last) = last_seq(&js, &events).await {
                self.stream_last.fetch_max(last, Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Notes the time of every barrier and every posting published, until stopped.
    pub async fn listen(self: Arc<Watch>, client: async_nats::Client) {
        use futures::StreamExt;
        let subscribe = |s: String| {
            let client = client.clone();
            async move { client.subscribe(s).await.ok() }
        };
        let (Some(mut barriers), Some(mut postings)) = (
            subscribe(subject::BARRIER.to_string()).await,
            subscribe(format!("{}.>", subject::POSTINGS)).await,
        ) else {
            tracing::error!("failover watch: cannot subscribe to barriers and postings");
            return;
        };
        let push = |v: &Mutex<Vec<Instant>>| {
            v.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Instant::now())
        };
        while !self.stop.load(Relaxed) {
            tokio::select! {
                Some(_) = barriers.next() => push(&self.barriers),
                Some(_) = postings.next() => push(&self.postings),
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }
}
