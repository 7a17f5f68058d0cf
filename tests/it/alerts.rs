//! The shipped alerting rules (`deploy/prometheus/retailflow-alerts.yml`): valid for
//! Prometheus (`promtool check rules`), firing on the troubles they name and not on healthy
//! neighbours (`promtool test rules`), written over metrics retailflow serves, and each with
//! its section in docs/RUNBOOK.md. The Grafana dashboard (`deploy/grafana/retailflow.json`)
//! reads served metrics too.

use retailflow::telemetry::Metrics;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn rules_dir() -> PathBuf {
    root().join("deploy/prometheus")
}

/// `promtool` (Debian's `prometheus` package): `RETAILFLOW_PROMTOOL`, else on the PATH.
fn promtool(args: &[&str]) -> String {
    let bin = std::env::var("RETAILFLOW_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let out = Command::new(&bin)
        .args(args)
        .current_dir(rules_dir())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "promtool is needed for the alert rules' tests: `apt-get install prometheus` \
                 (scripts/test.sh installs it), or set RETAILFLOW_PROMTOOL; tried {bin}: {e}"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// (alert name, expression, runbook link) of every rule, read line by line.
fn rules() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(rules_dir().join("retailflow-alerts.yml")).unwrap();
    let mut out: Vec<(String, String, String)> = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert: ") {
            out.push((name.to_string(), String::new(), String::new()));
        } else if let (Some(expr), Some(last)) = (line.strip_prefix("expr: "), out.last_mut()) {
            last.1 = expr.to_string();
        } else if let (Some(link), Some(last)) = (line.strip_prefix("runbook: "), out.last_mut()) {
            last.2 = link.to_string();
        }
    }
    out
}

#[test]
fn the_rules_are_valid_and_fire_on_their_troubles_only() {
    let checked = promtool(&["check", "rules", "retailflow-alerts.yml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", "retailflow-alerts.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every alert is exercised by the unit tests.
    let tests = std::fs::read_to_string(rules_dir().join("retailflow-alerts.test.yml")).unwrap();
    for (name, _, _) in rules() {
        assert!(
            tests.contains(&format!("alertname: {name}")),
            "{name} has no promtool test"
        );
    }
}

/// Every metric family `/metrics` serves.
fn served() -> BTreeSet<String> {
    let m = Metrics::new();
    m.endpoint("erp"); // per-endpoint families appear once an endpoint exists
    m.dead_letter("invalid");
    m.render()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(|n| n.to_string())
        .collect()
}

/// The `retailflow_` metric names in a PromQL expression.
fn metrics_in(expr: &str) -> Vec<&str> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("retailflow_"))
        .collect()
}

#[test]
fn the_dashboard_reads_served_metrics() {
    let text = std::fs::read_to_string(root().join("deploy/grafana/retailflow.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let served = served();
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6, "{}", panels.len());
    for p in panels {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}: no query", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            let used = metrics_in(expr);
            assert!(
                !used.is_empty(),
                "{}: no retailflow metric in {expr}",
                p["title"]
            );
            for metric in used {
                assert!(
                    served.contains(metric),
                    "{}: {metric} is not served",
                    p["title"]
                );
            }
        }
    }
}

#[test]
fn every_rule_reads_served_metrics_and_has_a_runbook_section() {
    let served = served();
    let runbook = std::fs::read_to_string(root().join("docs/RUNBOOK.md")).unwrap();
    let rules = rules();
    assert!(rules.len() >= 7, "{rules:?}");
    for (name, expr, link) in &rules {
        let used = metrics_in(expr);
        assert!(!used.is_empty(), "{name}: no retailflow metric in {expr}");
        for metric in used {
            assert!(
                served.contains(metric),
                "{name}: {metric} is not served by /metrics"
            );
        }
        assert!(
            runbook.contains(&format!("\n## {name}\n")),
            "{name}: no `## {name}` section in docs/RUNBOOK.md"
        );
        assert_eq!(link, &format!("docs/RUNBOOK.md#{}", name.to_lowercase()));
    }
}
