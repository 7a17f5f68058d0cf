//! The canonical event model: a versioned envelope around one retail fact or request.
//!
//! Wire shape (MessagePack with named fields, or JSON), see the README for full examples:
//!
//! ```json
//! {"v":1,"id":"pos-s0042-t03-17","source":"pos/s0042/t03","seq":17,
//!  "occurred_at_ms":1795770843000,"trace":"4bf92f35",
//!  "event":{"receipt":{"location":"S0042","lines":[{"sku":"SKU-1","qty":12}]}}}
//! ```

use super::ids::*;
use super::money::{BusinessDay, Currency, MAX_AMOUNT, MAX_QTY};
use serde::{Deserialize, Serialize};

/// Schema version this build writes and the highest it reads.
pub const SCHEMA_VERSION: u16 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Schema version of the envelope and payload.
    pub v: u16,
    /// Unique per source; carried as `Nats-Msg-Id` so JetStream drops quick re-sends.
    pub id: EventId,
    /// The producer, e.g. `pos/s0042/t03`.
    pub source: SourceId,
    /// Per-source sequence, monotonic from 1. Gaps are detectable, re-sends are dropped.
    pub seq: u64,
    /// When the fact happened at the producer (Unix milliseconds). Informational only:
    /// processing never branches on it.
    pub occurred_at_ms: i64,
    /// Correlation id carried into logs and postings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<compact_str::CompactString>,
    pub event: Event,
}

/// One retail fact (sales, receipts, counts...) or request (reservations), or a control marker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Sale(Sale),
    Return(Return),
    OrderPlaced(OrderPlaced),
    OrderCancelled(OrderCancelled),
    OrderFulfilled(OrderFulfilled),
    Receipt(Receipt),
    Adjustment(Adjustment),
    Count(Count),
    TransferOut(Transfer),
    TransferIn(Transfer),
    SafetyStockSet(SafetyStockSet),
    LocationUpsert(LocationUpsert),
    ChannelUpsert(ChannelUpsert),
    ReservationRequested(ReservationRequested),
    ReservationReleased(ReservationReleased),
    ReservationExpired(ReservationExpired),
    /// Several reservation requests the API received at about the same time, in one stream
    /// message; decided one after the other, in this order, as if published one by one.
    ReservationBatch(ReservationBatch),
    /// Control marker published by retailflow itself: all actors cut state at this sequence.
    Barrier(Barrier),
}

impl Event {
    /// Short name used in subjects, metrics and error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Sale(_) => "sale",
            Event::Return(_) => "return",
            Event::OrderPlaced(_) => "order_placed",
            Event::OrderCancelled(_) => "order_cancelled",
            Event::OrderFulfilled(_) => "order_fulfilled",
            Event::Receipt(_) => "receipt",
            Event::Adjustment(_) => "adjustment",
            Event::Count(_) => "count",
            Event::TransferOut(_) => "transfer_out",
            Event::TransferIn(_) => "transfer_in",
            Event::SafetyStockSet(_) => "safety_stock_set",
            Event::LocationUpsert(_) => "location_upsert",
            Event::ChannelUpsert(_) => "channel_upsert",
            Event::ReservationRequested(_) => "reservation_requested",
            Event::ReservationReleased(_) => "reservation_released",
            Event::ReservationExpired(_) => "reservation_expired",
            Event::ReservationBatch(_) => "reservation_batch",
            Event::Barrier(_) => "barrier",
        }
    }
}

impl Event {
    /// Kinds only retailflow itself publishes (on `retail.v1.api.>` and `retail.v1.ctl.>`):
    /// a producer carrying one is refused (see [`super::subject::check_binding`]).
    pub fn is_own(&self) -> bool {
        matches!(
            self,
            Event::ReservationRequested(_)
                | Event::ReservationReleased(_)
                | Event::ReservationExpired(_)
                | Event::ReservationBatch(_)
                | Event::Barrier(_)
        )
    }

