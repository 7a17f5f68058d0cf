//! Per-store aggregation of sales, returns, tenders and tax by business day.
//!
//! Between two flushing barriers the aggregator folds every sale and return into buckets; at a
//! flush it turns the buckets into document drafts and starts again. It also keeps running
//! totals per business day that never reset: the source side of reconciliation.
//!
//! Buckets hold `i64` minor units. Each day's current part counts its volume, the sum of the
//! absolute values of everything folded in; no bucket can exceed it. When an event would take
//! the volume past `i64::MAX`, the day's buckets are sealed into a separate part and a new part
//! starts, so nothing wraps, nothing is refused, and the common path needs no checks.

use super::day::{DayBook, Money};
use super::posting::*;
use crate::domain::*;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

type DayKey = (BusinessDay, Currency);

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct DayBuckets {
    part: u32,
    /// Sum of absolute values folded into this part: a bound on every bucket.
    volume: i64,
    lineage: Lineage,
    sales: FxHashMap<(Sku, TaxCode), SalesLine>,
    tenders: FxHashMap<TenderKind, TenderLine>,
    tax: FxHashMap<TaxCode, TaxSummaryLine>,
}

/// Running totals of one store and business day since the stream began.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayTotals {
    pub events: u64,
    pub qty_sold: i64,
    pub qty_returned: i64,
    pub sales_amount: i64,
    pub returns_amount: i64,
    pub tax_amount: i64,
    pub tendered: i64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StoreAggregator {
    location: LocationId,
    days: FxHashMap<DayKey, DayBuckets>,
    sealed: Vec<Draft>,
    totals: BTreeMap<DayKey, DayTotals>,
    /// Finance's view of each day: Z report, state, documents formed, exceptions.
    #[serde(default)]
    books: BTreeMap<DayKey, DayBook>,
    /// Days being closed (waiting out their grace).
    #[serde(default)]
    closing: BTreeSet<DayKey>,
    /// Days whose book changed other than by a new event since the view last took them.
    #[serde(skip)]
    touched: BTreeSet<DayKey>,
    /// Day books forgotten because the store kept more than [`MAX_DAYS`].
    #[serde(default)]
    pub days_dropped: u64,
}

/// Day books one store keeps; beyond it the oldest is forgotten (`days_dropped`).
pub const MAX_DAYS: usize = 400;

/// One store day as the reconciliation shows it, taken at a barrier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayView {
    pub business_day: BusinessDay,
    pub currency: Currency,
    pub totals: DayTotals,
    /// Money of the events applied: formed into documents plus what waits for the next flush.
    pub source: Money,
    pub book: DayBook,
}

/// Sum of absolute values an event adds to a day's buckets (saturating).
fn volume(lines: &[ItemLine], tenders: &[Tender]) -> i64 {
    let mut v: i64 = 0;
    for l in lines {
        let parts = [l.qty, l.gross(), l.discount, l.net(), l.tax()];
        for p in parts {
            v = v.saturating_add(p.saturating_abs());
        }
        for t in &l.taxes {
            // Each component adds its net base and its amount to the tax summary.
            v = v
                .saturating_add(l.net().saturating_abs())
                .saturating_add(t.amount.saturating_abs());
        }
    }
    for t in tenders {
        v = v.saturating_add(t.amount.saturating_abs());
    }
    v
}

impl StoreAggregator {
    pub fn new(location: LocationId) -> Self {
        StoreAggregator {
            location,
            ..Default::default()
        }
    }

    pub fn location(&self) -> &LocationId {
        &self.location
    }

