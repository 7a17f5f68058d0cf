//! The retailflow binary killed with SIGKILL while it writes documents into PostgreSQL
//! interface tables, then started again: every document formed is in the tables once, with
//! its lines once, and the lines add up to what the tills sold.

use crate::pgdb::TestDb;
use crate::postgres_tables::{Expected, headers_with_wrong_line_count, pg_endpoint};
use futures::StreamExt;
use retailflow::post::ratelimit::RateLimit;
use retailflow::testing::*;
use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const DSN_VAR: &str = "RF_TEST_PG_CRASH";

fn start(config: &std::path::Path, log: &std::path::Path, dsn: &str) -> Child {
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    Command::new(env!("CARGO_BIN_EXE_retailflow"))
        .args(["run", "--config"])
        .arg(config)
        .env(DSN_VAR, dsn)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the retailflow binary starts")
}

/// The ids of the headers written so far.
async fn headers(db: &TestDb) -> BTreeSet<String> {
    let rows = db
        .client()
        .await
        .query("SELECT document_id FROM rf_document", &[])
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_with_sigkill_between_documents_it_writes_each_once_after_a_restart() {
    let db = TestDb::create().await;
    let server = nats();
    let dir = tempfile::tempdir().unwrap();
    let (config_path, log) = (
        dir.path().join("retailflow.toml"),
        dir.path().join("retailflow.log"),
    );
    let mut cfg = config(&server.url());
    // Slow, so documents trickle in and the kill falls among them.
    let mut endpoint = pg_endpoint(DSN_VAR);
    endpoint.rate = RateLimit {
        requests: 6,
        window: Duration::from_secs(1),
        burst: Some(1),
    };
    endpoint.max_concurrent = 2;
    cfg.erp = vec![endpoint];
    std::fs::write(&config_path, toml::to_string(&cfg).unwrap()).unwrap();

    // Every document id the binary forms, also the ones formed again after the restart.
    let nc = client(&server.url()).await;
    let mut postings = nc.subscribe("retail.v1.postings.erp.>").await.unwrap();
    let formed = std::sync::Arc::new(std::sync::Mutex::new(BTreeSet::<String>::new()));
    let collect = {
        let formed = formed.clone();
        tokio::spawn(async move {
            while let Some(m) = postings.next().await {
                if let Some(id) = m.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")) {
                    formed.lock().unwrap().insert(id.as_str().to_string());
                }
            }
        })
    };

    let mut child = start(&config_path, &log, &db.dsn());
    let js = async_nats::jetstream::new(client(&server.url()).await);
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(30), || async {
            js.get_stream("RETAIL_EVENTS").await.is_ok()
                && js.get_stream("RETAIL_POSTINGS").await.is_ok()
        })
        .await,
        "retailflow created its streams: {}",
        logs()
    );
    let mut expected = Expected::default();
    let mut seq = 0;
    for round in 0..6i64 {
        for store in ["S1", "S2"] {
            for (i, sku) in ["A", "B", "C"].iter().enumerate() {
                seq += 1;
                let (qty, price) = (1 + (round + i as i64) % 4, 1000 + 37 * seq as i64);
                let env = envelope(
                    &format!("pos/{store}/t1"),
                    seq,
                    card_sale(store, sku, qty, price),
                );
                publish(&js, &env, false, true).await;
                expected.sale(store, sku, qty, price);
            }
        }
        // Barriers fall in between: several documents per store and kind.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }

    assert!(
        wait_until(Duration::from_secs(60), || async {
            headers(&db).await.len() >= 8
        })
        .await,
        "documents are being written: {}",
        logs()
    );
    // SIGKILL (what `Child::kill` sends on Unix): no shutdown, a document may be half-sent.
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    let at_kill = headers(&db).await.len();

    let mut child = start(&config_path, &log, &db.dsn());
    // Drained: what the tables hold adds up to the tills and the outbox is empty. Postings the
    // killed process held come back after the outbox's 30 s ack wait.
    let consumer = || async {
        let stream = js.get_stream("RETAIL_POSTINGS").await.ok()?;
        let mut c: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer("erp-erp").await.ok()?;
        let info = c.info().await.ok()?;
        Some(info.num_pending + info.num_ack_pending as u64)
    };
    let drained = wait_until(Duration::from_secs(150), || async {
        Expected::read(&db).await == expected && consumer().await == Some(0)
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(drained, "the outbox drained after the restart: {}", logs());
    collect.abort();

    let written = headers(&db).await;
    assert!(
        written.len() > at_kill,
        "the kill fell among the documents ({at_kill} of {})",
        written.len()
    );
    let formed = formed.lock().unwrap().clone();
    assert_eq!(
        written, formed,
        "every document formed is written, and nothing else"
    );
    assert_eq!(
        Expected::read(&db).await,
        expected,
        "each source event counted once"
    );
    assert_eq!(
        headers_with_wrong_line_count(&db).await,
        0,
        "no document without all its lines"
    );
    assert_eq!(
        db.number(
            "SELECT count(*) FROM (SELECT document_id, line_no FROM rf_sales_line \
             GROUP BY 1, 2 HAVING count(*) > 1) d"
        )
        .await,
        0,
        "no line twice"
    );
}
