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

use crate::domain::*;
use serde::{Deserialize, Serialize};

/// An inventory movement line, as posted to the ERP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovementLine {
    pub location: LocationId,
    pub sku: Sku,
    /// `sale`, `receipt`, ..., or `adjustment:<reason code>`.
    pub reason: compact_str::CompactString,
    pub qty: i64,
}

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
    /// Formed at the barrier that closed its business day: the day's last regular document.
    #[serde(default)]
    pub final_doc: bool,
    /// A correction for a day already closed, at this barrier.
    #[serde(default)]
    pub corrects: Option<u64>,
}

/// A document addressed to one ERP endpoint; `id` is also the HTTP `Idempotency-Key`.
///
/// Read with a hand-written `Deserialize` (below) that streams the lines once `kind` is known;
/// serde's `flatten` would first buffer the whole document into an intermediate tree, which
/// made decoding a 1,000-line document cost more than booking it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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
    /// Page of this part (from 1) and how many pages it has; pages share the lineage. Both
    /// read as 1 when absent.
    pub page: u32,
    pub pages: u32,
    pub lineage: Lineage,
    /// The last regular document of its kind for a closed business day.
    #[serde(rename = "final", default, skip_serializing_if = "std::ops::Not::not")]
    pub final_doc: bool,
    /// A correction for a business day that closed at this barrier: it adds to the day's
    /// documents up to that barrier (those marked `final` and before), never replaces them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrects: Option<u64>,
    #[serde(flatten)]
    pub body: DocBody,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum DocField {
    Id,
    Endpoint,
    Location,
    BusinessDay,
    Currency,
    BarrierSeq,
    Part,
    Page,
    Pages,
    Lineage,
    #[serde(rename = "final")]
    Final,
    Corrects,
    Kind,
    Lines,
    #[serde(other)]
    Other,
}

struct DocVisitor;

impl<'de> serde::de::Visitor<'de> for DocVisitor {
    type Value = PostingDoc;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a posting document (a map with id, endpoint, location, ..., kind, lines)")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<PostingDoc, A::Error> {
        use serde::de::Error;
        fn once<T, E: Error>(slot: &mut Option<T>, v: T, name: &'static str) -> Result<(), E> {
            if slot.is_some() {
                return Err(E::duplicate_field(name));
            }
            *slot = Some(v);
            Ok(())
        }
        let (mut id, mut endpoint, mut location) = (None, None, None);
        let (mut business_day, mut currency) = (None, None);
        let (mut barrier_seq, mut part, mut page, mut pages) = (None, None, None, None);
        let (mut lineage, mut kind, mut body) = (None, None::<DocKind>, None);
        let (mut final_doc, mut corrects) = (None, None);
        while let Some(field) = map.next_key::<DocField>()? {
            match field {
                DocField::Id => once(&mut id, map.next_value()?, "id")?,
                DocField::Endpoint => once(&mut endpoint, map.next_value()?, "endpoint")?,
                DocField::Location => once(&mut location, map.next_value()?, "location")?,
                DocField::BusinessDay => {
                    once(&mut business_day, map.next_value()?, "business_day")?
                }
                DocField::Currency => once(&mut currency, map.next_value()?, "currency")?,
                DocField::BarrierSeq => once(&mut barrier_seq, map.next_value()?, "barrier_seq")?,
                DocField::Part => once(&mut part, map.next_value()?, "part")?,
                DocField::Page => once(&mut page, map.next_value()?, "page")?,
                DocField::Pages => once(&mut pages, map.next_value()?, "pages")?,
                DocField::Lineage => once(&mut lineage, map.next_value()?, "lineage")?,
                DocField::Final => once(&mut final_doc, map.next_value()?, "final")?,
                DocField::Corrects => once(&mut corrects, map.next_value()?, "corrects")?,
                DocField::Kind => once(&mut kind, map.next_value()?, "kind")?,
                DocField::Lines => {
                    let Some(k) = kind else {
                        return Err(A::Error::custom("`kind` must come before `lines`"));
                    };
                    let lines = match k {
                        DocKind::SalesSummary => DocBody::SalesSummary(map.next_value()?),
                        DocKind::TenderSummary => DocBody::TenderSummary(map.next_value()?),
                        DocKind::TaxSummary => DocBody::TaxSummary(map.next_value()?),
                        DocKind::InventoryMovements => {
                            DocBody::InventoryMovements(map.next_value()?)
                        }
                    };
                    once(&mut body, lines, "lines")?;
                }
                DocField::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(PostingDoc {
            id: id.ok_or_else(|| A::Error::missing_field("id"))?,
            endpoint: endpoint.ok_or_else(|| A::Error::missing_field("endpoint"))?,
            location: location.ok_or_else(|| A::Error::missing_field("location"))?,
            business_day: business_day.flatten(),
            currency: currency.flatten(),
            barrier_seq: barrier_seq.ok_or_else(|| A::Error::missing_field("barrier_seq"))?,
            part: part.ok_or_else(|| A::Error::missing_field("part"))?,
            page: page.unwrap_or(1),
            pages: pages.unwrap_or(1),
            lineage: lineage.ok_or_else(|| A::Error::missing_field("lineage"))?,
            final_doc: final_doc.unwrap_or(false),
            corrects: corrects.flatten(),
            body: match (kind, body) {
                (_, Some(body)) => body,
                (None, None) => return Err(A::Error::missing_field("kind")),
                (Some(_), None) => return Err(A::Error::missing_field("lines")),
            },
        })
    }
}

impl<'de> Deserialize<'de> for PostingDoc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PostingDoc, D::Error> {
        d.deserialize_map(DocVisitor)
    }
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
                    final_doc: draft.final_doc,
                    corrects: draft.corrects,
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
            final_doc: false,
            corrects: None,
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
            final_doc: false,
            corrects: None,
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

