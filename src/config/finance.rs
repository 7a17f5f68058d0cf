//! Business-day close and reconciliation: the settings of the `[finance]` section.

use super::duration;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Business-day close and reconciliation (docs/FINANCE.md).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FinanceConfig {
    /// How long a store's day stays `closing` after its `day_closed` (in barrier time) so that
    /// late transactions and gap fills still count as the day's own; the day closes at the
    /// first flush after it.
    #[serde(with = "duration")]
    pub close_grace: Duration,
    /// Stream of the ERP's answers per document (accepted, rejected), the record
    /// reconciliation is rebuilt from.
    pub stream: String,
    /// How long the ERP's answers are kept. Reconciliation is rebuilt from them at start: after
    /// a restart, a day whose answers have aged out shows its documents as pending, so keep
    /// this longer than finance looks back.
    #[serde(with = "duration")]
    pub max_age: Duration,
    /// Documents listed per store and day in the reconciliation detail (the newest, and every
    /// rejected one up to the same number); totals always count every document.
    pub max_listed_documents: usize,
    /// Stream of the audit records: every dead-letter re-drive, with who asked and when. Kept
    /// as long as `max_age`.
    pub audit_stream: String,
}

impl Default for FinanceConfig {
    fn default() -> Self {
        FinanceConfig {
            close_grace: Duration::from_secs(15 * 60),
            stream: "RETAIL_FINANCE".into(),
            max_age: Duration::from_secs(400 * 24 * 3600),
            max_listed_documents: 200,
            audit_stream: "RETAIL_AUDIT".into(),
        }
    }
}
