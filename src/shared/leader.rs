//! Whether this replica leads, as every room that performs a side effect asks it. The lease
//! loop in `supervise` sets it; with `leader.elect = false` it always leads.

use std::sync::Mutex;
#[cfg(feature = "lab")]
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::watch;

pub struct Leadership {
    instance: String,
    term: AtomicU64,
    /// Who leads, when known (this replica's own name while it leads).
    leader: Mutex<Option<String>>,
    /// Whether it leads; watched by the rooms that start and stop work with it.
    changed: watch::Sender<bool>,
    /// Lab hook: lead whatever the lease says (to show that two leaders at once stay safe).
    #[cfg(feature = "lab")]
    forced: AtomicBool,
}

impl Leadership {
    /// A replica that starts as a follower until its lease says otherwise (`elect`), or one
    /// that always leads.
    pub fn new(instance: String, elect: bool) -> Leadership {
        let leads = !elect;
        Leadership {
            leader: Mutex::new(leads.then(|| instance.clone())),
            instance,
            term: AtomicU64::new(0),
            changed: watch::channel(leads).0,
            #[cfg(feature = "lab")]
            forced: AtomicBool::new(false),
        }
    }

    pub fn leads(&self) -> bool {
        *self.changed.borrow()
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The lease revision this replica won (0 while it does not lead by lease).
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::Acquire)
    }

    pub fn leader(&self) -> Option<String> {
        self.leader
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records the outcome of a lease round; returns whether leading changed.
    pub fn set(&self, leads: bool, term: u64, leader: Option<String>) -> bool {
        #[cfg(feature = "lab")]
        let leads = leads || self.forced.load(Ordering::Acquire);
        self.term
            .store(if leads { term } else { 0 }, Ordering::Release);
        *self.leader.lock().unwrap_or_else(|p| p.into_inner()) = if leads {
            Some(self.instance.clone())
        } else {
            leader
        };
        self.changed.send_replace(leads) != leads
    }

    /// Changes of `leads`, for the rooms that start and stop work with it.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.changed.subscribe()
    }

    /// Lab hook: from now on this replica leads, whatever its lease says.
    #[cfg(feature = "lab")]
    pub fn force(&self) {
        self.forced.store(true, Ordering::Release);
        let term = self.term();
        self.set(true, term, None);
    }
}
