//! `telemetry.log_format = "json"`: the service writes one JSON object per log line, with its
//! level, time and fields, for a log shipper to read.

use retailflow::config::LogFormat;
use retailflow::testing::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[test]
fn the_service_logs_one_json_object_per_line() {
    let server = nats();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&server.url());
    cfg.telemetry.log_format = LogFormat::Json;
    let path = dir.path().join("retailflow.toml");
    std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_retailflow"))
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the retailflow binary starts");
    let logs = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(logs).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(line) => {
                let running = line.contains("retailflow running");
                lines.push(line);
                if running {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let parsed: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for (v, line) in parsed.iter().zip(&lines) {
        assert!(
            v["level"].is_string() && v["timestamp"].is_string() && v["fields"].is_object(),
            "{line}"
        );
    }
    let running = parsed
        .iter()
        .find(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("retailflow running"))
        })
        .unwrap_or_else(|| panic!("no start line in {lines:#?}"));
    assert_eq!(running["level"], "INFO");
    assert!(
        running["fields"]["http"]
            .as_str()
            .is_some_and(|a| a.contains("127.0.0.1")),
        "the HTTP address is a field of its own: {running}"
    );
}
