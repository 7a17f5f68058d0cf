//! `retailflow scenario ...`.

use anyhow::Result;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum ScenarioCommand {}

pub async fn run(cmd: ScenarioCommand) -> Result<ExitCode> {
    match cmd {}
}