    /// Folds a sale (`returning = false`) or a return into the buckets; `till` is its
    /// producer and sequence.
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        seq: u64,
        till: Option<&(SourceId, u64)>,
        day: BusinessDay,
        currency: Currency,
        lines: &[ItemLine],
        tenders: &[Tender],
        returning: bool,
    ) {
        let key = (day, currency);
        self.book(key).applied(till);
        let buckets = self.days.entry(key).or_default();
        let v = volume(lines, tenders);
        if buckets.volume.checked_add(v).is_none() {
            // The bound would pass i64::MAX: seal what the day has so far as its own part.
            let part = buckets.part;
            let old = std::mem::take(buckets);
            buckets.part = part + 1;
            self.sealed.extend(old.into_drafts(&self.location, key));
        }
        buckets.volume = buckets.volume.saturating_add(v);
        buckets.fold(lines, tenders, returning);
        buckets.lineage.add(seq);

        let t = self.totals.entry(key).or_default();
        t.events += 1;
        for l in lines {
            if returning {
                t.qty_returned = t.qty_returned.saturating_add(l.qty);
                t.returns_amount = t.returns_amount.saturating_add(l.net());
                t.tax_amount = t.tax_amount.saturating_sub(l.tax());
            } else {
                t.qty_sold = t.qty_sold.saturating_add(l.qty);
                t.sales_amount = t.sales_amount.saturating_add(l.net());
                t.tax_amount = t.tax_amount.saturating_add(l.tax());
            }
        }
        for tn in tenders {
            t.tendered = if returning {
                t.tendered.saturating_sub(tn.amount)
            } else {
                t.tendered.saturating_add(tn.amount)
            };
        }
    }

    /// The day's book, made on first use; the oldest goes when there are more than MAX_DAYS.
    fn book(&mut self, key: DayKey) -> &mut DayBook {
        if !self.books.contains_key(&key) && self.books.len() >= MAX_DAYS {
            if let Some((old, _)) = self.books.pop_first() {
                self.closing.remove(&old);
                self.days_dropped += 1;
            }
        }
        self.books.entry(key).or_default()
    }

    /// Takes in a store's Z report for a day (`seq`: its stream sequence).
    pub fn declare(&mut self, seq: u64, close: &DayClosed) {
        let key = (close.business_day, close.currency);
        let book = self.book(key);
        book.declare(seq, close);
        if book.state == super::day::DayState::Closing {
            self.closing.insert(key);
        }
        self.touched.insert(key);
    }

    /// A barrier at `seq`, stamped `at_ms`: starts or ends the grace of closing days and, when
    /// it flushes, forms the documents and closes the days whose grace is over. A closing day's
    /// events wait for the close: the documents formed then are the day's final ones. Closed
    /// days' documents are corrections.
    pub fn barrier(&mut self, seq: u64, at_ms: i64, flush: bool, grace_ms: i64) -> Vec<Draft> {
        let mut due = Vec::new();
        for key in &self.closing {
            if let Some(book) = self.books.get_mut(key) {
                if book.due(at_ms, grace_ms) {
                    due.push(*key);
                }
            }
        }
        if !flush {
            return Vec::new();
        }
        // A closing day keeps what arrives during its grace for its final documents.
        let held: Vec<(DayKey, DayBuckets)> = self
            .closing
            .iter()
            .filter(|k| !due.contains(k))
            .filter_map(|k| self.days.remove(k).map(|b| (*k, b)))
            .collect();
        let mut drafts = self.flush();
        self.days.extend(held);
        let mut corrected = BTreeSet::new();
        for d in drafts.iter_mut() {
            let (Some(day), Some(cur)) = (d.business_day, d.currency) else {
                continue;
            };
            let key = (day, cur);
            let closing = due.contains(&key);
            let book = self.book(key);
            book.formed_drafts(std::slice::from_mut(d), closing);
            if d.corrects.is_some() {
                corrected.insert(key);
            }
            self.touched.insert(key);
        }
        for key in due {
            self.closing.remove(&key);
            self.book(key).close(seq);
            self.touched.insert(key);
        }
        for key in corrected {
            self.book(key).recheck();
        }
        drafts
    }

    /// The days that changed since the last call (new events, a Z report, a flush, a close),
    /// as the reconciliation shows them.
    pub fn changed_days(&mut self) -> Vec<DayView> {
        self.days_changed(true)
    }

    /// As [`Self::changed_days`], but a day whose only change is new events waiting for the
    /// next flush is left out unless `with_new_events`: summing those events' buckets costs
    /// a pass over every SKU the store sold since the flush, too much for every barrier.
    pub fn days_changed(&mut self, with_new_events: bool) -> Vec<DayView> {
        let mut keys = std::mem::take(&mut self.touched);
        if with_new_events {
            keys.extend(self.days.keys().copied());
        }
        keys.into_iter()
            .filter_map(|key| {
                let book = self.books.get(&key)?;
                let mut source = book.formed.clone();
                if let Some(b) = self.days.get(&key) {
                    source.add(&b.money());
                }
                Some(DayView {
                    business_day: key.0,
                    currency: key.1,
                    totals: self.totals.get(&key).cloned().unwrap_or_default(),
                    source,
                    book: book.clone(),
                })
            })
            .collect()
    }

    /// Every day book, as the reconciliation shows it (after a restore).
    pub fn all_days(&mut self) -> Vec<DayView> {
        self.touched.extend(self.books.keys().copied());
        self.changed_days()
    }

    /// Whether anything waits to be flushed.
    pub fn is_dirty(&self) -> bool {
        !self.days.is_empty() || !self.sealed.is_empty()
    }

    /// Turns everything folded since the last flush into drafts, sorted by key.
    pub fn flush(&mut self) -> Vec<Draft> {
        let mut out = std::mem::take(&mut self.sealed);
        let mut days: Vec<_> = self.days.drain().collect();
        days.sort_by_key(|(k, _)| *k);
        for (key, buckets) in days {
            out.extend(buckets.into_drafts(&self.location, key));
        }
        out
    }

    /// Running totals per (business day, currency).
    pub fn totals(&self) -> &BTreeMap<DayKey, DayTotals> {
        &self.totals
    }

    /// Rebuilds nothing today; kept for symmetry with other restorable state.
    pub fn reindex(&mut self) {}
}

