//! A fast path for decoding the envelope from MessagePack with named fields: the shape every
//! producer that follows docs/EVENTS.md sends. It reads keys as raw bytes (no UTF-8 check, no
//! identifier visitor) and builds the structs directly.
//!
//! It is only a fast path. Anything it does not recognise (another encoding of the same data,
//! an unknown or repeated key, a wrong type) makes it give up, and the caller decodes the
//! message again with `rmp_serde`, whose answer (value or error) is the one that counts. So the
//! fast path can never accept what the serde model refuses: every field it fills is checked for
//! presence, type and uniqueness exactly as the derived deserializers do.

use super::event::*;
use super::ids::*;
use super::money::{BusinessDay, Currency};
use compact_str::CompactString;

/// The fast path declined; decode with serde to learn why (or to succeed another way).
#[derive(Debug)]
pub struct Decline;

type R<T> = Result<T, Decline>;

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> R<u8> {
        let v = *self.b.get(self.i).ok_or(Decline)?;
        self.i += 1;
        Ok(v)
    }

    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let end = self.i.checked_add(n).ok_or(Decline)?;
        let s = self.b.get(self.i..end).ok_or(Decline)?;
        self.i = end;
        Ok(s)
    }

    fn be(&mut self, n: usize) -> R<u64> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |a, &x| (a << 8) | u64::from(x)))
    }

    fn peek(&self) -> R<u8> {
        self.b.get(self.i).copied().ok_or(Decline)
    }

    fn left(&self) -> usize {
        self.b.len().saturating_sub(self.i)
    }

    /// A map header. Each entry takes at least two bytes, so a count the bytes left cannot
    /// hold is a lie; declining keeps callers from sizing anything by it.
    fn map_len(&mut self) -> R<usize> {
        let n = match self.byte()? {
            m @ 0x80..=0x8f => usize::from(m & 0x0f),
            0xde => self.be(2)? as usize,
            0xdf => self.be(4)? as usize,
            _ => return Err(Decline),
        };
        if n > self.left() / 2 {
            return Err(Decline);
        }
        Ok(n)
    }

    /// An array header, at most as many elements as bytes left (each takes one at least):
    /// `Vec::with_capacity` of it is then bounded by the message, not by the prefix.
    fn array_len(&mut self) -> R<usize> {
        let n = match self.byte()? {
            m @ 0x90..=0x9f => usize::from(m & 0x0f),
            0xdc => self.be(2)? as usize,
            0xdd => self.be(4)? as usize,
            _ => return Err(Decline),
        };
        if n > self.left() {
            return Err(Decline);
        }
        Ok(n)
    }

    fn raw_str(&mut self) -> R<&'a [u8]> {
        let n = match self.byte()? {
            m @ 0xa0..=0xbf => usize::from(m & 0x1f),
            0xd9 => self.be(1)? as usize,
            0xda => self.be(2)? as usize,
            0xdb => self.be(4)? as usize,
            _ => return Err(Decline),
        };
        self.take(n)
    }

    fn str(&mut self) -> R<&'a str> {
        std::str::from_utf8(self.raw_str()?).map_err(|_| Decline)
    }

    fn cs(&mut self) -> R<CompactString> {
        Ok(CompactString::from(self.str()?))
    }

    fn i64(&mut self) -> R<i64> {
        let m = self.byte()?;
        Ok(match m {
            0x00..=0x7f => i64::from(m),
            0xe0..=0xff => i64::from(m as i8),
            0xcc => self.be(1)? as i64,
            0xcd => self.be(2)? as i64,
            0xce => self.be(4)? as i64,
            0xcf => i64::try_from(self.be(8)?).map_err(|_| Decline)?,
            0xd0 => i64::from(self.be(1)? as u8 as i8),
            0xd1 => i64::from(self.be(2)? as u16 as i16),
            0xd2 => i64::from(self.be(4)? as u32 as i32),
            0xd3 => self.be(8)? as i64,
            _ => return Err(Decline),
        })
    }

    fn u64(&mut self) -> R<u64> {
        match self.peek()? {
            0xcf => {
                self.i += 1;
                self.be(8)
            }
            _ => u64::try_from(self.i64()?).map_err(|_| Decline),
        }
    }

    fn bool(&mut self) -> R<bool> {
        match self.byte()? {
            0xc2 => Ok(false),
            0xc3 => Ok(true),
            _ => Err(Decline),
        }
    }

    /// Consumes a nil if one is next.
    fn nil(&mut self) -> bool {
        if matches!(self.peek(), Ok(0xc0)) {
            self.i += 1;
            true
        } else {
            false
        }
    }
}

