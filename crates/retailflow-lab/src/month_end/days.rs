//! The month-end load: each store's business days as till transactions and a Z report, with
//! the faults planned up front, and what the oracle expects of every store day. The sums and
//! the expected exceptions are plain arithmetic over the generated transactions; they share no
//! code with the pipeline's books.

use crate::generate::{item_line, tenders, unit_return};
use crate::spec::{MonthEndSpec, Scenario};
use crate::world::{Rng, World};
use retailflow::domain::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// What is wrong with a store day on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The Z report declares money (a tender, or a tax code) the tills did not take.
    Variance,
    /// A till transaction never arrives; the Z report counts it.
    Missing,
    /// Transactions arrive after the day closed; the Z report counts them.
    Late,
}

impl Fault {
    /// The reconciliation status the day must end with.
    pub fn status(self) -> &'static str {
        match self {
            Fault::Variance => "variance",
            Fault::Missing => "missing_transactions",
            Fault::Late => "late_correction",
        }
    }
}

/// A store day's money as the oracle sums it: sales less returns (net of discount, tax
/// exclusive), tax per code, money per tender kind (paid less refunded).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sums {
    pub sales: i64,
    pub taxes: BTreeMap<String, i64>,
    pub tenders: BTreeMap<String, i64>,
}

impl Sums {
    fn add(&mut self, event: &Event) {
        let (lines, paid, sign) = match event {
            Event::Sale(s) => (&s.lines, &s.tenders, 1),
            Event::Return(r) => (&r.lines, &r.tenders, -1),
            _ => return,
        };
        for l in lines {
            self.sales += sign * (l.qty * l.unit_price - l.discount);
            for t in &l.taxes {
                *self.taxes.entry(t.code.to_string()).or_default() += sign * t.amount;
            }
        }
        for t in paid {
            *self.tenders.entry(t.kind.to_string()).or_default() += sign * t.amount;
        }
    }
}

/// One store day as generated.
pub struct StoreDay {
    pub store: String,
    pub day: BusinessDay,
    pub fault: Option<Fault>,
    /// Published during the day's trading.
    pub on_time: Vec<Envelope>,
    /// Published once the day has closed.
    pub late: Vec<Envelope>,
    /// The Z report (`day_closed`).
    pub close: Envelope,
    /// The transactions the tills sent, on time and late: the books must come to this.
    pub source: Sums,
    /// The exceptions reconciliation must list once everything has arrived, as words
    /// (see [`exception_word`]).
    pub exceptions: BTreeSet<String>,
}

/// An exception of the reconciliation API's JSON as a comparable word, or None for a kind
/// the oracle does not know.
pub fn exception_word(e: &serde_json::Value) -> Option<String> {
    let s = |k: &str| e[k].as_str().unwrap_or("?").to_string();
    let n = |k: &str| e[k].as_i64().unwrap_or(i64::MIN);
    Some(match e["kind"].as_str()? {
        "missing_transactions" => {
            let ranges = e["ranges"].as_array()?;
            let ranges: Vec<String> = ranges
                .iter()
                .map(|r| {
                    format!(
                        "{}-{}",
                        r[0].as_u64().unwrap_or(0),
                        r[1].as_u64().unwrap_or(0)
                    )
                })
                .collect();
            format!("missing {} {}", s("till"), ranges.join(","))
        }
        "tender_variance" => format!("tender {} {}", s("tender"), n("difference")),
        "tax_variance" => format!("tax {} {}", s("code"), n("difference")),
        "late_correction" => format!("late {}", n("events")),
        _ => return None,
    })
}

/// Generates the store days of a month-end run, one business day at a time.
pub struct Days {
    world: Arc<World>,
    spec: MonthEndSpec,
    rng: Rng,
    /// Transactions of a store day on average.
    per_store_day: u64,
    /// Share of transactions that are returns, in percent.
    return_pct: u64,
    sale_lines: [u64; 2],
    /// Next sequence of each till, `(store, till)`: a till numbers its transactions across
    /// days.
    next_seq: HashMap<(usize, u64), u64>,
    /// The planned fault of each store day, by `day * stores + store`.
    faults: HashMap<usize, Fault>,
    next_day: u32,
}

/// How many of `n` store days get a fault of `rate`: at least one when the rate is positive.
fn share(n: usize, rate: f64) -> usize {
    if rate <= 0.0 {
        0
    } else {
        ((n as f64 * rate).ceil() as usize).clamp(1, n)
    }
}

