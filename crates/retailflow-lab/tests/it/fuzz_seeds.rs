//! Seeds for the fuzz corpus, written from generated messages (run by hand).

use retailflow::domain::codec;
use std::path::Path;

/// Writes the seed corpus from real messages: `cargo test --release -p retailflow-lab
/// --test it write_fuzz_seeds -- --ignored`, then `cargo fuzz cmin` (see scripts/fuzz.sh).
#[test]
#[ignore = "writes fuzz/corpus; run by hand when the formats change"]
fn write_fuzz_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
    };
    // Envelopes of every kind a scenario generates, as producers send them (both
    // encodings, poison included), and as the server frames them.
    let spec: retailflow_lab::spec::Scenario = toml::from_str(
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
    let world = std::sync::Arc::new(retailflow_lab::world::World::build(&spec).unwrap());
    let mut g = retailflow_lab::generate::Generator::new(&spec, world);
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

    use retailflow_core::aggregate::posting::{
        DocBody, Draft, Lineage, PostingDoc, SalesLine, TaxSummaryLine, TenderLine,
    };
    use retailflow_core::apply::ledger::MovementLine;
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
                .then(|| retailflow::domain::money::BusinessDay::parse("2026-11-27").unwrap()),
            currency: (i < 3).then(|| retailflow::domain::money::Currency::parse("EUR").unwrap()),
            part: 0,
            lineage: Lineage {
                events: 4,
                first_seq: 3,
                last_seq: 9,
            },
            body,
            final_doc: false,
            corrects: None,
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
