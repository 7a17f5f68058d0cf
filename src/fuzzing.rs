//! Bodies of the cargo-fuzz targets in `fuzz/`, kept here so the fuzzer and the stable replay
//! test (below: every file in `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`) run
//! the same code. Each takes arbitrary bytes and panics only when a property breaks.

use crate::bus::pull::{self, Op};
use crate::domain::codec::{self, Format};
use crate::domain::event::Envelope;
use crate::domain::fastpack;
use crate::query::model::QueryRequest;
use crate::query::reserve::ReserveRequest;
use retailflow_core::aggregate::posting::PostingDoc;

/// A target's body: bytes in, a panic only when a property breaks.
pub type Body = fn(&[u8]);

/// Target name and body, for the replay test and `fuzz/`.
pub const TARGETS: [(&str, Body); 6] = [
    ("nats_protocol", nats_protocol),
    ("fastpack_vs_serde", fastpack_vs_serde),
    ("json_envelope", json_envelope),
    ("http_requests", http_requests),
    ("posting_document", posting_document),
    ("finance_record", finance_record),
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
        match op {
            Op::Msg(m) => {
                let _ = pull::status(m.headers);
                let _ = pull::ack_seq(m.reply);
                let _ = crate::ingest::reader::decode_raw(m);
                header_block(m.headers);
            }
            Op::Info(json) => info(json),
            _ => {}
        }
        at += used;
    }
    // The whole input as a header block and as a reply subject too.
    header_block(data);
    let _ = pull::status(data);
    let _ = pull::ack_seq(data);
}

/// An `INFO` keeps at most `MAX_CONNECT_URLS` cluster addresses, each a plain `host:port`, and
/// reconnecting to them tries every address once.
fn info(json: &[u8]) {
    let Ok(info) = pull::parse_info(json) else {
        return;
    };
    assert!(info.connect_urls.len() <= pull::MAX_CONNECT_URLS);
    for a in &info.connect_urls {
        assert!(pull::is_plain_address(a), "kept {a:?}");
    }
    let mut seeds = pull::Seeds::new("127.0.0.1:4222");
    seeds.remember_parts("127.0.0.1:4222", &info.connect_urls);
    let order = seeds.order();
    assert!(order.len() <= 1 + pull::MAX_CONNECT_URLS);
    for (i, a) in order.iter().enumerate() {
        assert!(order[..i].iter().all(|b| b.host_port != a.host_port));
    }
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

/// A record of the finance stream as every replica's reader takes it in (an answer recorded
/// twice counts once), a record of the audit stream (a re-drive taken in twice is listed
/// once), a dead letter as `dlq list` describes it (headers and payload were a producer's),
/// and the query strings of the reconciliation and dead-letter routes and document ids.
pub fn finance_record(data: &[u8]) {
    use crate::finance::books::{Answer, Books, Filter, parse_id};
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            let text = String::from_utf8_lossy(rest);
            let _ = crate::query::finance::filter(Some(&text));
            let _ = crate::query::dlq::filter(Some(&text));
            let _ = parse_id(&text);
            return;
        }
        2 => return audit_record(rest),
        3 => {
            // The header block up to the first blank line, the payload after it.
            let split = rest.windows(4).position(|w| w == b"\r\n\r\n");
            let (head, payload) = split.map_or((rest, &[][..]), |i| rest.split_at(i + 4));
            let headers = pull::header_map(head).unwrap_or_default();
            let l = crate::dlq::letters::letter(1, 0, headers, payload.to_vec().into());
            serde_json::to_vec(&l).expect("a letter encodes");
            return;
        }
        _ => {}
    }
    let Ok(a) = serde_json::from_slice::<Answer>(rest) else {
        return;
    };
    let endpoint = crate::config::ErpEndpointConfig {
        name: a.endpoint.clone(),
        ..Default::default()
    };
    let books = Books::new(&[endpoint], 4);
    books.answer(1, a.clone());
    let once = serde_json::to_value(books.list(&Filter::default())).expect("a listing encodes");
    books.answer(2, a.clone());
    let twice = serde_json::to_value(books.list(&Filter::default())).expect("a listing encodes");
    assert_eq!(once, twice, "an answer recorded twice was counted twice");
    let _ = serde_json::to_value(books.detail(&a.location, a.business_day));
    let _ = crate::query::finance::csv(&books.list(&Filter::default()));
}

fn audit_record(data: &[u8]) {
    use crate::finance::books::Books;
    let Ok(r) = serde_json::from_slice::<crate::dlq::audit::Redrive>(data) else {
        return;
    };
    let books = Books::new(&[], 4);
    books.redrive(1, r.clone());
    books.redrive(1, r.clone());
    let (Some(loc), Some(day)) = (r.location.as_deref(), r.business_day.as_deref()) else {
        return;
    };
    let Ok(day) = crate::domain::BusinessDay::parse(day) else {
        return;
    };
    assert_eq!(books.audit_seq(), 1);
    let _ = serde_json::to_vec(&books.detail(&crate::domain::LocationId::from(loc), day));
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
}
