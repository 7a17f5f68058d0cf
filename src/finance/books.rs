//! The reconciliation's memory: every store day as its store actor last showed it (source,
//! declared, documents formed, exceptions) beside what each ERP endpoint answered for the
//! day's documents (accepted, rejected), read from the finance stream.
//!
//! Store actors replace their days here at every barrier; the journal reader adds the ERP's
//! answers in stream order. Both sides are rebuilt after a restart: the days from the
//! snapshot and the replay, the answers from the finance stream.

use crate::config::ErpEndpointConfig;
use crate::dlq::audit::Redrive;
use crate::domain::{BusinessDay, Currency, LocationId};
use retailflow_core::aggregate::day::{DayState, Money};
use retailflow_core::aggregate::posting::{DocKind, Lineage};
use retailflow_core::aggregate::store::DayView;
use rustc_hash::{FxHashMap, FxHasher};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{PoisonError, RwLock};

/// Which documents of a store day an endpoint takes.
#[derive(Clone, Debug)]
struct Scope {
    name: String,
    kinds: Vec<DocKind>,
    locations: Vec<String>,
}

impl Scope {
    fn takes(&self, location: &str) -> bool {
        self.locations.is_empty() || self.locations.iter().any(|l| l == location)
    }

    /// The part of `money` carried by the document kinds this endpoint takes.
    fn part_of(&self, money: &Money) -> Money {
        Money {
            sales: if self.kinds.contains(&DocKind::SalesSummary) {
                money.sales
            } else {
                0
            },
            taxes: if self.kinds.contains(&DocKind::TaxSummary) {
                money.taxes.clone()
            } else {
                BTreeMap::new()
            },
            tenders: if self.kinds.contains(&DocKind::TenderSummary) {
                money.tenders.clone()
            } else {
                BTreeMap::new()
            },
        }
    }
}

/// The ERP's answer about one document, as the endpoint records it in the finance stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub document: String,
    pub endpoint: String,
    pub location: LocationId,
    pub business_day: BusinessDay,
    pub currency: Currency,
    pub kind: DocKind,
    pub barrier_seq: u64,
    pub lineage: Lineage,
    #[serde(default, rename = "final")]
    pub final_doc: bool,
    #[serde(default)]
    pub corrects: Option<u64>,
    pub status: DocStatus,
    /// The ERP's reason for a rejection.
    #[serde(default)]
    pub message: Option<String>,
    pub money: Money,
    /// When the ERP answered (Unix ms).
    pub at_ms: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocStatus {
    Accepted,
    Rejected,
    /// Written to an interface table (a `postgres` endpoint), waiting for the ERP's import
    /// job: pending until it reports `imported` (accepted) or `error` (rejected).
    Staged,
}

impl DocStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DocStatus::Accepted => "accepted",
            DocStatus::Rejected => "rejected",
            DocStatus::Staged => "staged",
        }
    }
}

/// What one endpoint answered for a store day.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EndpointAnswers {
    pub accepted: Money,
    pub accepted_documents: u64,
    pub rejected: Money,
    pub rejected_documents: u64,
}

#[derive(Default)]
struct Entry {
    day: Option<DayView>,
    answers: BTreeMap<String, EndpointAnswers>,
    /// Status per document (by a hash of its id): a document answered twice counts once,
    /// and a rejected one accepted after a re-drive moves over.
    seen: FxHashMap<u64, DocStatus>,
    /// The newest answered documents, for the detail view.
    listed: VecDeque<Answer>,
    /// Documents written to an interface table, waiting for the import's verdict.
    staged: FxHashMap<u64, Answer>,
}

/// Key of a store day: business day first, so a listing comes out by day, then store.
pub type DayKey = (BusinessDay, LocationId, Currency);

pub struct Books {
    days: RwLock<BTreeMap<DayKey, Entry>>,
    /// Dead-letter re-drives per store day (the newest `max_listed`), from the audit stream.
    redrives: RwLock<BTreeMap<(BusinessDay, LocationId), VecDeque<Redrive>>>,
    /// Audit-stream sequence of the last re-drive taken in.
    audit_seq: AtomicU64,
    scopes: Vec<Scope>,
    max_listed: usize,
    /// Finance-stream sequence of the last answer taken in (the reader resumes after it).
    journal_seq: AtomicU64,
}

fn id_hash(id: &str) -> u64 {
    let mut h = FxHasher::default();
    id.hash(&mut h);
    h.finish()
}

