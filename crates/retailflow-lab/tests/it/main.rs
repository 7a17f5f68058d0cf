//! The lab's integration tests, one binary: scenarios end to end, chaos, capture and replay,
//! the reservation, recovery, memory and query-capacity benchmarks at smoke size,
//! interrupting a run.

mod capacity;
mod capture;
mod chaos;
mod failover;
mod fastpack;
mod fuzz_seeds;
mod interrupt;
mod memory_bench;
mod recovery_bench;
mod reserve_bench;
mod scenarios;
