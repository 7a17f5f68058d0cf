//! A month-end run (a scenario with `[month_end]`): several business days traded and closed
//! store by store with Z reports, some of them wrong on purpose, transactions that arrive
//! after the close, one store's documents refused by the ERP's API until it is fixed and the
//! refused documents are re-driven, and a PostgreSQL interface-table endpoint beside the API.
//! Afterwards reconciliation is read over HTTP and held against the oracle of the faults.
//!
//! One business day at a time: its transactions (stores interleaved) are published; then the
//! late transactions of the day before, once that day has closed; then every store's Z report.
//! After `fix_after_day` the ERP side is fixed and the refused documents are re-driven over
//! `POST /v1/dlq/redrive`. A watcher notes when each store day first reads `accepted`.

mod check;
mod days;
mod tables;
mod watch;

pub use days::{Days, Fault, StoreDay, Sums, exception_word};

use crate::generate::SYSTEMS;
use crate::harness::{self, RunError, Stage, Trader, setup};
use crate::publish::publish_envelopes;
use crate::report::Report;
use crate::run::RunOptions;
use crate::spec::{MonthEndSpec, Scenario};
use retailflow::domain::{BusinessDay, Envelope};
use retailflow::supervise::pipeline::Pipeline;
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tables::Tables;
use watch::{AcceptedAt, Api, Watcher, past_close};

/// What a published store day leaves for the checks.
pub struct Booked {
    pub store: String,
    pub day: BusinessDay,
    pub fault: Option<Fault>,
    pub source: Sums,
    pub exceptions: BTreeSet<String>,
    pub late: u64,
    /// When its Z report was stored.
    pub closed_at: Instant,
}

/// The refused store's documents sent back after the ERP-side fix.
#[derive(Default)]
pub struct Redriven {
    /// When the fix was made.
    pub fixed_at: Option<Instant>,
    pub letters: u64,
    pub failed: Vec<String>,
}

/// What the month's trading did.
pub struct Month {
    pub booked: Vec<Booked>,
    pub days: Vec<BusinessDay>,
    pub transactions: u64,
    pub lost: u64,
    pub late_events: u64,
    pub redriven: Redriven,
    pub accepted: AcceptedAt,
    pub elapsed: Duration,
}

/// Runs a month-end scenario end to end and returns its report (also written to `opts.out`).
pub async fn run(spec: &Scenario, opts: &RunOptions) -> Result<Report, RunError> {
    let stage = Stage::start(spec, opts.smoke, opts.nats.as_deref()).await?;
    let me = stage
        .spec
        .month_end
        .clone()
        .ok_or_else(|| RunError::Setup("the scenario has no [month_end]".into()))?;
    let tables = match me.postgres {
        true => Some(Tables::create().await.map_err(setup("PostgreSQL"))?),
        false => None,
    };
    let mut cfg = stage.pipeline_config();
    cfg.finance.close_grace = me.close_grace;
    if let (Some(t), Some(first)) = (&tables, cfg.erp.first().cloned()) {
        cfg.erp.push(t.endpoint(&first));
    }
    let pipeline = harness::start_pipeline(cfg).await?;
    let api = Api::new(&harness::http_base(&pipeline)?);
    let client = async_nats::connect(retailflow::bus::servers(&stage.bus.url))
        .await
        .map_err(setup("NATS (load)"))?;
    let nats_version = client.server_info().version;
    let mut trader = Trader::setup(&stage, client).await?;
    let limit = Duration::from_secs(600);
    harness::applied(&pipeline, trader.setup.last_seq, limit, || {
        "setup events were not applied within 10 minutes".into()
    })
    .await?;
    let stop_import = Arc::new(AtomicBool::new(false));
    let import = tables.as_ref().map(|t| t.import_job(stop_import.clone()));

    let mut report = harness::report(&stage, opts.smoke, &nats_version);
    let ctx = Ctx {
        stage: &stage,
        me: &me,
        pipeline: &pipeline,
        api: &api,
    };
    match month(&ctx, &mut trader, opts).await {
        Ok(m) => check::verify(&mut report, &ctx, &trader, &m, tables.as_ref()).await,
        Err(e) => report.problems.push(e.to_string()),
    }
    stop_import.store(true, Ordering::Relaxed);
    if let Some((job, _)) = import {
        let _ = job.await;
    }
    let expect = stage.spec.expect.clone();
    pipeline.shutdown(Duration::from_secs(30)).await;
    stage.stop().await?;
    if let Some(t) = tables {
        t.drop().await;
    }
    report.check_expectations(&expect);
    harness::write_report(&report, &opts.out)?;
    Ok(report)
}

/// What the steps of a run share.
pub struct Ctx<'a> {
    pub stage: &'a Stage,
    pub me: &'a MonthEndSpec,
    pub pipeline: &'a Pipeline,
    pub api: &'a Api,
}

/// Late transactions waiting for their day to close.
struct Held {
    store: String,
    day: BusinessDay,
    events: Vec<Envelope>,
}

