//! The books: what the simulated ERP has booked, summed per key from every accepted document.
//! Plain data and arithmetic; which documents get here is decided in `state`.
//!
//! Called `Books` rather than a ledger so as not to be taken for retailflow's own ATP ledger.

use retailflow_core::aggregate::posting::{DocBody, PostingDoc};
use retailflow_core::domain::{BusinessDay, Currency, LocationId, Sku, TaxCode, TenderKind};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::hash::Hash;

/// Sales totals of one location, business day, currency, sku and tax code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalesTotal {
    pub location: LocationId,
    pub business_day: Option<BusinessDay>,
    pub currency: Option<Currency>,
    pub sku: Sku,
    pub tax_code: TaxCode,
    pub qty_sold: i64,
    pub qty_returned: i64,
    pub sales_amount: i64,
    pub returns_amount: i64,
    pub discount_amount: i64,
    pub tax_amount: i64,
}

/// Tender totals of one location, business day, currency and tender kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenderTotal {
    pub location: LocationId,
    pub business_day: Option<BusinessDay>,
    pub currency: Option<Currency>,
    pub tender: TenderKind,
    pub paid: i64,
    pub refunded: i64,
    pub transactions: u64,
}

/// Tax totals of one location, business day, currency and tax component code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxTotal {
    pub location: LocationId,
    pub business_day: Option<BusinessDay>,
    pub currency: Option<Currency>,
    pub code: TaxCode,
    pub taxable_amount: i64,
    pub tax_amount: i64,
}

/// Net inventory movement of one location, sku and reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryTotal {
    pub location: LocationId,
    pub sku: Sku,
    pub reason: String,
    pub qty: i64,
}

/// What the simulated ERP has booked: the sums of every accepted document, each list sorted
/// by its key. Amounts are minor units.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub sales: Vec<SalesTotal>,
    pub tenders: Vec<TenderTotal>,
    pub tax: Vec<TaxTotal>,
    pub inventory: Vec<InventoryTotal>,
    /// Documents accepted, double bookings included.
    pub documents: u64,
}

/// A document would push a total past `i64`; the ERP refuses it rather than book garbage.
#[derive(Debug)]
pub(crate) struct Overflow;

/// Per-key sums that can be added without overflowing.
trait Sums: Copy {
    const ZERO: Self;
    fn checked_add(self, other: Self) -> Option<Self>;
}

impl<const N: usize> Sums for [i64; N] {
    const ZERO: Self = [0; N];
    fn checked_add(self, other: Self) -> Option<Self> {
        let mut out = self;
        for (o, d) in out.iter_mut().zip(other) {
            *o = o.checked_add(d)?;
        }
        Some(out)
    }
}

#[derive(Clone, Copy, Debug)]
struct TenderSums {
    paid: i64,
    refunded: i64,
    transactions: u64,
}

impl Sums for TenderSums {
    const ZERO: Self = TenderSums {
        paid: 0,
        refunded: 0,
        transactions: 0,
    };
    fn checked_add(self, other: Self) -> Option<Self> {
        Some(TenderSums {
            paid: self.paid.checked_add(other.paid)?,
            refunded: self.refunded.checked_add(other.refunded)?,
            transactions: self.transactions.checked_add(other.transactions)?,
        })
    }
}

/// Adds `deltas` to `map`, all or nothing.
fn merge<K: Hash + Eq, V: Sums>(
    map: &mut FxHashMap<K, V>,
    deltas: impl IntoIterator<Item = (K, V)>,
) -> Result<(), Overflow> {
    // Staged apart so that an overflow on the last line leaves the earlier ones unbooked.
    let mut staged: FxHashMap<K, V> = FxHashMap::default();
    for (key, delta) in deltas {
        let current = match staged.get(&key) {
            Some(v) => *v,
            None => map.get(&key).copied().unwrap_or(V::ZERO),
        };
        let next = current.checked_add(delta).ok_or(Overflow)?;
        staged.insert(key, next);
    }
    map.extend(staged);
    Ok(())
}

type DayKey = (LocationId, Option<BusinessDay>, Option<Currency>);

/// The books: sums of accepted documents by key. Hash maps, because folding a document is
/// the simulator's hot path (hundreds of thousands of keys at peak, every line a lookup);
/// [`Books::totals`] sorts when someone reads them.
#[derive(Debug, Default)]
pub(crate) struct Books {
    /// qty_sold, qty_returned, sales, returns, discount, tax.
    sales: FxHashMap<(DayKey, Sku, TaxCode), [i64; 6]>,
    tenders: FxHashMap<(DayKey, TenderKind), TenderSums>,
    /// taxable, tax.
    tax: FxHashMap<(DayKey, TaxCode), [i64; 2]>,
    inventory: FxHashMap<(LocationId, Sku, String), [i64; 1]>,
    documents: u64,
}

