//! The role-based nats-server configuration in `nats/retailflow.conf`, run for real: producers
//! are confined to their own system's subjects, and retailflow runs its pipeline (both ingest
//! readers) as its own user with the password from the environment.

use async_nats::jetstream;
use retailflow::bus::pull::{self, Credentials, Pull, PullError, PullOptions};
use retailflow::bus::server::NatsServer;
use retailflow::config::ReaderKind;
use retailflow::supervise::pipeline::Pipeline;
use retailflow::testing::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Every password the configuration reads, as the server and the pipeline find them in the
/// environment. Each test sets the same values, so tests running side by side agree.
const PASSWORDS: [(&str, &str); 9] = [
    ("RF_PASSWORD", "rf-secret"),
    ("POS_PASSWORD", "pos-secret"),
    ("WEB_PASSWORD", "web-secret"),
    ("MKT_PASSWORD", "mkt-secret"),
    ("WMS_PASSWORD", "wms-secret"),
    ("MDM_PASSWORD", "mdm-secret"),
    ("ERP_PASSWORD", "erp-secret"),
    ("API_PASSWORD", "api-secret"),
    ("ERP_READER_PASSWORD", "reader-secret"),
];

fn server() -> NatsServer {
    for (name, value) in PASSWORDS {
        // SAFETY: every test of this file writes the same values; nothing reads them
        // concurrently with a different expectation.
        unsafe { std::env::set_var(name, value) };
    }
    let conf = concat!(env!("CARGO_MANIFEST_DIR"), "/nats/retailflow.conf");
    NatsServer::start_with(&["-c", conf]).expect("nats-server starts with nats/retailflow.conf")
}

/// Connects as `user`, collecting the server's errors (permission violations arrive there).
async fn connect_as(
    url: &str,
    user: &str,
    password: &str,
) -> (async_nats::Client, Arc<Mutex<Vec<String>>>) {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = errors.clone();
    let client = async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .event_callback(move |event| {
            let seen = seen.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    seen.lock().unwrap().push(e.to_string());
                }
            }
        })
        .connect(url)
        .await
        .expect("connects");
    (client, errors)
}