impl Books {
    pub fn new(endpoints: &[ErpEndpointConfig], max_listed: usize) -> Books {
        Books {
            days: RwLock::new(BTreeMap::new()),
            redrives: RwLock::new(BTreeMap::new()),
            audit_seq: AtomicU64::new(0),
            scopes: endpoints
                .iter()
                .map(|e| Scope {
                    name: e.name.clone(),
                    kinds: e.documents.clone(),
                    locations: e.locations.clone(),
                })
                .collect(),
            max_listed: max_listed.max(1),
            journal_seq: AtomicU64::new(0),
        }
    }

    /// A store actor's days as of its latest barrier.
    pub fn update(&self, location: &LocationId, days: Vec<DayView>) {
        if days.is_empty() {
            return;
        }
        let mut map = self.days.write().unwrap_or_else(PoisonError::into_inner);
        for d in days {
            let key = (d.business_day, location.clone(), d.currency);
            map.entry(key).or_default().day = Some(d);
        }
    }

    pub fn journal_seq(&self) -> u64 {
        self.journal_seq.load(Relaxed)
    }

    pub fn audit_seq(&self) -> u64 {
        self.audit_seq.load(Relaxed)
    }

    /// Takes in one re-drive at audit-stream sequence `seq` (once), under the store day it
    /// names; one that names none (a letter that did not decode) is only in the audit stream.
    pub fn redrive(&self, seq: u64, r: Redrive) {
        if seq <= self.audit_seq.fetch_max(seq, Relaxed) {
            return;
        }
        let (Some(loc), Some(day)) = (r.location.as_deref(), r.business_day.as_deref()) else {
            return;
        };
        let Ok(day) = BusinessDay::parse(day) else {
            return;
        };
        let loc = LocationId::from(loc);
        let mut map = self
            .redrives
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let list = map.entry((day, loc)).or_default();
        if list.len() >= self.max_listed {
            list.pop_front();
        }
        list.push_back(r);
    }

    /// Takes in one answer at finance-stream sequence `seq` (once; older sequences are
    /// skipped, so a reader that starts again cannot count an answer twice).
    pub fn answer(&self, seq: u64, a: Answer) {
        if seq <= self.journal_seq.load(Relaxed) {
            return;
        }
        self.journal_seq.store(seq, Relaxed);
        let key = (a.business_day, a.location.clone(), a.currency);
        let mut map = self.days.write().unwrap_or_else(PoisonError::into_inner);
        let entry = map.entry(key).or_default();
        let h = id_hash(&a.document);
        let side = entry.answers.entry(a.endpoint.clone()).or_default();
        match (entry.seen.get(&h).copied(), a.status) {
            (Some(DocStatus::Accepted), _) => return,
            (Some(DocStatus::Rejected), DocStatus::Rejected | DocStatus::Staged) => return,
            (Some(DocStatus::Staged), DocStatus::Staged) => return,
            (None, DocStatus::Staged) => {
                entry.staged.insert(h, a.clone());
            }
            (Some(DocStatus::Staged), DocStatus::Accepted) => {
                entry.staged.remove(&h);
                side.accepted.add(&a.money);
                side.accepted_documents += 1;
            }
            (Some(DocStatus::Staged), DocStatus::Rejected) => {
                entry.staged.remove(&h);
                side.rejected.add(&a.money);
                side.rejected_documents += 1;
            }
            (Some(DocStatus::Rejected), DocStatus::Accepted) => {
                side.rejected = side.rejected.sub(&a.money);
                side.rejected_documents = side.rejected_documents.saturating_sub(1);
                side.accepted.add(&a.money);
                side.accepted_documents += 1;
            }
            (None, DocStatus::Accepted) => {
                side.accepted.add(&a.money);
                side.accepted_documents += 1;
            }
            (None, DocStatus::Rejected) => {
                side.rejected.add(&a.money);
                side.rejected_documents += 1;
            }
        }
        entry.seen.insert(h, a.status);
        entry.listed.retain(|d| d.document != a.document);
        if entry.listed.len() >= self.max_listed {
            // The oldest accepted goes first: rejected documents stay listed while they can.
            let at = entry
                .listed
                .iter()
                .position(|d| d.status != DocStatus::Rejected)
                .unwrap_or(0);
            entry.listed.remove(at);
        }
        entry.listed.push_back(a);
    }

