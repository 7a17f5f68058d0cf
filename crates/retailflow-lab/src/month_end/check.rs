//! The checks of a month-end run: ATP and the ERP simulator's books against the oracle (the
//! refused store included, since it was re-driven), every store day's reconciliation against
//! the oracle of the faults, the PostgreSQL tables' books, the re-drive, and the time from a
//! Z report to `accepted`.

use super::tables::{TableBooks, Tables};
use super::{Ctx, Fault, Month, Sums, endpoint, exception_word};
use crate::harness::{self, Trader};
use crate::measure;
use crate::oracle::Oracle;
use crate::publish::Published;
use crate::report::{MonthEndStats, Report};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Fills the report's verification and month-end figures and adds the month-end checks.
pub async fn verify(
    report: &mut Report,
    ctx: &Ctx<'_>,
    trader: &Trader,
    m: &Month,
    tables: Option<&Tables>,
) {
    harness::verify_atp(ctx.pipeline, &trader.oracle, report);
    // The refused store was fixed and re-driven: the ERP's books must hold it too.
    let mut spec = ctx.stage.spec.clone();
    spec.faults.erp_reject_locations.clear();
    harness::verify_erp(&spec, &ctx.stage.sims, &trader.oracle, report);
    let shared = &ctx.pipeline.shared;
    let letters = &shared.config.streams.dead_letters;
    let none = Published::default();
    harness::verify_dead_letters(&shared.js, letters, &none, &ctx.stage.spec, report).await;
    report.erp = harness::erp_summary(&ctx.stage.spec, &ctx.stage.sims);
    harness::pipeline_counters(ctx.pipeline, &mut report.pipeline).await;
    report.pipeline.mode = "month-end".into();
    report.pipeline.peak_rss_mb = measure::rss_mb().1;
    report.counts.setup_events = trader.setup.events;
    report.counts.trading_events = m.transactions + m.late_events + m.booked.len() as u64;

    let mut s = MonthEndStats {
        days: ctx.me.days,
        stores: ctx.stage.world.stores,
        store_days: m.booked.len() as u64,
        transactions: m.transactions + m.late_events + m.lost,
        lost_transactions: m.lost,
        late_transactions: m.late_events,
        refused_locations: ctx.stage.spec.faults.erp_reject_locations.clone(),
        refused_documents: ctx.stage.sims.first().map_or(0, |s| s.stats().rejected),
        redriven: m.redriven.letters,
        redrive_failures: m.redriven.failed.clone(),
        elapsed_s: m.elapsed.as_secs_f64(),
        ..MonthEndStats::default()
    };
    for b in &m.booked {
        if let Some(f) = b.fault {
            *s.injected.entry(f.status().into()).or_default() += 1;
        }
    }
    reconciliation(&mut s, ctx, m).await;
    if let Some(t) = tables {
        match t.books().await {
            Ok(books) => table_books(&mut s, &books, &trader.oracle),
            Err(e) => {
                s.tables_differ += 1;
                s.example(format!("PostgreSQL tables: {e}"));
            }
        }
    }
    to_accepted(&mut s, ctx, m);
    checks(report, &s, ctx);
    report.month_end = Some(s);
}