async fn run_pipeline_as_retailflow(reader: ReaderKind) {
    let server = server();
    let mut cfg = config(&server.url());
    cfg.ingest.reader = reader;
    // The pipeline reads its user and password from these variables.
    cfg.nats.user_env = "RF_TEST_USER".into();
    cfg.nats.password_env = "RF_PASSWORD".into();
    cfg.nats.token_env = String::new();
    // SAFETY: as in `server`.
    unsafe { std::env::set_var("RF_TEST_USER", "retailflow") };
    let pipeline = Pipeline::start(cfg)
        .await
        .expect("the pipeline starts as the retailflow user: streams, consumers, snapshots");

    let (pos, _) = connect_as(&server.url(), "pos", "pos-secret").await;
    let what = format!("the pos producer's user ({reader:?} reader)");
    applies_a_receipt(&pipeline, &jetstream::new(pos), &what).await;
    pipeline.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retailflow_runs_as_its_own_user_with_the_direct_reader() {
    run_pipeline_as_retailflow(ReaderKind::Direct).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retailflow_runs_as_its_own_user_with_the_async_nats_reader() {
    run_pipeline_as_retailflow(ReaderKind::AsyncNats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_publishes_its_own_events_and_nothing_of_retailflow() {
    let server = server();
    let (rf, _) = connect_as(&server.url(), "retailflow", "rf-secret").await;
    let rf_js = jetstream::new(rf.clone());
    let cfg = config(&server.url());
    retailflow::bus::streams::ensure(&rf_js, &cfg.streams)
        .await
        .expect("retailflow creates its streams");
    let stored = |stream: &'static str| {
        let rf_js = rf_js.clone();
        async move { last_seq(&rf_js, stream).await }
    };

    let (pos, errors) = connect_as(&server.url(), "pos", "pos-secret").await;
    let js = jetstream::new(pos.clone());
    let ack = js
        .publish("retail.v1.pos.S1.sale", "{}".into())
        .await
        .expect("publish")
        .await
        .expect("the pos producer's own subject is stored");
    assert_eq!(ack.stream, "RETAIL_EVENTS");

    let events_before = stored("RETAIL_EVENTS").await;
    let postings_before = stored("RETAIL_POSTINGS").await;
    for subject in [
        "retail.v1.api.all.reservation_requested",
        "retail.v1.ctl.all.barrier",
        "retail.v1.postings.erp-main.sales_summary",
        "retail.v1.web.S1.sale",
        "$JS.API.STREAM.DELETE.RETAIL_EVENTS",
    ] {
        pos.publish(subject, "{}".into()).await.expect("sent");
    }
    pos.flush().await.expect("flushed");
    assert!(
        wait_until(Duration::from_secs(5), || async {
            errors.lock().unwrap().len() >= 5
        })
        .await,
        "a permissions violation for each: {:?}",
        errors.lock().unwrap()
    );
    let errors = errors.lock().unwrap().clone();
    for subject in [
        "retail.v1.api.",
        "retail.v1.postings.",
        "$JS.API.STREAM.DELETE",
    ] {
        assert!(
            errors
                .iter()
                .any(|e| e.contains("Permissions Violation") && e.contains(subject)),
            "{subject}: {errors:?}"
        );
    }
    assert_eq!(
        stored("RETAIL_EVENTS").await,
        events_before,
        "nothing stored"
    );
    assert_eq!(stored("RETAIL_POSTINGS").await, postings_before);
    assert!(
        rf_js.get_stream("RETAIL_EVENTS").await.is_ok(),
        "not deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_direct_reader_sends_a_user_and_password_and_a_refusal_is_an_auth_error() {
    let server = server();
    let cfg = config(&server.url());
    let (rf, _) = connect_as(&server.url(), "retailflow", "rf-secret").await;
    let js = jetstream::new(rf);
    retailflow::bus::streams::ensure(&js, &cfg.streams)
        .await
        .expect("streams");
    let stream = js.get_stream("RETAIL_EVENTS").await.unwrap();
    stream
        .create_consumer(jetstream::consumer::pull::Config {
            name: Some("auth-test".into()),
            ..Default::default()
        })
        .await
        .expect("consumer");
    let opts = PullOptions {
        batch: 10,
        heartbeat: Duration::from_secs(1),
        expires: Duration::from_secs(5),
        name: "auth-test".into(),
    };
    let ok = Credentials {
        token: None,
        user_password: Some(("retailflow", "rf-secret")),
    };
    Pull::open_with(&server.url(), ok, "RETAIL_EVENTS", "auth-test", &opts)
        .await
        .expect("the direct reader is let in with user and password");
    for refused in [
        Credentials::default(),
        Credentials {
            token: None,
            user_password: Some(("retailflow", "wrong")),
        },
    ] {
        match Pull::open_with(&server.url(), refused, "RETAIL_EVENTS", "auth-test", &opts).await {
            Err(PullError::Server(e)) => assert!(pull::is_auth_error(&e), "{e}"),
            Err(other) => panic!("not an auth error: {other}"),
            Ok(_) => panic!("let in without the right password"),
        }
    }
}

/// Starts a server from a configuration (and files beside it) written into a directory that
/// lives as long as the returned guard.
fn server_with(conf: &str, files: &[(&str, String)]) -> (NatsServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let path = dir.path().join("server.conf");
    // nats-server opens files relative to its working directory: `{dir}` names this one.
    std::fs::write(&path, conf.replace("{dir}", dir.path().to_str().unwrap())).unwrap();
    let server = NatsServer::start_with(&["-c", path.to_str().unwrap()])
        .expect("nats-server starts with the test configuration");
    (server, dir)
}

/// Publishes one receipt as a plain client and waits until the pipeline applied it.
async fn applies_a_receipt(pipeline: &Pipeline, js: &jetstream::Context, what: &str) {
    let env = envelope("pos/S1/t1", 1, receipt("S1", "SKU-1", 7));
    let seq = publish(js, &env, false, true).await;
    assert!(
        pipeline
            .shared
            .view
            .wait_all(seq, Duration::from_secs(20))
            .await,
        "an event is applied over {what}"
    );
}

/// Mutual TLS: the server requires a client certificate signed by its CA. The pipeline
/// connects with `nats.tls_ca`, `nats.tls_cert` and `nats.tls_key`; its ingest reads through
/// async-nats (the direct reader speaks plain TCP only and steps aside). Without the client
/// certificate the server refuses the pipeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_runs_over_mutual_tls() {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) = leaf(
        vec!["retailflow".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let conf = r#"
        tls {
          cert_file: "{dir}/server.pem"
          key_file: "{dir}/server-key.pem"
          ca_file: "{dir}/ca.pem"
          verify: true
          timeout: 2
        }
    "#;
    let (server, dir) = server_with(
        conf,
        &[
            ("ca.pem", ca.pem()),
            ("server.pem", server_cert),
            ("server-key.pem", server_key),
            ("client.pem", client_cert),
            ("client-key.pem", client_key),
        ],
    );
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_string();

    let mut without = config(&server.url());
    without.nats.tls_ca = file("ca.pem");
    match Pipeline::start(without).await {
        Ok(_) => panic!("the server refuses a pipeline without a client certificate"),
        Err(e) => eprintln!("without a client certificate: {e}"),
    }

    let mut cfg = config(&server.url());
    cfg.nats.tls_ca = file("ca.pem");
    cfg.nats.tls_cert = file("client.pem");
    cfg.nats.tls_key = file("client-key.pem");
    let pipeline = Pipeline::start(cfg)
        .await
        .expect("the pipeline starts over mutual TLS");
    let producer = async_nats::ConnectOptions::new()
        .add_root_certificates(file("ca.pem").into())
        .add_client_certificate(file("client.pem").into(), file("client-key.pem").into())
        .require_tls(true)
        .connect(server.url())
        .await
        .expect("a producer with a certificate connects");
    applies_a_receipt(&pipeline, &jetstream::new(producer), "mutual TLS").await;
    pipeline.shutdown(Duration::from_secs(10)).await;
}

/// nkey authentication: the server knows the public key only; the pipeline signs the
/// server's nonce with the seed from `nats.nkey_env`, and its ingest reads through async-nats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_authenticates_with_an_nkey() {
    let user = nkeys::KeyPair::new_user();
    let producer = nkeys::KeyPair::new_user();
    let conf = format!(
        "authorization {{ users = [ {{ nkey: \"{}\" }}, {{ nkey: \"{}\" }} ] }}",
        user.public_key(),
        producer.public_key()
    );
    let (server, _dir) = server_with(&conf, &[]);
    let mut cfg = config(&server.url());
    cfg.nats.nkey_env = "RF_TEST_NKEY_SEED".into();
    cfg.nats.token_env = String::new();
    // SAFETY: only this test reads or writes this variable.
    unsafe { std::env::set_var("RF_TEST_NKEY_SEED", user.seed().unwrap()) };
    let pipeline = Pipeline::start(cfg)
        .await
        .expect("the pipeline starts with its nkey");
    assert!(
        async_nats::connect(server.url()).await.is_err(),
        "the server refuses a client without an nkey"
    );
    let client = async_nats::ConnectOptions::with_nkey(producer.seed().unwrap())
        .connect(server.url())
        .await
        .expect("a producer with its own nkey connects");
    applies_a_receipt(&pipeline, &jetstream::new(client), "nkey authentication").await;
    pipeline.shutdown(Duration::from_secs(10)).await;
}
