//! PostgreSQL interface tables as an ERP endpoint, against the machine's real PostgreSQL (a
//! database of its own per test) and a private nats-server: documents land as header and
//! lines whose totals are the tills', a document is written once however often it is
//! delivered, the import job's statuses are read back once, and a database that cannot be
//! reached pauses the endpoint instead of dead-lettering.

use crate::pgdb::TestDb;
use retailflow::config::{ErpEndpointConfig, ErpKind};
use retailflow::post::delivery::Outcome;
use retailflow::post::postgres::PgSink;
use retailflow::post::postgres::status::{Import, ImportStatus, StatusPoller, poll_once};
use retailflow::supervise::pipeline::Pipeline;
use retailflow::testing::*;
use retailflow_core::aggregate::posting::{DocBody, Lineage, PostingDoc, SalesLine};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::mpsc;

/// A postgres endpoint named `erp` whose connection string is in `var`.
pub fn pg_endpoint(var: &str) -> ErpEndpointConfig {
    ErpEndpointConfig {
        kind: ErpKind::Postgres,
        dsn_env: var.into(),
        url: String::new(),
        ..erp_endpoint(String::new())
    }
}

/// Per (store, sku): units sold, sales amount, tax. Per store: card payments.
#[derive(Default, Debug, PartialEq, Eq)]
pub struct Expected {
    pub sales: BTreeMap<(String, String), (i64, i64, i64)>,
    pub paid: BTreeMap<String, i64>,
    pub events: i64,
}

impl Expected {
    /// Adds one `card_sale(store, sku, qty, price)`: tax is a fifth, rounded down.
    pub fn sale(&mut self, store: &str, sku: &str, qty: i64, price: i64) {
        let tax = qty * price / 5;
        let s = self.sales.entry((store.into(), sku.into())).or_default();
        s.0 += qty;
        s.1 += qty * price;
        s.2 += tax;
        *self.paid.entry(store.into()).or_default() += qty * price + tax;
        self.events += 1;
    }

    /// The same sums read from the interface tables.
    pub async fn read(db: &TestDb) -> Expected {
        let c = db.client().await;
        let mut found = Expected::default();
        let rows = c
            .query(
                "SELECT d.location, l.sku, sum(l.qty_sold)::int8, sum(l.sales_amount)::int8, \
                 sum(l.tax_amount)::int8 FROM rf_sales_line l JOIN rf_document d USING (document_id) \
                 GROUP BY 1, 2",
                &[],
            )
            .await
            .unwrap();
        for r in rows {
            found
                .sales
                .insert((r.get(0), r.get(1)), (r.get(2), r.get(3), r.get(4)));
        }
        let rows = c
            .query(
                "SELECT d.location, sum(l.paid)::int8 FROM rf_tender_line l \
                 JOIN rf_document d USING (document_id) WHERE l.tender = 'card' GROUP BY 1",
                &[],
            )
            .await
            .unwrap();
        for r in rows {
            found.paid.insert(r.get(0), r.get(1));
        }
        found.events = db
            .number(
                "SELECT sum(lineage_events)::int8 FROM rf_document WHERE kind = 'sales_summary' \
                 AND page = 1",
            )
            .await;
        found
    }
}

/// Headers whose `line_count` is not the number of their lines.
pub async fn headers_with_wrong_line_count(db: &TestDb) -> i64 {
    db.number(
        "SELECT count(*) FROM rf_document d WHERE d.line_count <> (SELECT count(*) FROM \
         (SELECT document_id FROM rf_sales_line UNION ALL SELECT document_id FROM rf_tender_line \
          UNION ALL SELECT document_id FROM rf_tax_line \
          UNION ALL SELECT document_id FROM rf_movement_line) x WHERE x.document_id = d.document_id)",
    )
    .await
}

