//! Stateless validation of an envelope: [`Envelope::validate`], one check per event kind.
//! An event that passes can be applied by every actor without arithmetic overflow on its own
//! values.

use super::event::*;
use super::money::{MAX_AMOUNT, MAX_QTY};

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
        check_event(&self.event)
    }
}

/// The payload's own checks, by kind.
#[inline]
fn check_event(event: &Event) -> Result<(), ValidationError> {
    match event {
        Event::Sale(s) => s.check(),
        Event::Return(r) => r.check(),
        Event::OrderPlaced(o) => o.check(),
        Event::OrderCancelled(o) => o.check(),
        Event::OrderFulfilled(o) => o.check(),
        Event::Receipt(r) => r.check(),
        Event::Adjustment(a) => a.check(),
        Event::Count(c) => c.check(),
        Event::TransferOut(t) | Event::TransferIn(t) => t.check(),
        Event::SafetyStockSet(s) => s.check(),
        Event::LocationUpsert(l) => l.check(),
        Event::ChannelUpsert(c) => c.check(),
        Event::ReservationRequested(r) => r.check(),
        Event::ReservationBatch(b) => b.check(),
        Event::ReservationReleased(r) => {
            r.reservation_id.check()?;
            r.sku.check()?;
            Ok(())
        }
        Event::ReservationExpired(r) => {
            r.reservation_id.check()?;
            r.sku.check()?;
            Ok(())
        }
        Event::DayClosed(d) => d.check(),
        Event::Barrier(_) => Ok(()),
    }
}

/// Tills in one `day_closed` at most.
pub const MAX_CLOSE_TILLS: usize = 1000;
/// Declared tender or tax lines in one `day_closed` at most.
pub const MAX_CLOSE_LINES: usize = 64;
/// Transactions one till declares for a day at most.
pub const MAX_TILL_TRANSACTIONS: u64 = 10_000_000;

impl DayClosed {
    fn check(&self) -> Result<(), ValidationError> {
        self.location.check()?;
        if self.tills.len() > MAX_CLOSE_TILLS {
            return Err(bad(format!("tills: more than {MAX_CLOSE_TILLS}")));
        }
        if self.tenders.len() > MAX_CLOSE_LINES || self.taxes.len() > MAX_CLOSE_LINES {
            return Err(bad(format!(
                "tenders and taxes: at most {MAX_CLOSE_LINES} lines each"
            )));
        }
        for (i, t) in self.tills.iter().enumerate() {
            t.till.check()?;
            if t.transactions > MAX_TILL_TRANSACTIONS || t.transactions > t.last_seq {
                return Err(bad(format!(
                    "tills[{i}]: {} transactions cannot end at sequence {} (at most {MAX_TILL_TRANSACTIONS}, and sequences start at 1)",
                    t.transactions, t.last_seq
                )));
            }
            if self.tills[..i].iter().any(|o| o.till == t.till) {
                return Err(bad(format!("tills[{i}]: till {} twice", t.till)));
            }
        }
        // Declared day totals may be negative (more refunded than paid) and may exceed one
        // line's bound; MAX_AMOUNT x 100 keeps every sum of them far from overflow.
        let limit = MAX_AMOUNT.saturating_mul(100);
        for (i, t) in self.tenders.iter().enumerate() {
            t.kind.check()?;
            if t.amount.unsigned_abs() > limit as u64 {
                return Err(bad(format!("tenders[{i}]: amount beyond {limit}")));
            }
            if self.tenders[..i].iter().any(|o| o.kind == t.kind) {
                return Err(bad(format!("tenders[{i}]: tender {} twice", t.kind)));
            }
        }
        for (i, t) in self.taxes.iter().enumerate() {
            t.code.check()?;
            if t.amount.unsigned_abs() > limit as u64 {
                return Err(bad(format!("taxes[{i}]: amount beyond {limit}")));
            }
            if self.taxes[..i].iter().any(|o| o.code == t.code) {
                return Err(bad(format!("taxes[{i}]: tax code {} twice", t.code)));
            }
        }
        Ok(())
    }
}