impl DayBuckets {
    /// The money folded in since the last flush, as the documents would carry it.
    fn money(&self) -> Money {
        let mut m = Money::default();
        for l in self.sales.values() {
            m.sales = m.sales.saturating_add(l.net_amount());
        }
        for t in self.tenders.values() {
            let v = m.tenders.entry(t.tender.clone()).or_default();
            *v = v.saturating_add(t.paid).saturating_sub(t.refunded);
        }
        for t in self.tax.values() {
            let v = m.taxes.entry(t.code.clone()).or_default();
            *v = v.saturating_add(t.tax_amount);
        }
        m
    }

    /// Folds one event in. The caller has checked the volume bound, so plain arithmetic
    /// cannot overflow.
    fn fold(&mut self, lines: &[ItemLine], tenders: &[Tender], returning: bool) {
        for l in lines {
            let line = self
                .sales
                .entry((l.sku.clone(), l.tax_code.clone()))
                .or_insert_with(|| SalesLine {
                    sku: l.sku.clone(),
                    tax_code: l.tax_code.clone(),
                    ..Default::default()
                });
            let net = l.net();
            let tax = l.tax();
            if returning {
                line.qty_returned += l.qty;
                line.returns_amount += net;
                line.discount_amount -= l.discount;
                line.tax_amount -= tax;
            } else {
                line.qty_sold += l.qty;
                line.sales_amount += net;
                line.discount_amount += l.discount;
                line.tax_amount += tax;
            }
            for t in &l.taxes {
                let s = self
                    .tax
                    .entry(t.code.clone())
                    .or_insert_with(|| TaxSummaryLine {
                        code: t.code.clone(),
                        ..Default::default()
                    });
                if returning {
                    s.taxable_amount -= net;
                    s.tax_amount -= t.amount;
                } else {
                    s.taxable_amount += net;
                    s.tax_amount += t.amount;
                }
            }
        }
        for t in tenders {
            let s = self
                .tenders
                .entry(t.kind.clone())
                .or_insert_with(|| TenderLine {
                    tender: t.kind.clone(),
                    ..Default::default()
                });
            if returning {
                s.refunded += t.amount;
            } else {
                s.paid += t.amount;
            }
            s.transactions += 1;
        }
    }

