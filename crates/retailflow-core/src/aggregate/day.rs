//! A store's business day as finance sees it: what the tills declared at close, what
//! retailflow applied and formed into documents, and what does not agree.
//!
//! A day is `open` until its `day_closed` arrives, then `closing` for a grace period (late
//! transactions and gap fills still count as the day's own), then `closed` at the first
//! flushing barrier after the grace: the documents formed at that barrier are the day's final
//! ones, and the exceptions are worked out. An event for a closed day is never merged into
//! what was closed: it is counted as late and its documents are corrections that name the
//! closing barrier.
//!
//! Everything here changes only with events and barriers of the stream (the grace is measured
//! in barrier time), so a replay reaches the same states, exceptions and documents.

use super::posting::{DocBody, Draft};
use crate::domain::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Ranges one till's applied sequences may split into before only their count is kept.
pub const MAX_RANGES: usize = 4096;
/// Tills (producers) tracked per store and day; sources beyond it are counted, not tracked.
pub const MAX_TILLS: usize = 1024;
/// Missing ranges listed per till in an exception (the count is always exact).
pub const MAX_LISTED_GAPS: usize = 100;

/// The sequences applied from one till on one day, as sorted disjoint inclusive ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ranges {
    ranges: Vec<(u64, u64)>,
    /// Sequences applied (each counted once).
    count: u64,
    /// More than [`MAX_RANGES`] ranges were needed: the list stopped growing.
    overflow: bool,
}

impl Ranges {
    /// Records `seq`; a sequence already present changes nothing.
    pub fn insert(&mut self, seq: u64) {
        // The common case: the till's next transaction.
        if let Some(last) = self.ranges.last_mut() {
            if last.1.checked_add(1) == Some(seq) {
                last.1 = seq;
                self.count += 1;
                return;
            }
        }
        let at = self.ranges.partition_point(|r| r.1 < seq);
        if self.ranges.get(at).is_some_and(|r| r.0 <= seq) {
            return;
        }
        let joins_left = at > 0 && self.ranges[at - 1].1 + 1 == seq;
        let joins_right = self
            .ranges
            .get(at)
            .is_some_and(|r| seq.checked_add(1) == Some(r.0));
        match (joins_left, joins_right) {
            (true, true) => {
                self.ranges[at - 1].1 = self.ranges[at].1;
                self.ranges.remove(at);
            }
            (true, false) => self.ranges[at - 1].1 = seq,
            (false, true) => self.ranges[at].0 = seq,
            (false, false) => {
                if self.ranges.len() >= MAX_RANGES {
                    self.overflow = true;
                    self.count += 1;
                    return;
                }
                self.ranges.insert(at, (seq, seq));
            }
        }
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The sequences of `first..=last` not applied: up to `max` ranges and the exact total.
    /// With `overflow` set the ranges are a lower bound and the total comes from the count.
    pub fn missing(&self, first: u64, last: u64, max: usize) -> (Vec<(u64, u64)>, u64) {
        let mut out = Vec::new();
        let mut total = 0u64;
        let mut next = first;
        for &(a, b) in &self.ranges {
            if b < next {
                continue;
            }
            if a > last {
                break;
            }
            if a > next {
                total += a - next;
                if out.len() < max {
                    out.push((next, a - 1));
                }
            }
            next = b.saturating_add(1);
            if next > last {
                break;
            }
        }
        if next <= last && next >= first {
            total += last - next + 1;
            if out.len() < max {
                out.push((next, last));
            }
        }
        (out, total)
    }
}

/// Money of a day on one side of the reconciliation, minor units.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    /// Sales less returns, net of discount, tax exclusive.
    pub sales: i64,
    /// Tax per component code, returns subtracted.
    pub taxes: BTreeMap<TaxCode, i64>,
    /// Money per tender kind, paid less refunded.
    pub tenders: BTreeMap<TenderKind, i64>,
}

impl Money {
    pub fn tax(&self) -> i64 {
        self.taxes.values().fold(0i64, |a, v| a.saturating_add(*v))
    }

    pub fn tendered(&self) -> i64 {
        self.tenders
            .values()
            .fold(0i64, |a, v| a.saturating_add(*v))
    }

    /// Adds what one document (page) carries: its sales lines, tender lines or tax lines.
    pub fn add_body(&mut self, body: &DocBody) {
        match body {
            DocBody::SalesSummary(lines) => {
                for l in lines {
                    self.sales = self.sales.saturating_add(l.net_amount());
                }
            }
            DocBody::TenderSummary(lines) => {
                for l in lines {
                    let v = self.tenders.entry(l.tender.clone()).or_default();
                    *v = v.saturating_add(l.paid).saturating_sub(l.refunded);
                }
            }
            DocBody::TaxSummary(lines) => {
                for l in lines {
                    let v = self.taxes.entry(l.code.clone()).or_default();
                    *v = v.saturating_add(l.tax_amount);
                }
            }
            DocBody::InventoryMovements(_) => {}
        }
    }

