//! The ledger's unit tests: positions, transfers, orders and sourcing, reservations, snapshots.

use super::*;

fn loc(s: &str) -> LocationId {
    LocationId::from(s)
}
fn sku(s: &str) -> Sku {
    Sku::from(s)
}
fn receipt(l: &str, s: &str, qty: i64) -> Op {
    Op::Receipt {
        loc: loc(l),
        sku: sku(s),
        qty,
    }
}
fn pos(ledger: &Ledger, l: &str, s: &str) -> Position {
    ledger.position(&loc(l), &sku(s)).unwrap_or_default()
}

#[test]
fn sales_receipts_returns_and_counts() {
    let mut g = Ledger::new();
    g.apply(1, &receipt("S1", "A", 10)).unwrap();
    g.apply(
        2,
        &Op::Sale {
            loc: loc("S1"),
            sku: sku("A"),
            qty: 3,
        },
    )
    .unwrap();
    g.apply(
        3,
        &Op::Return {
            loc: loc("S1"),
            sku: sku("A"),
            qty: 1,
            restock: true,
        },
    )
    .unwrap();
    g.apply(
        4,
        &Op::Return {
            loc: loc("S1"),
            sku: sku("A"),
            qty: 5,
            restock: false,
        },
    )
    .unwrap();
    assert_eq!(pos(&g, "S1", "A").on_hand, 8);
    g.apply(
        5,
        &Op::Count {
            loc: loc("S1"),
            sku: sku("A"),
            counted: 6,
        },
    )
    .unwrap();
    assert_eq!(pos(&g, "S1", "A").on_hand, 6);
    let moves = g.take_movements();
    let get = |r: &str| moves.iter().find(|m| m.reason == r).map(|m| m.qty);
    assert_eq!(get("receipt"), Some(10));
    assert_eq!(get("sale"), Some(-3));
    assert_eq!(get("return"), Some(1));
    assert_eq!(get("count"), Some(-2));
    assert!(g.take_movements().is_empty(), "movements reset after take");
    // The next flush (its working list reused) holds only what moved since.
    g.apply(6, &receipt("S1", "A", 4)).unwrap();
    g.apply(7, &receipt("S2", "B", 2)).unwrap();
    let again: Vec<(String, String, String, i64)> = g
        .take_movements()
        .into_iter()
        .map(|m| {
            (
                m.location.to_string(),
                m.sku.to_string(),
                m.reason.to_string(),
                m.qty,
            )
        })
        .collect();
    assert_eq!(
        again,
        vec![
            ("S1".into(), "A".into(), "receipt".into(), 4),
            ("S2".into(), "B".into(), "receipt".into(), 2),
        ]
    );
}

#[test]
fn facts_drive_stock_negative_and_are_counted() {
    let mut g = Ledger::new();
    g.apply(1, &receipt("S1", "A", 1)).unwrap();
    g.apply(
        2,
        &Op::Sale {
            loc: loc("S1"),
            sku: sku("A"),
            qty: 4,
        },
    )
    .unwrap();
    assert_eq!(pos(&g, "S1", "A").on_hand, -3);
    assert_eq!(g.exceptions.negative_on_hand, 1);
    g.apply(
        3,
        &Op::Sale {
            loc: loc("S1"),
            sku: sku("A"),
            qty: 1,
        },
    )
    .unwrap();
    assert_eq!(
        g.exceptions.negative_on_hand, 1,
        "only the crossing is counted"
    );
}

#[test]
fn safety_stock_reduces_available() {
    let mut g = Ledger::new();
    g.apply(1, &receipt("S1", "A", 10)).unwrap();
    g.apply(
        2,
        &Op::SafetyStock {
            loc: loc("S1"),
            sku: sku("A"),
            qty: 4,
        },
    )
    .unwrap();
    assert_eq!(pos(&g, "S1", "A").available(), 6);
}

