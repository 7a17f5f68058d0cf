//! Leadership through a JetStream KV lease, so side effects have one owner without a consensus
//! protocol of our own: JetStream's replicated KV is the consensus.
//!
//! One key in a bucket whose `max_age` is the lease. A candidate takes the lease with `create`,
//! which only succeeds while the key does not exist; the leader renews it with `update` on the
//! revision it last wrote, which only succeeds while nobody else wrote since. A leader that
//! stops renewing (killed, cut off) loses the key when its last write ages out of the bucket,
//! and the next candidate's `create` succeeds.
//!
//! A lease is not a lock. The holder counts itself leader only until a third of a lease before
//! its last renewal can expire on the server (measured from when it sent that renewal, which
//! is before the server stamped it), so a deposed leader normally stops before a successor can
//! start; but clocks and pauses (a stalled process) can still make two instances believe they
//! lead for a moment. Every side effect a leader performs is therefore also safe when done
//! twice (deterministic message ids and idempotency keys); the lease keeps duplicates rare, not
//! impossible. The revision that won the lease is its term, a fencing token that grows with
//! every change of leader.
//!
//! A replica restarted under its old name (after a crash, say) finds its own name in the key
//! and takes the lease back on its first round, instead of waiting for it to run out: the
//! process that wrote it is gone, or is about to learn on its next renewal that it lost.

use super::BusError;
use async_nats::jetstream::{self, kv};
use std::time::Duration;
use tokio::time::Instant;

/// Where the lease lives and who competes for it.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// KV bucket holding the lease key.
    pub bucket: String,
    /// The key: one per group of replicas that share side effects.
    pub key: String,
    /// This replica's name, written as the key's value so others can say who leads.
    pub instance: String,
    /// How long a lease lasts without renewal (the bucket's `max_age`).
    pub lease: Duration,
    pub replicas: usize,
    pub storage: jetstream::stream::StorageType,
}

/// What this replica is after a round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// It leads; `term` is the KV revision that won the lease (higher for every new leader).
    Leader { term: u64 },
    /// Another replica leads (`leader` names it when known), or nobody does right now.
    Follower { leader: Option<String> },
}

impl Role {
    pub fn leads(&self) -> bool {
        matches!(self, Role::Leader { .. })
    }
}

struct Held {
    /// The revision of this replica's last write of the key.
    revision: u64,
    term: u64,
    /// It counts itself leader until then.
    until: Instant,
}

pub struct Lease {
    kv: kv::Store,
    key: String,
    me: String,
    lease: Duration,
    held: Option<Held>,
    /// No round played yet: a lease held under this replica's own name is taken back.
    first: bool,
}

