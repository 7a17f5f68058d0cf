//! Durable snapshots in JetStream: the snapshot body in an object store bucket, and in a KV
//! bucket a pointer `latest` to the newest complete one plus `released`, the last barrier whose
//! postings reached the outbox. A snapshot is only pointed at after its upload finished, so a
//! crash mid-upload leaves the previous pointer in place.

use crate::config::{SnapshotConfig, Storage};
use async_nats::jetstream::{self, kv, object_store};
use retailflow_core::snapshot::format::{FormatError, Snapshot};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot storage: {0}")]
    Storage(String),
    #[error(transparent)]
    Format(#[from] FormatError),
}

fn storage_err(e: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::Storage(e.to_string())
}

/// Reads a snapshot's runs one after the other: the upload takes its chunks from the parts
/// themselves, so no buffer holds the whole snapshot.
struct RunsReader<'a> {
    runs: std::collections::VecDeque<&'a [u8]>,
    /// Bytes of the front run already read.
    at: usize,
}

impl tokio::io::AsyncRead for RunsReader<'_> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let me = self.get_mut();
        while buf.remaining() > 0 {
            let Some(run) = me.runs.front() else { break };
            let rest = &run[me.at..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            me.at += n;
            if me.at == run.len() {
                me.runs.pop_front();
                me.at = 0;
            }
        }
        std::task::Poll::Ready(Ok(()))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pointer {
    pub seq: u64,
    pub object: String,
    pub bytes: u64,
    pub taken_at_ms: i64,
}

#[derive(Clone)]
pub struct SnapshotStore {
    objects: object_store::ObjectStore,
    kv: kv::Store,
    keep: usize,
}

pub fn object_name(seq: u64) -> String {
    format!("snapshot-{seq:020}")
}

impl SnapshotStore {
    /// Opens (creating when missing) the object store and its pointer bucket.
    pub async fn open(
        js: &jetstream::Context,
        cfg: &SnapshotConfig,
        storage: Storage,
        replicas: usize,
    ) -> Result<SnapshotStore, SnapshotError> {
        let st = match storage {
            Storage::File => jetstream::stream::StorageType::File,
            Storage::Memory => jetstream::stream::StorageType::Memory,
        };
        let objects = match js.get_object_store(&cfg.bucket).await {
            Ok(o) => o,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: cfg.bucket.clone(),
                    description: Some("retailflow snapshots".into()),
                    storage: st,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| storage_err(format!("creating object store {}: {e}", cfg.bucket)))?,
        };
        let ptr = format!("{}-ptr", cfg.bucket);
        let kv = match js.get_key_value(&ptr).await {
            Ok(k) => k,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: ptr.clone(),
                    description: "retailflow snapshot pointers".into(),
                    history: 5,
                    storage: st,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| storage_err(format!("creating KV bucket {ptr}: {e}")))?,
        };
        let store = SnapshotStore {
            objects,
            kv,
            keep: cfg.keep.max(1),
        };
        // A bucket another replica has just created on a cluster answers "no responders"
        // until its replicas have elected a leader: open only once the pointer can be read,
        // so that the caller's retry covers that wait and recovery reads a live bucket.
        store.pointer().await?;
        Ok(store)
    }

    /// Uploads the snapshot, then moves the pointer to it, then prunes old ones.
    pub async fn write(&self, snap: &Snapshot) -> Result<Pointer, SnapshotError> {
        let runs = snap.runs()?;
        let bytes = runs.len();
        let name = object_name(snap.seq);
        let meta = object_store::ObjectMetadata {
            name: name.clone(),
            chunk_size: Some(512 * 1024),
            ..Default::default()
        };
        let mut reader = RunsReader {
            runs: runs.iter().collect(),
            at: 0,
        };
        self.objects
            .put(meta, &mut reader)
            .await
            .map_err(|e| storage_err(format!("uploading {name}: {e}")))?;
        let ptr = Pointer {
            seq: snap.seq,
            object: name,
            bytes: bytes as u64,
            taken_at_ms: snap.taken_at_ms,
        };
        let json = serde_json::to_vec(&ptr).map_err(storage_err)?;
        self.kv
            .put("latest", json.into())
            .await
            .map_err(|e| storage_err(format!("moving the latest pointer: {e}")))?;
        if let Err(error) = self.prune(snap.seq).await {
            tracing::warn!(%error, "pruning old snapshots failed; they will be retried next time");
        }
        Ok(ptr)
    }

    pub async fn pointer(&self) -> Result<Option<Pointer>, SnapshotError> {
        match self.kv.get("latest").await.map_err(storage_err)? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(storage_err)?)),
            None => Ok(None),
        }
    }

    /// The snapshots recovery may start from, newest first: the one the pointer names, then
    /// the older kept ones (`snapshot.keep`), so a corrupt or missing latest object falls back
    /// to an older one instead of blocking start-up. Objects newer than the pointer are not
    /// offered: the pointer only moves after an upload finished. Empty without a pointer.
    /// A failure to list the older ones is returned beside the latest, not instead of it.
    pub async fn candidates(&self) -> Result<(Vec<String>, Option<String>), SnapshotError> {
        let Some(ptr) = self.pointer().await? else {
            return Ok((Vec::new(), None));
        };
        let mut names = vec![ptr.object.clone()];
        match self.older_than(ptr.seq).await {
            Ok(older) => {
                names.extend(older.into_iter().filter(|n| *n != ptr.object));
                Ok((names, None))
            }
            Err(e) => Ok((names, Some(e.to_string()))),
        }
    }

    /// Kept snapshot objects older than `seq`, newest first.
    async fn older_than(&self, seq: u64) -> Result<Vec<String>, SnapshotError> {
        use futures::StreamExt;
        let mut list = self.objects.list().await.map_err(storage_err)?;
        let mut older = Vec::new();
        while let Some(info) = list.next().await {
            let info = info.map_err(storage_err)?;
            let s = info
                .name
                .strip_prefix("snapshot-")
                .and_then(|s| s.parse::<u64>().ok());
            if let (false, Some(s)) = (info.deleted, s) {
                if s < seq {
                    older.push((s, info.name));
                }
            }
        }
        older.sort_unstable_by_key(|b| std::cmp::Reverse(b.0));
        Ok(older.into_iter().map(|(_, n)| n).collect())
    }

    /// Reads and decodes one snapshot object.
    pub async fn load(&self, name: &str, shards: usize) -> Result<Snapshot, SnapshotError> {
        let mut object = self
            .objects
            .get(name)
            .await
            .map_err(|e| storage_err(format!("reading {name}: {e}")))?;
        // Grown as read, not sized by the stored length (which a damaged store could inflate).
        let mut bytes = Vec::new();
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| storage_err(format!("reading {name}: {e}")))?;
        Ok(Snapshot::decode(&bytes, shards)?)
    }

    /// Records that the postings of every barrier up to `seq` are in the outbox.
    pub async fn mark_released(&self, seq: u64) -> Result<(), SnapshotError> {
        self.kv
            .put("released", seq.to_string().into())
            .await
            .map_err(storage_err)?;
        Ok(())
    }

    pub async fn released(&self) -> Result<u64, SnapshotError> {
        Ok(match self.kv.get("released").await.map_err(storage_err)? {
            Some(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            None => 0,
        })
    }

    /// Deletes all but the newest `keep` snapshots (never the one just written).
    async fn prune(&self, newest: u64) -> Result<(), SnapshotError> {
        use futures::StreamExt;
        let mut list = self.objects.list().await.map_err(storage_err)?;
        let mut names = Vec::new();
        while let Some(info) = list.next().await {
            let info = info.map_err(storage_err)?;
            if !info.deleted && info.name.starts_with("snapshot-") {
                names.push(info.name);
            }
        }
        names.sort();
        let newest = object_name(newest);
        let excess = names.len().saturating_sub(self.keep);
        for name in names.into_iter().take(excess) {
            if name != newest {
                self.objects.delete(&name).await.map_err(storage_err)?;
            }
        }
        Ok(())
    }
}
