//! The snapshot format. Version 1: a MessagePack (compact, positional) `Snapshot` whose parts
//! are themselves MessagePack blobs, one per shard and per store, so each actor encodes its
//! own state while the others keep working.

use crate::aggregate::posting::PostingDoc;
use crate::domain::LocationId;
use crate::ingest::dedupe::Dedupe;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("snapshot encoding failed: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("snapshot is corrupt: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("snapshot format {found} is not supported by this build (expects {FORMAT_VERSION})")]
    Version { found: u32 },
    #[error(
        "snapshot was taken with {found} shards; the configuration says {configured}. Shard count can only change with a fresh start (replay from the stream)"
    )]
    ShardCount { found: usize, configured: usize },
}

/// Ingest's own state at the barrier.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IngestState {
    pub dedupe: Dedupe,
    /// Reservation keys across shards (absent in snapshots from before they were kept).
    #[serde(default)]
    pub keys: crate::ingest::keys::ReservationKeys,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    pub format: u32,
    /// Stream sequence of the barrier: the state reflects every event up to it.
    pub seq: u64,
    pub taken_at_ms: i64,
    pub ingest: ByteBuf,
    pub shards: Vec<ByteBuf>,
    pub stores: Vec<(LocationId, ByteBuf)>,
    /// Postings formed at or before `seq` and not yet released to the outbox.
    pub unreleased: Vec<PostingDoc>,
}

pub fn encode_part<T: Serialize>(value: &T) -> Result<Vec<u8>, FormatError> {
    Ok(rmp_serde::to_vec(value)?)
}

pub fn decode_part<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FormatError> {
    Ok(rmp_serde::from_slice(bytes)?)
}

impl Snapshot {
    pub fn encode(&self) -> Result<Vec<u8>, FormatError> {
        // The parts are most of a snapshot (tens of MB at peak); sizing the buffer up front
        // saves growing it by doubling, which copies everything again and faults in fresh
        // pages each time. The quarter on top is room for the unreleased postings.
        let parts = self.ingest.len()
            + self.shards.iter().map(|s| s.len()).sum::<usize>()
            + self
                .stores
                .iter()
                .map(|(l, s)| l.as_str().len() + s.len() + 16)
                .sum::<usize>();
        let mut out = Vec::with_capacity(parts + parts / 4 + 64 * 1024);
        rmp_serde::encode::write(&mut out, self)?;
        Ok(out)
    }

    pub fn decode(bytes: &[u8], shards: usize) -> Result<Snapshot, FormatError> {
        // The version is the first field; read it alone so a future layout fails clearly.
        let (found,): (u32,) = rmp_serde::from_slice(&header_prefix(bytes)).unwrap_or((0,));
        if found != FORMAT_VERSION {
            return Err(FormatError::Version { found });
        }
        let snap: Snapshot = rmp_serde::from_slice(bytes)?;
        if snap.shards.len() != shards {
            return Err(FormatError::ShardCount {
                found: snap.shards.len(),
                configured: shards,
            });
        }
        Ok(snap)
    }
}

/// Rewrites the array header of an encoded snapshot so only its first element is read.
fn header_prefix(bytes: &[u8]) -> Vec<u8> {
    // A positional struct is a MessagePack fixarray (0x90 | len); keep the first element.
    match bytes.first() {
        Some(b) if b & 0xf0 == 0x90 => {
            let mut v = vec![0x91];
            v.extend_from_slice(&bytes[1..bytes.len().min(10)]);
            v
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(shards: usize) -> Snapshot {
        Snapshot {
            format: FORMAT_VERSION,
            seq: 42,
            taken_at_ms: 1,
            ingest: ByteBuf::from(
                encode_part(&IngestState {
                    dedupe: Dedupe::new(64),
                    keys: Default::default(),
                })
                .unwrap(),
            ),
            shards: (0..shards).map(|_| ByteBuf::from(vec![1, 2, 3])).collect(),
            stores: vec![],
            unreleased: vec![],
        }
    }

    #[test]
    fn round_trip_and_checks() {
        let bytes = sample(2).encode().unwrap();
        let back = Snapshot::decode(&bytes, 2).unwrap();
        assert_eq!(back.seq, 42);
        assert!(matches!(
            Snapshot::decode(&bytes, 3),
            Err(FormatError::ShardCount {
                found: 2,
                configured: 3
            })
        ));
        let mut future = sample(2);
        future.format = 9;
        let bytes = future.encode().unwrap();
        assert!(matches!(
            Snapshot::decode(&bytes, 2),
            Err(FormatError::Version { found: 9 })
        ));
    }
}
