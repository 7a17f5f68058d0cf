//! `erp-sim`: the ERP simulator as a standalone server (`erp-sim --help`).

use clap::Parser;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "erp-sim", about = "A simulated, rate-limited ERP endpoint")]
struct Cli {
    #[command(flatten)]
    args: erp_sim::cli::ErpSimArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match erp_sim::cli::run(Cli::parse().args).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("erp-sim: {error:#}");
            ExitCode::FAILURE
        }
    }
}
