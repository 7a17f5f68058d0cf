//! The cap on postings requests in flight (`max_concurrent`).
//!
//! Atomic rather than behind the simulator's lock, because a slot is given back in `Drop`,
//! also when a client hangs up mid-request.

use std::sync::atomic::{AtomicUsize, Ordering};

/// `cap` slots, and the most ever taken at once.
#[derive(Debug)]
pub(crate) struct Slots {
    cap: usize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// Holds one of the `max_concurrent` slots until dropped.
pub(crate) struct InFlight<'a> {
    slots: &'a AtomicUsize,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.slots.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Slots {
    pub fn new(cap: usize) -> Slots {
        Slots {
            cap,
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        }
    }

    /// A slot, or `None` when all `cap` are taken.
    pub fn take(&self) -> Option<InFlight<'_>> {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        // Built at once so that a refusal gives the slot back.
        let slot = InFlight {
            slots: &self.in_flight,
        };
        if before >= self.cap {
            return None;
        }
        self.max_in_flight.fetch_max(before + 1, Ordering::AcqRel);
        Some(slot)
    }

    /// The most slots ever taken at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_or_dropped_slot_is_given_back() {
        let slots = Slots::new(2);
        let a = slots.take().unwrap();
        let _b = slots.take().unwrap();
        assert!(slots.take().is_none());
        drop(a);
        assert!(slots.take().is_some());
        assert_eq!(slots.max_in_flight(), 2);
    }
}