#[test]
fn transfers_move_stock_through_in_transit() {
    let mut g = Ledger::new();
    g.apply(1, &receipt("DC1", "A", 10)).unwrap();
    let t = TransferId::from("T1");
    g.apply(
        2,
        &Op::TransferOut {
            transfer: t.clone(),
            from: loc("DC1"),
            to: loc("S1"),
            sku: sku("A"),
            qty: 4,
        },
    )
    .unwrap();
    assert_eq!(pos(&g, "DC1", "A").on_hand, 6);
    assert_eq!(pos(&g, "S1", "A").in_transit, 4);
    g.apply(
        3,
        &Op::TransferIn {
            transfer: t.clone(),
            from: loc("DC1"),
            to: loc("S1"),
            sku: sku("A"),
            qty: 3,
        },
    )
    .unwrap();
    assert_eq!(pos(&g, "S1", "A").in_transit, 1);
    assert_eq!(pos(&g, "S1", "A").on_hand, 3);
    // Arriving more than was sent: on hand takes all, in transit only what was open.
    g.apply(
        4,
        &Op::TransferIn {
            transfer: t,
            from: loc("DC1"),
            to: loc("S1"),
            sku: sku("A"),
            qty: 2,
        },
    )
    .unwrap();
    assert_eq!(pos(&g, "S1", "A").in_transit, 0);
    assert_eq!(pos(&g, "S1", "A").on_hand, 5);
    assert_eq!(g.exceptions.unmatched_transfers, 1);
}

fn place(order: &str, l: Option<&str>, s: &str, qty: i64) -> Op {
    Op::OrderPlaced {
        order: OrderId::from(order),
        channel: ChannelId::from("web"),
        loc: l.map(loc),
        sku: sku(s),
        qty,
        reservation: None,
    }
}

#[test]
fn order_lifecycle_reserves_consumes_and_releases() {
    let mut g = Ledger::new();
    g.apply(1, &receipt("DC1", "A", 10)).unwrap();
    g.apply(2, &place("O1", Some("DC1"), "A", 4)).unwrap();
    assert_eq!(
        pos(&g, "DC1", "A"),
        Position {
            on_hand: 10,
            reserved: 4,
            safety_stock: 0,
            in_transit: 0
        }
    );
    g.apply(
        3,
        &Op::OrderFulfilled {
            order: OrderId::from("O1"),
            loc: loc("DC1"),
            sku: sku("A"),
            qty: 3,
        },
    )
    .unwrap();
    assert_eq!(pos(&g, "DC1", "A").on_hand, 7);
    assert_eq!(pos(&g, "DC1", "A").reserved, 1);
    g.apply(
        4,
        &Op::OrderCancelled {
            order: OrderId::from("O1"),
            sku: None,
            qty: 0,
        },
    )
    .unwrap();
    assert_eq!(pos(&g, "DC1", "A").reserved, 0);
    assert_eq!(g.open_counts().0, 0);
    g.apply(
        5,
        &Op::OrderFulfilled {
            order: OrderId::from("O9"),
            loc: loc("DC1"),
            sku: sku("A"),
            qty: 1,
        },
    )
    .unwrap();
    assert_eq!(g.exceptions.unknown_orders, 1);
    assert_eq!(pos(&g, "DC1", "A").on_hand, 6);
}

fn location(l: &str, priority: u32, channels: &[&str]) -> Op {
    Op::Location(std::sync::Arc::new(LocationUpsert {
        location: loc(l),
        kind: LocationKind::Dc,
        channels: channels.iter().map(|c| ChannelId::from(*c)).collect(),
        priority,
    }))
}

#[test]
fn channel_orders_follow_priority_and_go_short_on_the_first_location() {
    let mut g = Ledger::new();
    g.apply(1, &location("DC2", 2, &["web"])).unwrap();
    g.apply(2, &location("DC1", 1, &["web"])).unwrap();
    g.apply(3, &receipt("DC1", "A", 2)).unwrap();
    g.apply(4, &receipt("DC2", "A", 5)).unwrap();
    g.apply(5, &place("O1", None, "A", 2)).unwrap();
    assert_eq!(pos(&g, "DC1", "A").reserved, 2, "DC1 has priority");
    g.apply(6, &place("O2", None, "A", 3)).unwrap();
    assert_eq!(
        pos(&g, "DC2", "A").reserved,
        3,
        "DC1 is exhausted, DC2 covers"
    );
    g.apply(7, &place("O3", None, "A", 9)).unwrap();
    assert_eq!(
        pos(&g, "DC1", "A").reserved,
        11,
        "nobody covers: first location goes short"
    );
    assert_eq!(g.exceptions.short_allocations, 1);
}