    fn tender_doc_json() -> serde_json::Value {
        serde_json::json!({
            "id": "erp/tender_summary/S1/2026-11-27/EUR/10/0/1",
            "endpoint": "erp",
            "location": "S1",
            "business_day": "2026-11-27",
            "currency": "EUR",
            "barrier_seq": 10,
            "part": 0,
            "lineage": {"events": 2, "first_seq": 3, "last_seq": 9},
            "kind": "tender_summary",
            "lines": [{"tender": "card", "paid": 100, "refunded": 0, "transactions": 2}]
        })
    }

    #[test]
    fn documents_read_with_defaults_and_skipped_fields_or_fail_clearly() {
        // serde_json::Value keeps keys sorted, so `kind` precedes `lines` here.
        let doc: PostingDoc = serde_json::from_value(tender_doc_json()).unwrap();
        assert_eq!(
            (doc.page, doc.pages),
            (1, 1),
            "absent page and pages read as 1"
        );
        assert_eq!(doc.lineage.last_seq, 9);
        match &doc.body {
            DocBody::TenderSummary(l) => assert_eq!((l[0].paid, l[0].transactions), (100, 2)),
            other => panic!("wrong body {other:?}"),
        }
        // Unknown fields are skipped; null day and currency read as absent.
        let mut v = tender_doc_json();
        v["note"] = serde_json::json!({"free": ["form"]});
        v["business_day"] = serde_json::Value::Null;
        v["currency"] = serde_json::Value::Null;
        let back: PostingDoc = serde_json::from_value(v).unwrap();
        assert_eq!((back.business_day, back.currency), (None, None));
        // Text with `lines` first is refused by name.
        let text = r#"{"lines":[],"kind":"tax_summary","id":"x","endpoint":"e","location":"S1","barrier_seq":1,"part":0,"lineage":{"events":0,"first_seq":0,"last_seq":0}}"#;
        let err = serde_json::from_str::<PostingDoc>(text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`kind` must come before `lines`"), "{err}");
        for field in ["lines", "barrier_seq"] {
            let mut v = tender_doc_json();
            v.as_object_mut().unwrap().remove(field);
            let err = serde_json::from_value::<PostingDoc>(v)
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("missing field `{field}`")), "{err}");
        }
        let dup = r#"{"id":"a","id":"b"}"#;
        let err = serde_json::from_str::<PostingDoc>(dup)
            .unwrap_err()
            .to_string();
        assert!(err.contains("duplicate field `id`"), "{err}");
        // MessagePack (the outbox's format) of every body kind comes back equal.
        for body in [
            DocBody::SalesSummary(vec![]),
            DocBody::TaxSummary(vec![]),
            DocBody::InventoryMovements(vec![]),
            doc.body.clone(),
        ] {
            let d = PostingDoc {
                body,
                ..doc.clone()
            };
            let mp = rmp_serde::to_vec_named(&d).unwrap();
            assert_eq!(rmp_serde::from_slice::<PostingDoc>(&mp).unwrap(), d);
        }
    }
}