    /// The subject token naming where the event happened (`retail.v1.<system>.<this>.<kind>`).
    pub fn location_token(&self) -> &str {
        match self {
            Event::Sale(s) => s.location.as_str(),
            Event::Return(r) => r.location.as_str(),
            Event::OrderPlaced(o) => o
                .location
                .as_ref()
                .map_or(o.channel.as_str(), |l| l.as_str()),
            Event::OrderCancelled(_) => "orders",
            Event::OrderFulfilled(o) => o.location.as_str(),
            Event::Receipt(r) => r.location.as_str(),
            Event::Adjustment(a) => a.location.as_str(),
            Event::Count(c) => c.location.as_str(),
            Event::TransferOut(t) => t.from.as_str(),
            Event::TransferIn(t) => t.to.as_str(),
            Event::SafetyStockSet(s) => s.location.as_str(),
            Event::LocationUpsert(l) => l.location.as_str(),
            Event::ChannelUpsert(c) => c.channel.as_str(),
            Event::ReservationRequested(r) => match &r.target {
                Target::Location(l) => l.as_str(),
                Target::Channel(c) => c.as_str(),
            },
            Event::ReservationReleased(r) => r.sku.as_str(),
            Event::ReservationExpired(r) => r.sku.as_str(),
            Event::ReservationBatch(_) => "many",
            Event::Barrier(_) => "all",
        }
    }
}

impl Envelope {
    /// The system part of the subject: the source id up to its first `/` (`pos/s1/t3` -> `pos`).
    pub fn system(&self) -> &str {
        self.source.as_str().split('/').next().unwrap_or("")
    }

    /// `retail.v1.<system>.<location>.<kind>`, with `fallback_system` when the source does not
    /// start with a known one.
    pub fn subject(&self, systems: &[String], fallback_system: &str) -> String {
        let sys = self.system();
        let sys = if systems.iter().any(|s| s == sys) {
            sys
        } else {
            fallback_system
        };
        let loc = self.event.location_token();
        let loc = if super::ids::check_token("location", loc).is_ok() {
            loc
        } else {
            "unknown"
        };
        super::subject::event(sys, loc, self.event.kind())
    }
}

/// A priced line of a sale or return.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemLine {
    pub sku: Sku,
    /// Units sold (or returned); always positive.
    pub qty: i64,
    /// Price of one unit before discount, minor units, tax exclusive.
    pub unit_price: i64,
    /// Discount on the whole line, minor units.
    #[serde(default)]
    pub discount: i64,
    /// The line's tax group as the ERP knows it (e.g. `VAT20`); sales summaries are keyed by it.
    pub tax_code: TaxCode,
    /// Tax components charged on the line (e.g. state and county), minor units.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taxes: Vec<TaxLine>,
    /// Returns only: whether the returned units go back to sellable stock (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restock: Option<bool>,
}

impl ItemLine {
    /// qty x unit_price - discount; validated lines never overflow.
    pub fn net(&self) -> i64 {
        self.qty * self.unit_price - self.discount
    }

    pub fn gross(&self) -> i64 {
        self.qty * self.unit_price
    }

    pub fn tax(&self) -> i64 {
        self.taxes.iter().map(|t| t.amount).sum()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaxLine {
    pub code: TaxCode,
    pub amount: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tender {
    pub kind: TenderKind,
    /// Amount paid (for sales) or refunded (for returns), minor units, net of change given.
    pub amount: i64,
}

/// A completed till transaction. Decrements stock at `location`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sale {
    pub location: LocationId,
    pub business_day: BusinessDay,
    pub currency: Currency,
    pub lines: Vec<ItemLine>,
    pub tenders: Vec<Tender>,
}

/// Goods brought back. Restocked lines increment stock at `location`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Return {
    pub location: LocationId,
    pub business_day: BusinessDay,
    pub currency: Currency,
    pub lines: Vec<ItemLine>,
    /// Refund tenders.
    pub tenders: Vec<Tender>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_event_id: Option<EventId>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QtyLine {
    pub sku: Sku,
    pub qty: i64,
}

/// An order accepted by a channel. Reserves stock at `location`, or, when absent, at the
/// locations the channel's sourcing rule picks. With `reservation_id` it takes over that
/// reservation instead of reserving again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderPlaced {
    pub order_id: OrderId,
    pub channel: ChannelId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<LocationId>,
    pub lines: Vec<QtyLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<ReservationId>,
}

/// Releases what the order still holds; `lines` absent cancels the whole remaining order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderCancelled {
    pub order_id: OrderId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<Vec<QtyLine>>,
}