/// Tracks which fields a struct has seen: a repeated field declines, like serde's derive.
struct Seen(u32);

impl Seen {
    fn mark(&mut self, bit: u32) -> R<()> {
        if self.0 & (1 << bit) != 0 {
            return Err(Decline);
        }
        self.0 |= 1 << bit;
        Ok(())
    }
}

fn need<T>(v: Option<T>) -> R<T> {
    v.ok_or(Decline)
}

fn day(r: &mut Reader) -> R<BusinessDay> {
    BusinessDay::parse(r.str()?).map_err(|_| Decline)
}

fn currency(r: &mut Reader) -> R<Currency> {
    Currency::parse(r.str()?).map_err(|_| Decline)
}

fn tax_lines(r: &mut Reader) -> R<Vec<TaxLine>> {
    let n = r.array_len()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (mut code, mut amount) = (None, None);
        let mut seen = Seen(0);
        for _ in 0..r.map_len()? {
            match r.raw_str()? {
                b"code" => {
                    seen.mark(0)?;
                    code = Some(TaxCode(r.cs()?));
                }
                b"amount" => {
                    seen.mark(1)?;
                    amount = Some(r.i64()?);
                }
                _ => return Err(Decline),
            }
        }
        out.push(TaxLine {
            code: need(code)?,
            amount: need(amount)?,
        });
    }
    Ok(out)
}

fn item_lines(r: &mut Reader) -> R<Vec<ItemLine>> {
    let n = r.array_len()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (mut sku, mut qty, mut price, mut discount, mut tax_code, mut taxes, mut restock) =
            (None, None, None, 0, None, Vec::new(), None);
        let mut seen = Seen(0);
        for _ in 0..r.map_len()? {
            match r.raw_str()? {
                b"sku" => {
                    seen.mark(0)?;
                    sku = Some(Sku(r.cs()?));
                }
                b"qty" => {
                    seen.mark(1)?;
                    qty = Some(r.i64()?);
                }
                b"unit_price" => {
                    seen.mark(2)?;
                    price = Some(r.i64()?);
                }
                b"discount" => {
                    seen.mark(3)?;
                    discount = r.i64()?;
                }
                b"tax_code" => {
                    seen.mark(4)?;
                    tax_code = Some(TaxCode(r.cs()?));
                }
                b"taxes" => {
                    seen.mark(5)?;
                    taxes = tax_lines(r)?;
                }
                b"restock" => {
                    seen.mark(6)?;
                    restock = if r.nil() { None } else { Some(r.bool()?) };
                }
                _ => return Err(Decline),
            }
        }
        out.push(ItemLine {
            sku: need(sku)?,
            qty: need(qty)?,
            unit_price: need(price)?,
            discount,
            tax_code: need(tax_code)?,
            taxes,
            restock,
        });
    }
    Ok(out)
}

/// One named field of a small map and how to read its value.
type Field<'k, V> = (&'k [u8], fn(&mut Reader) -> R<V>);

/// An array of two-field maps (`{k0: .., k1: ..}`), each field exactly once, built with `make`.
fn pairs<A, B, T>(
    r: &mut Reader,
    (k0, f0): Field<'_, A>,
    (k1, f1): Field<'_, B>,
    make: fn(A, B) -> T,
) -> R<Vec<T>> {
    let n = r.array_len()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (mut a, mut b) = (None, None);
        let mut seen = Seen(0);
        for _ in 0..r.map_len()? {
            let key = r.raw_str()?;
            if key == k0 {
                seen.mark(0)?;
                a = Some(f0(r)?);
            } else if key == k1 {
                seen.mark(1)?;
                b = Some(f1(r)?);
            } else {
                return Err(Decline);
            }
        }
        out.push(make(need(a)?, need(b)?));
    }
    Ok(out)
}

fn tenders(r: &mut Reader) -> R<Vec<Tender>> {
    pairs(
        r,
        (b"kind", |r| Ok(TenderKind(r.cs()?))),
        (b"amount", |r| r.i64()),
        |kind, amount| Tender { kind, amount },
    )
}

