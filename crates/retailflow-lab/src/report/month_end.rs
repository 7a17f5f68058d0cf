//! What a month-end run found, in the report: the faults planned and what reconciliation
//! flagged, the books of both ERP kinds, the re-drive, and the time from a Z report to
//! `accepted`.

use super::Report;
use crate::measure::Percentiles;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MonthEndStats {
    pub days: u32,
    pub stores: usize,
    pub store_days: u64,
    /// Till transactions generated (lost ones included).
    pub transactions: u64,
    pub lost_transactions: u64,
    pub late_transactions: u64,
    /// Store days planned with each fault (`variance`, `missing_transactions`,
    /// `late_correction`).
    pub injected: BTreeMap<String, u64>,
    /// Store days by the status reconciliation gave them at the end.
    pub flagged: BTreeMap<String, u64>,
    /// Store days flagged that were not made wrong.
    pub false_alarms: u64,
    /// Store days made wrong that were not flagged with their fault's status.
    pub missed: u64,
    /// Store days whose exceptions are not the oracle's.
    pub exceptions_differ: u64,
    /// Store days whose source, or any endpoint's accepted totals, differ from the oracle's.
    pub books_differ: u64,
    /// Differences between the PostgreSQL tables' books and the oracle.
    pub tables_differ: u64,
    pub tables_documents: i64,
    pub tables_not_imported: i64,
    pub refused_locations: Vec<String>,
    /// Documents the ERP's API refused before the fix.
    pub refused_documents: u64,
    pub redriven: u64,
    pub redrive_failures: Vec<String>,
    /// Re-drives recorded in reconciliation (the store days' `redrive_count`).
    pub redrives_recorded: u64,
    /// From a store day's Z report to its first `accepted`: every store day, and every store
    /// day but the refused stores' before the fix.
    pub to_accepted: Percentiles,
    pub to_accepted_unrefused: Percentiles,
    pub elapsed_s: f64,
    pub examples: Vec<String>,
}

impl MonthEndStats {
    /// A difference worth showing, up to 20.
    pub fn example(&mut self, e: String) {
        if self.examples.len() < 20 {
            self.examples.push(e);
        }
    }
}

impl Report {
    pub(super) fn month_end_rows(&self) -> Vec<(String, String)> {
        let Some(m) = &self.month_end else {
            return Vec::new();
        };
        let counts = |c: &BTreeMap<String, u64>| {
            c.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let secs = |p: &Percentiles| {
            format!(
                "p50 {:.1} s, p99 {:.1} s, max {:.1} s over {} store days",
                p.p50_ms / 1000.0,
                p.p99_ms / 1000.0,
                p.max_ms / 1000.0,
                p.count
            )
        };
        vec![
            (
                "month".into(),
                format!(
                    "{} days x {} stores = {} store days; {} transactions ({} lost, {} late) in {:.0} s",
                    m.days,
                    m.stores,
                    m.store_days,
                    m.transactions,
                    m.lost_transactions,
                    m.late_transactions,
                    m.elapsed_s
                ),
            ),
            ("faults injected".into(), counts(&m.injected)),
            ("reconciliation flagged".into(), counts(&m.flagged)),
            (
                "false alarms / missed / exceptions differ".into(),
                format!(
                    "{} / {} / {}",
                    m.false_alarms, m.missed, m.exceptions_differ
                ),
            ),
            (
                "store days whose books differ".into(),
                format!(
                    "{} (reconciliation); PostgreSQL tables: {} differences, {} documents, {} not imported",
                    m.books_differ, m.tables_differ, m.tables_documents, m.tables_not_imported
                ),
            ),
            (
                "refused and re-driven".into(),
                format!(
                    "{:?}: {} documents refused, {} re-driven, {} failed, {} recorded",
                    m.refused_locations,
                    m.refused_documents,
                    m.redriven,
                    m.redrive_failures.len(),
                    m.redrives_recorded
                ),
            ),
            ("Z report to accepted".into(), secs(&m.to_accepted)),
            (
                "  without the refused store before the fix".into(),
                secs(&m.to_accepted_unrefused),
            ),
        ]
    }
}