/// Goods shipped for an order from `location`: consumes the reservation, decrements stock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderFulfilled {
    pub order_id: OrderId,
    pub location: LocationId,
    pub lines: Vec<QtyLine>,
}

/// Goods received (purchase order, return to vendor reversal...). Increments stock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    pub location: LocationId,
    pub lines: Vec<QtyLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<compact_str::CompactString>,
}

/// Signed stock correction with a reason (damage, shrink, found...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adjustment {
    pub location: LocationId,
    pub sku: Sku,
    /// Signed delta; must not be zero.
    pub qty: i64,
    pub reason: ReasonCode,
}

/// Absolute cycle count: on hand becomes `counted`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Count {
    pub location: LocationId,
    pub sku: Sku,
    pub counted: i64,
}

/// Stock leaving `from` towards `to` (TransferOut) or arriving at `to` (TransferIn).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    pub transfer_id: TransferId,
    pub from: LocationId,
    pub to: LocationId,
    pub lines: Vec<QtyLine>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyStockSet {
    pub location: LocationId,
    pub sku: Sku,
    pub qty: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocationKind {
    Store,
    Dc,
    DarkStore,
    Supplier,
}

/// Master data: a location, its kind and the channels it fulfils.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocationUpsert {
    pub location: LocationId,
    pub kind: LocationKind,
    /// Channels this location ships or hands out orders for.
    #[serde(default)]
    pub channels: Vec<ChannelId>,
    /// Sourcing priority within each channel; lower goes first, ties by location id.
    #[serde(default = "default_priority")]
    pub priority: u32,
}

fn default_priority() -> u32 {
    100
}

/// How a channel-level reservation or order picks its locations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourcingRule {
    /// Fulfilment locations in priority order.
    #[default]
    Priority,
    /// The location with the most available first (ties by priority order).
    MostAvailable,
}

/// Master data: sourcing behaviour of a channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelUpsert {
    pub channel: ChannelId,
    #[serde(default)]
    pub rule: SourcingRule,
    /// Whether one request may be split over several locations.
    #[serde(default)]
    pub allow_split: bool,
    /// Units per location held back from this channel's advertised availability.
    #[serde(default)]
    pub buffer: i64,
}

/// Where a reservation should be taken.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Location(LocationId),
    Channel(ChannelId),
}

/// A reservation request from the API; the owning shard decides in stream order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservationRequested {
    /// Caller's idempotency key; also the reservation id when granted.
    pub reservation_id: ReservationId,
    pub sku: Sku,
    pub qty: i64,
    pub target: Target,
    /// Expiry instant (Unix ms) decided at the API; an expiry event enforces it.
    pub expires_at_ms: i64,
    #[serde(default)]
    pub allow_partial: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservationReleased {
    pub reservation_id: ReservationId,
    pub sku: Sku,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservationExpired {
    pub reservation_id: ReservationId,
    pub sku: Sku,
}

/// At most this many requests in one [`ReservationBatch`].
pub const MAX_RESERVATION_BATCH: usize = 1000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservationBatch {
    pub requests: Vec<ReservationRequested>,
}

/// Cut point for snapshots and postings. Published into the events stream so that where
/// barriers fall is itself part of the stream: replaying the same prefix forms the same
/// postings with the same ids.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Barrier {
    /// Whether stores and shards turn their aggregates into postings at this barrier.
    /// Cleared while the ERP is behind, so postings grow larger instead of more numerous.
    pub flush: bool,
    /// Whether a snapshot is taken at this barrier.
    #[serde(default = "yes")]
    pub snapshot: bool,
}