fn qty_lines(r: &mut Reader) -> R<Vec<QtyLine>> {
    pairs(
        r,
        (b"sku", |r| Ok(Sku(r.cs()?))),
        (b"qty", |r| r.i64()),
        |sku, qty| QtyLine { sku, qty },
    )
}

/// A sale or a return (same fields; `original_event_id` only on returns).
fn till(r: &mut Reader, returning: bool) -> R<Event> {
    let (mut loc, mut bday, mut cur, mut lines, mut tend, mut orig) =
        (None, None, None, None, None, None);
    let mut seen = Seen(0);
    for _ in 0..r.map_len()? {
        match r.raw_str()? {
            b"location" => {
                seen.mark(0)?;
                loc = Some(LocationId(r.cs()?));
            }
            b"business_day" => {
                seen.mark(1)?;
                bday = Some(day(r)?);
            }
            b"currency" => {
                seen.mark(2)?;
                cur = Some(currency(r)?);
            }
            b"lines" => {
                seen.mark(3)?;
                lines = Some(item_lines(r)?);
            }
            b"tenders" => {
                seen.mark(4)?;
                tend = Some(tenders(r)?);
            }
            b"original_event_id" if returning => {
                seen.mark(5)?;
                orig = if r.nil() {
                    None
                } else {
                    Some(EventId(r.cs()?))
                };
            }
            _ => return Err(Decline),
        }
    }
    let (location, business_day, currency, lines, tenders) = (
        need(loc)?,
        need(bday)?,
        need(cur)?,
        need(lines)?,
        need(tend)?,
    );
    Ok(if returning {
        Event::Return(Return {
            location,
            business_day,
            currency,
            lines,
            tenders,
            original_event_id: orig,
        })
    } else {
        Event::Sale(Sale {
            location,
            business_day,
            currency,
            lines,
            tenders,
        })
    })
}

fn opt_cs(r: &mut Reader) -> R<Option<CompactString>> {
    Ok(if r.nil() { None } else { Some(r.cs()?) })
}

/// The event map: exactly one entry, its key the kind. Kinds without a fast path decline.
fn event(r: &mut Reader) -> R<Event> {
    if r.map_len()? != 1 {
        return Err(Decline);
    }
    let kind = r.raw_str()?;
    match kind {
        b"sale" => till(r, false),
        b"return" => till(r, true),
        b"receipt" => receipt(r),
        b"order_placed" => order_placed(r),
        b"order_fulfilled" => order_fulfilled(r),
        b"order_cancelled" => order_cancelled(r),
        b"transfer_out" => transfer(r, true),
        b"transfer_in" => transfer(r, false),
        b"adjustment" | b"count" | b"safety_stock_set" => stock_fact(r, kind),
        // Master data, reservations and barriers are rare: serde handles them.
        _ => Err(Decline),
    }
}

/// `receipt`: location, lines and an optional reference.
#[inline]
fn receipt(r: &mut Reader) -> R<Event> {
    let (mut loc, mut lines, mut reference) = (None, None, None);
    let mut seen = Seen(0);
    for _ in 0..r.map_len()? {
        match r.raw_str()? {
            b"location" => {
                seen.mark(0)?;
                loc = Some(LocationId(r.cs()?));
            }
            b"lines" => {
                seen.mark(1)?;
                lines = Some(qty_lines(r)?);
            }
            b"reference" => {
                seen.mark(2)?;
                reference = opt_cs(r)?;
            }
            _ => return Err(Decline),
        }
    }
    Ok(Event::Receipt(Receipt {
        location: need(loc)?,
        lines: need(lines)?,
        reference,
    }))
}

/// `order_placed`: the order, its channel, an optional location and reservation, lines.
#[inline]
fn order_placed(r: &mut Reader) -> R<Event> {
    let (mut order, mut channel, mut loc, mut lines, mut resv) = (None, None, None, None, None);
    let mut seen = Seen(0);
    for _ in 0..r.map_len()? {
        match r.raw_str()? {
            b"order_id" => {
                seen.mark(0)?;
                order = Some(OrderId(r.cs()?));
            }
            b"channel" => {
                seen.mark(1)?;
                channel = Some(ChannelId(r.cs()?));
            }
            b"location" => {
                seen.mark(2)?;
                loc = opt_cs(r)?.map(LocationId);
            }
            b"lines" => {
                seen.mark(3)?;
                lines = Some(qty_lines(r)?);
            }
            b"reservation_id" => {
                seen.mark(4)?;
                resv = opt_cs(r)?.map(ReservationId);
            }
            _ => return Err(Decline),
        }
    }
    Ok(Event::OrderPlaced(OrderPlaced {
        order_id: need(order)?,
        channel: need(channel)?,
        location: loc,
        lines: need(lines)?,
        reservation_id: resv,
    }))
}

