//! LeadBridge: the data exchange hub of a police–environment joint enforcement mechanism.
//!
//! Agencies push case leads over HTTPS with mutual TLS; the hub validates them (JSON Schema
//! and domain checks), commits each with an outbox message and an audit entry, and a relay
//! publishes them to Kafka for the police case-management adapter.

pub mod api;
pub mod app;
pub mod audit;
pub mod config;
pub mod identity;
pub mod ingest;
pub mod kafka;
pub mod lead;
pub mod pki;
pub mod police;
pub mod private_fs;
pub mod receipts;
pub mod relay;
pub mod rules;
pub mod store;
pub mod telemetry;
pub mod validate;

pub use app::{Application, Roles};