    /// The reconciliation of every store day that passes `filter`, by day then store.
    pub fn list(&self, filter: &Filter) -> Vec<Reconciliation> {
        let map = self.days.read().unwrap_or_else(PoisonError::into_inner);
        let redrives = self.redrives.read().unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .filter(|((day, loc, _), _)| {
                filter.business_day.is_none_or(|d| d == *day)
                    && filter.store.as_ref().is_none_or(|s| s == loc)
            })
            .map(|(k, e)| self.reconcile(k, e, false))
            .filter(|r| filter.status.as_ref().is_none_or(|s| r.status == s))
            .map(|mut r| {
                let key = (r.business_day, r.store.clone());
                r.redrive_count = redrives.get(&key).map_or(0, VecDeque::len);
                r
            })
            .collect()
    }

    /// One store day in every currency it has, with exceptions, tills and documents.
    pub fn detail(&self, store: &LocationId, day: BusinessDay) -> Vec<Reconciliation> {
        let map = self.days.read().unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .filter(|((d, loc, _), _)| *d == day && loc == store)
            .map(|(k, e)| {
                let mut r = self.reconcile(k, e, true);
                r.redrives = self.redrives_of(day, store);
                r.redrive_count = r.redrives.len();
                r
            })
            .collect()
    }

    /// The re-drives recorded for a store day, newest first.
    fn redrives_of(&self, day: BusinessDay, store: &LocationId) -> Vec<Redrive> {
        let map = self.redrives.read().unwrap_or_else(PoisonError::into_inner);
        map.get(&(day, store.clone()))
            .map(|l| l.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    /// A document written to an interface table and not yet imported, by id.
    pub fn staged(&self, id: &str) -> Option<Answer> {
        let key = parse_id(id)?;
        let map = self.days.read().unwrap_or_else(PoisonError::into_inner);
        map.get(&key)?.staged.get(&id_hash(id)).cloned()
    }

    /// A listed document's answer, by id.
    pub fn document(&self, id: &str) -> Option<Answer> {
        let key = parse_id(id)?;
        let map = self.days.read().unwrap_or_else(PoisonError::into_inner);
        map.get(&key)?
            .listed
            .iter()
            .find(|d| d.document == id)
            .cloned()
    }

    fn reconcile(&self, (day, loc, cur): &DayKey, e: &Entry, detail: bool) -> Reconciliation {
        let view = e.day.as_ref();
        let book = view.map(|v| &v.book);
        let mut erp = Vec::new();
        for s in self.scopes.iter().filter(|s| s.takes(loc.as_str())) {
            let posted = book.map(|b| s.part_of(&b.formed)).unwrap_or_default();
            let posted_documents: u64 = book
                .map(|b| {
                    b.documents
                        .iter()
                        .filter(|(k, _)| s.kinds.contains(k))
                        .map(|(_, n)| n)
                        .sum()
                })
                .unwrap_or(0);
            let a = e.answers.get(&s.name).cloned().unwrap_or_default();
            let answered = a.accepted_documents + a.rejected_documents;
            let pending = posted.sub(&a.accepted).sub(&a.rejected);
            erp.push(EndpointSide {
                endpoint: s.name.clone(),
                posted: Side::of(&posted, posted_documents),
                accepted: Side::of(&a.accepted, a.accepted_documents),
                rejected: Side::of(&a.rejected, a.rejected_documents),
                pending: Side::of(&pending, posted_documents.saturating_sub(answered)),
            });
        }
        let exceptions = book.map(|b| b.exceptions.clone()).unwrap_or_default();
        let state = state_word(view, &erp);
        let status = status_word(&exceptions, &erp, state);
        let events = view.map_or(0, |v| v.totals.events);
        Reconciliation {
            store: loc.clone(),
            business_day: *day,
            currency: *cur,
            state,
            status,
            source: view.map(|v| Side::of(&v.source, events)),
            declared: book.and_then(|b| b.declared.as_ref()).map(|d| {
                let n = d.tills.values().map(|(_, n)| n).sum();
                Side::of(&d.money, n)
            }),
            closed_at: book.and_then(|b| b.closed_at),
            late_events: book.map_or(0, |b| b.late_events),
            exception_count: exceptions.len(),
            exceptions: if detail { exceptions } else { Vec::new() },
            erp,
            tills: if detail {
                tills(book.map(|b| b as _))
            } else {
                Vec::new()
            },
            documents: if detail {
                e.listed.iter().rev().cloned().collect()
            } else {
                Vec::new()
            },
            redrive_count: 0,
            redrives: Vec::new(),
        }
    }
}

/// Declared against applied transactions, per till.
fn tills(book: Option<&retailflow_core::aggregate::day::DayBook>) -> Vec<TillRow> {
    let Some(book) = book else {
        return Vec::new();
    };
    let mut rows: BTreeMap<String, TillRow> = BTreeMap::new();
    for (till, n) in book.till_counts() {
        rows.entry(till.to_string()).or_default().applied = n;
    }
    if let Some(d) = &book.declared {
        for (till, (last, n)) in &d.tills {
            let r = rows.entry(till.to_string()).or_default();
            r.declared = Some(*n);
            r.last_seq = Some(*last);
        }
    }
    rows.into_iter()
        .map(|(till, mut r)| {
            r.till = till;
            r
        })
        .collect()
}

/// `open`, `closing`, `closed` (the Z report is in and the grace over), `posted` (closed and
/// every transaction formed into documents), `accepted` (posted and every endpoint accepted
/// every document).
fn state_word(view: Option<&DayView>, erp: &[EndpointSide]) -> &'static str {
    let Some(v) = view else {
        return "open";
    };
    match v.book.state {
        DayState::Open => "open",
        DayState::Closing => "closing",
        DayState::Closed if v.source != v.book.formed => "closed",
        DayState::Closed => {
            let settled = erp
                .iter()
                .all(|e| e.pending.documents == 0 && e.rejected.documents == 0);
            if settled { "accepted" } else { "posted" }
        }
    }
}

/// The one word a finance user filters by, the most urgent first: `rejected`,
/// `missing_transactions`, `variance`, `late_correction`, `pending`, `balanced`.
fn status_word(
    exceptions: &[retailflow_core::aggregate::day::Exception],
    erp: &[EndpointSide],
    state: &str,
) -> &'static str {
    if erp.iter().any(|e| e.rejected.documents > 0) {
        return "rejected";
    }
    for word in ["missing_transactions", "variance", "late_correction"] {
        if exceptions.iter().any(|x| x.status() == word) {
            return word;
        }
    }
    if state == "accepted" {
        "balanced"
    } else {
        "pending"
    }
}

