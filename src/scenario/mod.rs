//! Scenarios: generated or recorded retail peaks run through retailflow, verified against an
//! independent oracle, measured, and reported.

pub mod capture;
pub mod ceiling;
pub mod chaos;
pub mod chart;
pub mod cli;
pub mod generate;
pub mod measure;
pub mod oracle;
pub mod publish;
pub mod recovery_bench;
pub mod report;
pub mod reserve_bench;
pub mod run;
pub mod settle;
pub mod spec;
pub mod world;
