//! CPU scheduling hints for the process's threads. Ingest is throughput work and may wait;
//! answering a shopper is latency work and should not. Linux lets a thread say both things
//! about itself: a nice value (its share of a busy core), since 6.12 a slice length (how
//! long it may run before a waking thread with an earlier deadline takes the core, and how soon
//! a thread with a short slice gets a core when it wakes), and a real-time policy (it takes a
//! core the moment it wakes, ahead of every normal thread). Every call here is best effort: a
//! kernel or a sandbox that refuses leaves the thread as it was, and the refusal is logged.

use std::sync::atomic::{AtomicBool, Ordering};

/// Gives the calling thread a higher nice value (Linux threads have their own).
pub fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on the calling thread with valid arguments; failure only
        // means the thread keeps its priority, which is logged.
        let rc = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, nice)
        };
        if rc != 0 {
            tracing::debug!(nice, "could not lower the thread's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// The shortest slice the kernel accepts (0.1 ms).
pub const SHORT_SLICE_NS: u64 = 100_000;

/// Asks for a short scheduler slice for the calling thread (normal policy, nice unchanged).
/// Under EEVDF a thread with a short slice preempts a running thread with a longer one when it
/// wakes, instead of waiting for that thread's slice to end: a query then waits microseconds
/// for a core that ingest is using, not milliseconds. Kernels before 6.12 ignore the request.
pub fn short_slice() {
    #[cfg(target_os = "linux")]
    {
        /// `struct sched_attr` of `sched_setattr(2)`, version 1 (56 bytes).
        #[repr(C)]
        struct SchedAttr {
            size: u32,
            policy: u32,
            flags: u64,
            nice: i32,
            priority: u32,
            runtime: u64,
            deadline: u64,
            period: u64,
            util_min: u32,
            util_max: u32,
        }
        // sched_setattr sets the nice value too: keep the thread's own. (getpriority cannot
        // fail for the calling thread.)
        // SAFETY: reads the calling thread's nice value.
        let nice = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::getpriority(libc::PRIO_PROCESS, tid)
        };
        let attr = SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            policy: libc::SCHED_OTHER as u32,
            flags: 0,
            nice,
            priority: 0,
            runtime: SHORT_SLICE_NS,
            deadline: 0,
            period: 0,
            util_min: 0,
            util_max: 0,
        };
        // SAFETY: sched_setattr on the calling thread (pid 0) with a fully initialised
        // sched_attr whose size field matches its layout; the kernel copies it and does not
        // keep the pointer.
        let rc =
            unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0u32) };
        if rc != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "could not shorten the thread's scheduler slice"
            );
        }
    }
}

/// Puts the calling thread under `SCHED_RR` at `priority` (1 to 99): it then runs as soon as it
/// wakes, ahead of every thread of the normal policy (ingest, the broker, other programs). For
/// threads that wake often and work briefly; the kernel's real-time throttling (by default
/// 5% of each second kept for normal threads) bounds what a runaway one can take.
pub fn realtime(priority: i32) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param {
            sched_priority: priority.clamp(1, 99),
        };
        // SAFETY: sched_setscheduler on the calling thread (pid 0) with a valid sched_param.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_RR, &param) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = priority;
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

/// Whether a thread of this process may take `SCHED_RR` at `priority` (false for 0 or less):
/// asked of a short-lived thread, so no thread that stays keeps the policy.
pub fn realtime_allowed(priority: i32) -> bool {
    priority > 0
        && std::thread::spawn(move || realtime(priority).is_ok())
            .join()
            .unwrap_or(false)
}

/// Said once per process: threads that asked for a real-time priority and did not get it.
static REALTIME_REFUSED: AtomicBool = AtomicBool::new(false);