/// `order_fulfilled`: the order, the shipping location, lines.
#[inline]
fn order_fulfilled(r: &mut Reader) -> R<Event> {
    let (mut order, mut loc, mut lines) = (None, None, None);
    let mut seen = Seen(0);
    for _ in 0..r.map_len()? {
        match r.raw_str()? {
            b"order_id" => {
                seen.mark(0)?;
                order = Some(OrderId(r.cs()?));
            }
            b"location" => {
                seen.mark(1)?;
                loc = Some(LocationId(r.cs()?));
            }
            b"lines" => {
                seen.mark(2)?;
                lines = Some(qty_lines(r)?);
            }
            _ => return Err(Decline),
        }
    }
    Ok(Event::OrderFulfilled(OrderFulfilled {
        order_id: need(order)?,
        location: need(loc)?,
        lines: need(lines)?,
    }))
}

/// `order_cancelled`: the order and its lines (absent or nil: the whole order).
#[inline]
fn order_cancelled(r: &mut Reader) -> R<Event> {
    let (mut order, mut lines) = (None, None);
    let mut seen = Seen(0);
    for _ in 0..r.map_len()? {
        match r.raw_str()? {
            b"order_id" => {
                seen.mark(0)?;
                order = Some(OrderId(r.cs()?));
            }
            b"lines" => {
                seen.mark(1)?;
                lines = if r.nil() { None } else { Some(qty_lines(r)?) };
            }
            _ => return Err(Decline),
        }
    }
    Ok(Event::OrderCancelled(OrderCancelled {
        order_id: need(order)?,
        lines,
    }))
}

/// `transfer_out` (`out`) or `transfer_in`: the transfer, both locations, lines.
#[inline]
fn transfer(r: &mut Reader, out: bool) -> R<Event> {
    let (mut id, mut from, mut to, mut lines) = (None, None, None, None);
    let mut seen = Seen(0);
    for _ in 0..r.map_len()? {
        match r.raw_str()? {
            b"transfer_id" => {
                seen.mark(0)?;
                id = Some(TransferId(r.cs()?));
            }
            b"from" => {
                seen.mark(1)?;
                from = Some(LocationId(r.cs()?));
            }
            b"to" => {
                seen.mark(2)?;
                to = Some(LocationId(r.cs()?));
            }
            b"lines" => {
                seen.mark(3)?;
                lines = Some(qty_lines(r)?);
            }
            _ => return Err(Decline),
        }
    }
    let t = Transfer {
        transfer_id: need(id)?,
        from: need(from)?,
        to: need(to)?,
        lines: need(lines)?,
    };
    Ok(if out {
        Event::TransferOut(t)
    } else {
        Event::TransferIn(t)
    })
}

/// `adjustment`, `count` (its quantity is `counted`) or `safety_stock_set`: one sku at one
/// location.
#[inline]
fn stock_fact(r: &mut Reader, kind: &[u8]) -> R<Event> {
    let (mut loc, mut sku, mut qty, mut reason) = (None, None, None, None);
    let qty_key: &[u8] = if kind == b"count" { b"counted" } else { b"qty" };
    let mut seen = Seen(0);
    for _ in 0..r.map_len()? {
        let key = r.raw_str()?;
        if key == b"location" {
            seen.mark(0)?;
            loc = Some(LocationId(r.cs()?));
        } else if key == b"sku" {
            seen.mark(1)?;
            sku = Some(Sku(r.cs()?));
        } else if key == qty_key {
            seen.mark(2)?;
            qty = Some(r.i64()?);
        } else if key == b"reason" && kind == b"adjustment" {
            seen.mark(3)?;
            reason = Some(ReasonCode(r.cs()?));
        } else {
            return Err(Decline);
        }
    }
    let (location, sku, qty) = (need(loc)?, need(sku)?, need(qty)?);
    Ok(match kind {
        b"adjustment" => Event::Adjustment(Adjustment {
            location,
            sku,
            qty,
            reason: need(reason)?,
        }),
        b"count" => Event::Count(Count {
            location,
            sku,
            counted: qty,
        }),
        _ => Event::SafetyStockSet(SafetyStockSet { location, sku, qty }),
    })
}

