//! Which actors belong to the pipeline generation that is running now.
//!
//! When one pipeline actor fails, its peers of the same generation may fail too (a send to
//! the dead shard, say) or are killed by the supervisor while it tears the generation down.
//! Their supervision events arrive after the restart has begun and must not count as new
//! failures. The supervisor therefore restarts only for actors of the current generation,
//! and this set says which those are. Ingest joins the store actors it spawns when a store
//! first appears; everything else is spawned by the supervisor itself.

use ractor::ActorId;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
pub struct Members(Arc<Mutex<Current>>);

#[derive(Default)]
struct Current {
    /// 0 while no generation runs (between teardown and the next start).
    generation: u64,
    ids: HashSet<ActorId>,
}

impl Members {
    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        // The set holds plain ids; a panic elsewhere while it was held leaves it usable.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens `generation` (numbered from 1) with no members.
    pub fn begin(&self, generation: u64) {
        let mut c = self.lock();
        c.generation = generation;
        c.ids.clear();
    }

    /// Adds an actor spawned for `generation`. False when that generation is no longer the
    /// current one: the caller is a leftover of a torn-down generation and should stop what
    /// it just spawned.
    pub fn join(&self, generation: u64, id: ActorId) -> bool {
        let mut c = self.lock();
        if c.generation != generation || generation == 0 {
            return false;
        }
        c.ids.insert(id);
        true
    }

    pub fn contains(&self, id: &ActorId) -> bool {
        self.lock().ids.contains(id)
    }

    /// Closes the current generation; later joins for it are refused.
    pub fn end(&self) {
        let mut c = self.lock();
        c.generation = 0;
        c.ids.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_open_generation_takes_members_and_an_end_forgets_them() {
        let m = Members::default();
        let a = ActorId::Local(1);
        let b = ActorId::Local(2);
        assert!(!m.join(1, a), "nothing is open yet");
        m.begin(1);
        assert!(m.join(1, a));
        assert!(!m.join(2, b), "a generation that is not open");
        assert!(m.contains(&a) && !m.contains(&b));
        m.end();
        assert!(!m.contains(&a), "a torn-down generation has no members");
        assert!(
            !m.join(1, b),
            "a leftover of generation 1 is refused after its end"
        );
        m.begin(2);
        assert!(m.join(2, b) && m.contains(&b) && !m.contains(&a));
    }
}
