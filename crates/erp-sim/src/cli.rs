//! `retailflow erp-sim`: the simulator as a standalone server.

use super::{ErpSim, ErpSimConfig};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ErpSimArgs {
    /// TOML file with `ErpSimConfig` fields; flags below override it.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Listen address.
    #[arg(long)]
    pub listen: Option<String>,
    /// Requests allowed per sliding window.
    #[arg(long)]
    pub limit_requests: Option<u32>,
    /// Sliding window, e.g. 300s.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub limit_window: Option<std::time::Duration>,
    /// Requests in flight at most.
    #[arg(long)]
    pub max_concurrent: Option<usize>,
    /// Added latency range in milliseconds, e.g. 5..40.
    #[arg(long)]
    pub latency_ms: Option<String>,
    /// Share of requests failing with 503, per mille.
    #[arg(long)]
    pub error_rate_permille: Option<u32>,
    /// Refuse documents of this location with 400 (repeatable).
    #[arg(long = "reject-location")]
    pub reject_locations: Vec<String>,
}

pub fn build_config(args: &ErpSimArgs) -> Result<ErpSimConfig> {
    let mut cfg = match &args.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", p.display()))?
        }
        None => ErpSimConfig::default(),
    };
    if let Some(v) = &args.listen {
        cfg.listen = v.clone();
    }
    if let Some(v) = args.limit_requests {
        cfg.limit_requests = v;
    }
    if let Some(v) = args.limit_window {
        cfg.limit_window = v;
    }
    if let Some(v) = args.max_concurrent {
        cfg.max_concurrent = v;
    }
    if let Some(v) = &args.latency_ms {
        let (a, b) = v.split_once("..").unwrap_or((v.as_str(), v.as_str()));
        let ms = |s: &str| {
            s.trim()
                .parse::<u64>()
                .with_context(|| format!("--latency-ms {v:?}: expected e.g. 5..40"))
        };
        cfg.latency_min = std::time::Duration::from_millis(ms(a)?);
        cfg.latency_max = std::time::Duration::from_millis(ms(b)?);
    }
    if let Some(v) = args.error_rate_permille {
        cfg.error_rate_permille = v;
    }
    cfg.reject_locations
        .extend(args.reject_locations.iter().cloned());
    cfg.check().map_err(anyhow::Error::msg)?;
    Ok(cfg)
}

pub async fn run(args: ErpSimArgs) -> Result<ExitCode> {
    let cfg = build_config(&args)?;
    let sim = ErpSim::start(cfg.clone()).await?;
    println!(
        "ERP simulator on {}: {} requests per {:?}, {} concurrent. POST {} ; totals at {}/api/v1/totals ; stats at {}/api/v1/stats",
        sim.addr(),
        cfg.limit_requests,
        cfg.limit_window,
        cfg.max_concurrent,
        sim.postings_url(),
        sim.base_url(),
        sim.base_url()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    sim.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