/// Every store day's status, exceptions and totals as reconciliation shows them, against the
/// oracle.
async fn reconciliation(s: &mut MonthEndStats, ctx: &Ctx<'_>, m: &Month) {
    for day in &m.days {
        let rows = match ctx.api.day(*day).await {
            Ok(r) => r,
            Err(e) => {
                s.books_differ += 1;
                s.example(e);
                continue;
            }
        };
        for b in m.booked.iter().filter(|b| b.day == *day) {
            let at = format!("{} {}", b.store, b.day);
            let Some(row) = rows.get(&b.store) else {
                s.missed += 1;
                s.example(format!("{at}: not in reconciliation"));
                continue;
            };
            let status = row["status"].as_str().unwrap_or("?");
            *s.flagged.entry(status.into()).or_default() += 1;
            let want = b.fault.map_or("balanced", Fault::status);
            if status != want {
                match b.fault {
                    None => s.false_alarms += 1,
                    Some(_) => s.missed += 1,
                }
                s.example(format!("{at}: status {status}, made {want}"));
            }
            s.redrives_recorded += row["redrive_count"].as_u64().unwrap_or(0);
            if let Some(wrong) = books_wrong(row, &b.source) {
                s.books_differ += 1;
                s.example(format!("{at}: {wrong}"));
            }
            if b.fault.is_none() && row["exception_count"] == 0 {
                continue;
            }
            let found: BTreeSet<String> = match ctx.api.detail(&b.store, b.day).await {
                Ok(d) => d["exceptions"]
                    .as_array()
                    .map(|a| a.iter().filter_map(exception_word).collect())
                    .unwrap_or_default(),
                Err(e) => BTreeSet::from([e]),
            };
            if found != b.exceptions {
                s.exceptions_differ += 1;
                s.example(format!(
                    "{at}: exceptions {found:?}, the oracle's {:?}",
                    b.exceptions
                ));
            }
        }
    }
}

/// Money of a reconciliation total (`source`, `accepted`, ...) with zero entries left out.
fn money(v: &Value) -> (i64, BTreeMap<String, i64>, BTreeMap<String, i64>) {
    let map = |m: &Value| -> BTreeMap<String, i64> {
        m.as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_i64().unwrap_or(i64::MIN)))
                    .filter(|(_, v)| *v != 0)
                    .collect()
            })
            .unwrap_or_default()
    };
    (
        v["sales"].as_i64().unwrap_or(i64::MIN),
        map(&v["taxes"]),
        map(&v["tenders"]),
    )
}

/// What is wrong with a store day's books, if anything: its source against the tills'
/// transactions, and every endpoint's accepted money against the source, nothing rejected.
fn books_wrong(row: &Value, want: &Sums) -> Option<String> {
    let nonzero = |m: &BTreeMap<String, i64>| -> BTreeMap<String, i64> {
        m.iter()
            .filter(|(_, v)| **v != 0)
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    };
    let want = (want.sales, nonzero(&want.taxes), nonzero(&want.tenders));
    let source = money(&row["source"]);
    if source != want {
        return Some(format!("source {source:?}, the tills sent {want:?}"));
    }
    let erps = row["erp"].as_array().cloned().unwrap_or_default();
    if erps.is_empty() {
        return Some("no ERP endpoint in reconciliation".into());
    }
    for e in &erps {
        let name = e["endpoint"].as_str().unwrap_or("?");
        let accepted = money(&endpoint(row, name)["accepted"]);
        if accepted != want {
            return Some(format!(
                "{name} accepted {accepted:?}, the tills sent {want:?}"
            ));
        }
        if e["rejected"]["documents"] != 0 {
            return Some(format!("{name} still has rejected documents"));
        }
    }
    None
}

/// The PostgreSQL tables' books against the oracle: sales per location, SKU and tax code,
/// money per location and tender, and the movements of each position adding up to its on
/// hand. Keys on either side only count too.
fn table_books(s: &mut MonthEndStats, books: &TableBooks, oracle: &Oracle) {
    s.tables_documents = books.documents;
    s.tables_not_imported = books.not_imported;
    let mut sales = books.sales.clone();
    for (key, want) in &oracle.sales {
        let got = sales.remove(key).unwrap_or_default();
        let want = [
            want.qty_sold,
            want.qty_returned,
            want.sales_amount,
            want.returns_amount,
            want.tax_amount,
        ];
        if got != want {
            s.tables_differ += 1;
            s.example(format!("tables: sales {key:?} {got:?}, expected {want:?}"));
        }
    }
    let mut tenders = books.tenders.clone();
    for (key, want) in &oracle.tenders {
        let got = tenders.remove(key).unwrap_or_default();
        if got != (want.paid, want.refunded) {
            s.tables_differ += 1;
            s.example(format!("tables: tender {key:?} {got:?}, expected {want:?}"));
        }
    }
    let mut movements = books.movements.clone();
    for (key, want) in &oracle.stock {
        let got = movements.remove(key).unwrap_or(0);
        if got != want.on_hand {
            s.tables_differ += 1;
            s.example(format!(
                "tables: movements of {key:?} add to {got}, on hand {}",
                want.on_hand
            ));
        }
    }
    let extra = sales.len() + tenders.len() + movements.values().filter(|q| **q != 0).count();
    if extra > 0 {
        s.tables_differ += extra as u64;
        s.example(format!(
            "tables: {extra} keys booked that the tills never had"
        ));
    }
}

