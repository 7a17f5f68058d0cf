//! Capture and replay of the events stream.
//!
//! `retailflow capture` reads a range of the events stream (by sequence or time) with an
//! ordered consumer and writes it to a file; `retailflow replay` publishes it again, to the
//! same subjects or under another prefix, in the captured order (so per-source order holds),
//! at the original pace scaled by `--speed` or as fast as possible.
//!
//! File format: the line `retailflow-capture 1`, a JSON header line, then records, each a
//! 4-byte big-endian length and a MessagePack `Record`.

use anyhow::{Context, Result, bail};
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const MAGIC: &str = "retailflow-capture 1";

#[derive(Debug, Serialize, Deserialize)]
pub struct Header {
    pub stream: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub messages: u64,
    pub captured_at_ms: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub subject: String,
    pub headers: Vec<(String, String)>,
    /// When JetStream stored it (Unix ms): the pace replay reproduces.
    pub stored_ms: i64,
    pub payload: ByteBuf,
}

#[derive(clap::Args)]
pub struct CaptureArgs {
    /// Output file.
    #[arg(long, short)]
    pub out: PathBuf,
    /// NATS server (default: $NATS_URL or 127.0.0.1:4222).
    #[arg(long)]
    pub nats: Option<String>,
    #[arg(long, default_value = "RETAIL_EVENTS")]
    pub stream: String,
    /// First stream sequence (default: the stream's first).
    #[arg(long)]
    pub from_seq: Option<u64>,
    /// Last stream sequence (default: the stream's last at start).
    #[arg(long)]
    pub to_seq: Option<u64>,
    /// Start at this time instead (RFC 3339, e.g. 2026-11-27T09:00:00Z).
    #[arg(long)]
    pub since: Option<String>,
    /// Stop after this time (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
}

#[derive(clap::Args)]
pub struct ReplayArgs {
    pub file: PathBuf,
    /// `max`, or a factor like `1x`, `10x`, `0.5x` of the captured pace.
    #[arg(long, default_value = "max")]
    pub speed: String,
    /// NATS server (default: $NATS_URL or 127.0.0.1:4222).
    #[arg(long)]
    pub nats: Option<String>,
    /// Replace the subjects' leading `retail.v1` with this prefix (e.g. `replay.v1`).
    #[arg(long)]
    pub subject_prefix: Option<String>,
    /// Create this stream for the (prefixed) subjects when it does not exist.
    #[arg(long)]
    pub stream: Option<String>,
    /// Drop `Nats-Msg-Id` so JetStream does not deduplicate against the original run.
    #[arg(long)]
    pub strip_msg_id: bool,
}

fn nats_url(flag: &Option<String>) -> String {
    flag.clone()
        .or_else(|| std::env::var("NATS_URL").ok())
        .unwrap_or_else(|| "127.0.0.1:4222".into())
}

fn parse_time(s: &str) -> Result<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("{s:?} is not an RFC 3339 time like 2026-11-27T09:00:00Z"))
}

/// Parses `max` (None) or `<factor>x`.
pub fn parse_speed(s: &str) -> Result<Option<f64>> {
    if s == "max" {
        return Ok(None);
    }
    let f: f64 = s
        .trim_end_matches('x')
        .parse()
        .with_context(|| format!("--speed {s:?}: use max or a factor like 10x"))?;
    if !(f > 0.0 && f.is_finite()) {
        bail!("--speed {s:?}: the factor must be positive");
    }
    Ok(Some(f))
}

