//! The server's `INFO`: what it needs from us (TLS, headers) and what it knows about its
//! cluster (`connect_urls`, lame duck mode).
//!
//! The server sends an `INFO` first, again after `CONNECT` (2.12+), and whenever the cluster
//! changes: a route to a new member comes up, the last route to one goes down, or this server
//! enters lame duck mode. Every one of them is parsed here, and every byte is treated as
//! hostile: the line is already bounded by the parser (`MAX_LINE`), and of `connect_urls` at
//! most [`MAX_CONNECT_URLS`] addresses are kept, each checked to be a plain `host:port` no
//! longer than [`MAX_ADDRESS_LEN`]. Anything else in that list is skipped without being copied.

use crate::PullError;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// Most cluster addresses kept from one `INFO`. A larger cluster is still reached through the
/// first of them; no `INFO` can make the reader hold more.
pub const MAX_CONNECT_URLS: usize = 64;

/// Longest address kept: a DNS name of 253 characters, or a bracketed IPv6 address with a
/// zone, plus `:` and a port.
pub const MAX_ADDRESS_LEN: usize = 260;

/// What an `INFO` says that matters to this reader.
#[derive(serde::Deserialize, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct Info {
    pub tls_required: bool,
    pub headers: bool,
    pub version: String,
    /// Client addresses of the cluster's members (this server's first), `host:port` without
    /// a scheme, as the server announces them; only the valid ones, at most
    /// [`MAX_CONNECT_URLS`].
    #[serde(deserialize_with = "bounded_addresses")]
    pub connect_urls: Vec<String>,
    /// The server is shutting down gracefully and will close its clients soon.
    pub ldm: bool,
}

/// Parses the JSON of an `INFO` line.
pub fn parse_info(json: &[u8]) -> Result<Info, PullError> {
    serde_json::from_slice(json).map_err(|e| PullError::Protocol(format!("INFO: {e}")))
}

/// Whether `s` is an address the reader may connect to: `host:port`, the host a name or IPv4
/// address (letters, digits, `.`, `-`, `_`) or a bracketed IPv6 address (with a zone such as
/// `%eth0`), the port 1..=65535.
/// No scheme, no credentials, no separators that would change a list it is joined into.
pub fn is_plain_address(s: &str) -> bool {
    if s.is_empty() || s.len() > MAX_ADDRESS_LEN {
        return false;
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let port_ok = !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p > 0);
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => {
            !v6.is_empty()
                && v6
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'%'))
        }
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        }
    };
    port_ok && host_ok
}

/// `connect_urls` read element by element: valid addresses are kept up to the limit, the
/// rest (too many, too long, not a string at all) is skipped without an allocation of its
/// own. `null` counts as an empty list.
fn bounded_addresses<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct List;
    impl<'de> Visitor<'de> for List {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of addresses")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Vec<String>, E> {
            Ok(Vec::new())
        }
        fn visit_none<E: de::Error>(self) -> Result<Vec<String>, E> {
            Ok(Vec::new())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut kept: Vec<String> = Vec::new();
            while kept.len() < MAX_CONNECT_URLS {
                match seq.next_element::<Candidate>()? {
                    Some(Candidate(Some(address))) => {
                        if !kept.contains(&address) {
                            kept.push(address);
                        }
                    }
                    Some(Candidate(None)) => {}
                    None => return Ok(kept),
                }
            }
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(kept)
        }
    }
    d.deserialize_any(List)
}

/// One element of `connect_urls`: the address if it is a string and a plain address.
struct Candidate(Option<String>);

impl<'de> serde::Deserialize<'de> for Candidate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Candidate, D::Error> {
        struct One;
        impl<'de> Visitor<'de> for One {
            type Value = Candidate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Candidate, E> {
                Ok(Candidate(is_plain_address(s).then(|| s.to_string())))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Candidate, E> {
                Ok(Candidate(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Candidate, E> {
                Ok(Candidate(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Candidate, E> {
                Ok(Candidate(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Candidate, E> {
                Ok(Candidate(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Candidate, E> {
                Ok(Candidate(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Candidate, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Candidate(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Candidate, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Candidate(None))
            }
        }
        d.deserialize_any(One)
    }
}
