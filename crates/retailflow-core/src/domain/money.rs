//! Money and calendar values. Amounts are `i64` minor units (cents, pence, yen) next to an ISO
//! 4217 currency; there is no floating point anywhere in the books.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Largest absolute amount accepted on one line or tender, in minor units (10^13: a hundred
/// billion in a two-decimal currency). Keeps every per-event product and sum far from `i64`
/// overflow, so only aggregates can overflow, and those are checked.
pub const MAX_AMOUNT: i64 = 10_000_000_000_000;
/// Largest absolute quantity accepted on one line.
pub const MAX_QTY: i64 = 1_000_000_000;

/// ISO 4217 alphabetic code, three upper-case ASCII letters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(code: &str) -> Result<Self, String> {
        let bytes = code.as_bytes();
        if bytes.len() == 3 && bytes.iter().all(|b| b.is_ascii_uppercase()) {
            Ok(Currency([bytes[0], bytes[1], bytes[2]]))
        } else {
            Err(format!(
                "currency {code:?} is not an ISO 4217 code (three upper-case letters)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Currency::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A retail business day (the trading date the till reports), kept as days since 1970-01-01
/// and written as `YYYY-MM-DD`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BusinessDay(i32);

impl BusinessDay {
    pub fn from_days(days: i32) -> Self {
        BusinessDay(days)
    }

    pub fn days(self) -> i32 {
        self.0
    }

    pub fn from_ymd(y: i32, m: u32, d: u32) -> Result<Self, String> {
        if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
            return Err(format!("{y:04}-{m:02}-{d:02} is not a calendar date"));
        }
        Ok(BusinessDay(days_from_civil(y, m, d)))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let b = text.as_bytes();
        let digits = |r: std::ops::Range<usize>| -> Option<u32> {
            let mut v = 0u32;
            for &c in &b[r] {
                if !c.is_ascii_digit() {
                    return None;
                }
                v = v * 10 + u32::from(c - b'0');
            }
            Some(v)
        };
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(format!("business_day {text:?} is not YYYY-MM-DD"));
        }
        match (digits(0..4), digits(5..7), digits(8..10)) {
            (Some(y), Some(m), Some(d)) => BusinessDay::from_ymd(y as i32, m, d),
            _ => Err(format!("business_day {text:?} is not YYYY-MM-DD")),
        }
    }

    pub fn ymd(self) -> (i32, u32, u32) {
        civil_from_days(self.0)
    }
}

impl fmt::Display for BusinessDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl fmt::Debug for BusinessDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for BusinessDay {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BusinessDay {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        BusinessDay::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn is_leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

// Proleptic Gregorian conversions after H. Hinnant's public-domain date algorithms.
fn days_from_civil(y: i32, m: u32, d: u32) -> i32 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = (y - era * 400) as u32;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe as i32 - 719_468
}

fn civil_from_days(z: i32) -> (i32, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = (z - era * 146_097) as u32;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe as i32 + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn business_day_round_trips_through_text() {
        for text in [
            "1970-01-01",
            "2000-02-29",
            "2026-11-27",
            "1969-12-31",
            "2100-03-01",
        ] {
            assert_eq!(BusinessDay::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(BusinessDay::parse("1970-01-02").unwrap().days(), 1);
        assert_eq!(BusinessDay::parse("1969-12-31").unwrap().days(), -1);
        // 2026-11-27 is 20,784 days after the epoch (counted independently: 56 years of
        // 365 days plus 14 leap days gives 20,454 days to 2026-01-01, plus 330 days).
        assert_eq!(BusinessDay::parse("2026-11-27").unwrap().days(), 20_784);
    }

    #[test]
    fn business_day_rejects_non_dates() {
        for text in [
            "2026-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-1-01",
            "26-11-27",
            "abcd-ef-gh",
        ] {
            assert!(BusinessDay::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn every_day_of_four_centuries_round_trips() {
        let start = BusinessDay::parse("1900-01-01").unwrap().days();
        let end = BusinessDay::parse("2300-01-01").unwrap().days();
        for days in start..end {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn currency_is_three_upper_case_letters() {
        assert_eq!(Currency::parse("EUR").unwrap().as_str(), "EUR");
        assert!(Currency::parse("eur").is_err());
        assert!(Currency::parse("EURO").is_err());
        let json = serde_json::to_string(&Currency::parse("USD").unwrap()).unwrap();
        assert_eq!(json, "\"USD\"");
    }
}
