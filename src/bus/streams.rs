//! Creates the streams retailflow needs, or verifies existing ones. An existing stream whose
//! configuration differs in a way that matters is never changed: startup stops and says what
//! differs. Two exceptions are set in place, and the log says so. The byte limit
//! (`max_bytes`), added later: a stream that already holds less than the configured limit gets
//! it; one that holds more stops startup, since applying it would delete events. And the events
//! stream's sources (`streams.sources`, stores on leaf nodes): the configured list replaces the
//! stream's, so a store is added or removed by a restart. JetStream keeps each remaining
//! source's position across the update.

use super::BusError;
use crate::config::{Storage, StreamsConfig};
use crate::domain::subject;
use async_nats::jetstream::{self, stream};
use std::time::Duration;

pub fn storage(s: Storage) -> stream::StorageType {
    match s {
        Storage::File => stream::StorageType::File,
        Storage::Memory => stream::StorageType::Memory,
    }
}

/// The events stream's sources: each configured stream through its domain's API prefix.
///
/// `external.api` is set here rather than through async-nats's `Source::domain`, which is sent
/// to the server as a field of its own that strict servers (2.12 and later) refuse. Only the
/// producers' systems are taken (one subject transform each, mapping a subject to itself,
/// which JetStream treats as a filter): a store's stream could hold anything, and retailflow's
/// own subjects (`retail.v1.api`, `retail.v1.ctl`) must not enter from outside. A sourced
/// message keeps its subject and headers (`Nats-Msg-Id` included), so ingest reads it exactly
/// as if the till had published at the hub.
pub fn sources(cfg: &StreamsConfig) -> Option<Vec<stream::Source>> {
    if cfg.sources.is_empty() {
        return None;
    }
    let transforms: Vec<stream::SubjectTransform> = cfg
        .systems
        .iter()
        .filter(|s| !subject::OWN_SYSTEMS.contains(&s.as_str()))
        .map(|s| {
            let subjects = format!("{}.{s}.>", subject::ROOT);
            stream::SubjectTransform {
                source: subjects.clone(),
                destination: subjects,
            }
        })
        .collect();
    Some(
        cfg.sources
            .iter()
            .map(|s| stream::Source {
                name: s.stream.clone(),
                external: Some(stream::External {
                    api_prefix: s.api_prefix(),
                    delivery_prefix: None,
                }),
                subject_transforms: transforms.clone(),
                ..Default::default()
            })
            .collect(),
    )
}

/// What identifies a source for comparison: its stream, its API prefix and its transforms. The
/// server may fill in other fields when it answers.
fn source_key(s: &stream::Source) -> String {
    let api = s.external.as_ref().map_or("", |e| e.api_prefix.as_str());
    let mut transforms: Vec<String> = s
        .subject_transforms
        .iter()
        .map(|t| format!("{}->{}", t.source, t.destination))
        .collect();
    transforms.sort();
    format!(
        "{} via {api} [{}]{}",
        s.name,
        transforms.join(", "),
        s.filter_subject
            .as_deref()
            .map_or(String::new(), |f| format!(" filter {f}"))
    )
}

/// The sources in `want` that `have` lacks, and those in `have` that `want` lacks.
pub fn source_changes(have: &stream::Config, want: &stream::Config) -> (Vec<String>, Vec<String>) {
    let keys = |c: &stream::Config| -> Vec<String> {
        let mut k: Vec<String> = c.sources.iter().flatten().map(source_key).collect();
        k.sort();
        k
    };
    let (have, want) = (keys(have), keys(want));
    let added = want.iter().filter(|k| !have.contains(k)).cloned().collect();
    let removed = have.iter().filter(|k| !want.contains(k)).cloned().collect();
    (added, removed)
}

/// The three stream configurations derived from the settings.
pub fn desired(cfg: &StreamsConfig) -> Vec<stream::Config> {
    let events = stream::Config {
        name: cfg.events.clone(),
        description: Some("retailflow: retail events, the source of truth".into()),
        subjects: cfg.event_subjects(),
        retention: stream::RetentionPolicy::Limits,
        max_age: cfg.events_max_age,
        max_bytes: cfg.events_max_bytes,
        duplicate_window: cfg.duplicate_window,
        storage: storage(cfg.storage),
        num_replicas: cfg.replicas,
        sources: sources(cfg),
        ..Default::default()
    };
    let postings = stream::Config {
        name: cfg.postings.clone(),
        description: Some("retailflow: postings outbox, removed once the ERP answered".into()),
        subjects: vec![format!("{}.>", subject::POSTINGS)],
        retention: stream::RetentionPolicy::WorkQueue,
        discard: stream::DiscardPolicy::New,
        max_messages: cfg.postings_max_messages,
        duplicate_window: cfg.duplicate_window,
        storage: storage(cfg.storage),
        num_replicas: cfg.replicas,
        ..Default::default()
    };
    let dead = stream::Config {
        name: cfg.dead_letters.clone(),
        description: Some("retailflow: dead letters with reasons".into()),
        subjects: vec![format!("{}.>", subject::DLQ)],
        retention: stream::RetentionPolicy::Limits,
        max_age: Duration::from_secs(90 * 24 * 3600),
        max_bytes: cfg.dead_letters_max_bytes,
        storage: storage(cfg.storage),
        num_replicas: cfg.replicas,
        ..Default::default()
    };
    vec![events, postings, dead]
}