/// Trades and closes every business day, re-drives after the fix, and waits until every store
/// day is accepted.
async fn month(ctx: &Ctx<'_>, trader: &mut Trader, opts: &RunOptions) -> Result<Month, RunError> {
    let began = Instant::now();
    let world = &ctx.stage.world;
    let mut days = Days::new(&ctx.stage.spec, world.clone())
        .ok_or_else(|| RunError::Setup("the scenario has no [month_end]".into()))?;
    let systems: Vec<String> = SYSTEMS.iter().map(|s| s.to_string()).collect();
    let watcher = Watcher::start(ctx.api.clone(), world.stores);
    let mut m = Month {
        booked: Vec::new(),
        days: Vec::new(),
        transactions: 0,
        lost: 0,
        late_events: 0,
        redriven: Redriven::default(),
        accepted: AcceptedAt::default(),
        elapsed: Duration::ZERO,
    };
    let mut held: Vec<Held> = Vec::new();
    let mut last_seq = 0;
    while let Some(store_days) = days.next_day() {
        let day = store_days[0].day;
        let trading = interleave(&store_days);
        for e in &trading {
            trader.oracle.apply(&e.event);
        }
        m.transactions += trading.len() as u64;
        last_seq = publish(&trader.js, &systems, trading).await?;
        last_seq = last_seq.max(publish_late(ctx, trader, &systems, &mut held, &mut m).await?);
        let closes = store_days.iter().map(|s| s.close.clone());
        last_seq = last_seq.max(publish(&trader.js, &systems, closes.collect()).await?);
        let closed_at = Instant::now();
        watcher.watch(day);
        m.days.push(day);
        for sd in store_days {
            m.lost += u64::from(sd.fault == Some(Fault::Missing));
            m.booked.push(Booked {
                late: sd.late.len() as u64,
                store: sd.store.clone(),
                day,
                fault: sd.fault,
                source: sd.source,
                exceptions: sd.exceptions,
                closed_at,
            });
            if !sd.late.is_empty() {
                held.push(Held {
                    store: sd.store,
                    day,
                    events: sd.late,
                });
            }
        }
        if m.days.len() == ctx.me.fix_after_day as usize {
            m.redriven = fix_and_redrive(ctx, &m.days).await?;
        }
        if opts.progress {
            eprintln!(
                "  {day}: traded and closed ({:.0} s)",
                began.elapsed().as_secs_f64()
            );
        }
    }
    last_seq = last_seq.max(publish_late(ctx, trader, &systems, &mut held, &mut m).await?);
    harness::applied(ctx.pipeline, last_seq, Duration::from_secs(1800), || {
        format!("the pipeline did not apply sequence {last_seq} within 30 minutes")
    })
    .await?;
    let limit = opts.settle_limit.unwrap_or(Duration::from_secs(1800));
    retailflow::supervise::settle::settle(ctx.pipeline, limit)
        .await
        .map_err(RunError::Run)?;
    all_accepted(ctx, &m, limit).await?;
    m.accepted = watcher.stop().await;
    m.elapsed = began.elapsed();
    Ok(m)
}

/// The day's transactions in the order the stores' tills made them, the stores interleaved.
fn interleave(store_days: &[StoreDay]) -> Vec<Envelope> {
    let longest = store_days
        .iter()
        .map(|s| s.on_time.len())
        .max()
        .unwrap_or(0);
    let mut out = Vec::with_capacity(store_days.iter().map(|s| s.on_time.len()).sum());
    for i in 0..longest {
        out.extend(store_days.iter().filter_map(|s| s.on_time.get(i).cloned()));
    }
    out
}

async fn publish(
    js: &async_nats::jetstream::Context,
    systems: &[String],
    envelopes: Vec<Envelope>,
) -> Result<u64, RunError> {
    publish_envelopes(js, systems, envelopes.into_iter())
        .await
        .map_err(|e| RunError::Run(format!("publishing: {e}")))
}

/// Publishes the held late transactions once their store days have closed.
async fn publish_late(
    ctx: &Ctx<'_>,
    trader: &mut Trader,
    systems: &[String],
    held: &mut Vec<Held>,
    m: &mut Month,
) -> Result<u64, RunError> {
    let mut last = 0;
    let days: BTreeSet<BusinessDay> = held.iter().map(|h| h.day).collect();
    for day in days {
        let stores: Vec<String> = held
            .iter()
            .filter(|h| h.day == day)
            .map(|h| h.store.clone())
            .collect();
        let closed = |rows: &std::collections::HashMap<String, serde_json::Value>| {
            stores.iter().all(|s| past_close(rows.get(s)))
        };
        let limit = Duration::from_secs(300);
        ctx.api
            .until(
                day,
                limit,
                "store days with late transactions closing",
                closed,
            )
            .await
            .map_err(RunError::Run)?;
    }
    for h in held.drain(..) {
        for e in &h.events {
            trader.oracle.apply(&e.event);
        }
        m.late_events += h.events.len() as u64;
        last = last.max(publish(&trader.js, systems, h.events).await?);
    }
    Ok(last)
}