fn yes() -> bool {
    true
}

/// Why an event was refused. The message names the field so a producer can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("schema version {0} is newer than this build understands ({SCHEMA_VERSION})")]
    Version(u16),
    #[error(transparent)]
    Id(#[from] IdError),
    #[error("seq must start at 1")]
    ZeroSeq,
    #[error("{0}")]
    Invalid(String),
}

fn bad(msg: impl Into<String>) -> ValidationError {
    ValidationError::Invalid(msg.into())
}

// Field names for messages are built only when something is wrong: this runs for every line
// of every event.
fn check_qty(what: impl FnOnce() -> String, qty: i64) -> Result<(), ValidationError> {
    if qty <= 0 || qty > MAX_QTY {
        return Err(bad(format!(
            "{}: qty {qty} must be between 1 and {MAX_QTY}",
            what()
        )));
    }
    Ok(())
}

fn check_amount(what: impl FnOnce() -> String, amount: i64) -> Result<(), ValidationError> {
    if !(0..=MAX_AMOUNT).contains(&amount) {
        return Err(bad(format!(
            "{}: amount {amount} must be between 0 and {MAX_AMOUNT} minor units",
            what()
        )));
    }
    Ok(())
}

impl ReservationRequested {
    fn check(&self) -> Result<(), ValidationError> {
        self.reservation_id.check()?;
        self.sku.check()?;
        check_qty(|| "reservation".into(), self.qty)?;
        match &self.target {
            Target::Location(l) => l.check()?,
            Target::Channel(c) => c.check()?,
        }
        Ok(())
    }
}

fn check_qty_lines(lines: &[QtyLine]) -> Result<(), ValidationError> {
    if lines.is_empty() {
        return Err(bad("lines: at least one line is required"));
    }
    for (i, l) in lines.iter().enumerate() {
        l.sku.check()?;
        check_qty(|| format!("lines[{i}]"), l.qty)?;
    }
    Ok(())
}

fn check_item_lines(lines: &[ItemLine], tenders: &[Tender]) -> Result<(), ValidationError> {
    if lines.is_empty() {
        return Err(bad("lines: at least one line is required"));
    }
    let mut total: i64 = 0;
    for (i, l) in lines.iter().enumerate() {
        let at = || format!("lines[{i}]");
        l.sku.check()?;
        l.tax_code.check()?;
        check_qty(at, l.qty)?;
        check_amount(|| format!("{}.unit_price", at()), l.unit_price)?;
        check_amount(|| format!("{}.discount", at()), l.discount)?;
        let gross = l
            .qty
            .checked_mul(l.unit_price)
            .filter(|g| *g <= MAX_AMOUNT)
            .ok_or_else(|| {
                bad(format!(
                    "{}: qty x unit_price exceeds {MAX_AMOUNT} minor units",
                    at()
                ))
            })?;
        if l.discount > gross {
            return Err(bad(format!(
                "{}: discount {} exceeds the line's gross amount {gross}",
                at(),
                l.discount
            )));
        }
        let mut line_total = gross - l.discount;
        for (j, t) in l.taxes.iter().enumerate() {
            t.code.check()?;
            check_amount(|| format!("{}.taxes[{j}]", at()), t.amount)?;
            line_total += t.amount;
        }
        // Bounded by (1 + 64 tax lines) x MAX_AMOUNT per line; a transaction of more than a
        // few thousand such lines is refused below rather than risking overflow.
        total = total
            .checked_add(line_total)
            .filter(|t| *t <= MAX_AMOUNT * 1000)
            .ok_or_else(|| bad("transaction total is too large"))?;
        if l.taxes.len() > 64 {
            return Err(bad(format!("{}: more than 64 tax lines", at())));
        }
    }
    let mut paid: i64 = 0;
    for (i, t) in tenders.iter().enumerate() {
        t.kind.check()?;
        check_amount(|| format!("tenders[{i}]"), t.amount)?;
        paid += t.amount;
    }
    if paid != total {
        return Err(bad(format!(
            "tenders total {paid} does not balance the lines' net plus tax {total}"
        )));
    }
    Ok(())
}

