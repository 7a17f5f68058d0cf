//! Shoppers during a failover run: availability queries over HTTP and over NATS, and
//! reservations of one hot SKU over HTTP, spread over every replica. An HTTP client whose
//! replica does not answer (a refused or broken connection, or 503) asks the next replica once;
//! a NATS client relies on the queue group to reach a live replica.

use super::watch::Watch;
use crate::report::Requests;
use crate::world::Rng;
use retailflow::domain::subject;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longest a query waits for its answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a reservation waits: the service may take its decision timeout to store the
/// request (a stream electing a leader) and as long again for the decision.
const RESERVE_TIMEOUT: Duration = Duration::from_secs(12);
/// Failures kept as examples per kind.
const EXAMPLES: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    HttpQuery,
    NatsQuery,
    Reserve,
}

/// What the shoppers ask and where.
pub struct Plan {
    pub bases: Vec<String>,
    pub skus: Vec<String>,
    pub channel: String,
    pub hot_sku: String,
    pub hot_location: String,
    pub http_rate: u64,
    pub nats_rate: u64,
    pub reserve_rate: u64,
    pub workers: usize,
    pub seed: u64,
}

#[derive(Default)]
pub struct Tally {
    pub http: Mutex<Requests>,
    pub nats: Mutex<Requests>,
    pub reservations: Mutex<Requests>,
    pub granted: AtomicU64,
    pub rejected: AtomicU64,
}

/// How one request ended.
enum Outcome {
    Answered { retried: bool },
    Failed(String),
}

pub struct Shoppers {
    plan: Plan,
    http: reqwest::Client,
    nats: async_nats::Client,
    watch: Arc<Watch>,
    pub tally: Tally,
    next_key: AtomicU64,
    stop: AtomicBool,
}

impl Shoppers {
    pub fn new(plan: Plan, nats: async_nats::Client, watch: Arc<Watch>) -> Arc<Shoppers> {
        Arc::new(Shoppers {
            plan,
            http: reqwest::Client::new(),
            nats,
            watch,
            tally: Tally::default(),
            next_key: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        })
    }

    pub fn stop(&self) {
        self.stop.store(true, Relaxed);
    }

    /// Starts the workers: each kind's rate shared by its workers.
    pub fn spawn(self: &Arc<Shoppers>) -> Vec<tokio::task::JoinHandle<()>> {
        let p = &self.plan;
        let share = |rate: u64| {
            let all = (p.http_rate + p.nats_rate + p.reserve_rate).max(1);
            ((p.workers as u64 * rate).div_ceil(all) as usize).max(usize::from(rate > 0))
        };
        let mut tasks = Vec::new();
        for (kind, rate) in [
            (Kind::HttpQuery, p.http_rate),
            (Kind::NatsQuery, p.nats_rate),
            (Kind::Reserve, p.reserve_rate),
        ] {
            let n = share(rate);
            for w in 0..n {
                let period = Duration::from_secs_f64(n as f64 / rate as f64);
                let me = self.clone();
                let seed = p.seed ^ ((w as u64) << 8) ^ kind as u64;
                tasks.push(tokio::spawn(me.worker(kind, w, period, seed)));
            }
        }
        tasks
    }

    async fn worker(self: Arc<Shoppers>, kind: Kind, w: usize, period: Duration, seed: u64) {
        let mut rng = Rng::new(seed);
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut turn = w;
        while !self.stop.load(Relaxed) {
            tick.tick().await;
            turn += 1;
            let outcome = match kind {
                Kind::HttpQuery => {
                    let sku = &self.plan.skus[rng.below(self.plan.skus.len() as u64) as usize];
                    self.http_query(turn, sku).await
                }
                Kind::NatsQuery => {
                    let sku = &self.plan.skus[rng.below(self.plan.skus.len() as u64) as usize];
                    self.nats_query(sku).await
                }
                Kind::Reserve => self.reserve(turn).await,
            };
            self.count(kind, outcome);
        }
    }