impl Days {
    pub fn new(scenario: &Scenario, world: Arc<World>) -> Option<Days> {
        let spec = scenario.month_end.clone()?;
        let mut rng = Rng::new(scenario.seed ^ 0x3e0d);
        let n = spec.days as usize * world.stores;
        // A seeded shuffle of every store day; the first ones get the faults, each at most one.
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut faults = HashMap::new();
        let mut taken = order.into_iter();
        for (fault, rate) in [
            (Fault::Variance, spec.variance_rate),
            (Fault::Missing, spec.missing_rate),
            (Fault::Late, spec.late_rate),
        ] {
            for idx in taken.by_ref().take(share(n, rate)) {
                faults.insert(idx, fault);
            }
        }
        let mix = &scenario.mix;
        let sales = u64::from(mix.sale + mix.sale_return).max(1);
        Some(Days {
            per_store_day: (scenario.load.events / n.max(1) as u64).max(4),
            return_pct: u64::from(mix.sale_return) * 100 / sales,
            sale_lines: mix.sale_lines,
            world,
            spec,
            rng,
            next_seq: HashMap::new(),
            faults,
            next_day: 0,
        })
    }

    /// Store days with each kind of fault, over the whole run.
    pub fn planned(&self, fault: Fault) -> usize {
        self.faults.values().filter(|f| **f == fault).count()
    }

    /// The next business day of every store, or None after the last.
    pub fn next_day(&mut self) -> Option<Vec<StoreDay>> {
        if self.next_day >= self.spec.days {
            return None;
        }
        let d = self.next_day;
        self.next_day += 1;
        let day = BusinessDay::from_days(self.world.day.days() + d as i32);
        let stores = self.world.stores;
        Some(
            (0..stores)
                .map(|s| {
                    let fault = self.faults.get(&(d as usize * stores + s)).copied();
                    self.store_day(s, day, d, fault)
                })
                .collect(),
        )
    }

    /// One store's day: its transactions, the faults applied, the Z report, the oracle.
    fn store_day(
        &mut self,
        store: usize,
        day: BusinessDay,
        d: u32,
        fault: Option<Fault>,
    ) -> StoreDay {
        let w = self.world.clone();
        let name = w.locations[store].clone();
        let avg = self.per_store_day as i64;
        let n = self.rng.range((avg / 2).max(2), avg + avg / 2).max(2) as usize;
        // Midday of the business day, one transaction a second from there.
        let opens = i64::from(day.days()) * 86_400_000 + 9 * 3_600_000;
        let mut all = Vec::with_capacity(n);
        for i in 0..n {
            let till = 1 + self.rng.below(w.tills as u64);
            let event = self.transaction(&w, store, day);
            let seq = self.next_seq.entry((store, till)).or_insert(1);
            let source = format!("pos/{name}/t{till}");
            all.push(Envelope::new(&source, *seq, opens + i as i64 * 1000, event));
            *seq += 1;
        }
        let mut declared = Sums::default();
        for e in &all {
            declared.add(&e.event);
        }
        let tills = till_closes(&all);
        let (mut on_time, mut late) = (Vec::with_capacity(n), Vec::new());
        let lost = (fault == Some(Fault::Missing)).then(|| self.rng.below(n as u64) as usize);
        let held: BTreeSet<usize> = if fault == Some(Fault::Late) {
            let k = (1 + self.rng.below(3) as usize).min(n - 1);
            (0..k).map(|_| self.rng.below(n as u64) as usize).collect()
        } else {
            BTreeSet::new()
        };
        let mut source = Sums::default();
        for (i, e) in all.into_iter().enumerate() {
            if Some(i) == lost {
                continue;
            }
            source.add(&e.event);
            if held.contains(&i) {
                late.push(e);
            } else {
                on_time.push(e);
            }
        }
        if fault == Some(Fault::Variance) {
            self.declare_variance(&mut declared);
        }
        let mut exceptions = expected_exceptions(&tills, &on_time, &late, &declared, &source);
        if !late.is_empty() {
            exceptions.insert(format!("late {}", late.len()));
        }
        let close = Envelope::new(
            &format!("pos/{name}/bo"),
            u64::from(d) + 1,
            opens + 14 * 3_600_000,
            Event::DayClosed(DayClosed {
                location: name.as_str().into(),
                business_day: day,
                currency: w.currency,
                tills,
                tenders: declared
                    .tenders
                    .iter()
                    .map(|(k, v)| Tender {
                        kind: k.as_str().into(),
                        amount: *v,
                    })
                    .collect(),
                taxes: declared
                    .taxes
                    .iter()
                    .map(|(k, v)| TaxLine {
                        code: k.as_str().into(),
                        amount: *v,
                    })
                    .collect(),
            }),
        );
        StoreDay {
            store: name,
            day,
            fault,
            on_time,
            late,
            close,
            source,
            exceptions,
        }
    }

    /// A sale (a few lines by popularity) or, now and then, a return of one unit.
    fn transaction(&mut self, w: &World, store: usize, day: BusinessDay) -> Event {
        if self.rng.below(100) < self.return_pct {
            return Event::Return(unit_return(w, &mut self.rng, store, day));
        }
        let [lo, hi] = self.sale_lines;
        let n = self.rng.range(lo.max(1) as i64, hi.max(lo).max(1) as i64);
        let lines: Vec<ItemLine> = (0..n)
            .map(|_| {
                let sku = w.store_zipf.sample(&mut self.rng);
                let qty = if self.rng.below(5) == 0 { 2 } else { 1 };
                item_line(w, &mut self.rng, sku, qty)
            })
            .collect();
        let total: i64 = lines.iter().map(|l| l.net() + l.tax()).sum();
        Event::Sale(Sale {
            location: w.locations[store].as_str().into(),
            business_day: day,
            currency: w.currency,
            lines,
            tenders: tenders(&mut self.rng, total),
        })
    }

