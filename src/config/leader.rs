//! Replicas and their leader: the settings of the `[leader]` section.

use super::duration;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Replicas. Any number of processes may run with the same configuration: each applies the
/// whole stream and answers queries and reservations, and one of them, elected through a
/// lease in JetStream KV, performs the side effects (barriers, snapshots, release of postings,
/// reservation expiry, the change feed, ERP delivery).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaderConfig {
    /// This process's name among the replicas (empty: the host's name). Names must differ
    /// between replicas; a process restarted under its old name takes its lease back at once.
    pub instance: String,
    /// Whether to compete for the lease. Off: this process always leads, which is only right
    /// when it runs alone.
    pub elect: bool,
    /// How long a lease lasts without renewal: a dead leader is replaced after at most about
    /// this long. The leader renews four times per lease.
    #[serde(with = "duration")]
    pub lease: Duration,
    /// KV bucket holding the lease (one key per events stream).
    pub bucket: String,
}

impl Default for LeaderConfig {
    fn default() -> Self {
        LeaderConfig {
            instance: String::new(),
            elect: true,
            lease: Duration::from_secs(3),
            bucket: "retailflow-leader".into(),
        }
    }
}

impl LeaderConfig {
    /// The instance name in force: the configured one, else the host's name.
    pub fn instance_name(&self) -> String {
        if !self.instance.is_empty() {
            return self.instance.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| "retailflow".into())
    }

    pub fn check(&self) -> Result<(), String> {
        if self.elect && self.lease < Duration::from_secs(1) {
            return Err(format!(
                "leader.lease {:?} is too short: at least 1s",
                self.lease
            ));
        }
        if self.instance.len() > 128 || self.instance.chars().any(char::is_control) {
            return Err("leader.instance: at most 128 characters, no control characters".into());
        }
        crate::domain::ids::check_token("leader.bucket", &self.bucket)
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}
