//! Posting documents: what retailflow sends to an ERP. One document covers one location (and,
//! for financial documents, one business day and currency) for the span of the stream between
//! two flushing barriers.
//!
//! ```json
//! {"id":"erp-main/sales_summary/S0042/2026-11-27/EUR/1200/0","endpoint":"erp-main",
//!  "location":"S0042","business_day":"2026-11-27","currency":"EUR","barrier_seq":1200,"part":0,
//!  "lineage":{"events":57,"first_seq":1003,"last_seq":1187},
//!  "kind":"sales_summary","lines":[{"sku":"SKU-1","tax_code":"VAT20","qty_sold":3,...}]}
//! ```

use crate::apply::ledger::MovementLine;
use crate::domain::*;
use serde::{Deserialize, Serialize};

/// Which source events a document summarises.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    /// Number of source events folded in.
    pub events: u64,
    /// Lowest and highest stream sequence folded in.
    pub first_seq: u64,
    pub last_seq: u64,
}

impl Lineage {
    pub fn add(&mut self, seq: u64) {
        if self.events == 0 || seq < self.first_seq {
            self.first_seq = seq;
        }
        self.last_seq = self.last_seq.max(seq);
        self.events += 1;
    }
}

/// Sales and returns per sku and tax code. Amounts are net of discount, tax exclusive.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalesLine {
    pub sku: Sku,
    pub tax_code: TaxCode,
    pub qty_sold: i64,
    pub qty_returned: i64,
    pub sales_amount: i64,
    pub returns_amount: i64,
    pub discount_amount: i64,
    pub tax_amount: i64,
}

impl SalesLine {
    /// Units sold less units returned.
    pub fn net_qty(&self) -> i64 {
        self.qty_sold - self.qty_returned
    }
    /// Sales less returns, net of discount, tax exclusive.
    pub fn net_amount(&self) -> i64 {
        self.sales_amount - self.returns_amount
    }
}

/// Money taken (sales) and given back (returns) per tender kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenderLine {
    pub tender: TenderKind,
    pub paid: i64,
    pub refunded: i64,
    pub transactions: u64,
}

/// Tax per component code: the net base it was charged on and the tax, returns subtracted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxSummaryLine {
    pub code: TaxCode,
    pub taxable_amount: i64,
    pub tax_amount: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "lines", rename_all = "snake_case")]
pub enum DocBody {
    SalesSummary(Vec<SalesLine>),
    TenderSummary(Vec<TenderLine>),
    TaxSummary(Vec<TaxSummaryLine>),
    InventoryMovements(Vec<MovementLine>),
}

/// Lines per document at most. Keeps every document well inside NATS's 1 MB message limit and
/// inside what ERP APIs take in one request; a larger document is sent as several pages.
pub const MAX_LINES: usize = 1000;

fn chunks<T>(lines: Vec<T>, max: usize) -> Vec<Vec<T>> {
    if lines.len() <= max {
        return vec![lines];
    }
    let mut out = Vec::with_capacity(lines.len().div_ceil(max));
    let mut it = lines.into_iter().peekable();
    while it.peek().is_some() {
        out.push(it.by_ref().take(max).collect());
    }
    out
}

impl DocBody {
    /// Splits the lines into pages of at most `max` lines, in order.
    pub fn pages(self, max: usize) -> Vec<DocBody> {
        match self {
            DocBody::SalesSummary(l) => chunks(l, max)
                .into_iter()
                .map(DocBody::SalesSummary)
                .collect(),
            DocBody::TenderSummary(l) => chunks(l, max)
                .into_iter()
                .map(DocBody::TenderSummary)
                .collect(),
            DocBody::TaxSummary(l) => chunks(l, max)
                .into_iter()
                .map(DocBody::TaxSummary)
                .collect(),
            DocBody::InventoryMovements(l) => chunks(l, max)
                .into_iter()
                .map(DocBody::InventoryMovements)
                .collect(),
        }
    }

    pub fn kind(&self) -> DocKind {
        match self {
            DocBody::SalesSummary(_) => DocKind::SalesSummary,
            DocBody::TenderSummary(_) => DocKind::TenderSummary,
            DocBody::TaxSummary(_) => DocKind::TaxSummary,
            DocBody::InventoryMovements(_) => DocKind::InventoryMovements,
        }
    }

