//! Chaos, short form: the poison-and-duplicates smoke scenario (duplicates, re-sends,
//! reordering, poison events, ERP rejections and 5xx) against retailflow running as its own
//! process, which is SIGKILLed and restarted 20 times at random moments; nats-server is killed
//! and restarted once mid-drain; the process is stopped with SIGTERM. The books must be exact.

use retailflow_lab::chaos::{ChaosOptions, run};
use retailflow_lab::spec::Scenario;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_kills_and_a_nats_restart_end_exact() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/poison-and-duplicates.toml");
    let spec = Scenario::load(&path).expect("scenario parses");
    let out = tempfile::tempdir().unwrap();
    let mut opts = ChaosOptions::new(service_binary(), 20, out.path().to_path_buf());
    opts.smoke = true;
    opts.nats_restarts = 1;
    opts.kill_gap = (Duration::from_millis(200), Duration::from_millis(1500));
    opts.settle_limit = Duration::from_secs(240);
    let report = run(&spec, &opts).await.expect("chaos run completes");
    let keep = std::env::var_os("RETAILFLOW_KEEP_CHAOS").is_some();
    if !report.passed || keep {
        // Keep the pipeline logs for whoever has to read them.
        let _ = out.keep();
    }
    assert!(report.passed, "chaos run failed:\n{}", report.summary());
    let chaos = report.chaos.as_ref().expect("chaos stats");
    assert_eq!(chaos.kills, 20);
    assert_eq!(chaos.nats_restarts, 1);
    assert_eq!(chaos.sigterm_exit_code, Some(0));
    let v = &report.verification;
    assert_eq!(v.atp_mismatches, 0);
    assert!(v.atp_checked > 100, "checked {} positions", v.atp_checked);
    assert_eq!(v.erp_mismatches, 0);
    assert!(v.erp_sales_checked > 100);
    assert_eq!(v.duplicate_documents, 0, "no document booked twice");
    assert_eq!(v.dead_letters_found, report.counts.poison);
    assert!(report.counts.poison > 0 && report.counts.duplicates > 0);
    assert!(v.erp_rejections > 0, "ERP rejections dead-lettered");
}

/// The `retailflow` binary the chaos run starts and kills: built beside the lab's own binary
/// when the workspace's tests are built (`cargo test` at the root).
pub fn service_binary() -> PathBuf {
    let lab = Path::new(env!("CARGO_BIN_EXE_retailflow-lab"));
    let service = lab.with_file_name("retailflow");
    assert!(
        service.exists(),
        "{} is missing: run the tests from the workspace root (cargo test), or cargo build -p retailflow first",
        service.display()
    );
    service
}
