//! The recovery benchmark at a small size: after a restore and a replay the positions and the
//! stock are what the opening stock and the sales say. Its time is reported, not asserted.

use retailflow_lab::recovery_bench::{RecoveryArgs, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_restores_the_snapshot_and_replays_the_tail_exactly() {
    let out = tempfile::tempdir().unwrap();
    let args = RecoveryArgs {
        positions: 20_000,
        locations: 20,
        events: 20_000,
        expect_seconds: f64::INFINITY,
        shards: 3,
        out: out.path().to_path_buf(),
    };
    let r = run(&args).await.expect("benchmark runs");
    assert_eq!(r.positions, 20_000);
    assert_eq!(r.positions_after, 20_000, "every position came back");
    // 1,000 units opening stock per position, one unit per sale.
    assert_eq!(r.on_hand_after, 20_000 * 1_000 - 20_000);
    assert!(
        r.last_seq > r.snapshot_seq + 20_000 - 1,
        "the tail came after the snapshot"
    );
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert!(out.path().join("report.json").exists());
}
