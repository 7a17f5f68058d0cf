//! `retailflow dlq list | show | redrive`: the dead-letter stream from a terminal.

use crate::config::Config;
use crate::dlq::audit::Redrive;
use crate::dlq::letters::{self, DeadLetter, Filter};
use crate::dlq::redrive::{self, RedriveError};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum Action {
    /// List dead letters, oldest first (one line each; `--json` for everything).
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Print JSON (the letters with their payloads, and the cursor of the next page).
        #[arg(long)]
        json: bool,
    },
    /// Show one letter: its headers' meaning, the error and the payload (JSON).
    Show { seq: u64 },
    /// Send letters back where they came from: by sequence, or every letter a filter finds.
    Redrive {
        seqs: Vec<u64>,
        #[command(flatten)]
        filter: FilterArgs,
        /// Re-drive every letter the filter finds (at most `--limit`), instead of naming them.
        #[arg(long)]
        all_matching: bool,
        /// Who asks, for the audit record (default: $USER).
        #[arg(long)]
        by: Option<String>,
        /// Send letters that were re-driven before once more.
        #[arg(long)]
        again: bool,
    },
}

#[derive(Args, Clone, Debug, Default)]
pub struct FilterArgs {
    /// `ingest`, `apply`, `aggregate` or `erp`.
    #[arg(long)]
    stage: Option<String>,
    /// `undecodable`, `invalid`, `late`, `rejected`, ... (docs/EVENTS.md).
    #[arg(long)]
    reason: Option<String>,
    /// Stored since: an RFC 3339 time or a span back from now (`2h`, `3d`).
    #[arg(long)]
    since: Option<String>,
    /// The location (store, DC, channel) the letter concerns.
    #[arg(long)]
    location: Option<String>,
    /// Start after this letter sequence (the previous page's cursor).
    #[arg(long, default_value_t = 0)]
    after: u64,
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

impl FilterArgs {
    fn filter(&self) -> Result<Filter> {
        Ok(Filter {
            stage: self.stage.clone(),
            reason: self.reason.clone(),
            since: self
                .since
                .as_deref()
                .map(letters::parse_since)
                .transpose()
                .map_err(anyhow::Error::msg)?,
            location: self.location.clone(),
            after: self.after,
            limit: self.limit,
        })
    }
}

pub async fn run(cfg: Config, action: Action) -> Result<ExitCode> {
    let client = crate::bus::connect(&cfg.nats, "retailflow-dlq")
        .await
        .context("connecting to NATS")?;
    let js = async_nats::jetstream::new(client);
    let stream = cfg.streams.dead_letters.clone();
    match action {
        Action::List { filter, json } => {
            let page = letters::list(&js, &stream, &filter.filter()?)
                .await
                .map_err(anyhow::Error::msg)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page)?);
            } else {
                for l in &page.items {
                    println!("{}", line(l));
                }
                if let Some(next) = page.next_after {
                    println!("(more: --after {next})");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Action::Show { seq } => match letters::show(&js, &stream, seq)
            .await
            .map_err(anyhow::Error::msg)?
        {
            Some(l) => {
                println!("{}", serde_json::to_string_pretty(&l)?);
                Ok(ExitCode::SUCCESS)
            }
            None => bail!("no dead letter {seq} in {stream}"),
        },
        Action::Redrive {
            mut seqs,
            filter,
            all_matching,
            by,
            again,
        } => {
            if seqs.is_empty() && !all_matching {
                bail!("name the letters to re-drive, or pass --all-matching with a filter");
            }
            let by = by
                .or_else(|| std::env::var("USER").ok())
                .filter(|b| !b.trim().is_empty())
                .context("say who asks with --by (no $USER)")?;
            let filter = if all_matching {
                Some(filter.filter()?)
            } else {
                None
            };
            let batch = redrive::Batch {
                letters: std::mem::take(&mut seqs),
                filter: filter.as_ref(),
                by: &by,
                again,
            };
            let outcomes = redrive::redrive_batch(&js, &cfg, batch).await?;
            report(outcomes)
        }
    }
}

/// Prints each letter's outcome; fails if any failed, with the bus fault that ended the batch
/// as the error.
fn report(outcomes: Vec<(u64, Result<Redrive, RedriveError>)>) -> Result<ExitCode> {
    let mut failed = 0;
    for (seq, outcome) in outcomes {
        match outcome {
            Ok(r) => println!(
                "letter {seq}: sent to {} (sequence {}{})",
                r.subject,
                r.republished_seq,
                if r.duplicate { ", already there" } else { "" }
            ),
            Err(e @ RedriveError::Bus(_)) => return Err(anyhow::Error::new(e)),
            Err(e) => {
                failed += 1;
                eprintln!("letter {seq}: {e}");
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One letter on one line: sequence, time, stage/reason, location, id, error.
fn line(l: &DeadLetter) -> String {
    format!(
        "{:>8}  {}  {}/{}  {}  {}  {}",
        l.seq,
        l.at,
        l.stage,
        l.reason,
        l.location.as_deref().unwrap_or("-"),
        l.id.as_deref().unwrap_or("-"),
        l.error
    )
}
