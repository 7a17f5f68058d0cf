//! Command-line interface. Each command parses its arguments and calls the library; `anyhow`
//! is used here and nowhere on the data path.

use crate::config::{Config, LogFormat};
use crate::supervise::pipeline::Pipeline;
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

mod dlq;

#[derive(Parser)]
#[command(
    name = "retailflow",
    version,
    about = "Retail event processor: JetStream in, available-to-promise and ERP postings out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Run {
        /// Configuration file (TOML); see `retailflow config` for every field.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print the default configuration as TOML.
    Config {
        /// Print the reference instead: a markdown table of every field with its default and
        /// meaning, generated from the config structs' doc comments (docs/CONFIG.md holds it).
        #[arg(long)]
        doc: bool,
    },
    /// Run the ERP simulator: the `erp-sim` binary beside this one, with these arguments.
    #[command(disable_help_flag = true)]
    ErpSim(Passed),
    /// Publish events from a JSON-lines file (one envelope per line) into JetStream.
    Publish {
        file: PathBuf,
        /// NATS server (default: $NATS_URL or 127.0.0.1:4222).
        #[arg(long)]
        nats: Option<String>,
        /// System used in the subject when the source does not start with a known one.
        #[arg(long, default_value = "pos")]
        system: String,
    },
    /// The demo, run by `retailflow-lab demo` beside this binary.
    #[command(disable_help_flag = true)]
    Demo(Passed),
    /// Scenarios (generated peaks, verified and reported), run by `retailflow-lab scenario`.
    #[command(disable_help_flag = true)]
    Scenario(Passed),
    /// Review dead letters and send them back once their cause is fixed (every re-drive is
    /// recorded in the audit stream).
    Dlq {
        /// Configuration file (TOML), for the NATS connection and the stream names.
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: dlq::Action,
    },
    /// Write a range of the events stream to a file (`retailflow-lab capture`).
    #[command(disable_help_flag = true)]
    Capture(Passed),
    /// Publish a captured file again (`retailflow-lab replay`).
    #[command(disable_help_flag = true)]
    Replay(Passed),
}

/// Arguments handed on untouched to the binary that runs a lab or simulator command.
#[derive(clap::Args)]
struct Passed {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<std::ffi::OsString>,
}

/// Runs `program` (a binary built beside this one) with `args` in place of this process.
fn hand_over(program: &str, first: &[&str], passed: Passed) -> Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let here = std::env::current_exe().context("cannot find this binary's path")?;
    let path = here.with_file_name(program);
    if !path.exists() {
        bail!(
            "{} is not built; `cargo build --release` builds it beside retailflow (or: cargo build --release -p {})",
            path.display(),
            if program == "erp-sim" {
                "erp-sim"
            } else {
                "retailflow-lab"
            }
        );
    }
    let error = std::process::Command::new(&path)
        .args(first)
        .args(passed.args)
        .exec();
    Err(error).with_context(|| format!("cannot run {}", path.display()))
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Interactive commands keep the console for their own output; RUST_LOG overrides.
    let quiet = matches!(cli.command, Command::Publish { .. } | Command::Dlq { .. });
    let handed = match cli.command {
        Command::ErpSim(p) => hand_over("erp-sim", &[], p),
        Command::Demo(p) => hand_over("retailflow-lab", &["demo"], p),
        Command::Scenario(p) => hand_over("retailflow-lab", &["scenario"], p),
        Command::Capture(p) => hand_over("retailflow-lab", &["capture"], p),
        Command::Replay(p) => hand_over("retailflow-lab", &["replay"], p),
        command => {
            let filter = if quiet {
                "warn,async_nats=error"
            } else {
                "info,async_nats=warn"
            };
            let format = match &command {
                Command::Run { config: Some(path) } => log_format(path),
                _ => LogFormat::Text,
            };
            return run_main_with(filter, format, dispatch(command));
        }
    };
    // Only reached when the other binary could not be started.
    if let Err(e) = handed {
        eprintln!("error: {e:#}");
    }
    ExitCode::FAILURE
}

/// The log format a configuration file asks for; text when it cannot be read (the command
/// then fails on it with the full message).
fn log_format(path: &std::path::Path) -> LogFormat {
    Config::load(path).map_or(LogFormat::Text, |c| c.telemetry.log_format)
}

/// Runs a command's future as a process's main: logging with `filter` (RUST_LOG overrides),
/// the main runtime, the error printed and turned into the exit code.
pub fn run_main(
    filter: &str,
    work: impl std::future::Future<Output = Result<ExitCode>>,
) -> ExitCode {
    run_main_with(filter, LogFormat::Text, work)
}

