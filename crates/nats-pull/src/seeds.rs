//! Where to reconnect: the configured addresses plus the ones the cluster announced.
//!
//! `nats.url` may name only some members of a cluster (or members that have since been
//! replaced). Every `INFO` lists the cluster's current client addresses, so the reader keeps
//! the latest list it saw and, when its connection ends, tries the configured addresses and
//! the learned ones, each once. It starts after the address it was connected to: that one
//! just failed (or is shutting down), and is tried last.

use crate::{Address, Pull, addresses, is_plain_address};

#[derive(Debug, Clone)]
pub struct Seeds {
    configured: Vec<Address>,
    /// The cluster's addresses from the last connection's latest `INFO` (bounded by the
    /// parser, [`crate::MAX_CONNECT_URLS`]).
    learned: Vec<String>,
    /// The address the last connection used.
    last: Option<String>,
}

impl Seeds {
    pub fn new(url: &str) -> Seeds {
        Seeds {
            configured: addresses(url),
            learned: Vec::new(),
            last: None,
        }
    }

    /// Notes what a connection learned before it ended: the address it used and the
    /// cluster's addresses. An empty announcement keeps what was learned before (a server
    /// that just restarted may not know its peers yet).
    pub fn remember(&mut self, pull: &Pull) {
        self.remember_parts(pull.address(), pull.connect_urls());
    }

    /// [`remember`](Self::remember) from its parts.
    pub fn remember_parts(&mut self, address: &str, connect_urls: &[String]) {
        self.last = Some(address.to_string());
        if !connect_urls.is_empty() {
            self.learned = connect_urls
                .iter()
                .filter(|a| is_plain_address(a))
                .take(crate::MAX_CONNECT_URLS)
                .cloned()
                .collect();
        }
    }

    /// The addresses learned from the cluster.
    pub fn learned(&self) -> &[String] {
        &self.learned
    }

    /// Every address once, configured ones first, then the learned ones; rotated so that the
    /// address after the last one used comes first and that one comes last.
    pub fn order(&self) -> Vec<Address> {
        let mut all: Vec<Address> = Vec::with_capacity(self.configured.len() + self.learned.len());
        let learned = self.learned.iter().map(|a| Address {
            host_port: a.clone(),
            tls: false,
        });
        for a in self.configured.iter().cloned().chain(learned) {
            if !all.iter().any(|b| b.host_port == a.host_port) {
                all.push(a);
            }
        }
        if let Some(last) = &self.last {
            if let Some(i) = all.iter().position(|a| &a.host_port == last) {
                all.rotate_left(i + 1);
            }
        }
        all
    }
}