/// Once the refused stores' days so far are posted and every refusal is a dead letter, the
/// ERP side is fixed and every refused document is re-driven over the API, a page at a time.
async fn fix_and_redrive(ctx: &Ctx<'_>, days: &[BusinessDay]) -> Result<Redriven, RunError> {
    let refused = &ctx.stage.spec.faults.erp_reject_locations;
    let (Some(sim), Some(erp)) = (ctx.stage.sims.first(), ctx.stage.spec.erp.first()) else {
        return Ok(Redriven::default());
    };
    if refused.is_empty() {
        return Ok(Redriven::default());
    }
    let limit = Duration::from_secs(300);
    for day in days {
        let answered = |rows: &std::collections::HashMap<String, serde_json::Value>| {
            refused.iter().all(|s| {
                rows.get(s).is_some_and(|r| {
                    r["state"] == "posted" && endpoint(r, &erp.name)["pending"]["documents"] == 0
                })
            })
        };
        ctx.api
            .until(*day, limit, "the refused store's days answered", answered)
            .await
            .map_err(RunError::Run)?;
    }
    let js = &ctx.pipeline.shared.js;
    let stream = ctx.pipeline.shared.config.streams.dead_letters.clone();
    let began = Instant::now();
    loop {
        let letters = match js.get_stream(&stream).await {
            Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
            Err(_) => 0,
        };
        if letters >= sim.stats().rejected {
            break;
        }
        if began.elapsed() > limit {
            return Err(RunError::Run(
                "refusals did not reach the dead letters".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fix = json!({ "locations": [] });
    let url = format!("{}/api/v1/admin/reject-locations", sim.base_url());
    let (status, _) = ctx.api.post(&url, &fix).await.map_err(RunError::Run)?;
    if status != 200 {
        return Err(RunError::Run(format!("the ERP-side fix answered {status}")));
    }
    let mut out = Redriven {
        fixed_at: Some(Instant::now()),
        ..Redriven::default()
    };
    for location in refused {
        redrive_location(ctx, location, &mut out).await?;
    }
    Ok(out)
}

/// Re-drives the `erp` stage's letters of `location`, up to 1,000 a request, until none is
/// left after the last one sent.
async fn redrive_location(
    ctx: &Ctx<'_>,
    location: &str,
    out: &mut Redriven,
) -> Result<(), RunError> {
    let url = format!("{}/v1/dlq/redrive", ctx.api.base());
    let mut after = 0u64;
    loop {
        let body = json!({
            "filter": format!("stage=erp&location={location}&after={after}&limit=1000"),
            "by": "month-end scenario",
        });
        let (status, answer) = ctx.api.post(&url, &body).await.map_err(RunError::Run)?;
        if status == 400 {
            return Ok(()); // the filter found nothing more
        }
        if status != 200 {
            return Err(RunError::Run(format!(
                "re-drive answered {status}: {answer}"
            )));
        }
        let sent = answer["redriven"].as_array().cloned().unwrap_or_default();
        let failed = answer["failed"].as_array().cloned().unwrap_or_default();
        out.letters += sent.len() as u64;
        out.failed
            .extend(failed.iter().map(|f| f.to_string()).take(20));
        let seqs = sent
            .iter()
            .map(|r| &r["letter"])
            .chain(failed.iter().map(|f| &f["letter"]));
        let Some(last) = seqs.filter_map(|v| v.as_u64()).max() else {
            return Ok(());
        };
        if sent.len() + failed.len() < 1000 {
            return Ok(());
        }
        after = last;
    }
}

/// The reconciliation entry of `endpoint` in a store day's row.
pub fn endpoint<'a>(row: &'a serde_json::Value, endpoint: &str) -> &'a serde_json::Value {
    row["erp"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["endpoint"] == endpoint))
        .unwrap_or(&serde_json::Value::Null)
}

/// Waits until every store day reads `accepted` with nothing pending at any endpoint and its
/// late transactions counted.
async fn all_accepted(ctx: &Ctx<'_>, m: &Month, limit: Duration) -> Result<(), RunError> {
    for day in &m.days {
        let want: Vec<(&str, u64)> = m
            .booked
            .iter()
            .filter(|b| b.day == *day)
            .map(|b| (b.store.as_str(), b.late))
            .collect();
        let done = |rows: &std::collections::HashMap<String, serde_json::Value>| {
            want.iter().all(|(store, late)| {
                rows.get(*store).is_some_and(|r| {
                    r["state"] == "accepted"
                        && r["late_events"] == *late
                        && r["erp"]
                            .as_array()
                            .is_some_and(|a| a.iter().all(|e| e["pending"]["documents"] == 0))
                })
            })
        };
        ctx.api
            .until(*day, limit, "every store day accepted", done)
            .await
            .map_err(RunError::Run)?;
    }
    Ok(())
}
