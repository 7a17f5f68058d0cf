//! Settings of the ERP simulator. The defaults copy Dataverse service protection for one user:
//! 6000 requests in a sliding 300 s window and 52 requests in flight.

use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ErpSimConfig {
    /// Socket address to listen on; `"127.0.0.1:0"` picks a free port (see `ErpSim::addr`).
    pub listen: String,
    /// Postings requests allowed in any `limit_window`.
    pub limit_requests: u32,
    /// Length of the sliding window `limit_requests` applies to.
    #[serde(with = "humantime_serde")]
    pub limit_window: Duration,
    /// Postings requests processed at once; one more gets 429 with `Retry-After: 1`.
    pub max_concurrent: usize,
    /// Lower bound of the time an accepted request takes to answer.
    #[serde(with = "humantime_serde")]
    pub latency_min: Duration,
    /// Upper bound of the time an accepted request takes to answer.
    #[serde(with = "humantime_serde")]
    pub latency_max: Duration,
    /// Share of requests, in thousandths, that fail with 503 although nothing is wrong.
    pub error_rate_permille: u32,
    /// Locations whose documents are refused with 400, as an ERP refuses postings to a store
    /// missing from its master data.
    pub reject_locations: Vec<String>,
}

impl Default for ErpSimConfig {
    fn default() -> Self {
        ErpSimConfig {
            listen: "127.0.0.1:8090".into(),
            limit_requests: 6000,
            limit_window: Duration::from_secs(300),
            max_concurrent: 52,
            latency_min: Duration::ZERO,
            latency_max: Duration::ZERO,
            error_rate_permille: 0,
            reject_locations: Vec::new(),
        }
    }
}

impl ErpSimConfig {
    /// Refuses settings under which the simulator could not answer sensibly.
    pub fn check(&self) -> Result<(), String> {
        if self.limit_requests == 0 || self.limit_window.is_zero() {
            // With nothing allowed there is no oldest request to compute a Retry-After from.
            return Err("limit_requests and limit_window must be positive".into());
        }
        if self.max_concurrent == 0 {
            return Err("max_concurrent must be positive".into());
        }
        if self.latency_min > self.latency_max {
            return Err(format!(
                "latency_min {} is above latency_max {}",
                humantime::format_duration(self.latency_min),
                humantime::format_duration(self.latency_max)
            ));
        }
        if self.error_rate_permille > 1000 {
            return Err(format!(
                "error_rate_permille {} is above 1000",
                self.error_rate_permille
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_with_durations_parses_and_unknown_fields_are_refused() {
        let c: ErpSimConfig = toml::from_str(
            r#"
            listen = "127.0.0.1:0"
            limit_requests = 600
            limit_window = "60s"
            latency_min = "5ms"
            latency_max = "40ms"
            reject_locations = ["S0099"]
            "#,
        )
        .unwrap();
        assert_eq!(c.limit_window, Duration::from_secs(60));
        assert_eq!(c.latency_max, Duration::from_millis(40));
        assert_eq!(c.max_concurrent, 52, "unset fields keep their default");
        assert!(c.check().is_ok());

        let err = toml::from_str::<ErpSimConfig>("limit_requsts = 5").unwrap_err();
        assert!(err.to_string().contains("limit_requsts"), "{err}");
    }

    #[test]
    fn impossible_settings_are_refused() {
        let bad = [
            ErpSimConfig {
                limit_requests: 0,
                ..ErpSimConfig::default()
            },
            ErpSimConfig {
                max_concurrent: 0,
                ..ErpSimConfig::default()
            },
            ErpSimConfig {
                latency_min: Duration::from_millis(10),
                latency_max: Duration::from_millis(5),
                ..ErpSimConfig::default()
            },
            ErpSimConfig {
                error_rate_permille: 1001,
                ..ErpSimConfig::default()
            },
        ];
        for c in bad {
            assert!(c.check().is_err(), "{c:?}");
        }
        assert!(ErpSimConfig::default().check().is_ok());
    }
}
