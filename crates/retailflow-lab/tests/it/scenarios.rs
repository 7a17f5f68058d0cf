//! The smoke version of every shipped scenario, end to end: generated load with duplicates,
//! reordering and poison, verified against the oracle (ATP, ERP books, dead letters).

use retailflow_lab::run::{RunOptions, run};
use retailflow_lab::spec::Scenario;
use std::path::Path;
use std::time::Duration;

/// One scenario at a time: each brings up its own nats-server, ERP simulator and pipeline, and
/// the machine has two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A shipped scenario, which has a smoke section.
fn scenario(name: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scenarios")
        .join(format!("{name}.toml"));
    let spec = Scenario::load(&path).expect("scenario file parses");
    assert!(spec.smoke.is_some(), "{name} has a smoke section");
    spec
}

/// Options of a smoke run writing its report into `out`.
fn smoke_options(out: &Path) -> RunOptions {
    RunOptions {
        smoke: true,
        ceiling: false,
        out: out.to_path_buf(),
        nats: None,
        progress: false,
        settle_limit: Some(Duration::from_secs(180)),
    }
}

async fn smoke(name: &str) -> retailflow_lab::report::Report {
    let _turn = ONE_AT_A_TIME.lock().await;
    let spec = scenario(name);
    let out = tempfile::tempdir().unwrap();
    let report = run(
        &spec,
        &RunOptions {
            // One scenario measures the ceiling too, so that path runs in CI.
            ceiling: name == "black-friday",
            ..smoke_options(out.path())
        },
    )
    .await
    .expect("scenario runs");
    assert!(report.passed, "{name} smoke failed:\n{}", report.summary());
    let v = &report.verification;
    assert!(
        v.atp_checked > 100 && v.erp_inventory_checked > 100,
        "{name}: checked too little"
    );
    assert_eq!(v.dead_letters_found, report.counts.poison);
    // Every query shape the scenario asks for was sent and answered (the report's checks
    // fail on any query error).
    let mix = &spec.queries.mix;
    let wanted = [
        ("all locations", mix.all),
        ("channel", mix.channel),
        ("named stores", mix.stores),
    ];
    for (shape, weight) in wanted {
        let answered = report
            .latency
            .query_shapes
            .iter()
            .find(|(s, _)| s == shape)
            .map_or(0, |(_, p)| p.count);
        if spec.queries.rate > 0 && weight > 0 {
            assert!(answered > 0, "{name}: no {shape} queries answered");
        }
    }
    for f in ["report.json", "report.html", "chart.png"] {
        assert!(out.path().join(f).exists(), "{name}: {f} written");
    }
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_friday_smoke() {
    let report = smoke("black-friday").await;
    let c = report.ceiling.as_ref().expect("the ceiling was measured");
    // Three drains ran to the end (a stalled drain is an error, not a report), and the ceiling
    // is one of them, neither the fastest nor the slowest.
    assert_eq!(c.drain_rates.len(), 3, "{:?}", c.drain_rates);
    assert!(c.drain_rates.iter().all(|r| r.is_finite() && *r > 0.0));
    assert!(
        c.drain_rates.contains(&c.rate),
        "{} not among {:?}",
        c.rate,
        c.drain_rates
    );
    let lo = c.drain_rates.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = c.drain_rates.iter().copied().fold(0.0, f64::max);
    assert!(lo <= c.rate && c.rate <= hi);
    assert!(c.ratio > 0.0, "the ratio was reported");
    // The reference drains (through async-nats, and direct once the queries stopped) ran to
    // the end as well, and the shoppers' load ran during the ceiling's drains.
    for reference in [c.async_nats_rate, c.quiet_rate] {
        assert!(
            reference.is_some_and(|r| r.is_finite() && r > 0.0),
            "{reference:?}"
        );
    }
    if report.latency.queries_per_s > 0.0 {
        assert!(c.query_rate > 0.0, "no queries during the ceiling");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_day_smoke() {
    smoke("steady-day").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erp_outage_smoke() {
    smoke("erp-outage").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flash_sale_hot_sku_smoke() {
    smoke("flash-sale-hot-sku").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_and_duplicates_smoke() {
    smoke("poison-and-duplicates").await;
}

/// Seven business days closed with Z reports, a variance, a lost and a late transaction, one
/// store refused by the ERP's API until the fix and the re-drive, and PostgreSQL interface
/// tables beside the API (the machine's PostgreSQL, a database of the run's own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn month_end_smoke() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let spec = scenario("month-end");
    let out = tempfile::tempdir().unwrap();
    let report = retailflow_lab::month_end::run(&spec, &smoke_options(out.path()))
        .await
        .expect("month-end runs");
    assert!(
        report.passed,
        "month-end smoke failed:\n{}",
        report.summary()
    );
    let m = report.month_end.as_ref().expect("month-end figures");
    let mut injected = 0;
    for status in ["variance", "missing_transactions", "late_correction"] {
        let planned = m.injected.get(status).copied().unwrap_or(0);
        assert!(planned >= 1, "no {status} store day: {:?}", m.injected);
        assert_eq!(
            m.flagged.get(status).copied(),
            Some(planned),
            "{:?}",
            m.flagged
        );
        injected += planned;
    }
    assert_eq!(
        m.flagged.get("balanced").copied(),
        Some(m.store_days - injected)
    );
    assert!(m.lost_transactions >= 1 && m.late_transactions >= 1);
    assert!(m.refused_documents > 0, "the ERP refused nothing");
    assert_eq!(m.redriven, m.refused_documents);
    assert!(m.tables_documents > 0 && m.tables_not_imported == 0);
    assert_eq!(
        m.to_accepted.count, m.store_days,
        "every store day was accepted"
    );
    assert!(out.path().join("report.html").exists());
}
