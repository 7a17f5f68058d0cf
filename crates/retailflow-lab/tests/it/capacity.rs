//! The query-capacity scenario at smoke size: one replica, then three on a fresh cluster,
//! with the same shoppers. Asserted is what holds on any machine: every shopper is answered,
//! HTTP answers come from every replica, NATS answers come through the queue group, and each
//! replica's CPU is read. How many answers a second is the full scenario's business.

use super::chaos::service_binary;
use retailflow_lab::capacity::{CapacitySpec, run};
use std::path::Path;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_and_three_replicas_answer_every_shopper() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/query-capacity.toml");
    let spec = CapacitySpec::load(&path).expect("scenario parses").smoke();
    let out = tempfile::tempdir().unwrap();
    let r = run(&spec, &service_binary(), out.path())
        .await
        .expect("capacity run completes");
    assert_eq!(
        r.steps.iter().map(|s| s.replicas).collect::<Vec<_>>(),
        spec.replicas
    );
    for s in &r.steps {
        assert_eq!(s.failed, 0, "{} replica(s): {:?}", s.replicas, s.failures);
        assert_eq!(s.http_by_replica.len(), s.replicas);
        assert!(
            s.http_by_replica.iter().all(|&n| n > 0),
            "every replica answers HTTP: {:?}",
            s.http_by_replica
        );
        assert!(s.nats_answered > 0, "the queue group answers");
        assert_eq!(s.http_answered, s.http_by_replica.iter().sum::<u64>());
        assert!(
            s.load_core_share.iter().all(|&c| c > 0.0),
            "{:?}",
            s.load_core_share
        );
        assert!(s.http_p99_ms >= s.http_p50_ms && s.http_p50_ms > 0.0);
    }
}