    fn count(&self, kind: Kind, outcome: Outcome) {
        let t = &self.tally;
        let mut r = match kind {
            Kind::HttpQuery => t.http.lock(),
            Kind::NatsQuery => t.nats.lock(),
            Kind::Reserve => t.reservations.lock(),
        }
        .unwrap_or_else(|e| e.into_inner());
        r.sent += 1;
        match outcome {
            Outcome::Answered { retried } => {
                r.retried += u64::from(retried);
                self.watch.answered.fetch_add(1, Relaxed);
            }
            Outcome::Failed(why) => {
                r.failed += 1;
                if r.examples.len() < EXAMPLES {
                    let at = self.watch.t(std::time::Instant::now());
                    r.examples.push(format!("at {at:.1} s: {why}"));
                }
                self.watch.failed.fetch_add(1, Relaxed);
            }
        }
    }

    /// Sends `build(base)` to replica `turn`, and on a connection failure or a 503 once more
    /// to the next one. Ok(status, body) of the answer that counts.
    async fn with_retry<F>(&self, turn: usize, build: F) -> Result<(u16, Vec<u8>, bool), String>
    where
        F: Fn(&str) -> reqwest::RequestBuilder,
    {
        let bases = &self.plan.bases;
        let mut why = String::new();
        for attempt in 0..2 {
            let base = &bases[(turn + attempt) % bases.len()];
            match build(base).send().await {
                Ok(resp) if resp.status().as_u16() != 503 => {
                    let status = resp.status().as_u16();
                    return match resp.bytes().await {
                        Ok(body) => Ok((status, body.to_vec(), attempt > 0)),
                        Err(e) => Err(format!("{base}: reading the answer: {e}")),
                    };
                }
                Ok(_) => why = format!("{base}: 503"),
                Err(e) => why = format!("{base}: {e}"),
            }
        }
        Err(why)
    }

    async fn http_query(&self, turn: usize, sku: &str) -> Outcome {
        let channel = &self.plan.channel;
        let asked = self
            .with_retry(turn, |base| {
                self.http
                    .get(format!("{base}/v1/availability/{sku}?channel={channel}"))
                    .timeout(QUERY_TIMEOUT)
            })
            .await;
        match asked {
            Ok((200, _, retried)) => Outcome::Answered { retried },
            Ok((status, body, _)) => Outcome::Failed(format!(
                "query answered {status}: {}",
                String::from_utf8_lossy(&body)
            )),
            Err(e) => Outcome::Failed(e),
        }
    }

    async fn nats_query(&self, sku: &str) -> Outcome {
        let body = serde_json::json!({"skus": [sku], "channel": self.plan.channel});
        let sent = tokio::time::timeout(
            QUERY_TIMEOUT,
            self.nats
                .request(subject::ATP_QUERY, body.to_string().into()),
        )
        .await;
        match sent {
            Ok(Ok(msg)) if !msg.payload.starts_with(b"{\"error\"") => {
                Outcome::Answered { retried: false }
            }
            Ok(Ok(msg)) => Outcome::Failed(String::from_utf8_lossy(&msg.payload).into()),
            Ok(Err(e)) => Outcome::Failed(format!("NATS request: {e}")),
            Err(_) => Outcome::Failed(format!("NATS request: no answer in {QUERY_TIMEOUT:?}")),
        }
    }

    /// One unit of the hot SKU under a key of its own; the retry keeps the key, so it gets
    /// the first decision if the first replica stored the request.
    async fn reserve(&self, turn: usize) -> Outcome {
        let key = format!("failover-{}", self.next_key.fetch_add(1, Relaxed));
        let body = serde_json::json!({
            "sku": self.plan.hot_sku,
            "location": self.plan.hot_location,
            "qty": 1,
            "ttl_seconds": 86_400,
            "idempotency_key": key,
        });
        let asked = self
            .with_retry(turn, |base| {
                self.http
                    .post(format!("{base}/v1/reservations"))
                    .json(&body)
                    .timeout(RESERVE_TIMEOUT)
            })
            .await;
        match asked {
            Ok((201, _, retried)) => {
                self.tally.granted.fetch_add(1, Relaxed);
                Outcome::Answered { retried }
            }
            Ok((409, _, retried)) => {
                self.tally.rejected.fetch_add(1, Relaxed);
                Outcome::Answered { retried }
            }
            Ok((status, body, _)) => Outcome::Failed(format!(
                "reservation {key} answered {status}: {}",
                String::from_utf8_lossy(&body)
            )),
            Err(e) => Outcome::Failed(format!("reservation {key}: {e}")),
        }
    }

    pub fn take(&self, r: &Mutex<Requests>) -> Requests {
        std::mem::take(&mut *r.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
