//! The service's integration tests, one binary: each module starts its own nats-server (and
//! ERP simulator where it needs one) on free ports.

mod alerts;
mod api;
mod api_boundary;
mod cluster;
mod config_doc;
mod dashboard;
mod dead_letters;
mod direct_pull;
mod edge;
mod erp_faults;
mod feed;
mod hostile_headers;
mod hostile_input;
mod json_logs;
mod lease;
mod ledger_model;
mod nats_auth;
mod pgdb;
mod pipeline_atp;
mod pipeline_postings;
mod postgres_crash;
mod postgres_tables;
mod reconciliation;
mod redrive;
mod replicas;
mod reservations;
mod snapshot_fallback;
mod supervision;
