//! `retailflow scenario run FILE`.

use super::run::{RunOptions, run as run_scenario};
use super::spec::Scenario;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum ScenarioCommand {
    /// Run a scenario: generate, publish, verify against the oracle, measure, report.
    Run {
        /// Scenario file (TOML), e.g. scenarios/black-friday.toml.
        file: PathBuf,
        /// Run the scenario's small smoke version (what CI runs).
        #[arg(long)]
        smoke: bool,
        /// Also measure the raw JetStream drain ceiling with the same messages and report the
        /// pipeline's drain rate as a ratio of it.
        #[arg(long)]
        ceiling: bool,
        /// Directory for report.json, report.html and chart.png.
        #[arg(long, default_value = "out")]
        out: PathBuf,
        /// Use this NATS server instead of a private one (it must not hold retailflow's streams).
        #[arg(long)]
        nats: Option<String>,
        /// No progress line.
        #[arg(long)]
        quiet: bool,
        /// Chaos: run the pipeline as a separate process, SIGKILL and restart it this many
        /// times at random moments, kill and restart nats-server once, stop it with SIGTERM,
        /// then verify the books exactly.
        #[arg(long)]
        chaos_kills: Option<u32>,
        /// Chaos: nats-server kill/restart cycles after the load is published.
        #[arg(long, default_value_t = 1)]
        chaos_nats_restarts: u32,
    },
    /// Recovery: restore a snapshot of many positions and replay a long tail, timed.
    Recovery(super::recovery_bench::RecoveryArgs),
    /// Memory: resident size per (location, sku) position of a large chain in steady state,
    /// measured on a `retailflow run` process of its own.
    Memory {
        #[command(flatten)]
        on: ProcessArgs,
        /// Instead of running the pipeline, build the same state in this process and print
        /// what each structure holds.
        #[arg(long)]
        breakdown: bool,
    },
    /// Query capacity: the same closed-loop shoppers against one replica and against
    /// several, each count on a fresh 3-node cluster.
    Capacity(ProcessArgs),
    /// Reservations: retailflow against a PostgreSQL conditional UPDATE, side by side.
    Reserve {
        /// Scenario file (TOML), e.g. scenarios/reserve-vs-postgres.toml.
        file: PathBuf,
        /// Run the small smoke version (what CI runs).
        #[arg(long)]
        smoke: bool,
        /// Directory for report.json.
        #[arg(long, default_value = "out")]
        out: PathBuf,
    },
}

/// A scenario run against `retailflow run` processes of its own.
#[derive(clap::Args)]
pub struct ProcessArgs {
    /// Scenario file (TOML): scenarios/large-chain.toml for `memory`,
    /// scenarios/query-capacity.toml for `capacity`.
    file: PathBuf,
    /// Run the small smoke version (no thresholds).
    #[arg(long)]
    smoke: bool,
    /// Directory for report.json and the processes' configurations and logs.
    #[arg(long, default_value = "out")]
    out: PathBuf,
    /// The `retailflow` binary to run (default: the one beside this binary).
    #[arg(long)]
    binary: Option<PathBuf>,
}

impl ProcessArgs {
    fn binary(&self) -> Result<PathBuf> {
        match &self.binary {
            Some(b) => Ok(b.clone()),
            None => super::memory_bench::sibling_binary(),
        }
    }
}

