//! The lab's integration tests, one binary: scenarios end to end, chaos, capture and replay,
//! the reservation and recovery benchmarks at smoke size, interrupting a run.

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
