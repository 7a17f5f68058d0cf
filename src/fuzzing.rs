//! Bodies of the cargo-fuzz targets in `fuzz/`, kept here so the fuzzer and the stable replay
//! test (below: every file in `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`) run
//! the same code. Each takes arbitrary bytes and panics only when a property breaks.

use crate::aggregate::posting::PostingDoc;
use crate::bus::pull::{self, Op};
use crate::domain::codec::{self, Format};
use crate::domain::event::Envelope;
use crate::domain::fastpack;
use crate::query::model::QueryRequest;
use crate::query::reserve::ReserveRequest;

/// A target's body: bytes in, a panic only when a property breaks.
pub type Body = fn(&[u8]);

/// Target name and body, for the replay test and `fuzz/`.
pub const TARGETS: [(&str, Body); 5] = [
    ("nats_protocol", nats_protocol),
    ("fastpack_vs_serde", fastpack_vs_serde),
    ("json_envelope", json_envelope),
    ("http_requests", http_requests),
    ("posting_document", posting_document),
];

/// The direct reader's parser over a buffer of operations, and what ingest does with each
/// message it yields (headers, position, decode, the dead letter's header map).
pub fn nats_protocol(data: &[u8]) {
    let mut at = 0;
    while at < data.len() {
        let Ok(Some((op, used))) = pull::parse(&data[at..]) else {
            break;
        };
        assert!(
            used > 0 && used <= data.len() - at,
            "parse used {used} bytes"
        );
        if let Op::Msg(m) = op {
            let _ = pull::status(m.headers);
            let _ = pull::ack_seq(m.reply);
            let _ = crate::ingest::reader::decode_raw(m);
            header_block(m.headers);
        }
        at += used;
    }
    // The whole input as a header block and as a reply subject too.
    header_block(data);
    let _ = pull::status(data);
    let _ = pull::ack_seq(data);
}

fn header_block(h: &[u8]) {
    let _ = pull::header(h, codec::CONTENT_TYPE);
    let Some(map) = pull::header_map(h) else {
        assert!(h.is_empty());
        return;
    };
    // Every kept line is one of the block's lines, byte for byte.
    for v in map.get_all(pull::H_INVALID_HEADER) {
        let line = unescape(v.as_str());
        assert!(
            h.split(|&b| b == b'\n')
                .any(|l| l.strip_suffix(b"\r").unwrap_or(l) == line.as_slice()),
            "escaped line {:?} is not in the block",
            v.as_str()
        );
    }
}

/// `%XX` back to bytes: the oracle for `pull::escape_header_line`.
fn unescape(v: &str) -> Vec<u8> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).expect("two hex digits after %");
            out.push(u8::from_str_radix(hex, 16).expect("two hex digits after %"));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// The MessagePack fast path never accepts what `rmp_serde` refuses, and never decodes
/// differently.
pub fn fastpack_vs_serde(data: &[u8]) {
    let fast = fastpack::decode_envelope(data);
    let serde = rmp_serde::from_slice::<Envelope>(data);
    if let Ok(f) = fast {
        match serde {
            Ok(s) => assert_eq!(f, s, "the fast path decodes differently"),
            Err(e) => panic!("the fast path accepted what serde refuses ({e}): {f:?}"),
        }
    }
    let _ = codec::decode_envelope(Format::MsgPack, data).map(|e| e.validate());
}

/// JSON envelope decode and validation as ingest calls them; a valid envelope survives the
/// trip through MessagePack (the producers' other encoding) unchanged.
pub fn json_envelope(data: &[u8]) {
    let Ok(env) = codec::decode_envelope(Format::Json, data) else {
        return;
    };
    if env.validate().is_err() {
        return;
    }
    let packed = codec::encode_msgpack(&env).expect("a decoded envelope encodes");
    let back = codec::decode_envelope(Format::MsgPack, &packed).expect("and decodes again");
    assert_eq!(back, env, "MessagePack round trip changed the envelope");
}