pub async fn run(cmd: ScenarioCommand) -> Result<ExitCode> {
    match cmd {
        ScenarioCommand::Recovery(args) => {
            let report = super::recovery_bench::run(&args).await?;
            print!("{}", super::recovery_bench::summary(&report, &args.out));
            Ok(if report.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        ScenarioCommand::Capacity(on) => capacity(on).await,
        ScenarioCommand::Memory { on, breakdown } => memory(on, breakdown).await,
        ScenarioCommand::Reserve { file, smoke, out } => {
            let spec = super::reserve_bench::ReserveSpec::load(&file)?;
            let out = out.join(if smoke {
                format!("{}-smoke", spec.name)
            } else {
                spec.name.clone()
            });
            let report = super::reserve_bench::run(&spec, smoke, &out).await?;
            print!("{}", super::reserve_bench::summary(&report));
            println!("report: {}", out.join("report.json").display());
            Ok(if report.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        ScenarioCommand::Run {
            file,
            smoke,
            ceiling,
            out,
            nats,
            quiet,
            chaos_kills,
            chaos_nats_restarts,
        } => {
            let spec = Scenario::load(&file)?;
            let name = file
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            let out = out.join(if smoke { format!("{name}-smoke") } else { name });
            let report = if spec.cluster.is_some() {
                // A failover run: replicas as processes of their own on a 3-node cluster.
                let mut opts = super::failover::FailoverOptions::new(
                    super::memory_bench::sibling_binary()?,
                    out.clone(),
                );
                opts.smoke = smoke;
                super::failover::run(&spec, &opts)
                    .await
                    .context("failover run")?
            } else if let Some(kills) = chaos_kills {
                let out = out.join("chaos");
                let mut opts = super::chaos::ChaosOptions::new(
                    super::memory_bench::sibling_binary()?,
                    kills,
                    out,
                );
                opts.smoke = smoke;
                opts.nats_restarts = chaos_nats_restarts;
                super::chaos::run(&spec, &opts).await.context("chaos run")?
            } else {
                let opts = RunOptions {
                    smoke,
                    ceiling,
                    out: out.clone(),
                    nats,
                    progress: !quiet,
                    settle_limit: None,
                };
                if spec.month_end.is_some() {
                    super::month_end::run(&spec, &opts)
                        .await
                        .context("month-end run")?
                } else {
                    run_scenario(&spec, &opts).await.context("scenario run")?
                }
            };
            let out = if chaos_kills.is_some() && spec.cluster.is_none() {
                out.join("chaos")
            } else {
                out
            };
            Ok(verdict(&report, &out))
        }
    }
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `scenario capacity`: fails if any shopper's query failed.
async fn capacity(on: ProcessArgs) -> Result<ExitCode> {
    let spec = super::capacity::CapacitySpec::load(&on.file)?;
    let spec = if on.smoke { spec.smoke() } else { spec };
    let out = on.out.join(&spec.name);
    let binary = on.binary()?;
    let report = super::capacity::run(&spec, &binary, &out).await?;
    print!("{}", super::capacity::summary(&report, &out));
    Ok(exit(report.steps.iter().all(|s| s.failed == 0)))
}

/// `scenario memory`: fails below the scenario's positions per GiB or on a wrong position.
async fn memory(on: ProcessArgs, breakdown: bool) -> Result<ExitCode> {
    let (smoke, out) = (on.smoke, &on.out);
    let spec = super::memory_bench::MemorySpec::load(&on.file)?;
    if breakdown {
        let spec = if smoke { spec.smoke() } else { spec };
        print!("{}", super::memory_bench::breakdown(&spec));
        return Ok(ExitCode::SUCCESS);
    }
    let (spec, out) = if smoke {
        let s = spec.smoke();
        let out = out.join(format!("{}-smoke", s.name));
        (s, out)
    } else {
        let out = out.join(&spec.name);
        (spec, out)
    };
    let binary = on.binary()?;
    let report = super::memory_bench::run(&spec, &binary, &out).await?;
    print!("{}", super::memory_bench::summary(&report, &out));
    Ok(exit(report.failures.is_empty()))
}

/// Prints the report's summary and where it is; the exit code names the outcome.
fn verdict(report: &super::report::Report, out: &std::path::Path) -> ExitCode {
    print!("{}", report.summary());
    println!(
        "  report: {}/report.html, report.json, chart.png",
        out.display()
    );
    if report.passed {
        return ExitCode::SUCCESS;
    }
    let failed: Vec<String> = report
        .failed_checks()
        .iter()
        .map(|c| c.name.clone())
        .collect();
    eprintln!("FAILED: {}", failed.join("; "));
    for p in &report.problems {
        eprintln!("FAILED: {p}");
    }
    ExitCode::FAILURE
}