/// Decodes a named-field MessagePack envelope, or declines.
pub fn decode_envelope(buf: &[u8]) -> Result<Envelope, Decline> {
    let mut r = Reader { b: buf, i: 0 };
    let (mut v, mut id, mut source, mut seq, mut at, mut trace, mut ev) =
        (None, None, None, None, None, None, None);
    let mut seen = Seen(0);
    for _ in 0..r.map_len()? {
        match r.raw_str()? {
            b"v" => {
                seen.mark(0)?;
                v = Some(u16::try_from(r.u64()?).map_err(|_| Decline)?);
            }
            b"id" => {
                seen.mark(1)?;
                id = Some(EventId(r.cs()?));
            }
            b"source" => {
                seen.mark(2)?;
                source = Some(SourceId(r.cs()?));
            }
            b"seq" => {
                seen.mark(3)?;
                seq = Some(r.u64()?);
            }
            b"occurred_at_ms" => {
                seen.mark(4)?;
                at = Some(r.i64()?);
            }
            b"trace" => {
                seen.mark(5)?;
                trace = opt_cs(&mut r)?;
            }
            b"event" => {
                seen.mark(6)?;
                ev = Some(event(&mut r)?);
            }
            _ => return Err(Decline),
        }
    }
    if r.i != buf.len() {
        // rmp_serde ignores trailing bytes; leave that judgement to it.
        return Err(Decline);
    }
    Ok(Envelope {
        v: need(v)?,
        id: need(id)?,
        source: need(source)?,
        seq: need(seq)?,
        occurred_at_ms: need(at)?,
        trace,
        event: need(ev)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::codec::encode_msgpack;

    fn serde(b: &[u8]) -> Option<Envelope> {
        rmp_serde::from_slice(b).ok()
    }

    #[test]
    fn corrupted_bytes_never_decode_differently() {
        let e = crate::domain::event::tests::sale(5);
        let good = encode_msgpack(&e).unwrap();
        let mut x: u64 = 7;
        for _ in 0..20_000 {
            let mut b = good.clone();
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let i = (x >> 33) as usize % b.len();
            b[i] = (x >> 20) as u8;
            if x % 5 == 0 {
                b.truncate(i);
            }
            if let Ok(f) = decode_envelope(&b) {
                assert_eq!(
                    Some(f),
                    serde(&b),
                    "fast path accepted what serde decodes otherwise"
                );
            }
        }
    }

    /// The envelope of a sale whose `lines` array header is replaced by `header`.
    fn sale_with_lines_header(header: &[u8]) -> Vec<u8> {
        let good = encode_msgpack(&crate::domain::event::tests::sale(5)).unwrap();
        let key = b"\xa5lines";
        let at = good
            .windows(key.len())
            .position(|w| w == key)
            .expect("a sale has lines")
            + key.len();
        let mut b = good[..at].to_vec();
        b.extend_from_slice(header);
        // What followed the original array header: the elements, now far fewer than claimed.
        let elems = match good[at] {
            0x90..=0x9f => at + 1,
            0xdc => at + 3,
            _ => at + 5,
        };
        b.extend_from_slice(&good[elems..]);
        b
    }

    #[test]
    fn a_length_prefix_alone_never_sizes_an_allocation() {
        // 2^32-1 lines claimed in a message of ~100 bytes: on bb9e878 this reserved
        // 2^32-1 `ItemLine`s and the allocator aborted the process.
        for header in [&b"\xdd\xff\xff\xff\xff"[..], b"\xdc\xff\xff"] {
            let b = sale_with_lines_header(header);
            assert!(decode_envelope(&b).is_err());
            assert!(serde(&b).is_none());
        }
        // Same for a map header claiming more entries than bytes left.
        let b = b"\xdf\xff\xff\xff\xff\xa1v\x01";
        assert!(decode_envelope(b).is_err());
        assert!(serde(b).is_none());
    }

    #[test]
    fn unknown_and_repeated_fields_decline() {
        let mut m = serde_json::to_value(crate::domain::event::tests::sale(1)).unwrap();
        m["bogus"] = serde_json::json!(1);
        let b = rmp_serde::to_vec_named(&m).unwrap();
        assert!(decode_envelope(&b).is_err());
        assert!(serde(&b).is_none());
    }
}
