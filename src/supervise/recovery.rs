//! Recovery: the latest complete snapshot, checked against what the events stream still
//! holds, decoded into the state each actor starts from.

use super::wiring::Shared;
use crate::domain::LocationId;
use crate::snapshot::store::{SnapshotError, SnapshotStore};
use retailflow_core::aggregate::posting::PostingDoc;
use retailflow_core::aggregate::store::StoreAggregator;
use retailflow_core::apply::ledger::Ledger;
use retailflow_core::ingest::dedupe::Dedupe;
use retailflow_core::snapshot::format::{self, IngestState, Snapshot};

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(
        "the events stream {stream} no longer holds sequence {needed} (it starts at {first}): events after the snapshot at {snapshot} were removed by retention, so state cannot be rebuilt exactly. Restore the stream from backup or raise its max_age; retailflow will not start with a gap"
    )]
    RetentionGap {
        stream: String,
        needed: u64,
        first: u64,
        snapshot: u64,
    },
    #[error(
        "the events stream {stream} ends at sequence {last}, before the latest snapshot's sequence {snapshot}: the stream was replaced or purged since the snapshot. Delete the snapshot bucket to start from the stream as it is, or restore the stream; retailflow will not guess"
    )]
    StreamBehindSnapshot {
        stream: String,
        last: u64,
        snapshot: u64,
    },
    #[error(
        "no kept snapshot could be loaded; tried {tried}{listing}. Restore the snapshot bucket, or delete it and its -ptr KV bucket to rebuild from the events stream if it still holds every event"
    )]
    NoUsableSnapshot { tried: String, listing: String },
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Format(#[from] format::FormatError),
    #[error("events stream {0}: {1}")]
    Stream(String, String),
}

/// The state a pipeline generation starts from.
pub struct Restored {
    pub seq: u64,
    pub ledgers: Vec<Ledger>,
    pub stores: Vec<(LocationId, StoreAggregator)>,
    pub dedupe: Dedupe,
    pub keys: retailflow_core::ingest::keys::ReservationKeys,
    pub unreleased: Vec<PostingDoc>,
}

impl Restored {
    pub fn fresh(shared: &Shared) -> Restored {
        Restored {
            seq: 0,
            ledgers: (0..shared.config.shards.count)
                .map(|_| Ledger::new())
                .collect(),
            stores: Vec::new(),
            dedupe: Dedupe::new(shared.config.ingest.reorder_window),
            keys: Default::default(),
            unreleased: Vec::new(),
        }
    }
}

/// Checks that the stream holds every event after `seq`.
pub fn check_bounds(
    stream: &str,
    first: u64,
    last: u64,
    messages: u64,
    seq: u64,
) -> Result<(), RecoveryError> {
    if seq > last {
        return Err(RecoveryError::StreamBehindSnapshot {
            stream: stream.to_string(),
            last,
            snapshot: seq,
        });
    }
    // With no messages left after `seq`, first is last + 1: nothing is missing.
    let needed = seq + 1;
    if messages > 0 && first > needed {
        return Err(RecoveryError::RetentionGap {
            stream: stream.to_string(),
            needed,
            first,
            snapshot: seq,
        });
    }
    Ok(())
}

/// A snapshot's parts, decoded.
struct Parts {
    ledgers: Vec<Ledger>,
    stores: Vec<(LocationId, StoreAggregator)>,
    ingest: IngestState,
}

fn decode_parts(snap: &Snapshot) -> Result<Parts, format::FormatError> {
    Ok(Parts {
        ledgers: snap
            .shards
            .iter()
            .map(|b| format::decode_part::<Ledger>(b))
            .collect::<Result<_, _>>()?,
        stores: snap
            .stores
            .iter()
            .map(|(l, b)| Ok((l.clone(), format::decode_part::<StoreAggregator>(b)?)))
            .collect::<Result<_, format::FormatError>>()?,
        ingest: format::decode_part(&snap.ingest)?,
    })
}