/// A map's entries in key order.
fn sorted<K: Ord, V>(map: &FxHashMap<K, V>) -> Vec<(&K, &V)> {
    let mut entries: Vec<(&K, &V)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    entries
}

impl Books {
    /// Adds every line of `doc` to its key, or none when one would overflow.
    pub fn fold(&mut self, doc: &PostingDoc) -> Result<(), Overflow> {
        let day: DayKey = (doc.location.clone(), doc.business_day, doc.currency);
        match &doc.body {
            DocBody::SalesSummary(lines) => merge(
                &mut self.sales,
                lines.iter().map(|l| {
                    let key = (day.clone(), l.sku.clone(), l.tax_code.clone());
                    let sums = [
                        l.qty_sold,
                        l.qty_returned,
                        l.sales_amount,
                        l.returns_amount,
                        l.discount_amount,
                        l.tax_amount,
                    ];
                    (key, sums)
                }),
            )?,
            DocBody::TenderSummary(lines) => merge(
                &mut self.tenders,
                lines.iter().map(|l| {
                    let sums = TenderSums {
                        paid: l.paid,
                        refunded: l.refunded,
                        transactions: l.transactions,
                    };
                    ((day.clone(), l.tender.clone()), sums)
                }),
            )?,
            DocBody::TaxSummary(lines) => merge(
                &mut self.tax,
                lines.iter().map(|l| {
                    let key = (day.clone(), l.code.clone());
                    (key, [l.taxable_amount, l.tax_amount])
                }),
            )?,
            // Movement lines carry their own location; it is the one the stock moved at.
            DocBody::InventoryMovements(lines) => merge(
                &mut self.inventory,
                lines.iter().map(|l| {
                    let key = (l.location.clone(), l.sku.clone(), l.reason.to_string());
                    (key, [l.qty])
                }),
            )?,
        }
        self.documents += 1;
        Ok(())
    }

