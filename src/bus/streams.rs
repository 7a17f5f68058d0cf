//! Creates the streams retailflow needs, or verifies existing ones. An existing stream whose
//! configuration differs in a way that matters is never changed: startup stops and says what
//! differs. The one exception is the byte limit (`max_bytes`), added later: a stream that
//! already holds less than the configured limit gets it set in place (and the log says so);
//! one that holds more stops startup, since applying it would delete events.

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
                if info.config.max_bytes != want.max_bytes {
                    if want.max_bytes > 0 && info.state.bytes > want.max_bytes as u64 {
                        return Err(BusError::StreamConflict {
                            stream: want.name.clone(),
                            differences: format!(
                                "max_bytes {} holds {} bytes, more than the configured {}: setting it would delete the oldest messages; raise the setting or trim the stream first",
                                info.config.max_bytes, info.state.bytes, want.max_bytes
                            ),
                        });
                    }
                    let mut config = info.config.clone();
                    config.max_bytes = want.max_bytes;
                    js.update_stream(&config).await.map_err(|e| {
                        BusError::JetStream(format!("setting max_bytes on {}: {e}", want.name))
                    })?;
                    tracing::info!(
                        stream = %want.name,
                        from = info.config.max_bytes,
                        to = want.max_bytes,
                        "set the stream's byte limit"
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
