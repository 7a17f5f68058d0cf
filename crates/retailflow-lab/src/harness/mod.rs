//! The life of a scenario, as steps the lab's runs share:
//!
//! 1. **start**: the message bus ([`Bus`], a private nats-server unless one is given), the ERP
//!    simulators, the pipeline's configuration ([`Stage::start`], [`pipeline_config`]) and the
//!    pipeline in this process ([`start_pipeline`]);
//! 2. **setup**: master data and opening stock, applied before anything is measured
//!    ([`Trader::setup`], [`setup_stock`]);
//! 3. **trade**: the trading load ([`Trader::trade`]);
//! 4. **settle**: until the pipeline has applied everything ([`applied`]);
//! 5. **verify**: the pipeline's and the ERP's books against the oracle ([`verify_atp`],
//!    [`verify_erp`], [`verify_dead_letters`], [`erp_summary`]);
//! 6. **report**: the report begun ([`report`]) and written ([`write_report`]).
//!
//! A scenario run ([`crate::run`]) takes every step with the pipeline in this process; chaos
//! ([`crate::chaos`]) runs the pipeline as a process of its own and settles and reads ATP its
//! own way; the recovery and reservation benchmarks take the start and setup steps.

mod start;
mod trade;
mod verify;

pub use start::{Bus, Stage, http_base, pipeline_config, private_server, start_pipeline};
pub use trade::{Trader, setup_stock};
pub use verify::{erp_summary, verify_atp, verify_dead_letters, verify_erp};

use crate::report::{Environment, Report};
use retailflow::supervise::pipeline::Pipeline;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Run(String),
}

/// A setup error saying what was being set up.
pub(crate) fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> RunError + '_ {
    move |e| RunError::Setup(format!("{what}: {e}"))
}

/// Waits until the pipeline has applied `seq`; `late` says what did not happen in `limit`.
pub async fn applied(
    pipeline: &Pipeline,
    seq: u64,
    limit: Duration,
    late: impl FnOnce() -> String,
) -> Result<(), RunError> {
    if pipeline.shared.view.wait_all(seq, limit).await {
        Ok(())
    } else {
        Err(RunError::Run(late()))
    }
}

/// The pipeline's own counters at the end of a run, into the report.
pub async fn pipeline_counters(pipeline: &Pipeline, p: &mut crate::report::PipelineStats) {
    use std::sync::atomic::Ordering::Relaxed;
    let m = &pipeline.shared.metrics;
    p.duplicates_redelivered = m.duplicates_redelivered.load(Relaxed);
    p.duplicates_resent = m.duplicates_resent.load(Relaxed);
    p.dead_letters = m.dead_letters.load(Relaxed);
    p.late_events = m.late_events.load(Relaxed);
    p.barriers = m.barriers.load(Relaxed);
    p.snapshots = m.snapshots.load(Relaxed);
    p.restarts = pipeline.restarts().await;
    p.negative_on_hand = m.negative_on_hand.load(Relaxed);
    p.feed_messages = m.feed_messages.load(Relaxed);
}

/// The report of a run on `stage`, begun now: the scenario and where it runs.
pub fn report(stage: &Stage, smoke: bool, nats_version: &str) -> Report {
    let mut report = Report::new(&stage.spec, smoke);
    report.environment = Environment::here(nats_version, stage.bus.server.as_ref());
    report
}

/// Writes `report.json`, `report.html` and `chart.png` into `out`, creating it.
pub fn write_report(report: &Report, out: &Path) -> Result<(), RunError> {
    std::fs::create_dir_all(out)
        .map_err(|e| RunError::Run(format!("creating {}: {e}", out.display())))?;
    report
        .write(out)
        .map_err(|e| RunError::Run(format!("writing the report to {}: {e}", out.display())))
}