    /// The Z report counts cash it did not take, or tax it did not charge: a few cents to
    /// fifty units either way, never nothing.
    fn declare_variance(&mut self, declared: &mut Sums) {
        let mut off = self.rng.range(1, 5000);
        if self.rng.below(2) == 0 {
            off = -off;
        }
        let code = declared.taxes.keys().next().cloned();
        match code {
            Some(code) if self.rng.below(2) == 0 => {
                *declared.taxes.entry(code).or_default() += off;
            }
            _ => *declared.tenders.entry("cash".into()).or_default() += off,
        }
    }
}

/// Each till's part of the Z report: its last sequence of the day and how many it made.
fn till_closes(all: &[Envelope]) -> Vec<TillClose> {
    let mut tills: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for e in all {
        let t = tills.entry(e.source.as_str()).or_default();
        t.0 = t.0.max(e.seq);
        t.1 += 1;
    }
    tills
        .into_iter()
        .map(|(till, (last_seq, transactions))| TillClose {
            till: till.into(),
            last_seq,
            transactions,
        })
        .collect()
}

/// What reconciliation must list once every on-time and late transaction is in: the gaps in
/// each till's declared sequences, and every tender and tax code whose declared money differs
/// from what the tills sent.
fn expected_exceptions(
    tills: &[TillClose],
    on_time: &[Envelope],
    late: &[Envelope],
    declared: &Sums,
    source: &Sums,
) -> BTreeSet<String> {
    let mut words = BTreeSet::new();
    let arrived: BTreeSet<(&str, u64)> = on_time
        .iter()
        .chain(late)
        .map(|e| (e.source.as_str(), e.seq))
        .collect();
    for t in tills {
        let first = t.last_seq + 1 - t.transactions;
        let mut gaps: Vec<(u64, u64)> = Vec::new();
        for seq in first..=t.last_seq {
            if arrived.contains(&(t.till.as_str(), seq)) {
                continue;
            }
            match gaps.last_mut() {
                Some(g) if g.1 + 1 == seq => g.1 = seq,
                _ => gaps.push((seq, seq)),
            }
        }
        if !gaps.is_empty() {
            let ranges: Vec<String> = gaps.iter().map(|(a, b)| format!("{a}-{b}")).collect();
            words.insert(format!("missing {} {}", t.till, ranges.join(",")));
        }
    }
    for (what, d, s) in [
        ("tender", &declared.tenders, &source.tenders),
        ("tax", &declared.taxes, &source.taxes),
    ] {
        let keys: BTreeSet<&String> = d.keys().chain(s.keys()).collect();
        for k in keys {
            let diff = d.get(k).copied().unwrap_or(0) - s.get(k).copied().unwrap_or(0);
            if diff != 0 {
                words.insert(format!("{what} {k} {diff}"));
            }
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(stores: usize) -> Scenario {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/month-end.toml"),
        )
        .unwrap();
        let mut s: Scenario = toml::from_str(&text).unwrap();
        s.world.stores = stores;
        s
    }

    #[test]
    fn faults_fall_on_distinct_store_days_and_show_as_planned() {
        let s = scenario(40);
        let world = Arc::new(World::build(&s).unwrap());
        let mut days = Days::new(&s, world).unwrap();
        let mut seen: HashMap<Fault, usize> = HashMap::new();
        while let Some(day) = days.next_day() {
            for sd in day {
                let Some(f) = sd.fault else {
                    assert!(sd.exceptions.is_empty(), "{:?}", sd.exceptions);
                    assert!(sd.late.is_empty());
                    continue;
                };
                *seen.entry(f).or_default() += 1;
                let kinds: BTreeSet<&str> = sd
                    .exceptions
                    .iter()
                    .map(|w| w.split(' ').next().unwrap())
                    .collect();
                match f {
                    Fault::Variance => assert_eq!(sd.exceptions.len(), 1, "{:?}", sd.exceptions),
                    Fault::Missing => assert!(kinds.contains("missing"), "{kinds:?}"),
                    Fault::Late => {
                        assert_eq!(kinds, BTreeSet::from(["late"]), "{:?}", sd.exceptions);
                        assert!(!sd.late.is_empty());
                    }
                }
            }
        }
        for f in [Fault::Variance, Fault::Missing, Fault::Late] {
            assert_eq!(seen.get(&f).copied().unwrap_or(0), days.planned(f), "{f:?}");
            assert!(days.planned(f) >= 1);
        }
    }
}
