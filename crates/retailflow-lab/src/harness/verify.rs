//! Verifying a run: the pipeline's and the ERP's books against the oracle.

use crate::oracle::{Oracle, SalesTotal, Stock, TenderTotal};
use crate::publish;
use crate::report::{ErpSummary, Report};
use crate::spec::Scenario;
use erp_sim::ErpSim;
use retailflow::supervise::pipeline::Pipeline;
use std::collections::BTreeMap;
use std::time::Duration;

/// ATP per (location, sku) read from the pipeline's view, compared with the oracle.
pub fn verify_atp(pipeline: &Pipeline, oracle: &Oracle, report: &mut Report) {
    let view = &pipeline.shared.view;
    let mut by_sku: BTreeMap<&str, Vec<(&str, &Stock)>> = BTreeMap::new();
    for ((loc, sku), st) in &oracle.stock {
        by_sku
            .entry(sku.as_str())
            .or_default()
            .push((loc.as_str(), st));
    }
    let v = &mut report.verification;
    for (sku, locs) in by_sku {
        let (answers, _) = view.read(&retailflow::domain::Sku::from(sku));
        let answers = answers.unwrap_or_default();
        for (loc, want) in locs {
            v.atp_checked += 1;
            let got = answers
                .iter()
                .find(|a| a.location.as_str() == loc)
                .map(|a| a.position)
                .unwrap_or_default();
            let same = got.on_hand == want.on_hand
                && got.reserved == want.reserved
                && got.safety_stock == want.safety_stock
                && got.in_transit == want.in_transit;
            if !same {
                v.atp_mismatches += 1;
                if v.examples.len() < 10 {
                    v.examples
                        .push(format!("ATP {loc}/{sku}: expected {want:?}, got {got:?}"));
                }
            }
        }
    }
}

/// The first ERP simulator's books (sales, tenders, stock movements) against the oracle;
/// locations whose postings the ERP rejects are left out. Documents booked twice are counted.
pub fn verify_erp(spec: &Scenario, sims: &[ErpSim], oracle: &Oracle, report: &mut Report) {
    let rejected: std::collections::HashSet<&str> = spec
        .faults
        .erp_reject_locations
        .iter()
        .map(String::as_str)
        .collect();
    let v = &mut report.verification;
    if sims.is_empty() {
        return;
    }
    // Each endpoint takes every document kind by default; check the first one's books.
    let totals = sims[0].totals();
    let mut sales: BTreeMap<(String, String, String), SalesTotal> = BTreeMap::new();
    for s in &totals.sales {
        let e = sales
            .entry((
                s.location.to_string(),
                s.sku.to_string(),
                s.tax_code.to_string(),
            ))
            .or_default();
        e.qty_sold += s.qty_sold;
        e.qty_returned += s.qty_returned;
        e.sales_amount += s.sales_amount;
        e.returns_amount += s.returns_amount;
        e.tax_amount += s.tax_amount;
    }
    for (key, want) in &oracle.sales {
        if rejected.contains(key.0.as_str()) {
            continue;
        }
        v.erp_sales_checked += 1;
        let got = sales.remove(key).unwrap_or_default();
        if got != *want {
            v.erp_mismatches += 1;
            if v.examples.len() < 20 {
                v.examples
                    .push(format!("ERP sales {key:?}: expected {want:?}, got {got:?}"));
            }
        }
    }
    for (key, extra) in sales {
        v.erp_mismatches += 1;
        if v.examples.len() < 20 {
            v.examples.push(format!(
                "ERP sales {key:?} booked but never sold: {extra:?}"
            ));
        }
    }
    let mut tenders: BTreeMap<(String, String), TenderTotal> = BTreeMap::new();
    for t in &totals.tenders {
        let e = tenders
            .entry((t.location.to_string(), t.tender.to_string()))
            .or_default();
        e.paid += t.paid;
        e.refunded += t.refunded;
    }
    for (key, want) in &oracle.tenders {
        if rejected.contains(key.0.as_str()) {
            continue;
        }
        v.erp_tenders_checked += 1;
        if tenders.get(key).copied().unwrap_or_default() != *want {
            v.erp_mismatches += 1;
            if v.examples.len() < 20 {
                v.examples.push(format!(
                    "ERP tenders {key:?}: expected {want:?}, got {:?}",
                    tenders.get(key)
                ));
            }
        }
    }
    // Every stock change is a movement, so the movements of a position add up to its on hand.
    let mut stock: BTreeMap<(String, String), i64> = BTreeMap::new();
    for m in &totals.inventory {
        *stock
            .entry((m.location.to_string(), m.sku.to_string()))
            .or_default() += m.qty;
    }
    for ((loc, sku), want) in &oracle.stock {
        if rejected.contains(loc.as_str()) {
            continue;
        }
        v.erp_inventory_checked += 1;
        let got = stock.get(&(loc.clone(), sku.clone())).copied().unwrap_or(0);
        if got != want.on_hand {
            v.erp_mismatches += 1;
            if v.examples.len() < 20 {
                v.examples.push(format!(
                    "ERP inventory {loc}/{sku}: movements add to {got}, on hand is {}",
                    want.on_hand
                ));
            }
        }
    }
    v.duplicate_documents = sims.iter().map(|s| s.stats().duplicate_documents).sum();
}