    /// `self - other`, per field; codes that come out zero are left out.
    pub fn sub(&self, other: &Money) -> Money {
        let mut out = self.clone();
        out.sales = out.sales.saturating_sub(other.sales);
        for (k, v) in &other.taxes {
            let e = out.taxes.entry(k.clone()).or_default();
            *e = e.saturating_sub(*v);
        }
        for (k, v) in &other.tenders {
            let e = out.tenders.entry(k.clone()).or_default();
            *e = e.saturating_sub(*v);
        }
        out.taxes.retain(|_, v| *v != 0);
        out.tenders.retain(|_, v| *v != 0);
        out
    }

    pub fn add(&mut self, other: &Money) {
        self.sales = self.sales.saturating_add(other.sales);
        for (k, v) in &other.taxes {
            let s = self.taxes.entry(k.clone()).or_default();
            *s = s.saturating_add(*v);
        }
        for (k, v) in &other.tenders {
            let s = self.tenders.entry(k.clone()).or_default();
            *s = s.saturating_add(*v);
        }
    }
}

/// Where a store's day stands (the ERP's side, posted and accepted, is added by the
/// reconciliation that reads the ERP's answers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DayState {
    #[default]
    Open,
    Closing,
    Closed,
}

/// A store's Z report for a day, as received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Declared {
    /// Stream sequence of the `day_closed`.
    pub seq: u64,
    /// Per till: last sequence and transactions of the day.
    pub tills: BTreeMap<SourceId, (u64, u64)>,
    pub money: Money,
}

impl Declared {
    pub fn of(seq: u64, d: &DayClosed) -> Declared {
        let mut money = Money::default();
        for t in &d.tenders {
            money.tenders.insert(t.kind.clone(), t.amount);
        }
        for t in &d.taxes {
            money.taxes.insert(t.code.clone(), t.amount);
        }
        // Tenders pay the lines' net plus their tax: the declared sales follow from both.
        money.sales = money.tendered().saturating_sub(money.tax());
        Declared {
            seq,
            tills: d
                .tills
                .iter()
                .map(|t| (t.till.clone(), (t.last_seq, t.transactions)))
                .collect(),
            money,
        }
    }
}

/// Something about a closed day that finance must look at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Exception {
    /// A till declared transactions that were not applied: `ranges` lists the first
    /// [`MAX_LISTED_GAPS`] gaps of its sequences, `missing` counts them all.
    MissingTransactions {
        till: SourceId,
        ranges: Vec<(u64, u64)>,
        missing: u64,
    },
    /// Declared and computed money of one tender kind differ (`difference` = declared -
    /// computed).
    TenderVariance {
        tender: TenderKind,
        declared: i64,
        computed: i64,
        difference: i64,
    },
    /// Declared and computed tax of one code differ.
    TaxVariance {
        code: TaxCode,
        declared: i64,
        computed: i64,
        difference: i64,
    },
    /// Events for the day arrived after it closed; they were posted as correction documents.
    LateCorrection { events: u64, documents: u64 },
}

impl Exception {
    /// The reconciliation status word this exception stands for.
    pub fn status(&self) -> &'static str {
        match self {
            Exception::MissingTransactions { .. } => "missing_transactions",
            Exception::TenderVariance { .. } | Exception::TaxVariance { .. } => "variance",
            Exception::LateCorrection { .. } => "late_correction",
        }
    }
}

/// One store's business day in one currency.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayBook {
    pub state: DayState,
    /// Barrier time from which the grace runs (the first barrier after the `day_closed`).
    closing_since_ms: Option<i64>,
    /// The barrier at which the day closed: its documents up to this barrier are the day's.
    pub closed_at: Option<u64>,
    pub declared: Option<Declared>,
    /// Money of every document formed for the day so far.
    pub formed: Money,
    /// Documents (pages) formed for the day, per kind.
    pub documents: BTreeMap<super::posting::DocKind, u64>,
    /// Correction documents among them.
    pub corrections: u64,
    /// Events applied after the day closed.
    pub late_events: u64,
    /// Applied sequences per till (producer).
    tills: BTreeMap<SourceId, Ranges>,
    /// Producers not tracked because the day already had [`MAX_TILLS`].
    pub untracked_sources: u64,
    pub exceptions: Vec<Exception>,
}

