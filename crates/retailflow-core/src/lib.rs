//! retailflow-core: what retailflow computes, without how it runs. Pure logic over plain data:
//! no async runtime, no actors, no NATS. The service (`retailflow`) drives it from actors;
//! the lab drives it from generated peaks; both get the same answers.
//!
//! Leaf first:
//!
//! - [`domain`]: identifiers, money, the event envelope, its codecs (MessagePack, JSON and the
//!   fast MessagePack reader), subjects.
//! - [`aggregate`]: per-store sales, tender and tax buckets and the posting documents formed
//!   from them (with their lineage and movement lines).
//! - [`apply`]: per-SKU operations and the available-to-promise ledger of one shard.
//! - [`ingest`]: deduplication, reservation keys and routing of an event to shards and stores.
//! - [`snapshot`]: the snapshot format that holds all of the above between restarts.

pub mod aggregate;
pub mod apply;
pub mod domain;
pub mod ingest;
pub mod snapshot;