/// The HTTP API's request parsers: the first byte chooses availability by path and query
/// (the rest is `sku\nquery`), a query body, or a reservation body.
pub fn http_requests(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            // axum hands the handler a UTF-8 path segment and query string.
            let text = String::from_utf8_lossy(rest);
            let (sku, query) = text.split_once('\n').unwrap_or((&text, ""));
            if let Ok(req) = QueryRequest::from_availability(sku.to_string(), query) {
                assert_eq!(req.skus.len(), 1);
                let _ = req.check();
            }
        }
        1 => {
            if let Ok(req) = QueryRequest::from_body(rest) {
                let _ = req.check();
            }
        }
        _ => {
            let _ = ReserveRequest::from_body(rest);
        }
    }
}

/// The ERP-endpoint actor's decode of a document from RETAIL_POSTINGS; what decodes can be
/// sent (JSON) and survives re-encoding unchanged.
pub fn posting_document(data: &[u8]) {
    let Ok(doc) = codec::decode::<PostingDoc>(Format::MsgPack, data) else {
        return;
    };
    serde_json::to_vec(&doc).expect("a decoded document serialises to JSON");
    let packed = codec::encode_msgpack(&doc).expect("a decoded document encodes");
    let back: PostingDoc = codec::decode(Format::MsgPack, &packed).expect("and decodes again");
    assert_eq!(back, doc, "MessagePack round trip changed the document");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Replays the committed corpus and every crash found, on stable, in `cargo test`.
    #[test]
    fn fuzz_corpus_and_regressions_replay() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut total = 0;
        for (name, body) in TARGETS {
            let mut seen = 0;
            for dir in ["corpus", "regressions"] {
                let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                    continue;
                };
                for entry in entries {
                    let path = entry.expect("readable directory").path();
                    let data = std::fs::read(&path).expect("readable corpus file");
                    let outcome = std::panic::catch_unwind(|| body(&data));
                    assert!(outcome.is_ok(), "{name}: {} panicked", path.display());
                    seen += 1;
                }
            }
            assert!(seen > 0, "no corpus for {name}");
            total += seen;
        }
        assert!(total >= TARGETS.len());
    }

    /// Writes the seed corpus from real messages: `cargo test --release --lib
    /// write_fuzz_seeds -- --ignored`, then `cargo fuzz cmin` (see scripts/fuzz.sh).
    #[test]
    #[ignore = "writes fuzz/corpus; run by hand when the formats change"]
    fn write_fuzz_seeds() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let write = |target: &str, name: &str, data: &[u8]| {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
        };
        // Envelopes of every kind a scenario generates, as producers send them (both
        // encodings, poison included), and as the server frames them.
        let spec: crate::scenario::spec::Scenario = toml::from_str(
            r#"
            name = "seeds"
            [world]
            stores = 2
            dcs = 1
            skus = 8
            store_assortment = 6
            [load]
            events = 400
            [faults]
            poison = 10
            "#,
        )
        .unwrap();
        let world = std::sync::Arc::new(crate::scenario::world::World::build(&spec).unwrap());
        let mut g = crate::scenario::generate::Generator::new(&spec, world);
        let mut kinds = std::collections::HashSet::new();
        let mut frames = Vec::new();
        let mut n = 0;
        while let Some((out, env)) = g.next_message() {
            n += 1;
            let kind = env
                .as_ref()
                .map_or("poison".to_string(), |e| e.event.kind().to_string());
            let json = out
                .headers
                .get(codec::CONTENT_TYPE)
                .is_some_and(|v| v.as_str().starts_with(codec::JSON));
            if !kinds.insert((kind.clone(), json)) && n % 97 != 0 {
                continue;
            }
            let target = if json {
                "json_envelope"
            } else {
                "fastpack_vs_serde"
            };
            write(target, &format!("{kind}-{n}"), &out.payload);
            if let Some(e) = &env {
                let other = if json {
                    ("fastpack_vs_serde", codec::encode_msgpack(e).unwrap())
                } else {
                    ("json_envelope", serde_json::to_vec(e).unwrap())
                };
                write(other.0, &format!("{kind}-{n}-other"), &other.1);
            }
            let mut h = b"NATS/1.0\r\n".to_vec();
            for (name, values) in out.headers.iter() {
                for v in values {
                    h.extend_from_slice(format!("{name}: {v}\r\n").as_bytes());
                }
            }
            h.extend_from_slice(b"\r\n");
            let reply = format!("$JS.ACK.RETAIL_EVENTS.ingest.1.{n}.{n}.1764460800000000000.3");
            let mut f = format!(
                "HMSG {} 1 {reply} {} {}\r\n",
                out.subject,
                h.len(),
                h.len() + out.payload.len()
            )
            .into_bytes();
            f.extend_from_slice(&h);
            f.extend_from_slice(&out.payload);
            f.extend_from_slice(b"\r\n");
            frames.push(f);
        }
        let info = b"INFO {\"server_id\":\"x\",\"version\":\"2.14.6\",\"headers\":true,\"max_payload\":1048576}\r\n";
        let status = b"HMSG _INBOX.x 1 40 40\r\nNATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 12\r\n\r\n\r\nHMSG _INBOX.x 1 34 34\r\nNATS/1.0 100 Idle Heartbeat\r\n\r\n\r\n";
        for (i, chunk) in frames.chunks(8).take(12).enumerate() {
            let mut buf = info.to_vec();
            buf.extend_from_slice(b"PING\r\n+OK\r\n");
            for f in chunk {
                buf.extend_from_slice(f);
            }
            buf.extend_from_slice(status);
            write("nats_protocol", &format!("frames-{i}"), &buf);
        }
        let poisoned = b"HMSG retail.v1.pos.S1.S1.sale 1 $JS.ACK.RETAIL_EVENTS.c.1.9.9.1764460800000000000.0 32 36\r\nNATS/1.0\r\nX Y: 1\r\nA: x\ry\r\n\r\n\xdd\xff\xff\xff\r\nMSG a 1 5\r\nhello\r\n-ERR 'Authorization Violation'\r\n";
        write("nats_protocol", "poisoned-headers", poisoned);

        for (name, body) in [
            ("availability", &b"\x00SKU-1\nlocation=S1&location=DC1&channel=web&min_as_of=42"[..]),
            ("availability-bad", b"\x00SKU-1\nmin_as_of=x&bogus=1"),
            (
                "query",
                b"\x01{\"skus\":[\"SKU-1\",\"SKU-2\"],\"locations\":[\"S1\"],\"channel\":\"web\",\"min_as_of\":7}",
            ),
            (
                "reserve-location",
                b"\x02{\"sku\":\"SKU-1\",\"qty\":2,\"location\":\"S1\",\"ttl_seconds\":600,\"idempotency_key\":\"k1\",\"allow_partial\":true}",
            ),
            (
                "reserve-channel",
                b"\x02{\"sku\":\"SKU-1\",\"qty\":1,\"channel\":\"web\",\"idempotency_key\":\"order-17\"}",
            ),
        ] {
            write("http_requests", name, body);
        }

        use crate::aggregate::posting::{
            DocBody, Draft, Lineage, SalesLine, TaxSummaryLine, TenderLine,
        };
        use crate::apply::ledger::MovementLine;
        let bodies = [
            DocBody::SalesSummary(vec![SalesLine {
                sku: "SKU-1".into(),
                tax_code: "VAT20".into(),
                qty_sold: 3,
                qty_returned: 1,
                sales_amount: 1500,
                returns_amount: 500,
                discount_amount: 100,
                tax_amount: 180,
            }]),
            DocBody::TenderSummary(vec![TenderLine {
                tender: "card".into(),
                paid: 1080,
                refunded: 0,
                transactions: 2,
            }]),
            DocBody::TaxSummary(vec![TaxSummaryLine {
                code: "VAT20".into(),
                taxable_amount: 900,
                tax_amount: 180,
            }]),
            DocBody::InventoryMovements(vec![MovementLine {
                location: "DC1".into(),
                sku: "SKU-1".into(),
                reason: "receipt".into(),
                qty: 12,
            }]),
        ];
        for (i, body) in bodies.into_iter().enumerate() {
            let draft = Draft {
                location: "S1".into(),
                business_day: (i < 3)
                    .then(|| crate::domain::money::BusinessDay::parse("2026-11-27").unwrap()),
                currency: (i < 3).then(|| crate::domain::money::Currency::parse("EUR").unwrap()),
                part: 0,
                lineage: Lineage {
                    events: 4,
                    first_seq: 3,
                    last_seq: 9,
                },
                body,
            };
            for doc in PostingDoc::address(draft, "erp", 10) {
                let kind = doc.body.kind().as_str();
                write(
                    "posting_document",
                    kind,
                    &codec::encode_msgpack(&doc).unwrap(),
                );
            }
        }
    }
}