fn reserve(id: &str, s: &str, qty: i64, target: Target, partial: bool) -> Op {
    Op::Reserve(std::sync::Arc::new(ReservationRequested {
        reservation_id: ReservationId::from(id),
        sku: sku(s),
        qty,
        target,
        expires_at_ms: 1000,
        allow_partial: partial,
    }))
}

#[test]
fn a_reservation_for_an_unknown_sku_is_rejected_without_growing_the_ledger() {
    let mut g = Ledger::new();
    g.apply(1, &receipt("S1", "A", 5)).unwrap();
    let at = Target::Location(loc("S1"));
    for i in 0..100 {
        g.apply(
            2 + i,
            &reserve(&format!("R{i}"), &format!("NOPE{i}"), 1, at.clone(), false),
        )
        .unwrap();
    }
    let d = g.take_decisions();
    assert_eq!(d.len(), 100);
    assert!(
        d.iter()
            .all(|d| d.state == DecisionState::Rejected && !d.granted)
    );
    assert_eq!(g.skus.len(), 1, "unknown skus were interned");
    assert_eq!(g.open_counts().2, 0, "their rejections were remembered");
}

#[test]
fn a_key_reused_for_another_request_on_one_shard_is_a_conflict_that_changes_nothing() {
    let mut g = Ledger::new();
    g.apply(1, &receipt("S1", "A", 5)).unwrap();
    g.apply(1, &receipt("S1", "B", 5)).unwrap();
    let at = Target::Location(loc("S1"));
    g.apply(2, &reserve("K", "A", 1, at.clone(), false))
        .unwrap();
    g.apply(3, &reserve("K", "B", 1, at.clone(), false))
        .unwrap();
    g.apply(4, &reserve("K", "A", 2, at.clone(), false))
        .unwrap();
    g.apply(5, &reserve("K", "A", 1, at.clone(), false))
        .unwrap();
    let states: Vec<_> = g.take_decisions().iter().map(|d| d.state).collect();
    use DecisionState::*;
    assert_eq!(states, [Active, Conflict, Conflict, Active]);
    assert_eq!(pos(&g, "S1", "A").reserved, 1);
    assert_eq!(pos(&g, "S1", "B").reserved, 0);
    assert_eq!(
        g.reservation(&ReservationId::from("K")).unwrap().sku,
        sku("A")
    );
}

#[test]
fn remembered_rejections_are_capped_oldest_first_and_pruned_early() {
    let mut g = Ledger::new();
    g.set_limits(ResvLimits {
        max_rejected: 3,
        retain_rejected_ms: 0,
    });
    g.apply(1, &receipt("S1", "A", 1)).unwrap();
    let at = Target::Location(loc("S1"));
    g.apply(2, &reserve("G", "A", 1, at.clone(), false))
        .unwrap();
    for i in 0..5 {
        g.apply(3 + i, &reserve(&format!("X{i}"), "A", 1, at.clone(), false))
            .unwrap();
    }
    assert_eq!(g.take_evicted(), 2);
    let remembered = |g: &Ledger, id: &str| g.reservation(&ReservationId::from(id)).is_some();
    assert!(!remembered(&g, "X0") && !remembered(&g, "X1"));
    assert!(remembered(&g, "X2") && remembered(&g, "X4") && remembered(&g, "G"));
    // The grant keeps the day; rejections go once their would-be expiry has passed.
    g.prune_reservations(10_001, 86_400_000);
    assert!(remembered(&g, "G"));
    assert!(!remembered(&g, "X2") && !remembered(&g, "X4"));
}