/// Lists the differences that matter between an existing and a desired stream.
pub fn differences(have: &stream::Config, want: &stream::Config) -> Vec<String> {
    let mut d = Vec::new();
    let mut hs = have.subjects.clone();
    let mut ws = want.subjects.clone();
    hs.sort();
    ws.sort();
    if hs != ws {
        d.push(format!("subjects {hs:?} (configured {ws:?})"));
    }
    if have.retention != want.retention {
        d.push(format!(
            "retention {:?} (configured {:?})",
            have.retention, want.retention
        ));
    }
    if have.storage != want.storage {
        d.push(format!(
            "storage {:?} (configured {:?})",
            have.storage, want.storage
        ));
    }
    if have.num_replicas.max(1) != want.num_replicas.max(1) {
        d.push(format!(
            "replicas {} (configured {})",
            have.num_replicas, want.num_replicas
        ));
    }
    if have.duplicate_window != want.duplicate_window && !want.duplicate_window.is_zero() {
        d.push(format!(
            "duplicate_window {:?} (configured {:?})",
            have.duplicate_window, want.duplicate_window
        ));
    }
    if have.max_age != want.max_age {
        d.push(format!(
            "max_age {:?} (configured {:?})",
            have.max_age, want.max_age
        ));
    }
    d
}

/// Creates missing streams, verifies existing ones.
pub async fn ensure(js: &jetstream::Context, cfg: &StreamsConfig) -> Result<(), BusError> {
    for want in desired(cfg) {
        match js.get_stream(&want.name).await {
            Ok(mut s) => {
                let info = s.info().await.map_err(BusError::js)?;
                let diff = differences(&info.config, &want);
                if !diff.is_empty() {
                    return Err(BusError::StreamConflict {
                        stream: want.name.clone(),
                        differences: diff.join("; "),
                    });
                }
                let (added, removed) = source_changes(&info.config, &want);
                // No limit reads back as -1 from the server and is 0 in a stream config.
                let limit_changed = info.config.max_bytes.max(0) != want.max_bytes.max(0);
                if limit_changed && want.max_bytes > 0 && info.state.bytes > want.max_bytes as u64 {
                    return Err(BusError::StreamConflict {
                        stream: want.name.clone(),
                        differences: format!(
                            "max_bytes {} holds {} bytes, more than the configured {}: setting it would delete the oldest messages; raise the setting or trim the stream first",
                            info.config.max_bytes, info.state.bytes, want.max_bytes
                        ),
                    });
                }
                let sources_changed = !added.is_empty() || !removed.is_empty();
                if !limit_changed && !sources_changed {
                    continue;
                }
                // One update with both changes: two, each from the stream's old configuration,
                // would undo each other.
                let mut config = info.config.clone();
                config.max_bytes = want.max_bytes;
                config.sources = want.sources.clone();
                js.update_stream(&config)
                    .await
                    .map_err(|e| BusError::JetStream(format!("updating {}: {e}", want.name)))?;
                if limit_changed {
                    tracing::info!(
                        stream = %want.name,
                        from = info.config.max_bytes,
                        to = want.max_bytes,
                        "set the stream's byte limit"
                    );
                }
                if sources_changed {
                    tracing::info!(
                        stream = %want.name,
                        ?added,
                        ?removed,
                        "set the stream's sources"
                    );
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(ref j)
                        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                ) =>
            {
                js.create_stream(want.clone()).await.map_err(|e| {
                    BusError::JetStream(format!("creating stream {}: {e}", want.name))
                })?;
                tracing::info!(stream = %want.name, "created stream");
            }
            Err(e) => {
                return Err(BusError::JetStream(format!(
                    "looking up {}: {e}",
                    want.name
                )));
            }
        }
    }
    Ok(())
}