    pub fn lines(&self) -> usize {
        match self {
            DocBody::SalesSummary(l) => l.len(),
            DocBody::TenderSummary(l) => l.len(),
            DocBody::TaxSummary(l) => l.len(),
            DocBody::InventoryMovements(l) => l.len(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocKind {
    SalesSummary,
    TenderSummary,
    TaxSummary,
    InventoryMovements,
}

impl DocKind {
    pub const ALL: [DocKind; 4] = [
        DocKind::SalesSummary,
        DocKind::TenderSummary,
        DocKind::TaxSummary,
        DocKind::InventoryMovements,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DocKind::SalesSummary => "sales_summary",
            DocKind::TenderSummary => "tender_summary",
            DocKind::TaxSummary => "tax_summary",
            DocKind::InventoryMovements => "inventory_movements",
        }
    }
}

/// A document as formed at a barrier, before it is addressed to an endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draft {
    pub location: LocationId,
    pub business_day: Option<BusinessDay>,
    pub currency: Option<Currency>,
    pub part: u32,
    pub lineage: Lineage,
    pub body: DocBody,
}

fn one() -> u32 {
    1
}

/// A document addressed to one ERP endpoint; `id` is also the HTTP `Idempotency-Key`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostingDoc {
    pub id: String,
    pub endpoint: String,
    pub location: LocationId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_day: Option<BusinessDay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<Currency>,
    /// The barrier at which the document was formed.
    pub barrier_seq: u64,
    /// Splits of one key within one barrier (only when a total would overflow `i64`).
    pub part: u32,
    /// Page of this part (from 1) and how many pages it has; pages share the lineage.
    #[serde(default = "one")]
    pub page: u32,
    #[serde(default = "one")]
    pub pages: u32,
    pub lineage: Lineage,
    #[serde(flatten)]
    pub body: DocBody,
}

impl PostingDoc {
    /// Addresses a draft to an endpoint, as one document per page of at most [`MAX_LINES`]
    /// lines. The id depends only on the endpoint, the document's key, the barrier sequence,
    /// the part and the page, so forming it again after a crash gives the same id.
    pub fn address(draft: Draft, endpoint: &str, barrier_seq: u64) -> Vec<PostingDoc> {
        let day = draft
            .business_day
            .map(|d| d.to_string())
            .unwrap_or_else(|| "-".into());
        let cur = draft
            .currency
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into());
        let kind = draft.body.kind().as_str();
        let pages = draft.body.pages(MAX_LINES);
        let n = pages.len() as u32;
        pages
            .into_iter()
            .enumerate()
            .map(|(i, body)| {
                let page = i as u32 + 1;
                PostingDoc {
                    id: format!(
                        "{endpoint}/{kind}/{}/{day}/{cur}/{barrier_seq}/{}/{page}",
                        draft.location, draft.part
                    ),
                    endpoint: endpoint.to_string(),
                    location: draft.location.clone(),
                    business_day: draft.business_day,
                    currency: draft.currency,
                    barrier_seq,
                    part: draft.part,
                    page,
                    pages: n,
                    lineage: draft.lineage,
                    body,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_documents_are_paged_in_order() {
        let lines: Vec<TenderLine> = (0..2500)
            .map(|i| TenderLine {
                tender: format!("t{i:05}").as_str().into(),
                ..Default::default()
            })
            .collect();
        let draft = Draft {
            location: "DC1".into(),
            business_day: None,
            currency: None,
            part: 0,
            lineage: Lineage::default(),
            body: DocBody::TenderSummary(lines),
        };
        let docs = PostingDoc::address(draft, "erp", 7);
        assert_eq!(
            docs.iter().map(|d| d.body.lines()).collect::<Vec<_>>(),
            vec![1000, 1000, 500]
        );
        assert_eq!(docs[2].id, "erp/tender_summary/DC1/-/-/7/0/3");
        assert!(docs.iter().all(|d| d.pages == 3));
        let DocBody::TenderSummary(last) = &docs[2].body else {
            panic!("kind kept")
        };
        assert_eq!(last[0].tender.as_str(), "t02000");
    }

    #[test]
    fn document_json_is_flat_with_kind_and_lines() {
        let draft = Draft {
            location: "S1".into(),
            business_day: Some(BusinessDay::parse("2026-11-27").unwrap()),
            currency: Some(Currency::parse("EUR").unwrap()),
            part: 0,
            lineage: Lineage {
                events: 2,
                first_seq: 5,
                last_seq: 9,
            },
            body: DocBody::TenderSummary(vec![TenderLine {
                tender: "card".into(),
                paid: 100,
                refunded: 0,
                transactions: 2,
            }]),
        };
        let doc = PostingDoc::address(draft, "erp", 10).remove(0);
        assert_eq!(doc.id, "erp/tender_summary/S1/2026-11-27/EUR/10/0/1");
        assert_eq!((doc.page, doc.pages), (1, 1));
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(json["kind"], "tender_summary");
        assert_eq!(json["lines"][0]["paid"], 100);
        let back: PostingDoc = serde_json::from_value(json).unwrap();
        assert_eq!(back, doc);
        let mp = rmp_serde::to_vec_named(&doc).unwrap();
        let back: PostingDoc = rmp_serde::from_slice(&mp).unwrap();
        assert_eq!(back, doc);
    }
}
