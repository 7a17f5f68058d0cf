//! The reservation comparison (scenarios/reserve-vs-postgres.toml, smoke size) against a real
//! nats-server and this machine's PostgreSQL: both sides grant exactly what the stock allows
//! and hold exactly what they granted. Speed is reported by the scenario, not asserted here.

use retailflow_lab::reserve_bench::{ReserveSpec, run};
use std::path::Path;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_grant_exactly_the_stock() {
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/reserve-vs-postgres.toml");
    let spec = ReserveSpec::load(&file).unwrap();
    let out = tempfile::tempdir().unwrap();
    let report = run(&spec, true, out.path()).await.expect("comparison runs");
    let smoke = spec
        .smoke
        .clone()
        .expect("the scenario has a smoke version");
    // Hand-computed: every request asks for one unit of the hot SKU.
    let hot_stock = spec.hot.units.min(smoke.hot_requests as i64 / 2) as u64;
    let settings = spec.postgres.synchronous_commit.len();
    assert_eq!(report.results.len(), 2 * (1 + settings), "{report:#?}");
    for r in &report.results {
        assert_eq!(
            r.granted, r.expected_grants,
            "{} {} granted what the oracle says",
            r.system, r.workload
        );
        assert!(r.consistent, "{} {}: held = granted", r.system, r.workload);
        assert_eq!(r.granted + r.rejected, r.requests);
        if r.workload == "hot" {
            assert_eq!(r.requests, smoke.hot_requests as u64);
            assert_eq!(r.granted, hot_stock, "{} sold out exactly", r.system);
        } else {
            assert_eq!(r.requests, smoke.spread_requests as u64);
        }
    }
    assert!(report.hot_speedup > 0.0);
    let json = std::fs::read_to_string(out.path().join("report.json")).unwrap();
    assert!(json.contains("synchronous_commit=on"), "durability stated");
    assert!(json.contains("JetStream file storage"), "durability stated");
}
