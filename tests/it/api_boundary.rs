//! The HTTP API as a trust boundary, against a real pipeline and nats-server: bearer tokens
//! with scopes (and their reload), HTTPS, and the bounds a public port needs (body size,
//! header timeout).

use retailflow::config::Config;
use retailflow::domain::*;
use retailflow::supervise::pipeline::Pipeline;
use retailflow::testing::*;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::time::Duration;

const QUERY: &str = "q-0123456789abcdef-query";
const RESERVE: &str = "r-0123456789abcdef-reserve";
const ADMIN: &str = "a-0123456789abcdef-admin";
const METRICS: &str = "m-0123456789abcdef-metrics";

/// A pipeline holding 10 units of sku A at DC1 (channel web); `tweak` adjusts the config.
async fn started(
    tweak: impl FnOnce(&mut Config),
) -> (retailflow::bus::server::NatsServer, Pipeline) {
    let server = nats();
    let mut cfg = config(&server.url());
    tweak(&mut cfg);
    let pipeline = Pipeline::start(cfg).await.expect("pipeline starts");
    let js = async_nats::jetstream::new(client(&server.url()).await);
    let events = [
        Event::LocationUpsert(LocationUpsert {
            location: "DC1".into(),
            kind: LocationKind::Dc,
            channels: vec!["web".into()],
            priority: 1,
        }),
        receipt("DC1", "A", 10),
        receipt("DC1", "C", 10),
    ];
    for (i, e) in events.into_iter().enumerate() {
        publish(&js, &envelope("mdm/test", i as u64 + 1, e), false, true).await;
    }
    let end = last_seq(&js, "RETAIL_EVENTS").await;
    assert!(
        pipeline
            .shared
            .view
            .wait_all(end, Duration::from_secs(10))
            .await
    );
    (server, pipeline)
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut rb = http.request(method, url);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap_or_default())
}

fn reservation(key: &str) -> Value {
    json!({"sku": "A", "qty": 1, "location": "DC1", "idempotency_key": key})
}

