//! The parser on hand-made frames and hostile input.

use super::*;
use crate::proto::MAX_LINE;

fn one(buf: &[u8]) -> (Op<'_>, usize) {
    parse(buf).expect("valid").expect("complete")
}

#[test]
fn hmsg_with_reply_and_headers() {
    let frame = b"HMSG retail.v1.pos.S1.sale 7 $JS.ACK.E.c.1.42.42.0.3 18 23\r\nNATS/1.0\r\nA: b\r\n\r\nhello\r\nPING\r\n";
    let (op, used) = one(frame);
    assert_eq!(
        op,
        Op::Msg(Raw {
            subject: b"retail.v1.pos.S1.sale",
            sid: 7,
            reply: b"$JS.ACK.E.c.1.42.42.0.3",
            headers: b"NATS/1.0\r\nA: b\r\n\r\n",
            payload: b"hello",
        })
    );
    assert_eq!(&frame[used..], b"PING\r\n");
    assert_eq!(one(&frame[used..]), (Op::Ping, 6));
}

#[test]
fn msg_without_reply_or_headers() {
    let (op, used) = one(b"MSG a.b 3 2\r\nhi\r\n");
    assert_eq!(
        op,
        Op::Msg(Raw {
            subject: b"a.b",
            sid: 3,
            reply: b"",
            headers: b"",
            payload: b"hi",
        })
    );
    assert_eq!(used, 17);
    // An empty payload with a reply subject.
    let (op, _) = one(b"MSG a.b 3 r.s 0\r\n\r\n");
    assert!(matches!(
        op,
        Op::Msg(Raw {
            reply: b"r.s",
            payload: b"",
            ..
        })
    ));
}

#[test]
fn a_frame_cut_anywhere_is_incomplete_until_it_is_whole() {
    let frame = b"HMSG s 1 r 12 17\r\nNATS/1.0\r\n\r\nabcde\r\n";
    for cut in 0..frame.len() {
        assert!(
            parse(&frame[..cut]).expect("no error").is_none(),
            "cut {cut}"
        );
    }
    assert_eq!(one(frame).1, frame.len());
}

#[test]
fn control_lines() {
    assert_eq!(one(b"PONG\r\n").0, Op::Pong);
    assert_eq!(one(b"+OK\r\n").0, Op::Ok);
    assert_eq!(
        one(b"-ERR 'Authorization Violation'\r\n").0,
        Op::Err(b"'Authorization Violation'")
    );
    assert_eq!(
        one(b"INFO {\"headers\":true}\r\n").0,
        Op::Info(b"{\"headers\":true}")
    );
}