fn set_dsn(var: &str, dsn: &str) {
    // SAFETY: each test sets a variable of its own name, read only by the pipeline it starts.
    unsafe { std::env::set_var(var, dsn) };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_from_a_pipeline_land_as_headers_and_lines_that_equal_the_tills() {
    let db = TestDb::create().await;
    set_dsn("RF_TEST_PG_PIPELINE", &db.dsn());
    let server = nats();
    let mut cfg = config(&server.url());
    cfg.erp = vec![pg_endpoint("RF_TEST_PG_PIPELINE")];
    let pipeline = Pipeline::start(cfg).await.expect("pipeline starts");
    let js = async_nats::jetstream::new(client(&server.url()).await);

    let mut expected = Expected::default();
    let mut seq = 0;
    for round in 0..4i64 {
        for store in ["S1", "S2", "S3"] {
            for (i, sku) in ["A", "B", "C"].iter().enumerate() {
                seq += 1;
                let (qty, price) = (1 + (round + i as i64) % 3, 199 + 101 * i as i64 + round);
                let env = envelope(
                    &format!("pos/{store}/t1"),
                    seq,
                    card_sale(store, sku, qty, price),
                );
                publish(&js, &env, seq % 2 == 0, true).await;
                expected.sale(store, sku, qty, price);
            }
        }
        // Barriers fall in between, so every store's day arrives in several documents.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let end = last_seq(&js, "RETAIL_EVENTS").await;
    assert!(
        pipeline
            .shared
            .view
            .wait_all(end, Duration::from_secs(30))
            .await
    );
    retailflow::supervise::settle::settle(&pipeline, Duration::from_secs(60))
        .await
        .expect("every document written within a minute");

    assert_eq!(
        Expected::read(&db).await,
        expected,
        "the tables hold what the tills sold"
    );
    let sales_docs = db
        .number("SELECT count(*) FROM rf_document WHERE kind = 'sales_summary'")
        .await;
    assert!(
        sales_docs > 3,
        "several flushes per store: {sales_docs} sales documents"
    );
    for kind in ["tender_summary", "tax_summary", "inventory_movements"] {
        let n = db
            .number(&format!(
                "SELECT count(*) FROM rf_document WHERE kind = '{kind}'"
            ))
            .await;
        assert!(n > 0, "no {kind} document");
    }
    assert_eq!(headers_with_wrong_line_count(&db).await, 0);
    assert_eq!(
        db.number(
            "SELECT count(*) FROM rf_document WHERE import_status <> 'new' OR endpoint <> 'erp'"
        )
        .await,
        0,
        "every header waits for the import job, addressed to its endpoint"
    );
    let sold = db
        .number("SELECT -sum(qty)::int8 FROM rf_movement_line WHERE reason = 'sale'")
        .await;
    assert_eq!(
        sold,
        expected.sales.values().map(|s| s.0).sum::<i64>(),
        "stock moved by the sales"
    );
    let m = pipeline.shared.metrics.endpoint("erp");
    assert_eq!(m.rejected.load(Relaxed), 0);
    pipeline.shutdown(Duration::from_secs(10)).await;
}

fn doc(id: &str, lines: Vec<SalesLine>) -> PostingDoc {
    PostingDoc {
        id: id.into(),
        endpoint: "erp".into(),
        location: "S1".into(),
        business_day: Some(retailflow::domain::BusinessDay::parse("2026-11-27").unwrap()),
        currency: Some(retailflow::domain::Currency::parse("EUR").unwrap()),
        barrier_seq: 4200,
        part: 0,
        page: 1,
        pages: 1,
        lineage: Lineage {
            events: 3,
            first_seq: 10,
            last_seq: 4100,
        },
        final_doc: false,
        corrects: None,
        body: DocBody::SalesSummary(lines),
    }
}

fn line(sku: &str, qty: i64, amount: i64) -> SalesLine {
    SalesLine {
        sku: sku.into(),
        tax_code: "VAT20".into(),
        qty_sold: qty,
        sales_amount: amount,
        tax_amount: amount / 5,
        ..SalesLine::default()
    }
}

fn sink(db: &TestDb) -> PgSink {
    PgSink::new("erp", &db.dsn(), Duration::from_secs(10), 4).expect("a valid connection string")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_delivered_twice_or_by_two_writers_at_once_is_written_once() {
    let db = TestDb::create().await;
    let a = sink(&db);
    let d = doc(
        "erp/sales_summary/S1/1",
        vec![line("A", 2, 1000), line("B", 1, 250), line("C", 5, 5)],
    );
    assert_eq!(a.deliver(&d).await, Outcome::Accepted { replay: false });
    assert_eq!(a.deliver(&d).await, Outcome::Accepted { replay: true });
    // A new process (a restart, another replica) delivers it again.
    assert_eq!(
        sink(&db).deliver(&d).await,
        Outcome::Accepted { replay: true }
    );
    assert_eq!(db.number("SELECT count(*) FROM rf_document").await, 1);
    assert_eq!(db.number("SELECT count(*) FROM rf_sales_line").await, 3);
    assert_eq!(
        db.number("SELECT sum(sales_amount)::int8 FROM rf_sales_line")
            .await,
        1255
    );
    assert_eq!(
        db.number("SELECT lineage_last_seq FROM rf_document").await,
        4100,
        "the header carries the lineage"
    );

    // Two writers at once: one writes, the other waits for it and finds the header.
    let d2 = doc(
        "erp/sales_summary/S1/2",
        (0..500).map(|i| line(&format!("K{i}"), 1, i)).collect(),
    );
    let b = sink(&db);
    let (x, y) = tokio::join!(a.deliver(&d2), b.deliver(&d2));
    let mut replays = [x, y].map(|o| match o {
        Outcome::Accepted { replay } => replay,
        other => panic!("{other:?}"),
    });
    replays.sort();
    assert_eq!(replays, [false, true], "exactly one of them wrote it");
    assert_eq!(db.number("SELECT count(*) FROM rf_sales_line").await, 503);
    assert_eq!(headers_with_wrong_line_count(&db).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_postgres_refuses_is_rejected_and_leaves_nothing_behind() {
    let db = TestDb::create().await;
    let s = sink(&db);
    // A NUL byte no text column can hold: the header goes in, the lines fail, all rolled back.
    let bad = doc(
        "erp/sales_summary/S1/nul",
        vec![line("A", 1, 10), line("B\u{0}", 1, 10)],
    );
    match s.deliver(&bad).await {
        Outcome::Rejected { status, message } => {
            assert_eq!(status, retailflow::post::postgres::REFUSED_STATUS);
            assert!(message.contains("SQLSTATE 22"), "{message}");
        }
        other => panic!("a NUL byte was {other:?}"),
    }
    let mut huge = doc("erp/sales_summary/S1/huge", vec![line("A", 1, 10)]);
    huge.barrier_seq = u64::MAX;
    assert!(
        matches!(s.deliver(&huge).await, Outcome::Rejected { .. }),
        "no wrap into a bigint"
    );
    assert_eq!(db.number("SELECT count(*) FROM rf_document").await, 0);
    assert_eq!(db.number("SELECT count(*) FROM rf_sales_line").await, 0);
    // The connection is still good for the next document.
    let good = doc("erp/sales_summary/S1/good", vec![line("A", 1, 10)]);
    assert_eq!(s.deliver(&good).await, Outcome::Accepted { replay: false });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_statuses_set_by_the_erp_are_read_back_once() {
    let db = TestDb::create().await;
    let s = sink(&db);
    for n in 1..=4 {
        let d = doc(
            &format!("erp/sales_summary/S1/{n}"),
            vec![line("A", n, 100 * n)],
        );
        assert_eq!(s.deliver(&d).await, Outcome::Accepted { replay: false });
    }
    let erp = db.client().await;
    let reader = db.client().await;
    let (tx, mut rx) = mpsc::channel(16);
    let drain = |rx: &mut mpsc::Receiver<ImportStatus>| {
        let mut got = BTreeMap::new();
        while let Ok(s) = rx.try_recv() {
            assert_eq!(s.endpoint, "erp");
            assert!(s.changed_at > std::time::SystemTime::UNIX_EPOCH);
            assert!(
                got.insert(s.document_id, s.status).is_none(),
                "reported twice in one poll"
            );
        }
        got
    };
    assert_eq!(
        poll_once(&reader, "erp", 1000, &tx).await.unwrap(),
        Some(0),
        "nothing imported yet"
    );

    // The import job: one imported, one refused with a message.
    erp.batch_execute(
        "UPDATE rf_document SET import_status = 'imported' WHERE document_id = 'erp/sales_summary/S1/1';
         UPDATE rf_document SET import_status = 'error', import_message = 'unknown sku A'
             WHERE document_id = 'erp/sales_summary/S1/2';",
    )
    .await
    .unwrap();
    poll_once(&reader, "erp", 1000, &tx).await.unwrap();
    let got = drain(&mut rx);
    assert_eq!(
        got,
        BTreeMap::from([
            ("erp/sales_summary/S1/1".to_string(), Import::Imported),
            (
                "erp/sales_summary/S1/2".to_string(),
                Import::Error("unknown sku A".into())
            ),
        ])
    );
    poll_once(&reader, "erp", 1000, &tx).await.unwrap();
    assert!(drain(&mut rx).is_empty(), "each change reported once");

    // Fixed and imported again; another sent back to `new` (not reported); a third imported,
    // read with a batch of one at a time.
    erp.batch_execute(
        "UPDATE rf_document SET import_status = 'imported', import_message = NULL
             WHERE document_id = 'erp/sales_summary/S1/2';
         UPDATE rf_document SET import_status = 'new' WHERE document_id = 'erp/sales_summary/S1/1';
         UPDATE rf_document SET import_status = 'imported' WHERE document_id = 'erp/sales_summary/S1/3';",
    )
    .await
    .unwrap();
    let mut rounds = 0;
    while poll_once(&reader, "erp", 1, &tx).await.unwrap() == Some(1) {
        rounds += 1;
        assert!(rounds < 10);
    }
    assert_eq!(rounds, 3, "three changes, one per poll");
    assert_eq!(
        drain(&mut rx),
        BTreeMap::from([
            ("erp/sales_summary/S1/2".to_string(), Import::Imported),
            ("erp/sales_summary/S1/3".to_string(), Import::Imported),
        ])
    );
    // Another endpoint's changes are not this one's.
    assert_eq!(
        poll_once(&reader, "other", 1000, &tx).await.unwrap(),
        Some(0)
    );

    // The periodic task finds the next change by itself.
    let config =
        retailflow::post::postgres::connection_config(&db.dsn(), Duration::from_secs(5)).unwrap();
    let poller = StatusPoller::spawn("erp".into(), config, Duration::from_millis(200), tx);
    erp.batch_execute(
        "UPDATE rf_document SET import_status = 'error', import_message = 'period closed'
             WHERE document_id = 'erp/sales_summary/S1/4'",
    )
    .await
    .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
    let next = next
        .expect("the poller reported within 10 s")
        .expect("a status");
    assert_eq!(next.document_id, "erp/sales_summary/S1/4");
    assert_eq!(next.status, Import::Error("period closed".into()));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(rx.try_recv().is_err(), "and only once");
    drop(poller);
}

/// A TCP door in front of PostgreSQL: shut, it drops every connection at once.
async fn door(open: Arc<AtomicBool>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if !open.load(Relaxed) {
                continue;
            }
            tokio::spawn(async move {
                if let Ok(mut pg) = tokio::net::TcpStream::connect("127.0.0.1:5432").await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut pg).await;
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_pauses_the_endpoint_and_dead_letters_nothing() {
    let db = TestDb::create().await;
    let open = Arc::new(AtomicBool::new(false));
    let port = door(open.clone()).await;
    set_dsn(
        "RF_TEST_PG_DOWN",
        &format!(
            "host=127.0.0.1 port={port} user=postgres dbname={}",
            db.name
        ),
    );
    let server = nats();
    let mut cfg = config(&server.url());
    cfg.erp = vec![pg_endpoint("RF_TEST_PG_DOWN")];
    let pipeline = Pipeline::start(cfg).await.expect("pipeline starts");
    let js = async_nats::jetstream::new(client(&server.url()).await);
    let mut expected = Expected::default();
    for seq in 1..=6 {
        let store = ["S1", "S2"][seq as usize % 2];
        let env = envelope(
            &format!("pos/{store}/t1"),
            seq,
            card_sale(store, "A", 2, 450),
        );
        publish(&js, &env, false, true).await;
        expected.sale(store, "A", 2, 450);
    }
    let m = pipeline.shared.metrics.endpoint("erp");
    assert!(
        wait_until(Duration::from_secs(20), || async {
            m.paused.load(Relaxed) == 1
        })
        .await,
        "the endpoint pauses while PostgreSQL cannot be reached"
    );
    // Let it probe a few times.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(m.paused.load(Relaxed), 1, "still paused");
    assert_eq!(m.rejected.load(Relaxed), 0, "nothing rejected");
    let dlq = js
        .get_stream("RETAIL_DLQ")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert_eq!(dlq, 0, "nothing dead-lettered");
    assert!(m.accepted.load(Relaxed) == 0);

    // PostgreSQL answers again: the endpoint resumes and every document lands.
    open.store(true, Relaxed);
    retailflow::supervise::settle::settle(&pipeline, Duration::from_secs(60))
        .await
        .expect("every document written once PostgreSQL answers");
    assert_eq!(m.paused.load(Relaxed), 0, "resumed");
    assert_eq!(Expected::read(&db).await, expected);
    pipeline.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_at_once_migrate_once_and_all_deliver() {
    let db = TestDb::create().await;
    // Each sink is a process's first connection: all of them migrate at the same moment.
    let sinks: Vec<PgSink> = (0..6).map(|_| sink(&db)).collect();
    let docs: Vec<PostingDoc> = (0..6)
        .map(|n| doc(&format!("erp/sales_summary/S1/r{n}"), vec![line("A", 1, n)]))
        .collect();
    let outcomes =
        futures::future::join_all(sinks.iter().zip(&docs).map(|(s, d)| s.deliver(d))).await;
    for o in outcomes {
        assert_eq!(o, Outcome::Accepted { replay: false });
    }
    assert_eq!(
        db.number("SELECT count(*) FROM rf_schema_history").await,
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
            .unwrap()
            .count() as i64,
        "each migration recorded once"
    );
    assert_eq!(db.number("SELECT count(*) FROM rf_document").await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_port_a_missing_database_or_a_silent_server_is_the_endpoints_fault() {
    let db = TestDb::create().await;
    let d = doc("erp/sales_summary/S1/x", vec![line("A", 1, 10)]);
    // A silent server: accepts, never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            open.push(s);
        }
    });
    for dsn in [
        "host=127.0.0.1 port=1 user=postgres dbname=test".to_string(),
        format!("{} dbname=rf_no_such_database", db.dsn()),
        format!("host=127.0.0.1 port={silent_port} user=postgres dbname=test"),
    ] {
        let s = PgSink::new("erp", &dsn, Duration::from_millis(700), 1).unwrap();
        let started = tokio::time::Instant::now();
        match s.deliver(&d).await {
            Outcome::Unavailable {
                status: None,
                reason,
            } => assert!(!reason.is_empty()),
            other => panic!("{dsn}: {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{dsn}: bounded by the timeout"
        );
    }
    held.abort();
    assert!(PgSink::new("erp", "host=x port=notaport", Duration::from_secs(1), 1).is_err());
}

/// The store day of `store` on 2026-11-27, as the reconciliation API answers it.
async fn reconciled(base: &str, store: &str) -> serde_json::Value {
    let url = format!("{base}/v1/reconciliation/{store}/2026-11-27");
    match reqwest::get(url).await {
        Ok(r) if r.status() == 200 => {
            r.json::<serde_json::Value>().await.unwrap()["days"][0].clone()
        }
        _ => serde_json::Value::Null,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_counts_a_written_document_only_once_the_erp_imported_it() {
    let db = TestDb::create().await;
    set_dsn("RF_TEST_PG_RECONCILE", &db.dsn());
    let server = nats();
    let mut cfg = config(&server.url());
    let mut endpoint = pg_endpoint("RF_TEST_PG_RECONCILE");
    endpoint.status_poll = Duration::from_millis(100);
    cfg.erp = vec![endpoint];
    let pipeline = Pipeline::start(cfg).await.expect("pipeline starts");
    let base = format!("http://{}", pipeline.http_addr().unwrap());
    let js = async_nats::jetstream::new(client(&server.url()).await);
    for (i, store) in ["S1", "S2"].into_iter().enumerate() {
        let env = envelope(&format!("pos/{store}/t1"), 1, card_sale(store, "A", 2, 500));
        publish(&js, &env, i == 0, true).await;
    }
    retailflow::supervise::settle::settle(&pipeline, Duration::from_secs(60))
        .await
        .expect("every document written");

    // Written, not yet imported: staged, pending, nothing accepted.
    let staged = wait_until(Duration::from_secs(20), || async {
        let d = reconciled(&base, "S1").await;
        d["documents"]
            .as_array()
            .is_some_and(|docs| docs.len() == 3 && docs.iter().all(|doc| doc["status"] == "staged"))
    })
    .await;
    assert!(staged, "{:#}", reconciled(&base, "S1").await);
    let before = reconciled(&base, "S1").await;
    assert_eq!(before["erp"][0]["accepted"]["documents"], 0, "{before:#}");
    assert_eq!(before["erp"][0]["pending"]["documents"], 3);
    assert_eq!(before["erp"][0]["pending"]["sales"], 1000);

    // The ERP's import job takes S1's documents and fails S2's.
    let pg = db.client().await;
    pg.execute(
        "UPDATE rf_document SET import_status = 'imported' WHERE location = 'S1'",
        &[],
    )
    .await
    .unwrap();
    pg.execute(
        "UPDATE rf_document SET import_status = 'error', import_message = 'cost centre S2 unknown' WHERE location = 'S2'",
        &[],
    )
    .await
    .unwrap();
    let imported = wait_until(Duration::from_secs(20), || async {
        let (s1, s2) = (reconciled(&base, "S1").await, reconciled(&base, "S2").await);
        s1["erp"][0]["accepted"]["documents"] == 3 && s2["erp"][0]["rejected"]["documents"] == 3
    })
    .await;
    let (s1, s2) = (reconciled(&base, "S1").await, reconciled(&base, "S2").await);
    assert!(imported, "{s1:#} {s2:#}");
    assert_eq!(s1["erp"][0]["accepted"]["sales"], 1000);
    assert_eq!(s1["erp"][0]["accepted"]["tendered"], 1200);
    assert_eq!(s1["erp"][0]["pending"]["documents"], 0);
    assert_eq!(s2["status"], "rejected");
    assert_eq!(s2["erp"][0]["rejected"]["sales"], 1000);
    let messages: Vec<&str> = s2["documents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["message"].as_str())
        .collect();
    assert_eq!(messages.len(), 3, "{s2:#}");
    assert!(
        messages
            .iter()
            .all(|m| m.contains("cost centre S2 unknown"))
    );
    pipeline.shutdown(Duration::from_secs(10)).await;
}