impl Sale {
    #[inline]
    fn check(&self) -> Result<(), ValidationError> {
        self.location.check()?;
        check_item_lines(&self.lines, &self.tenders)?;
        if self.lines.iter().any(|l| l.restock.is_some()) {
            return Err(bad("lines[].restock is only valid on returns"));
        }
        Ok(())
    }
}

impl Return {
    #[inline]
    fn check(&self) -> Result<(), ValidationError> {
        self.location.check()?;
        check_item_lines(&self.lines, &self.tenders)
    }
}

impl OrderPlaced {
    #[inline]
    fn check(&self) -> Result<(), ValidationError> {
        self.order_id.check()?;
        self.channel.check()?;
        if let Some(l) = &self.location {
            l.check()?;
        }
        check_qty_lines(&self.lines)?;
        if let Some(r) = &self.reservation_id {
            r.check()?;
            if self.lines.len() != 1 {
                return Err(bad(
                    "an order taking over a reservation has exactly one line (reservations are per sku)",
                ));
            }
        }
        Ok(())
    }
}

impl OrderCancelled {
    #[inline]
    fn check(&self) -> Result<(), ValidationError> {
        self.order_id.check()?;
        if let Some(lines) = &self.lines {
            check_qty_lines(lines)?;
        }
        Ok(())
    }
}

impl OrderFulfilled {
    #[inline]
    fn check(&self) -> Result<(), ValidationError> {
        self.order_id.check()?;
        self.location.check()?;
        check_qty_lines(&self.lines)
    }
}

impl Receipt {
    #[inline]
    fn check(&self) -> Result<(), ValidationError> {
        self.location.check()?;
        check_qty_lines(&self.lines)
    }
}

impl Adjustment {
    #[inline]
    fn check(&self) -> Result<(), ValidationError> {
        self.location.check()?;
        self.sku.check()?;
        self.reason.check()?;
        if self.qty == 0 || self.qty.abs() > MAX_QTY {
            return Err(bad(format!(
                "qty {} must be non-zero and at most {MAX_QTY} in size",
                self.qty
            )));
        }
        Ok(())
    }
}

impl Count {
    #[inline]
    fn check(&self) -> Result<(), ValidationError> {
        self.location.check()?;
        self.sku.check()?;
        if !(0..=MAX_QTY).contains(&self.counted) {
            return Err(bad(format!(
                "counted {} must be between 0 and {MAX_QTY}",
                self.counted
            )));
        }
        Ok(())
    }
}

impl Transfer {
    #[inline]
    fn check(&self) -> Result<(), ValidationError> {
        self.transfer_id.check()?;
        self.from.check()?;
        self.to.check()?;
        if self.from == self.to {
            return Err(bad("from and to are the same location"));
        }
        check_qty_lines(&self.lines)
    }
}

impl SafetyStockSet {
    #[inline]
    fn check(&self) -> Result<(), ValidationError> {
        self.location.check()?;
        self.sku.check()?;
        if !(0..=MAX_QTY).contains(&self.qty) {
            return Err(bad(format!(
                "qty {} must be between 0 and {MAX_QTY}",
                self.qty
            )));
        }
        Ok(())
    }
}

impl LocationUpsert {
    #[inline]
    fn check(&self) -> Result<(), ValidationError> {
        self.location.check()?;
        for c in &self.channels {
            c.check()?;
        }
        Ok(())
    }
}

impl ChannelUpsert {
    #[inline]
    fn check(&self) -> Result<(), ValidationError> {
        self.channel.check()?;
        if !(0..=MAX_QTY).contains(&self.buffer) {
            return Err(bad(format!(
                "buffer {} must be between 0 and {MAX_QTY}",
                self.buffer
            )));
        }
        Ok(())
    }
}

impl ReservationBatch {
    #[inline]
    fn check(&self) -> Result<(), ValidationError> {
        if self.requests.is_empty() || self.requests.len() > MAX_RESERVATION_BATCH {
            return Err(bad(format!(
                "a reservation batch holds 1 to {MAX_RESERVATION_BATCH} requests ({} given)",
                self.requests.len()
            )));
        }
        for r in &self.requests {
            r.check()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::tests::sale;

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
}