#[test]
fn reservations_never_exceed_available_and_are_idempotent() {
    let mut g = Ledger::new();
    g.apply(1, &receipt("S1", "A", 5)).unwrap();
    let at = Target::Location(loc("S1"));
    g.apply(2, &reserve("R1", "A", 3, at.clone(), false))
        .unwrap();
    g.apply(3, &reserve("R2", "A", 3, at.clone(), false))
        .unwrap();
    g.apply(4, &reserve("R3", "A", 3, at.clone(), true))
        .unwrap();
    g.apply(5, &reserve("R1", "A", 3, at.clone(), false))
        .unwrap();
    let d = g.take_decisions();
    assert!(d[0].granted && d[0].allocations == vec![(loc("S1"), 3)]);
    assert!(!d[1].granted && d[1].available == 2);
    assert!(
        d[2].granted && d[2].allocations == vec![(loc("S1"), 2)],
        "partial takes the rest"
    );
    assert_eq!(d[3].decided_at, 2, "retry returns the first decision");
    assert_eq!(pos(&g, "S1", "A").reserved, 5);
    g.apply(
        6,
        &Op::Release {
            reservation: ReservationId::from("R1"),
            sku: sku("A"),
        },
    )
    .unwrap();
    g.apply(
        7,
        &Op::Expire {
            reservation: ReservationId::from("R3"),
            sku: sku("A"),
        },
    )
    .unwrap();
    g.apply(
        8,
        &Op::Expire {
            reservation: ReservationId::from("R3"),
            sku: sku("A"),
        },
    )
    .unwrap();
    assert_eq!(pos(&g, "S1", "A").reserved, 0);
    assert_eq!(
        g.reservation(&ReservationId::from("R3")).unwrap().state,
        DecisionState::Expired
    );
}

#[test]
fn an_order_takes_over_its_reservation() {
    let mut g = Ledger::new();
    g.apply(1, &receipt("S1", "A", 5)).unwrap();
    g.apply(
        2,
        &reserve("R1", "A", 3, Target::Location(loc("S1")), false),
    )
    .unwrap();
    g.apply(
        3,
        &Op::OrderPlaced {
            order: OrderId::from("O1"),
            channel: ChannelId::from("web"),
            loc: None,
            sku: sku("A"),
            qty: 2,
            reservation: Some(ReservationId::from("R1")),
        },
    )
    .unwrap();
    assert_eq!(
        pos(&g, "S1", "A").reserved,
        2,
        "excess of the reservation is given back"
    );
    assert_eq!(
        g.reservation(&ReservationId::from("R1")).unwrap().state,
        DecisionState::Consumed
    );
    g.apply(
        4,
        &Op::OrderFulfilled {
            order: OrderId::from("O1"),
            loc: loc("S1"),
            sku: sku("A"),
            qty: 2,
        },
    )
    .unwrap();
    assert_eq!(
        pos(&g, "S1", "A"),
        Position {
            on_hand: 3,
            reserved: 0,
            safety_stock: 0,
            in_transit: 0
        }
    );
}

#[test]
fn overflow_is_an_error_and_changes_nothing() {
    let mut g = Ledger::new();
    g.apply(
        1,
        &Op::Adjust {
            loc: loc("S1"),
            sku: sku("A"),
            qty: i64::MAX,
            reason: ReasonCode::from("found"),
        },
    )
    .unwrap();
    let err = g.apply(2, &receipt("S1", "A", 1)).unwrap_err();
    assert!(matches!(err, ApplyError::Overflow { .. }));
    assert_eq!(pos(&g, "S1", "A").on_hand, i64::MAX);
}

#[test]
fn snapshot_round_trip_preserves_state() {
    let mut g = Ledger::new();
    g.apply(1, &location("DC1", 1, &["web"])).unwrap();
    g.apply(2, &receipt("DC1", "A", 10)).unwrap();
    g.apply(3, &place("O1", None, "A", 4)).unwrap();
    let bytes = rmp_serde::to_vec_named(&g).unwrap();
    let mut h: Ledger = rmp_serde::from_slice(&bytes).unwrap();
    h.reindex();
    assert_eq!(pos(&h, "DC1", "A"), pos(&g, "DC1", "A"));
    h.apply(
        4,
        &Op::OrderCancelled {
            order: OrderId::from("O1"),
            sku: None,
            qty: 0,
        },
    )
    .unwrap();
    assert_eq!(pos(&h, "DC1", "A").reserved, 0);
    h.apply(5, &place("O2", None, "A", 1)).unwrap();
    assert_eq!(pos(&h, "DC1", "A").reserved, 1, "channel table survived");
}
