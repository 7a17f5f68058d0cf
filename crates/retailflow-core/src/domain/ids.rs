//! Identifiers that travel in events and subjects.
//!
//! All of them are short strings kept inline (`CompactString` stores up to 24 bytes without
//! allocating), because the ingest path decodes millions of them per second.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest identifier accepted, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{field} is empty")]
    Empty { field: &'static str },
    #[error("{field} is {len} bytes long; at most {MAX_ID_LEN} are allowed")]
    TooLong { field: &'static str, len: usize },
    #[error(
        "{field} {value:?} contains {ch:?}; identifiers are printable ASCII without spaces, '.', '*' or '>' (they appear in NATS subjects)"
    )]
    BadChar {
        field: &'static str,
        value: String,
        ch: char,
    },
}

/// Checks that `value` can be used as one NATS subject token and as a map key.
pub fn check_token(field: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { field });
    }
    if value.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            field,
            len: value.len(),
        });
    }
    if let Some(ch) = value
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '.' | '*' | '>'))
    {
        return Err(IdError::BadChar {
            field,
            value: value.to_string(),
            ch,
        });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $field:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub CompactString);

        impl $name {
            pub fn new(value: impl Into<CompactString>) -> Self {
                Self(value.into())
            }
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
            /// Validates the identifier; see [`check_token`].
            pub fn check(&self) -> Result<(), IdError> {
                let check: fn(&'static str, &str) -> Result<(), IdError> = $check;
                check($field, self.0.as_str())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.0.as_str(), f)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(CompactString::from(value))
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                self.0.as_str()
            }
        }
    };
}

/// Free-form identifiers (event ids, source ids, order ids) only need to be non-empty and short;
/// they never appear as a subject token.
fn check_free(field: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { field });
    }
    if value.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            field,
            len: value.len(),
        });
    }
    Ok(())
}

string_id!(
    /// Stock keeping unit, e.g. `SKU-000123`.
    Sku,
    "sku",
    check_token
);
string_id!(
    /// A store, distribution centre or other stock-holding location, e.g. `S0042`, `DC1`.
    LocationId,
    "location",
    check_token
);
string_id!(
    /// A sales channel such as `web`, `marketplace`, `click-collect`.
    ChannelId,
    "channel",
    check_token
);
string_id!(
    /// The producer of an event, e.g. `pos/s0042/t03`; sequences are per source.
    SourceId,
    "source",
    check_free
);
string_id!(
    /// Unique per source; also the `Nats-Msg-Id` header.
    EventId,
    "event id",
    check_free
);
string_id!(
    /// An ecommerce order.
    OrderId,
    "order_id",
    check_free
);
string_id!(
    /// A stock transfer between two locations.
    TransferId,
    "transfer_id",
    check_free
);
string_id!(
    /// Tax code (the tax group of a line, e.g. `VAT20`) or tax component code.
    TaxCode,
    "tax code",
    check_token
);
string_id!(
    /// Tender kind: `cash`, `card`, `gift_card`, `voucher`, ...
    TenderKind,
    "tender",
    check_token
);
string_id!(
    /// Reason code of an adjustment: `damage`, `shrink`, `found`, ...
    ReasonCode,
    "reason",
    check_token
);
string_id!(
    /// A reservation made through the reservation API.
    ReservationId,
    "reservation_id",
    check_free
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_reject_subject_metacharacters() {
        assert!(Sku::from("SKU-1").check().is_ok());
        assert!(matches!(
            Sku::from("a.b").check(),
            Err(IdError::BadChar { ch: '.', .. })
        ));
        assert!(matches!(
            LocationId::from("S 1").check(),
            Err(IdError::BadChar { ch: ' ', .. })
        ));
        assert!(matches!(Sku::from("").check(), Err(IdError::Empty { .. })));
        let long = "x".repeat(65);
        assert!(matches!(
            Sku::from(long.as_str()).check(),
            Err(IdError::TooLong { len: 65, .. })
        ));
        // Free identifiers may hold dots and slashes.
        assert!(SourceId::from("pos/s0042/t03.a").check().is_ok());
    }
}
