//! The reconciliation dashboard in a real browser: headless Chromium loads `/ui/` and its pages
//! from a running pipeline, and the test reads the DOM it rendered. With
//! `RETAILFLOW_SCREENSHOTS=<dir>` it also saves a screenshot of each page there (docs/img holds
//! the ones the docs show).

use crate::reconciliation::FinanceRig;
use retailflow::domain::*;
use retailflow::testing::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const DAY: &str = "2026-11-27";

/// The Chromium binary: `RETAILFLOW_CHROMIUM`, else `chromium` on the PATH.
fn chromium() -> String {
    let bin = std::env::var("RETAILFLOW_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let found = Command::new(&bin).arg("--version").output();
    assert!(
        found.as_ref().is_ok_and(|o| o.status.success()),
        "headless Chromium is needed for the dashboard test: `apt-get install chromium` (scripts/test.sh installs it), or set RETAILFLOW_CHROMIUM; tried {bin}: {found:?}"
    );
    bin
}

fn browser(bin: &str, extra: &[&str], url: &str) -> std::process::Output {
    let profile = tempfile::tempdir().expect("a profile directory");
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(extra)
    .arg(url);
    cmd.output().expect("chromium runs")
}

/// The DOM Chromium rendered for `url`.
fn dom(bin: &str, url: &str) -> String {
    let out = browser(bin, &["--dump-dom"], url);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("</html>"),
        "Chromium rendered nothing for {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn screenshot(bin: &str, url: &str, name: &str) {
    let Ok(dir) = std::env::var("RETAILFLOW_SCREENSHOTS") else {
        return;
    };
    let file = PathBuf::from(dir).join(name);
    browser(
        bin,
        &[
            &format!("--screenshot={}", file.display()),
            "--window-size=1200,900",
        ],
        url,
    );
    assert!(file.exists(), "no screenshot at {}", file.display());
}

fn sale(store: &str, qty: i64, price: i64, kind: &str) -> (Event, i64, i64) {
    let tax = qty * price / 5;
    let event = Event::Sale(Sale {
        location: store.into(),
        business_day: BusinessDay::parse(DAY).unwrap(),
        currency: Currency::parse("EUR").unwrap(),
        lines: vec![taxed_line("SKU-1", qty, price)],
        tenders: vec![Tender {
            kind: kind.into(),
            amount: qty * price + tax,
        }],
    });
    (event, qty * price + tax, tax)
}

fn close(store: &str, till: &str, n: u64, card: i64, cash: i64, tax: i64) -> Event {
    Event::DayClosed(DayClosed {
        location: store.into(),
        business_day: BusinessDay::parse(DAY).unwrap(),
        currency: Currency::parse("EUR").unwrap(),
        tills: vec![TillClose {
            till: till.into(),
            last_seq: n,
            transactions: n,
        }],
        tenders: vec![
            Tender {
                kind: "card".into(),
                amount: card,
            },
            Tender {
                kind: "cash".into(),
                amount: cash,
            },
        ],
        taxes: vec![TaxLine {
            code: "VAT20".into(),
            amount: tax,
        }],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_store_days_exceptions_and_source_events_in_a_browser() {
    let bin = chromium();
    let rig = FinanceRig::start(&[], Duration::from_millis(200)).await;
    let (base, js) = (rig.base.clone(), rig.js.clone());

    // S1 balances; S2's till counted 500 more cash than it took.
    for (store, extra_cash) in [("S1", 0), ("S2", 500)] {
        let till = format!("pos/{store}/t1");
        let (mut card, mut cash, mut tax) = (0, 0, 0);
        for seq in 1..=4u64 {
            let kind = if seq % 2 == 0 { "cash" } else { "card" };
            let (event, paid, t) = sale(store, seq as i64, 400, kind);
            publish(&js, &envelope(&till, seq, event), false, true).await;
            if kind == "cash" {
                cash += paid;
            } else {
                card += paid;
            }
            tax += t;
        }
        let z = close(store, &till, 4, card, cash + extra_cash, tax);
        publish(&js, &envelope(&format!("pos/{store}/bo"), 1, z), true, true).await;
    }
    let settled = wait_until(Duration::from_secs(30), || async {
        let r = reqwest::get(format!("{base}/v1/reconciliation?business_day={DAY}"))
            .await
            .unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        let days = v["days"].as_array().cloned().unwrap_or_default();
        days.len() == 2 && days.iter().all(|d| d["state"] == "accepted")
    })
    .await;
    assert!(settled, "both store days closed and accepted");

    // The overview: both stores, each with its status, and the summary.
    let overview = dom(&bin, &format!("{base}/ui/"));
    assert!(overview.contains("<table id=\"days\""), "{overview}");
    assert!(overview.contains("2 store days"), "{overview}");
    assert!(overview.contains("href=\"/ui/day/S1/2026-11-27\" data-status=\"balanced\""));
    assert!(overview.contains("href=\"/ui/day/S2/2026-11-27\" data-status=\"variance\""));
    screenshot(&bin, &format!("{base}/ui/"), "ui-overview.png");

    // The status filter keeps only S2.
    let filtered = dom(&bin, &format!("{base}/ui/?status=variance"));
    assert!(filtered.contains("/ui/day/S2/"));
    assert!(!filtered.contains("/ui/day/S1/"), "{filtered}");

    // S2's page: the variance, the totals side by side, the documents.
    let day = dom(&bin, &format!("{base}/ui/day/S2/{DAY}"));
    assert!(day.contains("<ul id=\"exceptions\">"), "{day}");
    assert!(day.contains("data-kind=\"variance\""));
    assert!(day.contains("Tender cash: declared"));
    assert!(day.contains("difference 500"), "{day}");
    assert!(day.contains("<table id=\"totals\""));
    assert!(day.contains("<table id=\"documents\""));
    screenshot(&bin, &format!("{base}/ui/day/S2/{DAY}"), "ui-store-day.png");

    // Drill-down from the sales document to its four sales.
    let link = day
        .split("href=\"/ui/lineage?id=")
        .skip(1)
        .map(|rest| {
            rest.split('"')
                .next()
                .unwrap_or_default()
                .replace("&amp;", "&")
        })
        .find(|id| id.contains("sales_summary"))
        .expect("a link from the sales document to its events");
    let events = dom(&bin, &format!("{base}/ui/lineage?id={link}"));
    assert!(events.contains("<table id=\"events\""), "{events}");
    assert_eq!(events.matches("pos/S2/t1#").count(), 4, "{events}");
    screenshot(
        &bin,
        &format!("{base}/ui/lineage?id={link}"),
        "ui-lineage.png",
    );

    // A wrong filter is a page that says so, not a blank one.
    let bad = dom(&bin, &format!("{base}/ui/?status=odd"));
    assert!(bad.contains("role=\"alert\""), "{bad}");

    rig.stop().await;
}