impl DayBook {
    /// Records one applied till transaction (sale or return). Returns true when the day was
    /// already closed: the event is late.
    pub fn applied(&mut self, till: Option<&(SourceId, u64)>) -> bool {
        if let Some((source, seq)) = till {
            let tracked = self.tills.len();
            match self.tills.get_mut(source) {
                Some(r) => r.insert(*seq),
                None if tracked < MAX_TILLS => {
                    let mut r = Ranges::default();
                    r.insert(*seq);
                    self.tills.insert(source.clone(), r);
                }
                None => self.untracked_sources += 1,
            }
        }
        let late = self.state == DayState::Closed;
        if late {
            self.late_events += 1;
        }
        late
    }

    /// Takes in a Z report. A repeated one replaces the first; a closed day stays closed and
    /// its exceptions are worked out again.
    pub fn declare(&mut self, seq: u64, d: &DayClosed) {
        self.declared = Some(Declared::of(seq, d));
        match self.state {
            DayState::Open => self.state = DayState::Closing,
            DayState::Closing => {}
            DayState::Closed => self.exceptions = self.exceptions(),
        }
    }

    /// A barrier passed at `at_ms`: starts the grace of a closing day. Returns whether the
    /// day is due to close at this barrier (when it flushes).
    pub fn due(&mut self, at_ms: i64, grace_ms: i64) -> bool {
        if self.state != DayState::Closing {
            return false;
        }
        let since = *self.closing_since_ms.get_or_insert(at_ms);
        at_ms.saturating_sub(since) >= grace_ms
    }

    /// Counts the drafts formed for the day at a flush and marks them: final when the day
    /// closes at this barrier, corrections when it was closed before.
    pub fn formed_drafts(&mut self, drafts: &mut [Draft], closing: bool) {
        for d in drafts.iter_mut() {
            self.formed.add_body(&d.body);
            let pages = d.body.lines().div_ceil(super::posting::MAX_LINES).max(1) as u64;
            *self.documents.entry(d.body.kind()).or_default() += pages;
            if closing {
                d.final_doc = true;
            } else if let Some(at) = self.closed_at {
                d.corrects = Some(at);
                self.corrections += pages;
            }
        }
    }

    /// Closes the day at barrier `seq` (after its final flush was counted).
    pub fn close(&mut self, seq: u64) {
        self.state = DayState::Closed;
        self.closed_at = Some(seq);
        self.exceptions = self.exceptions();
    }

    /// After a flush that formed corrections: the exceptions again (a late event may have
    /// filled a gap).
    pub fn recheck(&mut self) {
        if self.state == DayState::Closed {
            self.exceptions = self.exceptions();
        }
    }

    /// Applied transactions per till.
    pub fn till_counts(&self) -> impl Iterator<Item = (&SourceId, u64)> {
        self.tills.iter().map(|(k, r)| (k, r.count()))
    }

    /// The exceptions of the day as it stands: missing till transactions and variances
    /// against the Z report, and late events.
    pub fn exceptions(&self) -> Vec<Exception> {
        let mut out = Vec::new();
        if let Some(d) = &self.declared {
            for (till, &(last, n)) in &d.tills {
                if n == 0 {
                    continue;
                }
                let first = last - n + 1;
                let (ranges, missing) = match self.tills.get(till) {
                    Some(r) => r.missing(first, last, MAX_LISTED_GAPS),
                    None => (vec![(first, last)], n),
                };
                if missing > 0 {
                    out.push(Exception::MissingTransactions {
                        till: till.clone(),
                        ranges,
                        missing,
                    });
                }
            }
            variances(&d.money.tenders, &self.formed.tenders, |k, d, c| {
                out.push(Exception::TenderVariance {
                    tender: k.clone(),
                    declared: d,
                    computed: c,
                    difference: d.saturating_sub(c),
                })
            });
            variances(&d.money.taxes, &self.formed.taxes, |k, d, c| {
                out.push(Exception::TaxVariance {
                    code: k.clone(),
                    declared: d,
                    computed: c,
                    difference: d.saturating_sub(c),
                })
            });
        }
        if self.late_events > 0 {
            out.push(Exception::LateCorrection {
                events: self.late_events,
                documents: self.corrections,
            });
        }
        out
    }
}

