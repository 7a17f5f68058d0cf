//! Documents and instants for the unit tests.

use retailflow_core::aggregate::posting::{DocBody, Lineage, PostingDoc, SalesLine};
use retailflow_core::domain::{BusinessDay, Currency};
use std::time::Duration;

pub(crate) fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

pub(crate) fn doc(id: &str, location: &str, body: DocBody) -> PostingDoc {
    PostingDoc {
        id: id.into(),
        endpoint: "erp".into(),
        location: location.into(),
        business_day: Some(BusinessDay::parse("2026-11-27").unwrap()),
        currency: Some(Currency::parse("EUR").unwrap()),
        barrier_seq: 10,
        part: 0,
        page: 1,
        pages: 1,
        lineage: Lineage::default(),
        final_doc: false,
        corrects: None,
        body,
    }
}

pub(crate) fn sale(sku: &str, qty: i64, amount: i64) -> SalesLine {
    SalesLine {
        sku: sku.into(),
        tax_code: "VAT20".into(),
        qty_sold: qty,
        qty_returned: 0,
        sales_amount: amount,
        returns_amount: 0,
        discount_amount: 0,
        tax_amount: amount / 5,
    }
}