/// Scheduling for a latency thread: `SCHED_RR` at `priority` when it is above 0 and the
/// system allows it (root, `CAP_SYS_NICE` or an `RLIMIT_RTPRIO` of at least `priority`),
/// otherwise a short slice under the normal policy. A refusal is logged once, as a warning:
/// queries then wait longer for a core while ingest is busy.
pub fn latency_thread(priority: i32) {
    if priority > 0 {
        match realtime(priority) {
            Ok(()) => return,
            Err(error) => {
                if !REALTIME_REFUSED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        %error,
                        priority,
                        "latency threads could not get a real-time priority; they use short \
                         slices instead (grant CAP_SYS_NICE or RLIMIT_RTPRIO, or set \
                         runtime.api_realtime_priority = 0 to silence this)"
                    );
                }
            }
        }
    }
    short_slice();
}

/// A runtime of its own threads, for work that must not share worker threads with the API.
/// Dropping it shuts it down in the background: dropping a runtime blocks, which is not
/// allowed inside async code (e.g. when starting fails half way).
pub struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl OwnRuntime {
    /// `workers` threads (0: one per core) named `name`, each with nice value `nice` (0 to 19;
    /// 0 leaves the priority alone).
    pub fn build(name: &str, workers: usize, nice: i32) -> std::io::Result<OwnRuntime> {
        let nice = nice.clamp(0, 19);
        Self::with_start(name, workers, move || {
            if nice > 0 {
                lower_priority(nice)
            }
        })
    }

    /// `workers` latency threads (0: one per core) named `name`, each scheduled by
    /// [`latency_thread`] with `rt_priority`. Nothing blocking may run on it: its threads,
    /// blocking-pool ones included, take a core ahead of normal threads.
    pub fn for_latency(
        name: &str,
        workers: usize,
        rt_priority: i32,
    ) -> std::io::Result<OwnRuntime> {
        Self::with_start(name, workers, move || latency_thread(rt_priority))
    }

    /// A multi-thread runtime of `workers` threads (0: one per core) named `name`, each
    /// running `on_start` first.
    fn with_start(
        name: &str,
        workers: usize,
        on_start: impl Fn() + Send + Sync + 'static,
    ) -> std::io::Result<OwnRuntime> {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.enable_all().thread_name(name).on_thread_start(on_start);
        if workers > 0 {
            b.worker_threads(workers);
        }
        Ok(OwnRuntime(Some(b.build()?)))
    }

    pub fn handle(&self) -> tokio::runtime::Handle {
        self.0
            .as_ref()
            .expect("runtime present until dropped")
            .handle()
            .clone()
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn nice_of_this_thread() -> i32 {
        // SAFETY: reads the calling thread's nice value.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::getpriority(libc::PRIO_PROCESS, tid)
        }
    }

    fn policy_of_this_thread() -> i32 {
        // SAFETY: reads the calling thread's policy.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn a_latency_thread_is_real_time_when_allowed_and_normal_otherwise() {
        std::thread::spawn(|| {
            let allowed = realtime(1).is_ok();
            // Back to normal, then through the function under test.
            let normal = libc::sched_param { sched_priority: 0 };
            // SAFETY: sched_setscheduler on the calling thread with a valid sched_param.
            assert_eq!(
                unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &normal) },
                0
            );
            latency_thread(1);
            let want = if allowed {
                libc::SCHED_RR
            } else {
                libc::SCHED_OTHER
            };
            assert_eq!(policy_of_this_thread(), want);
            latency_thread(0);
            assert_eq!(policy_of_this_thread(), libc::SCHED_OTHER);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn asking_whether_real_time_is_allowed_changes_nothing_here() {
        let before = policy_of_this_thread();
        let allowed = realtime_allowed(1);
        assert_eq!(policy_of_this_thread(), before);
        assert!(!realtime_allowed(0));
        // The answer is what a thread asking for itself gets.
        let own = std::thread::spawn(|| realtime(1).is_ok()).join().unwrap();
        assert_eq!(allowed, own);
    }

    #[test]
    fn a_short_slice_keeps_the_nice_value() {
        std::thread::spawn(|| {
            lower_priority(3);
            short_slice();
            assert_eq!(nice_of_this_thread(), 3);
        })
        .join()
        .unwrap();
    }
}
