//! Wire formats. MessagePack with named fields is native; JSON is accepted when the message's
//! `Content-Type` header says `application/json`.

use super::event::Envelope;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub const CONTENT_TYPE: &str = "Content-Type";
pub const JSON: &str = "application/json";
pub const MSGPACK: &str = "application/msgpack";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    MsgPack,
    Json,
}

impl Format {
    /// Chooses the format from a `Content-Type` value; anything but JSON is MessagePack.
    pub fn from_content_type(value: Option<&str>) -> Format {
        match value {
            Some(v) if v.trim().to_ascii_lowercase().starts_with(JSON) => Format::Json,
            _ => Format::MsgPack,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("undecodable MessagePack: {0}")]
    MsgPack(#[from] rmp_serde::decode::Error),
    #[error("undecodable JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot encode: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

pub fn decode<T: DeserializeOwned>(format: Format, payload: &[u8]) -> Result<T, CodecError> {
    Ok(match format {
        Format::MsgPack => rmp_serde::from_slice(payload)?,
        Format::Json => serde_json::from_slice(payload)?,
    })
}

/// Decodes an envelope. MessagePack goes through [`super::fastpack`] first; whatever it
/// declines is decoded by `rmp_serde`, which has the last word.
pub fn decode_envelope(format: Format, payload: &[u8]) -> Result<Envelope, CodecError> {
    if format == Format::MsgPack {
        if let Ok(e) = super::fastpack::decode_envelope(payload) {
            return Ok(e);
        }
    }
    decode(format, payload)
}

/// MessagePack with field names, so producers in any language can read and write it.
pub fn encode_msgpack<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(rmp_serde::to_vec_named(value)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::tests::sale;

    #[test]
    fn msgpack_and_json_decode_to_the_same_envelope() {
        let e = sale(9);
        let mp = encode_msgpack(&e).unwrap();
        let js = serde_json::to_vec(&e).unwrap();
        assert_eq!(decode_envelope(Format::MsgPack, &mp).unwrap(), e);
        assert_eq!(decode_envelope(Format::Json, &js).unwrap(), e);
    }

    #[test]
    fn content_type_selects_json() {
        assert_eq!(
            Format::from_content_type(Some("application/json; charset=utf-8")),
            Format::Json
        );
        assert_eq!(
            Format::from_content_type(Some("Application/JSON")),
            Format::Json
        );
        assert_eq!(Format::from_content_type(None), Format::MsgPack);
        assert_eq!(Format::from_content_type(Some(MSGPACK)), Format::MsgPack);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_envelope(Format::MsgPack, b"\xc1\xff\x00").is_err());
        assert!(decode_envelope(Format::Json, b"{\"v\":1").is_err());
        assert!(decode_envelope(Format::Json, b"{\"v\":1,\"bogus\":2}").is_err());
    }
}
