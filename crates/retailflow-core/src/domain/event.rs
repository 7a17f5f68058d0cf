//! The canonical event model: a versioned envelope around one retail fact or request.
//!
//! Wire shape (MessagePack with named fields, or JSON), see docs/EVENTS.md for full examples:
//!
//! ```json
//! {"v":1,"id":"pos-s0042-t03-17","source":"pos/s0042/t03","seq":17,
//!  "occurred_at_ms":1795770843000,"trace":"4bf92f35",
//!  "event":{"receipt":{"location":"S0042","lines":[{"sku":"SKU-1","qty":12}]}}}
//! ```

use super::ids::*;
use super::money::{BusinessDay, Currency};
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
    /// A store's business day is over: the tills' Z reports (see [`DayClosed`]).
    DayClosed(DayClosed),
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
            Event::DayClosed(_) => "day_closed",
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
            Event::DayClosed(d) => d.location.as_str(),
            Event::Barrier(_) => "all",
        }
    }
}

impl Envelope {
    /// The envelope a producer sends for its `seq`-th event: the current schema version, the id
    /// `<source>#<seq>` (carried as `Nats-Msg-Id`), no trace. The one way the tests, the lab and
    /// the examples build envelopes.
    pub fn new(source: &str, seq: u64, occurred_at_ms: i64, event: Event) -> Envelope {
        Envelope {
            v: SCHEMA_VERSION,
            id: EventId::from(format!("{source}#{seq}").as_str()),
            source: SourceId::from(source),
            seq,
            occurred_at_ms,
            trace: None,
            event,
        }
    }

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

/// The close of one store's business day: what its tills declared in their Z reports.
///
/// retailflow compares it with what it applied: the tills' transaction sequences (a gap is
/// missing transactions) and the totals per tender and per tax code (a difference is a
/// variance). A second `day_closed` for the same store, day and currency replaces the first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DayClosed {
    pub location: LocationId,
    pub business_day: BusinessDay,
    pub currency: Currency,
    /// One entry per till that sold that day.
    pub tills: Vec<TillClose>,
    /// Declared money per tender kind: paid less refunded, minor units.
    #[serde(default)]
    pub tenders: Vec<Tender>,
    /// Declared tax per tax component code: charged on sales less given back on returns.
    #[serde(default)]
    pub taxes: Vec<TaxLine>,
}

/// One till's part of a Z report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TillClose {
    /// The till's source id, as in its events' `source` (e.g. `pos/s0042/t03`).
    pub till: SourceId,
    /// Sequence of the till's last transaction of the day (its envelope `seq`).
    pub last_seq: u64,
    /// Transactions (sales and returns) the till made that day: its sequences of the day
    /// are `last_seq - transactions + 1 ..= last_seq`.
    pub transactions: u64,
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

/// Why an event was refused (by [`Envelope::validate`], in `validate.rs`). The message names
/// the field so a producer can fix it.
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
    fn json_shape_is_externally_tagged() {
        let json = serde_json::to_value(sale(3)).unwrap();
        assert_eq!(json["event"]["sale"]["lines"][0]["sku"], "A");
        assert_eq!(json["event"]["sale"]["business_day"], "2026-11-27");
        let back: Envelope = serde_json::from_value(json).unwrap();
        assert_eq!(back, sale(3));
    }
}