pub async fn capture(args: CaptureArgs) -> Result<ExitCode> {
    let url = nats_url(&args.nats);
    let client = async_nats::connect(retailflow::bus::servers(&url))
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let js = jetstream::new(client);
    let mut stream = js
        .get_stream(&args.stream)
        .await
        .with_context(|| format!("stream {}", args.stream))?;
    let info = stream.info().await?.clone();
    let last = args
        .to_seq
        .unwrap_or(info.state.last_sequence)
        .min(info.state.last_sequence);
    let until = args.until.as_deref().map(parse_time).transpose()?;
    let deliver = match (&args.since, args.from_seq) {
        (Some(t), _) => consumer::DeliverPolicy::ByStartTime {
            start_time: parse_time(t)?,
        },
        (None, Some(seq)) => consumer::DeliverPolicy::ByStartSequence {
            start_sequence: seq,
        },
        (None, None) => consumer::DeliverPolicy::All,
    };
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: deliver,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut records = Vec::new();
    let mut bytes = 0usize;
    loop {
        let msg = match tokio::time::timeout(Duration::from_secs(5), messages.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => bail!("reading the stream: {e}"),
            _ => break,
        };
        let meta = msg
            .info()
            .map_err(|e| anyhow::anyhow!("message info: {e}"))?;
        let seq = meta.stream_sequence;
        if seq > last || until.is_some_and(|u| meta.published > u) {
            break;
        }
        let stored_ms = (meta.published.unix_timestamp_nanos() / 1_000_000) as i64;
        let headers = msg
            .headers
            .iter()
            .flat_map(|h| h.iter())
            .flat_map(|(k, vs)| {
                vs.iter()
                    .map(move |v| (k.to_string(), v.as_str().to_string()))
            })
            .collect();
        bytes += msg.payload.len();
        records.push(Record {
            seq,
            subject: msg.subject.to_string(),
            headers,
            stored_ms,
            payload: ByteBuf::from(msg.payload.to_vec()),
        });
        if seq >= last {
            break;
        }
    }
    let header = Header {
        stream: args.stream.clone(),
        first_seq: records.first().map_or(0, |r| r.seq),
        last_seq: records.last().map_or(0, |r| r.seq),
        messages: records.len() as u64,
        captured_at_ms: retailflow::snapshot::ticker::now_ms(),
    };
    let file = std::fs::File::create(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut w = BufWriter::new(file);
    writeln!(w, "{MAGIC}")?;
    writeln!(w, "{}", serde_json::to_string(&header)?)?;
    for r in &records {
        let b = rmp_serde::to_vec_named(r)?;
        w.write_all(&(b.len() as u32).to_be_bytes())?;
        w.write_all(&b)?;
    }
    w.flush()?;
    println!(
        "captured {} messages ({} to {}, {:.1} MB of payload) into {}",
        header.messages,
        header.first_seq,
        header.last_seq,
        bytes as f64 / 1e6,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Reads a capture file.
pub fn read(path: &PathBuf) -> Result<(Header, Vec<Record>)> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut r = BufReader::new(file);
    let mut line = String::new();
    r.read_line(&mut line)?;
    if line.trim_end() != MAGIC {
        bail!(
            "{} is not a retailflow capture (first line {:?})",
            path.display(),
            line.trim_end()
        );
    }
    line.clear();
    r.read_line(&mut line)?;
    let header: Header = serde_json::from_str(&line).context("capture header")?;
    let mut records = Vec::with_capacity(header.messages as usize);
    let mut len = [0u8; 4];
    loop {
        match r.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        }
        let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
        r.read_exact(&mut buf).context("truncated record")?;
        records.push(rmp_serde::from_slice(&buf).context("corrupt record")?);
    }
    if records.len() as u64 != header.messages {
        bail!(
            "{} holds {} records, its header says {}",
            path.display(),
            records.len(),
            header.messages
        );
    }
    Ok((header, records))
}

/// Applies `--subject-prefix`.
pub fn rename(subject: &str, prefix: Option<&str>) -> String {
    match prefix {
        Some(p) => match subject.strip_prefix(retailflow::domain::subject::ROOT) {
            Some(rest) => format!("{p}{rest}"),
            None => subject.to_string(),
        },
        None => subject.to_string(),
    }
}

pub async fn replay(args: ReplayArgs) -> Result<ExitCode> {
    let speed = parse_speed(&args.speed)?;
    let (header, records) = read(&args.file)?;
    let url = nats_url(&args.nats);
    let client = async_nats::connect(retailflow::bus::servers(&url))
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let js = jetstream::ContextBuilder::new()
        .max_ack_inflight(8192)
        .build(client);
    if let Some(name) = &args.stream {
        let prefix = args
            .subject_prefix
            .clone()
            .unwrap_or_else(|| retailflow::domain::subject::ROOT.into());
        if js.get_stream(name).await.is_err() {
            js.create_stream(jetstream::stream::Config {
                name: name.clone(),
                subjects: vec![format!("{prefix}.>")],
                ..Default::default()
            })
            .await
            .with_context(|| format!("creating stream {name} for {prefix}.>"))?;
        }
    }
    let first_ms = records.first().map_or(0, |r| r.stored_ms);
    let start = Instant::now();
    let mut acks = futures::stream::FuturesOrdered::new();
    for r in &records {
        if let Some(f) = speed {
            let due =
                Duration::from_secs_f64(((r.stored_ms - first_ms).max(0) as f64 / 1000.0) / f);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let mut headers = async_nats::HeaderMap::new();
        for (k, v) in &r.headers {
            if args.strip_msg_id && k.eq_ignore_ascii_case("Nats-Msg-Id") {
                continue;
            }
            // A capture file is input too: async-nats panics on a name or value it refuses.
            let name = k
                .parse::<async_nats::HeaderName>()
                .map_err(|_| anyhow::anyhow!("capture holds an invalid header name {k:?}"))?;
            let value = v
                .parse::<async_nats::HeaderValue>()
                .map_err(|_| anyhow::anyhow!("capture holds an invalid value for header {k}"))?;
            headers.append(name, value);
        }
        let subject = rename(&r.subject, args.subject_prefix.as_deref());
        let ack = js
            .publish_with_headers(subject.clone(), headers, r.payload.to_vec().into())
            .await
            .with_context(|| format!("publishing to {subject}"))?;
        acks.push_back(std::future::IntoFuture::into_future(ack));
        if acks.len() >= 4096 {
            if let Some(a) = acks.next().await {
                a.context("no stream stored a replayed message (does one capture the subjects?)")?;
            }
        }
    }
    while let Some(a) = acks.next().await {
        a.context("no stream stored a replayed message (does one capture the subjects?)")?;
    }
    let took = start.elapsed();
    println!(
        "replayed {} messages (captured {} to {}) in {:.1} s ({:.0}/s)",
        records.len(),
        header.first_seq,
        header.last_seq,
        took.as_secs_f64(),
        records.len() as f64 / took.as_secs_f64().max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speeds_and_prefixes() {
        assert_eq!(parse_speed("max").unwrap(), None);
        assert_eq!(parse_speed("10x").unwrap(), Some(10.0));
        assert_eq!(parse_speed("0.5x").unwrap(), Some(0.5));
        assert!(parse_speed("fast").is_err());
        assert!(parse_speed("-1x").is_err());
        assert_eq!(
            rename("retail.v1.pos.S1.sale", Some("replay.v1")),
            "replay.v1.pos.S1.sale"
        );
        assert_eq!(
            rename("retail.v1.pos.S1.sale", None),
            "retail.v1.pos.S1.sale"
        );
    }
}