/// Calls `f(key, declared, computed)` for every key of either map where they differ (a key
/// missing on one side counts as zero there).
fn variances<K: Ord + Clone>(
    declared: &BTreeMap<K, i64>,
    computed: &BTreeMap<K, i64>,
    mut f: impl FnMut(&K, i64, i64),
) {
    let keys: std::collections::BTreeSet<&K> = declared.keys().chain(computed.keys()).collect();
    for k in keys {
        let d = declared.get(k).copied().unwrap_or(0);
        let c = computed.get(k).copied().unwrap_or(0);
        if d != c {
            f(k, d, c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The oracle: a plain set of sequences.
    fn missing_by_set(seqs: &[u64], first: u64, last: u64) -> u64 {
        let set: std::collections::HashSet<u64> = seqs.iter().copied().collect();
        (first..=last).filter(|s| !set.contains(s)).count() as u64
    }

    #[test]
    fn ranges_agree_with_a_set_in_any_order() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..200 {
            let mut seqs: Vec<u64> = Vec::new();
            let mut r = Ranges::default();
            for _ in 0..(round % 60) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let s = 1 + rng % 80;
                r.insert(s);
                seqs.push(s);
            }
            let distinct: std::collections::HashSet<u64> = seqs.iter().copied().collect();
            assert_eq!(r.count(), distinct.len() as u64);
            for (first, last) in [(1, 80), (5, 40), (30, 30), (70, 100)] {
                let (ranges, total) = r.missing(first, last, usize::MAX);
                assert_eq!(total, missing_by_set(&seqs, first, last), "{seqs:?}");
                let listed: u64 = ranges.iter().map(|(a, b)| b - a + 1).sum();
                assert_eq!(listed, total);
                for (a, b) in ranges {
                    assert!((a..=b).all(|s| !distinct.contains(&s)));
                }
            }
            assert!(r.ranges.windows(2).all(|w| w[0].1 + 1 < w[1].0), "merged");
        }
    }

    #[test]
    fn listed_gaps_are_bounded_but_counted() {
        let mut r = Ranges::default();
        for s in (1..=1000).step_by(2) {
            r.insert(s);
        }
        let (ranges, total) = r.missing(1, 1000, 10);
        assert_eq!((ranges.len(), total), (10, 500));
    }

    fn close(
        tills: &[(&str, u64, u64)],
        tenders: &[(&str, i64)],
        taxes: &[(&str, i64)],
    ) -> DayClosed {
        DayClosed {
            location: "S1".into(),
            business_day: BusinessDay::parse("2026-11-27").unwrap(),
            currency: Currency::parse("EUR").unwrap(),
            tills: tills
                .iter()
                .map(|(t, last, n)| TillClose {
                    till: SourceId::from(*t),
                    last_seq: *last,
                    transactions: *n,
                })
                .collect(),
            tenders: tenders
                .iter()
                .map(|(k, a)| Tender {
                    kind: (*k).into(),
                    amount: *a,
                })
                .collect(),
            taxes: taxes
                .iter()
                .map(|(k, a)| TaxLine {
                    code: (*k).into(),
                    amount: *a,
                })
                .collect(),
        }
    }

    #[test]
    fn a_gap_and_a_variance_are_exceptions_and_nothing_else_is() {
        let mut day = DayBook::default();
        for s in [101, 102, 105] {
            day.applied(Some(&(SourceId::from("pos/s1/t1"), s)));
        }
        day.formed.tenders.insert("card".into(), 1000);
        day.formed.taxes.insert("VAT20".into(), 100);
        day.declare(
            9,
            &close(
                &[("pos/s1/t1", 105, 5), ("pos/s1/t2", 7, 0)],
                &[("card", 1000), ("cash", 50)],
                &[("VAT20", 100)],
            ),
        );
        assert_eq!(day.state, DayState::Closing);
        assert!(day.due(1_000, 0));
        day.close(20);
        assert_eq!(
            day.exceptions,
            vec![
                Exception::MissingTransactions {
                    till: "pos/s1/t1".into(),
                    ranges: vec![(103, 104)],
                    missing: 2
                },
                Exception::TenderVariance {
                    tender: "cash".into(),
                    declared: 50,
                    computed: 0,
                    difference: 50
                }
            ]
        );
        assert!(
            day.applied(Some(&(SourceId::from("pos/s1/t1"), 103))),
            "late"
        );
        assert!(day.applied(None));
        assert_eq!(day.late_events, 2);
    }

    #[test]
    fn grace_runs_in_barrier_time_from_the_first_barrier_after_the_close() {
        let mut day = DayBook::default();
        assert!(!day.due(0, 0), "an open day is never due");
        day.declare(1, &close(&[], &[], &[]));
        assert!(!day.due(10_000, 5_000));
        assert!(!day.due(14_999, 5_000));
        assert!(day.due(15_000, 5_000));
    }
}