#[test]
fn broken_frames_are_errors_not_guesses() {
    for bad in [
        &b"HELLO\r\n"[..],
        b"MSG a\r\n",
        b"MSG a x 2\r\nhi\r\n",
        b"HMSG a 1 10 5\r\n",
        b"MSG a 1 b c d 2\r\n",
        b"MSG a 1 2\r\nhiXY",
    ] {
        assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
    let endless = vec![b'x'; MAX_LINE + 1];
    assert!(parse(&endless).is_err());
}

#[test]
fn a_size_beyond_any_message_is_a_protocol_error() {
    // On bb9e878 the first panicked: `after + total` overflowed (slice index panic).
    for line in [
        &b"MSG a 1 18446744073709551614\r\n"[..],
        b"MSG a 1 18446744073709551615\r\n",
        b"HMSG a 1 10 18446744073709551614\r\n",
        b"HMSG a 1 r 18446744073709551610 18446744073709551614\r\n",
        // Far beyond what a message may be: no buffer is grown to it.
        b"MSG a 1 67108865\r\n",
        b"HMSG a 1 12 4294967296\r\n",
    ] {
        assert!(
            matches!(parse(line), Err(PullError::Protocol(_))),
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
    // The largest size allowed is merely incomplete.
    assert!(matches!(parse(b"MSG a 1 67108864\r\n"), Ok(None)));
}

#[test]
fn status_lines() {
    assert_eq!(status(b"NATS/1.0\r\nA: b\r\n\r\n"), None);
    assert_eq!(status(b""), None);
    assert_eq!(
        status(b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 12\r\n\r\n"),
        Some((408, &b"Request Timeout"[..]))
    );
    assert_eq!(
        status(b"NATS/1.0 100 Idle Heartbeat\r\n\r\n"),
        Some((100, &b"Idle Heartbeat"[..]))
    );
    assert_eq!(status(b"NATS/1.0 503\r\n\r\n"), Some((503, &b""[..])));
}

#[test]
fn two_headers_in_one_pass_match_one_at_a_time() {
    let block = b"NATS/1.0\r\ncontent-type: application/json\r\nX: 1\r\nRetailflow-Redrive-Of: 42\r\nx: 2\r\n\r\n";
    for (a, b) in [
        ("Content-Type", "retailflow-redrive-of"),
        ("x", "X"),
        ("none", "x"),
    ] {
        assert_eq!(headers2(block, a, b), (header(block, a), header(block, b)));
    }
}

#[test]
fn headers_by_name_in_any_case() {
    let h = b"NATS/1.0\r\nNats-Msg-Id: pos/1#2\r\ncontent-type:  application/json \r\n\r\n";
    assert_eq!(header(h, "Content-Type"), Some(&b"application/json"[..]));
    assert_eq!(header(h, "nats-msg-id"), Some(&b"pos/1#2"[..]));
    assert_eq!(header(h, "Missing"), None);
    let map = header_map(h).expect("headers");
    assert_eq!(map.get("Nats-Msg-Id").map(|v| v.as_str()), Some("pos/1#2"));
    assert_eq!(header_map(b""), None);
}

/// The inverse of `escape_header_line`, written separately as the test's oracle.
fn unescape(v: &str) -> Vec<u8> {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn headers_async_nats_refuses_are_kept_escaped_not_a_panic() {
    // On bb9e878 the first panicked in async-nats (header.rs:455, a name with a space)
    // and the second at header.rs:397 (a value with a bare CR).
    let bad_lines: [&[u8]; 6] = [
        b"X Y: 1",
        b"A: x\ry",
        b"B\x01: v",
        b"N\xc3\xa9: v",
        b"V: \xff\xfe",
        b"no colon at all",
    ];
    for bad in bad_lines {
        let mut h = b"NATS/1.0\r\nNats-Msg-Id: m1\r\n".to_vec();
        h.extend_from_slice(bad);
        h.extend_from_slice(b"\r\nGood: yes\r\n\r\n");
        let map = header_map(&h).expect("headers");
        assert_eq!(map.get("Nats-Msg-Id").map(|v| v.as_str()), Some("m1"));
        assert_eq!(map.get("Good").map(|v| v.as_str()), Some("yes"));
        // Spelled out, not the constant, so this test also runs on bb9e878.
        let kept: Vec<_> = map
            .get_all("Retailflow-Invalid-Header")
            .map(|v| unescape(v.as_str()))
            .collect();
        assert_eq!(
            kept,
            vec![bad.to_vec()],
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn escaped_header_lines_are_printable_and_reversible() {
    assert_eq!(escape_header_line(b"50% \r\n").as_str(), "50%25 %0D%0A");
    let all: Vec<u8> = (0..=255).collect();
    let v = escape_header_line(&all);
    assert!(v.as_str().bytes().all(|b| (b' '..=b'~').contains(&b)));
    assert_eq!(unescape(v.as_str()), all);
    assert_eq!(H_INVALID_HEADER, "Retailflow-Invalid-Header");
}

#[test]
fn addresses_from_the_url_forms_async_nats_takes() {
    let at = |host_port: &str, tls: bool| Address {
        host_port: host_port.into(),
        tls,
    };
    assert_eq!(
        addresses("127.0.0.1:4222"),
        vec![at("127.0.0.1:4222", false)]
    );
    assert_eq!(
        addresses("nats://u:p@h1, tls://h2:7422,localhost,nats://s3cret@h4:4333/,[::1]"),
        vec![
            at("h1:4222", false),
            at("h2:7422", true),
            at("localhost:4222", false),
            at("h4:4333", false),
            at("[::1]:4222", false),
        ]
    );
    assert!(addresses(" , ").is_empty());
}

#[test]
fn the_sequence_and_pending_count_come_from_either_reply_form() {
    assert_eq!(
        ack_seq(b"$JS.ACK.RETAIL_EVENTS.c1.1.4711.4700.1764460800000000000.289"),
        Some((4711, 289))
    );
    // Domain and account hash before the stream, and a trailing token after pending.
    assert_eq!(
        ack_seq(b"$JS.ACK.hub.ACCHASH.RETAIL_EVENTS.c1.2.18.17.1764460800000000000.0.xyz"),
        Some((18, 0))
    );
    assert_eq!(
        ack_seq(b"$JS.ACK.hub.ACCHASH.RETAIL_EVENTS.c1.2.18.17.1764460800000000000.5"),
        Some((18, 5))
    );
}

#[test]
fn anything_else_is_no_position() {
    for bad in [
        "",
        "_INBOX.abc",
        "$JS.ACK.S.c.1.2.3.4",
        "$JS.ACK.S.c.1.x2.3.4.5",
        "$JS.ACK.S.c.1..3.4.5",
        "$JS.ACK.S.c.1.2.3.4.-5",
        "$JS.ACK.S.c.1.99999999999999999999.3.4.5",
        "$JS.ACK.S.c.1.2.3.4.5.6",
    ] {
        assert_eq!(ack_seq(bad.as_bytes()), None, "{bad}");
    }
}

#[test]
fn info_names_the_cluster_and_lame_duck_mode() {
    let json = br#"{"server_id":"NA","server_name":"n1","version":"2.14.6","proto":1,"headers":true,"max_payload":1048576,"jetstream":true,"cluster":"retailflow","connect_urls":["127.0.0.1:4331","127.0.0.1:4332","[::1]:4333"],"ldm":true,"connect_info":true}"#;
    let info = parse_info(json).expect("parses");
    assert!(info.headers && info.ldm && !info.tls_required);
    assert_eq!(info.version, "2.14.6");
    assert_eq!(
        info.connect_urls,
        vec!["127.0.0.1:4331", "127.0.0.1:4332", "[::1]:4333"]
    );
    // A single server omits the list; null counts as none.
    let plain = parse_info(br#"{"headers":true}"#).expect("parses");
    assert!(plain.connect_urls.is_empty() && !plain.ldm);
    let null = parse_info(br#"{"connect_urls":null}"#).expect("parses");
    assert!(null.connect_urls.is_empty());
}

#[test]
fn hostile_connect_urls_are_skipped_not_kept() {
    let long = format!("{}:4222", "a".repeat(MAX_ADDRESS_LEN));
    let json = serde_json::json!({
        "headers": true,
        "connect_urls": [
            "ok.example:4222",
            long,
            "h:0",
            "h:65536",
            "h:12x",
            "nats://h:4222",
            "user:pw@h:4222",
            "a,b:4222",
            "h 1:4222",
            ":4222",
            "h:",
            "[]:4222",
            "[::1:4222",
            "h\u{0}:4222",
            "caf\u{e9}:4222",
            42,
            true,
            null,
            ["nested:4222"],
            {"host": "x:4222"},
            "ok.example:4222",
            "10.0.0.2:4222",
            "[fe80::1%eth0]:4222",
        ],
    });
    let info = parse_info(json.to_string().as_bytes()).expect("parses");
    assert_eq!(
        info.connect_urls,
        vec!["ok.example:4222", "10.0.0.2:4222", "[fe80::1%eth0]:4222"]
    );
}

#[test]
fn an_oversized_connect_urls_list_keeps_only_the_first_ones() {
    let many: Vec<String> = (0..10_000)
        .map(|i| format!("10.0.{}.{}:4222", i / 250, i % 250))
        .collect();
    let json = serde_json::json!({ "connect_urls": many, "ldm": true });
    let info = parse_info(json.to_string().as_bytes()).expect("parses");
    assert_eq!(info.connect_urls.len(), MAX_CONNECT_URLS);
    assert_eq!(info.connect_urls[0], "10.0.0.0:4222");
    // The fields after the list are still read.
    assert!(info.ldm);
    // Wrong types elsewhere are an error, not a panic.
    assert!(parse_info(br#"{"connect_urls":"h:1"}"#).is_err());
    assert!(parse_info(br#"{"ldm":"yes"}"#).is_err());
    assert!(parse_info(b"{").is_err());
}

#[test]
fn reconnects_start_after_the_address_that_failed_and_try_each_once() {
    let mut seeds = Seeds::new("127.0.0.1:1, nats://u:p@127.0.0.1:4331,127.0.0.1:4332");
    let order = |s: &Seeds| -> Vec<String> { s.order().into_iter().map(|a| a.host_port).collect() };
    assert_eq!(
        order(&seeds),
        vec!["127.0.0.1:1", "127.0.0.1:4331", "127.0.0.1:4332"]
    );
    let cluster: Vec<String> = ["127.0.0.1:4331", "127.0.0.1:4332", "127.0.0.1:4333"]
        .map(String::from)
        .to_vec();
    seeds.remember_parts("127.0.0.1:4331", &cluster);
    assert_eq!(
        order(&seeds),
        vec![
            "127.0.0.1:4332",
            "127.0.0.1:4333",
            "127.0.0.1:1",
            "127.0.0.1:4331"
        ]
    );
    // A server that knows no peers yet does not make the reader forget them.
    seeds.remember_parts("127.0.0.1:4333", &[]);
    assert_eq!(seeds.learned(), &cluster[..]);
    assert_eq!(
        order(&seeds),
        vec![
            "127.0.0.1:1",
            "127.0.0.1:4331",
            "127.0.0.1:4332",
            "127.0.0.1:4333"
        ]
    );
}
