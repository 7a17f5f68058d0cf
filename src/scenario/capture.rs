//! Capture and replay of the events stream.

use anyhow::Result;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct CaptureArgs {}

#[derive(clap::Args)]
pub struct ReplayArgs {}

pub async fn capture(_args: CaptureArgs) -> Result<ExitCode> {
    anyhow::bail!("not yet")
}

pub async fn replay(_args: ReplayArgs) -> Result<ExitCode> {
    anyhow::bail!("not yet")
}
