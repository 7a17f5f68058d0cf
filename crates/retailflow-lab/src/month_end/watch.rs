//! Reading reconciliation during a month-end run over the pipeline's HTTP API: the listing of
//! a business day, one store day's detail, waits for a condition, and the watcher that notes
//! when each store day first reads `accepted`.

use retailflow::domain::BusinessDay;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// The pipeline's reconciliation API.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api {
            base: base.to_string(),
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let status = r.status();
        let body = r.text().await.map_err(|e| format!("GET {path}: {e}"))?;
        if !status.is_success() {
            return Err(format!("GET {path}: {status}: {body}"));
        }
        serde_json::from_str(&body).map_err(|e| format!("GET {path}: {e}"))
    }

    /// Every store day of `day`, by store.
    pub async fn day(&self, day: BusinessDay) -> Result<HashMap<String, Value>, String> {
        let v = self
            .get(&format!("/v1/reconciliation?business_day={day}"))
            .await?;
        let rows = v["days"].as_array().cloned().unwrap_or_default();
        Ok(rows
            .into_iter()
            .map(|r| (r["store"].as_str().unwrap_or("").to_string(), r))
            .collect())
    }

    /// One store day in detail (its first currency).
    pub async fn detail(&self, store: &str, day: BusinessDay) -> Result<Value, String> {
        let v = self
            .get(&format!("/v1/reconciliation/{store}/{day}"))
            .await?;
        Ok(v["days"][0].clone())
    }

    /// POSTs `body` as JSON to `url`; the answer's JSON.
    pub async fn post(&self, url: &str, body: &Value) -> Result<(u16, Value), String> {
        let r = self
            .http
            .post(url)
            .json(body)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = r.status().as_u16();
        let text = r.text().await.map_err(|e| format!("POST {url}: {e}"))?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// The pipeline's own base URL (`http://address`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Polls `day`'s listing every 250 ms until `done` holds for it; `what` names the wait in
    /// the error after `limit`.
    pub async fn until(
        &self,
        day: BusinessDay,
        limit: Duration,
        what: &str,
        done: impl Fn(&HashMap<String, Value>) -> bool,
    ) -> Result<(), String> {
        let began = Instant::now();
        loop {
            if let Ok(rows) = self.day(day).await {
                if done(&rows) {
                    return Ok(());
                }
            }
            if began.elapsed() > limit {
                return Err(format!("{what} ({day}) not within {limit:?}"));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// A store day's state is past `closing`: late transactions now become corrections.
pub fn past_close(row: Option<&Value>) -> bool {
    row.and_then(|r| r["state"].as_str())
        .is_some_and(|s| matches!(s, "closed" | "posted" | "accepted"))
}

/// When each store day first read `accepted`.
pub type AcceptedAt = HashMap<(String, BusinessDay), Instant>;

/// Polls the listing of every watched business day four times a second and notes when each
/// store day first reads `accepted`; a day stops being polled when all its stores have.
pub struct Watcher {
    days: Arc<Mutex<Vec<BusinessDay>>>,
    seen: Arc<Mutex<AcceptedAt>>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Watcher {
    pub fn start(api: Api, stores: usize) -> Watcher {
        let days: Arc<Mutex<Vec<BusinessDay>>> = Arc::default();
        let seen: Arc<Mutex<AcceptedAt>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (d, s, st) = (days.clone(), seen.clone(), stop.clone());
        let task = tokio::spawn(async move {
            loop {
                // One more pass after the stop, so that the last acceptances are seen.
                let stopping = st.load(Ordering::Relaxed);
                let watched: Vec<BusinessDay> = d.lock().map(|d| d.clone()).unwrap_or_default();
                for day in watched {
                    let Ok(rows) = api.day(day).await else {
                        continue;
                    };
                    let now = Instant::now();
                    let Ok(mut seen) = s.lock() else { return };
                    for (store, row) in &rows {
                        if row["state"] == "accepted" {
                            seen.entry((store.clone(), day)).or_insert(now);
                        }
                    }
                    let done = seen.keys().filter(|(_, d)| *d == day).count() >= stores;
                    if done {
                        if let Ok(mut d) = d.lock() {
                            d.retain(|x| *x != day);
                        }
                    }
                }
                if stopping {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Watcher {
            days,
            seen,
            stop,
            task,
        }
    }

    /// Starts watching `day` (its Z reports are in).
    pub fn watch(&self, day: BusinessDay) {
        if let Ok(mut d) = self.days.lock() {
            d.push(day);
        }
    }

    pub async fn stop(self) -> AcceptedAt {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}
