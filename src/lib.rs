//! retailflow: the connective tissue between a retailer's tills, web shop, warehouses and ERP.
//!
//! Data flows through the modules in this order:
//!
//! - [`domain`]: identifiers, money, the event envelope, wire formats, subjects.
//! - [`bus`]: NATS connection, streams, a private nats-server for demos and tests.
//! - [`ingest`]: pull from JetStream, decode, validate, deduplicate, route; dead letters.
//! - [`apply`]: per-SKU ops, the ATP ledger, shard actors, the concurrent view.
//! - [`aggregate`]: per-store sales/tender/tax aggregation and posting documents.
//! - [`snapshot`]: barriers, the coordinator, durable snapshots, release of postings.
//! - [`post`]: the outbox, rate limiting and HTTP delivery to ERP endpoints.
//! - [`finance`]: business-day close and reconciliation: the ERP's answers, the API.
//! - [`query`]: availability and reservations over HTTP and NATS.
//! - [`supervise`]: the root actor and its restart policy.
//! - [`erp_sim`]: a simulated, rate-limited ERP endpoint for tests and benchmarks.
//! - [`scenario`]: generated peaks, an independent oracle, measurements and reports.
//! - [`telemetry`]: metrics and logging.
//! - [`config`]: the TOML configuration.

pub mod aggregate;
pub mod apply;
pub mod bus;
pub mod cli;
pub mod config;
pub mod deadletter;
pub mod dlq;
pub mod finance;
pub mod memory;
pub use retailflow_core::domain;
#[doc(hidden)]
pub mod fuzzing;
pub mod ingest;
pub mod post;
pub mod query;
pub mod shared;
pub mod snapshot;
pub mod supervise;
pub mod telemetry;
#[cfg(feature = "lab")]
pub mod testing;
pub mod view;