/// [`run_main`] with log lines in `format`.
pub fn run_main_with(
    filter: &str,
    format: LogFormat,
    work: impl std::future::Future<Output = Result<ExitCode>>,
) -> ExitCode {
    crate::telemetry::init_logging(filter, format);
    // The main runtime runs the command (the pipeline brings its own runtimes for the data path
    // and the API); short slices, so a scenario's publisher and sampler do not lag behind.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(crate::supervise::threads::short_slice)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(70);
        }
    };
    let code = match runtime.block_on(work) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // An interrupted command may leave a blocking task waiting on a thread that is never told
    // to stop (a scenario's query load); the process is ending anyway.
    runtime.shutdown_timeout(Duration::from_secs(10));
    code
}

async fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Run { config } => run(config).await,
        Command::Config { doc: false } => {
            print!("{}", toml::to_string_pretty(&Config::default())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Config { doc: true } => {
            print!("{}", crate::config::doc::markdown());
            Ok(ExitCode::SUCCESS)
        }
        Command::Publish { file, nats, system } => publish(file, nats, system).await,
        Command::Dlq { config, action } => dlq::run(load_config(config)?, action).await,
        Command::ErpSim(_)
        | Command::Demo(_)
        | Command::Scenario(_)
        | Command::Capture(_)
        | Command::Replay(_) => unreachable!("handed over before the runtime starts"),
    }
}

/// The configuration file, or the defaults with `$NATS_URL` when none is given.
fn load_config(config: Option<PathBuf>) -> Result<Config> {
    Ok(match config {
        Some(p) => Config::load(&p)?,
        None => {
            let mut c = Config::default();
            if let Ok(url) = std::env::var("NATS_URL") {
                if !url.is_empty() {
                    c.nats.url = url;
                    c.check()?;
                }
            }
            c
        }
    })
}

async fn run(config: Option<PathBuf>) -> Result<ExitCode> {
    let config = load_config(config)?;
    let mut pipeline = Pipeline::start(config)
        .await
        .context("starting retailflow")?;
    tracing::info!(http = ?pipeline.http_addr(), "retailflow running; ctrl-c or SIGTERM stops it gracefully");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        reason = pipeline.fatal() => {
            tracing::error!(%reason, "stopping");
            pipeline.stop_now().await;
            bail!("{reason}");
        }
    }
    tracing::info!("shutting down: final barrier, snapshot, release");
    let clean = pipeline.shutdown(Duration::from_secs(30)).await;
    tracing::info!(clean, "stopped");
    Ok(ExitCode::SUCCESS)
}

/// Reads JSON lines, validates each envelope, publishes it with `Nats-Msg-Id` = event id.
async fn publish(file: PathBuf, nats: Option<String>, system: String) -> Result<ExitCode> {
    let url = nats
        .or_else(|| std::env::var("NATS_URL").ok())
        .unwrap_or_else(|| "127.0.0.1:4222".into());
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let client = async_nats::connect(crate::bus::servers(&url))
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let js = async_nats::jetstream::new(client);
    let systems: Vec<String> = crate::config::StreamsConfig::default().systems;
    let (mut ok, mut bad) = (0u64, 0u64);
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let env: crate::domain::Envelope = match serde_json::from_str(line) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("line {}: not an event envelope: {e}", n + 1);
                bad += 1;
                continue;
            }
        };
        if let Err(e) = env.validate() {
            eprintln!(
                "line {}: invalid {} event {}: {e}",
                n + 1,
                env.event.kind(),
                env.id
            );
            bad += 1;
            continue;
        }
        let subject = env.subject(&systems, &system);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", env.id.as_str());
        headers.insert(
            crate::domain::codec::CONTENT_TYPE,
            crate::domain::codec::JSON,
        );
        let ack = js
            .publish_with_headers(subject.clone(), headers, line.to_string().into())
            .await
            .with_context(|| format!("line {}: publishing to {subject}", n + 1))?
            .await
            .with_context(|| {
                format!(
                    "line {}: no stream took {subject} (is retailflow's events stream created?)",
                    n + 1
                )
            })?;
        if ack.duplicate {
            println!(
                "{subject} seq {} (duplicate, dropped by JetStream)",
                ack.sequence
            );
        } else {
            println!("{subject} seq {}", ack.sequence);
        }
        ok += 1;
    }
    println!("published {ok}, refused {bad}");
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
