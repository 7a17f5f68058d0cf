//! The allocator's settings. The process allocates through mimalloc (see `main.rs`).

/// mimalloc's option `purge_delay` (its index in mimalloc 3's `mi_option_e`; the guard test
/// below fails if a new mimalloc moves it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long memory freed in bulk stays mapped before mimalloc hands it back to the OS.
pub const PURGE_DELAY_MS: std::ffi::c_long = 30_000;

/// Keeps freed memory for [`PURGE_DELAY_MS`] instead of mimalloc's 1 s. Barriers allocate and
/// free tens of MB every few seconds (movements, snapshot parts, posting documents); with a
/// 1 s delay the pages go back to the OS between barriers, and the next barrier faults them in
/// again and the kernel zeroes every one (8.8% of the data threads' time in a black-friday
/// drain). The price is that RSS stays near its peak for 30 s. `MIMALLOC_PURGE_DELAY` in the
/// environment wins. Call it first thing in `main`, before any other thread exists:
/// `mi_option_set` is not thread safe.
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets a plain integer option; the caller guarantees no other thread runs yet.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
}

/// Hands memory that mimalloc holds free but mapped back to the OS now, not after the purge
/// delay: what has come back to its arenas, and the calling thread's own empty pages. Meant
/// for one-off buffers far larger than a barrier's, a snapshot's parts above all (tens to
/// hundreds of MB for millions of positions): with snapshots every 30 s and a 30 s delay they
/// would never leave the process. Blocks freed by this thread but allocated by another go back
/// when their owner next collects, so this is not a guarantee for every byte; the memory
/// scenario measures what it achieves. It also purges what barriers freed lately, which the
/// next ones fault in again: one round of faults per snapshot, not per barrier.
pub fn hand_back() {
    // SAFETY: mi_collect takes no pointers; it collects the calling thread's heap and purges
    // the arenas' free memory, which is safe from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_we_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads a plain integer option.
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        // mimalloc 3's default purge delay; another value means the index moved.
        assert_eq!(
            get(),
            1000,
            "option {MI_OPTION_PURGE_DELAY} is not purge_delay"
        );
        keep_freed_memory();
        assert_eq!(get(), PURGE_DELAY_MS);
    }
}
