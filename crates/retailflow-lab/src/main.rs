//! `retailflow-lab`: scenarios, the demo, capture and replay.

use anyhow::Result;
use clap::{Parser, Subcommand};
use retailflow_lab::{capture, cli, demo};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "retailflow-lab",
    version,
    about = "retailflow's lab: generated peaks verified and reported, the demo, capture and replay"
)]
struct Lab {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bring everything up on this machine, trade a small day, show availability and the ERP's books.
    Demo(demo::DemoArgs),
    /// Scenarios: generated peaks with verification and reports.
    #[command(subcommand)]
    Scenario(cli::ScenarioCommand),
    /// Write a range of the events stream to a file.
    Capture(capture::CaptureArgs),
    /// Publish a captured file again, keeping per-source order, at a chosen speed.
    Replay(capture::ReplayArgs),
}

fn main() -> ExitCode {
    let lab = Lab::parse();
    // The lab keeps the console for its own output; RUST_LOG overrides.
    let filter = match lab.command {
        Command::Demo(_) | Command::Scenario(_) => "warn,async_nats=error",
        Command::Capture(_) | Command::Replay(_) => "info,async_nats=warn",
    };
    retailflow::cli::run_main(filter, dispatch(lab.command))
}

async fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Demo(args) => demo::run(args).await,
        Command::Scenario(cmd) => until_interrupted(cli::run(cmd)).await,
        Command::Capture(args) => capture::capture(args).await,
        Command::Replay(args) => capture::replay(args).await,
    }
}

/// Runs `work` unless ctrl-c or SIGTERM comes first. Then `work` is dropped where it stands:
/// the private nats-server it started is killed and its store directory (gigabytes after a
/// black-friday run) removed, as are the ERP simulators and the pipeline, instead of being
/// left to take CPU and disk from the next run.
async fn until_interrupted(
    work: impl std::future::Future<Output = Result<ExitCode>>,
) -> Result<ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let how = tokio::select! {
        r = work => return r,
        _ = tokio::signal::ctrl_c() => ("ctrl-c", 130),
        _ = term.recv() => ("SIGTERM", 143),
    };
    eprintln!(
        "interrupted by {}: the private nats-server, ERP simulators and pipeline were stopped and their temporary directories removed; no report was written",
        how.0
    );
    Ok(ExitCode::from(how.1))
}