impl Lease {
    /// Opens (or creates) the lease bucket. An existing bucket keeps its own `max_age`; a
    /// different one than `cfg.lease` is reported, since that is what decides when a dead
    /// leader's lease runs out.
    pub async fn open(js: &jetstream::Context, cfg: &LeaseConfig) -> Result<Lease, BusError> {
        if cfg.lease < Duration::from_secs(1) {
            return Err(BusError::JetStream(format!(
                "leader lease {:?} is too short: at least 1 s",
                cfg.lease
            )));
        }
        let kv = match js.get_key_value(&cfg.bucket).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: cfg.bucket.clone(),
                    description: "retailflow leader lease".into(),
                    history: 1,
                    max_age: cfg.lease,
                    storage: cfg.storage,
                    num_replicas: cfg.replicas.max(1),
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    BusError::JetStream(format!("creating KV bucket {}: {e}", cfg.bucket))
                })?,
        };
        if let Ok(status) = kv.status().await {
            let max_age = status.max_age();
            if max_age != cfg.lease {
                tracing::warn!(bucket = %cfg.bucket, ?max_age, lease = ?cfg.lease,
                    "the lease bucket exists with another max_age; a dead leader's lease runs out after the bucket's");
            }
        }
        Ok(Lease {
            kv,
            key: cfg.key.clone(),
            me: cfg.instance.clone(),
            lease: cfg.lease,
            held: None,
            first: true,
        })
    }

    /// How often to call [`Lease::round`]: several renewals fit in the part of a lease the
    /// holder counts on.
    pub fn interval(&self) -> Duration {
        self.lease / 4
    }

    /// One round: a leader renews, a follower tries to take the lease. Waits at most one
    /// interval, and a leader no longer than the time it still counts on (the first round may
    /// wait a whole lease).
    pub async fn round(&mut self) -> Role {
        let first = std::mem::replace(&mut self.first, false);
        let sent = Instant::now();
        let value = bytes::Bytes::from(self.me.clone());
        match self.held.take() {
            Some(held) => {
                // While counted on, a renewal may take what is left of that time; once that
                // has run out (a stalled process), it may take an interval to learn where it
                // stands: a renewal that still succeeds shows nobody else wrote meanwhile.
                let left = held.until.saturating_duration_since(sent);
                let budget = if left.is_zero() {
                    self.interval()
                } else {
                    left.min(self.interval())
                };
                let renewed =
                    tokio::time::timeout(budget, self.kv.update(&self.key, value, held.revision))
                        .await;
                match renewed {
                    Ok(Ok(revision)) => {
                        self.held = Some(Held {
                            revision,
                            term: held.term,
                            until: sent + self.counted(),
                        });
                        Role::Leader { term: held.term }
                    }
                    Ok(Err(error)) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                        tracing::warn!(key = %self.key, term = held.term, "leader lease lost: another replica holds it");
                        self.follower().await
                    }
                    failed => {
                        // Not answered or an error: still leader while the time counted on lasts.
                        if Instant::now() < held.until {
                            let term = held.term;
                            self.held = Some(held);
                            return Role::Leader { term };
                        }
                        let error = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => "no answer".into(),
                        };
                        tracing::warn!(key = %self.key, term = held.term, %error,
                            "leader lease not renewed in time; stepping down");
                        Role::Follower { leader: None }
                    }
                }
            }
            None => {
                // The first round runs before anything else has started: it may wait a whole
                // lease for an answer rather than start a lone replica as a follower because
                // a loaded server answered late.
                let budget = if first { self.lease } else { self.interval() };
                let taken = tokio::time::timeout(budget, self.kv.create(&self.key, value)).await;
                match taken {
                    Ok(Ok(revision)) => {
                        self.held = Some(Held {
                            revision,
                            term: revision,
                            until: sent + self.counted(),
                        });
                        tracing::info!(key = %self.key, term = revision, instance = %self.me, "leader lease taken");
                        Role::Leader { term: revision }
                    }
                    Ok(Err(error)) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
                        if first {
                            if let Some(role) = self.reclaim(sent).await {
                                return role;
                            }
                        }
                        self.follower().await
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(key = %self.key, %error, "leader lease not taken");
                        Role::Follower { leader: None }
                    }
                    Err(_) => Role::Follower { leader: None },
                }
            }
        }
    }

    /// Gives the lease up (on shutdown), so a successor need not wait for it to run out. Only
    /// deletes the key if this replica still wrote it last.
    pub async fn resign(&mut self) {
        if let Some(held) = self.held.take() {
            let deleted = self
                .kv
                .delete_expect_revision(&self.key, Some(held.revision))
                .await;
            if let Err(error) = deleted {
                tracing::debug!(key = %self.key, %error, "leader lease not given up; it runs out");
            }
        }
    }

    /// Takes the lease back when the key holds this replica's own name.
    async fn reclaim(&mut self, sent: Instant) -> Option<Role> {
        let entry = tokio::time::timeout(self.interval(), self.kv.entry(self.key.clone()))
            .await
            .ok()?
            .ok()??;
        if entry.value.as_ref() != self.me.as_bytes() {
            return None;
        }
        let value = bytes::Bytes::from(self.me.clone());
        let update = self.kv.update(&self.key, value, entry.revision);
        let revision = tokio::time::timeout(self.interval(), update)
            .await
            .ok()?
            .ok()?;
        self.held = Some(Held {
            revision,
            term: revision,
            until: sent + self.counted(),
        });
        tracing::info!(key = %self.key, term = revision, instance = %self.me, "leader lease taken back after a restart");
        Some(Role::Leader { term: revision })
    }

    /// The part of a lease the holder counts on after sending a renewal.
    fn counted(&self) -> Duration {
        self.lease - self.lease / 3
    }

    async fn follower(&self) -> Role {
        let leader = match self.kv.get(self.key.clone()).await {
            Ok(Some(v)) => Some(String::from_utf8_lossy(&v).chars().take(128).collect()),
            _ => None,
        };
        Role::Follower { leader }
    }
}
