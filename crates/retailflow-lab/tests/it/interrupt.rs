//! A scenario interrupted by ctrl-c or SIGTERM stops what it started: its private nats-server
//! is gone and so is the server's store directory, and the exit code says how it ended.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Entries of `dir` (the scenario's TMPDIR), by name.
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Processes whose command line mentions `needle` (read from /proc, as `pgrep -f` would).
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            found.push(pid);
        }
    }
    found
}

fn interrupt_mid_run(signal: i32, expected_code: i32) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/black-friday.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_retailflow-lab"))
        .args(["scenario", "run", "--quiet", "--out"])
        .arg(out.path())
        .arg(&scenario)
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("retailflow-lab starts");

    // Wait until its nats-server runs (its store directory appears and a process names it).
    let started = Instant::now();
    let server_dir = loop {
        if let Some(d) = entries(tmp.path())
            .into_iter()
            .find(|n| n.starts_with("retailflow-nats-"))
        {
            let path = tmp.path().join(&d).to_string_lossy().into_owned();
            if !processes_mentioning(&path).is_empty() {
                break path;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no nats-server within 60 s"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "retailflow ended early"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Let it get into the run (setup published, trading load on its way).
    std::thread::sleep(Duration::from_secs(3));
    // SAFETY: sends a signal to the child this test started and still owns.
    let sent = unsafe { libc::kill(child.id() as i32, signal) };
    assert_eq!(sent, 0, "signal sent");
    let status = child.wait().unwrap();
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert_eq!(status.code(), Some(expected_code), "{stderr}");
    assert!(stderr.contains("interrupted by"), "{stderr}");
    assert!(
        processes_mentioning(&server_dir).is_empty(),
        "nats-server still running after the interrupt"
    );
    assert_eq!(
        entries(tmp.path()),
        Vec::<String>::new(),
        "temporary directories left behind"
    );
}

#[test]
fn ctrl_c_stops_the_private_nats_server_and_removes_its_store() {
    interrupt_mid_run(libc::SIGINT, 130);
}

#[test]
fn sigterm_stops_the_private_nats_server_and_removes_its_store() {
    interrupt_mid_run(libc::SIGTERM, 143);
}