/// From each store day's Z report to its first `accepted`.
fn to_accepted(s: &mut MonthEndStats, ctx: &Ctx<'_>, m: &Month) {
    let refused: BTreeSet<String> = s.refused_locations.iter().cloned().collect();
    let fix_day = m.days.get(ctx.me.fix_after_day as usize - 1).copied();
    let (mut all, mut unrefused) = (measure::histogram(), measure::histogram());
    for b in &m.booked {
        let Some(at) = m.accepted.get(&(b.store.clone(), b.day)) else {
            s.example(format!("{} {}: never seen accepted", b.store, b.day));
            continue;
        };
        let micros = (at.saturating_duration_since(b.closed_at).as_micros() as u64).max(1);
        let _ = all.record(micros);
        let before_fix = fix_day.is_some_and(|f| b.day <= f);
        if !(refused.contains(&b.store) && before_fix) {
            let _ = unrefused.record(micros);
        }
    }
    s.to_accepted = measure::percentiles(&all);
    s.to_accepted_unrefused = measure::percentiles(&unrefused);
}

fn checks(report: &mut Report, s: &MonthEndStats, ctx: &Ctx<'_>) {
    let injected: u64 = s.injected.values().sum();
    report.check(
        "reconciliation flags exactly the injected store days",
        format!("{injected} flagged, 0 false alarms, 0 missed"),
        format!(
            "{} flagged, {} false alarms, {} missed",
            s.store_days - s.flagged.get("balanced").copied().unwrap_or(0),
            s.false_alarms,
            s.missed
        ),
        s.false_alarms == 0 && s.missed == 0 && injected > 0,
    );
    report.check(
        "exceptions equal the oracle's",
        "0 store days differ".into(),
        format!("{} of {} differ", s.exceptions_differ, s.store_days),
        s.exceptions_differ == 0,
    );
    report.check(
        "books equal the source, late corrections included (every endpoint)",
        "0 store days differ".into(),
        format!("{} of {} differ", s.books_differ, s.store_days),
        s.books_differ == 0 && s.store_days > 0,
    );
    if ctx.me.postgres {
        report.check(
            "PostgreSQL interface tables equal the source",
            "0 differences, all imported".into(),
            format!(
                "{} differences, {} of {} documents not imported",
                s.tables_differ, s.tables_not_imported, s.tables_documents
            ),
            s.tables_differ == 0 && s.tables_not_imported == 0 && s.tables_documents > 0,
        );
    }
    if !s.refused_locations.is_empty() {
        report.check(
            "every refused document re-driven once after the fix",
            format!("{} re-driven, 0 failed", s.refused_documents),
            format!(
                "{} re-driven, {} failed",
                s.redriven,
                s.redrive_failures.len()
            ),
            s.refused_documents > 0
                && s.redriven == s.refused_documents
                && s.redrive_failures.is_empty(),
        );
    }
    if let Some(max) = ctx.me.max_accepted_p99_s {
        let p99 = s.to_accepted_unrefused.p99_ms / 1000.0;
        report.check(
            "Z report to accepted, p99 (refused store before the fix left out)",
            format!("<= {max} s"),
            format!("{p99:.1} s"),
            p99 <= max && s.to_accepted_unrefused.count > 0,
        );
    }
}
