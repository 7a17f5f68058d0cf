//! Failover, short form: the cluster-failover smoke scenario. Three replicas on a 3-node
//! cluster; the leader is SIGKILLed, the NATS node leading the events stream is killed and
//! restarted, every replica is restarted in turn, while shoppers query and reserve on all of
//! them. Asserted here is what must hold on any machine: every replica's ATP and the ERP's
//! books exact, nothing booked twice, no oversell, a new leader that resumes barriers and
//! postings, graceful stops. How fast is the full scenario's business (`scenario run`).

use super::chaos::service_binary;
use retailflow_lab::failover::{FailoverOptions, run};
use retailflow_lab::spec::Scenario;
use std::path::Path;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_a_node_and_every_replica_in_turn_keeps_the_books_exact() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/cluster-failover.toml");
    let spec = Scenario::load(&path).expect("scenario parses");
    let out = tempfile::tempdir().unwrap();
    let mut opts = FailoverOptions::new(service_binary(), out.path().to_path_buf());
    opts.smoke = true;
    opts.settle_limit = Duration::from_secs(240);
    let report = run(&spec, &opts).await.expect("failover run completes");
    let speed = ["leader killed", "failed queries", "longest apply gap"];
    let failed: Vec<_> = report
        .failed_checks()
        .into_iter()
        .filter(|c| !speed.iter().any(|s| c.name.starts_with(s)))
        .collect();
    if !failed.is_empty() || !report.problems.is_empty() {
        let _ = out.keep();
    }
    assert!(
        failed.is_empty() && report.problems.is_empty(),
        "failover run failed:\n{}",
        report.summary()
    );
    let f = report.failover.as_ref().expect("failover stats");
    let k = f.takeover.as_ref().expect("the leader was killed");
    assert!(
        !k.new_leader.is_empty() && k.new_leader != k.killed,
        "{k:?}"
    );
    assert!(
        k.barrier_after_s.is_some() && k.posting_after_s.is_some(),
        "{k:?}"
    );
    assert!(f.node_restart_s.is_some());
    assert_eq!(f.rolling_exit_codes, vec![Some(0); 3]);
    assert_eq!(f.atp_mismatches, vec![0; 3]);
    let v = &report.verification;
    assert!(v.atp_checked > 100 && v.erp_sales_checked > 10, "{v:?}");
    assert_eq!((v.erp_mismatches, v.duplicate_documents), (0, 0));
    assert!(f.granted > 0 && f.hot_reserved.iter().all(|r| *r >= f.granted as i64));
    assert!(f.http_queries.sent > 0 && f.nats_queries.sent > 0);
}