    fn into_drafts(self, location: &LocationId, (day, currency): DayKey) -> Vec<Draft> {
        let mut out = Vec::with_capacity(3);
        let draft = |body| Draft {
            location: location.clone(),
            business_day: Some(day),
            currency: Some(currency),
            part: self.part,
            lineage: self.lineage,
            body,
            final_doc: false,
            corrects: None,
        };
        if !self.sales.is_empty() {
            let mut v: Vec<_> = self.sales.into_values().collect();
            v.sort_by(|a, b| (&a.sku, &a.tax_code).cmp(&(&b.sku, &b.tax_code)));
            out.push(draft(DocBody::SalesSummary(v)));
        }
        if !self.tenders.is_empty() {
            let mut v: Vec<_> = self.tenders.into_values().collect();
            v.sort_by(|a, b| a.tender.cmp(&b.tender));
            out.push(draft(DocBody::TenderSummary(v)));
        }
        if !self.tax.is_empty() {
            let mut v: Vec<_> = self.tax.into_values().collect();
            v.sort_by(|a, b| a.code.cmp(&b.code));
            out.push(draft(DocBody::TaxSummary(v)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: &str, qty: i64, price: i64, discount: i64, tax: i64) -> ItemLine {
        ItemLine {
            sku: sku.into(),
            qty,
            unit_price: price,
            discount,
            tax_code: "VAT20".into(),
            taxes: vec![TaxLine {
                code: "VAT20".into(),
                amount: tax,
            }],
            restock: None,
        }
    }

    fn tender(kind: &str, amount: i64) -> Tender {
        Tender {
            kind: kind.into(),
            amount,
        }
    }

    fn day() -> BusinessDay {
        BusinessDay::parse("2026-11-27").unwrap()
    }

    fn eur() -> Currency {
        Currency::parse("EUR").unwrap()
    }

    #[test]
    fn sales_and_returns_fold_into_one_document_set() {
        let mut a = StoreAggregator::new("S1".into());
        a.add(
            3,
            None,
            day(),
            eur(),
            &[line("A", 2, 500, 100, 180)],
            &[tender("card", 1080)],
            false,
        );
        a.add(
            7,
            None,
            day(),
            eur(),
            &[line("A", 1, 500, 0, 100), line("B", 1, 200, 0, 40)],
            &[tender("cash", 840)],
            false,
        );
        a.add(
            9,
            None,
            day(),
            eur(),
            &[line("A", 1, 500, 0, 100)],
            &[tender("card", 600)],
            true,
        );
        let drafts = a.flush();
        assert_eq!(drafts.len(), 3);
        let DocBody::SalesSummary(sales) = &drafts[0].body else {
            panic!("sales first")
        };
        let a_line = sales.iter().find(|l| l.sku.as_str() == "A").unwrap();
        assert_eq!((a_line.qty_sold, a_line.qty_returned), (3, 1));
        assert_eq!(a_line.net_amount(), 900 + 500 - 500);
        assert_eq!(a_line.tax_amount, 180 + 100 - 100);
        let DocBody::TenderSummary(tenders) = &drafts[1].body else {
            panic!("tenders second")
        };
        let card = tenders
            .iter()
            .find(|t| t.tender.as_str() == "card")
            .unwrap();
        assert_eq!(
            (card.paid, card.refunded, card.transactions),
            (1080, 600, 2)
        );
        let DocBody::TaxSummary(tax) = &drafts[2].body else {
            panic!("tax third")
        };
        assert_eq!(tax[0].taxable_amount, 900 + 500 + 200 - 500);
        assert_eq!(
            drafts[0].lineage,
            Lineage {
                events: 3,
                first_seq: 3,
                last_seq: 9
            }
        );
        assert!(a.flush().is_empty(), "flush resets");
        let t = &a.totals()[&(day(), eur())];
        assert_eq!(t.tendered, 1080 + 840 - 600);
        assert_eq!(t.events, 3);
    }

    #[test]
    fn overflowing_bucket_is_sealed_into_a_new_part() {
        let mut a = StoreAggregator::new("S1".into());
        let big = line("A", 1, crate::domain::money::MAX_AMOUNT, 0, 0);
        let n = i64::MAX / crate::domain::money::MAX_AMOUNT + 1;
        for seq in 1..=n as u64 {
            a.add(
                seq,
                None,
                day(),
                eur(),
                std::slice::from_ref(&big),
                &[tender("card", big.net())],
                false,
            );
        }
        let drafts = a.flush();
        let parts: Vec<u32> = drafts.iter().map(|d| d.part).collect();
        assert!(parts.contains(&0) && parts.contains(&1), "{parts:?}");
        let sold: i64 = drafts
            .iter()
            .filter_map(|d| match &d.body {
                DocBody::SalesSummary(l) => Some(l[0].qty_sold),
                _ => None,
            })
            .sum();
        assert_eq!(sold, n, "no unit lost across parts");
    }

    fn close_of(till: &str, last: u64, n: u64, card: i64, tax: i64) -> DayClosed {
        DayClosed {
            location: "S1".into(),
            business_day: day(),
            currency: eur(),
            tills: vec![TillClose {
                till: till.into(),
                last_seq: last,
                transactions: n,
            }],
            tenders: vec![tender("card", card)],
            taxes: vec![TaxLine {
                code: "VAT20".into(),
                amount: tax,
            }],
        }
    }

    #[test]
    fn a_closing_day_holds_its_events_for_final_documents_and_a_late_one_is_a_correction() {
        let mut a = StoreAggregator::new("S1".into());
        let t1 = (SourceId::from("pos/s1/t1"), 1);
        let sale = |a: &mut StoreAggregator, till: &(SourceId, u64), seq: u64| {
            a.add(
                seq,
                Some(till),
                day(),
                eur(),
                &[line("A", 1, 500, 0, 100)],
                &[tender("card", 600)],
                false,
            )
        };
        sale(&mut a, &t1, 10);
        assert_eq!(
            a.barrier(11, 1_000, true, 5_000).len(),
            3,
            "open: posted at once"
        );
        a.declare(12, &close_of("pos/s1/t1", 2, 2, 1200, 200));
        let t2 = (SourceId::from("pos/s1/t1"), 2);
        sale(&mut a, &t2, 13);
        assert!(
            a.barrier(14, 2_000, true, 5_000).is_empty(),
            "held while closing"
        );
        // Through a snapshot: the restored aggregator closes the day the same way.
        let bytes = crate::snapshot::format::encode_part(&a).unwrap();
        let mut b: StoreAggregator = crate::snapshot::format::decode_part(&bytes).unwrap();
        let finals = b.barrier(15, 7_000, true, 5_000);
        assert_eq!(finals.len(), 3);
        assert!(finals.iter().all(|d| d.final_doc && d.corrects.is_none()));
        let days = b.changed_days();
        assert_eq!(days.len(), 1);
        let book = &days[0].book;
        assert_eq!(book.state, super::super::day::DayState::Closed);
        assert_eq!(book.closed_at, Some(15));
        assert!(book.exceptions.is_empty(), "{:?}", book.exceptions);
        assert_eq!(days[0].source.sales, 1000);
        // A third sale for the closed day: late, and its documents correct barrier 15.
        let t3 = (SourceId::from("pos/s1/t1"), 3);
        sale(&mut b, &t3, 16);
        let corrections = b.barrier(17, 8_000, true, 5_000);
        assert_eq!(corrections.len(), 3);
        assert!(
            corrections
                .iter()
                .all(|d| d.corrects == Some(15) && !d.final_doc)
        );
        let book = &b.changed_days()[0].book;
        assert_eq!(book.late_events, 1);
        assert_eq!(book.corrections, 3);
        let kinds: Vec<&str> = book.exceptions.iter().map(|e| e.status()).collect();
        assert_eq!(
            kinds,
            ["variance", "variance", "late_correction"],
            "{:?}",
            book.exceptions
        );
    }
}