/// The newest kept snapshot that loads and decodes, trying the one the pointer names first.
/// Starting from an older one is exact: state is a function of the stream, so replay from its
/// sequence reaches the same state (the stream must still hold the events after it, checked
/// by the caller). A shard-count mismatch is a configuration error, not damage: no fallback.
async fn load_newest_usable(
    shared: &Shared,
    store: &SnapshotStore,
) -> Result<Option<(Snapshot, Parts)>, RecoveryError> {
    let shards = shared.config.shards.count;
    let (names, list_error) = store.candidates().await?;
    let mut skipped: Vec<String> = Vec::new();
    for name in &names {
        let attempt = match store.load(name, shards).await {
            Ok(snap) => decode_parts(&snap)
                .map(|p| (snap, p))
                .map_err(SnapshotError::from),
            Err(e) => Err(e),
        };
        match attempt {
            Ok(found) => {
                if !skipped.is_empty() {
                    shared
                        .metrics
                        .snapshot_fallbacks
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(
                        using = %name,
                        seq = found.0.seq,
                        skipped = %skipped.join("; "),
                        "starting from an older kept snapshot; replay from its sequence covers the rest"
                    );
                }
                return Ok(Some(found));
            }
            Err(SnapshotError::Format(e @ format::FormatError::ShardCount { .. })) => {
                return Err(e.into());
            }
            Err(error) => {
                tracing::warn!(snapshot = %name, %error, "snapshot cannot be used; trying an older kept one");
                skipped.push(format!("{name}: {error}"));
            }
        }
    }
    if names.is_empty() {
        return Ok(None);
    }
    Err(RecoveryError::NoUsableSnapshot {
        tried: skipped.join("; "),
        listing: list_error
            .map(|e| format!(" (listing older snapshots failed: {e})"))
            .unwrap_or_default(),
    })
}

/// Loads the latest snapshot (if snapshots are on and one exists) and checks the stream.
pub async fn restore(
    shared: &Shared,
    snapshots: Option<&SnapshotStore>,
) -> Result<Restored, RecoveryError> {
    let started = std::time::Instant::now();
    let mut restored = Restored::fresh(shared);
    if let Some(store) = snapshots {
        if let Some((snap, parts)) = load_newest_usable(shared, store).await? {
            let released = store.released().await.unwrap_or(0);
            restored.seq = snap.seq;
            restored.ledgers = parts.ledgers;
            restored.stores = parts.stores;
            restored.dedupe = parts.ingest.dedupe;
            restored.keys = parts.ingest.keys;
            // `released` compares with the snapshot actually used: after a fallback to an
            // older one it is usually ahead, so its unreleased postings (already in the
            // outbox) are not carried again; replay re-forms the later ones with the same ids.
            if released < snap.seq {
                restored.unreleased = snap.unreleased;
            }
        }
    }
    let name = &shared.config.streams.events;
    let mut stream = shared
        .js
        .get_stream(name)
        .await
        .map_err(|e| RecoveryError::Stream(name.clone(), e.to_string()))?;
    let info = stream
        .info()
        .await
        .map_err(|e| RecoveryError::Stream(name.clone(), e.to_string()))?;
    let st = &info.state;
    if restored.seq > 0 || st.first_sequence > 1 {
        check_bounds(
            name,
            st.first_sequence,
            st.last_sequence,
            st.messages,
            restored.seq,
        )?;
    }
    let positions: usize = restored.ledgers.iter().map(Ledger::position_count).sum();
    tracing::info!(
        seq = restored.seq,
        positions,
        stores = restored.stores.len(),
        unreleased = restored.unreleased.len(),
        replay = st.last_sequence.saturating_sub(restored.seq),
        ms = started.elapsed().as_millis() as u64,
        "state restored; replaying the rest of the stream"
    );
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked_both_ways() {
        assert!(check_bounds("E", 1, 100, 100, 50).is_ok());
        assert!(
            check_bounds("E", 51, 100, 50, 50).is_ok(),
            "first needed is still there"
        );
        assert!(matches!(
            check_bounds("E", 60, 100, 41, 50),
            Err(RecoveryError::RetentionGap {
                needed: 51,
                first: 60,
                ..
            })
        ));
        assert!(matches!(
            check_bounds("E", 1, 40, 40, 50),
            Err(RecoveryError::StreamBehindSnapshot {
                last: 40,
                snapshot: 50,
                ..
            })
        ));
        assert!(
            check_bounds("E", 101, 100, 0, 100).is_ok(),
            "all consumed, nothing after"
        );
        assert!(
            matches!(
                check_bounds("E", 90, 100, 11, 0),
                Err(RecoveryError::RetentionGap { .. })
            ),
            "fresh start on a stream whose head expired"
        );
    }
}
