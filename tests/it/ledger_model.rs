//! The ATP ledger against a small independent model over random op sequences: sales,
//! receipts, reservations (whole or partial), releases and expiries, at two locations and two
//! SKUs. Positions, decisions and reservation states must agree after every op, and no
//! reservation is ever granted beyond what was available when it was decided.

use proptest::prelude::*;
use retailflow::domain::*;
use retailflow_core::apply::ledger::Ledger;
use retailflow_core::apply::op::Op;
use std::collections::HashMap;
use std::sync::Arc;

const LOCS: [&str; 2] = ["S1", "DC1"];
const SKUS: [&str; 2] = ["A", "B"];

#[derive(Clone, Debug)]
enum Step {
    Sale(usize, usize, i64),
    Receipt(usize, usize, i64),
    Reserve {
        id: u8,
        loc: usize,
        sku: usize,
        qty: i64,
        partial: bool,
    },
    Release(u8),
    Expire(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..2usize, 0..2usize, 1..6i64).prop_map(|(l, s, q)| Step::Sale(l, s, q)),
        (0..2usize, 0..2usize, 1..10i64).prop_map(|(l, s, q)| Step::Receipt(l, s, q)),
        (0..8u8, 0..2usize, 0..2usize, 1..8i64, any::<bool>()).prop_map(
            |(id, loc, sku, qty, partial)| Step::Reserve {
                id,
                loc,
                sku,
                qty,
                partial
            }
        ),
        (0..8u8).prop_map(Step::Release),
        (0..8u8).prop_map(Step::Expire),
    ]
}

/// What the model remembers of a reservation: where, how much, and whether it still holds.
#[derive(Clone, Debug)]
struct Held {
    at: (usize, usize),
    qty: i64,
    granted: bool,
    active: bool,
}

#[derive(Default)]
struct Model {
    /// (on_hand, reserved) per (location, sku) that has been touched.
    pos: HashMap<(usize, usize), (i64, i64)>,
    resv: HashMap<u8, Held>,
    /// SKUs some fact has named: a reservation for any other is refused and forgotten,
    /// since the ledger keeps nothing for a SKU it does not know.
    known: std::collections::HashSet<usize>,
}

impl Model {
    /// Applies one step; for a new reservation returns (granted, quantity).
    fn apply(&mut self, s: &Step) -> Option<(bool, i64)> {
        match *s {
            Step::Sale(l, k, q) => {
                self.known.insert(k);
                self.pos.entry((l, k)).or_default().0 -= q
            }
            Step::Receipt(l, k, q) => {
                self.known.insert(k);
                self.pos.entry((l, k)).or_default().0 += q
            }
            Step::Reserve {
                id,
                loc,
                sku,
                qty,
                partial,
            } => {
                if self.resv.contains_key(&id) {
                    return None;
                }
                if !self.known.contains(&sku) {
                    return Some((false, 0));
                }
                // Only stock that is there can be promised: a slot never touched has none.
                let free = self
                    .pos
                    .get(&(loc, sku))
                    .map_or(0, |&(on_hand, reserved)| (on_hand - reserved).max(0));
                let take = if free >= qty {
                    qty
                } else if partial {
                    free
                } else {
                    0
                };
                if take > 0 {
                    self.pos.entry((loc, sku)).or_default().1 += take;
                }
                self.resv.insert(
                    id,
                    Held {
                        at: (loc, sku),
                        qty: take,
                        granted: take > 0,
                        active: take > 0,
                    },
                );
                return Some((take > 0, take));
            }
            Step::Release(id) | Step::Expire(id) => {
                if let Some(h) = self.resv.get_mut(&id).filter(|h| h.active) {
                    h.active = false;
                    let (at, qty) = (h.at, h.qty);
                    self.pos.entry(at).or_default().1 -= qty;
                }
            }
        }
        None
    }
}

fn rid(id: u8) -> ReservationId {
    ReservationId::from(format!("R{id}").as_str())
}

fn op_of(s: &Step, model: &Model) -> Op {
    let loc = |l: usize| LocationId::from(LOCS[l]);
    let sku = |k: usize| Sku::from(SKUS[k]);
    match *s {
        Step::Sale(l, k, qty) => Op::Sale {
            loc: loc(l),
            sku: sku(k),
            qty,
        },
        Step::Receipt(l, k, qty) => Op::Receipt {
            loc: loc(l),
            sku: sku(k),
            qty,
        },
        Step::Reserve {
            id,
            loc: l,
            sku: k,
            qty,
            partial,
        } => Op::Reserve(Arc::new(ReservationRequested {
            reservation_id: rid(id),
            sku: sku(k),
            qty,
            target: Target::Location(loc(l)),
            expires_at_ms: 1_000,
            allow_partial: partial,
        })),
        // The SKU only routes the op; use the one the reservation was for when known.
        Step::Release(id) => Op::Release {
            reservation: rid(id),
            sku: sku(model.resv.get(&id).map_or(0, |h| h.at.1)),
        },
        Step::Expire(id) => Op::Expire {
            reservation: rid(id),
            sku: sku(model.resv.get(&id).map_or(0, |h| h.at.1)),
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn ledger_agrees_with_a_simple_model(steps in prop::collection::vec(step(), 1..80)) {
        let mut ledger = Ledger::new();
        let mut model = Model::default();
        for (i, s) in steps.iter().enumerate() {
            let op = op_of(s, &model);
            let before = model.pos.clone();
            let expected = model.apply(s);
            ledger.apply(i as u64 + 1, &op).expect("small quantities never overflow");
            let decisions = ledger.take_decisions();
            if let (Some((granted, qty)), Step::Reserve { loc, sku, .. }) = (expected, s) {
                let d = decisions.last().expect("a reservation is decided");
                prop_assert_eq!(d.granted, granted, "decision at step {}: {:?}", i, s);
                let total: i64 = d.allocations.iter().map(|a| a.1).sum();
                prop_assert_eq!(total, qty);
                // Never more than was free when decided.
                let free = before.get(&(*loc, *sku)).map_or(0, |p| (p.0 - p.1).max(0));
                prop_assert!(total <= free, "granted {} with {} free", total, free);
            }
            for (&(l, k), &(on_hand, reserved)) in &model.pos {
                let p = ledger
                    .position(&LocationId::from(LOCS[l]), &Sku::from(SKUS[k]))
                    .unwrap_or_default();
                prop_assert_eq!((p.on_hand, p.reserved), (on_hand, reserved),
                    "position {}/{} after step {}: {:?}", LOCS[l], SKUS[k], i, s);
                prop_assert_eq!(p.available(), on_hand - reserved);
            }
            for (&id, h) in &model.resv {
                // A rejection need not be remembered (unknown SKUs are never interned, and
                // rejections are kept only to their would-be expiry, capped); a grant must be.
                let Some(d) = ledger.reservation(&rid(id)) else {
                    prop_assert!(!h.granted, "granted reservation {} forgotten", id);
                    continue;
                };
                prop_assert_eq!(d.granted, h.granted);
                let state = if h.active { "active" } else if h.granted { "ended" } else { "rejected" };
                let got = match d.state.as_str() {
                    "active" => "active",
                    "released" | "expired" => "ended",
                    other => other,
                };
                prop_assert_eq!(got, state, "reservation R{} after step {}", id, i);
            }
        }
        // The reserved quantity of every position is what its active reservations hold.
        for (&(l, k), &(_, reserved)) in &model.pos {
            let held: i64 = model
                .resv
                .values()
                .filter(|h| h.active && h.at == (l, k))
                .map(|h| h.qty)
                .sum();
            prop_assert_eq!(reserved, held);
        }
    }
}
