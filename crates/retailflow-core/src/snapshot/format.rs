//! The snapshot format ([`FORMAT_VERSION`]): a MessagePack (compact, positional) `Snapshot` whose parts
//! are themselves MessagePack blobs, one per shard and per store, so each actor encodes its
//! own state while the others keep working.

use crate::aggregate::posting::PostingDoc;
use crate::domain::LocationId;
use crate::ingest::dedupe::Dedupe;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::borrow::Cow;

/// The format this build writes. 3 adds the stores' business-day books (finance); 2 leaves a
/// cell's movement tally out when it is all zeros; 1 always wrote it. This build reads all
/// three; an older build refuses a newer format by its version, so an older binary started on
/// newer snapshots says so instead of "corrupt".
pub const FORMAT_VERSION: u32 = 3;
/// The oldest format this build reads.
pub const OLDEST_READABLE: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("snapshot encoding failed: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("snapshot is corrupt: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error(
        "snapshot format {found} is not one this build reads ({OLDEST_READABLE} to {FORMAT_VERSION}); a newer format comes from a newer retailflow: run that version, or delete the snapshot bucket to start from the stream"
    )]
    Version { found: u32 },
    #[error("a snapshot part or list of {n} bytes or items is more than the format's 2^32")]
    TooLarge { n: usize },
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

/// [`encode_part`] appended to `out`: a buffer sized for what is coming is not grown by copying.
pub fn encode_part_into<T: Serialize>(mut out: Vec<u8>, value: &T) -> Result<Vec<u8>, FormatError> {
    rmp_serde::encode::write(&mut out, value)?;
    Ok(out)
}

pub fn decode_part<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FormatError> {
    Ok(rmp_serde::from_slice(bytes)?)
}

/// A snapshot's encoding as byte runs that, written one after the other, are exactly the
/// MessagePack of the [`Snapshot`]: the runs it encodes itself (the header, the length prefixes,
/// the unreleased postings: small) and the parts, borrowed. A 5 M-position snapshot is a few
/// hundred MB of parts; writing them from here needs no second copy of them in memory.
pub struct Runs<'a> {
    done: Vec<Cow<'a, [u8]>>,
    /// The run being encoded (headers and prefixes), closed by the next borrowed part.
    head: Vec<u8>,
}

impl<'a> Runs<'a> {
    /// A `bin` value: its length prefix ends the current run, its bytes are borrowed.
    fn bin(&mut self, bytes: &'a [u8]) -> Result<(), FormatError> {
        let len = count(bytes.len())?;
        rmp::encode::write_bin_len(&mut self.head, len).map_err(rmp_serde::encode::Error::from)?;
        if !bytes.is_empty() {
            self.done.push(Cow::Owned(std::mem::take(&mut self.head)));
            self.done.push(Cow::Borrowed(bytes));
        }
        Ok(())
    }

    /// Every run in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.done
            .iter()
            .map(|r| r.as_ref())
            .chain(std::iter::once(self.head.as_slice()))
            .filter(|r| !r.is_empty())
    }

    /// Bytes in all runs.
    pub fn len(&self) -> usize {
        self.iter().map(<[u8]>::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Snapshot {
    /// The encoding in one buffer (tests and small snapshots; a store writes [`Snapshot::runs`]).
    pub fn encode(&self) -> Result<Vec<u8>, FormatError> {
        let runs = self.runs()?;
        let mut out = Vec::with_capacity(runs.len());
        for r in runs.iter() {
            out.extend_from_slice(r);
        }
        Ok(out)
    }

    /// The encoding as runs, the parts borrowed (see [`Runs`]). Field by field as serde
    /// derives it for this struct, positional: the round-trip test holds the two together.
    pub fn runs(&self) -> Result<Runs<'_>, FormatError> {
        use rmp::encode::write_array_len;
        let array = |e| FormatError::Encode(rmp_serde::encode::Error::from(e));
        let mut runs = Runs {
            done: Vec::new(),
            head: Vec::with_capacity(256),
        };
        write_array_len(&mut runs.head, 7).map_err(array)?;
        rmp_serde::encode::write(&mut runs.head, &self.format)?;
        rmp_serde::encode::write(&mut runs.head, &self.seq)?;
        rmp_serde::encode::write(&mut runs.head, &self.taken_at_ms)?;
        runs.bin(&self.ingest)?;
        write_array_len(&mut runs.head, count(self.shards.len())?).map_err(array)?;
        for part in &self.shards {
            runs.bin(part)?;
        }
        write_array_len(&mut runs.head, count(self.stores.len())?).map_err(array)?;
        for (location, part) in &self.stores {
            write_array_len(&mut runs.head, 2).map_err(array)?;
            rmp_serde::encode::write(&mut runs.head, location)?;
            runs.bin(part)?;
        }
        rmp_serde::encode::write(&mut runs.head, &self.unreleased)?;
        Ok(runs)
    }

    pub fn decode(bytes: &[u8], shards: usize) -> Result<Snapshot, FormatError> {
        // The version is the first field; read it alone so a future layout fails clearly.
        let (found,): (u32,) = rmp_serde::from_slice(&header_prefix(bytes)).unwrap_or((0,));
        if !(OLDEST_READABLE..=FORMAT_VERSION).contains(&found) {
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

fn count(n: usize) -> Result<u32, FormatError> {
    u32::try_from(n).map_err(|_| FormatError::TooLarge { n })
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
        // Format 1 (every cell with its tally) still reads.
        let mut v1 = sample(2);
        v1.format = 1;
        assert_eq!(
            Snapshot::decode(&v1.encode().unwrap(), 2).unwrap().format,
            1
        );
        let mut future = sample(2);
        future.format = 9;
        let bytes = future.encode().unwrap();
        assert!(matches!(
            Snapshot::decode(&bytes, 2),
            Err(FormatError::Version { found: 9 })
        ));
    }

    /// The runs, concatenated, are byte for byte what serde's own encoder makes of the struct,
    /// for empty and large parts, several stores and unreleased postings.
    #[test]
    fn runs_are_the_serde_encoding() {
        use crate::aggregate::posting::{Draft, Lineage};
        let mut snap = sample(3);
        snap.shards[1] = ByteBuf::from(Vec::new());
        snap.shards[2] = ByteBuf::from((0..70_000u32).map(|i| i as u8).collect::<Vec<_>>());
        snap.stores = vec![
            ("S1".into(), ByteBuf::from(vec![9; 300])),
            ("S2".into(), ByteBuf::from(Vec::new())),
        ];
        snap.unreleased = PostingDoc::address(
            Draft {
                location: "S1".into(),
                business_day: None,
                currency: None,
                part: 0,
                lineage: Lineage::default(),
                body: crate::aggregate::posting::DocBody::TenderSummary(vec![Default::default()]),
                final_doc: false,
                corrects: None,
            },
            "erp",
            42,
        );
        let serde = rmp_serde::to_vec(&snap).unwrap();
        let runs = snap.runs().unwrap();
        assert_eq!(runs.len(), serde.len());
        assert!(
            runs.iter().any(|r| r.len() == 70_000),
            "a part is lent, not copied"
        );
        assert_eq!(runs.iter().collect::<Vec<_>>().concat(), serde);
        assert_eq!(snap.encode().unwrap(), serde);
        let back = Snapshot::decode(&serde, 3).unwrap();
        assert_eq!(back.stores.len(), 2);
        assert_eq!(back.unreleased, snap.unreleased);
    }
}