impl Envelope {
    /// Checks everything that can be checked without state. An event that passes can be
    /// applied by every actor without arithmetic overflow on its own values.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.v == 0 || self.v > SCHEMA_VERSION {
            return Err(ValidationError::Version(self.v));
        }
        self.id.check()?;
        self.source.check()?;
        if self.seq == 0 {
            return Err(ValidationError::ZeroSeq);
        }
        match &self.event {
            Event::Sale(s) => {
                s.location.check()?;
                check_item_lines(&s.lines, &s.tenders)?;
                if s.lines.iter().any(|l| l.restock.is_some()) {
                    return Err(bad("lines[].restock is only valid on returns"));
                }
            }
            Event::Return(r) => {
                r.location.check()?;
                check_item_lines(&r.lines, &r.tenders)?;
            }
            Event::OrderPlaced(o) => {
                o.order_id.check()?;
                o.channel.check()?;
                if let Some(l) = &o.location {
                    l.check()?;
                }
                check_qty_lines(&o.lines)?;
                if let Some(r) = &o.reservation_id {
                    r.check()?;
                    if o.lines.len() != 1 {
                        return Err(bad(
                            "an order taking over a reservation has exactly one line (reservations are per sku)",
                        ));
                    }
                }
            }
            Event::OrderCancelled(o) => {
                o.order_id.check()?;
                if let Some(lines) = &o.lines {
                    check_qty_lines(lines)?;
                }
            }
            Event::OrderFulfilled(o) => {
                o.order_id.check()?;
                o.location.check()?;
                check_qty_lines(&o.lines)?;
            }
            Event::Receipt(r) => {
                r.location.check()?;
                check_qty_lines(&r.lines)?;
            }
            Event::Adjustment(a) => {
                a.location.check()?;
                a.sku.check()?;
                a.reason.check()?;
                if a.qty == 0 || a.qty.abs() > MAX_QTY {
                    return Err(bad(format!(
                        "qty {} must be non-zero and at most {MAX_QTY} in size",
                        a.qty
                    )));
                }
            }
            Event::Count(c) => {
                c.location.check()?;
                c.sku.check()?;
                if !(0..=MAX_QTY).contains(&c.counted) {
                    return Err(bad(format!(
                        "counted {} must be between 0 and {MAX_QTY}",
                        c.counted
                    )));
                }
            }
            Event::TransferOut(t) | Event::TransferIn(t) => {
                t.transfer_id.check()?;
                t.from.check()?;
                t.to.check()?;
                if t.from == t.to {
                    return Err(bad("from and to are the same location"));
                }
                check_qty_lines(&t.lines)?;
            }
            Event::SafetyStockSet(s) => {
                s.location.check()?;
                s.sku.check()?;
                if !(0..=MAX_QTY).contains(&s.qty) {
                    return Err(bad(format!(
                        "qty {} must be between 0 and {MAX_QTY}",
                        s.qty
                    )));
                }
            }
            Event::LocationUpsert(l) => {
                l.location.check()?;
                for c in &l.channels {
                    c.check()?;
                }
            }
            Event::ChannelUpsert(c) => {
                c.channel.check()?;
                if !(0..=MAX_QTY).contains(&c.buffer) {
                    return Err(bad(format!(
                        "buffer {} must be between 0 and {MAX_QTY}",
                        c.buffer
                    )));
                }
            }
            Event::ReservationRequested(r) => r.check()?,
            Event::ReservationBatch(b) => {
                if b.requests.is_empty() || b.requests.len() > MAX_RESERVATION_BATCH {
                    return Err(bad(format!(
                        "a reservation batch holds 1 to {MAX_RESERVATION_BATCH} requests ({} given)",
                        b.requests.len()
                    )));
                }
                for r in &b.requests {
                    r.check()?;
                }
            }
            Event::ReservationReleased(r) => {
                r.reservation_id.check()?;
                r.sku.check()?;
            }
            Event::ReservationExpired(r) => {
                r.reservation_id.check()?;
                r.sku.check()?;
            }
            Event::Barrier(_) => {}
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sale(seq: u64) -> Envelope {
        Envelope {
            v: 1,
            id: EventId::from(format!("e{seq}").as_str()),
            source: SourceId::from("pos/S1/t1"),
            seq,
            occurred_at_ms: 0,
            trace: None,
            event: Event::Sale(Sale {
                location: "S1".into(),
                business_day: BusinessDay::parse("2026-11-27").unwrap(),
                currency: Currency::parse("EUR").unwrap(),
                lines: vec![ItemLine {
                    sku: "A".into(),
                    qty: 2,
                    unit_price: 500,
                    discount: 100,
                    tax_code: "VAT20".into(),
                    taxes: vec![TaxLine {
                        code: "VAT20".into(),
                        amount: 180,
                    }],
                    restock: None,
                }],
                tenders: vec![Tender {
                    kind: "card".into(),
                    amount: 1080,
                }],
            }),
        }
    }

    #[test]
    fn reservation_batches_are_checked_request_by_request() {
        let req = |id: &str, qty: i64| ReservationRequested {
            reservation_id: id.into(),
            sku: "A".into(),
            qty,
            target: Target::Location("DC1".into()),
            expires_at_ms: 1,
            allow_partial: false,
        };
        let batch = |requests| {
            let mut e = sale(1);
            e.event = Event::ReservationBatch(ReservationBatch { requests });
            e
        };
        assert!(batch(vec![req("r1", 1), req("r2", 3)]).validate().is_ok());
        assert!(batch(vec![]).validate().is_err(), "empty");
        let err = batch(vec![req("r1", 1), req("r2", 0)])
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("reservation"), "{err}");
        let too_many = (0..=MAX_RESERVATION_BATCH)
            .map(|i| req(&format!("r{i}"), 1))
            .collect();
        assert!(batch(too_many).validate().is_err(), "over the limit");
    }

    #[test]
    fn balanced_sale_is_valid() {
        sale(1).validate().unwrap();
    }

    #[test]
    fn unbalanced_tenders_are_refused_with_both_totals() {
        let mut e = sale(1);
        if let Event::Sale(s) = &mut e.event {
            s.tenders[0].amount = 1000;
        }
        let err = e.validate().unwrap_err().to_string();
        assert!(err.contains("1000") && err.contains("1080"), "{err}");
    }

    #[test]
    fn overflowing_line_is_refused() {
        let mut e = sale(1);
        if let Event::Sale(s) = &mut e.event {
            s.lines[0].qty = MAX_QTY;
            s.lines[0].unit_price = MAX_AMOUNT;
        }
        let err = e.validate().unwrap_err().to_string();
        assert!(err.contains("exceeds"), "{err}");
    }

    #[test]
    fn zero_seq_and_future_versions_are_refused() {
        let mut e = sale(1);
        e.seq = 0;
        assert_eq!(e.validate(), Err(ValidationError::ZeroSeq));
        let mut e = sale(1);
        e.v = 2;
        assert_eq!(e.validate(), Err(ValidationError::Version(2)));
    }

    #[test]
    fn json_shape_is_externally_tagged() {
        let json = serde_json::to_value(sale(3)).unwrap();
        assert_eq!(json["event"]["sale"]["lines"][0]["sku"], "A");
        assert_eq!(json["event"]["sale"]["business_day"], "2026-11-27");
        let back: Envelope = serde_json::from_value(json).unwrap();
        assert_eq!(back, sale(3));
    }
}
