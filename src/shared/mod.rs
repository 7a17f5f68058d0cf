//! The parts several actors of one pipeline hold in common: the flow (credits, pause, stop,
//! poisoned events), the reservation decisions, the change-feed marks, the members of the
//! running generation. It sits below every actor, so the actors depend on it and not on each
//! other's modules. Each actor takes a narrow context of its own with the parts it uses; only
//! the wiring in `supervise` holds them all.

pub mod changes;
pub mod decisions;
pub mod leader;
pub mod members;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::Notify;

/// Work dispatched to actors but not yet applied. Ingest adds, actors subtract; ingest stops
/// pulling while the balance is above the configured credit.
#[derive(Default)]
pub struct Credits {
    in_flight: AtomicU64,
    freed: Notify,
}

impl Credits {
    pub fn take(&self, n: u64) {
        self.in_flight.fetch_add(n, Ordering::AcqRel);
    }

    pub fn give_back(&self, n: u64) {
        self.in_flight.fetch_sub(n, Ordering::AcqRel);
        self.freed.notify_waiters();
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Waits until at most `limit` is in flight (re-checking at least every 50 ms).
    pub async fn wait_below(&self, limit: u64) {
        while self.in_flight() > limit {
            let notified = self.freed.notified();
            if self.in_flight() <= limit {
                break;
            }
            let _ = tokio::time::timeout(std::time::Duration::from_millis(50), notified).await;
        }
    }

    pub fn reset(&self) {
        self.in_flight.store(0, Ordering::Release);
        self.freed.notify_waiters();
    }
}

/// Events that panicked an actor after ingest routed them, by stream sequence: the stage and
/// the panic text. The actor fails, the generation restarts from the last snapshot, and on
/// replay ingest dead-letters the event (reason `panic`) instead of routing it, so one bad
/// event costs one restart rather than a loop. Kept across generations; bounded (the oldest
/// go first), and in practice `supervision.max_restarts` escalates long before the bound.
#[derive(Default)]
pub struct Poisoned {
    any: AtomicBool,
    by_seq: std::sync::Mutex<std::collections::BTreeMap<u64, (&'static str, String)>>,
}

impl Poisoned {
    const MAX: usize = 1024;

    pub fn record(&self, seq: u64, stage: &'static str, text: String) {
        let mut map = self.by_seq.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(seq, (stage, text));
        while map.len() > Self::MAX {
            map.pop_first();
        }
        self.any.store(true, Ordering::Release);
    }

    /// Records that the event at `seq` panicked `actor` (of `stage`) and returns the error
    /// that fails the actor, so its generation restarts and the replay dead-letters the event.
    pub fn fail(
        &self,
        seq: u64,
        stage: &'static str,
        actor: std::fmt::Arguments<'_>,
        panic: &(dyn std::any::Any + Send),
    ) -> ractor::ActorProcessingErr {
        let text = panic_text(panic).to_string();
        let error = format!(
            "{actor} panicked at stream sequence {seq}: {text}; it restarts from the last snapshot and the event is dead-lettered on replay"
        );
        self.record(seq, stage, text);
        error.into()
    }

    /// The stage and panic text when `seq` panicked an actor before; free while none has.
    pub fn get(&self, seq: u64) -> Option<(&'static str, String)> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let map = self.by_seq.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&seq).cloned()
    }
}

/// Test hooks (supervision tests): the shard or store that handles this stream sequence
/// panics while handling it. 0 = off.
#[cfg(feature = "lab")]
#[derive(Default)]
pub struct PanicHooks {
    pub shard: AtomicU64,
    pub store: AtomicU64,
}

/// The pipeline's flow: work in flight, whether ingest is paused or held, whether a shutdown
/// was asked for, and which events panicked an actor. Ingest, the actors it feeds, the
/// snapshot ticker and the front ends each hold it; nothing else of the pipeline comes with it.
#[derive(Default)]
pub struct Flow {
    pub credits: Credits,
    /// Set while the ERP backlog is above `barrier.backlog_pause`.
    pub paused: AtomicBool,
    /// Set once a shutdown was requested; actors stop taking new work.
    pub stopping: AtomicBool,
    pub poisoned: Poisoned,
    /// Test hook: set by a scenario that wants a backlog to build before ingest drains it.
    #[cfg(feature = "lab")]
    pub hold: AtomicBool,
    #[cfg(feature = "lab")]
    pub panic_hooks: PanicHooks,
}

impl Flow {
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }
}

/// The text a panic was raised with.
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}