fn write_tokens(path: &std::path::Path, lines: &str) {
    std::fs::write(path, lines).expect("tokens file written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_decide_who_may_query_reserve_and_scrape_and_a_reload_changes_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    write_tokens(
        &file,
        &format!(
            "# API tokens\n{QUERY} query\n\n{RESERVE} reserve\n{ADMIN} admin\n{METRICS} metrics\n"
        ),
    );
    let path = file.to_str().unwrap().to_string();
    let (_server, p) = started(|c| c.api.tokens_file = path).await;
    let base = format!("http://{}", p.http_addr().unwrap());
    let http = reqwest::Client::new();
    let avail = format!("{base}/v1/availability/A?location=DC1");
    let reserve = format!("{base}/v1/reservations");
    use reqwest::Method as M;

    // No token, or an unknown one: 401 with a challenge.
    let (s, h, _) = call(&http, M::GET, &avail, None, None).await;
    assert_eq!(s, 401);
    assert!(
        h.get("www-authenticate")
            .is_some_and(|v| v.to_str().unwrap().starts_with("Bearer"))
    );
    let (s, _, _) = call(&http, M::GET, &avail, Some("not-a-token-at-all-xx"), None).await;
    assert_eq!(s, 401);
    let (s, _, _) = call(&http, M::POST, &reserve, None, Some(reservation("k0"))).await;
    assert_eq!(s, 401);

    // query: availability yes, reservations no.
    let (s, _, body) = call(&http, M::GET, &avail, Some(QUERY), None).await;
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["locations"][0]["available"], 10);
    let (s, _, _) = call(
        &http,
        M::POST,
        &format!("{base}/v1/availability/query"),
        Some(QUERY),
        Some(json!({"skus": ["A"]})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _, _) = call(
        &http,
        M::POST,
        &reserve,
        Some(QUERY),
        Some(reservation("k1")),
    )
    .await;
    assert_eq!(s, 403);
    // Nothing was reserved by the refused request.
    let (_, _, body) = call(&http, M::GET, &avail, Some(QUERY), None).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["locations"][0]["available"],
        10
    );

    // reserve: reservations yes (create, get, release), availability no.
    let (s, _, body) = call(
        &http,
        M::POST,
        &reserve,
        Some(RESERVE),
        Some(reservation("k2")),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let (s, _, _) = call(&http, M::GET, &format!("{reserve}/k2"), Some(RESERVE), None).await;
    assert_eq!(s, 200);
    let (s, _, _) = call(
        &http,
        M::DELETE,
        &format!("{reserve}/k2"),
        Some(QUERY),
        None,
    )
    .await;
    assert_eq!(s, 403, "a query token cannot release");
    let (s, _, _) = call(
        &http,
        M::DELETE,
        &format!("{reserve}/k2"),
        Some(RESERVE),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (s, _, _) = call(&http, M::GET, &avail, Some(RESERVE), None).await;
    assert_eq!(s, 403);

    // admin: everything; metrics: /metrics only; /healthz open.
    let (s, _, _) = call(&http, M::GET, &avail, Some(ADMIN), None).await;
    assert_eq!(s, 200);
    let (s, _, _) = call(
        &http,
        M::POST,
        &reserve,
        Some(ADMIN),
        Some(reservation("k3")),
    )
    .await;
    assert_eq!(s, 201);
    for (token, want) in [
        (None, 401),
        (Some(QUERY), 403),
        (Some(METRICS), 200),
        (Some(ADMIN), 200),
    ] {
        let (s, _, _) = call(&http, M::GET, &format!("{base}/metrics"), token, None).await;
        assert_eq!(s, want, "/metrics with {token:?}");
    }
    let (s, _, metrics) = call(
        &http,
        M::GET,
        &format!("{base}/metrics"),
        Some(METRICS),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        metrics.contains("retailflow_auth_failures_total{kind=\"forbidden\"} 4"),
        "{metrics}"
    );
    assert!(!metrics.contains(QUERY), "a secret leaked into the metrics");
    let (s, _, _) = call(&http, M::GET, &format!("{base}/healthz"), None, None).await;
    assert_eq!(s, 200);

    // A reload: the new token works, the dropped one is refused.
    let fresh = "n-0123456789abcdef-fresh-query";
    write_tokens(&file, &format!("{fresh} query\n{ADMIN} admin\n"));
    assert_eq!(p.reload_tokens().expect("reloads"), 2);
    let (s, _, _) = call(&http, M::GET, &avail, Some(fresh), None).await;
    assert_eq!(s, 200);
    let (s, _, _) = call(&http, M::GET, &avail, Some(QUERY), None).await;
    assert_eq!(s, 401);
    // A bad file is refused, names its line without the secret, and keeps the tokens in force.
    write_tokens(&file, &format!("{fresh} query\n{QUERY} querry\n"));
    let e = p.reload_tokens().unwrap_err().to_string();
    assert!(e.contains("line 2") && !e.contains(QUERY), "{e}");
    let (s, _, _) = call(&http, M::GET, &avail, Some(fresh), None).await;
    assert_eq!(s, 200);
    assert_eq!(
        p.shared
            .metrics
            .token_reload_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    // SIGHUP does the same as reload_tokens (the pipeline installed the handler at start).
    let hup = "h-0123456789abcdef-after-hup";
    write_tokens(&file, &format!("{hup} query\n"));
    // SAFETY: kill(2) on our own pid with a signal whose handler the pipeline installed.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGHUP) }, 0);
    let ok = wait_until(Duration::from_secs(5), || {
        let http = http.clone();
        let avail = avail.clone();
        async move { call(&http, M::GET, &avail, Some(hup), None).await.0 == 200 }
    })
    .await;
    assert!(ok, "the token written before SIGHUP was taken");
    let (s, _, _) = call(&http, M::GET, &avail, Some(fresh), None).await;
    assert_eq!(s, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_tokens_file_stops_the_start_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    write_tokens(&file, &format!("{QUERY} query\n# fine\n{RESERVE}\n"));
    let server = nats();
    let mut cfg = config(&server.url());
    cfg.api.tokens_file = file.to_str().unwrap().into();
    let e = match Pipeline::start(cfg).await {
        Ok(_) => panic!("a malformed tokens file must stop the start"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("line 3"), "{e}");
    assert!(!e.contains(RESERVE), "the secret was echoed: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_gets_413_and_the_batch_query_still_fits() {
    let (_server, p) = started(|_| {}).await;
    let base = format!("http://{}", p.http_addr().unwrap());
    let http = reqwest::Client::new();
    // The largest batch the API takes: 100 skus x 100 locations, with long names.
    let skus: Vec<String> = (0..100).map(|i| format!("SKU-{i:0>40}")).collect();
    let locs: Vec<String> = (0..100).map(|i| format!("LOC-{i:0>40}")).collect();
    let batch = json!({"skus": skus, "locations": locs});
    let (s, _, body) = call(
        &http,
        reqwest::Method::POST,
        &format!("{base}/v1/availability/query"),
        None,
        Some(batch),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let big = "x".repeat(p.shared.config.api.max_body_bytes + 1);
    let (s, _, _) = call(
        &http,
        reqwest::Method::POST,
        &format!("{base}/v1/reservations"),
        None,
        Some(json!({"sku": big, "qty": 1, "location": "DC1", "idempotency_key": "x"})),
    )
    .await;
    assert_eq!(s, 413);
    assert_eq!(
        p.shared
            .metrics
            .http_body_too_large
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// Reads from `s` until EOF or error; returns what came and whether the peer closed.
fn read_until_closed(s: &mut std::net::TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
            Err(_) => return (got, false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_header_is_cut_after_the_header_timeout_and_a_silent_connection_after_idle() {
    let (_server, p) = started(|c| {
        c.api.header_timeout = Duration::from_millis(300);
        c.api.idle_timeout = Duration::from_millis(1500);
    })
    .await;
    let addr = p.http_addr().unwrap();
    let m = p.shared.metrics.clone();
    let closed = tokio::task::spawn_blocking(move || {
        // Half a request head, then nothing: the server must hang up on its own.
        let mut slow = std::net::TcpStream::connect(addr).unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .unwrap();
        let (_, slow_closed) = read_until_closed(&mut slow, Duration::from_secs(10));
        // A connection that sends nothing at all is closed too.
        let mut silent = std::net::TcpStream::connect(addr).unwrap();
        let (_, silent_closed) = read_until_closed(&mut silent, Duration::from_secs(10));
        // A whole request on a fresh connection is still answered.
        let mut ok = std::net::TcpStream::connect(addr).unwrap();
        ok.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let (answer, _) = read_until_closed(&mut ok, Duration::from_secs(10));
        (
            slow_closed,
            silent_closed,
            String::from_utf8_lossy(&answer).to_string(),
        )
    })
    .await
    .unwrap();
    assert!(closed.0, "half a header was not cut");
    assert!(closed.1, "a silent connection was not closed");
    assert!(closed.2.starts_with("HTTP/1.1 200"), "{}", closed.2);
    use std::sync::atomic::Ordering::Relaxed;
    assert!(
        m.http_header_timeouts.load(Relaxed) + m.http_idle_closed.load(Relaxed) >= 2,
        "the closes were counted"
    );
    assert!(m.http_header_timeouts.load(Relaxed) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_wait_for_a_free_one() {
    let (_server, p) = started(|c| {
        c.api.max_connections = 1;
        c.api.idle_timeout = Duration::from_secs(1);
    })
    .await;
    let addr = p.http_addr().unwrap();
    let m = p.shared.metrics.clone();
    let answered = tokio::task::spawn_blocking(move || {
        // The one slot is held by a connection that says nothing ...
        let _holder = std::net::TcpStream::connect(addr).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        // ... so the next is served only once the idle timeout frees it.
        let mut next = std::net::TcpStream::connect(addr).unwrap();
        next.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let (answer, _) = read_until_closed(&mut next, Duration::from_secs(10));
        String::from_utf8_lossy(&answer).to_string()
    })
    .await
    .unwrap();
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    use std::sync::atomic::Ordering::Relaxed;
    assert!(m.http_connection_limit_hits.load(Relaxed) >= 1);
    assert!(m.http_idle_closed.load(Relaxed) >= 1);
}

async fn position(http: &reqwest::Client, base: &str, sku: &str) -> Value {
    let (s, _, body) = call(
        http,
        reqwest::Method::GET,
        &format!("{base}/v1/availability/{sku}?location=DC1"),
        None,
        None,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["locations"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_reused_for_another_request_gets_409_and_reserves_nothing() {
    let (server, p) = started(|_| {}).await;
    let base = format!("http://{}", p.http_addr().unwrap());
    let http = reqwest::Client::new();
    let url = format!("{base}/v1/reservations");
    let body = |key: &str, sku: &str, qty: i64| json!({"sku": sku, "qty": qty, "location": "DC1", "idempotency_key": key, "ttl_seconds": 3});
    // Default TTL (15 min): outlives the test.
    let long = |key: &str, sku: &str| json!({"sku": sku, "qty": 1, "location": "DC1", "idempotency_key": key});
    use reqwest::Method as M;
    let (s, _, first) = call(&http, M::POST, &url, None, Some(body("K", "A", 1))).await;
    assert_eq!(s, 201, "{first}");
    let first: Value = serde_json::from_str(&first).unwrap();

    // The same key for another SKU (on another shard of 3), another qty: 409.
    assert_ne!(
        retailflow::view::shard_of("A", 3),
        retailflow::view::shard_of("C", 3)
    );
    for other in [body("K", "C", 1), body("K", "A", 2)] {
        let (s, _, answer) = call(&http, M::POST, &url, None, Some(other)).await;
        assert_eq!(s, 409, "{answer}");
        assert!(
            answer.contains("idempotency key reused with a different request"),
            "{answer}"
        );
    }
    // The same request again: the same answer.
    let (s, _, again) = call(&http, M::POST, &url, None, Some(body("K", "A", 1))).await;
    assert_eq!(s, 201);
    let again: Value = serde_json::from_str(&again).unwrap();
    for field in [
        "reservation_id",
        "sku",
        "decided_at",
        "allocations",
        "state",
    ] {
        assert_eq!(again[field], first[field], "{field}");
    }

    // Past the API's own check: a request already in the stream for another SKU under the
    // key (as another replica that had not seen the key would publish it) is refused by
    // ingest in stream order. Its decision is a conflict: nothing held on B.
    let nc = client(&server.url()).await;
    let js = async_nats::jetstream::new(nc.clone());
    let sneaky = Envelope {
        v: 1,
        id: EventId::from("api/other-replica/1"),
        source: SourceId::from("api/other-replica"),
        seq: 1,
        occurred_at_ms: 1_795_770_000_000,
        trace: None,
        event: Event::ReservationRequested(ReservationRequested {
            reservation_id: ReservationId::from("K"),
            sku: Sku::from("C"),
            qty: 1,
            target: Target::Location(LocationId::from("DC1")),
            expires_at_ms: i64::MAX / 2,
            allow_partial: false,
        }),
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "api/other-replica/1");
    let seq = publish_raw(
        &js,
        "retail.v1.api.DC1.reservation_requested",
        headers,
        retailflow::domain::codec::encode_msgpack(&sneaky).unwrap(),
    )
    .await;
    assert!(p.shared.view.wait_all(seq, Duration::from_secs(10)).await);

    // Two requests under one new key racing for two SKUs: one wins, one is told it reused.
    let (a, b) = tokio::join!(
        call(&http, M::POST, &url, None, Some(long("R", "A"))),
        call(&http, M::POST, &url, None, Some(long("R", "C"))),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [201, 409], "{a:?} {b:?}");
    let winner = if a.0 == 201 { "A" } else { "C" };

    // Over NATS the same refusal, with its code.
    let reply = nc
        .request(subject::ATP_RESERVE, body("K", "C", 1).to_string().into())
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(v["code"], 409, "{v}");

    let a_pos = position(&http, &base, "A").await;
    let b_pos = position(&http, &base, "C").await;
    let (want_a, want_b) = if winner == "A" { (2, 0) } else { (1, 1) };
    assert_eq!(a_pos["reserved"], want_a, "{a_pos}");
    assert_eq!(b_pos["reserved"], want_b, "{b_pos}");

    // The original under K still expires (ttl 3 s) and gives its unit back.
    let expired = wait_until(Duration::from_secs(15), || {
        let http = http.clone();
        let base = base.clone();
        async move { position(&http, &base, "A").await["reserved"] == want_a - 1 }
    })
    .await;
    assert!(
        expired,
        "the original reservation expired: A {} C {} winner {winner}",
        position(&http, &base, "A").await,
        position(&http, &base, "C").await
    );
    let (s, _, _) = call(&http, M::GET, &format!("{url}/K"), None, None).await;
    assert_eq!(s, 404, "K is no longer active");
    assert_eq!(position(&http, &base, "C").await["reserved"], want_b);
    assert!(
        p.shared
            .metrics
            .reservation_key_conflicts
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_pem = made.cert.pem();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    let (cert_path, key_path) = (
        cert.to_str().unwrap().to_string(),
        key.to_str().unwrap().to_string(),
    );
    let (_server, p) = started(|c| {
        c.api.tls_cert = cert_path;
        c.api.tls_key = key_path;
    })
    .await;
    let addr = p.http_addr().unwrap();
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .resolve("localhost", addr)
        .build()
        .unwrap();
    let (s, _, body) = call(
        &https,
        reqwest::Method::GET,
        &format!(
            "https://localhost:{}/v1/availability/A?location=DC1",
            addr.port()
        ),
        None,
        None,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["locations"][0]["available"],
        10
    );
    // Plain HTTP on the HTTPS port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await;
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "plain HTTP was served on the HTTPS port"
    );
    // A client that does not trust the certificate is refused by its own TLS stack.
    let untrusting = reqwest::Client::builder()
        .resolve("localhost", addr)
        .build()
        .unwrap();
    assert!(
        untrusting
            .get(format!("https://localhost:{}/healthz", addr.port()))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_configured_tls_stops_the_start() {
    let server = nats();
    let mut cfg = config(&server.url());
    cfg.api.tls_cert = "/nonexistent/cert.pem".into();
    let e = match Pipeline::start(cfg).await {
        Ok(_) => panic!("tls_cert without tls_key must stop the start"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("go together"), "{e}");
}

/// A full reservation queue answers 503 with a clear message instead of growing: NATS is
/// gone, so the publisher is stuck, one more request waits in the queue
/// (`reservations.max_queued = 1`) and the rest are turned away at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_reservation_queue_answers_503() {
    let (mut server, p) = started(|c| c.reservations.max_queued = 1).await;
    let url = format!("http://{}/v1/reservations", p.http_addr().unwrap());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    server.kill();
    let stuck = {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            call(
                &http,
                reqwest::Method::POST,
                &url,
                None,
                Some(reservation("first")),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answers = futures::future::join_all((0..20).map(|i| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let key = format!("k{i}");
            call(
                &http,
                reqwest::Method::POST,
                &url,
                None,
                Some(reservation(&key)),
            )
            .await
        }
    }))
    .await;
    let turned_away = answers
        .iter()
        .filter(|(s, _, body)| *s == 503 && body.contains("too many reservation requests queued"))
        .count();
    // The batcher may take a few requests before the publish it is stuck on times out; those
    // end in 503 too (not stored). None is granted, and most never got a slot.
    assert!(
        turned_away >= 10 && answers.iter().all(|(s, _, _)| *s == 503),
        "turned away at once: {turned_away}; {:?}",
        answers.iter().map(|(s, _, b)| (s, b)).collect::<Vec<_>>()
    );
    assert_eq!(
        p.shared
            .metrics
            .reservation_queue_full
            .load(std::sync::atomic::Ordering::Relaxed),
        turned_away as u64
    );
    stuck.abort();
}

/// With `reservations.max_keys` held, a new key is turned away with 503 before it reaches
/// the stream, a retry of a held key still gets its reservation, and the gauge and the
/// counter say so. Releasing frees nothing until the key is pruned, so the cap stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_key_beyond_max_keys_answers_503_and_a_held_key_still_answers() {
    let (_server, p) = started(|c| c.reservations.max_keys = 2).await;
    let url = format!("http://{}/v1/reservations", p.http_addr().unwrap());
    let http = reqwest::Client::new();
    let post = |key: &'static str| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            call(
                &http,
                reqwest::Method::POST,
                &url,
                None,
                Some(reservation(key)),
            )
            .await
        }
    };
    for key in ["one", "two"] {
        let (status, _, body) = post(key).await;
        assert_eq!(status, 201, "{key}: {body}");
    }
    let metrics = &p.shared.metrics;
    let keys = || {
        metrics
            .reservation_keys
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while keys() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(keys(), 2, "the gauge counts the keys ingest holds");
    let (status, _, body) = post("three").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("reservations.max_keys"), "{body}");
    let (status, _, body) = post("one").await;
    assert!(
        status == 200 || status == 201,
        "a held key's retry: {status} {body}"
    );
    assert_eq!(
        metrics
            .reservation_keys_full
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let a = position(&http, &format!("http://{}", p.http_addr().unwrap()), "A").await;
    assert_eq!(
        a["reserved"], 2,
        "two reservations, none for the refused key: {a}"
    );
}
