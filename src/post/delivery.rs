//! One HTTP delivery of a posting document and how its answer is classified.
//!
//! Two kinds of failure are told apart. A few answers are about the document (400, 409, 413,
//! 415, 422): the ERP read it and refuses it, so it is dead-lettered with the ERP's message.
//! Everything else that is not a success is about the endpoint: an expired token (401), a
//! missing permission (403, 407), a wrong URL (404, 405), an ERP that is down or slow (5xx,
//! 408, timeouts, refused connections). Dead-lettering documents for those would empty the
//! outbox into the dead-letter stream during an outage; instead the endpoint pauses and the
//! document is tried again once the ERP answers.

use retailflow_core::aggregate::posting::PostingDoc;
use std::time::{Duration, SystemTime};

/// What to do with a posting after one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx. `replay` when the ERP says it answered this key before.
    Accepted { replay: bool },
    /// 429: wait `retry_after`, then try again; the whole endpoint pauses.
    Throttled { retry_after: Duration },
    /// The endpoint cannot take anything now (401, 403, 404, 405, 407, 408, 5xx, any other
    /// unexpected status, a timeout or a connection error): the endpoint pauses with backoff
    /// and the document is tried again; it is not the document's fault.
    Unavailable { status: Option<u16>, reason: String },
    /// 400, 409, 413, 415 or 422: the ERP refuses this document; dead-letter it with the ERP's
    /// message.
    Rejected { status: u16, message: String },
}

/// Statuses that say the ERP read the document and refuses it. 409 is the ERP saying this
/// document conflicts with what it holds; a replay of an answered Idempotency-Key comes back
/// as a 2xx (`Idempotent-Replayed`), so a 409 is not a replay of our own earlier request.
const DOCUMENT_FAULTS: [u16; 5] = [400, 409, 413, 415, 422];

/// Reads `Retry-After` as delta-seconds or as an HTTP-date, clamped to `[floor, max]`.
///
/// A header that is absent or unreadable means one second (clamped likewise). A number too
/// large for any clock (`99999999999999999999`) means "long", i.e. `max`: a year-long pause
/// requested by an ERP is never honoured beyond the endpoint's own `retry.max`.
pub fn retry_after(
    value: Option<&str>,
    now: SystemTime,
    floor: Duration,
    max: Duration,
) -> Duration {
    let floor = floor.min(max);
    let wanted = match value.map(str::trim) {
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
            // All digits: delta-seconds, saturating instead of failing on overflow.
            v.parse::<u64>().map_or(max, Duration::from_secs)
        }
        Some(v) => match httpdate::parse_http_date(v) {
            Ok(at) => at.duration_since(now).unwrap_or(Duration::ZERO),
            Err(_) => Duration::from_secs(1),
        },
        None => Duration::from_secs(1),
    };
    wanted.clamp(floor, max)
}

/// Classifies one answer; `retry_after` is the already clamped `Retry-After` for a 429.
pub fn classify(status: u16, retry_after: Duration, replayed: bool, body: String) -> Outcome {
    match status {
        200..=299 => Outcome::Accepted { replay: replayed },
        429 => Outcome::Throttled { retry_after },
        s if DOCUMENT_FAULTS.contains(&s) => Outcome::Rejected {
            status,
            message: body.chars().take(2000).collect(),
        },
        _ => Outcome::Unavailable {
            status: Some(status),
            reason: format!(
                "HTTP {status}: {}",
                body.chars().take(200).collect::<String>()
            ),
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
    retry: &crate::config::RetryConfig,
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
            let wait = retry_after(
                header("Retry-After").as_deref(),
                SystemTime::now(),
                retry.initial,
                retry.max,
            );
            let replayed =
                header("Idempotent-Replayed").is_some_and(|v| v.eq_ignore_ascii_case("true"));
            let body = if (200..300).contains(&status) {
                String::new()
            } else {
                resp.text().await.unwrap_or_default()
            };
            classify(status, wait, replayed, body)
        }
        Err(e) if e.is_timeout() => Outcome::Unavailable {
            status: None,
            reason: format!("timed out after {timeout:?}"),
        },
        Err(e) => Outcome::Unavailable {
            status: None,
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

    const S: Duration = Duration::from_secs(1);

    fn bounds() -> (Duration, Duration) {
        (Duration::from_millis(200), Duration::from_secs(30))
    }

    fn wait(value: &str) -> Duration {
        let (floor, max) = bounds();
        retry_after(Some(value), SystemTime::now(), floor, max)
    }

    #[test]
    fn answers_are_classified() {
        assert_eq!(
            classify(201, S, false, String::new()),
            Outcome::Accepted { replay: false }
        );
        assert_eq!(
            classify(200, S, true, String::new()),
            Outcome::Accepted { replay: true }
        );
        assert_eq!(
            classify(429, 7 * S, false, String::new()),
            Outcome::Throttled { retry_after: 7 * S }
        );
        assert_eq!(
            classify(400, S, false, "bad location".into()),
            Outcome::Rejected {
                status: 400,
                message: "bad location".into()
            }
        );
        for status in [409, 413, 415, 422] {
            assert!(
                matches!(
                    classify(status, S, false, String::new()),
                    Outcome::Rejected { .. }
                ),
                "{status}"
            );
        }
    }

    #[test]
    fn faults_of_the_endpoint_never_reject_the_document() {
        for status in [
            401, 403, 404, 405, 407, 408, 410, 418, 500, 502, 503, 504, 301,
        ] {
            match classify(status, S, false, "token expired".into()) {
                Outcome::Unavailable {
                    status: Some(s), ..
                } => assert_eq!(s, status),
                other => panic!("{status} classified as {other:?}"),
            }
        }
    }

    #[test]
    fn retry_after_beyond_any_clock_is_clamped_not_a_panic() {
        let (_, max) = bounds();
        // 1e19 fits in a u64 but not in an Instant; 99999999999999999999 fits in neither.
        assert_eq!(wait("10000000000000000000"), max);
        assert_eq!(wait("99999999999999999999"), max);
        assert_eq!(wait(&u64::MAX.to_string()), max);
        // A year is a number a clock can hold, and still no reason to stop for a year.
        assert_eq!(wait("31536000"), max);
        let later = tokio::time::Instant::now().checked_add(wait("99999999999999999999"));
        assert!(later.is_some());
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let (floor, max) = bounds();
        assert_eq!(wait("7"), 7 * S);
        assert_eq!(wait(" 12 "), 12 * S);
        assert_eq!(wait("0"), floor, "no hammering on 0");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = |t: SystemTime| httpdate::fmt_http_date(t);
        let ten_ahead = at(now + 10 * S);
        assert_eq!(retry_after(Some(&ten_ahead), now, floor, max), 10 * S);
        let past = at(now - 3600 * S);
        assert_eq!(retry_after(Some(&past), now, floor, max), floor);
        let next_year = at(now + 365 * 24 * 3600 * S);
        assert_eq!(retry_after(Some(&next_year), now, floor, max), max);
    }

    #[test]
    fn retry_after_that_cannot_be_read_waits_a_second() {
        for garbage in [
            "soon",
            "1e19",
            "-5",
            "7.5",
            "\u{0}",
            "Sun, 99 Foo 1994 08:49:37 GMT",
        ] {
            assert_eq!(wait(garbage), S, "{garbage:?}");
        }
        let (floor, max) = bounds();
        assert_eq!(retry_after(None, SystemTime::now(), floor, max), S);
        // A retry.max below a second wins over the default.
        let short = Duration::from_millis(300);
        assert_eq!(
            retry_after(Some("soon"), SystemTime::now(), floor, short),
            short
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
