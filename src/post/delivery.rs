//! One HTTP delivery of a posting document and how its answer is classified.

use crate::aggregate::posting::PostingDoc;
use std::time::Duration;

/// What to do with a posting after one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx. `replay` when the ERP says it answered this key before.
    Accepted { replay: bool },
    /// 429: wait `retry_after`, then try again; the whole endpoint pauses.
    Throttled { retry_after: Duration },
    /// Timeout, connection error, 408 or 5xx: try again with backoff.
    Retry { reason: String },
    /// Any other 4xx: the ERP refuses the document; dead-letter it with the ERP's message.
    Rejected { status: u16, message: String },
}

/// Reads `Retry-After` as delta-seconds (the form ERPs use); anything else means one second.
pub fn retry_after(value: Option<&str>) -> Duration {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1))
        .max(Duration::from_millis(100))
}

pub fn classify(
    status: u16,
    retry_after_header: Option<&str>,
    replayed: bool,
    body: String,
) -> Outcome {
    match status {
        200..=299 => Outcome::Accepted { replay: replayed },
        429 => Outcome::Throttled {
            retry_after: retry_after(retry_after_header),
        },
        408 | 500..=599 => Outcome::Retry {
            reason: format!("HTTP {status}"),
        },
        _ => Outcome::Rejected {
            status,
            message: body.chars().take(2000).collect(),
        },
    }
}

/// POSTs the document as JSON with its id as `Idempotency-Key`.
pub async fn deliver(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    doc: &PostingDoc,
    timeout: Duration,
) -> Outcome {
    let mut req = client
        .post(url)
        .timeout(timeout)
        .header("Idempotency-Key", &doc.id)
        .json(doc);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let retry = header("Retry-After");
            let replayed =
                header("Idempotent-Replayed").is_some_and(|v| v.eq_ignore_ascii_case("true"));
            let body = if (200..300).contains(&status) {
                String::new()
            } else {
                resp.text().await.unwrap_or_default()
            };
            classify(status, retry.as_deref(), replayed, body)
        }
        Err(e) if e.is_timeout() => Outcome::Retry {
            reason: format!("timed out after {timeout:?}"),
        },
        Err(e) => Outcome::Retry {
            reason: format!("request failed: {e}"),
        },
    }
}

/// Exponential backoff for attempt `n` (1-based), capped.
pub fn backoff(n: u64, initial: Duration, max: Duration) -> Duration {
    let shift = n.saturating_sub(1).min(20) as u32;
    initial.saturating_mul(1 << shift).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified() {
        assert_eq!(
            classify(201, None, false, String::new()),
            Outcome::Accepted { replay: false }
        );
        assert_eq!(
            classify(200, None, true, String::new()),
            Outcome::Accepted { replay: true }
        );
        assert_eq!(
            classify(429, Some("7"), false, String::new()),
            Outcome::Throttled {
                retry_after: Duration::from_secs(7)
            }
        );
        assert!(matches!(
            classify(503, None, false, String::new()),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify(408, None, false, String::new()),
            Outcome::Retry { .. }
        ));
        assert_eq!(
            classify(400, None, false, "bad location".into()),
            Outcome::Rejected {
                status: 400,
                message: "bad location".into()
            }
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let i = Duration::from_millis(200);
        let m = Duration::from_secs(30);
        assert_eq!(backoff(1, i, m), i);
        assert_eq!(backoff(3, i, m), Duration::from_millis(800));
        assert_eq!(backoff(60, i, m), m);
    }
}
