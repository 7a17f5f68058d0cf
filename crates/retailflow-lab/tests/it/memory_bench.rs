//! The memory scenario at smoke size, with a snapshot a second so that the window holds some:
//! it runs the service as a process of its own, samples it, and reads the positions back
//! exact. What it measures is the full scenario's business (`scenario memory`).

use super::chaos::service_binary;
use retailflow_lab::memory_bench::{MemorySpec, run};
use std::path::Path;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_large_chain_smoke_reads_every_checked_position_back_exact() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/large-chain.toml");
    let mut spec = MemorySpec::load(&path).expect("scenario parses").smoke();
    spec.snapshot_seconds = 1;
    let out = tempfile::tempdir().unwrap();
    let r = run(&spec, &service_binary(), out.path())
        .await
        .expect("memory run completes");
    assert!(r.failures.is_empty(), "failures: {:?}", r.failures);
    assert_eq!(r.positions, spec.locations * spec.skus);
    assert!(r.positions_checked > 0, "no position was read back");
    assert!(r.snapshots >= 1, "no snapshot was written in the window");
    assert!(!r.samples_mb.is_empty());
    assert!(r.steady_rss_mb >= r.steady_min_rss_mb && r.steady_min_rss_mb > 0.0);
}