/// Store, day and currency of a document id
/// (`<endpoint>/<kind>/<location>/<day>/<currency>/<barrier>/<part>/<page>`).
pub fn parse_id(id: &str) -> Option<DayKey> {
    let parts: Vec<&str> = id.split('/').collect();
    if parts.len() != 8 {
        return None;
    }
    let day = BusinessDay::parse(parts[3]).ok()?;
    let cur = Currency::parse(parts[4]).ok()?;
    Some((day, LocationId::from(parts[2]), cur))
}

/// What `GET /v1/reconciliation` filters by.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub business_day: Option<BusinessDay>,
    pub store: Option<LocationId>,
    pub status: Option<String>,
}

/// One side's money with its count (events, declared transactions or documents).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Side {
    pub sales: i64,
    pub tax: i64,
    pub tendered: i64,
    pub taxes: BTreeMap<String, i64>,
    pub tenders: BTreeMap<String, i64>,
    /// Events (source), transactions (declared) or documents (ERP sides).
    pub documents: u64,
}

impl Side {
    fn of(m: &Money, n: u64) -> Side {
        Side {
            sales: m.sales,
            tax: m.tax(),
            tendered: m.tendered(),
            taxes: m.taxes.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            tenders: m.tenders.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            documents: n,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct EndpointSide {
    pub endpoint: String,
    pub posted: Side,
    pub accepted: Side,
    pub rejected: Side,
    pub pending: Side,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct TillRow {
    pub till: String,
    /// Transactions applied from the till for the day.
    pub applied: u64,
    /// Transactions the Z report declares, and the last sequence.
    pub declared: Option<u64>,
    pub last_seq: Option<u64>,
}

/// A store day's reconciliation, as the API answers it.
#[derive(Clone, Debug, Serialize)]
pub struct Reconciliation {
    pub store: LocationId,
    pub business_day: BusinessDay,
    pub currency: Currency,
    pub state: &'static str,
    pub status: &'static str,
    /// Money of the events applied (`documents` counts the events).
    pub source: Option<Side>,
    /// The Z report (`documents` counts declared transactions); absent until `day_closed`.
    pub declared: Option<Side>,
    pub closed_at: Option<u64>,
    pub late_events: u64,
    pub exception_count: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exceptions: Vec<retailflow_core::aggregate::day::Exception>,
    pub erp: Vec<EndpointSide>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tills: Vec<TillRow>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub documents: Vec<Answer>,
    /// Dead letters of this store day sent back (`retailflow dlq redrive`).
    pub redrive_count: usize,
    /// The re-drives themselves, newest first (detail only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redrives: Vec<Redrive>,
}