    pub fn totals(&self) -> Totals {
        Totals {
            sales: sorted(&self.sales)
                .into_iter()
                .map(
                    |(((location, day, currency), sku, tax_code), s)| SalesTotal {
                        location: location.clone(),
                        business_day: *day,
                        currency: *currency,
                        sku: sku.clone(),
                        tax_code: tax_code.clone(),
                        qty_sold: s[0],
                        qty_returned: s[1],
                        sales_amount: s[2],
                        returns_amount: s[3],
                        discount_amount: s[4],
                        tax_amount: s[5],
                    },
                )
                .collect(),
            tenders: sorted(&self.tenders)
                .into_iter()
                .map(|(((location, day, currency), tender), s)| TenderTotal {
                    location: location.clone(),
                    business_day: *day,
                    currency: *currency,
                    tender: tender.clone(),
                    paid: s.paid,
                    refunded: s.refunded,
                    transactions: s.transactions,
                })
                .collect(),
            tax: sorted(&self.tax)
                .into_iter()
                .map(|(((location, day, currency), code), s)| TaxTotal {
                    location: location.clone(),
                    business_day: *day,
                    currency: *currency,
                    code: code.clone(),
                    taxable_amount: s[0],
                    tax_amount: s[1],
                })
                .collect(),
            inventory: sorted(&self.inventory)
                .into_iter()
                .map(|((location, sku, reason), [qty])| InventoryTotal {
                    location: location.clone(),
                    sku: sku.clone(),
                    reason: reason.clone(),
                    qty: *qty,
                })
                .collect(),
            documents: self.documents,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{doc, sale};
    use retailflow_core::aggregate::posting::{
        MovementLine, SalesLine, TaxSummaryLine, TenderLine,
    };

    /// Folds `docs` into empty books and reads the totals.
    fn book(docs: &[&PostingDoc]) -> Totals {
        let mut books = Books::default();
        for d in docs {
            books.fold(d).expect("every total fits in i64");
        }
        books.totals()
    }

    /// Two lines of sku A (one a return) and one of B.
    fn sales() -> PostingDoc {
        doc(
            "sales",
            "S1",
            DocBody::SalesSummary(vec![
                sale("B", 1, 300),
                sale("A", 2, 1000),
                SalesLine {
                    qty_returned: 1,
                    returns_amount: 250,
                    discount_amount: 40,
                    tax_amount: -50,
                    ..sale("A", 0, 0)
                },
            ]),
        )
    }

    /// A second sales document, as at another barrier: it adds to A's key.
    fn later_sales() -> PostingDoc {
        doc(
            "sales-2",
            "S1",
            DocBody::SalesSummary(vec![sale("A", 1, 500)]),
        )
    }

    /// Two card lines, a payment and a refund.
    fn tenders() -> PostingDoc {
        doc(
            "tenders",
            "S1",
            DocBody::TenderSummary(vec![
                TenderLine {
                    tender: "card".into(),
                    paid: 1300,
                    refunded: 0,
                    transactions: 2,
                },
                TenderLine {
                    tender: "card".into(),
                    paid: 0,
                    refunded: 250,
                    transactions: 1,
                },
            ]),
        )
    }

    fn tax() -> PostingDoc {
        doc(
            "tax",
            "S1",
            DocBody::TaxSummary(vec![TaxSummaryLine {
                code: "VAT20".into(),
                taxable_amount: 1050,
                tax_amount: 210,
            }]),
        )
    }

    fn movement(reason: &str, qty: i64) -> MovementLine {
        MovementLine {
            location: "S1".into(),
            sku: "A".into(),
            reason: reason.into(),
            qty,
        }
    }

    /// Two sales and a return of sku A, without business day or currency.
    fn moves() -> PostingDoc {
        let mut moves = doc(
            "moves",
            "S1",
            DocBody::InventoryMovements(vec![
                movement("sale", -2),
                movement("sale", -1),
                movement("return", 1),
            ]),
        );
        moves.business_day = None;
        moves.currency = None;
        moves
    }

    #[test]
    fn sales_lines_are_summed_per_sku_in_sku_order() {
        let t = book(&[&sales(), &later_sales()]);
        let sales: Vec<(&str, [i64; 6])> = t
            .sales
            .iter()
            .map(|r| {
                (
                    r.sku.as_str(),
                    [
                        r.qty_sold,
                        r.qty_returned,
                        r.sales_amount,
                        r.returns_amount,
                        r.discount_amount,
                        r.tax_amount,
                    ],
                )
            })
            .collect();
        // Sorted by sku; A = 2 + 0 + 1 sold, one returned; tax 200 - 50 + 100.
        assert_eq!(
            sales,
            [
                ("A", [3, 1, 1500, 250, 40, 250]),
                ("B", [1, 0, 300, 0, 0, 60])
            ]
        );
        assert_eq!(t.sales[0].business_day.unwrap().to_string(), "2026-11-27");
    }

    #[test]
    fn tender_lines_are_summed_per_tender_kind() {
        let t = book(&[&tenders()]);
        assert_eq!(t.tenders.len(), 1);
        let card = &t.tenders[0];
        assert_eq!(
            (card.paid, card.refunded, card.transactions),
            (1300, 250, 3)
        );
    }

    #[test]
    fn tax_lines_are_summed_per_code() {
        let t = book(&[&tax()]);
        assert_eq!(t.tax.len(), 1);
        assert_eq!((t.tax[0].taxable_amount, t.tax[0].tax_amount), (1050, 210));
    }

    #[test]
    fn movements_are_summed_per_reason() {
        let t = book(&[&moves()]);
        let inv: Vec<(&str, i64)> = t
            .inventory
            .iter()
            .map(|r| (r.reason.as_str(), r.qty))
            .collect();
        assert_eq!(inv, [("return", 1), ("sale", -3)]);
    }

    #[test]
    fn each_document_kind_is_folded_into_its_own_totals() {
        let t = book(&[&sales(), &tenders(), &tax(), &moves(), &later_sales()]);
        assert_eq!(t.documents, 5);
        assert_eq!(
            (
                t.sales.len(),
                t.tenders.len(),
                t.tax.len(),
                t.inventory.len()
            ),
            (2, 1, 1, 2)
        );
    }

    #[test]
    fn a_document_that_would_overflow_books_none_of_its_lines() {
        let mut books = Books::default();
        let big = doc(
            "d1",
            "S1",
            DocBody::SalesSummary(vec![sale("A", 1, i64::MAX - 10)]),
        );
        books.fold(&big).expect("fits");
        let before = books.totals();
        // The first line alone would fit; the second pushes A past i64.
        let d2 = doc(
            "d2",
            "S1",
            DocBody::SalesSummary(vec![sale("B", 1, 5), sale("A", 1, 100)]),
        );
        assert!(books.fold(&d2).is_err());
        assert_eq!(books.totals(), before);
    }
}
