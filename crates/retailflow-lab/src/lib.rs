//! retailflow-lab: generated or recorded retail peaks run through retailflow, verified against
//! an independent oracle, measured and reported; capture and replay; chaos; the reservation,
//! recovery and memory benchmarks; the demo. The `retailflow-lab` binary runs them.

pub mod capacity;
pub mod capture;
pub mod ceiling;
pub mod chaos;
pub mod chart;
pub mod cli;
pub mod demo;
pub mod failover;
pub mod generate;
pub mod harness;
pub mod measure;
pub mod memory_bench;
pub mod month_end;
pub mod oracle;
pub mod publish;
pub mod recovery_bench;
pub mod report;
pub mod reserve_bench;
pub mod run;
pub mod spec;
pub mod world;