/// The dead letters of ingest (one per poison message) and of the ERP stage (rejections).
pub async fn verify_dead_letters(
    js: &async_nats::jetstream::Context,
    stream_name: &str,
    trading: &publish::Published,
    spec: &Scenario,
    report: &mut Report,
) {
    use futures::StreamExt;
    let v = &mut report.verification;
    v.dead_letters_expected = trading.poison;
    let Ok(mut stream) = js.get_stream(stream_name).await else {
        v.examples.push("dead-letter stream missing".into());
        return;
    };
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            filter_subject: format!("{}.ingest.>", retailflow::domain::subject::DLQ),
            ..Default::default()
        })
        .await;
    let mut seqs = std::collections::BTreeSet::new();
    if let Ok(c) = consumer {
        if let Ok(mut msgs) = c.stream().max_messages_per_batch(1000).messages().await {
            while let Ok(Some(Ok(m))) =
                tokio::time::timeout(Duration::from_millis(500), msgs.next()).await
            {
                if let Some(s) = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(retailflow::deadletter::H_SEQ))
                {
                    seqs.insert(s.as_str().to_string());
                }
                let _ = m.ack().await;
            }
        }
    }
    v.dead_letters_found = seqs.len() as u64;
    v.erp_rejections_expected = !spec.faults.erp_reject_locations.is_empty();
    // Rejected postings are dead letters of the `erp` stage.
    if let Ok(info) = stream.info().await.map(|i| i.state.messages) {
        v.erp_rejections = info.saturating_sub(seqs.len() as u64);
    }
}

/// What each ERP simulator saw, for the report.
pub fn erp_summary(spec: &Scenario, sims: &[ErpSim]) -> Vec<ErpSummary> {
    spec.erp
        .iter()
        .zip(sims)
        .map(|(e, s)| {
            let st = s.stats();
            ErpSummary {
                endpoint: e.name.clone(),
                limit_requests: e.requests,
                limit_window_s: e.window.as_secs_f64(),
                max_concurrent: e.max_concurrent,
                requests: st.requests,
                accepted: st.accepted,
                replays: st.replays,
                throttled: st.throttled,
                rejected: st.rejected,
                injected_errors: st.injected_errors,
                max_in_window: st.max_in_window as u64,
                max_in_flight: st.max_in_flight as u64,
                over_limit: st.throttled_window,
                duplicate_documents: st.duplicate_documents,
                timeline: st
                    .timeline
                    .iter()
                    .map(|p| (p.second, p.requests, p.accepted, p.throttled))
                    .collect(),
            }
        })
        .collect()
}
