//! Per-SKU operations: what an event means for one shard. Ingest splits every event into
//! ops (a three-line sale becomes three `Sale` ops, each routed to the shard owning its SKU);
//! the ledger only ever sees ops, in stream order.

use crate::domain::*;
use std::sync::Arc;

/// FNV-1a over the SKU's bytes: stable across builds and platforms, because snapshots are
/// stored per shard and a SKU must land in the same shard after a restart.
pub fn shard_of(sku: &str, shards: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sku.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % shards as u64) as usize
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Sale {
        loc: LocationId,
        sku: Sku,
        qty: i64,
    },
    Return {
        loc: LocationId,
        sku: Sku,
        qty: i64,
        restock: bool,
    },
    Receipt {
        loc: LocationId,
        sku: Sku,
        qty: i64,
    },
    Adjust {
        loc: LocationId,
        sku: Sku,
        qty: i64,
        reason: ReasonCode,
    },
    Count {
        loc: LocationId,
        sku: Sku,
        counted: i64,
    },
    TransferOut {
        transfer: TransferId,
        from: LocationId,
        to: LocationId,
        sku: Sku,
        qty: i64,
    },
    TransferIn {
        transfer: TransferId,
        from: LocationId,
        to: LocationId,
        sku: Sku,
        qty: i64,
    },
    SafetyStock {
        loc: LocationId,
        sku: Sku,
        qty: i64,
    },
    OrderPlaced {
        order: OrderId,
        channel: ChannelId,
        loc: Option<LocationId>,
        sku: Sku,
        qty: i64,
        reservation: Option<ReservationId>,
    },
    /// `sku: None` cancels everything this shard holds for the order (broadcast to all shards).
    OrderCancelled {
        order: OrderId,
        sku: Option<Sku>,
        qty: i64,
    },
    OrderFulfilled {
        order: OrderId,
        loc: LocationId,
        sku: Sku,
        qty: i64,
    },
    /// Master data, broadcast to every shard so each decides sourcing from the same table.
    Location(Arc<LocationUpsert>),
    Channel(Arc<ChannelUpsert>),
    Reserve(Arc<ReservationRequested>),
    /// A request whose key ingest found bound to another request: answered, not decided.
    Refuse(Arc<ReservationRequested>),
    Release {
        reservation: ReservationId,
        sku: Sku,
    },
    Expire {
        reservation: ReservationId,
        sku: Sku,
    },
}

impl Op {
    /// The SKU that decides the owning shard; `None` for broadcast ops.
    pub fn sku(&self) -> Option<&Sku> {
        match self {
            Op::Sale { sku, .. }
            | Op::Return { sku, .. }
            | Op::Receipt { sku, .. }
            | Op::Adjust { sku, .. }
            | Op::Count { sku, .. }
            | Op::TransferOut { sku, .. }
            | Op::TransferIn { sku, .. }
            | Op::SafetyStock { sku, .. }
            | Op::OrderPlaced { sku, .. }
            | Op::OrderFulfilled { sku, .. }
            | Op::Release { sku, .. }
            | Op::Expire { sku, .. } => Some(sku),
            Op::Reserve(r) | Op::Refuse(r) => Some(&r.sku),
            Op::OrderCancelled { sku, .. } => sku.as_ref(),
            Op::Location(_) | Op::Channel(_) => None,
        }
    }
}

/// Splits an event into ops. Sales and returns also go to the store aggregator; that part is
/// routed separately by ingest. Barriers produce no ops.
pub fn ops_of(event: &Event, mut push: impl FnMut(Op)) {
    let push = &mut push;
    match event {
        Event::Sale(s) => sale_ops(s, push),
        Event::Return(r) => return_ops(r, push),
        Event::OrderPlaced(o) => order_placed_ops(o, push),
        Event::OrderCancelled(o) => order_cancelled_ops(o, push),
        Event::OrderFulfilled(o) => order_fulfilled_ops(o, push),
        Event::Receipt(r) => receipt_ops(r, push),
        Event::Adjustment(a) => push(Op::Adjust {
            loc: a.location.clone(),
            sku: a.sku.clone(),
            qty: a.qty,
            reason: a.reason.clone(),
        }),
        Event::Count(c) => push(Op::Count {
            loc: c.location.clone(),
            sku: c.sku.clone(),
            counted: c.counted,
        }),
        Event::TransferOut(t) => transfer_out_ops(t, push),
        Event::TransferIn(t) => transfer_in_ops(t, push),
        Event::SafetyStockSet(s) => push(Op::SafetyStock {
            loc: s.location.clone(),
            sku: s.sku.clone(),
            qty: s.qty,
        }),
        Event::LocationUpsert(l) => push(Op::Location(Arc::new(l.clone()))),
        Event::ChannelUpsert(c) => push(Op::Channel(Arc::new(c.clone()))),
        Event::ReservationRequested(r) => push(Op::Reserve(Arc::new(r.clone()))),
        Event::ReservationBatch(b) => {
            for r in &b.requests {
                push(Op::Reserve(Arc::new(r.clone())));
            }
        }
        Event::ReservationReleased(r) => push(Op::Release {
            reservation: r.reservation_id.clone(),
            sku: r.sku.clone(),
        }),
        Event::ReservationExpired(r) => push(Op::Expire {
            reservation: r.reservation_id.clone(),
            sku: r.sku.clone(),
        }),
        Event::Barrier(_) | Event::DayClosed(_) => {}
    }
}

/// One `Sale` op per line.
#[inline]
fn sale_ops(s: &Sale, push: &mut impl FnMut(Op)) {
    for l in &s.lines {
        push(Op::Sale {
            loc: s.location.clone(),
            sku: l.sku.clone(),
            qty: l.qty,
        });
    }
}

/// One `Return` op per line; a line restocks unless it says otherwise.
#[inline]
fn return_ops(r: &Return, push: &mut impl FnMut(Op)) {
    for l in &r.lines {
        push(Op::Return {
            loc: r.location.clone(),
            sku: l.sku.clone(),
            qty: l.qty,
            restock: l.restock.unwrap_or(true),
        });
    }
}

#[inline]
fn order_placed_ops(o: &OrderPlaced, push: &mut impl FnMut(Op)) {
    for l in &o.lines {
        push(Op::OrderPlaced {
            order: o.order_id.clone(),
            channel: o.channel.clone(),
            loc: o.location.clone(),
            sku: l.sku.clone(),
            qty: l.qty,
            reservation: o.reservation_id.clone(),
        });
    }
}

/// One op per cancelled line, or a single whole-order op (`sku: None`) without lines.
#[inline]
fn order_cancelled_ops(o: &OrderCancelled, push: &mut impl FnMut(Op)) {
    match &o.lines {
        Some(lines) => {
            for l in lines {
                push(Op::OrderCancelled {
                    order: o.order_id.clone(),
                    sku: Some(l.sku.clone()),
                    qty: l.qty,
                });
            }
        }
        None => push(Op::OrderCancelled {
            order: o.order_id.clone(),
            sku: None,
            qty: 0,
        }),
    }
}

#[inline]
fn order_fulfilled_ops(o: &OrderFulfilled, push: &mut impl FnMut(Op)) {
    for l in &o.lines {
        push(Op::OrderFulfilled {
            order: o.order_id.clone(),
            loc: o.location.clone(),
            sku: l.sku.clone(),
            qty: l.qty,
        });
    }
}

#[inline]
fn receipt_ops(r: &Receipt, push: &mut impl FnMut(Op)) {
    for l in &r.lines {
        push(Op::Receipt {
            loc: r.location.clone(),
            sku: l.sku.clone(),
            qty: l.qty,
        });
    }
}

#[inline]
fn transfer_out_ops(t: &Transfer, push: &mut impl FnMut(Op)) {
    for l in &t.lines {
        push(Op::TransferOut {
            transfer: t.transfer_id.clone(),
            from: t.from.clone(),
            to: t.to.clone(),
            sku: l.sku.clone(),
            qty: l.qty,
        });
    }
}

#[inline]
fn transfer_in_ops(t: &Transfer, push: &mut impl FnMut(Op)) {
    for l in &t.lines {
        push(Op::TransferIn {
            transfer: t.transfer_id.clone(),
            from: t.from.clone(),
            to: t.to.clone(),
            sku: l.sku.clone(),
            qty: l.qty,
        });
    }
}
